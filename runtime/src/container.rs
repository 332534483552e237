//! Running containers: [`create`] turns an image and `docker run`'s options into a container
//! record (Docker's rules for the command, environment, working directory, user, hostname and
//! mounts), [`start`] runs it in the executor's sandbox and waits for it, [`stop`], [`remove`]
//! and [`logs`] act on it afterwards.
//!
//! A start mounts an overlay of the image's layers (unpacked snapshots, as builds use them)
//! with the container's own upper dir, so changes persist from one start to the next; resolves
//! `USER` in the container's `/etc/passwd` and `/etc/group` (as runc does, at each start);
//! creates the working directory when missing; mounts `/etc/hosts`, `/etc/resolv.conf` and
//! `/etc/hostname`, the `-v` binds and volumes and the tmpfs mounts; and starts the command as
//! PID 1 of new namespaces with Docker's default capabilities, seccomp profile and
//! `no_new_privs`, with `--memory`/`--cpus` in a cgroup. The monitor (the calling process)
//! records the pids, forwards signals, copies the output and records the exit code.
//!
//! User-given host paths (`-v /src:/dst`) are the user's own and opened as given (`O_PATH`);
//! every *target* is resolved inside the container's root filesystem by the sandbox.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rbuild_builder::layers::{base_layers, lower_dirs};
use rbuild_builder::overlay::OverlayView;
use rbuild_cache::{Digest, ImageRecord, Store};
use rbuild_executor::sandbox::{
    self, etc_mounts, remove_stubs, ExitStatus, Limits, Mount, MountSource, Network, ProcessSpec,
    SandboxSpec, Security, Stubs, User,
};
use rbuild_fsutil::Root;
use rbuild_image::images::{read_config, resolve_manifest};
use rbuild_image::{Descriptor, ImageConfig, Manifest};
use rustix::process::{Pid, PidfdFlags, Signal};

use crate::attach::{self, StdinMode, StreamsSpec};
use crate::container_error::ContainerError;
use crate::containers::{
    now, private_dir, process_alive, process_start, Container, ContainerSpec, ContainerState,
    Containers, MountSpec, NetworkMode, Status,
};
use crate::tty::Pty;
use crate::volume::Volumes;

/// What `rbuild run` was asked for (already parsed: `env` holds `KEY=value` entries).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CreateOptions {
    /// `--name`.
    pub name: Option<String>,
    /// The arguments after the image (replace the image's `CMD`).
    pub command: Vec<String>,
    /// `--entrypoint` (replaces the image's `ENTRYPOINT` and drops its `CMD`; empty: none).
    pub entrypoint: Option<String>,
    /// `-e`/`--env-file` entries, `KEY=value`, in order (later ones win).
    pub env: Vec<String>,
    /// `-w`.
    pub workdir: Option<String>,
    /// `-u`.
    pub user: Option<String>,
    /// `-v` values as given.
    pub volumes: Vec<String>,
    /// `--tmpfs` values as given.
    pub tmpfs: Vec<String>,
    /// `--network`.
    pub network: NetworkMode,
    /// `--hostname`.
    pub hostname: Option<String>,
    /// `--read-only`.
    pub read_only: bool,
    /// `-m`, in bytes.
    pub memory: Option<u64>,
    /// `--cpus`.
    pub cpus: Option<f64>,
    /// `-t`.
    pub tty: bool,
    /// `-i`.
    pub interactive: bool,
    /// `--rm`.
    pub auto_remove: bool,
}

/// The command a container runs, by Docker's rules: `--entrypoint` replaces the image's
/// `ENTRYPOINT` and drops its `CMD` (an empty `--entrypoint` means none); arguments after the
/// image replace the `CMD`.
pub fn compose_command(
    image: &rbuild_image::ContainerConfig,
    entrypoint: Option<&str>,
    args: &[String],
) -> Result<Vec<String>, ContainerError> {
    let (entry, image_cmd): (Vec<String>, &[String]) = match entrypoint {
        Some("") => (Vec::new(), &[]),
        Some(e) => (vec![e.to_string()], &[]),
        None => (image.entrypoint.clone(), &image.cmd),
    };
    let cmd = if args.is_empty() { image_cmd } else { args };
    let mut out = entry;
    out.extend(cmd.iter().cloned());
    if out.is_empty() {
        return Err(ContainerError::NoCommand);
    }
    Ok(out)
}

fn key(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(k, _)| k)
}

