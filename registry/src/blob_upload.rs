//! Uploading a blob from the store: a `HEAD` first (a blob the repository has is not sent
//! again), a cross-repository mount when another repository of the registry is known to have
//! it, else an upload session — one `PUT` for blobs up to the chunk size, `PATCH` chunks and a
//! closing `PUT` for larger ones. A session that breaks is started over, within the retry
//! policy; the store is only read.

use std::fs::File;

use rbuild_cache::{Digest, Store};
use rbuild_image::Descriptor;
use ureq::http::Method;

use crate::auth::pull_scope;
use crate::error::RegistryError;
use crate::manifests::header;
use crate::repository::Repository;
use crate::session::Idempotence;
use crate::transport::{HttpRequest, RequestBody};
use crate::url::{origin_of, resolve_location, with_query};

/// What pushing a blob took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobPush {
    /// The repository had it already.
    Exists,
    /// The registry linked it from another repository (`from`, a path in the registry).
    Mounted {
        /// The repository it came from.
        from: String,
    },
    /// It was uploaded.
    Uploaded,
}

/// How an upload attempt ended, short of a final error.
enum Sent {
    /// The blob is in the repository.
    Complete,
    /// The session broke on the way (transiently): start over.
    Broken(RegistryError),
}

/// How an upload session started.
enum UploadStart {
    Mounted,
    /// Upload to this URL.
    Session(String),
}

impl Repository {
    /// Whether the repository has the blob.
    pub fn blob_exists(&self, digest: &Digest) -> Result<bool, RegistryError> {
        let url = self.url(&format!("blobs/{digest}"));
        let request = HttpRequest::new(Method::HEAD, &url);
        let response = self
            .session
            .send(&request, &self.push_scopes(), Idempotence::Retry)?;
        if response.status().as_u16() == 404 {
            return Ok(false);
        }
        let what = format!("blob {digest}");
        self.session
            .check(response, &[200], &url, &self.name(), &what)
            .map(|_| true)
    }

    /// Pushes the blob `descriptor` names from `store`, unless the repository has it; first
    /// trying to mount it from each of `mount_from` (paths of other repositories of this
    /// registry). `on_progress` is told the bytes sent so far.
    pub fn push_blob(
        &self,
        store: &Store,
        descriptor: &Descriptor,
        mount_from: &[String],
        on_progress: &(dyn Fn(u64) + Sync),
    ) -> Result<BlobPush, RegistryError> {
        if self.blob_exists(&descriptor.digest)? {
            return Ok(BlobPush::Exists);
        }
        let file = store.blobs().open_file(&descriptor.digest)?;
        let on_disk = file
            .metadata()
            .map_err(|e| RegistryError::io(format!("blob {}", descriptor.digest), e))?
            .len();
        if on_disk != descriptor.size {
            return Err(RegistryError::protocol(
                "",
                format!(
                    "blob {} is {on_disk} bytes in the store but its descriptor says {}",
                    descriptor.digest, descriptor.size
                ),
            ));
        }
        // A mount is only a shortcut: when it fails in any way, the blob is uploaded.
        for from in mount_from.iter().filter(|from| **from != self.path) {
            if let Ok(UploadStart::Mounted) = self.start_upload(&descriptor.digest, Some(from)) {
                return Ok(BlobPush::Mounted { from: from.clone() });
            }
        }
        let mut tried = 0;
        loop {
            tried += 1;
            match self.upload_once(&file, descriptor, on_progress)? {
                Sent::Complete => return Ok(BlobPush::Uploaded),
                Sent::Broken(_) if self.session.retry().allows_another(tried) => {
                    std::thread::sleep(self.session.retry().delay(tried - 1));
                }
                Sent::Broken(error) => return Err(error),
            }
        }
    }

