//! Detached containers (`run -d`, `start` without `-a`): a supervisor process per container.
//!
//! [`start_detached`] runs the supervisor command it is given (the CLI re-executes its own
//! binary with a hidden subcommand that calls [`supervise`]) with standard input `/dev/null`,
//! standard error the container's log, and standard output a pipe on which the supervisor
//! reports, once, whether the container started: `ok`, or `error CODE MESSAGE`. Then it
//! returns, leaving the supervisor behind. The supervisor makes itself a session leader
//! (no terminal can signal it), starts the container with output to the log only, reports,
//! points its standard output at the log too (closing the report pipe), and waits for the
//! container, recording its end like a foreground `rbuild run` — and removing it when it was
//! started with `--rm`.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::process::{Command, Stdio};

use rbuild_cache::Store;

use crate::container::{start, StartIo};
use crate::container_error::ContainerError;
use crate::containers::{Container, Containers};

/// Starts `c` under a supervisor: `supervisor` must run [`supervise`] for `c`'s id. Returns
/// once the container runs (or failed to start, with the supervisor's error).
pub fn start_detached(c: &Container, mut supervisor: Command) -> Result<(), ContainerError> {
    let log_path = c.log_path();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
        .map_err(ContainerError::io(format!(
            "opening {}",
            log_path.display()
        )))?;
    let (mut report, report_w) = std::io::pipe().map_err(ContainerError::io("pipe"))?;
    supervisor
        .stdin(Stdio::null())
        .stdout(report_w)
        .stderr(log)
        .current_dir("/");
    let child = supervisor
        .spawn()
        .map_err(ContainerError::io("starting the container's supervisor"))?;
    // The command holds the pipe's write end: only the supervisor may keep it open.
    drop(supervisor);
    drop(child);
    let mut text = String::new();
    (&mut report)
        .take(64 << 10)
        .read_to_string(&mut text)
        .map_err(ContainerError::io("reading the supervisor's report"))?;
    let text = text.trim();
    if text == "ok" {
        return Ok(());
    }
    if let Some(rest) = text.strip_prefix("error ") {
        let (code, message) = rest.split_once(' ').unwrap_or(("125", rest));
        return Err(ContainerError::Detached {
            code: code.parse().unwrap_or(125),
            message: message.to_string(),
        });
    }
    Err(ContainerError::Detached {
        code: 125,
        message: format!(
            "the container's supervisor ended without starting it (see {})",
            log_path.display()
        ),
    })
}

/// The supervisor: starts container `id`, reports on standard output, waits for it.
pub fn supervise(store: &Store, id: &str) -> Result<(), ContainerError> {
    // A session of its own: no terminal's signals reach the supervisor.
    let _ = rustix::process::setsid();
    let containers = Containers::open(store)?;
    let mut c = match containers.find(id) {
        Ok(c) if c.spec.id == id => c,
        Ok(_) => return report_error(&ContainerError::NoSuchContainer(id.to_string())),
        Err(e) => return report_error(&e),
    };
    let log_path = c.log_path();
    let mut started = false;
    let result = start(
        store,
        &mut c,
        StartIo {
            console: false,
            stdin: false,
        },
        &mut |_| {
            started = true;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "ok").and_then(|()| out.flush());
            drop(out);
            // From now on standard output is the log, and the report pipe closes.
            if let Ok(log) = std::fs::OpenOptions::new().append(true).open(&log_path) {
                let _ = rustix::stdio::dup2_stdout(&log);
            }
        },
    );
    match result {
        Ok(_) => Ok(()),
        Err(e) if !started => report_error(&e),
        Err(e) => Err(e),
    }
}

fn report_error(e: &ContainerError) -> Result<(), ContainerError> {
    let message = e.to_string().replace('\n', " ");
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "error {} {message}", e.exit_code()).and_then(|()| out.flush());
    Ok(())
}
