//! Build caches in registries: `--cache-to type=registry,ref=REF` pushes the same artifact a
//! local export writes (an OCI image manifest whose config is the records and whose layers are
//! the layer blobs, see docs/cache-format.md) to REF, and `--cache-from type=registry,ref=REF`
//! reads the records of such an artifact — or of an image whose config carries an inline cache
//! (`--cache-to type=inline`) — at the start of a build. Layer blobs are not fetched then: a
//! step that uses a record fetches its blob from REF's repository into the store (streamed,
//! verified against its digest) before unpacking it (`cachekey.rs`).
//!
//! An inline cache's records name the layers as the building store keeps them (uncompressed:
//! the config is written before the image leaves the store, and is the same however it is then
//! compressed); reading them, each record's layer is taken to be the pushed manifest's layer of
//! the same diff ID, which is what gets fetched.

use std::collections::BTreeMap;
use std::sync::Arc;

use rbuild_cache::{Digest, Store};
use rbuild_image::images::select_platform_manifest;
use rbuild_image::json::MAX_CONFIG_BYTES;
use rbuild_image::manifest::{is_manifest_type, media_types, ManifestOrIndex};
use rbuild_image::reference::{Reference, DEFAULT_TAG};
use rbuild_image::Descriptor;
use rbuild_registry::{Client, RegistryError, Repository};

use crate::cachekey::{
    CacheArtifact, CacheConfig, CacheRecord, ExportSummary, SourceKind, CACHE_ARTIFACT_TYPE,
    CACHE_CONFIG_MEDIA_TYPE, EMPTY_CONTENT, INLINE_CACHE_KEY, MAX_CACHE_CONFIG_BYTES,
};
use crate::error::BuildError;

/// A registry client a build shares between its steps (and a `Debug` for [`crate::build::BuildRequest`]).
#[derive(Clone)]
pub struct SharedClient(pub Arc<Client>);

impl std::fmt::Debug for SharedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedClient")
    }
}

/// The records `reference` holds, and the repository their layer blobs are fetched from;
/// `None` when the reference does not exist or names neither a cache artifact nor an image
/// with an inline cache.
pub(crate) fn read_records(
    store: &Store,
    client: &Client,
    reference: &Reference,
) -> Result<Option<(SourceKind, Vec<CacheRecord>)>, BuildError> {
    let repository = client.repository(reference)?;
    let tag = reference
        .digest()
        .or(reference.tag())
        .unwrap_or(DEFAULT_TAG);
    let top = match repository.fetch_manifest(tag) {
        Ok(top) => top,
        Err(RegistryError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let manifest = match top.parsed {
        ManifestOrIndex::Manifest(manifest) => manifest,
        ManifestOrIndex::Index(index) => {
            // A cache artifact listed in an index, else the host's image (an inline cache).
            let entry = index
                .manifests
                .iter()
                .find(|d| d.artifact_type == CACHE_ARTIFACT_TYPE)
                .or_else(|| select_platform_manifest(&index));
            let Some(entry) = entry.filter(|d| is_manifest_type(&d.media_type)) else {
                return Ok(None);
            };
            match repository.fetch_manifest(entry.digest.as_str())?.parsed {
                ManifestOrIndex::Manifest(manifest) => manifest,
                ManifestOrIndex::Index(_) => return Ok(None),
            }
        }
    };
    let config = if manifest.config.media_type == CACHE_CONFIG_MEDIA_TYPE {
        let bytes = fetch_small(store, &repository, &manifest.config, MAX_CACHE_CONFIG_BYTES)?;
        serde_json::from_slice::<CacheConfig>(&bytes).map_err(|e| invalid(&manifest.config, e))?
    } else if manifest.config.media_type == media_types::OCI_CONFIG
        || manifest.config.media_type == media_types::DOCKER_CONFIG
    {
        let bytes = fetch_small(store, &repository, &manifest.config, MAX_CONFIG_BYTES)?;
        let image: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| invalid(&manifest.config, e))?;
        let Some(inline) = image.get(INLINE_CACHE_KEY) else {
            return Ok(None);
        };
        let mut config = serde_json::from_value::<CacheConfig>(inline.clone())
            .map_err(|e| invalid(&manifest.config, e))?;
        let diff_ids = image
            .get("rootfs")
            .and_then(|rootfs| rootfs.get("diff_ids"))
            .cloned()
            .map(serde_json::from_value::<Vec<Digest>>)
            .transpose()
            .map_err(|e| invalid(&manifest.config, e))?
            .unwrap_or_default();
        let pushed: BTreeMap<&Digest, &Descriptor> =
            diff_ids.iter().zip(&manifest.layers).collect();
        for layer in config.records.iter_mut().filter_map(|r| r.layer.as_mut()) {
            if let Some(&sent) = pushed.get(&layer.diff_id) {
                layer.descriptor = sent.clone();
            }
        }
        config
    } else {
        return Ok(None);
    };
    Ok(Some((SourceKind::Registry(repository), config.records)))
}

/// Pushes the cache artifact of `records` to `reference` (its layer blobs are in `store`).
pub(crate) fn push_records(
    store: &Store,
    client: &Client,
    reference: &Reference,
    records: Vec<CacheRecord>,
) -> Result<ExportSummary, BuildError> {
    let exported = records.len();
    let records: BTreeMap<_, _> = records.into_iter().map(|r| (r.key, r.layer)).collect();
    let artifact = CacheArtifact::new(records)?;
    if artifact.uses_empty {
        store.blobs().put_bytes(EMPTY_CONTENT)?;
    }
    store.blobs().put_bytes(&artifact.config)?;
    let manifest = store.blobs().put_bytes(&artifact.manifest)?;
    client.push(store, &manifest, reference, &|_| {})?;
    Ok(ExportSummary {
        exported,
        total: exported,
    })
}

/// Fetches a small blob (a config) into the store, verified, and reads it.
fn fetch_small(
    store: &Store,
    repository: &Repository,
    desc: &Descriptor,
    limit: u64,
) -> Result<Vec<u8>, BuildError> {
    if desc.size > limit {
        return Err(invalid(desc, format!("larger than {limit} bytes")));
    }
    repository.fetch_blob(store, desc, &|_| {})?;
    Ok(store.blobs().read_to_vec(&desc.digest, limit)?)
}

fn invalid(desc: &Descriptor, reason: impl std::fmt::Display) -> BuildError {
    BuildError::Io {
        what: format!("the cache config {}", desc.digest),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, reason.to_string()),
    }
}
