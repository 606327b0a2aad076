//! `expressgateway demo`: built-in backends, a self-signed certificate and
//! one listener of every kind this build serves, plus the admin listener,
//! on fixed local ports.

mod backends;
mod guide;

use std::io::IsTerminal;
use std::net::{TcpListener, UdpSocket};
use std::process::ExitCode;

use eg_config::Config;

/// Demo listeners take consecutive ports from here.
pub const DEFAULT_BASE_PORT: u16 = 17000;

pub fn run(base_port: u16) -> ExitCode {
    // On a terminal the person reading wants the guide, not every info
    // line; RUST_LOG still wins.
    let terminal = std::io::stdout().is_terminal();
    let quiet_logs = terminal && std::env::var_os("RUST_LOG").is_none();
    match demo(base_port, terminal, quiet_logs) {
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

/// Browsers resolve `localhost` to `::1` first and, for QUIC, do not fall
/// back to 127.0.0.1: where the host has IPv6 loopback, the listeners the
/// guide names as `localhost` listen on both.
fn has_ipv6_loopback() -> bool {
    UdpSocket::bind("[::1]:0").is_ok() && TcpListener::bind("[::1]:0").is_ok()
}

fn demo(base: u16, terminal: bool, quiet_logs: bool) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("expressgateway-demo-")
        .tempdir()?;
    let cert = eg_tls::self_signed(&["localhost", "127.0.0.1", "::1"], dir.path(), "demo")?;
    eg_tls::install_crypto_provider();
    // The backends need a runtime before the gateway's own starts: a small
    // one of their own, kept alive for the whole demo.
    let backends_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let (echo, hello, hello_b, hello_c) = backends_rt.block_on(async {
        Ok::<_, anyhow::Error>((
            backends::tcp_echo().await?,
            backends::http_hello("A").await?,
            backends::http_hello("B").await?,
            backends::h3_hello("C", &cert)?,
        ))
    })?;
    let (cert_path, key_path) = (cert.cert_path.display(), cert.key_path.display());
    let tls = format!("cert_path = \"{cert_path}\"\nkey_path = \"{key_path}\"\n");
    let http_backends = format!(
        "[[listeners.backends]]\naddress = \"{hello}\"\nprotocol = \"h1\"\n\
         [[listeners.backends]]\naddress = \"{hello_b}\"\nprotocol = \"h2\"\n\
         [[listeners.backends]]\naddress = \"{hello_c}\"\nprotocol = \"h3\"\n\
         tls_ca_path = \"{cert_path}\"\n"
    );
    // HTTP/3 shares the h1s port number, over UDP, as browsers expect.
    let alt_svc = if base == 0 {
        String::new()
    } else {
        format!("[listeners.alt_svc]\nh3_port = {}\n", port(base, 6))
    };
    let p = |offset| port(base, offset);
    let mut text = format!(
        r#"
[observability]
metrics_bind = "127.0.0.1:{admin}"

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
{tls}
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
{tls}
[[listeners.backends]]
address = "{hello}"

[[listeners]]
name = "demo-h1"
address = "127.0.0.1:{p5}"
protocol = "h1"
{http_backends}
"#,
        admin = p(8),
        p1 = p(1),
        p2 = p(2),
        p3 = p(3),
        p4 = p(4),
        p5 = p(5),
    );
    let mut hosts = vec![("", "127.0.0.1")];
    if has_ipv6_loopback() {
        hosts.push(("-v6", "[::1]"));
    }
    for (suffix, host) in &hosts {
        text.push_str(&format!(
            "[[listeners]]\nname = \"demo-h1s{suffix}\"\naddress = \"{host}:{p6}\"\n\
             protocol = \"h1s\"\n[listeners.tls]\n{tls}{alt_svc}{http_backends}\n\
             [[listeners]]\nname = \"demo-quic{suffix}\"\naddress = \"{host}:{p6}\"\n\
             protocol = \"quic\"\n[listeners.quic]\n{tls}{http_backends}\n",
            p6 = p(6),
        ));
    }
    text.push_str(&format!(
        "[[listeners]]\nname = \"demo-quic-relay\"\naddress = \"127.0.0.1:{p7}\"\n\
         protocol = \"quic\"\n[listeners.quic]\n{tls}[listeners.quic.raw_proxy]\n\
         backend_addr = \"{hello_c}\"\nsni = \"localhost\"\nbackend_ca_path = \"{cert_path}\"\n\
         alpn = [\"h3\"]\n",
        p7 = p(7),
    ));
    // Mode A: the client's QUIC datagrams to C, never decrypted (the
    // client sees C's own certificate).
    text.push_str(&format!(
        "[passthrough]\nbind_addr = \"127.0.0.1:{p9}\"\nbackends = [\"{hello_c}\"]\n",
        p9 = p(9),
    ));
    let config = Config::from_toml(&text)?;
    let guide = guide::Guide {
        cert: cert.cert_path.clone(),
        to_stdout: terminal,
        quiet_logs,
    };
    // On a terminal the guide replaces the JSON startup report; piped (a
    // script, the e2e tests) the report stays on stdout, the guide on stderr.
    eg_runtime::report::on_ready(!terminal, move |bound| guide.print(bound));
    if terminal {
        println!("ExpressGateway demo: starting the built-in backends and listeners...");
    }
    let default_log = if quiet_logs { "warn" } else { "info" };
    let result = crate::run::run_with(config, None, default_log);
    drop(backends_rt);
    result
}
