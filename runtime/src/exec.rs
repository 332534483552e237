//! `rbuild exec`: a command in a running container, through the executor's
//! [`enter`](rbuild_executor::sandbox::enter::enter): in its namespaces and cgroups, with the
//! container's environment (plus `-e`), user (or `-u`, resolved in the container's own
//! `/etc/passwd`), working directory (or `-w`), Docker's capabilities, seccomp profile and
//! `no_new_privs`. Its streams are proxied like `run`'s (a pty from the container's devpts with
//! `-t`; not logged), signals rbuild receives are forwarded to it, and its exit code is
//! returned.

use std::os::fd::AsFd;
use std::path::Path;

use rbuild_cache::Store;
use rbuild_executor::sandbox::enter::{enter, EnterSpec};
use rbuild_executor::sandbox::{ExitStatus, ProcessSpec, Security, User};
use rbuild_fsutil::Root;

use crate::attach::{self, StdinMode, StreamsSpec};
use crate::container::{open_pidfd, with_home};
use crate::container_error::ContainerError;
use crate::containers::{Container, Containers};
use crate::tty::Pty;

/// What `rbuild exec` was asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOptions {
    /// The command.
    pub command: Vec<String>,
    /// `-i`: standard input from rbuild's.
    pub interactive: bool,
    /// `-t`: a terminal.
    pub tty: bool,
    /// `-u`.
    pub user: Option<String>,
    /// `-w`.
    pub workdir: Option<String>,
    /// `-e` entries, `KEY=value`.
    pub env: Vec<String>,
}

/// Runs `opts.command` in the running container `c` and waits for it.
pub fn exec(
    store: &Store,
    c: &mut Container,
    opts: &ExecOptions,
) -> Result<ExitStatus, ContainerError> {
    let containers = Containers::open(store)?;
    containers.refresh(c)?;
    let not_running = || ContainerError::NotRunning(c.spec.name.clone());
    if !c.is_running() {
        return Err(not_running());
    }
    if opts.command.is_empty() {
        return Err(ContainerError::NoCommand);
    }
    let (Some(pid), Some(pidfd)) = (c.state.pid, open_pidfd(c.state.pid, c.state.pid_start)) else {
        return Err(not_running());
    };
    let cwd = match &opts.workdir {
        Some(w) if !w.starts_with('/') => {
            return Err(ContainerError::InvalidOption {
                flag: "--workdir",
                value: w.clone(),
                reason: "the working directory must be an absolute path".into(),
            })
        }
        Some(w) => w.clone(),
        None => c.spec.working_dir.clone(),
    };
    // The container's root as its processes see it; everything is resolved beneath it.
    let root_path = format!("/proc/{pid}/root");
    let root = Root::open(Path::new(&root_path)).map_err(ContainerError::fs(
        "opening the container's root filesystem",
    ))?;
    let user_spec = opts.user.clone().unwrap_or_else(|| c.spec.user.clone());
    let user = rbuild_executor::resolve_user(&user_spec, &root)?;
    let mut env = c.spec.env.clone();
    for e in &opts.env {
        let k = e.split_once('=').map_or(e.as_str(), |(k, _)| k);
        env.retain(|x| x.split_once('=').map_or(x.as_str(), |(xk, _)| xk) != k);
        env.push(e.clone());
    }
    if opts.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    let env = with_home(&env, &user.home);
    let pty = if opts.tty {
        let pty = Pty::in_container(&root)?;
        pty.chown_slave(user.uid)?;
        Some(pty)
    } else {
        None
    };
    drop(root);
    let signals = attach::catch_signals()?;
    let mut streams = attach::connect(StreamsSpec {
        pty,
        stdin: if opts.interactive {
            StdinMode::User
        } else {
            StdinMode::Null
        },
        console: true,
        log: None,
    })?;
    let spec = EnterSpec {
        target: pidfd.as_fd(),
        target_pid: pid,
        security: Security::default(),
        process: ProcessSpec {
            args: opts.command.clone(),
            env,
            cwd,
            user: User {
                uid: user.uid,
                gid: user.gid,
                groups: user.groups.clone(),
            },
            stdio: streams.take_stdio()?,
            terminal: streams.terminal(),
        },
    };
    let running = match enter(spec) {
        Ok(r) => r,
        Err(e) => {
            streams.finish();
            return Err(e.into());
        }
    };
    let own = running
        .pidfd()
        .try_clone_to_owned()
        .map_err(ContainerError::io("dup the process's pidfd"))?;
    let forwarder = attach::forward_signals(signals, own, streams.resize_target());
    let status = running.wait();
    drop(forwarder);
    streams.finish();
    Ok(status?)
}
