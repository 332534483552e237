//! OCI runtime bundles: [`export_bundle`] writes `DIR/rootfs` and `DIR/config.json` for an
//! image in the store, and `runc run --bundle DIR ID` runs it.
//!
//! # The root filesystem
//! The image's layers are applied bottom first into `DIR/rootfs` (mode 0755): each blob is
//! streamed through [`open_layer`] (decompressed by media type, bounded to
//! [`MAX_LAYER_UNPACKED_BYTES`]) into fsutil's [`extract_tar`] with
//! [`WhiteoutMode::Apply`] (`.wh.NAME` deletes what a lower layer put there, `.wh..wh..opq`
//! empties a directory), the archive's owners and xattrs kept. Nothing is held in memory, and
//! every entry is confined beneath `rootfs` by the kernel (`openat2` `RESOLVE_IN_ROOT`). Each
//! layer's uncompressed stream is checked against the diff ID the image config lists for it.
//!
//! # `config.json`
//! [`runtime_spec`] makes the runtime spec (version [`OCI_VERSION`]) the way `docker run`
//! would run the image, without the parts that need a daemon (networking, volumes, seccomp
//! and AppArmor profiles):
//! - `process.args` = `Entrypoint` + `Cmd` (an image with neither is refused: there is
//!   nothing to run); `env` = the image's `Env`, after a default `PATH` when it sets none;
//!   `cwd` = `WorkingDir` or `/`; `user` = `USER` resolved in the root filesystem
//!   ([`crate::user`]); no terminal; `noNewPrivileges`; `RLIMIT_NOFILE` 1024.
//! - Docker's default capabilities ([`DEFAULT_CAPABILITIES`]) as the bounding, effective and
//!   permitted sets; inheritable and ambient empty.
//! - `root` = `rootfs`, writable (as a Docker container's is); `hostname` from
//!   [`BundleOptions`].
//! - Mounts: `/proc`, `/dev` (tmpfs), `/dev/pts`, `/dev/shm` (64 MiB), `/dev/mqueue`, `/sys`
//!   (read-only), `/sys/fs/cgroup` (read-only); namespaces pid, network, ipc, uts, mount and
//!   cgroup; every device denied in the cgroup (runc adds its default allow-list); and the
//!   `maskedPaths` and `readonlyPaths` of `runc spec`.
//! - Annotations: the image's labels, plus `org.opencontainers.image.stopSignal` and
//!   `org.opencontainers.image.exposedPorts` as the image spec's conversion rules give them.
//!
//! [`spec_to_json`] serialises it deterministically (sorted keys, sorted capability lists).

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capabilities, Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxDeviceCgroupBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResourcesBuilder, Mount, MountBuilder,
    PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec, SpecBuilder,
    UserBuilder,
};
use rbuild_cache::Store;
use rbuild_cache::{Digest, StoreError, VerifiedReader};
use rbuild_fsutil::{extract_tar, ExtractOptions, Root, WhiteoutMode};
use rbuild_image::images::{describe_manifest, read_config, resolve_manifest};
use rbuild_image::{open_layer, Descriptor, ImageConfig};

use crate::error::BundleError;
use crate::user::{resolve_user, ResolvedUser};

/// The runtime spec version written to `config.json`.
pub const OCI_VERSION: &str = "1.0.2";

/// The `PATH` a container gets when its image sets none (Docker's).
pub const DEFAULT_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The most bytes one layer may decompress to (as the builder allows).
pub const MAX_LAYER_UNPACKED_BYTES: u64 = 64 << 30;

/// Docker's default capability set (moby `oci/caps.DefaultCapabilities`).
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// `maskedPaths` as `runc spec` writes them.
pub const MASKED_PATHS: [&str; 10] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
];

/// `readonlyPaths` as `runc spec` writes them.
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The bundle's root filesystem directory, relative to the bundle (`root.path`).
pub const ROOTFS_DIR: &str = "rootfs";

/// The bundle's runtime spec file.
pub const CONFIG_FILE: &str = "config.json";

/// How to write a bundle.
#[derive(Clone, Debug)]
pub struct BundleOptions {
    /// The container's hostname (`hostname` in `config.json`).
    pub hostname: String,
}

impl Default for BundleOptions {
    /// Hostname `rbuild`.
    fn default() -> BundleOptions {
        BundleOptions {
            hostname: "rbuild".to_owned(),
        }
    }
}

