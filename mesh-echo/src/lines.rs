//! Line echo over plain TCP, like Istio's tcp-echo sample: every line read is answered with
//! `<name> <line>`, so a client behind a layer 4 route sees which replica it reached.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::EchoConfig;
use crate::server::{EchoHandle, Stats};

/// Longest line answered; a longer one gets an error line and the connection is closed, so a
/// client without newlines cannot make the server buffer without bound.
pub const MAX_LINE: usize = 64 * 1024;

/// Binds `addr` (e.g. `127.0.0.1:0`) and answers lines in a background task.
pub async fn spawn(addr: &str, cfg: EchoConfig) -> io::Result<EchoHandle> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let stats = Arc::new(Stats::default());
    let task = tokio::spawn(run(listener, cfg.name, stats.clone()));
    Ok(EchoHandle::new(addr, stats, task))
}

/// Answers lines on `listener` until the future is dropped.
pub async fn serve(listener: TcpListener, cfg: EchoConfig) {
    run(listener, cfg.name, Arc::default()).await
}

async fn run(listener: TcpListener, name: String, stats: Arc<Stats>) {
    let shutdown = CancellationToken::new();
    // Dropping this future (EchoHandle::drop aborts it) ends every connection too.
    let _guard = shutdown.clone().drop_guard();
    let name: Arc<str> = name.into();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(%err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let (name, stats) = (name.clone(), stats.clone());
        tokio::spawn(shutdown.clone().run_until_cancelled_owned(async move {
            if let Err(err) = answer_lines(stream, &name, &stats).await {
                tracing::debug!(%peer, %err, "connection ended with error");
            }
        }));
    }
}

/// Answers each line of `stream` until EOF, then closes the write side.
async fn answer_lines(stream: TcpStream, name: &str, stats: &Stats) -> io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut reader = BufReader::new(r);
    let mut line = Vec::new();
    loop {
        line.clear();
        // One byte over the limit tells a line of exactly MAX_LINE bytes from a longer one.
        let n = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            break;
        }
        stats.requests.fetch_add(1, Ordering::Relaxed);
        let complete = line.ends_with(b"\n");
        let content = line.strip_suffix(b"\n").unwrap_or(&line);
        if content.len() > MAX_LINE {
            w.write_all(format!("{name} error: line longer than {MAX_LINE} bytes\n").as_bytes())
                .await?;
            break;
        }
        let mut answer = Vec::with_capacity(name.len() + line.len() + 2);
        answer.extend_from_slice(name.as_bytes());
        answer.push(b' ');
        answer.extend_from_slice(content);
        answer.push(b'\n');
        w.write_all(&answer).await?;
        // A last line without its newline is answered too (`printf hi | nc`), then EOF.
        if !complete {
            break;
        }
    }
    w.shutdown().await
}
