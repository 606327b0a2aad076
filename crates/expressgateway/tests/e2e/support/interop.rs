//! The harness of the QUIC interop cases: a gateway whose `quic` listener
//! is the HTTP/3 front (before a hyper backend) or the raw QUIC relay, Mode
//! B (before a quinn + h3 origin); the downloads the backends serve; and
//! ngtcp2's `gtlsclient` (Debian `ngtcp2-client`) driving the listener,
//! with every download checked against the digest of what was served.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;

use crate::support::h3::H3Backend;
use crate::support::http::HttpBackend;
use crate::support::tls::cert;
use crate::support::*;

/// How long one gtlsclient run may take: its own handshake timeout (10 s)
/// plus a transfer of a few MiB, with room for a loaded CI machine.
const GTLS_LIMIT: Duration = Duration::from_secs(30);
const GTLS: &str = "gtlsclient";

/// Which server the `quic` listener is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// HTTP/3 terminated, requests forwarded to an HTTP/1.1 backend.
    Front,
    /// Mode B: the client's QUIC terminated, its streams relayed over QUIC
    /// to an HTTP/3 origin.
    Relay,
}

/// A gateway in `mode` and the backend behind it.
pub struct Interop {
    pub gw: Gateway,
    pub http: Option<HttpBackend>,
    _h3: Option<H3Backend>,
    /// DER length of the leaf certificate the listener presents.
    pub leaf_der_len: usize,
}

/// What a case adds to the gateway's config.
#[derive(Default)]
pub struct Extra<'a> {
    /// `[runtime]` lines.
    pub runtime: &'a str,
    /// `[listeners.quic]` lines (e.g. `retry = "always"`).
    pub quic: &'a str,
    /// Certificates appended to the listener's: a long chain makes a big
    /// first server flight.
    pub chain: usize,
    /// Serve `/metrics` (`[observability] metrics_bind`).
    pub metrics: bool,
}

impl Interop {
    /// `quic_keys`: extra `[listeners.quic]` lines.
    pub async fn start(mode: Mode, quic_keys: &str) -> Self {
        Self::start_with(
            mode,
            Extra {
                quic: quic_keys,
                ..Extra::default()
            },
        )
        .await
    }

