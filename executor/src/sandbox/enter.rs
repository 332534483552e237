//! Entering a running sandbox (`rbuild exec`): a new process in the namespaces and cgroups of a
//! sandbox's first process, confined like that process.
//!
//! [`enter`] forks a helper with `clone3`; the helper joins the target's mount, PID, UTS, IPC,
//! network and cgroup namespaces with one `setns` on the target's pidfd (joining the mount
//! namespace also moves it to that namespace's root, the container's root filesystem), then
//! forks again with `CLONE_PARENT` — a PID namespace only applies to children — so that the
//! new process is rbuild's own child inside the container's PID namespace. The helper reports
//! the new pid and exits; rbuild moves the process into the target's cgroups (its resource
//! limits) and lets it go on, and the process sets up its standard I/O, closes every inherited
//! fd, drops to its user and capabilities, changes to its working directory, installs the
//! seccomp filter and execs — the same code as a sandbox's first process
//! (`child::exec_process`). Between the forks and `execve` only async-signal-safe system calls
//! run, as in `child`.

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, Signal, WaitOptions};
use rustix::thread::ThreadNameSpaceType;

use super::child::{self, ChildStep, ExecPlan};
use super::{
    above_stdio, cstring, exec_candidates, interrupted, last_cap, live, seccomp, sys, ProcessSpec,
    Running, SandboxError, Security, NEXT_ID,
};

/// What to run inside a running sandbox.
#[derive(Debug)]
pub struct EnterSpec<'a> {
    /// A pidfd of the sandbox's first process.
    pub target: BorrowedFd<'a>,
    /// The same process's pid in rbuild's PID namespace (to find its cgroups).
    pub target_pid: i32,
    /// The confinement of the new process (the sandbox's own, normally).
    pub security: Security,
    /// The process; `cwd` is resolved inside the sandbox's root filesystem.
    pub process: ProcessSpec,
}

/// Steps of the helper, reported like `child`'s steps (numbers above theirs).
const STEP_JOIN: u32 = 1001;
const STEP_FORK: u32 = 1002;
const STEP_WAIT: u32 = 1003;

/// Everything the helper and the new process use, prepared before `clone3`.
struct EnterPlan<'a> {
    target: RawFd,
    /// Write end of the pipe the helper reports the new pid on.
    pid_w: RawFd,
    /// Read end of the pipe the parent writes one byte to when the process may go on.
    go_r: RawFd,
    exec: ExecPlan<'a>,
}

fn report(err: RawFd, step: u32, errno: Errno) {
    let mut buf = [0u8; 8];
    buf[..4].copy_from_slice(&step.to_le_bytes());
    buf[4..].copy_from_slice(&errno.raw_os_error().to_le_bytes());
    sys::write_all(err, &buf);
}

/// The helper: joins the namespaces, forks the process, reports its pid; never returns.
fn helper(plan: &EnterPlan<'_>) -> ! {
    let joined =
        rustix::process::set_parent_process_death_signal(Some(Signal::KILL)).and_then(|()| {
            rustix::thread::move_into_thread_name_spaces(
                child::unsafe_borrow(plan.target),
                ThreadNameSpaceType::MOUNT
                    | ThreadNameSpaceType::PROCESS_ID
                    | ThreadNameSpaceType::HOST_NAME_AND_NIS_DOMAIN_NAME
                    | ThreadNameSpaceType::INTER_PROCESS_COMMUNICATION
                    | ThreadNameSpaceType::NETWORK
                    | ThreadNameSpaceType::CONTROL_GROUP,
            )
        });
    if let Err(e) = joined {
        report(plan.exec.err, STEP_JOIN, e);
        sys::exit_now(127)
    }
    #[allow(unsafe_code)]
    // SAFETY: this process is single-threaded (a fork of rbuild); the new process only runs
    // `process`, which makes raw system calls on the prepared plan and execs or `_exit`s.
    let forked = unsafe { sys::clone3(libc::CLONE_PARENT as u64, None) };
    match forked {
        Ok(sys::Forked::Child) => process(plan),
        Ok(sys::Forked::Parent { pid, pidfd }) => {
            drop(pidfd);
            sys::write_all(plan.pid_w, &pid.to_le_bytes());
            sys::exit_now(0)
        }
        Err(e) => {
            report(plan.exec.err, STEP_FORK, e);
            sys::exit_now(127)
        }
    }
}

