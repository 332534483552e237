//! A stage's layers: each layer's blob and diff ID, and its unpacked snapshot keyed by the
//! layer's chain ID (OCI: `sha256(parent chain ID + " " + diff ID)`), usable as an overlay lower
//! dir. Base images' layers are unpacked on first use (whiteouts as overlay whiteouts); a build
//! step's overlay upper dir becomes, renamed, that layer's snapshot.
//!
//! A step's layer blob is an uncompressed tar (its digest is its diff ID), as Docker's image
//! store keeps layers: nothing is compressed while building, and the tar is not even written —
//! only hashed: the store keeps a recipe that writes it again from the snapshot when it is read
//! (`rbuild_image::layer_recipe`). Layers are compressed when they
//! leave the store (a push, an OCI export, a cache export; see
//! `rbuild_image::compressed_layers`).

use std::path::{Path, PathBuf};

use rbuild_cache::{Digest, DigestReader, Store};
use rbuild_fsutil::{extract_tar, ExtractOptions, Root, WhiteoutMode};
use rbuild_image::manifest::Descriptor;
use rbuild_image::{
    layer_recipe, open_layer, use_layer_recipes, write_layer, Compression, LayerInfo, LayerOptions,
};

use crate::error::BuildError;

/// The most a layer may unpack to (a decompression bomb stops here).
pub const MAX_LAYER_UNPACKED_BYTES: u64 = 64 << 30;

/// One layer of a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageLayer {
    /// The layer blob as the image references it.
    pub descriptor: Descriptor,
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// Size of the uncompressed tar (0 when unknown, for base image layers).
    pub uncompressed_size: u64,
    /// Identifies this layer on top of all the layers below it.
    pub chain_id: Digest,
    /// When the step that made the layer ran (RFC 3339), for its history entry: a cached step
    /// keeps the time it first ran, so an unchanged build gives the same image. `None` for base
    /// image layers and results stored before this was kept.
    pub created: Option<String>,
}

impl StageLayer {
    /// The [`LayerInfo`] the image writer wants.
    pub fn info(&self) -> LayerInfo {
        LayerInfo {
            diff_id: self.diff_id.clone(),
            digest: self.descriptor.digest.clone(),
            size: self.descriptor.size,
            uncompressed_size: self.uncompressed_size,
            media_type: self.descriptor.media_type.clone(),
        }
    }
}

/// The OCI chain ID of `diff_id` on top of `parent`.
pub fn chain_id(parent: Option<&Digest>, diff_id: &Digest) -> Digest {
    match parent {
        None => diff_id.clone(),
        Some(p) => Digest::of_bytes(format!("{p} {diff_id}").as_bytes()),
    }
}

/// The snapshot directories of `layers` (bottom first), top first: overlay's lowerdir order.
pub fn lower_dirs(store: &Store, layers: &[StageLayer]) -> Result<Vec<PathBuf>, BuildError> {
    let mut dirs = Vec::with_capacity(layers.len());
    for layer in layers.iter().rev() {
        let snapshot = store
            .snapshots()
            .get(&layer.chain_id)?
            .ok_or_else(|| BuildError::MissingSnapshot(layer.chain_id.clone()))?;
        dirs.push(snapshot.path);
    }
    Ok(dirs)
}

/// Makes sure every layer of a base image is unpacked; returns the stage's layers.
pub fn base_layers(
    store: &Store,
    layers: &[Descriptor],
    diff_ids: &[Digest],
) -> Result<Vec<StageLayer>, BuildError> {
    if layers.len() != diff_ids.len() {
        return Err(BuildError::Image(rbuild_image::ImageError::InvalidImage(
            format!(
                "the image has {} layers but its config lists {} diff IDs",
                layers.len(),
                diff_ids.len()
            ),
        )));
    }
    let mut out: Vec<StageLayer> = Vec::with_capacity(layers.len());
    for (desc, diff_id) in layers.iter().zip(diff_ids) {
        let parent = out.last().map(|l| l.chain_id.clone());
        let chain = chain_id(parent.as_ref(), diff_id);
        if store.snapshots().get(&chain)?.is_none() {
            store
                .snapshots()
                .create(&chain, parent.as_ref(), |dir: &Path| {
                    unpack(store, desc, diff_id, dir)
                })?;
        }
        out.push(StageLayer {
            descriptor: desc.clone(),
            diff_id: diff_id.clone(),
            uncompressed_size: 0,
            chain_id: chain,
            created: None,
        });
    }
    Ok(out)
}

