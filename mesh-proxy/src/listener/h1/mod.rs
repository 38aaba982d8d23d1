//! The connection's own HTTP/1.1 server codec, for the requests that are nearly all of a
//! sidecar's HTTP/1.1 traffic: origin-form requests on keep-alive connections, without a body
//! or with one of a declared length ([`request`] says which). A body is read from the socket
//! as the request's sender asks for it ([`FedBody`]). It reads heads into one buffer that lives as long as the
//! connection is busy (hyper allocates a new 8 KB one per request: it reads again while the
//! last request's header values still point into the old one), hands requests to the proxy
//! from the connection's own task, and writes the head and a short body in one write.
//!
//! Any other request, and every malformed one, is handed to hyper's server with the bytes as
//! they arrived; the connection stays with hyper until it parks, then comes back here.

mod date;
pub mod request;
mod response;

use std::future::poll_fn;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Response};
use http_body::{Body, Frame};
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use self::request::Head;
use self::response::{Answering, BodyLength, Framing, encode_head};
use super::activity::Expired;
use super::idle::{TrackedBody, TrackedIo, Tracker};
use super::on_wake::OnWake;
use super::serve::{Downstream, Handled, Io, MAX_HEADER_BYTES, alarm, log_expiry};
use crate::http::body::RequestBody;
use crate::http::fed_body::{Feeder, Wants, fed};
use crate::metrics::Held;
use crate::telemetry::RecordedBody;
use crate::upstream::h1::codec::{encode_chunk_size, encode_last_chunk};

/// Room a read is given. A head is usually a few hundred bytes, so one buffer serves tens of
/// requests before it is reused from its start.
const READ_RESERVE: usize = 4096;
/// Room for the first bytes read by a parked connection.
const PARKED_READ: usize = 256;
/// How long, and how many bytes of an unread body, a closing connection reads and drops.
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;
/// Most a request body's read asks room for.
const BODY_READ: usize = 64 * 1024;
/// A data frame at least this large is written from its own buffer instead of copied.
const COPY_UNDER: usize = 16 * 1024;
/// A write buffer grown past this by one response is not kept for the next.
const KEEP_OUT_UNDER: usize = 64 * 1024;

/// What serving a connection's HTTP/1.1 requests needs.
pub struct Serving<'a> {
    pub peer: SocketAddr,
    pub downstream: &'a Downstream,
    pub tracker: &'a Tracker,
    pub drain: &'a CancellationToken,
    pub parked: &'a Gauge,
}

/// How the codec let go of a connection.
pub enum Ended {
    Closed,
    /// A request for hyper: these bytes (the request and anything after it) are its first.
    Handoff(Bytes),
}

/// Serves requests from `first` (the bytes read so far; none: the connection is parked)
/// until the connection closes or a request is hyper's.
pub async fn serve<S: Io>(io: &mut TrackedIo<S>, first: Bytes, serving: &Serving<'_>) -> Ended {
    let mut pending = first;
    loop {
        if pending.is_empty() {
            // An empty view can still hold a whole buffer (hyper's, or the codec's): let go
            // of it before idling.
            drop(std::mem::take(&mut pending));
            match wait_parked(io, serving).await {
                Some(bytes) => pending = bytes,
                None => return Ended::Closed,
            }
        }
        // Boxed: a parked connection's future does not keep the busy state's size.
        match Box::pin(serve_awake(io, pending, serving)).await {
            Awake::Ended(ended) => return ended,
            Awake::Parked(read) => pending = read,
        }
    }
}

/// Waits, holding no buffer, for the next bytes of a parked connection. `None`: closed, idle
/// past the idle timeout, or drained.
pub async fn wait_parked<S: Io>(io: &mut TrackedIo<S>, serving: &Serving<'_>) -> Option<Bytes> {
    let counted = Held::new(serving.parked);
    let mut buf = [0u8; PARKED_READ];
    let woke = tokio::select! {
        r = io.read(&mut buf) => Some(r),
        // Idle past the idle timeout: closed, as hyper closes an idle connection.
        why = serving.tracker.expired() => {
            log_expiry(serving.peer, why);
            None
        }
        _ = serving.drain.cancelled() => None,
    };
    drop(counted);
    match woke {
        Some(Ok(n)) if n > 0 => Some(Bytes::copy_from_slice(&buf[..n])),
        _ => None,
    }
}

/// How a busy stretch of the connection ended.
enum Awake {
    Ended(Ended),
    /// Idle long enough to let go of its buffers; what was read meanwhile (usually nothing).
    Parked(Bytes),
}

