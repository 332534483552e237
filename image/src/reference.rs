//! Docker image references: parsing, normalisation and the familiar short form, exactly as
//! Docker's `distribution/reference` does it.
//!
//! [`Reference::parse`] is `ParseNormalizedNamed` followed by `TagNameOnly`: `app` becomes
//! `docker.io/library/app:latest`, `user/app` becomes `docker.io/user/app:latest`,
//! `localhost:5000/x:1` and `registry.example.com/a/b@sha256:…` keep their registry, and a
//! reference with a digest but no tag gets no tag. [`Reference::familiar`] gives the short form
//! Docker prints (`app:latest`, `user/app:1`).
//!
//! The grammar is Docker's, written with the same regular expressions:
//!
//! ```text
//! reference        := name [ ":" tag ] [ "@" digest ]
//! name             := [domain '/'] remote-name
//! domain           := host [':' port-number]
//! host             := domain-name | '[' IPv6 hex and colons ']'
//! domain-name      := domain-component ['.' domain-component]*
//! domain-component := /([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])/
//! remote-name      := path-component ['/' path-component]*
//! path-component   := /[a-z0-9]+/ [separator /[a-z0-9]+/]*
//! separator        := /[._]|__|[-]+/
//! tag              := /[\w][\w.-]{0,127}/
//! digest           := algorithm ":" hex   (sha256, sha384 or sha512, lowercase hex)
//! ```
//!
//! The whole name (registry included, after normalisation) is at most 255 characters, and a
//! bare 64-hex string is refused as a name (it would be mistaken for an image ID).

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use regex::Regex;

use crate::error::{shown, ImageError};

/// Docker Hub's canonical registry name.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// The old Docker Hub name, normalised to [`DEFAULT_DOMAIN`].
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// The namespace of official images on Docker Hub.
const OFFICIAL_REPO_PREFIX: &str = "library/";
/// The tag [`Reference::parse`] adds to a reference with neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";
/// The longest name (registry and path) Docker accepts.
pub const NAME_TOTAL_LENGTH_MAX: usize = 255;

const PATH_COMPONENT: &str = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*";
const DOMAIN_COMPONENT: &str = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
const TAG: &str = r"[0-9A-Za-z_][0-9A-Za-z_.-]{0,127}";
const DIGEST: &str = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9A-Fa-f]{32,}";

fn domain_and_port() -> String {
    let domain_name = format!(r"{DOMAIN_COMPONENT}(?:\.{DOMAIN_COMPONENT})*");
    let host = format!(r"(?:{domain_name}|\[(?:[a-fA-F0-9:]+)\])");
    format!(r"{host}(?::[0-9]+)?")
}

fn remote_name() -> String {
    format!(r"{PATH_COMPONENT}(?:/{PATH_COMPONENT})*")
}

/// Docker's `ReferenceRegexp`, anchored: captures name, tag, digest.
static REFERENCE_RE: LazyLock<Option<Regex>> = LazyLock::new(|| {
    let name = format!(r"(?:{}/)?{}", domain_and_port(), remote_name());
    Regex::new(&format!(r"^({name})(?::({TAG}))?(?:@({DIGEST}))?$")).ok()
});

/// Docker's `anchoredNameRegexp`: captures domain and path.
static NAME_RE: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(&format!(
        r"^(?:({})/)?({})$",
        domain_and_port(),
        remote_name()
    ))
    .ok()
});

