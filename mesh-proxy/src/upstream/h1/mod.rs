//! The HTTP/1.1 client of the upstream pools, driven from the request's own task: the request
//! is written and its response read by the future that asked for it, and the response body
//! reads the connection as the downstream reads the body. No task per connection, no channel
//! per request, and the headers are encoded from the request as the router left them.
//!
//! A response can start before its request body is fully sent (an echo streaming back what it
//! reads): the response body then keeps sending the request body as it is read.

pub mod chunked;
pub mod codec;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use http::Response;
use http_body::{Body, Frame, SizeHint};
use tokio::io::AsyncWrite;

use self::chunked::{ChunkedDecoder, Decoded};
pub use self::codec::{Added, AddedValue, HeadFields, RequestHead};
use self::codec::{ProtocolError, Reading, RequestFraming, ResponseFraming};
use super::pool::Home;
use super::transport::Upstream;
use crate::http::body::{BoxError, UpstreamBody};

/// Data frames up to this size are copied behind the bytes before them (one write); larger
/// ones are written from their own buffer.
const COPY_LIMIT: usize = 16 * 1024;
/// Read buffer room asked for before each read.
const READ_SPARE: usize = 8 * 1024;

/// Why an exchange on an HTTP/1.1 connection failed.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    #[error("upstream connection: {0}")]
    Io(#[from] io::Error),
    #[error("upstream closed the connection before a complete response")]
    ClosedBeforeResponse,
    #[error("upstream closed the connection before the body's end")]
    IncompleteBody,
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("reading the request body: {0}")]
    RequestBody(BoxError),
    #[error("request body differs from its Content-Length")]
    RequestLength,
}

/// A failed send; `unsent` gives the request's body back when none of the request reached
/// the connection.
pub struct Failed {
    pub error: H1Error,
    pub unsent: Option<UpstreamBody>,
}

/// One HTTP/1.1 connection to an upstream endpoint.
pub struct Connection {
    io: Upstream,
    read_buf: BytesMut,
    out: Vec<u8>,
    out_pos: usize,
    /// Requests this connection has carried.
    pub uses: u32,
    pub born: Instant,
    /// The pool it goes back to when a response has ended cleanly.
    home: Home,
}

impl Connection {
    pub fn home(&self) -> &Home {
        &self.home
    }

    pub fn new(io: Upstream, home: Home) -> Box<Self> {
        Box::new(Self {
            io,
            read_buf: BytesMut::new(),
            out: Vec::new(),
            out_pos: 0,
            uses: 0,
            born: Instant::now(),
            home,
        })
    }

    /// Whether an idle connection is still usable: not closed by the server, and with no
    /// bytes nobody asked for. Looks at the socket's known readiness only (no wait).
    pub fn is_open(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        poll_read_buf(&mut self.io, &mut cx, &mut self.read_buf).is_pending()
    }

    /// Sends a request and reads its response head; the body is read through the response.
    pub async fn send(
        mut self: Box<Self>,
        head: &RequestHead<'_>,
        body: UpstreamBody,
    ) -> Result<Response<ResponseBody>, Failed> {
        let framed = codec::request_framing(head.method, head.headers, &body.size_hint());
        let framing = framed.framing;
        let ended = framing == RequestFraming::Empty || body.is_end_stream();
        self.out.clear();
        self.out_pos = 0;
        codec::encode_head(&mut self.out, head, &framed);
        if ended && framing == RequestFraming::Chunked {
            codec::encode_last_chunk(&mut self.out, None);
        }
        // The head first: a connection the server closed while it was idle fails here
        // without any of the request taken, and the request can go on another one.
        if let Err(error) = std::future::poll_fn(|cx| self.poll_flush_out(cx)).await {
            let unsent = (self.out_pos == 0).then_some(body);
            return Err(Failed { error, unsent });
        }
        self.uses += 1;
        let mut writer = Writer::new((!ended).then_some(body), framing);
        let method = head.method;
        let mut write_error = None;
        let head = std::future::poll_fn(|cx| {
            if write_error.is_none() && !writer.done {
                match writer.poll(&mut self, cx) {
                    // The downstream's body broke: no point waiting for an answer.
                    Poll::Ready(Err(e @ H1Error::RequestBody(_))) => return Poll::Ready(Err(e)),
                    // The server may have answered and stopped reading: read on.
                    Poll::Ready(Err(e)) => write_error = Some(e),
                    _ => {}
                }
            }
            self.poll_head(method, cx)
        })
        .await;
        let (head, framing, keep_alive) = match head {
            Ok(head) => head,
            Err(e) => {
                return Err(Failed {
                    error: write_error.unwrap_or(e),
                    unsent: None,
                });
            }
        };
        let mut body = ResponseBody {
            conn: Some(self),
            framing: Framing::from(framing),
            keep_alive: keep_alive && write_error.is_none(),
            writer: (!writer.done && write_error.is_none()).then(|| Box::new(writer)),
        };
        body.give_back_if_ended();
        let mut resp = Response::new(body);
        *resp.status_mut() = head.status;
        *resp.version_mut() = head.version;
        *resp.headers_mut() = head.headers;
        Ok(resp)
    }

