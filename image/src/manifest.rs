//! Manifests, indexes and descriptors: OCI (`application/vnd.oci.image.manifest.v1+json`,
//! `application/vnd.oci.image.index.v1+json`) and Docker schema 2
//! (`application/vnd.docker.distribution.manifest.v2+json`,
//! `application/vnd.docker.distribution.manifest.list.v2+json`), which share one JSON shape.
//!
//! These are small serde types rather than `oci-spec`'s because the bytes matter: fields are
//! declared in the Go structs' order, maps are `BTreeMap`s, and [`Manifest::to_json`] /
//! [`Index::to_json`] write Go's `json.MarshalIndent(v, "", "  ")` as BuildKit does, so the same
//! image always gets the same digest. Reading is bounded ([`crate::json::MAX_MANIFEST_BYTES`])
//! and rejects digests other than sha256 (the store holds nothing else).

use std::collections::BTreeMap;

use rbuild_cache::Digest;
use serde::{Deserialize, Serialize};

use crate::error::ImageError;
use crate::json::{self, null_default};

/// Media types this crate reads and writes.
pub mod media_types {
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// OCI layer, uncompressed tar.
    pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    /// OCI layer, gzip.
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// OCI layer, zstd.
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    /// OCI non-distributable layer, uncompressed (deprecated but still read).
    pub const OCI_LAYER_NONDIST_TAR: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar";
    /// OCI non-distributable layer, gzip.
    pub const OCI_LAYER_NONDIST_GZIP: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
    /// OCI non-distributable layer, zstd.
    pub const OCI_LAYER_NONDIST_ZSTD: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";
    /// Docker schema 2 manifest.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list.
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// Docker layer, gzip.
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    /// Docker layer, uncompressed (used by some tools; not in the schema 2 spec).
    pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
    /// Docker foreign (Windows base) layer, gzip.
    pub const DOCKER_LAYER_FOREIGN_GZIP: &str =
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
    /// The zstd layer type some Docker-format tools write.
    pub const DOCKER_LAYER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";
    /// A generic binary type, whose compression has to be sniffed.
    pub const OCTET_STREAM: &str = "application/octet-stream";
}

/// Annotation keys used in `index.json`.
pub mod annotations {
    /// The reference (OCI: the tag) of a manifest in an OCI layout.
    pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
    /// The full image name, as containerd and Docker write it.
    pub const CONTAINERD_IMAGE_NAME: &str = "io.containerd.image.name";
    /// When the image was created.
    pub const CREATED: &str = "org.opencontainers.image.created";
}

use media_types as mt;

/// Which family of media types to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ManifestFormat {
    /// OCI media types.
    #[default]
    Oci,
    /// Docker schema 2 media types.
    Docker,
}

impl ManifestFormat {
    /// The family `media_type` belongs to: Docker for `application/vnd.docker.…` types, else
    /// OCI.
    pub fn of_media_type(media_type: &str) -> ManifestFormat {
        if media_type.starts_with("application/vnd.docker.") {
            ManifestFormat::Docker
        } else {
            ManifestFormat::Oci
        }
    }

    /// The manifest media type.
    pub fn manifest_media_type(self) -> &'static str {
        match self {
            ManifestFormat::Oci => mt::OCI_MANIFEST,
            ManifestFormat::Docker => mt::DOCKER_MANIFEST,
        }
    }

    /// The index / manifest list media type.
    pub fn index_media_type(self) -> &'static str {
        match self {
            ManifestFormat::Oci => mt::OCI_INDEX,
            ManifestFormat::Docker => mt::DOCKER_MANIFEST_LIST,
        }
    }

    /// The config media type.
    pub fn config_media_type(self) -> &'static str {
        match self {
            ManifestFormat::Oci => mt::OCI_CONFIG,
            ManifestFormat::Docker => mt::DOCKER_CONFIG,
        }
    }

    /// The layer media type for `compression`; Docker has no standard zstd type, so zstd in a
    /// Docker manifest uses the OCI zstd type, as BuildKit does.
    pub fn layer_media_type(self, compression: Compression) -> &'static str {
        match (self, compression) {
            (ManifestFormat::Oci, Compression::None) => mt::OCI_LAYER_TAR,
            (ManifestFormat::Oci, Compression::Gzip) => mt::OCI_LAYER_GZIP,
            (_, Compression::Zstd) => mt::OCI_LAYER_ZSTD,
            (ManifestFormat::Docker, Compression::None) => mt::DOCKER_LAYER_TAR,
            (ManifestFormat::Docker, Compression::Gzip) => mt::DOCKER_LAYER_GZIP,
        }
    }
}

