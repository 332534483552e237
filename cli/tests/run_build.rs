//! End-to-end tests of `RUN` with the real `rbuild` binary, for what the BuildKit recordings in
//! `testdata/build/run-*` cannot show: a failing command's report, here-documents (BuildKit's
//! documented behaviour; Docker 20.10 predates them), secrets (mounted, and found in no blob of
//! the store, no exported layer, no history, inspect or progress output), a forwarded SSH agent
//! socket, cache mounts across builds and under `sharing=locked` with two concurrent builds,
//! network modes against a listener on 127.0.0.1, the memory limit, Ctrl-C (exit 130, no
//! process, mount or temp dir left), ARG and ENV in RUN's environment, whiteouts and mount
//! stubs in RUN layers, and `RUN --device`'s error.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use common::{ok, read, text, Fixture};

/// One entry of a layer tar: its path (no `./`), type byte and contents.
type Entry = (String, tar::EntryType, Vec<u8>);

/// The `created_by` of each history entry of the image in an OCI archive export.
fn oci_history(archive: &Path) -> Vec<String> {
    oci_image(archive).0["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .map(|e| e["created_by"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The layers (uncompressed entries, base first) of the image in an OCI archive export.
fn oci_layers(archive: &Path) -> Vec<Vec<Entry>> {
    oci_image(archive).1
}

/// The config and the layers of the image in an OCI archive export.
fn oci_image(archive: &Path) -> (serde_json::Value, Vec<Vec<Entry>>) {
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut tar = tar::Archive::new(std::fs::File::open(archive).unwrap_or_else(|e| panic!("{e}")));
    for entry in tar.entries().unwrap_or_else(|e| panic!("{e}")) {
        let mut entry = entry.unwrap_or_else(|e| panic!("{e}"));
        let name = entry
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let mut data = Vec::new();
        entry
            .read_to_end(&mut data)
            .unwrap_or_else(|e| panic!("{e}"));
        files.insert(name.trim_start_matches("./").to_string(), data);
    }
    let blob = |digest: &str| -> &Vec<u8> {
        let path = format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
        files
            .get(&path)
            .unwrap_or_else(|| panic!("{path} missing from the archive"))
    };
    let json = |b: &[u8]| -> serde_json::Value {
        serde_json::from_slice(b).unwrap_or_else(|e| panic!("{e}"))
    };
    let index = json(
        files
            .get("index.json")
            .unwrap_or_else(|| panic!("no index.json")),
    );
    let manifest = json(blob(
        index["manifests"][0]["digest"].as_str().unwrap_or_default(),
    ));
    let config = json(blob(
        manifest["config"]["digest"].as_str().unwrap_or_default(),
    ));
    let layers = manifest["layers"]
        .as_array()
        .unwrap_or_else(|| panic!("no layers in {manifest}"))
        .iter()
        .map(|layer| {
            let data = blob(layer["digest"].as_str().unwrap_or_default());
            let media_type = layer["mediaType"].as_str().unwrap_or_default();
            let reader = rbuild_image::open_layer(&data[..], media_type, None)
                .unwrap_or_else(|e| panic!("{e}"));
            let mut tar = tar::Archive::new(reader);
            let mut entries = Vec::new();
            for entry in tar.entries().unwrap_or_else(|e| panic!("{e}")) {
                let mut entry = entry.unwrap_or_else(|e| panic!("{e}"));
                let name = entry
                    .path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                let kind = entry.header().entry_type();
                let mut data = Vec::new();
                entry
                    .read_to_end(&mut data)
                    .unwrap_or_else(|e| panic!("{e}"));
                let name = name
                    .trim_start_matches("./")
                    .trim_end_matches('/')
                    .to_string();
                entries.push((name, kind, data));
            }
            entries
        })
        .collect();
    (config, layers)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every file under `dir` (symlinks not followed) whose bytes, or whose decompressed bytes
/// when it is a gzip or zstd stream (layer blobs), contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                let data = std::fs::read(&path).unwrap_or_default();
                let compressed =
                    data.starts_with(&[0x1f, 0x8b]) || data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]);
                let mut plain = Vec::new();
                if compressed {
                    if let Ok(mut r) = rbuild_image::open_layer(&data[..], "", None) {
                        let _ = r.read_to_end(&mut plain);
                    }
                }
                if contains(&data, needle) || contains(&plain, needle) {
                    found.push(path);
                }
            }
        }
    }
    found
}

