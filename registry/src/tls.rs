//! The certificates a registry's TLS certificate is checked against: the system's roots (as
//! OpenSSL finds them: `SSL_CERT_FILE`, `SSL_CERT_DIR`, the distribution's bundle) plus an
//! optional extra CA file (`--registry-ca`, `$RBUILD_REGISTRY_CA`), e.g. a private or test CA.

use std::path::Path;
use std::sync::Arc;

use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

use crate::error::RegistryError;

/// The most an extra CA file may be; a bundle of every public root is about 200 kB.
const MAX_CA_FILE_BYTES: u64 = 16 << 20;

/// The TLS configuration for registries: system roots plus the certificates of `extra_ca`.
pub fn tls_config(extra_ca: Option<&Path>) -> Result<TlsConfig, RegistryError> {
    let mut roots: Vec<Certificate<'static>> = rustls_native_certs::load_native_certs()
        .certs
        .iter()
        .map(|der| Certificate::from_der(der.as_ref()).to_owned())
        .collect();
    if let Some(path) = extra_ca {
        let extra = read_ca_file(path)?;
        roots.extend(extra);
    }
    let root_certs = if roots.is_empty() {
        // No system store at all: the bundled Mozilla roots are better than nothing.
        RootCerts::WebPki
    } else {
        RootCerts::Specific(Arc::new(roots))
    };
    Ok(TlsConfig::builder().root_certs(root_certs).build())
}

/// The certificates of a PEM file; an unreadable file or one without any is an error.
fn read_ca_file(path: &Path) -> Result<Vec<Certificate<'static>>, RegistryError> {
    let shown = path.display();
    let size = std::fs::metadata(path)
        .map_err(|e| RegistryError::TlsConfig(format!("CA file {shown}: {e}")))?
        .len();
    if size > MAX_CA_FILE_BYTES {
        return Err(RegistryError::TlsConfig(format!(
            "CA file {shown} is larger than {MAX_CA_FILE_BYTES} bytes"
        )));
    }
    let pem = std::fs::read(path)
        .map_err(|e| RegistryError::TlsConfig(format!("CA file {shown}: {e}")))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(cert)) => certs.push(cert),
            Ok(_) => {}
            Err(e) => {
                return Err(RegistryError::TlsConfig(format!(
                    "CA file {shown} is not valid PEM: {e}"
                )))
            }
        }
    }
    if certs.is_empty() {
        return Err(RegistryError::TlsConfig(format!(
            "CA file {shown} holds no PEM certificate"
        )));
    }
    Ok(certs)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bad_ca_files_are_refused_with_their_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        for path in [missing, empty] {
            let error = tls_config(Some(&path)).unwrap_err().to_string();
            assert!(error.contains(&path.display().to_string()), "{error}");
        }
    }

    #[test]
    fn system_roots_alone_are_fine() {
        assert!(tls_config(None).is_ok());
    }
}
