//! The containers of a store, on disk: one directory per container under
//! `<store root>/containers/<id>/` holding
//!
//! ```text
//! config.json   what was asked for (ContainerSpec): image, command, env, mounts, limits …
//! state.json    what is happening (ContainerState): status, pids, exit code, times
//! upper/ work/  the overlay upper dir (the container's changes) and its work dir
//! rootfs/       an empty dir where the sandbox attaches its tree inside its own namespace
//! container.log what the container printed
//! ```
//!
//! Ids are 64 random hex digits (as Docker's); names are given (`--name`) or made of two random
//! words, and unique — creation and removal hold an exclusive `flock` on
//! `containers/.lock`. Both JSON files are replaced atomically (temp file + rename).
//!
//! A running container's state records the pid (and start time, to tell a recycled pid) of its
//! first process and of its monitor (the `rbuild run` or supervisor process that waits for it
//! and records its end). When the monitor is gone but the state still says running (it was
//! killed), the container died with it (the sandbox's parent-death signal is SIGKILL):
//! [`Containers::refresh`] records that as exit code 137.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rbuild_cache::Store;
use serde::{Deserialize, Serialize};

use crate::container_error::ContainerError;

/// The directory under the store root holding the containers.
pub const CONTAINERS_DIR: &str = "containers";

/// The most a record file may hold (they are a few KiB).
const MAX_RECORD_BYTES: u64 = 4 << 20;

/// The network a container uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// The host's network stack (rbuild has no bridge network).
    #[default]
    Default,
    /// A network namespace with only loopback.
    None,
    /// The host's network stack.
    Host,
}

/// One mount of a container, as recorded (sources are reopened at each start).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum MountSpec {
    /// A host path (`-v /host:/dst`).
    Bind {
        /// The absolute host path.
        source: PathBuf,
        /// The absolute path in the container.
        target: String,
        /// Mounted read-only (`:ro`).
        readonly: bool,
    },
    /// A named or anonymous volume (`-v NAME:/dst`, `-v /dst`, the image's `VOLUME`s).
    Volume {
        /// The volume's name.
        name: String,
        /// The absolute path in the container.
        target: String,
        /// Mounted read-only (`:ro`).
        readonly: bool,
        /// Made for this container only; removed with it when it is removed with `--rm` or
        /// `rm -v`.
        anonymous: bool,
        /// Do not fill an empty volume with the image's files at the target (`:nocopy`).
        nocopy: bool,
    },
    /// A tmpfs (`--tmpfs /dst:size=…`).
    Tmpfs {
        /// The absolute path in the container.
        target: String,
        /// Its size limit in bytes.
        size: Option<u64>,
        /// The permission bits of its root.
        mode: u32,
        /// Mounted read-only.
        readonly: bool,
    },
}

impl MountSpec {
    /// The path in the container.
    pub fn target(&self) -> &str {
        match self {
            MountSpec::Bind { target, .. }
            | MountSpec::Volume { target, .. }
            | MountSpec::Tmpfs { target, .. } => target,
        }
    }
}

/// What a container was created with; fixed for its lifetime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// 64 hex digits.
    pub id: String,
    /// Unique among the store's containers.
    pub name: String,
    /// The image as the user named it.
    pub image: String,
    /// The image's manifest digest and media type.
    pub image_manifest: String,
    /// The manifest's media type.
    pub image_media_type: String,
    /// The image ID (config digest).
    pub image_id: String,
    /// When it was created, seconds since the epoch.
    pub created: i64,
    /// The command (entrypoint and arguments).
    pub command: Vec<String>,
    /// The environment (`KEY=value`); `HOME` is added at each start from the user's passwd
    /// entry when missing.
    pub env: Vec<String>,
    /// The absolute working directory (created at start when missing).
    pub working_dir: String,
    /// The user as given (`USER` or `-u`), resolved at each start in the container's files.
    pub user: String,
    /// The hostname.
    pub hostname: String,
    /// The network.
    pub network: NetworkMode,
    /// The root filesystem is read-only (`--read-only`).
    pub read_only: bool,
    /// Mounts, in the order given.
    pub mounts: Vec<MountSpec>,
    /// `--memory` in bytes.
    pub memory: Option<u64>,
    /// `--cpus`.
    pub cpus: Option<f64>,
    /// `-t`: a terminal.
    pub tty: bool,
    /// `-i`: standard input is kept open.
    pub interactive: bool,
    /// `--rm`: removed when it ends.
    pub auto_remove: bool,
    /// The signal `stop` sends first (the image's `STOPSIGNAL`; SIGTERM when empty).
    pub stop_signal: String,
}

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Made, never started (or its start failed).
    #[default]
    Created,
    /// Its process runs.
    Running,
    /// Its process ended.
    Exited,
}

