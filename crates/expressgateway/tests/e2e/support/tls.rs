//! TLS helpers: certificates for listeners and rustls clients trusting them.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls_pki_types::pem::PemObject;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A self-signed `localhost` certificate in `dir` as `<stem>.crt/.key`.
pub fn cert(dir: &Path, stem: &str) -> eg_tls::SelfSigned {
    eg_tls::self_signed(&["localhost", "127.0.0.1"], dir, stem).expect("self-signed cert")
}

/// A `localhost` certificate issued by a fresh test CA, for clients that
/// trust only a CA-issued chain (qh3, under niquests' HTTP/3, does not
/// take a self-signed leaf as its own anchor). `cert_path` holds the
/// chain (leaf, then CA) for a listener; the CA alone is returned too.
pub fn ca_issued(dir: &Path, stem: &str) -> (eg_tls::SelfSigned, std::path::PathBuf) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "expressgateway e2e CA");
    let ca = ca_params.self_signed(&ca_key).expect("CA cert");
    let key = rcgen::KeyPair::generate().expect("leaf key");
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let leaf = rcgen::CertificateParams::new(names)
        .expect("leaf params")
        .signed_by(&key, &ca, &ca_key)
        .expect("leaf cert");
    let cert_path = dir.join(format!("{stem}.crt"));
    let key_path = dir.join(format!("{stem}.key"));
    let ca_path = dir.join(format!("{stem}-ca.crt"));
    let out = eg_tls::SelfSigned {
        cert_pem: format!("{}{}", leaf.pem(), ca.pem()),
        key_pem: key.serialize_pem(),
        cert_path,
        key_path,
    };
    std::fs::write(&out.cert_path, &out.cert_pem).expect("write chain");
    std::fs::write(&out.key_path, &out.key_pem).expect("write key");
    // The gateway refuses a key others can read.
    std::fs::set_permissions(
        &out.key_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod key");
    std::fs::write(&ca_path, ca.pem()).expect("write CA");
    (out, ca_path)
}

/// A client trusting exactly `cert_pem`, limited to `versions`.
pub fn client(
    cert_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> TlsConnector {
    client_offering(cert_pem, versions, &[])
}

/// As `client`, offering `alpn` protocols.
pub fn client_offering(
    cert_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> TlsConnector {
    eg_tls::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("pem");
    roots.add(der).expect("root");
    let mut config = rustls::ClientConfig::builder_with_protocol_versions(versions)
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

pub async fn connect(
    connector: &TlsConnector,
    addr: SocketAddr,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("name");
    connector.connect(name, tcp).await
}

/// Trusts any certificate: only for the demo, whose self-signed
/// certificate lives in a directory the test cannot see.
#[derive(Debug)]
pub struct AcceptAny;

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
