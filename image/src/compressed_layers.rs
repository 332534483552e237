//! Layers as they leave the store.
//!
//! The layers rbuild makes itself (build steps, `rbuild commit`) are stored as uncompressed
//! tars — their blob digest is their diff ID — as Docker's image store keeps layers; pulled and
//! loaded images keep their layers as they came. What leaves the store is compressed on the way
//! out: [`compressed_image`] gives the manifest (or index) a push or an OCI export sends, whose
//! layers [`compressed_layer`] compresses; cache exports compress their records' layers with
//! [`compressed_layer`] too.
//!
//! Which layers are compressed is a [`LayerCompression`]'s choice: uncompressed ones always
//! (unless it says uncompressed), ones compressed otherwise only with `force` (BuildKit's
//! `force-compression=true`). Without `force`, compressed layers go out as they are, so a pulled
//! image pushed elsewhere keeps its manifest digest. Non-distributable layers and layers of
//! unknown media types are left alone.
//!
//! Compressing is deterministic — gzp and libzstd give the same bytes for the same tar and level
//! whatever the machine or core count (see [`crate::layer`]) — so two stores that built the same
//! image send the same manifest digest. And it is done once per store and (diff ID, algorithm,
//! level): the store's compressed-layers index ([`rbuild_cache::Store::compressed_layers`])
//! remembers the blob each compression gave, and a later push or export takes it from there
//! while the blob is still in the store. The source blob is streamed (never held in memory) and
//! its content checked against the diff ID before the compressed blob is stored.

use rbuild_cache::{Digest, Store};
use serde::{Deserialize, Serialize};

use crate::error::ImageError;
use crate::images::{check_layer_count, describe_manifest, read_config, read_manifest_or_index};
use crate::layer::{recompress_to_store, resolved_level, LayerOptions};
use crate::manifest::{
    is_index_type, is_manifest_type, is_non_distributable, layer_compression, media_types,
    Compression, Descriptor, ManifestFormat, ManifestOrIndex,
};

/// How deep indexes may nest.
const MAX_INDEX_DEPTH: usize = 4;

/// How layers are compressed when an image leaves the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerCompression {
    /// The algorithm.
    pub compression: Compression,
    /// The level; `None` for the algorithm's default (gzip 6, zstd 3).
    pub level: Option<i32>,
    /// Recompress layers compressed with another algorithm too (BuildKit's
    /// `force-compression=true`); without it only uncompressed layers are compressed.
    pub force: bool,
}

impl Default for LayerCompression {
    /// gzip at its default level, as BuildKit's exporters do.
    fn default() -> LayerCompression {
        LayerCompression {
            compression: Compression::Gzip,
            level: None,
            force: false,
        }
    }
}

impl LayerCompression {
    /// Whether a layer of `media_type` leaves the store in another form than it is stored in.
    pub fn applies_to(&self, media_type: &str) -> bool {
        if is_non_distributable(media_type) {
            return false;
        }
        match layer_compression(media_type) {
            Some(Compression::None) => self.compression != Compression::None,
            Some(current) => self.force && current != self.compression,
            None => false,
        }
    }
}

/// What the compressed-layers index holds for one (diff ID, algorithm, level).
#[derive(Debug, Serialize, Deserialize)]
struct CompressedCopy {
    digest: Digest,
    size: u64,
}

/// The index key of the copy of layer `diff_id` compressed with `compression` at `level`.
fn copy_key(diff_id: &Digest, compression: Compression, level: i32) -> Digest {
    Digest::of_bytes(
        format!("rbuild compressed layer v1\n{diff_id}\n{compression:?}\n{level}").as_bytes(),
    )
}

