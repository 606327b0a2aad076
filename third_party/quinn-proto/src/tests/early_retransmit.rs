//! ExpressGateway patches: a server whose handshake flight was lost resends it as soon as the
//! client's probe comes in (RFC 9002 §6.2.3), not at its own PTO; and a PTO in one handshake
//! space probes the other's data too (RFC 9002 §6.2.4)

use std::sync::Arc;

use assert_matches::assert_matches;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::util::*;
use crate::{ClientConfig, ConnectionHandle, Duration, Event, TransportConfig};

/// The server keeps the default initial RTT (333 ms): its first PTO comes 3 × that after its
/// flight. The client's is a third of it, so the client probes well before.
const SERVER_PTO: Duration = Duration::from_millis(999);

fn quick_client(config: ClientConfig) -> ClientConfig {
    let mut config = config;
    let mut transport = TransportConfig::default();
    transport.initial_rtt(Duration::from_millis(100));
    config.transport_config(Arc::new(transport));
    config
}

/// A self-signed certificate with `names` subject alternative names, to size the server's flight
fn cert_and_key(names: usize) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let names = (0..names).map(|x| format!("name-{x}.localhost"));
    let cert = rcgen::generate_simple_self_signed(
        std::iter::once("localhost".to_owned())
            .chain(names)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    (
        cert.cert.into(),
        PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into()),
    )
}

fn server_ch(pair: &Pair) -> ConnectionHandle {
    *pair
        .server
        .connections
        .keys()
        .next()
        .expect("server connection")
}

/// Lets the client's PTO fire and its probe reach the server, asserting that this happens
/// before any timer of the server (its PTO above all) is due, and lets the server answer the
/// probe and the client read the answer.
fn client_probes(pair: &mut Pair) {
    let probe_at = pair.client.next_wakeup().expect("client PTO armed");
    pair.time = probe_at;
    pair.drive_client();
    assert!(!pair.server.inbound.is_empty(), "the client sent no probe");
    pair.time += pair.latency;
    let ch = server_ch(pair);
    let server_timer = pair.server_conn_mut(ch).poll_timeout();
    assert!(
        server_timer.is_none_or(|t| t > pair.time),
        "the server's own timer is due as the probe arrives"
    );
    pair.drive_server();
    pair.time += pair.latency;
    pair.drive_client();
}

/// The server's whole first flight is lost: the client's PTO resends its ClientHello (an Initial
/// with CRYPTO data the server already has), and the server answers with its flight again, so
/// the client completes the handshake one round trip after its probe, long before the server's
/// own PTO (3 × its initial RTT of 333 ms after the flight) would have fired.
#[test]
fn lost_first_flight_resent_on_client_initial_probe() {
    let _guard = subscribe();
    let mut pair = Pair::default();
    let client_ch = pair.begin_connect(quick_client(client_config()));
    pair.drive_client();
    pair.drive_server();
    let flight_sent = pair.time;
    assert!(!pair.client.inbound.is_empty());
    pair.client.inbound.clear(); // the flight is lost

    client_probes(&mut pair);
    assert!(pair.time - flight_sent < SERVER_PTO);
    assert_connected(&mut pair, client_ch);
}

/// The server's Initial arrives, its later Handshake datagrams are lost, and so is the client's
/// acknowledgement: the client, with nothing of its own left unacknowledged, probes with a
/// Handshake PING, and the server resends its unacknowledged Handshake data at once. (The
/// certificate makes the flight exceed the anti-amplification limit, not the congestion window: the server
/// has no PTO armed until the probe, a Handshake packet, validates the client's address, and
/// then one that ends after the answer; the answer carries what it had left unsent, which alone
/// would not let the client finish.)
#[test]
fn lost_handshake_data_resent_on_client_handshake_probe() {
    let _guard = subscribe();
    let (cert, key) = cert_and_key(300);
    let mut pair = Pair::new(
        Default::default(),
        server_config_with_cert(cert.clone(), key),
    );
    pair.latency = Duration::from_millis(10);
    let client_ch = pair.begin_connect(quick_client(client_config_with_certs(vec![cert])));
    pair.drive_client();
    pair.time += pair.latency;
    pair.drive_server();
    assert!(pair.client.inbound.len() > 1);
    pair.client.inbound.truncate(1); // only the first datagram (Initial + Handshake) arrives
    pair.time += pair.latency;
    pair.drive_client();
    pair.server.inbound.clear(); // the client's acknowledgement is lost

    client_probes(&mut pair);
    assert_connected(&mut pair, client_ch);
}

/// The client has the whole flight: the handshake is complete on its side, with no further step.
fn assert_connected(pair: &mut Pair, client_ch: ConnectionHandle) {
    assert_matches!(
        pair.client_conn_mut(client_ch).poll(),
        Some(Event::HandshakeDataReady)
    );
    assert_matches!(
        pair.client_conn_mut(client_ch).poll(),
        Some(Event::Connected)
    );
}

/// The server's flight is lost and the client stays silent (its PTO is later): the server's own
/// PTO, which expires in the Initial space, resends its Handshake data too, so the client gets
/// the whole flight from that one probe and completes.
#[test]
fn server_pto_in_initial_space_probes_handshake_data_too() {
    let _guard = subscribe();
    let mut pair = Pair::default();
    let mut config = client_config();
    let mut transport = TransportConfig::default();
    transport.initial_rtt(Duration::from_secs(2));
    config.transport_config(Arc::new(transport));
    let client_ch = pair.begin_connect(config);
    pair.drive_client();
    pair.drive_server();
    let flight_sent = pair.time;
    pair.client.inbound.clear(); // the flight is lost

    let pto = pair.server.next_wakeup().expect("server PTO armed");
    assert!(pto - flight_sent <= SERVER_PTO);
    assert!(pair.client.next_wakeup().is_none_or(|t| t > pto));
    pair.time = pto;
    pair.drive_server();
    assert!(!pair.client.inbound.is_empty(), "the server sent no probe");
    pair.drive_client();
    assert_connected(&mut pair, client_ch);
}

/// Without a probe nothing changes: a handshake without loss sends each CRYPTO frame once.
#[test]
fn no_loss_no_early_retransmission() {
    let _guard = subscribe();
    let mut pair = Pair::default();
    let client_ch = pair.begin_connect(quick_client(client_config()));
    pair.drive();
    assert_connected(&mut pair, client_ch);
    let ch = server_ch(&pair);
    assert_eq!(pair.server_conn_mut(ch).stats().path.lost_packets, 0);
    let sent = pair.server_conn_mut(ch).stats().frame_tx.crypto;
    assert_eq!(
        pair.client_conn_mut(client_ch).stats().frame_rx.crypto,
        sent
    );
}
