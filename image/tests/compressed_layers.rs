//! Layers and images as they leave the store (`compressed_layers`), on real stores: a layer
//! stored uncompressed leaves gzip (or as asked), compressed once per store and remembered;
//! compressed layers go as they are unless forced; an image's outgoing manifest keeps its
//! config (the image ID) and is the same from two stores; indexes follow their manifests; a
//! layer whose content is not its diff ID is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::cell::Cell;
use std::fs;
use std::io::Read;
use std::path::Path;

use common::temp_store;
use rbuild_cache::{Digest, Store};
use rbuild_image::images::{read_config, read_manifest_or_index};
use rbuild_image::layer::{layer_to_store, open_layer, Compression, LayerInfo, LayerOptions};
use rbuild_image::manifest::{media_types, Descriptor, Index, ManifestFormat, ManifestOrIndex};
use rbuild_image::{
    compressed_image, compressed_layer, write_image, ImageConfig, ImageError, LayerCompression,
};

const EPOCH: i64 = 1_700_000_000;

/// A small tree with some compressible content.
fn tree(root: &Path, content: &str) {
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/motd"), content.repeat(1000)).unwrap();
    fs::write(root.join("hello"), "hello\n").unwrap();
}

/// A layer of `tree(content)` stored as `compression` says, with mtimes clamped (so two stores
/// make the same one).
fn stored_layer(
    store: &Store,
    dir: &Path,
    content: &str,
    compression: Compression,
    format: ManifestFormat,
) -> LayerInfo {
    let root = dir.join(format!(
        "tree-{}",
        Digest::of_bytes(content.as_bytes()).hex()
    ));
    if !root.exists() {
        tree(&root, content);
    }
    let options = LayerOptions {
        compression,
        format,
        source_date_epoch: Some(EPOCH),
        ..LayerOptions::default()
    };
    layer_to_store(&root, store.blobs(), &options).unwrap()
}

fn descriptor(info: &LayerInfo) -> Descriptor {
    Descriptor::new(&info.media_type, info.digest.clone(), info.size)
}

/// The diff ID of a stored blob, decompressed as its media type says.
fn content_of(store: &Store, desc: &Descriptor) -> Digest {
    let mut tar = open_layer(
        store.blobs().open(&desc.digest).unwrap(),
        &desc.media_type,
        None,
    )
    .unwrap();
    let mut bytes = Vec::new();
    tar.read_to_end(&mut bytes).unwrap();
    Digest::of_bytes(&bytes)
}

fn gzip() -> LayerCompression {
    LayerCompression::default()
}

#[test]
fn an_uncompressed_layer_leaves_gzip_and_is_compressed_once() {
    let (dir, store) = temp_store();
    let info = stored_layer(
        &store,
        dir.path(),
        "a",
        Compression::None,
        ManifestFormat::Oci,
    );
    assert_eq!(info.media_type, media_types::OCI_LAYER_TAR);
    assert_eq!(info.digest, info.diff_id);
    let stored = descriptor(&info);
    let compressed = Cell::new(0);
    let count = |_: &Digest| compressed.set(compressed.get() + 1);

    let sent = compressed_layer(&store, &stored, &info.diff_id, &gzip(), &count).unwrap();
    assert_eq!(compressed.get(), 1);
    assert_eq!(sent.media_type, media_types::OCI_LAYER_GZIP);
    assert_ne!(sent.digest, info.diff_id);
    assert!(sent.size < info.size, "{} >= {}", sent.size, info.size);
    assert_eq!(store.blobs().size(&sent.digest).unwrap(), sent.size);
    assert_eq!(content_of(&store, &sent), info.diff_id);

    // Again: remembered, nothing compressed — even without the source blob, which is not read.
    assert_eq!(
        compressed_layer(&store, &stored, &info.diff_id, &gzip(), &count).unwrap(),
        sent
    );
    store.blobs().remove(&stored.digest).unwrap();
    assert_eq!(
        compressed_layer(&store, &stored, &info.diff_id, &gzip(), &count).unwrap(),
        sent
    );
    assert_eq!(compressed.get(), 1);
    // The default level and level 6 are one and the same copy; another level is another.
    let level_6 = LayerCompression {
        level: Some(6),
        ..gzip()
    };
    assert_eq!(
        compressed_layer(&store, &stored, &info.diff_id, &level_6, &count).unwrap(),
        sent
    );
    assert_eq!(compressed.get(), 1);
    let level_1 = LayerCompression {
        level: Some(1),
        ..gzip()
    };
    // (the source is gone: compressing anew fails)
    assert!(compressed_layer(&store, &stored, &info.diff_id, &level_1, &count).is_err());

    // A remembered copy whose blob is gone is made again.
    let info = stored_layer(
        &store,
        dir.path(),
        "a",
        Compression::None,
        ManifestFormat::Oci,
    );
    store.blobs().remove(&sent.digest).unwrap();
    let again = compressed_layer(&store, &stored, &info.diff_id, &gzip(), &count).unwrap();
    assert_eq!(again, sent);
    assert_eq!(compressed.get(), 3);
}

