//! The registry client against a real distribution registry (`docker-registry` on loopback):
//! push and pull round trips (OCI and Docker media types, gzip and zstd), existing and mounted
//! blobs, multi-platform indexes and platform selection, basic auth, TLS with a test CA, a
//! tampered blob, a download resumed after the registry restarted, and a server that never
//! answers.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rbuild_cache::{Digest, Store};
use rbuild_image::config::ImageConfig;
use rbuild_image::images::{describe_manifest, image_from_dir_with};
use rbuild_image::manifest::{media_types, Compression};
use rbuild_image::reference::Reference;
use rbuild_image::test_support::write_sample_tree;
use rbuild_image::{Index, LayerOptions, ManifestFormat, Platform};
use rbuild_registry::test_registry::{Mode, TestRegistry};
use rbuild_registry::{
    no_progress, Client, ClientOptions, Credentials, DockerConfig, Event, PlatformChoice,
    PullOptions, RegistryError, RetryPolicy, Timeouts,
};

/// Says the test is skipped because of `why`; under `CI=true` that is a failure instead.
fn skip(why: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{why}; under CI=true this is a failure (scripts/install-test-deps.sh installs what the tests need)"
    );
    eprintln!("SKIPPED: {why}");
}

fn start(mode: Mode) -> Option<TestRegistry> {
    if let Some(missing) = rbuild_registry::test_registry::missing_tools(&mode) {
        skip(&missing);
        return None;
    }
    Some(TestRegistry::start(mode).unwrap())
}

fn anonymous() -> ClientOptions {
    ClientOptions {
        docker_config: None,
        ..ClientOptions::default()
    }
}

fn client(options: ClientOptions) -> Client {
    Client::new(options).unwrap()
}

fn reference(text: &str) -> Reference {
    Reference::parse(text).unwrap()
}

fn store_in(dir: &Path, name: &str) -> Store {
    Store::open(&dir.join(name)).unwrap()
}

/// An image of the sample tree for `platform`, built with `options`; its manifest digest.
fn image(store: &Store, dir: &Path, platform: &Platform, options: &LayerOptions) -> Digest {
    let rootfs = dir.join(format!("rootfs-{}", platform.to_string().replace('/', "-")));
    if !rootfs.exists() {
        write_sample_tree(&rootfs).unwrap();
        fs::write(rootfs.join("etc/platform"), platform.to_string()).unwrap();
    }
    let mut config = ImageConfig::new(&platform.architecture, &platform.os);
    config.variant = platform.variant.clone();
    config.created = Some("2024-01-01T00:00:00Z".to_owned());
    image_from_dir_with(store, &rootfs, config, options).unwrap()
}

/// A registry, a temp dir, and a store in it holding one host-platform image to push to
/// `repository:1`.
struct Setup {
    registry: TestRegistry,
    dir: tempfile::TempDir,
    source: Store,
    manifest: Digest,
    target: Reference,
}

/// A registry, a temp dir, and an empty store `source` in it.
fn bare(mode: Mode) -> Option<(TestRegistry, tempfile::TempDir, Store)> {
    let registry = start(mode)?;
    let dir = tempfile::tempdir().unwrap();
    let source = store_in(dir.path(), "source");
    Some((registry, dir, source))
}

fn setup(mode: Mode, repository: &str) -> Option<Setup> {
    let (registry, dir, source) = bare(mode)?;
    let manifest = image(
        &source,
        dir.path(),
        &Platform::host(),
        &LayerOptions::default(),
    );
    let target = reference(&format!("{}/{repository}:1", registry.host()));
    Some(Setup {
        registry,
        dir,
        source,
        manifest,
        target,
    })
}

/// Every event of a pull or push, collected.
#[derive(Default)]
struct Events(Mutex<Vec<Event>>);

impl Events {
    fn sink(&self) -> impl Fn(Event) + Sync + '_ {
        |event| self.0.lock().unwrap_or_else(|p| p.into_inner()).push(event)
    }

    fn count(&self, want: impl Fn(&Event) -> bool) -> usize {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|e| want(e))
            .count()
    }
}