    /// One upload session from start to end. Failing to start one is final (its requests
    /// were retried already); a transient failure while sending leaves a broken session, and
    /// the caller may start over.
    fn upload_once(
        &self,
        file: &File,
        descriptor: &Descriptor,
        on_progress: &(dyn Fn(u64) + Sync),
    ) -> Result<Sent, RegistryError> {
        let UploadStart::Session(location) = self.start_upload(&descriptor.digest, None)? else {
            return Ok(Sent::Complete);
        };
        match self.send_content(location, file, descriptor, on_progress) {
            Ok(()) => Ok(Sent::Complete),
            Err(error) if error.is_transient() => Ok(Sent::Broken(error)),
            Err(error) => Err(error),
        }
    }

    /// Sends the blob to the upload session at `location` and closes it.
    fn send_content(
        &self,
        mut location: String,
        file: &File,
        descriptor: &Descriptor,
        on_progress: &(dyn Fn(u64) + Sync),
    ) -> Result<(), RegistryError> {
        let size = descriptor.size;
        let chunk_size = self.chunk_size.max(1);
        let mut body = RequestBody::FileRange {
            file,
            offset: 0,
            len: size,
        };
        if size > chunk_size {
            let mut offset = 0;
            while offset < size {
                let len = chunk_size.min(size - offset);
                let report = |sent: u64| on_progress(offset + sent);
                location = self.send_chunk(&location, file, offset, len, &report)?;
                offset += len;
            }
            body = RequestBody::Empty;
        }
        let url = with_query(&location, "digest", descriptor.digest.as_str());
        let mut request = HttpRequest::new(Method::PUT, &url)
            .header("content-type", "application/octet-stream")
            .body(body);
        request.on_sent = Some(on_progress);
        let response = self
            .session
            .send(&request, &self.push_scopes(), Idempotence::Once)?;
        let what = format!("blob {}", descriptor.digest);
        let response = self
            .session
            .check(response, &[201, 204], &url, &self.name(), &what)?;
        if let Some(reported) = header(&response, "docker-content-digest") {
            if reported != descriptor.digest.as_str() {
                return Err(RegistryError::protocol(
                    &url,
                    format!("the registry stored {what} as {reported}"),
                ));
            }
        }
        Ok(())
    }

    /// Sends `len` bytes of `file` from `offset` to the session at `location`; the session's
    /// next location.
    fn send_chunk(
        &self,
        location: &str,
        file: &File,
        offset: u64,
        len: u64,
        on_sent: &(dyn Fn(u64) + Sync),
    ) -> Result<String, RegistryError> {
        let end = offset + len - 1;
        let mut request = HttpRequest::new(Method::PATCH, location)
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{offset}-{end}"))
            .body(RequestBody::FileRange { file, offset, len });
        request.on_sent = Some(on_sent);
        let response = self
            .session
            .send(&request, &self.push_scopes(), Idempotence::Once)?;
        let response =
            self.session
                .check(response, &[202], location, &self.name(), "an upload chunk")?;
        next_location(location, &header(&response, "location"))
    }

    /// Starts an upload session, or mounts the blob from `from`.
    fn start_upload(
        &self,
        digest: &Digest,
        from: Option<&str>,
    ) -> Result<UploadStart, RegistryError> {
        let mut url = self.url("blobs/uploads/");
        let mut scopes = self.push_scopes();
        if let Some(from) = from {
            url = with_query(&url, "mount", digest.as_str());
            url = with_query(&url, "from", from);
            scopes.push(pull_scope(from));
        }
        let request = HttpRequest::new(Method::POST, &url);
        let response = self.session.send(&request, &scopes, Idempotence::Retry)?;
        let response =
            self.session
                .check(response, &[201, 202], &url, &self.name(), "an upload")?;
        if response.status().as_u16() == 201 {
            return Ok(UploadStart::Mounted);
        }
        next_location(&url, &header(&response, "location")).map(UploadStart::Session)
    }
}

/// The absolute URL of a `Location` answer to a request to `url`.
fn next_location(url: &str, location: &Option<String>) -> Result<String, RegistryError> {
    match location {
        Some(location) if !location.is_empty() => Ok(resolve_location(origin_of(url), location)),
        _ => Err(RegistryError::protocol(
            url,
            "the upload answer has no Location",
        )),
    }
}
