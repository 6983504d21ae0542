//! TLS on both sides of the node: the roots the gateway trusts when it calls an
//! HTTPS upstream, and the certificate the node serves HTTPS and `wss://` with.
//!
//! Upstream calls trust the platform's roots, plus every certificate in the file
//! named by `SSL_CERT_FILE` (the convention OpenSSL, curl and Python follow), plus an
//! upstream's own `ca_file` from `providers.toml`. A certificate that does not verify
//! fails the call; nothing ever falls back to plain text.
//!
//! Serving: `--tls-cert FILE --tls-key FILE` (PEM), or `--tls-self-signed`, which
//! makes a key and a certificate for the node's names into `<data>/tls/` on first
//! start and keeps them. Only TLS 1.2 and 1.3 and only HTTP/1.1 (ALPN) are offered.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

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

/// The ring provider, installed once as the process default so that every rustls
/// user in the process (reqwest, tokio-rustls) agrees on it.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
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

/// Every certificate in a PEM file, or why none could be read.
pub fn read_certificates(file: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates: Result<Vec<_>, _> = CertificateDer::pem_file_iter(file)
        .map_err(|error| format!("cannot read PEM certificates: {error}"))?
        .collect();
    let certificates =
        certificates.map_err(|error| format!("a PEM certificate is malformed: {error}"))?;
    if certificates.is_empty() {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    Ok(certificates)
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
    crate::node::write_private(&key_file, key.serialize_pem().as_bytes()).map_err(|source| {
        NodeError::Io {
            context: format!("cannot write {}", key_file.display()),
            source,
        }
    })?;
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

/// Certificates in the system's certificate directories, read when `SSL_CERT_FILE`
/// makes the platform loader read that file in place of the system's store.
fn system_store_besides_env() -> Vec<CertificateDer<'static>> {
    let mut found = Vec::new();
    for dir in openssl_probe::candidate_cert_dirs() {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            // Not every file in a certificate directory is a certificate.
            if let Ok(certificates) = read_certificates(&entry.path()) {
                found.extend(certificates);
            }
        }
    }
    found
}

/// A client configuration for reaching anything over TLS (an LLM upstream, a Colony
/// node): the platform's roots, plus every certificate in the file named by
/// `SSL_CERT_FILE` (the convention OpenSSL, curl and Python follow; since it makes the
/// platform loader read that file in place of the system's store, the system's store
/// is read too), plus `ca_file`. HTTP/1.1 only.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(file) = std::env::var_os("SSL_CERT_FILE").filter(|v| !v.is_empty()) {
        let certificates =
            read_certificates(Path::new(&file)).map_err(|m| format!("SSL_CERT_FILE: {m}"))?;
        roots.add_parsable_certificates(certificates);
        roots.add_parsable_certificates(system_store_besides_env());
    }
    if let Some(file) = ca_file {
        for certificate in
            read_certificates(file).map_err(|m| format!("{}: {m}", file.display()))?
        {
            roots
                .add(certificate)
                .map_err(|error| format!("a CA certificate is not usable: {error}"))?;
        }
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// An HTTP client for upstream calls: HTTPS verified by [`client_config`] (with the
/// upstream's `ca_file`); plain HTTP only where the URL says `http://`.
pub fn upstream_client(
    timeout: std::time::Duration,
    ca_file: Option<&Path>,
) -> Result<reqwest::Client, String> {
    let tls = client_config(ca_file)?;
    reqwest::Client::builder()
        .timeout(timeout)
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .use_preconfigured_tls((*tls).clone())
        .build()
        .map_err(|error| format!("cannot build the HTTP client: {}", error_chain(&error)))
}

/// An error with its causes, `outer: inner: innermost` (a TLS failure is deep inside
/// a reqwest error, and it is the part that says what went wrong).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
