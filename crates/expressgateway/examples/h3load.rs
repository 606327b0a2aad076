//! `h3load`: a small HTTP/3 load generator (quinn + h3) for `bench/run.sh` (paths h3, modea).
//!
//! ```text
//! cargo build --release --example h3load
//! target/release/examples/h3load 127.0.0.1:4433 --ca cert.pem -c 8 -m 10 -d 10
//! target/release/examples/h3load 127.0.0.1:4433 --insecure -n 100000
//! target/release/examples/h3load 127.0.0.1:4433 --insecure -n 0 --single 50
//! ```
//!
//! Phases:
//! 1. single-request latency (`--single N`, default 50; 0 skips it): one
//!    connection, a few warm-up requests, then N sequential GETs on the
//!    otherwise idle connection; prints their median, min, p90 and max.
//! 2. load (`-d SECONDS` or `-n REQUESTS`; `-n 0` skips it): `-c`
//!    connections, each with its own UDP socket and `-m` streams in flight
//!    (one task per stream slot, each sending GETs back to back). The
//!    connections are established first; the clock starts once all are up.
//!    A connection that closes (or sends GOAWAY) is replaced.
//!
//! The last line of output is machine-readable:
//! `RESULT key=value ...` (latencies in microseconds).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::{Buf, Bytes};
use clap::Parser;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls_pki_types::pem::PemObject;

#[derive(Parser, Debug)]
#[command(name = "h3load", about = "HTTP/3 load generator (quinn + h3)")]
struct Args {
    /// Target `host:port` (UDP).
    target: String,
    /// TLS server name (SNI) and the request's authority host.
    #[arg(long, default_value = "localhost")]
    sni: String,
    /// Request path.
    #[arg(long, default_value = "/")]
    path: String,
    /// Number of QUIC connections.
    #[arg(short = 'c', long, default_value_t = 1)]
    connections: usize,
    /// Concurrent streams (requests in flight) per connection.
    #[arg(short = 'm', long, default_value_t = 1)]
    streams: usize,
    /// Load duration in seconds (used when -n is not given).
    #[arg(short = 'd', long, default_value_t = 10.0)]
    duration: f64,
    /// Total requests instead of a duration; 0 skips the load phase.
    #[arg(short = 'n', long)]
    requests: Option<u64>,
    /// Trust this CA / self-signed certificate (PEM).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Do not verify the server certificate (signatures are still checked).
    #[arg(long)]
    insecure: bool,
    /// Sequential requests on one idle connection for the single-request
    /// latency; 0 skips that phase.
    #[arg(long, default_value_t = 50)]
    single: usize,
    /// Tokio worker threads (default: available cores).
    #[arg(short = 't', long)]
    threads: Option<usize>,
    /// Per-request timeout in seconds (a timed-out request is an error).
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Total requests per second over all connections, paced (request k
    /// starts no earlier than k / RPS seconds into the run); default: as
    /// fast as the streams go. For latency at a fixed load.
    #[arg(long)]
    rps: Option<f64>,
}

type Sender = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

/// What every connection needs to open one.
struct Client {
    config: quinn::ClientConfig,
    target: SocketAddr,
    sni: String,
    uri: http::Uri,
    timeout: Duration,
}

/// A rustls verifier that accepts any certificate but still checks the
/// handshake signatures (so the client's crypto work stays realistic).
#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn client_config(args: &Args) -> Result<quinn::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let mut tls = if args.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
            .with_no_client_auth()
    } else {
        let Some(ca) = &args.ca else {
            bail!("give --ca PEM or --insecure");
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca)
            .with_context(|| format!("reading {}", ca.display()))?
        {
            roots.add(cert.with_context(|| format!("parsing {}", ca.display()))?)?;
        }
        if roots.is_empty() {
            bail!("no certificate in {}", ca.display());
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    Ok(quinn::ClientConfig::new(Arc::new(crypto)))
}

impl Client {
    /// A fresh UDP socket (roomy buffers) and a QUIC + HTTP/3 connection.
    async fn connect(&self) -> Result<(quinn::Endpoint, quinn::Connection, Sender)> {
        let bind: SocketAddr = if self.target.is_ipv4() {
            "0.0.0.0:0".parse()?
        } else {
            "[::]:0".parse()?
        };
        let socket = std::net::UdpSocket::bind(bind).context("udp bind")?;
        eg_runtime::tune_udp_socket(&socket);
        let runtime = quinn::default_runtime().context("no async runtime")?;
        let endpoint =
            quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, runtime)?;
        let conn = tokio::time::timeout(
            self.timeout,
            endpoint.connect_with(self.config.clone(), self.target, &self.sni)?,
        )
        .await
        .context("QUIC handshake timed out")?
        .context("QUIC handshake")?;
        let (mut driver, sender) = h3::client::new(h3_quinn::Connection::new(conn.clone()))
            .await
            .context("HTTP/3 setup")?;
        tokio::spawn(async move {
            let _ = driver.wait_idle().await;
        });
        Ok((endpoint, conn, sender))
    }

    /// One GET, body read to the end. Ok(status) or the error's text.
    async fn get(&self, sender: &mut Sender) -> Result<u16, Failure> {
        let req = http::Request::get(self.uri.clone())
            .body(())
            .map_err(|e| Failure::Other(e.to_string()))?;
        let exchange = async {
            let mut stream = sender.send_request(req).await?;
            stream.finish().await?;
            let resp = stream.recv_response().await?;
            while let Some(mut chunk) = stream.recv_data().await? {
                chunk.advance(chunk.remaining());
            }
            Ok::<_, h3::error::StreamError>(resp.status().as_u16())
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(h3::error::StreamError::RemoteClosing)) => Err(Failure::Closing),
            Ok(Err(h3::error::StreamError::ConnectionError { 0: e, .. })) => {
                Err(Failure::Connection(e.to_string()))
            }
            Ok(Err(e)) => Err(Failure::Other(e.to_string())),
            Err(_) => Err(Failure::Other("request timed out".into())),
        }
    }
}