#[test]
fn zstd_docker_types_and_force() {
    let (dir, store) = temp_store();
    let plain = stored_layer(
        &store,
        dir.path(),
        "b",
        Compression::None,
        ManifestFormat::Docker,
    );
    assert_eq!(plain.media_type, media_types::DOCKER_LAYER_TAR);
    let none = |_: &Digest| {};
    let zstd = LayerCompression {
        compression: Compression::Zstd,
        level: Some(5),
        force: false,
    };
    let sent = compressed_layer(&store, &descriptor(&plain), &plain.diff_id, &zstd, &none).unwrap();
    // Docker has no zstd type: the OCI one, as BuildKit writes.
    assert_eq!(sent.media_type, media_types::OCI_LAYER_ZSTD);
    assert_eq!(content_of(&store, &sent), plain.diff_id);
    let sent =
        compressed_layer(&store, &descriptor(&plain), &plain.diff_id, &gzip(), &none).unwrap();
    assert_eq!(sent.media_type, media_types::DOCKER_LAYER_GZIP);
    // Uncompressed output leaves an uncompressed layer alone.
    let tar = LayerCompression {
        compression: Compression::None,
        ..gzip()
    };
    let kept = compressed_layer(&store, &descriptor(&plain), &plain.diff_id, &tar, &none).unwrap();
    assert_eq!(kept, descriptor(&plain));

    // A compressed layer goes as it is, unless forced.
    let gz = stored_layer(
        &store,
        dir.path(),
        "c",
        Compression::Gzip,
        ManifestFormat::Oci,
    );
    let stored = descriptor(&gz);
    for how in [gzip(), zstd, tar] {
        let kept = compressed_layer(&store, &stored, &gz.diff_id, &how, &none).unwrap();
        assert_eq!(kept, stored, "{how:?}");
    }
    let forced = LayerCompression {
        force: true,
        ..zstd
    };
    let sent = compressed_layer(&store, &stored, &gz.diff_id, &forced, &none).unwrap();
    assert_eq!(sent.media_type, media_types::OCI_LAYER_ZSTD);
    assert_eq!(content_of(&store, &sent), gz.diff_id);
    let forced = LayerCompression { force: true, ..tar };
    let sent = compressed_layer(&store, &stored, &gz.diff_id, &forced, &none).unwrap();
    assert_eq!(sent.media_type, media_types::OCI_LAYER_TAR);
    assert_eq!(sent.digest, gz.diff_id);
    // Non-distributable layers are never touched.
    let mut foreign = descriptor(&plain);
    foreign.media_type = media_types::OCI_LAYER_NONDIST_TAR.to_owned();
    let forced = LayerCompression {
        force: true,
        ..gzip()
    };
    assert_eq!(
        compressed_layer(&store, &foreign, &plain.diff_id, &forced, &none).unwrap(),
        foreign
    );
}

#[test]
fn content_that_is_not_the_diff_id_is_refused() {
    let (dir, store) = temp_store();
    let info = stored_layer(
        &store,
        dir.path(),
        "d",
        Compression::None,
        ManifestFormat::Oci,
    );
    let other = Digest::of_bytes(b"another layer");
    let err = compressed_layer(&store, &descriptor(&info), &other, &gzip(), &|_| {}).unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    // Nothing was remembered: the right diff ID still compresses.
    let sent = compressed_layer(&store, &descriptor(&info), &info.diff_id, &gzip(), &|_| {});
    assert!(sent.is_ok());
}

/// An image of a gzip "base" layer and two uncompressed "built" ones, in `store`.
fn image(store: &Store, dir: &Path) -> (Descriptor, Vec<LayerInfo>) {
    let layers = vec![
        stored_layer(store, dir, "base", Compression::Gzip, ManifestFormat::Oci),
        stored_layer(store, dir, "one", Compression::None, ManifestFormat::Oci),
        stored_layer(store, dir, "two", Compression::None, ManifestFormat::Oci),
    ];
    let config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        ..ImageConfig::default()
    };
    let manifest = write_image(store, config, &layers, ManifestFormat::Oci).unwrap();
    (manifest, layers)
}