/// What is happening to a container; changes as it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ContainerState {
    /// The status.
    pub status: Status,
    /// The first process's pid (rbuild's PID namespace) while running.
    pub pid: Option<i32>,
    /// Its start time (`/proc/PID/stat` field 22), to tell a recycled pid.
    pub pid_start: Option<u64>,
    /// The monitor's pid (the process waiting for the container) while running.
    pub monitor_pid: Option<i32>,
    /// Its start time.
    pub monitor_start: Option<u64>,
    /// The exit code of the last run (128 + signal for a signal).
    pub exit_code: Option<i32>,
    /// The memory limit's OOM killer ended the last run.
    pub oom_killed: bool,
    /// When the last run started, seconds since the epoch.
    pub started: Option<i64>,
    /// When the last run ended.
    pub finished: Option<i64>,
    /// Mount points the running sandbox created in the upper dir (removed when it ends, left
    /// out of a commit).
    pub stubs: Vec<PathBuf>,
    /// `(path, mode, uid, gid)` of the existing directories they were created in.
    pub stub_parents: Vec<(PathBuf, u32, u32, u32)>,
    /// Why the last start failed.
    pub error: Option<String>,
}

/// A container: its spec, its state as last read, and its directory.
#[derive(Debug, Clone)]
pub struct Container {
    /// What it was created with.
    pub spec: ContainerSpec,
    /// Its state.
    pub state: ContainerState,
    dir: PathBuf,
}

impl Container {
    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The overlay upper dir: the container's changes.
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }

    /// The overlay work dir.
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }

    /// The (empty) directory the sandbox attaches its tree on.
    pub fn attach_dir(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    /// The log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("container.log")
    }

    /// The first 12 hex digits of the id.
    pub fn short_id(&self) -> &str {
        self.spec.id.get(..12).unwrap_or(&self.spec.id)
    }

    /// Whether the state says running.
    pub fn is_running(&self) -> bool {
        self.state.status == Status::Running
    }

    /// Writes the state (atomically).
    pub fn save_state(&self) -> Result<(), ContainerError> {
        write_json(&self.dir.join("state.json"), &self.state)
    }

    /// Re-reads the state from disk.
    pub fn reload(&mut self) -> Result<(), ContainerError> {
        self.state = read_json(&self.dir.join("state.json"))?;
        Ok(())
    }
}

/// The containers of one store.
#[derive(Debug, Clone)]
pub struct Containers {
    dir: PathBuf,
}

/// An exclusive lock on the container list (held while creating or removing).
#[derive(Debug)]
pub struct ListLock {
    _file: File,
}

impl Containers {
    /// The containers of `store` (the directory is created on first use).
    pub fn open(store: &Store) -> Result<Containers, ContainerError> {
        let dir = store.root().join(CONTAINERS_DIR);
        private_dir(&dir)?;
        Ok(Containers { dir })
    }

