//! OCI layout and docker-archive export/import: checked by skopeo, umoci and oci-image-tool,
//! roundtripped between stores, and fed tampered and hostile archives.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::{entry_offset, raw_tar, run, tar_entries, temp_store, tool};
use rbuild_cache::{Digest, Store};
use rbuild_image::images::{read_config, read_manifest_or_index, resolve_manifest};
use rbuild_image::layer::LayerOptions;
use rbuild_image::manifest::{media_types, Descriptor, Index, ManifestFormat, ManifestOrIndex};
use rbuild_image::test_support::{sample_image, write_sample_tree};
use rbuild_image::{
    detect_archive_format, export_docker_archive, export_oci_archive, export_oci_dir,
    image_from_dir_with, import_archive, import_docker_archive, import_oci_archive, import_oci_dir,
    tag_image, ArchiveFormat, Compression, ImageConfig, ImageError, Platform,
};

/// A store with `app:latest` (and `user/app:v1` on the same manifest) and a second image
/// `other:1` whose layer differs.
struct Fixture {
    _tmp: tempfile::TempDir,
    dir: std::path::PathBuf,
    store: Store,
    app: Digest,
    other: Digest,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let store = Store::open(&dir.join("store")).unwrap();
    let app = sample_image(&store, &dir.join("app"), "app").unwrap();
    tag_image(&store, "user/app:v1", &app).unwrap();
    let rootfs = dir.join("other-rootfs");
    write_sample_tree(&rootfs).unwrap();
    fs::write(rootfs.join("etc/other"), "other image\n").unwrap();
    let host = Platform::host();
    let mut config = ImageConfig::new(&host.architecture, &host.os);
    config.config.entrypoint = vec!["/bin/hello".into()];
    let opts = LayerOptions {
        compression: Compression::Zstd,
        ..LayerOptions::default()
    };
    let other = image_from_dir_with(&store, &rootfs, config, &opts).unwrap();
    tag_image(&store, "other:1", &other).unwrap();
    Fixture {
        _tmp: tmp,
        dir,
        store,
        app,
        other,
    }
}

fn images(f: &Fixture) -> Vec<(&'static str, Digest)> {
    vec![
        ("app:latest", f.app.clone()),
        ("user/app:v1", f.app.clone()),
        ("other:1", f.other.clone()),
    ]
}

