//! What the demo prints for a person once every listener is bound: each
//! listener's real address and a command to try it with, using clients a
//! stock machine has (curl, openssl) and saying so where it has none.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use eg_runtime::report::Listening;

pub struct Guide {
    /// The self-signed certificate every TLS and QUIC listener serves.
    pub cert: PathBuf,
    /// Terminal: stdout (no JSON report there). Piped: stderr.
    pub to_stdout: bool,
    /// The demo turned logs down to warnings for the terminal.
    pub quiet_logs: bool,
}

impl Guide {
    pub fn print(&self, bound: &[Listening]) {
        let text = self.render(bound);
        if self.to_stdout {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        } else {
            let _ = std::io::stderr().lock().write_all(text.as_bytes());
        }
    }

    fn render(&self, bound: &[Listening]) -> String {
        let find = |name: &str| bound.iter().find(|b| b.name == name).map(|b| b.address);
        // `localhost` in a URL only where both loopbacks listen on that port.
        let host = |name: &str, a: SocketAddr| match find(&format!("{name}-v6")) {
            Some(b) if b.port() == a.port() => format!("localhost:{}", a.port()),
            _ => a.to_string(),
        };
        let mut out = Lines::default();
        out.text("ExpressGateway demo is ready.");
        out.text(
            "Built-in backends: a TCP echo; HTTP servers A (HTTP/1.1), B (HTTP/2), C (HTTP/3).",
        );
        out.text(&format!(
            "Certificate (self-signed for localhost, 127.0.0.1, ::1): {}",
            self.cert.display()
        ));
        out.text("(curl -k skips verifying it; curl --cacert <that file> verifies it)");
        out.text("");
        out.text("L4 relays:");
        if let Some(a) = find("demo-tcp-echo") {
            // curl speaks raw TCP as "telnet"; -m1 ends it once the echo is back.
            let cmd = format!("echo hello | curl -s -m1 telnet://{a}");
            out.row("tcp -> echo", a, &cmd);
        }
        if let Some(a) = find("demo-tls-echo") {
            out.row(
                "tls -> echo",
                a,
                &format!("openssl s_client -quiet -connect {a}"),
            );
            out.more("(type a line, see it echoed)");
        }
        if let Some(a) = find("demo-tcp-http") {
            out.row("tcp -> A", a, &format!("curl http://{a}/"));
        }
        if let Some(a) = find("demo-tls-http") {
            out.row("tls -> A", a, &format!("curl -k https://{a}/"));
        }
        out.text("");
        out.text("HTTP (each request goes to the next of A, B, C):");
        if let Some(a) = find("demo-h1") {
            out.row("h1", a, &format!("curl http://{a}/"));
            out.more(&format!("curl --http2-prior-knowledge http://{a}/"));
        }
        if let Some(a) = find("demo-h1s") {
            let h = host("demo-h1s", a);
            out.row(
                "h1s",
                a,
                &format!("curl -k https://{h}/   (HTTP/2 by ALPN)"),
            );
            if let Some(b) = find("demo-h1s-v6") {
                out.row("h1s (IPv6)", b, "");
            }
        }
        if let Some(a) = find("demo-quic") {
            let h = host("demo-quic", a);
            out.row("h3 (udp)", a, &format!("curl --http3-only -k https://{h}/"));
            if let Some(b) = find("demo-quic-v6") {
                out.row("h3 (udp, IPv6)", b, "");
            }
            out.more("(curl needs HTTP3 in `curl -V`: Debian's and Ubuntu's lack it.");
            out.more(" From the source tree, five timed HTTP/3 requests:");
            out.more(&format!(
                " cargo run --release --example h3load -- {a} --insecure -n 0 --single 5)"
            ));
        }
        if let Some(a) = find("demo-quic-relay") {
            out.row(
                "QUIC relay (udp)",
                a,
                "Mode B: the client's QUIC (ALPN h3) relayed to C;",
            );
            out.more("the same HTTP/3 clients, on this port");
        }
        if let Some(a) = find("passthrough") {
            out.row(
                "QUIC passthru",
                a,
                "Mode A: datagrams routed by connection ID to C, never",
            );
            out.more("decrypted; the same HTTP/3 clients, on this port");
        }
        if let Some(a) = find("admin") {
            out.text("");
            out.text(&format!("Admin: http://{a}/ (status page)"));
            out.text(&format!("  curl http://{a}/api/v1/pools"));
            out.text(&format!("  curl http://{a}/metrics"));
        }
        out.text("");
        if self.quiet_logs {
            out.text("Logs below: warnings only (RUST_LOG=info for more). Stop with Ctrl-C.");
        } else {
            out.text("Stop with Ctrl-C.");
        }
        out.0
    }
}

/// Columns: what, address, then a command; `more` continues the command
/// column.
#[derive(Default)]
struct Lines(String);

const WHAT: usize = 16;
const ADDRESS: usize = 22;

impl Lines {
    fn text(&mut self, text: &str) {
        self.0.push_str(text);
        self.0.push('\n');
    }

    fn row(&mut self, what: &str, address: SocketAddr, command: &str) {
        let line = format!(
            "  {what:<WHAT$} {:<ADDRESS$} {command}",
            address.to_string()
        );
        self.text(line.trim_end());
    }

    fn more(&mut self, command: &str) {
        let line = format!("  {:<WHAT$} {:<ADDRESS$} {command}", "", "");
        self.text(&line);
    }
}
