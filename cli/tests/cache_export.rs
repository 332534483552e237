//! `--cache-to type=local` and `--cache-from type=local` end to end with the real `rbuild`
//! binary: a build in store A exports its cache (an OCI layout, checked blob by blob here and
//! copied by skopeo, which verifies every digest); the same build in a fresh store B that
//! imports it runs no COPY or RUN step and gets A's RUN output; a context change runs exactly
//! the affected steps; `mode=min` exports the final image's stages only; a corrupt blob in the
//! cache is refused (digest mismatch) and its step runs instead.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use sha2::{Digest as _, Sha256};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "rbuild failed:\n{}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A real tool's check; a missing tool skips outside CI and fails under CI=true.
fn tool(name: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{name} is missing (scripts/install-test-deps.sh installs it)"
        );
        eprintln!("SKIPPED: {name} is missing");
    }
    found
}

/// A temp dir holding stores (`store-NAME`), contexts and caches, and the busybox base image
/// as an archive every store loads (so all of them have the same base, as machines pulling the
/// same image do); removed on drop.
struct Fixture {
    dir: PathBuf,
    busybox: PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Fixture {
    /// `None` (the test skips) without root or busybox-static, except under CI=true.
    fn new(name: &str) -> Option<Fixture> {
        if !rustix::process::geteuid().is_root() || !Path::new("/bin/busybox").exists() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "these tests need root and busybox-static under CI=true"
            );
            eprintln!("SKIPPED: needs root and /bin/busybox");
            return None;
        }
        let dir =
            std::env::temp_dir().join(format!("rbuild-cache-export-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let fx = Fixture {
            busybox: dir.join("busybox.tar"),
            dir,
        };
        let rootfs = fx.dir.join("busybox");
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/base/make-busybox-rootfs.sh");
        assert!(Command::new(script)
            .arg(&rootfs)
            .status()
            .is_ok_and(|s| s.success()));
        let dockerfile = fx.dir.join("busybox.Dockerfile");
        std::fs::write(&dockerfile, "FROM scratch\nCOPY . /\n").unwrap_or_else(|e| panic!("{e}"));
        let base = fx.store("base");
        ok(&fx.rbuild(
            &base,
            &[
                "build",
                "-q",
                "-t",
                "busybox",
                "-f",
                &dockerfile.display().to_string(),
                &rootfs.display().to_string(),
            ],
        ));
        ok(&fx.rbuild(
            &base,
            &["save", "-o", &fx.busybox.display().to_string(), "busybox"],
        ));
        Some(fx)
    }

    /// A fresh store `name` holding `busybox:latest`.
    fn store(&self, name: &str) -> PathBuf {
        let root = self.dir.join(format!("store-{name}"));
        if self.busybox.exists() {
            ok(&self.rbuild(&root, &["load", "-i", &self.busybox.display().to_string()]));
        }
        root
    }

    fn rbuild(&self, root: &Path, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_rbuild"))
            .arg("--root")
            .arg(root)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running rbuild: {e}"))
    }

    /// A context dir `name` with a Dockerfile and files.
    fn context(&self, name: &str, dockerfile: &str, files: &[(&str, &str)]) -> PathBuf {
        let ctx = self.dir.join(name);
        std::fs::create_dir_all(&ctx).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap_or_else(|e| panic!("{e}"));
        for (path, content) in files {
            std::fs::write(ctx.join(path), content).unwrap_or_else(|e| panic!("{e}"));
        }
        ctx
    }

    /// Builds `ctx` in store `root` with `--progress=plain` and `extra` flags into
    /// `DIR/out-NAME` (type=local); the build must succeed. Returns its stderr and the rootfs.
    fn build(&self, root: &Path, name: &str, ctx: &Path, extra: &[&str]) -> (String, PathBuf) {
        let dest = self.dir.join(format!("out-{name}"));
        let output = format!("type=local,dest={}", dest.display());
        let mut args = vec!["build", "--progress=plain", "-o", &output];
        args.extend_from_slice(extra);
        let ctx = ctx.display().to_string();
        args.push(&ctx);
        let out = self.rbuild(root, &args);
        let err = text(&out.stderr);
        assert!(out.status.success(), "build {name} failed:\n{err}");
        (err, dest)
    }
}