    /// Takes the list lock (blocking).
    pub fn lock(&self) -> Result<ListLock, ContainerError> {
        let path = self.dir.join(".lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(ContainerError::io(format!("opening {}", path.display())))?;
        loop {
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive) {
                Ok(()) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    return Err(ContainerError::errno(format!("locking {}", path.display()))(e))
                }
            }
        }
        Ok(ListLock { _file: file })
    }

    /// Records a new container from `spec`; its `id` (unless already one) and `name` are filled
    /// in here: a new random id, and `name` unless it is set (then it must be valid and unused). Makes its
    /// directories; the upper dir gets `root_mode`/`root_owner` (the image's `/`).
    pub fn create(
        &self,
        mut spec: ContainerSpec,
        root_mode: u32,
        root_owner: (u32, u32),
    ) -> Result<Container, ContainerError> {
        let _lock = self.lock()?;
        let existing = self.list_unlocked()?;
        if spec.name.is_empty() {
            spec.name = loop {
                let candidate = random_name()?;
                if !existing.iter().any(|c| c.spec.name == candidate) {
                    break candidate;
                }
            };
        } else {
            validate_name("container", &spec.name)?;
            if let Some(c) = existing.iter().find(|c| c.spec.name == spec.name) {
                return Err(ContainerError::NameInUse {
                    name: spec.name.clone(),
                    id: c.spec.id.clone(),
                });
            }
        }
        if !is_id(&spec.id) {
            spec.id = random_hex(32)?;
        }
        let dir = self.dir.join(&spec.id);
        private_dir(&dir)?;
        let container = Container {
            spec,
            state: ContainerState::default(),
            dir,
        };
        let made = (|| {
            for d in [container.work(), container.attach_dir()] {
                private_dir(&d)?;
            }
            let upper = container.upper();
            fs::create_dir(&upper)
                .map_err(ContainerError::io(format!("creating {}", upper.display())))?;
            std::os::unix::fs::chown(&upper, Some(root_owner.0), Some(root_owner.1))
                .map_err(ContainerError::io(format!("chown {}", upper.display())))?;
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&upper, fs::Permissions::from_mode(root_mode & 0o7777))
                .map_err(ContainerError::io(format!("chmod {}", upper.display())))?;
            write_json(&container.dir.join("config.json"), &container.spec)?;
            container.save_state()
        })();
        if let Err(e) = made {
            let _ = fs::remove_dir_all(&container.dir);
            return Err(e);
        }
        Ok(container)
    }

    /// Every container, oldest first, with stale states fixed (see [`Containers::refresh`]).
    pub fn list(&self) -> Result<Vec<Container>, ContainerError> {
        let mut all = self.list_unlocked()?;
        for c in &mut all {
            self.refresh(c)?;
        }
        Ok(all)
    }

    fn list_unlocked(&self) -> Result<Vec<Container>, ContainerError> {
        let mut out = Vec::new();
        let entries = fs::read_dir(&self.dir).map_err(ContainerError::io(format!(
            "reading {}",
            self.dir.display()
        )))?;
        for entry in entries {
            let entry = entry.map_err(ContainerError::io(format!(
                "reading {}",
                self.dir.display()
            )))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !is_id(name) {
                continue;
            }
            match self.load(name) {
                Ok(c) => out.push(c),
                // Removed meanwhile, or half-made by a create that failed.
                Err(ContainerError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| (a.spec.created, &a.spec.id).cmp(&(b.spec.created, &b.spec.id)));
        Ok(out)
    }

    fn load(&self, id: &str) -> Result<Container, ContainerError> {
        let dir = self.dir.join(id);
        let spec: ContainerSpec = read_json(&dir.join("config.json"))?;
        let state: ContainerState = read_json(&dir.join("state.json"))?;
        Ok(Container { spec, state, dir })
    }

    /// The container with this full id, name, or unique id prefix (state refreshed).
    pub fn find(&self, what: &str) -> Result<Container, ContainerError> {
        let all = self.list_unlocked()?;
        let found = if let Some(c) = all
            .iter()
            .find(|c| c.spec.id == what || c.spec.name == what)
        {
            c.clone()
        } else {
            let matches: Vec<&Container> = all
                .iter()
                .filter(|c| !what.is_empty() && c.spec.id.starts_with(what))
                .collect();
            match matches.as_slice() {
                [one] => (*one).clone(),
                [] => return Err(ContainerError::NoSuchContainer(what.to_string())),
                _ => return Err(ContainerError::Ambiguous(what.to_string())),
            }
        };
        let mut found = found;
        self.refresh(&mut found)?;
        Ok(found)
    }

    /// Fixes a stale state: a container recorded as running whose monitor is gone died with
    /// it (SIGKILL, 137).
    pub fn refresh(&self, c: &mut Container) -> Result<(), ContainerError> {
        if c.state.status != Status::Running {
            return Ok(());
        }
        let monitor_alive = match (c.state.monitor_pid, c.state.monitor_start) {
            (Some(pid), Some(start)) => process_alive(pid, start),
            _ => false,
        };
        if monitor_alive {
            return Ok(());
        }
        // The monitor may have just recorded the end: look again before deciding.
        c.reload()?;
        if c.state.status != Status::Running {
            return Ok(());
        }
        c.state.status = Status::Exited;
        c.state.exit_code = Some(137);
        c.state.pid = None;
        c.state.pid_start = None;
        c.state.monitor_pid = None;
        c.state.monitor_start = None;
        c.state.finished = Some(now());
        c.save_state()
    }

    /// Deletes a (stopped) container's directory. The caller checked it is not running.
    pub fn delete(&self, c: &Container) -> Result<(), ContainerError> {
        let _lock = self.lock()?;
        // Renamed first, so that nobody finds a half-removed container.
        let trash = self.dir.join(format!(".removing-{}", c.spec.id));
        match fs::rename(&c.dir, &trash) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(ContainerError::io(format!("removing {}", c.dir.display()))(
                    e,
                ))
            }
        }
        // std's remove_dir_all never follows symlinks (the upper dir holds image files).
        fs::remove_dir_all(&trash)
            .map_err(ContainerError::io(format!("removing {}", trash.display())))
    }
}

