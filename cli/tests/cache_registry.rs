//! Registry build caches end to end, with the real `rbuild` binary and a real registry
//! (Debian's `docker-registry` on loopback): the build farm — builder A (its own store) builds
//! and exports its cache to the registry (`--cache-to type=registry,ref=…`); builder B (another
//! store, the same context) imports it, runs no step, and gets A's image ID and digest; after
//! one file changes B runs exactly the steps from that file's COPY on. Also: skopeo inspects
//! and copies the cache artifact; a cache reference that does not exist is a warning; a
//! tampered layer blob in the registry is refused and its step runs; the exported layers are
//! gzip, or zstd with `compression=zstd` (and B still gets A's image: it stores the layers
//! uncompressed, as A does); `type=inline` carries the cache inside a pushed image's config.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{registry, state_of, step_states, text, tool, Fixture};
use rbuild_image::manifest::ManifestOrIndex;
use rbuild_image::reference::Reference;
use rbuild_image::Manifest;
use rbuild_registry::test_registry::{Mode, TestRegistry};
use rbuild_registry::{Client, ClientOptions};

/// Steps whose output is new on every run (so a step that ran shows in the image ID).
const DOCKERFILE: &str = "FROM busybox
COPY a.txt /a.txt
RUN cat /proc/sys/kernel/random/uuid > /r1
COPY b.txt /b.txt
RUN cat /proc/sys/kernel/random/uuid > /r2 && cat /b.txt >> /r2
RUN cat /proc/sys/kernel/random/uuid > /r3
ENV DONE=1
";

const FILES: &[(&str, &str)] = &[("a.txt", "a\n"), ("b.txt", "b\n")];

/// Two builders (two stores with the busybox base) and a registry.
fn farm(name: &str) -> Option<(Fixture, Fixture, TestRegistry)> {
    let a = Fixture::new(&format!("{name}-a"))?;
    let b = Fixture::new(&format!("{name}-b"))?;
    Some((a, b, registry(Mode::Plain)?))
}

/// What a build gave: its output, image ID and manifest digest.
struct Built {
    out: Output,
    id: String,
    digest: String,
}

impl Built {
    fn stderr(&self) -> String {
        text(&self.out.stderr)
    }

    fn state(&self, step: &str) -> &'static str {
        state_of(&step_states(&self.stderr()), step)
    }

    /// Asserts that no RUN step ran.
    fn ran_no_run_step(&self) {
        let states = step_states(&self.stderr());
        let ran: Vec<_> = states
            .iter()
            .filter(|(t, s)| t.starts_with("RUN") && *s != "CACHED")
            .collect();
        assert!(ran.is_empty(), "{ran:?}\n{}", self.stderr());
    }
}

