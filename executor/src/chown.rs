//! `--chown=user[:group]`: resolving names and ids to a numeric owner, as BuildKit does
//! against the *destination* root filesystem's `/etc/passwd` and `/etc/group`.
//!
//! * A numeric user is taken as is; without a group its gid is the same number (whatever
//!   `/etc/passwd` says about that uid).
//! * A user name must be in `/etc/passwd`; without a group its primary gid is used.
//! * A group (name or number) sets the gid; a name must be in `/etc/group`.
//!
//! The files are read through the [`Root`] (so a symlinked `/etc/passwd` resolves inside the
//! root filesystem, never on the host) and only up to [`MAX_DB_BYTES`].

use std::io::Read;

use rbuild_fsutil::Root;

use crate::error::{ExecError, Side};
use crate::paths::{lstat, open_regular, resolve_in_root, Rel};

/// The most of `/etc/passwd` or `/etc/group` that is read.
pub const MAX_DB_BYTES: u64 = 8 << 20;

/// Resolves `spec` (`user`, `user:group`, names or ids) to `(uid, gid)` in `rootfs`.
pub fn resolve_chown(spec: &str, rootfs: &Root) -> Result<(u32, u32), ExecError> {
    let invalid = |reason: &str| ExecError::InvalidChown {
        spec: spec.to_string(),
        reason: reason.to_string(),
    };
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user.is_empty() {
        return Err(invalid("the user part is empty"));
    }
    if group == Some("") {
        return Err(invalid("the group part after ':' is empty"));
    }
    let (uid, primary_gid) = match parse_id(user) {
        Some(Ok(uid)) => (uid, uid),
        Some(Err(())) => return Err(invalid("the uid is out of range")),
        None => lookup_user(rootfs, user)?,
    };
    let gid = match group {
        None => primary_gid,
        Some(g) => match parse_id(g) {
            Some(Ok(gid)) => gid,
            Some(Err(())) => return Err(invalid("the gid is out of range")),
            None => lookup_group(rootfs, g)?,
        },
    };
    Ok((uid, gid))
}

/// The identity a process runs as: `USER`/`-u` resolved as runc does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessUser {
    /// The user id.
    pub uid: u32,
    /// The primary group id.
    pub gid: u32,
    /// Supplementary groups: the primary gid, plus, when no group was given, every group of
    /// `/etc/group` that lists the user's name.
    pub groups: Vec<u32>,
    /// The user's home directory from `/etc/passwd` (`/` when unknown): the default `HOME`.
    pub home: String,
}

/// Resolves a `USER` value (`""`, `user`, `uid`, `user:group`, …) against `rootfs`'s
/// `/etc/passwd` and `/etc/group` the way runc does for a container's process: a name must
/// exist; a uid not in `/etc/passwd` runs with gid 0; an empty value is root.
pub fn resolve_user(spec: &str, rootfs: &Root) -> Result<ProcessUser, ExecError> {
    let invalid = |reason: &str| ExecError::InvalidChown {
        spec: spec.to_string(),
        reason: reason.to_string(),
    };
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user = if user.is_empty() { "0" } else { user };
    let passwd = read_db(rootfs, "/etc/passwd").map_err(|r| ExecError::UnknownUser {
        name: user.to_string(),
        reason: Some(r),
    })?;
    let entries: Vec<Vec<&str>> = passwd
        .as_deref()
        .unwrap_or("")
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(':').collect::<Vec<&str>>())
        .filter(|f| f.len() >= 4)
        .collect();
    let numeric = parse_id(user);
    let found = entries.iter().find(|f| match numeric {
        Some(Ok(uid)) => parse_id(f[2].trim()) == Some(Ok(uid)),
        _ => f[0] == user,
    });
    let (uid, mut gid, name, home) = match (numeric, found) {
        (_, Some(f)) => {
            let uid = match parse_id(f[2].trim()) {
                Some(Ok(u)) => u,
                _ => return Err(invalid("its /etc/passwd entry has no valid uid")),
            };
            let gid = match parse_id(f[3].trim()) {
                Some(Ok(g)) => g,
                _ => 0,
            };
            let home = f
                .get(5)
                .filter(|h| !h.is_empty())
                .unwrap_or(&"/")
                .to_string();
            (uid, gid, Some(f[0]), home)
        }
        (Some(Ok(uid)), None) => (uid, 0, None, "/".to_string()),
        (Some(Err(())), None) => return Err(invalid("the uid is out of range")),
        (None, None) => {
            return Err(ExecError::UnknownUser {
                name: user.to_string(),
                reason: None,
            })
        }
    };
    if let Some(g) = group {
        if g.is_empty() {
            return Err(invalid("the group part after ':' is empty"));
        }
        gid = match parse_id(g) {
            Some(Ok(gid)) => gid,
            Some(Err(())) => return Err(invalid("the gid is out of range")),
            None => lookup_group(rootfs, g)?,
        };
    }
    let mut groups = vec![gid];
    if let (None, Some(name)) = (group, name) {
        let db = read_db(rootfs, "/etc/group")
            .unwrap_or(None)
            .unwrap_or_default();
        for line in db.lines() {
            let f: Vec<&str> = line.trim_end_matches('\r').split(':').collect();
            if f.len() < 4 || line.starts_with('#') {
                continue;
            }
            if f[3].split(',').any(|m| m.trim() == name) {
                if let Some(Ok(g)) = parse_id(f[2].trim()) {
                    if !groups.contains(&g) {
                        groups.push(g);
                    }
                }
            }
        }
    }
    Ok(ProcessUser {
        uid,
        gid,
        groups,
        home,
    })
}