#[test]
fn push_and_pull_round_trip_with_existing_and_mounted_blobs() {
    let Some((registry, dir, source)) = bare(Mode::Plain) else {
        return;
    };
    let client = client(anonymous());
    for (name, options) in [
        ("oci-gzip", LayerOptions::default()),
        (
            "docker-zstd",
            LayerOptions {
                compression: Compression::Zstd,
                format: ManifestFormat::Docker,
                ..LayerOptions::default()
            },
        ),
    ] {
        let manifest = image(&source, dir.path(), &Platform::host(), &options);
        let target = reference(&format!("{}/test/{name}:v1", registry.host()));
        let events = Events::default();
        let pushed = client
            .push(&source, &manifest, &target, &events.sink())
            .unwrap();
        assert_eq!(pushed.digest, manifest);
        assert_eq!(
            events.count(|e| matches!(e, Event::BlobDone { .. })),
            2,
            "{name}"
        );

        // Pushing again sends no blob.
        let again = Events::default();
        client
            .push(&source, &manifest, &target, &again.sink())
            .unwrap();
        assert_eq!(
            again.count(|e| matches!(e, Event::BlobExists { .. })),
            2,
            "{name}"
        );
        assert_eq!(
            again.count(|e| matches!(e, Event::BlobDone { .. })),
            0,
            "{name}"
        );

        let pulled_store = store_in(dir.path(), &format!("pulled-{name}"));
        let pulled = client
            .pull(
                &pulled_store,
                &target,
                &PullOptions::default(),
                &no_progress,
            )
            .unwrap();
        assert_eq!(pulled.image.descriptor.digest, manifest, "{name}");
        assert_eq!(pulled.record.name, target.to_string());
        let (local, _) = describe_manifest(&source, &manifest).unwrap();
        assert_eq!(
            pulled.image.descriptor.media_type, local.media_type,
            "{name}"
        );
        for digest in source.blobs().list().unwrap_or_default() {
            if digest != manifest && name == "oci-gzip" {
                assert!(pulled_store.blobs().contains(&digest), "{digest} missing");
            }
        }
    }

    // A tag of the image in another repository of the registry: its blobs are mounted.
    let oci = reference(&format!("{}/test/oci-gzip:v1", registry.host()));
    let record = source.images().list().unwrap_or_default();
    assert!(record.is_empty(), "push tags nothing locally");
    let manifest = client
        .pull(&source, &oci, &PullOptions::default(), &no_progress)
        .unwrap()
        .image
        .descriptor
        .digest;
    let elsewhere = reference(&format!("{}/other/copy:1", registry.host()));
    let events = Events::default();
    client
        .push(&source, &manifest, &elsewhere, &events.sink())
        .unwrap();
    assert_eq!(events.count(|e| matches!(e, Event::BlobMounted { .. })), 2);
}

