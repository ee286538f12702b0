//! Which servers the RTMPS client trusts, and what it says when a handshake fails: the
//! built-in webpki roots, the system's store (honouring SSL_CERT_FILE and SSL_CERT_DIR, as
//! OpenSSL-based tools do), and an operator's extra CAs (`--extra-ca-file`,
//! CASTYARD_EXTRA_CA_FILE) for a TLS-inspecting proxy or a relay with an internal CA.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use rustls::{CertificateError, ClientConfig, RootCertStore};

/// The environment variable the flag defaults to, in every binary that speaks RTMPS.
pub const EXTRA_CA_ENV: &str = "CASTYARD_EXTRA_CA_FILE";

static EXTRA_CA: OnceLock<Option<PathBuf>> = OnceLock::new();
static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();

/// Names this process's extra CA file, checked now so that a bad one stops the process at
/// start with the reason rather than failing every destination later. Without a call, the
/// first connection reads CASTYARD_EXTRA_CA_FILE.
pub fn init(extra_ca_file: Option<PathBuf>) -> Result<(), String> {
    let _ = EXTRA_CA.set(extra_ca_file);
    client_config().map(|_| ())
}

/// The one client configuration, built on first use.
pub fn client_config() -> Result<Arc<ClientConfig>, String> {
    CONFIG
        .get_or_init(|| {
            let extra = EXTRA_CA
                .get_or_init(|| std::env::var_os(EXTRA_CA_ENV).map(PathBuf::from))
                .clone();
            build(extra.as_deref()).map(Arc::new)
        })
        .clone()
}

fn build(extra: Option<&Path>) -> Result<ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!(error = %e, "a system certificate could not be read");
    }
    // A system store may hold certificates webpki cannot use; they are skipped, not fatal.
    let (added, skipped) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(added, skipped, "system trust store");
    if let Some(path) = extra {
        let shown = path.display();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("cannot read the extra CA file {shown}: {e}"))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("the extra CA file {shown} is not PEM certificates: {e}"))?;
        if certs.is_empty() {
            return Err(format!("the extra CA file {shown} holds no certificate"));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| {
                format!("the extra CA file {shown} has a certificate webpki refuses: {e}")
            })?;
        }
    }
    Ok(
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A failed TLS handshake in words a host can act on; None when the error is not TLS's.
pub fn describe(e: &std::io::Error, host: &str) -> Option<String> {
    let tls = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(match tls {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => format!(
                "unknown issuer: {host}'s certificate is not signed by a trusted CA \
                 (add the CA with --extra-ca-file or to the system store)"
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("name mismatch: the certificate is not valid for {host}")
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                format!("expired: {host}'s certificate has expired")
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                format!("not yet valid: {host}'s certificate is not valid yet (check the clock)")
            }
            CertificateError::Revoked => format!("revoked: {host}'s certificate is revoked"),
            CertificateError::BadSignature => format!(
                "bad signature: {host}'s certificate names a trusted CA as its issuer but was \
                 not signed by it"
            ),
            other => format!("bad certificate: {other:?}"),
        },
        other => format!("handshake failed: {other}"),
    })
}
