//! `RUN`: a step's command in the executor's sandbox, on an overlay of the stage's layers.
//!
//! This module owns what BuildKit's Dockerfile frontend decides for a `RUN`: the argv (shell
//! form through the stage's `SHELL`, exec form as written, here-documents as BuildKit runs
//! them), the environment (the image's `ENV` plus the build `ARG`s in scope — ARGs never reach
//! the image config — `PATH` and `HOME` defaults), the user and groups from the image's
//! `/etc/passwd` and `/etc/group`, the working directory (created when missing), the network
//! and security modes, and the `--mount`s: `bind` (context, stage or image; read-only unless
//! `rw`, whose writes are discarded), `cache` (persistent directories in the store keyed by id,
//! with `sharing` locks), `tmpfs`, `secret` (file or env; never in a layer, the history or the
//! logs) and `ssh` (a forwarded agent socket).
//!
//! The command's output is streamed to the build's progress; when it fails the error carries
//! its exit code, the command and the last lines it printed.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rbuild_cache::Store;
use rbuild_executor::resolve_user;
use rbuild_executor::sandbox::{
    self, etc_mounts, remove_stubs, Limits, Mount, MountSource, Network, ProcessSpec, SandboxSpec,
    Security, User,
};
use rbuild_fsutil::Root;
use rbuild_parser::instruction::{Command, RunInstruction};
use rbuild_parser::mount::{
    CacheSharing, Mount as MountFlag, MountType, NetworkMode, SecurityMode,
};
use rbuild_solver::PlannedStep;
use sha2::{Digest as _, Sha256};

use crate::config::StageConfig;
use crate::error::BuildError;
use crate::overlay::OverlayView;

/// The hostname RUN steps see (BuildKit's).
pub const BUILD_HOSTNAME: &str = "buildkitsandbox";

/// The most of a secret that is read (BuildKit's limit is 500 KiB).
pub const MAX_SECRET_BYTES: u64 = 500 << 10;

/// Mount points a RUN leaves in its layer when it created them (as runc and BuildKit do).
const KEPT_STUBS: [&str; 3] = ["dev", "proc", "sys"];

/// How many lines of a failed step's output its error shows.
const ERROR_TAIL_LINES: usize = 12;

/// Where a build secret comes from (`--secret id=ID,src=PATH` or `,env=VAR`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

/// What `RUN` steps may use beyond the Dockerfile: the CLI's `--secret`, `--ssh`, `--network`,
/// `--allow` and resource limits.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub secrets: BTreeMap<String, SecretSource>,
    /// SSH agent sockets by id (`default` for `--ssh default`).
    pub ssh: BTreeMap<String, PathBuf>,
    /// The network of steps without `--network` (`--network` of the build).
    pub network: Network,
    /// `--allow network.host`.
    pub allow_host_network: bool,
    /// `--allow security.insecure`.
    pub allow_insecure: bool,
    /// `--memory`, `--cpu-*` limits of each step.
    pub limits: Limits,
}

/// A bind source another stage or image provides: its root filesystem, read-only.
pub trait StageRoots {
    /// The root filesystem of `from` (a stage name or index, or an image reference).
    fn root_of(&self, from: &str, work: &Path) -> Result<OverlayView, BuildError>;
}

/// What the build driver hands to one RUN step.
pub struct RunStep<'a> {
    pub store: &'a Store,
    pub step: &'a PlannedStep,
    pub run: &'a RunInstruction,
    pub config: &'a StageConfig,
    /// The build context (for `--mount=type=bind` without `from`).
    pub context: &'a Root,
    /// The context with `.dockerignore` applied, made on first use when there is one.
    pub context_view: &'a dyn Fn() -> Result<PathBuf, BuildError>,
    pub stages: &'a dyn StageRoots,
    pub options: &'a RunOptions,
    /// Receives each line the command prints.
    pub on_output: &'a (dyn Fn(&str) + Sync),
}

/// A failed RUN: its exit code, the command and the end of its output.
#[derive(Debug)]
pub struct RunFailure {
    pub command: Vec<String>,
    pub code: i32,
    pub oom_killed: bool,
    pub output_tail: Vec<String>,
}

impl std::fmt::Display for RunFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "process \"{}\" did not complete successfully: exit code: {}",
            self.command.join(" "),
            self.code
        )?;
        if self.oom_killed {
            write!(f, " (killed: out of memory)")?;
        }
        if !self.output_tail.is_empty() {
            write!(f, "\n--- last lines of its output ---")?;
            for line in &self.output_tail {
                write!(f, "\n{line}")?;
            }
        }
        Ok(())
    }
}

