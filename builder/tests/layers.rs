//! Base image layers unpack into snapshots, an overlay over them takes a step's changes, and the
//! upper dir becomes a snapshot of its own and a layer blob (an uncompressed tar, kept as a
//! recipe that writes it again from the snapshot, checked when read) — on a real store and real
//! mounts.

use std::path::PathBuf;

use rbuild_builder::layers::{base_layers, commit_layer, lower_dirs};
use rbuild_builder::overlay::OverlayView;
use rbuild_cache::Store;
use rbuild_image::manifest::Manifest;
use rbuild_image::{image_from_dir, ImageConfig, LayerOptions};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rbuild-layers-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
    d
}

#[test]
fn base_layers_unpack_and_steps_commit_new_layers() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED: overlay mounts need root");
        return;
    }
    let base = tmp("case");
    let store = Store::open(&base.join("store")).unwrap_or_else(|e| panic!("{e}"));
    let rootfs = base.join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(rootfs.join("etc/hello"), "hello").unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(rootfs.join("gone"), "bye").unwrap_or_else(|e| panic!("{e}"));
    let manifest_digest = image_from_dir(&store, &rootfs, ImageConfig::new("amd64", "linux"))
        .unwrap_or_else(|e| panic!("{e}"));
    let manifest = Manifest::from_json(
        &store
            .blobs()
            .read_to_vec(&manifest_digest, 1 << 20)
            .unwrap_or_default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let config = rbuild_image::images::read_config(&store, &manifest.config.digest)
        .unwrap_or_else(|e| panic!("{e}"));

    let layers = base_layers(&store, &manifest.layers, &config.rootfs.diff_ids)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(layers.len(), 1);
    // Unpacking again is a no-op that finds the same snapshot.
    assert_eq!(
        base_layers(&store, &manifest.layers, &config.rootfs.diff_ids)
            .unwrap_or_else(|e| panic!("{e}")),
        layers
    );
    let lowers = lower_dirs(&store, &layers).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        std::fs::read_to_string(lowers[0].join("etc/hello")).unwrap_or_default(),
        "hello"
    );

    let work = store.work_dir("step").unwrap_or_else(|e| panic!("{e}"));
    let (upper, ovl_work) = (work.path().join("upper"), work.path().join("work"));
    std::fs::create_dir_all(&upper).unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir_all(&ovl_work).unwrap_or_else(|e| panic!("{e}"));
    let view = OverlayView::mount(&lowers, &upper, &ovl_work).unwrap_or_else(|e| panic!("{e}"));
    view.root()
        .mkdir_all("app", 0o755, None)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut f = view
        .root()
        .create_file("app/new.txt", 0o644)
        .unwrap_or_else(|e| panic!("{e}"));
    std::io::Write::write_all(&mut f, b"new").unwrap_or_else(|e| panic!("{e}"));
    drop(f);
    view.root()
        .remove_all("gone")
        .unwrap_or_else(|e| panic!("{e}"));
    drop(view);

    // The options ask for gzip (the default): a step's layer is stored uncompressed anyway.
    let layer = commit_layer(&store, &upper, layers.last(), &LayerOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(store.blobs().contains(&layer.descriptor.digest));
    assert_eq!(
        layer.descriptor.media_type,
        rbuild_image::manifest::media_types::OCI_LAYER_TAR
    );
    assert_eq!(layer.descriptor.digest, layer.diff_id);
    assert_eq!(layer.descriptor.size, layer.uncompressed_size);
    assert_ne!(layer.chain_id, layer.diff_id);
    let mut all = layers.clone();
    all.push(layer.clone());
    let lowers = lower_dirs(&store, &all).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        std::fs::read_to_string(lowers[0].join("app/new.txt")).unwrap_or_default(),
        "new"
    );
    // The layer blob records the deletion as an OCI whiteout.
    let blob = store
        .blobs()
        .open(&layer.descriptor.digest)
        .unwrap_or_else(|e| panic!("{e}"));
    let tar = rbuild_image::open_layer(blob, &layer.descriptor.media_type, None)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut names: Vec<String> = tar::Archive::new(tar)
        .entries()
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
        .map(|e| {
            e.path()
                .map(|p| {
                    p.display()
                        .to_string()
                        .trim_start_matches("./")
                        .trim_end_matches('/')
                        .to_string()
                })
                .unwrap_or_default()
        })
        .collect();
    names.sort();
    assert_eq!(names, [".wh.gone", "app", "app/new.txt"]);

    // The layer is kept as its snapshot and a recipe, and another handle on the store (as
    // another rbuild process has) reads the same bytes.
    assert!(store.blobs().is_recipe(&layer.descriptor.digest));
    let reopened = Store::open(&base.join("store")).unwrap_or_else(|e| panic!("{e}"));
    let mut made = Vec::new();
    std::io::Read::read_to_end(
        &mut reopened
            .blobs()
            .open(&layer.descriptor.digest)
            .unwrap_or_else(|e| panic!("{e}")),
        &mut made,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(made.len() as u64, layer.descriptor.size);
    // A snapshot changed on disk cannot pass as the layer: the read fails at the end.
    std::fs::write(lowers[0].join("app/new.txt"), "NEW").unwrap_or_else(|e| panic!("{e}"));
    let mut blob = reopened
        .blobs()
        .open(&layer.descriptor.digest)
        .unwrap_or_else(|e| panic!("{e}"));
    let Err(err) = std::io::Read::read_to_end(&mut blob, &mut Vec::new()) else {
        panic!("a tampered snapshot was read as the layer");
    };
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
    drop(work);
    let _ = std::fs::remove_dir_all(&base);
}
