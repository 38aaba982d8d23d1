//! Peer metadata for TCP between two proxies, as Istio's `istio-peer-exchange`: the client's
//! proxy offers [`ALPN_PEER_EXCHANGE`] on its mesh mTLS handshake for raw TCP; when the
//! server's proxy picks it, each side writes one frame with its own metadata before any
//! payload, without waiting for the other's, then reads the other's. The server's proxy reads
//! the client's at once (it came with the handshake's end); the client's proxy passes its
//! client's bytes on meanwhile and strips the server's frame as it reads ([`FrameReader`]), so
//! the exchange adds no round trip.
//!
//! Frame: the 4 bytes [`MAGIC`], a big-endian `u32` length, then that many bytes of the value
//! the HTTP header `x-mesh-peer-metadata` carries (base64url JSON); length 0 when a proxy does
//! not know its workload. Only ever read on a verified mesh mTLS connection whose ALPN both
//! sides agreed on: a peer that did not offer or pick the protocol gets and sends no frame.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::HeaderValue;
use rustls::CommonState;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Sleep;

/// The ALPN id of the exchange (ours; Istio's frame format differs, so not Istio's id).
pub const ALPN_PEER_EXCHANGE: &[u8] = b"mesh-peer-exchange";
/// Marks a frame, so a peer speaking something else is noticed at once.
pub const MAGIC: [u8; 4] = *b"MPX1";
/// Largest metadata accepted, as for the header; a longer frame closes the connection.
pub const MAX_METADATA: usize = 2048;
/// How long a peer that agreed to the exchange may take to send its frame (it sends it as its
/// handshake ends, so only a broken peer is slower).
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("peer metadata frame not received within {0:?}")]
    Timeout(Duration),
    #[error("peer metadata frame: bad magic")]
    BadMagic,
    #[error("peer metadata frame of {0} bytes is over the {MAX_METADATA} byte limit")]
    TooLong(usize),
    #[error("peer metadata frame: {0}")]
    Io(#[from] std::io::Error),
}

/// Whether the handshake on `conn` agreed on the exchange.
pub fn negotiated(conn: &CommonState) -> bool {
    conn.alpn_protocol() == Some(ALPN_PEER_EXCHANGE)
}

/// The frame announcing `metadata` (an empty one for `None`, or for a value the peer would
/// refuse as too long).
pub fn encode(metadata: Option<&HeaderValue>) -> Vec<u8> {
    let body = metadata
        .map(HeaderValue::as_bytes)
        .filter(|b| b.len() <= MAX_METADATA)
        .unwrap_or_default();
    let mut frame = Vec::with_capacity(8 + body.len());
    frame.extend_from_slice(&MAGIC);
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(body);
    frame
}

/// Writes our frame; it goes out with whatever follows, nothing waits for the peer.
pub async fn write<S: AsyncWrite + Unpin>(
    stream: &mut S,
    metadata: Option<&HeaderValue>,
) -> std::io::Result<()> {
    stream.write_all(&encode(metadata)).await?;
    stream.flush().await
}

/// Reads the peer's frame, and nothing past it. `Ok(None)` for an empty frame or metadata
/// that is not a valid header value (labelled unknown; the connection goes on).
pub async fn read<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<Option<HeaderValue>, ExchangeError> {
    read_within(stream, READ_TIMEOUT).await
}

async fn read_within<S: AsyncRead + Unpin>(
    stream: &mut S,
    limit: Duration,
) -> Result<Option<HeaderValue>, ExchangeError> {
    let read = async {
        let mut head = [0u8; 8];
        stream.read_exact(&mut head).await?;
        if head[..4] != MAGIC {
            return Err(ExchangeError::BadMagic);
        }
        let len = u32::from_be_bytes(head[4..].try_into().expect("4 bytes")) as usize;
        if len > MAX_METADATA {
            return Err(ExchangeError::TooLong(len));
        }
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).await?;
        Ok((!body.is_empty())
            .then(|| HeaderValue::from_bytes(&body).ok())
            .flatten())
    };
    tokio::time::timeout(limit, read)
        .await
        .map_err(|_| ExchangeError::Timeout(limit))?
}