/// `Some(Ok(n))` for a decimal id, `Some(Err)` for digits out of range, `None` for a name.
fn parse_id(s: &str) -> Option<Result<u32, ()>> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse::<u32>().map_err(|_| ()))
}

/// Reads a bounded `/etc/…` file from the root; `Ok(None)` when it does not exist. Symlinks
/// are resolved inside the root; anything but a regular file (a FIFO planted by a hostile
/// image, say) is refused rather than opened in a way that could block.
fn read_db(rootfs: &Root, path: &str) -> Result<Option<String>, String> {
    let resolved = resolve_in_root(rootfs, Side::Dest, &Rel::clamped(path), &mut |_, _| {
        Ok(true)
    })
    .map_err(|e| e.to_string())?;
    match lstat(rootfs, Side::Dest, &resolved).map_err(|e| e.to_string())? {
        None => return Ok(None),
        Some(md) if !md.is_file() => return Err(format!("{path} is not a regular file")),
        Some(_) => {}
    }
    let (file, _) = open_regular(rootfs, Side::Dest, &resolved).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    file.take(MAX_DB_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("reading {path}: {e}"))?;
    if buf.len() as u64 > MAX_DB_BYTES {
        return Err(format!("{path} is larger than {MAX_DB_BYTES} bytes"));
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// Finds `name` in `/etc/passwd`: `(uid, primary gid)`.
fn lookup_user(rootfs: &Root, name: &str) -> Result<(u32, u32), ExecError> {
    let unknown = |reason: Option<String>| ExecError::UnknownUser {
        name: name.to_string(),
        reason,
    };
    let db = read_db(rootfs, "/etc/passwd")
        .map_err(|r| unknown(Some(r)))?
        .ok_or_else(|| unknown(Some("the file does not exist".into())))?;
    find_entry(&db, name, 2, 3)
        .ok_or_else(|| unknown(None))
        .map(|(id, gid)| (id, gid.unwrap_or(id)))
}

/// Finds `name` in `/etc/group`: its gid.
fn lookup_group(rootfs: &Root, name: &str) -> Result<u32, ExecError> {
    let unknown = |reason: Option<String>| ExecError::UnknownGroup {
        name: name.to_string(),
        reason,
    };
    let db = read_db(rootfs, "/etc/group")
        .map_err(|r| unknown(Some(r)))?
        .ok_or_else(|| unknown(Some("the file does not exist".into())))?;
    find_entry(&db, name, 2, usize::MAX)
        .map(|(gid, _)| gid)
        .ok_or_else(|| unknown(None))
}

/// The first well-formed line whose first field is `name`: its numeric field `id_field` and,
/// when `extra_field` exists and is numeric, that one too.
fn find_entry(
    db: &str,
    name: &str,
    id_field: usize,
    extra_field: usize,
) -> Option<(u32, Option<u32>)> {
    for line in db.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(':').collect();
        if fields.first() != Some(&name) {
            continue;
        }
        let Some(Ok(id)) = fields.get(id_field).and_then(|f| parse_id(f.trim())) else {
            continue;
        };
        let extra = fields
            .get(extra_field)
            .and_then(|f| parse_id(f.trim()))
            .and_then(Result::ok);
        return Some((id, extra));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn rootfs() -> Result<(tempfile::TempDir, Root), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let root = Root::open(tmp.path())?;
        root.mkdir_all("etc", 0o755, None)?;
        root.write_file_from(
            "etc/passwd",
            &mut &b"root:x:0:0:root:/root:/bin/sh\n# comment\nbroken\ndaemon:x:1:1::/:/bin/false\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\napp:x:1000:2000::/home/app:/bin/sh\n"[..],
            0o644,
        )?;
        root.write_file_from(
            "etc/group",
            &mut &b"root:x:0:\nstaff:x:50:daemon\nnogroup:x:65534:\n"[..],
            0o644,
        )?;
        Ok((tmp, root))
    }

    #[test]
    fn chown_table() -> TestResult {
        let (_tmp, root) = rootfs()?;
        let cases: &[(&str, (u32, u32))] = &[
            ("0", (0, 0)),
            ("1234", (1234, 1234)),
            ("1234:5678", (1234, 5678)),
            ("1000", (1000, 1000)),
            ("app", (1000, 2000)),
            ("daemon", (1, 1)),
            ("nobody:nogroup", (65534, 65534)),
            ("app:staff", (1000, 50)),
            ("1234:staff", (1234, 50)),
            ("app:7", (1000, 7)),
            ("root", (0, 0)),
        ];
        for (spec, want) in cases {
            assert_eq!(resolve_chown(spec, &root)?, *want, "{spec:?}");
        }
        Ok(())
    }

    #[test]
    fn process_user_table() -> TestResult {
        let (_tmp, root) = rootfs()?;
        // (USER, uid, gid, groups, home)
        let cases: &[(&str, u32, u32, &[u32], &str)] = &[
            ("", 0, 0, &[0], "/root"),
            ("root", 0, 0, &[0], "/root"),
            ("daemon", 1, 1, &[1, 50], "/"),
            ("1", 1, 1, &[1, 50], "/"),
            ("app", 1000, 2000, &[2000], "/home/app"),
            ("app:staff", 1000, 50, &[50], "/home/app"),
            ("4321", 4321, 0, &[0], "/"),
            ("4321:77", 4321, 77, &[77], "/"),
        ];
        for (spec, uid, gid, groups, home) in cases {
            let u = resolve_user(spec, &root)?;
            assert_eq!(
                (u.uid, u.gid, u.groups.as_slice(), u.home.as_str()),
                (*uid, *gid, *groups, *home),
                "{spec:?}"
            );
        }
        assert!(resolve_user("ghost", &root).is_err());
        assert!(resolve_user("app:ghosts", &root).is_err());
        Ok(())
    }

    #[test]
    fn chown_errors() -> TestResult {
        let (_tmp, root) = rootfs()?;
        let cases: &[(&str, &str)] = &[
            ("ghost", "unable to find user \"ghost\""),
            ("app:ghosts", "unable to find group \"ghosts\""),
            ("", "user part is empty"),
            (":50", "user part is empty"),
            ("app:", "group part"),
            ("99999999999", "out of range"),
            ("broken", "unable to find user"),
        ];
        for (spec, want) in cases {
            let err = resolve_chown(spec, &root)
                .err()
                .ok_or_else(|| format!("{spec:?} should fail"))?;
            assert!(err.to_string().contains(want), "{spec:?}: {err}");
        }
        Ok(())
    }

    #[test]
    fn passwd_symlink_resolves_inside_the_root() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let root = Root::open(tmp.path())?;
        root.mkdir_all("etc", 0o755, None)?;
        root.mkdir_all("real", 0o755, None)?;
        root.write_file_from(
            "real/passwd",
            &mut &b"inroot:x:77:88::/:/bin/sh\n"[..],
            0o644,
        )?;
        // An absolute link that on the host would name the host's passwd.
        root.symlink("/real/passwd", "etc/passwd")?;
        assert_eq!(resolve_chown("inroot", &root)?, (77, 88));
        // A root without /etc/passwd knows no names (the host's root user is not used).
        let empty = tempfile::tempdir()?;
        let empty_root = Root::open(empty.path())?;
        assert!(resolve_chown("root", &empty_root).is_err());
        assert_eq!(resolve_chown("0:0", &empty_root)?, (0, 0));
        Ok(())
    }

    #[test]
    fn a_fifo_as_passwd_is_refused_without_blocking() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let root = Root::open(tmp.path())?;
        root.mkdir_all("etc", 0o755, None)?;
        root.mknod("etc/passwd", rbuild_fsutil::NodeKind::Fifo, 0o644, 0, 0)?;
        let err = resolve_chown("someone", &root)
            .err()
            .ok_or("expected an error")?;
        assert!(err.to_string().contains("not a regular file"), "{err}");
        Ok(())
    }
}
