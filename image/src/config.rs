//! The image config JSON (`application/vnd.oci.image.config.v1+json`, the same document Docker
//! calls `application/vnd.docker.container.image.v1+json`), field for field as BuildKit writes
//! it, so that the same image gives the same config digest.
//!
//! What BuildKit writes, and these types reproduce:
//! - the top-level keys in **alphabetical** order (BuildKit's exporter re-marshals the config
//!   through a `map[string]json.RawMessage`), compact, with Go's string escaping
//!   ([`crate::json`]);
//! - `architecture`, `os`, `config` and `rootfs` always present (`config` may be `{}`), the
//!   other top-level keys only when non-empty;
//! - inside `config`, OCI's `ImageConfig` fields in struct order (`User`, `ExposedPorts`,
//!   `Env`, `Entrypoint`, `Cmd`, `Volumes`, `WorkingDir`, `Labels`, `StopSignal`,
//!   `ArgsEscaped`) followed by Docker's extensions (`Healthcheck`, `OnBuild`, `Shell`), each
//!   omitted when empty / zero / false (Go's `omitempty`);
//! - `Healthcheck` durations as integer nanoseconds, each omitted when zero;
//! - `rootfs` as `{"type":"layers","diff_ids":[…]}`, and `"diff_ids":null` for an image with
//!   no layers (BuildKit builds the list by appending to a nil Go slice; OCI's JSON schema
//!   wants an array there, but Docker, containerd and skopeo read either);
//! - `history` entries with `created`, `created_by`, `author`, `comment`, and `empty_layer`
//!   only when true.
//!
//! Reading is lenient the way Go is: unknown keys (Docker's `container_config`,
//! `docker_version` …) are ignored and `null` reads as empty. Configs are untrusted input: read
//! them with [`ImageConfig::from_json`] on bytes bounded by [`crate::json::MAX_CONFIG_BYTES`].

use std::collections::BTreeMap;

use rbuild_cache::Digest;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::ImageError;
use crate::json::{self, is_false, is_zero, null_default};

/// The top-level image config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageConfig {
    /// CPU architecture in Go's terms (`amd64`, `arm64` …). REQUIRED; always written.
    #[serde(deserialize_with = "null_default")]
    pub architecture: String,
    /// Who made the image (`MAINTAINER`). OPTIONAL.
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_default"
    )]
    pub author: String,
    /// The runtime defaults of a container. OPTIONAL in OCI, always written (as Go does).
    #[serde(deserialize_with = "null_default")]
    pub config: ContainerConfig,
    /// When the image was created, RFC 3339 with nanoseconds trimmed as Go's `RFC3339Nano`
    /// (see [`format_rfc3339_nano`]). OPTIONAL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// One entry per build step. OPTIONAL.
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_default"
    )]
    pub history: Vec<History>,
    /// Operating system (`linux`). REQUIRED; always written.
    #[serde(deserialize_with = "null_default")]
    pub os: String,
    /// Required OS features. OPTIONAL.
    #[serde(
        rename = "os.features",
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_default"
    )]
    pub os_features: Vec<String>,
    /// OS version. OPTIONAL.
    #[serde(
        rename = "os.version",
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_default"
    )]
    pub os_version: String,
    /// rbuild's inline build cache (`--cache-to type=inline`): the records of the steps that
    /// made the image, whose layers are the image's own (docs/cache-format.md). Not an OCI
    /// field; other tools ignore it.
    #[serde(rename = "rbuild.cache.v1", skip_serializing_if = "Option::is_none")]
    pub rbuild_cache: Option<serde_json::Value>,
    /// The layers' diff IDs. REQUIRED.
    #[serde(deserialize_with = "null_default")]
    pub rootfs: RootFs,
    /// CPU variant (`v7` for arm). OPTIONAL.
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_default"
    )]
    pub variant: String,
}

/// The keys of Docker's container config (`docker image inspect`'s `Config`) that
/// [`ContainerConfig`] carries; Docker's other keys (`Hostname`, `Tty`, …) are not image data.
pub const CONTAINER_CONFIG_KEYS: [&str; 13] = [
    "User",
    "ExposedPorts",
    "Env",
    "Entrypoint",
    "Cmd",
    "Volumes",
    "WorkingDir",
    "Labels",
    "StopSignal",
    "ArgsEscaped",
    "Healthcheck",
    "OnBuild",
    "Shell",
];

