//! Reproducible images, end to end with the real `rbuild` binary: the same Dockerfile and
//! context (files of various mtimes, COPY, a RUN that writes, links and deletes files, WORKDIR,
//! ENV, `ARG SOURCE_DATE_EPOCH`) built in two fresh stores, seconds apart, each on a busybox
//! base made there from `testdata/base/make-busybox-rootfs.sh`:
//!
//! * with `SOURCE_DATE_EPOCH` (the environment variable in one store, `--source-date-epoch`
//!   overriding a different environment value in the other) the image ID, the manifest digest
//!   and the `-o type=oci`, `docker` and `tar` outputs are identical byte for byte, with gzip
//!   and with zstd layers, and so is a rebuild from the cache;
//!   `created` in the config and history is the epoch, no layer entry is newer than it, older
//!   mtimes are kept, and `ARG SOURCE_DATE_EPOCH` sees the value;
//! * without it, the config digests differ (the `created` times) and so does the COPY layer
//!   (the context files' own mtimes), which shows the comparison can tell.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::fs::{self, File, FileTimes};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, UNIX_EPOCH};

use common::{
    archive_files, make_busybox_rootfs, ok, rbuild_command, root_and_busybox, text, Fixture,
    BUSYBOX,
};

const EPOCH: i64 = 1_700_000_000;
const EPOCH_TEXT: &str = "1700000000";
/// `EPOCH` as the config writes it.
const EPOCH_RFC3339: &str = "2023-11-14T22:13:20Z";
/// An mtime before the epoch: kept as it is.
const OLD: i64 = 1_600_000_000;
/// An mtime after the epoch in both contexts.
const FUTURE: i64 = 2_100_000_000;

const DOCKERFILE: &str = r#"FROM busybox
ARG SOURCE_DATE_EPOCH
ENV GREETING=hello
WORKDIR /work/dir
COPY app/ /app/
RUN echo "$GREETING" > made.txt \
 && echo "epoch=$SOURCE_DATE_EPOCH" > /epoch.txt \
 && mkdir -p /var/data/deep && echo data > /var/data/deep/x \
 && ln /app/old.txt /app/old-link \
 && ln -s made.txt link \
 && rm /app/sub/deep.txt /etc/group \
 && touch /tmp/stamp
CMD ["cat", "/work/dir/made.txt"]
"#;

/// A temp dir for the two sides; `None` (the test skips) without root or busybox-static,
/// except under CI=true.
fn lab(name: &str) -> Option<Fixture> {
    root_and_busybox().then(|| Fixture::empty(name))
}

/// One side of the comparison: its own store, busybox rootfs and build context.
struct Side {
    dir: PathBuf,
    root: PathBuf,
    context: PathBuf,
}

/// What `SOURCE_DATE_EPOCH` the environment of an rbuild run has.
#[derive(Clone, Copy)]
enum Env<'a> {
    Unset,
    Epoch(&'a str),
}

impl Side {
    /// A fresh store with `busybox` built from a freshly made rootfs (with the epoch, so that
    /// both sides share the base), and a fresh context whose files made "now" have `new_mtime`.
    /// `reversed` creates the context's entries in the other order (other inode numbers and
    /// directory order).
    fn new(lab: &Fixture, name: &str, new_mtime: i64, reversed: bool) -> Side {
        let dir = lab.dir.join(name);
        fs::create_dir_all(&dir).unwrap();
        let side = Side {
            root: dir.join("store"),
            context: dir.join("context"),
            dir,
        };
        let rootfs = side.dir.join("busybox-rootfs");
        make_busybox_rootfs(&rootfs);
        let base_dockerfile = side.dir.join("busybox.Dockerfile");
        fs::write(&base_dockerfile, BUSYBOX.dockerfile).unwrap();
        ok(&side.rbuild(
            Env::Unset,
            &[
                "build",
                "-q",
                "--source-date-epoch",
                EPOCH_TEXT,
                "-t",
                "busybox",
                "--metadata-file",
                &side.dir.join("base.json").display().to_string(),
                "-f",
                &base_dockerfile.display().to_string(),
                &rootfs.display().to_string(),
            ],
        ));
        write_context(&side.context, new_mtime, reversed);
        side
    }

    fn rbuild(&self, env: Env<'_>, args: &[&str]) -> Output {
        let mut c = rbuild_command(&self.root, args);
        c.env_remove("SOURCE_DATE_EPOCH");
        if let Env::Epoch(v) = env {
            c.env("SOURCE_DATE_EPOCH", v);
        }
        c.output().unwrap_or_else(|e| panic!("running rbuild: {e}"))
    }

