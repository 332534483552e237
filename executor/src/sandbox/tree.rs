//! The sandbox's filesystem tree, assembled by the parent before the child exists: `/dev`
//! (a `nodev` tmpfs with the standard device nodes bound in, a private devpts and `/dev/shm`),
//! `/sys` (a read-only bind of the host's sysfs alone when the network namespace is shared), and
//! every requested [`Mount`] (all `nodev`) — all attached with `move_mount` onto `O_PATH` fds
//! of their targets inside the detached root mount. Targets are resolved beneath the root fd
//! (`openat2` with `RESOLVE_IN_ROOT`), so a symlinked `/dev` or mount target in an image lands
//! inside the root, never on the host (SECURITY-CLASSES 3, 4). Nothing is ever mounted on a
//! host path.
//!
//! Targets that did not exist are created as stubs; the ones created in the root filesystem
//! itself are reported back so that they can be removed from the layer afterwards.

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rbuild_fsutil::{NodeKind, Root};
use rustix::fs::{openat, Mode, OFlags};
use rustix::mount::{
    fsconfig_create, fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen, move_mount,
    open_tree, FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, OpenTreeFlags,
};

use super::{sys, SandboxError};

/// One mount in the sandbox.
#[derive(Debug)]
pub struct Mount {
    /// Absolute path inside the sandbox.
    pub target: String,
    pub source: MountSource,
    pub readonly: bool,
}

