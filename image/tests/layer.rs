//! Layer writing on a real tree (run as root: devices, owners, trusted xattrs), read back with
//! the independent `tar` crate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use nix::sys::stat::{mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{chown, mkfifo, Gid, Uid};
use rbuild_cache::Digest;
use rbuild_image::layer::{layer_to_store, open_layer, write_layer, Compression, LayerOptions};
use rbuild_image::manifest::{media_types, ManifestFormat};
use rbuild_image::ImageError;

const MTIME: i64 = 1_600_000_000;

fn set_mtime(path: &Path, secs: i64) {
    let t = TimeSpec::new(secs, 0);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

fn makedev(major: u64, minor: u64) -> u64 {
    ((major & 0xfffff000) << 32)
        | ((major & 0xfff) << 8)
        | ((minor & 0xffffff00) << 12)
        | (minor & 0xff)
}

/// Builds the test tree; every mtime is MTIME.
fn build_tree(root: &Path) {
    fs::create_dir(root).unwrap();
    fs::write(root.join("a.txt"), "hello").unwrap();
    fs::set_permissions(root.join("a.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    chown(
        &root.join("a.txt"),
        Some(Uid::from_raw(1000)),
        Some(Gid::from_raw(1001)),
    )
    .unwrap();
    xattr::set(root.join("a.txt"), "user.test", b"value").unwrap();
    xattr::set(root.join("a.txt"), "trusted.overlay.origin", b"x").unwrap();

    fs::create_dir(root.join("dir")).unwrap();
    fs::write(root.join("dir/hl2"), "linked").unwrap();
    fs::hard_link(root.join("dir/hl2"), root.join("hl1")).unwrap();
    fs::create_dir(root.join("empty")).unwrap();
    fs::set_permissions(root.join("empty"), fs::Permissions::from_mode(0o700)).unwrap();
    mkfifo(&root.join("fifo"), Mode::from_bits_truncate(0o644)).unwrap();
    // overlayfs whiteout: char device 0/0; a second path shares its inode, as overlayfs does.
    mknod(
        &root.join("gone"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o000),
        0,
    )
    .unwrap();
    fs::create_dir(root.join("wh")).unwrap();
    fs::hard_link(root.join("gone"), root.join("wh/gone2")).unwrap();
    fs::create_dir(root.join("long")).unwrap();
    fs::write(root.join("long").join("x".repeat(150)), "long name").unwrap();
    mknod(
        &root.join("null"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        makedev(1, 3),
    )
    .unwrap();
    fs::set_permissions(root.join("null"), fs::Permissions::from_mode(0o666)).unwrap();
    fs::set_permissions(root.join("fifo"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::create_dir(root.join("opq")).unwrap();
    fs::set_permissions(root.join("opq"), fs::Permissions::from_mode(0o750)).unwrap();
    xattr::set(root.join("opq"), "trusted.overlay.opaque", b"y").unwrap();
    fs::write(root.join("opq/keep"), "kept").unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();
    fs::write(root.join("suid"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(root.join("suid"), fs::Permissions::from_mode(0o4755)).unwrap();
    symlink("../outside/target", root.join("sym")).unwrap();

    for p in [
        "a.txt", "dir/hl2", "dir", "empty", "fifo", "gone", "wh", "long", "null", "opq/keep",
        "opq", "sock", "suid", "sym",
    ] {
        set_mtime(&root.join(p), MTIME);
    }
    set_mtime(&root.join("long").join("x".repeat(150)), MTIME);
    set_mtime(&root.join("long"), MTIME);
}

#[derive(Debug, PartialEq)]
struct Seen {
    kind: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    link: Option<String>,
    data: Vec<u8>,
    dev: Option<(u32, u32)>,
    xattrs: BTreeMap<String, Vec<u8>>,
}

fn read_back(tar_bytes: &[u8]) -> Vec<(String, Seen)> {
    let mut archive = tar::Archive::new(tar_bytes);
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
        let h = entry.header().clone();
        let mut xattrs = BTreeMap::new();
        if let Some(exts) = entry.pax_extensions().unwrap() {
            for ext in exts {
                let ext = ext.unwrap();
                if let Some(name) = ext.key().unwrap().strip_prefix("SCHILY.xattr.") {
                    xattrs.insert(name.to_owned(), ext.value_bytes().to_vec());
                }
            }
        }
        let link = entry
            .link_name_bytes()
            .map(|l| String::from_utf8(l.into_owned()).unwrap());
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        let kind = h.entry_type().as_byte();
        let dev = if kind == b'3' || kind == b'4' {
            Some((
                h.device_major().unwrap().unwrap(),
                h.device_minor().unwrap().unwrap(),
            ))
        } else {
            None
        };
        out.push((
            path,
            Seen {
                kind,
                mode: h.mode().unwrap(),
                uid: h.uid().unwrap(),
                gid: h.gid().unwrap(),
                mtime: h.mtime().unwrap(),
                link: link.filter(|l| !l.is_empty()),
                data,
                dev,
                xattrs,
            },
        ));
    }
    out
}

fn seen(kind: u8, mode: u32, data: &[u8]) -> Seen {
    Seen {
        kind,
        mode,
        uid: 0,
        gid: 0,
        mtime: MTIME as u64,
        link: None,
        data: data.to_vec(),
        dev: None,
        xattrs: BTreeMap::new(),
    }
}

fn plain() -> LayerOptions {
    LayerOptions {
        compression: Compression::None,
        ..LayerOptions::default()
    }
}

#[test]
fn layer_entries_whiteouts_links_and_xattrs() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("upper");
    build_tree(&root);

    let mut out = Vec::new();
    let info = write_layer(&root, &mut out, &plain()).unwrap();
    assert_eq!(info.diff_id, Digest::of_bytes(&out));
    assert_eq!(info.digest, info.diff_id);
    assert_eq!(info.size, out.len() as u64);
    assert_eq!(info.uncompressed_size, out.len() as u64);
    assert_eq!(info.media_type, media_types::OCI_LAYER_TAR);

    let long = format!("long/{}", "x".repeat(150));
    let mut a = seen(b'0', 0o640, b"hello");
    a.uid = 1000;
    a.gid = 1001;
    a.xattrs.insert("user.test".into(), b"value".to_vec());
    let mut hl1 = seen(b'1', 0o644, b"");
    hl1.link = Some("dir/hl2".into());
    let mut null = seen(b'3', 0o666, b"");
    null.dev = Some((1, 3));
    let mut sym = seen(b'2', 0o777, b"");
    sym.link = Some("../outside/target".into());
    let want: Vec<(String, Seen)> = vec![
        ("a.txt".into(), a),
        ("dir/".into(), seen(b'5', 0o755, b"")),
        ("dir/hl2".into(), seen(b'0', 0o644, b"linked")),
        ("empty/".into(), seen(b'5', 0o700, b"")),
        ("fifo".into(), seen(b'6', 0o644, b"")),
        (".wh.gone".into(), seen(b'0', 0o600, b"")),
        ("hl1".into(), hl1),
        ("long/".into(), seen(b'5', 0o755, b"")),
        (long, seen(b'0', 0o644, b"long name")),
        ("null".into(), null),
        ("opq/".into(), seen(b'5', 0o750, b"")),
        ("opq/.wh..wh..opq".into(), seen(b'0', 0o750, b"")),
        ("opq/keep".into(), seen(b'0', 0o644, b"kept")),
        // "sock" is skipped.
        ("suid".into(), seen(b'0', 0o4755, b"#!/bin/sh\n")),
        ("sym".into(), sym),
        ("wh/".into(), seen(b'5', 0o755, b"")),
        // The shared whiteout inode does not turn the second whiteout into a hardlink.
        ("wh/.wh.gone2".into(), seen(b'0', 0o600, b"")),
    ];
    let got = read_back(&out);
    let got_names: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
    let want_names: Vec<&str> = want.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(got_names, want_names);
    for ((path, g), (_, w)) in got.iter().zip(&want) {
        assert_eq!(g, w, "{path}");
    }

    // Deterministic: a second write is byte-identical.
    let mut again = Vec::new();
    let info2 = write_layer(&root, &mut again, &plain()).unwrap();
    assert_eq!(info2, info);
    assert_eq!(again, out);
}

#[test]
fn source_date_epoch_clamps_mtimes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("t");
    fs::create_dir(&root).unwrap();
    fs::write(root.join("new"), "n").unwrap();
    fs::write(root.join("old"), "o").unwrap();
    set_mtime(&root.join("new"), 2_000_000_000);
    set_mtime(&root.join("old"), 100);
    let opts = LayerOptions {
        source_date_epoch: Some(1_000_000),
        ..plain()
    };
    let mut out = Vec::new();
    write_layer(&root, &mut out, &opts).unwrap();
    let got = read_back(&out);
    assert_eq!(got[0].0, "new");
    assert_eq!(got[0].1.mtime, 1_000_000);
    assert_eq!(got[1].0, "old");
    assert_eq!(got[1].1.mtime, 100);
}

/// A tree with a few MiB of poorly compressible data, to cross gzip's chunk boundaries.
fn big_tree(root: &Path) {
    fs::create_dir(root).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let data: Vec<u8> = (0..3 * 1024 * 1024)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if i % 3 == 0 {
                b'a'
            } else {
                (x & 0xff) as u8
            }
        })
        .collect();
    fs::write(root.join("big"), &data).unwrap();
    fs::write(root.join("small"), "s").unwrap();
}

#[test]
fn gzip_and_zstd_roundtrip_through_open_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("t");
    big_tree(&root);
    let mut plain_tar = Vec::new();
    let base = write_layer(&root, &mut plain_tar, &plain()).unwrap();

    for (compression, format, media_type) in [
        (
            Compression::Gzip,
            ManifestFormat::Oci,
            media_types::OCI_LAYER_GZIP,
        ),
        (
            Compression::Gzip,
            ManifestFormat::Docker,
            media_types::DOCKER_LAYER_GZIP,
        ),
        (
            Compression::Zstd,
            ManifestFormat::Oci,
            media_types::OCI_LAYER_ZSTD,
        ),
    ] {
        let opts = LayerOptions {
            compression,
            format,
            ..LayerOptions::default()
        };
        let mut blob = Vec::new();
        let info = write_layer(&root, &mut blob, &opts).unwrap();
        assert_eq!(info.media_type, media_type);
        assert_eq!(info.diff_id, base.diff_id, "{compression:?}");
        assert_eq!(info.uncompressed_size, plain_tar.len() as u64);
        assert_eq!(info.digest, Digest::of_bytes(&blob));
        assert_eq!(info.size, blob.len() as u64);
        assert!(blob.len() < plain_tar.len());

        for mt in [media_type, media_types::OCTET_STREAM, ""] {
            let mut back = Vec::new();
            open_layer(&blob[..], mt, None)
                .unwrap()
                .read_to_end(&mut back)
                .unwrap();
            assert!(back == plain_tar, "{compression:?} via {mt:?}");
        }
        // Bomb protection.
        let mut limited = open_layer(&blob[..], media_type, Some(1024 * 1024)).unwrap();
        assert!(limited.read_to_end(&mut Vec::new()).is_err());
        // Whole-size limit is fine.
        let mut exact = open_layer(&blob[..], media_type, Some(plain_tar.len() as u64)).unwrap();
        assert_eq!(exact.read_to_end(&mut Vec::new()).unwrap(), plain_tar.len());

        // The compressed bytes are deterministic too (gzip whatever the thread count).
        let mut blob2 = Vec::new();
        let threads = if compression == Compression::Gzip {
            Some(1)
        } else {
            None
        };
        let info2 = write_layer(
            &root,
            &mut blob2,
            &LayerOptions {
                threads,
                ..opts.clone()
            },
        )
        .unwrap();
        assert_eq!(info2.digest, info.digest, "{compression:?}");
    }
    // Plain tar through open_layer: unchanged.
    let mut back = Vec::new();
    open_layer(&plain_tar[..], media_types::OCI_LAYER_TAR, None)
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert!(back == plain_tar);
}

#[test]
fn layer_to_store_and_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let (_guard, store) = common::temp_store();
    let root = tmp.path().join("t");
    big_tree(&root);
    let info = layer_to_store(&root, store.blobs(), &LayerOptions::default()).unwrap();
    assert!(store.blobs().contains(&info.digest));
    assert_eq!(store.blobs().size(&info.digest).unwrap(), info.size);

    // The root must be a directory, and not a symlink to one.
    symlink(&root, tmp.path().join("link")).unwrap();
    for bad in [
        tmp.path().join("link"),
        root.join("small"),
        tmp.path().join("missing"),
    ] {
        assert!(
            write_layer(&bad, Vec::new(), &plain()).is_err(),
            "{}",
            bad.display()
        );
    }
    // Corrupt compressed data fails cleanly.
    let mut blob = Vec::new();
    write_layer(&root, &mut blob, &LayerOptions::default()).unwrap();
    let mid = blob.len() / 2;
    blob[mid] ^= 0xff;
    let mut r = open_layer(&blob[..], media_types::OCI_LAYER_GZIP, None).unwrap();
    let res: Result<_, _> = r.read_to_end(&mut Vec::new());
    assert!(res.is_err());
    assert!(matches!(
        open_layer(
            &b"x"[..],
            "application/vnd.oci.image.layer.v1.tar+foo",
            None
        ),
        Err(ImageError::UnsupportedMediaType(_))
    ));
}
