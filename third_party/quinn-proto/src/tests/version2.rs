//! ExpressGateway patch: QUIC v2 (RFC 9369), compatible version negotiation (RFC 9368) and the
//! server's transport close for abandoned handshakes

use std::sync::Arc;

use assert_matches::assert_matches;
use bytes::Bytes;
use hex_literal::hex;

use super::util::*;
use crate::{
    ClientConfig, ConnectError, ConnectionClose, ConnectionError, ConnectionId, Event, Side,
    TransportErrorCode, VERSION_1, VERSION_2, VarInt,
    crypto::{self, ServerConfig as _},
    frame::{self, Frame},
    packet::{FixedLengthConnectionIdParser, Header, PartialDecode},
    transport_parameters::TransportParameters,
    version_negotiation::VersionInformation,
};

#[test]
fn v2_only_client_is_served_in_v2() {
    let _guard = subscribe();
    let mut config = client_config();
    config.version(VERSION_2);
    let mut pair = Pair::default();
    let (client_ch, server_ch) = pair.connect_with(config);
    assert_eq!(pair.client_conn_mut(client_ch).version(), VERSION_2);
    assert_eq!(pair.server_conn_mut(server_ch).version(), VERSION_2);

    // 1-RTT works: a stream crosses
    let s = pair
        .client_streams(client_ch)
        .open(crate::Dir::Uni)
        .unwrap();
    pair.client_send(client_ch, s).write(b"v2").unwrap();
    pair.client_send(client_ch, s).finish().unwrap();
    pair.drive();
    assert_matches!(
        pair.server_conn_mut(server_ch).poll(),
        Some(Event::Stream(crate::StreamEvent::Opened { .. }))
    );
}

#[test]
fn v2_retry_round_trip() {
    let _guard = subscribe();
    let mut config = client_config();
    config.version(VERSION_2);
    let mut pair = Pair::default();
    pair.server.handle_incoming = Box::new(validate_incoming);
    let (client_ch, server_ch) = pair.connect_with(config);
    assert_eq!(pair.server_conn_mut(server_ch).version(), VERSION_2);
    assert!(pair.client_conn_mut(client_ch).stats().frame_rx.crypto > 0);
}

#[test]
fn v1_client_offers_v2_and_is_moved() {
    let _guard = subscribe();
    let mut pair = Pair::default();
    let (client_ch, server_ch) = pair.connect();
    assert_eq!(pair.client_conn_mut(client_ch).version(), VERSION_2);
    assert_eq!(pair.server_conn_mut(server_ch).version(), VERSION_2);
}

#[test]
fn v1_client_of_a_v1_only_server_stays_on_v1() {
    let _guard = subscribe();
    let mut endpoint = crate::EndpointConfig::default();
    endpoint.supported_versions(vec![VERSION_1]);
    let server = crate::Endpoint::new(
        Arc::new(endpoint),
        Some(Arc::new(server_config())),
        true,
        None,
    );
    let client = crate::Endpoint::new(Default::default(), None, true, None);
    let mut pair = Pair::new_from_endpoint(client, server);
    let (client_ch, server_ch) = pair.connect();
    assert_eq!(pair.client_conn_mut(client_ch).version(), VERSION_1);
    assert_eq!(pair.server_conn_mut(server_ch).version(), VERSION_1);
}

#[test]
fn v1_client_offering_v2_through_retry_is_moved() {
    let _guard = subscribe();
    let mut pair = Pair::default();
    pair.server.handle_incoming = Box::new(validate_incoming);
    let (client_ch, server_ch) = pair.connect();
    assert_eq!(pair.client_conn_mut(client_ch).version(), VERSION_2);
    assert_eq!(pair.server_conn_mut(server_ch).version(), VERSION_2);
}

