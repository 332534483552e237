//! One HTTP exchange with a registry or token service, with a time limit on every phase (connect,
//! waiting for the answer, and any stalled read or write), and what failed when it fails: a
//! certificate that is not trusted, a server that does not speak TLS, or a connection error.
//! Request bodies are replayable (bytes, or a range of a file read with `pread`), so that the
//! same request can be sent again after a retry or a fresh token.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::time::Duration;

use ureq::config::AutoHeaderValue;
use ureq::http::{self, Method, Response};
use ureq::tls::TlsConfig;
use ureq::SendBody;

/// Time limits of every request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Establishing the connection (TCP and TLS).
    pub connect: Duration,
    /// From the end of the request to the response's headers.
    pub response: Duration,
    /// The longest a transfer may stall (no byte read or written).
    pub stall: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(15),
            response: Duration::from_secs(120),
            stall: Duration::from_secs(60),
        }
    }
}

/// How often and how patiently transient failures (broken connections, 5xx, 429) are retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all (1 means no retry).
    pub attempts: u32,
    /// The wait before the first retry; it doubles for each further one.
    pub first_delay: Duration,
    /// The longest wait between two tries.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            first_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(4),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0 for the first retry).
    pub fn delay(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(16)).unwrap_or(u32::MAX);
        self.first_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// Whether another try may follow try number `tried` (counting from 1).
    pub fn allows_another(&self, tried: u32) -> bool {
        tried < self.attempts
    }
}

/// A request body that can be sent again.
pub(crate) enum RequestBody<'a> {
    /// None (`Content-Length: 0` for methods that carry a body).
    Empty,
    /// These bytes.
    Bytes(&'a [u8]),
    /// `len` bytes of `file` from `offset`.
    FileRange {
        file: &'a File,
        offset: u64,
        len: u64,
    },
}

/// A request as the registry code builds it.
pub(crate) struct HttpRequest<'a> {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: RequestBody<'a>,
    /// Told the count of body bytes sent so far, as they go.
    pub on_sent: Option<&'a (dyn Fn(u64) + Sync)>,
}

impl<'a> HttpRequest<'a> {
    /// A request without body or headers.
    pub fn new(method: Method, url: impl Into<String>) -> HttpRequest<'a> {
        HttpRequest {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: RequestBody::Empty,
            on_sent: None,
        }
    }

    /// With a header added.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> HttpRequest<'a> {
        self.headers.push((name, value.into()));
        self
    }

    /// With a body.
    pub fn body(mut self, body: RequestBody<'a>) -> HttpRequest<'a> {
        self.body = body;
        self
    }
}

/// Why an exchange failed before any response.
#[derive(Debug)]
pub(crate) enum TransportError {
    /// The server's certificate is not trusted (or not valid for the host).
    Certificate(String),
    /// The server answered a TLS handshake with something else (it speaks plain HTTP).
    NotTls(String),
    /// Anything else: refused, reset, timed out, name not resolved…
    Connection(String),
}

/// An HTTP client with the registry settings.
#[derive(Clone)]
pub(crate) struct Transport {
    agent: ureq::Agent,
}

impl Transport {
    /// A client checking certificates with `tls`; `use_proxy` false ignores proxy variables
    /// (for loopback registries).
    pub fn new(tls: TlsConfig, timeouts: &Timeouts, use_proxy: bool) -> Transport {
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls)
            .user_agent(concat!("rbuild/", env!("CARGO_PKG_VERSION")))
            // Blobs must arrive as stored: never ask for a transfer encoding.
            .accept_encoding(AutoHeaderValue::None)
            .timeout_connect(Some(timeouts.connect))
            .timeout_recv_response(Some(timeouts.response))
            .timeout_per_read(Some(timeouts.stall))
            .timeout_per_write(Some(timeouts.stall))
            .max_redirects(10);
        if !use_proxy {
            config = config.proxy(None);
        }
        Transport {
            agent: config.build().into(),
        }
    }

    /// Sends `request` (with `authorization` as its `Authorization` header, if given).
    pub fn send(
        &self,
        request: &HttpRequest<'_>,
        authorization: Option<&str>,
    ) -> Result<Response<ureq::Body>, TransportError> {
        let mut builder = http::Request::builder()
            .method(request.method.clone())
            .uri(request.url.as_str());
        for (name, value) in &request.headers {
            builder = builder.header(*name, value.as_str());
        }
        if let Some(authorization) = authorization {
            builder = builder.header("authorization", authorization);
        }
        let carries_body = matches!(request.method, Method::POST | Method::PUT | Method::PATCH);
        let mut reader = BodyReader::new(&request.body, request.on_sent);
        if carries_body || reader.len > 0 {
            builder = builder.header("content-length", reader.len.to_string());
        }
        let http_request = builder
            .body(SendBody::from_reader(&mut reader))
            .map_err(|e| TransportError::Connection(format!("invalid request: {e}")))?;
        self.agent.run(http_request).map_err(classify)
    }
}

