//! `packaging/`: the sample config passes `check` (its commented HTTPS and
//! HTTP/3 listeners too, given certificates), and the systemd unit and
//! logrotate snippet pass their own tools' checks.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::h3_thirdparty::run_bounded;
use crate::support::tls::cert;
use crate::support::*;

fn packaging(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../packaging")
        .join(file)
}

fn read(file: &str) -> String {
    let path = packaging(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn check(path: &Path) {
    let out = run_to_exit(&["check", path.to_str().expect("utf-8 path")]);
    assert_eq!(out.code, Some(0), "check {}: {out:?}", path.display());
    assert!(out.stdout.contains("configuration is valid"), "{out:?}");
}

/// Fail (not skip) with the Debian package to install when `name` is not
/// on PATH; `.ci/run` installs both.
fn require_tool(name: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{name} is required to check packaging/; install Debian package `{package}`"
    );
}

#[test]
fn sample_config_passes_check() {
    check(&packaging("config.toml"));
}

#[test]
fn sample_config_commented_tls_listeners_pass_check() {
    let dir = scratch();
    let c = cert(dir.path(), "site");
    let text = read("config.toml");
    let at = text
        .find("# HTTPS")
        .expect("the sample's commented HTTPS section");
    let (head, tail) = text.split_at(at);
    let uncommented: String = tail
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest) if rest.starts_with('[') || rest.contains(" = ") => rest,
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
        .replace(
            "/etc/expressgateway/tls/fullchain.pem",
            &c.cert_path.display().to_string(),
        )
        .replace(
            "/etc/expressgateway/tls/privkey.pem",
            &c.key_path.display().to_string(),
        )
        .replace(
            "/var/lib/expressgateway/retry.key",
            &dir.path().join("retry.key").display().to_string(),
        );
    assert!(
        uncommented.contains("protocol = \"h1s\"\n") && uncommented.contains("protocol = \"quic\""),
        "nothing uncommented:\n{uncommented}"
    );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, format!("{head}{uncommented}\n")).expect("write");
    check(&path);
}

#[test]
fn systemd_unit_verifies_and_reloads_with_sighup() {
    let unit = read("expressgateway.service");
    assert!(
        unit.contains("\nExecReload=/bin/kill -HUP $MAINPID\n"),
        "{unit}"
    );
    // No sd_notify in the gateway: a notify unit would never start.
    assert!(unit.contains("\nType=simple\n"), "{unit}");
    require_tool("systemd-analyze", "systemd");
    // verify wants the binaries it names to exist: point them at this build.
    let dir = scratch();
    let path = dir.path().join("expressgateway.service");
    std::fs::write(&path, unit.replace("/usr/bin/expressgateway", binary())).expect("write");
    let mut cmd = Command::new("systemd-analyze");
    cmd.arg("verify").arg(&path);
    let (ok, stdout, stderr) = run_bounded(cmd, Duration::from_secs(30));
    // It reports unknown or misspelt directives as warnings, still exiting 0.
    assert!(
        ok && stderr.trim().is_empty(),
        "systemd-analyze verify:\n{stdout}\n{stderr}"
    );
}

#[test]
fn logrotate_snippet_parses() {
    require_tool("logrotate", "logrotate");
    let dir = scratch();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).expect("mkdir");
    std::fs::write(logs.join("access.log"), "line\n").expect("write");
    // The snippet's user exists only where the unit is installed.
    let snippet = read("logrotate")
        .replace("/var/log/expressgateway", &logs.display().to_string())
        .replace("su expressgateway expressgateway", "su root root");
    let conf = dir.path().join("logrotate.conf");
    std::fs::write(&conf, snippet).expect("write");
    let mut cmd = Command::new("logrotate");
    cmd.arg("--debug")
        .arg("--state")
        .arg(dir.path().join("state"))
        .arg(&conf);
    let (ok, stdout, stderr) = run_bounded(cmd, Duration::from_secs(30));
    let all = format!("{stdout}{stderr}");
    assert!(ok && !all.contains("error:"), "logrotate --debug:\n{all}");
    assert!(all.contains("access.log"), "{all}");
}
