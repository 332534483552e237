//! [`Client`]: the registry client of one rbuild command — its options (insecure registries,
//! an extra CA, where credentials come from, time limits, retries, parallelism, upload chunk
//! size) and one session per registry, opened on first use and shared by every repository
//! and thread.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rbuild_image::reference::Reference;
use ureq::tls::TlsConfig;

use crate::credentials::Credentials;
use crate::docker_config::DockerConfig;
use crate::endpoint::{RegistryHost, SchemePolicy};
use crate::error::RegistryError;
use crate::repository::Repository;
use crate::session::Session;
use crate::tls::tls_config;
use crate::transport::{RetryPolicy, Timeouts, Transport};

/// Blobs up to this size are uploaded in one request; larger ones in chunks of this size.
pub const DEFAULT_CHUNK_SIZE: u64 = 32 << 20;
/// How many blobs are transferred at once (Docker's default for downloads).
pub const DEFAULT_CONCURRENCY: usize = 3;

/// How a [`Client`] behaves.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Registries spoken to over plain HTTP (`host:port`, or `host` for every port).
    pub insecure_registries: Vec<String>,
    /// A PEM file of CA certificates trusted besides the system's.
    pub extra_ca: Option<PathBuf>,
    /// Where credentials come from; `None` means anonymous access only.
    pub docker_config: Option<DockerConfig>,
    /// Time limits of every request.
    pub timeouts: Timeouts,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
    /// How many blobs are transferred at once.
    pub concurrency: usize,
    /// Upload chunk size (and the largest blob uploaded in one request).
    pub chunk_size: u64,
}

impl Default for ClientOptions {
    /// Docker's config from the environment, system roots, the default limits.
    fn default() -> Self {
        ClientOptions {
            insecure_registries: Vec::new(),
            extra_ca: None,
            docker_config: DockerConfig::from_env(),
            timeouts: Timeouts::default(),
            retry: RetryPolicy::default(),
            concurrency: DEFAULT_CONCURRENCY,
            chunk_size: DEFAULT_CHUNK_SIZE,
        }
    }
}

/// A registry client. Cheap to share between threads.
pub struct Client {
    options: ClientOptions,
    tls: TlsConfig,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
}

impl Client {
    /// A client with `options`; fails only if the extra CA file cannot be used.
    pub fn new(options: ClientOptions) -> Result<Client, RegistryError> {
        let tls = tls_config(options.extra_ca.as_deref())?;
        Ok(Client {
            options,
            tls,
            sessions: Mutex::new(HashMap::new()),
        })
    }

    /// The options.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// The repository a reference names (its tag or digest is not used).
    pub fn repository(&self, reference: &Reference) -> Result<Repository, RegistryError> {
        if reference.domain().is_empty() {
            return Err(RegistryError::InvalidReference {
                reference: reference.to_string(),
                reason: "it names no registry".to_owned(),
            });
        }
        let session = self.session(reference.domain())?;
        Ok(Repository::new(
            session,
            reference.path(),
            self.options.chunk_size,
        ))
    }

    /// The session with `domain`'s registry, opened (and pinged) on first use.
    fn session(&self, domain: &str) -> Result<Arc<Session>, RegistryError> {
        let host = RegistryHost::for_domain(domain, &self.options.insecure_registries);
        let mut sessions = self
            .sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(session) = sessions.get(&host.name) {
            return Ok(Arc::clone(session));
        }
        let credentials = match &self.options.docker_config {
            Some(config) => config.credentials_for(&host.name)?,
            None => None,
        };
        let name = host.name.clone();
        let session = Arc::new(self.open_session(host, credentials)?);
        sessions.insert(name, Arc::clone(&session));
        Ok(session)
    }

    fn open_session(
        &self,
        host: RegistryHost,
        credentials: Option<Credentials>,
    ) -> Result<Session, RegistryError> {
        let use_proxy = host.scheme == SchemePolicy::Https;
        let transport = Transport::new(self.tls.clone(), &self.options.timeouts, use_proxy);
        Session::open(host, credentials, transport, self.options.retry)
    }

    /// Checks that `server` (`host:port`, `docker.io`, `https://index.docker.io/v1/`) accepts
    /// `credentials`, as `docker login` does before saving them. Fails with
    /// [`RegistryError::Unauthorized`] if it does not.
    pub fn verify_login(
        &self,
        server: &str,
        credentials: Credentials,
    ) -> Result<(), RegistryError> {
        let name = crate::endpoint::normalize_server(server);
        let host = RegistryHost::for_domain(&name, &self.options.insecure_registries);
        let session = self.open_session(host, Some(credentials))?;
        session.verify_credentials()
    }
}
