//! `USER` → the uid, gid and supplementary gids a container's process runs with, resolved
//! the way Docker and runc do (`GetExecUser` of moby/sys/user) against the image's own
//! `/etc/passwd` and `/etc/group`:
//!
//! - `""` is uid 0; its primary gid and name come from `/etc/passwd` when uid 0 is listed
//!   there (gid 0 otherwise).
//! - `user` or `uid`: a number is always a uid (taken as is when `/etc/passwd` has no entry
//!   for it, with gid 0); a name must be in `/etc/passwd`, else the error names it. The
//!   primary gid is the entry's.
//! - `…:group` or `…:gid` sets the gid instead: a number is taken as is, a name must be in
//!   `/etc/group`.
//! - Supplementary gids: when no group was given and the user was found by name or uid, every
//!   group of `/etc/group` that lists the user's name as a member.
//! - Ids must be in `0..=2^31-1`, as Docker requires.
//!
//! The files come from a hostile image: they are read through a [`Root`] (an absolute symlink
//! such as `/etc/passwd -> /host/passwd` resolves inside the root filesystem, never on the
//! host), must be regular files (a FIFO or device planted there is refused instead of opened,
//! so reading cannot block or have side effects), and are read up to [`MAX_DB_BYTES`].
//! Malformed lines (missing fields, non-numeric ids) are skipped rather than read as root.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rbuild_fsutil::{FsError, Root};

use crate::error::BundleError;

/// The most of `/etc/passwd` or `/etc/group` that is read.
pub const MAX_DB_BYTES: u64 = 8 << 20;

/// The largest uid or gid Docker accepts (`2^31 - 1`).
pub const MAX_ID: u32 = i32::MAX as u32;

/// How many symlinks are followed to reach `/etc/passwd` or `/etc/group` (the kernel's limit).
const MAX_SYMLINK_HOPS: usize = 40;

const PASSWD: &str = "/etc/passwd";
const GROUP: &str = "/etc/group";

/// Who a container's process runs as.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvedUser {
    /// The uid.
    pub uid: u32,
    /// The primary gid.
    pub gid: u32,
    /// Supplementary gids (groups that list the user as a member), in `/etc/group` order.
    pub additional_gids: Vec<u32>,
}

/// Resolves the image's `USER` value `spec` against `/etc/passwd` and `/etc/group` in
/// `rootfs` (see the [module docs](self)). A missing file is an empty database.
pub fn resolve_user(rootfs: &Root, spec: &str) -> Result<ResolvedUser, BundleError> {
    resolve_user_with(spec, &mut || read_db(rootfs, PASSWD), &mut || {
        read_db(rootfs, GROUP)
    })
}

/// A database reader: the file's text, `None` when it does not exist.
type DbReader<'a> = dyn FnMut() -> Result<Option<String>, BundleError> + 'a;

/// [`resolve_user`] over database readers (each called at most once, and `group` only when
/// it is needed).
pub(crate) fn resolve_user_with(
    spec: &str,
    passwd: &mut DbReader<'_>,
    group: &mut DbReader<'_>,
) -> Result<ResolvedUser, BundleError> {
    let mut parts = spec.split(':');
    let user_arg = parts.next().unwrap_or_default();
    let group_arg = parts.next().unwrap_or_default();
    let uid_arg = parse_id(spec, user_arg)?;
    let gid_arg = parse_id(spec, group_arg)?;

    let mut out = ResolvedUser::default();
    let passwd = passwd()?.unwrap_or_default();
    let found = passwd_entries(&passwd).find(|e| match (user_arg, uid_arg) {
        ("", _) => e.uid == 0,
        (_, Some(uid)) => e.uid == uid,
        (name, None) => e.name == name,
    });
    let matched_name = match (found, uid_arg) {
        (Some(entry), _) => {
            out.uid = entry.uid;
            out.gid = entry.gid;
            Some(entry.name)
        }
        (None, Some(uid)) => {
            out.uid = uid;
            None
        }
        (None, None) if user_arg.is_empty() => None,
        (None, None) => {
            return Err(BundleError::UnknownUser {
                user: user_arg.to_owned(),
            })
        }
    };

    if group_arg.is_empty() && matched_name.is_none() {
        return Ok(out);
    }
    let group = group()?.unwrap_or_default();
    if group_arg.is_empty() {
        if let Some(name) = matched_name {
            out.additional_gids = group_entries(&group)
                .filter(|g| g.members.split(',').any(|m| m == name))
                .map(|g| g.gid)
                .collect();
        }
        return Ok(out);
    }
    let found = group_entries(&group).find(|g| match gid_arg {
        Some(gid) => g.gid == gid,
        None => g.name == group_arg,
    });
    out.gid = match (found, gid_arg) {
        (Some(entry), _) => entry.gid,
        (None, Some(gid)) => gid,
        (None, None) => {
            return Err(BundleError::UnknownGroup {
                group: group_arg.to_owned(),
            })
        }
    };
    Ok(out)
}

