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

#![deny(missing_docs)]

pub mod bundle;
mod error;
pub mod user;

pub use bundle::{export_bundle, runtime_spec, spec_to_json, BundleOptions, BundleSummary};
pub use error::BundleError;
pub use user::{resolve_user, ResolvedUser};
