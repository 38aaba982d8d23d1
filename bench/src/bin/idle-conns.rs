//! The memory an idle keep-alive HTTP/1.1 connection costs a proxy: opens `--conns`
//! connections, sends one `GET /` on each and reads the answer, leaves them open and idle,
//! then closes them all. Reports the proxy's resident memory (VmRSS, summed over `--pid`)
//! before, while the connections are held, and `--settle` seconds after they closed, as one
//! line of `key=value` pairs (KB):
//!
//! `conns=3000 before=10240 held=40960 per_conn=10.2 after=11264`

#![forbid(unsafe_code)]

use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

#[derive(Debug, Parser)]
struct Args {
    /// The proxy's listener, HOST:PORT.
    #[arg(long)]
    addr: String,
    /// Processes whose resident memory is measured.
    #[arg(long, required = true)]
    pid: Vec<u32>,
    #[arg(long, default_value_t = 3000)]
    conns: usize,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Host header of the requests.
    #[arg(long, default_value = "bench")]
    host: String,
    /// Seconds the connections stay idle before the measurement.
    #[arg(long, default_value_t = 2.0)]
    hold: f64,
    /// Seconds after the close before the last measurement.
    #[arg(long, default_value_t = 3.0)]
    settle: f64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let before = rss_kb(&args.pid)?;
    let mut held = Vec::with_capacity(args.conns);
    let mut opening = JoinSet::new();
    let mut started = 0;
    while held.len() < args.conns {
        while started < args.conns && opening.len() < args.concurrency {
            opening.spawn(open(args.addr.clone(), args.host.clone()));
            started += 1;
        }
        let stream = opening.join_next().await.expect("tasks in flight")??;
        held.push(stream);
    }
    tokio::time::sleep(Duration::from_secs_f64(args.hold)).await;
    let during = rss_kb(&args.pid)?;
    drop(held);
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let after = rss_kb(&args.pid)?;
    let per_conn = (during.saturating_sub(before)) as f64 / args.conns as f64;
    println!(
        "conns={} before={before} held={during} per_conn={per_conn:.1} after={after}",
        args.conns
    );
    Ok(())
}

/// A connection that has carried one request and its whole answer.
async fn open(addr: String, host: String) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(&addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    stream
        .write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .await?;
    read_response(&mut stream).await?;
    Ok(stream)
}

/// Reads one response with a Content-Length body.
async fn read_response(stream: &mut TcpStream) -> anyhow::Result<()> {
    let mut buf = Vec::with_capacity(2048);
    let head_end = loop {
        let mut chunk = [0u8; 2048];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed before the response head");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 200") {
        bail!("unexpected answer: {}", head.lines().next().unwrap_or(""));
    }
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .context("no content-length")?
        .trim()
        .parse()?;
    let mut have = buf.len() - head_end;
    while have < length {
        let mut chunk = [0u8; 2048];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed in the body");
        }
        have += n;
    }
    Ok(())
}

fn rss_kb(pids: &[u32]) -> anyhow::Result<u64> {
    let mut total = 0;
    for pid in pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("process {pid}"))?;
        total += status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .context("no VmRSS")?;
    }
    Ok(total)
}
