//! [`ExecError`], the executor's error type.
//!
//! Every variant says which source, destination path, URL or `--chown`/`--chmod` value it is
//! about. Paths are shown as the build sees them (relative to, or absolute inside, the root
//! filesystem or build context), never as host paths, and are quoted with `{:?}` where they
//! come from input so that hostile names cannot smuggle terminal escapes into messages.

use std::io;

use rbuild_fsutil::FsError;

/// Which root filesystem a path error happened in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The tree files are read from: the build context or another stage.
    Source,
    /// The root filesystem being written.
    Dest,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Source => "source",
            Side::Dest => "destination",
        })
    }
}

/// Why a file operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecError {
    /// A source path does not exist in the source tree (or is hidden by `.dockerignore`).
    #[error("COPY failed: file not found in build context or excluded by .dockerignore: stat {source_path}: file does not exist")]
    SourceNotFound {
        /// The source as written in the instruction.
        source_path: String,
    },

    /// Every source was a wildcard and none of them matched anything.
    #[error("no source files were specified (nothing matches {patterns:?})")]
    NoSourceFiles {
        /// The wildcard sources.
        patterns: Vec<String>,
    },

    /// Several files would be copied to a destination that is not written as a directory.
    #[error("When using {instruction} with more than one source file, the destination must be a directory and end with a / (destination {dest:?})")]
    DestNotDirectory {
        /// `COPY` or `ADD`.
        instruction: &'static str,
        /// The destination as given.
        dest: String,
    },

    /// A directory would be copied onto something that is not a directory.
    #[error("cannot copy to non-directory: {path:?}")]
    CannotCopyToNonDir {
        /// The destination path inside the root filesystem.
        path: String,
    },

    /// A non-directory would replace an existing directory.
    #[error("cannot replace to directory {path:?} with file")]
    CannotReplaceDir {
        /// The destination path inside the root filesystem.
        path: String,
    },

    /// Too many symlinks while resolving a path.
    #[error("too many levels of symbolic links resolving {path:?} in the {side}")]
    SymlinkLoop {
        /// Which tree.
        side: Side,
        /// The path being resolved.
        path: String,
    },

    /// A confined filesystem operation failed.
    #[error("{side} {path:?}: {source}")]
    Fs {
        /// Which tree.
        side: Side,
        /// The path inside that tree.
        path: String,
        /// What went wrong (it names the operation).
        source: FsError,
    },

    /// Reading or writing file data failed.
    #[error("{op} {side} {path:?}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Which tree.
        side: Side,
        /// The path inside that tree.
        path: String,
        /// The OS error.
        source: io::Error,
    },

    /// A source file changed type or identity while it was being copied.
    #[error("source {path:?} changed while it was being copied")]
    SourceChanged {
        /// The path inside the source tree.
        path: String,
    },

    /// An `ADD` archive could not be read or extracted.
    #[error("extracting archive {source_path:?}: {reason}")]
    Archive {
        /// The archive's path in the source tree.
        source_path: String,
        /// What went wrong.
        reason: String,
    },

    /// A `--chown` value is malformed.
    #[error("invalid --chown value {spec:?}: {reason}")]
    InvalidChown {
        /// The value as written.
        spec: String,
        /// Why it was refused.
        reason: String,
    },

    /// A `--chown` user name is not in the root filesystem's `/etc/passwd`.
    #[error(
        "--chown: unable to find user {name:?} in /etc/passwd{}",
        reason_suffix(reason)
    )]
    UnknownUser {
        /// The user name.
        name: String,
        /// Why the lookup failed, when it was not simply "no such entry".
        reason: Option<String>,
    },

    /// A `--chown` group name is not in the root filesystem's `/etc/group`.
    #[error(
        "--chown: unable to find group {name:?} in /etc/group{}",
        reason_suffix(reason)
    )]
    UnknownGroup {
        /// The group name.
        name: String,
        /// Why the lookup failed, when it was not simply "no such entry".
        reason: Option<String>,
    },

    /// A `--chmod` value is malformed.
    #[error("invalid --chmod value {spec:?}: {reason}")]
    InvalidChmod {
        /// The value as written.
        spec: String,
        /// Why it was refused.
        reason: String,
    },

    /// An `--exclude` pattern (or ignore pattern) does not compile.
    #[error("invalid exclude pattern in {patterns:?}: {reason}")]
    BadPattern {
        /// The patterns given.
        patterns: Vec<String>,
        /// The compiler's message (it names the bad pattern).
        reason: String,
    },

    /// A source is not acceptable for this instruction.
    #[error("invalid source {source_path:?}: {reason}")]
    InvalidSource {
        /// The source as written.
        source_path: String,
        /// Why.
        reason: String,
    },

    /// Downloading an `ADD` URL failed.
    #[error("ADD {url}: {reason}")]
    Download {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },

    /// A downloaded file's digest is not the `--checksum` given.
    #[error("ADD {url}: digest mismatch: expected {expected}, got {actual}")]
    ChecksumMismatch {
        /// The URL.
        url: String,
        /// The `--checksum` value.
        expected: String,
        /// The digest of what was downloaded.
        actual: String,
    },

    /// Something rbuild does not do (yet).
    #[error("{0}")]
    Unsupported(String),
}

fn reason_suffix(reason: &Option<String>) -> String {
    reason
        .as_ref()
        .map(|r| format!(": {r}"))
        .unwrap_or_default()
}

impl ExecError {
    pub(crate) fn fs(side: Side, path: impl Into<String>, source: FsError) -> Self {
        ExecError::Fs {
            side,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn io(
        op: &'static str,
        side: Side,
        path: impl Into<String>,
        source: io::Error,
    ) -> Self {
        ExecError::Io {
            op,
            side,
            path: path.into(),
            source,
        }
    }
}
