//! TLS for the gRPC server that serves xDS and the translation ext_proc: a certificate and key
//! (PEM files), and optionally the CA that client certificates must chain to (mutual TLS).
//!
//! The files are read once, at start; a rotated certificate takes effect on restart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::{Certificate, Identity, ServerTlsConfig};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// The serving certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// When set, clients must present a certificate that chains to one of these CAs (PEM).
    pub client_ca: Option<PathBuf>,
}

/// Why the gRPC server cannot serve TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading the TLS {what} {}: {source}", path.display())]
    Read { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error(
        "the TLS files (certificate {}, key {}) are not usable: {reason}",
        cert.display(),
        key.display()
    )]
    Unusable { cert: PathBuf, key: PathBuf, reason: String },
}

/// A handshake that has not finished by then is dropped, so stalled clients hold no slot.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl ServerTls {
    /// Reads the files and applies them to `server`; bad or missing PEM is an error here, not
    /// at the first connection.
    pub(crate) fn apply(
        &self,
        server: tonic::transport::Server,
    ) -> Result<tonic::transport::Server, TlsError> {
        let identity =
            Identity::from_pem(read("certificate", &self.cert)?, read("key", &self.key)?);
        let mut config = ServerTlsConfig::new().identity(identity).timeout(HANDSHAKE_TIMEOUT);
        if let Some(ca) = &self.client_ca {
            config = config.client_ca_root(Certificate::from_pem(read("client CA", ca)?));
        }
        server.tls_config(config).map_err(|e| TlsError::Unusable {
            cert: self.cert.clone(),
            key: self.key.clone(),
            reason: error_chain(&e),
        })
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { what, path: path.to_path_buf(), source })
}

/// tonic's error says "transport error"; the reason is in its sources.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_malformed_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("tls.crt");
        let key = dir.path().join("tls.key");
        let tls = ServerTls { cert: cert.clone(), key: key.clone(), client_ca: None };
        let err = tls.apply(tonic::transport::Server::builder()).err().unwrap().to_string();
        assert!(err.contains("certificate") && err.contains("tls.crt"), "{err}");

        std::fs::write(&cert, "not a certificate").unwrap();
        std::fs::write(&key, "not a key").unwrap();
        let err = tls.apply(tonic::transport::Server::builder()).err().unwrap().to_string();
        assert!(err.contains("not usable") && err.contains("tls.key"), "{err}");
    }
}