    /// Builds the context with `extra` flags, exporting an OCI archive `NAME.tar` (layers
    /// compressed as `compression` says); returns what the build reported.
    fn build(&self, name: &str, env: Env<'_>, compression: &str, extra: &[&str]) -> Built {
        let archive = self.dir.join(format!("{name}.tar"));
        let iid = self.dir.join(format!("{name}.iid"));
        let meta = self.dir.join(format!("{name}.json"));
        let docker = self.dir.join(format!("{name}.docker.tar"));
        let rootfs = self.dir.join(format!("{name}.rootfs.tar"));
        let output = format!(
            "type=oci,dest={},compression={compression}",
            archive.display()
        );
        let docker_output = format!("type=docker,dest={}", docker.display());
        let rootfs_output = format!("type=tar,dest={}", rootfs.display());
        let mut args = vec![
            "build",
            "--progress=plain",
            "-t",
            "app:1",
            "-o",
            &output,
            "-o",
            &docker_output,
            "-o",
            &rootfs_output,
        ];
        let iid_s = iid.display().to_string();
        let meta_s = meta.display().to_string();
        args.extend(["--iidfile", &iid_s, "--metadata-file", &meta_s]);
        args.extend(extra);
        let ctx = self.context.display().to_string();
        args.push(&ctx);
        ok(&self.rbuild(env, &args));
        let meta: serde_json::Value = serde_json::from_slice(&fs::read(&meta).unwrap()).unwrap();
        Built {
            id: fs::read_to_string(&iid).unwrap(),
            manifest: meta["containerimage.digest"].as_str().unwrap().to_string(),
            archive: fs::read(&archive).unwrap(),
            docker_archive: fs::read(&docker).unwrap(),
            rootfs_tar: fs::read(&rootfs).unwrap(),
        }
    }

    fn base_manifest(&self) -> String {
        let meta: serde_json::Value =
            serde_json::from_slice(&fs::read(self.dir.join("base.json")).unwrap()).unwrap();
        meta["containerimage.digest"].as_str().unwrap().to_string()
    }
}

struct Built {
    /// The image ID (config digest).
    id: String,
    manifest: String,
    /// The `-o type=oci` archive.
    archive: Vec<u8>,
    /// The `-o type=docker` archive.
    docker_archive: Vec<u8>,
    /// The `-o type=tar` root filesystem.
    rootfs_tar: Vec<u8>,
}

fn set_mtime(path: &Path, secs: i64) {
    let t = UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap());
    File::open(path)
        .unwrap()
        .set_times(FileTimes::new().set_modified(t).set_accessed(t))
        .unwrap();
}

