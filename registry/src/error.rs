//! [`RegistryError`], the one error type of this crate: each variant names the registry, URL,
//! repository or digest it concerns, and says what the user can do where there is something.

use std::io;

use rbuild_cache::{Digest, StoreError};
use rbuild_image::ImageError;

/// Everything that can go wrong while talking to a registry.
#[derive(thiserror::Error, Debug)]
pub enum RegistryError {
    /// The registry refused the credentials, or wants some and none were found.
    #[error(
        "unauthorized: {registry} refused access to {what}{}: log in with `rbuild login {login}`",
        detail_suffix(detail)
    )]
    Unauthorized {
        /// The registry host (`127.0.0.1:5000`, `docker.io`).
        registry: String,
        /// What was asked for (`repository library/app`).
        what: String,
        /// The registry's own message, if it gave one.
        detail: String,
        /// The server name to give `rbuild login`.
        login: String,
    },

    /// The manifest, tag or blob does not exist.
    #[error("not found: {what} in {repository}{}", detail_suffix(detail))]
    NotFound {
        /// The repository (`127.0.0.1:5000/app`).
        repository: String,
        /// What was asked for (`manifest latest`, `blob sha256:…`).
        what: String,
        /// The registry's own message, if it gave one.
        detail: String,
    },

    /// Content whose digest is not the one it was asked for by (nothing was stored).
    #[error("digest mismatch: {what} from {url} should be {expected} but is {actual}")]
    DigestMismatch {
        /// What was fetched (`blob`, `manifest`).
        what: String,
        /// Where from.
        url: String,
        /// The digest it was asked for by.
        expected: Digest,
        /// The digest of what came.
        actual: Digest,
    },

    /// The registry could not be reached, or the connection broke (after retrying).
    #[error("cannot reach {url}: {reason}")]
    Connection {
        /// The request's URL.
        url: String,
        /// What failed (connection refused, timed out, reset…).
        reason: String,
    },

    /// The registry's TLS certificate is not trusted.
    #[error(
        "TLS certificate of {host} is not trusted: {reason} (give its CA with --registry-ca FILE \
         or $RBUILD_REGISTRY_CA, or use --insecure-registry {host} for plain HTTP)"
    )]
    Certificate {
        /// The registry host.
        host: String,
        /// The TLS library's reason.
        reason: String,
    },

    /// The registry answered with a server error (5xx) or asked to slow down (429), still
    /// after retrying.
    #[error("{url}: the registry answered {status}{}", detail_suffix(detail))]
    Server {
        /// The request's URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The registry's own message, if it gave one.
        detail: String,
    },

    /// An answer the protocol does not allow at this point (an unexpected status, a missing
    /// header, an unparsable body).
    #[error("unexpected response from {url}: {reason}")]
    Protocol {
        /// The request's URL.
        url: String,
        /// What was wrong with it (with the registry's error message, if any).
        reason: String,
    },

    /// A platform that no manifest of an index is for.
    #[error("{reference} has no image for platform {platform} (it has: {available})")]
    NoMatchingPlatform {
        /// The reference pulled.
        reference: String,
        /// The platform asked for.
        platform: String,
        /// The index's platforms, comma-separated.
        available: String,
    },

    /// A digest algorithm the store cannot hold (only sha256 is stored).
    #[error("unsupported digest {0:?}: only sha256 content can be stored")]
    UnsupportedDigest(String),

    /// A reference that cannot be pulled or pushed as given.
    #[error("invalid reference {reference:?}: {reason}")]
    InvalidReference {
        /// The reference.
        reference: String,
        /// Why.
        reason: String,
    },

    /// The Docker config file or a credential helper failed.
    #[error("credentials: {0}")]
    Credentials(String),

    /// A TLS setting that cannot be used (an unreadable or empty CA file).
    #[error("TLS configuration: {0}")]
    TlsConfig(String),

    /// An operating-system error; `what` says which file or stream.
    #[error("{what}: {source}")]
    Io {
        /// The path or stream.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// An error of the content store.
    #[error(transparent)]
    Store(#[from] StoreError),

    /// An error reading or writing an image in the store.
    #[error(transparent)]
    Image(#[from] ImageError),
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    }
}

impl RegistryError {
    /// A [`RegistryError::Io`] for `what`.
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> RegistryError {
        RegistryError::Io {
            what: what.into(),
            source,
        }
    }

    /// A [`RegistryError::Protocol`] for `url`.
    pub(crate) fn protocol(url: &str, reason: impl Into<String>) -> RegistryError {
        RegistryError::Protocol {
            url: url.to_owned(),
            reason: reason.into(),
        }
    }

    /// Whether trying the same thing again may succeed: a broken connection or a 5xx/429
    /// answer.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            RegistryError::Connection { .. } | RegistryError::Server { .. }
        )
    }
}
