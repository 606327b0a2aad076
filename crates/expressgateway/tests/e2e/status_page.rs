//! The admin status page in a real browser: headless Chromium (Debian's
//! `chromium`, which CI installs) renders the listeners, pools and backend
//! addresses from the API, with the admin token given in the fragment.

use std::process::Command;
use std::time::Duration;

use crate::h3_thirdparty::run_bounded;
use crate::support::http::HttpBackend;
use crate::support::*;

/// Headless Chromium as the environment notes say it runs here: no
/// sandbox as root, no background networking (the machine is offline).
fn chromium(profile: &std::path::Path) -> Command {
    let mut cmd = Command::new("chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        // Let the page's fetch and its first refresh run before the dump.
        "--virtual-time-budget=5000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    cmd
}

#[test]
fn status_page_renders_pools_and_backends_in_chromium() {
    assert!(
        Command::new("chromium").arg("--version").output().is_ok(),
        "chromium is needed (Debian package `chromium`; .ci/run installs it)"
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (a, b) =
        rt.block_on(async { (HttpBackend::start("a").await, HttpBackend::start("b").await) });
    let gw = Gateway::start(&format!(
        "[observability]\nmetrics_bind = \"127.0.0.1:0\"\n[admin]\napi_token_hash = \"{}\"\n\
         [[listeners]]\nname = \"web\"\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n\
         [[listeners.backends]]\naddress = \"{}\"\n[[listeners.backends]]\naddress = \"{}\"\n",
        api_token_hash("s3cret"),
        a.addr,
        b.addr
    ));
    let admin = gw.listeners.last().expect("admin").address;
    let dir = scratch();
    let url = format!("http://{admin}/#token=s3cret");
    let mut dump = chromium(&dir.path().join("profile"));
    dump.arg("--dump-dom").arg(&url);
    let (ok, dom, err) = run_bounded(dump, Duration::from_secs(60));
    assert!(ok, "chromium failed: {err}");
    for needle in [
        "Pool web/default",
        &a.addr.to_string(),
        &b.addr.to_string(),
        "web",
    ] {
        assert!(dom.contains(needle), "{needle} not rendered:\n{dom}");
    }
    // The error line stays empty: the API calls carried the token.
    assert!(
        dom.contains("<div id=\"error\"></div>"),
        "an API call failed:\n{dom}"
    );
    let shot = dir.path().join("status.png");
    let mut screenshot = chromium(&dir.path().join("profile2"));
    screenshot
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1000,700")
        .arg(&url);
    let (ok, _, err) = run_bounded(screenshot, Duration::from_secs(60));
    assert!(ok, "chromium screenshot failed: {err}");
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.len() > 5_000 && png.starts_with(b"\x89PNG"),
        "{} bytes",
        png.len()
    );
    drop((a, b));
}