    pub async fn start_with(mode: Mode, extra: Extra<'_>) -> Self {
        let dir = scratch();
        let front = cert(dir.path(), "front");
        let leaf_der_len =
            rustls_pki_types::CertificateDer::pem_slice_iter(front.cert_pem.as_bytes())
                .filter_map(Result::ok)
                .map(|c| c.len())
                .next()
                .expect("leaf certificate");
        if extra.chain > 0 {
            let mut chain = front.cert_pem.clone();
            for i in 0..extra.chain {
                chain.push_str(&cert(dir.path(), &format!("filler{i}")).cert_pem);
            }
            std::fs::write(&front.cert_path, chain).expect("write chain");
        }
        let observability = match extra.metrics {
            true => "[observability]\nmetrics_bind = \"127.0.0.1:0\"\n",
            false => "",
        };
        let listener = format!(
            "{observability}[runtime]\n{}\n[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"quic\"\n\
             [listeners.quic]\ncert_path = \"{}\"\nkey_path = \"{}\"\n{}\n",
            extra.runtime,
            front.cert_path.display(),
            front.key_path.display(),
            extra.quic,
        );
        let (config, http, h3) = match mode {
            Mode::Front => {
                let http = HttpBackend::start("interop").await;
                let config = format!(
                    "{listener}[[listeners.backends]]\naddress = \"{}\"\n",
                    http.addr
                );
                (config, Some(http), None)
            }
            Mode::Relay => {
                let origin = cert(dir.path(), "origin");
                let h3 = H3Backend::start("interop", &origin).await;
                let config = format!(
                    "{listener}[listeners.quic.raw_proxy]\nbackend_addr = \"{}\"\n\
                     sni = \"localhost\"\nbackend_ca_path = \"{}\"\n",
                    h3.addr,
                    origin.cert_path.display()
                );
                (config, None, Some(h3))
            }
        };
        let gw = Gateway::start_in(dir, &config);
        Self {
            gw,
            http,
            _h3: h3,
            leaf_der_len,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.gw.addr(0)
    }

    /// The sum of metric `name` over its series whose labels include
    /// `label` (e.g. `outcome="served"`).
    pub async fn counter(&self, name: &str, label: &str) -> u64 {
        let text = crate::support::probe::metrics_text(&self.gw).await;
        let prefix = format!("{name}{{");
        text.lines()
            .filter(|l| l.starts_with(&prefix) && l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }
}

/// One download: `/files/<seed>_<size>[_<ms>_<head>[_paced]]` (see
/// `file_reply`).
#[derive(Clone, Copy, Debug)]
pub struct File {
    pub seed: u64,
    pub size: usize,
    /// Bytes sent at once, then `ms`; `None`: all at once.
    shape: Option<(usize, u64, bool)>,
}

impl File {
    pub fn new(seed: u64, size: usize) -> Self {
        Self {
            seed,
            size,
            shape: None,
        }
    }

    /// Its first `head` bytes, a pause of `ms`, the rest.
    pub fn paused(self, head: usize, ms: u64) -> Self {
        Self {
            shape: Some((head, ms, false)),
            ..self
        }
    }

    /// Its first `head` bytes, then the rest spread evenly over `ms`.
    pub fn paced(self, head: usize, ms: u64) -> Self {
        Self {
            shape: Some((head, ms, true)),
            ..self
        }
    }

    /// The name gtlsclient saves it under (the last path component).
    fn name(&self) -> String {
        let (seed, size) = (self.seed, self.size);
        match self.shape {
            None => format!("{seed}_{size}"),
            Some((head, ms, false)) => format!("{seed}_{size}_{ms}_{head}"),
            Some((head, ms, true)) => format!("{seed}_{size}_{ms}_{head}_paced"),
        }
    }

    fn uri(&self, port: u16) -> String {
        format!("https://localhost:{port}/files/{}", self.name())
    }
}

/// Fail (never skip) when gtlsclient is not installed.
pub fn require_gtlsclient() {
    let found = Command::new(GTLS)
        .arg("--help")
        .output()
        .is_ok_and(|o| !o.stdout.is_empty() || !o.stderr.is_empty());
    assert!(
        found,
        "{GTLS} is required for the QUIC interop tests: install Debian package `ngtcp2-client` (.ci/run does)"
    );
}

/// A gtlsclient run downloading `files` from `target` on one connection.
pub struct Gtls {
    cmd: Command,
    downloads: tempfile::TempDir,
}

impl Gtls {
    pub fn new(target: SocketAddr, files: &[File]) -> Self {
        require_gtlsclient();
        let downloads = scratch();
        let mut cmd = Command::new(GTLS);
        cmd.arg("--download")
            .arg(downloads.path())
            .args([
                "--no-quic-dump",
                "--no-http-dump",
                "--exit-on-all-streams-close",
                // Idle: a run that lost its peer ends well within GTLS_LIMIT.
                "--timeout=10s",
            ])
            .arg(target.ip().to_string())
            .arg(target.port().to_string())
            .args(files.iter().map(|f| f.uri(target.port())));
        Self { cmd, downloads }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.cmd.arg(arg);
        self
    }

    /// No per-packet log: for runs whose log no assertion reads.
    pub fn quiet(self) -> Self {
        self.arg("-q")
    }

    /// Run it; panic unless every one of `files` checks out.
    pub async fn fetch(self, files: &[File]) -> GtlsRun {
        let run = self.run().await;
        run.assert_downloads(files);
        run
    }

    /// Run it, bounded by `GTLS_LIMIT`: a run past it is a test failure.
    pub async fn run(self) -> GtlsRun {
        let run = self.run_within(GTLS_LIMIT).await;
        assert!(
            !run.timed_out,
            "gtlsclient did not finish within {GTLS_LIMIT:?}:\n{}",
            run.tail()
        );
        run
    }

    /// Run it for at most `limit`, then kill it (`timed_out`). Its output
    /// goes to files: nothing to drain while it runs.
    pub async fn run_within(self, limit: Duration) -> GtlsRun {
        let Self { mut cmd, downloads } = self;
        let out = downloads.path().join("gtlsclient.log");
        let file = std::fs::File::create(&out).expect("log file");
        cmd.stdin(std::process::Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file);
        let mut child = cmd.spawn().expect("run gtlsclient");
        let deadline = tokio::time::Instant::now() + limit;
        let (ok, timed_out) = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break (status.success(), false);
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break (false, true);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let log = String::from_utf8_lossy(&std::fs::read(&out).unwrap_or_default()).into_owned();
        // Not a download: out of the way of `verify`'s file names.
        let _ = std::fs::remove_file(&out);
        GtlsRun {
            ok,
            timed_out,
            log,
            downloads,
        }
    }
}

/// Download `files` from `target` on one connection, without a
/// per-packet log; panic unless every one checks out.
pub async fn download(target: SocketAddr, files: &[File]) {
    Gtls::new(target, files).quiet().fetch(files).await;
}

/// What a gtlsclient run left: its exit status, its log, its downloads.
pub struct GtlsRun {
    pub ok: bool,
    /// Killed at its time limit.
    pub timed_out: bool,
    pub log: String,
    downloads: tempfile::TempDir,
}

impl GtlsRun {
    /// Whether every one of `files` arrived whole, with the digest of what
    /// the backend served; the first mismatch otherwise.
    pub fn verify(&self, files: &[File]) -> Result<(), String> {
        if !self.ok {
            return Err("gtlsclient failed".into());
        }
        if !self.ok {
            return Err("gtlsclient failed".into());
        }
        let mut bad = Vec::new();
        for f in files {
            let path = self.downloads.path().join(f.name());
            let got = std::fs::read(&path).unwrap_or_default();
            if got.len() != f.size || sha256(&got) != sha256(&pattern(f.size, f.seed)) {
                bad.push(format!("{} ({} of {} bytes)", f.name(), got.len(), f.size));
            }
        }
        match bad.len() {
            0 => Ok(()),
            n => Err(format!(
                "{n} of {} downloads missing, short or with another digest than served: {}",
                files.len(),
                bad.iter().take(20).cloned().collect::<Vec<_>>().join(", ")
            )),
        }
    }

    /// Panic with the end of the log unless every download checks out.
    pub fn assert_downloads(&self, files: &[File]) {
        if let Err(e) = self.verify(files) {
            panic!("{e}\n{}", self.tail());
        }
    }

    /// The last lines of the log, for failure messages.
    pub fn tail(&self) -> String {
        let lines: Vec<&str> = self.log.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    pub fn has(&self, needle: &str) -> bool {
        self.log.contains(needle)
    }

    /// The client's address (its first packet's source), from the log.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        let line = self
            .log
            .lines()
            .find(|l| l.starts_with("Sent packet: local="))?;
        let addr = line
            .strip_prefix("Sent packet: local=")?
            .split(' ')
            .next()?;
        addr.replace(['[', ']'], "").parse().ok()
    }

    /// Panic with `what` and the end of the log unless a line contains
    /// every one of `needles`.
    pub fn expect(&self, needles: &[&str], what: &str) {
        assert!(self.count(needles) > 0, "{what}:\n{}", self.tail());
    }

    /// Lines that contain every one of `needles`.
    pub fn count(&self, needles: &[&str]) -> usize {
        self.log
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count()
    }

    /// CRYPTO bytes the client received in the Handshake space: the
    /// server's EncryptedExtensions..Finished, with a Certificate (and
    /// CertificateVerify) only when the handshake was not resumed.
    pub fn handshake_crypto_received(&self) -> usize {
        self.log
            .lines()
            .filter(|l| l.contains(" frm rx ") && l.contains(" Handshake CRYPTO("))
            .filter_map(|l| l.rsplit("len=").next()?.trim().parse::<usize>().ok())
            .sum()
    }
}

/// For each case, a test per server: `h3_front::<case>` and
/// `mode_b::<case>`, each running the calling module's `<case>(Mode)`.
macro_rules! interop_cases {
    ($($case:ident),* $(,)?) => {
        mod h3_front {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case($crate::support::interop::Mode::Front).await;
                }
            )*
        }
        mod mode_b {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case($crate::support::interop::Mode::Relay).await;
                }
            )*
        }
    };
}
pub(crate) use interop_cases;