/// `rbuild build --progress=plain EXTRA… CTX` in `fx`'s store, asserting success.
fn build(fx: &Fixture, ctx: &str, extra: &[&str]) -> Built {
    let iid = fx.dir.join("iid");
    let meta = fx.dir.join("meta.json");
    let (iid_s, meta_s) = (iid.display().to_string(), meta.display().to_string());
    let mut args = vec![
        "build",
        "--progress=plain",
        "--iidfile",
        &iid_s,
        "--metadata-file",
        &meta_s,
    ];
    args.extend_from_slice(extra);
    args.push(ctx);
    let out = fx.rbuild(&args);
    assert!(
        out.status.success(),
        "rbuild {args:?} failed:\n{}",
        text(&out.stderr)
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    Built {
        id: std::fs::read_to_string(&iid).unwrap(),
        digest: metadata["containerimage.digest"]
            .as_str()
            .unwrap()
            .to_owned(),
        out,
    }
}

/// The manifest `reference` names in the registry.
fn remote_manifest(reference: &str) -> Manifest {
    let client = Client::new(ClientOptions {
        docker_config: None,
        ..ClientOptions::default()
    })
    .unwrap();
    let reference = Reference::parse(reference).unwrap();
    let repository = client.repository(&reference).unwrap();
    match repository
        .fetch_manifest(reference.tag().unwrap())
        .unwrap()
        .parsed
    {
        ManifestOrIndex::Manifest(m) => m,
        ManifestOrIndex::Index(_) => panic!("{reference} is an index"),
    }
}

fn run_tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[test]
fn a_build_farm_shares_its_cache_through_the_registry() {
    let Some((a, b, registry)) = farm("regcache-farm") else {
        return;
    };
    let cache = format!("{}/app:buildcache", registry.host());
    let to = format!("type=registry,ref={cache}");
    let from = to.clone();
    let ctx_a = a.context("ctx", DOCKERFILE, FILES);
    let built_a = build(&a, &ctx_a, &["--cache-to", &to]);

    // The cache is an OCI artifact in the registry.
    let manifest = remote_manifest(&cache);
    assert_eq!(manifest.artifact_type, "application/vnd.rbuild.cache.v1");
    assert_eq!(
        manifest.config.media_type,
        "application/vnd.rbuild.cache.config.v1+json"
    );
    // COPY a, RUN, COPY b, RUN, RUN: five layers, gzip (A's store has them uncompressed).
    assert_eq!(manifest.layers.len(), 5, "{manifest:?}");
    for layer in &manifest.layers {
        assert_eq!(
            layer.media_type, "application/vnd.oci.image.layer.v1.tar+gzip",
            "{manifest:?}"
        );
    }

    // Builder B, same context, its own store: nothing runs, same image.
    let ctx_b = b.context("ctx", DOCKERFILE, FILES);
    let built_b = build(&b, &ctx_b, &["--cache-from", &from]);
    built_b.ran_no_run_step();
    assert_eq!(built_b.state("COPY a.txt"), "CACHED");
    assert_eq!(built_b.state("COPY b.txt"), "CACHED");
    assert_eq!(built_b.id, built_a.id, "{}", built_b.stderr());
    assert_eq!(built_b.digest, built_a.digest);
    // Now B's own store has the records: without --cache-from, still nothing runs.
    build(&b, &ctx_b, &[]).ran_no_run_step();

    // One file changes: the steps from its COPY on run, the ones before do not.
    std::fs::write(Path::new(&ctx_b).join("b.txt"), "changed\n").unwrap();
    let changed = build(&b, &ctx_b, &["--cache-from", &from]);
    assert_eq!(changed.state("COPY a.txt"), "CACHED");
    assert_eq!(
        changed.state("RUN cat /proc/sys/kernel/random/uuid > /r1"),
        "CACHED"
    );
    assert_eq!(changed.state("COPY b.txt"), "RAN");
    assert_eq!(
        changed.state("RUN cat /proc/sys/kernel/random/uuid > /r2"),
        "RAN"
    );
    assert_eq!(
        changed.state("RUN cat /proc/sys/kernel/random/uuid > /r3"),
        "RAN"
    );
    assert_ne!(changed.id, built_a.id);

    // Other tools can copy the cache: skopeo verifies every blob it copies.
    if tool("skopeo") {
        let docker = format!("docker://{cache}");
        let raw = run_tool(
            "skopeo",
            &["inspect", "--tls-verify=false", "--raw", &docker],
        );
        assert!(raw.contains("application/vnd.rbuild.cache.v1"), "{raw}");
        let dir = a.dir.join("copied");
        let oci = format!("oci:{}:cache", dir.display());
        run_tool("skopeo", &["copy", "--src-tls-verify=false", &docker, &oci]);
        for layer in &manifest.layers {
            assert!(dir.join("blobs/sha256").join(layer.digest.hex()).is_file());
        }
    }
}

#[test]
fn a_missing_cache_ref_is_a_warning() {
    let Some((a, _b, registry)) = farm("regcache-missing") else {
        return;
    };
    let ctx = a.context("ctx", DOCKERFILE, FILES);
    let from = format!("type=registry,ref={}/nothing:here", registry.host());
    let built = build(&a, &ctx, &["--cache-from", &from]);
    let stderr = built.stderr();
    assert!(stderr.contains("no rbuild cache there"), "{stderr}");
    assert_eq!(
        built.state("RUN cat /proc/sys/kernel/random/uuid > /r1"),
        "RAN"
    );
    // An unreachable registry is a warning too.
    let built = build(
        &a,
        &ctx,
        &["--no-cache", "--cache-from", "127.0.0.1:1/none:x"],
    );
    assert!(
        built.stderr().contains("the cache cannot be read"),
        "{}",
        built.stderr()
    );
}

#[test]
fn a_tampered_cache_layer_is_refused_and_its_step_runs() {
    let Some((a, b, registry)) = farm("regcache-tamper") else {
        return;
    };
    let cache = format!("{}/app:buildcache", registry.host());
    let to = format!("type=registry,ref={cache}");
    let ctx_a = a.context("ctx", DOCKERFILE, FILES);
    build(&a, &ctx_a, &["--cache-to", &to]);
    // Every layer blob of the cache, changed in its last byte (same size).
    for layer in remote_manifest(&cache).layers {
        let data = registry.blob_data(layer.digest.hex());
        let mut bytes = std::fs::read(&data).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&data, &bytes).unwrap();
    }
    let ctx_b = b.context("ctx", DOCKERFILE, FILES);
    let built = build(&b, &ctx_b, &["--cache-from", &to]);
    let stderr = built.stderr();
    assert!(
        stderr.contains("was refused") && stderr.contains("digest mismatch"),
        "{stderr}"
    );
    assert_eq!(built.state("COPY a.txt"), "RAN");
    assert_eq!(
        built.state("RUN cat /proc/sys/kernel/random/uuid > /r1"),
        "RAN"
    );
}

