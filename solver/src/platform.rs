//! Target platforms (`linux/amd64`, `linux/arm64/v8`): parsing, display, and the host's own.

use std::fmt;

/// An OS/architecture/variant triple as OCI writes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Default for Platform {
    /// The host's platform.
    fn default() -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: None,
        }
    }
}

impl Platform {
    /// Parses `os/arch[/variant]`; `arch` alone means linux. Names are lower-cased.
    pub fn parse(s: &str) -> Result<Platform, String> {
        let lower = s.trim().to_ascii_lowercase();
        let parts: Vec<&str> = lower.split('/').collect();
        let (os, arch, variant) = match parts.as_slice() {
            [arch] if !arch.is_empty() => ("linux", *arch, None),
            [os, arch] => (*os, *arch, None),
            [os, arch, variant] => (*os, *arch, Some(*variant)),
            _ => {
                return Err(format!(
                    "invalid platform {s:?}: expected os/arch[/variant]"
                ))
            }
        };
        let valid = |p: &str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !valid(os) || !valid(arch) || variant.is_some_and(|v| !valid(v)) {
            return Err(format!(
                "invalid platform {s:?}: expected os/arch[/variant]"
            ));
        }
        let arch = match arch {
            "x86_64" | "x86-64" => "amd64",
            "aarch64" => "arm64",
            a => a,
        };
        Ok(Platform {
            os: os.into(),
            architecture: arch.into(),
            variant: variant.map(str::to_string),
        })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("linux/amd64", Some("linux/amd64")),
            ("LINUX/X86_64", Some("linux/amd64")),
            ("arm64", Some("linux/arm64")),
            ("linux/arm/v7", Some("linux/arm/v7")),
            ("linux/aarch64/v8", Some("linux/arm64/v8")),
            ("", None),
            ("linux/", None),
            ("a/b/c/d", None),
            ("linux/am d64", None),
        ];
        for (input, want) in cases {
            let got = Platform::parse(input).ok().map(|p| p.to_string());
            assert_eq!(got.as_deref(), *want, "{input:?}");
        }
    }
}
