//! A real distribution registry for tests: Debian's `docker-registry serve` on a free loopback
//! port, with its storage in a temp dir of its own, in one of four [`Mode`]s — plain HTTP,
//! htpasswd basic auth (`htpasswd` from apache2-utils), TLS with a CA that `openssl` makes for
//! the test, or bearer tokens from a loopback token service whose signing certificate the
//! registry trusts. It is killed when dropped; [`TestRegistry::kill`] and
//! [`TestRegistry::restart`] let a test take it away mid-transfer and bring it back with the
//! same storage and port.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::test_token_service::{TokenService, ISSUER, SERVICE};

/// How long a registry may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How the registry is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Plain HTTP, no auth.
    Plain,
    /// Plain HTTP with basic auth for one user.
    Htpasswd {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
    /// HTTPS with a certificate for 127.0.0.1 from a test CA ([`TestRegistry::ca_file`]).
    Tls,
    /// Plain HTTP with bearer tokens from a token service on loopback that grants one user
    /// what they ask for (see `test_token_service.rs`).
    Token {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
}

/// A running registry.
#[derive(Debug)]
pub struct TestRegistry {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    token_service: Option<TokenService>,
}

/// The programs `mode` needs that are not on `PATH`, as a reason to skip; `None` if all are.
pub fn missing_tools(mode: &Mode) -> Option<String> {
    let mut tools = vec!["docker-registry"];
    match mode {
        Mode::Plain => {}
        Mode::Htpasswd { .. } => tools.push("htpasswd"),
        Mode::Tls | Mode::Token { .. } => tools.push("openssl"),
    }
    let missing: Vec<&str> = tools.into_iter().filter(|tool| !on_path(tool)).collect();
    if missing.is_empty() {
        None
    } else {
        Some(format!(
            "{} missing (apt-get install docker-registry apache2-utils openssl; \
             scripts/install-test-deps.sh does)",
            missing.join(" and ")
        ))
    }
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

impl TestRegistry {
    /// Starts a registry in `mode` and waits until it listens.
    pub fn start(mode: Mode) -> Result<TestRegistry, String> {
        if let Some(missing) = missing_tools(&mode) {
            return Err(missing);
        }
        let dir = tempfile::Builder::new()
            .prefix("rbuild-test-registry-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let port = free_port()?;
        let root = dir.path();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: rbuild-test-registry\n",
            root.join("storage").display()
        );
        let mut token_service = None;
        match &mode {
            Mode::Plain => {}
            Mode::Htpasswd { user, password } => {
                let htpasswd = root.join("htpasswd");
                run(Command::new("htpasswd")
                    .args(["-Bbc"])
                    .arg(&htpasswd)
                    .args([user, password]))?;
                config.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: rbuild-test\n    path: {}\n",
                    htpasswd.display()
                ));
            }
            Mode::Tls => {
                make_ca(root, "ca", EC_KEY)?;
                make_certificate(
                    root,
                    "server",
                    "ca",
                    EC_KEY,
                    "subjectAltName=IP:127.0.0.1,DNS:localhost\nkeyUsage=critical,digitalSignature\n\
                     extendedKeyUsage=serverAuth\n",
                )?;
                config.push_str(&format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    root.join("server.pem").display(),
                    root.join("server.key").display()
                ));
            }
            Mode::Token { user, password } => {
                make_ca(root, "token-ca", RSA_KEY)?;
                make_certificate(
                    root,
                    "signer",
                    "token-ca",
                    RSA_KEY,
                    "keyUsage=critical,digitalSignature\n",
                )?;
                run(Command::new("openssl")
                    .args(["x509", "-outform", "DER", "-in"])
                    .arg(root.join("signer.pem"))
                    .arg("-out")
                    .arg(root.join("signer.der")))?;
                let service = TokenService::start(root, user, password)?;
                config.push_str(&format!(
                    "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
                    service.realm(),
                    root.join("token-ca.pem").display()
                ));
                token_service = Some(service);
            }
        }
        fs::write(root.join("config.yml"), config).map_err(|e| format!("config: {e}"))?;
        let mut registry = TestRegistry {
            dir,
            port,
            child: None,
            token_service,
        };
        registry.restart()?;
        Ok(registry)
    }

    /// `127.0.0.1:PORT`, the registry's name in references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The registry's storage root (the filesystem driver's `rootdirectory`).
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// The test CA's certificate (PEM), for [`Mode::Tls`].
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Where the registry keeps the data of blob `sha256:<hex>`.
    pub fn blob_data(&self, hex: &str) -> PathBuf {
        self.storage()
            .join("docker/registry/v2/blobs/sha256")
            .join(hex.get(..2).unwrap_or(""))
            .join(hex)
            .join("data")
    }

    /// The directory of `repository`'s upload sessions.
    pub fn uploads_dir(&self, repository: &str) -> PathBuf {
        self.storage()
            .join("docker/registry/v2/repositories")
            .join(repository)
            .join("_uploads")
    }

    /// How many tokens the token service issued ([`Mode::Token`]; 0 otherwise).
    pub fn tokens_issued(&self) -> usize {
        self.token_service.as_ref().map_or(0, TokenService::issued)
    }

    /// The registry's log (what it printed).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Kills the registry (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// (Re)starts the registry with the same config, storage and port.
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        let root = self.dir.path();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.join("registry.log"))
            .map_err(|e| format!("registry log: {e}"))?;
        let log_err = log.try_clone().map_err(|e| format!("registry log: {e}"))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(root.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("starting docker-registry: {e}"))?;
        self.child = Some(child);
        self.wait_until_listening()
    }

    fn wait_until_listening(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "docker-registry exited ({status}):\n{}",
                        self.log()
                    ));
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "docker-registry did not start listening:\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port nobody listens on now.
fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("free port: {e}"))
}