/// The argv of a RUN, as BuildKit builds it (here-documents included): a lone here-document
/// is the shell's script (or, starting with `#!`, a file at `/dev/pipes/NAME` the shell
/// runs, see [`shebang_heredoc`]); a command with here-documents goes to the shell whole, the
/// documents reattached for it to read.
pub fn run_args(config: &StageConfig, run: &RunInstruction) -> Vec<String> {
    let Command::Shell(line) = &run.command else {
        return config.command_args(&run.command);
    };
    if run.heredocs.is_empty() {
        return config.command_args(&run.command);
    }
    let mut args = config.shell();
    if let Some((name, _)) = shebang_heredoc(run) {
        args.push(format!("{SHEBANG_DIR}/{name}"));
    } else if is_lone_heredoc(run) {
        args.push(run.heredocs[0].body());
    } else {
        let mut full = line.clone();
        for h in &run.heredocs {
            full.push('\n');
            full.push_str(&h.content);
            full.push_str(&h.name);
        }
        args.push(full);
    }
    args
}

/// Where a `#!` here-document is put for the shell to run (BuildKit's path).
const SHEBANG_DIR: &str = "/dev/pipes";

/// `RUN <<EOF`: the command is one here-document marker and nothing else.
fn is_lone_heredoc(run: &RunInstruction) -> bool {
    matches!(&run.command, Command::Shell(line)
        if run.heredocs.len() == 1 && is_heredoc_word(line.trim()))
}

/// A lone here-document that starts with `#!`: its name and text, run as an executable file.
pub fn shebang_heredoc(run: &RunInstruction) -> Option<(&str, String)> {
    let h = run.heredocs.first()?;
    (is_lone_heredoc(run) && h.content.starts_with("#!")).then(|| (h.name.as_str(), h.body()))
}

/// `<<EOF`, `<<-EOF`, `<<"EOF"`: a word that is one here-document marker and nothing else.
fn is_heredoc_word(word: &str) -> bool {
    let rest = word.trim_start_matches(|c: char| c.is_ascii_digit());
    let Some(rest) = rest.strip_prefix("<<") else {
        return false;
    };
    let rest = rest.strip_prefix('-').unwrap_or(rest);
    !rest.is_empty() && !rest.contains(char::is_whitespace)
}

