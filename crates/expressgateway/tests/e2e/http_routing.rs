//! HTTP routing (host, wildcard host, path prefix, header; first match
//! wins; no match and no default pool is a 404), the header rules a
//! backend sees, and Alt-Svc.

use std::net::SocketAddr;
use std::time::Duration;

use ::http::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::http::{
    client, get, send, text, ClientProto, Collected, HttpBackend, TestClient,
};
use crate::support::*;

/// The routing table under test, in this order:
///
/// 0. host `exact.example.com` -> cluster `exact`
/// 1. host `*.example.com` -> cluster `wild`
/// 2. path prefix `/api/` -> cluster `api`
/// 3. header `x-canary: 1` -> cluster `canary`
///
/// Anything else goes to the listener's default pool (`default`).
struct Routed {
    gw: Gateway,
    default: HttpBackend,
    exact: HttpBackend,
    wild: HttpBackend,
    api: HttpBackend,
    canary: HttpBackend,
    client: TestClient,
}

impl Routed {
    async fn start() -> Self {
        let default = HttpBackend::start("default").await;
        let exact = HttpBackend::start("exact").await;
        let wild = HttpBackend::start("wild").await;
        let api = HttpBackend::start("api").await;
        let canary = HttpBackend::start("canary").await;
        let mut cfg = format!(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n\
             [[listeners.backends]]\naddress = \"{}\"\n\
             [[listeners.routes]]\nhost = \"exact.example.com\"\ncluster = \"exact\"\n\
             [[listeners.routes]]\nhost = \"*.example.com\"\ncluster = \"wild\"\n\
             [[listeners.routes]]\npath_prefix = \"/api/\"\ncluster = \"api\"\n\
             [[listeners.routes]]\nheader = {{ name = \"x-canary\", value = \"1\" }}\ncluster = \"canary\"\n",
            default.addr
        );
        for (name, b) in [
            ("exact", &exact),
            ("wild", &wild),
            ("api", &api),
            ("canary", &canary),
        ] {
            cfg.push_str(&format!(
                "[[clusters]]\nname = \"{name}\"\n[[clusters.backends]]\naddress = \"{}\"\n",
                b.addr
            ));
        }
        let gw = Gateway::start(&cfg);
        Self {
            gw,
            default,
            exact,
            wild,
            api,
            canary,
            client: client(ClientProto::H1),
        }
    }

    /// GET `path` with this Host and extra headers; returns which backend
    /// answered (`x-backend`), after checking the body agrees.
    async fn who(&self, host: &str, path: &str, extra: &[(&str, &str)]) -> String {
        let mut b = Request::get(format!("http://{}{path}", self.gw.addr(0))).header("host", host);
        for (n, v) in extra {
            b = b.header(*n, *v);
        }
        let resp = send(&self.client, b.body(text("")).expect("request")).await;
        backend_of(&resp, path)
    }

    fn total_hits(&self) -> usize {
        [
            &self.default,
            &self.exact,
            &self.wild,
            &self.api,
            &self.canary,
        ]
        .iter()
        .map(|b| b.hits())
        .sum()
    }
}

