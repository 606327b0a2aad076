//! The startup report: one JSON line on stdout per bound listener, then a
//! `ready` line. Tests and operators read real addresses from it (port 0).
//! A program talking to a person (the demo on a terminal) can instead take
//! the bound listeners at `ready` and print them its own way.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};

/// One bound socket, as reported.
#[derive(Debug, Clone)]
pub struct Listening {
    pub name: String,
    pub protocol: String,
    pub transport: String,
    pub address: SocketAddr,
}

type ReadyHook = Box<dyn FnOnce(&[Listening]) + Send>;

/// Set once, before the gateway starts: what happens at `ready`.
struct Hook {
    /// Keep printing the JSON lines too.
    json: bool,
    on_ready: Mutex<Option<ReadyHook>>,
    bound: Mutex<Vec<Listening>>,
}

static HOOK: OnceLock<Hook> = OnceLock::new();

/// Call `on_ready` with every bound listener once the gateway is ready;
/// with `json` false, print no JSON report at all. Only the first call
/// takes effect (the report describes one process start).
pub fn on_ready(json: bool, on_ready: impl FnOnce(&[Listening]) + Send + 'static) {
    let _ = HOOK.set(Hook {
        json,
        on_ready: Mutex::new(Some(Box::new(on_ready))),
        bound: Mutex::new(Vec::new()),
    });
}

/// Print `{"event":"listening",...}` for one bound socket.
pub fn listening(name: &str, protocol: &str, transport: &str, address: SocketAddr) {
    if let Some(hook) = HOOK.get() {
        if let Ok(mut bound) = hook.bound.lock() {
            bound.push(Listening {
                name: name.to_owned(),
                protocol: protocol.to_owned(),
                transport: transport.to_owned(),
                address,
            });
        }
        if !hook.json {
            return;
        }
    }
    let line = serde_json::json!({
        "event": "listening",
        "listener": name,
        "protocol": protocol,
        "transport": transport,
        "address": address.to_string(),
    });
    emit(&line);
}

/// Print `{"event":"ready"}` once every listener is bound and serving;
/// a reader that waits for it finds the hook's output already written.
pub fn ready() {
    if let Some(hook) = HOOK.get() {
        let bound = hook.bound.lock().map(|b| b.clone()).unwrap_or_default();
        if let Some(f) = hook.on_ready.lock().ok().and_then(|mut f| f.take()) {
            f(&bound);
        }
        if !hook.json {
            return;
        }
    }
    emit(&serde_json::json!({ "event": "ready", "pid": std::process::id() }));
}

fn emit(line: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    // A closed stdout must not stop the gateway: the report is advisory.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
