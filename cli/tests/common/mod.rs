//! The shared fixture of the cli end-to-end tests, which drive the real `rbuild` binary: the
//! skip rule (root and busybox-static, a failure under `CI=true`), a [`Fixture`] — a temp dir
//! with its own store holding a busybox base image built by rbuild from the rootfs that
//! `testdata/base/make-busybox-rootfs.sh` makes — and the helpers around it: running rbuild
//! against the store (also with standard input, or on a pty), `text`/`ok`, context dirs,
//! `-o type=local` builds, which steps a `--progress=plain` log shows as `CACHED`, a loopback
//! registry, the digest `rbuild push` printed, and the files of an OCI archive.
//!
//! The rootfs and each base image's store are made once per test process (by the first fixture
//! that needs them, under a lock) and every fixture gets a `cp -a` copy of that store: a store is
//! plain files and directories (blobs, unpacked snapshots, the image and cache-key indexes), with
//! no absolute path of its own in it, so the copy is the store the build made, and no test
//! shares a store with another. The shared directory is removed when the process exits (and one
//! a killed test process left behind, by the next one).
//!
//! Each test binary compiles this module for itself (`mod common;`) and uses only part of it,
//! hence the module-wide `dead_code` allowance.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};

/// The `rbuild` binary under test.
pub const RBUILD: &str = env!("CARGO_BIN_EXE_rbuild");

/// The repository's root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Output as text (invalid UTF-8 replaced).
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The contents of a text file.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Asserts that rbuild succeeded; its standard output.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "rbuild failed ({}):\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Says the test is skipped because of `why`; under `CI=true` that is a failure instead.
pub fn skip(why: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{why}; under CI=true this is a failure (scripts/install-test-deps.sh installs what the tests need)"
    );
    eprintln!("SKIPPED: {why}");
}

/// A real tool's check; a missing tool skips outside CI and fails under CI=true.
pub fn tool(name: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        skip(&format!("{name} is missing"));
    }
    found
}

/// Whether this machine can build on the busybox base: root (overlay mounts, namespaces) and
/// busybox-static. If not, the test is skipped (see [`skip`]).
pub fn root_and_busybox() -> bool {
    let missing = if !rustix::process::geteuid().is_root() {
        "building needs root (overlay mounts, namespaces)"
    } else if !Path::new("/bin/busybox").exists() {
        "/bin/busybox is missing (apt-get install busybox-static; scripts/install-test-deps.sh does)"
    } else {
        return true;
    };
    skip(missing);
    false
}

/// A `docker-registry` on loopback in `mode`, or `None` (the test skips, see [`skip`]) when it or
/// its helpers are missing.
pub fn registry(
    mode: rbuild_registry::test_registry::Mode,
) -> Option<rbuild_registry::test_registry::TestRegistry> {
    use rbuild_registry::test_registry::{missing_tools, TestRegistry};
    if let Some(missing) = missing_tools(&mode) {
        skip(&missing);
        return None;
    }
    Some(TestRegistry::start(mode).unwrap_or_else(|e| panic!("{e}")))
}

/// The digest in `rbuild push`'s last line (`TAG: digest: sha256:… size: N`).
pub fn push_digest(stdout: &str) -> String {
    stdout
        .lines()
        .rev()
        .find_map(|l| l.split("digest: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no digest in {stdout}"))
        .to_owned()
}

/// The regular files of a tar archive (an OCI archive), by name.
pub fn archive_files(bytes: &[u8]) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut archive = tar::Archive::new(bytes);
    for entry in archive.entries().unwrap_or_else(|e| panic!("{e}")) {
        let mut entry = entry.unwrap_or_else(|e| panic!("{e}"));
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let name = entry
            .path()
            .unwrap_or_else(|e| panic!("{e}"))
            .display()
            .to_string();
        let mut data = Vec::new();
        entry
            .read_to_end(&mut data)
            .unwrap_or_else(|e| panic!("{e}"));
        out.insert(name, data);
    }
    out
}