/// The `config` object: defaults for containers run from the image.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerConfig {
    /// `USER`.
    #[serde(
        rename = "User",
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_default"
    )]
    pub user: String,
    /// `EXPOSE`: keys like `80/tcp`, values always `{}`.
    #[serde(
        rename = "ExposedPorts",
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_default"
    )]
    pub exposed_ports: BTreeMap<String, EmptyObject>,
    /// `ENV`, as `KEY=value`.
    #[serde(
        rename = "Env",
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_default"
    )]
    pub env: Vec<String>,
    /// `ENTRYPOINT`.
    #[serde(
        rename = "Entrypoint",
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_default"
    )]
    pub entrypoint: Vec<String>,
    /// `CMD`.
    #[serde(
        rename = "Cmd",
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_default"
    )]
    pub cmd: Vec<String>,
    /// `VOLUME`: keys are paths, values always `{}`.
    #[serde(
        rename = "Volumes",
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_default"
    )]
    pub volumes: BTreeMap<String, EmptyObject>,
    /// `WORKDIR`.
    #[serde(
        rename = "WorkingDir",
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_default"
    )]
    pub working_dir: String,
    /// `LABEL`.
    #[serde(
        rename = "Labels",
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_default"
    )]
    pub labels: BTreeMap<String, String>,
    /// `STOPSIGNAL`.
    #[serde(
        rename = "StopSignal",
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_default"
    )]
    pub stop_signal: String,
    /// Set for Windows images whose command line is already escaped (deprecated in OCI).
    #[serde(
        rename = "ArgsEscaped",
        skip_serializing_if = "is_false",
        deserialize_with = "null_default"
    )]
    pub args_escaped: bool,
    /// `HEALTHCHECK` (Docker extension).
    #[serde(rename = "Healthcheck", skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    /// `ONBUILD` triggers (Docker extension).
    #[serde(
        rename = "OnBuild",
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_default"
    )]
    pub on_build: Vec<String>,
    /// `SHELL` (Docker extension).
    #[serde(
        rename = "Shell",
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_default"
    )]
    pub shell: Vec<String>,
}

/// `HEALTHCHECK`, with Go `time.Duration`s as integer nanoseconds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HealthConfig {
    /// `[]` inherit, `["NONE"]` disabled, `["CMD", args…]`, `["CMD-SHELL", command]`.
    #[serde(
        rename = "Test",
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_default"
    )]
    pub test: Vec<String>,
    /// Time between checks, ns; 0 inherits.
    #[serde(
        rename = "Interval",
        skip_serializing_if = "is_zero",
        deserialize_with = "null_default"
    )]
    pub interval: i64,
    /// Time before a check is considered hung, ns; 0 inherits.
    #[serde(
        rename = "Timeout",
        skip_serializing_if = "is_zero",
        deserialize_with = "null_default"
    )]
    pub timeout: i64,
    /// Start period, ns; 0 inherits.
    #[serde(
        rename = "StartPeriod",
        skip_serializing_if = "is_zero",
        deserialize_with = "null_default"
    )]
    pub start_period: i64,
    /// Interval during the start period, ns; 0 inherits.
    #[serde(
        rename = "StartInterval",
        skip_serializing_if = "is_zero",
        deserialize_with = "null_default"
    )]
    pub start_interval: i64,
    /// Consecutive failures before unhealthy; 0 inherits.
    #[serde(
        rename = "Retries",
        skip_serializing_if = "is_zero",
        deserialize_with = "null_default"
    )]
    pub retries: i64,
}

/// `rootfs`: the diff IDs (sha256 of each uncompressed layer tar), bottom first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type", default, deserialize_with = "null_default")]
    pub kind: String,
    /// The diff IDs; written as `null` when empty, as BuildKit does.
    #[serde(
        default,
        deserialize_with = "null_default",
        serialize_with = "nil_slice"
    )]
    pub diff_ids: Vec<Digest>,
}

impl Default for RootFs {
    fn default() -> RootFs {
        RootFs {
            kind: "layers".to_owned(),
            diff_ids: Vec::new(),
        }
    }
}

/// Go's encoding of a nil slice: `null` when empty.
fn nil_slice<S: Serializer, T: Serialize>(items: &[T], serializer: S) -> Result<S::Ok, S::Error> {
    if items.is_empty() {
        serializer.serialize_none()
    } else {
        items.serialize(serializer)
    }
}

/// One `history` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct History {
    /// When the step ran, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The instruction, e.g. `RUN /bin/sh -c make # buildkit`.
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_default"
    )]
    pub created_by: String,
    /// The author.
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_default"
    )]
    pub author: String,
    /// A comment (BuildKit writes `buildkit.dockerfile.v0`).
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_default"
    )]
    pub comment: String,
    /// True when the step made no layer; only written when true.
    #[serde(skip_serializing_if = "is_false", deserialize_with = "null_default")]
    pub empty_layer: bool,
}

