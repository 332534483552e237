//! Build errors, each with the Dockerfile span it is about when there is one.

use rbuild_parser::{ParseError, Span};

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile does not parse.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The build cannot be planned (unknown target, a cycle, a missing base image).
    #[error(transparent)]
    Solve(#[from] rbuild_solver::SolveError),
    /// An instruction's arguments are invalid for the builder (a bad port, an empty volume).
    #[error("{reason}")]
    Instruction { span: Span, reason: String },
    /// A feature rbuild does not have yet.
    #[error("{what}")]
    Unsupported { what: String, span: Span },
    /// A step failed; `source` says why.
    #[error("{source}")]
    Step { span: Span, source: Box<BuildError> },
    /// The `.dockerignore` file could not be read or has a bad pattern.
    #[error(transparent)]
    Ignore(#[from] rbuild_context::ContextError),
    /// Making a mount (the stage's overlay view) failed.
    #[error("{what}: {source}")]
    Mount {
        what: String,
        source: std::io::Error,
    },
    /// The store failed (blobs, snapshots, the image index).
    #[error(transparent)]
    Store(#[from] rbuild_cache::StoreError),
    /// An image could not be read or written.
    #[error(transparent)]
    Image(#[from] rbuild_image::ImageError),
    /// A registry request failed (a registry cache's manifest, records or layer blob).
    #[error(transparent)]
    Registry(#[from] rbuild_registry::RegistryError),
    /// A layer the stage needs has no snapshot (the store was pruned under the build).
    #[error("layer snapshot {0} is missing from the store")]
    MissingSnapshot(rbuild_cache::Digest),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// A confined filesystem operation failed.
    #[error("{what}: {source}")]
    Fs {
        what: String,
        source: rbuild_fsutil::FsError,
    },
    /// A file operation (COPY, ADD, WORKDIR) failed.
    #[error(transparent)]
    Exec(#[from] rbuild_executor::ExecError),
    /// A RUN command exited with a non-zero status.
    #[error("{0}")]
    RunFailed(crate::run::RunFailure),
    /// The sandbox could not start or be waited for.
    #[error(transparent)]
    Sandbox(rbuild_executor::sandbox::SandboxError),
    /// The build was interrupted (Ctrl-C).
    #[error("interrupted")]
    Interrupted,
    /// A stage stopped because another one failed.
    #[error("cancelled: another stage failed")]
    Cancelled,
    /// Several stages failed; `first` is the first that did.
    #[error("{first}\n(and {} more failed stage(s): {})", others.len(), others.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Several {
        first: Box<BuildError>,
        others: Vec<BuildError>,
    },
    /// A bug: an invariant of the build driver did not hold.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl BuildError {
    /// The Dockerfile span the error is about.
    pub fn span(&self) -> Option<Span> {
        match self {
            BuildError::Parse(e) => Some(e.span),
            BuildError::Solve(e) => e.span(),
            BuildError::Instruction { span, .. }
            | BuildError::Unsupported { span, .. }
            | BuildError::Step { span, .. } => Some(*span),
            BuildError::Several { first, .. } => first.span(),
            _ => None,
        }
    }
}
