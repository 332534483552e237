//! Built layers are stored uncompressed and compressed when they leave the store, end to end
//! with the real `rbuild` binary, a real registry (Debian's `docker-registry` on loopback),
//! skopeo and oci-image-tool:
//!
//! * a built image's layers are uncompressed tars in the store (their digest is their diff ID);
//! * `rbuild push` sends them gzip (the registry's manifest says so, the blobs are gzip, skopeo
//!   inspects it), compressing each layer once per store: a second push compresses nothing and
//!   gives the same digest, and so does a second store that built the same image on its own;
//!   a pull into a fresh store keeps the pushed digest, has the same image ID and runs;
//! * `-o type=registry,compression=zstd` pushes zstd layers (same image ID);
//! * `-o type=oci` archives have gzip layers by default and zstd ones with `compression=zstd`,
//!   pass `oci-image-tool validate` and skopeo, and `--metadata-file` names their manifest.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;
use std::process::Command;

use common::{archive_files, push_digest, registry, text, tool, Fixture};
use rbuild_cache::{Digest, Store};
use rbuild_image::images::{read_config, read_manifest_or_index};
use rbuild_image::manifest::{media_types, ManifestOrIndex};
use rbuild_image::reference::Reference;
use rbuild_image::Manifest;
use rbuild_registry::test_registry::Mode;
use rbuild_registry::{Client, ClientOptions};

const EPOCH: &str = "1700000000";

/// COPY and RUN layers on busybox; with `SOURCE_DATE_EPOCH` every store builds the same image.
const DOCKERFILE: &str = "FROM busybox
COPY app/ /app/
RUN echo built > /built && cat /app/a.txt > /copied
";

const FILES: &[(&str, &str)] = &[("app/a.txt", "a file of the context\n"), ("app/b", "b\n")];

/// Builds the test image in `fx`'s store with `extra` flags; returns the image ID.
fn build(fx: &Fixture, extra: &[&str]) -> String {
    let ctx = fx.context("ctx", DOCKERFILE, FILES);
    let iid = fx.dir.join("iid");
    let iid_s = iid.display().to_string();
    let mut args = vec![
        "build",
        "--progress=plain",
        "--source-date-epoch",
        EPOCH,
        "--iidfile",
        &iid_s,
    ];
    args.extend_from_slice(extra);
    args.push(&ctx);
    fx.ok(&args);
    std::fs::read_to_string(&iid).unwrap()
}

/// The manifest the store records under `name`, and its config's diff IDs.
fn stored_image(fx: &Fixture, name: &str) -> (Digest, Manifest, Vec<Digest>) {
    let store = Store::open(&fx.root).unwrap();
    let name = Reference::parse(name).unwrap().to_string();
    let record = store.images().get(&name).unwrap().unwrap();
    let ManifestOrIndex::Manifest(manifest) =
        read_manifest_or_index(&store, &record.manifest, "").unwrap()
    else {
        panic!("{name} is an index");
    };
    let config = read_config(&store, &manifest.config.digest).unwrap();
    (record.manifest, manifest, config.rootfs.diff_ids)
}

/// The manifest `reference` names in the registry.
fn remote_manifest(reference: &str) -> (Digest, Manifest) {
    let client = Client::new(ClientOptions {
        docker_config: None,
        ..ClientOptions::default()
    })
    .unwrap();
    let reference = Reference::parse(reference).unwrap();
    let fetched = client
        .repository(&reference)
        .unwrap()
        .fetch_manifest(reference.tag().unwrap())
        .unwrap();
    match fetched.parsed {
        ManifestOrIndex::Manifest(m) => (fetched.digest, m),
        ManifestOrIndex::Index(_) => panic!("{reference} is an index"),
    }
}

/// How many layers a push said it compressed.
fn compressed_count(stdout: &str) -> usize {
    stdout
        .lines()
        .filter(|l| l.ends_with(": Compressing (gzip)"))
        .count()
}