fn run(command: &mut Command) -> Result<(), String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{command:?}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// `openssl req` arguments for a new EC P-256 key.
const EC_KEY: &[&str] = &[
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];
/// `openssl req` arguments for a new RSA key (the token signer: RS256).
const RSA_KEY: &[&str] = &["-newkey", "rsa:2048", "-nodes"];

/// A self-signed CA, `NAME.pem` and `NAME.key` in `dir`.
fn make_ca(dir: &Path, name: &str, key: &[&str]) -> Result<(), String> {
    run(Command::new("openssl")
        .args(["req", "-x509"])
        .args(key)
        .arg("-keyout")
        .arg(dir.join(format!("{name}.key")))
        .arg("-out")
        .arg(dir.join(format!("{name}.pem")))
        .args(["-days", "2", "-subj", &format!("/CN=rbuild test {name}")])
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]))
}

/// A certificate `NAME.pem` (key `NAME.key`) in `dir` signed by the CA `ca`, with the
/// extensions `extensions` (openssl's extension file syntax).
fn make_certificate(
    dir: &Path,
    name: &str,
    ca: &str,
    key: &[&str],
    extensions: &str,
) -> Result<(), String> {
    let at = |file: String| dir.join(file);
    run(Command::new("openssl")
        .arg("req")
        .args(key)
        .arg("-keyout")
        .arg(at(format!("{name}.key")))
        .arg("-out")
        .arg(at(format!("{name}.csr")))
        .args(["-subj", "/CN=127.0.0.1"]))?;
    fs::write(
        at(format!("{name}.ext")),
        format!("basicConstraints=CA:FALSE\n{extensions}"),
    )
    .map_err(|e| format!("{name}.ext: {e}"))?;
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-set_serial", "2"])
        .arg("-in")
        .arg(at(format!("{name}.csr")))
        .arg("-CA")
        .arg(at(format!("{ca}.pem")))
        .arg("-CAkey")
        .arg(at(format!("{ca}.key")))
        .arg("-extfile")
        .arg(at(format!("{name}.ext")))
        .arg("-out")
        .arg(at(format!("{name}.pem"))))
}
