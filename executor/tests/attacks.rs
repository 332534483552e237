//! Attacks on COPY/ADD/WORKDIR (SECURITY-CLASSES 3, 5, 11): symlinks and `..` in the context,
//! in another stage and in the destination must resolve inside their own root; archives with
//! escaping names must fail without writing outside; a decompression bomb is cut off.
//!
//! Each test puts a "host" file next to the roots (in the scratch directory) or uses the real
//! host `/etc/passwd`, and checks it was neither read into the result nor written.

mod common;

use std::io::Write;

use common::{am_root, op, Env, TestResult};
use rbuild_executor::{copy, ensure_workdir, tree::list_tree, ArchiveLimits, CopyOp, ExecError};
use rbuild_fsutil::Root;

fn read_dest(env: &Env, rel: &str) -> std::io::Result<String> {
    std::fs::read_to_string(env.dest_path().join(rel))
}

#[test]
fn context_symlink_to_etc_reads_the_context_not_the_host() -> TestResult {
    let host_passwd = std::fs::read_to_string("/etc/passwd")?;
    let env = Env::new()?;
    env.link("/etc", "evil")?;
    env.link("../../../../../../etc/passwd", "evil-rel")?;
    // Without an etc/ in the context there is nothing to copy.
    let err = env
        .copy(&op(&["evil/passwd"], "/x"))
        .err()
        .ok_or("expected not found")?;
    assert!(matches!(err, ExecError::SourceNotFound { .. }), "{err}");
    assert!(env.copy(&op(&["evil-rel"], "/y")).is_err());
    assert!(!env.dest_path().join("x").exists() && !env.dest_path().join("y").exists());
    // With one, the context's file is what is copied, through both links.
    env.file("etc/passwd", "context-passwd\n", 0o644)?;
    env.copy(&op(&["evil/passwd"], "/x"))?;
    env.copy(&op(&["evil-rel"], "/y"))?;
    env.copy(&op(&["evil"], "/whole-etc/"))?;
    assert_eq!(read_dest(&env, "x")?, "context-passwd\n");
    assert_eq!(read_dest(&env, "y")?, "context-passwd\n");
    assert_eq!(read_dest(&env, "whole-etc/passwd")?, "context-passwd\n");
    assert_ne!(host_passwd, "context-passwd\n");
    // A wildcard through the link stays in the context too.
    env.copy(&op(&["evil/pass*"], "/w/"))?;
    assert_eq!(read_dest(&env, "w/passwd")?, "context-passwd\n");
    Ok(())
}

#[test]
fn symlinks_inside_a_copied_directory_are_copied_not_followed() -> TestResult {
    let env = Env::new()?;
    env.dir("d", 0o755)?;
    env.link("/etc/passwd", "d/abs")?;
    env.link("../../../etc/shadow", "d/rel")?;
    env.copy(&op(&["d"], "/out/"))?;
    let root = env.dest()?;
    assert_eq!(
        root.read_link("out/abs")?,
        std::path::PathBuf::from("/etc/passwd")
    );
    assert_eq!(
        root.read_link("out/rel")?,
        std::path::PathBuf::from("../../../etc/shadow")
    );
    assert!(root.symlink_metadata("out/abs")?.file_type().is_symlink());
    Ok(())
}

#[test]
fn another_stage_with_an_absolute_symlink_stays_in_that_stage() -> TestResult {
    // `COPY --from=stage /app/config /x`: the stage's `/app/config -> /etc/passwd` means the
    // stage's own /etc/passwd.
    let env = Env::new()?;
    env.file("etc/passwd", "stage-passwd\n", 0o644)?;
    env.link("/etc/passwd", "app/config")?;
    let op = CopyOp {
        keep_owners: true,
        ..op(&["/app/config"], "/x")
    };
    env.copy(&op)?;
    assert_eq!(read_dest(&env, "x")?, "stage-passwd\n");
    Ok(())
}

#[test]
fn destination_symlinks_resolve_inside_the_destination() -> TestResult {
    let env = Env::new()?;
    env.file("x", "payload\n", 0o644)?;
    // `/link -> /` and `/up -> ../../..` both mean the destination root.
    env.dest_link("/", "link")?;
    env.dest_link("../../..", "up")?;
    env.dest_link("../../../../outside-dir", "far")?;
    env.copy(&op(&["x"], "/link/"))?;
    env.copy(&op(&["x"], "/up/x2"))?;
    env.copy(&op(&["x"], "/far/x3"))?;
    assert_eq!(read_dest(&env, "x")?, "payload\n");
    assert_eq!(read_dest(&env, "x2")?, "payload\n");
    assert_eq!(read_dest(&env, "outside-dir/x3")?, "payload\n");
    assert_eq!(
        env.outside()?,
        Vec::<String>::new(),
        "nothing next to the roots"
    );
    // A directory source through the links too.
    env.dir("d", 0o755)?;
    env.file("d/inner", "i\n", 0o644)?;
    env.copy(&op(&["d"], "/up/dd/"))?;
    assert_eq!(read_dest(&env, "dd/inner")?, "i\n");
    assert_eq!(env.outside()?, Vec::<String>::new());
    Ok(())
}

#[test]
fn destination_symlink_loops_are_errors() -> TestResult {
    let env = Env::new()?;
    env.file("x", "x", 0o644)?;
    env.dest_link("b", "a")?;
    env.dest_link("a", "b")?;
    let err = env
        .copy(&op(&["x"], "/a/x"))
        .err()
        .ok_or("expected an error")?;
    assert!(err.to_string().contains("symbolic links"), "{err}");
    // The same on the source side: resolution gives up instead of spinning.
    env.link("l2", "l1")?;
    env.link("l1", "l2")?;
    let err = env
        .copy(&op(&["l1/x"], "/y"))
        .err()
        .ok_or("expected an error")?;
    assert!(matches!(err, ExecError::SymlinkLoop { .. }), "{err}");
    Ok(())
}

