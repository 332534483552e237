//! [`ImageError`], the one error type of this crate: every variant carries what it concerns
//! (the reference, file, tar entry or digest) as data.

use std::io;

use rbuild_cache::{Digest, StoreError};

/// Everything that can go wrong while parsing, writing, exporting or importing images.
#[derive(thiserror::Error, Debug)]
pub enum ImageError {
    /// A string that is not a valid Docker image reference.
    #[error("invalid reference {reference:?}: {reason}")]
    InvalidReference {
        /// The input, cut to a displayable length.
        reference: String,
        /// Why it was refused, in Docker's words where Docker has words for it.
        reason: String,
    },

    /// An operating-system error; `what` says which file or stream.
    #[error("{what}: {source}")]
    Io {
        /// The path or stream the operation was on.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// An error of the content store.
    #[error(transparent)]
    Store(#[from] StoreError),

    /// JSON that could not be parsed or written.
    #[error("{what}: invalid JSON: {source}")]
    Json {
        /// Which document (e.g. `manifest sha256:…`, `index.json`).
        what: String,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },

    /// A document or entry larger than this crate accepts.
    #[error("{what} is larger than the limit of {limit} bytes")]
    TooLarge {
        /// Which document or stream.
        what: String,
        /// The limit.
        limit: u64,
    },

    /// Content whose digest is not the one it claims.
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// Which content (a tar entry, a layer's diff ID …).
        what: String,
        /// The digest it claims.
        expected: Digest,
        /// The digest it has.
        actual: Digest,
    },

    /// A tar entry this crate refuses: an unexpected or unsafe name, a wrong entry type, a
    /// duplicate.
    #[error("archive entry {name:?} refused: {reason}")]
    BadEntry {
        /// The entry name, lossily decoded and cut to a displayable length.
        name: String,
        /// Why it was refused.
        reason: String,
    },

    /// A tar stream that is not well formed.
    #[error("malformed tar stream: {0}")]
    MalformedTar(String),

    /// An archive that is well formed as a tar but not as the image format it should be.
    #[error("invalid image archive: {0}")]
    InvalidArchive(String),

    /// An image (manifest, config, layers) that is inconsistent or missing parts.
    #[error("invalid image: {0}")]
    InvalidImage(String),

    /// A platform string that is not `os/arch[/variant]`.
    #[error("invalid platform {platform:?}: {reason}")]
    InvalidPlatform {
        /// The input, cut to a displayable length.
        platform: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A media type this crate cannot handle where it appears.
    #[error("unsupported media type {0:?}")]
    UnsupportedMediaType(String),

    /// A file in a directory tree that cannot be represented in a layer (e.g. a socket is
    /// skipped, but a path with an unrepresentable type is reported here).
    #[error("{path}: {reason}")]
    Unarchivable {
        /// The path inside the tree.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

impl ImageError {
    /// An [`ImageError::Io`] for `what`.
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> ImageError {
        ImageError::Io {
            what: what.into(),
            source,
        }
    }

    /// An [`ImageError::Json`] for `what`.
    pub(crate) fn json(what: impl Into<String>, source: serde_json::Error) -> ImageError {
        ImageError::Json {
            what: what.into(),
            source,
        }
    }

    /// An [`ImageError::BadEntry`] for the raw entry name `name`.
    pub(crate) fn bad_entry(name: &[u8], reason: impl Into<String>) -> ImageError {
        ImageError::BadEntry {
            name: shown(name),
            reason: reason.into(),
        }
    }
}

/// How many characters of a hostile string an error keeps.
const SHOWN_CHARS: usize = 200;

/// A hostile byte string cut to a displayable length.
pub(crate) fn shown(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .take(SHOWN_CHARS)
        .collect()
}

/// Attaches a description to `io::Result`s.
pub(crate) trait IoContext<T> {
    /// Maps the error to [`ImageError::Io`] with `what` computed lazily.
    fn io_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T, ImageError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn io_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T, ImageError> {
        self.map_err(|source| ImageError::io(what(), source))
    }
}
