//! The sandbox every `RUN` step and every `rbuild run` container runs in.
//!
//! [`spawn`] starts one process as PID 1 of new PID, mount, UTS, IPC and cgroup namespaces
//! (and a network namespace with only loopback for [`Network::None`]), on a root filesystem
//! that is a detached mount (an overlay over the image's layers) with `/dev`, `/proc`, `/sys`
//! and the requested [`Mount`]s on it. The process gets Docker's default capability set, the
//! default seccomp profile ([`seccomp`]), `no_new_privs`, its user and groups, and optional
//! cgroup limits ([`cgroup`]). Nothing is mounted on a host path: the tree is attached only
//! inside the sandbox's own mount namespace, which disappears with its last process.
//!
//! Module map: [`tree`] assembles the filesystem tree in the parent; `child` is the code
//! between `clone3` and `execve`; `sys` wraps the system calls `rustix` lacks.
//!
//! A process can be stopped from anywhere with [`interrupt_all`] (the CLI's Ctrl-C handler):
//! every live sandbox is killed, and new ones refuse to start.

pub mod cgroup;
mod child;
pub mod enter;
pub mod seccomp;
mod sys;
pub mod tree;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use rbuild_fsutil::Root;
use rustix::io::Errno;
use rustix::process::{Pid, Signal, WaitOptions, WaitStatus};

pub use cgroup::Limits;
pub use tree::{Mount, MountSource, Stubs};

use child::{ChildPlan, ChildStep};

/// Errors of starting or waiting for a sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{what}: {source}")]
    Sys {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Fs {
        what: String,
        #[source]
        source: rbuild_fsutil::FsError,
    },
    #[error("cannot mount on {target}: {reason}")]
    MountTarget {
        target: String,
        reason: &'static str,
    },
    #[error("the sandbox could not start: {step}: {source}")]
    Setup {
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("exec {command:?}: executable file not found in $PATH")]
    NotFound { command: String },
    #[error("the working directory {cwd:?} is not a directory inside the container: {source}")]
    Workdir {
        cwd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the command is empty")]
    EmptyCommand,
    #[error("a string holds a NUL byte: {0:?}")]
    Nul(String),
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    #[error("interrupted")]
    Interrupted,
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl SandboxError {
    fn sys(what: &str, e: Errno) -> SandboxError {
        SandboxError::Sys {
            what: what.to_string(),
            source: e.into(),
        }
    }
}

/// The network a sandbox sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Network {
    /// The host's network stack, so a build can reach the network as `docker build` allows
    /// (BuildKit's OCI worker without a CNI bridge does the same).
    #[default]
    Default,
    /// A network namespace of its own with only loopback.
    None,
    /// The host's network stack (`--network host`).
    Host,
}

/// Who the process runs as.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

/// The process to run.
#[derive(Debug)]
pub struct ProcessSpec {
    /// The command; a first word without `/` is looked up in the `PATH` of `env`.
    pub args: Vec<String>,
    /// `KEY=value` entries.
    pub env: Vec<String>,
    /// Absolute working directory inside the sandbox (must exist).
    pub cwd: String,
    pub user: User,
    /// Standard input, output and error of the process.
    pub stdio: [OwnedFd; 3],
    /// Standard input is a terminal that becomes the controlling terminal of a new session.
    pub terminal: bool,
}

/// The confinement applied to the process (Docker's defaults by [`Default`]).
#[derive(Debug, Clone)]
pub struct Security {
    /// Capabilities kept (bit n = capability n): the bounding set, and for root also the
    /// effective and permitted sets.
    pub capabilities: u64,
    pub no_new_privs: bool,
    pub seccomp: bool,
}

/// Docker's default capabilities: CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID,
/// SETPCAP, NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP.
pub const DEFAULT_CAPABILITIES: u64 = (1 << 0)  // CHOWN
    | (1 << 1)  // DAC_OVERRIDE
    | (1 << 3)  // FOWNER
    | (1 << 4)  // FSETID
    | (1 << 5)  // KILL
    | (1 << 6)  // SETGID
    | (1 << 7)  // SETUID
    | (1 << 8)  // SETPCAP
    | (1 << 10) // NET_BIND_SERVICE
    | (1 << 13) // NET_RAW
    | (1 << 18) // SYS_CHROOT
    | (1 << 27) // MKNOD
    | (1 << 29) // AUDIT_WRITE
    | (1 << 31); // SETFCAP

impl Default for Security {
    fn default() -> Self {
        Security {
            capabilities: DEFAULT_CAPABILITIES,
            no_new_privs: true,
            seccomp: true,
        }
    }
}

/// Everything about one sandbox.
#[derive(Debug)]
pub struct SandboxSpec<'a> {
    /// The root filesystem: a detached mount (see `rbuild_builder`'s overlay view).
    pub rootfs: &'a Root,
    /// An empty host directory (in rbuild's private store) where the sandbox attaches its
    /// tree inside its own mount namespace; nothing is mounted there on the host.
    pub attach_dir: PathBuf,
    pub mounts: Vec<Mount>,
    pub hostname: String,
    pub network: Network,
    pub readonly_rootfs: bool,
    pub limits: Limits,
    pub security: Security,
    pub process: ProcessSpec,
}

