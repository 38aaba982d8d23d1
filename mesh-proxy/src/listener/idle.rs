//! Feeding a downstream connection's [`Activity`] (bytes read, requests started and finished)
//! and waiting for it to expire.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::activity::{Activity, Expired, Timeouts};

/// The activity of one connection, shared by its stream, its requests and its watcher.
#[derive(Clone)]
pub struct Tracker(Arc<Shared>);

struct Shared {
    activity: Mutex<Activity>,
    /// Wakes the watcher when the deadline may have moved earlier or appeared.
    changed: Notify,
    /// Whether bytes were handed to the stream since its last completed flush.
    unflushed: AtomicBool,
}

impl Tracker {
    pub fn new(timeouts: Timeouts) -> Self {
        Self(Arc::new(Shared {
            activity: Mutex::new(Activity::new(timeouts, Instant::now())),
            changed: Notify::new(),
            unflushed: AtomicBool::new(false),
        }))
    }

    /// Marks a request as started; the returned guard finishes it when dropped (with the
    /// response body, or with the handler when the client went away). `parkable` when the
    /// connection may be parked once idle after it. Also returns when the first bytes of the
    /// request's head arrived, if the connection knows (see [`Activity::on_request`]).
    pub fn request(&self, parkable: bool) -> (InFlight, Option<Instant>) {
        let head_began = self
            .0
            .activity
            .lock()
            .expect("activity lock")
            .on_request(parkable);
        (InFlight(self.clone()), head_began)
    }

    /// The connection let go of its HTTP state; it is not parked again before a request.
    pub fn parked(&self) {
        self.0.activity.lock().expect("activity lock").on_parked();
    }

    /// Whether everything written to the stream was flushed.
    pub fn flushed(&self) -> bool {
        !self.0.unflushed.load(Ordering::Acquire)
    }

    /// Resolves when the connection has been idle, or sending headers, for too long. Its
    /// sleep is not moved by every request: when it ends before a deadline that moved later,
    /// it sleeps again until that one.
    pub async fn expired(&self) -> Expired {
        let shared = &self.0;
        loop {
            let deadline = shared.activity.lock().expect("activity lock").arm();
            match deadline {
                None => shared.changed.notified().await,
                Some((at, why)) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {
                            let now = shared.activity.lock().expect("activity lock").deadline();
                            if now == Some((at, why)) {
                                return why;
                            }
                        }
                        _ = shared.changed.notified() => {}
                    }
                }
            }
        }
    }
}

/// A request in flight on a tracked connection.
pub struct InFlight(Tracker);

impl Drop for InFlight {
    fn drop(&mut self) {
        let shared = &(self.0).0;
        let late = match shared.activity.lock() {
            Ok(mut a) => a.on_response_done(Instant::now()),
            Err(_) => true,
        };
        if late {
            shared.changed.notify_one();
        }
    }
}

/// A response body that keeps its request in flight until it is dropped.
pub struct TrackedBody<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B> TrackedBody<B> {
    pub fn new(inner: B, in_flight: InFlight) -> Self {
        Self {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for TrackedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A downstream stream reporting the bytes it reads to its tracker.
pub struct TrackedIo<S> {
    inner: S,
    tracker: Tracker,
}

impl<S> TrackedIo<S> {
    pub fn new(inner: S, tracker: Tracker) -> Self {
        Self { inner, tracker }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TrackedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let read = &buf.filled()[before..];
            let shared = &this.tracker.0;
            let moved = shared
                .activity
                .lock()
                .expect("activity lock")
                .on_read(read, Instant::now());
            if moved {
                shared.changed.notify_one();
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TrackedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        this.tracker.0.unflushed.store(true, Ordering::Release);
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        this.tracker.0.unflushed.store(true, Ordering::Release);
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.inner).poll_flush(cx);
        if let Poll::Ready(Ok(())) = flushed {
            this.tracker.0.unflushed.store(false, Ordering::Release);
        }
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
