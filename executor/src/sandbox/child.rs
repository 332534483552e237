//! The sandbox's first process between `clone3` and `execve`.
//!
//! It runs as PID 1 of a new PID namespace, in new mount, UTS, IPC and cgroup (and, with
//! `--network none`, network) namespaces. The parent has already assembled the whole root
//! filesystem tree as a detached mount ([`super::tree`]); the child only attaches it, mounts
//! the namespace-bound filesystems (`/proc`, and `/sys` in a new network namespace), masks
//! `/proc`'s dangerous files, `pivot_root`s, sets its identity, drops privileges and execs.
//!
//! The parent may be multithreaded, so everything here is async-signal-safe: raw system calls
//! on data prepared by the parent ([`ChildPlan`]), no allocation, no locks. A failure is
//! reported as `(step, errno)` on the error pipe and ends the child with status 127; a
//! successful `execve` closes the pipe (it is `O_CLOEXEC`), which is how the parent learns the
//! command started.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};

use rustix::io::Errno;
use rustix::mount::{
    fsconfig_create, fsmount, fsopen, move_mount, open_tree, unmount, FsMountFlags, FsOpenFlags,
    MountAttrFlags, MountPropagationFlags, MoveMountFlags, OpenTreeFlags, UnmountFlags,
};
use rustix::thread::{CapabilitySet, CapabilitySets};

use super::seccomp::SeccompProgram;
use super::sys;

/// The step of the child's setup that failed (reported to the parent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum ChildStep {
    Sync = 1,
    Propagation,
    AttachRoot,
    MountProc,
    MaskProc,
    MountSys,
    PivotRoot,
    ReadOnlyRoot,
    Hostname,
    Loopback,
    Stdio,
    Terminal,
    CloseFds,
    Bounding,
    Groups,
    Gid,
    Uid,
    Capabilities,
    Workdir,
    NoNewPrivs,
    Seccomp,
    Exec,
}

impl ChildStep {
    pub(crate) fn from_raw(n: u32) -> Option<ChildStep> {
        use ChildStep::*;
        [
            Sync,
            Propagation,
            AttachRoot,
            MountProc,
            MaskProc,
            MountSys,
            PivotRoot,
            ReadOnlyRoot,
            Hostname,
            Loopback,
            Stdio,
            Terminal,
            CloseFds,
            Bounding,
            Groups,
            Gid,
            Uid,
            Capabilities,
            Workdir,
            NoNewPrivs,
            Seccomp,
            Exec,
        ]
        .into_iter()
        .find(|s| *s as u32 == n)
    }

    /// What the step does, for error messages.
    pub(crate) fn describe(self) -> &'static str {
        use ChildStep::*;
        match self {
            Sync => "waiting for the parent",
            Propagation => "making mounts private",
            AttachRoot => "attaching the root filesystem",
            MountProc => "mounting /proc",
            MaskProc => "masking /proc paths",
            MountSys => "mounting /sys",
            PivotRoot => "pivot_root into the root filesystem",
            ReadOnlyRoot => "making the root filesystem read-only",
            Hostname => "setting the hostname",
            Loopback => "bringing up the loopback interface",
            Stdio => "setting up standard input and output",
            Terminal => "taking the terminal",
            CloseFds => "closing inherited file descriptors",
            Bounding => "dropping capabilities from the bounding set",
            Groups => "setting supplementary groups",
            Gid => "setting the group id",
            Uid => "setting the user id",
            Capabilities => "setting capabilities",
            Workdir => "changing to the working directory",
            NoNewPrivs => "setting no_new_privs",
            Seccomp => "installing the seccomp filter",
            Exec => "starting the command",
        }
    }
}

/// Files in `/proc` hidden behind `/dev/null` (runc's and Docker's masked paths).
const MASKED_FILES: &[&CStr] = &[
    c"kcore",
    c"keys",
    c"latency_stats",
    c"timer_list",
    c"timer_stats",
    c"sched_debug",
];
/// Directories in `/proc` hidden behind an empty read-only tmpfs.
const MASKED_DIRS: &[&CStr] = &[c"acpi", c"scsi"];
/// `/proc` entries made read-only (writing them would change the host kernel).
const READONLY_PROC: &[&CStr] = &[c"bus", c"fs", c"irq", c"sys", c"sysrq-trigger"];