/// What [`export_bundle`] wrote.
#[derive(Clone, Debug)]
pub struct BundleSummary {
    /// The bundle directory.
    pub dir: PathBuf,
    /// `DIR/config.json`.
    pub config_path: PathBuf,
    /// `DIR/rootfs`.
    pub rootfs: PathBuf,
    /// How many layers were applied.
    pub layers: usize,
    /// Tar entries read, over all layers.
    pub entries: u64,
    /// Payload bytes written, over all layers.
    pub bytes: u64,
    /// The user the process runs as.
    pub user: ResolvedUser,
    /// The runtime spec written to `config.json`.
    pub spec: Spec,
}

/// Writes an OCI runtime bundle for the image whose manifest (or index: the host platform's
/// manifest is taken) is `manifest` into `dir`, which must be empty or absent (it is created,
/// parents too). On failure, what was written is removed again (and `dir` too if this call
/// created it). See the [module docs](self).
///
/// Run it as root: the layers' owners and device nodes are applied as they are. The caller
/// holds whatever store lock keeps the image's blobs from being pruned meanwhile.
pub fn export_bundle(
    store: &Store,
    manifest: &Digest,
    dir: &Path,
    opts: &BundleOptions,
) -> Result<BundleSummary, BundleError> {
    let (desc, _) = describe_manifest(store, manifest)?;
    let (_, resolved) = resolve_manifest(store, &desc)?;
    let config = read_config(store, &resolved.config.digest)?;
    let unsupported = |reason: String| BundleError::UnsupportedImage {
        manifest: manifest.clone(),
        reason,
    };
    if !config.os.is_empty() && config.os != "linux" {
        return Err(unsupported(format!(
            "it is a {:?} image; only linux images run",
            config.os
        )));
    }
    if resolved.layers.len() != config.rootfs.diff_ids.len() {
        return Err(unsupported(format!(
            "the manifest lists {} layers but the config {} diff IDs",
            resolved.layers.len(),
            config.rootfs.diff_ids.len()
        )));
    }

    let created = prepare_dir(dir)?;
    let result = write_bundle(store, &resolved.layers, &config, dir, opts);
    if result.is_err() {
        clean_up(dir, created);
    }
    result
}

/// Checks that `dir` is an empty directory, or creates it; true if it was created.
fn prepare_dir(dir: &Path) -> Result<bool, BundleError> {
    match fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => Err(BundleError::NotADirectory {
            dir: dir.to_path_buf(),
        }),
        Ok(_) => {
            let mut entries = fs::read_dir(dir)
                .map_err(|e| BundleError::io(format!("reading {}", dir.display()), e))?;
            if entries.next().is_some() {
                return Err(BundleError::NotEmpty {
                    dir: dir.to_path_buf(),
                });
            }
            Ok(false)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::create_dir_all(parent)
                    .map_err(|e| BundleError::io(format!("creating {}", parent.display()), e))?;
            }
            fs::create_dir(dir)
                .map_err(|e| BundleError::io(format!("creating {}", dir.display()), e))?;
            Ok(true)
        }
        Err(e) => Err(BundleError::io(format!("checking {}", dir.display()), e)),
    }
}

/// Removes what a failed export wrote (best effort: the original error is what matters).
fn clean_up(dir: &Path, created: bool) {
    if let Ok(root) = Root::open(dir) {
        let _ = root.remove_all(ROOTFS_DIR);
        let _ = root.remove_all(CONFIG_FILE);
    }
    if created {
        let _ = fs::remove_dir(dir);
    }
}

fn write_bundle(
    store: &Store,
    layers: &[Descriptor],
    config: &ImageConfig,
    dir: &Path,
    opts: &BundleOptions,
) -> Result<BundleSummary, BundleError> {
    let rootfs = dir.join(ROOTFS_DIR);
    fs::DirBuilder::new()
        .mode(0o755)
        .create(&rootfs)
        .and_then(|()| fs::set_permissions(&rootfs, fs::Permissions::from_mode(0o755)))
        .map_err(|e| BundleError::io(format!("creating {}", rootfs.display()), e))?;
    let root = Root::open(&rootfs).map_err(|e| BundleError::fs("opening the rootfs", e))?;

    let mut entries = 0;
    let mut bytes = 0;
    for (layer, diff_id) in layers.iter().zip(&config.rootfs.diff_ids) {
        let (n, b) = apply_layer(store, &root, layer, diff_id)?;
        entries += n;
        bytes += b;
    }

    let user = resolve_user(&root, &config.config.user)?;
    let spec = runtime_spec(config, &user, opts)?;
    let json = spec_to_json(&spec)?;
    let config_path = dir.join(CONFIG_FILE);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&config_path)
        .map_err(|e| BundleError::io(format!("creating {}", config_path.display()), e))?;
    file.write_all(&json)
        .and_then(|()| file.sync_all())
        .map_err(|e| BundleError::io(format!("writing {}", config_path.display()), e))?;

    Ok(BundleSummary {
        dir: dir.to_path_buf(),
        config_path,
        rootfs,
        layers: layers.len(),
        entries,
        bytes,
        user,
        spec,
    })
}