async fn serve_awake<S: Io>(io: &mut TrackedIo<S>, first: Bytes, serving: &Serving<'_>) -> Awake {
    let watch = pin!(alarm(serving.tracker, serving.drain));
    let mut alarm = OnWake::new(watch);
    let mut buf = BytesMut::with_capacity(READ_RESERVE.max(first.len()));
    buf.extend_from_slice(&first);
    let mut out = Vec::new();
    loop {
        let (req, body_len) = loop {
            if !buf.is_empty() {
                match request::parse(&mut buf) {
                    Head::Own(req, body_len) => break (req, body_len),
                    Head::Handoff => return Awake::Ended(Ended::Handoff(buf.freeze())),
                    // hyper answers an oversized head (431).
                    Head::Partial if buf.len() >= MAX_HEADER_BYTES => {
                        return Awake::Ended(Ended::Handoff(buf.freeze()));
                    }
                    Head::Partial => {}
                }
            }
            reserve(&mut buf);
            let fired = tokio::select! {
                biased;
                read = io.read_buf(&mut buf) => match read {
                    Ok(n) if n > 0 => continue,
                    _ => return Awake::Ended(Ended::Closed),
                },
                fired = &mut alarm => fired,
            };
            match fired {
                Some(Expired::Park) => {
                    serving.tracker.parked();
                    let read = if buf.is_empty() {
                        Bytes::new()
                    } else {
                        buf.freeze()
                    };
                    return Awake::Parked(read);
                }
                Some(why) => log_expiry(serving.peer, why),
                None => {}
            }
            return Awake::Ended(Ended::Closed);
        };
        let head_request = req.method() == Method::HEAD;
        let (req, mut client) = match body_len {
            0 => (req.map(|()| RequestBody::Empty), Client::new(None)),
            len => {
                let (body, feeder) = fed(len);
                (
                    req.map(|()| RequestBody::Fed(body)),
                    Client::new(Some(feeder)),
                )
            }
        };
        // After a body, the connection is not parked until a request without one (as with
        // hyper): a body's last bytes could still be unread when it idles.
        let handled = serving.downstream.begin(req, body_len == 0);
        let Some(resp) = respond_unless_hung_up(io, &mut buf, &mut client, handled).await else {
            return Awake::Ended(Ended::Closed);
        };
        let answering = Answering {
            head: head_request,
            keep_alive: !serving.drain.is_cancelled(),
        };
        let kept = write_response(io, &mut buf, &mut client, &mut out, resp, answering).await;
        // A body not read to its end leaves bytes that are not the next head.
        let body_complete = client.body_complete();
        if !kept || !body_complete {
            let _ = io.shutdown().await;
            if !body_complete {
                linger(io).await;
            }
            return Awake::Ended(Ended::Closed);
        }
        if out.capacity() > KEEP_OUT_UNDER {
            out = Vec::new();
        }
    }
}

