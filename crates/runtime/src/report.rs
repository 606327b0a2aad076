//! The startup report: one JSON line on stdout per bound listener, then a
//! `ready` line. Tests and operators read real addresses from it (port 0).

use std::io::Write;
use std::net::SocketAddr;

/// Print `{"event":"listening",...}` for one bound socket.
pub fn listening(name: &str, protocol: &str, transport: &str, address: SocketAddr) {
    let line = serde_json::json!({
        "event": "listening",
        "listener": name,
        "protocol": protocol,
        "transport": transport,
        "address": address.to_string(),
    });
    emit(&line);
}

/// Print `{"event":"ready"}` once every listener is bound and serving.
pub fn ready() {
    emit(&serde_json::json!({ "event": "ready", "pid": std::process::id() }));
}

fn emit(line: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    // A closed stdout must not stop the gateway: the report is advisory.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
