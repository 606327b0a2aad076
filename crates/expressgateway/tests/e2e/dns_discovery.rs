//! DNS discovery (SPEC §11): a backend host name with several A records
//! becomes several backends, re-resolved within `dns_max_ttl_ms`. The test
//! owns its resolver: a small DNS server on loopback answering A queries
//! from a record set the test changes (`[runtime] dns_servers`).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ::http::StatusCode;
use tokio::net::UdpSocket;

use crate::support::http::{client, get, send, ClientProto, HttpBackend};
use crate::support::*;

/// Answers every A query with `records` (TTL 1 s), AAAA with none.
struct DnsServer {
    addr: SocketAddr,
    records: Arc<Mutex<Vec<[u8; 4]>>>,
}

impl DnsServer {
    async fn start(records: Vec<[u8; 4]>) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let addr = socket.local_addr().expect("addr");
        let records = Arc::new(Mutex::new(records));
        let shared = Arc::clone(&records);
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let q = &buf[..n];
                // The question ends after its name's zero byte, type, class.
                let Some(end) = q.iter().skip(12).position(|b| *b == 0).map(|p| 12 + p + 5) else {
                    continue;
                };
                if end > n {
                    continue;
                }
                let qtype = u16::from_be_bytes([q[end - 4], q[end - 3]]);
                let answers: Vec<[u8; 4]> = if qtype == 1 {
                    shared.lock().expect("lock").clone()
                } else {
                    Vec::new()
                };
                let mut r = q[..end].to_vec();
                r[2] = 0x81;
                r[3] = 0x80;
                r[6] = 0;
                r[7] = answers.len() as u8;
                for ip in answers {
                    r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4]);
                    r.extend_from_slice(&ip);
                }
                let _ = socket.send_to(&r, from).await;
            }
        });
        Self { addr, records }
    }

    fn set(&self, records: Vec<[u8; 4]>) {
        *self.records.lock().expect("lock") = records;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_name_with_three_records_is_three_backends_and_follows_changes() {
    // Three backends on one port, on three loopback addresses.
    let first = HttpBackend::start_on("127.0.0.1:0".parse().expect("addr"), "r1", None).await;
    let port = first.addr.port();
    let second = HttpBackend::start_on(SocketAddr::from(([127, 0, 0, 2], port)), "r2", None).await;
    let third = HttpBackend::start_on(SocketAddr::from(([127, 0, 0, 3], port)), "r3", None).await;
    let dns = DnsServer::start(vec![[127, 0, 0, 1], [127, 0, 0, 2], [127, 0, 0, 3]]).await;
    let config = format!(
        "[runtime]\ndns_servers = [\"{}\"]\ndns_min_ttl_ms = 200\ndns_max_ttl_ms = 1000\n\
         [[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n\
         [[listeners.backends]]\naddress = \"origin.eg-test:{port}\"\n",
        dns.addr
    );
    let gw = Gateway::start(&config);
    let base = format!("http://{}", gw.addr(0));
    let cl = client(ClientProto::H1);
    let mut seen = HashSet::new();
    for i in 0..30 {
        let r = send(&cl, get(&format!("{base}/spread/{i}"))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", gw.stderr());
        seen.insert(r.headers.get("x-backend").cloned());
    }
    assert_eq!(seen.len(), 3, "round robin over every record: {seen:?}");
    // The name now has one record: within dns_max_ttl_ms (and a reload's
    // worth of slack) every request goes there.
    dns.set(vec![[127, 0, 0, 3]]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut only_third = true;
        for i in 0..6 {
            let r = send(&cl, get(&format!("{base}/after/{i}"))).await;
            assert_eq!(r.status, StatusCode::OK);
            only_third &= r.headers.get("x-backend").is_some_and(|v| v == "r3");
        }
        if only_third {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the record change was not followed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop((first, second, third));
}
