//! A session with one registry: the scheme found by pinging `/v2/` (HTTPS, plain HTTP, or for
//! loopback hosts HTTPS falling back to HTTP when the server does not speak TLS), the auth
//! challenge that ping returned, and sending requests with authentication, retries with
//! backoff for transient failures, one re-authentication after a 401, and the registry's error
//! answers mapped to [`RegistryError`]s.

use serde::Deserialize;
use ureq::http::{Method, Response};
use ureq::Body;

use crate::auth::Authenticator;
use crate::challenge::parse_challenge;
use crate::credentials::Credentials;
use crate::endpoint::{RegistryHost, SchemePolicy};
use crate::error::RegistryError;
use crate::transport::{HttpRequest, RetryPolicy, Transport, TransportError};

/// The most of an error answer that is read.
const MAX_ERROR_BODY_BYTES: u64 = 64 << 10;

/// Whether a request may be sent again after a transient failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Idempotence {
    /// GET, HEAD, PUT of a manifest, POST starting an upload: send again freely.
    Retry,
    /// A body upload whose partial arrival changed the server's state: the caller starts over.
    Once,
}

/// A registry's answer to a failed request, `{"errors":[{"code","message","detail"}]}`.
#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// `CODE: message; …` from a registry error body, or its text if it is not one.
pub(crate) fn registry_message(body: &[u8]) -> String {
    if let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) {
        let parts: Vec<String> = parsed
            .errors
            .iter()
            .map(|e| match (e.code.is_empty(), e.message.is_empty()) {
                (false, false) => format!("{}: {}", e.code, e.message),
                (false, true) => e.code.clone(),
                _ => e.message.clone(),
            })
            .collect();
        if !parts.is_empty() {
            return parts.join("; ");
        }
    }
    String::from_utf8_lossy(body)
        .trim()
        .chars()
        .take(300)
        .collect()
}

/// One registry, reached.
pub(crate) struct Session {
    host: RegistryHost,
    /// `scheme://api-host`.
    origin: String,
    transport: Transport,
    auth: Authenticator,
    retry: RetryPolicy,
}

impl Session {
    /// Reaches `host`, finding its scheme and auth challenge with a ping of `/v2/`.
    pub fn open(
        host: RegistryHost,
        credentials: Option<Credentials>,
        transport: Transport,
        retry: RetryPolicy,
    ) -> Result<Session, RegistryError> {
        let login = host.name.clone();
        let auth = Authenticator::new(&host.name, &login, credentials);
        let mut session = Session {
            origin: String::new(),
            host,
            transport,
            auth,
            retry,
        };
        let https = format!("https://{}", session.host.api_host);
        let http = format!("http://{}", session.host.api_host);
        match session.host.scheme {
            SchemePolicy::Https => session.ping(https)?,
            SchemePolicy::Http => session.ping(http)?,
            SchemePolicy::HttpsThenHttp => match session.ping_once(&https) {
                Ok(response) => session.adopt(https, &response)?,
                Err(TransportError::NotTls(_) | TransportError::Connection(_)) => {
                    session.ping(http)?
                }
                Err(error) => return Err(session.transport_error(&https, error)),
            },
        }
        Ok(session)
    }

    /// Pings `origin` (with retries) and adopts it.
    fn ping(&mut self, origin: String) -> Result<(), RegistryError> {
        let url = format!("{origin}/v2/");
        let request = HttpRequest::new(Method::GET, &url);
        let mut tried = 0;
        let response = loop {
            tried += 1;
            match self.transport.send(&request, None) {
                Ok(response) => break response,
                Err(error) => {
                    let error = self.transport_error(&url, error);
                    if !(error.is_transient() && self.retry.allows_another(tried)) {
                        return Err(error);
                    }
                    std::thread::sleep(self.retry.delay(tried - 1));
                }
            }
        };
        self.adopt(origin, &response)
    }

    fn ping_once(&self, origin: &str) -> Result<Response<Body>, TransportError> {
        self.transport.send(
            &HttpRequest::new(Method::GET, format!("{origin}/v2/")),
            None,
        )
    }

    /// Takes `origin` as the registry's, learning the auth scheme from the ping's answer.
    fn adopt(&mut self, origin: String, response: &Response<Body>) -> Result<(), RegistryError> {
        let status = response.status().as_u16();
        if status == 401 {
            if let Some(challenge) = challenge_of(response) {
                self.auth.learn(challenge);
            }
        } else if status >= 500 {
            return Err(RegistryError::Server {
                url: format!("{origin}/v2/"),
                status,
                detail: String::new(),
            });
        } else if status != 200 {
            return Err(RegistryError::protocol(
                &format!("{origin}/v2/"),
                format!("status {status}: this does not look like a registry (no /v2/ API)"),
            ));
        }
        self.origin = origin;
        Ok(())
    }

    /// The registry's name in references.
    pub fn registry(&self) -> &str {
        &self.host.name
    }

