//! PERMISSIVE mode: telling a TLS ClientHello from plaintext by the first bytes.

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

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
    let until = Instant::now() + deadline;
    let mut buf = [0u8; HELLO_PREFIX];
    loop {
        let n = match tokio::time::timeout_at(until, stream.peek(&mut buf)).await {
            Ok(n) => n?,
            Err(_) => return Ok(false),
        };
        let seen = &buf[..n];
        // Decide as soon as the bytes say enough; a TLS header split across segments waits a
        // little (peek returns at once while any byte is buffered, hence the sleep).
        if n == 0 || n >= 3 || seen[0] != 0x16 || Instant::now() >= until {
            return Ok(n > 0 && looks_like_tls(seen));
        }
        tokio::time::sleep(Duration::from_millis(2).min(until - Instant::now())).await;
    }
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