#[test]
fn oci_archive_layout_and_tools() {
    let f = fixture();
    let archive = f.dir.join("oci.tar");
    export_oci_archive(&f.store, &images(&f), fs::File::create(&archive).unwrap()).unwrap();
    let bytes = fs::read(&archive).unwrap();

    // Layout: oci-layout, index.json with the annotations, each blob once.
    let entries = tar_entries(&bytes);
    assert_eq!(entries[0].0, "oci-layout");
    assert_eq!(entries[0].2, br#"{"imageLayoutVersion":"1.0.0"}"#);
    assert_eq!(entries[1].0, "index.json");
    let index = Index::from_json(&entries[1].2).unwrap();
    let names: Vec<(String, String)> = index
        .manifests
        .iter()
        .map(|d| {
            (
                d.annotations["io.containerd.image.name"].clone(),
                d.annotations["org.opencontainers.image.ref.name"].clone(),
            )
        })
        .collect();
    assert_eq!(
        names,
        vec![
            (
                "docker.io/library/app:latest".to_owned(),
                "latest".to_owned()
            ),
            ("docker.io/user/app:v1".to_owned(), "v1".to_owned()),
            ("docker.io/library/other:1".to_owned(), "1".to_owned()),
        ]
    );
    assert_eq!(index.manifests[0].digest, f.app);
    let blob_names: Vec<&str> = entries
        .iter()
        .map(|e| e.0.as_str())
        .filter(|n| n.starts_with("blobs/sha256/") && n.len() > 13)
        .collect();
    // 2 manifests, 2 configs, 2 layers.
    assert_eq!(blob_names.len(), 6);
    for (name, _, data) in &entries {
        if let Some(hex) = name.strip_prefix("blobs/sha256/").filter(|h| !h.is_empty()) {
            assert_eq!(Digest::of_bytes(data).hex(), hex);
        }
    }
    // Exporting again gives the same bytes.
    let mut again = Vec::new();
    export_oci_archive(&f.store, &images(&f), &mut again).unwrap();
    assert!(again == bytes);

    if let Some(skopeo) = tool("skopeo") {
        let out = run(Command::new(&skopeo)
            .arg("inspect")
            .arg(format!("oci-archive:{}:latest", archive.display())));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["Digest"], f.app.to_string());
        assert_eq!(v["Architecture"], Platform::host().architecture);
        assert_eq!(v["Layers"].as_array().unwrap().len(), 1);
        let out = run(Command::new(&skopeo)
            .arg("inspect")
            .arg("--config")
            .arg(format!("oci-archive:{}:1", archive.display())));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["config"]["Entrypoint"][0], "/bin/hello");
    }

    let layout = f.dir.join("layout");
    export_oci_dir(&f.store, &images(&f), &layout).unwrap();
    // Idempotent over an existing layout.
    export_oci_dir(&f.store, &images(&f), &layout).unwrap();
    assert_eq!(fs::read(layout.join("index.json")).unwrap(), entries[1].2);
    if let Some(umoci) = tool("umoci") {
        let out = run(Command::new(&umoci)
            .arg("stat")
            .arg("--image")
            .arg(format!("{}:latest", layout.display())));
        assert!(out.contains("LAYER") || out.contains("CREATED"), "{out}");
        run(Command::new(&umoci).arg("ls").arg("--layout").arg(&layout));
    }
    if let Some(oit) = tool("oci-image-tool") {
        // This version (1.0.0-rc1) calls the layout type "image", and its `--ref` filter
        // mishandles indexes with several entries (it deletes from the slice it iterates), so
        // each image is validated in a layout of its own. It predates zstd layers (image-spec
        // 1.1), so `other:1` is left to skopeo and umoci.
        for (name, digest, tag) in [
            ("app:latest", &f.app, "latest"),
            ("user/app:v1", &f.app, "v1"),
        ] {
            let single = f.dir.join(format!("single-{tag}"));
            export_oci_dir(&f.store, &[(name, digest.clone())], &single).unwrap();
            let out = run(Command::new(&oit)
                .args(["validate", "--type", "image", "--ref"])
                .arg(format!("name={tag}"))
                .arg(&single));
            assert!(out.contains("Validation succeeded"), "{out}");
        }
        run(Command::new(&oit)
            .args(["validate", "--type", "imageIndex"])
            .arg(layout.join("index.json")));
        let blob = |d: &Digest| layout.join("blobs/sha256").join(d.hex());
        let (_, m) = resolve_manifest(&f.store, &index.manifests[0]).unwrap();
        run(Command::new(&oit)
            .args(["validate", "--type", "manifest"])
            .arg(blob(&f.app)));
        run(Command::new(&oit)
            .args(["validate", "--type", "config"])
            .arg(blob(&m.config.digest)));
    }
}

