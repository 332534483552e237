//! Functional tests of `extract_tar`: a normal archive round-trips with its
//! metadata, whiteouts do what each `WhiteoutMode` says, and entries replace
//! or merge with what is already there as documented.

mod common;

use std::error::Error;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use common::{get_xattr, is_root, RawTar, Sandbox};
use rbuild_fsutil::{
    extract_tar, ExtractOptions, ExtractStats, FsError, WhiteoutMode, OVERLAY_OPAQUE_XATTR,
};
use tar::EntryType;

type TestResult = Result<(), Box<dyn Error>>;

fn extract(sb: &Sandbox, tar: &[u8], opts: &ExtractOptions) -> Result<ExtractStats, FsError> {
    extract_tar(tar, &sb.root, opts)
}

fn apply() -> ExtractOptions {
    ExtractOptions {
        whiteouts: WhiteoutMode::Apply,
        ..ExtractOptions::default()
    }
}

#[test]
fn normal_archive_round_trips() -> TestResult {
    let sb = Sandbox::new();
    let mut tar = RawTar::new()
        .dir("./")
        .dir("etc")
        .owner(1000, 1001)
        .mtime(1_500_000_000)
        .dir_mode("home/user", 0o750)
        .mtime(1_600_000_000)
        .file_mode("home/user/setuid", b"#!/bin/sh\n", 0o4755)
        .file_mode("home/user/notes", b"notes", 0o600)
        .pax(&[
            ("mtime", b"1600000123.25"),
            ("SCHILY.xattr.user.comment", b"hello"),
        ])
        .file_mode("home/user/precise", b"p", 0o640)
        .symlink("home/user/abs", "/usr/bin/env")
        .symlink("home/user/rel", "../x/y")
        .symlink("home/user/dangling", "nope/../..")
        .hardlink("home/user/hard", "./home/user/notes")
        .hardlink("home/user/hard2", "/home/user/notes")
        .owner(0, 0)
        .file("implied/parents/file", b"deep");
    if is_root() {
        tar = tar
            .pax(&[
                ("SCHILY.xattr.trusted.rbuild", b"t"),
                (
                    "SCHILY.xattr.security.capability",
                    &[1, 0, 0, 2, 0, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                ),
            ])
            .file_mode("caps", b"", 0o755)
            .node("dev/null", EntryType::Char, 0o666, 1, 3)
            .node("dev/loop0", EntryType::Block, 0o660, 7, 0)
            .owner(5, 6)
            .node("run/fifo", EntryType::Fifo, 0o620, 0, 0);
    }
    let stats = extract(&sb, &tar.finish(), &ExtractOptions::default())?;
    assert_eq!(stats.skipped, 1, "the ./ entry is skipped");
    assert_eq!(stats.symlinks, 3);
    assert_eq!(stats.hardlinks, 2);

    let md = |p: &str| fs::symlink_metadata(sb.in_root(p));
    // Directory mode, owner, mtime (applied after its contents were written).
    let home = md("home/user")?;
    assert!(home.is_dir());
    assert_eq!(home.mode() & 0o7777, 0o750);
    assert_eq!(home.mtime(), 1_500_000_000);
    // Files: content, mode with setuid, owner.
    let setuid = md("home/user/setuid")?;
    assert_eq!(fs::read(sb.in_root("home/user/setuid"))?, b"#!/bin/sh\n");
    assert_eq!(
        setuid.mode() & 0o7777,
        0o4755,
        "setuid kept (chmod after chown)"
    );
    assert_eq!(setuid.mtime(), 1_600_000_000);
    if is_root() {
        assert_eq!((home.uid(), home.gid()), (1000, 1001));
        assert_eq!((setuid.uid(), setuid.gid()), (1000, 1001));
    }
    // PAX mtime with a fraction, and a user xattr.
    let precise = md("home/user/precise")?;
    assert_eq!(
        (precise.mtime(), precise.mtime_nsec()),
        (1_600_000_123, 250_000_000)
    );
    assert_eq!(
        get_xattr(&sb.in_root("home/user/precise"), "user.comment").as_deref(),
        Some(&b"hello"[..])
    );
    // Symlinks verbatim.
    for (p, target) in [
        ("home/user/abs", "/usr/bin/env"),
        ("home/user/rel", "../x/y"),
        ("home/user/dangling", "nope/../.."),
    ] {
        assert_eq!(fs::read_link(sb.in_root(p))?, Path::new(target));
        assert_eq!(sb.root.read_link(p)?, Path::new(target));
    }
    // Hardlinks share the inode.
    let notes = md("home/user/notes")?;
    assert_eq!(notes.nlink(), 3);
    assert_eq!(md("home/user/hard")?.ino(), notes.ino());
    assert_eq!(md("home/user/hard2")?.ino(), notes.ino());
    // Implied parents.
    assert_eq!(md("implied/parents")?.mode() & 0o7777, 0o755);
    assert_eq!(fs::read(sb.in_root("implied/parents/file"))?, b"deep");
    if is_root() {
        assert_eq!(
            get_xattr(&sb.in_root("caps"), "trusted.rbuild").as_deref(),
            Some(&b"t"[..])
        );
        assert!(
            get_xattr(&sb.in_root("caps"), "security.capability").is_some(),
            "xattrs after chown"
        );
        let null = md("dev/null")?;
        assert!(null.file_type().is_char_device());
        assert_eq!(
            (
                rustix::fs::major(null.rdev()),
                rustix::fs::minor(null.rdev())
            ),
            (1, 3)
        );
        assert_eq!(null.mode() & 0o7777, 0o666);
        let lp = md("dev/loop0")?;
        assert!(lp.file_type().is_block_device());
        assert_eq!(
            (rustix::fs::major(lp.rdev()), rustix::fs::minor(lp.rdev())),
            (7, 0)
        );
        let fifo = md("run/fifo")?;
        assert!(fifo.file_type().is_fifo());
        assert_eq!(fifo.mode() & 0o7777, 0o620);
        assert_eq!((fifo.uid(), fifo.gid()), (5, 6));
    }
    Ok(())
}

#[test]
fn forced_owner_and_no_same_owner() -> TestResult {
    if !is_root() {
        return Ok(());
    }
    let tar = RawTar::new()
        .owner(1000, 1000)
        .dir("d")
        .file("d/f", b"x")
        .file("x/y/z", b"")
        .symlink("s", "d")
        .finish();
    let sb = Sandbox::new();
    extract(
        &sb,
        &tar,
        &ExtractOptions {
            owner: Some((7, 8)),
            ..ExtractOptions::default()
        },
    )?;
    for p in ["d", "d/f", "x", "x/y", "x/y/z", "s"] {
        let md = fs::symlink_metadata(sb.in_root(p))?;
        assert_eq!((md.uid(), md.gid()), (7, 8), "{p}");
    }
    let sb = Sandbox::new();
    extract(
        &sb,
        &tar,
        &ExtractOptions {
            same_owner: false,
            ..ExtractOptions::default()
        },
    )?;
    for p in ["d", "d/f", "s"] {
        let md = fs::symlink_metadata(sb.in_root(p))?;
        assert_eq!((md.uid(), md.gid()), (0, 0), "{p}");
    }
    Ok(())
}

#[test]
fn replace_and_merge_rules() -> TestResult {
    let sb = Sandbox::new();
    // Existing state.
    sb.root.mkdir_all("m", 0o700, None)?;
    sb.root
        .write_file_from("m/child", &mut &b"old"[..], 0o644)?;
    sb.root.write_file_from("f", &mut &b"old f"[..], 0o644)?;
    sb.root.hardlink("f", "f-other-name")?;
    sb.root.mkdir_all("was-dir/sub", 0o755, None)?;
    sb.root
        .write_file_from("was-dir/sub/x", &mut &b"x"[..], 0o644)?;
    sb.root.write_file_from("was-file", &mut &b"x"[..], 0o644)?;
    let tar = RawTar::new()
        .dir_mode("m", 0o755)
        .file("f", b"new f")
        .file("was-dir", b"now a file")
        .dir_mode("was-file", 0o711)
        .file("twice", b"first")
        .file("twice", b"second")
        .finish();
    extract(&sb, &tar, &ExtractOptions::default())?;
    // Directory over directory merges: children kept, mode updated.
    assert_eq!(fs::read(sb.in_root("m/child"))?, b"old");
    assert_eq!(fs::metadata(sb.in_root("m"))?.mode() & 0o7777, 0o755);
    // File over file replaces the name, not the inode's content.
    assert_eq!(fs::read(sb.in_root("f"))?, b"new f");
    assert_eq!(
        fs::read(sb.in_root("f-other-name"))?,
        b"old f",
        "never written through an existing hardlink"
    );
    // File over directory, directory over file.
    assert_eq!(fs::read(sb.in_root("was-dir"))?, b"now a file");
    assert!(fs::metadata(sb.in_root("was-file"))?.is_dir());
    assert_eq!(fs::read(sb.in_root("twice"))?, b"second");
    Ok(())
}

#[test]
fn lexically_cleaned_and_old_style_names() -> TestResult {
    let sb = Sandbox::new();
    let mut tar = RawTar::new().file("a/../b", b"b").file("./c/./d", b"d");
    // Pre-POSIX: a regular-file entry whose name ends in '/' is a directory.
    let h = tar.header(b"olddir/", EntryType::Regular, 0, 0o700);
    tar = tar.raw(h, &[]);
    extract(&sb, &tar.finish(), &ExtractOptions::default())?;
    assert_eq!(fs::read(sb.in_root("b"))?, b"b");
    assert_eq!(fs::read(sb.in_root("c/d"))?, b"d");
    assert!(!sb.in_root("a").exists(), "a/../b does not create a");
    assert!(fs::metadata(sb.in_root("olddir"))?.is_dir());
    Ok(())
}

#[test]
fn whiteout_apply() -> TestResult {
    let sb = Sandbox::new();
    let lower = RawTar::new()
        .file("a/1", b"")
        .file("a/2", b"")
        .file("a/sub/3", b"")
        .file("b/4", b"")
        .file("keep/5", b"")
        .file("c/deep/x", b"")
        .finish();
    extract(&sb, &lower, &apply())?;
    let upper = RawTar::new()
        .file(".wh.b", b"")
        .file("a/new-before", b"")
        .dir("a/sub")
        .file("a/sub/kept", b"")
        .file("a/.wh..wh..opq", b"")
        .file("a/new-after", b"")
        .file("keep/6", b"")
        .file("keep/.wh.missing", b"")
        .file("c/deep/.wh.x", b"")
        .file(".wh..wh.plnk/123.456", b"aufs hardlink store")
        .finish();
    let stats = extract(&sb, &upper, &apply())?;
    assert_eq!(stats.whiteouts, 4);
    assert!(!sb.root.exists("b")?, ".wh.b deleted b recursively");
    assert_eq!(sb.root.read_dir("a")?, ["new-after", "new-before", "sub"]);
    assert_eq!(
        sb.root.read_dir("a/sub")?,
        ["kept"],
        "lower a/sub/3 hidden by the opaque marker"
    );
    assert_eq!(sb.root.read_dir("keep")?, ["5", "6"]);
    assert!(sb.root.read_dir("c/deep")?.is_empty());
    assert!(
        !sb.root.exists(".wh.b")? && !sb.root.exists("a/.wh..wh..opq")?,
        "markers are not written"
    );
    assert!(!sb.root.exists(".wh..wh.plnk")?, "AUFS metadata skipped");
    Ok(())
}

/// Parents an archive implies (no directory entry) are its own: an opaque
/// marker later in the same archive keeps them.
#[test]
fn whiteout_apply_keeps_implied_parents_of_same_layer() -> TestResult {
    let sb = Sandbox::new();
    extract(&sb, &RawTar::new().file("x/lower", b"").finish(), &apply())?;
    let upper = RawTar::new()
        .file("x/y/z/file", b"")
        .file("x/.wh..wh..opq", b"")
        .finish();
    extract(&sb, &upper, &apply())?;
    assert_eq!(sb.root.read_dir("x")?, ["y"]);
    assert!(sb.root.exists("x/y/z/file")?);
    Ok(())
}

#[test]
fn whiteout_to_overlay() -> TestResult {
    if !is_root() {
        return Ok(()); // mknod and trusted.* xattrs need privilege
    }
    let sb = Sandbox::new();
    let tar = RawTar::new()
        .file(".wh.gone", b"")
        .dir("d")
        .file("d/.wh..wh..opq", b"")
        .file("d/f", b"f")
        .file("implied/.wh..wh..opq", b"")
        .file("implied/deeper/.wh.x", b"")
        .finish();
    let stats = extract(
        &sb,
        &tar,
        &ExtractOptions {
            whiteouts: WhiteoutMode::ToOverlay,
            ..ExtractOptions::default()
        },
    )?;
    assert_eq!(stats.whiteouts, 4);
    for p in ["gone", "implied/deeper/x"] {
        let md = fs::symlink_metadata(sb.in_root(p))?;
        assert!(md.file_type().is_char_device(), "{p} is a whiteout device");
        assert_eq!(md.rdev(), 0, "{p} is 0/0");
    }
    for d in ["d", "implied"] {
        assert_eq!(
            get_xattr(&sb.in_root(d), OVERLAY_OPAQUE_XATTR).as_deref(),
            Some(&b"y"[..]),
            "{d}"
        );
    }
    assert_eq!(fs::read(sb.in_root("d/f"))?, b"f");
    assert_eq!(
        sb.root.read_dir(".")?,
        ["d", "gone", "implied"],
        "no .wh. names written"
    );
    assert_eq!(sb.root.read_dir("d")?, ["f"]);
    // The Root API forms.
    sb.root.make_whiteout("manual")?;
    assert_eq!(fs::symlink_metadata(sb.in_root("manual"))?.rdev(), 0);
    sb.root.mkdir_all("o", 0o755, None)?;
    sb.root.set_opaque("o")?;
    assert_eq!(
        get_xattr(&sb.in_root("o"), OVERLAY_OPAQUE_XATTR).as_deref(),
        Some(&b"y"[..])
    );
    sb.root.symlink("o", "olink")?;
    assert!(
        sb.root.set_opaque("olink").is_err(),
        "set_opaque does not follow a final symlink"
    );
    Ok(())
}

#[test]
fn whiteout_keep_is_plain_files() -> TestResult {
    let sb = Sandbox::new();
    sb.root.write_file_from("victim", &mut &b"v"[..], 0o644)?;
    let tar = RawTar::new()
        .file(".wh.victim", b"w")
        .file("d/.wh..wh..opq", b"o")
        .finish();
    let stats = extract(&sb, &tar, &ExtractOptions::default())?;
    assert_eq!(stats.whiteouts, 0);
    assert_eq!(fs::read(sb.in_root(".wh.victim"))?, b"w");
    assert_eq!(fs::read(sb.in_root("d/.wh..wh..opq"))?, b"o");
    assert!(sb.root.exists("victim")?);
    Ok(())
}

#[test]
fn invalid_whiteout_names_are_errors() -> TestResult {
    for name in [".wh.", "d/.wh..", "d/.wh..."] {
        let sb = Sandbox::new();
        let tar = RawTar::new().file(name, b"").finish();
        let err = extract(&sb, &tar, &apply())
            .err()
            .ok_or("expected an error")?;
        assert!(
            matches!(&err, FsError::InvalidEntry { path, .. } if path == Path::new(name)),
            "{name}: {err}"
        );
    }
    Ok(())
}

#[test]
fn unsupported_types_and_root_entries() -> TestResult {
    let sb = Sandbox::new();
    let mut tar = RawTar::new();
    let h = tar.header(b"vol", EntryType::new(b'V'), 0, 0o644);
    tar = tar.raw(h, &[]);
    let err = extract(&sb, &tar.finish(), &ExtractOptions::default())
        .err()
        .ok_or("expected an error")?;
    assert!(
        matches!(err, FsError::UnsupportedEntry { kind: 'V', .. }),
        "{err}"
    );
    // A non-directory naming the root itself (a trailing '/' would make
    // it an old-style directory entry, which is skipped).
    for name in [".", "a/..", "/."] {
        let err = extract(
            &sb,
            &RawTar::new().file(name, b"x").finish(),
            &ExtractOptions::default(),
        )
        .err()
        .ok_or("expected an error")?;
        assert!(matches!(err, FsError::InvalidEntry { .. }), "{name}: {err}");
    }
    Ok(())
}
