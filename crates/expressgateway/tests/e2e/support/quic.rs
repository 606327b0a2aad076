//! Raw QUIC peers for the Mode B relay tests: a quinn echo backend (streams
//! of both kinds, datagrams, resets and closes on request) and a quinn
//! client trusting the gateway's certificate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::{ConnectionError, ReadError, VarInt};
use rustls::pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use tokio::sync::mpsc;

/// Longest a single relay step may take in these tests.
pub const QUIC_WAIT: Duration = Duration::from_secs(15);

/// Reset code the backend uses for a stream starting with `RESET`.
pub const BACKEND_RESET_CODE: u32 = 0x42;
/// STOP_SENDING code the backend uses for a stream starting with `STOP!`.
pub const BACKEND_STOP_CODE: u32 = 0x43;
/// Close code (and reason) of a backend asked to `CLOSE`.
pub const BACKEND_CLOSE_CODE: u32 = 0x77;
pub const BACKEND_CLOSE_REASON: &[u8] = b"backend bye";

/// A `quic` listener relaying (Mode B) to `backend`, whose certificate
/// `backend_ca` verifies as `localhost`; the `[listeners.quic.raw_proxy]`
/// table comes last, so a caller may append keys to it.
pub fn mode_b_listener(
    front: &eg_tls::SelfSigned,
    backend: SocketAddr,
    backend_ca: &std::path::Path,
) -> String {
    format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"quic\"\n\
         [listeners.quic]\ncert_path = \"{}\"\nkey_path = \"{}\"\n\
         [listeners.quic.raw_proxy]\nbackend_addr = \"{backend}\"\nsni = \"localhost\"\n\
         backend_ca_path = \"{}\"\n",
        front.cert_path.display(),
        front.key_path.display(),
        backend_ca.display(),
    )
}

/// A raw QUIC echo backend on loopback. Bidi streams echo, except those
/// whose first five bytes are a command: `RESET` (the backend resets its
/// side with 0x42), `STOP!` (it stops reading with 0x43), `CLOSE` (it
/// closes the connection with 0x77 "backend bye"), `ALPN?` (it answers
/// the ALPN it negotiated). Each uni stream is answered with its bytes on
/// a new uni stream; datagrams echo.
pub struct QuicEchoBackend {
    pub addr: SocketAddr,
    /// `(code, reason)` of each application close a client leg sent.
    pub closes: mpsc::UnboundedReceiver<(u64, Vec<u8>)>,
    endpoint: quinn::Endpoint,
}

impl Drop for QuicEchoBackend {
    fn drop(&mut self) {
        self.endpoint.close(0u32.into(), b"test over");
    }
}

impl QuicEchoBackend {
    pub async fn start(cert: &eg_tls::SelfSigned, alpn: &[&str]) -> Self {
        eg_tls::install_crypto_provider();
        let certs = eg_tls::load_certs(&cert.cert_path).expect("certs");
        let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).expect("key");
        let mut tls =
            rustls::ServerConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .expect("server config");
        tls.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).expect("quic config");
        let server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let endpoint = quinn::Endpoint::server(server, "127.0.0.1:0".parse().expect("addr"))
            .expect("bind backend");
        let addr = endpoint.local_addr().expect("addr");
        let (tx, closes) = mpsc::unbounded_channel();
        let accept = endpoint.clone();
        tokio::spawn(async move {
            while let Some(incoming) = accept.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    if let Ok(conn) = incoming.await {
                        echo_connection(conn, tx).await;
                    }
                });
            }
        });
        Self {
            addr,
            closes,
            endpoint,
        }
    }
}

async fn echo_connection(conn: quinn::Connection, closes: mpsc::UnboundedSender<(u64, Vec<u8>)>) {
    let c = conn.clone();
    let bi = async move {
        while let Ok((send, recv)) = c.accept_bi().await {
            tokio::spawn(echo_bi(c.clone(), send, recv));
        }
    };
    let c = conn.clone();
    let uni = async move {
        while let Ok(mut recv) = c.accept_uni().await {
            let c = c.clone();
            tokio::spawn(async move {
                let Ok(data) = recv.read_to_end(64 << 20).await else {
                    return;
                };
                let Ok(mut send) = c.open_uni().await else {
                    return;
                };
                let _ = send.write_all(&data).await;
                let _ = send.finish();
            });
        }
    };
    let c = conn.clone();
    let datagrams = async move {
        while let Ok(d) = c.read_datagram().await {
            let _ = c.send_datagram_wait(d).await;
        }
    };
    let closed = async move {
        if let ConnectionError::ApplicationClosed(close) = conn.closed().await {
            let _ = closes.send((close.error_code.into_inner(), close.reason.to_vec()));
        }
    };
    tokio::join!(bi, uni, datagrams, closed);
}

async fn echo_bi(
    conn: quinn::Connection,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let mut head = [0u8; 5];
    let mut got = 0;
    while got < head.len() {
        match recv.read(&mut head[got..]).await {
            Ok(Some(n)) => got += n,
            Ok(None) => break,
            Err(_) => return,
        }
    }
    match &head[..got] {
        b"RESET" => {
            let _ = send.reset(VarInt::from_u32(BACKEND_RESET_CODE));
        }
        b"STOP!" => {
            let _ = recv.stop(VarInt::from_u32(BACKEND_STOP_CODE));
        }
        b"CLOSE" => conn.close(VarInt::from_u32(BACKEND_CLOSE_CODE), BACKEND_CLOSE_REASON),
        b"ALPN?" => {
            let alpn = conn
                .handshake_data()
                .and_then(|h| h.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
                .and_then(|h| h.protocol)
                .unwrap_or_default();
            let _ = send.write_all(&alpn).await;
            let _ = send.finish();
        }
        head => {
            if send.write_all(head).await.is_err() {
                return;
            }
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match recv.read(&mut buf).await {
                    Ok(Some(n)) => {
                        if send.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(ReadError::Reset(code)) => {
                        let _ = send.reset(code);
                        return;
                    }
                    Err(_) => return,
                }
            }
            let _ = send.finish();
        }
    }
}

/// QUIC client TLS (1.3) trusting exactly `cert_pem`, offering `alpn`.
pub fn quic_client_crypto(
    cert_pem: &str,
    alpn: &str,
) -> Arc<quinn::crypto::rustls::QuicClientConfig> {
    eg_tls::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    let der = rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("pem");
    roots.add(der).expect("root");
    let mut tls = rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.as_bytes().to_vec()];
    Arc::new(quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic tls"))
}

/// A QUIC client connection to `addr` ("localhost"), trusting exactly
/// `cert_pem` and offering `alpn`.
pub async fn quic_connect(addr: SocketAddr, cert_pem: &str, alpn: &str) -> quinn::Connection {
    let crypto = quic_client_crypto(cert_pem, alpn);
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("client endpoint");
    endpoint.set_default_client_config(quinn::ClientConfig::new(crypto));
    let connecting = endpoint.connect(addr, "localhost").expect("connect");
    tokio::time::timeout(QUIC_WAIT, connecting)
        .await
        .expect("handshake in time")
        .expect("handshake")
}

/// Send `msg` on a new bidi stream, finish it and read the whole answer.
pub async fn quic_ask(
    conn: &quinn::Connection,
    msg: &[u8],
) -> Result<Vec<u8>, quinn::ReadToEndError> {
    let (mut send, mut recv) = conn.open_bi().await.expect("open bi");
    send.write_all(msg).await.expect("write");
    let _ = send.finish();
    tokio::time::timeout(QUIC_WAIT, recv.read_to_end(64 << 20))
        .await
        .expect("answer in time")
}
