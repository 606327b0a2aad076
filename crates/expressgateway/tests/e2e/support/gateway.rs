use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a gateway may take to report `ready` (debug build, cold cache).
const READY_TIMEOUT: Duration = Duration::from_secs(30);

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_expressgateway")
}

/// One `listening` line of the startup report.
#[derive(Debug, Clone)]
pub struct Bound {
    pub name: String,
    pub protocol: String,
    pub address: SocketAddr,
}

/// A running gateway process, killed on drop.
pub struct Gateway {
    child: Child,
    pub listeners: Vec<Bound>,
    stderr: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

/// A scratch directory for configs and certificates.
pub fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("eg-e2e-")
        .tempdir()
        .expect("tempdir")
}

impl Gateway {
    /// Write `config` into a fresh directory and run it; panics with the
    /// gateway's stderr if it does not become ready.
    pub fn start(config: &str) -> Self {
        Self::start_in(scratch(), config)
    }

    /// As `start`, in a directory the test already filled (certificates).
    pub fn start_in(dir: tempfile::TempDir, config: &str) -> Self {
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, config).expect("write config");
        Self::spawn(dir, &[path.to_str().expect("utf-8 path")])
    }

    /// Run with arbitrary arguments (e.g. `demo --base-port 0`).
    pub fn spawn(dir: tempfile::TempDir, args: &[&str]) -> Self {
        Self::spawn_via(dir, &[], args)
    }

    /// As `start_in`, the binary run through `wrapper` (e.g. `ip netns
    /// exec NS`, which execs it: the child is the gateway itself).
    pub fn start_via(dir: tempfile::TempDir, wrapper: &[&str], config: &str) -> Self {
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, config).expect("write config");
        Self::spawn_via(dir, wrapper, &[path.to_str().expect("utf-8 path")])
    }

    fn spawn_via(dir: tempfile::TempDir, wrapper: &[&str], args: &[&str]) -> Self {
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(binary());
                c
            }
            None => Command::new(binary()),
        };
        let mut child = command
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("EG_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn expressgateway");
        let stderr = Arc::new(Mutex::new(String::new()));
        collect(child.stderr.take().expect("stderr"), Arc::clone(&stderr));
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut gateway = Self {
            child,
            listeners: Vec::new(),
            stderr,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => panic!("gateway not ready in time; stderr:\n{}", gateway.stderr()),
            };
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            match event["event"].as_str() {
                Some("listening") => gateway.listeners.push(Bound {
                    name: event["listener"].as_str().unwrap_or_default().to_owned(),
                    protocol: event["protocol"].as_str().unwrap_or_default().to_owned(),
                    address: event["address"]
                        .as_str()
                        .and_then(|a| a.parse().ok())
                        .expect("address"),
                }),
                Some("ready") => break,
                _ => {}
            }
        }
        gateway
    }

    /// The address of the `index`-th listener of the config.
    pub fn addr(&self, index: usize) -> SocketAddr {
        self.listeners
            .get(index)
            .map(|b| b.address)
            .expect("listener index")
    }

    /// Send a signal by name (`HUP`, `USR1`, `TERM`) to the gateway.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .expect("kill(1)");
        assert!(status.success(), "kill -{name} failed");
    }

    /// The config file the gateway runs, to rewrite before a reload.
    pub fn config_path(&self) -> std::path::PathBuf {
        self._dir.path().join("gateway.toml")
    }

    /// Wait (bounded) for the process to exit; its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The gateway's process id (to read `/proc/<pid>/status`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect(mut from: impl Read + Send + 'static, into: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            if let Ok(mut s) = into.lock() {
                s.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
    });
}

/// Outcome of a run that is expected to exit by itself.
#[derive(Debug)]
pub struct Exit {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Run the binary to completion (bounded by a timeout) with `args`.
pub fn run_to_exit(args: &[&str]) -> Exit {
    let mut child = Command::new(binary())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn expressgateway");
    let out = Arc::new(Mutex::new(String::new()));
    let err = Arc::new(Mutex::new(String::new()));
    collect(child.stdout.take().expect("stdout"), Arc::clone(&out));
    collect(child.stderr.take().expect("stderr"), Arc::clone(&err));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "expressgateway {args:?} did not exit; stderr:\n{}",
                err.lock().map(|s| s.clone()).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Let the reader threads drain the closed pipes.
    std::thread::sleep(Duration::from_millis(50));
    let get = |m: &Arc<Mutex<String>>| m.lock().map(|s| s.clone()).unwrap_or_default();
    Exit {
        code,
        stdout: get(&out),
        stderr: get(&err),
    }
}

/// Write `config` into `dir` and run it, expecting the process to exit.
pub fn run_config_to_exit(dir: &Path, config: &str) -> Exit {
    let path = dir.join("gateway.toml");
    std::fs::write(&path, config).expect("write config");
    run_to_exit(&[path.to_str().expect("utf-8 path")])
}
