//! [`BundleError`], the one error type of this crate: every variant carries what it concerns
//! (the directory, layer, user or group) as data.

use std::io;
use std::path::PathBuf;

use rbuild_cache::{Digest, StoreError};
use rbuild_fsutil::FsError;
use rbuild_image::ImageError;

/// Everything that can go wrong while writing a runtime bundle.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum BundleError {
    /// The bundle directory exists and is not empty.
    #[error("{dir:?} is not empty (the bundle directory must be empty or absent)")]
    NotEmpty {
        /// The bundle directory as given.
        dir: PathBuf,
    },

    /// The bundle path exists and is not a directory.
    #[error("{dir:?} exists and is not a directory")]
    NotADirectory {
        /// The bundle path as given.
        dir: PathBuf,
    },

    /// An operating-system error on a host path.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, and on which path.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A confined filesystem operation in the bundle's root filesystem failed.
    #[error("{what}: {source}")]
    Fs {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: FsError,
    },

    /// An error reading the image (manifest, config, layer).
    #[error(transparent)]
    Image(#[from] ImageError),

    /// An error of the content store.
    #[error(transparent)]
    Store(#[from] StoreError),

    /// An image this runtime cannot run.
    #[error("image {manifest}: {reason}")]
    UnsupportedImage {
        /// The image's manifest digest.
        manifest: Digest,
        /// Why.
        reason: String,
    },

    /// A layer whose uncompressed content does not have the diff ID the image config lists.
    #[error("layer {layer} does not unpack to the diff ID {diff_id} the image config lists")]
    DiffIdMismatch {
        /// The layer blob's digest.
        layer: Digest,
        /// The diff ID the config lists for it.
        diff_id: Digest,
    },

    /// The image has neither `ENTRYPOINT` nor `CMD`: there is nothing to run.
    #[error("the image has neither ENTRYPOINT nor CMD: no command to run")]
    NoCommand,

    /// The image's `WorkingDir` is not an absolute path.
    #[error("the image's working directory {0:?} is not an absolute path")]
    RelativeWorkingDir(String),

    /// `USER` names a user that is not in the image's `/etc/passwd`.
    #[error("unable to find user {user}: no matching entries in /etc/passwd")]
    UnknownUser {
        /// The user name.
        user: String,
    },

    /// `USER` names a group that is not in the image's `/etc/group`.
    #[error("unable to find group {group}: no matching entries in /etc/group")]
    UnknownGroup {
        /// The group name.
        group: String,
    },

    /// A numeric uid or gid outside `0..=2^31-1`.
    #[error("user spec {spec:?}: the id {id} is out of range")]
    IdOutOfRange {
        /// The whole `USER` value.
        spec: String,
        /// The id as written.
        id: String,
    },

    /// `/etc/passwd` or `/etc/group` of the image could not be read.
    #[error("reading {path} of the image: {reason}")]
    UserDatabase {
        /// `/etc/passwd` or `/etc/group`.
        path: &'static str,
        /// Why (not a regular file, too large, an I/O error).
        reason: String,
    },

    /// The runtime spec could not be built or serialised.
    #[error("building the runtime spec: {0}")]
    Spec(#[from] oci_spec::OciSpecError),

    /// `config.json` could not be serialised.
    #[error("serialising config.json: {0}")]
    Json(#[from] serde_json::Error),
}

impl BundleError {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> BundleError {
        BundleError::Io {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn fs(what: impl Into<String>, source: FsError) -> BundleError {
        BundleError::Fs {
            what: what.into(),
            source,
        }
    }
}
