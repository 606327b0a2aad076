//! TLS towards one configured backend: verifier, ALPN and server name.

use eg_config::{Backend, BackendProtocol, VerifyHostname};
use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::{client_config, TlsError, UpstreamTls};

/// What a connector needs to open TLS to a backend.
#[derive(Clone)]
pub struct BackendTls {
    pub connector: TlsConnector,
    pub server_name: ServerName<'static>,
    /// The same config, for QUIC (h3) connectors.
    pub config: std::sync::Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendTls")
            .field("server_name", &self.server_name)
            .finish()
    }
}

/// `None` for a cleartext backend. h3 backends are always TLS; the ALPN
/// follows the backend protocol.
pub fn backend_tls(b: &Backend, default: BackendProtocol) -> Result<Option<BackendTls>, TlsError> {
    let protocol = b.protocol.unwrap_or(default);
    if !b.tls && protocol != BackendProtocol::H3 {
        return Ok(None);
    }
    let (verify_hostname, name) = match &b.tls_verify_hostname {
        VerifyHostname::Enabled(on) => (*on, None),
        VerifyHostname::Name(n) => (true, Some(n.clone())),
    };
    let host = b
        .address
        .rsplit_once(':')
        .map_or(b.address.as_str(), |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let sni = b.sni.clone().or(name).unwrap_or_else(|| host.to_owned());
    let server_name = ServerName::try_from(sni.clone()).map_err(|_| TlsError::Unusable {
        path: sni.clone().into(),
        reason: "not a valid TLS server name".into(),
    })?;
    let alpn: Vec<Vec<u8>> = match protocol {
        BackendProtocol::Tcp => Vec::new(),
        BackendProtocol::H1 => vec![b"http/1.1".to_vec()],
        BackendProtocol::H2 => vec![b"h2".to_vec()],
        BackendProtocol::H3 => vec![b"h3".to_vec()],
    };
    let client = client_config(&UpstreamTls {
        ca_path: b.tls_ca_path.clone(),
        verify_peer: b.tls_verify_peer,
        verify_hostname,
        alpn,
    })?;
    Ok(Some(BackendTls {
        connector: TlsConnector::from(std::sync::Arc::clone(&client)),
        server_name,
        config: client,
    }))
}