/// The environment of a RUN: the stage's RUN environment (image ENV and ARG values, the later
/// of the two winning), then the ARGs in scope it lacks (the proxy build args), `PATH` when
/// none is set, `HOME` from the user's passwd entry.
pub fn run_env(config: &StageConfig, step: &PlannedStep, home: &str) -> Vec<String> {
    let mut env: Vec<(String, String)> = config
        .run_env()
        .iter()
        .map(|e| match e.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (e.clone(), String::new()),
        })
        .collect();
    for (k, v) in &step.args {
        if !env.iter().any(|(ek, _)| ek == k) {
            env.push((k.clone(), v.clone()));
        }
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.insert(0, ("PATH".into(), sandbox::DEFAULT_PATH.into()));
    }
    if !env.iter().any(|(k, _)| k == "HOME") {
        env.push(("HOME".into(), home.to_string()));
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BuildError {
    let what = what.into();
    move |source| BuildError::Io { what, source }
}

fn fs(what: impl Into<String>) -> impl FnOnce(rbuild_fsutil::FsError) -> BuildError {
    let what = what.into();
    move |source| BuildError::Fs { what, source }
}

/// Things a RUN's mounts hold on to until the command ended (overlays, locks, temp dirs).
#[derive(Default)]
struct Held {
    views: Vec<OverlayView>,
    locks: Vec<File>,
    dirs: Vec<rbuild_cache::WorkDir>,
}

/// Runs the RUN step in `view` (whose upper dir collects its changes).
pub fn run_step(rs: &RunStep<'_>, view: &OverlayView, work: &Path) -> Result<(), BuildError> {
    let span = rs.step.step.keyword_span;
    if !rs.run.devices.is_empty() {
        return Err(BuildError::Unsupported {
            what: "RUN --device is not supported: rbuild has no CDI device support".into(),
            span,
        });
    }
    let network = match rs.run.network {
        NetworkMode::Default => rs.options.network,
        NetworkMode::None => Network::None,
        NetworkMode::Host if rs.options.allow_host_network => Network::Host,
        NetworkMode::Host => return Err(BuildError::Instruction {
            span,
            reason:
                "RUN --network=host needs the network.host entitlement: pass --allow network.host"
                    .into(),
        }),
    };
    let security = match rs.run.security {
        SecurityMode::Sandbox => Security::default(),
        SecurityMode::Insecure if rs.options.allow_insecure => Security {
            // Every capability rbuild itself has (asking for more fails).
            capabilities: rustix::thread::capabilities(None)
                .map(|c| c.permitted.bits())
                .unwrap_or(rbuild_executor::sandbox::DEFAULT_CAPABILITIES),
            no_new_privs: false,
            seccomp: false,
        },
        SecurityMode::Insecure => {
            return Err(BuildError::Instruction {
                span,
                reason: "RUN --security=insecure needs the security.insecure entitlement: pass --allow security.insecure".into(),
            })
        }
    };
    let root = view.root();
    let user = resolve_user(&rs.config.config.config.user, root)?;
    let cwd = rs.config.workdir().to_string();
    // runc creates a missing working directory; so does BuildKit's RUN.
    root.mkdir_all(&cwd, 0o755, None)
        .map_err(fs(format!("creating the working directory {cwd}")))?;

    let mut env = run_env(rs.config, rs.step, &user.home);
    let args = run_args(rs.config, rs.run);
    let mut held = Held::default();
    // BuildKit mounts a generated /etc/hosts and /etc/resolv.conf read-only (writes fail, and
    // nothing of them reaches the layer) and leaves /etc/hostname to the image.
    let mut mounts: Vec<Mount> = etc_mounts(BUILD_HOSTNAME, network, true)
        .into_iter()
        .filter(|m| m.target != "/etc/hostname")
        .collect();
    // A lone here-document with a shebang is a file the shell runs (BuildKit).
    if let Some((name, body)) = shebang_heredoc(rs.run) {
        mounts.push(Mount {
            target: format!("{SHEBANG_DIR}/{name}"),
            source: MountSource::File {
                contents: body.into_bytes(),
                mode: 0o755,
                uid: 0,
                gid: 0,
            },
            readonly: true,
        });
    }
    let mut ssh_count = 0;
    for m in &rs.run.mounts {
        if let Some(mount) =
            self::mount(rs, root, m, &cwd, work, &mut env, &mut ssh_count, &mut held)?
        {
            mounts.push(mount);
        }
    }

    let (out_r, out_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| io("pipe")(e.into()))?;
    let null: OwnedFd = File::open("/dev/null")
        .map_err(io("opening /dev/null"))?
        .into();
    let out_w2 = out_w.try_clone().map_err(io("dup"))?;
    let attach = work.join("rootfs");
    std::fs::create_dir(&attach).map_err(io(format!("creating {}", attach.display())))?;
    let spec = SandboxSpec {
        rootfs: root,
        attach_dir: attach,
        mounts,
        hostname: BUILD_HOSTNAME.into(),
        network,
        readonly_rootfs: false,
        limits: rs.options.limits.clone(),
        security,
        process: ProcessSpec {
            args: args.clone(),
            env,
            cwd,
            user: User {
                uid: user.uid,
                gid: user.gid,
                // Supplementary groups as runc sets them for BuildKit: the groups listing the
                // user by name, without the primary group (`groups[0]`); none for `user:group`.
                groups: user.groups.iter().skip(1).copied().collect(),
            },
            stdio: [null, out_w, out_w2],
            terminal: false,
        },
    };
    let (status, tail, stubs) = std::thread::scope(|scope| {
        let on_output = rs.on_output;
        let reader = scope.spawn(move || {
            let mut tail: VecDeque<String> = VecDeque::new();
            let mut r = BufReader::new(File::from(out_r));
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf);
                        let line = line.trim_end_matches(['\n', '\r']);
                        on_output(line);
                        if tail.len() == ERROR_TAIL_LINES {
                            tail.pop_front();
                        }
                        tail.push_back(line.to_string());
                    }
                }
            }
            tail
        });
        let result = sandbox::spawn(spec).and_then(|running| {
            let stubs = running.stubs.clone();
            running.wait().map(|s| (s, stubs))
        });
        // The spec (and with it the pipe's write ends) is gone once spawn returned, so the
        // reader sees EOF when the sandbox's last process exits.
        let tail = reader.join().unwrap_or_default();
        result.map(|(s, stubs)| (s, tail, stubs))
    })
    .map_err(|e| match e {
        sandbox::SandboxError::Interrupted => BuildError::Interrupted,
        e => BuildError::Sandbox(e),
    })?;
    drop(held);
    if sandbox::interrupted() {
        return Err(BuildError::Interrupted);
    }
    if !status.success() {
        return Err(BuildError::RunFailed(RunFailure {
            command: args,
            code: status.code,
            oom_killed: status.oom_killed,
            output_tail: tail.into_iter().collect(),
        }));
    }
    // Mount points the sandbox created are not part of the step's result, except `/dev`,
    // `/proc` and `/sys`, which runc creates in the image and BuildKit keeps in the layer.
    let mut stubs = stubs;
    stubs
        .created
        .retain(|p| !KEPT_STUBS.iter().any(|k| p == Path::new(k)));
    let upper = Root::open(view.upper()).map_err(fs("opening the step's upper dir"))?;
    remove_stubs(&upper, &stubs).map_err(BuildError::Sandbox)?;
    Ok(())
}

