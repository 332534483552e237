//! A writable view of a stage's root filesystem: an overlayfs whose lower layers are the
//! stage's snapshots (top first) and whose upper dir collects the step's changes — the step's
//! layer diff, with overlay whiteouts for deletions.
//!
//! The overlay is made with the new mount API (`fsopen`/`fsconfig`/`fsmount`) as a *detached*
//! mount: it is never attached to any path, so nothing can be left mounted on the host if the
//! build dies, and every access goes through the mount's root fd (wrapped in a confined
//! [`Root`]). Lower layers are passed one by one (`lowerdir+`, Linux 6.8+), so the number of
//! layers is not limited by the length of a mount option string.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rbuild_fsutil::Root;
use rustix::mount::{
    fsconfig_create, fsconfig_set_string, fsmount, fsopen, FsMountFlags, FsOpenFlags,
    MountAttrFlags,
};

use crate::error::BuildError;

/// An overlay over `lowers` with a fresh upper dir; dropping it detaches the mount.
pub struct OverlayView {
    root: Root,
    upper: PathBuf,
}

impl OverlayView {
    /// Mounts `lowers` (top first; at least one, e.g. an empty dir for scratch) under the upper
    /// dir `upper` with the overlay work dir `work` (both empty, on the same filesystem).
    pub fn mount(lowers: &[PathBuf], upper: &Path, work: &Path) -> Result<OverlayView, BuildError> {
        let fail = |what: &str, e: rustix::io::Errno| BuildError::Mount {
            what: what.to_string(),
            source: e.into(),
        };
        let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)
            .map_err(|e| fail("fsopen overlay", e))?;
        for lower in lowers {
            fsconfig_set_string(&fs, "lowerdir+", lower)
                .map_err(|e| fail(&format!("overlay lowerdir+ {}", lower.display()), e))?;
        }
        fsconfig_set_string(&fs, "upperdir", upper).map_err(|e| fail("overlay upperdir", e))?;
        fsconfig_set_string(&fs, "workdir", work).map_err(|e| fail("overlay workdir", e))?;
        // Plain upper dirs: no index, no redirects, no metacopy — only whiteouts and opaque dirs.
        for (key, value) in [
            ("index", "off"),
            ("redirect_dir", "off"),
            ("metacopy", "off"),
        ] {
            fsconfig_set_string(&fs, key, value)
                .map_err(|e| fail(&format!("overlay {key}={value}"), e))?;
        }
        fsconfig_create(&fs).map_err(|e| fail("creating the overlay", e))?;
        let mount: OwnedFd = fsmount(
            &fs,
            FsMountFlags::FSMOUNT_CLOEXEC,
            MountAttrFlags::MOUNT_ATTR_NODEV,
        )
        .map_err(|e| fail("fsmount overlay", e))?;
        let root = Root::from_fd(mount).map_err(|e| BuildError::Fs {
            what: "opening the overlay root".into(),
            source: e,
        })?;
        Ok(OverlayView {
            root,
            upper: upper.to_path_buf(),
        })
    }

    /// The merged root filesystem, confined.
    pub fn root(&self) -> &Root {
        &self.root
    }

    /// The upper dir: what the step changed.
    pub fn upper(&self) -> &Path {
        &self.upper
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rbuild-overlay-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
        d
    }

    #[test]
    fn changes_land_in_the_upper_dir_only() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("SKIPPED: overlay mounts need root");
            return;
        }
        let base = tmp("base");
        let (lower1, lower2, upper, work) = (
            base.join("l1"),
            base.join("l2"),
            base.join("u"),
            base.join("w"),
        );
        for d in [&lower1, &lower2, &upper, &work] {
            std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("{e}"));
        }
        std::fs::write(lower2.join("old.txt"), "old").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(lower1.join("top.txt"), "top").unwrap_or_else(|e| panic!("{e}"));
        let view = OverlayView::mount(&[lower1.clone(), lower2.clone()], &upper, &work)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(view.root().exists("old.txt").unwrap_or(false));
        assert!(view.root().exists("top.txt").unwrap_or(false));
        let mut f = view
            .root()
            .create_file("new.txt", 0o644)
            .unwrap_or_else(|e| panic!("{e}"));
        std::io::Write::write_all(&mut f, b"new").unwrap_or_else(|e| panic!("{e}"));
        drop(f);
        view.root()
            .remove_all("old.txt")
            .unwrap_or_else(|e| panic!("{e}"));
        drop(view);
        // The new file and a whiteout for the deleted one are in the upper dir; lowers untouched.
        assert_eq!(
            std::fs::read_to_string(upper.join("new.txt")).unwrap_or_default(),
            "new"
        );
        let wh = std::fs::symlink_metadata(upper.join("old.txt")).unwrap_or_else(|e| panic!("{e}"));
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
        assert_eq!(
            std::fs::read_to_string(lower2.join("old.txt")).unwrap_or_default(),
            "old"
        );
        assert!(!lower1.join("new.txt").exists());
        let _ = std::fs::remove_dir_all(&base);
    }
}