/// Reads a [`RequestBody`] from its start, reporting progress.
struct BodyReader<'a> {
    body: &'a RequestBody<'a>,
    on_sent: Option<&'a (dyn Fn(u64) + Sync)>,
    len: u64,
    sent: u64,
}

impl<'a> BodyReader<'a> {
    fn new(body: &'a RequestBody<'a>, on_sent: Option<&'a (dyn Fn(u64) + Sync)>) -> Self {
        let len = match body {
            RequestBody::Empty => 0,
            RequestBody::Bytes(bytes) => bytes.len() as u64,
            RequestBody::FileRange { len, .. } => *len,
        };
        BodyReader {
            body,
            on_sent,
            len,
            sent: 0,
        }
    }
}

impl Read for BodyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.sent);
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        if want == 0 {
            return Ok(0);
        }
        let Some(target) = buf.get_mut(..want) else {
            return Ok(0);
        };
        let count = match self.body {
            RequestBody::Empty => 0,
            RequestBody::Bytes(bytes) => {
                let start = usize::try_from(self.sent).unwrap_or(usize::MAX);
                let source = bytes.get(start..start.saturating_add(want)).unwrap_or(&[]);
                if let Some(target) = target.get_mut(..source.len()) {
                    target.copy_from_slice(source);
                }
                source.len()
            }
            RequestBody::FileRange { file, offset, .. } => {
                let n = file.read_at(target, offset + self.sent)?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the blob file is shorter than its descriptor says",
                    ));
                }
                n
            }
        };
        self.sent += count as u64;
        if let Some(on_sent) = self.on_sent {
            on_sent(self.sent);
        }
        Ok(count)
    }
}

/// Sorts a ureq error into what the caller can act on.
fn classify(error: ureq::Error) -> TransportError {
    let tls_error = match &error {
        ureq::Error::Rustls(tls) => Some(tls),
        ureq::Error::Io(io) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        _ => None,
    };
    match tls_error {
        Some(rustls::Error::InvalidCertificate(reason)) => {
            TransportError::Certificate(reason.to_string())
        }
        Some(
            tls @ (rustls::Error::InvalidMessage(_)
            | rustls::Error::InappropriateMessage { .. }
            | rustls::Error::InappropriateHandshakeMessage { .. }),
        ) => TransportError::NotTls(tls.to_string()),
        _ => TransportError::Connection(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_up_to_the_limit() {
        let policy = RetryPolicy {
            attempts: 4,
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(350),
        };
        let delays: Vec<u128> = (0..5).map(|r| policy.delay(r).as_millis()).collect();
        assert_eq!(delays, [100, 200, 350, 350, 350]);
        assert!(policy.allows_another(3));
        assert!(!policy.allows_another(4));
        assert_eq!(
            RetryPolicy::default().delay(u32::MAX),
            Duration::from_secs(4)
        );
    }

    #[test]
    fn file_bodies_are_read_from_their_offset_and_replayable() {
        use std::io::Write;
        let mut file = tempfile_in_memory();
        file.write_all(b"0123456789").unwrap_or_default();
        let body = RequestBody::FileRange {
            file: &file,
            offset: 3,
            len: 4,
        };
        for _ in 0..2 {
            let mut out = Vec::new();
            let read = BodyReader::new(&body, None).read_to_end(&mut out);
            assert!(read.is_ok());
            assert_eq!(out, b"3456");
        }
    }

    fn tempfile_in_memory() -> File {
        tempfile::tempfile().unwrap_or_else(|e| panic!("{e}"))
    }
}