#[test]
fn docker_archive_layout_and_skopeo() {
    let f = fixture();
    let archive = f.dir.join("docker.tar");
    export_docker_archive(&f.store, &images(&f), fs::File::create(&archive).unwrap()).unwrap();
    let entries = tar_entries(&fs::read(&archive).unwrap());
    let find = |name: &str| {
        entries
            .iter()
            .find(|e| e.0 == name)
            .map(|e| e.2.clone())
            .unwrap_or_else(|| panic!("{name} missing"))
    };

    let manifest: serde_json::Value = serde_json::from_slice(&find("manifest.json")).unwrap();
    let items = manifest.as_array().unwrap();
    assert_eq!(items.len(), 2, "two manifests, app's with two tags");
    assert_eq!(
        items[0]["RepoTags"],
        serde_json::json!(["app:latest", "user/app:v1"])
    );
    assert_eq!(items[1]["RepoTags"], serde_json::json!(["other:1"]));
    let (_, app_manifest) = resolve_manifest(
        &f.store,
        &Descriptor::new(
            media_types::OCI_MANIFEST,
            f.app.clone(),
            f.store.blobs().size(&f.app).unwrap(),
        ),
    )
    .unwrap();
    assert_eq!(
        items[0]["Config"],
        format!("{}.json", app_manifest.config.digest.hex())
    );
    let config = read_config(&f.store, &app_manifest.config.digest).unwrap();
    let layer_path = items[0]["Layers"][0].as_str().unwrap().to_owned();
    // The first layer's directory is its chain ID = its diff ID.
    assert_eq!(
        layer_path,
        format!("{}/layer.tar", config.rootfs.diff_ids[0].hex())
    );
    // Layers are uncompressed and match the diff IDs; configs are byte-identical.
    assert_eq!(
        Digest::of_bytes(&find(&layer_path)),
        config.rootfs.diff_ids[0]
    );
    assert_eq!(
        Digest::of_bytes(&find(items[0]["Config"].as_str().unwrap())),
        app_manifest.config.digest
    );
    assert_eq!(find(&layer_path.replace("layer.tar", "VERSION")), b"1.0");
    let repos: serde_json::Value = serde_json::from_slice(&find("repositories")).unwrap();
    assert_eq!(repos["app"]["latest"], config.rootfs.diff_ids[0].hex());
    assert_eq!(repos["user/app"]["v1"], config.rootfs.diff_ids[0].hex());

    if let Some(skopeo) = tool("skopeo") {
        let out = run(Command::new(&skopeo)
            .arg("inspect")
            .arg(format!("docker-archive:{}:app:latest", archive.display())));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["Layers"].as_array().unwrap().len(), 1);
        // skopeo reports the uncompressed layer digest = our diff ID.
        assert_eq!(v["Layers"][0], config.rootfs.diff_ids[0].to_string());
        // A single-image archive needs no reference.
        let single = f.dir.join("single.tar");
        export_docker_archive(
            &f.store,
            &[("other:1", f.other.clone())],
            fs::File::create(&single).unwrap(),
        )
        .unwrap();
        run(Command::new(&skopeo)
            .arg("inspect")
            .arg(format!("docker-archive:{}", single.display())));
    }
}

/// The digests of every image the store names, by name.
fn named(store: &Store) -> Vec<(String, Digest)> {
    let mut v: Vec<(String, Digest)> = store
        .images()
        .list()
        .unwrap()
        .into_iter()
        .map(|r| (r.name, r.manifest))
        .collect();
    v.sort();
    v
}

#[test]
fn oci_roundtrip_keeps_manifest_digests() {
    let f = fixture();
    let mut archive = Vec::new();
    export_oci_archive(&f.store, &images(&f), &mut archive).unwrap();
    let (_g, store2) = temp_store();
    let imported = import_oci_archive(&store2, &archive[..]).unwrap();
    assert_eq!(imported.len(), 3);
    assert_eq!(named(&store2), named(&f.store));
    for image in &imported {
        let mut blobs = Vec::new();
        let desc = Descriptor::new(
            &image.media_type,
            image.manifest.clone(),
            store2.blobs().size(&image.manifest).unwrap(),
        );
        rbuild_image::images::collect_blobs(&store2, &desc, &mut blobs, &mut Default::default())
            .unwrap();
        assert_eq!(blobs.iter().map(|b| b.size).sum::<u64>(), image.size);
    }
    let record = store2
        .images()
        .get("docker.io/library/other:1")
        .unwrap()
        .unwrap();
    assert_eq!(
        record,
        f.store
            .images()
            .get("docker.io/library/other:1")
            .unwrap()
            .unwrap()
    );

    // Directory layouts roundtrip too.
    let layout = f.dir.join("layout");
    export_oci_dir(&f.store, &images(&f), &layout).unwrap();
    let (_g3, store3) = temp_store();
    import_oci_dir(&store3, &layout).unwrap();
    assert_eq!(named(&store3), named(&f.store));

    // Importing twice is harmless.
    import_oci_archive(&store2, &archive[..]).unwrap();
    assert_eq!(named(&store2), named(&f.store));
}

