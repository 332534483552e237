//! The file operations of a build — `COPY`, `ADD` and `WORKDIR`'s directory creation —
//! applied to root filesystem directories with Docker/BuildKit's semantics.
//!
//! * [`copy()`] runs one `COPY`/`ADD` ([`CopyOp`]) from a source tree (the build context or
//!   another stage's root filesystem) into a destination root filesystem; [`checksum()`] hashes
//!   exactly what it would copy (for cache keys), with a [`FileDigests`] index so unchanged
//!   files are not read again;
//!   [`resolve_dest`] turns a destination as written into the absolute path it means under a
//!   `WORKDIR`.
//! * [`resolve_chown`] resolves `--chown=user[:group]` against the destination's
//!   `/etc/passwd` and `/etc/group`; [`chmod`] applies `--chmod` (octal or symbolic).
//! * [`ensure_workdir`] creates a `WORKDIR`.
//! * [`archive`] recognises and extracts `ADD`'s local archives; [`remote`] downloads `ADD`'s
//!   URLs.
//! * [`tree::list_tree`] lists a root filesystem in the format BuildKit's recorded results use
//!   (`testdata/build/tree.py`).
//!
//! Every read of a source and every write of a destination goes through an
//! [`rbuild_fsutil::Root`]: paths are resolved by the kernel beneath the root's directory fd,
//! so symlinks and `..` in the context, in another stage, in the destination or in an archive
//! can never reach host files (SECURITY-CLASSES 3–5). No host path is ever built from input.
//!
//! * [`sandbox`] runs a process (a `RUN` step, a container) in namespaces on a root
//!   filesystem tree that is never mounted on the host.

#![deny(missing_docs)]

pub mod archive;
pub mod checksum;
pub mod chmod;
mod chown;
pub mod copy;
mod error;
pub mod glob;
mod paths;
pub mod remote;
// The sandbox's error variants and plain fields are named for what they hold.
#[allow(missing_docs)]
pub mod sandbox;
mod source;
pub mod tree;
mod workdir;

pub use archive::ArchiveLimits;
pub use checksum::{checksum, ChecksumStats, FileDigests, FileKey, NoIndex, SourceChecksum};
pub use chown::{resolve_chown, resolve_user, ProcessUser, MAX_DB_BYTES};
pub use copy::{copy, copy_journaled, CopyJournal, CopyOp, CopyStats, SourceStamp};
pub use error::{ExecError, Side};
pub use paths::resolve_dest;
pub use remote::DownloadLimits;
pub use workdir::ensure_workdir;
