//! TLS on both sides of the node. Outgoing connections (the gateway's upstream calls,
//! the CLI) trust the roots of [`client_config`], from the gateway crate. Serving: `--tls-cert FILE --tls-key FILE` (PEM), or `--tls-self-signed`, which
//! makes a key and a certificate for the node's names into `<data>/tls/` on first
//! start and keeps them. Only TLS 1.2 and 1.3 and only HTTP/1.1 (ALPN) are offered.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;
use sha2::{Digest, Sha256};

pub use colony_gateway::tls::{
    client_config, error_chain, install_crypto_provider, read_certificates, upstream_client,
};

use crate::NodeError;

/// Where the node's serving certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsSource {
    /// PEM files: the certificate chain (leaf first) and its private key.
    Files { cert: PathBuf, key: PathBuf },
    /// A certificate for `names` (DNS names or IP addresses), made once into
    /// `<data>/tls/` and reused at every start.
    SelfSigned { names: Vec<String> },
}

/// A loaded serving certificate.
#[derive(Clone)]
pub struct ServerTls {
    pub config: Arc<rustls::ServerConfig>,
    /// SHA-256 of the leaf certificate (DER), as colon-separated hex, as browsers
    /// and `openssl x509 -fingerprint -sha256` print it.
    pub fingerprint: String,
    /// The certificate file (give it to clients as their CA file when self-signed).
    pub cert_file: PathBuf,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("fingerprint", &self.fingerprint)
            .field("cert_file", &self.cert_file)
            .finish()
    }
}

impl ServerTls {
    /// Loads (or, for a self-signed source, makes on first use) the certificate.
    pub fn load(source: &TlsSource, data_dir: &Path) -> Result<ServerTls, NodeError> {
        install_crypto_provider();
        let (cert_file, key_file) = match source {
            TlsSource::Files { cert, key } => (cert.clone(), key.clone()),
            TlsSource::SelfSigned { names } => self_signed(data_dir, names)?,
        };
        let chain =
            read_certificates(&cert_file).map_err(|message| tls_error(&cert_file, message))?;
        let key = PrivateKeyDer::from_pem_file(&key_file).map_err(|error| {
            tls_error(
                &key_file,
                format!("no PEM private key could be read: {error}"),
            )
        })?;
        let fingerprint = fingerprint(&chain[0]);
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|error| {
                tls_error(
                    &key_file,
                    format!("the key does not fit the certificate: {error}"),
                )
            })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // Few session tickets: a resumed agent reconnects cheaply, and an idle
        // connection keeps no more than it needs.
        config.send_tls13_tickets = 1;
        Ok(ServerTls {
            config: Arc::new(config),
            fingerprint,
            cert_file,
        })
    }
}

/// SHA-256 of a DER certificate as `AB:CD:...`.
pub fn fingerprint(certificate: &[u8]) -> String {
    Sha256::digest(certificate)
        .iter()
        .map(|byte| format!("{byte:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// `<data>/tls/cert.pem` and `key.pem`, made for `names` when absent.
fn self_signed(data_dir: &Path, names: &[String]) -> Result<(PathBuf, PathBuf), NodeError> {
    let dir = data_dir.join("tls");
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    if cert_file.exists() && key_file.exists() {
        return Ok((cert_file, key_file));
    }
    std::fs::create_dir_all(&dir).map_err(|source| NodeError::Io {
        context: format!("cannot create {}", dir.display()),
        source,
    })?;
    let mut params = rcgen::CertificateParams::new(names.to_vec())
        .map_err(|error| tls_error(&cert_file, format!("bad name for a certificate: {error}")))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "colony node (self-signed)");
    let key = rcgen::KeyPair::generate()
        .map_err(|error| tls_error(&key_file, format!("cannot make a key: {error}")))?;
    let certificate = params
        .self_signed(&key)
        .map_err(|error| tls_error(&cert_file, format!("cannot sign: {error}")))?;
    crate::private_file::write_private(&key_file, key.serialize_pem().as_bytes()).map_err(
        |source| NodeError::Io {
            context: format!("cannot write {}", key_file.display()),
            source,
        },
    )?;
    std::fs::write(&cert_file, certificate.pem()).map_err(|source| NodeError::Io {
        context: format!("cannot write {}", cert_file.display()),
        source,
    })?;
    tracing::info!(
        "made a self-signed certificate for {} in {}",
        names.join(", "),
        dir.display()
    );
    Ok((cert_file, key_file))
}

fn tls_error(file: &Path, message: impl Into<String>) -> NodeError {
    NodeError::Io {
        context: format!("TLS: {}", file.display()),
        source: std::io::Error::other(message.into()),
    }
}
