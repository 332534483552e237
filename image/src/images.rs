//! Images in the store: building one from layers and a config, reading one back, walking the
//! blobs it consists of, and recording it under a name in the image index.
//!
//! [`image_from_dir`] is the simplest way to make a real image (tests, and base images such as a
//! busybox rootfs): one gzip layer from a directory, the config completed with its diff ID and
//! a history entry, an OCI manifest.

use std::collections::BTreeSet;
use std::path::Path;

use rbuild_cache::{Digest, ImageRecord, Store};

use crate::config::{History, ImageConfig};
use crate::error::ImageError;
use crate::json::{MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES};
use crate::layer::{layer_to_store, LayerInfo, LayerOptions};
use crate::manifest::{
    is_index_type, is_non_distributable, media_types, parse_manifest_or_index, Descriptor, Index,
    Manifest, ManifestFormat, ManifestOrIndex, Platform,
};
use crate::reference::Reference;

/// How deep indexes may nest (an index of indexes of manifests is 2).
const MAX_INDEX_DEPTH: usize = 4;

/// Stores `config` (with `rootfs.diff_ids` set from `layers`) and a manifest of `format` over
/// `layers`, which must already be in the store. Returns the manifest's descriptor.
pub fn write_image(
    store: &Store,
    mut config: ImageConfig,
    layers: &[LayerInfo],
    format: ManifestFormat,
) -> Result<Descriptor, ImageError> {
    config.rootfs.kind = "layers".to_owned();
    config.rootfs.diff_ids = layers.iter().map(|l| l.diff_id.clone()).collect();
    let config_bytes = config.to_json()?;
    let config_digest = store.blobs().put_bytes(&config_bytes)?;
    let config_desc = Descriptor::new(
        format.config_media_type(),
        config_digest,
        config_bytes.len() as u64,
    );
    let layer_descs = layers
        .iter()
        .map(|l| Descriptor::new(&l.media_type, l.digest.clone(), l.size))
        .collect();
    let manifest = Manifest::new(format, config_desc, layer_descs);
    let bytes = manifest.to_json()?;
    let digest = store.blobs().put_bytes(&bytes)?;
    Ok(Descriptor::new(
        format.manifest_media_type(),
        digest,
        bytes.len() as u64,
    ))
}

/// Builds a one-layer image from the directory `rootfs_dir` (gzip, OCI media types) with
/// `config` (its `rootfs` is replaced; a history entry is added if the config has fewer
/// non-empty history entries than layers). Returns the manifest digest; name it with
/// [`tag_image`].
pub fn image_from_dir(
    store: &Store,
    rootfs_dir: &Path,
    config: ImageConfig,
) -> Result<Digest, ImageError> {
    image_from_dir_with(store, rootfs_dir, config, &LayerOptions::default())
}

/// [`image_from_dir`] with explicit layer options (compression, `SOURCE_DATE_EPOCH`, format).
pub fn image_from_dir_with(
    store: &Store,
    rootfs_dir: &Path,
    mut config: ImageConfig,
    opts: &LayerOptions,
) -> Result<Digest, ImageError> {
    let layer = layer_to_store(rootfs_dir, store.blobs(), opts)?;
    let layer_entries = config.history.iter().filter(|h| !h.empty_layer).count();
    if layer_entries < 1 {
        config.history.push(History {
            created: config.created.clone(),
            created_by: "COPY rootfs / # rbuild image_from_dir".to_owned(),
            ..History::default()
        });
    }
    Ok(write_image(store, config, &[layer], opts.format)?.digest)
}

/// Reads and parses a manifest or index blob (bounded). `media_type` is the descriptor's,
/// or empty if unknown.
pub fn read_manifest_or_index(
    store: &Store,
    digest: &Digest,
    media_type: &str,
) -> Result<ManifestOrIndex, ImageError> {
    let bytes = store.blobs().read_to_vec(digest, MAX_MANIFEST_BYTES)?;
    parse_manifest_or_index(&bytes, media_type)
}

/// Checks that `config` lists one diff ID per layer of `manifest` (whose digest is `digest`).
pub(crate) fn check_layer_count(
    digest: &Digest,
    manifest: &Manifest,
    config: &ImageConfig,
) -> Result<(), ImageError> {
    if manifest.layers.len() != config.rootfs.diff_ids.len() {
        return Err(ImageError::InvalidImage(format!(
            "manifest {digest} has {} layers but its config lists {} diff IDs",
            manifest.layers.len(),
            config.rootfs.diff_ids.len()
        )));
    }
    Ok(())
}

/// Reads and parses a config blob (bounded).
pub fn read_config(store: &Store, digest: &Digest) -> Result<ImageConfig, ImageError> {
    let bytes = store.blobs().read_to_vec(digest, MAX_CONFIG_BYTES)?;
    ImageConfig::from_json(&bytes)
}

/// A stored manifest's descriptor: its media type (from the document, or by shape) and size.
pub fn describe_manifest(
    store: &Store,
    digest: &Digest,
) -> Result<(Descriptor, ManifestOrIndex), ImageError> {
    let parsed = read_manifest_or_index(store, digest, "")?;
    let media_type = match &parsed {
        ManifestOrIndex::Manifest(m) if !m.media_type.is_empty() => m.media_type.clone(),
        ManifestOrIndex::Manifest(_) => media_types::OCI_MANIFEST.to_owned(),
        ManifestOrIndex::Index(i) if !i.media_type.is_empty() => i.media_type.clone(),
        ManifestOrIndex::Index(_) => media_types::OCI_INDEX.to_owned(),
    };
    let size = store.blobs().size(digest)?;
    Ok((Descriptor::new(&media_type, digest.clone(), size), parsed))
}