#[test]
fn multi_platform_index_and_platform_selection() {
    let Some((registry, dir, source)) = bare(Mode::Plain) else {
        return;
    };
    let platforms = [
        Platform::parse("linux/amd64").unwrap_or_default(),
        Platform::parse("linux/arm64").unwrap_or_default(),
    ];
    let mut entries = Vec::new();
    let mut digests = Vec::new();
    for platform in &platforms {
        let digest = image(&source, dir.path(), platform, &LayerOptions::default());
        let (mut descriptor, _) = describe_manifest(&source, &digest).unwrap();
        descriptor.platform = Some(platform.clone());
        entries.push(descriptor);
        digests.push(digest);
    }
    let index = Index::new(ManifestFormat::Oci, entries);
    let index_bytes = index.to_json().unwrap_or_default();
    let index_digest = source.blobs().put_bytes(&index_bytes).unwrap();
    let client = client(anonymous());
    let target = reference(&format!("{}/multi/app:1", registry.host()));
    let events = Events::default();
    client
        .push(&source, &index_digest, &target, &events.sink())
        .unwrap();
    assert_eq!(
        events.count(|e| matches!(e, Event::ManifestPushed { .. })),
        3
    );

    for (platform, want) in platforms.iter().zip(&digests) {
        let store = store_in(dir.path(), &format!("pull-{}", platform.architecture));
        let options = PullOptions {
            platform: PlatformChoice::Only(platform.clone()),
        };
        let pulled = client
            .pull(&store, &target, &options, &no_progress)
            .unwrap();
        assert_eq!(&pulled.image.descriptor.digest, want, "{platform}");
        assert_eq!(pulled.image.resolved, index_digest);
        assert_eq!(pulled.record.manifest, *want);
    }

    let all = store_in(dir.path(), "pull-all");
    let options = PullOptions {
        platform: PlatformChoice::All,
    };
    let pulled = client.pull(&all, &target, &options, &no_progress).unwrap();
    assert_eq!(pulled.image.descriptor.digest, index_digest);
    assert_eq!(pulled.image.descriptor.media_type, media_types::OCI_INDEX);

    let none = store_in(dir.path(), "pull-none");
    let options = PullOptions {
        platform: PlatformChoice::Only(Platform::parse("linux/s390x").unwrap_or_default()),
    };
    let error = client
        .pull(&none, &target, &options, &no_progress)
        .unwrap_err();
    assert!(
        matches!(error, RegistryError::NoMatchingPlatform { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("linux/arm64"), "{error}");
    assert!(none.images().list().unwrap_or_default().is_empty());

    let missing = client
        .pull(
            &none,
            &reference(&format!("{}/multi/app:nope", registry.host())),
            &PullOptions::default(),
            &no_progress,
        )
        .unwrap_err();
    assert!(
        matches!(missing, RegistryError::NotFound { .. }),
        "{missing}"
    );
}

/// Anonymous and wrong credentials are refused quickly and clearly, `verify_login` tells
/// right from wrong, and with the right login saved a push and a pull work. With a token
/// service, each of them fetches one token for its scope.
fn auth_flow(mode: Mode, user: &str, password: &str) {
    let token_service = matches!(mode, Mode::Token { .. });
    let Some(Setup {
        registry,
        dir,
        source,
        manifest,
        target,
    }) = setup(mode, "private/app")
    else {
        return;
    };
    let config = DockerConfig::at(dir.path().join("docker/config.json"));
    let with_config = || ClientOptions {
        docker_config: Some(config.clone()),
        ..ClientOptions::default()
    };
    let started = Instant::now();
    let error = client(with_config())
        .push(&source, &manifest, &target, &no_progress)
        .unwrap_err();
    assert!(
        matches!(error, RegistryError::Unauthorized { .. }),
        "{error}"
    );
    let text = error.to_string();
    assert!(
        text.contains(&registry.host()) && text.contains("rbuild login"),
        "{text}"
    );
    config.store_login(&registry.host(), user, "wrong").unwrap();
    let error = client(with_config())
        .push(&source, &manifest, &target, &no_progress)
        .unwrap_err();
    assert!(
        matches!(error, RegistryError::Unauthorized { .. }),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    let login = |password: &str| {
        let credentials = Credentials::Basic {
            username: user.into(),
            password: password.into(),
        };
        client(anonymous()).verify_login(&registry.host(), credentials)
    };
    assert!(login("wrong").is_err());
    login(password).unwrap();

    config
        .store_login(&registry.host(), user, password)
        .unwrap();
    let before = registry.tokens_issued();
    client(with_config())
        .push(&source, &manifest, &target, &no_progress)
        .unwrap();
    let pushed_tokens = registry.tokens_issued() - before;
    let pulled = store_in(dir.path(), "pulled");
    let image = client(with_config())
        .pull(&pulled, &target, &PullOptions::default(), &no_progress)
        .unwrap();
    assert_eq!(image.image.descriptor.digest, manifest);
    let pulled_tokens = registry.tokens_issued() - before - pushed_tokens;
    if token_service {
        // One token per scope serves every request of the push (and of the pull).
        assert_eq!((pushed_tokens, pulled_tokens), (1, 1));
    }
}

#[test]
fn basic_auth_refuses_wrong_and_missing_credentials_quickly() {
    auth_flow(
        Mode::Htpasswd {
            user: "alice".into(),
            password: "s3cret".into(),
        },
        "alice",
        "s3cret",
    );
}

#[test]
fn bearer_tokens_from_a_token_service_are_fetched_once_per_scope() {
    auth_flow(
        Mode::Token {
            user: "bob".into(),
            password: "b0b".into(),
        },
        "bob",
        "b0b",
    );
}

#[test]
fn tls_with_the_test_ca_and_a_clear_error_without_it() {
    let Some(Setup {
        registry,
        dir,
        source,
        manifest,
        target,
    }) = setup(Mode::Tls, "secure/app")
    else {
        return;
    };

    let error = client(anonymous())
        .push(&source, &manifest, &target, &no_progress)
        .unwrap_err();
    assert!(
        matches!(error, RegistryError::Certificate { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("--registry-ca"), "{error}");

    let trusted = ClientOptions {
        extra_ca: Some(registry.ca_file()),
        ..anonymous()
    };
    client(trusted.clone())
        .push(&source, &manifest, &target, &no_progress)
        .unwrap();
    let pulled = store_in(dir.path(), "pulled");
    let image = client(trusted)
        .pull(&pulled, &target, &PullOptions::default(), &no_progress)
        .unwrap();
    assert_eq!(image.image.descriptor.digest, manifest);
}

#[test]
fn a_tampered_blob_is_rejected_and_nothing_is_tagged() {
    let Some(Setup {
        registry,
        dir,
        source,
        manifest,
        target,
    }) = setup(Mode::Plain, "tamper/app")
    else {
        return;
    };
    let client = client(anonymous());
    client
        .push(&source, &manifest, &target, &no_progress)
        .unwrap();
    let (_, parsed) = describe_manifest(&source, &manifest).unwrap();
    let rbuild_image::manifest::ManifestOrIndex::Manifest(parsed) = parsed else {
        panic!("not a manifest")
    };
    let layer = &parsed.layers[0];
    let data = registry.blob_data(layer.digest.hex());
    let mut bytes = fs::read(&data).unwrap_or_else(|e| panic!("{}: {e}", data.display()));
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&data, bytes).unwrap();

    let pulled = store_in(dir.path(), "pulled");
    let error = client
        .pull(&pulled, &target, &PullOptions::default(), &no_progress)
        .unwrap_err();
    assert!(
        matches!(error, RegistryError::DigestMismatch { .. }),
        "{error}"
    );
    assert!(pulled.images().list().unwrap_or_default().is_empty());
    assert!(!pulled.blobs().contains(&layer.digest));
}

/// A file of `size` pseudo-random (incompressible) bytes.
fn random_file(path: &Path, size: usize) {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut file = fs::File::create(path).unwrap();
    let mut block = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for byte in block.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = state as u8;
        }
        let n = left.min(block.len());
        file.write_all(&block[..n]).unwrap();
        left -= n;
    }
}

#[test]
fn a_download_resumes_after_the_registry_restarts() {
    let Some((mut registry, dir, source)) = bare(Mode::Plain) else {
        return;
    };
    let rootfs = dir.path().join("big");
    fs::create_dir_all(&rootfs).unwrap();
    random_file(&rootfs.join("random.bin"), 64 << 20);
    let options = LayerOptions {
        compression: Compression::None,
        ..LayerOptions::default()
    };
    let host = Platform::host();
    let config = ImageConfig::new(&host.architecture, &host.os);
    let manifest = image_from_dir_with(&source, &rootfs, config, &options).unwrap();
    let target = reference(&format!("{}/big/app:1", registry.host()));
    let retrying = ClientOptions {
        retry: RetryPolicy {
            attempts: 8,
            first_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(2),
        },
        concurrency: 1,
        ..anonymous()
    };
    client(retrying.clone())
        .push(&source, &manifest, &target, &no_progress)
        .unwrap();

    let pulled = store_in(dir.path(), "pulled");
    let restarted = AtomicBool::new(false);
    let least_after_restart = AtomicU64::new(u64::MAX);
    let registry_slot = Mutex::new(&mut registry);
    let sink = |event: Event| {
        if let Event::BlobProgress { done, total, .. } = event {
            if total < (32 << 20) {
                return;
            }
            if restarted.load(Ordering::SeqCst) {
                least_after_restart.fetch_min(done, Ordering::SeqCst);
            } else if done > (16 << 20) {
                // Take the registry away mid-blob and bring it back: the download goes on.
                let mut registry = registry_slot.lock().unwrap_or_else(|p| p.into_inner());
                registry.kill();
                restarted.store(true, Ordering::SeqCst);
                registry.restart().unwrap();
            }
        }
    };
    let image = client(retrying)
        .pull(&pulled, &target, &PullOptions::default(), &sink)
        .unwrap();
    assert_eq!(image.image.descriptor.digest, manifest);
    assert!(
        restarted.load(Ordering::SeqCst),
        "the registry was never restarted"
    );
    let least = least_after_restart.load(Ordering::SeqCst);
    assert!(
        least > (16 << 20) && least != u64::MAX,
        "the download started over: {least}"
    );
}

#[test]
fn a_server_that_never_answers_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    // Accepts connections (the kernel does) and never says a word.
    let options = ClientOptions {
        timeouts: Timeouts {
            connect: Duration::from_secs(1),
            response: Duration::from_secs(1),
            stall: Duration::from_secs(1),
        },
        retry: RetryPolicy {
            attempts: 2,
            first_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(10),
        },
        insecure_registries: vec![format!("127.0.0.1:{port}")],
        ..anonymous()
    };
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path(), "store");
    let error = client(options)
        .pull(
            &store,
            &reference(&format!("127.0.0.1:{port}/x:1")),
            &PullOptions::default(),
            &no_progress,
        )
        .unwrap_err();
    assert!(matches!(error, RegistryError::Connection { .. }), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    drop(listener);
}