/// A container's environment as Docker makes it: `PATH` (when neither the image nor the user
/// sets it), `HOSTNAME`, `TERM=xterm` with a terminal, then the image's `ENV` with the user's
/// entries replacing same-named ones and the rest appended.
pub fn compose_env(
    image_env: &[String],
    user_env: &[String],
    hostname: &str,
    tty: bool,
) -> Vec<String> {
    let mut merged: Vec<String> = image_env.to_vec();
    for e in user_env {
        match merged.iter_mut().find(|m| key(m) == key(e)) {
            Some(slot) => slot.clone_from(e),
            None => merged.push(e.clone()),
        }
    }
    let mut out = Vec::new();
    if !merged.iter().any(|e| key(e) == "PATH") {
        out.push(format!("PATH={}", sandbox::DEFAULT_PATH));
    }
    if !merged.iter().any(|e| key(e) == "HOSTNAME") {
        out.push(format!("HOSTNAME={hostname}"));
    }
    if tty && !merged.iter().any(|e| key(e) == "TERM") {
        out.push("TERM=xterm".into());
    }
    out.extend(merged);
    out
}

/// `env` with `HOME` added when missing (runc's rule, from the user's passwd entry).
pub(crate) fn with_home(env: &[String], home: &str) -> Vec<String> {
    let mut out = env.to_vec();
    if !out.iter().any(|e| key(e) == "HOME") {
        out.push(format!("HOME={home}"));
    }
    out
}