#[test]
fn a_failing_run_reports_its_exit_code_command_location_and_output() {
    let Some(fx) = Fixture::new("fail") else {
        return;
    };
    let ctx = fx.context(
        "fail",
        "FROM busybox\nRUN echo fine\nRUN echo one; echo two >&2; exit 3\nRUN echo never\n",
        &[],
    );
    let out = fx.rbuild(&["build", "--progress=plain", &ctx]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("exit code: 3"), "{err}");
    assert!(
        err.contains("\"/bin/sh -c echo one; echo two >&2; exit 3\""),
        "the command is missing: {err}"
    );
    assert!(
        err.contains("Dockerfile:3"),
        "the location is missing: {err}"
    );
    // The last lines of its output, stdout and stderr, in the error.
    let tail = err
        .split("error:")
        .nth(1)
        .unwrap_or_else(|| panic!("no error message: {err}"));
    assert!(
        tail.contains("\none\ntwo\n"),
        "the output tail is missing: {err}"
    );
    assert!(
        !err.contains("never"),
        "a step after the failure ran: {err}"
    );
}

#[test]
fn heredoc_runs_follow_buildkit() {
    let Some(fx) = Fixture::new("heredoc") else {
        return;
    };
    let dockerfile = "FROM busybox\n\
        ARG V=arg-value\n\
        RUN <<EOF\n\
        echo \"script $V\" > /script.txt\n\
        echo \"second line\" >> /script.txt\n\
        EOF\n\
        RUN <<-EOF\n\
        \t\techo tabs-stripped > /chomped.txt\n\
        \tEOF\n\
        RUN <<EOF\n\
        #!/bin/sh\n\
        echo \"shebang file $0\" > /shebang.txt\n\
        EOF\n\
        RUN cat <<'QUOTED' > /quoted.txt && cat <<UNQUOTED > /unquoted.txt\n\
        no expansion $V\n\
        QUOTED\n\
        expanded $V\n\
        UNQUOTED\n";
    let ctx = fx.context("heredoc", dockerfile, &[]);
    let oci = fx.dir.join("heredoc.tar");
    let oci_out = format!("type=oci,dest={}", oci.display());
    let (out, rootfs) = fx.build_local("heredoc", &ctx, &["-o", &oci_out]);
    ok(&out);
    assert_eq!(
        read(&rootfs.join("script.txt")),
        "script arg-value\nsecond line\n"
    );
    assert_eq!(read(&rootfs.join("chomped.txt")), "tabs-stripped\n");
    // A `#!` here-document is a file the shell runs, at BuildKit's /dev/pipes/NAME.
    assert_eq!(
        read(&rootfs.join("shebang.txt")),
        "shebang file /dev/pipes/EOF\n"
    );
    assert!(
        !rootfs.join("dev/pipes").exists(),
        "the script's mount point stayed"
    );
    // Delimiter quoting decides whether the shell expands the body.
    assert_eq!(read(&rootfs.join("quoted.txt")), "no expansion $V\n");
    assert_eq!(read(&rootfs.join("unquoted.txt")), "expanded arg-value\n");
    // History as BuildKit writes it: the script is the shell's command (or its file).
    let history = oci_history(&oci);
    let want = [
        "RUN |1 V=arg-value /bin/sh -c echo \"script $V\" > /script.txt\necho \"second line\" >> /script.txt\n # buildkit",
        "RUN |1 V=arg-value /bin/sh -c echo tabs-stripped > /chomped.txt\n # buildkit",
        "RUN |1 V=arg-value /bin/sh -c /dev/pipes/EOF # buildkit",
        "RUN |1 V=arg-value /bin/sh -c cat <<'QUOTED' > /quoted.txt && cat <<UNQUOTED > /unquoted.txt\nno expansion $V\nQUOTED\nexpanded $V\nUNQUOTED # buildkit",
    ];
    assert_eq!(history[history.len() - 4..], want, "{history:#?}");
}

