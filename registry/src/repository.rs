//! [`Repository`]: one repository of one registry (`127.0.0.1:5000` + `team/app`), the handle
//! the manifest and blob operations hang off (see `manifests.rs`, `blob_download.rs` and
//! `blob_upload.rs`).

use std::sync::Arc;

use crate::auth::{pull_scope, push_scope};
use crate::session::Session;

/// A repository of a registry.
#[derive(Clone)]
pub struct Repository {
    pub(crate) session: Arc<Session>,
    /// The path in the registry (`library/busybox`).
    pub(crate) path: String,
    /// Upload chunk size.
    pub(crate) chunk_size: u64,
}

impl Repository {
    pub(crate) fn new(session: Arc<Session>, path: &str, chunk_size: u64) -> Repository {
        Repository {
            session,
            path: path.to_owned(),
            chunk_size,
        }
    }

    /// The registry's name in references (`docker.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        self.session.registry()
    }

    /// The path in the registry (`library/busybox`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `registry/path`, as errors and progress name it.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry(), self.path)
    }

    /// Whether another repository handle is on the same registry.
    pub fn same_registry(&self, other: &Repository) -> bool {
        Arc::ptr_eq(&self.session, &other.session)
    }

    /// `<origin>/v2/<path>/<tail>`.
    pub(crate) fn url(&self, tail: &str) -> String {
        format!("{}/v2/{}/{tail}", self.session.origin(), self.path)
    }

    pub(crate) fn pull_scopes(&self) -> Vec<String> {
        vec![pull_scope(&self.path)]
    }

    pub(crate) fn push_scopes(&self) -> Vec<String> {
        vec![push_scope(&self.path)]
    }
}