/// Streams one layer blob into `root`, whiteouts applied, checking its diff ID. Returns
/// (entries, payload bytes).
fn apply_layer(
    store: &Store,
    root: &Root,
    layer: &Descriptor,
    diff_id: &Digest,
) -> Result<(u64, u64), BundleError> {
    let blob = store.blobs().open(&layer.digest)?;
    let tar = open_layer(blob, &layer.media_type, Some(MAX_LAYER_UNPACKED_BYTES))?;
    let mut verified = VerifiedReader::new(tar, diff_id.clone());
    let opts = ExtractOptions {
        whiteouts: WhiteoutMode::Apply,
        same_owner: true,
        xattrs: true,
        ..ExtractOptions::default()
    };
    let stats = extract_tar(&mut verified, root, &opts)
        .map_err(|e| BundleError::fs(format!("applying layer {}", layer.digest), e))?;
    // Read what the tar reader left (trailing zero blocks) so the whole stream is verified.
    let mismatch = || BundleError::DiffIdMismatch {
        layer: layer.digest.clone(),
        diff_id: diff_id.clone(),
    };
    match io::copy(&mut verified, &mut io::sink()) {
        Ok(_) => {}
        Err(e) if is_digest_mismatch(&e) => return Err(mismatch()),
        Err(e) => {
            return Err(BundleError::io(
                format!("reading layer {}", layer.digest),
                e,
            ))
        }
    }
    if !verified.is_verified() {
        return Err(mismatch());
    }
    Ok((stats.entries, stats.bytes))
}

fn is_digest_mismatch(e: &io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<StoreError>())
        .is_some_and(|s| matches!(s, StoreError::DigestMismatch { .. }))
}

/// The runtime spec for running `image` as `user` (see the [module docs](self)).
pub fn runtime_spec(
    image: &ImageConfig,
    user: &ResolvedUser,
    opts: &BundleOptions,
) -> Result<Spec, BundleError> {
    let c = &image.config;
    let args: Vec<String> = c.entrypoint.iter().chain(&c.cmd).cloned().collect();
    if args.is_empty() {
        return Err(BundleError::NoCommand);
    }
    let mut env = Vec::with_capacity(c.env.len() + 1);
    if !c.env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(DEFAULT_PATH_ENV.to_owned());
    }
    env.extend(c.env.iter().cloned());
    let cwd = if c.working_dir.is_empty() {
        "/"
    } else {
        c.working_dir.as_str()
    };
    if !cwd.starts_with('/') {
        return Err(BundleError::RelativeWorkingDir(cwd.to_owned()));
    }

    let mut process_user = UserBuilder::default().uid(user.uid).gid(user.gid);
    if !user.additional_gids.is_empty() {
        process_user = process_user.additional_gids(user.additional_gids.clone());
    }
    let caps: Capabilities = DEFAULT_CAPABILITIES.into_iter().collect();
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(process_user.build()?)
        .args(args)
        .env(env)
        .cwd(cwd)
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(caps.clone())
                .effective(caps.clone())
                .permitted(caps)
                .inheritable(Capabilities::new())
                .ambient(Capabilities::new())
                .build()?,
        )
        .rlimits(vec![PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .hard(1024u64)
            .soft(1024u64)
            .build()?])
        .no_new_privileges(true)
        .build()?;

    let namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Cgroup,
    ]
    .into_iter()
    .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
    .collect::<Result<Vec<_>, _>>()?;
    let linux = LinuxBuilder::default()
        .resources(
            LinuxResourcesBuilder::default()
                .devices(vec![LinuxDeviceCgroupBuilder::default()
                    .allow(false)
                    .access("rwm")
                    .build()?])
                .build()?,
        )
        .namespaces(namespaces)
        .masked_paths(MASKED_PATHS.map(String::from).to_vec())
        .readonly_paths(READONLY_PATHS.map(String::from).to_vec())
        .build()?;

    Ok(SpecBuilder::default()
        .version(OCI_VERSION)
        .root(
            RootBuilder::default()
                .path(ROOTFS_DIR)
                .readonly(false)
                .build()?,
        )
        .process(process)
        .hostname(opts.hostname.clone())
        .mounts(default_mounts()?)
        .annotations(annotations(image))
        .linux(linux)
        .build()?)
}