/// `Some(id)` for a decimal id (in range), `None` for a name or an empty part.
fn parse_id(spec: &str, part: &str) -> Result<Option<u32>, BundleError> {
    if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    match part.parse::<u32>() {
        Ok(id) if id <= MAX_ID => Ok(Some(id)),
        _ => Err(BundleError::IdOutOfRange {
            spec: spec.to_owned(),
            id: part.to_owned(),
        }),
    }
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: &'a str,
}

/// The lines of a passwd or group file worth reading, split into fields: blank lines,
/// comments and NIS `+`/`-` lines skipped.
fn records(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with(['#', '+', '-']))
        .map(|l| l.split(':').collect())
}

/// `name:password:uid:gid:gecos:home:shell` entries with valid ids.
fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    records(text).filter_map(|f| {
        Some(PasswdEntry {
            name: f.first()?,
            uid: f.get(2)?.parse().ok()?,
            gid: f.get(3)?.parse().ok()?,
        })
    })
}

/// `name:password:gid:member,member` entries with valid ids.
fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    records(text).filter_map(|f| {
        Some(GroupEntry {
            name: f.first()?,
            gid: f.get(2)?.parse().ok()?,
            members: f.get(3).copied().unwrap_or_default(),
        })
    })
}

/// Reads `path` (absolute in the image) through `rootfs`: `None` when it does not exist.
/// Symlinks are followed inside the root; the final file must be a regular file, checked
/// before it is opened and again on the opened file.
fn read_db(rootfs: &Root, path: &'static str) -> Result<Option<String>, BundleError> {
    let fail = |reason: String| BundleError::UserDatabase { path, reason };
    let mut current = PathBuf::from(path);
    for _ in 0..=MAX_SYMLINK_HOPS {
        let meta = match rootfs.symlink_metadata(&current) {
            Ok(meta) => meta,
            Err(e) if is_missing(&e) => return Ok(None),
            Err(e) => return Err(fail(e.to_string())),
        };
        if meta.file_type().is_symlink() {
            let target = rootfs
                .read_link(&current)
                .map_err(|e| fail(e.to_string()))?;
            current = if target.is_absolute() {
                target
            } else {
                current.parent().unwrap_or(Path::new("/")).join(target)
            };
            continue;
        }
        if !meta.is_file() {
            return Err(fail("not a regular file".to_owned()));
        }
        let file = rootfs
            .open_file(&current)
            .map_err(|e| fail(e.to_string()))?;
        let opened = file.metadata().map_err(|e| fail(e.to_string()))?;
        if !opened.is_file() || opened.dev() != meta.dev() || opened.ino() != meta.ino() {
            return Err(fail("changed while it was being opened".to_owned()));
        }
        let mut buf = Vec::new();
        file.take(MAX_DB_BYTES + 1)
            .read_to_end(&mut buf)
            .map_err(|e| fail(e.to_string()))?;
        if buf.len() as u64 > MAX_DB_BYTES {
            return Err(fail(format!("larger than {MAX_DB_BYTES} bytes")));
        }
        return Ok(Some(String::from_utf8_lossy(&buf).into_owned()));
    }
    Err(fail(format!("more than {MAX_SYMLINK_HOPS} symlinks")))
}

