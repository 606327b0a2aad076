//! `expressgateway demo`: built-in backends, a self-signed certificate and
//! one listener of every kind this build serves, on fixed local ports.

mod backends;

use std::process::ExitCode;

use eg_config::Config;

/// Demo listeners take consecutive ports from here.
pub const DEFAULT_BASE_PORT: u16 = 17000;

pub fn run(base_port: u16) -> ExitCode {
    match demo(base_port) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn port(base: u16, offset: u16) -> u16 {
    if base == 0 {
        0
    } else {
        base.saturating_add(offset)
    }
}

fn demo(base: u16) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("expressgateway-demo-")
        .tempdir()?;
    let cert = eg_tls::self_signed(&["localhost", "127.0.0.1"], dir.path(), "demo")?;
    // The backends need a runtime before the gateway's own starts: a small
    // one of their own, kept alive for the whole demo.
    let backends_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let (echo, hello, hello_b) = backends_rt.block_on(async {
        Ok::<_, std::io::Error>((
            backends::tcp_echo().await?,
            backends::http_hello("A").await?,
            backends::http_hello("B").await?,
        ))
    })?;
    let (cert_path, key_path) = (cert.cert_path.display(), cert.key_path.display());
    let text = format!(
        r#"
[[listeners]]
name = "demo-tcp-echo"
address = "127.0.0.1:{p1}"
protocol = "tcp"
[[listeners.backends]]
address = "{echo}"

[[listeners]]
name = "demo-tls-echo"
address = "127.0.0.1:{p2}"
protocol = "tls"
[listeners.tls]
cert_path = "{cert_path}"
key_path = "{key_path}"
[[listeners.backends]]
address = "{echo}"

[[listeners]]
name = "demo-tcp-http"
address = "127.0.0.1:{p3}"
protocol = "tcp"
[[listeners.backends]]
address = "{hello}"

[[listeners]]
name = "demo-tls-http"
address = "127.0.0.1:{p4}"
protocol = "tls"
[listeners.tls]
cert_path = "{cert_path}"
key_path = "{key_path}"
[[listeners.backends]]
address = "{hello}"

[[listeners]]
name = "demo-h1"
address = "127.0.0.1:{p5}"
protocol = "h1"
[[listeners.backends]]
address = "{hello}"
protocol = "h1"
[[listeners.backends]]
address = "{hello_b}"
protocol = "h2"

[[listeners]]
name = "demo-h1s"
address = "127.0.0.1:{p6}"
protocol = "h1s"
[listeners.tls]
cert_path = "{cert_path}"
key_path = "{key_path}"
{alt_svc}
[[listeners.backends]]
address = "{hello}"
protocol = "h1"
[[listeners.backends]]
address = "{hello_b}"
protocol = "h2"

[[listeners]]
name = "demo-quic"
address = "127.0.0.1:{p7}"
protocol = "quic"
[listeners.quic]
cert_path = "{cert_path}"
key_path = "{key_path}"
[[listeners.backends]]
address = "{hello}"
protocol = "h1"
[[listeners.backends]]
address = "{hello_b}"
protocol = "h2"
"#,
        p1 = port(base, 1),
        p2 = port(base, 2),
        p3 = port(base, 3),
        p4 = port(base, 4),
        p5 = port(base, 5),
        p6 = port(base, 6),
        p7 = port(base, 6),
        // HTTP/3 shares the h1s port number, over UDP, as browsers expect.
        alt_svc = if base == 0 {
            String::new()
        } else {
            format!("[listeners.alt_svc]\nh3_port = {}\n", port(base, 6))
        },
    );
    let config = Config::from_toml(&text)?;
    print_guide(base);
    let result = crate::run::run(config, None);
    drop(backends_rt);
    result
}

fn print_guide(base: u16) {
    if base == 0 {
        eprintln!(
            "ExpressGateway demo: ports chosen by the OS, see the `listening` lines on stdout."
        );
        return;
    }
    let p = |o| port(base, o);
    eprintln!(
        "ExpressGateway demo is starting. Try:\n\
         \x20 echo hello | nc -q1 127.0.0.1 {}                       # tcp listener -> TCP echo\n\
         \x20 openssl s_client -connect 127.0.0.1:{} -quiet           # tls listener -> TCP echo (type, see it echoed)\n\
         \x20 curl http://127.0.0.1:{}/                               # tcp listener -> HTTP backend\n\
         \x20 curl -k https://127.0.0.1:{}/                           # tls listener -> HTTP backend\n\
         \x20 curl http://127.0.0.1:{}/                               # h1 listener -> backends A (h1) and B (h2), round robin\n\
         \x20 curl --http2-prior-knowledge http://127.0.0.1:{}/       # h1 listener, HTTP/2 cleartext\n\
         \x20 curl -k --http2 https://localhost:{}/                   # h1s listener, HTTP/2 by ALPN (Alt-Svc advertises h3)\n\
         \x20 HTTP/3 on udp/{}: any HTTP/3 client, e.g. python3 -m aioquic's http3_client --insecure https://localhost:{}/\n\
         Stop with Ctrl-C.",
        p(1),
        p(2),
        p(3),
        p(4),
        p(5),
        p(5),
        p(6),
        p(6),
        p(6)
    );
}
