//! `WWW-Authenticate` challenges (RFC 7235) as registries send them with a 401:
//! `Basic realm="…"` or `Bearer realm="https://auth.example/token",service="…",scope="…"`.

use std::collections::BTreeMap;

/// The auth scheme a registry asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// HTTP basic auth.
    Basic,
    /// A bearer token from a token service.
    Bearer {
        /// The token service's URL.
        realm: String,
        /// The `service` parameter to pass it, if given.
        service: Option<String>,
        /// The scope the registry suggested, if given.
        scope: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` value; `None` for schemes other than Basic and Bearer, and for
/// a Bearer challenge without a realm.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header
        .split_once(char::is_whitespace)
        .unwrap_or((header, ""));
    let params = parse_params(rest);
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: params.get("realm").filter(|r| !r.is_empty())?.clone(),
            service: params.get("service").cloned(),
            scope: params.get("scope").cloned(),
        }),
        _ => None,
    }
}

/// `key=value, key="quoted \" value"` pairs, keys lowercased.
fn parse_params(input: &str) -> BTreeMap<String, String> {
    let mut params = BTreeMap::new();
    let mut chars = input.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && *c != ',') {
            key.push(c);
        }
        if key.is_empty() {
            return params;
        }
        if chars.next() != Some('=') {
            continue;
        }
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => value.extend(chars.next()),
                    other => value.push(other),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != ',') {
                value.push(c);
            }
        }
        params.insert(key.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_table() {
        let bearer = |realm: &str, service: Option<&str>, scope: Option<&str>| {
            Some(Challenge::Bearer {
                realm: realm.into(),
                service: service.map(Into::into),
                scope: scope.map(Into::into),
            })
        };
        let cases = [
            ("Basic realm=\"basic-realm\"", Some(Challenge::Basic)),
            ("basic", Some(Challenge::Basic)),
            (
                "Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\",scope=\"repository:library/busybox:pull\"",
                bearer(
                    "https://auth.docker.io/token",
                    Some("registry.docker.io"),
                    Some("repository:library/busybox:pull"),
                ),
            ),
            (
                "Bearer realm=https://r.example/t, service=reg",
                bearer("https://r.example/t", Some("reg"), None),
            ),
            (
                "Bearer scope=\"repository:a:pull,push\", realm=\"https://r/t\"",
                bearer("https://r/t", None, Some("repository:a:pull,push")),
            ),
            (
                "Bearer realm=\"with \\\"quotes\\\"\"",
                bearer("with \"quotes\"", None, None),
            ),
            ("Bearer service=\"x\"", None),
            ("Negotiate abc", None),
            ("", None),
        ];
        for (header, want) in cases {
            assert_eq!(parse_challenge(header), want, "{header}");
        }
    }
}