/// Makes a fresh busybox root filesystem in `dest` (`testdata/base/make-busybox-rootfs.sh`).
pub fn make_busybox_rootfs(dest: &Path) {
    let status = Command::new(repo().join("testdata/base/make-busybox-rootfs.sh"))
        .arg(dest)
        .status()
        .unwrap_or_else(|e| panic!("running make-busybox-rootfs.sh: {e}"));
    assert!(status.success(), "make-busybox-rootfs.sh failed");
}

/// Copies the tree `from` to `to` (which must not exist) as it is: modes, owners, times,
/// links, hard links and xattrs (`cp -a`).
pub fn copy_tree(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg("--reflink=auto")
        .arg(from)
        .arg(to)
        .status()
        .unwrap_or_else(|e| panic!("running cp: {e}"));
    assert!(
        status.success(),
        "cp -a {} {} failed",
        from.display(),
        to.display()
    );
}

/// `rbuild --root ROOT ARGS…` with standard input from /dev/null.
pub fn rbuild_command(root: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(RBUILD);
    c.arg("--root").arg(root).args(args).stdin(Stdio::null());
    c
}

/// Runs `cmd` to its end with `input` (if any) on its standard input; what it printed.
pub fn output_with_input(cmd: &mut Command, input: Option<&str>) -> Output {
    let mut child = cmd
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running rbuild: {e}"));
    if let (Some(input), Some(mut pipe)) = (input, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
    }
    child.wait_with_output().unwrap_or_else(|e| panic!("{e}"))
}

/// A base image: built from the busybox rootfs as its context with `dockerfile`, tagged `tag`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Base {
    pub tag: &'static str,
    pub dockerfile: &'static str,
}

/// `busybox:latest`: the rootfs and nothing else.
pub const BUSYBOX: Base = Base {
    tag: "busybox",
    dockerfile: "FROM scratch\nCOPY . /\n",
};

/// What this process made once: the busybox rootfs, and a store per base image.
struct Shared {
    rootfs: PathBuf,
    stores: Vec<(Base, PathBuf)>,
}

/// The directory of [`Shared`], removed at exit.
static SHARED_DIR: OnceLock<PathBuf> = OnceLock::new();
static SHARED: Mutex<Option<Shared>> = Mutex::new(None);

const SHARED_PREFIX: &str = "rbuild-tests-base-";

/// Runs `f` on this process's [`Shared`], made on first use. A fixture that panicked while
/// making it left nothing recorded, so the next one tries again.
fn with_shared<T>(f: impl FnOnce(&Path, &mut Shared) -> T) -> T {
    let mut guard = SHARED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = SHARED_DIR.get_or_init(|| {
        remove_stale_shared_dirs();
        let dir = std::env::temp_dir().join(format!("{SHARED_PREFIX}{}", std::process::id()));
        remove_at_exit();
        dir
    });
    if guard.is_none() {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let rootfs = dir.join("busybox-rootfs");
        make_busybox_rootfs(&rootfs);
        *guard = Some(Shared {
            rootfs,
            stores: Vec::new(),
        });
    }
    let shared = guard
        .as_mut()
        .unwrap_or_else(|| unreachable!("made just above"));
    f(dir, shared)
}

/// The busybox rootfs this process shares: copy it to change it.
pub fn busybox_rootfs() -> PathBuf {
    with_shared(|_, shared| shared.rootfs.clone())
}

/// The store holding only `base`, built by rbuild once per process; never used but to copy.
fn base_store(base: &Base) -> PathBuf {
    with_shared(|dir, shared| {
        if let Some((_, store)) = shared.stores.iter().find(|(b, _)| b == base) {
            return store.clone();
        }
        let n = shared.stores.len();
        let store = dir.join(format!("store-{n}"));
        // What a build that panicked here left behind.
        let _ = std::fs::remove_dir_all(&store);
        let dockerfile = dir.join(format!("base-{n}.Dockerfile"));
        std::fs::write(&dockerfile, base.dockerfile).unwrap_or_else(|e| panic!("{e}"));
        ok(&rbuild_command(
            &store,
            &[
                "build",
                "-q",
                "-t",
                base.tag,
                "-f",
                &dockerfile.display().to_string(),
                &shared.rootfs.display().to_string(),
            ],
        )
        .output()
        .unwrap_or_else(|e| panic!("running rbuild: {e}")));
        shared.stores.push((*base, store.clone()));
        store
    })
}

