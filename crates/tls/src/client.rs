//! Verified rustls client configs for upstream TLS (every backend protocol).

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::load::load_ca;
use crate::TlsError;

/// How to verify one backend.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// Trust these CAs; `None` means the system's roots.
    pub ca_path: Option<PathBuf>,
    /// `tls_verify_peer`: check the chain at all.
    pub verify_peer: bool,
    /// `tls_verify_hostname`: check the name in the certificate.
    pub verify_hostname: bool,
    pub alpn: Vec<Vec<u8>>,
}

pub fn client_config(opts: &UpstreamTls) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = match &opts.ca_path {
        Some(path) => load_ca(path)?,
        None => system_roots(),
    };
    let webpki =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let verifier: Arc<dyn ServerCertVerifier> = if !opts.verify_peer {
        Arc::new(Relaxed {
            inner: webpki,
            check_chain: false,
        })
    } else if !opts.verify_hostname {
        Arc::new(Relaxed {
            inner: webpki,
            check_chain: true,
        })
    } else {
        webpki
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = opts.alpn.clone();
    Ok(Arc::new(config))
}

/// The system's CA certificates, read once per process: every TLS backend
/// of every reload shares them (reading them costs tens of milliseconds).
fn system_roots() -> RootCertStore {
    static ROOTS: std::sync::OnceLock<RootCertStore> = std::sync::OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for err in &found.errors {
                tracing::warn!(error = %err, "skipping an unreadable system CA certificate");
            }
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            tracing::debug!(added, "loaded system CA certificates");
            roots
        })
        .clone()
}

/// A verifier an operator loosened on purpose: `check_chain = false` trusts
/// any certificate (`tls_verify_peer = false`); otherwise the chain is
/// checked and only a name mismatch is forgiven (`tls_verify_hostname =
/// false`). Handshake signatures are always verified.
#[derive(Debug)]
struct Relaxed {
    inner: Arc<WebPkiServerVerifier>,
    check_chain: bool,
}

impl ServerCertVerifier for Relaxed {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if !self.check_chain {
            return Ok(ServerCertVerified::assertion());
        }
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
