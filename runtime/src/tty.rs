//! Terminals for `-t`: a pseudo-terminal whose slave is the container's standard I/O, the
//! user's terminal in raw mode while it is proxied, and window sizes.
//!
//! The pty comes from the container's own devpts, so that inside the container it is
//! `/dev/pts/0` and `tty`, `ttyname` and `ps` see a real terminal there:
//!
//! - for `run`/`start`, [`Pty::new_instance`] makes a new devpts instance (a detached mount),
//!   opens its `ptmx` and the slave (`TIOCGPTPEER`); the instance is then mounted on the
//!   container's `/dev/pts` (its `/dev/ptmx` points there), so the container can open more
//!   ptys in it;
//! - for `exec`, [`Pty::in_container`] opens `/dev/pts/ptmx` of the running container through
//!   `/proc/PID/root`, resolved beneath it (`openat2` `RESOLVE_IN_ROOT`), and checks that it is
//!   the `ptmx` node of a devpts before opening it: the container cannot make rbuild open
//!   another file or device.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rbuild_fsutil::Root;
use rustix::fs::{Mode, OFlags};
use rustix::mount::{
    fsconfig_create, fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen, FsMountFlags,
    FsOpenFlags, MountAttrFlags,
};
use rustix::pty::OpenptFlags;
use rustix::termios::{OptionalActions, Termios, Winsize};

use crate::container_error::ContainerError;

/// `statfs` magic of devpts.
const DEVPTS_SUPER_MAGIC: i64 = 0x1cd1;

/// A pseudo-terminal.
#[derive(Debug)]
pub struct Pty {
    /// rbuild's side.
    pub master: OwnedFd,
    /// The container's side (its standard input, output and error).
    pub slave: OwnedFd,
    /// The devpts instance the pty belongs to, as a detached mount to put on the container's
    /// `/dev/pts` (only for [`Pty::new_instance`]).
    pub devpts: Option<OwnedFd>,
}

fn fail(what: &'static str) -> impl Fn(rustix::io::Errno) -> ContainerError {
    move |e| ContainerError::errno(what)(e)
}

impl Pty {
    /// A pty in a new devpts instance (slave `0`).
    pub fn new_instance() -> Result<Pty, ContainerError> {
        let fs = fsopen("devpts", FsOpenFlags::FSOPEN_CLOEXEC).map_err(fail("fsopen devpts"))?;
        fsconfig_set_flag(&fs, "newinstance").map_err(fail("devpts newinstance"))?;
        for (k, v) in [("ptmxmode", "0666"), ("mode", "0620"), ("gid", "5")] {
            fsconfig_set_string(&fs, k, v).map_err(fail("devpts options"))?;
        }
        fsconfig_create(&fs).map_err(fail("creating a devpts instance"))?;
        let mnt = fsmount(
            &fs,
            FsMountFlags::FSMOUNT_CLOEXEC,
            MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NOEXEC,
        )
        .map_err(fail("fsmount devpts"))?;
        let master = rustix::fs::openat(
            &mnt,
            "ptmx",
            OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .map_err(fail("opening ptmx"))?;
        let slave = open_slave(&master)?;
        Ok(Pty {
            master,
            slave,
            devpts: Some(mnt),
        })
    }

    /// A pty in the devpts of a running container whose root is `root` (`/proc/PID/root`).
    pub fn in_container(root: &Root) -> Result<Pty, ContainerError> {
        let path = root
            .open_path("/dev/pts/ptmx", true)
            .map_err(ContainerError::fs("opening the container's /dev/pts/ptmx"))?;
        let sfs = rustix::fs::fstatfs(&path).map_err(fail("statfs /dev/pts/ptmx"))?;
        let st = rustix::fs::fstat(&path).map_err(fail("stat /dev/pts/ptmx"))?;
        let is_ptmx = sfs.f_type as i64 == DEVPTS_SUPER_MAGIC
            && rustix::fs::FileType::from_raw_mode(st.st_mode)
                == rustix::fs::FileType::CharacterDevice
            && rustix::fs::major(st.st_rdev) == 5
            && rustix::fs::minor(st.st_rdev) == 2;
        if !is_ptmx {
            return Err(ContainerError::Io {
                what: "the container's /dev/pts/ptmx".into(),
                source: std::io::Error::other("it is not the ptmx of a devpts filesystem"),
            });
        }
        // Reopened through the checked O_PATH fd: no path is resolved again.
        let master = rustix::fs::open(
            format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&path)),
            OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(fail("opening the container's ptmx"))?;
        let slave = open_slave(&master)?;
        Ok(Pty {
            master,
            slave,
            devpts: None,
        })
    }

    /// Gives the slave to the container's user (as runc does), so that it can reopen it.
    pub fn chown_slave(&self, uid: u32) -> Result<(), ContainerError> {
        rustix::fs::fchown(&self.slave, Some(rustix::fs::Uid::from_raw(uid)), None)
            .map_err(fail("chown the terminal"))
    }
}

fn open_slave(master: &OwnedFd) -> Result<OwnedFd, ContainerError> {
    rustix::pty::unlockpt(master).map_err(fail("unlockpt"))?;
    rustix::pty::ioctl_tiocgptpeer(
        master,
        OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC,
    )
    .map_err(fail("opening the terminal's slave"))
}

/// The user's terminal among standard input, output and error, if any.
pub fn user_terminal() -> Option<BorrowedFd<'static>> {
    [
        rustix::stdio::stdin(),
        rustix::stdio::stdout(),
        rustix::stdio::stderr(),
    ]
    .into_iter()
    .find(|fd| rustix::termios::isatty(fd))
}

/// Copies the window size of `from` (the user's terminal) to `to` (a pty master); the kernel
/// then sends `SIGWINCH` to the pty's foreground process group. Returns whether `from` had a
/// size to copy.
pub fn copy_window_size(from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> bool {
    match rustix::termios::tcgetwinsize(from) {
        Ok(size) if size.ws_row > 0 && size.ws_col > 0 => {
            rustix::termios::tcsetwinsize(to, size).is_ok()
        }
        _ => false,
    }
}

/// A default size for a terminal when the user has none (Docker uses the client's).
pub(crate) fn set_default_size(to: BorrowedFd<'_>) {
    let _ = rustix::termios::tcsetwinsize(
        to,
        Winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    );
}

/// The user's terminal in raw mode until dropped (then restored).
#[derive(Debug)]
pub struct RawMode {
    fd: BorrowedFd<'static>,
    saved: Termios,
}

impl RawMode {
    /// Puts standard input in raw mode when it is a terminal; `None` otherwise.
    pub fn enable() -> Option<RawMode> {
        let fd = rustix::stdio::stdin();
        if !rustix::termios::isatty(fd) {
            return None;
        }
        let saved = rustix::termios::tcgetattr(fd).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(fd, OptionalActions::Now, &raw).ok()?;
        Some(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(self.fd.as_fd(), OptionalActions::Now, &self.saved);
    }
}
