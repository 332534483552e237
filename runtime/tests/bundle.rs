//! `export_bundle` on images made in a temporary store from directory layers: whiteouts and
//! opaque directories of an upper layer applied, USER resolved through the bundle's own
//! `/etc/passwd` and `/etc/group`, owners kept, and the refusals (a non-empty directory, a
//! file, an unknown user, a layer whose diff ID is wrong) leaving nothing behind.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use oci_spec::runtime::Spec;
use rbuild_cache::{Digest, Store};
use rbuild_image::{
    layer_to_store, write_image, ImageConfig, LayerInfo, LayerOptions, ManifestFormat,
};
use rbuild_runtime::{export_bundle, BundleError, BundleOptions};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn is_root() -> bool {
    // /proc/self belongs to the effective uid: whether chown to another uid will work.
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

fn write(dir: &Path, rel: &str, content: &str) -> TestResult {
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(path, content)?;
    Ok(())
}

fn layer(store: &Store, dir: &Path) -> Result<LayerInfo, Box<dyn std::error::Error>> {
    Ok(layer_to_store(
        dir,
        store.blobs(),
        &LayerOptions::default(),
    )?)
}

/// A two-layer image: the lower one with users, groups and files; the upper one deleting
/// `a/gone` (a whiteout) and everything that was in `d/` (an opaque marker), adding `d/new`.
fn two_layer_image(
    store: &Store,
    work: &Path,
    user: &str,
) -> Result<(Digest, Vec<LayerInfo>), Box<dyn std::error::Error>> {
    let lower = work.join("lower");
    write(
        &lower,
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/bin/false\n",
    )?;
    write(
        &lower,
        "etc/group",
        "root:x:0:\nwww-data:x:33:\nstaff:x:50:daemon,www-data\n",
    )?;
    write(&lower, "a/keep", "kept\n")?;
    write(&lower, "a/gone", "deleted above\n")?;
    write(&lower, "d/x", "hidden above\n")?;
    write(&lower, "d/sub/y", "hidden above\n")?;
    write(&lower, "owned", "by www-data\n")?;
    if is_root() {
        std::os::unix::fs::chown(lower.join("owned"), Some(33), Some(33))?;
    }
    let upper = work.join("upper");
    write(&upper, "a/.wh.gone", "")?;
    write(&upper, "d/.wh..wh..opq", "")?;
    write(&upper, "d/new", "added above\n")?;
    let layers = vec![layer(store, &lower)?, layer(store, &upper)?];
    let mut config = ImageConfig::new("amd64", "linux");
    config.config.user = user.to_owned();
    config.config.cmd = vec!["cat".to_owned(), "/a/keep".to_owned()];
    config.config.working_dir = "/a".to_owned();
    let desc = write_image(store, config, &layers, ManifestFormat::Oci)?;
    Ok((desc.digest, layers))
}

#[test]
fn upper_layer_whiteouts_delete_lower_files_and_user_resolves_in_the_bundle() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let store = Store::open(&tmp.path().join("store"))?;
    let (manifest, _) = two_layer_image(&store, tmp.path(), "www-data")?;
    let bundle = tmp.path().join("out/bundle");
    let summary = export_bundle(&store, &manifest, &bundle, &BundleOptions::default())?;
    assert_eq!(summary.layers, 2);
    let rootfs = bundle.join("rootfs");
    assert_eq!(fs::read_to_string(rootfs.join("a/keep"))?, "kept\n");
    assert!(
        !rootfs.join("a/gone").exists(),
        "the whiteout deletes a/gone"
    );
    assert!(
        !rootfs.join("a/.wh.gone").exists(),
        "markers are not written"
    );
    assert!(!rootfs.join("d/x").exists() && !rootfs.join("d/sub").exists());
    assert!(!rootfs.join("d/.wh..wh..opq").exists());
    assert_eq!(fs::read_to_string(rootfs.join("d/new"))?, "added above\n");
    assert_eq!(fs::metadata(&rootfs)?.mode() & 0o7777, 0o755);
    if is_root() {
        let owned = fs::metadata(rootfs.join("owned"))?;
        assert_eq!((owned.uid(), owned.gid()), (33, 33));
    }

    let spec = Spec::load(bundle.join("config.json"))?;
    let process = spec.process().clone().ok_or("no process")?;
    assert_eq!(process.user().uid(), 33);
    assert_eq!(process.user().gid(), 33);
    assert_eq!(process.user().additional_gids().clone(), Some(vec![50]));
    assert_eq!(process.cwd(), Path::new("/a"));
    assert_eq!(
        process.args().clone(),
        Some(vec!["cat".to_owned(), "/a/keep".to_owned()])
    );
    assert_eq!(spec, summary.spec);
    Ok(())
}