/// The plain-progress state of each step that finished (`CACHED` or `RAN`), by its text.
fn step_states(stderr: &str) -> Vec<(String, &'static str)> {
    let mut names: BTreeMap<String, String> = BTreeMap::new();
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

/// The states of the COPY and RUN steps, in order.
fn file_steps(stderr: &str) -> Vec<(String, &'static str)> {
    step_states(stderr)
        .into_iter()
        .filter(|(t, _)| t.starts_with("COPY") || t.starts_with("RUN"))
        .collect()
}

fn state_of(states: &[(String, &'static str)], prefix: &str) -> &'static str {
    states
        .iter()
        .find(|(t, _)| t.starts_with(prefix))
        .map(|(_, s)| *s)
        .unwrap_or_else(|| panic!("no step {prefix:?} in {states:?}"))
}

fn json_file(path: &Path) -> serde_json::Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn str_of<'a>(v: &'a serde_json::Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("no string {field:?} in {v}"))
}

/// Reads blob `desc` of the layout `dir`, checking its size and sha256 against the descriptor.
fn verified_blob(dir: &Path, desc: &serde_json::Value) -> Vec<u8> {
    let digest = str_of(desc, "digest");
    let hex = digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("not a sha256 digest: {digest}"));
    let bytes = std::fs::read(dir.join("blobs/sha256").join(hex))
        .unwrap_or_else(|e| panic!("blob {digest}: {e}"));
    assert_eq!(
        Some(bytes.len() as u64),
        desc["size"].as_u64(),
        "size of {digest}"
    );
    assert_eq!(
        format!("{:x}", Sha256::digest(&bytes)),
        hex,
        "content of {digest}"
    );
    bytes
}

/// Checks that `dir` is an OCI image layout holding one rbuild cache manifest whose blobs are
/// all present and intact; returns the cache config's records.
fn check_layout(dir: &Path) -> Vec<serde_json::Value> {
    assert_eq!(
        json_file(&dir.join("oci-layout")),
        serde_json::json!({"imageLayoutVersion": "1.0.0"})
    );
    let index = json_file(&dir.join("index.json"));
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(
        str_of(&index, "mediaType"),
        "application/vnd.oci.image.index.v1+json"
    );
    let entries = index["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("{index}"));
    assert_eq!(entries.len(), 1, "{index}");
    let entry = &entries[0];
    assert_eq!(
        str_of(entry, "mediaType"),
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        str_of(entry, "artifactType"),
        "application/vnd.rbuild.cache.v1"
    );
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        "rbuild-cache"
    );
    let manifest: serde_json::Value = serde_json::from_slice(&verified_blob(dir, entry))
        .unwrap_or_else(|e| panic!("manifest: {e}"));
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(
        str_of(&manifest, "artifactType"),
        "application/vnd.rbuild.cache.v1"
    );
    let config_desc = &manifest["config"];
    assert_eq!(
        str_of(config_desc, "mediaType"),
        "application/vnd.rbuild.cache.config.v1+json"
    );
    let config: serde_json::Value = serde_json::from_slice(&verified_blob(dir, config_desc))
        .unwrap_or_else(|e| panic!("config: {e}"));
    let layers: BTreeSet<String> = manifest["layers"]
        .as_array()
        .unwrap_or_else(|| panic!("{manifest}"))
        .iter()
        .map(|l| {
            // The store keeps built layers uncompressed; the export has them gzip.
            assert_eq!(
                str_of(l, "mediaType"),
                "application/vnd.oci.image.layer.v1.tar+gzip",
                "{l}"
            );
            verified_blob(dir, l);
            str_of(l, "digest").to_string()
        })
        .collect();
    let records = config["records"]
        .as_array()
        .unwrap_or_else(|| panic!("{config}"))
        .clone();
    for r in &records {
        assert!(str_of(r, "key").starts_with("sha256:"), "{r}");
        let layer = &r["layer"];
        if layer.is_null() {
            continue;
        }
        assert!(
            layers.contains(str_of(&layer["descriptor"], "digest")),
            "a record names a layer the manifest does not list: {r}"
        );
        for field in ["diffId", "chainId"] {
            assert!(str_of(layer, field).starts_with("sha256:"), "{r}");
        }
        assert!(
            layer["uncompressedSize"].as_u64().is_some_and(|n| n > 0),
            "{r}"
        );
    }
    records
}

/// A third-party reader of the layout: skopeo resolves the ref name through `index.json` and
/// copies the manifest, config and every layer, verifying each digest. (`oci-image-tool
/// validate` 1.0.0-rc1 cannot check it: its `imageLayout` type is unimplemented, and its `image`
/// type rejects any config media type but the image config's, so it refuses every OCI artifact.)
fn skopeo_reads(dir: &Path, scratch: &Path) -> Result<(), String> {
    let out = Command::new("skopeo")
        .arg("copy")
        .arg(format!("oci:{}:rbuild-cache", dir.display()))
        .arg(format!("dir:{}", scratch.display()))
        .output()
        .map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(scratch);
    if out.status.success() {
        Ok(())
    } else {
        Err(text(&out.stderr))
    }
}

/// `--iidfile` and `--metadata-file` flags for the build `name` (see [`image_of`]).
fn ids(fx: &Fixture, name: &str) -> [String; 4] {
    [
        "--iidfile".to_string(),
        fx.dir.join(format!("{name}.iid")).display().to_string(),
        "--metadata-file".to_string(),
        fx.dir.join(format!("{name}.json")).display().to_string(),
    ]
}

/// The image ID and manifest digest of the build `name` made with [`ids`].
fn image_of(fx: &Fixture, name: &str) -> (String, String) {
    let meta = json_file(&fx.dir.join(format!("{name}.json")));
    (
        read(&fx.dir.join(format!("{name}.iid"))),
        str_of(&meta, "containerimage.digest").to_string(),
    )
}

const DOCKERFILE: &str = "FROM busybox\n\
COPY a.txt /app/a.txt\n\
RUN cat /proc/sys/kernel/random/uuid > /app/uuid\n\
COPY b.txt /app/b.txt\n\
RUN cat /app/a.txt /app/b.txt > /app/ab\n";

#[test]
fn a_fresh_store_importing_the_cache_runs_nothing() {
    let Some(fx) = Fixture::new("import") else {
        return;
    };
    let ctx = fx.context("ctx", DOCKERFILE, &[("a.txt", "a\n"), ("b.txt", "b\n")]);
    let cache = fx.dir.join("cache");
    let cache_to = format!("type=local,dest={},mode=max", cache.display());
    let cache_from = format!("type=local,src={}", cache.display());

    // Store A builds and exports.
    let a = fx.store("a");
    let ids_a = ids(&fx, "a");
    let mut extra = vec!["--cache-to", &cache_to];
    extra.extend(ids_a.iter().map(String::as_str));
    let (err, out_a) = fx.build(&a, "a", &ctx, &extra);
    let states = file_steps(&err);
    assert_eq!(states.len(), 4, "{err}");
    assert!(states.iter().all(|(_, s)| *s == "RAN"), "{err}");
    let uuid = read(&out_a.join("app/uuid"));
    assert_eq!(uuid.trim().len(), 36, "{uuid:?}");
    let records = check_layout(&cache);
    assert_eq!(records.len(), 4, "{records:?}");
    if tool("skopeo") {
        skopeo_reads(&cache, &fx.dir.join("skopeo")).unwrap_or_else(|e| panic!("skopeo: {e}"));
    }

    // A fresh store B with the same base: every COPY and RUN comes from the cache.
    let b = fx.store("b");
    let ids_b = ids(&fx, "b");
    let mut extra = vec!["--cache-from", &cache_from];
    extra.extend(ids_b.iter().map(String::as_str));
    let (err, out_b) = fx.build(&b, "b", &ctx, &extra);
    let states = file_steps(&err);
    assert_eq!(states.len(), 4, "{err}");
    assert!(states.iter().all(|(_, s)| *s == "CACHED"), "{err}");
    assert!(!err.contains("WARNING"), "{err}");
    // B has A's image: the same image ID and manifest (layers stored uncompressed in both).
    assert_eq!(image_of(&fx, "b"), image_of(&fx, "a"));
    assert_eq!(read(&out_b.join("app/uuid")), uuid);
    assert_eq!(read(&out_b.join("app/ab")), "a\nb\n");

    // The import went into B's own store: without --cache-from it is still all cached.
    let (err, out_b2) = fx.build(&b, "b2", &ctx, &[]);
    assert!(
        file_steps(&err).iter().all(|(_, s)| *s == "CACHED"),
        "{err}"
    );
    assert_eq!(read(&out_b2.join("app/uuid")), uuid);

    // A change to b.txt in a fresh store C: the steps before it come from the cache, the
    // COPY of b.txt and the RUN after it run.
    std::fs::write(ctx.join("b.txt"), "b2\n").unwrap_or_else(|e| panic!("{e}"));
    let c = fx.store("c");
    let (err, out_c) = fx.build(
        &c,
        "c",
        &ctx,
        &["--cache-from", &cache_from, "--cache-to", &cache_to],
    );
    let states = file_steps(&err);
    assert_eq!(state_of(&states, "COPY a.txt"), "CACHED", "{err}");
    assert_eq!(state_of(&states, "RUN cat /proc"), "CACHED", "{err}");
    assert_eq!(state_of(&states, "COPY b.txt"), "RAN", "{err}");
    assert_eq!(state_of(&states, "RUN cat /app/a.txt"), "RAN", "{err}");
    assert_eq!(read(&out_c.join("app/uuid")), uuid);
    assert_eq!(read(&out_c.join("app/ab")), "a\nb2\n");

    // C's export merged into the cache: the old records stay, the two new ones are added, so
    // both versions of b.txt now build from it.
    let records = check_layout(&cache);
    assert_eq!(records.len(), 6, "{records:?}");
    for (i, content) in ["b\n", "b2\n"].iter().enumerate() {
        std::fs::write(ctx.join("b.txt"), content).unwrap_or_else(|e| panic!("{e}"));
        let d = fx.store(&format!("d{i}"));
        let (err, out_d) = fx.build(&d, &format!("d{i}"), &ctx, &["--cache-from", &cache_from]);
        assert!(
            file_steps(&err).iter().all(|(_, s)| *s == "CACHED"),
            "{err}"
        );
        assert_eq!(read(&out_d.join("app/uuid")), uuid);
    }
}

#[test]
fn mode_min_exports_only_the_final_stages() {
    let Some(fx) = Fixture::new("min") else {
        return;
    };
    let ctx = fx.context(
        "ctx",
        "FROM busybox AS gen\n\
         RUN echo generated > /g\n\
         FROM busybox AS base\n\
         COPY a.txt /a\n\
         FROM base\n\
         COPY --from=gen /g /g\n\
         RUN cat /a /g > /out\n",
        &[("a.txt", "a\n")],
    );
    let a = fx.store("a");
    let (min, max) = (fx.dir.join("cache-min"), fx.dir.join("cache-max"));
    let (err, _) = fx.build(
        &a,
        "min",
        &ctx,
        &[
            "--cache-to",
            &format!("type=local,dest={},mode=min", min.display()),
        ],
    );
    assert_eq!(file_steps(&err).len(), 4, "{err}");
    // The second build finds everything in the store; cached steps are exported all the same.
    let (err, _) = fx.build(
        &a,
        "max",
        &ctx,
        &[
            "--cache-to",
            &format!("type=local,dest={},mode=max", max.display()),
        ],
    );
    assert!(
        file_steps(&err).iter().all(|(_, s)| *s == "CACHED"),
        "{err}"
    );
    let keys = |dir: &Path| -> BTreeSet<String> {
        check_layout(dir)
            .iter()
            .map(|r| str_of(r, "key").to_string())
            .collect()
    };
    let (min_keys, max_keys) = (keys(&min), keys(&max));
    // min: the final stage and the stage it is FROM (COPY a.txt, COPY --from, RUN cat); max:
    // also the `gen` stage's RUN.
    assert_eq!(min_keys.len(), 3, "{min_keys:?}");
    assert_eq!(max_keys.len(), 4, "{max_keys:?}");
    assert!(min_keys.is_subset(&max_keys));

    // Importing the min cache, only the gen stage's RUN runs.
    let b = fx.store("b");
    let from = format!("type=local,src={}", min.display());
    let (err, out) = fx.build(&b, "b", &ctx, &["--cache-from", &from]);
    let states = file_steps(&err);
    assert_eq!(state_of(&states, "RUN echo generated"), "RAN", "{err}");
    assert_eq!(state_of(&states, "COPY a.txt"), "CACHED", "{err}");
    assert_eq!(state_of(&states, "COPY --from=gen"), "CACHED", "{err}");
    assert_eq!(state_of(&states, "RUN cat /a /g"), "CACHED", "{err}");
    assert_eq!(read(&out.join("out")), "a\ngenerated\n");
}

#[test]
fn a_corrupt_blob_is_refused_and_its_step_runs() {
    let Some(fx) = Fixture::new("corrupt") else {
        return;
    };
    let ctx = fx.context("ctx", DOCKERFILE, &[("a.txt", "a\n"), ("b.txt", "b\n")]);
    let cache = fx.dir.join("cache");
    let a = fx.store("a");
    let (_, out_a) = fx.build(
        &a,
        "a",
        &ctx,
        &[
            "--cache-to",
            &format!("type=local,dest={},mode=max", cache.display()),
        ],
    );
    let uuid = read(&out_a.join("app/uuid"));

    // Order the records' layers by their chain (each names its parent's chain ID): the second
    // is the uuid RUN's layer. Damage one byte of its blob, keeping the size.
    let records = check_layout(&cache);
    let layers: Vec<&serde_json::Value> = records.iter().map(|r| &r["layer"]).collect();
    let chains: BTreeSet<&str> = layers.iter().map(|l| str_of(l, "chainId")).collect();
    let mut chain = vec![*layers
        .iter()
        .find(|l| !chains.contains(str_of(l, "parentChainId")))
        .unwrap_or_else(|| panic!("no bottom record in {records:?}"))];
    while let Some(next) = layers
        .iter()
        .find(|l| l["parentChainId"].as_str() == chain.last().map(|c| str_of(c, "chainId")))
    {
        chain.push(next);
    }
    assert_eq!(chain.len(), 4, "{records:?}");
    let digest = str_of(&chain[1]["descriptor"], "digest");
    let blob = cache
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&blob).unwrap_or_else(|e| panic!("{e}"));
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&blob, &bytes).unwrap_or_else(|e| panic!("{e}"));

    // The build succeeds: the COPY before comes from the cache, the RUN whose blob is damaged
    // runs (a new uuid), and so does what sits on its layer.
    let b = fx.store("b");
    let from = format!("type=local,src={}", cache.display());
    let (err, out_b) = fx.build(&b, "b", &ctx, &["--cache-from", &from]);
    let states = file_steps(&err);
    assert_eq!(state_of(&states, "COPY a.txt"), "CACHED", "{err}");
    assert_eq!(state_of(&states, "RUN cat /proc"), "RAN", "{err}");
    assert_eq!(state_of(&states, "COPY b.txt"), "RAN", "{err}");
    assert_eq!(state_of(&states, "RUN cat /app/a.txt"), "RAN", "{err}");
    assert!(
        err.lines().any(|l| l.starts_with("WARNING:")
            && l.contains("digest mismatch")
            && l.contains(digest)),
        "{err}"
    );
    let uuid_b = read(&out_b.join("app/uuid"));
    assert_eq!(uuid_b.trim().len(), 36);
    assert_ne!(uuid_b, uuid);
    assert_eq!(read(&out_b.join("app/ab")), "a\nb\n");
}
