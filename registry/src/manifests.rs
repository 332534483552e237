//! Manifests and indexes in a repository: fetching one by tag or digest (any of the OCI and
//! Docker schema 2 types; bounded, and checked against the digest asked for and the one the
//! registry reports), and uploading one by tag or digest.

use std::io::Read;

use rbuild_cache::Digest;
use rbuild_image::json::MAX_MANIFEST_BYTES;
use rbuild_image::manifest::{
    is_index_type, is_manifest_type, media_types as mt, parse_manifest_or_index, ManifestOrIndex,
};
use ureq::http::Method;

use crate::error::RegistryError;
use crate::repository::Repository;
use crate::session::Idempotence;
use crate::transport::{HttpRequest, RequestBody};

/// Every manifest type rbuild reads, for `Accept`.
const ACCEPTED_MANIFEST_TYPES: [&str; 4] = [
    mt::OCI_INDEX,
    mt::OCI_MANIFEST,
    mt::DOCKER_MANIFEST_LIST,
    mt::DOCKER_MANIFEST,
];

/// A manifest or index as fetched.
#[derive(Clone, Debug)]
pub struct FetchedManifest {
    /// Its bytes, exactly as served (their digest is its digest).
    pub bytes: Vec<u8>,
    /// Its media type (from the response, else from the document).
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// It, parsed.
    pub parsed: ManifestOrIndex,
}

impl Repository {
    /// Fetches the manifest or index `reference` names (a tag, or a `sha256:` digest, which the
    /// content must match).
    pub fn fetch_manifest(&self, reference: &str) -> Result<FetchedManifest, RegistryError> {
        let wanted = if reference.contains(':') {
            Some(Digest::parse(reference).map_err(|_| {
                RegistryError::UnsupportedDigest(reference.chars().take(100).collect())
            })?)
        } else {
            None
        };
        let url = self.url(&format!("manifests/{reference}"));
        let request = HttpRequest::new(Method::GET, &url)
            .header("accept", ACCEPTED_MANIFEST_TYPES.join(", "));
        let response = self
            .session
            .send(&request, &self.pull_scopes(), Idempotence::Retry)?;
        let what = format!("manifest {reference}");
        let mut response = self
            .session
            .check(response, &[200], &url, &self.name(), &what)?;
        let content_type = header(&response, "content-type")
            .map(|v| v.split(';').next().unwrap_or("").trim().to_owned())
            .unwrap_or_default();
        let reported = header(&response, "docker-content-digest");
        let mut bytes = Vec::new();
        response
            .body_mut()
            .as_reader()
            .take(MAX_MANIFEST_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| RegistryError::Connection {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(RegistryError::protocol(
                &url,
                format!("the manifest is larger than {MAX_MANIFEST_BYTES} bytes"),
            ));
        }
        let digest = Digest::of_bytes(&bytes);
        let expected = wanted.or_else(|| reported.and_then(|r| Digest::parse(&r).ok()));
        if let Some(expected) = expected {
            if expected != digest {
                return Err(RegistryError::DigestMismatch {
                    what: what.clone(),
                    url,
                    expected,
                    actual: digest,
                });
            }
        }
        let hint = if is_manifest_type(&content_type) || is_index_type(&content_type) {
            content_type.as_str()
        } else {
            ""
        };
        let parsed = parse_manifest_or_index(&bytes, hint)?;
        let media_type = match &parsed {
            _ if !hint.is_empty() => hint.to_owned(),
            ManifestOrIndex::Manifest(m) if !m.media_type.is_empty() => m.media_type.clone(),
            ManifestOrIndex::Manifest(_) => mt::OCI_MANIFEST.to_owned(),
            ManifestOrIndex::Index(i) if !i.media_type.is_empty() => i.media_type.clone(),
            ManifestOrIndex::Index(_) => mt::OCI_INDEX.to_owned(),
        };
        Ok(FetchedManifest {
            bytes,
            media_type,
            digest,
            parsed,
        })
    }

    /// Uploads a manifest or index under `reference` (a tag, or its own digest); returns its
    /// digest.
    pub fn put_manifest(
        &self,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Digest, RegistryError> {
        let digest = Digest::of_bytes(bytes);
        let url = self.url(&format!("manifests/{reference}"));
        let request = HttpRequest::new(Method::PUT, &url)
            .header("content-type", media_type)
            .body(RequestBody::Bytes(bytes));
        let response = self
            .session
            .send(&request, &self.push_scopes(), Idempotence::Retry)?;
        let what = format!("manifest {reference}");
        let response = self
            .session
            .check(response, &[200, 201], &url, &self.name(), &what)?;
        if let Some(reported) = header(&response, "docker-content-digest") {
            if let Ok(reported) = Digest::parse(&reported) {
                if reported != digest {
                    return Err(RegistryError::DigestMismatch {
                        what,
                        url,
                        expected: digest,
                        actual: reported,
                    });
                }
            }
        }
        Ok(digest)
    }
}

/// A response header as text.
pub(crate) fn header<B>(response: &ureq::http::Response<B>, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