/// A layer compression algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// What a layer media type says about its content: `Some(compression)` for a known layer
/// type, `None` for anything else (including the generic octet-stream type).
pub fn layer_compression(media_type: &str) -> Option<Compression> {
    match media_type {
        mt::OCI_LAYER_TAR | mt::OCI_LAYER_NONDIST_TAR | mt::DOCKER_LAYER_TAR => {
            Some(Compression::None)
        }
        mt::OCI_LAYER_GZIP
        | mt::OCI_LAYER_NONDIST_GZIP
        | mt::DOCKER_LAYER_GZIP
        | mt::DOCKER_LAYER_FOREIGN_GZIP => Some(Compression::Gzip),
        mt::OCI_LAYER_ZSTD | mt::OCI_LAYER_NONDIST_ZSTD | mt::DOCKER_LAYER_ZSTD => {
            Some(Compression::Zstd)
        }
        _ => None,
    }
}

/// Whether a layer of `media_type` is non-distributable (OCI) or foreign (Docker): its content
/// is not to be fetched from or pushed to a registry, and may be absent from the store.
pub fn is_non_distributable(media_type: &str) -> bool {
    media_type.contains(".nondistributable.") || media_type.contains(".foreign.")
}

/// Whether `media_type` is an image manifest (OCI or Docker schema 2).
pub fn is_manifest_type(media_type: &str) -> bool {
    media_type == mt::OCI_MANIFEST || media_type == mt::DOCKER_MANIFEST
}

/// Whether `media_type` is an index or manifest list.
pub fn is_index_type(media_type: &str) -> bool {
    media_type == mt::OCI_INDEX || media_type == mt::DOCKER_MANIFEST_LIST
}

/// A content descriptor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    /// The referenced content's media type. REQUIRED.
    #[serde(rename = "mediaType", default, deserialize_with = "null_default")]
    pub media_type: String,
    /// Its digest. REQUIRED.
    pub digest: Digest,
    /// Its size in bytes. REQUIRED.
    pub size: u64,
    /// Where else it can be fetched. OPTIONAL.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_default"
    )]
    pub urls: Vec<String>,
    /// Annotations. OPTIONAL.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_default"
    )]
    pub annotations: BTreeMap<String, String>,
    /// Embedded content, base64. OPTIONAL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// The platform of a manifest in an index. OPTIONAL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Artifact type. OPTIONAL.
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_default"
    )]
    pub artifact_type: String,
}

impl Descriptor {
    /// A descriptor with just the three required fields.
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.to_owned(),
            digest,
            size,
            urls: Vec::new(),
            annotations: BTreeMap::new(),
            data: None,
            platform: None,
            artifact_type: String::new(),
        }
    }
}

/// A platform, as in an index entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Platform {
    /// CPU architecture (`amd64`). REQUIRED.
    #[serde(deserialize_with = "null_default")]
    pub architecture: String,
    /// Operating system (`linux`). REQUIRED.
    #[serde(deserialize_with = "null_default")]
    pub os: String,
    /// OS version. OPTIONAL.
    #[serde(
        rename = "os.version",
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_default"
    )]
    pub os_version: String,
    /// OS features. OPTIONAL.
    #[serde(
        rename = "os.features",
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_default"
    )]
    pub os_features: Vec<String>,
    /// CPU variant (`v7`). OPTIONAL.
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_default"
    )]
    pub variant: String,
}

