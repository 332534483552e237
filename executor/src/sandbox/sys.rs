//! The raw system calls the sandbox needs that `rustix` does not wrap (`clone3`,
//! `mount_setattr`, `close_range`, `execve` with prepared pointer arrays, the loopback ioctl),
//! each a thin, allocation-free wrapper so that it can run in the child between `clone3` and
//! `execve`.

#![allow(unsafe_code)]

use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use rustix::io::Errno;

fn last_errno() -> Errno {
    Errno::from_raw_os_error(
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO),
    )
}

/// `struct clone_args` of `clone3(2)`.
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// What `clone3` returned in the calling process.
pub(crate) enum Forked {
    /// In the new process.
    Child,
    /// In the parent: the child's pid (as the parent sees it) and its pidfd.
    Parent { pid: i32, pidfd: OwnedFd },
}

/// `clone3` without `CLONE_VM`: a fork into new namespaces (`flags`), optionally straight into
/// the cgroup v2 directory `cgroup`, returning a pidfd of the child.
///
/// # Safety
/// The parent may have other threads: in [`Forked::Child`] the caller must only make
/// async-signal-safe calls (raw system calls; no allocation, no locks) until it execs or exits.
pub(crate) unsafe fn clone3(flags: u64, cgroup: Option<BorrowedFd<'_>>) -> Result<Forked, Errno> {
    let mut pidfd: libc::c_int = -1;
    let mut args = CloneArgs {
        flags: flags | libc::CLONE_PIDFD as u64,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        // With CLONE_PARENT the kernel wants 0 here and uses the caller's exit signal.
        exit_signal: if flags & libc::CLONE_PARENT as u64 != 0 {
            0
        } else {
            libc::SIGCHLD as u64
        },
        ..CloneArgs::default()
    };
    if let Some(fd) = cgroup {
        // CLONE_INTO_CGROUP (libc's constant is deprecated for overflowing its type).
        args.flags |= 0x2_0000_0000;
        args.cgroup = fd.as_raw_fd() as u64;
    }
    // SAFETY: `args` is a valid clone_args of the size passed; without CLONE_VM the child gets
    // a copy of the address space and returns here like fork(2); the caller upholds the
    // async-signal-safety contract in the child.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match ret {
        -1 => Err(last_errno()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent {
            pid: pid as i32,
            // SAFETY: with CLONE_PIDFD the kernel stored a new, owned pidfd in `pidfd`.
            pidfd: unsafe { OwnedFd::from_raw_fd(pidfd) },
        }),
    }
}

/// `MOUNT_ATTR_*` bits for [`mount_setattr`].
pub(crate) const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub(crate) const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub(crate) const MOUNT_ATTR_NODEV: u64 = 0x4;
pub(crate) const MOUNT_ATTR_NOEXEC: u64 = 0x8;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `mount_setattr(fd, path, flags, {attr_set})`: sets mount attributes (e.g. read-only) on the
/// mount at `fd`/`path`, on its whole subtree with `recursive`.
pub(crate) fn mount_setattr(
    fd: BorrowedFd<'_>,
    path: &CStr,
    empty_path: bool,
    recursive: bool,
    attr_set: u64,
) -> Result<(), Errno> {
    let mut flags = 0u32;
    if empty_path {
        flags |= libc::AT_EMPTY_PATH as u32;
    }
    if recursive {
        flags |= libc::AT_RECURSIVE as u32;
    }
    let attr = MountAttr {
        attr_set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `path` is NUL-terminated, `attr` is a valid mount_attr of the size passed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            path.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if ret == -1 {
        return Err(last_errno());
    }
    Ok(())
}

/// Closes every fd in `first..=last`.
pub(crate) fn close_range(first: u32, last: u32) -> Result<(), Errno> {
    if first > last {
        return Ok(());
    }
    // SAFETY: closing fds has no memory-safety effect; the caller owns nothing in the range.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
    if ret == -1 {
        return Err(last_errno());
    }
    Ok(())
}

/// `execve(path, argv, envp)`; returns only on failure.
pub(crate) fn execve(
    path: &CStr,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> Errno {
    if argv.last().is_some_and(|p| !p.is_null()) || envp.last().is_some_and(|p| !p.is_null()) {
        return Errno::INVAL;
    }
    // SAFETY: `path` is NUL-terminated; `argv` and `envp` are NULL-terminated arrays of
    // pointers to NUL-terminated strings that outlive the call (checked above / by the caller).
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    last_errno()
}

/// Writes all of `buf` to `fd` (best effort; for the child's error report).
pub(crate) fn write_all(fd: RawFd, buf: &[u8]) {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: the pointer and length describe the live slice `buf[done..]`.
        let n = unsafe {
            libc::write(
                fd,
                buf[done..].as_ptr() as *const libc::c_void,
                buf.len() - done,
            )
        };
        if n <= 0 {
            return;
        }
        done += n as usize;
    }
}

/// `_exit(code)`: ends the child without running the parent's atexit handlers or destructors.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and never returns.
    unsafe { libc::_exit(code) }
}

/// Brings the loopback interface up in the current network namespace.
pub(crate) fn loopback_up() -> Result<(), Errno> {
    // SAFETY: plain socket(2); the fd is owned below.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(last_errno());
    }
    // SAFETY: `raw` is a new fd that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the flags of the interface named in `req` into `req`.
    if unsafe { libc::ioctl(sock.as_fd().as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(last_errno());
    }
    // SAFETY: the union member written by SIOCGIFFLAGS is ifru_flags.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: SIOCSIFFLAGS sets the flags from `req`.
    if unsafe { libc::ioctl(sock.as_fd().as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(last_errno());
    }
    Ok(())
}

/// Whether the current directory is inside the current root: `getcwd` answers with a path
/// that does not start with `/` ("(unreachable)…") or fails when it is not.
pub(crate) fn cwd_is_reachable() -> bool {
    let mut buf = [0u8; 4096];
    // SAFETY: the buffer is valid for its whole length.
    let p = unsafe { libc::getcwd(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    !p.is_null() && buf[0] == b'/'
}

/// Gives every signal its default action and unblocks them all, so that the command does not
/// inherit rbuild's ignored `SIGPIPE` (Rust ignores it) or its signal mask. Handlers are reset
/// by `execve` anyway; ignored signals and the mask would survive it.
pub(crate) fn reset_signals() {
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: sigaction is async-signal-safe; an all-zero sigaction is SIG_DFL with no
        // flags and an empty mask. Numbers the kernel rejects just fail.
        unsafe {
            let act: libc::sigaction = std::mem::zeroed();
            libc::sigaction(sig, &act, std::ptr::null_mut());
        }
    }
    // SAFETY: an empty set, built with sigemptyset, passed by pointer; async-signal-safe.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}
