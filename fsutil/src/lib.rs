//! Filesystem access confined beneath a directory fd, and safe tar
//! extraction.
//!
//! rbuild writes hostile content into directories it owns: `COPY`/`ADD`
//! results into image root filesystems, image layers into snapshots, `ADD`
//! archives and `rbuild load` inputs. Every one of those inputs can carry
//! `../` names, absolute names, symlinks that point at the host, hardlinks
//! out, whiteouts through symlinks, or simply too much data. This crate is
//! the one place that touches such trees, and it does so only through file
//! descriptors:
//!
//! * [`Root`] is an owned `O_PATH|O_DIRECTORY` fd. Every path given to it is
//!   relative to it and is resolved by the kernel with `openat2(2)` and
//!   `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`: symlinks are followed but
//!   clamped to the root, like a chroot (BuildKit's scoped paths behave the
//!   same way), and `/proc/self/fd/N`-style magic links are refused.
//! * Creation and changes act on the *parent's* fd plus the final name with
//!   the `*at` calls (`mkdirat`, `symlinkat`, `linkat`, `unlinkat`,
//!   `mknodat`, `openat2` with `O_EXCL|O_NOFOLLOW`); metadata changes act on
//!   an `O_PATH|O_NOFOLLOW` fd of the entry (`fchownat(AT_EMPTY_PATH)`,
//!   `utimensat(AT_EMPTY_PATH)`, and `chmod`/`setxattr` through that fd's
//!   `/proc/self/fd/N`). No host path is ever built from input, so a check
//!   cannot be raced by swapping a directory for a symlink (SECURITY-CLASSES
//!   3 and 4).
//! * [`Root::remove_all`] never follows a symlink (class 6, BuildKit
//!   CVE-2024-23652).
//! * [`extract_tar`] streams an archive into a root with the rules in
//!   [`extract`]'s docs: names cleaned and `..` escapes rejected by name,
//!   confinement at write time, symlink targets verbatim, hardlinks only to
//!   regular files in the root, whiteouts per [`WhiteoutMode`], and limits
//!   on entries, bytes and per-entry metadata (classes 5 and 11).
//!
//! Linux only; needs `openat2` (5.6+) and a mounted procfs. Running as root
//! (or with `CAP_CHOWN`, `CAP_MKNOD`, `CAP_SYS_ADMIN` for `trusted.*`
//! xattrs) is needed for owners, devices and overlay whiteouts.
//!
//! ```no_run
//! use rbuild_fsutil::{extract_tar, ExtractOptions, Root, WhiteoutMode};
//! # fn main() -> Result<(), rbuild_fsutil::FsError> {
//! let root = Root::open(std::path::Path::new("/var/lib/rbuild/snapshots/42/fs"))?;
//! let layer = std::fs::File::open("/tmp/layer.tar").map_err(|e| rbuild_fsutil::FsError::Io {
//!     op: "open", path: "layer.tar".into(), source: e })?;
//! let opts = ExtractOptions {
//!     whiteouts: WhiteoutMode::ToOverlay,
//!     max_total_bytes: Some(64 << 30),
//!     max_entries: Some(10_000_000),
//!     ..ExtractOptions::default()
//! };
//! let stats = extract_tar(layer, &root, &opts)?;
//! println!("{} entries, {} bytes", stats.entries, stats.bytes);
//! root.mkdir_all("app/data", 0o755, Some((1000, 1000)))?;
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

mod error;
pub mod extract;
mod path;
mod root;
mod sys;
mod whiteout;

pub use error::{FsError, Result};
pub use extract::{extract_tar, ExtractOptions, ExtractStats, DEFAULT_MAX_METADATA_BYTES};
pub use root::{NodeKind, Root};
pub use whiteout::{
    WhiteoutMode, AUFS_META_PREFIX, OPAQUE_WHITEOUT, OVERLAY_OPAQUE_XATTR, WHITEOUT_PREFIX,
};