impl Platform {
    /// The platform this program runs on, in Go's (and so OCI's) names, normalised as
    /// containerd does (`arm64` without variant, `arm` as `v7`).
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", ""),
            "x86" => ("386", ""),
            "aarch64" => ("arm64", ""),
            "arm" => ("arm", "v7"),
            "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", ""),
            "powerpc64" => ("ppc64", ""),
            "riscv64" => ("riscv64", ""),
            "s390x" => ("s390x", ""),
            "loongarch64" => ("loong64", ""),
            "mips64" if cfg!(target_endian = "little") => ("mips64le", ""),
            other => (other, ""),
        };
        Platform {
            architecture: architecture.to_owned(),
            os: std::env::consts::OS.to_owned(),
            variant: variant.to_owned(),
            ..Platform::default()
        }
    }
}

impl Platform {
    /// Parses `os/arch[/variant]` (as `--platform` takes it), normalising architecture names
    /// as containerd does (`x86_64` → `amd64`, `aarch64` → `arm64`, `arm64/v8` → `arm64`).
    pub fn parse(text: &str) -> Result<Platform, ImageError> {
        let parts: Vec<&str> = text.split('/').collect();
        let invalid = |reason: &str| ImageError::InvalidPlatform {
            platform: text.chars().take(100).collect(),
            reason: reason.to_owned(),
        };
        let (os, architecture, variant) = match parts.as_slice() {
            [os, arch] => (*os, *arch, ""),
            [os, arch, variant] => (*os, *arch, *variant),
            _ => return Err(invalid("expected os/arch or os/arch/variant")),
        };
        let valid_word = |w: &str| {
            !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        };
        if !valid_word(os)
            || !valid_word(architecture)
            || !(variant.is_empty() || valid_word(variant))
        {
            return Err(invalid("each part must be a non-empty word"));
        }
        let os = os.to_ascii_lowercase();
        let (architecture, variant) = match (architecture.to_ascii_lowercase().as_str(), variant) {
            ("x86_64" | "x86-64", v) => ("amd64".to_owned(), v.to_owned()),
            ("aarch64" | "arm64", "v8") | ("aarch64", "") => ("arm64".to_owned(), String::new()),
            ("armhf", "") => ("arm".to_owned(), "v7".to_owned()),
            ("armel", "") => ("arm".to_owned(), "v6".to_owned()),
            (arch, v) => (arch.to_owned(), v.to_owned()),
        };
        Ok(Platform {
            architecture,
            os,
            variant,
            ..Platform::default()
        })
    }

    /// Whether an index entry of platform `candidate` serves a request for `self`: same OS and
    /// architecture, and the same variant when `self` names one (`arm64` and `arm64/v8` are
    /// the same).
    pub fn matches(&self, candidate: &Platform) -> bool {
        let variant = |p: &Platform| {
            if p.architecture == "arm64" && p.variant == "v8" {
                String::new()
            } else {
                p.variant.clone()
            }
        };
        self.os == candidate.os
            && self.architecture == candidate.architecture
            && (self.variant.is_empty() || variant(self) == variant(candidate))
    }
}

impl std::fmt::Display for Platform {
    /// `os/arch[/variant]`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

/// An image manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always 2. REQUIRED.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// The manifest's own media type. SHOULD be set (Docker: REQUIRED).
    #[serde(
        rename = "mediaType",
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_default"
    )]
    pub media_type: String,
    /// Artifact type. OPTIONAL.
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_default"
    )]
    pub artifact_type: String,
    /// The config blob. REQUIRED.
    pub config: Descriptor,
    /// The layers, bottom first. REQUIRED.
    #[serde(default, deserialize_with = "null_default")]
    pub layers: Vec<Descriptor>,
    /// The manifest this one refers to. OPTIONAL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Annotations. OPTIONAL.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_default"
    )]
    pub annotations: BTreeMap<String, String>,
}

