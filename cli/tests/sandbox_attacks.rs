//! Attacks on the sandbox, each shown to fail — one test (at least) per class of
//! `SECURITY-CLASSES.md` that a `RUN` step (or, for class 2, `rbuild exec`) can reach:
//!
//! | test | class |
//! |---|---|
//! | [`a_run_step_cannot_reach_host_files_processes_devices_or_kernel_settings`] | host isolation (files, processes, mounts, namespaces, devices, `/proc`, capabilities, `no_new_privs`, seccomp) |
//! | [`class1_workdir_through_a_leaked_fd_never_reaches_the_host`] | 1 — leaked fds / cwd (CVE-2024-21626) |
//! | [`class2_no_sandboxed_process_runs_or_writes_the_host_rbuild_binary`] | 2 — `/proc/self/exe` (CVE-2019-5736) in a `RUN` |
//! | [`class2_rbuild_exec_into_a_hostile_container_never_exposes_the_host_binary`] | 2 — the same through `rbuild exec` into a running container |
//! | [`class3_an_image_whose_dev_is_a_symlink_never_mounts_on_the_host`] | 3 — symlinked `/dev` (runc CVE-2026-41579) |
//! | [`class3_mount_targets_and_workdirs_through_symlinks_stay_in_the_rootfs`] | 3 — mount targets, WORKDIR (Podman CVE-2026-55686) |
//! | [`class3_bind_sources_stay_in_the_context`] | 3 — bind sources (Buildah CVE-2024-1753) |
//! | [`class3_cache_ids_and_sources_stay_in_the_store`] | 3 — cache mount ids and sources |
//! | [`class4_a_parallel_stage_flipping_a_shared_cache_dir_into_symlinks_touches_no_host_path`] | 4 — TOCTOU on a shared cache mount (CVE-2024-23651) |
//! | [`class4_a_cache_dir_or_target_made_a_symlink_by_an_earlier_build_does_not_redirect_the_mount`] | 4 — a path swapped for a symlink between uses |
//! | [`class6_mount_stub_cleanup_never_follows_links_out_of_the_layer`] | 6 — cleanup following links (CVE-2024-23652) |
//! | [`class12_the_store_and_its_cache_mounts_are_private`] | 12 — state directory permissions (CVE-2021-41091) |
//!
//! Every test drives the real `rbuild` binary and then checks the *host*: canary files and
//! directories the test made, a host process, host kernel settings, the host's mount table,
//! the rbuild binary's hash and identity. The hostile steps print `ESCAPE:`/`LEAK:` lines only
//! when an attack works, and every test also checks a positive control (the probe ran, the
//! redirected write landed inside the sandbox), so an attack that succeeded would fail the test
//! rather than go unnoticed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use common::{busybox_rootfs, copy_tree, Fixture, RBUILD};

fn rbuild_bin() -> PathBuf {
    PathBuf::from(RBUILD)
}

/// What a finished `rbuild` run printed (standard output, then standard error) and its exit
/// code (`None` when a signal ended it).
struct Outcome {
    code: Option<i32>,
    out: String,
}

impl Outcome {
    fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// What the steps' commands printed: the text of the `#N …` lines that are not a step's
    /// header (`#N [stage 1/2] RUN …`), `DONE` or `ERROR` line.
    fn printed(&self) -> Vec<&str> {
        self.out
            .lines()
            .filter_map(|l| {
                let (num, text) = l.strip_prefix('#')?.split_once(' ')?;
                let step = !num.is_empty() && num.bytes().all(|b| b.is_ascii_digit());
                let status = text.starts_with('[')
                    || text.starts_with("DONE ")
                    || text.starts_with("ERROR ")
                    || text.starts_with("CACHED");
                (step && !status).then_some(text)
            })
            .collect()
    }

    /// The printed lines that start with `prefix`, without it.
    fn printed_after(&self, prefix: &str) -> Vec<&str> {
        self.printed()
            .into_iter()
            .filter_map(|t| t.strip_prefix(prefix))
            .collect()
    }

    /// Whether a printed line is exactly `line`.
    fn printed_has(&self, line: &str) -> bool {
        self.printed().contains(&line)
    }

    /// Whether a printed line contains `text`.
    fn printed_contains(&self, text: &str) -> bool {
        self.printed().iter().any(|t| t.contains(text))
    }

    /// Printed lines that report a working attack.
    fn attack_lines(&self) -> Vec<&str> {
        self.printed()
            .into_iter()
            .filter(|t| {
                ["ESCAPE:", "LEAK:", "ATTACK:"]
                    .iter()
                    .any(|m| t.starts_with(m))
            })
            .collect()
    }

    /// A failure rbuild reported as an error (not a crash, a panic or an abort).
    fn is_clean(&self) -> bool {
        matches!(self.code, Some(0) | Some(1))
            && !self.out.contains("panicked")
            && !self.out.contains("fatal runtime error")
            && !self.out.contains("RUST_BACKTRACE")
    }
}

