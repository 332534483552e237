//! Running from a binary no container can write (the defence against CVE-2019-5736,
//! SECURITY-CLASSES 2).
//!
//! A sandbox's first process is a clone of rbuild until it execs the command, and a process
//! that rbuild puts into a running container (`exec`) is rbuild until then too: while it is, a
//! container process can open `/proc/PID/exe` of it — the rbuild binary on the host — keep the
//! descriptor, and write the binary once no process runs it any more. So before a command that
//! starts sandboxes does anything, [`reexec_sealed`] re-executes rbuild from a view of its
//! binary that cannot be written, with the same arguments and environment:
//!
//! * first choice (what runc does since 1.2): the binary's directory as the lower layer of a
//!   read-only overlayfs that is never attached anywhere — `/proc/self/exe` then names a file
//!   on a read-only mount, so reopening it for writing fails with `EROFS` whatever the
//!   opener's privileges. It costs a mount and an exec (about a millisecond);
//! * where that overlay cannot be made: a `memfd_create(MFD_CLOEXEC | MFD_ALLOW_SEALING)` copy
//!   (streamed with `copy_file_range`, or `sendfile` across filesystems) sealed against every
//!   change (`F_SEAL_SEAL`, `F_SEAL_SHRINK`, `F_SEAL_GROW`, `F_SEAL_WRITE`). It costs the
//!   binary's size in memory and the time to copy it (tens of milliseconds).
//!
//! Whether the process already runs from such a binary is read from `/proc/self/exe` itself
//! (a read-only mount, or the seals and link count of a memfd), never from the environment.
//! The environment only carries the pid that re-executed itself, so that a view which somehow
//! is not protected after the re-exec is reported instead of re-executed forever.
//! Commands that never start a sandbox (`images`, `inspect`, `save`, `check`, …) skip all this.

#![allow(unsafe_code)]

use std::ffi::{CString, OsString};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use rustix::fs::{MemfdFlags, SealFlags};
use rustix::io::Errno;

/// The environment variable that holds the pid of the process that re-executed itself.
const MARKER: &str = "_RBUILD_SEALED_EXE_PID";

/// The seals that make the copy immutable.
fn required_seals() -> SealFlags {
    SealFlags::SEAL | SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE
}

/// Subcommands (and flags in their place) that never start a sandbox nor enter one: they run
/// from the binary as it is. Everything else — `build` (also when implied: `rbuild -t app .`),
/// `run`, `start`, `exec`, the supervisor (`__supervise`), and any command added later — runs
/// from a sealed copy. A command added here must never start a sandbox, enter one or spawn the
/// supervisor.
const NO_SANDBOX: &[&str] = &[
    "images",
    "tag",
    "rmi",
    "inspect",
    "history",
    "save",
    "load",
    "export-bundle",
    "ps",
    "stop",
    "rm",
    "logs",
    "commit",
    "volume",
    "check",
    "debug",
    "help",
    "-h",
    "--help",
    "-V",
    "--version",
];

/// Whether the command line `args` (with `argv[0]`) names a command that may start sandboxes.
fn starts_sandboxes(args: &[OsString]) -> bool {
    let mut i = 1;
    while let Some(arg) = args.get(i) {
        let arg = arg.as_bytes();
        if arg == b"--root" {
            i += 2;
        } else if arg.starts_with(b"--root=") {
            i += 1;
        } else {
            return !NO_SANDBOX.iter().any(|n| n.as_bytes() == arg);
        }
    }
    // No command at all: clap prints the usage.
    false
}

/// An `Errno` as an error with what failed.
fn errno(what: &'static str) -> impl FnOnce(Errno) -> anyhow::Error {
    move |e| anyhow::Error::new(std::io::Error::from(e)).context(what)
}

/// Whether `exe` (an open `/proc/self/exe`) cannot be written: it is on a read-only mount, or
/// it is a sealed in-memory copy.
fn is_protected(exe: &File) -> bool {
    let readonly_mount = rustix::fs::fstatvfs(exe)
        .map(|s| s.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY))
        .unwrap_or(false);
    readonly_mount || is_sealed_copy(exe)
}

/// Whether `exe` is a sealed in-memory copy: a file with no name anywhere (link count 0) that
/// carries every seal of [`required_seals`].
fn is_sealed_copy(exe: &File) -> bool {
    let unlinked = exe.metadata().map(|m| m.nlink() == 0).unwrap_or(false);
    let sealed = rustix::fs::fcntl_get_seals(exe)
        .map(|s| s.contains(required_seals()))
        .unwrap_or(false);
    unlinked && sealed
}