/// The context: old (before the epoch), new (`new_mtime`) and future files, a script, a
/// hardlink pair and a subdirectory.
fn write_context(ctx: &Path, new_mtime: i64, reversed: bool) {
    let mut files: Vec<(&str, &str, i64)> = vec![
        ("app/old.txt", "old\n", OLD),
        ("app/new.txt", "new\n", new_mtime),
        ("app/future.txt", "future\n", FUTURE),
        ("app/bin/tool.sh", "#!/bin/sh\necho tool\n", new_mtime),
        ("app/sub/deep.txt", "deep\n", new_mtime),
        ("app/sub/keep.txt", "keep\n", OLD),
        ("app/hard-a", "shared\n", new_mtime),
    ];
    if reversed {
        files.reverse();
    }
    fs::create_dir_all(ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
    for (path, content, _) in &files {
        let p = ctx.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
    }
    fs::set_permissions(
        ctx.join("app/bin/tool.sh"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    fs::hard_link(ctx.join("app/hard-a"), ctx.join("app/hard-b")).unwrap();
    for (path, _, mtime) in &files {
        set_mtime(&ctx.join(path), *mtime);
    }
    for dir in ["app/bin", "app/sub", "app"] {
        set_mtime(&ctx.join(dir), new_mtime);
    }
}

fn blob<'a>(files: &'a BTreeMap<String, Vec<u8>>, digest: &str) -> &'a [u8] {
    let hex = digest.strip_prefix("sha256:").unwrap();
    files
        .get(&format!("blobs/sha256/{hex}"))
        .unwrap_or_else(|| panic!("blob {digest} is not in the archive"))
}

/// One layer entry: path, mtime, and content for regular files.
struct Entry {
    path: String,
    mtime: i64,
    data: Vec<u8>,
}

/// The image in an OCI archive: its config and each layer's (media type, digest, entries).
struct Image {
    config: serde_json::Value,
    layers: Vec<(String, String, Vec<Entry>)>,
}

fn read_image(archive: &[u8]) -> Image {
    let files = archive_files(archive);
    let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(blob(&files, manifest_digest)).unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(blob(&files, manifest["config"]["digest"].as_str().unwrap()))
            .unwrap();
    let mut layers = Vec::new();
    for layer in manifest["layers"].as_array().unwrap() {
        let media_type = layer["mediaType"].as_str().unwrap().to_string();
        let digest = layer["digest"].as_str().unwrap().to_string();
        let tar = rbuild_image::open_layer(blob(&files, &digest), &media_type, None).unwrap();
        let mut entries = Vec::new();
        for entry in tar::Archive::new(tar).entries().unwrap() {
            let mut entry = entry.unwrap();
            let mut data = Vec::new();
            if entry.header().entry_type() == tar::EntryType::Regular {
                entry.read_to_end(&mut data).unwrap();
            }
            entries.push(Entry {
                path: entry.path().unwrap().display().to_string(),
                mtime: i64::try_from(entry.header().mtime().unwrap()).unwrap(),
                data,
            });
        }
        layers.push((media_type, digest, entries));
    }
    Image { config, layers }
}

/// Checks what a reproducible build must hold: `created` is the epoch everywhere, nothing in
/// a layer is newer than the epoch, older mtimes are kept, and the RUN saw the epoch; the
/// layers are of `media_type`.
fn check_clamped(image: &Image, media_type: &str) {
    assert_eq!(image.config["created"], EPOCH_RFC3339);
    let history = image.config["history"].as_array().unwrap();
    assert!(history.len() >= 6, "{history:?}");
    for h in history {
        assert_eq!(h["created"], EPOCH_RFC3339, "{h}");
    }
    let mut all: BTreeMap<&str, &Entry> = BTreeMap::new();
    for (mt, digest, entries) in &image.layers {
        // Every layer — the busybox base was built by rbuild too — is stored uncompressed and
        // compressed as the export says.
        assert_eq!(mt, media_type, "{digest}");
        for e in entries {
            assert!(
                e.mtime <= EPOCH,
                "{} in {digest}: mtime {}",
                e.path,
                e.mtime
            );
            all.insert(&e.path, e);
        }
    }
    for (path, mtime) in [
        ("app/old.txt", OLD),
        ("app/sub/keep.txt", OLD),
        ("app/new.txt", EPOCH),
        ("app/future.txt", EPOCH),
        ("work/dir/made.txt", EPOCH),
        ("tmp/stamp", EPOCH),
    ] {
        let e = all
            .get(path)
            .unwrap_or_else(|| panic!("{path} is in no layer"));
        assert_eq!(e.mtime, mtime, "{path}");
    }
    // The RUN layer's whiteouts were written (and clamped with the rest).
    for path in ["app/sub/.wh.deep.txt", "etc/.wh.group"] {
        assert!(all.contains_key(path), "{path} is in no layer");
    }
    assert_eq!(
        all["epoch.txt"].data,
        format!("epoch={EPOCH_TEXT}\n").as_bytes()
    );
    assert_eq!(all["work/dir/made.txt"].data, b"hello\n");
}

/// The digest of the layer that holds `path`.
fn layer_with<'a>(image: &'a Image, path: &str) -> &'a str {
    image
        .layers
        .iter()
        .find(|(_, _, entries)| entries.iter().any(|e| e.path == path))
        .map(|(_, digest, _)| digest.as_str())
        .unwrap_or_else(|| panic!("{path} is in no layer"))
}

