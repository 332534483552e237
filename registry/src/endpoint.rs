//! Where a reference's registry is on the network: Docker Hub's conventions (`docker.io` is
//! served by `registry-1.docker.io`, and its credentials are filed under
//! `https://index.docker.io/v1/`), and which scheme to speak — HTTPS, plain HTTP for
//! `--insecure-registry` hosts, and for loopback hosts HTTPS first with plain HTTP when the
//! server turns out not to speak TLS (as Docker treats `localhost` and `127.0.0.0/8`).

use std::net::IpAddr;

/// Docker Hub's name in references.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that serves Docker Hub's registry API.
pub const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";
/// The key Docker files Docker Hub's credentials under in `config.json`.
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// Which scheme(s) to try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchemePolicy {
    /// HTTPS only.
    Https,
    /// Plain HTTP only (`--insecure-registry`).
    Http,
    /// HTTPS, and plain HTTP if the server does not speak TLS (loopback hosts).
    HttpsThenHttp,
}

/// A registry as a reference names it, and how to reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryHost {
    /// The name in references (`docker.io`, `127.0.0.1:5000`).
    pub name: String,
    /// The host (and port) of its API (`registry-1.docker.io`, `127.0.0.1:5000`).
    pub api_host: String,
    /// Which scheme to speak.
    pub scheme: SchemePolicy,
}

impl RegistryHost {
    /// The host for a reference's domain (`docker.io`, `index.docker.io`, `host:port`), given
    /// the hosts the user declared insecure (`host:port`, or `host` for any port).
    pub fn for_domain(domain: &str, insecure: &[String]) -> RegistryHost {
        let name = normalize_server(domain);
        let api_host = if name == DOCKER_HUB {
            DOCKER_HUB_API_HOST.to_owned()
        } else {
            name.clone()
        };
        let host_only = strip_port(&name);
        let scheme = if insecure
            .iter()
            .map(|entry| normalize_server(entry))
            .any(|entry| entry == name || entry == host_only)
        {
            SchemePolicy::Http
        } else if is_loopback(host_only) {
            SchemePolicy::HttpsThenHttp
        } else {
            SchemePolicy::Https
        };
        RegistryHost {
            name,
            api_host,
            scheme,
        }
    }

    /// The key of this registry's credentials in Docker's `config.json` and the server URL
    /// credential helpers are asked about.
    pub fn auth_key(&self) -> String {
        auth_key(&self.name)
    }
}

/// The registry name a user or a config key gives (`https://index.docker.io/v1/`,
/// `http://host:5000/`, `Host:5000`) in the form references use (`docker.io`, `host:5000`).
pub fn normalize_server(server: &str) -> String {
    let without_scheme = server
        .strip_prefix("https://")
        .or_else(|| server.strip_prefix("http://"))
        .unwrap_or(server);
    let host = without_scheme
        .split('/')
        .next()
        .unwrap_or(without_scheme)
        .to_ascii_lowercase();
    match host.as_str() {
        "" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB.to_owned()
        }
        _ => host,
    }
}

/// The `config.json` key for a registry name (in reference form).
pub fn auth_key(name: &str) -> String {
    if name == DOCKER_HUB {
        DOCKER_HUB_AUTH_KEY.to_owned()
    } else {
        name.to_owned()
    }
}

/// `host` of `host:port` (and of `[v6]:port`, without brackets).
fn strip_port(name: &str) -> &str {
    if let Some(rest) = name.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match name.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => name,
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_table() {
        let insecure = vec![
            "insecure.example:5000".to_owned(),
            "plain.example".to_owned(),
        ];
        let cases = [
            (
                "docker.io",
                "docker.io",
                DOCKER_HUB_API_HOST,
                SchemePolicy::Https,
            ),
            (
                "index.docker.io",
                "docker.io",
                DOCKER_HUB_API_HOST,
                SchemePolicy::Https,
            ),
            ("ghcr.io", "ghcr.io", "ghcr.io", SchemePolicy::Https),
            (
                "localhost:5000",
                "localhost:5000",
                "localhost:5000",
                SchemePolicy::HttpsThenHttp,
            ),
            (
                "127.0.0.1:5000",
                "127.0.0.1:5000",
                "127.0.0.1:5000",
                SchemePolicy::HttpsThenHttp,
            ),
            (
                "127.0.0.2",
                "127.0.0.2",
                "127.0.0.2",
                SchemePolicy::HttpsThenHttp,
            ),
            (
                "[::1]:5000",
                "[::1]:5000",
                "[::1]:5000",
                SchemePolicy::HttpsThenHttp,
            ),
            (
                "insecure.example:5000",
                "insecure.example:5000",
                "insecure.example:5000",
                SchemePolicy::Http,
            ),
            (
                "insecure.example:6000",
                "insecure.example:6000",
                "insecure.example:6000",
                SchemePolicy::Https,
            ),
            (
                "plain.example:7000",
                "plain.example:7000",
                "plain.example:7000",
                SchemePolicy::Http,
            ),
        ];
        for (domain, name, api, scheme) in cases {
            let host = RegistryHost::for_domain(domain, &insecure);
            assert_eq!(host.name, name, "{domain}");
            assert_eq!(host.api_host, api, "{domain}");
            assert_eq!(host.scheme, scheme, "{domain}");
        }
    }

    #[test]
    fn servers_and_auth_keys() {
        for (server, name) in [
            ("https://index.docker.io/v1/", "docker.io"),
            ("docker.io", "docker.io"),
            ("", "docker.io"),
            ("http://Host:5000/", "host:5000"),
            ("host:5000", "host:5000"),
        ] {
            assert_eq!(normalize_server(server), name, "{server:?}");
        }
        assert_eq!(auth_key("docker.io"), DOCKER_HUB_AUTH_KEY);
        assert_eq!(auth_key("host:5000"), "host:5000");
    }
}
