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

use crate::metrics::Held;

/// Connection counters of one cluster, and the other counters of its limits and health.
#[derive(Clone, Default)]
pub struct ConnectionStats {
    pub opened: Counter,
    pub active: Gauge,
    pub connect_failures: Counter,
    /// Requests refused by a circuit breaker (answered 503 with `x-envoy-overloaded`).
    pub overflow: Counter,
    /// Retries not made because the retry limit or budget was spent.
    pub retry_overflow: Counter,
    /// Endpoints ejected by outlier detection.
    pub ejections: Counter,
}

/// TCP keepalive probes on upstream sockets; `None` fields keep the system default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Keepalive {
    pub time: Option<Duration>,
    pub interval: Option<Duration>,
    pub probes: Option<u32>,
}

impl Keepalive {
    fn apply(&self, stream: &TcpStream) -> io::Result<()> {
        let mut ka = socket2::TcpKeepalive::new();
        if let Some(t) = self.time {
            ka = ka.with_time(t);
        }
        if let Some(i) = self.interval {
            ka = ka.with_interval(i);
        }
        if let Some(p) = self.probes {
            ka = ka.with_retries(p);
        }
        socket2::SockRef::from(stream).set_tcp_keepalive(&ka)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connection to {0} timed out")]
    Timeout(SocketAddr),
    #[error("connection to {addr} failed: {source}")]
    Io { addr: SocketAddr, source: io::Error },
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls { addr: SocketAddr, source: io::Error },
    /// The cluster's `maxConnections` is reached.
    #[error("the cluster's connection limit is reached")]
    Overflow,
}

pub async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    keepalive: Option<Keepalive>,
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
    if let Some(ka) = keepalive
        && let Err(e) = ka.apply(&stream)
    {
        tracing::debug!(%addr, error = %e, "cannot set TCP keepalive");
    }
    stats.opened.inc();
    Ok(Counted {
        inner: stream,
        guard: Held::new(&stats.active),
        room: None,
    })
}

pin_project! {
    /// A TCP stream that counts itself out of the active gauge when dropped.
    pub struct Counted {
        #[pin]
        inner: TcpStream,
        guard: Held,
        // Its place under the cluster's maxConnections, when it takes one.
        room: Option<super::limits::Held>,
    }
}

impl Counted {
    /// Keeps `room` (a place under `maxConnections`) until the connection is dropped.
    pub fn hold(&mut self, room: super::limits::Held) {
        self.room = Some(room);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keepalive_is_set_on_the_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ka = Keepalive {
            time: Some(Duration::from_secs(7)),
            interval: Some(Duration::from_secs(3)),
            probes: Some(4),
        };
        let stats = ConnectionStats::default();
        let with = connect(addr, Duration::from_secs(1), Some(ka), &stats)
            .await
            .unwrap();
        let sock = socket2::SockRef::from(&with.inner);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(7));
        assert_eq!(
            sock.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(3)
        );
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), 4);
        let without = connect(addr, Duration::from_secs(1), None, &stats)
            .await
            .unwrap();
        assert!(!socket2::SockRef::from(&without.inner).keepalive().unwrap());
        assert_eq!(stats.active.get(), 2);
    }
}
