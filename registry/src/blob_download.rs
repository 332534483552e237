//! Downloading a blob into the store: streamed through the store's hashing [`BlobWriter`],
//! never held in memory, and committed only if it has the size and digest its descriptor
//! gives. A connection that drops mid-blob is resumed with `Range: bytes=N-` where the
//! registry supports it (else the blob starts over), within the retry policy.

use std::io::{Read, Write};

use rbuild_cache::{BlobWriter, Store, StoreError};
use rbuild_image::Descriptor;
use ureq::http::Method;

use crate::error::RegistryError;
use crate::manifests::header;
use crate::repository::Repository;
use crate::session::Idempotence;
use crate::transport::HttpRequest;

/// The read buffer of a download.
const BUFFER_BYTES: usize = 256 << 10;

/// How one attempt at the body ended.
enum BodyOutcome {
    /// The whole body arrived.
    Complete,
    /// The connection broke; `reason` says how.
    Broken(String),
}

impl Repository {
    /// Downloads the blob `descriptor` names into `store` (doing nothing if it is there
    /// already), telling `on_progress` the bytes received so far.
    pub fn fetch_blob(
        &self,
        store: &Store,
        descriptor: &Descriptor,
        on_progress: &(dyn Fn(u64) + Sync),
    ) -> Result<(), RegistryError> {
        if store.blobs().contains(&descriptor.digest) {
            return Ok(());
        }
        let url = self.url(&format!("blobs/{}", descriptor.digest));
        let what = format!("blob {}", descriptor.digest);
        let mut writer = store.blobs().writer()?;
        let mut tried = 0;
        loop {
            tried += 1;
            let offset = writer.bytes_written();
            let mut request = HttpRequest::new(Method::GET, &url);
            if offset > 0 {
                request = request.header("range", format!("bytes={offset}-"));
            }
            let response = self
                .session
                .send(&request, &self.pull_scopes(), Idempotence::Retry)?;
            let mut response =
                self.session
                    .check(response, &[200, 206], &url, &self.name(), &what)?;
            let resumed = response.status().as_u16() == 206
                && header(&response, "content-range")
                    .is_some_and(|range| range_starts_at(&range, offset));
            if offset > 0 && !resumed {
                // The registry sent the whole blob again: start over.
                writer = store.blobs().writer()?;
            }
            let mut body = response.body_mut().as_reader();
            match copy_body(&mut body, &mut writer, descriptor.size, &url, on_progress)? {
                BodyOutcome::Complete => break,
                BodyOutcome::Broken(reason) => {
                    if !self.session.retry().allows_another(tried) {
                        return Err(RegistryError::Connection { url, reason });
                    }
                    std::thread::sleep(self.session.retry().delay(tried - 1));
                }
            }
        }
        if writer.bytes_written() != descriptor.size {
            return Err(RegistryError::protocol(
                &url,
                format!(
                    "{what} has {} bytes but its descriptor says {}",
                    writer.bytes_written(),
                    descriptor.size
                ),
            ));
        }
        commit(writer, descriptor, &url)
    }
}

/// Appends the body to `writer`, refusing more than `size` bytes in all.
fn copy_body(
    body: &mut impl Read,
    writer: &mut BlobWriter,
    size: u64,
    url: &str,
    on_progress: &(dyn Fn(u64) + Sync),
) -> Result<BodyOutcome, RegistryError> {
    let mut buffer = vec![0u8; BUFFER_BYTES];
    loop {
        let count = match body.read(&mut buffer) {
            Ok(0) => return Ok(BodyOutcome::Complete),
            Ok(count) => count,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Ok(BodyOutcome::Broken(e.to_string())),
        };
        if writer.bytes_written() + count as u64 > size {
            return Err(RegistryError::protocol(
                url,
                format!("the blob is larger than its descriptor's {size} bytes"),
            ));
        }
        let chunk = buffer.get(..count).unwrap_or_default();
        writer
            .write_all(chunk)
            .map_err(|e| RegistryError::io("writing a downloaded blob to the store", e))?;
        on_progress(writer.bytes_written());
    }
}

/// Commits the blob if its digest is right; a mismatch stores nothing.
fn commit(writer: BlobWriter, descriptor: &Descriptor, url: &str) -> Result<(), RegistryError> {
    match writer.commit_expecting(&descriptor.digest) {
        Ok(_) => Ok(()),
        Err(StoreError::DigestMismatch { expected, actual }) => {
            Err(RegistryError::DigestMismatch {
                what: "blob".to_owned(),
                url: url.to_owned(),
                expected,
                actual,
            })
        }
        Err(other) => Err(other.into()),
    }
}

/// Whether `Content-Range: bytes START-END/TOTAL` starts at `offset`.
fn range_starts_at(content_range: &str, offset: u64) -> bool {
    content_range
        .trim()
        .strip_prefix("bytes ")
        .and_then(|rest| rest.split('-').next())
        .and_then(|start| start.trim().parse::<u64>().ok())
        == Some(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert!(range_starts_at("bytes 100-199/200", 100));
        assert!(!range_starts_at("bytes 0-199/200", 100));
        assert!(!range_starts_at("items 100-199/200", 100));
        assert!(!range_starts_at("", 0));
    }
}