    /// Reads until a final response head, skipping interim ones.
    fn poll_head(
        &mut self,
        method: &http::Method,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(codec::Head, ResponseFraming, bool), H1Error>> {
        loop {
            if !self.read_buf.is_empty()
                && let Some(head) = codec::parse_head(&mut self.read_buf)?
            {
                match codec::response_reading(method, &head)? {
                    Reading::Interim => continue,
                    Reading::Final {
                        framing,
                        keep_alive,
                    } => return Poll::Ready(Ok((head, framing, keep_alive))),
                }
            }
            let n = ready!(poll_read_buf(&mut self.io, cx, &mut self.read_buf))?;
            if n == 0 {
                return Poll::Ready(Err(H1Error::ClosedBeforeResponse));
            }
        }
    }

    /// Writes out what is buffered in `out`, then flushes.
    fn poll_flush_out(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), H1Error>> {
        ready!(self.poll_write_pending(cx))?;
        ready!(Pin::new(&mut self.io).poll_flush(cx))?;
        Poll::Ready(Ok(()))
    }

    /// Writes what is buffered in `out` (no flush).
    fn poll_write_pending(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), H1Error>> {
        while self.out_pos < self.out.len() {
            self.out_pos += ready!(poll_write_some(&mut self.io, cx, &self.out[self.out_pos..]))?;
        }
        self.out.clear();
        self.out_pos = 0;
        Poll::Ready(Ok(()))
    }
}

/// Writes some of `bytes`: how many, never 0 (a socket that takes nothing is an error).
fn poll_write_some(
    io: &mut Upstream,
    cx: &mut Context<'_>,
    bytes: &[u8],
) -> Poll<Result<usize, H1Error>> {
    match ready!(Pin::new(io).poll_write(cx, bytes))? {
        0 => Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero).into())),
        n => Poll::Ready(Ok(n)),
    }
}

/// Reads into `buf`'s spare room: the bytes read, 0 at the end of the stream.
fn poll_read_buf(
    io: &mut Upstream,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < READ_SPARE / 2 {
        buf.reserve(READ_SPARE);
    }
    tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
}

/// The request body on its way out.
struct Writer {
    body: Option<UpstreamBody>,
    framing: RequestFraming,
    /// Body bytes written, checked against a declared length.
    written: u64,
    /// A large data frame being written from its own buffer.
    large: Option<Bytes>,
    /// Everything, including the end of the body, is written and flushed.
    done: bool,
}

impl Writer {
    fn new(body: Option<UpstreamBody>, framing: RequestFraming) -> Self {
        Self {
            body,
            framing,
            written: 0,
            large: None,
            done: false,
        }
    }

    /// Appends the end of the body (the last chunk) to `out`.
    fn finish(&mut self, out: &mut Vec<u8>) {
        self.body = None;
        if self.framing == RequestFraming::Chunked {
            codec::encode_last_chunk(out, None);
        }
    }

    /// Sends the body until it ends (Ready) or waits for it or the socket (Pending).
    fn poll(&mut self, conn: &mut Connection, cx: &mut Context<'_>) -> Poll<Result<(), H1Error>> {
        loop {
            ready!(conn.poll_write_pending(cx))?;
            if let Some(large) = &mut self.large {
                while large.has_remaining() {
                    large.advance(ready!(poll_write_some(&mut conn.io, cx, large))?);
                }
                self.large = None;
                if self.framing == RequestFraming::Chunked {
                    conn.out.extend_from_slice(b"\r\n");
                }
                continue;
            }
            let Some(body) = self.body.as_mut() else {
                if let RequestFraming::Length(declared) = self.framing
                    && self.written != declared
                {
                    return Poll::Ready(Err(H1Error::RequestLength));
                }
                ready!(Pin::new(&mut conn.io).poll_flush(cx))?;
                self.done = true;
                return Poll::Ready(Ok(()));
            };
            let frame = match Pin::new(body).poll_frame(cx) {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    // What was written so far goes out while the body waits.
                    ready!(Pin::new(&mut conn.io).poll_flush(cx))?;
                    return Poll::Pending;
                }
            };
            match frame {
                None => self.finish(&mut conn.out),
                Some(Err(e)) => return Poll::Ready(Err(H1Error::RequestBody(e))),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        self.push_data(&mut conn.out, data)?;
                        if self.body.as_ref().is_some_and(Body::is_end_stream) {
                            self.finish(&mut conn.out);
                        }
                    }
                    Err(frame) => {
                        // Trailers end the body; only chunked framing can carry them.
                        self.body = None;
                        if self.framing == RequestFraming::Chunked {
                            codec::encode_last_chunk(&mut conn.out, frame.trailers_ref());
                        }
                    }
                },
            }
        }
    }

    fn push_data(&mut self, out: &mut Vec<u8>, data: Bytes) -> Result<(), H1Error> {
        if data.is_empty() {
            return Ok(());
        }
        self.written += data.len() as u64;
        match self.framing {
            RequestFraming::Length(declared) if self.written > declared => {
                return Err(H1Error::RequestLength);
            }
            RequestFraming::Chunked => codec::encode_chunk_size(out, data.len()),
            _ => {}
        }
        if data.len() > COPY_LIMIT {
            self.large = Some(data);
            return Ok(());
        }
        out.extend_from_slice(&data);
        if self.framing == RequestFraming::Chunked {
            out.extend_from_slice(b"\r\n");
        }
        Ok(())
    }
}

