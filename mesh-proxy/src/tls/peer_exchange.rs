//! Peer metadata for TCP between two proxies, as Istio's `istio-peer-exchange`: the client's
//! proxy offers [`ALPN_PEER_EXCHANGE`] on its mesh mTLS handshake for raw TCP; when the
//! server's proxy picks it, each side writes one frame with its own metadata before any
//! payload, without waiting for the other's, then reads the other's.
//!
//! Frame: the 4 bytes [`MAGIC`], a big-endian `u32` length, then that many bytes of the value
//! the HTTP header `x-mesh-peer-metadata` carries (base64url JSON); length 0 when a proxy does
//! not know its workload. Only ever read on a verified mesh mTLS connection whose ALPN both
//! sides agreed on: a peer that did not offer or pick the protocol gets and sends no frame.

use std::time::Duration;

use http::HeaderValue;
use rustls::CommonState;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

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

    #[test]
    fn an_overlong_value_is_sent_as_no_metadata() {
        let big = HeaderValue::from_str(&"a".repeat(MAX_METADATA + 10)).unwrap();
        assert_eq!(encode(Some(&big)), encode(None));
    }
}
