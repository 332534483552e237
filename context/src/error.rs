//! The crate's error type: bad `.dockerignore` patterns and unreadable ignore files.

use std::path::PathBuf;

/// Everything that can go wrong while reading ignore files or compiling their patterns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContextError {
    /// A pattern that is only `!` once trimmed and cleaned: an exclusion of nothing.
    #[error("illegal exclusion pattern {pattern:?}: \"!\" must be followed by a path")]
    LoneExclusion {
        /// The pattern as it was given.
        pattern: String,
    },

    /// A pattern whose glob syntax is invalid (unterminated `[`, trailing `\`, bad range, ...).
    #[error("bad .dockerignore pattern {pattern:?}: {reason}")]
    BadPattern {
        /// The pattern as it was given.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A line of an ignore file is longer than Docker accepts.
    #[error("ignore file line {line} is longer than {max} bytes")]
    LineTooLong {
        /// 1-based line number.
        line: usize,
        /// The limit, [`crate::MAX_LINE_BYTES`].
        max: usize,
    },

    /// A line of an ignore file (other than a comment) is not valid UTF-8.
    #[error("ignore file line {line} is not valid UTF-8")]
    InvalidUtf8 {
        /// 1-based line number.
        line: usize,
    },

    /// Reading an ignore file failed.
    #[error("reading ignore file: {0}")]
    Read(#[source] std::io::Error),

    /// An error in a specific ignore file, with its path.
    #[error("{}: {source}", path.display())]
    InFile {
        /// The ignore file.
        path: PathBuf,
        /// What went wrong in it.
        #[source]
        source: Box<ContextError>,
    },
}