/// Makes sure a command that starts sandboxes runs from a sealed copy of the binary,
/// re-executing the process into one when it does not. Returns the exit code when the process
/// must end (the copy could not be made); on success it either returns `None` (already
/// sealed, or a command that needs no copy) or does not return at all (re-executed).
pub fn reexec_sealed() -> Option<ExitCode> {
    let args: Vec<OsString> = std::env::args_os().collect();
    let marker = std::env::var_os(MARKER);
    // Never handed on to anything rbuild starts.
    std::env::remove_var(MARKER);
    if !starts_sandboxes(&args) {
        return None;
    }
    match reexec(&args, marker) {
        Ok(()) => None,
        Err(e) => {
            eprintln!("error: cannot run from a sealed copy of the rbuild binary (its protection against containers, CVE-2019-5736): {e:#}");
            Some(ExitCode::FAILURE)
        }
    }
}

/// Returns `Ok` when already running sealed; otherwise makes the copy and execs it (returning
/// only on failure).
fn reexec(args: &[OsString], marker: Option<OsString>) -> anyhow::Result<()> {
    let exe = File::open("/proc/self/exe").context("opening /proc/self/exe")?;
    if is_protected(&exe) {
        return Ok(());
    }
    let me = std::process::id().to_string();
    if marker.as_deref() == Some(std::ffi::OsStr::new(&me)) {
        bail!("this process was re-executed from a sealed copy, but /proc/self/exe is not sealed");
    }
    let copy = match readonly_view() {
        Ok(view) => view,
        Err(_) => sealed_copy(&exe)?,
    };
    drop(exe);
    let argv = args
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .context("an argument holds a NUL byte")?;
    let mut envp = Vec::new();
    for (k, v) in std::env::vars_os() {
        let mut kv = k.as_bytes().to_vec();
        kv.push(b'=');
        kv.extend_from_slice(v.as_bytes());
        // Entries with a NUL byte cannot come from a real environment; leave them out.
        if let Ok(c) = CString::new(kv) {
            envp.push(c);
        }
    }
    envp.push(CString::new(format!("{MARKER}={me}")).context("the marker holds a NUL byte")?);
    let e = execveat_empty(&copy, &argv, &envp);
    Err(errno("executing the sealed copy")(e))
}

/// The running binary through a read-only overlayfs of its directory (plus an empty tmpfs:
/// an overlay without an upper dir needs two lower layers), mounted nowhere: an `O_PATH` fd
/// to execute.
fn readonly_view() -> anyhow::Result<OwnedFd> {
    use rustix::fs::{openat, Mode, OFlags};
    use rustix::mount::{
        fsconfig_create, fsconfig_set_string, fsmount, fsopen, FsMountFlags, FsOpenFlags,
        MountAttrFlags,
    };
    let path = std::fs::read_link("/proc/self/exe").context("reading /proc/self/exe")?;
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        bail!("/proc/self/exe is {}", path.display());
    };
    let dir_fd = rustix::fs::open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno("opening the binary's directory"))?;
    let tmp = fsopen("tmpfs", FsOpenFlags::FSOPEN_CLOEXEC).map_err(errno("fsopen tmpfs"))?;
    fsconfig_create(&tmp).map_err(errno("creating a tmpfs"))?;
    let empty = fsmount(
        &tmp,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_RDONLY,
    )
    .map_err(errno("fsmount tmpfs"))?;
    let ovl = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(errno("fsopen overlay"))?;
    for lower in [&dir_fd, &empty] {
        let p = format!("/proc/self/fd/{}", lower.as_raw_fd());
        fsconfig_set_string(&ovl, "lowerdir+", p.as_str()).map_err(errno("overlay lowerdir+"))?;
    }
    fsconfig_create(&ovl).map_err(errno("creating the overlay"))?;
    let mnt = fsmount(
        &ovl,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_RDONLY | MountAttrFlags::MOUNT_ATTR_NODEV,
    )
    .map_err(errno("fsmount overlay"))?;
    let exe = openat(
        &mnt,
        name,
        OFlags::PATH | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )
    .map_err(errno("opening the binary in the overlay"))?;
    Ok(exe)
}

/// A sealed memfd holding the contents of `src`, streamed in by the kernel.
fn sealed_copy(src: &File) -> anyhow::Result<OwnedFd> {
    let len = src.metadata().context("stat of the rbuild binary")?.len();
    let flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
    // MFD_EXEC says explicitly that the copy is to be executed (kernels with
    // vm.memfd_noexec); older kernels do not know the flag and refuse it with EINVAL.
    let memfd = match rustix::fs::memfd_create("rbuild", flags | MemfdFlags::EXEC) {
        Err(Errno::INVAL) => rustix::fs::memfd_create("rbuild", flags),
        other => other,
    }
    .map_err(errno("memfd_create"))?;
    copy_all(src, &memfd, len)?;
    rustix::fs::fcntl_add_seals(&memfd, required_seals()).map_err(errno("sealing the copy"))?;
    Ok(memfd)
}