/// Everything the child needs, prepared by the parent before `clone3`.
pub(crate) struct ChildPlan<'a> {
    /// Read end of the pipe the parent writes one byte to when the child may go on.
    pub sync: Option<RawFd>,
    /// Write end of the error pipe.
    pub err: RawFd,
    /// Where the child attaches the tree in its own mount namespace.
    pub attach_path: &'a CStr,
    /// The detached root filesystem tree.
    pub root: BorrowedFd<'a>,
    /// `/proc` in the tree (an `O_PATH` fd), where the child mounts its procfs.
    pub proc_target: BorrowedFd<'a>,
    /// `/dev/null` of the tree's `/dev` (an `O_PATH` fd), bound over masked `/proc` files.
    pub dev_null: BorrowedFd<'a>,
    /// `/sys` in the tree when a new sysfs is mounted (new network namespace).
    pub sys_target: Option<BorrowedFd<'a>>,
    pub readonly_root: bool,
    pub hostname: &'a [u8],
    pub new_network: bool,
    /// The fds that become 0, 1 and 2 (all above 2).
    pub stdio: [RawFd; 3],
    /// Make fd 0 (a terminal) the controlling terminal of a new session.
    pub terminal: bool,
    /// Capabilities kept in the bounding set (bit n = capability n), and the highest number
    /// the kernel knows.
    pub bounding: u64,
    pub last_cap: u32,
    /// Effective and permitted capabilities when the user is root.
    pub root_caps: u64,
    pub uid: u32,
    pub gid: u32,
    pub groups: &'a [rustix::process::Gid],
    pub cwd: &'a CStr,
    pub no_new_privs: bool,
    pub seccomp: Option<&'a SeccompProgram>,
    /// Paths to try, in order, for the command (the `PATH` lookup done ahead).
    pub exec_paths: &'a [CString],
    pub argv: &'a [*const libc::c_char],
    pub envp: &'a [*const libc::c_char],
}

/// Runs the child's setup and execs the command; never returns.
pub(crate) fn run(plan: &ChildPlan<'_>) -> ! {
    let Err((step, errno)) = setup_and_exec(plan);
    let mut report = [0u8; 8];
    report[..4].copy_from_slice(&(step as u32).to_le_bytes());
    report[4..].copy_from_slice(&errno.raw_os_error().to_le_bytes());
    sys::write_all(plan.err, &report);
    sys::exit_now(127)
}

pub(crate) enum Never {}

pub(crate) fn at(step: ChildStep) -> impl Fn(Errno) -> (ChildStep, Errno) {
    move |e| (step, e)
}