/// `-e` values: `KEY=value` as is, `KEY` alone takes rbuild's own value (dropped when unset).
pub fn resolve_env_flags(
    values: &[String],
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, ContainerError> {
    let mut out = Vec::new();
    for v in values {
        let k = key(v);
        if k.is_empty() || k.contains(char::is_whitespace) {
            return Err(ContainerError::InvalidOption {
                flag: "--env",
                value: v.clone(),
                reason: "the variable name is empty or has spaces".into(),
            });
        }
        if v.contains('=') {
            out.push(v.clone());
        } else if let Some(value) = lookup(v) {
            out.push(format!("{v}={value}"));
        }
    }
    Ok(out)
}

/// The entries of an `--env-file`: one `KEY=value` or `KEY` per line, `#` comments and blank
/// lines skipped, leading whitespace trimmed (Docker's format; no quotes are processed).
pub fn parse_env_file(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, ContainerError> {
    let lines: Vec<String> = text
        .lines()
        .map(|l| l.trim_start().trim_end_matches('\r'))
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    resolve_env_flags(&lines, lookup)
}

/// A size with an optional binary unit (`64m`, `1g`, `512k`, `100b`, `1.5g`), as Docker reads
/// `--tmpfs size=` and `--memory`.
pub fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix("ib")
        .or_else(|| t.strip_suffix('b'))
        .unwrap_or(&t);
    let (num, mult) = match t.chars().last()? {
        'k' => (&t[..t.len() - 1], 1u64 << 10),
        'm' => (&t[..t.len() - 1], 1 << 20),
        'g' => (&t[..t.len() - 1], 1 << 30),
        't' => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num.trim().parse().ok()?;
    (n.is_finite() && n >= 0.0).then_some((n * mult as f64) as u64)
}

/// One `-v` value, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeFlag {
    /// `/host/path:/dst[:opts]` (or `./rel:/dst`): the path made absolute.
    Bind {
        /// The host path.
        source: PathBuf,
        /// The target.
        target: String,
        /// `:ro`.
        readonly: bool,
    },
    /// `NAME:/dst[:opts]`.
    Named {
        /// The volume name.
        name: String,
        /// The target.
        target: String,
        /// `:ro`.
        readonly: bool,
        /// `:nocopy`.
        nocopy: bool,
    },
    /// `/dst`: a new anonymous volume.
    Anonymous {
        /// The target.
        target: String,
    },
}

fn bad(flag: &'static str, value: &str, reason: impl Into<String>) -> ContainerError {
    ContainerError::InvalidOption {
        flag,
        value: value.to_string(),
        reason: reason.into(),
    }
}

fn absolute_target(
    flag: &'static str,
    value: &str,
    target: &str,
) -> Result<String, ContainerError> {
    if !target.starts_with('/') {
        return Err(bad(
            flag,
            value,
            format!("the target {target:?} is not an absolute path"),
        ));
    }
    Ok(target.to_string())
}

/// Parses a `-v` value. A source starting with `/` or `.` is a host path, anything else a
/// volume name. Options: `ro`, `rw`, `nocopy` (volumes), `z`/`Z` (SELinux labels: accepted,
/// nothing to do without SELinux).
pub fn parse_volume_flag(value: &str) -> Result<VolumeFlag, ContainerError> {
    const FLAG: &str = "--volume";
    let parts: Vec<&str> = value.split(':').collect();
    let (source, target, opts) = match parts.as_slice() {
        [target] => {
            return Ok(VolumeFlag::Anonymous {
                target: absolute_target(FLAG, value, target)?,
            })
        }
        [source, target] => (*source, *target, ""),
        [source, target, opts] => (*source, *target, *opts),
        _ => return Err(bad(FLAG, value, "want SOURCE:TARGET[:OPTIONS]")),
    };
    if source.is_empty() {
        return Err(bad(FLAG, value, "the source is empty"));
    }
    let target = absolute_target(FLAG, value, target)?;
    let (mut readonly, mut nocopy) = (false, false);
    for opt in opts.split(',').filter(|o| !o.is_empty()) {
        match opt {
            "ro" => readonly = true,
            "rw" => readonly = false,
            "nocopy" => nocopy = true,
            "z" | "Z" => {}
            other => {
                return Err(bad(
                    FLAG,
                    value,
                    format!("the option {other:?} is not supported (use ro, rw or nocopy)"),
                ))
            }
        }
    }
    if source.starts_with('/') || source.starts_with('.') {
        if nocopy {
            return Err(bad(
                FLAG,
                value,
                "nocopy applies to volumes, not host paths",
            ));
        }
        let source = std::path::absolute(source)
            .map_err(ContainerError::io(format!("resolving {source}")))?;
        return Ok(VolumeFlag::Bind {
            source,
            target,
            readonly,
        });
    }
    crate::containers::validate_name("volume", source)?;
    Ok(VolumeFlag::Named {
        name: source.to_string(),
        target,
        readonly,
        nocopy,
    })
}

/// Parses a `--tmpfs` value: `/dst[:size=64m,mode=1777,ro,…]`. The tmpfs is always `nosuid`
/// and `nodev`; `noexec` is refused (rbuild's tmpfs mounts allow execution).
pub fn parse_tmpfs_flag(value: &str) -> Result<MountSpec, ContainerError> {
    const FLAG: &str = "--tmpfs";
    let (target, opts) = value.split_once(':').unwrap_or((value, ""));
    let target = absolute_target(FLAG, value, target)?;
    let (mut size, mut mode, mut readonly) = (None, 0o1777, false);
    for opt in opts.split(',').filter(|o| !o.is_empty()) {
        match opt.split_once('=') {
            Some(("size", v)) => {
                size = Some(
                    parse_size(v).ok_or_else(|| bad(FLAG, value, format!("invalid size {v:?}")))?,
                )
            }
            Some(("mode", v)) => {
                mode = u32::from_str_radix(v, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| bad(FLAG, value, format!("invalid mode {v:?}")))?
            }
            None if opt == "ro" => readonly = true,
            None if matches!(opt, "rw" | "nosuid" | "nodev" | "exec") => {}
            _ => {
                return Err(bad(
                    FLAG,
                    value,
                    format!(
                        "the option {opt:?} is not supported (use size=, mode=, ro or rw; the \
                         tmpfs is always nosuid,nodev and allows execution)"
                    ),
                ))
            }
        }
    }
    Ok(MountSpec::Tmpfs {
        target,
        size,
        mode,
        readonly,
    })
}

/// The image's manifest and config.
fn image_of(
    store: &Store,
    manifest: &str,
    media_type: &str,
) -> Result<(Manifest, ImageConfig), ContainerError> {
    let digest = Digest::parse(manifest)?;
    let desc = Descriptor::new(media_type, digest, 0);
    let (_, manifest) = resolve_manifest(store, &desc)?;
    let config = read_config(store, &manifest.config.digest)?;
    Ok((manifest, config))
}

/// The overlay lower dirs of the image (unpacking its layers on first use), top first; an
/// empty dir in `dir` for an image without layers.
fn image_lowers(
    store: &Store,
    manifest: &Manifest,
    config: &ImageConfig,
    dir: &Path,
) -> Result<Vec<PathBuf>, ContainerError> {
    let layers = base_layers(store, &manifest.layers, &config.rootfs.diff_ids)?;
    let mut lowers = lower_dirs(store, &layers)?;
    if lowers.is_empty() {
        let empty = dir.join("empty");
        private_dir(&empty)?;
        lowers.push(empty);
    }
    Ok(lowers)
}

/// Creates a container for `image` (named `image_name` by the user) with `opts`.
pub fn create(
    store: &Store,
    image: &ImageRecord,
    image_name: &str,
    opts: &CreateOptions,
) -> Result<Container, ContainerError> {
    let containers = Containers::open(store)?;
    let volumes = Volumes::open(store)?;
    let _lock = store.lock_shared()?;
    let (manifest, config) = image_of(store, &image.manifest.to_string(), &image.media_type)?;
    let command = compose_command(&config.config, opts.entrypoint.as_deref(), &opts.command)?;
    let working_dir = match &opts.workdir {
        Some(w) if !w.starts_with('/') => {
            return Err(bad(
                "--workdir",
                w,
                "the working directory must be an absolute path",
            ))
        }
        Some(w) => w.clone(),
        None if config.config.working_dir.is_empty() => "/".into(),
        None => config.config.working_dir.clone(),
    };
    if let Some(h) = &opts.hostname {
        if h.is_empty() || h.len() > 64 || h.contains(|c: char| c == '/' || c.is_whitespace()) {
            return Err(bad(
                "--hostname",
                h,
                "want 1 to 64 characters without '/' or spaces",
            ));
        }
    }
    if opts.memory == Some(0) {
        return Err(bad("--memory", "0", "the limit must be more than 0 bytes"));
    }
    if let Some(c) = opts.cpus {
        if !(c.is_finite() && c > 0.0) {
            return Err(bad("--cpus", &c.to_string(), "want a positive number"));
        }
    }
    if let Some(name) = &opts.name {
        crate::containers::validate_name("container", name)?;
    }

    // Mounts: every flag parsed before any volume is made.
    let mut flags = Vec::new();
    for v in &opts.volumes {
        flags.push(parse_volume_flag(v)?);
    }
    let mut tmpfs = Vec::new();
    for t in &opts.tmpfs {
        tmpfs.push(parse_tmpfs_flag(t)?);
    }
    let mut mounts = Vec::new();
    let mut made_anonymous = Vec::new();
    let made = (|| -> Result<(), ContainerError> {
        for f in flags {
            mounts.push(match f {
                VolumeFlag::Bind {
                    source,
                    target,
                    readonly,
                } => {
                    // Docker creates a missing host directory for -v.
                    if !source.exists() {
                        fs::create_dir_all(&source).map_err(ContainerError::io(format!(
                            "creating {}",
                            source.display()
                        )))?;
                    }
                    MountSpec::Bind {
                        source,
                        target,
                        readonly,
                    }
                }
                VolumeFlag::Named {
                    name,
                    target,
                    readonly,
                    nocopy,
                } => {
                    volumes.create(Some(&name))?;
                    MountSpec::Volume {
                        name,
                        target,
                        readonly,
                        anonymous: false,
                        nocopy,
                    }
                }
                VolumeFlag::Anonymous { target } => {
                    let v = volumes.create(None)?;
                    made_anonymous.push(v.name.clone());
                    MountSpec::Volume {
                        name: v.name,
                        target,
                        readonly: false,
                        anonymous: true,
                        nocopy: false,
                    }
                }
            });
        }
        mounts.extend(tmpfs);
        // The image's VOLUMEs that no mount covers get anonymous volumes, as with Docker.
        for path in config.config.volumes.keys() {
            let target = if path.starts_with('/') {
                path.clone()
            } else {
                format!("/{path}")
            };
            let norm = |t: &str| t.trim_end_matches('/').to_string();
            if mounts.iter().any(|m| norm(m.target()) == norm(&target)) {
                continue;
            }
            let v = volumes.create(None)?;
            made_anonymous.push(v.name.clone());
            mounts.push(MountSpec::Volume {
                name: v.name,
                target,
                readonly: false,
                anonymous: true,
                nocopy: false,
            });
        }
        Ok(())
    })();
    let cleanup = |names: &[String]| {
        for n in names {
            let _ = volumes.delete(n);
        }
    };
    if let Err(e) = made {
        cleanup(&made_anonymous);
        return Err(e);
    }

    let id = crate::containers::random_hex(32)?;
    let hostname = opts
        .hostname
        .clone()
        .unwrap_or_else(|| id[..12].to_string());
    let env = compose_env(&config.config.env, &opts.env, &hostname, opts.tty);
    let spec = ContainerSpec {
        id,
        name: opts.name.clone().unwrap_or_default(),
        image: image_name.to_string(),
        image_manifest: image.manifest.to_string(),
        image_media_type: image.media_type.clone(),
        image_id: image.config.to_string(),
        created: now(),
        command,
        env,
        working_dir,
        user: opts
            .user
            .clone()
            .unwrap_or_else(|| config.config.user.clone()),
        hostname,
        network: opts.network,
        read_only: opts.read_only,
        mounts,
        memory: opts.memory,
        cpus: opts.cpus,
        tty: opts.tty,
        interactive: opts.interactive,
        auto_remove: opts.auto_remove,
        stop_signal: config.config.stop_signal.clone(),
    };
    // The upper dir is the container's `/`: it gets the mode and owner of the image's.
    let created = (|| {
        let scratch = store.work_dir("create")?;
        let lowers = image_lowers(store, &manifest, &config, scratch.path())?;
        let top = fs::metadata(&lowers[0])
            .map_err(ContainerError::io(format!("stat {}", lowers[0].display())))?;
        containers.create(spec, top.mode(), (top.uid(), top.gid()))
    })();
    if created.is_err() {
        cleanup(&made_anonymous);
    }
    created
}

impl From<NetworkMode> for Network {
    fn from(n: NetworkMode) -> Network {
        match n {
            NetworkMode::Default => Network::Default,
            NetworkMode::None => Network::None,
            NetworkMode::Host => Network::Host,
        }
    }
}

/// How a start connects the container's standard streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartIo {
    /// Output also goes to rbuild's standard output and error (always to the log).
    pub console: bool,
    /// Standard input comes from rbuild's (`-i` attached). Otherwise an interactive container
    /// gets a pipe that stays open, and others `/dev/null`.
    pub stdin: bool,
}

