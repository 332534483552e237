//! A container process's standard streams and signals, seen from the rbuild process that
//! waits for it (`run`, `start -a`, `exec`, the detached supervisor).
//!
//! The container never gets one of rbuild's own descriptors: its standard input is
//! `/dev/null`, a pipe fed from rbuild's standard input (`-i`), or a pipe nobody writes
//! (`-i` detached: kept open, as Docker keeps it); its output goes to pipes, or with `-t` to a
//! pty ([`crate::tty`]), that threads copy to rbuild's standard output and error and to the
//! container's log file. With `-t -i` on a terminal, the user's terminal is put in raw mode
//! while the container runs.
//!
//! Signals rbuild receives (SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH) are
//! forwarded to the container's process through its pidfd; with a pty, SIGWINCH instead copies
//! the user's window size to the pty (the kernel then signals the container's foreground
//! process group).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGWINCH};
use signal_hook::iterator::{Handle, Signals};

use crate::container_error::ContainerError;
use crate::tty::{copy_window_size, set_default_size, user_terminal, Pty, RawMode};

/// The signals forwarded to a container's process.
pub(crate) const FORWARDED: [i32; 7] =
    [SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH];

/// Where the container's standard input comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StdinMode {
    /// `/dev/null`.
    Null,
    /// rbuild's standard input, copied in; its end of file closes the container's.
    User,
    /// A pipe that stays open and empty.
    KeepOpen,
}

/// How to connect the streams.
pub(crate) struct StreamsSpec {
    /// The terminal (`-t`); its devpts mount already taken by the caller.
    pub pty: Option<Pty>,
    pub stdin: StdinMode,
    /// Copy output to rbuild's standard output and error.
    pub console: bool,
    /// Copy output to this log file.
    pub log: Option<File>,
}

/// Connected streams: the container's three descriptors (taken once) and the copying threads.
pub(crate) struct Streams {
    stdio: Option<[OwnedFd; 3]>,
    terminal: bool,
    outputs: Vec<JoinHandle<()>>,
    raw: Option<RawMode>,
    keep_open: Option<OwnedFd>,
    master: Option<OwnedFd>,
}

#[derive(Clone, Copy)]
enum Console {
    Out,
    Err,
}

fn pipe() -> Result<(OwnedFd, OwnedFd), ContainerError> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(ContainerError::errno("pipe"))
}

fn dup(fd: BorrowedFd<'_>) -> Result<OwnedFd, ContainerError> {
    fd.try_clone_to_owned().map_err(ContainerError::io("dup"))
}

/// Copies everything read from `src` to the console and the log, until end of file (or EIO,
/// which is how a pty master says its slave is closed).
fn spawn_output(
    src: OwnedFd,
    console: Option<Console>,
    log: Option<Arc<Mutex<File>>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut src = File::from(src);
        let mut buf = vec![0u8; 32 << 10];
        loop {
            let n = match src.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            let chunk = &buf[..n];
            // A console that went away (a closed pipe) must not stop the log.
            match console {
                Some(Console::Out) => {
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(chunk).and_then(|()| out.flush());
                }
                Some(Console::Err) => {
                    let mut err = std::io::stderr().lock();
                    let _ = err.write_all(chunk).and_then(|()| err.flush());
                }
                None => {}
            }
            if let Some(log) = &log {
                if let Ok(mut f) = log.lock() {
                    let _ = f.write_all(chunk);
                }
            }
        }
    })
}

