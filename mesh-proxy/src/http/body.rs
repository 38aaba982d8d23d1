//! Body types of the proxy: what goes upstream (streamed, or replayable for retries) and
//! what goes back downstream (the upstream's body, or a local reply).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;

use super::fed_body::FedBody;
use super::mirror::{BodyCopies, CopyBody};
use crate::telemetry::grpc::MessageCounter;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The downstream response body.
pub enum ResponseBody {
    Upstream(Incoming),
    /// An upstream body still counted by the cluster's circuit breakers.
    Admitted(super::admitted::AdmittedBody),
    Local(Full<Bytes>),
}

impl ResponseBody {
    pub fn local(bytes: impl Into<Bytes>) -> Self {
        Self::Local(Full::new(bytes.into()))
    }

    pub fn empty() -> Self {
        Self::Local(Full::new(Bytes::new()))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Upstream(b) => poll_non_empty(Pin::new(b), cx).map_err(Into::into),
            Self::Admitted(b) => poll_non_empty(Pin::new(b), cx).map_err(Into::into),
            Self::Local(b) => Pin::new(b).poll_frame(cx).map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Upstream(b) => b.is_end_stream(),
            Self::Admitted(b) => b.is_end_stream(),
            Self::Local(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Upstream(b) => b.size_hint(),
            Self::Admitted(b) => b.size_hint(),
            Self::Local(b) => b.size_hint(),
        }
    }
}

/// The next frame of `body` that is not an empty DATA frame. An HTTP/2 peer commonly ends a
/// body with an empty DATA frame flagged END_STREAM, which hyper yields as an empty chunk;
/// passed on, it would become an empty DATA frame of its own (the end goes in another), and
/// h2 peers count those as a flood: 100 on one connection and it is closed with
/// ENHANCE_YOUR_CALM, taking every stream on it down.
pub fn poll_non_empty<B: Body<Data = Bytes> + Unpin>(
    mut body: Pin<&mut B>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
    loop {
        match ready!(body.as_mut().poll_frame(cx)) {
            Some(Ok(frame)) if frame.data_ref().is_some_and(Bytes::is_empty) => continue,
            other => return Poll::Ready(other),
        }
    }
}

/// A downstream request's body as its connection delivers it: streamed by hyper (HTTP/2, and
/// HTTP/1.1 requests hyper serves), read by the connection's own HTTP/1.1 codec
/// (`listener::h1`), or nothing.
#[derive(Debug)]
pub enum RequestBody {
    Streamed(Incoming),
    Fed(FedBody),
    Empty,
}

impl From<Incoming> for RequestBody {
    fn from(body: Incoming) -> Self {
        Self::Streamed(body)
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Streamed(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Self::Fed(b) => Pin::new(b).poll_frame(cx),
            Self::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Streamed(b) => b.is_end_stream(),
            Self::Fed(b) => b.is_end_stream(),
            Self::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Streamed(b) => b.size_hint(),
            Self::Fed(b) => b.size_hint(),
            Self::Empty => SizeHint::with_exact(0),
        }
    }
}

/// The downstream request body, remembering whether reading it failed (a malformed chunked
/// encoding, fewer bytes than its Content-Length): such a failure is the client's fault, not
/// the upstream's, whatever error the upstream send reports for it.
pub struct DownstreamBody {
    inner: RequestBody,
    failed: Arc<AtomicBool>,
    /// Bytes read so far, for the request size metric.
    received: Arc<AtomicU64>,
    /// gRPC requests: the messages read so far, for the message count metric.
    messages: Option<(MessageCounter, Arc<AtomicU64>)>,
    /// The bodies of the request's shadow copies, fed as this one is read.
    copies: Option<BodyCopies>,
}

/// Tells whether reading a [`DownstreamBody`] failed, and how much of it was read.
#[derive(Clone)]
pub struct BodyFailure {
    failed: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    messages: Option<Arc<AtomicU64>>,
}

impl BodyFailure {
    pub fn happened(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// The count of body bytes read from the downstream, updated as they are read.
    pub fn received(&self) -> Arc<AtomicU64> {
        self.received.clone()
    }

    /// gRPC requests: the count of messages read, updated as they are read.
    pub fn messages(&self) -> Option<Arc<AtomicU64>> {
        self.messages.clone()
    }
}

impl DownstreamBody {
    pub fn watch(inner: RequestBody) -> (Self, BodyFailure) {
        Self::watch_messages(inner, false)
    }

