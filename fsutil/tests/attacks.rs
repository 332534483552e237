//! Attack tests: each builds a hostile archive or tree in a real temp dir
//! and shows the attack cannot touch anything outside the root
//! (SECURITY-CLASSES 3, 5, 6, 11). A race test (class 4) is in `race.rs`.
//!
//! Every test snapshots the host area next to the root (`outside/` with its
//! sentinels) before the attack and asserts it is byte-for-byte unchanged
//! after, and that the attack's uniquely named file appears neither there
//! nor in `/`, `/tmp` or `/etc`.

mod common;

use std::error::Error;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::{token, RawTar, Sandbox, SENTINEL};
use rbuild_fsutil::{extract_tar, ExtractOptions, FsError, WhiteoutMode};
use tar::EntryType;

type TestResult = Result<(), Box<dyn Error>>;

fn extract(
    sb: &Sandbox,
    tar: &[u8],
    opts: &ExtractOptions,
) -> Result<rbuild_fsutil::ExtractStats, FsError> {
    extract_tar(tar, &sb.root, opts)
}

// ---------------------------------------------------------------------------
// 1. Hostile names.
// ---------------------------------------------------------------------------

/// `..` escapes are rejected by name for every entry type; `/abs` and
/// `..\` names land inside the root.
#[test]
fn tar_slip_names_table() -> TestResult {
    #[derive(Debug)]
    enum Want {
        Rejected,
        /// Lands at this root-relative path.
        Inside(&'static str),
    }
    let cases: &[(&str, Want)] = &[
        ("../{T}", Want::Rejected),
        ("../../{T}", Want::Rejected),
        ("../../../../../../../../../../{T}", Want::Rejected),
        ("a/../../{T}", Want::Rejected),
        ("./../{T}", Want::Rejected),
        ("/../{T}", Want::Rejected),
        ("a/b/../../../{T}", Want::Rejected),
        ("/abs/{T}", Want::Inside("abs/{T}")),
        ("//abs//{T}", Want::Inside("abs/{T}")),
        ("/{T}", Want::Inside("{T}")),
        ("a/../{T}", Want::Inside("{T}")),
        ("..\\{T}", Want::Inside("..\\{T}")),
        ("..\\..\\..\\{T}", Want::Inside("..\\..\\..\\{T}")),
        ("sub/..\\..\\{T}", Want::Inside("sub/..\\..\\{T}")),
    ];
    let kinds = ["file", "dir", "symlink", "fifo"];
    for (pattern, want) in cases {
        for kind in kinds {
            let sb = Sandbox::new();
            let before = sb.snapshot();
            let t = token();
            let name = pattern.replace("{T}", &t);
            let tar = match kind {
                "file" => RawTar::new().file(&name, b"pwned"),
                "dir" => RawTar::new().dir(&name),
                "symlink" => RawTar::new().symlink(&name, "/etc/passwd"),
                _ => RawTar::new().node(&name, EntryType::Fifo, 0o644, 0, 0),
            }
            .finish();
            let res = extract(&sb, &tar, &ExtractOptions::default());
            match want {
                Want::Rejected => match res {
                    Err(FsError::EscapingEntry { path }) => {
                        assert_eq!(
                            path,
                            Path::new(&name),
                            "{kind} {name:?}: error names the entry"
                        );
                        let msg = FsError::EscapingEntry { path }.to_string();
                        assert!(msg.contains(&t), "message names the entry: {msg}");
                    }
                    other => panic!("{kind} {name:?}: expected EscapingEntry, got {other:?}"),
                },
                Want::Inside(at) => {
                    res.map_err(|e| format!("{kind} {name:?}: {e}"))?;
                    let at = at.replace("{T}", &t);
                    assert!(
                        sb.root.exists(&at)?,
                        "{kind} {name:?} should be at {at:?} in the root"
                    );
                    assert!(
                        fs::symlink_metadata(sb.in_root(&at)).is_ok(),
                        "{kind} {name:?} not on disk at {at:?}"
                    );
                }
            }
            sb.assert_untouched(&before, &t);
        }
    }
    Ok(())
}

/// A rejected entry stops extraction; nothing after it is written.
#[test]
fn tar_slip_rejection_is_an_error_not_a_skip() -> TestResult {
    let sb = Sandbox::new();
    let t = token();
    let tar = RawTar::new()
        .file("ok", b"1")
        .file(&format!("../{t}"), b"pwned")
        .file("after", b"2")
        .finish();
    let err = extract(&sb, &tar, &ExtractOptions::default())
        .err()
        .ok_or("expected an error")?;
    assert!(matches!(err, FsError::EscapingEntry { .. }), "{err}");
    assert!(sb.root.exists("ok")?);
    assert!(!sb.root.exists("after")?);
    Ok(())
}

// ---------------------------------------------------------------------------
// 2. Symlink entry, then an entry through it.
// ---------------------------------------------------------------------------

#[test]
fn symlink_then_write_through_it_table() -> TestResult {
    // (symlink target, where `link/X` must land inside the root)
    let targets: &[(&str, &str)] = &[
        ("/", ""),
        ("../../..", ""),
        ("..", ""),
        ("../outside", "outside"),
        ("../../../../../../..{OUTSIDE}", "{OUTSIDE}"),
        ("{OUTSIDE}", "{OUTSIDE}"),
        ("{OUTSIDE}/dir", "{OUTSIDE}/dir"),
        ("/etc", "etc"),
        ("sub/../../..", ""),
    ];
    // What is written through the link.
    let followers = ["file", "dir", "symlink", "hardlink", "nested-file", "fifo"];
    for (target, lands) in targets {
        for follower in followers {
            let sb = Sandbox::new();
            let before = sb.snapshot();
            let t = token();
            let target = sb.expand(target);
            let lands = sb.expand(lands);
            let mut tar = RawTar::new()
                .file("victim", b"in-root")
                .symlink("link", &target);
            let (written, expect_at) = match follower {
                "file" => (format!("link/{t}"), format!("{lands}/{t}")),
                "dir" => (format!("link/{t}"), format!("{lands}/{t}")),
                "symlink" => (format!("link/{t}"), format!("{lands}/{t}")),
                "hardlink" => (format!("link/{t}"), format!("{lands}/{t}")),
                "nested-file" => (format!("link/deeper/{t}"), format!("{lands}/deeper/{t}")),
                _ => (format!("link/{t}"), format!("{lands}/{t}")),
            };
            tar = match follower {
                "file" | "nested-file" => tar.file(&written, b"pwned"),
                "dir" => tar.dir_mode(&written, 0o777),
                "symlink" => tar.symlink(&written, "/etc/shadow"),
                "hardlink" => tar.hardlink(&written, "victim"),
                _ => tar.node(&written, EntryType::Fifo, 0o666, 0, 0),
            };
            let res = extract(&sb, &tar.finish(), &ExtractOptions::default());
            res.map_err(|e| format!("link -> {target:?}, {follower}: {e}"))?;
            // The entry is reachable through the link, in-root...
            assert!(
                sb.root.exists(&written)?,
                "link -> {target:?}, {follower}: not reachable as {written:?}"
            );
            // ...and physically inside the root where in-root resolution puts it.
            let host = sb.in_root(&expect_at);
            assert!(
                fs::symlink_metadata(&host).is_ok(),
                "link -> {target:?}, {follower}: expected at {host:?}"
            );
            assert!(host.starts_with(&sb.root_dir));
            // The symlink itself is kept verbatim.
            assert_eq!(sb.root.read_link("link")?, Path::new(&target));
            sb.assert_untouched(&before, &t);
        }
    }
    Ok(())
}

/// A file entry over an existing symlink to a host file replaces the
/// symlink; the host file is not written through it. Same for a directory
/// entry over a symlink to a host directory (no chmod/chown through it), and
/// for devices/links.
#[test]
fn entry_over_existing_symlink_replaces_it_table() -> TestResult {
    let cases: &[(&str, &str)] = &[
        ("{OUTSIDE}/sentinel", "file"),
        ("../outside/sentinel", "file"),
        ("{OUTSIDE}/sentinel", "hardlink"),
        ("{OUTSIDE}/sentinel", "fifo"),
        ("{OUTSIDE}", "dir"),
        ("{OUTSIDE}/dir", "dir"),
        ("{OUTSIDE}", "symlink"),
    ];
    for (target, kind) in cases {
        for pre_existing_via in ["tar", "root-api", "host"] {
            let sb = Sandbox::new();
            let target = sb.expand(target);
            match pre_existing_via {
                "root-api" => sb.root.symlink(&target, "s")?,
                "host" => std::os::unix::fs::symlink(&target, sb.in_root("s"))?,
                _ => {}
            }
            let before = sb.snapshot();
            let t = token();
            let mut tar = RawTar::new().owner(4242, 4242).file("victim", b"in-root");
            if pre_existing_via == "tar" {
                tar = tar.symlink("s", &target);
            }
            tar = match *kind {
                "file" => tar.file_mode("s", b"pwned", 0o4777),
                "hardlink" => tar.hardlink("s", "victim"),
                "fifo" => tar.node("s", EntryType::Fifo, 0o777, 0, 0),
                "dir" => tar.dir_mode("s", 0o777),
                _ => tar.symlink("s", &t),
            };
            extract(&sb, &tar.finish(), &ExtractOptions::default())
                .map_err(|e| format!("s -> {target:?} ({pre_existing_via}) then {kind}: {e}"))?;
            let md = sb.root.symlink_metadata("s")?;
            match *kind {
                "file" => {
                    assert!(md.is_file());
                    let mut s = String::new();
                    sb.root.open_file("s")?.read_to_string(&mut s)?;
                    assert_eq!(s, "pwned");
                }
                "hardlink" => assert!(md.is_file() && md.nlink() == 2),
                "dir" => assert!(md.is_dir()),
                "symlink" => assert_eq!(sb.root.read_link("s")?, Path::new(&t)),
                _ => assert!(md.file_type().is_symlink() || !md.is_file()),
            }
            sb.assert_untouched(&before, &t);
        }
    }
    Ok(())
}

/// An entry whose parent is a symlink chain bouncing in and out of the root.
#[test]
fn symlink_chains_stay_confined() -> TestResult {
    let sb = Sandbox::new();
    let before = sb.snapshot();
    let t = token();
    let tar = RawTar::new()
        .symlink("a", "b/../../../")
        .symlink("b", "/c")
        .symlink("c", &sb.expand("{OUTSIDE}"))
        .dir("d")
        .symlink("d/up", "../../../../d2")
        .file(&format!("a/{t}"), b"x")
        .file(&format!("b/{t}"), b"x")
        .file(&format!("d/up/{t}"), b"x")
        .finish();
    extract(&sb, &tar, &ExtractOptions::default())?;
    // a -> b/../../.. : b is followed (to /c -> OUTSIDE, all in-root), then
    // `..` climbs, clamped at the root.
    assert!(sb.root.exists(format!("a/{t}"))?);
    assert!(sb.root.exists(format!("b/{t}"))?);
    assert!(
        sb.root.exists(format!("d2/{t}"))?,
        "d/up -> ../../../../d2 clamps to /d2"
    );
    assert!(fs::symlink_metadata(sb.in_root(&format!("d2/{t}"))).is_ok());
    sb.assert_untouched(&before, &t);
    Ok(())
}

// ---------------------------------------------------------------------------
// 3. Hardlinks pointing out.
// ---------------------------------------------------------------------------

#[test]
fn hardlink_out_table() -> TestResult {
    enum Want {
        Escapes,
        Refused(&'static str),
    }
    /// (symlinks made first, hardlink target, outcome)
    type Case = (&'static [(&'static str, &'static str)], &'static str, Want);
    let cases: &[Case] = &[
        (&[], "../outside/sentinel", Want::Escapes),
        (&[], "../../sentinel", Want::Escapes),
        (&[], "a/../../outside/sentinel", Want::Escapes),
        (&[], "{OUTSIDE}/sentinel", Want::Refused("does not exist")),
        (&[], "/etc/passwd", Want::Refused("does not exist")),
        (&[], "/", Want::Refused("is the extraction root")),
        (&[], ".", Want::Refused("is the extraction root")),
        // Hardlink to a symlink that points outside: not a regular file.
        (
            &[("s", "{OUTSIDE}/sentinel")],
            "s",
            Want::Refused("not a regular file"),
        ),
        (
            &[("s", "/etc/passwd")],
            "s",
            Want::Refused("not a regular file"),
        ),
        (
            &[("s", "../outside/sentinel")],
            "s",
            Want::Refused("not a regular file"),
        ),
        // Through a symlinked directory: resolved in-root, so nothing there.
        (
            &[("d", "{OUTSIDE}")],
            "d/sentinel",
            Want::Refused("does not exist"),
        ),
        (
            &[("d", "/etc")],
            "d/passwd",
            Want::Refused("does not exist"),
        ),
        (
            &[("d", "../outside")],
            "d/sentinel",
            Want::Refused("does not exist"),
        ),
        // Hardlink to a directory.
        (&[("d", "/")], "d", Want::Refused("not a regular file")),
    ];
    for (links, target, want) in cases {
        let sb = Sandbox::new();
        let passwd_nlink = fs::metadata("/etc/passwd").map(|m| m.nlink()).ok();
        let before = sb.snapshot();
        let t = token();
        let target = sb.expand(target);
        let mut tar = RawTar::new();
        for (name, to) in *links {
            tar = tar.symlink(name, &sb.expand(to));
        }
        let tar = tar.hardlink(&t, &target).finish();
        let res = extract(&sb, &tar, &ExtractOptions::default());
        match (want, res) {
            (
                Want::Escapes,
                Err(FsError::BadHardlink {
                    path,
                    target: got,
                    reason,
                }),
            ) => {
                assert_eq!(path, Path::new(&t));
                assert_eq!(got, Path::new(&target));
                assert!(reason.contains("escapes"), "{reason}");
            }
            (Want::Refused(why), Err(FsError::BadHardlink { reason, .. })) => {
                assert!(reason.contains(why), "hardlink -> {target:?}: {reason}");
            }
            (_, other) => panic!("hardlink -> {target:?}: unexpected {other:?}"),
        }
        assert!(!sb.root.exists(&t)?);
        assert_eq!(
            fs::metadata("/etc/passwd").map(|m| m.nlink()).ok(),
            passwd_nlink
        );
        sb.assert_untouched(&before, &t);
    }
    Ok(())
}

/// A hardlink whose own parent is a symlink to the host lands in the root.
#[test]
fn hardlink_through_symlinked_parent_lands_inside() -> TestResult {
    let sb = Sandbox::new();
    let before = sb.snapshot();
    let t = token();
    let tar = RawTar::new()
        .file("f", b"data")
        .symlink("l", &sb.expand("{OUTSIDE}"))
        .hardlink(&format!("l/{t}"), "f")
        .finish();
    extract(&sb, &tar, &ExtractOptions::default())?;
    let inside = sb.in_root(&format!("{}/{t}", sb.expand("{OUTSIDE}")));
    assert_eq!(
        fs::metadata(&inside)?.ino(),
        fs::metadata(sb.in_root("f"))?.ino()
    );
    sb.assert_untouched(&before, &t);
    Ok(())
}

// ---------------------------------------------------------------------------
// 4. Whiteouts through symlinks.
// ---------------------------------------------------------------------------

#[test]
fn whiteouts_through_symlinks_table() -> TestResult {
    let cases: &[(&str, &str)] = &[
        ("{OUTSIDE}", "d/.wh.sentinel"),
        ("{OUTSIDE}", "d/.wh.dir"),
        ("{OUTSIDE}", "d/.wh..wh..opq"),
        ("{OUTSIDE}/dir", "d/.wh..wh..opq"),
        ("../outside", "d/.wh.sentinel"),
        ("../outside", "d/.wh..wh..opq"),
        ("/", "d/.wh.sentinel"),
        ("../../..", "d/.wh..wh..opq"),
        ("{BASE}", "d/outside/.wh.sentinel"),
        ("{BASE}", "d/outside/.wh..wh..opq"),
    ];
    for mode in [
        WhiteoutMode::Apply,
        WhiteoutMode::ToOverlay,
        WhiteoutMode::Keep,
    ] {
        for (target, marker) in cases {
            for link_via_tar in [true, false] {
                let sb = Sandbox::new();
                let target = sb.expand(target);
                if !link_via_tar {
                    sb.root.symlink(&target, "d")?;
                }
                let before = sb.snapshot();
                let t = token();
                let mut tar = RawTar::new().file("keep", b"k");
                if link_via_tar {
                    tar = tar.symlink("d", &target);
                }
                let tar = tar.file(marker, b"").finish();
                let opts = ExtractOptions {
                    whiteouts: mode,
                    ..ExtractOptions::default()
                };
                let res = extract(&sb, &tar, &opts);
                if mode == WhiteoutMode::ToOverlay && !common::is_root() {
                    // mknod of 0/0 and trusted.* need privilege; the point is no escape.
                    let _ = res;
                } else {
                    res.map_err(|e| format!("{mode:?} d -> {target:?}, {marker}: {e}"))?;
                }
                assert!(
                    sb.root.exists("keep")?,
                    "{mode:?} {marker}: unrelated file removed"
                );
                // The link stays, unless it resolves to the root itself and an
                // opaque marker there hid it as lower content (not from this archive).
                let d_is_root = matches!(target.as_str(), "/" | "../../..");
                if link_via_tar
                    || !(d_is_root && marker.ends_with(".wh..wh..opq"))
                    || mode != WhiteoutMode::Apply
                {
                    assert_eq!(
                        sb.root.read_link("d")?,
                        Path::new(&target),
                        "the symlink itself stays"
                    );
                }
                sb.assert_untouched(&before, &t);
                // Overlay conversions land inside the root.
                if mode == WhiteoutMode::ToOverlay && common::is_root() {
                    let host_parent = fs::canonicalize(sb.in_root("."))?;
                    assert!(host_parent.starts_with(&sb.root_dir));
                }
            }
        }
    }
    Ok(())
}

/// `.wh.NAME` where NAME is a symlink to a host directory removes the
/// symlink, not the directory's contents.
#[test]
fn whiteout_of_symlink_removes_only_the_link() -> TestResult {
    for target in ["{OUTSIDE}", "../outside", "{OUTSIDE}/dir"] {
        let sb = Sandbox::new();
        let target = sb.expand(target);
        sb.root.symlink(&target, "victim")?;
        let before = sb.snapshot();
        let tar = RawTar::new().file(".wh.victim", b"").finish();
        let opts = ExtractOptions {
            whiteouts: WhiteoutMode::Apply,
            ..ExtractOptions::default()
        };
        extract(&sb, &tar, &opts)?;
        assert!(!sb.root.exists("victim")?);
        sb.assert_untouched(&before, &token());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// 5. remove_all must not follow symlinks (BuildKit CVE-2024-23652).
// ---------------------------------------------------------------------------

#[test]
fn remove_all_never_follows_symlinks() -> TestResult {
    let sb = Sandbox::new();
    let outside = sb.expand("{OUTSIDE}");
    let base = sb.expand("{BASE}");
    sb.root.mkdir_all("t/sub/deeper", 0o755, None)?;
    sb.root
        .write_file_from("t/file", &mut io::repeat(b'x').take(10), 0o644)?;
    sb.root.symlink(&outside, "t/abs_host_dir")?;
    sb.root.symlink("../../outside", "t/rel_host_dir")?;
    sb.root.symlink(&base, "t/sub/base")?;
    sb.root.symlink("/", "t/sub/deeper/slash")?;
    sb.root
        .symlink(format!("{outside}/sentinel"), "t/sub/host_file")?;
    // The same links placed on the host by a process inside the container.
    std::os::unix::fs::symlink(&outside, sb.in_root("t/sub/deeper/host_made"))?;
    let before = sb.snapshot();

    // Removing through a symlinked parent resolves in-root: nothing there.
    assert!(!sb.root.remove_all("t/abs_host_dir/sentinel")?);
    assert!(!sb.root.remove_all("t/rel_host_dir/dir")?);
    // Removing a symlink removes the link only.
    assert!(sb.root.remove_all("t/abs_host_dir")?);
    // Removing the tree removes everything in it, following nothing.
    assert!(sb.root.remove_all("t")?);
    assert!(!sb.root.exists("t")?);
    sb.assert_untouched(&before, &token());

    // `clear` likewise.
    sb.root.mkdir_all("u", 0o755, None)?;
    sb.root.symlink(&outside, "u/l")?;
    sb.root.clear("u")?;
    assert!(sb.root.read_dir("u")?.is_empty());
    sb.assert_untouched(&before, &token());
    Ok(())
}

/// `remove_all("/")` and `remove_all("..")` name the root and are refused.
#[test]
fn remove_all_refuses_the_root() -> TestResult {
    let sb = Sandbox::new();
    sb.root.write_file_from("x", &mut &b"1"[..], 0o644)?;
    for p in ["", "/", ".", "..", "../..", "a/.."] {
        let err = sb.root.remove_all(p).err().ok_or("expected an error")?;
        assert!(matches!(err, FsError::InvalidPath { .. }), "{p:?}: {err}");
    }
    assert!(sb.root.exists("x")?);
    Ok(())
}

// ---------------------------------------------------------------------------
// 6. mkdir_all through a symlink (Podman WORKDIR class).
// ---------------------------------------------------------------------------

#[test]
fn mkdir_all_through_symlinks_table() -> TestResult {
    // (symlink a -> target, where a/b/c must be created inside the root)
    let cases: &[(&str, &str)] = &[
        ("/", "b/c"),
        ("../..", "b/c"),
        ("../../../../..", "b/c"),
        ("{OUTSIDE}", "{OUTSIDE}/b/c"),
        ("../outside", "outside/b/c"),
        ("{BASE}", "{BASE}/b/c"),
        ("/etc/../..", "b/c"),
        ("x/y/../../..", "b/c"),
        ("/missing/dangling", "missing/dangling/b/c"),
        (".", "b/c"),
    ];
    for (target, expect) in cases {
        for owner in [None, Some((1234, 5678))] {
            let sb = Sandbox::new();
            let target = sb.expand(target);
            let expect = sb.expand(expect);
            sb.root.symlink(&target, "a")?;
            let before = sb.snapshot();
            let created = sb.root.mkdir_all("a/b/c", 0o711, owner)?;
            assert!(
                sb.root.symlink_metadata("a/b/c")?.is_dir(),
                "a -> {target:?}"
            );
            let host = sb.in_root(&expect);
            let md = fs::symlink_metadata(&host)
                .map_err(|e| format!("a -> {target:?}: {host:?}: {e}"))?;
            assert!(md.is_dir());
            assert_eq!(md.mode() & 0o7777, 0o711);
            if let (Some((u, g)), true) = (owner, common::is_root()) {
                assert_eq!((md.uid(), md.gid()), (u, g));
            }
            assert_eq!(
                created.last().map(|p| p.to_string_lossy().into_owned()),
                Some(expect.trim_start_matches('/').to_owned())
            );
            sb.assert_untouched(&before, &token());
        }
    }
    Ok(())
}

#[test]
fn mkdir_all_symlink_loops_fail() -> TestResult {
    let sb = Sandbox::new();
    sb.root.symlink("a", "a")?;
    sb.root.symlink("/c", "b")?;
    sb.root.symlink("b/x", "c")?;
    for p in ["a/x", "b/x"] {
        let err = sb
            .root
            .mkdir_all(p, 0o755, None)
            .err()
            .ok_or("expected ELOOP")?;
        assert_eq!(
            err.raw_os_error(),
            Some(rustix::io::Errno::LOOP.raw_os_error()),
            "{p}: {err}"
        );
    }
    Ok(())
}

/// Every Root API entry point with a symlink-to-host parent stays inside.
#[test]
fn root_api_through_symlinked_parent() -> TestResult {
    let sb = Sandbox::new();
    let outside = sb.expand("{OUTSIDE}");
    sb.root.symlink(&outside, "l")?;
    sb.root.symlink("../outside", "r")?;
    let before = sb.snapshot();
    let t = token();
    sb.root.mkdir_all(format!("l/dir/{t}"), 0o755, None)?;
    // Parent l/dir now exists in-root (root/<OUTSIDE>/dir) and is used below.
    assert!(sb.root.create_file(format!("l/dir/{t}f"), 0o644).is_ok());
    sb.root
        .write_file_from(format!("l/dir/{t}w"), &mut &b"x"[..], 0o644)?;
    sb.root.symlink("/etc/shadow", format!("l/dir/{t}s"))?;
    sb.root
        .hardlink(format!("l/dir/{t}w"), format!("l/dir/{t}h"))?;
    sb.root.mknod(
        format!("l/dir/{t}p"),
        rbuild_fsutil::NodeKind::Fifo,
        0o600,
        0,
        0,
    )?;
    // Operations on "l/dir/sentinel" name root/<OUTSIDE>/dir/sentinel, which does not exist.
    assert!(sb.root.chmod("l/dir/sentinel", 0o777).is_err());
    assert!(sb.root.lchown("l/dir/sentinel", 1, 1).is_err());
    assert!(sb
        .root
        .set_times(
            "l/dir/sentinel",
            std::time::UNIX_EPOCH,
            std::time::UNIX_EPOCH
        )
        .is_err());
    assert!(sb
        .root
        .set_xattr("l/dir/sentinel", "user.pwn", b"1")
        .is_err());
    assert!(sb.root.open_file("l/sentinel").is_err());
    assert!(sb.root.open_file("r/sentinel").is_err());
    assert_eq!(
        sb.root.read_dir("l")?,
        vec!["dir"],
        "l lists the in-root target, not the host dir"
    );
    assert!(!sb.root.exists("r/sentinel")?);
    assert!(sb.root.hardlink("l/sentinel", format!("{t}x")).is_err());
    assert!(sb.root.hardlink("r/sentinel", format!("{t}y")).is_err());
    // chmod/chown/set_times on the symlink itself do not reach the host dir.
    assert!(
        sb.root.chmod("l", 0o777).is_err(),
        "no chmod through a final symlink"
    );
    sb.root
        .set_times("l", std::time::UNIX_EPOCH, std::time::UNIX_EPOCH)?;
    if common::is_root() {
        sb.root.lchown("l", 4321, 4321)?;
        sb.root
            .set_xattr("l", "trusted.rbuild-test", b"on-the-link")?;
    }
    // Opening a sub-root through the link clamps to the in-root target.
    let sub = sb.root.open_beneath("l")?;
    assert!(sub.read_dir(".")?.iter().any(|n| n == "dir"));
    sb.assert_untouched(&before, &t);
    // The host sentinel is still single-linked.
    assert_eq!(fs::metadata(sb.outside.join("sentinel"))?.nlink(), 1);
    assert_eq!(fs::read(sb.outside.join("sentinel"))?, SENTINEL);
    Ok(())
}

/// `/proc/self/...` magic links inside a path are refused (RESOLVE_NO_MAGICLINKS),
/// and `/proc/self/root` inside the root is just a path in the root.
#[test]
fn magic_links_are_not_followed() -> TestResult {
    let sb = Sandbox::new();
    let before = sb.snapshot();
    // A symlink in the root to the host's /proc: in-root it is <root>/proc, absent.
    sb.root.symlink("/proc/self/root", "pr")?;
    assert!(sb.root.open_file("pr/etc/passwd").is_err());
    assert!(!sb.root.exists("pr/etc")?);
    // Bind the real procfs into the root's view: a symlink to an absolute
    // host path of the root's own /proc entry is still clamped.
    let fdlink = format!("/proc/{}/root/etc/passwd", std::process::id());
    sb.root.symlink(&fdlink, "fd")?;
    assert!(sb.root.open_file("fd").is_err());
    sb.assert_untouched(&before, &token());
    Ok(())
}

// ---------------------------------------------------------------------------
// 8. Bombs (gzip-bomb class, CVE-2017-14992; BuildKit CVE-2024-23650 class).
// ---------------------------------------------------------------------------

#[test]
fn total_bytes_limit_table() -> TestResult {
    let mib = vec![0u8; 1 << 20];
    let tar = RawTar::new()
        .file("a", &mib)
        .file("b", &mib)
        .file("c", &mib)
        .finish();
    // (limit, ok?)
    let cases: &[(Option<u64>, bool)] = &[
        (None, true),
        (Some(3 << 20), true),
        (Some((3 << 20) - 1), false),
        (Some(2 << 20), false),
        (Some(1), false),
        (Some(0), false),
    ];
    for (limit, ok) in cases {
        let sb = Sandbox::new();
        let opts = ExtractOptions {
            max_total_bytes: *limit,
            ..ExtractOptions::default()
        };
        match (extract(&sb, &tar, &opts), ok) {
            (Ok(stats), true) => assert_eq!(stats.bytes, 3 << 20),
            (
                Err(FsError::LimitExceeded {
                    limit: "total bytes",
                    max,
                    path,
                }),
                false,
            ) => {
                assert_eq!(Some(max), *limit);
                assert!(path.is_some());
            }
            (other, _) => panic!("limit {limit:?}: {other:?}"),
        }
    }
    Ok(())
}

#[test]
fn entry_count_limit() -> TestResult {
    let mut tar = RawTar::new();
    for i in 0..100 {
        tar = tar.file(&format!("f{i}"), b"");
    }
    let tar = tar.finish();
    let sb = Sandbox::new();
    let opts = ExtractOptions {
        max_entries: Some(10),
        ..ExtractOptions::default()
    };
    let err = extract(&sb, &tar, &opts)
        .err()
        .ok_or("expected a limit error")?;
    assert!(
        matches!(
            err,
            FsError::LimitExceeded {
                limit: "entry count",
                max: 10,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(sb.root.read_dir(".")?.len(), 10);
    let opts = ExtractOptions {
        max_entries: Some(100),
        ..ExtractOptions::default()
    };
    assert_eq!(extract(&Sandbox::new(), &tar, &opts)?.entries, 100);
    Ok(())
}

/// A header that claims a terabyte, over an endless stream of zeros (what a
/// decompression bomb looks like after gunzip), fails fast on the limit.
#[test]
fn huge_declared_size_over_endless_stream_fails_fast() -> TestResult {
    let sb = Sandbox::new();
    let h = RawTar::new().header(b"bomb", EntryType::Regular, 1 << 40, 0o644);
    let mut h = h;
    h.set_cksum();
    let stream = io::Cursor::new(h.as_bytes().to_vec()).chain(io::repeat(0));
    let opts = ExtractOptions {
        max_total_bytes: Some(1 << 20),
        ..ExtractOptions::default()
    };
    let err = extract_tar(stream, &sb.root, &opts)
        .err()
        .ok_or("expected a limit error")?;
    assert!(
        matches!(
            err,
            FsError::LimitExceeded {
                limit: "total bytes",
                ..
            }
        ),
        "{err}"
    );
    Ok(())
}

/// An endless stream of tiny entries is stopped by the entry limit.
#[test]
fn endless_entries_stopped_by_entry_limit() -> TestResult {
    struct Endless {
        block: Vec<u8>,
        pos: usize,
    }
    impl Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.block.len() - self.pos);
            buf[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
            self.pos = (self.pos + n) % self.block.len();
            Ok(n)
        }
    }
    let mut h = RawTar::new().header(b"same", EntryType::Regular, 0, 0o644);
    h.set_cksum();
    let sb = Sandbox::new();
    let opts = ExtractOptions {
        max_entries: Some(1000),
        ..ExtractOptions::default()
    };
    let err = extract_tar(
        Endless {
            block: h.as_bytes().to_vec(),
            pos: 0,
        },
        &sb.root,
        &opts,
    )
    .err()
    .ok_or("expected a limit error")?;
    assert!(
        matches!(
            err,
            FsError::LimitExceeded {
                limit: "entry count",
                ..
            }
        ),
        "{err}"
    );
    Ok(())
}

/// A PAX header or GNU long name too big to hold in memory is refused
/// before it is buffered.
#[test]
fn metadata_limit_bounds_pax_and_long_names() -> TestResult {
    let big = vec![b'a'; 2 << 20];
    let pax = RawTar::new()
        .pax(&[("SCHILY.xattr.user.big", &big)])
        .file("f", b"")
        .finish();
    // A GNU long-name entry ('L') claiming a huge size over an endless stream.
    let mut l = tar::Header::new_gnu();
    l.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
    l.set_entry_type(EntryType::GNULongName);
    l.set_size(1 << 40);
    l.set_mode(0o644);
    l.set_cksum();
    for (what, stream) in [
        ("pax", Box::new(io::Cursor::new(pax)) as Box<dyn Read>),
        (
            "longname",
            Box::new(io::Cursor::new(l.as_bytes().to_vec()).chain(io::repeat(b'a'))),
        ),
    ] {
        let sb = Sandbox::new();
        let opts = ExtractOptions {
            max_metadata_bytes: 1 << 20,
            ..ExtractOptions::default()
        };
        let err = extract_tar(stream, &sb.root, &opts)
            .err()
            .ok_or("expected a limit error")?;
        assert!(
            matches!(
                err,
                FsError::LimitExceeded {
                    limit: "metadata bytes",
                    ..
                }
            ),
            "{what}: {err}"
        );
    }
    Ok(())
}

/// Malformed archives are errors, never panics (class 11).
#[test]
fn garbage_and_truncation_are_errors() -> TestResult {
    let good = RawTar::new()
        .file("a", &[1u8; 3000])
        .dir("d")
        .symlink("s", "a")
        .finish();
    let sb = Sandbox::new();
    for cut in [1, 100, 511, 512, 513, 1024, 2000, 3000] {
        let _ = extract(
            &Sandbox::new(),
            &good[..cut.min(good.len())],
            &ExtractOptions::default(),
        );
    }
    let mut flipped = good.clone();
    for i in (0..flipped.len()).step_by(97) {
        flipped[i] ^= 0x5a;
        let _ = extract(&Sandbox::new(), &flipped, &ExtractOptions::default());
    }
    let garbage: Vec<u8> = (0..10_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let _ = extract(&sb, &garbage, &ExtractOptions::default());
    Ok(())
}

/// Out-of-range owners are refused with the entry named, not wrapped to -1.
#[test]
fn out_of_range_owner_is_refused() -> TestResult {
    let sb = Sandbox::new();
    let tar = RawTar::new()
        .pax(&[("uid", b"4294967295")])
        .file("f", b"")
        .finish();
    let err = extract(&sb, &tar, &ExtractOptions::default())
        .err()
        .ok_or("expected an error")?;
    assert!(
        matches!(&err, FsError::InvalidEntry { path, .. } if path == Path::new("f")),
        "{err}"
    );
    let tar = RawTar::new()
        .pax(&[("uid", b"99999999999")])
        .file("g", b"")
        .finish();
    assert!(extract(&sb, &tar, &ExtractOptions::default()).is_err());
    // With a forced owner the archive's owner does not matter.
    let opts = ExtractOptions {
        owner: Some((0, 0)),
        ..ExtractOptions::default()
    };
    let tar = RawTar::new()
        .pax(&[("uid", b"99999999999")])
        .file("h", b"")
        .finish();
    extract(&sb, &tar, &opts)?;
    Ok(())
}