/// Whether `name` is a container id (64 lowercase hex digits).
fn is_id(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Checks a container or volume name: `[a-zA-Z0-9][a-zA-Z0-9_.-]*` (Docker's rule).
pub fn validate_name(what: &'static str, name: &str) -> Result<(), ContainerError> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.len() <= 255;
    if ok {
        Ok(())
    } else {
        Err(ContainerError::InvalidName {
            what,
            name: name.to_string(),
        })
    }
}

/// `n` random bytes as hex.
pub(crate) fn random_hex(n: usize) -> Result<String, ContainerError> {
    let mut buf = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        match rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(k) => filled += k,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(ContainerError::errno("getrandom")(e)),
        }
    }
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

const ADJECTIVES: &[&str] = &[
    "admiring",
    "bold",
    "brave",
    "busy",
    "calm",
    "clever",
    "cool",
    "dazzling",
    "eager",
    "elegant",
    "epic",
    "focused",
    "friendly",
    "gallant",
    "gifted",
    "happy",
    "hopeful",
    "jolly",
    "keen",
    "kind",
    "lucid",
    "modest",
    "nifty",
    "optimistic",
    "peaceful",
    "quirky",
    "relaxed",
    "serene",
    "sharp",
    "stoic",
    "sweet",
    "tender",
    "upbeat",
    "vibrant",
    "wizardly",
    "zealous",
];

const SURNAMES: &[&str] = &[
    "agnesi", "babbage", "bardeen", "bohr", "cori", "curie", "darwin", "dijkstra", "einstein",
    "euler", "faraday", "fermi", "franklin", "gauss", "hamilton", "hopper", "hypatia", "kepler",
    "knuth", "lamarr", "lovelace", "meitner", "mendel", "newton", "noether", "pascal", "ritchie",
    "shannon", "thompson", "turing", "volta", "wozniak", "yalow", "zuse",
];

/// A random `adjective_surname` name, as Docker makes.
fn random_name() -> Result<String, ContainerError> {
    let hex = random_hex(4)?;
    let n = u32::from_str_radix(&hex, 16).unwrap_or(0) as usize;
    Ok(format!(
        "{}_{}",
        ADJECTIVES[n % ADJECTIVES.len()],
        SURNAMES[(n / ADJECTIVES.len()) % SURNAMES.len()]
    ))
}

/// The current time, seconds since the epoch.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A process's start time (`/proc/PID/stat` field 22), `None` when it does not exist or is a
/// zombie.
pub(crate) fn process_start(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold anything: split after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (the state).
    if matches!(fields.first(), Some(&"Z") | Some(&"X") | Some(&"x")) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Whether process `pid` runs and is the one that started at `start`.
pub(crate) fn process_alive(pid: i32, start: u64) -> bool {
    process_start(pid) == Some(start)
}

/// Makes a 0700 directory if missing.
pub(crate) fn private_dir(dir: &Path) -> Result<(), ContainerError> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(ContainerError::io(format!("creating {}", dir.display()))(e)),
    }
}

