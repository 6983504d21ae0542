//! The roots every outgoing TLS connection trusts (an LLM upstream, or a Colony node
//! for the CLI): the platform's, plus every certificate in the file named by
//! `SSL_CERT_FILE` (the convention OpenSSL, curl and Python follow), plus a per-use
//! `ca_file`. A certificate that does not verify fails the connection; nothing ever
//! falls back to plain text.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// The ring provider, installed once as the process default so that every rustls
/// user in the process (reqwest, tokio-rustls) agrees on it.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
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