/// Starts the container, waits for it and records how it ended; `on_started` runs once the
/// command runs. With `--rm` the container is removed afterwards (also when the start failed).
pub fn start(
    store: &Store,
    c: &mut Container,
    io: StartIo,
    on_started: &mut dyn FnMut(&Container),
) -> Result<ExitStatus, ContainerError> {
    let containers = Containers::open(store)?;
    containers.refresh(c)?;
    if c.is_running() {
        return Err(ContainerError::AlreadyRunning(c.spec.name.clone()));
    }
    let result = launch(store, c, io, on_started);
    if let Err(e) = &result {
        if c.state.status != Status::Running {
            c.state.error = Some(e.to_string());
            c.state.exit_code = Some(i32::from(e.exit_code()));
            let _ = c.save_state();
        }
    }
    if c.spec.auto_remove {
        let removed = remove(store, c, true, true);
        if let (Ok(_), Err(e)) = (&result, removed) {
            return Err(e);
        }
    }
    result
}

/// Opens the mount sources of `m` (volumes filled from the image when new and empty).
fn open_mount(m: &MountSpec, volumes: &Volumes, rootfs: &Root) -> Result<Mount, ContainerError> {
    let bind = |path: &Path| -> Result<OwnedFd, ContainerError> {
        // The user's own path, opened as given (symlinks followed, as `docker run -v` does).
        rustix::fs::open(
            path,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(ContainerError::errno(format!("opening {}", path.display())))
    };
    Ok(match m {
        MountSpec::Bind {
            source,
            target,
            readonly,
        } => Mount {
            target: target.clone(),
            source: MountSource::Bind(bind(source)?),
            readonly: *readonly,
        },
        MountSpec::Volume {
            name,
            target,
            readonly,
            nocopy,
            ..
        } => {
            let v = volumes.get(name)?;
            if !nocopy && v.is_empty()? {
                fill_volume(rootfs, target, &v.mountpoint)?;
            }
            Mount {
                target: target.clone(),
                source: MountSource::Bind(bind(&v.mountpoint)?),
                readonly: *readonly,
            }
        }
        MountSpec::Tmpfs {
            target,
            size,
            mode,
            readonly,
        } => Mount {
            target: target.clone(),
            source: MountSource::Tmpfs {
                size: *size,
                mode: *mode,
            },
            readonly: *readonly,
        },
    })
}

/// Copies what the image has at `target` into an empty volume (Docker's copy-up), with owners,
/// modes and the directory's own owner and mode.
fn fill_volume(rootfs: &Root, target: &str, data: &Path) -> Result<(), ContainerError> {
    let Ok(meta) = rootfs.symlink_metadata(target) else {
        return Ok(());
    };
    if !meta.is_dir() {
        return Ok(());
    }
    let dest =
        Root::open(data).map_err(ContainerError::fs(format!("opening {}", data.display())))?;
    let op = rbuild_executor::CopyOp {
        sources: vec![format!("{}/", target.trim_end_matches('/'))],
        dest: "/".into(),
        keep_owners: true,
        ..rbuild_executor::CopyOp::default()
    };
    rbuild_executor::copy(&op, rootfs, &dest)?;
    std::os::unix::fs::chown(data, Some(meta.uid()), Some(meta.gid()))
        .map_err(ContainerError::io(format!("chown {}", data.display())))?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(data, fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(ContainerError::io(format!("chmod {}", data.display())))
}

fn launch(
    store: &Store,
    c: &mut Container,
    io: StartIo,
    on_started: &mut dyn FnMut(&Container),
) -> Result<ExitStatus, ContainerError> {
    let volumes = Volumes::open(store)?;
    let lock = store.lock_shared()?;
    let (manifest, config) = image_of(store, &c.spec.image_manifest, &c.spec.image_media_type)?;
    let lowers = image_lowers(store, &manifest, &config, c.dir())?;
    let view = OverlayView::mount(&lowers, &c.upper(), &c.work())?;
    let root = view.root();
    let user = rbuild_executor::resolve_user(&c.spec.user, root)?;
    root.mkdir_all(&c.spec.working_dir, 0o755, None)
        .map_err(ContainerError::fs(format!(
            "creating the working directory {}",
            c.spec.working_dir
        )))?;
    let network: Network = c.spec.network.into();
    let mut mounts = etc_mounts(&c.spec.hostname, network, false);
    for m in &c.spec.mounts {
        mounts.push(open_mount(m, &volumes, root)?);
    }
    let pty = if c.spec.tty {
        let mut pty = Pty::new_instance()?;
        pty.chown_slave(user.uid)?;
        if let Some(devpts) = pty.devpts.take() {
            mounts.push(Mount {
                target: "/dev/pts".into(),
                source: MountSource::Tree(devpts),
                readonly: false,
            });
        }
        Some(pty)
    } else {
        None
    };
    let log_path = c.log_path();
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
        .map_err(ContainerError::io(format!(
            "opening {}",
            log_path.display()
        )))?;
    let stdin = match (io.stdin, c.spec.interactive) {
        (true, _) => StdinMode::User,
        (false, true) => StdinMode::KeepOpen,
        (false, false) => StdinMode::Null,
    };
    let attach_dir = c.attach_dir();
    private_dir(&attach_dir)?;
    let signals = attach::catch_signals()?;
    let mut streams = attach::connect(StreamsSpec {
        pty,
        stdin,
        console: io.console,
        log: Some(log),
    })?;
    let spec = SandboxSpec {
        rootfs: root,
        attach_dir,
        mounts,
        hostname: c.spec.hostname.clone(),
        network,
        readonly_rootfs: c.spec.read_only,
        limits: Limits {
            memory: c.spec.memory,
            cpus: c.spec.cpus,
            pids: None,
        },
        security: Security::default(),
        process: ProcessSpec {
            args: c.spec.command.clone(),
            env: with_home(&c.spec.env, &user.home),
            cwd: c.spec.working_dir.clone(),
            user: User {
                uid: user.uid,
                gid: user.gid,
                groups: user.groups.clone(),
            },
            stdio: streams.take_stdio()?,
            terminal: streams.terminal(),
        },
    };
    let running = match sandbox::spawn(spec) {
        Ok(r) => r,
        Err(e) => {
            streams.finish();
            return Err(e.into());
        }
    };
    drop(lock);
    let me = std::process::id() as i32;
    c.state = ContainerState {
        status: Status::Running,
        pid: Some(running.pid()),
        pid_start: process_start(running.pid()),
        monitor_pid: Some(me),
        monitor_start: process_start(me),
        exit_code: None,
        oom_killed: false,
        started: Some(now()),
        finished: None,
        stubs: running.stubs.created.clone(),
        stub_parents: running.stubs.parents.clone(),
        error: None,
    };
    let stubs: Stubs = running.stubs.clone();
    // Dropping `running` on an error below kills the container.
    c.save_state()?;
    let pidfd = running
        .pidfd()
        .try_clone_to_owned()
        .map_err(ContainerError::io("dup the container's pidfd"))?;
    let forwarder = attach::forward_signals(signals, pidfd, streams.resize_target());
    on_started(c);
    let status = running.wait();
    drop(forwarder);
    streams.finish();
    drop(view);
    // Mount points the sandbox made are not the container's changes.
    if let Ok(upper) = Root::open(&c.upper()) {
        let _ = remove_stubs(&upper, &stubs);
    }
    let status = status?;
    c.state.status = Status::Exited;
    c.state.exit_code = Some(status.code);
    c.state.oom_killed = status.oom_killed;
    c.state.finished = Some(now());
    c.state.pid = None;
    c.state.pid_start = None;
    c.state.monitor_pid = None;
    c.state.monitor_start = None;
    c.state.stubs.clear();
    c.state.stub_parents.clear();
    c.save_state()?;
    Ok(status)
}

/// A pidfd of a running process recorded as `pid` started at `start`; `None` when it is gone.
pub(crate) fn open_pidfd(pid: Option<i32>, start: Option<u64>) -> Option<OwnedFd> {
    let (pid, start) = (pid?, start?);
    let fd = rustix::process::pidfd_open(Pid::from_raw(pid)?, PidfdFlags::empty()).ok()?;
    // Checked after opening: the pidfd then refers to the recorded process, not a new one
    // that got its pid.
    process_alive(pid, start).then_some(fd)
}

/// Waits until the process behind `pidfd` has exited, at most `timeout`; whether it did.
fn wait_exit(pidfd: &OwnedFd, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ts = rustix::event::Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let mut fds = [rustix::event::PollFd::new(
            pidfd,
            rustix::event::PollFlags::IN,
        )];
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(n) if n > 0 => return true,
            Ok(_) => return false,
            Err(rustix::io::Errno::INTR) if !left.is_zero() => continue,
            Err(_) => return false,
        }
    }
}

