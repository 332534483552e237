//! End-to-end tests of `rbuild build` with registries, driving the real binary against a real
//! registry (Debian's `docker-registry` on loopback, see `rbuild_registry::test_registry`):
//! `FROM` pulls a base image an empty store lacks (and later builds need no registry),
//! `--pull` follows a tag that moved, `--push` / `-o type=registry` / `-o type=image,push=true`
//! push the result (pulled back into a fresh store with the same digest, and run), and a
//! missing base image or wrong credentials fail with a clear error.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Output;

use common::{output_with_input, rbuild_command, skip, text, Fixture};
use rbuild_registry::test_registry::{missing_tools, Mode, TestRegistry};

/// A busybox fixture and a registry in `mode`; `None` (skipped) without root, busybox or
/// docker-registry (a failure under CI=true).
fn fixture_and_registry(name: &str, mode: Mode) -> Option<(Fixture, TestRegistry)> {
    let fx = Fixture::new(name)?;
    if let Some(missing) = missing_tools(&mode) {
        skip(&missing);
        return None;
    }
    let registry = TestRegistry::start(mode).unwrap_or_else(|e| panic!("{e}"));
    Some((fx, registry))
}

/// Builds `dockerfile` in `fx`'s store as `name` and pushes it there.
fn push_image(fx: &Fixture, name: &str, dockerfile: &str) {
    fx.build(name, dockerfile);
    fx.ok(&["push", "-q", name]);
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

fn succeeded(out: &Output) -> String {
    assert!(
        out.status.success(),
        "rbuild failed ({:?}):\n{}{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stderr)
}

/// The digest of the `pushing manifest for REF@sha256:… done` line for `name`.
fn pushed_digest(stderr: &str, name: &str) -> String {
    let prefix = format!("pushing manifest for {name}@");
    stderr
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no push of {name} in:\n{stderr}"))
        .to_owned()
}

/// `Digest: sha256:…` of `rbuild pull`'s output.
fn pulled_digest(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("Digest: "))
        .unwrap_or_else(|| panic!("no digest in {stdout}"))
        .trim()
        .to_owned()
}

#[test]
fn from_pulls_a_missing_base_image_then_needs_no_registry() {
    let Some((fx, mut registry)) = fixture_and_registry("rb-from", Mode::Plain) else {
        return;
    };
    let base = format!("{}/base", registry.host());
    let tools = format!("{}/tools:1", registry.host());
    for name in [&base, &tools] {
        fx.ok(&["tag", "busybox", name]);
        fx.ok(&["push", "-q", name]);
    }

    let empty = Fixture::empty("rb-from-empty");
    let ctx = empty.context(
        "ctx",
        &format!(
            "FROM {base}\nRUN echo built-on-pulled > /out\nCOPY --from={tools} /bin/busybox /copied\n"
        ),
        &[],
    );
    let out = empty.rbuild(&["build", "--progress=plain", "-t", "app", &ctx]);
    let log = succeeded(&out);
    assert!(
        log.contains(&format!("[internal] pull {base}:latest")),
        "{log}"
    );
    // `COPY --from=image` pulls its image too.
    assert!(log.contains(&format!("[internal] pull {tools}")), "{log}");
    assert!(log.contains("resolve "), "{log}");
    assert!(log.contains(" done"), "{log}");
    assert_eq!(
        empty.ok(&["run", "--rm", "app", "cat", "/out"]),
        "built-on-pulled\n"
    );
    // The base is tagged in the store under its full name.
    assert!(empty.ok(&["images"]).contains(&base), "no {base} in images");

    // Without the registry, the store's base image is all a build needs.
    registry.kill();
    std::fs::write(
        Path::new(&ctx).join("Dockerfile"),
        format!("FROM {base}\nRUN echo offline > /out\n"),
    )
    .unwrap();
    let out = empty.rbuild(&["build", "--progress=plain", "-t", "app2", &ctx]);
    let log = succeeded(&out);
    assert!(!log.contains("[internal] pull"), "{log}");
    assert_eq!(
        empty.ok(&["run", "--rm", "app2", "cat", "/out"]),
        "offline\n"
    );
    // With --pull it must ask the registry, which is gone: a clear error.
    let out = empty.rbuild(&["build", "--progress=plain", "--pull", "-t", "app3", &ctx]);
    let error = failed(&out);
    assert!(
        error.contains(&format!("pulling {base}:latest (--pull) failed"))
            && error.contains("cannot reach"),
        "{error}"
    );
}

#[test]
fn pull_flag_follows_a_moved_tag() {
    let Some((fx, registry)) = fixture_and_registry("rb-pull", Mode::Plain) else {
        return;
    };
    let base = format!("{}/moving:1", registry.host());
    push_image(&fx, &base, "FROM busybox\nRUN echo one > /marker\n");

    let user = Fixture::empty("rb-pull-user");
    let ctx = user.context(
        "ctx",
        &format!("FROM {base}\nRUN cat /marker > /seen\n"),
        &[],
    );
    let seen = |tag: &str, extra: &[&str]| {
        let mut args = vec!["build", "--progress=plain", "-t", tag];
        args.extend_from_slice(extra);
        args.push(&ctx);
        let log = succeeded(&user.rbuild(&args));
        (user.ok(&["run", "--rm", tag, "cat", "/seen"]), log)
    };
    assert_eq!(seen("a", &[]).0, "one\n");

    // The tag moves to another image (on the same busybox layer).
    push_image(&fx, &base, "FROM busybox\nRUN echo two > /marker\n");
    let (marker, log) = seen("b", &[]);
    assert_eq!(marker, "one\n", "without --pull the store's image is used");
    assert!(!log.contains("[internal] pull"), "{log}");

    let (marker, log) = seen("c", &["--pull"]);
    assert_eq!(marker, "two\n", "{log}");
    assert!(log.contains(&format!("[internal] pull {base}")), "{log}");
    // Only what the store lacked was downloaded: the busybox layer was there.
    assert!(log.contains("already in the store"), "{log}");
    // The store's tag follows the registry's.
    let pulled = user.ok(&["pull", &base]);
    assert!(pulled.contains("Image is up to date"), "{pulled}");
}

#[test]
fn build_push_then_pull_into_a_fresh_store() {
    let Some((fx, registry)) = fixture_and_registry("rb-push", Mode::Plain) else {
        return;
    };
    let name = format!("{}/app:1", registry.host());
    let ctx = fx.context(
        "ctx",
        "FROM busybox\nRUN echo pushed-by-build > /hello\n",
        &[],
    );
    let out = fx.rbuild(&["build", "--progress=plain", "--push", "-t", &name, &ctx]);
    let log = succeeded(&out);
    let digest = pushed_digest(&log, &name);
    assert!(log.contains(&format!("naming to {name}")), "{log}");

    let fresh = Fixture::empty("rb-push-fresh");
    let pulled = fresh.ok(&["pull", &name]);
    assert_eq!(pulled_digest(&pulled), digest);
    assert_eq!(
        fresh.ok(&["run", "--rm", &name, "cat", "/hello"]),
        "pushed-by-build\n"
    );

    // Without a name there is nothing to push to: refused before building.
    let error = failed(&fx.rbuild(&["build", "--push", &ctx]));
    assert!(error.contains("pushing needs a name"), "{error}");
}

#[test]
fn output_type_registry_and_image_push() {
    let Some((fx, registry)) = fixture_and_registry("rb-output", Mode::Plain) else {
        return;
    };
    let host = registry.host();
    let ctx = fx.context("ctx", "FROM busybox\nRUN echo via-output > /o\n", &[]);
    let first = format!("{host}/out/registry:1");
    let out = fx.rbuild(&[
        "build",
        "--progress=plain",
        "-o",
        &format!("type=registry,name={first}"),
        &ctx,
    ]);
    let digest = pushed_digest(&succeeded(&out), &first);

    // Two names at once, with type=image,push=true.
    let (a, b) = (format!("{host}/out/a:1"), format!("{host}/out/b:1"));
    let out = fx.rbuild(&[
        "build",
        "--progress=plain",
        "-o",
        &format!("type=image,name={a},{b},push=true"),
        &ctx,
    ]);
    let log = succeeded(&out);
    // The same build (all cached) gives the same image.
    assert_eq!(pushed_digest(&log, &a), digest);
    assert_eq!(pushed_digest(&log, &b), digest);

    let fresh = Fixture::empty("rb-output-fresh");
    for name in [&first, &a, &b] {
        assert_eq!(pulled_digest(&fresh.ok(&["pull", name])), digest, "{name}");
    }
    assert_eq!(fresh.ok(&["run", "--rm", &b, "cat", "/o"]), "via-output\n");
}

#[test]
fn a_missing_base_image_fails_clearly() {
    let Some((fx, registry)) = fixture_and_registry("rb-missing", Mode::Plain) else {
        return;
    };
    let missing = format!("{}/nope/absent:3", registry.host());
    let ctx = fx.context("ctx", &format!("FROM {missing}\nRUN true\n"), &[]);
    let out = fx.rbuild(&["build", "--progress=plain", &ctx]);
    assert_eq!(out.status.code(), Some(1));
    let error = text(&out.stderr);
    assert!(
        error.contains(&format!(
            "{missing} is not in the local image store, and pulling it failed"
        )) && error.contains("not found")
            && error.contains(&format!("{}/nope/absent", registry.host())),
        "{error}"
    );
    // The step is reported failed, and the error points at the FROM line.
    assert!(error.contains("ERROR"), "{error}");
    assert!(error.contains("Dockerfile:1:"), "{error}");
}

#[test]
fn wrong_credentials_fail_clearly() {
    let mode = Mode::Htpasswd {
        user: "alice".into(),
        password: "s3cret".into(),
    };
    let Some((fx, registry)) = fixture_and_registry("rb-auth", mode) else {
        return;
    };
    let host = registry.host();
    let good = fx.dir.join("good-config");
    let bad = fx.dir.join("bad-config");
    let with_config = |config: &Path, root: &Path, args: &[&str], stdin: Option<&str>| {
        let mut command = rbuild_command(root, args);
        command.env("DOCKER_CONFIG", config);
        output_with_input(&mut command, stdin)
    };
    succeeded(&with_config(
        &good,
        &fx.root,
        &["login", "-u", "alice", "--password-stdin", &host],
        Some("s3cret\n"),
    ));
    let base = format!("{host}/private/base:1");
    fx.ok(&["tag", "busybox", &base]);
    succeeded(&with_config(&good, &fx.root, &["push", "-q", &base], None));

    // Credentials the registry refuses, written as `docker login` would have saved them.
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("config.json"),
        format!(r#"{{"auths":{{"{host}":{{"auth":"YWxpY2U6d3Jvbmc="}}}}}}"#),
    )
    .unwrap();
    let user = Fixture::empty("rb-auth-user");
    let ctx = fx.context("ctx", &format!("FROM {base}\nRUN true\n"), &[]);
    let started = std::time::Instant::now();
    for config in [&bad, &fx.dir.join("no-config")] {
        let out = with_config(
            config,
            &user.root,
            &["build", "--progress=plain", &ctx],
            None,
        );
        let error = failed(&out);
        assert!(
            error.contains("unauthorized") && error.contains(&format!("rbuild login {host}")),
            "{error}"
        );
        assert!(error.contains(&base), "{error}");
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(30));

    // Pushing a build with refused credentials fails the same way.
    let out = with_config(
        &bad,
        &fx.root,
        &[
            "build",
            "--push",
            "-t",
            &format!("{host}/private/app:1"),
            &ctx,
        ],
        None,
    );
    let error = failed(&out);
    assert!(
        error.contains("unauthorized") && error.contains(&format!("rbuild login {host}")),
        "{error}"
    );

    // With the good login the build pulls its base.
    let out = with_config(
        &good,
        &user.root,
        &["build", "--progress=plain", &ctx],
        None,
    );
    succeeded(&out);
}