/// Unpacks one layer blob into `dir`, checking that the uncompressed tar has `diff_id`.
pub(crate) fn unpack(
    store: &Store,
    desc: &Descriptor,
    diff_id: &Digest,
    dir: &Path,
) -> Result<(), BuildError> {
    let blob = store.blobs().open(&desc.digest)?;
    let tar = open_layer(blob, &desc.media_type, Some(MAX_LAYER_UNPACKED_BYTES))?;
    let mut hashing = DigestReader::new(tar);
    let root = Root::open(dir).map_err(|source| BuildError::Fs {
        what: format!("opening {}", dir.display()),
        source,
    })?;
    let opts = ExtractOptions {
        whiteouts: WhiteoutMode::ToOverlay,
        same_owner: true,
        xattrs: true,
        ..ExtractOptions::default()
    };
    extract_tar(&mut hashing, &root, &opts).map_err(|source| BuildError::Fs {
        what: format!("unpacking layer {}", desc.digest),
        source,
    })?;
    // Read whatever the tar reader left (padding) so the hash covers the whole stream.
    std::io::copy(&mut hashing, &mut std::io::sink()).map_err(|e| BuildError::Io {
        what: format!("reading layer {}", desc.digest),
        source: e,
    })?;
    let (_, actual, _) = hashing.finish();
    if &actual != diff_id {
        return Err(BuildError::Image(rbuild_image::ImageError::InvalidImage(
            format!(
                "layer {} unpacks to {actual}, but the image config says {diff_id}",
                desc.digest
            ),
        )));
    }
    Ok(())
}

/// Turns a step's overlay upper dir into a layer blob — an uncompressed tar, whatever
/// `opts.compression` says (`opts` gives the media types' family and `SOURCE_DATE_EPOCH`) —
/// and moves it into the snapshot store as that layer's snapshot. Returns the new layer (on
/// top of `parent`).
pub fn commit_layer(
    store: &Store,
    upper: &Path,
    parent: Option<&StageLayer>,
    opts: &LayerOptions,
) -> Result<StageLayer, BuildError> {
    let uncompressed = LayerOptions {
        compression: Compression::None,
        level: None,
        ..opts.clone()
    };
    // The tar is only hashed: the store keeps the snapshot and a recipe to write it again.
    let info = write_layer(upper, std::io::sink(), &uncompressed)?;
    let parent_chain = parent.map(|p| p.chain_id.clone());
    let chain = chain_id(parent_chain.as_ref(), &info.diff_id);
    if store.snapshots().get(&chain)?.is_none() {
        store
            .snapshots()
            .create(&chain, parent_chain.as_ref(), |dir: &Path| {
                std::fs::rename(upper, dir).map_err(|e| BuildError::Io {
                    what: format!("moving {} into the snapshot store", upper.display()),
                    source: e,
                })
            })?;
    }
    use_layer_recipes(Some(store));
    if !store.blobs().contains(&info.digest) {
        store.blobs().put_recipe(
            &info.digest,
            info.size,
            layer_recipe(&chain, uncompressed.source_date_epoch),
        )?;
    }
    Ok(StageLayer {
        descriptor: Descriptor::new(&info.media_type, info.digest.clone(), info.size),
        diff_id: info.diff_id,
        uncompressed_size: info.uncompressed_size,
        chain_id: chain,
        created: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_oci_definition() {
        let a = Digest::of_bytes(b"a");
        let b = Digest::of_bytes(b"b");
        assert_eq!(chain_id(None, &a), a);
        let ab = chain_id(Some(&a), &b);
        assert_eq!(ab, Digest::of_bytes(format!("{a} {b}").as_bytes()));
        assert_ne!(ab, chain_id(Some(&b), &a));
    }
}
