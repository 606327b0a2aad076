//! `wsload`: a WebSocket echo origin and echo load generator (tokio-tungstenite)
//! for `bench/run.sh` (path ws).
//!
//! ```text
//! cargo build --release --example wsload
//! target/release/examples/wsload serve 127.0.0.1:9001
//! target/release/examples/wsload load ws://127.0.0.1:8080/ -c 16 -m 4 -s 128 -d 10
//! ```
//!
//! `load` opens `-c` WebSockets (HTTP/1.1 Upgrade), each keeping `-m`
//! binary messages of `-s` bytes in flight (send, await the echo), for `-d`
//! seconds once every connection is up. The last line is machine-readable:
//! `RESULT messages=N seconds=S rate=R`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser, Debug)]
#[command(name = "wsload", about = "WebSocket echo origin and load generator")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Echo every message back (RFC 6455 over HTTP/1.1).
    Serve { bind: String },
    /// Echo load through `url` (ws://host:port/path).
    Load {
        url: String,
        #[arg(short = 'c', default_value_t = 16)]
        connections: usize,
        #[arg(short = 'm', default_value_t = 4)]
        in_flight: usize,
        #[arg(short = 's', default_value_t = 128)]
        size: usize,
        #[arg(short = 'd', default_value_t = 10)]
        seconds: u64,
    },
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async {
        match args.cmd {
            Cmd::Serve { bind } => serve(&bind).await,
            Cmd::Load {
                url,
                connections,
                in_flight,
                size,
                seconds,
            } => load(&url, connections, in_flight, size, seconds).await,
        }
    })
}

async fn serve(bind: &str) -> Result<()> {
    let listener = TcpListener::bind(bind).await?;
    println!("listening {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            let (mut tx, mut rx) = ws.split();
            while let Some(Ok(msg)) = rx.next().await {
                if msg.is_close() {
                    break;
                }
                if (msg.is_binary() || msg.is_text()) && tx.send(msg).await.is_err() {
                    break;
                }
            }
        });
    }
}

async fn load(
    url: &str,
    connections: usize,
    in_flight: usize,
    size: usize,
    seconds: u64,
) -> Result<()> {
    let authority = url
        .strip_prefix("ws://")
        .and_then(|r| r.split('/').next())
        .context("url must be ws://host:port/...")?
        .to_owned();
    let mut socks = Vec::with_capacity(connections);
    for _ in 0..connections {
        let tcp = TcpStream::connect(&authority).await?;
        tcp.set_nodelay(true)?;
        let (ws, resp) = tokio_tungstenite::client_async(url, tcp).await?;
        if resp.status() != 101 {
            bail!("handshake answered {}", resp.status());
        }
        socks.push(ws);
    }
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let payload = vec![0x5au8; size];
    let started = Instant::now();
    let mut tasks = Vec::new();
    for ws in socks {
        let (done, stop, payload) = (Arc::clone(&done), Arc::clone(&stop), payload.clone());
        tasks.push(tokio::spawn(async move {
            let (mut tx, mut rx) = ws.split();
            for _ in 0..in_flight {
                tx.send(Message::binary(payload.clone())).await?;
            }
            while let Some(msg) = rx.next().await {
                if !msg?.is_binary() {
                    continue;
                }
                done.fetch_add(1, Ordering::Relaxed);
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                tx.send(Message::binary(payload.clone())).await?;
            }
            let _ = tx.send(Message::Close(None)).await;
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let count = done.load(Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    println!(
        "RESULT messages={count} seconds={elapsed:.3} rate={:.0}",
        count as f64 / elapsed
    );
    Ok(())
}
