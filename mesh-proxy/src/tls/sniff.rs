//! PERMISSIVE mode: telling a TLS ClientHello from plaintext by the first bytes.

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::peek::peek_until;

/// How long to wait for a client's first bytes. A client that says nothing (a server-first
/// protocol such as MySQL) is plaintext TCP.
pub const SNIFF_TIMEOUT: Duration = Duration::from_millis(100);

/// Record header (5 bytes) and the handshake type: enough to recognise a ClientHello.
const HELLO_PREFIX: usize = 6;

/// True if `first_bytes` start a TLS handshake record holding a ClientHello: content type
/// 0x16, version 3.0 to 1.3 (0x0300..=0x0304; TLS 1.3 clients still write 0x0301 here), and,
/// when present, handshake type 1. A shorter input is judged on what it has, so `[0x16]` is
/// TLS: no plaintext protocol a client speaks first starts with that control byte.
pub fn looks_like_tls(first_bytes: &[u8]) -> bool {
    match first_bytes {
        [0x16] | [0x16, 0x03] => true,
        [0x16, 0x03, minor, rest @ ..] => *minor <= 0x04 && rest.get(2).is_none_or(|t| *t == 0x01),
        _ => false,
    }
}

/// Peeks at the first bytes of `stream` (leaving them to be read by whoever handles it) and
/// says whether they start TLS. Waits at most `deadline`; silence or EOF means not TLS.
pub async fn sniff_tls(stream: &TcpStream, deadline: Duration) -> io::Result<bool> {
    // Decided as soon as the bytes say enough; a TLS header split across segments waits.
    let verdict = peek_until(stream, HELLO_PREFIX, deadline, |seen, last| {
        (last || seen.len() >= 3 || seen[0] != 0x16).then(|| looks_like_tls(seen))
    })
    .await?;
    Ok(verdict.unwrap_or(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_headers() {
        assert!(looks_like_tls(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00]));
        assert!(looks_like_tls(&[0x16, 0x03, 0x03]));
        assert!(looks_like_tls(&[0x16]));
        // Not a handshake record, a future version, or a ServerHello.
        assert!(!looks_like_tls(&[0x17, 0x03, 0x03, 0x00, 0x10]));
        assert!(!looks_like_tls(&[0x16, 0x03, 0x05, 0x00, 0x10, 0x01]));
        assert!(!looks_like_tls(&[0x16, 0x03, 0x03, 0x00, 0x10, 0x02]));
        assert!(!looks_like_tls(b"GET / HTTP/1.1\r\n"));
        assert!(!looks_like_tls(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        assert!(!looks_like_tls(b""));
    }
}