fn manifest_of(store: &Store, desc: &Descriptor) -> rbuild_image::Manifest {
    match read_manifest_or_index(store, &desc.digest, &desc.media_type).unwrap() {
        ManifestOrIndex::Manifest(m) => m,
        ManifestOrIndex::Index(_) => panic!("an index"),
    }
}

#[test]
fn an_image_leaves_with_compressed_layers_and_the_same_config() {
    let (dir_a, a) = temp_store();
    let (local, layers) = image(&a, dir_a.path());
    let compressed = Cell::new(0);
    let count = |_: &Digest| compressed.set(compressed.get() + 1);
    let sent = compressed_image(&a, &local.digest, &gzip(), &count).unwrap();
    assert_eq!(compressed.get(), 2, "the two built layers");
    assert_ne!(sent.digest, local.digest);
    assert_eq!(sent.media_type, media_types::OCI_MANIFEST);
    let (before, after) = (manifest_of(&a, &local), manifest_of(&a, &sent));
    assert_eq!(after.config, before.config, "the image ID changes not");
    assert_eq!(after.layers[0], before.layers[0], "the base goes as it is");
    let config = read_config(&a, &after.config.digest).unwrap();
    for (i, layer) in after.layers.iter().enumerate() {
        assert_eq!(layer.media_type, media_types::OCI_LAYER_GZIP);
        assert_eq!(content_of(&a, layer), config.rootfs.diff_ids[i]);
        assert_eq!(config.rootfs.diff_ids[i], layers[i].diff_id);
    }
    // Again: the same manifest, nothing compressed.
    assert_eq!(
        compressed_image(&a, &local.digest, &gzip(), &count).unwrap(),
        sent
    );
    assert_eq!(compressed.get(), 2);
    // An image already compressed goes as it is.
    assert_eq!(
        compressed_image(&a, &sent.digest, &gzip(), &count).unwrap(),
        sent
    );

    // Another store that made the same image sends the same manifest.
    let (dir_b, b) = temp_store();
    let (local_b, _) = image(&b, dir_b.path());
    assert_eq!(local_b.digest, local.digest);
    assert_eq!(
        compressed_image(&b, &local_b.digest, &gzip(), &|_| {}).unwrap(),
        sent
    );

    // zstd: another manifest, same config; the gzip base stays gzip unless forced.
    let zstd = LayerCompression {
        compression: Compression::Zstd,
        ..gzip()
    };
    let z = manifest_of(
        &a,
        &compressed_image(&a, &local.digest, &zstd, &|_| {}).unwrap(),
    );
    assert_eq!(z.config, before.config);
    assert_eq!(z.layers[0].media_type, media_types::OCI_LAYER_GZIP);
    assert_eq!(z.layers[1].media_type, media_types::OCI_LAYER_ZSTD);
    let forced = LayerCompression {
        force: true,
        ..zstd
    };
    let z = manifest_of(
        &a,
        &compressed_image(&a, &local.digest, &forced, &|_| {}).unwrap(),
    );
    assert!(z
        .layers
        .iter()
        .all(|l| l.media_type == media_types::OCI_LAYER_ZSTD));
}

#[test]
fn an_index_leaves_with_its_manifests_compressed() {
    let (dir, store) = temp_store();
    let (local, _) = image(&store, dir.path());
    let mut entry = local.clone();
    entry.platform = Some(rbuild_image::Platform::host());
    // A child the store does not have (a one-platform pull) is kept as it is.
    let absent = Descriptor::new(media_types::OCI_MANIFEST, Digest::of_bytes(b"not here"), 8);
    let index = Index::new(ManifestFormat::Oci, vec![entry, absent.clone()]);
    let bytes = index.to_json().unwrap();
    let digest = store.blobs().put_bytes(&bytes).unwrap();
    let sent = compressed_image(&store, &digest, &gzip(), &|_| {}).unwrap();
    assert_eq!(sent.media_type, media_types::OCI_INDEX);
    assert_ne!(sent.digest, digest);
    let ManifestOrIndex::Index(out) =
        read_manifest_or_index(&store, &sent.digest, &sent.media_type).unwrap()
    else {
        panic!("not an index");
    };
    let child = compressed_image(&store, &local.digest, &gzip(), &|_| {}).unwrap();
    assert_eq!(out.manifests[0].digest, child.digest);
    assert_eq!(out.manifests[0].size, child.size);
    assert_eq!(
        out.manifests[0].platform,
        Some(rbuild_image::Platform::host())
    );
    assert_eq!(out.manifests[1], absent);
}