/// One `--mount` as a sandbox mount; `None` when an optional secret or agent is absent.
#[allow(clippy::too_many_arguments)]
fn mount(
    rs: &RunStep<'_>,
    rootfs: &Root,
    m: &MountFlag,
    cwd: &str,
    work: &Path,
    env: &mut Vec<String>,
    ssh_count: &mut usize,
    held: &mut Held,
) -> Result<Option<Mount>, BuildError> {
    let span = m.span;
    let bad = |reason: String| BuildError::Instruction { span, reason };
    let target = m.target.as_deref().map(|t| {
        if t.starts_with('/') {
            t.to_string()
        } else {
            format!("{}/{t}", cwd.trim_end_matches('/'))
        }
    });
    match m.kind {
        MountType::Tmpfs => {
            let target = target.ok_or_else(|| bad("a tmpfs mount needs a target".into()))?;
            // runc gives a tmpfs over an existing directory that directory's mode (1777 else).
            let mode = rootfs
                .open_path(&target, false)
                .ok()
                .and_then(|fd| rustix::fs::fstat(&fd).ok())
                .filter(|st| rustix::fs::FileType::from_raw_mode(st.st_mode).is_dir())
                .map_or(0o1777, |st| st.st_mode & 0o7777);
            Ok(Some(Mount {
                target,
                source: MountSource::Tmpfs { size: m.size, mode },
                readonly: false,
            }))
        }
        MountType::Bind => {
            let target = target.ok_or_else(|| bad("a bind mount needs a target".into()))?;
            let source_path = m.source.clone().unwrap_or_else(|| "/".into());
            let (root, dir_for_rw): (Root, Option<PathBuf>) = match &m.from {
                None => {
                    let dir = (rs.context_view)()?;
                    (
                        Root::open(&dir).map_err(fs("opening the build context"))?,
                        Some(dir),
                    )
                }
                Some(from) => {
                    let dir = rs.store.work_dir("mount")?;
                    let view = rs.stages.root_of(from, dir.path())?;
                    let root = view.root().try_clone().map_err(fs("dup"))?;
                    held.views.push(view);
                    held.dirs.push(dir);
                    (root, None)
                }
            };
            let fd = root
                .open_path(&source_path, false)
                .map_err(|e| bad(format!("bind mount source {source_path:?}: {e}")))?;
            if m.read_only {
                return Ok(Some(Mount {
                    target,
                    source: MountSource::Bind(fd),
                    readonly: true,
                }));
            }
            // Writable, but the writes are thrown away: an overlay on the source.
            let st = rustix::fs::fstat(&fd).map_err(|e| io("stat")(e.into()))?;
            if !rustix::fs::FileType::from_raw_mode(st.st_mode).is_dir() {
                let mut contents = Vec::new();
                let mut f = root
                    .open_file(&source_path)
                    .map_err(fs(format!("reading {source_path}")))?;
                std::io::Read::read_to_end(
                    &mut std::io::Read::take(&mut f, 64 << 20),
                    &mut contents,
                )
                .map_err(io(format!("reading {source_path}")))?;
                return Ok(Some(Mount {
                    target,
                    source: MountSource::File {
                        contents,
                        mode: st.st_mode & 0o7777,
                        uid: st.st_uid,
                        gid: st.st_gid,
                    },
                    readonly: false,
                }));
            }
            let _ = dir_for_rw;
            let dir = rs.store.work_dir("rwbind")?;
            let lower = PathBuf::from(format!(
                "/proc/self/fd/{}",
                std::os::fd::AsRawFd::as_raw_fd(&fd)
            ));
            let (upper, wk) = (dir.path().join("upper"), dir.path().join("work"));
            for d in [&upper, &wk] {
                std::fs::create_dir(d).map_err(io(format!("creating {}", d.display())))?;
            }
            let view = OverlayView::mount(&[lower], &upper, &wk)?;
            let tree = view.root().try_clone().map_err(fs("dup"))?;
            held.views.push(view);
            held.dirs.push(dir);
            Ok(Some(Mount {
                target,
                source: MountSource::Bind(tree.into_fd()),
                readonly: false,
            }))
        }
        MountType::Cache => {
            let target = target.ok_or_else(|| bad("a cache mount needs a target".into()))?;
            let id = m.id.clone().unwrap_or_else(|| target.clone());
            let dir = cache_dir(rs, m, &id, held)?;
            let root = Root::open(&dir).map_err(fs("opening a cache mount"))?;
            let fd = match &m.source {
                None => root.open_path("/", false),
                Some(sub) => {
                    root.mkdir_all(sub, 0o755, None)
                        .map_err(fs(format!("cache subdir {sub}")))?;
                    root.open_path(sub, false)
                }
            }
            .map_err(fs("opening a cache mount"))?;
            Ok(Some(Mount {
                target,
                source: MountSource::Bind(fd),
                readonly: m.read_only,
            }))
        }
        MountType::Secret => {
            let id = match (&m.id, &target) {
                (Some(id), _) => id.clone(),
                (None, Some(t)) => Path::new(t)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                (None, None) => return Err(bad("a secret mount needs an id or a target".into())),
            };
            let Some(source) = rs.options.secrets.get(&id) else {
                if m.required {
                    return Err(bad(format!(
                        "secret {id} not found: pass it with --secret id={id},src=FILE"
                    )));
                }
                return Ok(None);
            };
            let contents = read_secret(&id, source).map_err(bad)?;
            if let Some(var) = &m.env {
                let value = String::from_utf8_lossy(&contents).into_owned();
                env.retain(|e| !e.starts_with(&format!("{var}=")));
                env.push(format!("{var}={value}"));
                if target.is_none() {
                    return Ok(None);
                }
            }
            let target = target.unwrap_or_else(|| format!("/run/secrets/{id}"));
            Ok(Some(Mount {
                target,
                source: MountSource::File {
                    contents,
                    mode: m.mode.unwrap_or(0o400),
                    uid: m.uid.unwrap_or(0),
                    gid: m.gid.unwrap_or(0),
                },
                readonly: true,
            }))
        }
        MountType::Ssh => {
            let id = m.id.clone().unwrap_or_else(|| "default".into());
            // BuildKit numbers the ssh mounts and points SSH_AUTH_SOCK at the first one's
            // target whether or not an agent is forwarded for it.
            *ssh_count += 1;
            let target =
                target.unwrap_or_else(|| format!("/run/buildkit/ssh_agent.{}", *ssh_count - 1));
            if *ssh_count == 1 && !env.iter().any(|e| e.starts_with("SSH_AUTH_SOCK=")) {
                env.push(format!("SSH_AUTH_SOCK={target}"));
            }
            let Some(socket) = rs.options.ssh.get(&id) else {
                if m.required {
                    return Err(bad(format!("no SSH agent {id}: pass --ssh {id}[=SOCKET]")));
                }
                return Ok(None);
            };
            let fd: OwnedFd = rustix::fs::open(
                socket,
                rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(|e| bad(format!("SSH agent socket {}: {e}", socket.display())))?;
            let _ = work;
            Ok(Some(Mount {
                target,
                source: MountSource::Bind(fd),
                readonly: false,
            }))
        }
    }
}

fn read_secret(id: &str, source: &SecretSource) -> Result<Vec<u8>, String> {
    let contents = match source {
        SecretSource::File(path) => {
            let f =
                File::open(path).map_err(|e| format!("secret {id}: {}: {e}", path.display()))?;
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::Read::take(f, MAX_SECRET_BYTES + 1), &mut buf)
                .map_err(|e| format!("secret {id}: {e}"))?;
            buf
        }
        SecretSource::Env(var) => std::env::var(var)
            .map_err(|_| format!("secret {id}: the environment variable {var} is not set"))?
            .into_bytes(),
    };
    if contents.len() as u64 > MAX_SECRET_BYTES {
        return Err(format!(
            "secret {id} is larger than {MAX_SECRET_BYTES} bytes"
        ));
    }
    Ok(contents)
}