/// The `{}` value of `ExposedPorts` and `Volumes`; reads any value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EmptyObject;

impl Serialize for EmptyObject {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        serializer.serialize_map(Some(0))?.end()
    }
}

impl<'de> Deserialize<'de> for EmptyObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<EmptyObject, D::Error> {
        serde::de::IgnoredAny::deserialize(deserializer)?;
        Ok(EmptyObject)
    }
}

impl ImageConfig {
    /// An empty config for `architecture`/`os` with no layers.
    pub fn new(architecture: &str, os: &str) -> ImageConfig {
        ImageConfig {
            architecture: architecture.to_owned(),
            os: os.to_owned(),
            ..ImageConfig::default()
        }
    }

    /// The canonical bytes (compact, alphabetical top level, Go escaping).
    pub fn to_json(&self) -> Result<Vec<u8>, ImageError> {
        json::to_go_json(self)
    }

    /// Parses untrusted bytes; at most [`json::MAX_CONFIG_BYTES`] are accepted.
    pub fn from_json(bytes: &[u8]) -> Result<ImageConfig, ImageError> {
        if bytes.len() as u64 > json::MAX_CONFIG_BYTES {
            return Err(ImageError::TooLarge {
                what: "image config".into(),
                limit: json::MAX_CONFIG_BYTES,
            });
        }
        // serde would read a struct from an array too; Go (and so Docker) would not.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ImageError::InvalidImage(
                "image config is not a JSON object".into(),
            ));
        }
        json::parse(bytes, || "image config".to_owned())
    }

    /// The digest of [`ImageConfig::to_json`].
    pub fn digest(&self) -> Result<Digest, ImageError> {
        Ok(Digest::of_bytes(&self.to_json()?))
    }
}

