//! The crate's single error type, [`FsError`].
//!
//! Every variant that concerns one path carries it *as the caller or the
//! archive gave it* (relative to the [`Root`](crate::Root)), never a host
//! path, so messages can be shown to users without leaking host layout.
//! Paths are printed with `{:?}` so hostile names (newlines, escape
//! sequences) are quoted rather than interpreted by a terminal.

use std::io;
use std::path::PathBuf;

/// Errors from confined filesystem operations and tar extraction.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FsError {
    /// The directory to use as a root could not be opened.
    #[error("cannot open root directory {path:?}: {source}")]
    OpenRoot {
        /// The host path given to [`Root::open`](crate::Root::open).
        path: PathBuf,
        /// The underlying OS error.
        source: io::Error,
    },

    /// A system call on a path inside the root failed.
    #[error("{op} {path:?}: {source}")]
    Io {
        /// What was being done (`"open"`, `"mkdir"`, `"unlink"`, ...).
        op: &'static str,
        /// The path relative to the root, as given.
        path: PathBuf,
        /// The underlying OS error.
        source: io::Error,
    },

    /// A path argument was not acceptable for the operation (for example it
    /// names the root itself where a final component is needed).
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath {
        /// The path as given.
        path: PathBuf,
        /// Why it was refused.
        reason: &'static str,
    },

    /// A tar entry name (or hardlink target) still climbs above the root
    /// after lexical cleaning, e.g. `../evil` or `a/../../evil`.
    #[error("tar entry {path:?} escapes the extraction root")]
    EscapingEntry {
        /// The name exactly as stored in the archive.
        path: PathBuf,
    },

    /// A tar hardlink entry is not acceptable.
    #[error("tar hardlink {path:?} -> {target:?}: {reason}")]
    BadHardlink {
        /// The entry name, as stored in the archive.
        path: PathBuf,
        /// The link target, as stored in the archive.
        target: PathBuf,
        /// Why it was refused.
        reason: &'static str,
    },

    /// A tar entry has a type this crate does not extract.
    #[error("tar entry {path:?}: unsupported entry type {kind:?}")]
    UnsupportedEntry {
        /// The entry name, as stored in the archive.
        path: PathBuf,
        /// The raw type flag byte, printed for diagnosis.
        kind: char,
    },

    /// A tar entry header field is malformed or out of range.
    #[error("tar entry {path:?}: {reason}")]
    InvalidEntry {
        /// The entry name, as stored in the archive.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// An extraction limit (entries, bytes, metadata bytes) was exceeded.
    #[error("archive exceeds the {limit} limit of {max}{}", at_entry(path.as_ref()))]
    LimitExceeded {
        /// Which limit (`"entry count"`, `"total bytes"`, `"metadata bytes"`).
        limit: &'static str,
        /// The configured maximum.
        max: u64,
        /// The entry being processed when the limit tripped, if known.
        path: Option<PathBuf>,
    },

    /// The archive stream itself could not be read or parsed.
    #[error("reading tar archive{}: {source}", after_entry(after.as_ref()))]
    Archive {
        /// The last entry successfully read before the failure, if any.
        after: Option<PathBuf>,
        /// The underlying error from the tar reader.
        source: io::Error,
    },
}

fn at_entry(path: Option<&PathBuf>) -> String {
    path.map(|p| format!(" at entry {p:?}")).unwrap_or_default()
}

fn after_entry(path: Option<&PathBuf>) -> String {
    path.map(|p| format!(" after entry {p:?}"))
        .unwrap_or_default()
}

impl FsError {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
        source: impl Into<io::Error>,
    ) -> Self {
        FsError::Io {
            op,
            path: path.into(),
            source: source.into(),
        }
    }

    /// The OS error kind behind this error, if it wraps one.
    ///
    /// Handy for callers that treat "not found" specially.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            FsError::OpenRoot { source, .. }
            | FsError::Io { source, .. }
            | FsError::Archive { source, .. } => Some(source.kind()),
            _ => None,
        }
    }

    /// The raw OS error number behind this error, if it wraps one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            FsError::OpenRoot { source, .. }
            | FsError::Io { source, .. }
            | FsError::Archive { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// Convenience alias used throughout the crate.
pub type Result<T, E = FsError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_quote_hostile_paths() {
        let e = FsError::EscapingEntry {
            path: PathBuf::from("../evil\n\x1b[31m"),
        };
        let msg = e.to_string();
        assert!(msg.contains("\"../evil\\n\\u{1b}[31m\""), "{msg}");
        assert!(!msg.contains('\n'));
    }

    #[test]
    fn limit_message_names_entry() {
        let e = FsError::LimitExceeded {
            limit: "total bytes",
            max: 10,
            path: Some("big".into()),
        };
        assert_eq!(
            e.to_string(),
            "archive exceeds the total bytes limit of 10 at entry \"big\""
        );
        let e = FsError::LimitExceeded {
            limit: "entry count",
            max: 3,
            path: None,
        };
        assert_eq!(e.to_string(), "archive exceeds the entry count limit of 3");
    }
}
