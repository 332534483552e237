//! Shared helpers for tests that read `../shared/conformance/` (beside the repo root).
#![allow(dead_code)] // each test binary uses a different subset

use std::path::PathBuf;

/// The conformance folder `sub`, or `None` (after saying so) when `../shared` is missing.
/// Under `CI=true` a missing folder is a failure, never a skip.
pub fn conformance_dir(sub: &str) -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/conformance")
        .join(sub);
    if dir.is_dir() {
        return Some(dir);
    }
    let msg = format!(
        "conformance data {} is missing (../shared beside the repo root)",
        dir.display()
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg}; under CI=true this is a failure");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

/// Reads a file, failing the test with its path on error.
pub fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Sorted subdirectories of `dir`.
pub fn subdirs(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    out.sort();
    out
}

/// Prints the pass count of one conformance set and fails with every failure listed.
pub fn report(set: &str, total: usize, failures: &[String]) {
    println!("{set}: {} of {total} cases pass", total - failures.len());
    assert!(total > 0, "{set}: no cases found");
    assert!(
        failures.is_empty(),
        "{set}: {} failures:\n{}",
        failures.len(),
        failures.join("\n---\n")
    );
}
