//! Authenticating to one registry: anonymous, HTTP basic, or bearer tokens fetched from the
//! token service a `WWW-Authenticate: Bearer realm=…,service=…` challenge names — with GET and
//! basic credentials (or anonymously), or with POST and an identity token (OAuth2 refresh
//! token) — and kept per scope until they expire, so one pull or push asks for each token once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use ureq::http::Method;

use crate::challenge::Challenge;
use crate::credentials::Credentials;
use crate::error::RegistryError;
use crate::transport::{HttpRequest, RequestBody, Transport, TransportError};
use crate::url::{query_escape, with_query};

/// A token's lifetime when the token service does not say (the spec's default).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// Tokens are renewed this long before they expire.
const TOKEN_EXPIRY_MARGIN: Duration = Duration::from_secs(5);
/// The most of a token response that is read.
const MAX_TOKEN_RESPONSE_BYTES: u64 = 1 << 20;
/// The OAuth2 client ID rbuild names itself by.
const CLIENT_ID: &str = "rbuild";

/// The scope of a pull from `repository`.
pub(crate) fn pull_scope(repository: &str) -> String {
    format!("repository:{repository}:pull")
}

/// The scope of a push to `repository`.
pub(crate) fn push_scope(repository: &str) -> String {
    format!("repository:{repository}:pull,push")
}

/// What a token service answers.
#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: String,
    #[serde(default)]
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

struct CachedToken {
    value: String,
    renew_at: Instant,
}

#[derive(Default)]
struct AuthState {
    /// The scheme the registry asked for last.
    challenge: Option<Challenge>,
    /// Bearer tokens by their scopes (sorted, space-separated).
    tokens: HashMap<String, CachedToken>,
}

/// The auth state of one registry.
pub(crate) struct Authenticator {
    /// The registry's name, for errors.
    registry: String,
    /// The server name `rbuild login` takes for it.
    login_name: String,
    credentials: Option<Credentials>,
    state: Mutex<AuthState>,
    /// Held while a token is fetched.
    fetching: Mutex<()>,
}