/// The mounts every container gets (Docker's and runc's defaults).
fn default_mounts() -> Result<Vec<Mount>, BundleError> {
    let table: [(&str, &str, &str, &[&str]); 7] = [
        ("/proc", "proc", "proc", &[]),
        (
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        (
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        (
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        (
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        (
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        (
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        ),
    ];
    table
        .into_iter()
        .map(|(destination, typ, source, options)| {
            let mut mount = MountBuilder::default()
                .destination(destination)
                .typ(typ)
                .source(source);
            if !options.is_empty() {
                mount = mount.options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>());
            }
            Ok(mount.build()?)
        })
        .collect()
}

/// The image's labels, and the annotations the image spec's conversion rules derive from
/// `StopSignal` and `ExposedPorts`.
fn annotations(image: &ImageConfig) -> HashMap<String, String> {
    let c = &image.config;
    let mut out: HashMap<String, String> = c.labels.clone().into_iter().collect();
    if !c.stop_signal.is_empty() {
        out.insert(
            "org.opencontainers.image.stopSignal".to_owned(),
            c.stop_signal.clone(),
        );
    }
    if !c.exposed_ports.is_empty() {
        let ports: Vec<&str> = c.exposed_ports.keys().map(String::as_str).collect();
        out.insert(
            "org.opencontainers.image.exposedPorts".to_owned(),
            ports.join(","),
        );
    }
    out
}

/// `config.json`'s bytes: pretty JSON with sorted keys and sorted capability lists (the
/// spec types hold them in hash sets), so the same image always gives the same file.
pub fn spec_to_json(spec: &Spec) -> Result<Vec<u8>, BundleError> {
    let mut value = serde_json::to_value(spec)?;
    if let Some(caps) = value
        .pointer_mut("/process/capabilities")
        .and_then(|c| c.as_object_mut())
    {
        for list in caps.values_mut() {
            if let Some(items) = list.as_array_mut() {
                items.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            }
        }
    }
    let mut bytes = serde_json::to_vec_pretty(&value)?;
    bytes.push(b'\n');
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn image() -> ImageConfig {
        let mut image = ImageConfig::new("amd64", "linux");
        image.config.env = vec!["GREETING=hi".to_owned()];
        image.config.working_dir = "/w".to_owned();
        image.config.entrypoint = vec!["/bin/entry".to_owned(), "--flag".to_owned()];
        image.config.cmd = vec![
            "sh".to_owned(),
            "-c".to_owned(),
            "echo $GREETING".to_owned(),
        ];
        image
            .config
            .labels
            .insert("org.example.team".to_owned(), "infra".to_owned());
        image.config.stop_signal = "SIGQUIT".to_owned();
        image
    }

    fn json_of(spec: &Spec) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
        Ok(serde_json::from_slice(&spec_to_json(spec)?)?)
    }

    #[test]
    fn spec_runs_the_image_as_docker_would() -> TestResult {
        let user = ResolvedUser {
            uid: 33,
            gid: 50,
            additional_gids: vec![51],
        };
        let spec = runtime_spec(&image(), &user, &BundleOptions::default())?;
        let v = json_of(&spec)?;
        assert_eq!(v["ociVersion"], "1.0.2");
        assert_eq!(
            v["process"]["args"],
            serde_json::json!(["/bin/entry", "--flag", "sh", "-c", "echo $GREETING"])
        );
        assert_eq!(
            v["process"]["env"],
            serde_json::json!([DEFAULT_PATH_ENV, "GREETING=hi"])
        );
        assert_eq!(v["process"]["cwd"], "/w");
        assert_eq!(v["process"]["terminal"], false);
        assert_eq!(
            v["process"]["user"],
            serde_json::json!({"uid": 33, "gid": 50, "additionalGids": [51]})
        );
        assert_eq!(v["process"]["noNewPrivileges"], true);
        assert_eq!(
            v["process"]["rlimits"],
            serde_json::json!([{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}])
        );
        let mut docker_caps: Vec<String> = [
            "CHOWN",
            "DAC_OVERRIDE",
            "FSETID",
            "FOWNER",
            "MKNOD",
            "NET_RAW",
            "SETGID",
            "SETUID",
            "SETFCAP",
            "SETPCAP",
            "NET_BIND_SERVICE",
            "SYS_CHROOT",
            "KILL",
            "AUDIT_WRITE",
        ]
        .iter()
        .map(|c| format!("CAP_{c}"))
        .collect();
        docker_caps.sort();
        for set in ["bounding", "effective", "permitted"] {
            assert_eq!(
                v["process"]["capabilities"][set],
                serde_json::json!(docker_caps),
                "{set}"
            );
        }
        for set in ["inheritable", "ambient"] {
            assert_eq!(
                v["process"]["capabilities"][set],
                serde_json::json!([]),
                "{set}"
            );
        }
        assert_eq!(
            v["root"],
            serde_json::json!({"path": "rootfs", "readonly": false})
        );
        assert_eq!(v["hostname"], "rbuild");
        let mounts: Vec<&str> = v["mounts"]
            .as_array()
            .map(|m| m.iter().filter_map(|m| m["destination"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(
            mounts,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/dev/mqueue",
                "/sys",
                "/sys/fs/cgroup"
            ]
        );
        assert_eq!(
            v["mounts"][5],
            serde_json::json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"]})
        );
        assert_eq!(v["mounts"][6]["options"][4], "ro");
        assert_eq!(v["mounts"][3]["options"][4], "size=65536k");
        let namespaces: Vec<&str> = v["linux"]["namespaces"]
            .as_array()
            .map(|n| n.iter().filter_map(|n| n["type"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(
            namespaces,
            ["pid", "network", "ipc", "uts", "mount", "cgroup"]
        );
        assert_eq!(v["linux"]["maskedPaths"], serde_json::json!(MASKED_PATHS));
        assert_eq!(
            v["linux"]["readonlyPaths"],
            serde_json::json!(READONLY_PATHS)
        );
        assert_eq!(
            v["linux"]["resources"]["devices"],
            serde_json::json!([{"allow": false, "access": "rwm"}])
        );
        assert_eq!(
            v["annotations"],
            serde_json::json!({"org.example.team": "infra",
                "org.opencontainers.image.stopSignal": "SIGQUIT"})
        );
        // The file round-trips through the spec types, and is the same every time.
        let parsed: Spec = serde_json::from_slice(&spec_to_json(&spec)?)?;
        assert_eq!(parsed, spec);
        let again = runtime_spec(&image(), &user, &BundleOptions::default())?;
        assert_eq!(spec_to_json(&again)?, spec_to_json(&spec)?);
        Ok(())
    }

    #[test]
    fn defaults_and_refusals() -> TestResult {
        let mut bare = ImageConfig::new("amd64", "linux");
        bare.config.cmd = vec!["/bin/sh".to_owned()];
        bare.config.env = vec!["PATH=/opt/bin".to_owned()];
        let v = json_of(&runtime_spec(
            &bare,
            &ResolvedUser::default(),
            &BundleOptions {
                hostname: "box".to_owned(),
            },
        )?)?;
        assert_eq!(v["process"]["args"], serde_json::json!(["/bin/sh"]));
        // The image's own PATH is kept, no default added.
        assert_eq!(v["process"]["env"], serde_json::json!(["PATH=/opt/bin"]));
        assert_eq!(v["process"]["cwd"], "/");
        assert_eq!(
            v["process"]["user"],
            serde_json::json!({"uid": 0, "gid": 0})
        );
        assert_eq!(v["hostname"], "box");
        assert_eq!(v["annotations"], serde_json::json!({}));

        bare.config.cmd.clear();
        assert!(matches!(
            runtime_spec(&bare, &ResolvedUser::default(), &BundleOptions::default()),
            Err(BundleError::NoCommand)
        ));
        bare.config.cmd = vec!["true".to_owned()];
        bare.config.working_dir = "w".to_owned();
        assert!(matches!(
            runtime_spec(&bare, &ResolvedUser::default(), &BundleOptions::default()),
            Err(BundleError::RelativeWorkingDir(_))
        ));
        Ok(())
    }
}
