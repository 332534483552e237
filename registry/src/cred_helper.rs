//! Docker's credential helper protocol: `docker-credential-<name> get|store|erase`, the server
//! URL or a JSON document on standard input, a JSON document on standard output. Every helper
//! runs with a time limit, so a helper waiting for a desktop prompt cannot hang rbuild.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::credentials::Credentials;
use crate::error::RegistryError;

/// How long a helper may take.
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);
/// The most of a helper's output that is read.
const MAX_HELPER_OUTPUT: u64 = 1 << 20;
/// The user name helpers give for an identity (refresh) token.
const TOKEN_USERNAME: &str = "<token>";

/// What `get` prints and `store` reads.
#[derive(Serialize, Deserialize)]
struct HelperCredentials {
    #[serde(rename = "ServerURL", default)]
    server_url: String,
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// A credential helper, by the suffix of its program name (`pass`, `secretservice`, …).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialHelper {
    name: String,
}

impl CredentialHelper {
    /// The helper `docker-credential-<name>`; names with anything but letters, digits, `.`,
    /// `_` and `-` are refused (the name comes from a config file and becomes a program name).
    pub fn new(name: &str) -> Result<CredentialHelper, RegistryError> {
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !valid {
            return Err(RegistryError::Credentials(format!(
                "invalid credential helper name {:?}",
                name.chars().take(100).collect::<String>()
            )));
        }
        Ok(CredentialHelper {
            name: name.to_owned(),
        })
    }

    fn program(&self) -> String {
        format!("docker-credential-{}", self.name)
    }

    /// The credentials the helper has for `server_url`, or `None` if it has none.
    pub fn get(&self, server_url: &str) -> Result<Option<Credentials>, RegistryError> {
        let outcome = self.run("get", server_url.as_bytes())?;
        if !outcome.success {
            if outcome.says_not_found() {
                return Ok(None);
            }
            return Err(self.failed("get", &outcome));
        }
        let found: HelperCredentials = serde_json::from_slice(&outcome.stdout).map_err(|e| {
            RegistryError::Credentials(format!("{} get printed invalid JSON: {e}", self.program()))
        })?;
        if found.secret.is_empty() {
            return Ok(None);
        }
        Ok(Some(if found.username == TOKEN_USERNAME {
            Credentials::IdentityToken(found.secret)
        } else {
            Credentials::Basic {
                username: found.username,
                password: found.secret,
            }
        }))
    }

    /// Stores `username`/`password` for `server_url`.
    pub fn store(
        &self,
        server_url: &str,
        username: &str,
        password: &str,
    ) -> Result<(), RegistryError> {
        let document = serde_json::to_vec(&HelperCredentials {
            server_url: server_url.to_owned(),
            username: username.to_owned(),
            secret: password.to_owned(),
        })
        .map_err(|e| RegistryError::Credentials(e.to_string()))?;
        let outcome = self.run("store", &document)?;
        if outcome.success {
            Ok(())
        } else {
            Err(self.failed("store", &outcome))
        }
    }

    /// Forgets the credentials for `server_url`; `false` if there were none.
    pub fn erase(&self, server_url: &str) -> Result<bool, RegistryError> {
        let outcome = self.run("erase", server_url.as_bytes())?;
        if outcome.success {
            Ok(true)
        } else if outcome.says_not_found() {
            Ok(false)
        } else {
            Err(self.failed("erase", &outcome))
        }
    }

    fn failed(&self, action: &str, outcome: &Outcome) -> RegistryError {
        let mut message = String::from_utf8_lossy(&outcome.stdout).trim().to_owned();
        let stderr = String::from_utf8_lossy(&outcome.stderr);
        if !stderr.trim().is_empty() {
            message = format!("{message} {}", stderr.trim());
        }
        RegistryError::Credentials(format!(
            "{} {action} failed: {}",
            self.program(),
            message.trim().chars().take(500).collect::<String>()
        ))
    }

    /// Runs the helper with `input` on standard input, within [`HELPER_TIMEOUT`].
    fn run(&self, action: &str, input: &[u8]) -> Result<Outcome, RegistryError> {
        let program = self.program();
        let mut child = Command::new(&program)
            .arg(action)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| RegistryError::Credentials(format!("running {program}: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A helper that exits without reading its input closes the pipe: not our error.
            let _ = stdin.write_all(input);
        }
        let stdout = child.stdout.take().map(read_bounded_in_background);
        let stderr = child.stderr.take().map(read_bounded_in_background);
        let success = wait_with_timeout(&mut child, HELPER_TIMEOUT).map_err(|reason| {
            RegistryError::Credentials(format!("{program} {action}: {reason}"))
        })?;
        let collect = |reader: Option<std::thread::JoinHandle<Vec<u8>>>| {
            reader.and_then(|r| r.join().ok()).unwrap_or_default()
        };
        Ok(Outcome {
            success,
            stdout: collect(stdout),
            stderr: collect(stderr),
        })
    }
}

/// What a helper run printed, and whether it succeeded.
struct Outcome {
    success: bool,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Outcome {
    /// The helpers' common "no such credentials" message.
    fn says_not_found(&self) -> bool {
        let text = String::from_utf8_lossy(&self.stdout).to_lowercase()
            + &String::from_utf8_lossy(&self.stderr).to_lowercase();
        text.contains("credentials not found")
    }
}

fn read_bounded_in_background(
    stream: impl Read + Send + 'static,
) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stream.take(MAX_HELPER_OUTPUT).read_to_end(&mut out);
        out
    })
}

/// Waits for `child` to exit (true if it succeeded); kills it after `timeout`.
fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Result<bool, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status.success()),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer within {} s", timeout.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(e.to_string()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn helper_names_are_checked() {
        assert!(CredentialHelper::new("pass").is_ok());
        assert!(CredentialHelper::new("ecr-login").is_ok());
        for bad in ["", "../x", "a b", "x/y"] {
            assert!(CredentialHelper::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_missing_helper_is_a_clear_error() {
        let helper = CredentialHelper::new("rbuild-test-no-such-helper").unwrap();
        let error = helper.get("host").unwrap_err().to_string();
        assert!(
            error.contains("docker-credential-rbuild-test-no-such-helper"),
            "{error}"
        );
    }
}