fn read_all(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// A started `rbuild` whose output is collected; killed when it runs past its deadline.
struct Running {
    child: Child,
    out: std::thread::JoinHandle<String>,
    err: std::thread::JoinHandle<String>,
    deadline: Instant,
}

impl Running {
    fn start(args: &[&std::ffi::OsStr], timeout: Duration) -> Running {
        let mut child = Command::new(rbuild_bin())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("running rbuild: {e}"));
        let out = read_all(child.stdout.take().unwrap());
        let err = read_all(child.stderr.take().unwrap());
        Running {
            child,
            out,
            err,
            deadline: Instant::now() + timeout,
        }
    }

    /// `Some` once it ended.
    fn poll(&mut self) -> Option<Option<i32>> {
        match self.child.try_wait().unwrap() {
            Some(status) => Some(status.code()),
            None if Instant::now() > self.deadline => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("rbuild ran past its deadline and was killed");
            }
            None => None,
        }
    }

    fn finish(mut self) -> Outcome {
        let code = loop {
            if let Some(code) = self.poll() {
                break code;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut out = self.out.join().unwrap();
        out.push_str(&self.err.join().unwrap());
        Outcome { code, out }
    }
}

/// A temporary directory with a store holding `busybox:latest` (the common fixture, which
/// removes both and every container when dropped) and a copy of the busybox root filesystem.
struct Lab {
    dir: PathBuf,
    store: PathBuf,
    rootfs: PathBuf,
    n: std::cell::Cell<u32>,
    fixture: Fixture,
}

impl Lab {
    /// `None` (the test is skipped) without root or busybox-static, except under CI=true.
    fn new(name: &str) -> Option<Lab> {
        let fixture = Fixture::new(name)?;
        let rootfs = fixture.dir.join("busybox-rootfs");
        copy_tree(&busybox_rootfs(), &rootfs);
        Some(Lab {
            dir: fixture.dir.clone(),
            store: fixture.root.clone(),
            rootfs,
            n: std::cell::Cell::new(0),
            fixture,
        })
    }

    /// A directory of the lab (created).
    fn mkdir(&self, name: &str) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// A copy of the busybox root filesystem to modify.
    fn rootfs_copy(&self, name: &str) -> PathBuf {
        let p = self.dir.join(name);
        copy_tree(&self.rootfs, &p);
        p
    }

    /// Tags an image made of the files of `rootfs` (`FROM scratch` + `COPY . /`).
    fn image_from_rootfs(&self, rootfs: &Path, tag: &str) {
        let r = self.build("FROM scratch\nCOPY . /\n", rootfs, &["-t", tag]);
        assert!(r.ok(), "importing {tag}: {}", r.out);
    }

    /// The arguments of `rbuild --root STORE build --progress=plain -f DOCKERFILE EXTRA… CTX`.
    fn build_args(&self, dockerfile: &str, ctx: &Path, extra: &[&str]) -> Vec<std::ffi::OsString> {
        self.n.set(self.n.get() + 1);
        let df = self.dir.join(format!("Dockerfile.{}", self.n.get()));
        std::fs::write(&df, dockerfile).unwrap();
        let mut args: Vec<std::ffi::OsString> = vec![
            "--root".into(),
            self.store.clone().into(),
            "build".into(),
            "--progress=plain".into(),
            // Every step runs, whatever a build cache would make of repeated steps.
            "--no-cache".into(),
            "-f".into(),
            df.into(),
        ];
        args.extend(extra.iter().map(Into::into));
        args.push(ctx.into());
        args
    }

    /// `rbuild --root STORE ARGS…`, to its end (standard output only in `out`).
    fn rbuild(&self, args: &[&str]) -> Outcome {
        let out = self.fixture.rbuild(args);
        Outcome {
            code: out.status.code(),
            out: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    /// Tags `glibc`: busybox plus the shared libraries (and loader) the rbuild binary links to,
    /// so that the binary can run inside a sandbox of it.
    fn glibc_image(&self) {
        let rootfs = self.rootfs_copy("rootfs-glibc");
        for lib in linked_libraries(&rbuild_bin()) {
            let dest = rootfs.join(lib.strip_prefix("/").unwrap());
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(&lib, &dest).unwrap_or_else(|e| panic!("{}: {e}", lib.display()));
        }
        self.image_from_rootfs(&rootfs, "glibc");
    }

    fn start(&self, dockerfile: &str, ctx: &Path, extra: &[&str]) -> Running {
        let args = self.build_args(dockerfile, ctx, extra);
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        Running::start(&refs, Duration::from_secs(300))
    }

    fn build(&self, dockerfile: &str, ctx: &Path, extra: &[&str]) -> Outcome {
        self.start(dockerfile, ctx, extra).finish()
    }
}

/// Every file, directory and symlink under `dir` (not followed), with its type and contents.
fn tree(dir: &Path) -> BTreeMap<String, String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let what = if meta.is_symlink() {
                format!("symlink {}", std::fs::read_link(&p).unwrap().display())
            } else if meta.is_dir() {
                walk(base, &p, out);
                "dir".to_string()
            } else {
                format!("file {:?}", std::fs::read(&p).unwrap_or_default())
            };
            out.insert(rel, what);
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Mount points in the test's own (the host's) mount namespace at or below `path`.
fn host_mounts_under(path: &Path) -> Vec<String> {
    let prefix = path.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| *m == prefix || m.starts_with(&format!("{prefix}/")))
        .map(str::to_string)
        .collect()
}

/// Asserts that the host directory `dir` still holds exactly `before`, with nothing mounted
/// on or below it.
fn assert_host_dir_untouched(dir: &Path, before: &BTreeMap<String, String>, out: &str) {
    assert_eq!(
        &tree(dir),
        before,
        "the host directory {} changed\n{out}",
        dir.display()
    );
    assert_eq!(
        host_mounts_under(dir),
        Vec::<String>::new(),
        "something is mounted on the host at {}\n{out}",
        dir.display()
    );
}

fn sha256_file(p: &Path) -> String {
    let mut f = std::fs::File::open(p).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    format!("{:x}", h.finalize())
}

fn ids(meta: &std::fs::Metadata) -> String {
    format!("{}:{}", meta.dev(), meta.ino())
}

/// A host process to look for from inside the sandbox; killed when dropped.
struct HostProcess(Child);

impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_run_step_cannot_reach_host_files_processes_devices_or_kernel_settings() {
    let Some(lab) = Lab::new("host") else { return };
    let ctx = lab.mkdir("ctx");
    let canary = lab.dir.join("host-canary");
    std::fs::write(&canary, "host canary\n").unwrap();
    // A host process with an argument nothing else has.
    let sleep_arg = format!("{}.{}", 3000 + std::process::id() % 500, std::process::id());
    let mut sleeper = HostProcess(Command::new("sleep").arg(&sleep_arg).spawn().unwrap());
    let sleeper_pid = sleeper.0.id();
    let core_pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();

    let dockerfile = r#"FROM busybox
ARG CANARY
ARG HOSTPIDS
ARG SYSMOUNTS
RUN set -u; echo "PROBE canary=$CANARY pids=$HOSTPIDS"; \
    [ -e "$CANARY" ] && echo "LEAK: the host canary is visible"; \
    [ -e "/proc/1/root$CANARY" ] && echo "LEAK: the host canary is visible through /proc/1/root"; \
    [ /proc/1/root/ -ef / ] || echo "LEAK: /proc/1/root is not the sandbox's root"; \
    for p in /proc/[0-9]*; do echo "PID ${p#/proc/} $(tr '\0' ' ' < $p/cmdline 2>/dev/null)"; done; \
    for pid in $HOSTPIDS; do kill -9 "$pid" 2>/dev/null && echo "ESCAPE: signalled host pid $pid"; done; \
    for m in $SYSMOUNTS; do [ -n "$(ls -A "$m" 2>/dev/null)" ] && echo "LEAK: the host's mount $m shows in /sys"; done; \
    (echo rbuild-attack > /proc/sys/kernel/core_pattern) 2>/dev/null && echo "ESCAPE: wrote /proc/sys/kernel/core_pattern"; \
    (echo 1 > /proc/sys/kernel/sysrq) 2>/dev/null && echo "ESCAPE: wrote /proc/sys/kernel/sysrq"; \
    if [ -e /proc/sysrq-trigger ]; then (: > /proc/sysrq-trigger) 2>/dev/null && echo "ESCAPE: /proc/sysrq-trigger is writable"; fi; \
    if [ -e /proc/kcore ] && ! [ -c /proc/kcore ]; then echo "LEAK: /proc/kcore is not masked"; fi; \
    if [ -e /proc/kcore ]; then echo "KCORE-PRESENT"; fi; \
    (hostname rbuild-attack) 2>/dev/null && echo "ESCAPE: set the hostname"; \
    mkdir -p /mnt-attack; \
    mount -t tmpfs none /mnt-attack 2>/dev/null && echo "ESCAPE: mounted a tmpfs"; \
    mount --bind / /mnt-attack 2>/dev/null && echo "ESCAPE: made a bind mount"; \
    unshare -m true 2>/dev/null && echo "ESCAPE: made a mount namespace"; \
    unshare -U -r true 2>/dev/null && echo "ESCAPE: made a user namespace"; \
    (: > /sys/kernel/uevent_helper) 2>/dev/null && echo "ESCAPE: wrote /sys"; \
    for d in /dev /dev/shm /tmp /; do \
      mknod "$d/attack-null" c 1 3 2>/dev/null || continue; \
      (echo x > "$d/attack-null") 2>/dev/null && echo "ESCAPE: a device node made in $d opens"; \
      rm -f "$d/attack-null"; \
    done; \
    echo x > /dev/null && head -c 4 /dev/zero | od -An -tx1 | grep -q '00 00 00 00' && echo "DEVICES-WORK"; \
    grep -E '^(CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status | sed 's/^/ROOT /'; \
    echo PROBES-DONE
USER nobody
RUN grep -E '^(CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status | sed 's/^/NOBODY /'
"#;
    let canary_arg = format!("CANARY={}", canary.display());
    let pids_arg = format!("HOSTPIDS={} {sleeper_pid}", std::process::id());
    // The host's mounts below /sys (cgroup hierarchies, debugfs, tracefs, bpf…): only the
    // sysfs itself is bound into the sandbox, where these are empty directories.
    let sys_mounts: Vec<String> = host_mounts_under(Path::new("/sys"))
        .into_iter()
        .filter(|m| m != "/sys" && !m.contains(' ') && !m.contains('\\'))
        .collect();
    let sys_arg = format!("SYSMOUNTS={}", sys_mounts.join(" "));
    let r = lab.build(
        dockerfile,
        &ctx,
        &[
            "--build-arg",
            &canary_arg,
            "--build-arg",
            &pids_arg,
            "--build-arg",
            &sys_arg,
        ],
    );
    assert!(r.ok(), "exit {:?}: {}", r.code, r.out);
    assert!(
        r.printed_has("PROBES-DONE"),
        "the probes did not run\n{}",
        r.out
    );
    assert!(
        r.printed_contains(&format!("PROBE canary={} ", canary.display())),
        "{}",
        r.out
    );
    assert_eq!(r.attack_lines(), Vec::<&str>::new(), "{}", r.out);
    assert!(
        r.printed_has("DEVICES-WORK"),
        "/dev/null and /dev/zero must work\n{}",
        r.out
    );

    // Only the sandbox's own processes: small pids, none of them the test or its sleeper.
    let pids: Vec<(u32, &str)> = r
        .printed_after("PID ")
        .into_iter()
        .filter_map(|rest| {
            let (pid, cmd) = rest.split_once(' ').unwrap_or((rest, ""));
            Some((pid.parse().ok()?, cmd))
        })
        .collect();
    assert!(pids.iter().any(|(p, _)| *p == 1), "PID 1 missing: {pids:?}");
    for (pid, cmd) in &pids {
        assert!(
            *pid < 64,
            "a pid outside the sandbox's namespace: {pid} {cmd}"
        );
        assert!(
            !cmd.contains(&sleep_arg),
            "the host's sleep is visible: {pid} {cmd}"
        );
        assert!(*pid != std::process::id() && *pid != sleeper_pid);
    }

    // Docker's default capabilities for root, none for another user; no_new_privs; seccomp.
    for line in [
        "ROOT CapEff:\t00000000a80425fb",
        "ROOT CapPrm:\t00000000a80425fb",
        "ROOT CapBnd:\t00000000a80425fb",
        "ROOT CapAmb:\t0000000000000000",
        "ROOT NoNewPrivs:\t1",
        "ROOT Seccomp:\t2",
        "NOBODY CapEff:\t0000000000000000",
        "NOBODY CapPrm:\t0000000000000000",
        "NOBODY CapBnd:\t00000000a80425fb",
        "NOBODY NoNewPrivs:\t1",
        "NOBODY Seccomp:\t2",
    ] {
        assert!(r.printed().contains(&line), "missing {line:?}\n{}", r.out);
    }
    // /proc/kcore is masked exactly when the host has one.
    assert_eq!(
        r.printed_has("KCORE-PRESENT"),
        Path::new("/proc/kcore").exists()
    );

    // The host after the step.
    assert_eq!(std::fs::read_to_string(&canary).unwrap(), "host canary\n");
    let core_after = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    if core_after != core_pattern {
        let _ = std::fs::write("/proc/sys/kernel/core_pattern", &core_pattern);
        panic!("the step changed the host's core_pattern to {core_after:?}");
    }
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        hostname
    );
    assert!(
        sleeper.0.try_wait().unwrap().is_none(),
        "the host's sleep process was killed"
    );
    assert_eq!(
        host_mounts_under(Path::new("/mnt-attack")),
        Vec::<String>::new()
    );
    assert!(
        !Path::new("/mnt-attack").exists(),
        "a host path was created"
    );
}