#[test]
fn docker_roundtrip() {
    let f = fixture();
    // An image built with Docker media types and gzip comes back with the same manifest
    // digest: the import recompresses with the same deterministic gzip.
    let rootfs = f.dir.join("docker-rootfs");
    write_sample_tree(&rootfs).unwrap();
    let opts = LayerOptions {
        format: ManifestFormat::Docker,
        ..LayerOptions::default()
    };
    let docker_img =
        image_from_dir_with(&f.store, &rootfs, ImageConfig::new("amd64", "linux"), &opts).unwrap();
    tag_image(&f.store, "localhost:5000/dock:1", &docker_img).unwrap();

    let mut archive = Vec::new();
    let mut list = images(&f);
    list.push(("localhost:5000/dock:1", docker_img.clone()));
    export_docker_archive(&f.store, &list, &mut archive).unwrap();
    let (_g, store2) = temp_store();
    let imported = import_docker_archive(&store2, &archive[..]).unwrap();
    assert_eq!(imported.len(), 4);
    let dock = store2
        .images()
        .get("localhost:5000/dock:1")
        .unwrap()
        .unwrap();
    assert_eq!(dock.manifest, docker_img);
    assert_eq!(dock.media_type, media_types::DOCKER_MANIFEST);
    // The others keep their config (image ID) and layer diff IDs.
    for name in [
        "docker.io/library/app:latest",
        "docker.io/user/app:v1",
        "docker.io/library/other:1",
    ] {
        let a = f.store.images().get(name).unwrap().unwrap();
        let b = store2.images().get(name).unwrap().unwrap();
        assert_eq!(a.config, b.config, "{name}");
        let ManifestOrIndex::Manifest(m) =
            read_manifest_or_index(&store2, &b.manifest, "").unwrap()
        else {
            panic!()
        };
        assert_eq!(m.layers[0].media_type, media_types::DOCKER_LAYER_GZIP);
    }
    // And export → import → export is stable.
    let list2: Vec<(&str, Digest)> = list
        .iter()
        .map(|(name, _)| {
            let full = rbuild_image::Reference::parse(name).unwrap().to_string();
            (*name, store2.images().get(&full).unwrap().unwrap().manifest)
        })
        .collect();
    let mut archive2 = Vec::new();
    export_docker_archive(&store2, &list2, &mut archive2).unwrap();
    assert!(archive2 == archive);
}

#[test]
fn import_archive_detects_formats() {
    let f = fixture();
    let list = images(&f);
    let oci = f.dir.join("a.oci.tar");
    export_oci_archive(&f.store, &list, fs::File::create(&oci).unwrap()).unwrap();
    let docker = f.dir.join("a.docker.tar");
    export_docker_archive(&f.store, &list, fs::File::create(&docker).unwrap()).unwrap();
    let gz = f.dir.join("a.docker.tar.gz");
    {
        let mut enc = flate2::write::GzEncoder::new(
            fs::File::create(&gz).unwrap(),
            flate2::Compression::fast(),
        );
        std::io::copy(&mut fs::File::open(&docker).unwrap(), &mut enc).unwrap();
        enc.finish().unwrap();
    }
    assert_eq!(
        detect_archive_format(&oci).unwrap(),
        ArchiveFormat::OciLayout
    );
    assert_eq!(
        detect_archive_format(&docker).unwrap(),
        ArchiveFormat::DockerArchive
    );
    assert_eq!(
        detect_archive_format(&gz).unwrap(),
        ArchiveFormat::DockerArchive
    );
    for path in [&oci, &docker, &gz] {
        let (_g, store2) = temp_store();
        let imported = import_archive(&store2, path).unwrap();
        assert_eq!(imported.len(), 3, "{}", path.display());
        assert_eq!(
            named(&store2)
                .into_iter()
                .map(|(n, _)| n)
                .collect::<Vec<_>>(),
            vec![
                "docker.io/library/app:latest",
                "docker.io/library/other:1",
                "docker.io/user/app:v1"
            ]
        );
    }
}

#[test]
fn skopeo_written_archives_import() {
    let Some(skopeo) = tool("skopeo") else { return };
    let f = fixture();
    let oci = f.dir.join("src.tar");
    export_oci_archive(&f.store, &images(&f), fs::File::create(&oci).unwrap()).unwrap();
    let app_config = f
        .store
        .images()
        .get("docker.io/library/app:latest")
        .unwrap()
        .unwrap()
        .config;

    // skopeo's docker-archive: <hex>.tar layers and legacy <id>/layer.tar symlinks.
    let docker = f.dir.join("skopeo-docker.tar");
    run(Command::new(&skopeo)
        .args(["--insecure-policy", "copy"])
        .arg(format!("oci-archive:{}:latest", oci.display()))
        .arg(format!("docker-archive:{}:app:latest", docker.display())));
    let (_g, store2) = temp_store();
    let imported = import_archive(&store2, &docker).unwrap();
    assert_eq!(imported.len(), 1);
    assert_eq!(
        imported[0].name.as_deref(),
        Some("docker.io/library/app:latest")
    );
    assert_eq!(imported[0].config, app_config);

    // skopeo's OCI layout directory (ref.name is only a tag, so the image is unnamed).
    let dir = f.dir.join("skopeo-oci");
    run(Command::new(&skopeo)
        .args(["--insecure-policy", "copy"])
        .arg(format!("oci-archive:{}:1", oci.display()))
        .arg(format!("oci:{}:1", dir.display())));
    let (_g3, store3) = temp_store();
    let imported = import_oci_dir(&store3, &dir).unwrap();
    assert_eq!(imported.len(), 1);
    assert_eq!(imported[0].name, None);
    assert_eq!(imported[0].manifest, f.other);
}