/// How a sandboxed process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    /// The exit code, or 128 + the signal number when a signal ended it (as shells report).
    pub code: i32,
    /// The signal that ended it.
    pub signal: Option<i32>,
    /// The memory limit's OOM killer ended it.
    pub oom_killed: bool,
}

impl ExitStatus {
    pub fn success(&self) -> bool {
        self.code == 0
    }
}

/// A started sandbox. Dropping it without [`Running::wait`] kills it.
#[derive(Debug)]
pub struct Running {
    pid: i32,
    pidfd: OwnedFd,
    registration: u64,
    cgroup: Option<cgroup::Cgroup>,
    waited: bool,
    /// Mount targets created in the root filesystem; remove them from the layer with
    /// [`remove_stubs`] after the process ended.
    pub stubs: Stubs,
}

static CANCELLED: AtomicBool = AtomicBool::new(false);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn live() -> &'static Mutex<BTreeMap<u64, OwnedFd>> {
    static LIVE: OnceLock<Mutex<BTreeMap<u64, OwnedFd>>> = OnceLock::new();
    LIVE.get_or_init(|| Mutex::new(BTreeMap::new()))
}

/// Kills every running sandbox and makes new ones refuse to start (Ctrl-C).
pub fn interrupt_all() {
    CANCELLED.store(true, Ordering::SeqCst);
    if let Ok(live) = live().lock() {
        for fd in live.values() {
            let _ = rustix::process::pidfd_send_signal(fd, Signal::KILL);
        }
    }
}

/// Whether [`interrupt_all`] was called.
pub fn interrupted() -> bool {
    CANCELLED.load(Ordering::SeqCst)
}

/// The default `PATH` (Docker's) when the environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The executable paths to try for `cmd`, like `execvp` with the environment's `PATH`.
fn exec_candidates(cmd: &str, env: &[String]) -> Vec<String> {
    if cmd.contains('/') {
        return vec![cmd.to_string()];
    }
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    path.split(':')
        .filter(|d| d.starts_with('/'))
        .map(|d| format!("{}/{cmd}", d.trim_end_matches('/')))
        .collect()
}

fn cstring(s: &str) -> Result<CString, SandboxError> {
    CString::new(s).map_err(|_| SandboxError::Nul(s.to_string()))
}

/// The highest capability number the kernel knows.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// An fd numbered 3 or more (so that installing 0-2 in the child never overwrites another).
fn above_stdio(fd: OwnedFd) -> Result<OwnedFd, SandboxError> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    rustix::io::fcntl_dupfd_cloexec(&fd, 3).map_err(|e| SandboxError::sys("dup", e))
}