#[test]
fn class1_workdir_through_a_leaked_fd_never_reaches_the_host() {
    let Some(lab) = Lab::new("fds") else { return };
    let ctx = lab.mkdir("ctx");
    let ctx_canary = format!("ctx-canary-{}", std::process::id());
    std::fs::write(ctx.join(&ctx_canary), "x").unwrap();
    // Names that only host directories rbuild has open (or lives next to) hold: the host's
    // root, the store, the lab, the context — minus what the sandbox's own root shows.
    let names = |p: &Path| -> BTreeSet<String> {
        std::fs::read_dir(p)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let sandbox_names: BTreeSet<String> = names(&lab.rootfs)
        .into_iter()
        .chain(["dev", "proc", "sys", "etc", "tmp"].map(String::from))
        .collect();
    let host_names: BTreeSet<String> = [
        PathBuf::from("/"),
        lab.store.clone(),
        lab.store.join("v1"),
        lab.dir.clone(),
        ctx.clone(),
    ]
    .iter()
    .flat_map(|p| names(p))
    .filter(|n| !sandbox_names.contains(n))
    .collect();
    assert!(host_names.contains(&ctx_canary) && host_names.contains("v1"));

    for n in 3..=20 {
        let dockerfile = format!(
            "FROM busybox\nWORKDIR /proc/self/fd/{n}\nRUN echo \"CWD $(pwd -P)\"; ls -a .. ../.. ../../.. | sed 's/^/ENTRY /'; echo LISTED\n"
        );
        let r = lab.build(&dockerfile, &ctx, &[]);
        assert!(r.is_clean(), "fd {n}: not a clean result\n{}", r.out);
        if !r.ok() {
            assert!(
                r.out.contains("working directory"),
                "fd {n}: the failure must name the working directory\n{}",
                r.out
            );
        }
        for name in r.printed_after("ENTRY ") {
            {
                assert!(
                    !host_names.contains(name.trim()),
                    "fd {n}: the step sees the host entry {name:?}\n{}",
                    r.out
                );
            }
        }
    }

    // The step's processes hold only standard input, output and error.
    let r = lab.build(
        // No pipeline or redirection: the shell holds a pipe's ends, or a saved fd, while it
        // runs a command that has them.
        "FROM busybox\nRUN echo FDS-START; ls /proc/1/fd; echo FDS-LISTED\n",
        &ctx,
        &[],
    );
    assert!(r.ok(), "exit {:?}: {}", r.code, r.out);
    assert!(r.printed_has("FDS-LISTED"));
    let printed = r.printed();
    let fds: Vec<&str> = printed
        .iter()
        .skip_while(|l| **l != "FDS-START")
        .skip(1)
        .take_while(|l| **l != "FDS-LISTED")
        .copied()
        .collect();
    assert_eq!(fds, ["0", "1", "2"], "{}", r.out);
}

/// Processes that descend from `root` (itself included), by the host's `/proc`.
fn descendants(root: u32) -> Vec<u32> {
    let mut parent: BTreeMap<u32, u32> = BTreeMap::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        if let Some(ppid) = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .and_then(|v| v.trim().parse().ok())
        {
            parent.insert(pid, ppid);
        }
    }
    parent
        .keys()
        .copied()
        .filter(|&p| {
            let mut cur = p;
            for _ in 0..64 {
                if cur == root {
                    return true;
                }
                match parent.get(&cur) {
                    Some(&pp) if pp != 0 => cur = pp,
                    _ => return false,
                }
            }
            false
        })
        .collect()
}