/// Where a response body is in its framing.
#[derive(Debug)]
enum Framing {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Ended,
}

impl From<ResponseFraming> for Framing {
    fn from(f: ResponseFraming) -> Self {
        match f {
            ResponseFraming::Empty | ResponseFraming::Length(0) => Self::Ended,
            ResponseFraming::Length(n) => Self::Length(n),
            ResponseFraming::Chunked => Self::Chunked(ChunkedDecoder::default()),
            ResponseFraming::UntilClose => Self::UntilClose,
        }
    }
}

/// A response body read straight from its connection. Once it has ended cleanly (and the
/// request body was sent whole), the connection goes back to its pool before the last frame
/// is handed on; dropped earlier, the connection closes.
pub struct ResponseBody {
    conn: Option<Box<Connection>>,
    framing: Framing,
    keep_alive: bool,
    /// The rest of a request body still being sent (boxed: rare, and the body is moved
    /// several times on its way out).
    writer: Option<Box<Writer>>,
}

impl ResponseBody {
    fn give_back_if_ended(&mut self) {
        if !matches!(self.framing, Framing::Ended) || self.writer.is_some() {
            return;
        }
        let Some(conn) = self.conn.take() else { return };
        // Bytes past the response mean the server and this client disagree on framing.
        if self.keep_alive && conn.read_buf.is_empty() {
            Home::give_back(conn);
        }
    }

    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some(writer) = &mut self.writer {
            match writer.poll(conn, cx) {
                Poll::Ready(Ok(())) => self.writer = None,
                // The server answered already; the rest of the request is not needed, but the
                // connection is left in an unknown state.
                Poll::Ready(Err(_)) => {
                    self.writer = None;
                    self.keep_alive = false;
                }
                Poll::Pending => {}
            }
        }
        loop {
            let (frame, ended) = match &mut self.framing {
                Framing::Ended => (None, true),
                Framing::Length(left) if !conn.read_buf.is_empty() => {
                    let n = (conn.read_buf.len() as u64).min(*left);
                    *left -= n;
                    let data = conn.read_buf.split_to(n as usize).freeze();
                    (Some(Frame::data(data)), *left == 0)
                }
                Framing::Length(_) => (None, false),
                Framing::Chunked(decoder) => match decoder.decode(&mut conn.read_buf)? {
                    Decoded::Data(data) => (Some(Frame::data(data)), false),
                    Decoded::Trailers(trailers) => (Some(Frame::trailers(trailers)), true),
                    Decoded::Done => (None, true),
                    Decoded::NeedMore => (None, false),
                },
                Framing::UntilClose if !conn.read_buf.is_empty() => {
                    (Some(Frame::data(conn.read_buf.split().freeze())), false)
                }
                Framing::UntilClose => (None, false),
            };
            if ended {
                self.framing = Framing::Ended;
                self.give_back_if_ended();
                return Poll::Ready(frame.map(Ok));
            }
            if let Some(frame) = frame {
                return Poll::Ready(Some(Ok(frame)));
            }
            let n = ready!(poll_read_buf(&mut conn.io, cx, &mut conn.read_buf))?;
            if n == 0 {
                if !matches!(self.framing, Framing::UntilClose) {
                    return Poll::Ready(Some(Err(H1Error::IncompleteBody)));
                }
                // The server's close ends such a body; the connection is done with.
                self.framing = Framing::Ended;
                self.conn = None;
                return Poll::Ready(None);
            }
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = H1Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        let this = self.get_mut();
        let frame = ready!(this.poll_data(cx));
        if let Some(Err(_)) = frame {
            // A broken body leaves its connection unusable.
            this.conn = None;
            this.framing = Framing::Ended;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Ended)
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Ended => SizeHint::with_exact(0),
            Framing::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::new(),
        }
    }
}
