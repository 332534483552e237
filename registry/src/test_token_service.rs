//! The token service of a [`crate::test_registry::Mode::Token`] registry: a small HTTP server
//! on loopback that does what Docker's token services do — checks basic credentials, grants the
//! scopes asked for to the one known user (nothing to anyone else), and issues an RS256 JWT
//! signed (with `openssl`) by a certificate the registry trusts — so that the real registry
//! verifies real tokens. It counts the tokens it issued.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::prelude::{Engine as _, BASE64_STANDARD, BASE64_URL_SAFE_NO_PAD};

/// The issuer the registry is configured to trust.
pub(crate) const ISSUER: &str = "rbuild-test-issuer";
/// The service name (the tokens' audience).
pub(crate) const SERVICE: &str = "rbuild-test-registry";

/// A running token service; stopped when dropped.
#[derive(Debug)]
pub(crate) struct TokenService {
    port: u16,
    issued: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// What the service needs to answer.
struct Authority {
    user: String,
    password: String,
    signer_key: PathBuf,
    signer_der: Vec<u8>,
}

impl TokenService {
    /// Starts the service for `user`/`password`, signing with `dir/signer.key` (whose
    /// certificate, `dir/signer.der`, chains to the CA the registry trusts).
    pub fn start(dir: &Path, user: &str, password: &str) -> Result<TokenService, String> {
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(|e| format!("token service: {e}"))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("token service: {e}"))?;
        let port = listener
            .local_addr()
            .map_err(|e| format!("token service: {e}"))?
            .port();
        let authority = Authority {
            user: user.to_owned(),
            password: password.to_owned(),
            signer_key: dir.join("signer.key"),
            signer_der: std::fs::read(dir.join("signer.der"))
                .map_err(|e| format!("signer.der: {e}"))?,
        };
        let issued = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let issued = Arc::clone(&issued);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let _ = answer(stream, &authority, &issued);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Ok(TokenService {
            port,
            issued,
            stop,
            thread: Some(thread),
        })
    }

    /// The realm URL.
    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// How many tokens it issued.
    pub fn issued(&self) -> usize {
        self.issued.load(Ordering::SeqCst)
    }
}

impl Drop for TokenService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads one request and answers it.
fn answer(
    mut stream: TcpStream,
    authority: &Authority,
    issued: &AtomicUsize,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::new();
    let mut buffer = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 << 10 {
        let count = stream.read(&mut buffer)?;
        if count == 0 {
            break;
        }
        head.extend_from_slice(buffer.get(..count).unwrap_or_default());
    }
    let head = String::from_utf8_lossy(&head);
    let target = head.split_whitespace().nth(1).unwrap_or("");
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let authorized = head.lines().any(|line| {
        let lower = line.to_ascii_lowercase();
        lower.starts_with("authorization: basic ")
            && line
                .get("authorization: basic ".len()..)
                .and_then(|b64| BASE64_STANDARD.decode(b64.trim()).ok())
                .is_some_and(|creds| {
                    creds == format!("{}:{}", authority.user, authority.password).into_bytes()
                })
    });
    let sent_credentials = head
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("authorization:"));
    let (status, body) = if sent_credentials && !authorized {
        (
            "401 Unauthorized",
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"invalid username or password"}]}"#
                .to_owned(),
        )
    } else {
        let scopes: Vec<String> = query
            .split('&')
            .filter_map(|pair| pair.strip_prefix("scope="))
            .map(percent_decode)
            .collect();
        let subject = if authorized {
            authority.user.as_str()
        } else {
            ""
        };
        let token = sign(authority, subject, if authorized { &scopes } else { &[] })?;
        issued.fetch_add(1, Ordering::SeqCst);
        (
            "200 OK",
            format!(r#"{{"token":"{token}","expires_in":300}}"#),
        )
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// A JWT for `subject` granting `scopes` (`repository:NAME:ACTIONS`).
fn sign(authority: &Authority, subject: &str, scopes: &[String]) -> std::io::Result<String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|scope| {
            let (kind, rest) = scope.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            Some(serde_json::json!({
                "type": kind,
                "name": name,
                "actions": actions.split(',').collect::<Vec<_>>(),
            }))
        })
        .collect();
    let header = serde_json::json!({
        "typ": "JWT",
        "alg": "RS256",
        "x5c": [BASE64_STANDARD.encode(&authority.signer_der)],
    });
    let claims = serde_json::json!({
        "iss": ISSUER,
        "sub": subject,
        "aud": SERVICE,
        "exp": now + 300,
        "nbf": now.saturating_sub(10),
        "iat": now.saturating_sub(10),
        "jti": format!("rbuild-{now}-{}", std::process::id()),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        BASE64_URL_SAFE_NO_PAD.encode(header.to_string()),
        BASE64_URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut openssl = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(&authority.signer_key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    if let Some(mut stdin) = openssl.stdin.take() {
        stdin.write_all(signing_input.as_bytes())?;
    }
    let signature = openssl.wait_with_output()?.stdout;
    Ok(format!(
        "{signing_input}.{}",
        BASE64_URL_SAFE_NO_PAD.encode(signature)
    ))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (byte, hex) {
            (b'%', Some(value)) => {
                out.push(value);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
