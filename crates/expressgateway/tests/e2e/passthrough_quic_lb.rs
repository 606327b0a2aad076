//! QUIC-LB (SPEC §11): `quic` listeners that issue QUIC-LB connection IDs,
//! behind Mode A of another gateway process that routes by the server ID
//! in them. Restarting the Mode A process mid-connection loses its flow
//! table, and the connection goes on: the server ID alone routes it.

use std::net::SocketAddr;

use ::http::Method;
use bytes::Bytes;

use crate::passthrough::{metric, pt_addr};
use crate::support::h3::H3Client;
use crate::support::http::HttpBackend;
use crate::support::tls::cert;
use crate::support::*;

/// An HTTP/3 gateway whose connection IDs carry `server_id`.
fn h3_gateway(c: &eg_tls::SelfSigned, backend: SocketAddr, server_id: &str) -> String {
    format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"quic\"\n[listeners.quic]\n\
         cert_path = \"{}\"\nkey_path = \"{}\"\n[listeners.quic.quic_lb]\nserver_id = \"{server_id}\"\n\
         config_rotation = 1\n[[listeners.backends]]\naddress = \"{backend}\"\n",
        c.cert_path.display(),
        c.key_path.display(),
    )
}

/// Mode A on `bind` over the two H3 gateways, reading 1-byte server IDs.
fn mode_a(bind: &str, g1: SocketAddr, g2: SocketAddr) -> String {
    format!(
        "[observability]\nmetrics_bind = \"127.0.0.1:0\"\n\
         [passthrough]\nbind_addr = \"{bind}\"\n\
         backends = [{{ address = \"{g1}\", server_id = \"01\" }}, {{ address = \"{g2}\", server_id = \"02\" }}]\n\
         [passthrough.quic_lb]\nserver_id_len = 1\nconfig_rotation = 1\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_lb_ids_route_a_connection_across_a_mode_a_restart() {
    let dir = scratch();
    let c = cert(dir.path(), "edge");
    let (o1, o2) = (
        HttpBackend::start("o1").await,
        HttpBackend::start("o2").await,
    );
    let g1 = Gateway::start_in(scratch(), &h3_gateway(&c, o1.addr, "01"));
    let g2 = Gateway::start_in(scratch(), &h3_gateway(&c, o2.addr, "02"));
    let lb = Gateway::start_in(scratch(), &mode_a("127.0.0.1:0", g1.addr(0), g2.addr(0)));
    let front = pt_addr(&lb);
    // Several connections, so both instances have some.
    let mut clients = Vec::new();
    for i in 0..6 {
        let mut cl = H3Client::new(&c.cert_pem, front);
        let r = cl
            .send(Method::GET, &format!("/first/{i}"), Bytes::new())
            .await;
        assert_eq!(r.status, 200);
        let origin = String::from_utf8_lossy(&r.body)
            .split(' ')
            .nth(1)
            .map(str::to_owned);
        clients.push((cl, origin.expect("origin name")));
    }
    // The Mode A process goes away with its flow table; a new one takes
    // the same address.
    drop(lb);
    let lb = Gateway::start_in(
        scratch(),
        &mode_a(&front.to_string(), g1.addr(0), g2.addr(0)),
    );
    assert_eq!(pt_addr(&lb), front);
    for (i, (cl, origin)) in clients.iter_mut().enumerate() {
        let r = cl
            .send(Method::GET, &format!("/after/{i}"), Bytes::new())
            .await;
        assert_eq!(r.status, 200);
        let body = String::from_utf8_lossy(&r.body).into_owned();
        assert_eq!(
            body,
            format!("backend {origin} /after/{i}\n"),
            "same instance"
        );
        assert_eq!(cl.connections_opened, 1, "the same QUIC connection");
    }
    assert!(
        metric(
            &lb,
            "expressgateway_passthrough_flows_total{event=\"quic_lb\"}"
        )
        .await
            >= 6,
        "flows re-entered from their QUIC-LB IDs"
    );
}