/// The manifest of an index for the host platform, else the first image manifest.
pub fn select_platform_manifest(index: &Index) -> Option<&Descriptor> {
    let manifests = || {
        index
            .manifests
            .iter()
            .filter(|d| !is_index_type(&d.media_type))
    };
    manifest_for_platform(index, &Platform::host())
        .or_else(|| manifests().find(|d| !matches!(&d.platform, Some(p) if p.os == "unknown")))
}

/// The image manifest of an index for exactly `platform` (see [`Platform::matches`]), if any.
pub fn manifest_for_platform<'a>(index: &'a Index, platform: &Platform) -> Option<&'a Descriptor> {
    index.manifests.iter().find(|d| {
        !is_index_type(&d.media_type) && d.platform.as_ref().is_some_and(|p| platform.matches(p))
    })
}

/// Follows `desc` through indexes (host platform first) to a single image manifest.
pub fn resolve_manifest(
    store: &Store,
    desc: &Descriptor,
) -> Result<(Descriptor, Manifest), ImageError> {
    let mut current = desc.clone();
    for _ in 0..=MAX_INDEX_DEPTH {
        match read_manifest_or_index(store, &current.digest, &current.media_type)? {
            ManifestOrIndex::Manifest(m) => return Ok((current, m)),
            ManifestOrIndex::Index(i) => {
                current = select_platform_manifest(&i).cloned().ok_or_else(|| {
                    ImageError::InvalidImage(format!(
                        "index {} has no image manifest",
                        current.digest
                    ))
                })?;
            }
        }
    }
    Err(ImageError::InvalidImage(format!(
        "indexes nested deeper than {MAX_INDEX_DEPTH} under {}",
        desc.digest
    )))
}

/// Every blob of the image behind `desc` (manifests, configs, layers — through nested
/// indexes), each once, in a fixed order (each manifest before its config and layers),
/// appended to `out`. Checks that each blob is in the store with the size its descriptor
/// says; non-distributable layers that are not in the store are left out.
pub fn collect_blobs(
    store: &Store,
    desc: &Descriptor,
    out: &mut Vec<Descriptor>,
    seen: &mut BTreeSet<Digest>,
) -> Result<(), ImageError> {
    collect_inner(store, desc, out, seen, 0)
}

fn collect_inner(
    store: &Store,
    desc: &Descriptor,
    out: &mut Vec<Descriptor>,
    seen: &mut BTreeSet<Digest>,
    depth: usize,
) -> Result<(), ImageError> {
    if depth > MAX_INDEX_DEPTH {
        return Err(ImageError::InvalidImage(format!(
            "indexes nested deeper than {MAX_INDEX_DEPTH}"
        )));
    }
    if !check_blob(store, desc, out, seen)? {
        return Ok(());
    }
    match read_manifest_or_index(store, &desc.digest, &desc.media_type)? {
        ManifestOrIndex::Manifest(m) => {
            check_blob(store, &m.config, out, seen)?;
            for layer in &m.layers {
                check_blob(store, layer, out, seen)?;
            }
        }
        ManifestOrIndex::Index(i) => {
            for child in &i.manifests {
                collect_inner(store, child, out, seen, depth + 1)?;
            }
        }
    }
    Ok(())
}

/// Adds `desc` if new; false if it was already seen. A non-distributable layer that is not in
/// the store (registries do not serve them) is passed over.
fn check_blob(
    store: &Store,
    desc: &Descriptor,
    out: &mut Vec<Descriptor>,
    seen: &mut BTreeSet<Digest>,
) -> Result<bool, ImageError> {
    if !seen.insert(desc.digest.clone()) {
        return Ok(false);
    }
    if is_non_distributable(&desc.media_type) && !store.blobs().contains(&desc.digest) {
        return Ok(false);
    }
    if !store.blobs().contains(&desc.digest) {
        return Err(ImageError::InvalidImage(format!(
            "blob {} ({}) is not in the store",
            desc.digest, desc.media_type
        )));
    }
    let size = store.blobs().size(&desc.digest)?;
    if size != desc.size {
        return Err(ImageError::InvalidImage(format!(
            "blob {} is {size} bytes but its descriptor says {}",
            desc.digest, desc.size
        )));
    }
    out.push(desc.clone());
    Ok(true)
}

/// The [`ImageRecord`] for `manifest` under `name` (normalised with [`Reference::parse`]):
/// the config of the manifest (the host platform's for an index), `size` = the total size of
/// the distinct blobs, `created` from the config.
pub fn image_record(
    store: &Store,
    name: &str,
    manifest: &Digest,
) -> Result<ImageRecord, ImageError> {
    let reference = Reference::parse(name)?;
    let (desc, _) = describe_manifest(store, manifest)?;
    let (_, resolved) = resolve_manifest(store, &desc)?;
    let config = read_config(store, &resolved.config.digest)?;
    let mut blobs = Vec::new();
    collect_blobs(store, &desc, &mut blobs, &mut BTreeSet::new())?;
    Ok(ImageRecord {
        name: reference.to_string(),
        manifest: manifest.clone(),
        media_type: desc.media_type,
        config: resolved.config.digest,
        size: blobs.iter().map(|d| d.size).sum(),
        created: config.created,
    })
}

/// Records `manifest` under `name` in the store's image index (replacing what the name
/// pointed at) and returns the record.
pub fn tag_image(store: &Store, name: &str, manifest: &Digest) -> Result<ImageRecord, ImageError> {
    let record = image_record(store, name, manifest)?;
    store.images().put(record.clone())?;
    Ok(record)
}