/// The directory of cache mount `id` in the store, created (and seeded from `from`) on first
/// use, locked as `sharing` says. The id is hashed into the name: no id can name a path
/// outside the store's cache directory.
fn cache_dir(
    rs: &RunStep<'_>,
    m: &MountFlag,
    id: &str,
    held: &mut Held,
) -> Result<PathBuf, BuildError> {
    let base = rs.store.root().join("cache-mounts");
    // Private like the rest of the store (SECURITY-CLASSES 12): cache dirs take any mode a
    // Dockerfile asks for, and may hold what a build left there.
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        match std::fs::DirBuilder::new().mode(0o700).create(&base) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o700))
                    .map_err(io(format!("making {} private", base.display())))?;
            }
            Err(e) => return Err(io(format!("creating {}", base.display()))(e)),
        }
    }
    let key = format!("{:x}", Sha256::digest(id.as_bytes()));
    let lock_file = |name: &str| -> Result<File, BuildError> {
        let p = base.join(format!("{name}.lock"));
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(io(format!("opening {}", p.display())))
    };
    use rustix::fs::{flock, FlockOperation};
    let name = match m.sharing {
        CacheSharing::Shared => key.clone(),
        CacheSharing::Locked => {
            let f = lock_file(&key)?;
            flock(&f, FlockOperation::LockExclusive)
                .map_err(|e| io("locking a cache mount")(e.into()))?;
            held.locks.push(f);
            key.clone()
        }
        CacheSharing::Private => {
            // The first copy nobody else holds.
            let mut n = 0;
            loop {
                let name = if n == 0 {
                    key.clone()
                } else {
                    format!("{key}-{n}")
                };
                let f = lock_file(&name)?;
                if flock(&f, FlockOperation::NonBlockingLockExclusive).is_ok() {
                    held.locks.push(f);
                    break name;
                }
                n += 1;
            }
        }
    };
    let dir = base.join(&name);
    if !dir.exists() {
        let tmp = rs.store.work_dir("cache-new")?;
        let new = tmp.path().join("dir");
        std::fs::create_dir(&new).map_err(io("creating a cache mount"))?;
        if let Some(from) = &m.from {
            // Seeded from a stage or image (at `source`), copied in.
            let wd = rs.store.work_dir("cache-seed")?;
            let view = rs.stages.root_of(from, wd.path())?;
            // BuildKit starts the cache from the whole `from` root and mounts `source` of
            // it; the `source` subtree is copied to the same path, which is what is mounted.
            let src = m.source.clone().unwrap_or_else(|| "/".into());
            let dest = Root::open(&new).map_err(fs("opening a cache mount"))?;
            let op = rbuild_executor::CopyOp {
                sources: vec![format!("{}/", src.trim_end_matches('/'))],
                dest: match src.trim_matches('/') {
                    "" => "/".into(),
                    sub => format!("/{sub}/"),
                },
                keep_owners: true,
                ..rbuild_executor::CopyOp::default()
            };
            rbuild_executor::copy(&op, view.root(), &dest)?;
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            &new,
            std::fs::Permissions::from_mode(m.mode.unwrap_or(0o755)),
        )
        .map_err(io("setting a cache mount's mode"))?;
        std::os::unix::fs::lchown(&new, Some(m.uid.unwrap_or(0)), Some(m.gid.unwrap_or(0)))
            .map_err(io("setting a cache mount's owner"))?;
        // Another step or build may have made it meanwhile: theirs wins. (A plain rename
        // would replace theirs when it is still empty, under a step that has it open.)
        match rustix::fs::renameat_with(
            rustix::fs::CWD,
            &new,
            rustix::fs::CWD,
            &dir,
            rustix::fs::RenameFlags::NOREPLACE,
        ) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(io("creating a cache mount")(e.into())),
        }
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heredoc_words() {
        for (w, want) in [
            ("<<EOF", true),
            ("<<-EOF", true),
            ("<<\"EOF\"", true),
            ("3<<EOF", true),
            ("cat <<EOF", false),
            ("<<", false),
            ("echo", false),
        ] {
            assert_eq!(is_heredoc_word(w), want, "{w}");
        }
    }
}
