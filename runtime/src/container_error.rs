//! [`ContainerError`], the error type of the container lifecycle (`run`, `ps`, `stop`, `start`,
//! `rm`, `logs`, `exec`, `commit`, volumes): every variant carries what it concerns as data,
//! and [`ContainerError::exit_code`] maps it to the status `docker run` would end with.

use std::io;
use std::path::PathBuf;

use rbuild_builder::BuildError;
use rbuild_cache::StoreError;
use rbuild_executor::sandbox::SandboxError;
use rbuild_executor::ExecError;
use rbuild_fsutil::FsError;
use rbuild_image::ImageError;

/// Everything that can go wrong while managing or running a container.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum ContainerError {
    /// No container has this id, id prefix or name.
    #[error("no such container: {0}")]
    NoSuchContainer(String),

    /// An id prefix that matches several containers.
    #[error("{0:?} matches more than one container: give more of the id")]
    Ambiguous(String),

    /// `--name` names an existing container.
    #[error("the container name {name:?} is already in use by container {id}")]
    NameInUse {
        /// The name.
        name: String,
        /// The id of the container that has it.
        id: String,
    },

    /// A container or volume name with characters Docker does not allow.
    #[error("invalid {what} name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-]* is allowed")]
    InvalidName {
        /// `container` or `volume`.
        what: &'static str,
        /// The name as given.
        name: String,
    },

    /// No volume has this name.
    #[error("no such volume: {0}")]
    NoSuchVolume(String),

    /// A volume that a container still mounts.
    #[error("volume {volume} is in use by container {container}: remove the container first")]
    VolumeInUse {
        /// The volume name.
        volume: String,
        /// The container (name) using it.
        container: String,
    },

    /// An operation that needs a stopped container.
    #[error("container {0} is running: stop it first or use --force")]
    Running(String),

    /// `start` of a container that runs.
    #[error("container {0} is already running")]
    AlreadyRunning(String),

    /// An operation that needs a running container.
    #[error("container {0} is not running")]
    NotRunning(String),

    /// Neither the image nor the command line gives a command.
    #[error("no command specified: the image has neither ENTRYPOINT nor CMD, and none was given")]
    NoCommand,

    /// A command-line value that cannot be used.
    #[error("invalid {flag} {value:?}: {reason}")]
    InvalidOption {
        /// The flag, e.g. `--volume`.
        flag: &'static str,
        /// The value as given.
        value: String,
        /// Why.
        reason: String,
    },

    /// A detached container's supervisor could not start the container.
    #[error("{message}")]
    Detached {
        /// The status `docker run` would end with (125, 126 or 127).
        code: u8,
        /// The supervisor's error message.
        message: String,
    },

    /// A container record that cannot be read.
    #[error("the container record {}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
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

    /// A confined filesystem operation in a container's root filesystem failed.
    #[error("{what}: {source}")]
    Fs {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: FsError,
    },

    /// An error of the content store.
    #[error(transparent)]
    Store(#[from] StoreError),

    /// An error reading or writing an image.
    #[error(transparent)]
    Image(#[from] ImageError),

    /// An error unpacking layers, mounting the root filesystem or committing a layer.
    #[error(transparent)]
    Layers(#[from] BuildError),

    /// An error resolving the user.
    #[error(transparent)]
    User(#[from] ExecError),

    /// The sandbox could not start the process.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
}

impl ContainerError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> ContainerError {
        let what = what.into();
        move |source| ContainerError::Io { what, source }
    }

    pub(crate) fn fs(what: impl Into<String>) -> impl FnOnce(FsError) -> ContainerError {
        let what = what.into();
        move |source| ContainerError::Fs { what, source }
    }

    pub(crate) fn errno(
        what: impl Into<String>,
    ) -> impl FnOnce(rustix::io::Errno) -> ContainerError {
        let what = what.into();
        move |e| ContainerError::Io {
            what,
            source: e.into(),
        }
    }

    /// The exit status `docker run` ends with for this error: 127 when the command does not
    /// exist, 126 when it cannot be executed, 125 for everything else (rbuild's own failure).
    pub fn exit_code(&self) -> u8 {
        match self {
            ContainerError::Sandbox(SandboxError::NotFound { .. }) => 127,
            ContainerError::Sandbox(SandboxError::Setup { step, source })
                if *step == "starting the command"
                    && matches!(
                        source.raw_os_error(),
                        Some(libc::EACCES | libc::ENOEXEC | libc::EISDIR | libc::EPERM)
                    ) =>
            {
                126
            }
            ContainerError::Detached { code, .. } => *code,
            _ => 125,
        }
    }
}