/// The shared libraries (and dynamic loader) `bin` needs, by `ldd`; none for a static binary.
fn linked_libraries(bin: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .unwrap_or_else(|e| panic!("ldd (libc-bin) is needed: {e}"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=> ") {
                Some((_, rest)) => rest,
                None => l,
            };
            let path = path.split(" (").next()?.trim();
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

#[test]
fn class2_no_sandboxed_process_runs_or_writes_the_host_rbuild_binary() {
    let Some(lab) = Lab::new("selfexe") else {
        return;
    };
    let ctx = lab.mkdir("ctx");
    let bin = rbuild_bin();
    let host_meta = std::fs::metadata(&bin).unwrap();
    let host_id = ids(&host_meta);
    let sha_before = sha256_file(&bin);

    // `/t` runs `/proc/self/exe` as its interpreter: started by the sandbox's first process
    // (a clone of rbuild until it execs) it is rbuild itself, inside the sandbox (`--root /t
    // check /fifo`: it waits for a Dockerfile on the FIFO). Started from the shell it is
    // busybox; the watcher looks at every process either way and tries to open each one's
    // executable for writing.
    lab.glibc_image();

    let dockerfile = r#"FROM glibc
ARG HOST_EXE_ID
RUN printf '#!/proc/self/exe --root\n' > /t && chmod 755 /t && mkfifo /fifo
RUN echo "WATCH $HOST_EXE_ID"; /t check /fifo & \
    for i in $(seq 60); do \
      for p in /proc/[0-9]*; do \
        id=$(stat -L -c %d:%i $p/exe 2>/dev/null) || continue; \
        [ "$id" = "$HOST_EXE_ID" ] && echo "ATTACK: $p runs the host rbuild binary"; \
        (exec 3>>$p/exe) 2>/dev/null && echo "ATTACK: $p/exe opened for writing"; \
      done; \
    done; wait; echo WATCHED
RUN ["/t", "check", "/fifo"]
"#;
    let id_arg = format!("HOST_EXE_ID={host_id}");
    let mut running = lab.start(dockerfile, &ctx, &["--build-arg", &id_arg]);
    let build_pid = running.child.id();

    // From the host: every process of the build (rbuild and its sandboxes), observed while a
    // sandbox runs, with the identity of its executable. The last step's first process is
    // rbuild started through `/t`; it waits on the FIFO until it has been looked at.
    let mut seen: BTreeMap<u32, (String, String, String)> = BTreeMap::new();
    let mut fed = false;
    let code = loop {
        if let Some(code) = running.poll() {
            break code;
        }
        let procs = descendants(build_pid);
        if procs.len() > 1 {
            for pid in procs {
                let exe = format!("/proc/{pid}/exe");
                let (Ok(meta), Ok(link)) = (std::fs::metadata(&exe), std::fs::read_link(&exe))
                else {
                    continue;
                };
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                    .unwrap_or_default();
                if cmdline.starts_with("/proc/self/exe --root /t check /fifo") && !fed {
                    let fifo = format!("/proc/{pid}/root/fifo");
                    if let Ok(mut w) = std::fs::OpenOptions::new()
                        .write(true)
                        .custom_flags(libc::O_NONBLOCK)
                        .open(&fifo)
                    {
                        w.write_all(b"FROM scratch\n").unwrap();
                        fed = true;
                    }
                }
                seen.insert(pid, (ids(&meta), link.display().to_string(), cmdline));
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut out = running.out.join().unwrap();
    out.push_str(&running.err.join().unwrap());
    let r = Outcome { code, out };
    let seen_text = format!("{seen:#?}");
    assert!(r.ok(), "{}\n{seen_text}", r.out);
    assert!(r.printed_has("WATCHED"), "{}", r.out);
    assert!(r.printed_has(&format!("WATCH {host_id}")), "{}", r.out);
    assert_eq!(r.attack_lines(), Vec::<&str>::new(), "{}", r.out);

    // rbuild itself and the rbuild inside the sandbox ran from a view of the binary no one can
    // write (a read-only overlay, or a sealed in-memory copy), never from the host file.
    assert!(
        fed,
        "rbuild inside the sandbox was never seen\n{seen_text}\n{}",
        r.out
    );
    let (_, link, _) = &seen[&build_pid];
    assert_ne!(
        Path::new(link),
        bin.as_path(),
        "rbuild runs from the host binary"
    );
    let (_, inner_link, _) = seen
        .values()
        .find(|(_, _, cmd)| cmd.starts_with("/proc/self/exe --root /t check /fifo"))
        .unwrap();
    assert_ne!(Path::new(inner_link), bin.as_path(), "{inner_link}");
    for (pid, (id, link, cmd)) in &seen {
        assert_ne!(
            id, &host_id,
            "pid {pid} ({cmd}) runs the host binary {link}"
        );
    }

    // The binary on the host is what it was.
    let after = std::fs::metadata(&bin).unwrap();
    assert_eq!(ids(&after), host_id);
    assert_eq!(sha256_file(&bin), sha_before);
}

#[test]
fn class2_rbuild_exec_into_a_hostile_container_never_exposes_the_host_binary() {
    // CVE-2019-5736 as it was: a process `exec` puts into a running container is the runtime's
    // binary until it execs the command — for good when the command is `#!/proc/self/exe` —
    // and a process already in the container watches for it, checks what its executable is,
    // and tries to open it for writing.
    let Some(lab) = Lab::new("exec") else { return };
    let ctx = lab.mkdir("ctx");
    let bin = rbuild_bin();
    let host_id = ids(&std::fs::metadata(&bin).unwrap());
    let sha_before = sha256_file(&bin);
    lab.glibc_image();
    std::fs::write(
        ctx.join("watch"),
        r#"#!/bin/sh
end=$(( $(date +%s) + 120 ))
echo WATCHING
while [ "$(date +%s)" -lt "$end" ] && [ ! -e /stop ]; do
  for p in /proc/[0-9]*; do
    [ "$p" = "/proc/$$" ] && continue
    cmd=$(tr '\0' ' ' < "$p/cmdline" 2>/dev/null) || continue
    id=$(stat -L -c %d:%i "$p/exe" 2>/dev/null) || continue
    case "$cmd" in "/proc/self/exe --root /t"*) echo "SEEN-RBUILD $id $(readlink "$p/exe")";; esac
    [ "$id" = "$HOST_EXE_ID" ] && echo "ATTACK: ${p#/proc/} ($cmd) runs the host rbuild binary"
    (exec 3>>"$p/exe") 2>/dev/null && echo "ATTACK: ${p#/proc/} ($cmd): its executable opened for writing"
  done
done
echo WATCHER-DONE
# The container lives on until the test removes it: were this, its init, to end now, the
# kernel would SIGKILL the `exec`ed `touch /stop` that ended the loop before it exits.
exec sleep 1000
"#,
    )
    .unwrap();
    let r = lab.build(
        "FROM glibc\nCOPY watch /watch\nRUN chmod 755 /watch && printf '#!/proc/self/exe --root\\n' > /t && chmod 755 /t && mkfifo /fifo\n",
        &ctx,
        &["-t", "hostile"],
    );
    assert!(r.ok(), "exit {:?}: {}", r.code, r.out);
    let env = format!("HOST_EXE_ID={host_id}");
    let run = lab.rbuild(&[
        "run", "-d", "--name", "hostile", "-e", &env, "hostile", "/watch",
    ]);
    assert!(run.ok(), "exit {:?}: {}", run.code, run.out);
    let logs = || lab.rbuild(&["logs", "hostile"]).out;
    let wait_for = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !logs().contains(what) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}:\n{}",
                logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for("WATCHING");

    // Short-lived processes (clones of rbuild until they exec `true`) for the watcher to race.
    for _ in 0..10 {
        let r = lab.rbuild(&["exec", "hostile", "true"]);
        assert!(r.ok(), "exit {:?}: {}", r.code, r.out);
    }
    // rbuild itself inside the container, through the script's interpreter, waiting on the
    // FIFO until the watcher has seen it.
    let args: Vec<std::ffi::OsString> = ["--root".into(), lab.store.clone().into_os_string()]
        .into_iter()
        .chain(["exec", "hostile", "/t", "check", "/fifo"].map(Into::into))
        .collect();
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let inner = Running::start(&refs, Duration::from_secs(120));
    wait_for("SEEN-RBUILD");
    let feed = lab.rbuild(&["exec", "hostile", "sh", "-c", "echo 'FROM scratch' > /fifo"]);
    assert!(feed.ok(), "exit {:?}: {}", feed.code, feed.out);
    let inner = inner.finish();
    assert!(inner.ok(), "rbuild inside the container: {}", inner.out);
    let stop = lab.rbuild(&["exec", "hostile", "touch", "/stop"]);
    assert!(stop.ok(), "exit {:?}: {}", stop.code, stop.out);
    wait_for("WATCHER-DONE");

    let log = logs();
    let attacks: Vec<&str> = log.lines().filter(|l| l.starts_with("ATTACK:")).collect();
    assert_eq!(attacks, Vec::<&str>::new(), "{log}");
    let seen: BTreeSet<&str> = log
        .lines()
        .filter_map(|l| l.strip_prefix("SEEN-RBUILD "))
        .collect();
    // (The link reads empty when the process ended between the two looks.)
    assert!(
        seen.iter()
            .any(|s| s.split_once(' ').is_some_and(|(_, l)| !l.is_empty())),
        "{log}"
    );
    for s in &seen {
        assert!(!s.starts_with(&format!("{host_id} ")), "{s}");
        let link = s.split_once(' ').map(|(_, l)| l).unwrap_or_default();
        assert!(
            link.is_empty() || Path::new(link) != bin.as_path(),
            "rbuild ran from {link}"
        );
    }
    assert!(lab.rbuild(&["rm", "-f", "hostile"]).ok());
    assert_eq!(ids(&std::fs::metadata(&bin).unwrap()), host_id);
    assert_eq!(sha256_file(&bin), sha_before);
}

#[test]
fn class3_an_image_whose_dev_is_a_symlink_never_mounts_on_the_host() {
    let Some(lab) = Lab::new("dev") else { return };
    let ctx = lab.mkdir("ctx");
    let host_dir = lab.mkdir("host-canary-dir");
    std::fs::write(host_dir.join("host-file"), "host\n").unwrap();
    let before = tree(&host_dir);
    let host_abs = host_dir.display().to_string();
    let deep = format!("../../../../../../../..{host_abs}");
    for (tag, target, must_work) in [
        ("dev-absolute", host_abs.as_str(), true),
        ("dev-dotdot", "../../..", false),
        ("dev-deep", deep.as_str(), true),
    ] {
        let rootfs = lab.rootfs_copy(&format!("rootfs-{tag}"));
        std::os::unix::fs::symlink(target, rootfs.join("dev")).unwrap();
        lab.image_from_rootfs(&rootfs, tag);
        let r = lab.build(
            &format!("FROM {tag}\nRUN echo hi > /dev/null && ls -a /dev/ && echo DEV-WORKS\n"),
            &ctx,
            &[],
        );
        assert!(r.is_clean(), "{tag}\n{}", r.out);
        if must_work {
            assert!(r.ok() && r.printed_has("DEV-WORKS"), "{tag}\n{}", r.out);
        }
        assert_host_dir_untouched(&host_dir, &before, &r.out);
        assert_eq!(host_mounts_under(&lab.dir), Vec::<String>::new(), "{tag}");
    }
}

#[test]
fn class3_mount_targets_and_workdirs_through_symlinks_stay_in_the_rootfs() {
    let Some(lab) = Lab::new("targets") else {
        return;
    };
    let ctx = lab.mkdir("ctx");
    std::fs::write(ctx.join("context-file"), "ctx\n").unwrap();
    let hosts: Vec<PathBuf> = (1..=4)
        .map(|i| {
            let d = lab.mkdir(&format!("host-dir-{i}"));
            std::fs::write(d.join("host-file"), format!("host {i}\n")).unwrap();
            d
        })
        .collect();
    let before: Vec<_> = hosts.iter().map(|d| tree(d)).collect();
    let top = format!("rbuild-attack-wd-{}", std::process::id());
    let [h1, h2, h3, h4] = [0, 1, 2, 3].map(|i| hosts[i].display().to_string());
    let dockerfile = format!(
        r#"FROM busybox
RUN ln -s {h1} /tlink && ln -s ../../../../../../..{h2} /clink && ln -s {h3} /blink && ln -s / /rootlink && ln -s {h4} /wlink
RUN --mount=type=tmpfs,target=/tlink --mount=type=cache,id=c,target=/clink --mount=type=bind,source=.,target=/blink \
    touch /tlink/through-tmpfs /clink/through-cache && ls /blink | sed 's/^/BOUND /' && ls -a {h1} {h2} | sed 's/^/INSIDE /'
WORKDIR /rootlink/{top}
RUN touch through-workdir && echo "WORKDIR-AT $(pwd -P)"
WORKDIR /wlink/sub
RUN touch through-workdir && echo "WORKDIR2-AT $(pwd -P)"
RUN --mount=type=tmpfs,target=/rootlink ls /bin/busybox /etc/passwd >/dev/null && echo ROOT-STILL-THERE
"#
    );
    let r = lab.build(&dockerfile, &ctx, &[]);
    assert!(r.is_clean(), "{}", r.out);
    // A tmpfs on `/` through `/rootlink` would hide the root; the step may fail on that, but
    // never outside.
    for (d, b) in hosts.iter().zip(&before) {
        assert_host_dir_untouched(d, b, &r.out);
    }
    assert!(
        !Path::new("/").join(&top).exists(),
        "WORKDIR created /{top} on the host"
    );
    assert_eq!(host_mounts_under(&lab.dir), Vec::<String>::new());
    // The redirected writes landed inside the sandbox.
    let r = lab.build(
        &dockerfile.replace(
            "RUN --mount=type=tmpfs,target=/rootlink ls /bin/busybox /etc/passwd >/dev/null && echo ROOT-STILL-THERE\n",
            "",
        ),
        &ctx,
        &[],
    );
    assert!(r.ok(), "exit {:?}: {}", r.code, r.out);
    assert!(r.printed_has("BOUND context-file"), "{}", r.out);
    assert!(r.printed_has("INSIDE through-tmpfs"), "{}", r.out);
    assert!(r.printed_has("INSIDE through-cache"), "{}", r.out);
    assert!(r.printed_has(&format!("WORKDIR-AT /{top}")), "{}", r.out);
    assert!(r.printed_has(&format!("WORKDIR2-AT {h4}/sub")), "{}", r.out);
    for (d, b) in hosts.iter().zip(&before) {
        assert_host_dir_untouched(d, b, &r.out);
    }
    assert!(!Path::new("/").join(&top).exists());
}

#[test]
fn class3_bind_sources_stay_in_the_context() {
    let Some(lab) = Lab::new("bind") else { return };
    let ctx = lab.mkdir("ctx");
    std::fs::create_dir_all(ctx.join("etc")).unwrap();
    std::fs::write(ctx.join("etc/passwd"), "context-passwd-marker\n").unwrap();
    std::fs::write(ctx.join("beside"), "context-copy-of-beside\n").unwrap();
    std::os::unix::fs::symlink("/", ctx.join("escape")).unwrap();
    std::os::unix::fs::symlink("../../../../../../..", ctx.join("escape-up")).unwrap();
    // A host file next to the context.
    std::fs::write(lab.dir.join("beside"), "HOST-SECRET-BESIDE\n").unwrap();
    let host_passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let host_line = host_passwd.lines().next().unwrap().to_string();

    let dockerfile = r#"FROM busybox
RUN --mount=type=bind,source=../../etc,target=/m cat /m/passwd
RUN --mount=type=bind,source=escape/etc/passwd,target=/m cat /m
RUN --mount=type=bind,source=escape-up/etc/passwd,target=/m cat /m
RUN --mount=type=bind,source=/../../../../etc/passwd,target=/m cat /m
RUN --mount=type=bind,source=../beside,target=/m cat /m
RUN --mount=type=bind,source=escape,target=/m,rw ls -a /m | sed 's/^/ESCAPE-DIR /'; touch /m/written-through-rw-bind
"#;
    let r = lab.build(dockerfile, &ctx, &[]);
    assert!(r.ok(), "exit {:?}: {}", r.code, r.out);
    assert_eq!(
        r.printed()
            .iter()
            .filter(|l| **l == "context-passwd-marker")
            .count(),
        // Once per step that reads a passwd file (the echoed steps do not hold the marker).
        4,
        "{}",
        r.out
    );
    assert!(r.printed_has("context-copy-of-beside"), "{}", r.out);
    assert!(!r.out.contains("HOST-SECRET-BESIDE"), "{}", r.out);
    assert!(
        !r.out.contains(&host_line),
        "the host's /etc/passwd leaked\n{}",
        r.out
    );
    // `escape` (-> /) as a whole is the context's root.
    assert!(r.printed_has("ESCAPE-DIR beside"), "{}", r.out);
    assert!(!Path::new("/written-through-rw-bind").exists());
    assert!(
        !ctx.join("written-through-rw-bind").exists(),
        "an rw bind wrote to the context"
    );
}

#[test]
fn class3_cache_ids_and_sources_stay_in_the_store() {
    let Some(lab) = Lab::new("cacheid") else {
        return;
    };
    let ctx = lab.mkdir("ctx");
    let mark = format!("rbuild-pwned-{}", std::process::id());
    let dockerfile = format!(
        r#"FROM busybox
RUN --mount=type=cache,id=../../../../../../etc,target=/c ls -a /c | sed 's/^/ETC-CACHE /'; touch /c/{mark}
RUN --mount=type=cache,id=/,target=/c ls -a /c | sed 's/^/ROOT-CACHE /'; touch /c/{mark}
RUN --mount=type=cache,id=..,target=/c ls -a /c | sed 's/^/UP-CACHE /'; touch /c/{mark}
RUN --mount=type=cache,id=s,source=../../../../../../etc,target=/c ls -a /c | sed 's/^/SRC-CACHE /'; touch /c/{mark}
RUN --mount=type=cache,id=s,target=/c find /c | sed 's/^/SRC-TREE /'
"#
    );
    let r = lab.build(&dockerfile, &ctx, &[]);
    assert!(r.ok(), "exit {:?}: {}", r.code, r.out);
    for prefix in ["ETC-CACHE", "ROOT-CACHE", "UP-CACHE", "SRC-CACHE"] {
        let entries = r.printed_after(&format!("{prefix} "));
        assert_eq!(
            entries,
            [".", ".."],
            "{prefix}: a fresh cache dir is empty\n{}",
            r.out
        );
    }
    assert!(r.printed().contains(&"SRC-TREE /c/etc"), "{}", r.out);
    for host in ["/etc", "/", "/tmp", lab.store.to_str().unwrap()] {
        assert!(
            !Path::new(host).join(&mark).exists(),
            "a cache mount wrote {host}/{mark} on the host"
        );
    }
    // The writes are in the store's cache directory.
    let cache = lab.store.join("cache-mounts");
    let found = tree(&cache).keys().filter(|k| k.ends_with(&mark)).count();
    assert_eq!(found, 4, "{:#?}", tree(&cache));
}

#[test]
fn class4_a_parallel_stage_flipping_a_shared_cache_dir_into_symlinks_touches_no_host_path() {
    let Some(lab) = Lab::new("race") else { return };
    let ctx = lab.mkdir("ctx");
    let host_dir = lab.mkdir("host-target");
    std::fs::write(host_dir.join("host-file"), "host\n").unwrap();
    let before = tree(&host_dir);
    let h = host_dir.display();
    let mut user_steps = String::new();
    for i in 0..12 {
        user_steps.push_str(&format!(
            "RUN --mount=type=cache,id=shared,target=/m,source=sub touch /m/marker-{i} 2>/dev/null; echo USED-{i}\n"
        ));
    }
    // The flipper swaps `sub` between a directory, a symlink to the host directory and a
    // relative symlink climbing to it, until the other stage is done (or a bound of rounds).
    let dockerfile = format!(
        r#"FROM busybox AS flipper
RUN --mount=type=cache,id=shared,target=/c \
    i=0; while [ $i -lt 400 ] && [ ! -e /c/done ]; do \
      rm -rf /c/sub; ln -s {h} /c/sub; \
      rm -f /c/sub; ln -s ../../../../../../../..{h} /c/sub; \
      rm -f /c/sub; ln -s / /c/sub; \
      rm -f /c/sub; mkdir /c/sub; \
      i=$((i+1)); \
    done; echo "FLIPPED $i"

FROM busybox AS user
{user_steps}RUN --mount=type=cache,id=shared,target=/c touch /c/done

FROM busybox
COPY --from=flipper /bin/busybox /f
COPY --from=user /bin/busybox /u
"#
    );
    let r = lab.build(&dockerfile, &ctx, &[]);
    // The flipper ran while the other stage mounted `sub`.
    assert!(r.printed_contains("FLIPPED "), "{}", r.out);
    assert!(r.printed_has("USED-0") || !r.ok(), "{}", r.out);
    // A step whose mount source the flipper removed mid-setup fails, as an error naming the
    // mount.
    assert!(r.is_clean(), "{}", r.out);
    if !r.ok() {
        // Removed between its creation and its opening, or between its opening and the mount.
        assert!(
            r.out.contains("mounting /m") || r.out.contains("opening a cache mount"),
            "{}",
            r.out
        );
    }
    assert_host_dir_untouched(&host_dir, &before, &r.out);
    for i in 0..12 {
        assert!(
            !Path::new(&format!("/marker-{i}")).exists(),
            "marker-{i} written to the host's /"
        );
    }
    assert_eq!(host_mounts_under(&lab.dir), Vec::<String>::new());
    // Whatever markers were written are in the store's cache directory.
    let cache = tree(&lab.store.join("cache-mounts"));
    let written = cache.keys().filter(|k| k.contains("marker-")).count();
    if r.ok() {
        assert!(written > 0, "no marker landed in the cache: {cache:#?}");
    }
}

#[test]
fn class4_a_cache_dir_or_target_made_a_symlink_by_an_earlier_build_does_not_redirect_the_mount() {
    let Some(lab) = Lab::new("swap") else { return };
    let ctx = lab.mkdir("ctx");
    let host_dir = lab.mkdir("host-target");
    std::fs::write(host_dir.join("host-file"), "host\n").unwrap();
    let before = tree(&host_dir);
    let h = host_dir.display();
    let first = format!(
        "FROM busybox\nRUN --mount=type=cache,id=k,target=/c ln -s {h} /c/sub && ln -s ../../../../../..{h} /c/rel && ln -s {h} /ct\n"
    );
    let r = lab.build(&first, &ctx, &["-t", "swapped"]);
    assert!(r.ok(), "exit {:?}: {}", r.code, r.out);
    let second = "FROM swapped
RUN --mount=type=cache,id=k,target=/m,source=sub touch /m/via-source && echo SOURCE-USED
RUN --mount=type=cache,id=k,target=/m,source=rel touch /m/via-rel && echo REL-USED
RUN --mount=type=cache,id=k2,target=/ct touch /ct/via-target && echo TARGET-USED
RUN --mount=type=cache,id=k,target=/m ls -la /m /m/sub/ | sed 's/^/CACHE /'
";
    let r = lab.build(second, &ctx, &[]);
    assert!(r.ok(), "exit {:?}: {}", r.code, r.out);
    for m in ["SOURCE-USED", "REL-USED", "TARGET-USED"] {
        assert!(r.printed_has(m), "{m}\n{}", r.out);
    }
    assert_host_dir_untouched(&host_dir, &before, &r.out);
    assert_eq!(host_mounts_under(&lab.dir), Vec::<String>::new());
    // The symlinks in the cache were resolved inside the cache directory.
    let cache = tree(&lab.store.join("cache-mounts"));
    for f in ["via-source", "via-rel"] {
        assert!(
            cache.keys().any(|k| k.ends_with(f)),
            "{f} not in the cache: {cache:#?}"
        );
    }
}

#[test]
fn class6_mount_stub_cleanup_never_follows_links_out_of_the_layer() {
    let Some(lab) = Lab::new("stubs") else { return };
    let ctx = lab.mkdir("ctx");
    std::fs::write(ctx.join("file"), "bound\n").unwrap();
    // What the stub cleanup removes (empty directories and files) waits at the host paths
    // the swapped-in symlinks point to.
    let host_dir = lab.mkdir("host-stubs");
    for d in ["b/c", "g", "x/y"] {
        std::fs::create_dir_all(host_dir.join(d)).unwrap();
    }
    std::fs::write(host_dir.join("g/file"), "").unwrap();
    std::fs::write(host_dir.join("hosts"), "").unwrap();
    let before = tree(&host_dir);
    let h = host_dir.display();
    // A base without /etc: /etc, /etc/hosts, /proc, /dev, /sys are all stubs.
    let rootfs = lab.rootfs_copy("rootfs-noetc");
    std::fs::remove_dir_all(rootfs.join("etc")).unwrap();
    lab.image_from_rootfs(&rootfs, "noetc");
    let dockerfile = format!(
        r#"FROM noetc
RUN --mount=type=tmpfs,target=/a/b/c --mount=type=bind,source=file,target=/f/g/file --mount=type=tmpfs,target=/r/x/y \
    mv /a /a.moved && ln -s {h} /a && \
    mv /f /f.moved && ln -s {h} /f && \
    mv /r /r.moved && ln -s ../../../../../../..{h} /r && \
    mv /etc /etc.moved && ln -s {h} /etc && \
    echo SWAPPED
RUN ls -la /a /f /r /etc | sed 's/^/AFTER /'; echo LAYER-OK
"#
    );
    let r = lab.build(&dockerfile, &ctx, &[]);
    assert!(r.ok(), "exit {:?}: {}", r.code, r.out);
    assert!(
        r.printed_has("SWAPPED") && r.printed_has("LAYER-OK"),
        "{}",
        r.out
    );
    assert_host_dir_untouched(&host_dir, &before, &r.out);
    // The swapped symlinks stay in the layer (they are the step's own files).
    assert!(r.printed_contains(&format!("/a -> {h}")), "{}", r.out);
}

#[test]
fn class12_the_store_and_its_cache_mounts_are_private() {
    let Some(lab) = Lab::new("perms") else { return };
    let ctx = lab.mkdir("ctx");
    let r = lab.build(
        "FROM busybox\nRUN --mount=type=cache,target=/c,mode=0777 touch /c/x && sleep 0\n",
        &ctx,
        &[],
    );
    assert!(r.ok(), "exit {:?}: {}", r.code, r.out);
    let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().mode() & 0o7777;
    assert_eq!(mode(&lab.store), 0o700, "the store root");
    let mut checked = Vec::new();
    for dir in [lab.store.clone(), lab.store.join("v1")] {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                assert_eq!(
                    mode(&p),
                    0o700,
                    "{} is reachable by other users",
                    p.display()
                );
                checked.push(p);
            }
        }
    }
    let cache = lab.store.join("cache-mounts");
    assert!(checked.contains(&cache), "{checked:?}");
    if lab.store.join("containers").exists() {
        assert!(checked.contains(&lab.store.join("containers")));
    }
}
