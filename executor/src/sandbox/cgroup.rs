//! Resource limits (`--memory`, `--cpus`, a pids limit) for one sandbox through a cgroup of its
//! own.
//!
//! This module owns the sandbox's cgroup from creation to removal: [`Cgroup::create`] makes
//! `rbuild/<name>` under `/sys/fs/cgroup` and writes the [`Limits`],
//! [`Cgroup::add_process`] moves a process in (or, on cgroup v2, the sandbox clones straight into
//! it with `CLONE_INTO_CGROUP` and [`Cgroup::v2_dir_fd`]), [`Cgroup::oom_killed`] tells whether
//! the memory limit killed something, and dropping the [`Cgroup`] kills what is left in it and
//! removes its directories.
//!
//! Two layouts are supported:
//!
//! * **cgroup v2** (`/sys/fs/cgroup` is a `cgroup2` mount): one directory
//!   `/sys/fs/cgroup/rbuild/<name>`; the controllers the limits need are enabled in the
//!   `cgroup.subtree_control` of `/sys/fs/cgroup` and of `rbuild`; `memory.max` (and
//!   `memory.swap.max` = 0 where swap is accounted, so swap cannot extend the limit), `cpu.max`
//!   (`"<quota> 100000"`) and `pids.max`. Removal writes `cgroup.kill`.
//! * **cgroup v1 / hybrid** (`/sys/fs/cgroup` is a tmpfs holding one mount per controller): a
//!   directory `rbuild/<name>` in each hierarchy whose limit is set —
//!   `memory/…/memory.limit_in_bytes` (and `memory.memsw.limit_in_bytes`, the same value, where it
//!   exists), `cpu/…/cpu.cfs_period_us` = 100000 and `cpu.cfs_quota_us`, `pids/…/pids.max`.
//!   Removal sends `SIGKILL` to every process in `cgroup.procs` until it is empty, through pidfds
//!   so that a recycled pid is never signalled.
//!
//! The `rbuild` parent directories are shared by concurrent sandboxes and stay. Only the
//! controllers a limit needs are used. Running inside a cgroup namespace on v2 needs the
//! namespace's root to allow enabling controllers (no processes in it), as for any runtime.
//!
//! Every path is a fixed kernel path under `/sys/fs/cgroup` joined with the name, which is
//! checked (a single path component: no `/`, no `..`).

#![cfg_attr(test, allow(unsafe_code))]

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::{Mode, OFlags};
use rustix::process::{Pid, PidfdFlags, Signal};

/// Where cgroup filesystems are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The directory, in each hierarchy, that holds rbuild's sandbox cgroups.
const PARENT: &str = "rbuild";
/// `cpu.max` / `cpu.cfs_period_us`: 100 ms, Docker's period.
const CPU_PERIOD_US: u64 = 100_000;
/// The smallest quota the kernel accepts (1 ms).
const CPU_MIN_QUOTA_US: u64 = 1_000;
/// `statfs` magic numbers (`<linux/magic.h>`).
const CGROUP2_SUPER_MAGIC: u64 = 0x6367_7270;
const CGROUP_SUPER_MAGIC: u64 = 0x0027_e0eb;
/// How often, and how long apart, removal kills and retries `rmdir`: about 2 s in all.
const CLEANUP_ROUNDS: u32 = 200;
const CLEANUP_PAUSE: Duration = Duration::from_millis(10);

/// Resource limits of one sandbox; `None` is unlimited.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    /// Memory in bytes (`--memory`); swap does not extend it.
    pub memory: Option<u64>,
    /// CPUs as a fraction of one (`--cpus 1.5`): quota = cpus × 100 ms per 100 ms.
    pub cpus: Option<f64>,
    /// The most processes and threads at once.
    pub pids: Option<u64>,
}

impl Limits {
    /// Whether no limit is set (then the sandbox needs no cgroup).
    pub fn is_empty(&self) -> bool {
        self.memory.is_none() && self.cpus.is_none() && self.pids.is_none()
    }