/// A missing file, or a non-directory on the way to it.
fn is_missing(e: &FsError) -> bool {
    e.io_kind() == Some(std::io::ErrorKind::NotFound) || e.raw_os_error() == Some(libc::ENOTDIR)
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    const PASSWD_TEXT: &str = "\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
# a comment
bad:x:notanumber:0::/:/bin/sh
www-data:x:33:33:www-data:/var/www:/bin/false
1234:x:4321:4321::/:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
";
    const GROUP_TEXT: &str = "\
root:x:0:
daemon:x:1:
www-data:x:33:
staff:x:50:daemon,www-data
web:x:51:www-data
nogroup:x:65534:
";

    fn resolve(spec: &str) -> Result<ResolvedUser, BundleError> {
        resolve_user_with(spec, &mut || Ok(Some(PASSWD_TEXT.to_owned())), &mut || {
            Ok(Some(GROUP_TEXT.to_owned()))
        })
    }

    fn user(uid: u32, gid: u32, additional_gids: &[u32]) -> ResolvedUser {
        ResolvedUser {
            uid,
            gid,
            additional_gids: additional_gids.to_vec(),
        }
    }

    #[test]
    fn user_specs_resolve_as_docker_does() -> TestResult {
        let cases: &[(&str, ResolvedUser)] = &[
            ("", user(0, 0, &[])),
            ("root", user(0, 0, &[])),
            ("0", user(0, 0, &[])),
            // A name: its primary gid and the groups listing it.
            ("daemon", user(1, 1, &[50])),
            ("www-data", user(33, 33, &[50, 51])),
            // A uid in /etc/passwd is that user, supplementary groups included.
            ("33", user(33, 33, &[50, 51])),
            // A uid not in /etc/passwd is taken as is, with gid 0.
            ("1000", user(1000, 0, &[])),
            // A numeric value is always a uid, never the user named "1234".
            ("1234", user(1234, 0, &[])),
            // user:group, uid:gid and mixtures; an explicit group drops supplementary groups.
            ("www-data:staff", user(33, 50, &[])),
            ("www-data:7", user(33, 7, &[])),
            ("33:staff", user(33, 50, &[])),
            ("1000:1000", user(1000, 1000, &[])),
            ("1000:nogroup", user(1000, 65534, &[])),
            // An empty group part is no group.
            ("daemon:", user(1, 1, &[50])),
        ];
        for (spec, want) in cases {
            assert_eq!(&resolve(spec)?, want, "USER {spec:?}");
        }
        Ok(())
    }

    #[test]
    fn unknown_names_and_bad_ids_are_errors_naming_them() {
        let err = resolve("ghost").err();
        assert!(
            matches!(&err, Some(BundleError::UnknownUser { user }) if user == "ghost"),
            "{err:?}"
        );
        assert!(err.is_some_and(|e| e.to_string().contains("ghost")));
        let err = resolve("daemon:ghosts").err();
        assert!(
            matches!(&err, Some(BundleError::UnknownGroup { group }) if group == "ghosts"),
            "{err:?}"
        );
        // A malformed line never matches (it is not read as uid 0).
        assert!(matches!(
            resolve("bad"),
            Err(BundleError::UnknownUser { .. })
        ));
        for spec in ["2147483648", "0:4294967296", "99999999999999999999"] {
            assert!(
                matches!(resolve(spec), Err(BundleError::IdOutOfRange { .. })),
                "{spec}"
            );
        }
    }

    #[test]
    fn missing_files_know_no_names_but_ids_work() -> TestResult {
        let none = |spec: &str| resolve_user_with(spec, &mut || Ok(None), &mut || Ok(None));
        assert_eq!(none("")?, user(0, 0, &[]));
        assert_eq!(none("5:6")?, user(5, 6, &[]));
        assert!(matches!(none("root"), Err(BundleError::UnknownUser { .. })));
        assert!(matches!(
            none("0:root"),
            Err(BundleError::UnknownGroup { .. })
        ));
        Ok(())
    }

    #[test]
    fn group_file_is_read_only_when_needed() -> TestResult {
        let mut group = || -> Result<Option<String>, BundleError> {
            Err(BundleError::UserDatabase {
                path: GROUP,
                reason: "must not be read".into(),
            })
        };
        let got = resolve_user_with("1000", &mut || Ok(None), &mut group)?;
        assert_eq!(got, user(1000, 0, &[]));
        Ok(())
    }

    fn rootfs_with(passwd: &str) -> Result<(tempfile::TempDir, Root), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let root = Root::open(tmp.path())?;
        root.mkdir_all("etc", 0o755, None)?;
        root.mkdir_all("real", 0o755, None)?;
        root.write_file_from("real/passwd", &mut passwd.as_bytes(), 0o644)?;
        root.write_file_from("etc/group", &mut GROUP_TEXT.as_bytes(), 0o644)?;
        Ok((tmp, root))
    }

    #[test]
    fn files_are_read_through_the_root_following_symlinks_inside_it() -> TestResult {
        let (_tmp, root) = rootfs_with(PASSWD_TEXT)?;
        // An absolute link that on the host would name the host's /etc/passwd… or /real/passwd.
        root.symlink("/real/passwd", "etc/passwd")?;
        assert_eq!(resolve_user(&root, "www-data")?, user(33, 33, &[50, 51]));
        // A relative chain with `..` clamped at the root.
        root.remove_all("etc/passwd")?;
        root.symlink("../../../../real/passwd", "etc/passwd")?;
        assert_eq!(resolve_user(&root, "daemon:staff")?, user(1, 50, &[]));
        // No /etc/passwd: names are unknown, even the host's root.
        root.remove_all("etc/passwd")?;
        assert!(matches!(
            resolve_user(&root, "root"),
            Err(BundleError::UnknownUser { .. })
        ));
        assert_eq!(resolve_user(&root, "0")?, user(0, 0, &[]));
        Ok(())
    }

    #[test]
    fn a_fifo_loop_or_huge_file_is_refused_without_blocking() -> TestResult {
        let (_tmp, root) = rootfs_with(PASSWD_TEXT)?;
        root.mknod("etc/passwd", rbuild_fsutil::NodeKind::Fifo, 0o644, 0, 0)?;
        let err = resolve_user(&root, "daemon").err();
        assert!(
            err.as_ref()
                .is_some_and(|e| e.to_string().contains("not a regular file")),
            "{err:?}"
        );
        root.remove_all("etc/passwd")?;
        root.symlink("passwd", "etc/passwd")?;
        assert!(matches!(
            resolve_user(&root, "daemon"),
            Err(BundleError::UserDatabase { .. })
        ));
        root.remove_all("etc/passwd")?;
        let big = vec![b'#'; MAX_DB_BYTES as usize + 1];
        root.write_file_from("etc/passwd", &mut big.as_slice(), 0o644)?;
        let err = resolve_user(&root, "daemon").err();
        assert!(
            err.as_ref()
                .is_some_and(|e| e.to_string().contains("larger")),
            "{err:?}"
        );
        Ok(())
    }
}