fn setup_and_exec(plan: &ChildPlan<'_>) -> Result<Never, (ChildStep, Errno)> {
    use ChildStep::*;
    // The sandbox dies with the thread that started it.
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(at(Sync))?;
    if let Some(fd) = plan.sync {
        let mut byte = [0u8; 1];
        let fd = unsafe_borrow(fd);
        match rustix::io::read(fd, &mut byte) {
            Ok(1) => {}
            Ok(_) => return Err((Sync, Errno::PIPE)),
            Err(e) => return Err((Sync, e)),
        }
    }

    rustix::mount::mount_change(
        c"/",
        MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
    )
    .map_err(at(Propagation))?;
    move_mount(
        plan.root,
        c"",
        rustix::fs::CWD,
        plan.attach_path,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(at(AttachRoot))?;

    // /proc of the new PID namespace, with the host-reaching parts masked or read-only.
    let proc = new_mount(
        c"proc",
        MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )
    .map_err(at(MountProc))?;
    mount_on(&proc, plan.proc_target).map_err(at(MountProc))?;
    mask_proc(proc.as_fd(), plan.dev_null).map_err(at(MaskProc))?;
    // Closed now: an OwnedFd still alive when `close_range` below runs would be closed a second
    // time when a later step fails, and std aborts on that instead of reporting the step.
    drop(proc);

    if let Some(target) = plan.sys_target {
        let sys = new_mount(
            c"sysfs",
            MountAttrFlags::MOUNT_ATTR_RDONLY
                | MountAttrFlags::MOUNT_ATTR_NOSUID
                | MountAttrFlags::MOUNT_ATTR_NODEV
                | MountAttrFlags::MOUNT_ATTR_NOEXEC,
        )
        .map_err(at(MountSys))?;
        mount_on(&sys, target).map_err(at(MountSys))?;
        for hidden in super::tree::MASKED_SYS {
            let Ok(t) = rustix::fs::openat(
                &sys,
                *hidden,
                rustix::fs::OFlags::PATH
                    | rustix::fs::OFlags::NOFOLLOW
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            ) else {
                continue;
            };
            let empty =
                new_mount(c"tmpfs", MountAttrFlags::MOUNT_ATTR_RDONLY).map_err(at(MountSys))?;
            mount_on(&empty, t.as_fd()).map_err(at(MountSys))?;
        }
    }

    // pivot_root(".", ".") stacks the old root on top of the new one; detaching it leaves
    // only the new root, and nothing of the host's tree is reachable any more.
    rustix::process::fchdir(plan.root).map_err(at(PivotRoot))?;
    rustix::process::pivot_root(c".", c".").map_err(at(PivotRoot))?;
    unmount(c".", UnmountFlags::DETACH).map_err(at(PivotRoot))?;
    rustix::process::chdir(c"/").map_err(at(PivotRoot))?;
    if plan.readonly_root {
        sys::mount_setattr(rustix::fs::CWD, c"/", false, false, sys::MOUNT_ATTR_RDONLY)
            .map_err(at(ReadOnlyRoot))?;
    }

    rustix::system::sethostname(plan.hostname).map_err(at(Hostname))?;
    if plan.new_network {
        sys::loopback_up().map_err(at(Loopback))?;
    }

    exec_process(&ExecPlan {
        err: plan.err,
        stdio: plan.stdio,
        terminal: plan.terminal,
        bounding: plan.bounding,
        last_cap: plan.last_cap,
        root_caps: plan.root_caps,
        uid: plan.uid,
        gid: plan.gid,
        groups: plan.groups,
        cwd: plan.cwd,
        no_new_privs: plan.no_new_privs,
        seccomp: plan.seccomp,
        exec_paths: plan.exec_paths,
        argv: plan.argv,
        envp: plan.envp,
    })
}

/// The last part of starting a process, shared by a new sandbox's first process and a process
/// entering a running sandbox (`super::enter`): everything from standard I/O to `execve`.
pub(crate) struct ExecPlan<'a> {
    /// Write end of the error pipe (left open: `O_CLOEXEC` closes it on exec).
    pub err: RawFd,
    /// The fds that become 0, 1 and 2 (all above 2).
    pub stdio: [RawFd; 3],
    /// Make fd 0 (a terminal) the controlling terminal of a new session.
    pub terminal: bool,
    pub bounding: u64,
    pub last_cap: u32,
    pub root_caps: u64,
    pub uid: u32,
    pub gid: u32,
    pub groups: &'a [rustix::process::Gid],
    pub cwd: &'a CStr,
    pub no_new_privs: bool,
    pub seccomp: Option<&'a SeccompProgram>,
    pub exec_paths: &'a [CString],
    pub argv: &'a [*const libc::c_char],
    pub envp: &'a [*const libc::c_char],
}

