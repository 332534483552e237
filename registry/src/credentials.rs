//! Credentials for a registry: a user name and password, or an identity (refresh) token as
//! credential helpers hand out for OAuth logins. Their `Debug` form never shows the secret.

use std::fmt;

use base64::prelude::{Engine as _, BASE64_STANDARD};

/// What a registry login consists of.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A user name and password (or personal access token).
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: String,
    },
    /// An OAuth2 refresh token, exchanged for bearer tokens at the registry's token service.
    IdentityToken(String),
}

impl Credentials {
    /// The `Authorization` header value for HTTP basic auth, if these are basic credentials.
    pub fn basic_header(&self) -> Option<String> {
        match self {
            Credentials::Basic { username, password } => Some(format!(
                "Basic {}",
                BASE64_STANDARD.encode(format!("{username}:{password}"))
            )),
            Credentials::IdentityToken(_) => None,
        }
    }

    /// The user name, if any.
    pub fn username(&self) -> Option<&str> {
        match self {
            Credentials::Basic { username, .. } => Some(username),
            Credentials::IdentityToken(_) => None,
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Credentials::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

/// Decodes a `config.json` `auth` value (`base64(user:password)`).
pub(crate) fn decode_basic_auth(auth: &str) -> Option<Credentials> {
    let bytes = BASE64_STANDARD.decode(auth.trim()).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (username, password) = text.split_once(':')?;
    Some(Credentials::Basic {
        username: username.to_owned(),
        password: password.to_owned(),
    })
}

/// Encodes `user:password` as a `config.json` `auth` value.
pub(crate) fn encode_basic_auth(username: &str, password: &str) -> String {
    BASE64_STANDARD.encode(format!("{username}:{password}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_round_trip_and_header() {
        let encoded = encode_basic_auth("alice", "pa:ss");
        let creds = decode_basic_auth(&encoded).unwrap();
        assert_eq!(creds.username(), Some("alice"));
        assert_eq!(
            creds,
            Credentials::Basic {
                username: "alice".into(),
                password: "pa:ss".into()
            }
        );
        assert_eq!(creds.basic_header().unwrap(), format!("Basic {encoded}"));
        assert!(decode_basic_auth("not base64!").is_none());
        assert!(decode_basic_auth(&BASE64_STANDARD.encode("nocolon")).is_none());
    }

    #[test]
    fn debug_hides_secrets() {
        let shown = format!(
            "{:?} {:?}",
            Credentials::Basic {
                username: "u".into(),
                password: "hunter2".into()
            },
            Credentials::IdentityToken("tok123".into())
        );
        assert!(
            !shown.contains("hunter2") && !shown.contains("tok123"),
            "{shown}"
        );
    }
}