enum Failure {
    /// The server sent GOAWAY: the request was not sent; reconnect.
    Closing,
    /// The connection is gone; reconnect.
    Connection(String),
    /// This request failed; the connection may still be usable.
    Other(String),
}

#[derive(Default)]
struct Stats {
    ok: AtomicU64,
    non_2xx: AtomicU64,
    errors: AtomicU64,
    connects: AtomicU64,
    connect_errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Stats {
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap();
        if first.is_none() {
            *first = Some(what);
        }
    }
}

/// How the load phase ends.
struct Budget {
    deadline: Option<Instant>,
    /// With `-n`: requests still to start (may go negative by racing).
    remaining: Option<AtomicU64>,
    stop: AtomicBool,
    /// With `--rps`: the run's start and the rate it paces to.
    pace: Option<(Instant, f64)>,
    /// Requests paced so far (the next one's place in the schedule).
    paced: AtomicU64,
}

impl Budget {
    /// Claim one request; false once the run is over.
    fn take(&self) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return false;
        }
        if let Some(d) = self.deadline {
            if Instant::now() >= d {
                self.stop.store(true, Ordering::Relaxed);
                return false;
            }
        }
        if let Some(r) = &self.remaining {
            let mut cur = r.load(Ordering::Relaxed);
            loop {
                if cur == 0 {
                    self.stop.store(true, Ordering::Relaxed);
                    return false;
                }
                match r.compare_exchange_weak(cur, cur - 1, Ordering::Relaxed, Ordering::Relaxed) {
                    Ok(_) => return true,
                    Err(now) => cur = now,
                }
            }
        }
        true
    }

    /// With `--rps`, wait for this request's turn in the schedule; false
    /// when the run ended meanwhile.
    async fn wait_turn(&self) -> bool {
        let Some((start, rps)) = self.pace else {
            return true;
        };
        let k = self.paced.fetch_add(1, Ordering::Relaxed);
        let at = start + Duration::from_secs_f64(k as f64 / rps);
        if self.deadline.is_some_and(|d| at >= d) {
            self.stop.store(true, Ordering::Relaxed);
            return false;
        }
        tokio::time::sleep_until(at.into()).await;
        true
    }
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn fmt_us(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else {
        format!("{:.3} ms", us as f64 / 1000.0)
    }
}

/// Phase 1: N sequential requests on one idle connection.
async fn single(client: &Client, n: usize, result: &mut Vec<(String, String)>) -> Result<()> {
    let t0 = Instant::now();
    let (endpoint, conn, mut sender) = client.connect().await?;
    let handshake = t0.elapsed();
    // Warm-up: the first requests pay for the gateway's upstream
    // connection, QPACK state and the like.
    for _ in 0..5 {
        if let Err(e) = client.get(&mut sender).await {
            bail!("warm-up request failed: {}", failure_text(&e));
        }
    }
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        match client.get(&mut sender).await {
            Ok(s) if (200..300).contains(&s) => lat.push(t.elapsed().as_micros() as u64),
            Ok(s) => bail!("single request: status {s}"),
            Err(e) => bail!("single request failed: {}", failure_text(&e)),
        }
    }
    conn.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
    lat.sort_unstable();
    let median = pct(&lat, 0.5);
    println!(
        "single request (idle connection, {n} sequential after 5 warm-up): median {}, min {}, p90 {}, max {}; handshake+h3 setup {}",
        fmt_us(median),
        fmt_us(lat[0]),
        fmt_us(pct(&lat, 0.9)),
        fmt_us(*lat.last().unwrap()),
        fmt_us(handshake.as_micros() as u64),
    );
    result.push(("single_p50_us".into(), median.to_string()));
    result.push(("single_min_us".into(), lat[0].to_string()));
    result.push(("single_p90_us".into(), pct(&lat, 0.9).to_string()));
    result.push(("handshake_us".into(), handshake.as_micros().to_string()));
    Ok(())
}

