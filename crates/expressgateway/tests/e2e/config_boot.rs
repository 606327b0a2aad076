//! Configs that boot, and configs that must refuse to, naming the key.

use crate::support::*;

fn tcp_config(backend: &str) -> String {
    format!(
        r#"
[[listeners]]
address = "127.0.0.1:0"
protocol = "tcp"
[[listeners.backends]]
address = "{backend}"
"#
    )
}

#[test]
fn version_flag_prints_the_version() {
    let out = run_to_exit(&["--version"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains(env!("CARGO_PKG_VERSION")), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_listener_boots_and_reports_its_real_port() {
    let echo = echo_server().await;
    let gw = Gateway::start(&tcp_config(&echo.to_string()));
    assert_eq!(gw.listeners.len(), 1);
    assert_eq!(gw.listeners[0].protocol, "tcp");
    assert_ne!(gw.addr(0).port(), 0, "startup report gives the bound port");
    let mut s = tokio::net::TcpStream::connect(gw.addr(0))
        .await
        .expect("connect");
    assert!(ping(&mut s).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_boots() {
    let dir = scratch();
    let c = crate::support::tls::cert(dir.path(), "srv");
    let text = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"tls\"\n[listeners.tls]\ncert_path = \"{}\"\nkey_path = \"{}\"\n[[listeners.backends]]\naddress = \"127.0.0.1:9\"\n",
        c.cert_path.display(),
        c.key_path.display()
    );
    let gw = Gateway::start_in(dir, &text);
    assert_eq!(gw.listeners[0].protocol, "tls");
}

/// Each case: config text, and a fragment the error must contain.
fn refused(config: &str, must_name: &str) {
    let dir = scratch();
    let out = run_config_to_exit(dir.path(), config);
    assert_ne!(out.code, Some(0), "bad config must exit non-zero: {out:?}");
    assert!(
        out.stderr.contains(must_name),
        "error should name {must_name:?}:\n{}",
        out.stderr
    );
    assert!(
        !out.stdout.contains("listening"),
        "nothing may be bound: {}",
        out.stdout
    );
    // `check` agrees.
    let path = dir.path().join("gateway.toml");
    let check = run_to_exit(&["check", path.to_str().expect("utf-8")]);
    assert_ne!(check.code, Some(0), "{check:?}");
    assert!(check.stderr.contains(must_name), "{}", check.stderr);
}

#[test]
fn unknown_key_is_refused_with_its_path() {
    refused(
        &(tcp_config("127.0.0.1:9") + "colour = \"blue\"\n"),
        "listeners[0].backends[0].colour",
    );
}

#[test]
fn misspelled_table_is_refused() {
    refused(
        &(tcp_config("127.0.0.1:9") + "[runtme]\nconnect_timeout_ms = 10\n"),
        "runtme",
    );
}

#[test]
fn bad_protocol_is_refused() {
    refused(
        &tcp_config("127.0.0.1:9").replace("\"tcp\"", "\"sctp\""),
        "listeners[0].protocol",
    );
}

#[test]
fn out_of_range_number_is_refused_with_range() {
    let text = tcp_config("127.0.0.1:9") + "weight = 100000\n";
    refused(&text, "listeners[0].backends[0].weight = 100000");
    refused(&text, "between 1 and 10000");
}

#[test]
fn missing_tls_block_is_refused() {
    refused(
        &tcp_config("127.0.0.1:9").replace("\"tcp\"", "\"tls\""),
        "listeners[0].tls",
    );
}

#[test]
fn unreadable_certificate_is_refused_by_name() {
    let text = tcp_config("127.0.0.1:9").replace("\"tcp\"", "\"tls\"")
        + "[listeners.tls]\ncert_path = \"/nonexistent/cert.pem\"\nkey_path = \"/nonexistent/key.pem\"\n";
    refused(&text, "listeners[0].tls.cert_path");
}

#[test]
fn group_readable_key_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch();
    let c = crate::support::tls::cert(dir.path(), "srv");
    std::fs::set_permissions(&c.key_path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let text = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"tls\"\n[listeners.tls]\ncert_path = \"{}\"\nkey_path = \"{}\"\n[[listeners.backends]]\naddress = \"127.0.0.1:9\"\n",
        c.cert_path.display(),
        c.key_path.display()
    );
    let out = run_config_to_exit(dir.path(), &text);
    assert_ne!(out.code, Some(0));
    assert!(out.stderr.contains("chmod 600"), "{}", out.stderr);
}

#[test]
fn connection_pool_keys_are_checked() {
    refused(
        &(tcp_config("127.0.0.1:9") + "[listeners.connection_pool]\n"),
        "listeners[0].connection_pool",
    );
    refused(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n\
         [listeners.connection_pool]\nmax_h2_connections_per_backend = 0\n\
         [[listeners.backends]]\naddress = \"127.0.0.1:9\"\n",
        "listeners[0].connection_pool.max_h2_connections_per_backend",
    );
}

#[test]
fn a_probe_the_backends_cannot_answer_is_refused() {
    refused(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n\
         [listeners.health_check]\nkind = \"grpc\"\n\
         [[listeners.backends]]\naddress = \"127.0.0.1:9\"\n",
        "gRPC health needs HTTP/2 or HTTP/3",
    );
    refused(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n\
         [listeners.health_check]\nkind = \"https\"\n\
         [[listeners.backends]]\naddress = \"127.0.0.1:9\"\n",
        "listeners[0].health_check.kind",
    );
    refused(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"quic\"\n\
         [listeners.quic]\ncert_path = \"/nonexistent/c.pem\"\nkey_path = \"/nonexistent/k.pem\"\n\
         [listeners.quic.raw_proxy]\ncluster = \"relay\"\nalpn = [\"eg-test\"]\n\
         [[clusters]]\nname = \"relay\"\n[[clusters.backends]]\naddress = \"127.0.0.1:9\"\n\
         [clusters.health_check]\nkind = \"http\"\n",
        "clusters[0].health_check.kind",
    );
}

#[test]
fn check_accepts_a_valid_file() {
    let dir = scratch();
    let path = dir.path().join("ok.toml");
    std::fs::write(&path, tcp_config("127.0.0.1:9")).expect("write");
    let out = run_to_exit(&["check", path.to_str().expect("utf-8")]);
    assert_eq!(out.code, Some(0), "{out:?}");
}

#[test]
fn missing_config_file_is_a_clear_error() {
    let out = run_to_exit(&["/nonexistent/gateway.toml"]);
    assert_ne!(out.code, Some(0));
    assert!(
        out.stderr.contains("/nonexistent/gateway.toml"),
        "{}",
        out.stderr
    );
}