/// Docker's `anchoredIdentifierRegexp`: an image ID.
fn is_identifier(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A parsed Docker image reference.
///
/// The domain is empty only for the odd names Docker itself accepts without one (a first
/// component that is neither a valid host nor a path component cannot occur after
/// normalisation, but e.g. `a_b.com/x` is a valid path with no domain).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl Reference {
    /// Parses and normalises `s` as `docker build -t` and `docker pull` do
    /// (`ParseNormalizedNamed` + `TagNameOnly`): adds `docker.io`, `library/` and `:latest`
    /// where Docker would.
    pub fn parse(s: &str) -> Result<Reference, ImageError> {
        Ok(Reference::parse_normalized_named(s)?.tag_name_only())
    }

    /// `ParseNormalizedNamed`: normalises the registry and `library/`, but adds no tag.
    pub fn parse_normalized_named(s: &str) -> Result<Reference, ImageError> {
        if is_identifier(s) {
            return Err(invalid(
                s,
                "cannot specify 64-byte hexadecimal strings as a repository name",
            ));
        }
        let (domain, remainder) = split_docker_domain(s);
        let remote = remainder.split(':').next().unwrap_or(&remainder);
        if remote.to_lowercase() != remote {
            return Err(invalid(
                s,
                format!(
                    "repository name ({}) must be lowercase",
                    shown(remote.as_bytes())
                ),
            ));
        }
        Reference::parse_strict(&format!("{domain}/{remainder}")).map_err(|error| match error {
            ImageError::InvalidReference { reason, .. } => invalid(s, reason),
            other => other,
        })
    }

    /// Docker's `Parse`: the reference exactly as written, without normalisation (so `app`
    /// has no domain and path `app`).
    pub fn parse_strict(s: &str) -> Result<Reference, ImageError> {
        let (Some(reference_re), Some(name_re)) = (REFERENCE_RE.as_ref(), NAME_RE.as_ref()) else {
            return Err(invalid(
                s,
                "internal error: reference grammar did not compile",
            ));
        };
        let Some(caps) = reference_re.captures(s) else {
            if s.is_empty() {
                return Err(invalid(
                    s,
                    "repository name must have at least one component",
                ));
            }
            if reference_re.is_match(&s.to_lowercase()) {
                return Err(invalid(s, "repository name must be lowercase"));
            }
            return Err(invalid(s, "invalid reference format"));
        };
        let name = caps.get(1).map_or("", |m| m.as_str());
        if name.len() > NAME_TOTAL_LENGTH_MAX {
            return Err(invalid(
                s,
                format!("repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters"),
            ));
        }
        let Some(name_caps) = name_re.captures(name) else {
            return Err(invalid(s, "invalid reference format"));
        };
        let domain = name_caps.get(1).map_or("", |m| m.as_str()).to_owned();
        let path = name_caps.get(2).map_or("", |m| m.as_str()).to_owned();
        let tag = caps.get(2).map(|m| m.as_str().to_owned());
        let digest = match caps.get(3) {
            Some(m) => {
                validate_digest(m.as_str()).map_err(|reason| invalid(s, reason))?;
                Some(m.as_str().to_owned())
            }
            None => None,
        };
        Ok(Reference {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// `TagNameOnly`: adds `:latest` if the reference has neither tag nor digest.
    pub fn tag_name_only(mut self) -> Reference {
        if self.tag.is_none() && self.digest.is_none() {
            self.tag = Some(DEFAULT_TAG.to_owned());
        }
        self
    }

    /// The registry (`docker.io`, `localhost:5000` …); empty only for un-normalised names.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path inside the registry (`library/app`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The full repository name, `domain/path`.
    pub fn name(&self) -> String {
        if self.domain.is_empty() {
            self.path.clone()
        } else {
            format!("{}/{}", self.domain, self.path)
        }
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest (`sha256:…`, `sha512:…`), if any.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// A copy with the tag replaced.
    pub fn with_tag(&self, tag: &str) -> Result<Reference, ImageError> {
        let tag_re = Regex::new(&format!("^{TAG}$")).map_err(|e| invalid(tag, e.to_string()))?;
        if !tag_re.is_match(tag) {
            return Err(invalid(tag, "invalid tag format"));
        }
        let mut copy = self.clone();
        copy.tag = Some(tag.to_owned());
        Ok(copy)
    }

    /// The repository name as Docker shows it: without `docker.io/`, and without `library/`
    /// for official images (`app`, `user/app`, `localhost:5000/x`).
    pub fn familiar_name(&self) -> String {
        if self.domain != DEFAULT_DOMAIN {
            return self.name();
        }
        match self.path.strip_prefix(OFFICIAL_REPO_PREFIX) {
            Some(rest) if !rest.contains('/') => rest.to_owned(),
            _ => self.path.clone(),
        }
    }

    /// The whole reference as Docker shows it (`app:latest`, `user/app:1`,
    /// `localhost:5000/x@sha256:…`).
    pub fn familiar(&self) -> String {
        with_suffixes(
            self.familiar_name(),
            self.tag.as_deref(),
            self.digest.as_deref(),
        )
    }
}

fn with_suffixes(mut out: String, tag: Option<&str>, digest: Option<&str>) -> String {
    if let Some(tag) = tag {
        out.push(':');
        out.push_str(tag);
    }
    if let Some(digest) = digest {
        out.push('@');
        out.push_str(digest);
    }
    out
}

impl fmt::Display for Reference {
    /// The full normalised form, `docker.io/library/app:latest`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&with_suffixes(
            self.name(),
            self.tag.as_deref(),
            self.digest.as_deref(),
        ))
    }
}

impl FromStr for Reference {
    type Err = ImageError;

    fn from_str(s: &str) -> Result<Reference, ImageError> {
        Reference::parse(s)
    }
}

fn invalid(reference: &str, reason: impl Into<String>) -> ImageError {
    ImageError::InvalidReference {
        reference: shown(reference.as_bytes()),
        reason: reason.into(),
    }
}

/// Docker's `splitDockerDomain`: decides whether the first component is a registry.
fn split_docker_domain(name: &str) -> (String, String) {
    let Some((maybe_domain, maybe_remote)) = name.split_once('/') else {
        return (
            DEFAULT_DOMAIN.to_owned(),
            format!("{OFFICIAL_REPO_PREFIX}{name}"),
        );
    };
    let (domain, remote) = if maybe_domain == "localhost" {
        (maybe_domain, maybe_remote)
    } else if maybe_domain == LEGACY_DEFAULT_DOMAIN {
        (DEFAULT_DOMAIN, maybe_remote)
    } else if maybe_domain.contains(['.', ':']) || maybe_domain.to_lowercase() != maybe_domain {
        (maybe_domain, maybe_remote)
    } else {
        (DEFAULT_DOMAIN, name)
    };
    if domain == DEFAULT_DOMAIN && !remote.contains('/') {
        return (domain.to_owned(), format!("{OFFICIAL_REPO_PREFIX}{remote}"));
    }
    (domain.to_owned(), remote.to_owned())
}

/// go-digest's `Digest.Validate` for the algorithms Docker has (sha256, sha384, sha512).
fn validate_digest(digest: &str) -> Result<(), &'static str> {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err("invalid checksum digest format");
    };
    let want_len = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err("unsupported digest algorithm"),
    };
    if hex.len() != want_len {
        return Err("invalid checksum digest length");
    }
    if !hex
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err("invalid checksum digest format");
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn normalised_table() {
        let d = format!("sha256:{HEX}");
        // (input, normalised full form, familiar form)
        let cases: Vec<(String, String, String)> = vec![
            (
                "app".into(),
                "docker.io/library/app:latest".into(),
                "app:latest".into(),
            ),
            (
                "app:1.0".into(),
                "docker.io/library/app:1.0".into(),
                "app:1.0".into(),
            ),
            (
                "user/app".into(),
                "docker.io/user/app:latest".into(),
                "user/app:latest".into(),
            ),
            (
                "user/app:1".into(),
                "docker.io/user/app:1".into(),
                "user/app:1".into(),
            ),
            (
                "docker.io/app".into(),
                "docker.io/library/app:latest".into(),
                "app:latest".into(),
            ),
            (
                "index.docker.io/user/app".into(),
                "docker.io/user/app:latest".into(),
                "user/app:latest".into(),
            ),
            (
                "docker.io/library/app:2".into(),
                "docker.io/library/app:2".into(),
                "app:2".into(),
            ),
            (
                "docker.io/library/a/b".into(),
                "docker.io/library/a/b:latest".into(),
                "library/a/b:latest".into(),
            ),
            (
                "localhost/x".into(),
                "localhost/x:latest".into(),
                "localhost/x:latest".into(),
            ),
            (
                "localhost:5000/x:1".into(),
                "localhost:5000/x:1".into(),
                "localhost:5000/x:1".into(),
            ),
            (
                format!("registry.example.com/a/b@{d}"),
                format!("registry.example.com/a/b@{d}"),
                format!("registry.example.com/a/b@{d}"),
            ),
            (
                format!("app:tag@{d}"),
                format!("docker.io/library/app:tag@{d}"),
                format!("app:tag@{d}"),
            ),
            (
                format!("app@{d}"),
                format!("docker.io/library/app@{d}"),
                format!("app@{d}"),
            ),
            (
                "a.b-c__d---e/f_g.h".into(),
                "a.b-c__d---e/f_g.h:latest".into(),
                "a.b-c__d---e/f_g.h:latest".into(),
            ),
            (
                "foo/a-b__c.d_e".into(),
                "docker.io/foo/a-b__c.d_e:latest".into(),
                "foo/a-b__c.d_e:latest".into(),
            ),
            (
                "[::1]:5000/x".into(),
                "[::1]:5000/x:latest".into(),
                "[::1]:5000/x:latest".into(),
            ),
            (
                "Example.COM/x".into(),
                "Example.COM/x:latest".into(),
                "Example.COM/x:latest".into(),
            ),
            (
                "UPPER/x".into(),
                "UPPER/x:latest".into(),
                "UPPER/x:latest".into(),
            ),
            (
                "app:_T.a-g".into(),
                "docker.io/library/app:_T.a-g".into(),
                "app:_T.a-g".into(),
            ),
            (
                format!("sha256:{HEX}"),
                format!("docker.io/library/sha256:{HEX}"),
                format!("sha256:{HEX}"),
            ),
        ];
        for (input, full, familiar) in cases {
            let r = Reference::parse(&input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.to_string(), full, "{input}");
            assert_eq!(r.familiar(), familiar, "{input}");
            // Normalisation is idempotent.
            let again = Reference::parse(&full).unwrap_or_else(|e| panic!("{full}: {e}"));
            assert_eq!(again, r, "{input}");
        }
    }

    #[test]
    fn parts() {
        let r = Reference::parse("localhost:5000/a/b:v2").unwrap();
        assert_eq!(r.domain(), "localhost:5000");
        assert_eq!(r.path(), "a/b");
        assert_eq!(r.name(), "localhost:5000/a/b");
        assert_eq!(r.tag(), Some("v2"));
        assert_eq!(r.digest(), None);
        assert_eq!(r.familiar_name(), "localhost:5000/a/b");
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(
            (r.domain(), r.path(), r.tag()),
            ("docker.io", "library/busybox", Some("latest"))
        );
        assert_eq!(
            r.with_tag("1.36").unwrap().to_string(),
            "docker.io/library/busybox:1.36"
        );
        assert!(r.with_tag("-bad").is_err());
        // Without TagNameOnly there is no tag.
        let r = Reference::parse_normalized_named("busybox").unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.to_string(), "docker.io/library/busybox");
    }

    #[test]
    fn invalid_table() {
        let long_component = "a".repeat(NAME_TOTAL_LENGTH_MAX);
        let long_tag = format!("app:{}", "t".repeat(129));
        let cases: Vec<(String, &str)> = vec![
            // Docker normalises "" to "docker.io/library/" before parsing.
            (String::new(), "invalid reference format"),
            (HEX.into(), "64-byte hexadecimal"),
            ("App".into(), "must be lowercase"),
            ("user/App".into(), "must be lowercase"),
            (
                "Example.com/App".into(),
                "repository name (App) must be lowercase",
            ),
            ("app:".into(), "invalid reference format"),
            ("app:-tag".into(), "invalid reference format"),
            ("app:.tag".into(), "invalid reference format"),
            (long_tag, "invalid reference format"),
            ("app@sha256:abc".into(), "invalid reference format"),
            (
                format!("app@sha256:{}", &HEX[..63]),
                "invalid checksum digest length",
            ),
            (
                format!("app@sha256:{}", &HEX[..31]),
                "invalid reference format",
            ),
            (
                format!("app@sha256:{HEX}0"),
                "invalid checksum digest length",
            ),
            (format!("app@md5:{HEX}"), "unsupported digest algorithm"),
            (
                format!("app@sha256:{}", HEX.to_uppercase()),
                "invalid checksum digest format",
            ),
            ("a//b".into(), "invalid reference format"),
            ("a/".into(), "invalid reference format"),
            ("/a".into(), "invalid reference format"),
            ("a__-b".into(), "invalid reference format"),
            ("a___b".into(), "invalid reference format"),
            ("a..b".into(), "invalid reference format"),
            ("-a".into(), "invalid reference format"),
            ("a-".into(), "invalid reference format"),
            ("a b".into(), "invalid reference format"),
            ("localhost:port/x".into(), "invalid reference format"),
            ("ex-.com/x".into(), "invalid reference format"),
            (
                format!("x/{long_component}"),
                "not be more than 255 characters",
            ),
        ];
        for (input, want) in cases {
            match Reference::parse(&input) {
                Ok(r) => panic!("{input:?} parsed as {r}"),
                Err(e) => assert!(
                    e.to_string().contains(want),
                    "{input:?}: {e} (want {want:?})"
                ),
            }
        }
    }

    #[test]
    fn name_length_boundary() {
        // docker.io/library/ is 18 characters: 237 more make exactly 255.
        let ok = "a".repeat(NAME_TOTAL_LENGTH_MAX - "docker.io/library/".len());
        assert!(Reference::parse(&ok).is_ok());
        assert!(Reference::parse(&format!("{ok}a")).is_err());
    }

    #[test]
    fn strict_parse_keeps_input() {
        let r = Reference::parse_strict("app").unwrap();
        assert_eq!((r.domain(), r.path(), r.tag()), ("", "app", None));
        assert_eq!(r.to_string(), "app");
    }
}
