//! End-to-end tests of `rbuild pull`, `push`, `login` and `logout` against a real registry
//! (Debian's `docker-registry` on loopback, see `rbuild_registry::test_registry`): a round trip
//! between two stores that runs the pulled image, basic auth with login and logout, TLS with a
//! test CA, the registry killed mid-push, a tampered blob, interop with skopeo both ways, and
//! platform selection from a multi-platform index.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{output_with_input, push_digest, rbuild_command, registry, text, tool, Fixture};
use rbuild_registry::test_registry::{Mode, TestRegistry};

/// A busybox fixture with an image `app` (a file written by a RUN step) and a registry.
fn app_and_registry(name: &str, mode: Mode) -> Option<(Fixture, TestRegistry)> {
    let fx = Fixture::new(name)?;
    let registry = registry(mode)?;
    fx.build(
        "app",
        "FROM busybox\nRUN echo hello-from-registry > /hello\n",
    );
    Some((fx, registry))
}

/// `rbuild ARGS…` in the store `root`, with `DOCKER_CONFIG` set to `docker_config`.
fn rbuild_with_config(
    root: &Path,
    docker_config: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> Output {
    let mut command = rbuild_command(root, args);
    command.env("DOCKER_CONFIG", docker_config);
    output_with_input(&mut command, stdin)
}

fn failed(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "rbuild should have failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stderr)
}

#[test]
fn push_pull_round_trip_and_run() {
    let Some((fx, registry)) = app_and_registry("reg-roundtrip", Mode::Plain) else {
        return;
    };
    let name = format!("{}/team/app:1", registry.host());
    fx.ok(&["tag", "app", &name]);
    let pushed = fx.ok(&["push", &name]);
    assert!(pushed.contains("Pushed"), "{pushed}");
    let digest = push_digest(&pushed);

    // Again: nothing to send.
    let again = fx.ok(&["push", &name]);
    assert!(
        again.contains("Layer already exists") && !again.contains("Pushed"),
        "{again}"
    );

    let other = Fixture::empty("reg-roundtrip-pull");
    let pulled = other.ok(&["pull", &name]);
    assert!(pulled.contains(&format!("Digest: {digest}")), "{pulled}");
    assert!(pulled.contains("Pull complete"), "{pulled}");
    assert!(pulled.trim_end().ends_with(&name), "{pulled}");
    assert_eq!(
        other.ok(&["run", "--rm", &name, "cat", "/hello"]),
        "hello-from-registry\n"
    );
    // Pulling again downloads nothing.
    let up_to_date = other.ok(&["pull", &name]);
    assert!(up_to_date.contains("Image is up to date"), "{up_to_date}");

    let missing = other.rbuild(&["pull", &format!("{}/team/absent:1", registry.host())]);
    let error = failed(&missing);
    assert!(error.contains("not found"), "{error}");
}

#[test]
fn login_logout_and_auth_failures() {
    let mode = Mode::Htpasswd {
        user: "alice".into(),
        password: "s3cret".into(),
    };
    let Some((fx, registry)) = app_and_registry("reg-auth", mode) else {
        return;
    };
    let host = registry.host();
    let name = format!("{host}/private/app:1");
    fx.ok(&["tag", "app", &name]);
    let config_dir = fx.dir.join("docker-config");
    let run =
        |args: &[&str], stdin: Option<&str>| rbuild_with_config(&fx.root, &config_dir, args, stdin);

    let started = Instant::now();
    let error = failed(&run(&["push", &name], None));
    assert!(
        error.contains("unauthorized") && error.contains(&format!("rbuild login {host}")),
        "{error}"
    );
    let error = failed(&run(
        &["login", "-u", "alice", "--password-stdin", &host],
        Some("wrong\n"),
    ));
    assert!(error.contains("unauthorized"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert!(!config_dir.join("config.json").exists());

    let out = run(
        &["login", "-u", "alice", "--password-stdin", &host],
        Some("s3cret\n"),
    );
    assert!(
        text(&out.stdout).contains("Login Succeeded"),
        "{}",
        text(&out.stderr)
    );
    let config = std::fs::read_to_string(config_dir.join("config.json")).unwrap();
    assert!(
        config.contains(&host) && config.contains("\"auth\""),
        "{config}"
    );
    let pushed = run(&["push", &name], None);
    assert!(pushed.status.success(), "{}", text(&pushed.stderr));

    let out = run(&["logout", &host], None);
    assert!(
        text(&out.stdout).contains("Removing login credentials"),
        "{}",
        text(&out.stderr)
    );
    let error = failed(&run(&["push", &name], None));
    assert!(error.contains("unauthorized"), "{error}");
}

#[test]
fn tls_needs_the_test_ca() {
    let Some((fx, registry)) = app_and_registry("reg-tls", Mode::Tls) else {
        return;
    };
    let name = format!("{}/secure/app:1", registry.host());
    fx.ok(&["tag", "app", &name]);
    let error = failed(&fx.rbuild(&["push", &name]));
    assert!(
        error.contains("certificate") && error.contains("--registry-ca"),
        "{error}"
    );

    let ca = registry.ca_file().display().to_string();
    fx.ok(&["push", "--registry-ca", &ca, &name]);
    let other = Fixture::empty("reg-tls-pull");
    let pulled = other
        .command(&["pull", &name])
        .env("RBUILD_REGISTRY_CA", &ca)
        .output()
        .unwrap();
    assert!(pulled.status.success(), "{}", text(&pulled.stderr));
}

/// A file of `size` pseudo-random (incompressible) bytes.
fn random_file(path: &Path, size: usize) {
    use std::io::Write;
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for _ in 0..size / 8 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        file.write_all(&state.to_le_bytes()).unwrap();
    }
    file.flush().unwrap();
}

/// The size of the biggest upload in progress under `dir`.
fn biggest_upload(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| std::fs::metadata(e.path().join("data")).ok())
                .map(|m| m.len())
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

#[test]
fn registry_killed_mid_push_leaves_the_store_intact() {
    let Some(fx) = Fixture::new("reg-kill") else {
        return;
    };
    let Some(mut registry) = registry(Mode::Plain) else {
        return;
    };
    let ctx = fx.context("big", "FROM busybox\nCOPY big.bin /big.bin\n", &[]);
    random_file(&PathBuf::from(&ctx).join("big.bin"), 48 << 20);
    fx.ok(&["build", "-q", "-t", "big", &ctx]);
    let name = format!("{}/big/app:1", registry.host());
    fx.ok(&["tag", "big", &name]);

    // 1 MiB chunks: the upload takes long enough to be caught in the middle.
    let mut child = fx
        .command(&["push", &name])
        .env("RBUILD_REGISTRY_CHUNK_SIZE", "1048576")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let uploads = registry.uploads_dir("big/app");
    let deadline = Instant::now() + Duration::from_secs(60);
    while biggest_upload(&uploads) < (8 << 20) {
        assert!(Instant::now() < deadline, "the upload never got going");
        assert!(
            child.try_wait().unwrap().is_none(),
            "push ended before the kill"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    registry.kill();
    let killed_at = Instant::now();
    let out = child.wait_with_output().unwrap();
    let error = failed(&out);
    assert!(
        error.contains("cannot reach") && error.contains(&registry.host()),
        "{error}"
    );
    assert!(
        killed_at.elapsed() < Duration::from_secs(60),
        "{:?}",
        killed_at.elapsed()
    );

    registry.restart().unwrap();
    let pushed = fx.ok(&["push", &name]);
    let digest = push_digest(&pushed);
    let other = Fixture::empty("reg-kill-pull");
    let pulled = other.ok(&["pull", &name]);
    assert!(pulled.contains(&format!("Digest: {digest}")), "{pulled}");
}

#[test]
fn a_tampered_blob_is_rejected() {
    let Some((fx, registry)) = app_and_registry("reg-tamper", Mode::Plain) else {
        return;
    };
    let name = format!("{}/tamper/app:1", registry.host());
    fx.ok(&["tag", "app", &name]);
    fx.ok(&["push", &name]);
    // Every layer's data in the registry, changed in its last byte.
    let blobs = registry.storage().join("docker/registry/v2/blobs/sha256");
    let mut tampered = 0;
    for prefix in std::fs::read_dir(&blobs).unwrap().flatten() {
        for blob in std::fs::read_dir(prefix.path()).unwrap().flatten() {
            let data = blob.path().join("data");
            let mut bytes = std::fs::read(&data).unwrap();
            // Layers are gzip (1f 8b); manifests and configs are JSON.
            if bytes.starts_with(&[0x1f, 0x8b]) {
                let last = bytes.len() - 1;
                bytes[last] ^= 0xff;
                std::fs::write(&data, bytes).unwrap();
                tampered += 1;
            }
        }
    }
    assert!(tampered > 0);
    let other = Fixture::empty("reg-tamper-pull");
    let error = failed(&other.rbuild(&["pull", &name]));
    assert!(error.contains("digest mismatch"), "{error}");
    let images = other.ok(&["images"]);
    assert_eq!(images.lines().count(), 1, "nothing is tagged: {images}");
}

#[test]
fn skopeo_reads_what_rbuild_pushes_and_rbuild_pulls_what_skopeo_pushes() {
    let Some((fx, registry)) = app_and_registry("reg-skopeo", Mode::Plain) else {
        return;
    };
    if !tool("skopeo") {
        return;
    }
    let host = registry.host();
    let name = format!("{host}/interop/app:1");
    fx.ok(&["tag", "app", &name]);
    let digest = push_digest(&fx.ok(&["push", &name]));

    let skopeo = |args: &[&str]| {
        let out = std::process::Command::new("skopeo")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo {args:?}: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
    };
    let inspect: serde_json::Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{name}"),
    ]))
    .unwrap();
    assert_eq!(inspect["Digest"], digest.as_str());
    let layout = fx.dir.join("skopeo-oci");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{name}"),
        &format!("oci:{}:app", layout.display()),
    ]);
    assert!(layout.join("index.json").exists());

    // The other way: skopeo pushes a docker-archive rbuild saved; rbuild pulls and runs it.
    let archive = fx.dir.join("app.tar");
    fx.ok(&["save", "-o", &archive.display().to_string(), "app"]);
    let from_skopeo = format!("{host}/interop/from-skopeo:1");
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("docker-archive:{}", archive.display()),
        &format!("docker://{from_skopeo}"),
    ]);
    let other = Fixture::empty("reg-skopeo-pull");
    other.ok(&["pull", &from_skopeo]);
    assert_eq!(
        other.ok(&["run", "--rm", &from_skopeo, "cat", "/hello"]),
        "hello-from-registry\n"
    );
}