/// The new process, in the sandbox's namespaces: waits for the parent, then execs.
fn process(plan: &EnterPlan<'_>) -> ! {
    if let Err(e) = rustix::process::set_parent_process_death_signal(Some(Signal::KILL)) {
        report(plan.exec.err, STEP_WAIT, e);
        sys::exit_now(127)
    }
    let mut byte = [0u8; 1];
    loop {
        match rustix::io::read(child::unsafe_borrow(plan.go_r), &mut byte) {
            Ok(1) => break,
            // The parent gave up (it closed the pipe): end quietly.
            Ok(_) => sys::exit_now(127),
            Err(Errno::INTR) => continue,
            Err(e) => {
                report(plan.exec.err, STEP_WAIT, e);
                sys::exit_now(127)
            }
        }
    }
    let Err((step, errno)) = child::exec_process(&plan.exec);
    report(plan.exec.err, step as u32, errno);
    sys::exit_now(127)
}

/// Starts `spec.process` inside the running sandbox whose first process is `spec.target`.
/// The returned [`Running`] is the new process (waiting for it, signalling it, killing it when
/// dropped); the sandbox itself is not affected by it.
pub fn enter(spec: EnterSpec<'_>) -> Result<Running, SandboxError> {
    if interrupted() {
        return Err(SandboxError::Interrupted);
    }
    let p = &spec.process;
    let Some(cmd) = p.args.first() else {
        return Err(SandboxError::EmptyCommand);
    };
    // Everything the forked processes use is made here: they must not allocate.
    let exec_paths: Vec<CString> = exec_candidates(cmd, &p.env)
        .iter()
        .map(|s| cstring(s))
        .collect::<Result<_, _>>()?;
    let argv: Vec<CString> = p
        .args
        .iter()
        .map(|s| cstring(s))
        .collect::<Result<_, _>>()?;
    let envp: Vec<CString> = p.env.iter().map(|s| cstring(s)).collect::<Result<_, _>>()?;
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
    let cwd = cstring(&p.cwd)?;
    let groups: Vec<rustix::process::Gid> = p
        .user
        .groups
        .iter()
        .map(|g| rustix::process::Gid::from_raw(*g))
        .collect();
    let seccomp = if spec.security.seccomp {
        Some(seccomp::SeccompProgram::docker_default()?)
    } else {
        None
    };
    let cgroup_dirs = target_cgroups(spec.target_pid)?;
    let ProcessSpec {
        args,
        stdio,
        terminal,
        cwd: cwd_text,
        user,
        ..
    } = spec.process;
    let [i, o, e] = stdio;
    let stdio = [above_stdio(i)?, above_stdio(o)?, above_stdio(e)?];
    let pipe = || {
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| SandboxError::sys("pipe", e))
    };
    let (err_r, err_w) = pipe()?;
    let (pid_r, pid_w) = pipe()?;
    let (go_r, go_w) = pipe()?;
    let plan = EnterPlan {
        target: spec.target.as_raw_fd(),
        pid_w: pid_w.as_raw_fd(),
        go_r: go_r.as_raw_fd(),
        exec: ExecPlan {
            err: err_w.as_raw_fd(),
            stdio: [
                stdio[0].as_raw_fd(),
                stdio[1].as_raw_fd(),
                stdio[2].as_raw_fd(),
            ],
            terminal,
            bounding: spec.security.capabilities,
            last_cap: last_cap(),
            root_caps: spec.security.capabilities,
            uid: user.uid,
            gid: user.gid,
            groups: &groups,
            cwd: &cwd,
            no_new_privs: spec.security.no_new_privs,
            seccomp: seccomp.as_ref(),
            exec_paths: &exec_paths,
            argv: &argv_ptrs,
            envp: &envp_ptrs,
        },
    };

    // The registry lock is held until the new process is registered, so that interrupt_all
    // cannot miss it.
    let mut live_guard = live()
        .lock()
        .map_err(|_| SandboxError::Internal("the sandbox registry is poisoned"))?;
    if interrupted() {
        return Err(SandboxError::Interrupted);
    }
    #[allow(unsafe_code)]
    // SAFETY: the helper only runs `helper`, which makes raw system calls on the data prepared
    // above and never returns (it `_exit`s).
    let forked = unsafe { sys::clone3(0, None) };
    let helper_pid = match forked {
        Ok(sys::Forked::Child) => helper(&plan),
        Ok(sys::Forked::Parent { pid, pidfd }) => {
            drop(pidfd);
            pid
        }
        Err(e) => return Err(SandboxError::sys("clone3", e)),
    };
    // The forked processes hold their own copies of these.
    drop((pid_w, go_r, err_w, stdio));
    reap(helper_pid)?;
    let mut pid_bytes = [0u8; 4];
    let got = read_full(&pid_r, &mut pid_bytes)?;
    if got < pid_bytes.len() {
        drop(live_guard);
        return Err(
            start_error(&err_r, &args, cwd_text)?.unwrap_or(SandboxError::Internal(
                "the exec helper ended without a report",
            )),
        );
    }
    let pid = i32::from_le_bytes(pid_bytes);
    let pidfd =
        match Pid::from_raw(pid).map(|p| rustix::process::pidfd_open(p, PidfdFlags::empty())) {
            Some(Ok(fd)) => fd,
            failed => {
                // The process (our child) ends when the go pipe closes; reap it.
                drop(go_w);
                let _ = reap(pid);
                return Err(match failed {
                    Some(Err(e)) => SandboxError::sys("pidfd_open", e),
                    _ => SandboxError::Internal("pid 0"),
                });
            }
        };
    let registration = NEXT_ID.fetch_add(1, Ordering::SeqCst);
    if let Ok(dup) = pidfd.try_clone() {
        live_guard.insert(registration, dup);
    }
    drop(live_guard);
    // From here on, dropping `running` kills and reaps the process.
    let mut running = Running {
        pid,
        pidfd,
        registration,
        cgroup: None,
        waited: false,
        stubs: Default::default(),
    };
    for dir in &cgroup_dirs {
        let procs = dir.join("cgroup.procs");
        std::fs::write(&procs, pid.to_string()).map_err(|e| SandboxError::Io {
            what: format!("moving the process into {}", procs.display()),
            source: e,
        })?;
    }
    rustix::io::write(&go_w, &[1]).map_err(|e| SandboxError::sys("starting the process", e))?;
    drop(go_w);
    match start_error(&err_r, &args, cwd_text)? {
        None => Ok(running),
        Some(e) => {
            let _ = running.wait_inner();
            Err(e)
        }
    }
}

