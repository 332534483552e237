//! The container commands — `run`, `ps`, `stop`, `start`, `rm`, `logs`, `exec`, `commit`,
//! `volume` — with `docker`'s flags and output shapes over [`rbuild_runtime`]'s containers, and
//! the hidden `__supervise ID` that a detached container's supervisor runs.
//!
//! `run`, `start -a` and `exec` end with the container's exit code (128 + the signal for a
//! signal death); when rbuild itself fails they end with 125, or 127/126 when the command does
//! not exist or cannot be executed, as `docker run` does.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use rbuild_executor::sandbox::Network;
use rbuild_runtime::container::{self, parse_env_file, resolve_env_flags, CreateOptions, StartIo};
use rbuild_runtime::containers::{Container, Containers, NetworkMode};
use rbuild_runtime::exec::ExecOptions;
use rbuild_runtime::volume::Volumes;
use rbuild_runtime::ContainerError;

use crate::images::{find, open};

/// The container commands (flattened into the top-level commands).
#[derive(Subcommand)]
pub enum ContainerCommand {
    /// Run a command in a new container (docker run's flags).
    Run(Box<RunArgs>),
    /// List containers (running ones; -a for all).
    Ps {
        /// Show all containers, not only running ones.
        #[arg(short, long)]
        all: bool,
        /// Print only the container IDs.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Stop running containers: the image's stop signal (SIGTERM), then SIGKILL after a timeout.
    Stop {
        /// Seconds to wait before SIGKILL.
        #[arg(short = 't', long = "time", default_value_t = 10)]
        time: u64,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Start a stopped container again (detached unless -a or -i).
    Start {
        /// Attach to its output and wait for it; end with its exit code.
        #[arg(short, long)]
        attach: bool,
        /// Attach standard input too (implies -a).
        #[arg(short, long)]
        interactive: bool,
        container: String,
    },
    /// Remove containers.
    Rm {
        /// Kill and remove running containers.
        #[arg(short, long)]
        force: bool,
        /// Remove their anonymous volumes too.
        #[arg(short, long)]
        volumes: bool,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Print a container's output (stdout and stderr as they came).
    Logs {
        /// Keep printing new output until the container stops.
        #[arg(short, long)]
        follow: bool,
        container: String,
    },
    /// Run a command in a running container.
    Exec(Box<ExecArgs>),
    /// Make an image from a container's changes: `rbuild commit CONTAINER REPOSITORY[:TAG]`.
    Commit {
        container: String,
        /// The new image's name.
        reference: String,
        /// A comment for the history entry.
        #[arg(short, long, default_value = "")]
        message: String,
    },
    /// Manage named volumes.
    Volume {
        #[command(subcommand)]
        command: VolumeCommand,
    },
    /// Run a detached container and wait for it (started by `run -d` and `start`).
    #[command(name = "__supervise", hide = true)]
    Supervise { id: String },
}

/// `rbuild volume …`.
#[derive(Subcommand)]
pub enum VolumeCommand {
    /// Create a volume (a random name when none is given).
    Create { name: Option<String> },
    /// List volumes.
    Ls {
        /// Print only the names.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Remove volumes (not while a container uses them).
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Show volumes' details as JSON.
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// `rbuild run`'s flags.
#[derive(Args)]
pub struct RunArgs {
    /// Remove the container when it exits.
    #[arg(long)]
    rm: bool,
    /// Keep standard input open and pass it to the container.
    #[arg(short, long)]
    interactive: bool,
    /// Give the container a terminal.
    #[arg(short, long)]
    tty: bool,
    /// Run in the background and print the container ID.
    #[arg(short, long)]
    detach: bool,
    /// The container's name.
    #[arg(long)]
    name: Option<String>,
    /// Set an environment variable (KEY=VALUE, or KEY to pass rbuild's own value).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Read environment variables from a file (KEY=VALUE lines).
    #[arg(long = "env-file", value_name = "FILE")]
    env_file: Vec<PathBuf>,
    /// Bind a host path or a volume: SRC:DST[:ro], NAME:DST[:ro], or DST for a new anonymous
    /// volume.
    #[arg(short = 'v', long = "volume", value_name = "SRC:DST[:OPTS]")]
    volume: Vec<String>,
    /// Mount a tmpfs: DST[:size=64m,mode=1777,ro].
    #[arg(long, value_name = "DST[:OPTS]")]
    tmpfs: Vec<String>,
    /// The working directory inside the container.
    #[arg(short = 'w', long)]
    workdir: Option<String>,
    /// The user: name, uid, name:group or uid:gid.
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Replace the image's ENTRYPOINT (and drop its CMD).
    #[arg(long)]
    entrypoint: Option<String>,
    /// default (the host's network stack: rbuild has no bridge network), none (only
    /// loopback) or host.
    #[arg(long, default_value = "default")]
    network: String,
    /// The container's hostname (default: the first 12 digits of its ID).
    #[arg(long)]
    hostname: Option<String>,
    /// Mount the container's root filesystem read-only.
    #[arg(long = "read-only")]
    read_only: bool,
    /// Memory limit (e.g. 512m, 1g).
    #[arg(short = 'm', long)]
    memory: Option<String>,
    /// CPU limit (e.g. 1.5).
    #[arg(long)]
    cpus: Option<f64>,
    /// The image (name or ID prefix).
    image: String,
    /// The command and its arguments (replace the image's CMD).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// `rbuild exec`'s flags.
#[derive(Args)]
pub struct ExecArgs {
    /// Pass standard input to the command.
    #[arg(short, long)]
    interactive: bool,
    /// Give the command a terminal.
    #[arg(short, long)]
    tty: bool,
    /// The user: name, uid, name:group or uid:gid.
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// The working directory.
    #[arg(short = 'w', long)]
    workdir: Option<String>,
    /// Set an environment variable (KEY=VALUE).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// The container (name or ID prefix).
    container: String,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Runs one container command; errors are printed here (exit status 1, or Docker's 125–127
/// for `run`, `start -a` and `exec`).
pub fn dispatch(root: &Path, command: ContainerCommand) -> anyhow::Result<ExitCode> {
    let ok = |r: anyhow::Result<()>| {
        Ok(match r {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {}", message(&e));
                ExitCode::FAILURE
            }
        })
    };
    match command {
        ContainerCommand::Run(args) => Ok(with_docker_code(run(root, &args))),
        ContainerCommand::Ps { all, quiet } => ok(ps(root, all, quiet)),
        ContainerCommand::Stop { time, containers } => ok(stop(root, time, &containers)),
        ContainerCommand::Start {
            attach,
            interactive,
            container,
        } => Ok(with_docker_code(start(
            root,
            attach,
            interactive,
            &container,
        ))),
        ContainerCommand::Rm {
            force,
            volumes,
            containers,
        } => ok(rm(root, force, volumes, &containers)),
        ContainerCommand::Logs { follow, container } => ok(logs(root, follow, &container)),
        ContainerCommand::Exec(args) => Ok(with_docker_code(exec(root, &args))),
        ContainerCommand::Commit {
            container,
            reference,
            message,
        } => ok(commit(root, &container, &reference, &message)),
        ContainerCommand::Volume { command } => ok(volume(root, command)),
        ContainerCommand::Supervise { id } => ok(open(root).and_then(|store| {
            rbuild_runtime::supervise::supervise(&store, &id)?;
            Ok(())
        })),
    }
}

/// An error and its causes, without repeating a cause that an error's text already ends with.
fn message(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in e.chain() {
        let t = c.to_string();
        if !parts.last().is_some_and(|p| p.ends_with(&t)) {
            parts.push(t);
        }
    }
    parts.join(": ")
}

/// The exit code of a container (0–255), or 125/126/127 with the error printed.
fn with_docker_code(result: anyhow::Result<i32>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("error: {}", message(&e));
            let code = e
                .chain()
                .find_map(|c| c.downcast_ref::<ContainerError>())
                .map_or(125, ContainerError::exit_code);
            ExitCode::from(code)
        }
    }
}

fn network_mode(s: &str) -> anyhow::Result<NetworkMode> {
    Ok(match crate::build::parse_network(s)? {
        Network::Default => NetworkMode::Default,
        Network::None => NetworkMode::None,
        Network::Host => NetworkMode::Host,
    })
}

fn host_env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

/// The supervisor of a detached container: this binary again, with the hidden subcommand.
fn supervisor(root: &Path, id: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new("/proc/self/exe");
    cmd.arg("--root").arg(root).arg("__supervise").arg(id);
    cmd
}

fn find_container(root: &Path, what: &str) -> anyhow::Result<(rbuild_cache::Store, Container)> {
    let store = open(root)?;
    let c = Containers::open(&store)?.find(what)?;
    Ok((store, c))
}

/// `rbuild run`.
fn run(root: &Path, args: &RunArgs) -> anyhow::Result<i32> {
    let store = open(root)?;
    let record = find(&store, &args.image)?;
    let mut env = Vec::new();
    for file in &args.env_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading the env file {}", file.display()))?;
        env.extend(parse_env_file(&text, &host_env)?);
    }
    env.extend(resolve_env_flags(&args.env, &host_env)?);
    let opts = CreateOptions {
        name: args.name.clone(),
        command: args.command.clone(),
        entrypoint: args.entrypoint.clone(),
        env,
        workdir: args.workdir.clone(),
        user: args.user.clone(),
        volumes: args.volume.clone(),
        tmpfs: args.tmpfs.clone(),
        network: network_mode(&args.network)?,
        hostname: args.hostname.clone(),
        read_only: args.read_only,
        memory: args
            .memory
            .as_deref()
            .map(crate::build::parse_bytes)
            .transpose()?,
        cpus: args.cpus,
        tty: args.tty,
        interactive: args.interactive,
        auto_remove: args.rm,
    };
    let mut c = container::create(&store, &record, &args.image, &opts)?;
    if args.detach {
        rbuild_runtime::supervise::start_detached(&c, supervisor(store.root(), &c.spec.id))?;
        println!("{}", c.spec.id);
        return Ok(0);
    }
    let io = StartIo {
        console: true,
        stdin: args.interactive,
    };
    Ok(container::start(&store, &mut c, io, &mut |_| {})?.code)
}

/// `rbuild start`.
fn start(root: &Path, attach: bool, interactive: bool, what: &str) -> anyhow::Result<i32> {
    let (store, mut c) = find_container(root, what)?;
    if attach || interactive {
        let io = StartIo {
            console: true,
            stdin: interactive,
        };
        return Ok(container::start(&store, &mut c, io, &mut |_| {})?.code);
    }
    if c.is_running() {
        bail!(ContainerError::AlreadyRunning(c.spec.name.clone()));
    }
    rbuild_runtime::supervise::start_detached(&c, supervisor(store.root(), &c.spec.id))?;
    println!("{what}");
    Ok(0)
}

/// A command as `docker ps` shows it: quoted, at most 20 characters.
fn short_command(args: &[String]) -> String {
    let full = args.join(" ");
    let short: String = if full.chars().count() > 20 {
        full.chars().take(19).chain(['…']).collect()
    } else {
        full
    };
    format!("\"{short}\"")
}

/// `rbuild ps`.
fn ps(root: &Path, all: bool, quiet: bool) -> anyhow::Result<()> {
    let store = open(root)?;
    let mut list = Containers::open(&store)?.list()?;
    list.reverse();
    list.retain(|c| all || c.is_running());
    let mut out = std::io::stdout().lock();
    if quiet {
        for c in &list {
            writeln!(out, "{}", c.short_id())?;
        }
        return Ok(());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    writeln!(
        out,
        "{:<14} {:<20} {:<24} {:<24} {:<32} NAMES",
        "CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS"
    )?;
    for c in &list {
        writeln!(
            out,
            "{:<14} {:<20} {:<24} {:<24} {:<32} {}",
            c.short_id(),
            c.spec.image,
            short_command(&c.spec.command),
            format!(
                "{} ago",
                rbuild_runtime::containers::human_duration(now - c.spec.created)
            ),
            c.status_text(now),
            c.spec.name
        )?;
    }
    Ok(())
}

/// Runs `f` on each named container; reports every failure, fails if any did.
fn each(names: &[String], mut f: impl FnMut(&str) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let mut failed = 0;
    for name in names {
        match f(name) {
            Ok(()) => println!("{name}"),
            Err(e) => {
                eprintln!("error: {}", message(&e));
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} containers failed", names.len());
    }
    Ok(())
}

/// `rbuild stop`.
fn stop(root: &Path, time: u64, names: &[String]) -> anyhow::Result<()> {
    each(names, |name| {
        let (store, mut c) = find_container(root, name)?;
        container::stop(&store, &mut c, Duration::from_secs(time))?;
        Ok(())
    })
}

/// `rbuild rm`.
fn rm(root: &Path, force: bool, volumes: bool, names: &[String]) -> anyhow::Result<()> {
    each(names, |name| {
        let (store, mut c) = find_container(root, name)?;
        container::remove(&store, &mut c, force, volumes)?;
        Ok(())
    })
}

/// `rbuild logs`.
fn logs(root: &Path, follow: bool, what: &str) -> anyhow::Result<()> {
    let (store, c) = find_container(root, what)?;
    let mut out = std::io::stdout().lock();
    container::logs(&store, &c, follow, &mut out)?;
    Ok(())
}

/// `rbuild exec`.
fn exec(root: &Path, args: &ExecArgs) -> anyhow::Result<i32> {
    let (store, mut c) = find_container(root, &args.container)?;
    let opts = ExecOptions {
        command: args.command.clone(),
        interactive: args.interactive,
        tty: args.tty,
        user: args.user.clone(),
        workdir: args.workdir.clone(),
        env: resolve_env_flags(&args.env, &host_env)?,
    };
    Ok(rbuild_runtime::exec::exec(&store, &mut c, &opts)?.code)
}

/// `rbuild commit`.
fn commit(root: &Path, what: &str, reference: &str, message: &str) -> anyhow::Result<()> {
    let (store, c) = find_container(root, what)?;
    let record = rbuild_runtime::commit::commit(&store, &c, reference, message)
        .with_context(|| format!("committing {what} as {reference}"))?;
    println!("{}", record.config);
    Ok(())
}

/// `rbuild volume …`.
fn volume(root: &Path, command: VolumeCommand) -> anyhow::Result<()> {
    let store = open(root)?;
    let volumes = Volumes::open(&store)?;
    match command {
        VolumeCommand::Create { name } => {
            println!("{}", volumes.create(name.as_deref())?.name);
        }
        VolumeCommand::Ls { quiet } => {
            let list = volumes.list()?;
            if !quiet {
                println!("{:<10} VOLUME NAME", "DRIVER");
            }
            for v in list {
                if quiet {
                    println!("{}", v.name);
                } else {
                    println!("{:<10} {}", "local", v.name);
                }
            }
        }
        VolumeCommand::Rm { names } => {
            let containers = Containers::open(&store)?;
            let mut failed = 0;
            for name in &names {
                match volumes.remove(name, &containers) {
                    Ok(()) => println!("{name}"),
                    Err(e) => {
                        eprintln!("error: {e}");
                        failed += 1;
                    }
                }
            }
            if failed > 0 {
                bail!("{failed} of {} volumes could not be removed", names.len());
            }
        }
        VolumeCommand::Inspect { names } => {
            let mut out = Vec::new();
            for name in &names {
                out.push(volumes.get(name)?.inspect_json());
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
    }
    Ok(())
}