#[test]
fn a_zstd_cache_round_trips() {
    let Some((a, b, registry)) = farm("regcache-zstd") else {
        return;
    };
    let cache = format!("{}/app:zstd", registry.host());
    let to = format!("type=registry,ref={cache},mode=max,compression=zstd");
    let ctx_a = a.context("ctx", DOCKERFILE, FILES);
    let built_a = build(&a, &ctx_a, &["--cache-to", &to]);
    let manifest = remote_manifest(&cache);
    assert_eq!(manifest.layers.len(), 5);
    for layer in &manifest.layers {
        assert_eq!(
            layer.media_type, "application/vnd.oci.image.layer.v1.tar+zstd",
            "{manifest:?}"
        );
        let data = std::fs::read(registry.blob_data(layer.digest.hex())).unwrap();
        assert!(data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]), "not zstd");
    }
    let ctx_b = b.context("ctx", DOCKERFILE, FILES);
    let from = format!("type=registry,ref={cache}");
    let built_b = build(&b, &ctx_b, &["--cache-from", &from]);
    built_b.ran_no_run_step();
    // The same image: B stores the layers uncompressed, as A does.
    assert_eq!(built_b.id, built_a.id, "{}", built_b.stderr());
    assert_eq!(built_b.digest, built_a.digest);
    // A second export recompresses nothing new and pushes the same artifact.
    build(&a, &ctx_a, &["--cache-to", &to]);
    assert_eq!(remote_manifest(&cache), manifest);
}

#[test]
fn an_inline_cache_travels_in_the_pushed_image() {
    let Some((a, b, registry)) = farm("regcache-inline") else {
        return;
    };
    let image = format!("{}/app:1", registry.host());
    let ctx_a = a.context("ctx", DOCKERFILE, FILES);
    let built_a = build(&a, &ctx_a, &["--cache-to", "type=inline", "-t", &image]);
    a.ok(&["push", &image]);
    let ctx_b = b.context("ctx", DOCKERFILE, FILES);
    // The image's own name as --cache-from: its config holds the records.
    let built_b = build(
        &b,
        &ctx_b,
        &["--cache-to", "type=inline", "--cache-from", &image],
    );
    built_b.ran_no_run_step();
    assert_eq!(built_b.id, built_a.id, "{}", built_b.stderr());
    assert_eq!(built_b.digest, built_a.digest);
    // An image without an inline cache is just no cache.
    let plain = format!("{}/plain:1", registry.host());
    let built = build(&b, &ctx_b, &["-t", &plain]);
    assert_ne!(built.id, built_a.id);
    b.ok(&["push", &plain]);
    let built = build(&a, &ctx_a, &["--no-cache", "--cache-from", &plain]);
    assert!(
        built.stderr().contains("no rbuild cache there"),
        "{}",
        built.stderr()
    );
}