/// Both halves, writing first so neither side waits on the other.
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    metadata: Option<&HeaderValue>,
) -> Result<Option<HeaderValue>, ExchangeError> {
    write(stream, metadata).await?;
    read(stream).await
}

/// Where a [`FrameReader`] is in the peer's frame.
enum FrameState {
    Head { filled: usize },
    Body { filled: usize },
    Done,
}

/// A stream whose first bytes read are the peer's frame: reads strip it, hand its metadata to
/// `on_frame` (once) and go on with the payload; writes pass through at once. A frame that is
/// foreign, oversized, cut short or later than [`READ_TIMEOUT`] fails the read.
pub struct FrameReader<S> {
    inner: S,
    state: FrameState,
    head: [u8; 8],
    body: Vec<u8>,
    deadline: Pin<Box<Sleep>>,
    limit: Duration,
    on_frame: Option<Box<dyn FnOnce(Option<HeaderValue>) + Send>>,
}

impl<S> FrameReader<S> {
    pub fn new(inner: S, on_frame: impl FnOnce(Option<HeaderValue>) + Send + 'static) -> Self {
        Self::within(inner, READ_TIMEOUT, on_frame)
    }

    fn within(
        inner: S,
        limit: Duration,
        on_frame: impl FnOnce(Option<HeaderValue>) + Send + 'static,
    ) -> Self {
        Self {
            inner,
            state: FrameState::Head { filled: 0 },
            head: [0; 8],
            body: Vec::new(),
            deadline: Box::pin(tokio::time::sleep(limit)),
            limit,
            on_frame: Some(Box::new(on_frame)),
        }
    }

    fn finish(&mut self) {
        self.state = FrameState::Done;
        let body = std::mem::take(&mut self.body);
        let metadata = (!body.is_empty())
            .then(|| HeaderValue::from_bytes(&body).ok())
            .flatten();
        if let Some(on_frame) = self.on_frame.take() {
            on_frame(metadata);
        }
    }
}