/// Formats a Unix time as Go's `time.RFC3339Nano` in UTC: `2024-01-02T03:04:05Z`, or with the
/// fraction's trailing zeros trimmed (`…05.12Z`). `nanos` above 999 999 999 is clamped.
pub fn format_rfc3339_nano(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let mut out = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    );
    let nanos = nanos.min(999_999_999);
    if nanos > 0 {
        let fraction = format!("{nanos:09}");
        out.push('.');
        out.push_str(fraction.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // day is 1..=31 and month 1..=12 by construction.
    (
        year,
        u32::try_from(month).unwrap_or(1),
        u32::try_from(day).unwrap_or(1),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn d(n: u8) -> Digest {
        Digest::of_bytes(&[n])
    }

    #[test]
    fn minimal_config_golden() {
        let c = ImageConfig::new("amd64", "linux");
        assert_eq!(
            String::from_utf8(c.to_json().unwrap()).unwrap(),
            r#"{"architecture":"amd64","config":{},"os":"linux","rootfs":{"type":"layers","diff_ids":null}}"#
        );
    }

    #[test]
    fn full_config_golden() {
        // The field order and omissions BuildKit produces for a Dockerfile using every
        // instruction that touches the config.
        let mut c = ImageConfig::new("arm", "linux");
        c.variant = "v7".into();
        c.author = "me <me@example.com>".into();
        c.created = Some("2024-01-02T03:04:05.5Z".into());
        c.config.user = "app".into();
        c.config.exposed_ports.insert("80/tcp".into(), EmptyObject);
        c.config.exposed_ports.insert("443/tcp".into(), EmptyObject);
        c.config.env = vec!["PATH=/usr/bin".into()];
        c.config.entrypoint = vec!["/bin/sh".into(), "-c".into()];
        c.config.cmd = vec!["a && b".into()];
        c.config.volumes.insert("/data".into(), EmptyObject);
        c.config.working_dir = "/w".into();
        c.config.labels.insert("b".into(), "2".into());
        c.config.labels.insert("a".into(), "1".into());
        c.config.stop_signal = "SIGTERM".into();
        c.config.args_escaped = true;
        c.config.healthcheck = Some(HealthConfig {
            test: vec!["CMD-SHELL".into(), "true".into()],
            interval: 30_000_000_000,
            timeout: 0,
            start_period: 5_000_000_000,
            start_interval: 0,
            retries: 3,
        });
        c.config.on_build = vec!["RUN x".into()];
        c.config.shell = vec!["/bin/bash".into(), "-c".into()];
        c.rootfs.diff_ids = vec![d(1)];
        c.history = vec![
            History {
                created: Some("2024-01-02T03:04:05Z".into()),
                created_by: "RUN /bin/sh -c make # buildkit".into(),
                comment: "buildkit.dockerfile.v0".into(),
                ..History::default()
            },
            History {
                created_by: "ENV A=b".into(),
                empty_layer: true,
                ..History::default()
            },
        ];
        let want = format!(
            concat!(
                r#"{{"architecture":"arm","author":"me \u003cme@example.com\u003e","#,
                r#""config":{{"User":"app","ExposedPorts":{{"443/tcp":{{}},"80/tcp":{{}}}},"Env":["PATH=/usr/bin"],"#,
                r#""Entrypoint":["/bin/sh","-c"],"Cmd":["a \u0026\u0026 b"],"Volumes":{{"/data":{{}}}},"WorkingDir":"/w","#,
                r#""Labels":{{"a":"1","b":"2"}},"StopSignal":"SIGTERM","ArgsEscaped":true,"#,
                r#""Healthcheck":{{"Test":["CMD-SHELL","true"],"Interval":30000000000,"StartPeriod":5000000000,"Retries":3}},"#,
                r#""OnBuild":["RUN x"],"Shell":["/bin/bash","-c"]}},"#,
                r#""created":"2024-01-02T03:04:05.5Z","#,
                r#""history":[{{"created":"2024-01-02T03:04:05Z","created_by":"RUN /bin/sh -c make # buildkit","comment":"buildkit.dockerfile.v0"}},"#,
                r#"{{"created_by":"ENV A=b","empty_layer":true}}],"#,
                r#""os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}},"variant":"v7"}}"#
            ),
            d(1)
        );
        assert_eq!(String::from_utf8(c.to_json().unwrap()).unwrap(), want);
        // And back.
        assert_eq!(ImageConfig::from_json(want.as_bytes()).unwrap(), c);
    }

    #[test]
    fn reads_docker_classic_config() {
        // What the classic `docker build` wrote: extra keys, nulls, and fields in other orders.
        let classic = r#"{"architecture":"amd64","config":{"Hostname":"","Domainname":"","User":"",
            "AttachStdin":false,"ExposedPorts":null,"Tty":false,"Env":["PATH=/bin"],"Cmd":null,
            "Image":"sha256:abc","Volumes":null,"WorkingDir":"","Entrypoint":null,"OnBuild":null,
            "Labels":null,"Healthcheck":null},"container":"abc","container_config":{"Cmd":["x"]},
            "created":"2020-01-01T00:00:00.123456789Z","docker_version":"20.10.0","history":null,
            "os":"linux","rootfs":{"type":"layers","diff_ids":null}}"#;
        let c = ImageConfig::from_json(classic.as_bytes()).unwrap();
        assert_eq!(c.config.env, vec!["PATH=/bin".to_owned()]);
        assert!(c.config.cmd.is_empty() && c.history.is_empty() && c.rootfs.diff_ids.is_empty());
        assert_eq!(c.created.as_deref(), Some("2020-01-01T00:00:00.123456789Z"));
    }

    #[test]
    fn empty_values_are_omitted() {
        let mut c = ImageConfig::new("amd64", "linux");
        c.config.env = vec![];
        c.config.healthcheck = Some(HealthConfig::default());
        c.history = vec![History {
            empty_layer: false,
            ..History::default()
        }];
        assert_eq!(
            String::from_utf8(c.to_json().unwrap()).unwrap(),
            r#"{"architecture":"amd64","config":{"Healthcheck":{}},"history":[{}],"os":"linux","rootfs":{"type":"layers","diff_ids":null}}"#
        );
    }

    #[test]
    fn hostile_configs_fail_cleanly() {
        for bad in [
            &b"[]"[..],
            b"{\"rootfs\":{\"diff_ids\":[\"md5:abc\"]}}",
            b"{\"config\":{\"Healthcheck\":{\"Interval\":\"1s\"}}}",
            b"{",
            b"\xff",
        ] {
            assert!(
                ImageConfig::from_json(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let big = vec![b' '; usize::try_from(json::MAX_CONFIG_BYTES).unwrap() + 1];
        assert!(matches!(
            ImageConfig::from_json(&big),
            Err(ImageError::TooLarge { .. })
        ));
    }

    #[test]
    fn rfc3339_table() {
        for (secs, nanos, want) in [
            (0, 0, "1970-01-01T00:00:00Z"),
            (1_704_067_200, 0, "2024-01-01T00:00:00Z"),
            (951_782_400, 0, "2000-02-29T00:00:00Z"),
            (1_700_000_000, 120_000_000, "2023-11-14T22:13:20.12Z"),
            (1_700_000_000, 1, "2023-11-14T22:13:20.000000001Z"),
            (-1, 0, "1969-12-31T23:59:59Z"),
            (253_402_300_799, 0, "9999-12-31T23:59:59Z"),
        ] {
            assert_eq!(format_rfc3339_nano(secs, nanos), want);
        }
    }
}
