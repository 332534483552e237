//! The one error type of the store: every failure carries the digest or path it concerns.

use std::io;
use std::path::{Path, PathBuf};

use crate::digest::Digest;

/// Everything that can go wrong while using the store.
#[derive(thiserror::Error, Debug)]
pub enum StoreError {
    /// A string that is not `sha256:` followed by 64 lowercase hex digits.
    #[error("invalid digest {0:?}: expected \"sha256:\" followed by 64 lowercase hex digits")]
    InvalidDigest(String),

    /// Content hashed to something other than what was expected.
    #[error("content digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The digest the content was supposed to have.
        expected: Digest,
        /// The digest the content actually has.
        actual: Digest,
    },

    /// No blob or snapshot with this digest is in the store.
    #[error("{0} is not in the store")]
    NotFound(Digest),

    /// A blob is larger than the caller allowed.
    #[error("blob {digest} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// The blob.
        digest: Digest,
        /// Its size (or, if it grew while being read, the bytes seen so far).
        size: u64,
        /// The caller's limit.
        limit: u64,
    },

    /// An operating-system error on a path in the store.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path the operation was on.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A JSON file of the store could not be read or written.
    #[error("{}: invalid JSON: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's or serializer's error.
        #[source]
        source: serde_json::Error,
    },

    /// Store data that parses but makes no sense (a bad snapshot parent, a duplicate image name…).
    #[error("{}: corrupt store data: {reason}", path.display())]
    Corrupt {
        /// The file or directory that is corrupt.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// The store root is not safe to use (owned by another user, not a directory…).
    #[error("store root {} is not safe to use: {reason}", path.display())]
    InsecureRoot {
        /// The root directory.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },

    /// An image name the index cannot hold (empty, or with control characters).
    #[error("invalid image name {0:?}")]
    InvalidImageName(String),

    /// A snapshot exists with a different parent than the one asked for.
    #[error(
        "snapshot {id} exists with parent {} but parent {} was requested",
        describe_parent(existing.as_ref()),
        describe_parent(requested.as_ref())
    )]
    SnapshotParentMismatch {
        /// The snapshot's chain ID.
        id: Digest,
        /// The parent recorded on disk.
        existing: Option<Digest>,
        /// The parent the caller asked for.
        requested: Option<Digest>,
    },

    /// An operation that may delete data another process uses was called without an exclusive lock.
    #[error("{operation} needs an exclusive lock on this store")]
    ExclusiveLockRequired {
        /// The operation refused.
        operation: &'static str,
    },
}

fn describe_parent(parent: Option<&Digest>) -> String {
    match parent {
        Some(digest) => digest.to_string(),
        None => "none".to_owned(),
    }
}

impl StoreError {
    /// Builds an [`StoreError::Io`] for `path`.
    pub(crate) fn io(path: &Path, source: io::Error) -> StoreError {
        StoreError::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// Builds a [`StoreError::Corrupt`] for `path`.
    pub(crate) fn corrupt(path: &Path, reason: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            path: path.to_owned(),
            reason: reason.into(),
        }
    }

    /// Turns an I/O error from a [`crate::VerifiedReader`] back into the store error it carries
    /// (a digest mismatch), or wraps it with `path`.
    pub(crate) fn from_read_error(path: &Path, error: io::Error) -> StoreError {
        if !error
            .get_ref()
            .is_some_and(|inner| inner.is::<StoreError>())
        {
            return StoreError::io(path, error);
        }
        match error
            .into_inner()
            .map(|inner| inner.downcast::<StoreError>())
        {
            Some(Ok(store_error)) => *store_error,
            Some(Err(other)) => StoreError::io(path, io::Error::other(other)),
            None => StoreError::corrupt(path, "read failed without a cause"),
        }
    }
}

/// Attaches a path to `io::Result`s.
pub(crate) trait IoResultExt<T> {
    /// Maps the error to [`StoreError::Io`] for `path`.
    fn at(self, path: &Path) -> Result<T, StoreError>;
}

impl<T> IoResultExt<T> for io::Result<T> {
    fn at(self, path: &Path) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::io(path, source))
    }
}

impl<T> IoResultExt<T> for nix::Result<T> {
    fn at(self, path: &Path) -> Result<T, StoreError> {
        self.map_err(|errno| StoreError::io(path, io::Error::from(errno)))
    }
}
