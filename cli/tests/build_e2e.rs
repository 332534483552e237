//! End-to-end builds with the real `rbuild` binary over `testdata/build/` cases, compared with
//! the root filesystems Docker's BuildKit built from the same Dockerfiles and contexts
//! (`expected/TARGET.tree`, recorded by `testdata/build/record-buildkit.sh`; see its README).
//! The busybox base image is made from Debian's busybox-static by `testdata/base/make-busybox-rootfs.sh`,
//! exactly as the recorder made BuildKit's.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use rbuild_cache::Store;
use rbuild_image::{image_from_dir, tag_image, ImageConfig};
use sha2::{Digest as _, Sha256};

use common::{busybox_rootfs, copy_tree, repo, root_and_busybox, text, Fixture};

/// Imports `busybox:latest` into the store of `fx` from the shared busybox rootfs, as the
/// BuildKit recorder imports it (an image made from the directory, not a build).
fn import_busybox(fx: &Fixture) {
    let store = Store::open(&fx.root).unwrap_or_else(|e| panic!("{e}"));
    let mut config = ImageConfig::new("amd64", "linux");
    config.history.push(rbuild_image::History {
        comment: "Imported from -".into(),
        ..Default::default()
    });
    let manifest =
        image_from_dir(&store, &busybox_rootfs(), config).unwrap_or_else(|e| panic!("{e}"));
    tag_image(&store, "docker.io/library/busybox:latest", &manifest)
        .unwrap_or_else(|e| panic!("{e}"));
}

/// The `tree.py` listing of a root filesystem tar: `PATH TYPE MODE UID:GID DETAIL` by path.
fn tar_listing(path: &Path) -> BTreeMap<String, String> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut archive = tar::Archive::new(file);
    let mut out = BTreeMap::new();
    for entry in archive.entries().unwrap_or_else(|e| panic!("{e}")) {
        let mut entry = entry.unwrap_or_else(|e| panic!("{e}"));
        let raw = entry
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let name = raw.trim_start_matches("./").trim_matches('/').to_string();
        if name.is_empty() || name == "." {
            continue;
        }
        let h = entry.header().clone();
        let mode = format!("{:04o}", h.mode().unwrap_or(0) & 0o7777);
        let owner = format!("{}:{}", h.uid().unwrap_or(0), h.gid().unwrap_or(0));
        let link = || {
            entry
                .link_name()
                .ok()
                .flatten()
                .map(|l| l.display().to_string())
                .unwrap_or_default()
        };
        let (kind, detail) = match h.entry_type() {
            tar::EntryType::Directory => ("dir", "-".to_string()),
            tar::EntryType::Symlink => ("symlink", link()),
            tar::EntryType::Link => (
                "hardlink",
                link()
                    .trim_start_matches("./")
                    .trim_matches('/')
                    .to_string(),
            ),
            tar::EntryType::Char => (
                "char",
                format!(
                    "{},{}",
                    h.device_major().ok().flatten().unwrap_or(0),
                    h.device_minor().ok().flatten().unwrap_or(0)
                ),
            ),
            tar::EntryType::Block => (
                "block",
                format!(
                    "{},{}",
                    h.device_major().ok().flatten().unwrap_or(0),
                    h.device_minor().ok().flatten().unwrap_or(0)
                ),
            ),
            tar::EntryType::Fifo => ("fifo", "-".to_string()),
            _ => {
                let mut data = Vec::new();
                entry
                    .read_to_end(&mut data)
                    .unwrap_or_else(|e| panic!("{e}"));
                (
                    "file",
                    format!("{} sha256:{:x}", data.len(), Sha256::digest(&data)),
                )
            }
        };
        out.insert(
            name.clone(),
            format!(
                "{} {kind} {mode} {owner} {detail}",
                name.replace(' ', "\\x20")
            ),
        );
    }
    out
}

/// Lines of `listing` that differ from `base`.
fn minus(listing: &BTreeMap<String, String>, base: &BTreeMap<String, String>) -> Vec<String> {
    listing
        .iter()
        .filter(|(k, v)| base.get(*k) != Some(*v))
        .map(|(_, v)| v.clone())
        .collect()
}

/// Copies a case's context to `dest` and runs its `setup.sh` there.
fn prepare_context(case: &Path, dest: &Path) {
    copy_tree(&case.join("context"), dest);
    if case.join("setup.sh").is_file() {
        let status = Command::new("sh")
            .arg(case.join("setup.sh"))
            .current_dir(dest)
            .status()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(status.success(), "{}/setup.sh failed", case.display());
    }
}

#[test]
fn builds_match_buildkit_file_trees() {
    if !root_and_busybox() {
        return;
    }
    let fx = Fixture::empty("e2e");
    import_busybox(&fx);
    let work = &fx.dir;

    // The base's own listing, built by rbuild itself.
    let base_ctx = work.join("base-ctx");
    std::fs::create_dir_all(&base_ctx).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(base_ctx.join("Dockerfile"), "FROM busybox\n").unwrap_or_else(|e| panic!("{e}"));
    let base_tar = work.join("base.tar");
    let out = fx.rbuild(&[
        "build",
        "--progress=plain",
        "-o",
        &format!("type=tar,dest={}", base_tar.display()),
        base_ctx.to_str().unwrap_or_default(),
    ]);
    assert!(
        out.status.success(),
        "base build failed: {}",
        text(&out.stderr)
    );
    let base = tar_listing(&base_tar);
    assert!(
        base.contains_key("bin/busybox"),
        "the base image lacks bin/busybox"
    );

    let cases_dir = repo().join("testdata/build");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&cases_dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("Dockerfile").is_file())
        .collect();
    cases.sort();
    let (mut total, mut failures) = (0, Vec::new());
    for case in &cases {
        let name = case
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let ctx = work.join(format!("ctx-{name}"));
        prepare_context(case, &ctx);
        let targets = std::fs::read_to_string(case.join("targets")).unwrap_or_else(|_| "-".into());
        for target in targets.split_whitespace() {
            total += 1;
            let (label, target_args) = if target == "-" {
                ("final".to_string(), vec![])
            } else {
                (
                    target.to_string(),
                    vec!["--target".to_string(), target.to_string()],
                )
            };
            let out_tar = work.join(format!("{name}-{label}.tar"));
            let dockerfile = case.join("Dockerfile");
            let mut args: Vec<String> = vec![
                "build".into(),
                "--progress=plain".into(),
                "-f".into(),
                dockerfile.display().to_string(),
            ];
            args.extend(target_args);
            args.extend([
                "-o".into(),
                format!("type=tar,dest={}", out_tar.display()),
                ctx.display().to_string(),
            ]);
            let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = fx.rbuild(&arg_refs);
            if !out.status.success() {
                failures.push(format!(
                    "{name}/{label}: build failed:\n{}",
                    text(&out.stderr)
                ));
                continue;
            }
            let got = minus(&tar_listing(&out_tar), &base);
            let want: Vec<String> =
                std::fs::read_to_string(case.join(format!("expected/{label}.tree")))
                    .unwrap_or_default()
                    .lines()
                    .map(str::to_string)
                    .collect();
            if got != want {
                let extra: Vec<&String> = got.iter().filter(|l| !want.contains(l)).collect();
                let missing: Vec<&String> = want.iter().filter(|l| !got.contains(l)).collect();
                failures.push(format!(
                    "{name}/{label}:\n  rbuild only:   {extra:#?}\n  BuildKit only: {missing:#?}"
                ));
            }
        }
    }
    println!(
        "buildkit file trees: {} of {total} targets match",
        total - failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
