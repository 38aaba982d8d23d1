//! TCP connections to upstream endpoints, counted while they are open.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Connection counters of one cluster.
#[derive(Clone, Default)]
pub struct ConnectionStats {
    pub opened: Counter,
    pub active: Gauge,
    pub connect_failures: Counter,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connection to {0} timed out")]
    Timeout(SocketAddr),
    #[error("connection to {addr} failed: {source}")]
    Io { addr: SocketAddr, source: io::Error },
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls { addr: SocketAddr, source: io::Error },
}

pub async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    stats: &ConnectionStats,
) -> Result<Counted, ConnectError> {
    let result = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => Err(ConnectError::Timeout(addr)),
        Ok(Err(source)) => Err(ConnectError::Io { addr, source }),
        Ok(Ok(stream)) => Ok(stream),
    };
    let stream = result.inspect_err(|_| {
        stats.connect_failures.inc();
    })?;
    // Requests are small writes that must leave at once.
    let _ = stream.set_nodelay(true);
    stats.opened.inc();
    stats.active.inc();
    Ok(Counted {
        inner: stream,
        guard: ActiveGuard(stats.active.clone()),
    })
}

struct ActiveGuard(Gauge);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

pin_project! {
    /// A TCP stream that counts itself out of the active gauge when dropped.
    pub struct Counted {
        #[pin]
        inner: TcpStream,
        guard: ActiveGuard,
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}