/// A signal by name or number (`SIGTERM`, `TERM`, `15`).
pub fn parse_signal(s: &str) -> Option<Signal> {
    let t = s.trim().to_ascii_uppercase();
    let t = t.strip_prefix("SIG").unwrap_or(&t);
    let n: i32 = match t.parse() {
        Ok(n) => n,
        Err(_) => match t {
            "HUP" => libc::SIGHUP,
            "INT" => libc::SIGINT,
            "QUIT" => libc::SIGQUIT,
            "KILL" => libc::SIGKILL,
            "USR1" => libc::SIGUSR1,
            "USR2" => libc::SIGUSR2,
            "TERM" => libc::SIGTERM,
            "STOP" => libc::SIGSTOP,
            "CONT" => libc::SIGCONT,
            "WINCH" => libc::SIGWINCH,
            "PWR" => libc::SIGPWR,
            "ALRM" => libc::SIGALRM,
            _ => return None,
        },
    };
    Signal::from_named_raw(n)
}

/// How long a monitor may take to record a container's end after it exited.
const MONITOR_GRACE: Duration = Duration::from_secs(10);

/// Sends `signal` to a running container and waits (up to `timeout`) for it to exit; then
/// `SIGKILL`. Returns once its monitor recorded the end. Does nothing to a stopped one.
fn kill_and_wait(
    containers: &Containers,
    c: &mut Container,
    signal: Signal,
    timeout: Duration,
) -> Result<(), ContainerError> {
    containers.refresh(c)?;
    if !c.is_running() {
        return Ok(());
    }
    if let Some(pidfd) = open_pidfd(c.state.pid, c.state.pid_start) {
        let _ = rustix::process::pidfd_send_signal(&pidfd, signal);
        if !wait_exit(&pidfd, timeout) {
            let _ = rustix::process::pidfd_send_signal(&pidfd, Signal::KILL);
            wait_exit(&pidfd, MONITOR_GRACE);
        }
    }
    // The monitor records the end and exits (or, for `rbuild run`, returns to the shell).
    if let Some(monitor) = open_pidfd(c.state.monitor_pid, c.state.monitor_start) {
        if monitor_is_other_process(c) {
            wait_exit(&monitor, MONITOR_GRACE);
        }
    }
    containers.refresh(c)?;
    c.reload()?;
    containers.refresh(c)
}