fn failure_text(f: &Failure) -> String {
    match f {
        Failure::Closing => "server is closing the connection (GOAWAY)".into(),
        Failure::Connection(e) | Failure::Other(e) => e.clone(),
    }
}

/// One connection slot: connect, run `streams` request loops on it, and
/// reconnect if it goes away before the run is over.
async fn connection_slot(
    client: Arc<Client>,
    first: (quinn::Endpoint, quinn::Connection, Sender),
    streams: usize,
    budget: Arc<Budget>,
    stats: Arc<Stats>,
) -> Vec<u64> {
    let mut lat_all = Vec::new();
    let mut next = Some(first);
    loop {
        let (endpoint, conn, sender) = match next.take() {
            Some(c) => c,
            None => {
                if budget.stop.load(Ordering::Relaxed) {
                    break;
                }
                match client.connect().await {
                    Ok(c) => {
                        stats.connects.fetch_add(1, Ordering::Relaxed);
                        c
                    }
                    Err(e) => {
                        stats.connect_errors.fetch_add(1, Ordering::Relaxed);
                        stats.error(format!("connect: {e:#}"));
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                }
            }
        };
        let dead = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::with_capacity(streams);
        for _ in 0..streams {
            let (client, budget, stats, dead, conn) = (
                Arc::clone(&client),
                Arc::clone(&budget),
                Arc::clone(&stats),
                Arc::clone(&dead),
                conn.clone(),
            );
            let mut sender = sender.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(4096);
                while !dead.load(Ordering::Relaxed) && budget.take() && budget.wait_turn().await {
                    let t = Instant::now();
                    match client.get(&mut sender).await {
                        Ok(s) => {
                            lat.push(t.elapsed().as_micros() as u64);
                            if (200..300).contains(&s) {
                                stats.ok.fetch_add(1, Ordering::Relaxed);
                            } else {
                                stats.non_2xx.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(Failure::Closing) => {
                            // Not sent: give the claimed request back.
                            if let Some(r) = &budget.remaining {
                                r.fetch_add(1, Ordering::Relaxed);
                            }
                            dead.store(true, Ordering::Relaxed);
                        }
                        Err(Failure::Connection(e)) => {
                            stats.error(e);
                            dead.store(true, Ordering::Relaxed);
                        }
                        Err(Failure::Other(e)) => {
                            stats.error(e);
                            // A stream error on a closed connection: stop too.
                            if conn.close_reason().is_some() {
                                dead.store(true, Ordering::Relaxed);
                            }
                        }
                    }
                }
                lat
            }));
        }
        drop(sender);
        for t in tasks {
            if let Ok(mut l) = t.await {
                lat_all.append(&mut l);
            }
        }
        conn.close(0u32.into(), b"done");
        if budget.stop.load(Ordering::Relaxed) || !dead.load(Ordering::Relaxed) {
            // Let the CONNECTION_CLOSE go out before the socket drops.
            let _ = tokio::time::timeout(Duration::from_millis(200), endpoint.wait_idle()).await;
            break;
        }
    }
    lat_all
}