    fn validate(&self) -> Result<(), CgroupError> {
        if self.memory == Some(0) {
            return Err(CgroupError::InvalidLimit(
                "a memory limit must be more than 0 bytes".into(),
            ));
        }
        if let Some(cpus) = self.cpus {
            if !(cpus.is_finite() && cpus > 0.0) {
                return Err(CgroupError::InvalidLimit(format!(
                    "a CPU limit must be a positive number, not {cpus}"
                )));
            }
        }
        if self.pids == Some(0) {
            return Err(CgroupError::InvalidLimit(
                "a pids limit must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// The CFS quota in µs per [`CPU_PERIOD_US`] for `cpus` CPUs (validated: finite, positive).
fn cpu_quota_us(cpus: f64) -> u64 {
    // Float-to-int `as` saturates; any real CPU count is far below u64::MAX / 100000.
    let quota = (cpus * CPU_PERIOD_US as f64).round() as u64;
    quota.max(CPU_MIN_QUOTA_US)
}

/// Why a cgroup could not be made, filled or read; names the file.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// The name is not a single, plain path component.
    #[error("invalid cgroup name {0:?}: it must be one path component without '/' or '..'")]
    InvalidName(String),
    /// A limit makes no sense (zero memory, a negative CPU count, …).
    #[error("invalid resource limit: {0}")]
    InvalidLimit(String),
    /// The machine cannot apply a limit: no cgroup filesystem, or a controller missing.
    #[error("cannot apply resource limits: {what} ({})", path.display())]
    Unsupported {
        /// What is missing.
        what: String,
        /// The file or directory that showed it.
        path: PathBuf,
    },
    /// A cgroup file or directory operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. `writing "33554432" to`.
        action: String,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

fn io_err(action: impl Into<String>, path: &Path) -> impl FnOnce(io::Error) -> CgroupError + '_ {
    let action = action.into();
    move |source| CgroupError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The controllers limits can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Controller {
    Memory,
    Cpu,
    Pids,
}

impl Controller {
    fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Cpu => "cpu",
            Controller::Pids => "pids",
        }
    }

    /// The controllers `limits` needs, in a fixed order.
    fn needed(limits: &Limits) -> Vec<Controller> {
        let mut v = Vec::new();
        if limits.memory.is_some() {
            v.push(Controller::Memory);
        }
        if limits.cpus.is_some() {
            v.push(Controller::Cpu);
        }
        if limits.pids.is_some() {
            v.push(Controller::Pids);
        }
        v
    }
}

#[derive(Debug)]
enum Layout {
    /// One directory in the unified hierarchy, and an fd of it for `CLONE_INTO_CGROUP`.
    V2 { dir: PathBuf, fd: Option<OwnedFd> },
    /// One directory per v1 hierarchy used.
    V1 { dirs: Vec<(Controller, PathBuf)> },
}

/// A cgroup made for one sandbox; removing it (Drop) kills what is left in it and removes its directories.
#[derive(Debug)]
pub struct Cgroup {
    layout: Layout,
}

impl Cgroup {
    /// Creates the cgroup(s) named `name` (e.g. `"rbuild-<hex id>"`) under an "rbuild" parent with `limits` applied.
    pub fn create(name: &str, limits: &Limits) -> Result<Cgroup, CgroupError> {
        Cgroup::create_at(Path::new(CGROUP_ROOT), name, limits)
    }

    /// [`Cgroup::create`] with the cgroup filesystems mounted at `root`.
    fn create_at(root: &Path, name: &str, limits: &Limits) -> Result<Cgroup, CgroupError> {
        check_name(name)?;
        limits.validate()?;
        let needed = Controller::needed(limits);
        match fs_magic(root)? {
            CGROUP2_SUPER_MAGIC => Cgroup::create_v2(root, name, limits, &needed),
            _ => Cgroup::create_v1(root, name, limits, &needed),
        }
    }

    fn create_v2(
        root: &Path,
        name: &str,
        limits: &Limits,
        needed: &[Controller],
    ) -> Result<Cgroup, CgroupError> {
        let available_file = root.join("cgroup.controllers");
        let available = read_words(&available_file)?;
        for c in needed {
            if !available.contains(c.name()) {
                return Err(CgroupError::Unsupported {
                    what: format!("the {} controller is not available", c.name()),
                    path: available_file,
                });
            }
        }
        let parent = root.join(PARENT);
        enable_controllers(root, needed)?;
        make_dir(&parent, true)?;
        enable_controllers(&parent, needed)?;

        let dir = parent.join(name);
        make_dir(&dir, false)?;
        // From here on, dropping `cgroup` (on an error below) removes the directory.
        let mut cgroup = Cgroup {
            layout: Layout::V2 {
                dir: dir.clone(),
                fd: None,
            },
        };
        let fd = rustix::fs::open(
            &dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| CgroupError::Io {
            action: "opening".into(),
            path: dir.clone(),
            source: e.into(),
        })?;
        if let Layout::V2 { fd: slot, .. } = &mut cgroup.layout {
            *slot = Some(fd);
        }

        if let Some(bytes) = limits.memory {
            write_value(&dir.join("memory.max"), &bytes.to_string())?;
            // Only where swap is accounted (else the file does not exist, nor does swap usage).
            write_if_exists(&dir.join("memory.swap.max"), "0")?;
        }
        if let Some(cpus) = limits.cpus {
            let value = format!("{} {CPU_PERIOD_US}", cpu_quota_us(cpus));
            write_value(&dir.join("cpu.max"), &value)?;
        }
        if let Some(pids) = limits.pids {
            write_value(&dir.join("pids.max"), &pids.to_string())?;
        }
        Ok(cgroup)
    }

    fn create_v1(
        root: &Path,
        name: &str,
        limits: &Limits,
        needed: &[Controller],
    ) -> Result<Cgroup, CgroupError> {
        // Check every hierarchy before creating anything.
        for c in needed {
            let hierarchy = root.join(c.name());
            let is_v1 = matches!(fs_magic(&hierarchy), Ok(CGROUP_SUPER_MAGIC));
            if !is_v1 {
                return Err(CgroupError::Unsupported {
                    what: format!("no cgroup v1 hierarchy of the {} controller", c.name()),
                    path: hierarchy,
                });
            }
        }
        let mut cgroup = Cgroup {
            layout: Layout::V1 { dirs: Vec::new() },
        };
        for &c in needed {
            let parent = root.join(c.name()).join(PARENT);
            make_dir(&parent, true)?;
            let dir = parent.join(name);
            make_dir(&dir, false)?;
            if let Layout::V1 { dirs } = &mut cgroup.layout {
                dirs.push((c, dir.clone()));
            }
            match c {
                Controller::Memory => {
                    if let Some(bytes) = limits.memory {
                        let value = bytes.to_string();
                        write_value(&dir.join("memory.limit_in_bytes"), &value)?;
                        // memsw = memory + swap: the same value leaves no room for swap. It is
                        // absent without swap accounting.
                        write_if_exists(&dir.join("memory.memsw.limit_in_bytes"), &value)?;
                    }
                }
                Controller::Cpu => {
                    if let Some(cpus) = limits.cpus {
                        let period = CPU_PERIOD_US.to_string();
                        write_value(&dir.join("cpu.cfs_period_us"), &period)?;
                        let quota = cpu_quota_us(cpus).to_string();
                        write_value(&dir.join("cpu.cfs_quota_us"), &quota)?;
                    }
                }
                Controller::Pids => {
                    if let Some(pids) = limits.pids {
                        write_value(&dir.join("pids.max"), &pids.to_string())?;
                    }
                }
            }
        }
        Ok(cgroup)
    }

    /// For cgroup v2: an O_RDONLY|O_DIRECTORY fd of the cgroup dir usable with clone3's CLONE_INTO_CGROUP; None on v1.
    pub fn v2_dir_fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.layout {
            Layout::V2 { fd: Some(fd), .. } => Some(fd.as_fd()),
            _ => None,
        }
    }

    /// Moves process `pid` into the cgroup(s) (writes cgroup.procs in every hierarchy used).
    pub fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        if pid <= 0 {
            return Err(CgroupError::Io {
                action: format!("moving process {pid} into"),
                path: self
                    .dirs()
                    .first()
                    .map(|d| d.to_path_buf())
                    .unwrap_or_default(),
                source: io::Error::from_raw_os_error(libc::ESRCH),
            });
        }
        for dir in self.dirs() {
            write_value(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Whether the memory limit killed a process (v2: memory.events oom_kill > 0; v1: memory.oom_control oom_kill or memory.failcnt/under_oom).
    ///
    /// On v1 this reads `oom_kill` and `under_oom` of `memory.oom_control`, not
    /// `memory.failcnt`: the limit is also hit, without anyone being killed, whenever page cache
    /// is reclaimed at the limit (any build writing big files), so `failcnt` would give false
    /// positives.
    pub fn oom_killed(&self) -> bool {
        match &self.layout {
            Layout::V2 { dir, .. } => {
                counter(&dir.join("memory.events"), "oom_kill").is_some_and(|n| n > 0)
            }
            Layout::V1 { dirs } => {
                dirs.iter()
                    .filter(|(c, _)| *c == Controller::Memory)
                    .any(|(_, dir)| {
                        let file = dir.join("memory.oom_control");
                        counter(&file, "oom_kill").is_some_and(|n| n > 0)
                            || counter(&file, "under_oom").is_some_and(|n| n > 0)
                    })
            }
        }
    }

    /// Kills what is left in the cgroup and removes its directories now, with the error
    /// dropping would swallow.
    pub fn remove(mut self) -> Result<(), CgroupError> {
        self.cleanup()
    }

    fn dirs(&self) -> Vec<&Path> {
        match &self.layout {
            Layout::V2 { dir, .. } => vec![dir.as_path()],
            Layout::V1 { dirs } => dirs.iter().map(|(_, d)| d.as_path()).collect(),
        }
    }

    /// Kills every process, removes every directory; forgets them so a second call does nothing.
    fn cleanup(&mut self) -> Result<(), CgroupError> {
        let dirs: Vec<PathBuf> = match &mut self.layout {
            Layout::V2 { dir, fd } => {
                *fd = None;
                if dir.as_os_str().is_empty() {
                    Vec::new()
                } else {
                    vec![std::mem::take(dir)]
                }
            }
            Layout::V1 { dirs } => std::mem::take(dirs).into_iter().map(|(_, d)| d).collect(),
        };
        let mut first_error = None;
        for dir in &dirs {
            if let Err(e) = kill_all(dir).and_then(|()| remove_dir(dir)) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Errors cannot be reported from here; `remove` reports them.
        let _ = self.cleanup();
    }
}

/// A name must be one plain path component.
fn check_name(name: &str) -> Result<(), CgroupError> {
    let bad = name.is_empty()
        || name.starts_with('.')
        || name.contains("..")
        || name.contains(['/', '\0', '\n']);
    if bad {
        return Err(CgroupError::InvalidName(name.to_string()));
    }
    Ok(())
}

fn fs_magic(path: &Path) -> Result<u64, CgroupError> {
    let st = rustix::fs::statfs(path).map_err(|e| CgroupError::Io {
        action: "statfs of".into(),
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    // `f_type` is a signed word; the magic numbers are 32-bit.
    #[allow(clippy::unnecessary_cast)]
    Ok(st.f_type as u64 & 0xffff_ffff)
}

fn make_dir(path: &Path, may_exist: bool) -> Result<(), CgroupError> {
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if may_exist && e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_err("creating", path)(e)),
    }
}

fn write_value(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(io_err(format!("writing {value:?} to"), path))
}

fn write_if_exists(path: &Path, value: &str) -> Result<(), CgroupError> {
    match fs::write(path, value) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other.map_err(io_err(format!("writing {value:?} to"), path)),
    }
}

/// The whitespace-separated words of a file (`cgroup.controllers`, `cgroup.subtree_control`).
fn read_words(path: &Path) -> Result<BTreeSet<String>, CgroupError> {
    let text = fs::read_to_string(path).map_err(io_err("reading", path))?;
    Ok(text.split_whitespace().map(str::to_string).collect())
}

/// Enables `controllers` for the children of the v2 cgroup `dir`, one at a time so that an
/// error names the controller.
fn enable_controllers(dir: &Path, controllers: &[Controller]) -> Result<(), CgroupError> {
    let file = dir.join("cgroup.subtree_control");
    let enabled = read_words(&file)?;
    for c in controllers {
        if !enabled.contains(c.name()) {
            write_value(&file, &format!("+{}", c.name()))?;
        }
    }
    Ok(())
}

/// The value of `key` in a flat-keyed file (`memory.events`, `memory.oom_control`).
fn counter(path: &Path, key: &str) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        if k == key {
            v.trim().parse().ok()
        } else {
            None
        }
    })
}

/// The pids in `dir/cgroup.procs`; none if the directory is gone.
fn procs(dir: &Path) -> Result<Vec<i32>, CgroupError> {
    let file = dir.join("cgroup.procs");
    match fs::read_to_string(&file) {
        Ok(text) => Ok(text
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_err("reading", &file)(e)),
    }
}

/// Kills every process in the cgroup `dir`: `cgroup.kill` where the kernel has it (v2, 5.14+),
/// else `SIGKILL` to each listed process until the list stays empty (bounded). Processes
/// still exiting are waited for by [`remove_dir`]'s retries.
fn kill_all(dir: &Path) -> Result<(), CgroupError> {
    let kill_file = dir.join("cgroup.kill");
    if kill_file.exists() {
        return write_value(&kill_file, "1");
    }
    for _ in 0..CLEANUP_ROUNDS {
        let listed = procs(dir)?;
        if listed.is_empty() {
            return Ok(());
        }
        // A pidfd pins its process, so once a pid is listed again after its pidfd was opened, the
        // pidfd is of a process in this cgroup, not of an unrelated one that reused the pid.
        let pidfds: Vec<(i32, Option<OwnedFd>)> = listed
            .iter()
            .filter_map(|&p| Some((p, Pid::from_raw(p)?)))
            .map(|(p, pid)| {
                (
                    p,
                    rustix::process::pidfd_open(pid, PidfdFlags::empty()).ok(),
                )
            })
            .collect();
        let confirmed: BTreeSet<i32> = procs(dir)?.into_iter().collect();
        for (p, pidfd) in pidfds {
            if !confirmed.contains(&p) {
                continue;
            }
            match pidfd {
                Some(fd) => {
                    let _ = rustix::process::pidfd_send_signal(&fd, Signal::KILL);
                }
                // Kernels before 5.3 have no pidfds; a bare kill is all there is.
                None => {
                    if let Some(pid) = Pid::from_raw(p) {
                        let _ = rustix::process::kill_process(pid, Signal::KILL);
                    }
                }
            }
        }
        std::thread::sleep(CLEANUP_PAUSE);
    }
    let left = procs(dir)?;
    if left.is_empty() {
        Ok(())
    } else {
        Err(CgroupError::Io {
            action: format!("killing processes {left:?} in"),
            path: dir.to_path_buf(),
            source: io::Error::from_raw_os_error(libc::EBUSY),
        })
    }
}

/// Removes the cgroup directory, retrying while killed processes finish exiting.
fn remove_dir(dir: &Path) -> Result<(), CgroupError> {
    let mut rounds = 0;
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && rounds < CLEANUP_ROUNDS => {
                rounds += 1;
                std::thread::sleep(CLEANUP_PAUSE);
            }
            Err(e) => return Err(io_err("removing", dir)(e)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    use std::io::Write;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::{AtomicU32, Ordering};

    fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    /// A name unique to this test process and call.
    fn unique_name(tag: &str) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        format!("rbuild-test-{tag}-{}-{n}", std::process::id())
    }

    /// Creates the cgroup, or None (test skipped) when not root or cgroups are read-only.
    fn create_or_skip(tag: &str, limits: &Limits) -> Option<Cgroup> {
        if !is_root() {
            eprintln!("SKIPPED: cgroup tests need root");
            return None;
        }
        match Cgroup::create(&unique_name(tag), limits) {
            Ok(cg) => Some(cg),
            Err(CgroupError::Io { source, .. }) if source.raw_os_error() == Some(libc::EROFS) => {
                eprintln!("SKIPPED: /sys/fs/cgroup is read-only here");
                None
            }
            Err(e) => panic!("creating a cgroup: {e}"),
        }
    }

    /// Starts `sh -c script` that first waits for a line on stdin, so it can be moved into a
    /// cgroup before it does anything.
    fn spawn_waiting(script: &str) -> Child {
        Command::new("/bin/sh")
            .args(["-c", &format!("read _go; {script}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn go(child: &mut Child) {
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"go\n").unwrap();
    }

    fn read(dir: &Path, file: &str) -> String {
        fs::read_to_string(dir.join(file))
            .unwrap()
            .trim()
            .to_string()
    }

    fn dir_of(cg: &Cgroup, c: Controller) -> PathBuf {
        match &cg.layout {
            Layout::V2 { dir, .. } => dir.clone(),
            Layout::V1 { dirs } => dirs.iter().find(|d| d.0 == c).unwrap().1.clone(),
        }
    }

    #[test]
    fn names_and_limits_are_checked() {
        for bad in [
            "", ".", "..", "a/b", "../x", "x/..", "a..b", ".hidden", "a\nb",
        ] {
            assert!(
                matches!(check_name(bad), Err(CgroupError::InvalidName(_))),
                "{bad:?}"
            );
        }
        check_name("rbuild-0123abcd").unwrap();
        for bad in [
            Limits {
                memory: Some(0),
                ..Limits::default()
            },
            Limits {
                cpus: Some(0.0),
                ..Limits::default()
            },
            Limits {
                cpus: Some(-1.0),
                ..Limits::default()
            },
            Limits {
                cpus: Some(f64::NAN),
                ..Limits::default()
            },
            Limits {
                cpus: Some(f64::INFINITY),
                ..Limits::default()
            },
            Limits {
                pids: Some(0),
                ..Limits::default()
            },
        ] {
            assert!(matches!(
                Cgroup::create("rbuild-x", &bad),
                Err(CgroupError::InvalidLimit(_))
            ));
        }
        assert!(Limits::default().is_empty());
        assert!(!Limits {
            pids: Some(1),
            ..Limits::default()
        }
        .is_empty());
        assert_eq!(cpu_quota_us(0.5), 50_000);
        assert_eq!(cpu_quota_us(2.0), 200_000);
        assert_eq!(cpu_quota_us(0.001), CPU_MIN_QUOTA_US);
    }

    #[test]
    fn memory_limit_oom_kills_and_drop_removes_the_cgroup() {
        let limits = Limits {
            memory: Some(32 << 20),
            cpus: Some(0.5),
            pids: None,
        };
        let Some(cg) = create_or_skip("mem", &limits) else {
            return;
        };
        let mem = dir_of(&cg, Controller::Memory);
        let cpu = dir_of(&cg, Controller::Cpu);
        match &cg.layout {
            Layout::V2 { dir, .. } => {
                assert!(cg.v2_dir_fd().is_some());
                assert_eq!(read(dir, "memory.max"), "33554432");
                assert_eq!(read(dir, "cpu.max"), "50000 100000");
            }
            Layout::V1 { dirs } => {
                assert!(cg.v2_dir_fd().is_none());
                assert_eq!(
                    dirs.len(),
                    2,
                    "only the memory and cpu hierarchies: {dirs:?}"
                );
                assert_eq!(read(&mem, "memory.limit_in_bytes"), "33554432");
                if mem.join("memory.memsw.limit_in_bytes").exists() {
                    assert_eq!(read(&mem, "memory.memsw.limit_in_bytes"), "33554432");
                }
                assert_eq!(read(&cpu, "cpu.cfs_period_us"), "100000");
                assert_eq!(read(&cpu, "cpu.cfs_quota_us"), "50000");
            }
        }
        assert!(!cg.oom_killed());

        // dd allocates a 200 MB buffer and fills it from /dev/zero.
        let mut child =
            spawn_waiting("exec dd if=/dev/zero of=/dev/null bs=200M count=1 2>/dev/null");
        cg.add_process(child.id() as i32).unwrap();
        let listed = read(&mem, "cgroup.procs");
        assert!(
            listed
                .split_whitespace()
                .any(|p| p == child.id().to_string()),
            "{listed}"
        );
        go(&mut child);
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
        assert!(cg.oom_killed());

        let dirs: Vec<PathBuf> = cg.dirs().iter().map(|d| d.to_path_buf()).collect();
        assert!(dirs.iter().all(|d| d.is_dir()));
        drop(cg);
        for d in &dirs {
            assert!(!d.exists(), "{} is left", d.display());
            assert!(d.parent().unwrap().is_dir(), "the shared parent stays");
        }
    }

    #[test]
    fn pids_limit_stops_forks() {
        let limits = Limits {
            pids: Some(5),
            ..Limits::default()
        };
        let Some(cg) = create_or_skip("pids", &limits) else {
            return;
        };
        let dir = dir_of(&cg, Controller::Pids);
        assert_eq!(read(&dir, "pids.max"), "5");
        let mut child = spawn_waiting(
            "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do sleep 1 & done; wait",
        );
        cg.add_process(child.id() as i32).unwrap();
        go(&mut child);
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{:?} {stderr}", out.status);
        assert!(stderr.to_lowercase().contains("fork"), "{stderr}");
        if let Some(max) = counter(&dir.join("pids.events"), "max") {
            assert!(max > 0);
        }
        cg.remove().unwrap();
        assert!(!dir.exists());
    }

    #[test]
    fn drop_kills_what_is_left() {
        let limits = Limits {
            pids: Some(100),
            ..Limits::default()
        };
        let Some(cg) = create_or_skip("kill", &limits) else {
            return;
        };
        let dir = dir_of(&cg, Controller::Pids);
        // A shell with a child of its own, both still running when the cgroup goes.
        let mut child = spawn_waiting("sleep 60 & sleep 60; wait");
        cg.add_process(child.id() as i32).unwrap();
        go(&mut child);
        std::thread::sleep(Duration::from_millis(100));
        assert!(read(&dir, "cgroup.procs").split_whitespace().count() >= 2);
        drop(cg);
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
        assert!(!dir.exists());
    }

    /// The v2 code path against a real cgroup2 mount: the hybrid layout's `unified` hierarchy
    /// (no controllers in it) or, on a pure v2 machine, `/sys/fs/cgroup` itself. Checks the
    /// directory fd with a real `clone3(CLONE_INTO_CGROUP)`, `cgroup.kill` and removal.
    #[test]
    fn v2_clone_into_cgroup_and_kill() {
        if !is_root() {
            eprintln!("SKIPPED: cgroup tests need root");
            return;
        }
        let root = [
            Path::new(CGROUP_ROOT).to_path_buf(),
            Path::new(CGROUP_ROOT).join("unified"),
        ]
        .into_iter()
        .find(|r| matches!(fs_magic(r), Ok(CGROUP2_SUPER_MAGIC)));
        let Some(root) = root else {
            eprintln!("SKIPPED: no cgroup2 mount");
            return;
        };
        let cg = match Cgroup::create_at(&root, &unique_name("v2"), &Limits::default()) {
            Ok(cg) => cg,
            Err(e) => panic!("creating a v2 cgroup under {}: {e}", root.display()),
        };
        let Layout::V2 { dir, .. } = &cg.layout else {
            panic!("not the v2 layout: {cg:?}");
        };
        let dir = dir.clone();
        let fd = cg.v2_dir_fd().expect("a v2 cgroup has a directory fd");

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
        const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
        let args = CloneArgs {
            flags: CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: u64::try_from(std::os::fd::AsRawFd::as_raw_fd(&fd)).unwrap(),
            ..CloneArgs::default()
        };
        // SAFETY: clone3 without CLONE_VM is a fork; the child only calls async-signal-safe
        // functions (pause, _exit) and never returns into Rust code.
        let pid = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        if pid == 0 {
            // SAFETY: see above.
            unsafe {
                libc::pause();
                libc::_exit(0);
            }
        }
        assert!(pid > 0, "clone3: {}", io::Error::last_os_error());
        let listed = read(&dir, "cgroup.procs");
        assert_eq!(listed, pid.to_string(), "the child starts in the cgroup");

        drop(cg);
        let mut status = 0;
        // SAFETY: waits for our own child, writing the local `status`.
        let waited = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
        assert_eq!(waited as libc::c_long, pid);
        assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL);
        assert!(!dir.exists());
    }

    #[test]
    fn missing_v2_controller_is_reported_and_leaves_nothing() {
        if !is_root() {
            eprintln!("SKIPPED: cgroup tests need root");
            return;
        }
        // Only meaningful where a cgroup2 mount lacks the memory controller (hybrid layouts).
        let unified = Path::new(CGROUP_ROOT).join("unified");
        if !matches!(fs_magic(&unified), Ok(CGROUP2_SUPER_MAGIC))
            || read_words(&unified.join("cgroup.controllers"))
                .unwrap()
                .contains("memory")
        {
            eprintln!("SKIPPED: no cgroup2 mount without the memory controller");
            return;
        }
        let name = unique_name("nomem");
        let limits = Limits {
            memory: Some(1 << 30),
            ..Limits::default()
        };
        let err = Cgroup::create_at(&unified, &name, &limits).unwrap_err();
        assert!(matches!(err, CgroupError::Unsupported { .. }), "{err}");
        assert!(err.to_string().contains("memory"), "{err}");
        assert!(!unified.join(PARENT).join(&name).exists());
    }
}