/// Copies rbuild's standard input to `dst` until end of file, then closes `dst`. The thread
/// is not joined: it may stay blocked reading a terminal until rbuild exits.
fn spawn_input(dst: OwnedFd) {
    std::thread::spawn(move || {
        let mut dst = File::from(dst);
        let mut buf = vec![0u8; 32 << 10];
        let stdin = std::io::stdin();
        loop {
            let n = match stdin.lock().read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            if dst.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
}

/// Connects the streams as `spec` says and starts copying.
pub(crate) fn connect(spec: StreamsSpec) -> Result<Streams, ContainerError> {
    let log = spec.log.map(|f| Arc::new(Mutex::new(f)));
    let mut outputs = Vec::new();
    let mut keep_open = None;
    let mut raw = None;
    if let Some(pty) = spec.pty {
        let sized = spec.console
            && user_terminal().is_some_and(|t| copy_window_size(t, pty.master.as_fd()));
        if !sized {
            set_default_size(pty.master.as_fd());
        }
        outputs.push(spawn_output(
            dup(pty.master.as_fd())?,
            spec.console.then_some(Console::Out),
            log,
        ));
        match spec.stdin {
            StdinMode::User => {
                if spec.console {
                    raw = RawMode::enable();
                }
                spawn_input(dup(pty.master.as_fd())?);
            }
            StdinMode::Null | StdinMode::KeepOpen => {}
        }
        let slave = pty.slave;
        let stdio = [dup(slave.as_fd())?, dup(slave.as_fd())?, slave];
        return Ok(Streams {
            stdio: Some(stdio),
            terminal: true,
            outputs,
            raw,
            keep_open,
            master: Some(pty.master),
        });
    }
    let stdin: OwnedFd = match spec.stdin {
        StdinMode::Null => File::open("/dev/null")
            .map_err(ContainerError::io("opening /dev/null"))?
            .into(),
        StdinMode::User => {
            let (r, w) = pipe()?;
            spawn_input(w);
            r
        }
        StdinMode::KeepOpen => {
            let (r, w) = pipe()?;
            keep_open = Some(w);
            r
        }
    };
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    outputs.push(spawn_output(
        out_r,
        spec.console.then_some(Console::Out),
        log.clone(),
    ));
    outputs.push(spawn_output(
        err_r,
        spec.console.then_some(Console::Err),
        log,
    ));
    Ok(Streams {
        stdio: Some([stdin, out_w, err_w]),
        terminal: false,
        outputs,
        raw,
        keep_open,
        master: None,
    })
}

impl Streams {
    /// The container's standard input, output and error (once; a second call is an error).
    pub(crate) fn take_stdio(&mut self) -> Result<[OwnedFd; 3], ContainerError> {
        self.stdio.take().ok_or(ContainerError::Io {
            what: "connecting the container's streams".into(),
            source: std::io::Error::other("the streams were already taken"),
        })
    }

    /// Whether the container's streams are a terminal.
    pub(crate) fn terminal(&self) -> bool {
        self.terminal
    }

    /// A descriptor of the pty master, for resizing.
    pub(crate) fn resize_target(&self) -> Option<OwnedFd> {
        self.master.as_ref().and_then(|m| m.try_clone().ok())
    }

    /// Waits until all output is copied (every writer in the container is gone), then
    /// restores the user's terminal.
    pub(crate) fn finish(mut self) {
        // Unused descriptors (a failed start) must not keep the copying threads waiting.
        self.stdio = None;
        for t in self.outputs.drain(..) {
            let _ = t.join();
        }
        self.keep_open = None;
        self.raw = None;
    }
}

/// Starts catching the forwarded signals (before the container starts, so that none is lost:
/// they wait in the iterator until [`forward_signals`] runs).
pub(crate) fn catch_signals() -> Result<Signals, ContainerError> {
    Signals::new(FORWARDED).map_err(ContainerError::io("installing signal handlers"))
}

/// Forwards caught signals to the process behind `pidfd` until dropped.
pub(crate) struct Forwarder {
    handle: Handle,
    thread: Option<JoinHandle<()>>,
}

pub(crate) fn forward_signals(
    mut signals: Signals,
    pidfd: OwnedFd,
    resize: Option<OwnedFd>,
) -> Forwarder {
    let handle = signals.handle();
    let thread = std::thread::spawn(move || {
        for sig in signals.forever() {
            if sig == SIGWINCH {
                if let Some(master) = &resize {
                    if let Some(t) = user_terminal() {
                        let _ = copy_window_size(t, master.as_fd());
                    }
                    continue;
                }
            }
            if let Some(s) = rustix::process::Signal::from_named_raw(sig) {
                let _ = rustix::process::pidfd_send_signal(&pidfd, s);
            }
        }
    });
    Forwarder {
        handle,
        thread: Some(thread),
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