#[test]
fn tampered_blobs_are_rejected() {
    let f = fixture();
    let (_, m) = resolve_manifest(
        &f.store,
        &Descriptor::new(
            media_types::OCI_MANIFEST,
            f.app.clone(),
            f.store.blobs().size(&f.app).unwrap(),
        ),
    )
    .unwrap();
    let mut archive = Vec::new();
    export_oci_archive(&f.store, &[("app", f.app.clone())], &mut archive).unwrap();
    for blob in [&m.layers[0].digest, &m.config.digest, &f.app] {
        let mut bad = archive.clone();
        let at = usize::try_from(entry_offset(
            &archive,
            &format!("blobs/sha256/{}", blob.hex()),
        ))
        .unwrap()
            + 20;
        bad[at] ^= 1;
        let (_g, store2) = temp_store();
        match import_oci_archive(&store2, &bad[..]) {
            Err(ImageError::DigestMismatch { expected, .. }) => assert_eq!(&expected, blob),
            other => panic!("tampered {blob}: {other:?}"),
        }
        assert!(!store2.blobs().contains(blob));
        assert!(store2.images().list().unwrap().is_empty());
    }

    // docker-archive: a changed config fails its name's digest, a changed layer its diff ID.
    let mut docker = Vec::new();
    export_docker_archive(&f.store, &[("app", f.app.clone())], &mut docker).unwrap();
    let config = read_config(&f.store, &m.config.digest).unwrap();
    for (path, what) in [
        (format!("{}.json", m.config.digest.hex()), "config"),
        (
            format!("{}/layer.tar", config.rootfs.diff_ids[0].hex()),
            "layer",
        ),
    ] {
        let mut bad = docker.clone();
        // A byte inside the entry's data: the config's JSON, or the layer tar's first header.
        let at = usize::try_from(entry_offset(&docker, &path)).unwrap() + 10;
        bad[at] ^= 1;
        let (_g, store2) = temp_store();
        let err = import_docker_archive(&store2, &bad[..]).unwrap_err();
        assert!(
            matches!(err, ImageError::DigestMismatch { .. }),
            "{what}: {err}"
        );
        assert!(store2.images().list().unwrap().is_empty());
    }
}