#[test]
fn same_input_in_two_stores_gives_the_same_image_bit_for_bit() {
    let Some(lab) = lab("two-stores") else {
        return;
    };
    let a = Side::new(&lab, "a", 1_800_000_000, false);
    let b = Side::new(&lab, "b", 1_800_000_777, true);
    assert_eq!(
        a.base_manifest(),
        b.base_manifest(),
        "the busybox bases differ"
    );

    // gzip: the environment variable on one side; on the other the flag, which wins over a
    // different environment value. Seconds apart.
    let ga = a.build("gzip", Env::Epoch(EPOCH_TEXT), "gzip", &[]);
    std::thread::sleep(Duration::from_millis(1100));
    let gb = b.build(
        "gzip",
        Env::Epoch("1000"),
        "gzip",
        &["--source-date-epoch", EPOCH_TEXT],
    );
    assert_eq!(ga.id, gb.id, "image IDs differ");
    assert_eq!(ga.manifest, gb.manifest, "manifest digests differ");
    assert!(
        ga.archive == gb.archive,
        "the OCI archives differ ({} and {} bytes)",
        ga.archive.len(),
        gb.archive.len()
    );
    assert!(
        ga.docker_archive == gb.docker_archive,
        "the docker archives differ"
    );
    assert!(
        ga.rootfs_tar == gb.rootfs_tar,
        "the root filesystem tars differ"
    );
    let image = read_image(&ga.archive);
    check_clamped(&image, "application/vnd.oci.image.layer.v1.tar+gzip");
    // Built again where the store holds every step's result: the same bytes.
    let again = a.build("gzip-again", Env::Epoch(EPOCH_TEXT), "gzip", &[]);
    assert!(
        again.archive == ga.archive,
        "a rebuild in the same store differs"
    );

    // zstd, the same way.
    let za = a.build("zstd", Env::Epoch(EPOCH_TEXT), "zstd", &[]);
    std::thread::sleep(Duration::from_millis(1100));
    let zb = b.build(
        "zstd",
        Env::Unset,
        "zstd",
        &["--source-date-epoch", EPOCH_TEXT],
    );
    assert_eq!(za.id, zb.id);
    assert_eq!(za.manifest, zb.manifest);
    assert!(za.archive == zb.archive, "the zstd OCI archives differ");
    assert!(
        za.docker_archive == zb.docker_archive,
        "the docker archives differ"
    );
    // (`containerimage.digest` is the OCI archive's manifest: other layer blobs.)
    assert_ne!(za.manifest, ga.manifest);
    let zimage = read_image(&za.archive);
    check_clamped(&zimage, "application/vnd.oci.image.layer.v1.tar+zstd");
    // Same content, other compression: the same diff IDs, so the same image ID.
    assert_eq!(za.id, ga.id);

    // Without the epoch the two differ: `created` (config digest) and the COPY layer, whose
    // files keep their own (different) mtimes.
    let pa = a.build("plain", Env::Unset, "gzip", &[]);
    std::thread::sleep(Duration::from_millis(1100));
    let pb = b.build("plain", Env::Unset, "gzip", &[]);
    assert_ne!(
        pa.id, pb.id,
        "without the epoch the image IDs should differ"
    );
    assert_ne!(pa.manifest, pb.manifest);
    assert!(pa.archive != pb.archive && pa.docker_archive != pb.docker_archive);
    let (ia, ib) = (read_image(&pa.archive), read_image(&pb.archive));
    assert_ne!(ia.config["created"], ib.config["created"]);
    assert_ne!(ia.config["created"], EPOCH_RFC3339);
    assert_ne!(
        layer_with(&ia, "app/new.txt"),
        layer_with(&ib, "app/new.txt"),
        "without the epoch the COPY layers should differ"
    );
    // Unset, the ARG is empty.
    let epoch_file = ia
        .layers
        .iter()
        .flat_map(|(_, _, entries)| entries)
        .find(|e| e.path == "epoch.txt")
        .map(|e| e.data.clone());
    assert_eq!(epoch_file.as_deref(), Some(&b"epoch=\n"[..]));
}

#[test]
fn a_malformed_source_date_epoch_is_an_error() {
    let Some(lab) = lab("malformed") else {
        return;
    };
    let ctx = lab.dir.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), "FROM scratch\nENV A=1\n").unwrap();
    let side = Side {
        dir: lab.dir.clone(),
        root: lab.dir.join("store"),
        context: ctx.clone(),
    };
    let ctx_s = ctx.display().to_string();
    let out = side.rbuild(Env::Epoch("last tuesday"), &["build", &ctx_s]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("SOURCE_DATE_EPOCH") && err.contains("last tuesday"),
        "{err}"
    );
    let out = side.rbuild(Env::Unset, &["build", "--source-date-epoch=-5", &ctx_s]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("--source-date-epoch"), "{err}");
    // The flag wins over a malformed environment value.
    let built = side.build(
        "flag",
        Env::Epoch("garbage"),
        "gzip",
        &["--source-date-epoch", EPOCH_TEXT],
    );
    let image = read_image(&built.archive);
    assert_eq!(image.config["created"], EPOCH_RFC3339);
    assert!(image.layers.is_empty());
    // So does --build-arg SOURCE_DATE_EPOCH, as in BuildKit.
    let built = side.build(
        "arg",
        Env::Epoch("garbage"),
        "gzip",
        &["--build-arg", &format!("SOURCE_DATE_EPOCH={EPOCH_TEXT}")],
    );
    assert_eq!(read_image(&built.archive).config["created"], EPOCH_RFC3339);
}
