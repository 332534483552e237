//! Exporting a built root filesystem (BuildKit's `local` and `tar` outputs): the layers applied
//! one on top of the other, whiteouts honoured, confined beneath the destination.

use std::io::Write;
use std::path::Path;

use rbuild_cache::Store;
use rbuild_fsutil::{extract_tar, ExtractOptions, Root, WhiteoutMode};
use rbuild_image::{open_layer, write_layer, Compression, LayerOptions};

use crate::error::BuildError;
use crate::layers::{StageLayer, MAX_LAYER_UNPACKED_BYTES};

/// Writes the root filesystem of `layers` (bottom first) into `dest`, creating it if needed.
pub fn export_local(store: &Store, layers: &[StageLayer], dest: &Path) -> Result<(), BuildError> {
    std::fs::create_dir_all(dest).map_err(|e| BuildError::Io {
        what: format!("creating {}", dest.display()),
        source: e,
    })?;
    let root = Root::open(dest).map_err(|source| BuildError::Fs {
        what: format!("opening {}", dest.display()),
        source,
    })?;
    let opts = ExtractOptions {
        whiteouts: WhiteoutMode::Apply,
        same_owner: true,
        xattrs: true,
        ..ExtractOptions::default()
    };
    for layer in layers {
        let blob = store.blobs().open(&layer.descriptor.digest)?;
        let tar = open_layer(
            blob,
            &layer.descriptor.media_type,
            Some(MAX_LAYER_UNPACKED_BYTES),
        )?;
        extract_tar(tar, &root, &opts).map_err(|source| BuildError::Fs {
            what: format!("exporting layer {}", layer.descriptor.digest),
            source,
        })?;
    }
    Ok(())
}

/// Writes the root filesystem of `layers` as one uncompressed tar stream to `out`.
pub fn export_tar(
    store: &Store,
    layers: &[StageLayer],
    out: impl Write + Send,
) -> Result<(), BuildError> {
    let work = store.work_dir("export")?;
    let dir = work.path().join("rootfs");
    export_local(store, layers, &dir)?;
    let opts = LayerOptions {
        compression: Compression::None,
        ..LayerOptions::default()
    };
    write_layer(&dir, out, &opts)?;
    Ok(())
}
