//! Built layers kept as recipes: a build step's layer is an uncompressed tar whose bytes follow
//! from its snapshot (the directory the step made), since [`write_layer`] writes a tree the
//! same way every time. So the store keeps the snapshot and a recipe naming it
//! ([`layer_recipe`]) instead of a second copy of the layer, and [`SnapshotLayers`] writes the
//! tar again when the blob is read (push, export, save, cache export) — the content checked
//! against the layer's digest as every blob read is. This is Docker's image store's way: layers
//! are directories, tars are made when they leave.
//!
//! A recipe: `{"kind": "rbuild-layer-tar-v1", "snapshot": CHAIN_ID, "source_date_epoch": N}`.
//! A new tar format would be a new kind; a recipe of an unknown kind, or whose snapshot is gone,
//! is not available (the blob is missing, and a cache record naming it is not used).

use std::io::{self, Write};
use std::sync::Arc;

use rbuild_cache::blob_recipe::{set_default_maker, BlobMaker};
use rbuild_cache::{Digest, SnapshotStore, Store};
use serde::{Deserialize, Serialize};

use crate::layer::{write_layer, Compression, LayerOptions};

/// The kind of the recipes this module writes.
const LAYER_TAR_KIND: &str = "rbuild-layer-tar-v1";

#[derive(Debug, Serialize, Deserialize)]
struct LayerRecipe {
    kind: String,
    /// The chain ID of the snapshot the tar is written from.
    snapshot: Digest,
    /// `SOURCE_DATE_EPOCH` the tar was written with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source_date_epoch: Option<i64>,
}

/// The recipe of the uncompressed tar of the snapshot `chain_id`, written with
/// `source_date_epoch` (see [`LayerOptions::source_date_epoch`]).
pub fn layer_recipe(chain_id: &Digest, source_date_epoch: Option<i64>) -> serde_json::Value {
    serde_json::json!(LayerRecipe {
        kind: LAYER_TAR_KIND.to_string(),
        snapshot: chain_id.clone(),
        source_date_epoch,
    })
}

/// Writes layer tars from snapshots, for the blob store.
pub struct SnapshotLayers {
    snapshots: SnapshotStore,
}

impl SnapshotLayers {
    fn recipe(recipe: &serde_json::Value) -> Option<LayerRecipe> {
        serde_json::from_value::<LayerRecipe>(recipe.clone())
            .ok()
            .filter(|r| r.kind == LAYER_TAR_KIND)
    }
}

impl BlobMaker for SnapshotLayers {
    fn available(&self, recipe: &serde_json::Value) -> bool {
        Self::recipe(recipe).is_some_and(|r| matches!(self.snapshots.get(&r.snapshot), Ok(Some(_))))
    }

    fn make(&self, recipe: &serde_json::Value, out: &mut (dyn Write + Send)) -> io::Result<()> {
        let r = Self::recipe(recipe).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "not a layer recipe this rbuild knows",
            )
        })?;
        let snapshot = self
            .snapshots
            .get(&r.snapshot)
            .map_err(|e| io::Error::other(e.to_string()))?
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("the snapshot {} of the layer is gone", r.snapshot),
                )
            })?;
        let opts = LayerOptions {
            compression: Compression::None,
            source_date_epoch: r.source_date_epoch,
            ..LayerOptions::default()
        };
        write_layer(&snapshot.path, out, &opts).map_err(|e| io::Error::other(e.to_string()))?;
        Ok(())
    }
}

fn maker_of(store: &Store) -> Arc<dyn BlobMaker> {
    Arc::new(SnapshotLayers {
        snapshots: store.snapshots().clone(),
    })
}

/// Makes every store this process opens (and `store`, already open) able to read layers kept
/// as recipes. Call before opening stores; repeated calls are harmless.
pub fn use_layer_recipes(store: Option<&Store>) {
    set_default_maker(maker_of);
    if let Some(store) = store {
        store.blobs().set_maker(maker_of(store));
    }
}
