//! The `rbuild` binary: parses the command line and hands each command to the library crates.

mod dockerfile;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// rbuild — a Dockerfile build engine.
#[derive(Parser)]
#[command(name = "rbuild", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Parse a Dockerfile and report every problem found (exit status 1 on errors).
    Check {
        /// The Dockerfile (`-` reads standard input).
        #[arg(default_value = "Dockerfile")]
        file: String,
    },
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
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