/// RFC 9369 Appendix A.4
#[test]
fn retry_integrity_tag_v2_vector() {
    let odcid = ConnectionId::new(&hex!("8394c8f03e515708"));
    let retry = hex!("cf6b3343cf0008f067a5502a4262b5746f6b656e c8646ce8bfe33952d955543665dcc7b6");
    let (without_tag, tag) = retry.split_at(retry.len() - 16);
    assert_eq!(
        server_crypto().retry_tag(VERSION_2, &odcid, without_tag),
        tag
    );

    let session = crypto::ClientConfig::start_session(
        Arc::new(client_crypto()),
        VERSION_2,
        "localhost",
        &TransportParameters::default(),
    )
    .unwrap();
    let (header, payload) = retry.split_at(9);
    assert!(session.is_valid_retry(&odcid, header, payload));
    // the v1 key does not authenticate a v2 Retry
    let v1 = crypto::ClientConfig::start_session(
        Arc::new(client_crypto()),
        VERSION_1,
        "localhost",
        &TransportParameters::default(),
    )
    .unwrap();
    assert!(!v1.is_valid_retry(&odcid, header, payload));

    // the header names a Retry in v2's type bits
    let (decoded, _) = PartialDecode::new(
        retry[..].into(),
        &FixedLengthConnectionIdParser::new(0),
        &[VERSION_2],
        false,
    )
    .unwrap();
    let packet = decoded.finish(None).unwrap();
    assert_matches!(
        packet.header,
        Header::Retry {
            version: VERSION_2,
            ..
        }
    );
}

/// A client crypto config whose transport parameters offer `available` in place of what the
/// endpoint offers
struct Offering {
    inner: Arc<crate::crypto::rustls::QuicClientConfig>,
    available: &'static [u32],
}

impl crypto::ClientConfig for Offering {
    fn start_session(
        self: Arc<Self>,
        version: u32,
        server_name: &str,
        params: &TransportParameters,
    ) -> Result<Box<dyn crypto::Session>, ConnectError> {
        let mut params = *params;
        params.version_information = Some(VersionInformation::new(version, self.available));
        self.inner
            .clone()
            .start_session(version, server_name, &params)
    }
}

#[test]
fn server_switches_v1_client_offering_v2() {
    let _guard = subscribe();
    let mut pair = Pair::default();
    let config = ClientConfig::new(Arc::new(Offering {
        inner: Arc::new(client_crypto()),
        available: &[VERSION_1, VERSION_2],
    }));
    let client_ch = pair.begin_connect(config);
    pair.drive_client();
    let first = pair.server.inbound.front().unwrap().2.clone();
    assert_eq!(first[1..5], VERSION_1.to_be_bytes());
    let dcid = ConnectionId::new(&first[6..6 + usize::from(first[5])]);
    pair.drive_server();
    let server_ch = pair.server.assert_accept();
    assert_eq!(pair.server_conn_mut(server_ch).version(), VERSION_2);

    // The server's first flight is a v2 Initial protected with keys derived from the client's
    // original DCID and v2's salt and labels
    let reply = pair.client.inbound.front().unwrap().2.clone();
    assert_eq!(reply[1..5], VERSION_2.to_be_bytes());
    assert_eq!((reply[0] & 0x30) >> 4, 0x1, "v2 Initial type bits");
    let (decoded, _) = PartialDecode::new(
        reply,
        &FixedLengthConnectionIdParser::new(0),
        &[VERSION_2],
        true,
    )
    .unwrap();
    assert!(decoded.is_initial());
    let keys = crate::crypto::rustls::initial_keys(
        rustls::quic::Version::V2,
        dcid,
        Side::Client,
        &crate::crypto::rustls::initial_suite_from_provider(
            &crate::crypto::rustls::configured_provider(),
        )
        .unwrap(),
    );
    let mut packet = decoded.finish(Some(&*keys.header.remote)).unwrap();
    let number = packet.header.number().unwrap().expand(0);
    keys.packet
        .remote
        .decrypt(number, &packet.header_data, &mut packet.payload)
        .unwrap();
    let frames = frame::Iter::new(packet.payload.freeze())
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    assert!(frames.iter().any(|f| matches!(f, Frame::Crypto(_))));

    // and the client follows
    pair.drive();
    assert_eq!(pair.client_conn_mut(client_ch).version(), VERSION_2);
    assert!(!pair.client_conn_mut(client_ch).is_handshaking());
}

#[test]
fn server_keeps_v1_for_client_offering_only_v1() {
    let _guard = subscribe();
    let mut pair = Pair::default();
    let config = ClientConfig::new(Arc::new(Offering {
        inner: Arc::new(client_crypto()),
        available: &[VERSION_1],
    }));
    let (client_ch, server_ch) = pair.connect_with(config);
    assert_eq!(pair.server_conn_mut(server_ch).version(), VERSION_1);
    assert_eq!(pair.client_conn_mut(client_ch).version(), VERSION_1);
}