/// Waits for the helper process.
fn reap(pid: i32) -> Result<(), SandboxError> {
    let pid = Pid::from_raw(pid).ok_or(SandboxError::Internal("pid 0"))?;
    loop {
        match rustix::process::waitpid(Some(pid), WaitOptions::empty()) {
            Ok(_) => return Ok(()),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(SandboxError::sys("waiting for the exec helper", e)),
        }
    }
}

/// Reads until `buf` is full or EOF; returns how much was read.
fn read_full(fd: &OwnedFd, buf: &mut [u8]) -> Result<usize, SandboxError> {
    let mut got = 0;
    while got < buf.len() {
        match rustix::io::read(fd, &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(SandboxError::sys("reading the exec helper's report", e)),
        }
    }
    Ok(got)
}

/// The error the forked processes reported on the error pipe, if any (EOF without a report
/// means the command was exec'd).
fn start_error(
    err_r: &OwnedFd,
    args: &[String],
    cwd: String,
) -> Result<Option<SandboxError>, SandboxError> {
    let mut report = [0u8; 8];
    if read_full(err_r, &mut report)? < report.len() {
        return Ok(None);
    }
    let step = u32::from_le_bytes([report[0], report[1], report[2], report[3]]);
    let errno = i32::from_le_bytes([report[4], report[5], report[6], report[7]]);
    let source = std::io::Error::from_raw_os_error(errno);
    let setup = |step: &'static str| SandboxError::Setup { step, source };
    Ok(Some(match step {
        STEP_JOIN => setup("joining the container's namespaces"),
        STEP_FORK => setup("starting a process in the container's PID namespace"),
        STEP_WAIT => setup("waiting for the parent"),
        n => match ChildStep::from_raw(n) {
            Some(ChildStep::Exec) if errno == libc::ENOENT => SandboxError::NotFound {
                command: args.first().cloned().unwrap_or_default(),
            },
            Some(ChildStep::Workdir) => SandboxError::Workdir {
                cwd,
                source: std::io::Error::from_raw_os_error(errno),
            },
            Some(s) => setup(s.describe()),
            None => SandboxError::Internal("the exec helper reported an unknown step"),
        },
    }))
}

/// The cgroup directories of rbuild's making (`…/rbuild/<name>`, see [`super::cgroup`]) that
/// the process `pid` is in: where a process entering its sandbox must go too, so that the
/// sandbox's limits apply to it.
fn target_cgroups(pid: i32) -> Result<Vec<PathBuf>, SandboxError> {
    let file = format!("/proc/{pid}/cgroup");
    let text = std::fs::read_to_string(&file).map_err(|e| SandboxError::Io {
        what: format!("reading {file}"),
        source: e,
    })?;
    let root = Path::new("/sys/fs/cgroup");
    let unified = root.join("cgroup.controllers").exists();
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            let rel = path.strip_prefix("/rbuild/")?;
            if rel.is_empty() || rel.contains('/') || rel.starts_with('.') {
                return None;
            }
            match controllers {
                "" if unified => Some(root.join("rbuild").join(rel)),
                "" => None,
                c if c.starts_with("name=") || c.contains('/') || c.starts_with('.') => None,
                c => Some(root.join(c).join("rbuild").join(rel)),
            }
        })
        .filter(|d| d.join("cgroup.procs").exists())
        .collect())
}
