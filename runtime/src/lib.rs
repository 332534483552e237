//! The bundled container runtime: turning an image in the store into something a container
//! runtime runs. Today that is an [OCI runtime bundle](bundle) — a directory holding
//! `config.json` (runtime spec 1.0.2, written with the [`oci_spec`] crate) and `rootfs/` (the
//! image's layers applied in order) — that `runc run --bundle DIR ID` accepts.
//!
//! - [`bundle`]: [`export_bundle`] writes the bundle; [`runtime_spec`] makes the
//!   `config.json` of an image config the way Docker would run it (ENTRYPOINT + CMD, Env with
//!   a default `PATH`, WorkingDir, USER resolved in the image, Docker's default capabilities,
//!   mounts and namespaces, runc's masked and read-only paths).
//! - [`user`]: resolving `USER` (`user`, `uid`, `user:group`, `uid:gid`) through the root
//!   filesystem's `/etc/passwd` and `/etc/group`, read confined beneath it and bounded in size.
//! - [`BundleError`]: the crate's one error type.
//!
//! It also runs images itself, as `docker run` does, in the executor's sandbox:
//!
//! - [`container`]: `run`/`start`/`stop`/`rm`/`logs` (Docker's rules for the command, env,
//!   user, working directory and mounts); [`containers`]: the container records in the store;
//!   [`volume`]: named volumes; [`exec`]: commands in a running container; [`commit`]: a
//!   container's changes as an image; [`supervise`]: detached containers; [`tty`]: terminals.
//! - [`ContainerError`]: the error type of all of these.

#![deny(missing_docs)]

mod attach;
pub mod bundle;
pub mod commit;
pub mod container;
mod container_error;
pub mod containers;
mod error;
pub mod exec;
pub mod supervise;
pub mod tty;
pub mod user;
pub mod volume;

pub use bundle::{export_bundle, runtime_spec, spec_to_json, BundleOptions, BundleSummary};
pub use container_error::ContainerError;
pub use error::BundleError;
pub use user::{resolve_user, ResolvedUser};