/// Copies `len` bytes from the start of `src` to `dst` inside the kernel: `copy_file_range`,
/// or `sendfile` where that cannot cross the two filesystems.
fn copy_all(src: &File, dst: &OwnedFd, len: u64) -> anyhow::Result<()> {
    let mut done = 0u64;
    let mut use_sendfile = false;
    while done < len {
        let chunk = (len - done).min(1 << 30) as usize;
        let res = if use_sendfile {
            rustix::fs::sendfile(dst, src, None, chunk)
        } else {
            rustix::fs::copy_file_range(src, None, dst, None, chunk)
        };
        match res {
            Ok(0) => bail!("the rbuild binary ended after {done} of {len} bytes"),
            Ok(n) => done += n as u64,
            Err(Errno::INTR) | Err(Errno::AGAIN) => {}
            Err(Errno::XDEV | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP)
                if !use_sendfile && done == 0 =>
            {
                use_sendfile = true;
            }
            Err(e) => return Err(errno("copying the rbuild binary")(e)),
        }
    }
    Ok(())
}

/// `execveat(fd, "", argv, envp, AT_EMPTY_PATH)`; returns only on failure.
fn execveat_empty(fd: &OwnedFd, argv: &[CString], envp: &[CString]) -> Errno {
    let argv_ptrs: Vec<*const libc::c_char> = argv
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp_ptrs: Vec<*const libc::c_char> = envp
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    // SAFETY: the path is an empty NUL-terminated string; `argv_ptrs` and `envp_ptrs` are
    // NULL-terminated arrays of pointers to NUL-terminated strings (`argv`, `envp`) that live
    // across the call; `fd` is an open file. On success the call does not return.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            fd.as_fd().as_raw_fd(),
            c"".as_ptr(),
            argv_ptrs.as_ptr(),
            envp_ptrs.as_ptr(),
            libc::AT_EMPTY_PATH,
        );
    }
    Errno::from_raw_os_error(
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};

    fn args(a: &[&str]) -> Vec<OsString> {
        std::iter::once("rbuild")
            .chain(a.iter().copied())
            .map(OsString::from)
            .collect()
    }

    #[test]
    fn commands_that_start_sandboxes_are_sealed_and_others_are_not() {
        for a in [
            &["build", "."][..],
            &["-t", "app", "."],
            &["."],
            &["--root", "/s", "build", "."],
            &["--root=/s", "-t", "x", "."],
            &["run", "busybox"],
            &["exec", "c1", "sh"],
            &["start", "c1"],
            &["__supervise", "c1"],
            &["--root", "/s", "run", "-d", "busybox"],
        ] {
            assert!(starts_sandboxes(&args(a)), "{a:?}");
        }
        for a in [
            &[][..],
            &["images"],
            &["--root", "/s", "inspect", "x"],
            &["--root=/s", "save", "-o", "x", "y"],
            &["check", "Dockerfile"],
            &["--version"],
            &["-h"],
            &["debug", "parse", "Dockerfile"],
            &["--root", "build"],
            &["ps", "-a"],
            &["--root=/s", "logs", "c1"],
            &["rm", "-f", "c1"],
        ] {
            assert!(!starts_sandboxes(&args(a)), "{a:?}");
        }
    }

    #[test]
    fn the_copy_has_the_same_bytes_and_cannot_be_changed() {
        let dir = std::env::temp_dir().join(format!("rbuild-selfexe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bin");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let src = File::open(&path).unwrap();
        let copy = sealed_copy(&src).unwrap();
        let mut f = File::from(copy);
        assert!(!is_sealed_copy(&src), "a file on disk is not a sealed copy");
        assert!(is_sealed_copy(&f));
        let mut back = Vec::new();
        f.rewind().unwrap();
        f.read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
        // Every change is refused: writing, growing, shrinking, removing the seals.
        let err = f.write_all(b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
        assert!(f.set_len(10).is_err());
        assert!(f.set_len(data.len() as u64 + 10).is_err());
        assert!(rustix::fs::fcntl_add_seals(&f, SealFlags::FUTURE_WRITE).is_err());
        // Reopened through /proc for writing, as a container would try: refused too.
        let reopened = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/self/fd/{}", f.as_raw_fd()));
        if let Ok(mut w) = reopened {
            assert!(w.write_all(b"x").is_err());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