fn monitor_is_other_process(c: &Container) -> bool {
    c.state.monitor_pid != Some(std::process::id() as i32)
}

/// `rbuild stop`: the image's stop signal (SIGTERM by default), then SIGKILL after `timeout`.
pub fn stop(store: &Store, c: &mut Container, timeout: Duration) -> Result<(), ContainerError> {
    let containers = Containers::open(store)?;
    let signal = if c.spec.stop_signal.is_empty() {
        Signal::TERM
    } else {
        parse_signal(&c.spec.stop_signal).unwrap_or(Signal::TERM)
    };
    kill_and_wait(&containers, c, signal, timeout)
}

/// `rbuild rm`: removes a stopped container (a running one only with `force`, which kills
/// it); with `volumes`, its anonymous volumes too.
pub fn remove(
    store: &Store,
    c: &mut Container,
    force: bool,
    volumes: bool,
) -> Result<(), ContainerError> {
    let containers = Containers::open(store)?;
    containers.refresh(c)?;
    if c.is_running() {
        if !force {
            return Err(ContainerError::Running(c.spec.name.clone()));
        }
        kill_and_wait(&containers, c, Signal::KILL, Duration::ZERO)?;
        if c.is_running() {
            return Err(ContainerError::Running(c.spec.name.clone()));
        }
    }
    containers.delete(c)?;
    if volumes {
        let vols = Volumes::open(store)?;
        for m in &c.spec.mounts {
            if let MountSpec::Volume {
                name,
                anonymous: true,
                ..
            } = m
            {
                vols.delete(name)?;
            }
        }
    }
    Ok(())
}