impl Manifest {
    /// A manifest of `format` for a config and layers.
    pub fn new(format: ManifestFormat, config: Descriptor, layers: Vec<Descriptor>) -> Manifest {
        Manifest {
            schema_version: 2,
            media_type: format.manifest_media_type().to_owned(),
            artifact_type: String::new(),
            config,
            layers,
            subject: None,
            annotations: BTreeMap::new(),
        }
    }

    /// The canonical bytes (Go's `MarshalIndent` with two spaces).
    pub fn to_json(&self) -> Result<Vec<u8>, ImageError> {
        json::to_go_json_indent(self)
    }

    /// Parses untrusted bytes (bounded, schema version 2 only).
    pub fn from_json(bytes: &[u8]) -> Result<Manifest, ImageError> {
        check_manifest_size(bytes, "manifest")?;
        let m: Manifest = json::parse(bytes, || "image manifest".to_owned())?;
        if m.schema_version != 2 {
            return Err(ImageError::InvalidImage(format!(
                "manifest schemaVersion {} is not 2",
                m.schema_version
            )));
        }
        Ok(m)
    }
}

/// An image index or manifest list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    /// Always 2. REQUIRED.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// The index's own media type. SHOULD be set.
    #[serde(
        rename = "mediaType",
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_default"
    )]
    pub media_type: String,
    /// Artifact type. OPTIONAL.
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_default"
    )]
    pub artifact_type: String,
    /// The manifests. REQUIRED.
    #[serde(default, deserialize_with = "null_default")]
    pub manifests: Vec<Descriptor>,
    /// The manifest this one refers to. OPTIONAL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Annotations. OPTIONAL.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_default"
    )]
    pub annotations: BTreeMap<String, String>,
}

impl Index {
    /// An index of `format` over `manifests`.
    pub fn new(format: ManifestFormat, manifests: Vec<Descriptor>) -> Index {
        Index {
            schema_version: 2,
            media_type: format.index_media_type().to_owned(),
            artifact_type: String::new(),
            manifests,
            subject: None,
            annotations: BTreeMap::new(),
        }
    }

    /// The canonical bytes (Go's `MarshalIndent` with two spaces).
    pub fn to_json(&self) -> Result<Vec<u8>, ImageError> {
        json::to_go_json_indent(self)
    }

    /// Parses untrusted bytes (bounded, schema version 2 only).
    pub fn from_json(bytes: &[u8]) -> Result<Index, ImageError> {
        check_manifest_size(bytes, "index")?;
        let i: Index = json::parse(bytes, || "image index".to_owned())?;
        if i.schema_version != 2 {
            return Err(ImageError::InvalidImage(format!(
                "index schemaVersion {} is not 2",
                i.schema_version
            )));
        }
        Ok(i)
    }
}

fn check_manifest_size(bytes: &[u8], what: &str) -> Result<(), ImageError> {
    if bytes.len() as u64 > json::MAX_MANIFEST_BYTES {
        return Err(ImageError::TooLarge {
            what: what.to_owned(),
            limit: json::MAX_MANIFEST_BYTES,
        });
    }
    Ok(())
}

/// A parsed manifest or index, as found behind a descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // short-lived; boxing would only add an allocation
pub enum ManifestOrIndex {
    /// An image manifest.
    Manifest(Manifest),
    /// An index or manifest list.
    Index(Index),
}

/// Only the fields that tell a manifest from an index.
#[derive(Deserialize)]
struct Shape {
    #[serde(rename = "mediaType", default, deserialize_with = "null_default")]
    media_type: String,
    #[serde(default)]
    manifests: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    config: Option<serde::de::IgnoredAny>,
}

