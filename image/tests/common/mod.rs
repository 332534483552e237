//! Shared helpers for the integration tests: temp stores, external tools, tar inspection.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::type_complexity
)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use rbuild_cache::Store;

/// A store in a fresh temp dir (kept alive by the returned guard).
pub fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    (dir, store)
}

/// The path of an external tool, or `None` (with a note) when it is missing. Under `CI=true` a
/// missing tool fails the test instead.
pub fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{name} is not installed (required under CI=true)");
        }
        eprintln!("SKIP: {name} is not installed");
    }
    found
}

/// Runs a command and returns its stdout; panics with stderr on failure.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// (path, entry type byte, data) of each entry, via the `tar` crate.
pub fn tar_entries(bytes: &[u8]) -> Vec<(String, u8, Vec<u8>)> {
    let mut archive = tar::Archive::new(bytes);
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
        let kind = entry.header().entry_type().as_byte();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        out.push((path, kind, data));
    }
    out
}

/// The byte offset of the data of entry `path` in a tar.
pub fn entry_offset(bytes: &[u8], path: &str) -> u64 {
    let mut archive = tar::Archive::new(bytes);
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        if entry.path_bytes().as_ref() == path.as_bytes() {
            return entry.raw_file_position();
        }
    }
    panic!("{path} not in archive")
}

/// A raw ustar header block for `name` (any bytes, up to 100) of `kind` and `size`, with
/// correct checksum — for crafting hostile archives the `tar` crate refuses to build.
pub fn raw_header(name: &[u8], kind: u8, size: u64, link: &[u8]) -> [u8; 512] {
    let mut b = [0u8; 512];
    b[..name.len()].copy_from_slice(name);
    b[100..108].copy_from_slice(b"0000644\0");
    b[108..116].copy_from_slice(b"0000000\0");
    b[116..124].copy_from_slice(b"0000000\0");
    b[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    b[136..148].copy_from_slice(b"00000000000\0");
    b[156] = kind;
    b[157..157 + link.len()].copy_from_slice(link);
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    b[148..156].copy_from_slice(b"        ");
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    b
}

/// A tar of raw entries (name, kind, data, link).
pub fn raw_tar(entries: &[(&[u8], u8, &[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind, data, link) in entries {
        out.extend_from_slice(&raw_header(name, *kind, data.len() as u64, link));
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// Reads a whole file.
pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}