#[test]
fn workdir_through_a_symlink_stays_in_the_root() -> TestResult {
    let env = Env::new()?;
    env.dest_link("/", "a")?;
    env.dest_link("../../../..", "b")?;
    let root = env.dest()?;
    ensure_workdir(&root, "/a/made", None)?;
    ensure_workdir(&root, "/b/also/deep", Some((5, 6)))?;
    assert!(env.dest_path().join("made").is_dir());
    assert!(env.dest_path().join("also/deep").is_dir());
    assert_eq!(env.outside()?, Vec::<String>::new());
    if am_root() {
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::metadata(env.dest_path().join("also"))?;
        assert_eq!((md.uid(), md.gid(), md.mode() & 0o7777), (5, 6, 0o755));
    }
    Ok(())
}

fn tar_with(
    entries: &[(&str, tar::EntryType, &[u8], Option<&str>)],
) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let mut out = Vec::new();
    for (name, kind, data, link) in entries {
        let mut h = tar::Header::new_ustar();
        // Write the raw name so `../` is not refused by the builder.
        let bytes = name.as_bytes();
        let old = h.as_old_mut();
        old.name[..bytes.len()].copy_from_slice(bytes);
        h.set_entry_type(*kind);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        if let Some(l) = link {
            h.set_link_name(l)?;
        }
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        out.extend(vec![0u8; pad]);
    }
    out.extend(vec![0u8; 1024]);
    Ok(out)
}

fn gzip(data: &[u8]) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data)?;
    Ok(e.finish()?)
}

fn add(sources: &[&str], dest: &str) -> CopyOp {
    CopyOp {
        add: true,
        unpack_archives: true,
        ..op(sources, dest)
    }
}

#[test]
fn add_archive_with_dotdot_names_fails_without_writing_outside() -> TestResult {
    let env = Env::new()?;
    let evil = tar_with(&[
        ("ok.txt", tar::EntryType::Regular, b"fine", None),
        ("../../escaped.txt", tar::EntryType::Regular, b"evil", None),
    ])?;
    std::fs::write(env.src_path().join("evil.tar.gz"), gzip(&evil)?)?;
    let err = env
        .copy(&add(&["evil.tar.gz"], "/out/"))
        .err()
        .ok_or("expected an error")?;
    assert!(err.to_string().contains("escapes"), "{err}");
    assert!(
        err.to_string().contains("evil.tar.gz"),
        "names the archive: {err}"
    );
    assert_eq!(env.outside()?, Vec::<String>::new());
    assert!(!env.dest_path().join("escaped.txt").exists());
    Ok(())
}

#[test]
fn add_archive_symlink_then_write_through_it_stays_in_the_dest_dir() -> TestResult {
    let env = Env::new()?;
    let evil = tar_with(&[
        ("link", tar::EntryType::Symlink, b"", Some("/")),
        ("link/through.txt", tar::EntryType::Regular, b"x", None),
        ("up", tar::EntryType::Symlink, b"", Some("../../../..")),
        ("up/far.txt", tar::EntryType::Regular, b"y", None),
        ("/abs.txt", tar::EntryType::Regular, b"z", None),
    ])?;
    std::fs::write(env.src_path().join("evil.tar"), &evil)?;
    env.copy(&add(&["evil.tar"], "/out/"))?;
    // Docker extracts chrooted into the destination directory: `/` there is `/out`.
    assert_eq!(read_dest(&env, "out/through.txt")?, "x");
    assert_eq!(read_dest(&env, "out/far.txt")?, "y");
    assert_eq!(read_dest(&env, "out/abs.txt")?, "z");
    assert!(!env.dest_path().join("through.txt").exists());
    assert_eq!(env.outside()?, Vec::<String>::new());
    Ok(())
}

#[test]
fn add_decompression_bomb_is_cut_off() -> TestResult {
    let env = Env::new()?;
    let big = vec![0u8; 4 << 20];
    let bomb = tar_with(&[("zeros", tar::EntryType::Regular, &big, None)])?;
    let compressed = gzip(&bomb)?;
    assert!(compressed.len() < 64 << 10);
    std::fs::write(env.src_path().join("bomb.tar.gz"), compressed)?;
    let op = CopyOp {
        archive_limits: ArchiveLimits {
            max_bytes: Some(1 << 20),
            max_entries: Some(10),
        },
        ..add(&["bomb.tar.gz"], "/out/")
    };
    let err = env.copy(&op).err().ok_or("expected the limit to trip")?;
    assert!(err.to_string().contains("limit"), "{err}");
    Ok(())
}

#[test]
fn copy_never_reads_outside_a_subdirectory_root() -> TestResult {
    // The source root is a subdirectory; a symlink climbing out of it must not reach its
    // siblings (here: the destination root's file).
    let env = Env::new()?;
    env.dest_file("secret", "dest-secret\n", 0o600)?;
    env.link("../dest/secret", "sneaky")?;
    let src = Root::open(&env.src_path())?;
    let dest = Root::open(&env.dest_path())?;
    let err = copy(&op(&["sneaky"], "/got"), &src, &dest)
        .err()
        .ok_or("expected not found")?;
    assert!(matches!(err, ExecError::SourceNotFound { .. }), "{err}");
    let listing = list_tree(&dest)?;
    assert_eq!(listing.keys().collect::<Vec<_>>(), ["secret"]);
    Ok(())
}