#[test]
fn user_forms_resolve_through_the_image_files() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let store = Store::open(&tmp.path().join("store"))?;
    // USER → (uid, gid, additionalGids).
    type Want = (u32, u32, Option<Vec<u32>>);
    let cases: &[(&str, Want)] = &[
        ("", (0, 0, None)),
        ("www-data", (33, 33, Some(vec![50]))),
        ("33", (33, 33, Some(vec![50]))),
        ("www-data:staff", (33, 50, None)),
        ("1000:2000", (1000, 2000, None)),
        ("1000", (1000, 0, None)),
    ];
    for (i, (user, (uid, gid, extra))) in cases.iter().enumerate() {
        let work = tmp.path().join(format!("case{i}"));
        let (manifest, _) = two_layer_image(&store, &work, user)?;
        let bundle = work.join("bundle");
        let summary = export_bundle(&store, &manifest, &bundle, &BundleOptions::default())?;
        let process = summary.spec.process().clone().ok_or("no process")?;
        assert_eq!(
            (
                process.user().uid(),
                process.user().gid(),
                process.user().additional_gids().clone()
            ),
            (*uid, *gid, extra.clone()),
            "USER {user:?}"
        );
    }
    Ok(())
}

#[test]
fn refusals_leave_nothing_behind() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let store = Store::open(&tmp.path().join("store"))?;
    let (manifest, layers) = two_layer_image(&store, tmp.path(), "ghost")?;

    // An unknown user fails after the layers were applied: the directory this call created
    // is removed again, and an empty directory given is left empty.
    let created = tmp.path().join("new-bundle");
    let err = export_bundle(&store, &manifest, &created, &BundleOptions::default()).err();
    assert!(
        matches!(&err, Some(BundleError::UnknownUser { user }) if user == "ghost"),
        "{err:?}"
    );
    assert!(err.is_some_and(|e| e.to_string().contains("ghost")));
    assert!(!created.exists());
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty)?;
    let err = export_bundle(&store, &manifest, &empty, &BundleOptions::default()).err();
    assert!(matches!(err, Some(BundleError::UnknownUser { .. })));
    assert_eq!(fs::read_dir(&empty)?.count(), 0);

    // A non-empty directory or a file is refused untouched.
    let full = tmp.path().join("full");
    write(&full, "precious", "keep me")?;
    let err = export_bundle(&store, &manifest, &full, &BundleOptions::default()).err();
    assert!(matches!(err, Some(BundleError::NotEmpty { .. })), "{err:?}");
    assert_eq!(fs::read_to_string(full.join("precious"))?, "keep me");
    let file = full.join("precious");
    let err = export_bundle(&store, &manifest, &file, &BundleOptions::default()).err();
    assert!(
        matches!(err, Some(BundleError::NotADirectory { .. })),
        "{err:?}"
    );

    // A config whose diff IDs do not match the layers' content.
    let mut swapped = layers.clone();
    swapped.swap(0, 1);
    for (s, l) in swapped.iter_mut().zip(&layers) {
        s.diff_id = l.diff_id.clone();
    }
    let mut config = ImageConfig::new("amd64", "linux");
    config.config.cmd = vec!["true".to_owned()];
    let bad = write_image(&store, config, &swapped, ManifestFormat::Oci)?;
    let out = tmp.path().join("bad");
    let err = export_bundle(&store, &bad.digest, &out, &BundleOptions::default()).err();
    assert!(
        matches!(err, Some(BundleError::DiffIdMismatch { .. })),
        "{err:?}"
    );
    assert!(!out.exists());
    Ok(())
}