/// Writes `value` as JSON to `path` atomically.
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), ContainerError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| ContainerError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let tmp = path.with_extension(format!("tmp-{}-{}", std::process::id(), random_hex(4)?));
    let write = || -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        ContainerError::io(format!("writing {}", path.display()))(e)
    })
}

/// Reads JSON from `path` (bounded).
pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ContainerError> {
    let f = File::open(path).map_err(ContainerError::io(format!("reading {}", path.display())))?;
    let mut bytes = Vec::new();
    f.take(MAX_RECORD_BYTES)
        .read_to_end(&mut bytes)
        .map_err(ContainerError::io(format!("reading {}", path.display())))?;
    serde_json::from_slice(&bytes).map_err(|e| ContainerError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Go's `units.HumanDuration` (what `docker ps` prints): "Less than a second", "5 seconds",
/// "About a minute", "3 hours", …
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    let minutes = s / 60;
    let hours = s / 3600;
    match () {
        _ if s < 1 => "Less than a second".into(),
        _ if s == 1 => "1 second".into(),
        _ if s < 60 => format!("{s} seconds"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", hours / 24 / 365),
    }
}

impl Container {
    /// `docker ps`'s STATUS column at time `now`: `Created`, `Up 5 seconds`,
    /// `Exited (7) 3 minutes ago`.
    pub fn status_text(&self, now: i64) -> String {
        match self.state.status {
            Status::Created => "Created".into(),
            Status::Running => format!(
                "Up {}",
                human_duration(now - self.state.started.unwrap_or(now))
            ),
            Status::Exited => format!(
                "Exited ({}) {} ago",
                self.state.exit_code.unwrap_or(-1),
                human_duration(now - self.state.finished.unwrap_or(now))
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dockers_rule() {
        for ok in ["a", "web-1", "my_app.v2", "X9"] {
            assert!(validate_name("container", ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", ".a", "_a", "a/b", "a b", "a:b", "é"] {
            assert!(validate_name("container", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn random_names_are_two_words() {
        let n = random_name().unwrap_or_default();
        let (adj, name) = n.split_once('_').unwrap_or_default();
        assert!(ADJECTIVES.contains(&adj) && SURNAMES.contains(&name), "{n}");
        assert!(validate_name("container", &n).is_ok());
    }

    #[test]
    fn ids_are_64_hex() {
        let id = random_hex(32).unwrap_or_default();
        assert!(is_id(&id), "{id}");
        assert!(!is_id(&id[..63]));
        assert!(!is_id(&id.to_uppercase()));
    }

    #[test]
    fn durations_read_like_dockers() {
        for (s, want) in [
            (0, "Less than a second"),
            (1, "1 second"),
            (59, "59 seconds"),
            (60, "About a minute"),
            (150, "2 minutes"),
            (3600, "About an hour"),
            (7200, "2 hours"),
            (3 * 86400, "3 days"),
            (20 * 86400, "2 weeks"),
            (90 * 86400, "3 months"),
            (800 * 86400, "2 years"),
        ] {
            assert_eq!(human_duration(s), want, "{s}");
        }
    }

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = std::process::id() as i32;
        let start = process_start(me);
        assert!(start.is_some());
        let start = start.unwrap_or_default();
        assert!(process_alive(me, start));
        assert!(!process_alive(me, start + 1));
    }
}