/// Starts the sandbox described by `spec`.
pub fn spawn(spec: SandboxSpec<'_>) -> Result<Running, SandboxError> {
    if interrupted() {
        return Err(SandboxError::Interrupted);
    }
    let p = &spec.process;
    let Some(cmd) = p.args.first() else {
        return Err(SandboxError::EmptyCommand);
    };
    // Everything the child uses is made here: it must not allocate.
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
    let attach = cstring(&spec.attach_dir.to_string_lossy())?;
    let hostname = spec.hostname.as_bytes().to_vec();
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
    let new_network = spec.network == Network::None;
    let assembled = tree::assemble(spec.rootfs, spec.mounts, new_network)?;
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

    let cgroup = if spec.limits.is_empty() {
        None
    } else {
        let name = format!(
            "rbuild-{}-{}",
            std::process::id(),
            NEXT_ID.fetch_add(1, Ordering::SeqCst)
        );
        Some(cgroup::Cgroup::create(&name, &spec.limits)?)
    };
    let (err_r, err_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| SandboxError::sys("pipe", e))?;
    // With cgroup v1 the child waits until the parent has moved it into the cgroup.
    let sync = match &cgroup {
        Some(cg) if cg.v2_dir_fd().is_none() => Some(
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
                .map_err(|e| SandboxError::sys("pipe", e))?,
        ),
        _ => None,
    };

    let plan = ChildPlan {
        sync: sync.as_ref().map(|(r, _)| r.as_raw_fd()),
        err: err_w.as_raw_fd(),
        attach_path: &attach,
        root: spec.rootfs.as_fd(),
        proc_target: assembled.proc_target.as_fd(),
        dev_null: assembled.dev_null.as_fd(),
        sys_target: assembled.sys_target.as_ref().map(|f| f.as_fd()),
        readonly_root: spec.readonly_rootfs,
        hostname: &hostname,
        new_network,
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
    };
    let mut flags = (libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWCGROUP) as u64;
    if new_network {
        flags |= libc::CLONE_NEWNET as u64;
    }
    // The registry lock is held across clone3 so that interrupt_all cannot miss this child.
    let mut live_guard = live()
        .lock()
        .map_err(|_| SandboxError::Internal("the sandbox registry is poisoned"))?;
    if interrupted() {
        return Err(SandboxError::Interrupted);
    }
    #[allow(unsafe_code)]
    // SAFETY: the child only runs `child::run`, which makes raw system calls on the data
    // prepared above and never returns (it execs or `_exit`s).
    let forked = unsafe { sys::clone3(flags, cgroup.as_ref().and_then(|c| c.v2_dir_fd())) };
    let (pid, pidfd) = match forked {
        Ok(sys::Forked::Child) => child::run(&plan),
        Ok(sys::Forked::Parent { pid, pidfd }) => (pid, pidfd),
        Err(e) => return Err(SandboxError::sys("clone3", e)),
    };
    let registration = NEXT_ID.fetch_add(1, Ordering::SeqCst);
    if let Ok(dup) = pidfd.try_clone() {
        live_guard.insert(registration, dup);
    }
    drop(live_guard);
    let mut running = Running {
        pid,
        pidfd,
        registration,
        cgroup,
        waited: false,
        stubs: assembled.stubs,
    };
    drop(err_w);
    drop(stdio);
    if let Some((r, w)) = sync {
        drop(r);
        if let Some(cg) = &running.cgroup {
            cg.add_process(pid)?;
        }
        rustix::io::write(&w, &[1]).map_err(|e| SandboxError::sys("starting the sandbox", e))?;
    }
    // The error pipe closes on a successful exec; otherwise it says which step failed.
    let mut report = [0u8; 8];
    let mut got = 0;
    while got < report.len() {
        match rustix::io::read(&err_r, &mut report[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(SandboxError::sys("reading the sandbox's start report", e)),
        }
    }
    if got == 0 {
        return Ok(running);
    }
    let _ = running.wait_inner();
    let step = u32::from_le_bytes([report[0], report[1], report[2], report[3]]);
    let errno = i32::from_le_bytes([report[4], report[5], report[6], report[7]]);
    let source = std::io::Error::from_raw_os_error(errno);
    Err(match ChildStep::from_raw(step) {
        Some(ChildStep::Exec) if errno == libc::ENOENT => SandboxError::NotFound {
            command: args.first().cloned().unwrap_or_default(),
        },
        Some(ChildStep::Workdir) => SandboxError::Workdir {
            cwd: cwd_text,
            source,
        },
        Some(step) => SandboxError::Setup {
            step: step.describe(),
            source,
        },
        None => SandboxError::Internal("the sandbox reported an unknown step"),
    })
}

impl Running {
    /// The process id (in rbuild's PID namespace).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// A pidfd of the process.
    pub fn pidfd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// Sends `signal` to the sandbox's first process.
    pub fn signal(&self, signal: Signal) -> Result<(), SandboxError> {
        rustix::process::pidfd_send_signal(&self.pidfd, signal)
            .map_err(|e| SandboxError::sys("signalling the sandbox", e))
    }

    /// Waits until the process ends. Every other process of the sandbox ends with it (the
    /// kernel kills a PID namespace when its first process exits).
    pub fn wait(mut self) -> Result<ExitStatus, SandboxError> {
        self.wait_inner()
    }

    fn wait_inner(&mut self) -> Result<ExitStatus, SandboxError> {
        let pid = Pid::from_raw(self.pid).ok_or(SandboxError::Internal("pid 0"))?;
        let status: WaitStatus = loop {
            match rustix::process::waitpid(Some(pid), WaitOptions::empty()) {
                Ok(Some((_, status))) => break status,
                Ok(None) => continue,
                Err(Errno::INTR) => continue,
                Err(e) => return Err(SandboxError::sys("waiting for the sandbox", e)),
            }
        };
        self.waited = true;
        self.unregister();
        let oom_killed = self.cgroup.as_ref().is_some_and(|c| c.oom_killed());
        let signal = status.terminating_signal();
        let code = match (status.exit_status(), signal) {
            (Some(code), _) => code,
            (None, Some(sig)) => 128 + sig,
            (None, None) => 255,
        };
        Ok(ExitStatus {
            code,
            signal,
            oom_killed,
        })
    }

    fn unregister(&self) {
        if let Ok(mut live) = live().lock() {
            live.remove(&self.registration);
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.waited {
            let _ = rustix::process::pidfd_send_signal(&self.pidfd, Signal::KILL);
            let _ = self.wait_inner();
        }
        self.unregister();
    }
}

/// Removes mount stubs (from [`Running::stubs`]) from a finished step's upper dir: each
/// created entry that is still an empty directory or an empty regular file, last-created
/// first; then each existing directory a stub was made in, when the upper dir's copy of it is
/// now empty, not opaque, and has the owner and mode it had (overlayfs copied it up only for
/// the stub: the lower layer's copy shows again). Nothing is followed: the upper dir is a
/// [`Root`] and removal never enters a symlink (SECURITY-CLASSES 6).
pub fn remove_stubs(upper: &Root, stubs: &Stubs) -> Result<(), SandboxError> {
    use std::os::unix::fs::MetadataExt;
    let remove = |p: &Path| {
        upper
            .remove_all(p)
            .map(|_| ())
            .map_err(|e| SandboxError::Fs {
                what: format!("removing the mount point {}", p.display()),
                source: e,
            })
    };
    let empty_dir = |p: &Path| upper.read_dir(p).map(|n| n.is_empty()).unwrap_or(false);
    for stub in stubs.created.iter().rev() {
        let Ok(meta) = upper.symlink_metadata(stub) else {
            continue;
        };
        if (meta.is_dir() && empty_dir(stub)) || (meta.is_file() && meta.size() == 0) {
            remove(stub)?;
        }
    }
    for (dir, mode, uid, gid) in stubs.parents.iter().rev() {
        let Ok(meta) = upper.symlink_metadata(dir) else {
            continue;
        };
        let opaque = ["trusted.overlay.opaque", "user.overlay.opaque"]
            .iter()
            .any(|name| {
                upper
                    .open_path(dir, true)
                    .ok()
                    .and_then(|fd| {
                        // An O_PATH fd has no xattr calls of its own; its /proc link does.
                        let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
                        rustix::fs::getxattr(link.as_str(), *name, &mut [0u8; 8]).ok()
                    })
                    .is_some()
            });
        if meta.is_dir()
            && !opaque
            && empty_dir(dir)
            && (meta.mode() & 0o7777, meta.uid(), meta.gid()) == (*mode, *uid, *gid)
        {
            remove(dir)?;
        }
    }
    Ok(())
}

/// `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname` for a sandbox named `hostname`:
/// generated files, mounted read-only (for builds) so they never reach a layer.
pub fn etc_mounts(hostname: &str, network: Network, readonly: bool) -> Vec<Mount> {
    let hosts =
        format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    let resolv = match network {
        Network::None => String::new(),
        _ => std::fs::read_to_string(Path::new("/etc/resolv.conf")).unwrap_or_default(),
    };
    let file = |target: &str, contents: String| Mount {
        target: target.to_string(),
        source: MountSource::File {
            contents: contents.into_bytes(),
            mode: 0o644,
            uid: 0,
            gid: 0,
        },
        readonly,
    };
    vec![
        file("/etc/hosts", hosts),
        file("/etc/resolv.conf", resolv),
        file("/etc/hostname", format!("{hostname}\n")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_looked_up_in_the_path_of_the_environment() {
        let env = vec!["A=1".to_string(), "PATH=/x:/y/:relative".to_string()];
        assert_eq!(exec_candidates("sh", &env), ["/x/sh", "/y/sh"]);
        assert_eq!(exec_candidates("./sh", &env), ["./sh"]);
        assert_eq!(exec_candidates("/bin/sh", &[]), ["/bin/sh"]);
        assert_eq!(exec_candidates("sh", &[]).len(), 6);
    }
}