/// Sets up standard I/O, closes every other inherited fd, drops privileges to the plan's user
/// and capabilities, changes to the working directory, installs the seccomp filter and execs.
pub(crate) fn exec_process(plan: &ExecPlan<'_>) -> Result<Never, (ChildStep, Errno)> {
    use ChildStep::*;
    // Signals rbuild ignores (SIGPIPE) or blocks must not stay so in the command.
    sys::reset_signals();
    for (i, fd) in plan.stdio.iter().enumerate() {
        let src = unsafe_borrow(*fd);
        let res = match i {
            0 => rustix::stdio::dup2_stdin(src),
            1 => rustix::stdio::dup2_stdout(src),
            _ => rustix::stdio::dup2_stderr(src),
        };
        res.map_err(at(Stdio))?;
    }
    if plan.terminal {
        rustix::process::setsid().map_err(at(Terminal))?;
        rustix::process::ioctl_tiocsctty(unsafe_borrow(0)).map_err(at(Terminal))?;
    }
    // No fd of the parent's may survive into the command: a leaked directory fd is a way back
    // to the host (CVE-2024-21626). Only 0-2 and the error pipe (closed by exec) stay.
    let err = plan.err as u32;
    sys::close_range(3, err.saturating_sub(1)).map_err(at(CloseFds))?;
    sys::close_range(err + 1, u32::MAX).map_err(at(CloseFds))?;

    for cap in 0..=plan.last_cap.min(63) {
        if plan.bounding & (1u64 << cap) == 0 {
            rustix::thread::remove_capability_from_bounding_set(CapabilitySet::from_bits_retain(
                1u64 << cap,
            ))
            .map_err(at(Bounding))?;
        }
    }
    rustix::thread::set_thread_groups(plan.groups).map_err(at(Groups))?;
    let gid = rustix::process::Gid::from_raw(plan.gid);
    rustix::thread::set_thread_res_gid(gid, gid, gid).map_err(at(Gid))?;
    let uid = rustix::process::Uid::from_raw(plan.uid);
    rustix::thread::set_thread_res_uid(uid, uid, uid).map_err(at(Uid))?;
    // Root keeps the default set; for any other user, changing the uid already cleared the
    // effective and permitted sets. Nothing is inheritable or ambient.
    let keep = if plan.uid == 0 { plan.root_caps } else { 0 };
    rustix::thread::set_capabilities(
        None,
        CapabilitySets {
            effective: CapabilitySet::from_bits_retain(keep),
            permitted: CapabilitySet::from_bits_retain(keep),
            inheritable: CapabilitySet::empty(),
        },
    )
    .map_err(at(Capabilities))?;

    // The working directory is resolved inside the new root, as the user, after every
    // inherited fd is gone; then checked to be reachable from the root.
    rustix::process::chdir(plan.cwd).map_err(at(Workdir))?;
    if !sys::cwd_is_reachable() {
        return Err((Workdir, Errno::ACCESS));
    }

    if plan.no_new_privs {
        rustix::thread::set_no_new_privs(true).map_err(at(NoNewPrivs))?;
    }
    if let Some(filter) = plan.seccomp {
        filter.install().map_err(at(Seccomp))?;
    }

    let mut last = Errno::NOENT;
    for path in plan.exec_paths {
        let e = sys::execve(path, plan.argv, plan.envp);
        // Like execvp: go on to the next PATH entry only when this one has no such file.
        if e != Errno::NOENT && e != Errno::NOTDIR {
            return Err((Exec, e));
        }
        last = e;
    }
    Err((Exec, last))
}

/// A borrowed fd from a raw number the plan owns for the child's lifetime.
pub(crate) fn unsafe_borrow(fd: RawFd) -> BorrowedFd<'static> {
    #[allow(unsafe_code)]
    // SAFETY: the parent keeps every fd in the plan open until the child has exec'd or exited,
    // and the child closes none of them before their last use here.
    unsafe {
        BorrowedFd::borrow_raw(fd)
    }
}

/// A new filesystem instance of `fstype` as a detached mount.
fn new_mount(fstype: &CStr, attrs: MountAttrFlags) -> Result<OwnedFd, Errno> {
    let fs = fsopen(fstype, FsOpenFlags::FSOPEN_CLOEXEC)?;
    fsconfig_create(&fs)?;
    fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
}

/// Attaches the detached mount `mnt` on the (`O_PATH`) `target`.
fn mount_on(mnt: &OwnedFd, target: BorrowedFd<'_>) -> Result<(), Errno> {
    move_mount(
        mnt,
        c"",
        target,
        c"",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
}

/// Hides `/proc`'s host-reaching files and makes its kernel-tuning parts read-only.
fn mask_proc(proc: BorrowedFd<'_>, dev_null: BorrowedFd<'_>) -> Result<(), Errno> {
    use rustix::fs::{openat, Mode, OFlags};
    let target = |name: &CStr| {
        openat(
            proc,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
    };
    for name in MASKED_FILES {
        let Ok(t) = target(name) else { continue };
        let null = open_tree(
            dev_null,
            c"",
            OpenTreeFlags::OPEN_TREE_CLONE
                | OpenTreeFlags::OPEN_TREE_CLOEXEC
                | OpenTreeFlags::AT_EMPTY_PATH,
        )?;
        mount_on(&null, t.as_fd())?;
    }
    for name in MASKED_DIRS {
        let Ok(t) = target(name) else { continue };
        let empty = new_mount(c"tmpfs", MountAttrFlags::MOUNT_ATTR_RDONLY)?;
        mount_on(&empty, t.as_fd())?;
    }
    for name in READONLY_PROC {
        let Ok(t) = target(name) else { continue };
        let ro = open_tree(
            proc,
            *name,
            OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
        )?;
        sys::mount_setattr(
            ro.as_fd(),
            c"",
            true,
            true,
            sys::MOUNT_ATTR_RDONLY
                | sys::MOUNT_ATTR_NOSUID
                | sys::MOUNT_ATTR_NODEV
                | sys::MOUNT_ATTR_NOEXEC,
        )?;
        mount_on(&ro, t.as_fd())?;
    }
    Ok(())
}