fn invalid(e: ExchangeError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<S: AsyncRead + Unpin> FrameReader<S> {
    /// Reads the frame to its end; `Ready(Ok)` once done.
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let part = match &mut self.state {
                FrameState::Done => return Poll::Ready(Ok(())),
                FrameState::Head { filled } => &mut self.head[*filled..],
                FrameState::Body { filled } => &mut self.body[*filled..],
            };
            if self.deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    ExchangeError::Timeout(self.limit),
                )));
            }
            // Exactly what the frame still needs: nothing of the payload is read here.
            let mut buf = ReadBuf::new(part);
            ready!(Pin::new(&mut self.inner).poll_read(cx, &mut buf))?;
            let n = buf.filled().len();
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            match &mut self.state {
                FrameState::Head { filled } => {
                    *filled += n;
                    if *filled < self.head.len() {
                        continue;
                    }
                    if self.head[..4] != MAGIC {
                        return Poll::Ready(Err(invalid(ExchangeError::BadMagic)));
                    }
                    let len =
                        u32::from_be_bytes(self.head[4..].try_into().expect("4 bytes")) as usize;
                    if len > MAX_METADATA {
                        return Poll::Ready(Err(invalid(ExchangeError::TooLong(len))));
                    }
                    self.body = vec![0; len];
                    self.state = FrameState::Body { filled: 0 };
                }
                FrameState::Body { filled } => *filled += n,
                FrameState::Done => unreachable!("returned above"),
            }
            if let FrameState::Body { filled } = self.state
                && filled == self.body.len()
            {
                self.finish();
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FrameReader<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_frame(cx))?;
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FrameReader<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_frame_round_trips_and_leaves_the_payload_after_it() {
        let meta = HeaderValue::from_static("eyJXT1JLTE9BRF9OQU1FIjoidyJ9");
        let mut wire = encode(Some(&meta));
        wire.extend_from_slice(b"payload");
        let mut reader = &wire[..];
        assert_eq!(read(&mut reader).await.unwrap(), Some(meta));
        assert_eq!(reader, b"payload");
        let empty = encode(None);
        assert_eq!(read(&mut &empty[..]).await.unwrap(), None);
    }

    #[tokio::test]
    async fn oversized_or_foreign_frames_are_refused_unread() {
        let mut long = MAGIC.to_vec();
        long.extend_from_slice(&((MAX_METADATA + 1) as u32).to_be_bytes());
        assert!(matches!(
            read(&mut &long[..]).await,
            Err(ExchangeError::TooLong(_))
        ));
        assert!(matches!(
            read(&mut &b"GET / HTTP/1.1\r\n"[..]).await,
            Err(ExchangeError::BadMagic)
        ));
        // A short frame is an error, not a hang.
        assert!(read(&mut &MAGIC[..]).await.is_err());
    }

    #[tokio::test]
    async fn a_silent_peer_times_out() {
        let (mut near, _far) = tokio::io::duplex(64);
        assert!(matches!(
            read_within(&mut near, Duration::from_millis(20)).await,
            Err(ExchangeError::Timeout(_))
        ));
    }

    /// Reads everything from a [`FrameReader`] over `wire` sent in `chunk`-byte pieces.
    async fn through_reader(
        wire: Vec<u8>,
        chunk: usize,
    ) -> (io::Result<Vec<u8>>, Option<Option<HeaderValue>>) {
        let (mut far, near) = tokio::io::duplex(chunk);
        let writer = tokio::spawn(async move {
            for piece in wire.chunks(chunk) {
                far.write_all(piece).await.unwrap();
            }
        });
        let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
        let slot = seen.clone();
        let mut reader = FrameReader::new(near, move |m| *slot.lock().unwrap() = Some(m));
        let mut out = Vec::new();
        let result = reader.read_to_end(&mut out).await.map(|_| out);
        writer.await.unwrap();
        let seen = seen.lock().unwrap().take();
        (result, seen)
    }

    #[tokio::test]
    async fn the_reader_strips_the_frame_in_any_pieces_and_passes_the_payload() {
        let meta = HeaderValue::from_static("eyJXT1JLTE9BRF9OQU1FIjoidyJ9");
        let mut wire = encode(Some(&meta));
        wire.extend_from_slice(b"payload");
        for chunk in [1, 3, 8, 64] {
            let (payload, seen) = through_reader(wire.clone(), chunk).await;
            assert_eq!(payload.unwrap(), b"payload");
            assert_eq!(seen, Some(Some(meta.clone())));
        }
        let (payload, seen) = through_reader(encode(None), 64).await;
        assert_eq!(payload.unwrap(), b"");
        assert_eq!(seen, Some(None));
    }

    #[tokio::test]
    async fn the_reader_fails_on_a_foreign_short_or_late_frame() {
        let (foreign, seen) = through_reader(b"HTTP/1.1 200 OK\r\n".to_vec(), 64).await;
        assert_eq!(foreign.unwrap_err().kind(), io::ErrorKind::InvalidData);
        assert_eq!(seen, None);
        let (short, _) = through_reader(MAGIC.to_vec(), 64).await;
        assert_eq!(short.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        let (_far, near) = tokio::io::duplex(64);
        let mut late = FrameReader::within(near, Duration::from_millis(20), |_| {});
        let err = late.read(&mut [0u8; 8]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn an_overlong_value_is_sent_as_no_metadata() {
        let big = HeaderValue::from_str(&"a".repeat(MAX_METADATA + 10)).unwrap();
        assert_eq!(encode(Some(&big)), encode(None));
    }
}