#[test]
fn secrets_are_mounted_and_stored_nowhere() {
    let Some(fx) = Fixture::new("secret") else {
        return;
    };
    let secret = "rbuild-test-secret-7c1e9a52f0b34d68";
    let env_secret = "rbuild-env-secret-0d4b8e21c7a95f36";
    let secret_file = fx.dir.join("token.txt");
    std::fs::write(&secret_file, secret).unwrap_or_else(|e| panic!("{e}"));
    let dockerfile = "FROM busybox\n\
        RUN --mount=type=secret,id=tok stat -c '%a %u:%g %s' /run/secrets/tok > /secret-stat \
            && sha256sum < /run/secrets/tok | cut -d' ' -f1 > /secret-hash\n\
        RUN --mount=type=secret,id=envtok,env=TOKEN printf %s \"$TOKEN\" | sha256sum | cut -d' ' -f1 > /env-hash \
            && { test -e /run/secrets/envtok && echo file || echo no-file; } >> /env-hash\n\
        RUN --mount=type=secret,id=tok,target=/etc/app/token,mode=0440,uid=33,gid=50 \
            stat -c '%a %u:%g' /etc/app/token > /target-stat\n\
        RUN --mount=type=secret,id=absent { test -e /run/secrets/absent && echo mounted || echo skipped; } > /optional\n";
    let ctx = fx.context("secret", dockerfile, &[]);
    let oci = fx.dir.join("secret-oci.tar");
    let oci_out = format!("type=oci,dest={}", oci.display());
    let secret_arg = format!("id=tok,src={}", secret_file.display());
    let rootfs = fx.dir.join("secret.rootfs");
    let output = format!("type=local,dest={}", rootfs.display());
    let out = fx
        .command(&[
            "build",
            "--progress=plain",
            "-t",
            "secret-img",
            "-o",
            &output,
            "-o",
            "type=image",
            "-o",
            &oci_out,
            "--secret",
            &secret_arg,
            "--secret",
            "id=envtok,env=RBUILD_TEST_SECRET_ENV",
            &ctx,
        ])
        .env("RBUILD_TEST_SECRET_ENV", env_secret)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    ok(&out);
    let hash = |s: &str| format!("{:x}", Sha256::digest(s.as_bytes()));
    assert_eq!(
        read(&rootfs.join("secret-stat")),
        format!("400 0:0 {}\n", secret.len())
    );
    assert_eq!(
        read(&rootfs.join("secret-hash")),
        format!("{}\n", hash(secret))
    );
    assert_eq!(
        read(&rootfs.join("env-hash")),
        format!("{}\nno-file\n", hash(env_secret))
    );
    assert_eq!(read(&rootfs.join("target-stat")), "440 33:50\n");
    assert_eq!(read(&rootfs.join("optional")), "skipped\n");
    assert!(
        !rootfs.join("run").exists(),
        "a secret's mount point stayed in the image"
    );
    assert!(
        !rootfs.join("etc/app").exists(),
        "a secret's mount point stayed in the image"
    );

    // Not in any file of the store (blobs decompressed, snapshots, cache mounts, …). The
    // scan does see inside compressed layer blobs: it finds the hash file's contents there.
    let blobs = files_containing(&fx.root.join("v1/blobs"), hash(secret).as_bytes());
    assert!(
        !blobs.is_empty(),
        "the scan found no layer holding /secret-hash"
    );
    for needle in [secret, env_secret] {
        let found = files_containing(&fx.root, needle.as_bytes());
        assert!(found.is_empty(), "the secret is stored in {found:?}");
    }
    // Not in any layer of the exported image.
    let layers = oci_layers(&oci);
    assert!(layers.len() >= 5, "{} layers", layers.len());
    for (i, layer) in layers.iter().enumerate() {
        for (name, _, data) in layer {
            for needle in [secret, env_secret] {
                assert!(
                    !contains(data, needle.as_bytes()) && !name.contains(needle),
                    "layer {i} holds the secret in {name}"
                );
            }
        }
    }
    // Not in history, inspect or the progress output.
    let history = ok(&fx.rbuild(&["history", "secret-img"]));
    let inspect = ok(&fx.rbuild(&["inspect", "secret-img"]));
    let progress = format!("{}{}", text(&out.stdout), text(&out.stderr));
    for (what, shown) in [
        ("history", &history),
        ("inspect", &inspect),
        ("progress", &progress),
    ] {
        for needle in [secret, env_secret] {
            assert!(!shown.contains(needle), "{what} shows the secret: {shown}");
        }
    }
    assert!(history.contains("/run/secrets/tok"), "{history}");

    // A required secret that was not given stops the build, naming it.
    let ctx = fx.context(
        "secret-required",
        "FROM busybox\nRUN --mount=type=secret,id=needed,required=true echo never\n",
        &[],
    );
    let out = fx.rbuild(&["build", "--progress=plain", &ctx]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("secret needed not found"), "{err}");
    assert!(
        !err.lines()
            .any(|l| l.ends_with(" never") && !l.contains("RUN")),
        "the step ran: {err}"
    );
}

