//! Race tests (SECURITY-CLASSES 4, TOCTOU: docker cp CVE-2018-15664,
//! BuildKit CVE-2024-23651): an attacker thread keeps swapping a directory
//! inside the root for a symlink to the host while the victim thread creates
//! files and directories beneath it through every entry point. Nothing may
//! ever appear, change or disappear outside the root.

mod common;

use std::error::Error;
use std::fs;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{token, RawTar, Sandbox};
use rbuild_fsutil::{extract_tar, ExtractOptions, WhiteoutMode};
use rustix::fs::{renameat_with, RenameFlags, CWD};

type TestResult = Result<(), Box<dyn Error>>;

/// How long each victim loop runs at most; it stops earlier after
/// `ITERATIONS` rounds.
const BUDGET: Duration = Duration::from_secs(3);
const ITERATIONS: usize = 3000;

fn race(target: &str) -> TestResult {
    let sb = Sandbox::new();
    let target = sb.expand(target);
    let t = token();
    // Attacker's material, inside the root: a real directory and a symlink
    // that are exchanged atomically with `d`, plus a second symlink `e` that
    // flips between a directory and a link non-atomically.
    fs::create_dir(sb.in_root("d"))?;
    std::os::unix::fs::symlink(&target, sb.in_root("spare"))?;
    let before = sb.snapshot();
    let stop = AtomicBool::new(false);
    let swaps = AtomicUsize::new(0);
    let victim_ok = AtomicUsize::new(0);

    std::thread::scope(|s| {
        s.spawn(|| {
            let (d, spare, e) = (sb.in_root("d"), sb.in_root("spare"), sb.in_root("e"));
            while !stop.load(Ordering::Relaxed) {
                let _ = renameat_with(CWD, &d, CWD, &spare, RenameFlags::EXCHANGE);
                // Non-atomic flip of `e`: directory, then symlink.
                if fs::symlink_metadata(&e)
                    .map(|m| m.is_dir())
                    .unwrap_or(false)
                {
                    let _ = fs::remove_dir_all(&e);
                    let _ = std::os::unix::fs::symlink(&target, &e);
                } else {
                    let _ = fs::remove_file(&e);
                    let _ = fs::create_dir(&e);
                }
                swaps.fetch_add(1, Ordering::Relaxed);
            }
        });
        s.spawn(|| {
            let start = Instant::now();
            let opts = ExtractOptions {
                whiteouts: WhiteoutMode::Apply,
                ..ExtractOptions::default()
            };
            for i in 0..ITERATIONS {
                if start.elapsed() > BUDGET {
                    break;
                }
                let root = &sb.root;
                let mut ok = 0;
                for dir in ["d", "e"] {
                    ok += usize::from(root.create_file(format!("{dir}/{t}-f{i}"), 0o644).is_ok());
                    ok += usize::from(
                        root.mkdir_all(format!("{dir}/{t}-m{i}/x/y"), 0o755, None)
                            .is_ok(),
                    );
                    ok += usize::from(
                        root.write_file_from(format!("{dir}/{t}-w{i}"), &mut &b"x"[..], 0o600)
                            .is_ok(),
                    );
                    ok += usize::from(
                        root.symlink("/etc/passwd", format!("{dir}/{t}-s{i}"))
                            .is_ok(),
                    );
                    ok += usize::from(
                        root.mknod(
                            format!("{dir}/{t}-p{i}"),
                            rbuild_fsutil::NodeKind::Fifo,
                            0o600,
                            0,
                            0,
                        )
                        .is_ok(),
                    );
                    ok += usize::from(root.chmod(format!("{dir}/sentinel"), 0o777).is_ok());
                    ok += usize::from(root.lchown(format!("{dir}/sentinel"), 1, 1).is_ok());
                    ok += usize::from(
                        root.set_xattr(format!("{dir}/sentinel"), "user.pwn", b"1")
                            .is_ok(),
                    );
                    ok += usize::from(
                        root.hardlink(format!("{dir}/sentinel"), format!("{t}-h{i}"))
                            .is_ok(),
                    );
                    ok += usize::from(root.remove_all(format!("{dir}/sentinel")).is_ok());
                    ok += usize::from(root.remove_all(format!("{dir}/dir")).is_ok());
                    let tar = RawTar::new()
                        .file(&format!("{dir}/{t}-t{i}"), b"pwned")
                        .dir_mode(&format!("{dir}/{t}-td{i}"), 0o777)
                        .file(&format!("{dir}/{t}-td{i}/deep"), b"pwned")
                        .file(&format!("{dir}/.wh.sentinel"), b"")
                        .file(&format!("{dir}/dir/.wh..wh..opq"), b"")
                        .finish();
                    ok += usize::from(extract_tar(&tar[..], root, &opts).is_ok());
                }
                victim_ok.fetch_add(ok, Ordering::Relaxed);
            }
            stop.store(true, Ordering::Relaxed);
        });
    });
    assert!(
        swaps.load(Ordering::Relaxed) > 100,
        "the attacker must actually have raced"
    );
    assert!(
        victim_ok.load(Ordering::Relaxed) > 0,
        "the victim must have made progress"
    );
    sb.assert_untouched(&before, &t);
    Ok(())
}

#[test]
fn race_swap_dir_for_absolute_symlink_to_host() -> TestResult {
    race("{OUTSIDE}")
}

#[test]
fn race_swap_dir_for_relative_symlink_to_host() -> TestResult {
    race("../outside")
}

#[test]
fn race_swap_dir_for_symlink_to_slash() -> TestResult {
    race("/../../../..{BASE}")
}