impl Authenticator {
    pub fn new(registry: &str, login_name: &str, credentials: Option<Credentials>) -> Self {
        Authenticator {
            registry: registry.to_owned(),
            login_name: login_name.to_owned(),
            credentials,
            state: Mutex::new(AuthState::default()),
            fetching: Mutex::new(()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, AuthState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records the scheme the registry asked for.
    pub fn learn(&self, challenge: Challenge) {
        self.state().challenge = Some(challenge);
    }

    /// After a 401 with `challenge`: records it and forgets the token that was refused.
    /// Whether trying again can help (false when no credentials exist for a basic challenge).
    pub fn renew(&self, challenge: Option<Challenge>, scopes: &[String]) -> bool {
        let mut state = self.state();
        if let Some(challenge) = challenge {
            state.challenge = Some(challenge);
        }
        state.tokens.remove(&scope_key(scopes));
        match &state.challenge {
            Some(Challenge::Basic) => self
                .credentials
                .as_ref()
                .is_some_and(|c| c.basic_header().is_some()),
            Some(Challenge::Bearer { .. }) => true,
            None => false,
        }
    }

    /// The `Authorization` value for a request needing `scopes`, fetching a token if the
    /// registry wants one and none is cached; `None` while the registry asked for nothing.
    pub fn authorization(
        &self,
        transport: &Transport,
        scopes: &[String],
    ) -> Result<Option<String>, RegistryError> {
        let key = scope_key(scopes);
        if let Some(header) = self.cached_token(&key) {
            return Ok(Some(header));
        }
        let challenge = self.state().challenge.clone();
        match challenge {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(self
                .credentials
                .as_ref()
                .and_then(Credentials::basic_header)),
            Some(Challenge::Bearer { realm, service, .. }) => {
                // One fetch at a time, so that threads needing the same scope share a token.
                let _fetching = self.fetching.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(header) = self.cached_token(&key) {
                    return Ok(Some(header));
                }
                let token = self.fetch_token(transport, &realm, service.as_deref(), scopes)?;
                let header = format!("Bearer {}", token.value);
                self.state().tokens.insert(key, token);
                Ok(Some(header))
            }
        }
    }

    /// The `Authorization` value of the live cached token for the scopes `key`, if any.
    fn cached_token(&self, key: &str) -> Option<String> {
        let state = self.state();
        let token = state.tokens.get(key)?;
        (Instant::now() < token.renew_at).then(|| format!("Bearer {}", token.value))
    }

    /// Asks the token service `realm` for a token for `scopes`.
    fn fetch_token(
        &self,
        transport: &Transport,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<CachedToken, RegistryError> {
        let form;
        let (request, authorization) = match &self.credentials {
            Some(Credentials::IdentityToken(refresh_token)) => {
                let mut fields = vec![
                    ("grant_type", "refresh_token".to_owned()),
                    ("refresh_token", refresh_token.clone()),
                    ("client_id", CLIENT_ID.to_owned()),
                ];
                if let Some(service) = service {
                    fields.push(("service", service.to_owned()));
                }
                if !scopes.is_empty() {
                    fields.push(("scope", scopes.join(" ")));
                }
                form = fields
                    .iter()
                    .map(|(k, v)| format!("{k}={}", query_escape(v)))
                    .collect::<Vec<_>>()
                    .join("&");
                let request = HttpRequest::new(Method::POST, realm)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(RequestBody::Bytes(form.as_bytes()));
                (request, None)
            }
            credentials => {
                let mut url = realm.to_owned();
                if let Some(service) = service {
                    url = with_query(&url, "service", service);
                }
                for scope in scopes {
                    url = with_query(&url, "scope", scope);
                }
                if let Some(Credentials::Basic { username, .. }) = credentials {
                    url = with_query(&url, "account", username);
                }
                let basic = credentials.as_ref().and_then(Credentials::basic_header);
                (HttpRequest::new(Method::GET, url), basic)
            }
        };
        let mut response = transport
            .send(&request, authorization.as_deref())
            .map_err(|e| self.token_service_error(realm, e))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_TOKEN_RESPONSE_BYTES)
            .read_to_vec()
            .map_err(|e| RegistryError::Connection {
                url: realm.to_owned(),
                reason: e.to_string(),
            })?;
        if status == 401 || status == 403 {
            return Err(self.unauthorized("a token", crate::session::registry_message(&body)));
        }
        if status != 200 {
            return Err(RegistryError::protocol(
                realm,
                format!("token service answered {status}"),
            ));
        }
        let parsed: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| RegistryError::protocol(realm, format!("invalid token response: {e}")))?;
        let value = if parsed.token.is_empty() {
            parsed.access_token
        } else {
            parsed.token
        };
        if value.is_empty() {
            return Err(RegistryError::protocol(
                realm,
                "the token response has no token",
            ));
        }
        let lifetime = parsed
            .expires_in
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TOKEN_LIFETIME);
        Ok(CachedToken {
            value,
            renew_at: Instant::now() + lifetime.saturating_sub(TOKEN_EXPIRY_MARGIN),
        })
    }

    fn token_service_error(&self, realm: &str, error: TransportError) -> RegistryError {
        match error {
            TransportError::Certificate(reason) => RegistryError::Certificate {
                host: crate::url::origin_of(realm).to_owned(),
                reason,
            },
            TransportError::NotTls(reason) | TransportError::Connection(reason) => {
                RegistryError::Connection {
                    url: realm.to_owned(),
                    reason,
                }
            }
        }
    }

    /// The error for a refused request for `what`.
    pub fn unauthorized(&self, what: &str, detail: String) -> RegistryError {
        let detail = if detail.is_empty() && self.credentials.is_none() {
            "no credentials found".to_owned()
        } else {
            detail
        };
        RegistryError::Unauthorized {
            registry: self.registry.clone(),
            what: what.to_owned(),
            detail,
            login: self.login_name.clone(),
        }
    }
}

fn scope_key(scopes: &[String]) -> String {
    let mut sorted: Vec<&str> = scopes.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        assert_eq!(pull_scope("library/app"), "repository:library/app:pull");
        assert_eq!(push_scope("a/b"), "repository:a/b:pull,push");
        assert_eq!(
            scope_key(&["b".to_owned(), "a".to_owned()]),
            scope_key(&["a".to_owned(), "b".to_owned()])
        );
    }

    #[test]
    fn renewal_needs_something_to_try() {
        let anonymous = Authenticator::new("r", "r", None);
        assert!(!anonymous.renew(Some(Challenge::Basic), &[]));
        assert!(anonymous.renew(
            Some(Challenge::Bearer {
                realm: "https://r/token".into(),
                service: None,
                scope: None
            }),
            &[]
        ));
        let with_password = Authenticator::new(
            "r",
            "r",
            Some(Credentials::Basic {
                username: "u".into(),
                password: "p".into(),
            }),
        );
        assert!(with_password.renew(Some(Challenge::Basic), &[]));
    }
}