/// Phase 2: the load.
async fn load(client: Arc<Client>, args: &Args, result: &mut Vec<(String, String)>) -> Result<()> {
    let stats = Arc::new(Stats::default());
    let t0 = Instant::now();
    let mut conns = Vec::with_capacity(args.connections);
    let mut pending = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let client = Arc::clone(&client);
        pending.push(tokio::spawn(async move { client.connect().await }));
    }
    for p in pending {
        conns.push(p.await?.context("initial connection")?);
    }
    let connect_time = t0.elapsed();
    stats
        .connects
        .fetch_add(conns.len() as u64, Ordering::Relaxed);

    let start = Instant::now();
    let budget = Arc::new(Budget {
        deadline: match args.requests {
            Some(_) => None,
            None => Some(start + Duration::from_secs_f64(args.duration)),
        },
        remaining: args.requests.map(AtomicU64::new),
        stop: AtomicBool::new(false),
        pace: args.rps.map(|r| (start, r)),
        paced: AtomicU64::new(0),
    });
    let mut slots = Vec::with_capacity(conns.len());
    for c in conns {
        slots.push(tokio::spawn(connection_slot(
            Arc::clone(&client),
            c,
            args.streams,
            Arc::clone(&budget),
            Arc::clone(&stats),
        )));
    }
    let mut lat = Vec::new();
    for s in slots {
        lat.append(&mut s.await?);
    }
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    let ok = stats.ok.load(Ordering::Relaxed);
    let non_2xx = stats.non_2xx.load(Ordering::Relaxed);
    let errors = stats.errors.load(Ordering::Relaxed);
    let done = ok + non_2xx;
    let rps = done as f64 / elapsed;
    let mean = if lat.is_empty() {
        0
    } else {
        lat.iter().sum::<u64>() / lat.len() as u64
    };
    println!(
        "load: {} connections x {} streams, {done} responses in {elapsed:.2} s (connections up in {})",
        args.connections,
        args.streams,
        fmt_us(connect_time.as_micros() as u64)
    );
    println!("requests/s: {rps:.0}");
    println!(
        "latency: p50 {}, p90 {}, p99 {}, max {}, mean {}",
        fmt_us(pct(&lat, 0.5)),
        fmt_us(pct(&lat, 0.9)),
        fmt_us(pct(&lat, 0.99)),
        fmt_us(lat.last().copied().unwrap_or(0)),
        fmt_us(mean)
    );
    println!(
        "responses: {ok} 2xx, {non_2xx} non-2xx; errors: {errors}; connections opened: {} ({} failed)",
        stats.connects.load(Ordering::Relaxed),
        stats.connect_errors.load(Ordering::Relaxed)
    );
    if let Some(e) = stats.first_error.lock().unwrap().as_ref() {
        println!("first error: {e}");
    }
    for (k, v) in [
        ("requests", done.to_string()),
        ("ok", ok.to_string()),
        ("non_2xx", non_2xx.to_string()),
        ("errors", errors.to_string()),
        ("seconds", format!("{elapsed:.3}")),
        ("rps", format!("{rps:.0}")),
        ("p50_us", pct(&lat, 0.5).to_string()),
        ("p90_us", pct(&lat, 0.9).to_string()),
        ("p99_us", pct(&lat, 0.99).to_string()),
        ("max_us", lat.last().copied().unwrap_or(0).to_string()),
        ("mean_us", mean.to_string()),
        (
            "connects",
            stats.connects.load(Ordering::Relaxed).to_string(),
        ),
    ] {
        result.push((k.into(), v));
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    if args.connections == 0 || args.streams == 0 {
        bail!("-c and -m must be at least 1");
    }
    if args.requests.is_none() && (args.duration.is_nan() || args.duration <= 0.0) {
        bail!("-d must be positive");
    }
    if args
        .rps
        .is_some_and(|r| r.is_nan() || r <= 0.0 || r.is_infinite())
    {
        bail!("--rps must be positive");
    }
    let target = args
        .target
        .to_socket_addrs()
        .with_context(|| format!("resolving {}", args.target))?
        .next()
        .with_context(|| format!("{} resolves to nothing", args.target))?;
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(t) = args.threads {
        rt.worker_threads(t.max(1));
    }
    let rt = rt.enable_all().build()?;
    rt.block_on(async move {
        let authority = if target.port() == 443 {
            args.sni.clone()
        } else {
            format!("{}:{}", args.sni, target.port())
        };
        let uri: http::Uri = format!("https://{authority}{}", args.path)
            .parse()
            .context("request URI")?;
        let client = Arc::new(Client {
            config: client_config(&args)?,
            target,
            sni: args.sni.clone(),
            uri,
            timeout: Duration::from_secs_f64(args.timeout),
        });
        println!("h3load: {target} (sni {}) GET {}", args.sni, args.path);
        let mut result = Vec::new();
        let outcome = async {
            if args.single > 0 {
                single(&client, args.single, &mut result).await?;
            }
            if args.requests != Some(0) {
                load(Arc::clone(&client), &args, &mut result).await?;
            }
            Ok::<_, anyhow::Error>(())
        }
        .await;
        if let Err(e) = &outcome {
            result.push(("fatal".into(), format!("{e:#}").replace(' ', "_")));
        }
        let line: Vec<String> = result.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("RESULT {}", line.join(" "));
        outcome
    })
}
