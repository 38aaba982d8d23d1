//! Splicing a proxied TCP connection to its upstream, closed (both sides) after the cluster's
//! idle timeout without a byte either way, or at its maximum connection duration, as Envoy's
//! TCP proxy does with `idle_timeout` and `max_downstream_connection_duration`.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// The limits of one proxied connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpliceLimits {
    pub idle: Option<Duration>,
    pub max_duration: Option<Duration>,
}

/// How a splice ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Either side closed, or an I/O error.
    Closed,
    /// No byte either way for the idle timeout.
    Idle,
    /// The connection reached its maximum duration.
    MaxDuration,
}

/// When the last byte went either way, as time since the splice started (nanoseconds).
struct LastActivity {
    start: Instant,
    since_start: AtomicU64,
}

impl LastActivity {
    fn touch(&self) {
        let nanos = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.since_start.store(nanos, Ordering::Relaxed);
    }

    fn at(&self) -> Instant {
        self.start + Duration::from_nanos(self.since_start.load(Ordering::Relaxed))
    }
}

/// A stream that notes every read that brought bytes. Both directions of a splice read from
/// one of its two streams, so reads alone see all traffic.
struct Watched<S> {
    inner: S,
    activity: Arc<LastActivity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Copies bytes both ways until a side closes or a limit is reached; the streams are dropped
/// (closed) on return.
pub async fn splice<D, U>(downstream: D, upstream: U, limits: SpliceLimits) -> Ended
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let activity = Arc::new(LastActivity {
        start,
        since_start: AtomicU64::new(0),
    });
    let mut downstream = Watched {
        inner: downstream,
        activity: activity.clone(),
    };
    let mut upstream = Watched {
        inner: upstream,
        activity: activity.clone(),
    };
    let copy = tokio::io::copy_bidirectional(&mut downstream, &mut upstream);
    let idle = async {
        let Some(idle) = limits.idle else {
            return std::future::pending().await;
        };
        // A timeout too long for the clock never fires.
        while let Some(deadline) = activity.at().checked_add(idle) {
            tokio::time::sleep_until(deadline).await;
            if activity.at().checked_add(idle) <= Some(Instant::now()) {
                return;
            }
        }
        std::future::pending().await
    };
    let max_age = async {
        match limits.max_duration.and_then(|d| start.checked_add(d)) {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        copied = copy => {
            if let Err(e) = copied {
                tracing::debug!(error = %e, "tcp: stream ended");
            }
            Ended::Closed
        }
        () = idle => Ended::Idle,
        () = max_age => Ended::MaxDuration,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const LIMITS: SpliceLimits = SpliceLimits {
        idle: Some(Duration::from_millis(200)),
        max_duration: None,
    };

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test]
    async fn an_idle_splice_ends_after_the_idle_timeout() {
        let (down, _client) = tokio::io::duplex(64);
        let (up, _server) = tokio::io::duplex(64);
        let started = Instant::now();
        assert_eq!(splice(down, up, LIMITS).await, Ended::Idle);
        let took = started.elapsed();
        assert!(took >= ms(200) && took < ms(1000), "{took:?}");
    }

    #[tokio::test]
    async fn traffic_moves_the_idle_deadline() {
        let (down, mut client) = tokio::io::duplex(64);
        let (up, mut server) = tokio::io::duplex(64);
        let started = Instant::now();
        let talk = async move {
            for _ in 0..4 {
                tokio::time::sleep(ms(120)).await;
                client.write_all(b"x").await.unwrap();
                let mut b = [0u8; 1];
                server.read_exact(&mut b).await.unwrap();
            }
            (client, server)
        };
        let (ended, _ends) = tokio::join!(splice(down, up, LIMITS), talk);
        assert_eq!(ended, Ended::Idle);
        // Four writes 120 ms apart, then 200 ms of silence.
        let took = started.elapsed();
        assert!(took >= ms(680) && took < ms(2000), "{took:?}");
    }

    #[tokio::test]
    async fn a_busy_splice_ends_at_its_maximum_duration() {
        let (down, mut client) = tokio::io::duplex(64);
        let (up, mut server) = tokio::io::duplex(64);
        let limits = SpliceLimits {
            max_duration: Some(ms(500)),
            ..LIMITS
        };
        let started = Instant::now();
        let talk = async move {
            for _ in 0..100 {
                tokio::time::sleep(ms(50)).await;
                if client.write_all(b"x").await.is_err() {
                    break;
                }
                let mut b = [0u8; 1];
                let _ = server.read_exact(&mut b).await;
            }
        };
        tokio::select! {
            ended = splice(down, up, limits) => assert_eq!(ended, Ended::MaxDuration),
            () = talk => panic!("the splice outlived its maximum duration"),
        }
        let took = started.elapsed();
        assert!(took >= ms(500) && took < ms(1500), "{took:?}");
    }
}