/// The backend named by `x-backend`, checked against the body text.
fn backend_of(resp: &Collected, path: &str) -> String {
    assert_eq!(
        resp.status,
        200,
        "{path}: {:?}",
        String::from_utf8_lossy(&resp.body)
    );
    let name = resp
        .headers
        .get("x-backend")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("{path}: no x-backend header"))
        .to_owned();
    assert_eq!(
        String::from_utf8_lossy(&resp.body),
        format!("backend {name} {path}\n"),
        "body disagrees with x-backend"
    );
    name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_exact_host() {
    let r = Routed::start().await;
    assert_eq!(r.who("exact.example.com", "/h", &[]).await, "exact");
    // Host matching ignores case and port.
    assert_eq!(r.who("EXACT.example.com:8080", "/h", &[]).await, "exact");
    assert_eq!(r.exact.hits(), 2);
    // A different host does not match the exact route.
    assert_eq!(r.who("exact.example.org", "/h", &[]).await, "default");
    assert_eq!(r.total_hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_wildcard_host() {
    let r = Routed::start().await;
    assert_eq!(r.who("a.example.com", "/w", &[]).await, "wild");
    assert_eq!(r.who("b.a.example.com", "/w", &[]).await, "wild");
    assert_eq!(r.who("A.Example.COM:8443", "/w", &[]).await, "wild");
    // The bare domain and a look-alike suffix are not covered by `*.`.
    assert_eq!(r.who("example.com", "/w", &[]).await, "default");
    assert_eq!(r.who("badexample.com", "/w", &[]).await, "default");
    assert_eq!(r.wild.hits(), 3);
    assert_eq!(r.default.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_path_prefix() {
    let r = Routed::start().await;
    assert_eq!(r.who("other.test", "/api/v1/users", &[]).await, "api");
    assert_eq!(r.who("other.test", "/api/", &[]).await, "api");
    // Prefix, not substring or a prefix of the prefix.
    assert_eq!(r.who("other.test", "/apix", &[]).await, "default");
    assert_eq!(r.who("other.test", "/api", &[]).await, "default");
    assert_eq!(r.who("other.test", "/v1/api/", &[]).await, "default");
    assert_eq!(r.api.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_header() {
    let r = Routed::start().await;
    assert_eq!(
        r.who("other.test", "/c", &[("x-canary", "1")]).await,
        "canary"
    );
    assert_eq!(
        r.who("other.test", "/c", &[("x-canary", "2")]).await,
        "default"
    );
    assert_eq!(r.who("other.test", "/c", &[]).await, "default");
    assert_eq!(r.canary.hits(), 1);
    assert_eq!(r.default.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_matching_route_wins() {
    let r = Routed::start().await;
    let canary = [("x-canary", "1")];
    // Matches all four routes: the first (exact host) wins.
    assert_eq!(r.who("exact.example.com", "/api/x", &canary).await, "exact");
    // Matches wildcard, prefix and header: the wildcard (second) wins.
    assert_eq!(r.who("a.example.com", "/api/x", &canary).await, "wild");
    // Matches prefix and header: the prefix (third) wins.
    assert_eq!(r.who("other.test", "/api/x", &canary).await, "api");
    // Only the header.
    assert_eq!(r.who("other.test", "/x", &canary).await, "canary");
    assert_eq!(
        [
            r.exact.hits(),
            r.wild.hits(),
            r.api.hits(),
            r.canary.hits(),
            r.default.hits()
        ],
        [1, 1, 1, 1, 0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_matching_route_without_default_pool_gets_404() {
    let api = HttpBackend::start("api").await;
    let cfg = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n\
         [[listeners.routes]]\npath_prefix = \"/api/\"\ncluster = \"api\"\n\
         [[clusters]]\nname = \"api\"\n[[clusters.backends]]\naddress = \"{}\"\n",
        api.addr
    );
    let gw = Gateway::start(&cfg);
    let c = client(ClientProto::H1);
    let base = format!("http://{}", gw.addr(0));
    let resp = send(&c, get(&format!("{base}/api/ok"))).await;
    assert_eq!(backend_of(&resp, "/api/ok"), "api");
    let resp = send(&c, get(&format!("{base}/elsewhere"))).await;
    assert_eq!(
        resp.status,
        404,
        "{:?}",
        String::from_utf8_lossy(&resp.body)
    );
    assert!(resp.headers.get("x-backend").is_none());
    assert_eq!(api.hits(), 1, "unrouted request reached a backend");
}

// ---------------------------------------------------------------------------
// Header rules seen by the backend.

/// Send raw request bytes and read the response head's status (the body is
/// not needed); bounded by a timeout.
async fn raw_status(addr: SocketAddr, raw: &[u8]) -> u16 {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(raw).await.expect("write");
    let mut buf = Vec::new();
    let read_head = async {
        let mut tmp = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut tmp).await.expect("read");
            assert!(
                n > 0,
                "closed before a response head: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&tmp[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read_head)
        .await
        .expect("response head within 5 s");
    let head = String::from_utf8_lossy(&buf);
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad response head {head:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_sees_forwarding_headers_and_no_hop_by_hop() {
    let backend = HttpBackend::start("rules").await;
    let gw = Gateway::start(&format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n\
         [[listeners.backends]]\naddress = \"{}\"\n",
        backend.addr
    ));
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let raw = format!(
        "GET /rules HTTP/1.1\r\nHost: front.example:8080\r\ntraceparent: {traceparent}\r\n\
         Connection: x-secret\r\nx-secret: 1\r\nKeep-Alive: timeout=5\r\nx-kept: yes\r\n\r\n"
    );
    assert_eq!(raw_status(gw.addr(0), raw.as_bytes()).await, 200);
    assert_eq!(backend.hits(), 1);
    let seen = backend
        .seen
        .last_headers
        .lock()
        .expect("lock")
        .clone()
        .expect("headers recorded");
    let get = |name: &str| {
        seen.get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };

    let xff = get("x-forwarded-for").unwrap_or_default();
    assert!(xff.contains("127.0.0.1"), "x-forwarded-for {xff:?}");
    assert_eq!(get("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(
        get("x-forwarded-host").as_deref(),
        Some("front.example:8080")
    );
    let via = get("via").unwrap_or_default();
    assert!(via.contains("expressgateway"), "via {via:?}");
    assert_eq!(get("traceparent").as_deref(), Some(traceparent));
    assert!(
        seen.get("x-secret").is_none(),
        "x-secret (named in Connection) forwarded"
    );
    assert!(seen.get("keep-alive").is_none(), "keep-alive forwarded");
    assert!(
        seen.get_all("connection")
            .iter()
            .all(|v| !v.to_str().unwrap_or_default().contains("x-secret")),
        "client's Connection header forwarded: {seen:?}"
    );
    // An ordinary end-to-end header survives (the rules are not a wipe).
    assert_eq!(get("x-kept").as_deref(), Some("yes"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_sees_prior_x_forwarded_for_extended() {
    let backend = HttpBackend::start("rules").await;
    let gw = Gateway::start(&format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n\
         [[listeners.backends]]\naddress = \"{}\"\n",
        backend.addr
    ));
    let raw = b"GET /xff HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 192.0.2.7\r\n\r\n";
    assert_eq!(raw_status(gw.addr(0), raw).await, 200);
    let seen = backend
        .seen
        .last_headers
        .lock()
        .expect("lock")
        .clone()
        .expect("headers recorded");
    assert_eq!(
        seen.get("x-forwarded-for").and_then(|v| v.to_str().ok()),
        Some("192.0.2.7, 127.0.0.1")
    );
}

// ---------------------------------------------------------------------------
// Alt-Svc.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alt_svc_is_advertised_when_configured() {
    let backend = HttpBackend::start("alt").await;
    let gw = Gateway::start(&format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n\
         [listeners.alt_svc]\nh3_port = 443\n\
         [[listeners.backends]]\naddress = \"{b}\"\n\
         [[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n\
         [[listeners.backends]]\naddress = \"{b}\"\n",
        b = backend.addr
    ));
    let c = client(ClientProto::H1);
    let with = send(&c, get(&format!("http://{}/a", gw.addr(0)))).await;
    assert_eq!(backend_of(&with, "/a"), "alt");
    assert_eq!(
        with.headers.get("alt-svc").and_then(|v| v.to_str().ok()),
        Some("h3=\":443\"; ma=3600")
    );
    // The listener without `[listeners.alt_svc]` does not advertise.
    let without = send(&c, get(&format!("http://{}/a", gw.addr(1)))).await;
    assert_eq!(backend_of(&without, "/a"), "alt");
    assert!(
        without.headers.get("alt-svc").is_none(),
        "{:?}",
        without.headers
    );
}