/// `rbuild logs`: copies the log to `out`; with `follow`, keeps copying what is added until
/// the container stops.
pub fn logs(
    store: &Store,
    c: &Container,
    follow: bool,
    out: &mut dyn Write,
) -> Result<(), ContainerError> {
    let containers = Containers::open(store)?;
    let path = c.log_path();
    let mut file = match File::open(&path) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(ContainerError::io(format!("opening {}", path.display()))(e)),
    };
    let mut pos = 0u64;
    let mut copy = |file: &mut Option<File>, pos: &mut u64| -> Result<(), ContainerError> {
        if file.is_none() {
            *file = File::open(&path).ok();
        }
        if let Some(f) = file {
            f.seek(SeekFrom::Start(*pos))
                .map_err(ContainerError::io(format!("reading {}", path.display())))?;
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let n = f
                    .read(&mut buf)
                    .map_err(ContainerError::io(format!("reading {}", path.display())))?;
                if n == 0 {
                    break;
                }
                *pos += n as u64;
                if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                    // The reader went away (`logs -f | head`): done.
                    return Err(ContainerError::Io {
                        what: "writing the log".into(),
                        source: std::io::Error::from(std::io::ErrorKind::BrokenPipe),
                    });
                }
            }
        }
        Ok(())
    };
    match copy(&mut file, &mut pos) {
        Err(ContainerError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::BrokenPipe =>
        {
            return Ok(())
        }
        r => r?,
    }
    if !follow {
        return Ok(());
    }
    let mut c = c.clone();
    loop {
        containers.refresh(&mut c)?;
        let running = c.is_running();
        match copy(&mut file, &mut pos) {
            Err(ContainerError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::BrokenPipe =>
            {
                return Ok(())
            }
            r => r?,
        }
        if !running {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
        if c.reload().is_err() {
            // Removed meanwhile.
            return Ok(());
        }
    }
}

/// The sources' fds of a container for tests of the module's own pieces.
#[cfg(test)]
mod tests {
    use super::*;

    fn image(entrypoint: &[&str], cmd: &[&str]) -> rbuild_image::ContainerConfig {
        rbuild_image::ContainerConfig {
            entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn commands_follow_dockers_rules() {
        let img = image(&["echo", "ep"], &["default"]);
        let run = |ep: Option<&str>, args: &[&str]| {
            compose_command(&img, ep, &strings(args)).unwrap_or_else(|e| vec![format!("ERR {e}")])
        };
        assert_eq!(run(None, &[]), ["echo", "ep", "default"]);
        assert_eq!(run(None, &["a", "b"]), ["echo", "ep", "a", "b"]);
        assert_eq!(run(Some("ls"), &[]), ["ls"]);
        assert_eq!(run(Some("ls"), &["-l"]), ["ls", "-l"]);
        assert_eq!(run(Some(""), &["sh"]), ["sh"]);
        assert!(compose_command(&img, Some(""), &[]).is_err());
        let cmd_only = image(&[], &["sh", "-c", "x"]);
        assert_eq!(
            compose_command(&cmd_only, None, &strings(&["id"])).unwrap_or_default(),
            ["id"]
        );
        assert!(compose_command(&image(&[], &[]), None, &[]).is_err());
    }

    #[test]
    fn env_merges_like_docker() {
        let env = compose_env(
            &strings(&["A=1", "B=2", "PATH=/x"]),
            &strings(&["B=3", "C=4"]),
            "abc",
            true,
        );
        assert_eq!(
            env,
            ["HOSTNAME=abc", "TERM=xterm", "A=1", "B=3", "PATH=/x", "C=4"]
        );
        let env = compose_env(&[], &[], "h", false);
        assert_eq!(env[0], format!("PATH={}", sandbox::DEFAULT_PATH));
        assert_eq!(
            with_home(&env, "/root").last().map(String::as_str),
            Some("HOME=/root")
        );
        assert_eq!(with_home(&strings(&["HOME=/x"]), "/root"), ["HOME=/x"]);
    }

    #[test]
    fn env_flags_and_files() {
        let lookup = |k: &str| (k == "FROM_HOST").then(|| "h".to_string());
        assert_eq!(
            resolve_env_flags(&strings(&["A=1", "FROM_HOST", "UNSET", "E="]), &lookup)
                .unwrap_or_default(),
            ["A=1", "FROM_HOST=h", "E="]
        );
        assert!(resolve_env_flags(&strings(&["=x"]), &lookup).is_err());
        let file = "# comment\n\n  D=5\nFROM_HOST\nQ=\"quoted\"\r\n";
        assert_eq!(
            parse_env_file(file, &lookup).unwrap_or_default(),
            ["D=5", "FROM_HOST=h", "Q=\"quoted\""]
        );
    }

    #[test]
    fn volume_flags() {
        assert_eq!(
            parse_volume_flag("/srv/data:/data:ro").ok(),
            Some(VolumeFlag::Bind {
                source: "/srv/data".into(),
                target: "/data".into(),
                readonly: true
            })
        );
        assert_eq!(
            parse_volume_flag("cache:/var/cache:nocopy").ok(),
            Some(VolumeFlag::Named {
                name: "cache".into(),
                target: "/var/cache".into(),
                readonly: false,
                nocopy: true
            })
        );
        assert_eq!(
            parse_volume_flag("/data").ok(),
            Some(VolumeFlag::Anonymous {
                target: "/data".into()
            })
        );
        for bad in [
            "data",
            "v:rel",
            "v:/d:shared",
            "bad/name:/d",
            "/a:/b:nocopy",
            ":/d",
            "a:b:c:d",
        ] {
            assert!(parse_volume_flag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tmpfs_flags_and_sizes() {
        assert_eq!(
            parse_tmpfs_flag("/run:size=64m,mode=755").ok(),
            Some(MountSpec::Tmpfs {
                target: "/run".into(),
                size: Some(64 << 20),
                mode: 0o755,
                readonly: false
            })
        );
        assert_eq!(
            parse_tmpfs_flag("/tmp").ok(),
            Some(MountSpec::Tmpfs {
                target: "/tmp".into(),
                size: None,
                mode: 0o1777,
                readonly: false
            })
        );
        assert!(parse_tmpfs_flag("/t:noexec").is_err());
        assert!(parse_tmpfs_flag("rel").is_err());
        assert!(parse_tmpfs_flag("/t:mode=99").is_err());
        assert_eq!(parse_size("32m"), Some(32 << 20));
        assert_eq!(parse_size("1.5k"), Some(1536));
        assert_eq!(parse_size("2GiB"), Some(2 << 30));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("x"), None);
    }

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(parse_signal("SIGTERM"), Some(Signal::TERM));
        assert_eq!(parse_signal("int"), Some(Signal::INT));
        assert_eq!(parse_signal("9"), Some(Signal::KILL));
        assert_eq!(parse_signal("SIGNOPE"), None);
    }
}