#[test]
fn client_chosen_version_must_match_its_packets() {
    let _guard = subscribe();
    let mut pair = Pair::default();
    // claims it chose v2, but sends v1 packets: a downgrade/injection sign (RFC 9368 §5)
    struct Lying(Arc<crate::crypto::rustls::QuicClientConfig>);
    impl crypto::ClientConfig for Lying {
        fn start_session(
            self: Arc<Self>,
            version: u32,
            server_name: &str,
            params: &TransportParameters,
        ) -> Result<Box<dyn crypto::Session>, ConnectError> {
            let mut params = *params;
            params.version_information =
                Some(VersionInformation::new(VERSION_2, &[VERSION_2, VERSION_1]));
            self.0.clone().start_session(version, server_name, &params)
        }
    }
    let config = ClientConfig::new(Arc::new(Lying(Arc::new(client_crypto()))));
    let client_ch = pair.begin_connect(config);
    pair.drive();
    assert_matches!(
        pair.client_conn_mut(client_ch).poll(),
        Some(Event::ConnectionLost {
            reason: ConnectionError::ConnectionClosed(ConnectionClose {
                error_code: TransportErrorCode::VERSION_NEGOTIATION_ERROR,
                ..
            })
        })
    );
}

#[test]
fn server_abandoning_handshake_refuses_connection() {
    let _guard = subscribe();
    let mut pair = Pair::default();
    let client_ch = pair.begin_connect(client_config());
    pair.drive_client();
    pair.drive_server();
    let server_ch = pair.server.assert_accept();
    assert!(pair.server_conn_mut(server_ch).is_handshaking());
    // what quinn does when the application drops a `Connecting`
    let now = pair.time;
    pair.server_conn_mut(server_ch).close(
        now,
        VarInt(0),
        Bytes::from_static(b"handshake deadline"),
    );
    pair.drive();
    let mut lost = None;
    while let Some(event) = pair.client_conn_mut(client_ch).poll() {
        if let Event::ConnectionLost { reason } = event {
            lost = Some(reason);
        }
    }
    assert_matches!(
        lost,
        Some(ConnectionError::ConnectionClosed(ConnectionClose {
            error_code: TransportErrorCode::CONNECTION_REFUSED,
            ref reason,
            ..
        })) if reason.as_ref() == b"handshake deadline"
    );
}

#[test]
fn established_server_close_stays_an_application_close() {
    let _guard = subscribe();
    let mut pair = Pair::default();
    let (client_ch, server_ch) = pair.connect();
    let now = pair.time;
    pair.server_conn_mut(server_ch)
        .close(now, VarInt(7), Bytes::new());
    pair.drive();
    assert_matches!(
        pair.client_conn_mut(client_ch).poll(),
        Some(Event::ConnectionLost {
            reason: ConnectionError::ApplicationClosed(frame::ApplicationClose {
                error_code: VarInt(7),
                ..
            })
        })
    );
}

#[test]
fn forged_v2_initial_does_not_move_the_client() {
    let _guard = subscribe();
    let mut pair = Pair::default();
    let client_ch = pair.begin_connect(client_config());
    pair.drive_client();
    pair.drive_server();
    // The server's genuine v2 answer, and a copy with a flipped byte inside
    // its Initial's protected payload, delivered first
    let (time, ecn, genuine) = pair.client.inbound.pop_front().unwrap();
    assert_eq!(genuine[1..5], VERSION_2.to_be_bytes());
    let mut forged = genuine.to_vec();
    forged[100] ^= 0xff;
    pair.client.inbound.clear();
    pair.client
        .inbound
        .push_back((time, ecn, forged.as_slice().into()));
    pair.drive_client();
    assert_eq!(pair.client_conn_mut(client_ch).version(), VERSION_1);
    // the genuine one still moves it, and the handshake completes in v2
    pair.client.inbound.push_back((pair.time, ecn, genuine));
    pair.drive();
    assert_eq!(pair.client_conn_mut(client_ch).version(), VERSION_2);
    assert!(!pair.client_conn_mut(client_ch).is_handshaking());
}