    /// `scheme://host` of the registry's API.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The retry policy.
    pub fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    /// Sends `request` with the authorization `scopes` need: transient failures are retried
    /// (for [`Idempotence::Retry`]) and a 401 leads to one re-authentication. Any other answer
    /// is returned as it is, for [`Session::check`].
    pub fn send(
        &self,
        request: &HttpRequest<'_>,
        scopes: &[String],
        idempotence: Idempotence,
    ) -> Result<Response<Body>, RegistryError> {
        let mut tried = 0;
        let mut renewed = false;
        loop {
            tried += 1;
            let may_retry = idempotence == Idempotence::Retry && self.retry.allows_another(tried);
            let authorization = self.auth.authorization(&self.transport, scopes)?;
            let mut response = match self.transport.send(request, authorization.as_deref()) {
                Ok(response) => response,
                Err(error) => {
                    let error = self.transport_error(&request.url, error);
                    if error.is_transient() && may_retry {
                        std::thread::sleep(self.retry.delay(tried - 1));
                        continue;
                    }
                    return Err(error);
                }
            };
            let status = response.status().as_u16();
            if status == 401 {
                if !renewed && self.auth.renew(challenge_of(&response), scopes) {
                    renewed = true;
                    tried -= 1;
                    continue;
                }
                let detail = registry_message(&read_error_body(&mut response));
                return Err(self.auth.unauthorized(&describe_scopes(scopes), detail));
            }
            if (status >= 500 || status == 429) && may_retry {
                std::thread::sleep(self.retry.delay(tried - 1));
                continue;
            }
            return Ok(response);
        }
    }

    /// `response` if its status is one of `expected`; else the error it means. `repository`
    /// and `what` (`manifest latest`, `blob sha256:…`) name what was asked for.
    pub fn check(
        &self,
        mut response: Response<Body>,
        expected: &[u16],
        url: &str,
        repository: &str,
        what: &str,
    ) -> Result<Response<Body>, RegistryError> {
        let status = response.status().as_u16();
        if expected.contains(&status) {
            return Ok(response);
        }
        let detail = registry_message(&read_error_body(&mut response));
        Err(match status {
            404 => RegistryError::NotFound {
                repository: repository.to_owned(),
                what: what.to_owned(),
                detail,
            },
            401 | 403 => self
                .auth
                .unauthorized(&format!("repository {repository}"), detail),
            s if s >= 500 || s == 429 => RegistryError::Server {
                url: url.to_owned(),
                status: s,
                detail,
            },
            s => RegistryError::protocol(url, format!("status {s} for {what}: {detail}")),
        })
    }

    /// The error for a failed exchange with `url`.
    pub fn transport_error(&self, url: &str, error: TransportError) -> RegistryError {
        match error {
            TransportError::Certificate(reason) => RegistryError::Certificate {
                host: self.host.name.clone(),
                reason,
            },
            TransportError::NotTls(reason) => RegistryError::Connection {
                url: url.to_owned(),
                reason: format!("TLS handshake failed: {reason}"),
            },
            TransportError::Connection(reason) => RegistryError::Connection {
                url: url.to_owned(),
                reason,
            },
        }
    }

    /// Checks that the credentials are accepted: `/v2/` with them (after fetching a token with
    /// them, for a bearer registry).
    pub fn verify_credentials(&self) -> Result<(), RegistryError> {
        let url = format!("{}/v2/", self.origin);
        let response = self.send(
            &HttpRequest::new(Method::GET, &url),
            &[],
            Idempotence::Retry,
        )?;
        self.check(response, &[200], &url, self.registry(), "the API root")
            .map(|_| ())
    }
}

fn challenge_of(response: &Response<Body>) -> Option<crate::challenge::Challenge> {
    response
        .headers()
        .get_all("www-authenticate")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(parse_challenge)
}

fn read_error_body(response: &mut Response<Body>) -> Vec<u8> {
    response
        .body_mut()
        .with_config()
        .limit(MAX_ERROR_BODY_BYTES)
        .read_to_vec()
        .unwrap_or_default()
}

/// `repository a/b` from scopes like `repository:a/b:pull`.
fn describe_scopes(scopes: &[String]) -> String {
    scopes
        .first()
        .and_then(|scope| scope.strip_prefix("repository:"))
        .and_then(|rest| rest.rsplit_once(':'))
        .map(|(repository, _)| format!("repository {repository}"))
        .unwrap_or_else(|| "the registry".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_messages() {
        assert_eq!(
            registry_message(br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#),
            "MANIFEST_UNKNOWN: manifest unknown"
        );
        assert_eq!(registry_message(b"plain text\n"), "plain text");
        assert_eq!(registry_message(b""), "");
    }

    #[test]
    fn scopes_are_described() {
        assert_eq!(
            describe_scopes(&["repository:a/b:pull,push".to_owned()]),
            "repository a/b"
        );
        assert_eq!(describe_scopes(&[]), "the registry");
    }
}