/// What is mounted.
#[derive(Debug)]
pub enum MountSource {
    /// A host file or directory, already opened (`O_PATH`, resolved beneath whatever root it
    /// belongs to); bound with everything mounted below it.
    Bind(OwnedFd),
    /// A detached mount (e.g. an overlay), attached as a whole.
    Tree(OwnedFd),
    /// A new tmpfs (`size` in bytes, permission bits of its root).
    Tmpfs { size: Option<u64>, mode: u32 },
    /// A file with these contents, kept in a private tmpfs (secrets, `/etc/hosts`): never on
    /// disk, never in the root filesystem.
    File {
        contents: Vec<u8>,
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

impl MountSource {
    fn is_file(&self) -> Result<bool, SandboxError> {
        Ok(match self {
            MountSource::Bind(fd) => {
                let st = rustix::fs::fstat(fd)
                    .map_err(|e| SandboxError::sys("stat a bind source", e))?;
                !rustix::fs::FileType::from_raw_mode(st.st_mode).is_dir()
            }
            MountSource::File { .. } => true,
            MountSource::Tree(_) | MountSource::Tmpfs { .. } => false,
        })
    }
}

/// `/sys` directories hidden behind an empty read-only tmpfs (Docker's masked paths: firmware
/// tables, and power counters that leak what other tenants compute).
pub(crate) const MASKED_SYS: &[&std::ffi::CStr] = &[c"firmware", c"devices/virtual/powercap"];

/// What assembling the tree added to the root filesystem: mount points that did not exist
/// (to remove from the step's layer afterwards) and the existing directories they were made
/// in (which overlayfs copied up, and which go back to the lower layer's copy when nothing
/// but the stub changed them).
#[derive(Debug, Clone, Default)]
pub struct Stubs {
    /// Created paths (relative to the root, symlinks resolved), in creation order.
    pub created: Vec<PathBuf>,
    /// `(path, mode, uid, gid)` of each existing directory a stub was created in.
    pub parents: Vec<(PathBuf, u32, u32, u32)>,
}

/// The tree's parts the child still needs.
pub(crate) struct Assembled {
    /// `/proc` (the child mounts a procfs of its PID namespace there).
    pub proc_target: OwnedFd,
    /// `/sys` when the child mounts a sysfs of its network namespace there.
    pub sys_target: Option<OwnedFd>,
    /// The tree's `/dev/null`.
    pub dev_null: OwnedFd,
    /// Mount targets created in the root filesystem.
    pub stubs: Stubs,
    /// Mounts that must live as long as the sandbox runs (keeps nothing alive by itself, but
    /// the fds of detached mounts must not be closed before they are attached).
    _keep: Vec<OwnedFd>,
}

fn fail(what: &str) -> impl Fn(rustix::io::Errno) -> SandboxError + '_ {
    move |e| SandboxError::sys(what, e)
}

/// Mounts `/dev`, `/sys` and `mounts` into the detached tree `root`.
pub(crate) fn assemble(
    root: &Root,
    mut mounts: Vec<Mount>,
    new_network: bool,
) -> Result<Assembled, SandboxError> {
    let root_mnt = mount_id(root.as_fd(), c"")?;
    let mut stubs = Stubs::default();
    let mut keep = Vec::new();

    let dev_target = dir_target(root, "/dev", root_mnt, &mut stubs)?;
    let dev = dev_tree()?;
    let dev_null = openat(
        &dev,
        c"null",
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(fail("opening /dev/null of the sandbox"))?;
    mount_on(&dev, dev_target.as_fd()).map_err(fail("mounting /dev"))?;

    let proc_target = dir_target(root, "/proc", root_mnt, &mut stubs)?;
    let sys_dir = dir_target(root, "/sys", root_mnt, &mut stubs)?;
    let sys_target = if new_network {
        Some(sys_dir)
    } else {
        // The host's network namespace: its sysfs, read-only, without the mounts below it
        // (the host's cgroup hierarchies list host processes; debugfs, tracefs, bpf).
        let sys = open_tree(
            rustix::fs::CWD,
            c"/sys",
            OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
        )
        .map_err(fail("cloning /sys"))?;
        sys::mount_setattr(
            sys.as_fd(),
            c"",
            true,
            true,
            sys::MOUNT_ATTR_RDONLY
                | sys::MOUNT_ATTR_NOSUID
                | sys::MOUNT_ATTR_NODEV
                | sys::MOUNT_ATTR_NOEXEC,
        )
        .map_err(fail("making /sys read-only"))?;
        mount_on(&sys, sys_dir.as_fd()).map_err(fail("mounting /sys"))?;
        for hidden in MASKED_SYS {
            let Ok(t) = openat(
                &sys,
                *hidden,
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) else {
                continue;
            };
            let empty = new_fs("tmpfs", &[], MountAttrFlags::MOUNT_ATTR_RDONLY)?;
            mount_on(&empty, t.as_fd()).map_err(fail("masking a /sys directory"))?;
        }
        None
    };

    // Parents before children (Docker sorts mounts by depth); equal depths keep their order.
    mounts.sort_by_key(|m| depth(&m.target));
    let files = FileStore::new(&mounts)?;
    for (i, m) in mounts.into_iter().enumerate() {
        let what = format!("mounting {}", m.target);
        let target = if m.source.is_file()? {
            file_target(root, &m.target, root_mnt, &mut stubs)?
        } else {
            dir_target(root, &m.target, root_mnt, &mut stubs)?
        };
        let mnt = match m.source {
            MountSource::Bind(fd) => open_tree(
                &fd,
                c"",
                OpenTreeFlags::OPEN_TREE_CLONE
                    | OpenTreeFlags::OPEN_TREE_CLOEXEC
                    | OpenTreeFlags::AT_EMPTY_PATH
                    | OpenTreeFlags::AT_RECURSIVE,
            )
            .map_err(fail(&what))?,
            MountSource::Tree(fd) => fd,
            MountSource::Tmpfs { size, mode } => {
                let mut opts = vec![("mode", format!("{:o}", mode & 0o7777))];
                if let Some(size) = size {
                    opts.push(("size", size.to_string()));
                }
                new_fs(
                    "tmpfs",
                    &opts,
                    MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV,
                )?
            }
            MountSource::File { mode, .. } => {
                let f = files.clone_file(i)?;
                // Executable only when its mode says so (a here-document script is).
                if mode & 0o111 == 0 {
                    sys::mount_setattr(f.as_fd(), c"", true, false, sys::MOUNT_ATTR_NOEXEC)
                        .map_err(fail(&what))?;
                }
                f
            }
        };
        // No mount opens device nodes: in a writable host directory (a cache mount) a node
        // made with CAP_MKNOD would reach any host device.
        let mut attrs = sys::MOUNT_ATTR_NODEV;
        if m.readonly {
            attrs |= sys::MOUNT_ATTR_RDONLY;
        }
        sys::mount_setattr(mnt.as_fd(), c"", true, true, attrs).map_err(fail(&what))?;
        mount_on(&mnt, target.as_fd()).map_err(fail(&what))?;
        keep.push(mnt);
    }
    Ok(Assembled {
        proc_target,
        sys_target,
        dev_null,
        stubs,
        _keep: keep,
    })
}

/// The contents of [`MountSource::File`] mounts, in one small private tmpfs.
struct FileStore {
    mount: Option<OwnedFd>,
}

impl FileStore {
    fn new(mounts: &[Mount]) -> Result<FileStore, SandboxError> {
        let total: u64 = mounts
            .iter()
            .filter_map(|m| match &m.source {
                MountSource::File { contents, .. } => Some(contents.len() as u64 + 4096),
                _ => None,
            })
            .sum();
        if total == 0 {
            return Ok(FileStore { mount: None });
        }
        let mnt = new_fs(
            "tmpfs",
            &[
                ("mode", "700".into()),
                ("size", (total + 65536).to_string()),
            ],
            MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV,
        )?;
        let dir = Root::from_fd(mnt.try_clone().map_err(|e| SandboxError::Io {
            what: "dup".into(),
            source: e,
        })?)
        .map_err(|e| SandboxError::Fs {
            what: "opening the files tmpfs".into(),
            source: e,
        })?;
        for (i, m) in mounts.iter().enumerate() {
            if let MountSource::File {
                contents,
                mode,
                uid,
                gid,
            } = &m.source
            {
                let name = format!("f{i}");
                let io = |e: std::io::Error| SandboxError::Io {
                    what: format!("writing the file for {}", m.target),
                    source: e,
                };
                let fs = |e| SandboxError::Fs {
                    what: format!("writing the file for {}", m.target),
                    source: e,
                };
                let mut f = dir.create_file(&name, *mode).map_err(fs)?;
                f.write_all(contents).map_err(io)?;
                drop(f);
                dir.lchown(&name, *uid, *gid).map_err(fs)?;
                dir.chmod(&name, *mode).map_err(fs)?;
            }
        }
        Ok(FileStore { mount: Some(mnt) })
    }

    /// A bind mount of file `i`.
    fn clone_file(&self, i: usize) -> Result<OwnedFd, SandboxError> {
        let mnt = self
            .mount
            .as_ref()
            .ok_or(SandboxError::Internal("a file mount without its file"))?;
        open_tree(
            mnt,
            format!("f{i}"),
            OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
        )
        .map_err(fail("cloning a file mount"))
    }
}

/// `/dev`: a tmpfs with null, zero, full, random, urandom and tty, the standard links, a new
/// devpts instance on `pts` (with `ptmx` pointing into it) and a tmpfs on `shm`.
fn dev_tree() -> Result<OwnedFd, SandboxError> {
    // `nodev`: root in the sandbox keeps CAP_MKNOD (Docker's set), and without a device cgroup
    // a node it makes in a writable place without `nodev` would open any host device (a disk,
    // a console). The six standard nodes live in a second, never attached tmpfs without
    // `nodev`; each is bound alone onto an empty file in /dev.
    let dev = new_fs(
        "tmpfs",
        &[("mode", "755".into()), ("size", "65536k".into())],
        MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )?;
    let nodes = new_fs(
        "tmpfs",
        &[("mode", "700".into()), ("size", "64k".into())],
        MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )?;
    let dup = |fd: &OwnedFd| {
        fd.try_clone().map_err(|e| SandboxError::Io {
            what: "dup".into(),
            source: e,
        })
    };
    let fs = |e| SandboxError::Fs {
        what: "populating /dev".into(),
        source: e,
    };
    let root = Root::from_fd(dup(&dev)?).map_err(fs)?;
    let nodes_root = Root::from_fd(dup(&nodes)?).map_err(fs)?;
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        nodes_root
            .mknod(name, NodeKind::Char, 0o666, major, minor)
            .map_err(fs)?;
        nodes_root.chmod(name, 0o666).map_err(fs)?;
        drop(root.create_file(name, 0o666).map_err(fs)?);
        let node = open_tree(
            &nodes,
            name,
            OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
        )
        .map_err(fail("cloning a device node"))?;
        let t = root.open_path(name, true).map_err(fs)?;
        mount_on(&node, t.as_fd()).map_err(fail("mounting a device node"))?;
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
        ("ptmx", "pts/ptmx"),
    ] {
        root.symlink(target, name).map_err(fs)?;
    }
    for (name, mode) in [("pts", 0o755), ("shm", 0o1777), ("mqueue", 0o1777)] {
        root.mkdir_all(name, mode, None).map_err(fs)?;
    }
    let pts = {
        let f = fsopen("devpts", FsOpenFlags::FSOPEN_CLOEXEC).map_err(fail("fsopen devpts"))?;
        fsconfig_set_flag(&f, "newinstance").map_err(fail("devpts newinstance"))?;
        for (k, v) in [("ptmxmode", "0666"), ("mode", "0620"), ("gid", "5")] {
            fsconfig_set_string(&f, k, v).map_err(fail("devpts options"))?;
        }
        fsconfig_create(&f).map_err(fail("creating devpts"))?;
        fsmount(
            &f,
            FsMountFlags::FSMOUNT_CLOEXEC,
            MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NOEXEC,
        )
        .map_err(fail("fsmount devpts"))?
    };
    let shm = new_fs(
        "tmpfs",
        &[("mode", "1777".into()), ("size", "65536k".into())],
        MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )?;
    for (mnt, name) in [(&pts, c"pts"), (&shm, c"shm")] {
        let t = openat(
            &dev,
            name,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(fail("opening a /dev mount point"))?;
        mount_on(mnt, t.as_fd()).map_err(fail("mounting under /dev"))?;
    }
    Ok(dev)
}

/// A new filesystem instance with string options, as a detached mount.
fn new_fs(
    fstype: &str,
    opts: &[(&str, String)],
    attrs: MountAttrFlags,
) -> Result<OwnedFd, SandboxError> {
    let f = fsopen(fstype, FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(|e| SandboxError::sys(&format!("fsopen {fstype}"), e))?;
    for (k, v) in opts {
        fsconfig_set_string(&f, *k, v.as_str())
            .map_err(|e| SandboxError::sys(&format!("{fstype} option {k}={v}"), e))?;
    }
    fsconfig_create(&f).map_err(|e| SandboxError::sys(&format!("creating a {fstype}"), e))?;
    fsmount(&f, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
        .map_err(|e| SandboxError::sys(&format!("fsmount {fstype}"), e))
}

/// Attaches the detached mount `mnt` onto the `O_PATH` fd `target`.
fn mount_on(mnt: &OwnedFd, target: BorrowedFd<'_>) -> rustix::io::Result<()> {
    move_mount(
        mnt,
        c"",
        target,
        c"",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
}

/// The mount id of `dirfd`/`path`.
fn mount_id(dirfd: BorrowedFd<'_>, path: &std::ffi::CStr) -> Result<u64, SandboxError> {
    use rustix::fs::{statx, AtFlags, StatxFlags};
    let st = statx(
        dirfd,
        path,
        AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::MNT_ID,
    )
    .map_err(fail("statx"))?;
    Ok(st.stx_mnt_id)
}

fn depth(target: &str) -> usize {
    Path::new(target)
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count()
}

/// Keeps the created paths that are in the root filesystem itself (not in a mount on it).
fn record_stubs(
    root: &Root,
    created: Vec<PathBuf>,
    root_mnt: u64,
    stubs: &mut Stubs,
) -> Result<(), SandboxError> {
    if let Some(first) = created.first() {
        record_parent(root, first, root_mnt, stubs)?;
    }
    for p in created {
        let fd = root.open_path(&p, true).map_err(|e| SandboxError::Fs {
            what: format!("opening {}", p.display()),
            source: e,
        })?;
        if mount_id(fd.as_fd(), c"")? == root_mnt {
            stubs.created.push(p);
        }
    }
    Ok(())
}

/// Records the existing directory `created` was made in (unless it is the root).
fn record_parent(
    root: &Root,
    created: &Path,
    root_mnt: u64,
    stubs: &mut Stubs,
) -> Result<(), SandboxError> {
    use std::os::unix::fs::MetadataExt;
    let Some(parent) = created
        .parent()
        .filter(|p| !p.as_os_str().is_empty() && *p != Path::new("/"))
    else {
        return Ok(());
    };
    let fs = |e| SandboxError::Fs {
        what: format!("reading {}", parent.display()),
        source: e,
    };
    let fd = root.open_path(parent, true).map_err(fs)?;
    if mount_id(fd.as_fd(), c"")? != root_mnt || stubs.parents.iter().any(|(p, ..)| p == parent) {
        return Ok(());
    }
    let meta = root.symlink_metadata(parent).map_err(fs)?;
    stubs.parents.push((
        parent.to_path_buf(),
        meta.mode() & 0o7777,
        meta.uid(),
        meta.gid(),
    ));
    Ok(())
}

/// An `O_PATH` fd of the directory `target`, created (with parents) when missing.
fn dir_target(
    root: &Root,
    target: &str,
    root_mnt: u64,
    stubs: &mut Stubs,
) -> Result<OwnedFd, SandboxError> {
    let fs = |e| SandboxError::Fs {
        what: format!("creating the mount point {target}"),
        source: e,
    };
    let created = root.mkdir_all(target, 0o755, None).map_err(fs)?;
    record_stubs(root, created, root_mnt, stubs)?;
    root.open_path(target, false).map_err(fs)
}

/// An `O_PATH` fd of the file `target`, created empty (with parent directories) when missing.
fn file_target(
    root: &Root,
    target: &str,
    root_mnt: u64,
    stubs: &mut Stubs,
) -> Result<OwnedFd, SandboxError> {
    let fs = |e| SandboxError::Fs {
        what: format!("creating the mount point {target}"),
        source: e,
    };
    match root.open_path(target, false) {
        Ok(fd) => {
            let st = rustix::fs::fstat(&fd).map_err(fail("stat a mount point"))?;
            if rustix::fs::FileType::from_raw_mode(st.st_mode).is_dir() {
                return Err(SandboxError::MountTarget {
                    target: target.to_string(),
                    reason: "a file cannot be mounted on a directory",
                });
            }
            return Ok(fd);
        }
        Err(_) if root.exists(target).unwrap_or(false) => {
            return Err(SandboxError::MountTarget {
                target: target.to_string(),
                reason: "it is a symlink that points nowhere",
            })
        }
        Err(_) => {}
    }
    let parent = Path::new(target).parent().unwrap_or(Path::new("/"));
    let created = root.mkdir_all(parent, 0o755, None).map_err(fs)?;
    record_stubs(root, created, root_mnt, stubs)?;
    // The parent is resolved in-root; the file is made beneath that resolved directory.
    let (dir, name) = root.parent_and_name(target).map_err(fs)?;
    let dir_root = Root::from_fd(dir).map_err(fs)?;
    drop(dir_root.create_file(&name, 0o644).map_err(fs)?);
    let fd = dir_root.open_path(&name, true).map_err(fs)?;
    if mount_id(fd.as_fd(), c"")? == root_mnt {
        // The path as created: the resolved parent plus the name.
        let resolved_parent = resolved_path(root, parent)?;
        let stub = resolved_parent.join(&name);
        record_parent(root, &stub, root_mnt, stubs)?;
        stubs.created.push(stub);
    }
    Ok(fd)
}

/// The path of the existing directory `dir` in `root` with symlinks resolved, read back from
/// the kernel's view of its fd (relative to the root).
fn resolved_path(root: &Root, dir: &Path) -> Result<PathBuf, SandboxError> {
    let fs = |e| SandboxError::Fs {
        what: format!("resolving {}", dir.display()),
        source: e,
    };
    let fd = root.open_path(dir, false).map_err(fs)?;
    let root_link = std::fs::read_link(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&root.as_fd())
    ))
    .map_err(|e| SandboxError::Io {
        what: "reading the root's path".into(),
        source: e,
    })?;
    let link = std::fs::read_link(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&fd)
    ))
    .map_err(|e| SandboxError::Io {
        what: "reading a path".into(),
        source: e,
    })?;
    Ok(link
        .strip_prefix(&root_link)
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| PathBuf::new()))
}