#[test]
fn an_ssh_agent_socket_is_forwarded() {
    let Some(fx) = Fixture::new("ssh") else {
        return;
    };
    let socket = fx.dir.join("agent.sock");
    let _listener =
        std::os::unix::net::UnixListener::bind(&socket).unwrap_or_else(|e| panic!("{e}"));
    let ctx = fx.context(
        "ssh",
        "FROM busybox\n\
         RUN --mount=type=ssh test -S \"$SSH_AUTH_SOCK\" && echo \"socket at $SSH_AUTH_SOCK\" > /ssh.txt\n\
         RUN --mount=type=ssh,id=other,target=/agent.sock { test -S /agent.sock && echo other || echo absent; } > /other.txt\n",
        &[],
    );
    let ssh = format!("default={}", socket.display());
    let (out, rootfs) = fx.build_local("ssh", &ctx, &["--ssh", &ssh]);
    ok(&out);
    assert_eq!(
        read(&rootfs.join("ssh.txt")),
        "socket at /run/buildkit/ssh_agent.0\n"
    );
    // An optional agent that was not forwarded is skipped.
    assert_eq!(read(&rootfs.join("other.txt")), "absent\n");
    assert!(
        !rootfs.join("run").exists(),
        "the agent's mount point stayed"
    );

    // A required agent that was not forwarded is an error.
    let ctx = fx.context(
        "ssh-required",
        "FROM busybox\nRUN --mount=type=ssh,id=deploy,required=true true\n",
        &[],
    );
    let out = fx.rbuild(&["build", "--progress=plain", &ctx]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("deploy"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn cache_mounts_persist_between_builds_and_stay_out_of_images() {
    let Some(fx) = Fixture::new("cache") else {
        return;
    };
    let first = fx.context(
        "cache-1",
        "FROM busybox\nRUN --mount=type=cache,id=persist,target=/var/cache/app \
         echo written-by-the-first-build > /var/cache/app/data && echo first > /first.txt\n",
        &[],
    );
    let (out, rootfs1) = fx.build_local("cache-1", &first, &[]);
    ok(&out);
    let second = fx.context(
        "cache-2",
        "FROM busybox\nRUN --mount=type=cache,id=persist,target=/mnt/c cat /mnt/c/data > /seen.txt\n",
        &[],
    );
    let (out, rootfs2) = fx.build_local("cache-2", &second, &[]);
    ok(&out);
    assert_eq!(
        read(&rootfs2.join("seen.txt")),
        "written-by-the-first-build\n"
    );
    for rootfs in [&rootfs1, &rootfs2] {
        assert!(
            !rootfs.join("var").exists(),
            "the cache's mount point stayed"
        );
        assert!(
            !rootfs.join("mnt").exists(),
            "the cache's mount point stayed"
        );
        let found = files_containing(rootfs, b"written-by-the-first-build");
        let expected: Vec<PathBuf> = if rootfs == &rootfs2 {
            vec![rootfs2.join("seen.txt")]
        } else {
            vec![]
        };
        assert_eq!(found, expected, "the cache's contents reached an image");
    }
}

/// Reads a child's stderr lines into a channel (and a log) until it closes.
fn stderr_lines(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child
        .stderr
        .take()
        .unwrap_or_else(|| panic!("no stderr pipe"));
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits (at most `limit`) for a line that satisfies `pred`; returns the lines seen.
fn wait_for_line(
    rx: &std::sync::mpsc::Receiver<String>,
    limit: Duration,
    pred: impl Fn(&str) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                let hit = pred(&line);
                seen.push(line);
                if hit {
                    return seen;
                }
            }
            Err(_) => break,
        }
    }
    panic!("no such line within {limit:?}: {seen:#?}");
}

#[test]
fn a_locked_cache_mount_serialises_concurrent_builds() {
    let Some(fx) = Fixture::new("locked") else {
        return;
    };
    let step = |name: &str, pause: u32| {
        format!(
            "FROM busybox\nRUN --mount=type=cache,id=shared-log,target=/c,sharing=locked \
             echo start-{name} >> /c/log && echo holding-{name} && sleep {pause} && echo end-{name} >> /c/log\n"
        )
    };
    let a = fx.context("locked-a", &step("a", 2), &[]);
    let b = fx.context("locked-b", &step("b", 1), &[]);
    let mut build_a = fx
        .command(&["build", "--progress=plain", &a])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let lines = stderr_lines(&mut build_a);
    // Build b starts while build a holds the cache (it sleeps 2 s inside).
    wait_for_line(&lines, Duration::from_secs(60), |l| {
        l.ends_with(" holding-a")
    });
    let out_b = fx
        .command(&["build", "--progress=plain", &b])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let status_a = build_a.wait().unwrap_or_else(|e| panic!("{e}"));
    ok(&out_b);
    assert!(status_a.success());
    let reader = fx.context(
        "locked-read",
        "FROM busybox\nRUN --mount=type=cache,id=shared-log,target=/c,sharing=locked cp /c/log /log\n",
        &[],
    );
    let (out, rootfs) = fx.build_local("locked-read", &reader, &[]);
    ok(&out);
    assert_eq!(
        read(&rootfs.join("log")),
        "start-a\nend-a\nstart-b\nend-b\n",
        "the two builds' steps interleaved in the locked cache"
    );
}

/// A one-shot HTTP server on 127.0.0.1 that counts the connections it answered.
struct Listener {
    port: u16,
    answered: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Listener {
    fn start() -> Listener {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("{e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        let answered = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, halt) = (answered.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(300);
            while !halt.load(Ordering::SeqCst) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                        let mut buf = [0u8; 1024];
                        let _ = stream.read(&mut buf);
                        let _ = stream.write_all(
                            b"HTTP/1.0 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nreached\n",
                        );
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Listener {
            port,
            answered,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn network_modes_of_run() {
    let Some(fx) = Fixture::new("network") else {
        return;
    };
    let server = Listener::start();
    // (Debian's busybox-static wget crashes with -T; a refused connection fails at once.)
    let fetch = "{ wget -q -O - http://127.0.0.1:$PORT/ || echo unreachable; }";
    let ctx = fx.context(
        "network",
        &format!(
            "FROM busybox\nARG PORT\n\
             RUN --network=none {fetch} > /none.txt\n\
             RUN {fetch} > /default.txt\n"
        ),
        &[],
    );
    let port = format!("PORT={}", server.port);
    let (out, rootfs) = fx.build_local("network", &ctx, &["--build-arg", &port]);
    ok(&out);
    assert_eq!(read(&rootfs.join("none.txt")), "unreachable\n");
    assert_eq!(read(&rootfs.join("default.txt")), "reached\n");
    assert_eq!(server.answered.load(Ordering::SeqCst), 1);

    // `--network none` for the whole build.
    let ctx = fx.context(
        "network-cli",
        &format!("FROM busybox\nARG PORT\nRUN {fetch} > /cli-none.txt\n"),
        &[],
    );
    let (out, rootfs) = fx.build_local(
        "network-cli",
        &ctx,
        &["--build-arg", &port, "--network", "none"],
    );
    ok(&out);
    assert_eq!(read(&rootfs.join("cli-none.txt")), "unreachable\n");
    assert_eq!(server.answered.load(Ordering::SeqCst), 1);

    // `RUN --network=host` needs the entitlement.
    let ctx = fx.context(
        "network-host",
        &format!("FROM busybox\nARG PORT\nRUN --network=host {fetch} > /host.txt\n"),
        &[],
    );
    let out = fx.rbuild(&["build", "--progress=plain", "--build-arg", &port, &ctx]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("network.host"), "{err}");
    assert!(err.contains("Dockerfile:3"), "{err}");
    let (out, rootfs) = fx.build_local(
        "network-host",
        &ctx,
        &["--build-arg", &port, "--allow", "network.host"],
    );
    ok(&out);
    assert_eq!(read(&rootfs.join("host.txt")), "reached\n");
    assert_eq!(server.answered.load(Ordering::SeqCst), 2);
}

#[test]
fn the_memory_limit_stops_a_run_that_needs_more() {
    let Some(fx) = Fixture::new("memory") else {
        return;
    };
    let ctx = fx.context(
        "memory",
        "FROM busybox\nRUN dd if=/dev/zero of=/dev/null bs=200M count=1\n",
        &[],
    );
    let out = fx.rbuild(&["build", "--progress=plain", "-m", "32m", &ctx]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("out of memory"), "{err}");
    assert!(err.contains("Dockerfile:2"), "{err}");
    // The same step fits without the limit.
    let out = fx.rbuild(&["build", "--progress=plain", &ctx]);
    ok(&out);
}

/// Pids of processes whose command line is exactly `args`.
fn processes(args: &[&str]) -> Vec<String> {
    let want: Vec<u8> = args.iter().flat_map(|a| a.bytes().chain([0])).collect();
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                })
                .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == want))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn ctrl_c_stops_a_running_step_and_leaves_nothing_behind() {
    let Some(fx) = Fixture::new("sigint") else {
        return;
    };
    let ctx = fx.context(
        "sigint",
        "FROM busybox\nRUN --mount=type=tmpfs,target=/scratch --mount=type=cache,target=/c sleep 100\n",
        &[],
    );
    let mut child = fx
        .command(&["build", "--progress=plain", &ctx])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let lines = stderr_lines(&mut child);
    wait_for_line(&lines, Duration::from_secs(60), |l| {
        l.contains("] RUN --mount=type=tmpfs")
    });
    // The step started; wait for its command to run.
    let deadline = Instant::now() + Duration::from_secs(30);
    while processes(&["sleep", "100"]).is_empty() {
        assert!(Instant::now() < deadline, "the RUN's process never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = rustix::process::Pid::from_child(&child);
    let sent = Instant::now();
    rustix::process::kill_process(pid, rustix::process::Signal::INT)
        .unwrap_or_else(|e| panic!("{e}"));
    // Bounded wait (a hang guard, not a benchmark).
    let status = loop {
        if let Some(status) = child.try_wait().unwrap_or_else(|e| panic!("{e}")) {
            break status;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(20),
            "rbuild did not exit after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    eprintln!("rbuild exited {:?} after SIGINT", sent.elapsed());
    assert_eq!(status.code(), Some(130));
    let rest: Vec<String> = lines.try_iter().collect();
    assert!(rest.iter().any(|l| l.contains("interrupted")), "{rest:#?}");
    assert!(
        processes(&["sleep", "100"]).is_empty(),
        "the RUN's process survived"
    );
    let store = fx.root.display().to_string();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    assert!(
        !mountinfo.lines().any(|l| l.contains(&store)),
        "a mount in the store stayed: {mountinfo}"
    );
    let tmp = fx.root.join("v1/tmp");
    assert!(tmp.is_dir(), "{} is not the store's tmp dir", tmp.display());
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "temp dirs stayed: {left:?}");
    // The store still works.
    let again = fx.context("after-sigint", "FROM busybox\nRUN echo ok > /ok\n", &[]);
    ok(&fx.rbuild(&["build", "--progress=plain", &again]));
}

#[test]
fn run_sees_build_args_and_the_image_env() {
    let Some(fx) = Fixture::new("env") else {
        return;
    };
    let ctx = fx.context(
        "env",
        "FROM busybox\n\
         ENV FROM_ENV=env-value\n\
         ARG FROM_ARG=arg-default\n\
         ARG OVERRIDDEN=arg-default\n\
         ARG UNSET\n\
         RUN echo \"$FROM_ENV $FROM_ARG $OVERRIDDEN ${UNSET-unset}\" > /seen.txt\n",
        &[],
    );
    let oci = fx.dir.join("env.tar");
    let oci_out = format!("type=oci,dest={}", oci.display());
    let (out, rootfs) = fx.build_local(
        "env",
        &ctx,
        &[
            "-t",
            "env-img",
            "-o",
            "type=image",
            "-o",
            &oci_out,
            "--build-arg",
            "OVERRIDDEN=from-cli",
        ],
    );
    ok(&out);
    assert_eq!(
        read(&rootfs.join("seen.txt")),
        "env-value arg-default from-cli unset\n"
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(&fx.rbuild(&["inspect", "env-img"]))).unwrap_or_default();
    let env: Vec<&str> = inspect[0]["Config"]["Env"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    assert!(env.contains(&"FROM_ENV=env-value"), "{env:?}");
    assert!(
        !env.iter()
            .any(|e| e.starts_with("FROM_ARG") || e.starts_with("OVERRIDDEN")),
        "ARGs reached the config: {env:?}"
    );
    let history = oci_history(&oci);
    assert_eq!(
        history.last().map(String::as_str),
        Some("RUN |3 FROM_ARG=arg-default OVERRIDDEN=from-cli UNSET= /bin/sh -c echo \"$FROM_ENV $FROM_ARG $OVERRIDDEN ${UNSET-unset}\" > /seen.txt # buildkit"),
        "{history:#?}"
    );
}

#[test]
fn run_layers_carry_whiteouts_and_no_mount_stubs() {
    let Some(fx) = Fixture::new("layers") else {
        return;
    };
    let ctx = fx.context(
        "layers",
        "FROM busybox\n\
         COPY data/ /data/\n\
         RUN rm /bin/yes && mv /data/a.txt /data/b.txt \
             && rm -rf /data/dir && mkdir /data/dir && echo new > /data/dir/new.txt\n\
         RUN --mount=type=tmpfs,target=/new/deep/tmp \
             --mount=type=bind,source=f.txt,target=/tmp/sub/bound.txt \
             --mount=type=cache,target=/var/cache/x \
             --mount=type=bind,source=data,target=/opt/data,rw \
             echo done > /done.txt && touch /opt/data/scribble\n",
        &[
            ("data/a.txt", "a\n"),
            ("data/dir/old1.txt", "1\n"),
            ("data/dir/old2.txt", "2\n"),
            ("f.txt", "f\n"),
        ],
    );
    let oci = fx.dir.join("layers.tar");
    let oci_out = format!("type=oci,dest={}", oci.display());
    let (out, rootfs) = fx.build_local("layers", &ctx, &["-o", &oci_out]);
    ok(&out);
    let layers = oci_layers(&oci);
    assert_eq!(layers.len(), 4, "busybox, COPY and two RUN layers");
    let names = |i: usize| -> Vec<String> { layers[i].iter().map(|(n, ..)| n.clone()).collect() };
    let run1 = names(2);
    for want in [
        "bin/.wh.yes",
        "data/.wh.a.txt",
        "data/b.txt",
        "data/dir/.wh..wh..opq",
        "data/dir/new.txt",
    ] {
        assert!(
            run1.iter().any(|n| n == want),
            "{want} missing from {run1:?}"
        );
    }
    assert!(
        !run1
            .iter()
            .any(|n| n.contains("old1") || n.contains("old2")),
        "{run1:?}"
    );
    // /dev, /proc and /sys, created for the first RUN, stay (as with BuildKit).
    for kept in ["dev", "proc", "sys"] {
        assert!(
            run1.iter().any(|n| n == kept),
            "{kept} missing from {run1:?}"
        );
    }
    // Nothing of the mounts or their mount points is in the second RUN's layer.
    let run2 = names(3);
    let mut unexpected: Vec<&String> = run2.iter().filter(|n| *n != "done.txt").collect();
    unexpected.retain(|n| *n != "tmp");
    assert!(unexpected.is_empty(), "{run2:?}");
    assert!(!rootfs.join("bin/yes").exists());
    assert!(!rootfs.join("data/dir/old1.txt").exists());
    assert_eq!(read(&rootfs.join("data/dir/new.txt")), "new\n");
    for stub in ["new", "var", "opt", "tmp/sub"] {
        assert!(!rootfs.join(stub).exists(), "mount point {stub} stayed");
    }
    // The rw bind's write was thrown away (and never touched the context).
    assert!(!fx.dir.join("layers/data/scribble").exists());
}

#[test]
fn run_device_is_not_supported() {
    let Some(fx) = Fixture::new("device") else {
        return;
    };
    let ctx = fx.context(
        "device",
        "FROM busybox\nRUN --device=vendor.com/gpu=all echo hi\n",
        &[],
    );
    let out = fx.rbuild(&["build", "--progress=plain", &ctx]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("RUN --device is not supported"), "{err}");
    assert!(err.contains("Dockerfile:2"), "{err}");
}
