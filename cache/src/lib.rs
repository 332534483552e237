//! The on-disk content-addressed store every build uses: verified blobs, the image index, and
//! unpacked layer snapshots, under one 0700 root with a versioned layout — plus the per-context
//! index of file digests ([`FileIndex`]) that spares re-reading unchanged build-context files.
//!
//! Everything written is written atomically (temp file or dir in the store, fsync, rename, fsync
//! of the directory), everything read from a blob is checked against its digest, and blobs are
//! streamed through fixed buffers so their size never matters for memory. Concurrent rbuild
//! processes coordinate with `flock`: the image index under its own lock, and the store as a
//! whole under [`Store::lock_shared`] (builds) and [`Store::lock_exclusive`] (prune).

mod blob;
pub mod blob_recipe;
mod digest;
mod error;
mod file_index;
mod fsx;
mod images;
mod keys;
mod lock;
mod snapshots;
mod store;

use std::path::PathBuf;

pub use blob::{BlobStore, BlobWriter};
pub use blob_recipe::{BlobMaker, BlobReader};
pub use digest::{Digest, DigestReader, DigestWriter, VerifiedReader};
pub use error::StoreError;
pub use file_index::{FileDigests, FileIndex, FileKey, NoIndex};
pub use images::{ImageDb, ImageRecord};
pub use keys::KeyIndex;
pub use lock::{LockMode, StoreLock};
pub use snapshots::{Snapshot, SnapshotStore};
pub use store::{Store, WorkDir, LAYOUT_DIR};

/// The environment variable that overrides the store root.
pub const ROOT_ENV: &str = "RBUILD_ROOT";

/// Where the store lives unless told otherwise: `$RBUILD_ROOT` if set; else `/var/lib/rbuild`
/// when running as root; else `$XDG_DATA_HOME/rbuild` (when `XDG_DATA_HOME` is an absolute path,
/// as the XDG spec requires), or `~/.local/share/rbuild`.
pub fn default_root() -> PathBuf {
    let home = std::env::var_os("HOME")
        .filter(|home| !home.is_empty())
        .map(PathBuf::from)
        .or_else(home_from_passwd);
    root_from(
        std::env::var_os(ROOT_ENV).map(PathBuf::from),
        nix::unistd::geteuid().is_root(),
        std::env::var_os("XDG_DATA_HOME").map(PathBuf::from),
        home,
    )
}

fn home_from_passwd() -> Option<PathBuf> {
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|user| user.dir)
}

/// The decision behind [`default_root`], separated from the environment for tests.
fn root_from(
    explicit: Option<PathBuf>,
    is_root: bool,
    xdg_data_home: Option<PathBuf>,
    home: Option<PathBuf>,
) -> PathBuf {
    const SYSTEM_ROOT: &str = "/var/lib/rbuild";
    if let Some(explicit) = explicit.filter(|path| !path.as_os_str().is_empty()) {
        return explicit;
    }
    if is_root {
        return PathBuf::from(SYSTEM_ROOT);
    }
    if let Some(data_home) = xdg_data_home.filter(|path| path.is_absolute()) {
        return data_home.join("rbuild");
    }
    match home {
        Some(home) => home.join(".local/share/rbuild"),
        // No home at all: the system path, which an unprivileged user cannot create, so
        // `Store::open` fails with a clear error instead of guessing a shared location.
        None => PathBuf::from(SYSTEM_ROOT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_types_can_cross_threads() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<Store>();
        send_sync::<StoreError>();
        send_sync::<Digest>();
        send_sync::<ImageRecord>();
        send_sync::<Snapshot>();
        send_sync::<StoreLock>();
        send_sync::<BlobWriter>();
    }

    struct RootCase {
        name: &'static str,
        explicit: Option<&'static str>,
        is_root: bool,
        xdg_data_home: Option<&'static str>,
        home: Option<&'static str>,
        want: &'static str,
    }

    #[test]
    fn default_root_table() {
        let user_data = "/home/u/.local/share/rbuild";
        let cases = [
            RootCase {
                name: "explicit wins",
                explicit: Some("/srv/rb"),
                is_root: true,
                xdg_data_home: Some("/x"),
                home: Some("/home/u"),
                want: "/srv/rb",
            },
            RootCase {
                name: "empty explicit ignored",
                explicit: Some(""),
                is_root: false,
                xdg_data_home: None,
                home: Some("/home/u"),
                want: user_data,
            },
            RootCase {
                name: "root",
                explicit: None,
                is_root: true,
                xdg_data_home: Some("/x"),
                home: Some("/root"),
                want: "/var/lib/rbuild",
            },
            RootCase {
                name: "xdg",
                explicit: None,
                is_root: false,
                xdg_data_home: Some("/data"),
                home: Some("/home/u"),
                want: "/data/rbuild",
            },
            RootCase {
                name: "relative xdg ignored",
                explicit: None,
                is_root: false,
                xdg_data_home: Some("data"),
                home: Some("/home/u"),
                want: user_data,
            },
            RootCase {
                name: "home",
                explicit: None,
                is_root: false,
                xdg_data_home: None,
                home: Some("/home/u"),
                want: user_data,
            },
            RootCase {
                name: "nothing",
                explicit: None,
                is_root: false,
                xdg_data_home: None,
                home: None,
                want: "/var/lib/rbuild",
            },
        ];
        for case in cases {
            let got = root_from(
                case.explicit.map(PathBuf::from),
                case.is_root,
                case.xdg_data_home.map(PathBuf::from),
                case.home.map(PathBuf::from),
            );
            assert_eq!(got, PathBuf::from(case.want), "{}", case.name);
        }
    }
}
