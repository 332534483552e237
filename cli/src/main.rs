//! The `rbuild` binary: parses the command line and hands each command to the library crates.

mod build;
mod build_registry;
mod bundle;
mod container;
mod dockerfile;
mod images;
mod progress;
mod registry;
mod selfexe;
mod signals;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// rbuild — a Dockerfile build engine. `rbuild -t app .` builds like `docker build -t app .`.
#[derive(Parser)]
#[command(
    name = "rbuild",
    version,
    about,
    after_help = "`rbuild [build flags] CONTEXT` is short for `rbuild build [build flags] CONTEXT`."
)]
struct Cli {
    /// Where images and layers are stored (default: $RBUILD_ROOT, /var/lib/rbuild for root,
    /// else $XDG_DATA_HOME/rbuild).
    #[arg(long, global = true, value_name = "DIR")]
    root: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build an image from a Dockerfile and a context directory.
    Build(Box<build::BuildArgs>),
    /// List images.
    Images,
    /// Give an image another name: `rbuild tag SOURCE TARGET`.
    Tag { source: String, target: String },
    /// Remove image names (an image ID removes all its names).
    Rmi {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Show images' details as JSON, as `docker image inspect` does.
    Inspect {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Show an image's history.
    History { image: String },
    /// Write images to a docker-archive tar (loadable by `docker load`).
    Save {
        /// The archive to write.
        #[arg(short, long)]
        output: PathBuf,
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Load images from a docker-archive or OCI archive tar.
    Load {
        /// The archive to read.
        #[arg(short, long)]
        input: PathBuf,
    },
    /// Download an image from a registry.
    Pull(registry::PullArgs),
    /// Upload an image to a registry.
    Push(registry::PushArgs),
    /// Log in to a registry (the login is saved in Docker's config.json).
    Login(registry::LoginArgs),
    /// Log out from a registry.
    Logout(registry::LogoutArgs),
    /// Write an image as an OCI runtime bundle (DIR/config.json + DIR/rootfs) for runc.
    ExportBundle(bundle::ExportBundleArgs),
    /// Parse a Dockerfile and report every problem found (exit status 1 on errors).
    Check {
        /// The Dockerfile (`-` reads standard input).
        #[arg(default_value = "Dockerfile")]
        file: String,
    },
    #[command(flatten)]
    Container(container::ContainerCommand),
    /// Tools for looking inside rbuild.
    Debug {
        #[command(subcommand)]
        command: DebugCommand,
    },
}

#[derive(Subcommand)]
enum DebugCommand {
    /// Print a Dockerfile's typed syntax tree.
    Parse {
        /// Print BuildKit's AST dump format instead (one `(keyword "arg" …)` line per instruction).
        #[arg(long)]
        dump: bool,
        /// The Dockerfile (`-` reads standard input).
        file: String,
    },
}

/// The command line with `build` inserted when no subcommand is named (`rbuild -t app .`).
fn with_default_subcommand(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let names: Vec<String> = Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .chain(["help".to_string()])
        .collect();
    let mut i = 1;
    while let Some(arg) = args.get(i).and_then(|a| a.to_str()) {
        if arg == "--root" {
            i += 2;
        } else if arg.starts_with("--root=") {
            i += 1;
        } else {
            if !names.iter().any(|n| n == arg)
                && !matches!(arg, "-h" | "--help" | "-V" | "--version")
            {
                args.insert(1, "build".into());
            }
            return args;
        }
    }
    args
}

/// Commands that only print (no sandbox, no pipes of their own to the containers).
fn prints_and_exits(command: &Command) -> bool {
    matches!(
        command,
        Command::Images
            | Command::Inspect { .. }
            | Command::History { .. }
            | Command::Check { .. }
            | Command::Debug { .. }
    )
}

/// `rbuild inspect IMG | head` ends quietly when `head` has had enough, as Unix tools do: the
/// Rust runtime ignores SIGPIPE, which would turn the closed pipe into a panic while printing.
#[allow(unsafe_code)]
fn die_on_closed_pipe() {
    // SAFETY: restoring a signal's default action; no handler code is involved, and no other
    // thread is running yet.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    if let Some(code) = selfexe::reexec_sealed() {
        return code;
    }
    let cli = Cli::parse_from(with_default_subcommand(std::env::args_os().collect()));
    let root = cli.root.clone().unwrap_or_else(rbuild_cache::default_root);
    // Built layers are kept as snapshots plus recipes; every store opened can read them.
    rbuild_image::use_layer_recipes(None);
    if prints_and_exits(&cli.command) {
        die_on_closed_pipe();
    }
    let result = match cli.command {
        Command::Build(args) => build::run(&root, &args),
        Command::Images => images::images(&root).map(|()| ExitCode::SUCCESS),
        Command::Tag { source, target } => {
            images::tag(&root, &source, &target).map(|()| ExitCode::SUCCESS)
        }
        Command::Rmi { images: names } => images::rmi(&root, &names).map(|()| ExitCode::SUCCESS),
        Command::Inspect { images: names } => {
            images::inspect(&root, &names).map(|()| ExitCode::SUCCESS)
        }
        Command::History { image } => images::history(&root, &image).map(|()| ExitCode::SUCCESS),
        Command::Save {
            output,
            images: names,
        } => images::save(&root, &output, &names).map(|()| ExitCode::SUCCESS),
        Command::Load { input } => images::load(&root, &input).map(|()| ExitCode::SUCCESS),
        Command::Pull(args) => registry::pull(&root, &args).map(|()| ExitCode::SUCCESS),
        Command::Push(args) => registry::push(&root, &args).map(|()| ExitCode::SUCCESS),
        Command::Login(args) => registry::login(&args).map(|()| ExitCode::SUCCESS),
        Command::Logout(args) => registry::logout(&args).map(|()| ExitCode::SUCCESS),
        Command::ExportBundle(args) => bundle::export(&root, &args).map(|()| ExitCode::SUCCESS),
        Command::Container(command) => container::dispatch(&root, command),
        Command::Check { file } => dockerfile::check(&file),
        Command::Debug {
            command: DebugCommand::Parse { dump, file },
        } => dockerfile::debug_parse(&file, dump),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