#[test]
fn hostile_archives_are_rejected() {
    let hex = "a".repeat(64);
    let blob_name = format!("blobs/sha256/{hex}");
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("dotdot", raw_tar(&[(b"../evil", b'0', b"x", b"")])),
        (
            "dotdot inside",
            raw_tar(&[(
                format!("blobs/sha256/../../{hex}").as_bytes(),
                b'0',
                b"x",
                b"",
            )]),
        ),
        ("absolute", raw_tar(&[(b"/etc/passwd", b'0', b"x", b"")])),
        (
            "unknown",
            raw_tar(&[
                (b"oci-layout", b'0', layout, b""),
                (b"etc/passwd", b'0', b"x", b""),
            ]),
        ),
        (
            "symlink blob",
            raw_tar(&[(blob_name.as_bytes(), b'2', b"", b"/etc/passwd")]),
        ),
        (
            "hardlink blob",
            raw_tar(&[(blob_name.as_bytes(), b'1', b"", b"oci-layout")]),
        ),
        ("device", raw_tar(&[(b"index.json", b'3', b"", b"")])),
        ("file as dir", raw_tar(&[(b"blobs/", b'0', b"x", b"")])),
        (
            "duplicate",
            raw_tar(&[
                (b"oci-layout", b'0', layout, b""),
                (b"./oci-layout", b'0', layout, b""),
            ]),
        ),
        (
            "uppercase hex",
            raw_tar(&[(
                format!("blobs/sha256/{}", hex.to_uppercase()).as_bytes(),
                b'0',
                b"x",
                b"",
            )]),
        ),
        (
            "other algorithm",
            raw_tar(&[(format!("blobs/sha512/{hex}").as_bytes(), b'0', b"x", b"")]),
        ),
        ("nul", raw_tar(&[(b"index.json\0../x", b'0', b"{}", b"")])),
    ];
    for (what, archive) in &cases {
        let (_g, store) = temp_store();
        match import_oci_archive(&store, &archive[..]) {
            // ("nul" is read as index.json — the tar name ends at the NUL — and then fails
            // for the missing oci-layout.)
            Err(
                ImageError::BadEntry { .. }
                | ImageError::MalformedTar(_)
                | ImageError::InvalidArchive(_),
            ) => {}
            other => panic!("{what}: {other:?}"),
        }
        assert!(store.images().list().unwrap().is_empty());
    }
    // Docker mode: legacy symlinks may not point outside.
    let link = format!("{hex}/layer.tar");
    for target in [
        &b"../../etc/passwd"[..],
        b"/etc/passwd",
        b"../manifest.json",
    ] {
        let archive = raw_tar(&[(link.as_bytes(), b'2', b"", target)]);
        let (_g, store) = temp_store();
        assert!(
            matches!(
                import_docker_archive(&store, &archive[..]),
                Err(ImageError::BadEntry { .. })
            ),
            "{target:?}"
        );
    }
    // Not an archive at all, a truncated one, and an empty one.
    let (_g, store) = temp_store();
    assert!(import_oci_archive(&store, &b"not a tar"[..]).is_err());
    let good = raw_tar(&[(b"oci-layout", b'0', layout, b"")]);
    assert!(import_oci_archive(&store, &good[..600]).is_err());
    assert!(matches!(
        import_oci_archive(&store, &b""[..]),
        Err(ImageError::InvalidArchive(_))
    ));
    // oci-layout with a wrong version; an index pointing at a missing blob; huge index.json.
    let idx = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"sha256:{hex}","size":3}}]}}"#,
        media_types::OCI_MANIFEST
    );
    let missing = raw_tar(&[
        (b"oci-layout", b'0', layout, b""),
        (b"index.json", b'0', idx.as_bytes(), b""),
    ]);
    assert!(matches!(
        import_oci_archive(&store, &missing[..]),
        Err(ImageError::InvalidImage(_))
    ));
    let v2 = raw_tar(&[
        (
            b"oci-layout",
            b'0',
            br#"{"imageLayoutVersion":"2.0.0"}"#,
            b"",
        ),
        (b"index.json", b'0', b"{}", b""),
    ]);
    assert!(matches!(
        import_oci_archive(&store, &v2[..]),
        Err(ImageError::InvalidArchive(_))
    ));
    let huge = vec![b' '; 5 << 20];
    let big = raw_tar(&[
        (b"oci-layout", b'0', layout, b""),
        (b"index.json", b'0', &huge, b""),
    ]);
    assert!(matches!(
        import_oci_archive(&store, &big[..]),
        Err(ImageError::TooLarge { .. })
    ));
    assert!(store.images().list().unwrap().is_empty());
}

#[test]
fn image_from_dir_builds_a_valid_image() {
    let (tmp, store) = temp_store();
    let digest = sample_image(&store, tmp.path(), "busybox").unwrap();
    let record = store
        .images()
        .get("docker.io/library/busybox:latest")
        .unwrap()
        .unwrap();
    assert_eq!(record.manifest, digest);
    assert_eq!(record.media_type, media_types::OCI_MANIFEST);
    assert_eq!(record.created.as_deref(), Some("2024-01-01T00:00:00Z"));
    let config = read_config(&store, &record.config).unwrap();
    assert_eq!(config.rootfs.diff_ids.len(), 1);
    assert_eq!(config.history.len(), 1);
    assert_eq!(config.config.cmd, vec!["/bin/hello".to_owned()]);
    // Building the same tree again gives the same manifest.
    let host = Platform::host();
    let config = ImageConfig::new(&host.architecture, &host.os);
    let rootfs = tmp.path().join("rootfs");
    let one = rbuild_image::image_from_dir(&store, &rootfs, config.clone()).unwrap();
    let two = rbuild_image::image_from_dir(&store, &rootfs, config).unwrap();
    assert_eq!(one, two);
    assert!(Path::new(&rootfs).join("bin/hello").is_file());
}