/// The layer `layer` (in the store, with diff ID `diff_id`) as it leaves the store: the
/// descriptor of its copy compressed as `how` says (made now, or earlier and remembered), or
/// `layer` itself when `how` leaves it as it is. `on_compress` is told the diff ID of each
/// layer that is compressed now (not of one found done).
pub fn compressed_layer(
    store: &Store,
    layer: &Descriptor,
    diff_id: &Digest,
    how: &LayerCompression,
    on_compress: &dyn Fn(&Digest),
) -> Result<Descriptor, ImageError> {
    if !how.applies_to(&layer.media_type) {
        return Ok(layer.clone());
    }
    let key = copy_key(
        diff_id,
        how.compression,
        resolved_level(how.compression, how.level),
    );
    let copy = match remembered(store, &key)? {
        Some(copy) => copy,
        None => {
            on_compress(diff_id);
            let options = LayerOptions {
                compression: how.compression,
                level: how.level,
                ..LayerOptions::default()
            };
            let source = store.blobs().open(&layer.digest)?;
            let info = recompress_to_store(
                source,
                &layer.media_type,
                store.blobs(),
                &options,
                Some(diff_id),
            )?;
            let copy = CompressedCopy {
                digest: info.digest,
                size: info.size,
            };
            let record = serde_json::to_vec(&copy).map_err(|source| ImageError::Json {
                what: "a compressed layer's record".to_owned(),
                source,
            })?;
            store.compressed_layers().put(&key, &record)?;
            copy
        }
    };
    let mut out = layer.clone();
    out.media_type = ManifestFormat::of_media_type(&layer.media_type)
        .layer_media_type(how.compression)
        .to_owned();
    out.digest = copy.digest;
    out.size = copy.size;
    Ok(out)
}

/// The copy the index names under `key`, if its blob is still in the store (a record that
/// cannot be read counts as none: the layer is compressed again).
fn remembered(store: &Store, key: &Digest) -> Result<Option<CompressedCopy>, ImageError> {
    let Some(bytes) = store.compressed_layers().get(key)? else {
        return Ok(None);
    };
    let Ok(copy) = serde_json::from_slice::<CompressedCopy>(&bytes) else {
        return Ok(None);
    };
    let intact = store.blobs().contains(&copy.digest)
        && store.blobs().size(&copy.digest).ok() == Some(copy.size);
    Ok(intact.then_some(copy))
}

/// The image `manifest` (a manifest or an index in the store) as it leaves the store: its
/// descriptor when `how` leaves every layer as it is, else that of a manifest (stored now) whose
/// layers are [`compressed_layer`]s — config, order and everything else unchanged, so the image
/// ID is the same — or of an index over such manifests (children missing from the store, as a
/// one-platform pull leaves them, are kept as they are).
pub fn compressed_image(
    store: &Store,
    manifest: &Digest,
    how: &LayerCompression,
    on_compress: &dyn Fn(&Digest),
) -> Result<Descriptor, ImageError> {
    let (descriptor, parsed) = describe_manifest(store, manifest)?;
    outgoing(store, &descriptor, parsed, how, on_compress, 0)
}

fn outgoing(
    store: &Store,
    descriptor: &Descriptor,
    parsed: ManifestOrIndex,
    how: &LayerCompression,
    on_compress: &dyn Fn(&Digest),
    depth: usize,
) -> Result<Descriptor, ImageError> {
    let bytes = match parsed {
        ManifestOrIndex::Manifest(mut manifest) => {
            let image = manifest.config.media_type == media_types::OCI_CONFIG
                || manifest.config.media_type == media_types::DOCKER_CONFIG;
            if !image
                || !manifest
                    .layers
                    .iter()
                    .any(|l| how.applies_to(&l.media_type))
            {
                return Ok(descriptor.clone());
            }
            let config = read_config(store, &manifest.config.digest)?;
            check_layer_count(&descriptor.digest, &manifest, &config)?;
            for (layer, diff_id) in manifest.layers.iter_mut().zip(&config.rootfs.diff_ids) {
                *layer = compressed_layer(store, layer, diff_id, how, on_compress)?;
            }
            manifest.to_json()?
        }
        ManifestOrIndex::Index(mut index) => {
            if depth >= MAX_INDEX_DEPTH {
                return Err(ImageError::InvalidImage(format!(
                    "indexes nested deeper than {MAX_INDEX_DEPTH} under {}",
                    descriptor.digest
                )));
            }
            let mut changed = false;
            for child in &mut index.manifests {
                let known = is_manifest_type(&child.media_type) || is_index_type(&child.media_type);
                if !known || !store.blobs().contains(&child.digest) {
                    continue;
                }
                let parsed = read_manifest_or_index(store, &child.digest, &child.media_type)?;
                let sent = outgoing(store, child, parsed, how, on_compress, depth + 1)?;
                if sent.digest != child.digest {
                    child.digest = sent.digest;
                    child.size = sent.size;
                    changed = true;
                }
            }
            if !changed {
                return Ok(descriptor.clone());
            }
            index.to_json()?
        }
    };
    let digest = store.blobs().put_bytes(&bytes)?;
    let mut sent = descriptor.clone();
    sent.digest = digest;
    sent.size = bytes.len() as u64;
    Ok(sent)
}
