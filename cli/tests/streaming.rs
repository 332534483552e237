//! Big data is streamed: building and exporting an image with a 1 GiB file keeps the `rbuild`
//! process's peak memory far below the file's size.

mod common;

use std::path::Path;
use std::process::Command;

/// Peak resident set size (KiB) of the largest child this process has waited for.
fn children_max_rss_kib() -> i64 {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .map(|u| u.max_rss())
        .unwrap_or(0)
}

#[test]
fn a_1gib_layer_does_not_need_1gib_of_memory() {
    if !rustix::process::geteuid().is_root() {
        common::skip("building needs root");
        return;
    }
    let dir = std::env::temp_dir().join(format!("rbuild-stream-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY big.bin /big.bin\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // A sparse 1 GiB file: reads as zeros, costs no disk until copied.
    let big = std::fs::File::create(ctx.join("big.bin")).unwrap_or_else(|e| panic!("{e}"));
    big.set_len(1 << 30).unwrap_or_else(|e| panic!("{e}"));
    drop(big);
    let out = dir.join("image.oci.tar");
    let status = Command::new(common::RBUILD)
        .arg("--root")
        .arg(dir.join("store"))
        .args(["build", "-q", "-t", "big", "-o"])
        .arg(format!("type=oci,dest={}", out.display()))
        .arg(&ctx)
        .status()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success());
    let peak_mib = children_max_rss_kib() / 1024;
    println!("peak RSS building and exporting a 1 GiB layer: {peak_mib} MiB");
    assert!(Path::new(&out).metadata().map(|m| m.len()).unwrap_or(0) > 0);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        peak_mib < 200,
        "peak RSS {peak_mib} MiB for a 1 GiB layer: something holds the layer in memory"
    );
}