/// Parses untrusted bytes as a manifest or an index. The media type is taken from the
/// descriptor (`hint`), else from the document's `mediaType`, else from its shape (a
/// `manifests` array means an index); a document whose own `mediaType` contradicts the hint
/// is refused.
pub fn parse_manifest_or_index(bytes: &[u8], hint: &str) -> Result<ManifestOrIndex, ImageError> {
    check_manifest_size(bytes, "manifest")?;
    let shape: Shape = json::parse(bytes, || "image manifest".to_owned())?;
    if !hint.is_empty() && !shape.media_type.is_empty() && hint != shape.media_type {
        return Err(ImageError::InvalidImage(format!(
            "manifest says its media type is {:?} but it was referenced as {:?}",
            shape.media_type, hint
        )));
    }
    let media_type = if hint.is_empty() {
        shape.media_type.as_str()
    } else {
        hint
    };
    let index = if media_type.is_empty() {
        shape.manifests.is_some() && shape.config.is_none()
    } else if is_index_type(media_type) {
        true
    } else if is_manifest_type(media_type) {
        false
    } else {
        return Err(ImageError::UnsupportedMediaType(media_type.to_owned()));
    };
    if index {
        Index::from_json(bytes).map(ManifestOrIndex::Index)
    } else {
        Manifest::from_json(bytes).map(ManifestOrIndex::Manifest)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn d(n: u8) -> Digest {
        Digest::of_bytes(&[n])
    }

    fn sample() -> Manifest {
        let mut layer = Descriptor::new(mt::OCI_LAYER_GZIP, d(2), 200);
        layer.annotations.insert("z".into(), "1".into());
        layer.annotations.insert("a".into(), "<2>".into());
        Manifest::new(
            ManifestFormat::Oci,
            Descriptor::new(mt::OCI_CONFIG, d(1), 100),
            vec![layer],
        )
    }

    #[test]
    fn manifest_canonical_bytes() {
        let want = format!(
            "{{\n  \"schemaVersion\": 2,\n  \"mediaType\": \"{}\",\n  \"config\": {{\n    \"mediaType\": \"{}\",\n    \"digest\": \"{}\",\n    \"size\": 100\n  }},\n  \"layers\": [\n    {{\n      \"mediaType\": \"{}\",\n      \"digest\": \"{}\",\n      \"size\": 200,\n      \"annotations\": {{\n        \"a\": \"\\u003c2\\u003e\",\n        \"z\": \"1\"\n      }}\n    }}\n  ]\n}}",
            mt::OCI_MANIFEST,
            mt::OCI_CONFIG,
            d(1),
            mt::OCI_LAYER_GZIP,
            d(2)
        );
        let bytes = sample().to_json().unwrap();
        assert_eq!(String::from_utf8(bytes.clone()).unwrap(), want);
        // Stable across runs and roundtrips.
        for _ in 0..10 {
            let again = Manifest::from_json(&bytes).unwrap().to_json().unwrap();
            assert_eq!(again, bytes);
        }
    }

    #[test]
    fn index_canonical_bytes() {
        let mut entry = Descriptor::new(mt::OCI_MANIFEST, d(3), 300);
        entry.platform = Some(Platform {
            architecture: "arm".into(),
            os: "linux".into(),
            variant: "v7".into(),
            ..Platform::default()
        });
        let idx = Index::new(ManifestFormat::Oci, vec![entry]);
        let want = format!(
            "{{\n  \"schemaVersion\": 2,\n  \"mediaType\": \"{}\",\n  \"manifests\": [\n    {{\n      \"mediaType\": \"{}\",\n      \"digest\": \"{}\",\n      \"size\": 300,\n      \"platform\": {{\n        \"architecture\": \"arm\",\n        \"os\": \"linux\",\n        \"variant\": \"v7\"\n      }}\n    }}\n  ]\n}}",
            mt::OCI_INDEX,
            mt::OCI_MANIFEST,
            d(3)
        );
        assert_eq!(String::from_utf8(idx.to_json().unwrap()).unwrap(), want);
        let empty = Index::new(ManifestFormat::Oci, vec![]);
        assert_eq!(
            String::from_utf8(empty.to_json().unwrap()).unwrap(),
            format!(
                "{{\n  \"schemaVersion\": 2,\n  \"mediaType\": \"{}\",\n  \"manifests\": []\n}}",
                mt::OCI_INDEX
            )
        );
    }

    #[test]
    fn sniffing_manifest_or_index() {
        let m = sample().to_json().unwrap();
        assert!(matches!(
            parse_manifest_or_index(&m, ""),
            Ok(ManifestOrIndex::Manifest(_))
        ));
        assert!(matches!(
            parse_manifest_or_index(&m, mt::OCI_MANIFEST),
            Ok(ManifestOrIndex::Manifest(_))
        ));
        assert!(parse_manifest_or_index(&m, mt::OCI_INDEX).is_err());
        let i = Index::new(ManifestFormat::Docker, vec![])
            .to_json()
            .unwrap();
        assert!(matches!(
            parse_manifest_or_index(&i, ""),
            Ok(ManifestOrIndex::Index(_))
        ));
        let bare = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(
            parse_manifest_or_index(bare, ""),
            Ok(ManifestOrIndex::Index(_))
        ));
        assert!(parse_manifest_or_index(br#"{"schemaVersion":1}"#, "application/x-foo").is_err());
        assert!(Manifest::from_json(
            br#"{"schemaVersion":1,"config":{"mediaType":"","digest":"sha256:0","size":1}}"#
        )
        .is_err());
        assert!(Manifest::from_json(
            &format!(
                r#"{{"schemaVersion":2,"config":{{"digest":"{}","size":-1}}}}"#,
                d(1)
            )
            .into_bytes()
        )
        .is_err());
    }

    #[test]
    fn platform_parse_and_match() {
        let p = |s: &str| Platform::parse(s).unwrap();
        assert_eq!(p("linux/amd64").to_string(), "linux/amd64");
        assert_eq!(p("linux/x86_64").to_string(), "linux/amd64");
        assert_eq!(p("linux/aarch64").to_string(), "linux/arm64");
        assert_eq!(p("linux/arm64/v8").to_string(), "linux/arm64");
        assert_eq!(p("linux/arm/v7").to_string(), "linux/arm/v7");
        for bad in ["", "linux", "linux/", "/amd64", "a/b/c/d", "linux/am d64"] {
            assert!(Platform::parse(bad).is_err(), "{bad:?}");
        }
        let arm64v8 = Platform {
            variant: "v8".into(),
            ..p("linux/arm64")
        };
        assert!(p("linux/arm64").matches(&arm64v8));
        assert!(p("linux/arm").matches(&p("linux/arm/v7")));
        assert!(!p("linux/arm/v6").matches(&p("linux/arm/v7")));
        assert!(!p("linux/amd64").matches(&p("linux/arm64")));
        assert!(!p("windows/amd64").matches(&p("linux/amd64")));
    }

    #[test]
    fn non_distributable_layers() {
        assert!(is_non_distributable(mt::OCI_LAYER_NONDIST_GZIP));
        assert!(is_non_distributable(mt::DOCKER_LAYER_FOREIGN_GZIP));
        assert!(!is_non_distributable(mt::OCI_LAYER_GZIP));
        assert!(!is_non_distributable(mt::DOCKER_LAYER_GZIP));
    }

    #[test]
    fn layer_media_types() {
        for (mt_, want) in [
            (mt::OCI_LAYER_TAR, Some(Compression::None)),
            (mt::OCI_LAYER_GZIP, Some(Compression::Gzip)),
            (mt::OCI_LAYER_ZSTD, Some(Compression::Zstd)),
            (mt::DOCKER_LAYER_GZIP, Some(Compression::Gzip)),
            (mt::OCTET_STREAM, None),
            ("application/vnd.oci.image.layer.v1.tar+encrypted", None),
        ] {
            assert_eq!(layer_compression(mt_), want, "{mt_}");
        }
        for format in [ManifestFormat::Oci, ManifestFormat::Docker] {
            for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
                assert_eq!(layer_compression(format.layer_media_type(c)), Some(c));
            }
        }
    }
}