/// Reads and drops what a client still sends of a body nobody read, for a while, before the
/// connection is closed: closed with bytes unread, the socket would be reset, and a reset
/// can discard the response before the client read it (nginx's lingering close).
async fn linger<S: Io>(io: &mut TrackedIo<S>) {
    let mut scratch = [0u8; 4096];
    let drained = async {
        let mut total = 0;
        while total < LINGER_BYTES {
            match io.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drained).await;
}

/// Spare room for a read: the buffer is reused from its start once every head read into it
/// is gone (`reserve` reclaims it then rather than allocating).
fn reserve(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_RESERVE / 4 {
        buf.reserve(READ_RESERVE);
    }
}

/// The proxy's response, or `None` when the client closed the connection first (the request
/// is dropped, cancelling whatever it waited for upstream, as hyper does). Meanwhile the
/// request's body is read as it is asked for, and bytes a client pipelines are kept for the
/// next head.
async fn respond_unless_hung_up<S: Io>(
    io: &mut TrackedIo<S>,
    buf: &mut BytesMut,
    client: &mut Client,
    mut handled: Handled,
) -> Option<Response<TrackedBody<RecordedBody>>> {
    poll_fn(|cx| {
        if let Poll::Ready(Ok(resp)) = handled.as_mut().poll(cx) {
            return Poll::Ready(Some(resp));
        }
        match client.poll(io, buf, cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// The client's side of the connection while a request is served: its body, fed as it is
/// asked for, then whether it hangs up.
struct Client {
    body: Option<Feeder>,
    /// Still reading to see whether the client hangs up (not once the pipelined bytes kept
    /// fill the buffer, nor after its body failed).
    watching: bool,
}

impl Client {
    fn new(body: Option<Feeder>) -> Self {
        Self {
            body,
            watching: true,
        }
    }

    /// Whether the request had no body or all of it was read.
    fn body_complete(&self) -> bool {
        self.body.as_ref().is_none_or(Feeder::is_complete)
    }

    /// Ready when the client hung up. A client that closes in the middle of its body fails
    /// the body instead: the proxy still answers (400), then the connection is closed.
    fn poll<S: Io>(
        &mut self,
        io: &mut TrackedIo<S>,
        buf: &mut BytesMut,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        if let Some(feeder) = &self.body {
            if poll_feed(io, buf, feeder, cx).is_pending() {
                return Poll::Pending;
            }
            if !feeder.is_complete() {
                self.watching = false;
            }
        }
        if self.watching {
            match poll_hung_up(io, buf, cx) {
                Poll::Ready(true) => return Poll::Ready(()),
                Poll::Ready(false) => self.watching = false,
                Poll::Pending => {}
            }
        }
        Poll::Pending
    }
}

/// Hands the request's body what its reader asks for, from what was read already, then from
/// the socket. Ready once the whole body was handed over, or the client closed before its end.
fn poll_feed<S: Io>(
    io: &mut TrackedIo<S>,
    buf: &mut BytesMut,
    feeder: &Feeder,
    cx: &mut Context<'_>,
) -> Poll<()> {
    loop {
        let wanted = match feeder.wants(cx) {
            Wants::Done => return Poll::Ready(()),
            Wants::Nothing => return Poll::Pending,
            Wants::Bytes(n) => n,
        };
        if !buf.is_empty() {
            let take = usize::try_from(wanted).unwrap_or(usize::MAX).min(buf.len());
            feeder.give(buf.split_to(take).freeze());
            continue;
        }
        if buf.capacity() - buf.len() < READ_RESERVE / 4 {
            let room = usize::try_from(wanted).unwrap_or(usize::MAX);
            buf.reserve(room.clamp(READ_RESERVE, BODY_READ));
        }
        match tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, buf) {
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                feeder.fail();
                return Poll::Ready(());
            }
            Poll::Ready(Ok(_)) => {}
            Poll::Pending => return Poll::Pending,
        }
    }
}

/// Reads what the client sends while its request is served: `true` when it closed (or the
/// read failed), `false` when there is no room left to keep its pipelined bytes (reading
/// stops until the next head is taken).
fn poll_hung_up<S: Io>(
    io: &mut TrackedIo<S>,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<bool> {
    loop {
        if buf.len() >= MAX_HEADER_BYTES {
            return Poll::Ready(false);
        }
        reserve(buf);
        match tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, buf) {
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(true),
            Poll::Ready(Ok(_)) => {}
            Poll::Pending => return Poll::Pending,
        }
    }
}

/// What became of the next frame of a response body.
enum Next {
    Frame(Frame<Bytes>),
    End,
    Failed,
    HungUp,
}

/// Writes the response; `true` when the connection can carry another request.
async fn write_response<S: Io>(
    io: &mut TrackedIo<S>,
    buf: &mut BytesMut,
    client: &mut Client,
    out: &mut Vec<u8>,
    resp: Response<TrackedBody<RecordedBody>>,
    answering: Answering,
) -> bool {
    let (parts, mut body) = resp.into_parts();
    let length = BodyLength::of(body.is_end_stream(), &body.size_hint());
    out.clear();
    let written = match encode_head(out, parts.status, &parts.headers, length, answering) {
        Ok(written) => written,
        Err(e) => {
            tracing::debug!(error = %e, "response not written");
            return false;
        }
    };
    drop(parts);
    let mut writer = BodyWriter {
        framing: written.framing,
        sent: 0,
        trailers: None,
    };
    let mut complete = writer.is_done() || length == BodyLength::Empty;
    while !complete {
        let next = match poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await {
            Poll::Ready(Some(Ok(frame))) => Next::Frame(frame),
            Poll::Ready(Some(Err(_))) => Next::Failed,
            Poll::Ready(None) => Next::End,
            Poll::Pending => {
                // What is ready goes out while the body waits (a streamed response's head
                // reaches the client before its first chunk).
                if !out.is_empty()
                    && (write_out(io, out).await.is_err() || io.flush().await.is_err())
                {
                    return false;
                }
                next_frame_unless_hung_up(io, buf, client, &mut body).await
            }
        };
        match next {
            Next::Frame(frame) => match frame.into_data() {
                Ok(data) => {
                    complete = body.is_end_stream();
                    match writer.data(out, &data, complete) {
                        Placed::Copied => {}
                        Placed::Apart { then } => {
                            if write_with(io, out, &data).await.is_err() {
                                return false;
                            }
                            out.extend_from_slice(then);
                        }
                        Placed::TooLong => {
                            tracing::debug!("response body longer than its content-length");
                            return false;
                        }
                    }
                }
                Err(frame) => {
                    writer.trailers = frame.into_trailers().ok();
                    complete = true;
                }
            },
            Next::End => complete = true,
            Next::Failed | Next::HungUp => return false,
        }
    }
    // The request is finished once its body has ended (the guard in the body says so).
    drop(body);
    if !writer.finish(out) {
        tracing::debug!("response body shorter than its content-length");
        let _ = write_out(io, out).await;
        return false;
    }
    if write_out(io, out).await.is_err() || io.flush().await.is_err() {
        return false;
    }
    !written.close
}

async fn write_out<S: Io>(io: &mut TrackedIo<S>, out: &mut Vec<u8>) -> std::io::Result<()> {
    let written = io.write_all(out).await;
    out.clear();
    written
}

/// Writes `out` then `data` without copying one into the other (one `writev` when the stream
/// takes them, as hyper writes a head and its body).
async fn write_with<S: Io>(
    io: &mut TrackedIo<S>,
    out: &mut Vec<u8>,
    data: &[u8],
) -> std::io::Result<()> {
    let (mut first, mut second) = (&out[..], data);
    while !first.is_empty() {
        let slices = [IoSlice::new(first), IoSlice::new(second)];
        let n = io.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let from_first = n.min(first.len());
        first = &first[from_first..];
        second = &second[n - from_first..];
    }
    let written = io.write_all(second).await;
    out.clear();
    written
}

/// The body's next frame, or that the client closed the connection while it was awaited (the
/// request's body is still fed meanwhile: an upstream may answer before reading all of it).
async fn next_frame_unless_hung_up<S: Io>(
    io: &mut TrackedIo<S>,
    buf: &mut BytesMut,
    client: &mut Client,
    body: &mut TrackedBody<RecordedBody>,
) -> Next {
    poll_fn(|cx| {
        match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => return Poll::Ready(Next::Frame(frame)),
            Poll::Ready(Some(Err(_))) => return Poll::Ready(Next::Failed),
            Poll::Ready(None) => return Poll::Ready(Next::End),
            Poll::Pending => {}
        }
        match client.poll(io, buf, cx) {
            Poll::Ready(()) => Poll::Ready(Next::HungUp),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// A response body's framing on the wire.
struct BodyWriter {
    framing: Framing,
    sent: u64,
    trailers: Option<HeaderMap>,
}

impl BodyWriter {
    /// Nothing (more) is to be written, whatever the body holds.
    fn is_done(&self) -> bool {
        self.framing == Framing::Length(0)
    }

    /// Frames `data` into `out`, or only its framing when `data` is large or, with a known
    /// length, the body's last (written beside what `out` holds rather than copied into it).
    fn data(&mut self, out: &mut Vec<u8>, data: &Bytes, last: bool) -> Placed {
        if data.is_empty() {
            return Placed::Copied;
        }
        self.sent += data.len() as u64;
        let large = data.len() >= COPY_UNDER;
        match &self.framing {
            Framing::Length(n) if self.sent > *n => Placed::TooLong,
            Framing::Length(_) if large || last => Placed::Apart { then: b"" },
            Framing::Length(_) => {
                out.extend_from_slice(data);
                Placed::Copied
            }
            Framing::Chunked { .. } => {
                encode_chunk_size(out, data.len());
                if large {
                    return Placed::Apart { then: b"\r\n" };
                }
                out.extend_from_slice(data);
                out.extend_from_slice(b"\r\n");
                Placed::Copied
            }
        }
    }

    /// Ends the body: the last chunk and the announced trailers. `false`: fewer bytes than the
    /// declared length (the connection is closed, so the client sees the response cut short).
    fn finish(&mut self, out: &mut Vec<u8>) -> bool {
        match &self.framing {
            Framing::Length(n) => self.sent >= *n,
            Framing::Chunked { trailers } => {
                let announced = self.trailers.take().map(|all| {
                    let mut kept = HeaderMap::new();
                    for (name, value) in all.iter().filter(|(n, _)| trailers.contains(n)) {
                        kept.append(name.clone(), value.clone());
                    }
                    kept
                });
                encode_last_chunk(out, announced.as_ref().filter(|t| !t.is_empty()));
                true
            }
        }
    }
}

/// Where a data frame went.
enum Placed {
    /// Into the write buffer, framed.
    Copied,
    /// Only its framing is in the buffer: the data is written from its own, then `then`.
    Apart { then: &'static [u8] },
    /// Past the declared length.
    TooLong,
}