/// Removes the shared directories of test processes that no longer run (killed before exit).
fn remove_stale_shared_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(SHARED_PREFIX)) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Has the shared directory removed when the process exits (libtest returns from `main`, or
/// calls `exit` when a test failed: both run `atexit` handlers).
#[allow(unsafe_code)]
fn remove_at_exit() {
    extern "C" fn cleanup() {
        if let Some(dir) = SHARED_DIR.get() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    extern "C" {
        fn atexit(f: extern "C" fn()) -> std::os::raw::c_int;
    }
    // SAFETY: atexit(3) only records the pointer to `cleanup`, a function with the C ABI that
    // lives as long as the process, takes nothing and cannot unwind (it ignores every error).
    let registered = unsafe { atexit(cleanup) };
    assert_eq!(registered, 0, "atexit failed");
}

/// A temp dir (`dir`) with a store (`root`, in it) of its own; removed on drop, with every
/// container of the store.
pub struct Fixture {
    pub dir: PathBuf,
    pub root: PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // No container may outlive a test, even a failed one.
        if self.root.join("containers").exists() {
            let ids = self.rbuild(&["ps", "-a", "-q"]);
            for id in text(&ids.stdout).split_whitespace() {
                let _ = self.rbuild(&["rm", "-f", id]);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Fixture {
    /// A store holding `busybox:latest` ([`BUSYBOX`]); `None` (the test skips) without root or
    /// busybox-static, except under CI=true where that is a failure.
    pub fn new(name: &str) -> Option<Fixture> {
        Fixture::with_base(name, &BUSYBOX)
    }

    /// A store holding `base`; `None` as for [`Fixture::new`].
    pub fn with_base(name: &str, base: &Base) -> Option<Fixture> {
        if !root_and_busybox() {
            return None;
        }
        let store = base_store(base);
        let fx = Fixture::empty(name);
        copy_tree(&store, &fx.root);
        Some(fx)
    }

    /// A fresh work directory; its store does not exist yet (rbuild makes it on first use).
    pub fn empty(name: &str) -> Fixture {
        let dir = std::env::temp_dir().join(format!("rbuild-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        Fixture {
            root: dir.join("store"),
            dir,
        }
    }

    /// `rbuild --root STORE ARGS…`, standard input from /dev/null.
    pub fn command(&self, args: &[&str]) -> Command {
        rbuild_command(&self.root, args)
    }

    pub fn rbuild(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .unwrap_or_else(|e| panic!("running rbuild: {e}"))
    }

    /// Runs rbuild, asserts success, returns standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.rbuild(args);
        assert!(
            out.status.success(),
            "rbuild {args:?} failed ({:?}):\n{}{}",
            out.status.code(),
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// A context dir `name` with a Dockerfile and files (their parent dirs made as needed).
    pub fn context(&self, name: &str, dockerfile: &str, files: &[(&str, &str)]) -> String {
        let ctx = self.dir.join(name);
        std::fs::create_dir_all(&ctx).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap_or_else(|e| panic!("{e}"));
        for (path, content) in files {
            let p = ctx.join(path);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{e}"));
            }
            std::fs::write(p, content).unwrap_or_else(|e| panic!("{e}"));
        }
        ctx.display().to_string()
    }

    /// Builds `dockerfile` (no context files) as `tag`, asserting success.
    pub fn build(&self, tag: &str, dockerfile: &str) {
        let ctx = self.context(
            &format!("ctx-{}", tag.replace([':', '/'], "-")),
            dockerfile,
            &[],
        );
        self.ok(&["build", "-q", "-t", tag, &ctx]);
    }

    /// Builds `ctx` with `--progress=plain` and `extra` flags into `DIR/name.rootfs` (type=local).
    pub fn build_local(&self, name: &str, ctx: &str, extra: &[&str]) -> (Output, PathBuf) {
        let dest = self.dir.join(format!("{name}.rootfs"));
        let output = format!("type=local,dest={}", dest.display());
        let mut args = vec!["build", "--progress=plain", "-o", &output];
        args.extend_from_slice(extra);
        args.push(ctx);
        (self.rbuild(&args), dest)
    }
}

/// Which of a command's standard streams [`run_on_pty`] connects to the pty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PtyStreams {
    /// Standard output and error (standard input stays as the command has it).
    Output,
    /// Standard input, output and error.
    All,
}

/// Runs `cmd` to its end on a new pty (of `size` rows × columns, when given) connected to
/// `streams`; its exit code and everything the terminal received.
pub fn run_on_pty(
    mut cmd: Command,
    streams: PtyStreams,
    size: Option<(u16, u16)>,
) -> (Option<i32>, String) {
    use rustix::pty::OpenptFlags;
    let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
    let master = rustix::pty::openpt(flags).unwrap_or_else(|e| panic!("{e}"));
    rustix::pty::grantpt(&master).unwrap_or_else(|e| panic!("{e}"));
    rustix::pty::unlockpt(&master).unwrap_or_else(|e| panic!("{e}"));
    let slave: OwnedFd =
        rustix::pty::ioctl_tiocgptpeer(&master, flags).unwrap_or_else(|e| panic!("{e}"));
    if let Some((rows, columns)) = size {
        rustix::termios::tcsetwinsize(
            &slave,
            rustix::termios::Winsize {
                ws_row: rows,
                ws_col: columns,
                ws_xpixel: 0,
                ws_ypixel: 0,
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    let dup = |fd: &OwnedFd| Stdio::from(fd.try_clone().unwrap_or_else(|e| panic!("{e}")));
    if streams == PtyStreams::All {
        cmd.stdin(dup(&slave));
    }
    cmd.stdout(dup(&slave)).stderr(dup(&slave));
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{e}"));
    // Only the child may hold the slave, so that the master reads EOF (EIO) after it.
    drop(cmd);
    drop(slave);
    let reader = std::thread::spawn(move || {
        let mut f = std::fs::File::from(master);
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match f.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        out
    });
    let status = child.wait().unwrap_or_else(|e| panic!("{e}"));
    (status.code(), text(&reader.join().unwrap_or_default()))
}

/// The plain-progress lines of each step (`#N …`), and which steps were `CACHED`, by text.
pub fn step_states(stderr: &str) -> Vec<(String, &'static str)> {
    let mut names: std::collections::BTreeMap<String, String> = Default::default();
    let mut out = Vec::new();
    for line in stderr.lines() {
        let Some(rest) = line.strip_prefix('#') else {
            continue;
        };
        let Some((n, tail)) = rest.split_once(' ') else {
            continue;
        };
        if let Some(name) = tail.strip_prefix('[') {
            let name = name.split_once("] ").map(|(_, t)| t).unwrap_or(name);
            names.insert(n.to_string(), name.to_string());
        } else if tail == "CACHED" || tail.starts_with("DONE") {
            let state = if tail == "CACHED" { "CACHED" } else { "RAN" };
            out.push((names.get(n).cloned().unwrap_or_default(), state));
        }
    }
    out
}

/// The state (`CACHED` or `RAN`) of the first step whose text starts with `prefix`.
pub fn state_of(states: &[(String, &'static str)], prefix: &str) -> &'static str {
    states
        .iter()
        .find(|(t, _)| t.starts_with(prefix))
        .map(|(_, s)| *s)
        .unwrap_or_else(|| panic!("no step {prefix:?} in {states:?}"))
}