#[test]
fn pull_platform_selects_from_a_multi_platform_index() {
    use rbuild_cache::Store;
    use rbuild_image::config::ImageConfig;
    use rbuild_image::images::{describe_manifest, image_from_dir};
    use rbuild_image::{Index, ManifestFormat, Platform};
    use rbuild_registry::{no_progress, Client, ClientOptions};

    let Some(registry) = registry(Mode::Plain) else {
        return;
    };
    // Two single-file images, for linux/amd64 and linux/arm64, under one index, pushed by
    // rbuild's registry client.
    let dir = Fixture::empty("reg-platforms");
    let store = Store::open(&dir.dir.join("source")).unwrap();
    let mut entries = Vec::new();
    for platform in ["linux/amd64", "linux/arm64"] {
        let platform = Platform::parse(platform).unwrap();
        let rootfs = dir.dir.join(format!("rootfs-{}", platform.architecture));
        std::fs::create_dir_all(&rootfs).unwrap();
        std::fs::write(rootfs.join("arch"), &platform.architecture).unwrap();
        let config = ImageConfig::new(&platform.architecture, &platform.os);
        let digest = image_from_dir(&store, &rootfs, config).unwrap();
        let (mut descriptor, _) = describe_manifest(&store, &digest).unwrap();
        descriptor.platform = Some(platform);
        entries.push(descriptor);
    }
    let index = Index::new(ManifestFormat::Oci, entries.clone());
    let index_digest = store.blobs().put_bytes(&index.to_json().unwrap()).unwrap();
    let name = format!("{}/multi/app:1", registry.host());
    let client = Client::new(ClientOptions {
        docker_config: None,
        ..ClientOptions::default()
    })
    .unwrap();
    let reference = rbuild_image::Reference::parse(&name).unwrap();
    client
        .push(&store, &index_digest, &reference, &no_progress)
        .unwrap();

    let out = dir.ok(&["pull", "--platform", "linux/arm64", &name]);
    assert!(out.contains(&format!("Digest: {index_digest}")), "{out}");
    let inspect: serde_json::Value = serde_json::from_str(&dir.ok(&["inspect", &name])).unwrap();
    assert_eq!(inspect[0]["Architecture"], "arm64", "{inspect}");
    let error = failed(&dir.rbuild(&["pull", "--platform", "linux/s390x", &name]));
    assert!(
        error.contains("linux/s390x") && error.contains("linux/arm64"),
        "{error}"
    );
}