    /// As [`Self::watch`]; `grpc`: the body is gRPC, whose messages are counted too.
    pub fn watch_messages(inner: RequestBody, grpc: bool) -> (Self, BodyFailure) {
        let failed = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let messages = grpc.then(|| Arc::new(AtomicU64::new(0)));
        (
            Self {
                inner,
                failed: failed.clone(),
                received: received.clone(),
                messages: messages.clone().map(|m| (MessageCounter::default(), m)),
                copies: None,
            },
            BodyFailure {
                failed,
                received,
                messages,
            },
        )
    }
}

impl DownstreamBody {
    /// Feeds `copies` (a mirrored request's shadow bodies) with every frame read.
    pub fn with_copies(mut self, copies: Option<BodyCopies>) -> Self {
        self.copies = copies;
        self
    }
}

impl Body for DownstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let frame = ready!(poll_non_empty(Pin::new(&mut this.inner), cx));
        if let Some(copies) = &mut this.copies {
            match &frame {
                Some(Ok(f)) => copies.offer(f),
                None => copies.finish(),
                Some(Err(_)) => {}
            }
            // A reader that knows the length stops at the last frame without asking again.
            if this.inner.is_end_stream() {
                copies.finish();
            }
        }
        match &frame {
            Some(Err(_)) => this.failed.store(true, Ordering::Release),
            Some(Ok(f)) => {
                if let Some(data) = f.data_ref() {
                    this.received
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                    if let Some((counter, shared)) = &mut this.messages {
                        counter.feed(data);
                        shared.store(counter.messages, Ordering::Relaxed);
                    }
                }
            }
            None => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The request body sent upstream.
pub enum UpstreamBody {
    /// Streamed as it arrives: the request cannot be retried once sent.
    Stream(DownstreamBody),
    /// Streamed while a copy is kept, so another attempt can send it again.
    Replay(ReplayBody),
    /// A mirrored request's shadow copy.
    Copy(CopyBody),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Stream(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Self::Replay(b) => Pin::new(b).poll_frame(cx),
            Self::Copy(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Stream(b) => b.is_end_stream(),
            Self::Replay(b) => b.is_end_stream(),
            Self::Copy(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Stream(b) => b.size_hint(),
            Self::Replay(b) => b.size_hint(),
            Self::Copy(b) => b.size_hint(),
        }
    }
}

/// State shared by all attempts of one request.
struct Shared {
    /// The downstream body, parked here whenever no attempt is reading it.
    source: Option<DownstreamBody>,
    /// Everything read from `source` so far, unless it outgrew the limit.
    chunks: Vec<Bytes>,
    buffered_bytes: usize,
    trailers: Option<HeaderMap>,
    source_done: bool,
    overflowed: bool,
    limit: usize,
    /// The size hint of the original body, for content length on every attempt.
    hint: SizeHint,
}

/// Hands out replayable bodies, one per attempt.
#[derive(Clone)]
pub struct Replay {
    shared: Arc<Mutex<Shared>>,
}

impl Replay {
    pub fn new(source: DownstreamBody, limit: usize) -> Self {
        let hint = source.size_hint();
        let source_done = source.is_end_stream();
        Self {
            shared: Arc::new(Mutex::new(Shared {
                source: Some(source),
                chunks: Vec::new(),
                buffered_bytes: 0,
                trailers: None,
                source_done,
                overflowed: false,
                limit,
                hint,
            })),
        }
    }

    /// Whether another attempt could send the whole body again: nothing was dropped from the
    /// copy, and no earlier attempt still holds the unread rest of the body.
    pub fn can_replay(&self) -> bool {
        let s = self.shared.lock().expect("replay lock");
        !s.overflowed && (s.source_done || s.source.is_some())
    }

    /// A body for the next attempt, starting from the first byte.
    pub fn body(&self) -> ReplayBody {
        ReplayBody {
            shared: self.shared.clone(),
            source: None,
            cursor: 0,
            trailers_sent: false,
        }
    }
}

pub struct ReplayBody {
    shared: Arc<Mutex<Shared>>,
    /// The downstream body while this attempt reads it.
    source: Option<DownstreamBody>,
    /// The next buffered chunk to replay.
    cursor: usize,
    trailers_sent: bool,
}

impl Drop for ReplayBody {
    fn drop(&mut self) {
        if let Some(source) = self.source.take()
            && let Ok(mut s) = self.shared.lock()
        {
            s.source = Some(source);
        }
    }
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        {
            let mut s = this.shared.lock().expect("replay lock");
            if this.cursor < s.chunks.len() {
                let chunk = s.chunks[this.cursor].clone();
                this.cursor += 1;
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            if s.source_done {
                if !this.trailers_sent
                    && let Some(t) = s.trailers.clone()
                {
                    this.trailers_sent = true;
                    return Poll::Ready(Some(Ok(Frame::trailers(t))));
                }
                return Poll::Ready(None);
            }
            if this.source.is_none() {
                if s.overflowed {
                    return Poll::Ready(Some(Err("request body outgrew the retry buffer".into())));
                }
                match s.source.take() {
                    Some(src) => this.source = Some(src),
                    None => {
                        return Poll::Ready(Some(Err(
                            "request body is held by an earlier attempt".into(),
                        )));
                    }
                }
            }
        }
        let source = this.source.as_mut().expect("source taken above");
        let frame = ready!(Pin::new(source).poll_frame(cx));
        let mut s = this.shared.lock().expect("replay lock");
        match frame {
            None => {
                s.source_done = true;
                Poll::Ready(None)
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    if !s.overflowed {
                        if s.buffered_bytes + data.len() > s.limit {
                            s.overflowed = true;
                            s.chunks = Vec::new();
                        } else {
                            s.buffered_bytes += data.len();
                            s.chunks.push(data.clone());
                            this.cursor = s.chunks.len();
                        }
                    }
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Err(frame) => {
                    if let Some(t) = frame.trailers_ref() {
                        s.trailers = Some(t.clone());
                        s.source_done = true;
                        this.trailers_sent = true;
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        let s = self.shared.lock().expect("replay lock");
        s.source_done
            && self.cursor >= s.chunks.len()
            && (self.trailers_sent || s.trailers.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        self.shared.lock().expect("replay lock").hint
    }
}
