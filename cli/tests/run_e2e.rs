//! End-to-end tests of the bundled runtime through the real `rbuild` binary: `run` with
//! Docker's rules for ENTRYPOINT/CMD, env, WORKDIR and USER; exit codes; `--rm`; detached
//! containers with `ps`, `logs`, `stop`, `start`, `rm`; signal forwarding; `-t` on a real pty;
//! `-i`; `--network none`; `--read-only`; volumes; `exec`; `commit`; memory limits. Every test
//! has its own store with a `busybox` image built by rbuild from the shared busybox rootfs
//! (`testdata/base/make-busybox-rootfs.sh`).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use common::{run_on_pty, text, Fixture, PtyStreams};

impl Fixture {
    /// Polls `f` until it returns true (10 s at most).
    fn eventually(&self, what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

#[test]
fn entrypoint_and_cmd_follow_dockers_rules() {
    let Some(fx) = Fixture::new("cmd") else {
        return;
    };
    fx.build(
        "ep",
        "FROM busybox\nENTRYPOINT [\"echo\", \"ep\"]\nCMD [\"default\"]\n",
    );
    fx.build("cmdonly", "FROM busybox\nCMD [\"echo\", \"cmd\"]\n");
    assert_eq!(fx.ok(&["run", "--rm", "ep"]), "ep default\n");
    // Arguments replace CMD and keep ENTRYPOINT.
    assert_eq!(fx.ok(&["run", "--rm", "ep", "a", "-b"]), "ep a -b\n");
    // --entrypoint replaces ENTRYPOINT and drops the image's CMD.
    assert_eq!(fx.ok(&["run", "--rm", "--entrypoint", "echo", "ep"]), "\n");
    assert_eq!(
        fx.ok(&["run", "--rm", "--entrypoint", "echo", "ep", "x"]),
        "x\n"
    );
    assert_eq!(
        fx.ok(&["run", "--rm", "--entrypoint", "", "ep", "echo", "none"]),
        "none\n"
    );
    assert_eq!(fx.ok(&["run", "--rm", "cmdonly"]), "cmd\n");
    assert_eq!(
        fx.ok(&["run", "--rm", "cmdonly", "echo", "other"]),
        "other\n"
    );
    // No command at all, and a command that does not exist.
    let none = fx.rbuild(&["run", "--rm", "--entrypoint", "", "ep"]);
    assert_eq!(code(&none), Some(125), "{}", text(&none.stderr));
    assert!(text(&none.stderr).contains("no command"));
    let missing = fx.rbuild(&["run", "--rm", "busybox", "no-such-command"]);
    assert_eq!(code(&missing), Some(127), "{}", text(&missing.stderr));
    assert!(text(&missing.stderr).contains("no-such-command"));
    assert_eq!(fx.ok(&["ps", "-a", "-q"]), "", "--rm leaves nothing");
}

#[test]
fn env_workdir_and_user() {
    let Some(fx) = Fixture::new("env") else {
        return;
    };
    fx.build(
        "envimg",
        "FROM busybox\nENV A=1 B=2\nWORKDIR /app/sub\nUSER www-data\n",
    );
    let env_file = fx.dir.join("env.list");
    std::fs::write(&env_file, "# a comment\n\nD=5\nB=from-file\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let out = fx
        .command(&[
            "run",
            "--rm",
            "-e",
            "B=3",
            "-e",
            "C=4",
            "-e",
            "FROM_HOST",
            "--env-file",
            &env_file.display().to_string(),
            "envimg",
            "env",
        ])
        .env("FROM_HOST", "passed")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let env = text(&out.stdout);
    let vars: Vec<&str> = env.lines().collect();
    for want in [
        "A=1",
        "B=3",
        "C=4",
        "D=5",
        "FROM_HOST=passed",
        "HOME=/var/www",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ] {
        assert!(vars.contains(&want), "{want} missing in:\n{env}");
    }
    let hostname = vars
        .iter()
        .find_map(|v| v.strip_prefix("HOSTNAME="))
        .unwrap_or_default();
    assert_eq!(hostname.len(), 12, "{env}");

    // WORKDIR, -w (created when missing), USER, -u.
    assert_eq!(fx.ok(&["run", "--rm", "envimg", "pwd"]), "/app/sub\n");
    assert_eq!(
        fx.ok(&["run", "--rm", "-w", "/other/dir", "envimg", "pwd"]),
        "/other/dir\n"
    );
    assert_eq!(
        fx.ok(&["run", "--rm", "envimg", "id"]),
        "uid=33(www-data) gid=33(www-data) groups=33(www-data),50(staff)\n"
    );
    assert_eq!(
        fx.ok(&["run", "--rm", "-u", "1:1", "envimg", "id"]),
        "uid=1(daemon) gid=1(daemon) groups=1(daemon)\n"
    );
    assert_eq!(
        fx.ok(&[
            "run",
            "--rm",
            "-u",
            "root",
            "envimg",
            "sh",
            "-c",
            "id -u; echo $HOME"
        ]),
        "0\n/root\n"
    );
    let unknown = fx.rbuild(&["run", "--rm", "-u", "nobody-here", "envimg", "id"]);
    assert_eq!(code(&unknown), Some(125));
    assert!(text(&unknown.stderr).contains("nobody-here"));

    // The default hostname is the first 12 hex digits of the container's id.
    let name = fx.ok(&["run", "--name", "hn", "busybox", "hostname"]);
    let ids = fx.ok(&["ps", "-a", "-q"]);
    assert_eq!(name, ids);
    assert_eq!(
        fx.ok(&["run", "--rm", "--hostname", "web", "busybox", "hostname"]),
        "web\n"
    );
}

#[test]
fn exit_codes_and_stopped_containers() {
    let Some(fx) = Fixture::new("exit") else {
        return;
    };
    let out = fx.rbuild(&["run", "--name", "seven", "busybox", "sh", "-c", "exit 7"]);
    assert_eq!(code(&out), Some(7));
    let out = fx.rbuild(&["run", "--rm", "busybox", "sh", "-c", "exit 255"]);
    assert_eq!(code(&out), Some(255));
    assert_eq!(fx.ok(&["run", "--rm", "busybox", "true"]), "");
    // Only the container without --rm is left, exited with its code.
    let ps = fx.ok(&["ps", "-a"]);
    let lines: Vec<&str> = ps.lines().collect();
    assert_eq!(lines.len(), 2, "{ps}");
    assert!(
        lines[1].contains("Exited (7)") && lines[1].ends_with("seven"),
        "{ps}"
    );
    assert_eq!(fx.ok(&["ps"]).lines().count(), 1, "nothing runs");
    let containers = std::fs::read_dir(fx.root.join("containers"))
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .count();
    assert_eq!(containers, 1);
    // The name is taken until the container is removed.
    let dup = fx.rbuild(&["run", "--name", "seven", "busybox", "true"]);
    assert_eq!(code(&dup), Some(125));
    assert!(text(&dup.stderr).contains("already in use"));
    assert_eq!(fx.ok(&["rm", "seven"]), "seven\n");
    assert_eq!(fx.ok(&["ps", "-a", "-q"]), "");
}

#[test]
fn detached_lifecycle() {
    let Some(fx) = Fixture::new("detach") else {
        return;
    };
    let script = "trap 'echo got TERM; exit 3' TERM; echo started; while :; do sleep 0.1; done";
    let id = fx.ok(&["run", "-d", "--name", "d1", "busybox", "sh", "-c", script]);
    assert_eq!(id.trim().len(), 64, "{id}");
    let ps = fx.ok(&["ps"]);
    assert!(
        ps.contains(&id[..12]) && ps.contains(" Up ") && ps.contains("d1"),
        "{ps}"
    );
    fx.eventually("the log", || fx.ok(&["logs", "d1"]) == "started\n");
    let busy = fx.rbuild(&["rm", "d1"]);
    assert!(!busy.status.success());
    assert!(
        text(&busy.stderr).contains("running"),
        "{}",
        text(&busy.stderr)
    );

    assert_eq!(fx.ok(&["stop", "d1"]), "d1\n");
    let ps = fx.ok(&["ps", "-a"]);
    assert!(ps.contains("Exited (3)"), "{ps}");
    assert_eq!(fx.ok(&["ps", "-q"]), "");
    assert_eq!(fx.ok(&["logs", "d1"]), "started\ngot TERM\n");

    // start runs it again, on its own upper dir; the log goes on.
    assert_eq!(fx.ok(&["start", "d1"]), "d1\n");
    assert!(fx.ok(&["ps"]).contains("d1"));
    fx.eventually("the second start's output", || {
        fx.ok(&["logs", "d1"]) == "started\ngot TERM\nstarted\n"
    });
    assert_eq!(fx.ok(&["rm", "-f", "d1"]), "d1\n");
    assert_eq!(fx.ok(&["ps", "-a", "-q"]), "");
}

#[test]
fn signals_reach_the_container() {
    let Some(fx) = Fixture::new("signal") else {
        return;
    };
    let script = "trap 'echo got TERM; exit 3' TERM; echo ready; while :; do sleep 0.1; done";
    let mut child: Child = fx
        .command(&["run", "--rm", "busybox", "sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut out = BufReader::new(child.stdout.take().unwrap_or_else(|| panic!("no stdout")));
    let mut line = String::new();
    out.read_line(&mut line).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(line, "ready\n");
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut rest = String::new();
    out.read_to_string(&mut rest)
        .unwrap_or_else(|e| panic!("{e}"));
    let status = child.wait().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rest, "got TERM\n");
    assert_eq!(status.code(), Some(3));
}

#[test]
fn tty_through_a_real_pty() {
    let Some(fx) = Fixture::new("tty") else {
        return;
    };
    let cmd = fx.command(&[
        "run",
        "--rm",
        "-t",
        "busybox",
        "sh",
        "-c",
        "tty; test -t 0 && echo is-a-tty; test -t 1 && echo out-is-a-tty",
    ]);
    let (status, out) = run_on_pty(cmd, PtyStreams::All, None);
    assert_eq!(status, Some(0), "{out}");
    // Both ptys' line disciplines turn \n into \r\n.
    let lines: Vec<&str> = out.lines().map(|l| l.trim_end_matches('\r')).collect();
    assert_eq!(lines, ["/dev/pts/0", "is-a-tty", "out-is-a-tty"], "{out:?}");
}

#[test]
fn interactive_stdin() {
    let Some(fx) = Fixture::new("stdin") else {
        return;
    };
    let mut child = fx
        .command(&["run", "--rm", "-i", "busybox", "sh", "-c", "cat; echo done"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut stdin = child.stdin.take().unwrap_or_else(|| panic!("no stdin"));
    stdin
        .write_all(b"line one\nline two\n")
        .unwrap_or_else(|e| panic!("{e}"));
    drop(stdin);
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(text(&out.stdout), "line one\nline two\ndone\n");
    // Without -i the container reads /dev/null.
    let out = fx
        .command(&["run", "--rm", "busybox", "cat"])
        .stdin(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(code(&out), Some(0));
    assert_eq!(text(&out.stdout), "");
}

#[test]
fn network_modes() {
    let Some(fx) = Fixture::new("net") else {
        return;
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .port()
        .to_string();
    let server = std::thread::spawn(move || {
        if let Ok((mut conn, _)) = listener.accept() {
            let _ = conn.write_all(b"hello-from-host\n");
        }
    });
    let out = fx.ok(&[
        "run",
        "--rm",
        "busybox",
        "nc",
        "-w",
        "5",
        "127.0.0.1",
        &port,
    ]);
    assert_eq!(out, "hello-from-host\n");
    server
        .join()
        .unwrap_or_else(|_| panic!("the server panicked"));

    let none = fx.rbuild(&[
        "run",
        "--rm",
        "--network",
        "none",
        "busybox",
        "nc",
        "-w",
        "2",
        "127.0.0.1",
        &port,
    ]);
    assert_ne!(code(&none), Some(0), "connected without a network");
    assert!(text(&none.stdout).is_empty());
    let dev = fx.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "busybox",
        "cat",
        "/proc/net/dev",
    ]);
    let interfaces: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(interfaces, ["lo"], "{dev}");
}

#[test]
fn read_only_root_and_tmpfs() {
    let Some(fx) = Fixture::new("ro") else {
        return;
    };
    let out = fx.rbuild(&["run", "--rm", "--read-only", "busybox", "touch", "/x"]);
    assert_ne!(code(&out), Some(0));
    assert!(
        text(&out.stderr).contains("Read-only file system"),
        "{}",
        text(&out.stderr)
    );
    let out = fx.ok(&[
        "run",
        "--rm",
        "--read-only",
        "--tmpfs",
        "/scratch:size=1m",
        "busybox",
        "sh",
        "-c",
        "echo ok > /scratch/f && cat /scratch/f && df -k /scratch | tail -1",
    ]);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("ok"));
    assert_eq!(
        lines.next().and_then(|l| l.split_whitespace().nth(1)),
        Some("1024"),
        "{out}"
    );
}

#[test]
fn volumes_outlive_containers() {
    let Some(fx) = Fixture::new("vol") else {
        return;
    };
    assert_eq!(fx.ok(&["volume", "create", "data1"]), "data1\n");
    fx.ok(&[
        "run",
        "--rm",
        "-v",
        "data1:/data",
        "busybox",
        "sh",
        "-c",
        "echo persisted > /data/f",
    ]);
    assert_eq!(
        fx.ok(&[
            "run",
            "--rm",
            "-v",
            "data1:/data:ro",
            "busybox",
            "cat",
            "/data/f"
        ]),
        "persisted\n"
    );
    let ro = fx.rbuild(&[
        "run",
        "--rm",
        "-v",
        "data1:/data:ro",
        "busybox",
        "touch",
        "/data/g",
    ]);
    assert_ne!(code(&ro), Some(0));
    // A volume that a container uses cannot be removed.
    fx.ok(&[
        "run",
        "--name",
        "user",
        "-v",
        "data1:/data",
        "busybox",
        "true",
    ]);
    let busy = fx.rbuild(&["volume", "rm", "data1"]);
    assert!(!busy.status.success() && text(&busy.stderr).contains("in use"));
    fx.ok(&["rm", "user"]);
    assert!(fx.ok(&["volume", "ls"]).contains("data1"));
    let inspect: serde_json::Value =
        serde_json::from_str(&fx.ok(&["volume", "inspect", "data1"])).unwrap_or_default();
    let mountpoint = inspect[0]["Mountpoint"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        std::fs::read_to_string(Path::new(&mountpoint).join("f")).unwrap_or_default(),
        "persisted\n"
    );
    assert_eq!(fx.ok(&["volume", "rm", "data1"]), "data1\n");
    assert_eq!(fx.ok(&["volume", "ls", "-q"]), "");

    // A host directory, read-write and read-only.
    let host = fx.dir.join("host");
    std::fs::create_dir(&host).unwrap_or_else(|e| panic!("{e}"));
    let bind = format!("{}:/h", host.display());
    fx.ok(&[
        "run",
        "--rm",
        "-v",
        &bind,
        "busybox",
        "sh",
        "-c",
        "echo from-container > /h/x",
    ]);
    assert_eq!(
        std::fs::read_to_string(host.join("x")).unwrap_or_default(),
        "from-container\n"
    );
    let ro = fx.rbuild(&[
        "run",
        "--rm",
        "-v",
        &format!("{bind}:ro"),
        "busybox",
        "rm",
        "/h/x",
    ]);
    assert_ne!(code(&ro), Some(0));
    assert!(host.join("x").exists());
}

#[test]
fn exec_enters_a_running_container() {
    let Some(fx) = Fixture::new("exec") else {
        return;
    };
    fx.ok(&[
        "run", "-d", "--name", "sl", "-e", "MARK=1", "busybox", "sleep", "60",
    ]);
    let ps = fx.ok(&["exec", "sl", "ps"]);
    let init = ps
        .lines()
        .find(|l| l.split_whitespace().next() == Some("1"))
        .unwrap_or_default();
    assert!(init.contains("sleep 60"), "{ps}");
    // It shares the container's hostname and environment; -u, -w, -e apply.
    let out = fx.ok(&[
        "exec",
        "-u",
        "www-data",
        "-w",
        "/tmp",
        "-e",
        "EXTRA=2",
        "sl",
        "sh",
        "-c",
        "id -u; pwd; echo $MARK$EXTRA; hostname",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..3], ["33", "/tmp", "12"], "{out}");
    assert_eq!(lines.get(3).map(|h| h.len()), Some(12), "{out}");
    let code7 = fx.rbuild(&["exec", "sl", "sh", "-c", "exit 7"]);
    assert_eq!(code(&code7), Some(7));
    // Its standard input with -i.
    let mut child = fx
        .command(&["exec", "-i", "sl", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    child
        .stdin
        .take()
        .map(|mut s| s.write_all(b"via exec\n"))
        .unwrap_or_else(|| panic!("no stdin"))
        .unwrap_or_else(|e| panic!("{e}"));
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(text(&out.stdout), "via exec\n");

    // PID 1 ignores SIGTERM (no handler): stop falls back to SIGKILL after -t seconds.
    fx.ok(&["stop", "-t", "1", "sl"]);
    assert!(fx.ok(&["ps", "-a"]).contains("Exited (137)"));
    let stopped = fx.rbuild(&["exec", "sl", "true"]);
    assert!(text(&stopped.stderr).contains("not running"));
}

#[test]
fn commit_makes_an_image_of_the_changes() {
    let Some(fx) = Fixture::new("commit") else {
        return;
    };
    fx.ok(&[
        "run",
        "--name",
        "w",
        "busybox",
        "sh",
        "-c",
        "echo committed > /data.txt; rm /bin/vi",
    ]);
    let id = fx.ok(&["commit", "w", "snap:1"]);
    assert!(id.starts_with("sha256:"), "{id}");
    assert_eq!(
        fx.ok(&[
            "run",
            "--rm",
            "snap:1",
            "sh",
            "-c",
            "cat /data.txt; test -e /bin/vi || echo no-vi"
        ]),
        "committed\nno-vi\n"
    );
    let history = fx.ok(&["history", "snap:1"]);
    assert!(history.contains("echo committed"), "{history}");
    // The committed layer is stored as built layers are: an uncompressed tar, digest = diff ID.
    {
        use rbuild_image::images::{read_config, resolve_manifest};
        use rbuild_image::manifest::media_types;
        let store = rbuild_cache::Store::open(&fx.root).unwrap_or_else(|e| panic!("{e}"));
        let record = store
            .images()
            .get("docker.io/library/snap:1")
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("no snap:1 in the store"));
        let top = rbuild_image::Descriptor::new(&record.media_type, record.manifest, 0);
        let (_, manifest) = resolve_manifest(&store, &top).unwrap_or_else(|e| panic!("{e}"));
        let config = read_config(&store, &manifest.config.digest).unwrap_or_else(|e| panic!("{e}"));
        let layer = manifest.layers.last().unwrap_or_else(|| panic!("no layer"));
        assert_eq!(layer.media_type, media_types::OCI_LAYER_TAR);
        assert_eq!(Some(&layer.digest), config.rootfs.diff_ids.last());
    }

    // A running container: its mount points are not part of the layer.
    fx.ok(&[
        "run",
        "-d",
        "--name",
        "live",
        "busybox",
        "sh",
        "-c",
        "echo x > /live.txt; sleep 60",
    ]);
    fx.eventually("the file", || {
        fx.rbuild(&["exec", "live", "test", "-e", "/live.txt"])
            .status
            .success()
    });
    fx.ok(&["commit", "live", "live:1"]);
    fx.ok(&["rm", "-f", "live"]);
    let tar = fx.dir.join("live.tar");
    fx.ok(&[
        "build",
        "-q",
        "-o",
        &format!("type=tar,dest={}", tar.display()),
        &{
            let ctx = fx.dir.join("ctx-live");
            std::fs::create_dir_all(&ctx).unwrap_or_else(|e| panic!("{e}"));
            std::fs::write(ctx.join("Dockerfile"), "FROM live:1\n")
                .unwrap_or_else(|e| panic!("{e}"));
            ctx.display().to_string()
        },
    ]);
    let mut names = Vec::new();
    let mut archive =
        tar::Archive::new(std::fs::File::open(&tar).unwrap_or_else(|e| panic!("{e}")));
    for entry in archive.entries().unwrap_or_else(|e| panic!("{e}")) {
        let entry = entry.unwrap_or_else(|e| panic!("{e}"));
        names.push(
            entry
                .path()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        );
    }
    let clean = |n: &String| n.trim_start_matches("./").trim_end_matches('/').to_string();
    let names: Vec<String> = names.iter().map(clean).collect();
    assert!(names.contains(&"live.txt".to_string()), "{names:?}");
    for stub in [
        "proc",
        "sys",
        "dev",
        "etc/hosts",
        "etc/hostname",
        "etc/resolv.conf",
    ] {
        assert!(!names.contains(&stub.to_string()), "{stub} in {names:?}");
    }
}

#[test]
fn memory_limit_kills_with_137() {
    let Some(fx) = Fixture::new("oom") else {
        return;
    };
    let out = fx.rbuild(&[
        "run",
        "--rm",
        "-m",
        "32m",
        "busybox",
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=200M",
        "count=1",
    ]);
    assert_eq!(code(&out), Some(137), "{}", text(&out.stderr));
    // The same allocation without a limit succeeds.
    fx.ok(&[
        "run",
        "--rm",
        "busybox",
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=200M",
        "count=1",
    ]);
}