#[test]
fn built_layers_are_stored_uncompressed_and_pushed_gzip_once() {
    let Some(a) = Fixture::new("lc-push-a") else {
        return;
    };
    let Some(registry) = registry(Mode::Plain) else {
        return;
    };
    let name = format!("{}/lc/app:1", registry.host());
    let id = build(&a, &["-t", &name]);

    // In the store: uncompressed tars, digest = diff ID (the busybox base was built too).
    let (local, manifest, diff_ids) = stored_image(&a, &name);
    assert_eq!(manifest.layers.len(), 3);
    for (layer, diff_id) in manifest.layers.iter().zip(&diff_ids) {
        assert_eq!(layer.media_type, media_types::OCI_LAYER_TAR, "{manifest:?}");
        assert_eq!(&layer.digest, diff_id);
    }
    assert_eq!(manifest.config.digest.to_string(), id);

    // Pushed gzip, each layer compressed now.
    let pushed = a.ok(&["push", &name]);
    assert_eq!(compressed_count(&pushed), 3, "{pushed}");
    let digest = push_digest(&pushed);
    let (remote_digest, remote) = remote_manifest(&name);
    assert_eq!(remote_digest.to_string(), digest);
    assert_ne!(
        remote_digest, local,
        "the pushed manifest is the compressed one"
    );
    assert_eq!(remote.config, manifest.config, "same config: same image ID");
    for layer in &remote.layers {
        assert_eq!(layer.media_type, media_types::OCI_LAYER_GZIP);
        let data = std::fs::read(registry.blob_data(layer.digest.hex())).unwrap();
        assert!(
            data.starts_with(&[0x1f, 0x8b]),
            "{} is not gzip",
            layer.digest
        );
        let mut tar = Vec::new();
        flate_decompress(&data, &mut tar);
        assert!(diff_ids.contains(&Digest::of_bytes(&tar)));
    }
    // The store's image is unchanged.
    assert_eq!(stored_image(&a, &name).0, local);

    // Again: nothing compressed, nothing sent, the same digest.
    let again = a.ok(&["push", &name]);
    assert_eq!(compressed_count(&again), 0, "{again}");
    assert!(
        again.contains("Layer already exists") && !again.contains("Pushed"),
        "{again}"
    );
    assert_eq!(push_digest(&again), digest);

    // skopeo reads it: the same digest, gzip layers.
    if tool("skopeo") {
        let skopeo = |args: &[&str]| {
            let out = Command::new("skopeo").args(args).output().unwrap();
            assert!(
                out.status.success(),
                "skopeo {args:?}: {}",
                text(&out.stderr)
            );
            out.stdout
        };
        let docker = format!("docker://{name}");
        let inspect: serde_json::Value =
            serde_json::from_slice(&skopeo(&["inspect", "--tls-verify=false", &docker])).unwrap();
        assert_eq!(inspect["Digest"], digest.as_str(), "{inspect}");
        let raw = skopeo(&["inspect", "--tls-verify=false", "--raw", &docker]);
        assert_eq!(Digest::of_bytes(&raw).to_string(), digest);
        let raw: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        let layers = raw["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 3);
        for layer in layers {
            assert_eq!(layer["mediaType"], media_types::OCI_LAYER_GZIP, "{layer}");
        }
    }

    // Another store builds the same image on its own and pushes the same manifest.
    let Some(b) = Fixture::new("lc-push-b") else {
        return;
    };
    let other_name = format!("{}/lc/other:1", registry.host());
    assert_eq!(build(&b, &["-t", &other_name]), id);
    assert_eq!(stored_image(&b, &other_name).0, local);
    let pushed_b = b.ok(&["push", &other_name]);
    assert_eq!(compressed_count(&pushed_b), 3, "{pushed_b}");
    assert_eq!(push_digest(&pushed_b), digest);

    // A pull into a fresh store keeps the pushed digest, has the same image ID, and runs.
    let fresh = Fixture::empty("lc-push-fresh");
    let pulled = fresh.ok(&["pull", &name]);
    assert!(pulled.contains(&format!("Digest: {digest}")), "{pulled}");
    let (pulled_manifest, _, _) = stored_image(&fresh, &name);
    assert_eq!(pulled_manifest.to_string(), digest);
    let inspect: serde_json::Value = serde_json::from_str(&fresh.ok(&["inspect", &name])).unwrap();
    assert_eq!(inspect[0]["Id"], id.as_str(), "{inspect}");
    assert_eq!(
        fresh.ok(&["run", "--rm", &name, "cat", "/built", "/copied"]),
        "built\na file of the context\n"
    );
    // Pushing the pulled image elsewhere sends it as it is: the same digest.
    let again_name = format!("{}/lc/again:1", registry.host());
    fresh.ok(&["tag", &name, &again_name]);
    let repushed = fresh.ok(&["push", &again_name]);
    assert_eq!(compressed_count(&repushed), 0, "{repushed}");
    assert_eq!(push_digest(&repushed), digest);

    // A build that pushes zstd: zstd layers, the same image ID.
    let zstd_name = format!("{}/lc/zstd:1", registry.host());
    let output = format!("type=registry,name={zstd_name},compression=zstd");
    assert_eq!(build(&a, &["-o", &output]), id);
    let (_, remote) = remote_manifest(&zstd_name);
    assert_eq!(remote.config, manifest.config);
    for layer in &remote.layers {
        assert_eq!(layer.media_type, media_types::OCI_LAYER_ZSTD);
    }
    let pulled = fresh.ok(&["pull", &zstd_name]);
    assert!(pulled.contains("Digest: "), "{pulled}");
    assert_eq!(
        fresh.ok(&["run", "--rm", &zstd_name, "cat", "/built"]),
        "built\n"
    );
}

fn flate_decompress(gzip: &[u8], out: &mut Vec<u8>) {
    let mut reader = rbuild_image::open_layer(gzip, media_types::OCI_LAYER_GZIP, None).unwrap();
    reader.read_to_end(out).unwrap();
}

#[test]
fn oci_archives_are_gzip_by_default_and_zstd_when_asked() {
    let Some(fx) = Fixture::new("lc-oci") else {
        return;
    };
    for (file, compression, media_type) in [
        ("gzip.tar", "", media_types::OCI_LAYER_GZIP),
        ("zstd.tar", ",compression=zstd", media_types::OCI_LAYER_ZSTD),
    ] {
        let archive = fx.dir.join(file);
        let meta = fx.dir.join("meta.json");
        let output = format!("type=oci,dest={}{compression}", archive.display());
        let meta_s = meta.display().to_string();
        let args = ["-t", "app:1", "-o", &output, "-o", "type=image"];
        build(&fx, &[&args[..], &["--metadata-file", &meta_s]].concat());
        let files = archive_files(&std::fs::read(&archive).unwrap());
        let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
        let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap();
        let blob = |digest: &str| {
            let bytes = &files[&format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))];
            assert_eq!(Digest::of_bytes(bytes).to_string(), digest);
            bytes.clone()
        };
        let manifest: serde_json::Value = serde_json::from_slice(&blob(manifest_digest)).unwrap();
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 3);
        for layer in layers {
            assert_eq!(layer["mediaType"], media_type, "{manifest}");
            blob(layer["digest"].as_str().unwrap());
        }
        // The metadata names the exported manifest; the store's image stays uncompressed.
        let metadata: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
        assert_eq!(metadata["containerimage.digest"], manifest_digest);
        let (local, stored, _) = stored_image(&fx, "app:1");
        assert_ne!(local.to_string(), manifest_digest);
        assert!(stored
            .layers
            .iter()
            .all(|l| l.media_type == media_types::OCI_LAYER_TAR));

        if tool("skopeo") {
            let out = Command::new("skopeo")
                .args(["inspect", &format!("oci-archive:{}:1", archive.display())])
                .output()
                .unwrap();
            assert!(out.status.success(), "skopeo: {}", text(&out.stderr));
            let inspect: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(inspect["Digest"], manifest_digest, "{inspect}");
        }
        // oci-image-tool predates zstd layers: it validates the gzip archive.
        if compression.is_empty() && tool("oci-image-tool") {
            let layout = fx.dir.join("layout");
            std::fs::create_dir_all(&layout).unwrap();
            let untar = Command::new("tar")
                .arg("-xf")
                .arg(&archive)
                .arg("-C")
                .arg(&layout)
                .status()
                .unwrap();
            assert!(untar.success());
            let out = Command::new("oci-image-tool")
                .args(["validate", "--type", "image", "--ref", "name=1"])
                .arg(&layout)
                .output()
                .unwrap();
            let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
            assert!(
                out.status.success() && said.contains("Validation succeeded"),
                "oci-image-tool: {said}"
            );
        }
    }
}
