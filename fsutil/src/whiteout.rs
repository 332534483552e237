//! Overlay/OCI whiteouts.
//!
//! OCI layers mark deletions with AUFS-style names: `.wh.NAME` deletes
//! `NAME` from lower layers and `.wh..wh..opq` in a directory hides all of
//! its lower contents. overlayfs expresses the same with a character device
//! 0/0 named `NAME` and the xattr `trusted.overlay.opaque=y` on a directory.
//! [`WhiteoutMode`] picks how [`extract_tar`](crate::extract_tar) treats
//! them; [`Root::make_whiteout`] and [`Root::set_opaque`] write the overlay
//! forms directly.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::OFlags;

use crate::error::{FsError, Result};
use crate::path::RelPath;
use crate::root::{NodeKind, Root};
use crate::sys;

/// Prefix of an OCI whiteout file name.
pub const WHITEOUT_PREFIX: &str = ".wh.";

/// Name of the OCI opaque-directory marker.
pub const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";

/// Prefix of AUFS-internal metadata names (`.wh..wh.plnk`, ...), which are
/// not whiteouts and are skipped when whiteouts are interpreted.
pub const AUFS_META_PREFIX: &str = ".wh..wh.";

/// The overlayfs xattr that makes a directory opaque.
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// What [`extract_tar`](crate::extract_tar) does with `.wh.*` entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// Unpacking a layer onto a merged tree: `.wh.NAME` removes `NAME`
    /// (never following symlinks); `.wh..wh..opq` empties its directory of
    /// everything not added by this same archive. Markers are not written.
    Apply,
    /// Unpacking a layer into its own snapshot directory used as an overlay
    /// lowerdir: `.wh.NAME` becomes a char device 0/0 named `NAME`;
    /// `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its directory.
    ToOverlay,
    /// `ADD` of a user archive: `.wh.*` names are ordinary files.
    #[default]
    Keep,
}

/// What a `.wh.`-prefixed base name means.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Whiteout<'a> {
    /// Not a whiteout name.
    None,
    /// `.wh..wh..opq`.
    Opaque,
    /// `.wh.NAME`: delete `NAME`.
    Remove(&'a OsStr),
    /// `.wh..wh.*` other than the opaque marker: AUFS bookkeeping.
    AufsMeta,
    /// `.wh.`, `.wh..` or `.wh...`: would whiteout nothing, `.` or `..`.
    Invalid,
}

pub(crate) fn classify(base: &OsStr) -> Whiteout<'_> {
    let b = base.as_bytes();
    if b == OPAQUE_WHITEOUT.as_bytes() {
        return Whiteout::Opaque;
    }
    if b.starts_with(AUFS_META_PREFIX.as_bytes()) {
        return Whiteout::AufsMeta;
    }
    match b.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
        None => Whiteout::None,
        Some(b"" | b"." | b"..") => Whiteout::Invalid,
        Some(rest) => Whiteout::Remove(OsStr::from_bytes(rest)),
    }
}

impl Root {
    /// Create an overlayfs whiteout at `rel`: a character device 0/0, mode 0.
    pub fn make_whiteout(&self, rel: impl AsRef<Path>) -> Result<()> {
        self.mknod(rel, NodeKind::Char, 0, 0, 0)
    }

    /// Mark the directory `rel` opaque for overlayfs
    /// (`trusted.overlay.opaque=y`). A symlink in the final position is not
    /// followed (it is an error); intermediate ones resolve in-root.
    pub fn set_opaque(&self, rel: impl AsRef<Path>) -> Result<()> {
        let given = rel.as_ref();
        let fd = self
            .resolve(
                &RelPath::clamped(given),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW,
            )
            .map_err(|e| FsError::io("open", given, e))?;
        sys::set_xattr_fd(fd.as_fd(), OsStr::new(OVERLAY_OPAQUE_XATTR), b"y")
            .map_err(|e| FsError::io("setxattr", given, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_table() {
        let cases: &[(&str, Whiteout<'_>)] = &[
            ("file", Whiteout::None),
            (".whx", Whiteout::None),
            (".wh.file", Whiteout::Remove(OsStr::new("file"))),
            (".wh..hidden", Whiteout::Remove(OsStr::new(".hidden"))),
            (".wh..wh..opq", Whiteout::Opaque),
            (".wh..wh.plnk", Whiteout::AufsMeta),
            (".wh..wh.aufs", Whiteout::AufsMeta),
            (".wh.", Whiteout::Invalid),
            (".wh..", Whiteout::Invalid),
            (".wh...", Whiteout::Invalid),
        ];
        for (name, want) in cases {
            assert_eq!(&classify(OsStr::new(name)), want, "{name}");
        }
    }
}
