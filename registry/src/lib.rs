//! An OCI distribution (Docker registry HTTP API v2) client over rbuild's content store.
//!
//! - [`Client::pull`] / [`Client::fetch_image`]: a reference → manifest or index → the
//!   platform's manifest (or all of them) → config and layers, downloaded a few at a time,
//!   each streamed into the store and verified against its digest, resumed with `Range` when
//!   a connection drops; then tagged.
//! - [`Client::push`]: a stored manifest or index (an image, a multi-platform index, or any
//!   artifact manifest such as a cache export) with its blobs: existing blobs are not sent,
//!   blobs of other repositories of the registry are mounted, small blobs go in one `PUT`,
//!   large ones in `PATCH` chunks.
//! - [`Repository`]: the protocol operations one at a time (manifests, blob existence,
//!   download, upload) for callers that assemble their own pushes and pulls.
//! - Auth ([`DockerConfig`], [`Credentials`]): anonymous, basic, and bearer tokens from the
//!   registry's token service, with Docker's `config.json` (`auths`, `credsStore`,
//!   `credHelpers` and `docker-credential-*` helpers) and Docker Hub's conventions.
//! - Transport: HTTPS with the system's roots plus an optional extra CA; plain HTTP for
//!   `--insecure-registry` hosts and for loopback registries that do not speak TLS; a time
//!   limit on every request, and retries with backoff for broken connections and 5xx answers.
//!
//! Errors are [`RegistryError`]s that name the registry, URL or digest concerned.

#![deny(missing_docs)]

mod auth;
mod blob_download;
mod blob_upload;
mod challenge;
mod client;
mod cred_helper;
mod credentials;
mod docker_config;
pub mod endpoint;
mod error;
mod manifests;
mod parallel;
pub mod progress;
mod pull;
mod push;
mod repository;
mod session;
#[cfg(feature = "test-support")]
pub mod test_registry;
#[cfg(feature = "test-support")]
mod test_token_service;
mod tls;
mod transport;
mod url;

pub use blob_upload::BlobPush;
pub use challenge::{parse_challenge, Challenge};
pub use client::{Client, ClientOptions, DEFAULT_CHUNK_SIZE, DEFAULT_CONCURRENCY};
pub use cred_helper::CredentialHelper;
pub use credentials::Credentials;
pub use docker_config::DockerConfig;
pub use error::RegistryError;
pub use manifests::FetchedManifest;
pub use progress::{no_progress, BlobKind, Event, ProgressSink};
pub use pull::{FetchedImage, PlatformChoice, PullOptions, PulledImage};
pub use push::PushedImage;
pub use repository::Repository;
pub use transport::{RetryPolicy, Timeouts};
