//! Telling HTTP from other protocols by a connection's first bytes, on transparent listeners
//! that receive whatever the application sends.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Longest method token looked at; longer is not a method any client sends.
const MAX_METHOD: usize = 20;

/// What the first bytes say.
#[derive(Debug, PartialEq, Eq)]
pub enum Judgement {
    Http,
    NotHttp,
    NeedMore,
}

/// An HTTP/1 request line starts with a method token (upper-case letters, as every method
/// a client sends is) and a space; so does HTTP/2's preface with prior knowledge ("PRI *").
pub fn judge(first_bytes: &[u8]) -> Judgement {
    if first_bytes.is_empty() {
        return Judgement::NeedMore;
    }
    for (i, b) in first_bytes.iter().enumerate().take(MAX_METHOD + 1) {
        match b {
            b' ' if i > 0 => return Judgement::Http,
            b'A'..=b'Z' | b'-' | b'_' if i < MAX_METHOD => {}
            _ => return Judgement::NotHttp,
        }
    }
    // Only method characters so far.
    Judgement::NeedMore
}

/// Peeks at the start of `stream`: true when it is HTTP. Silence until `deadline` (a
/// server-first protocol such as MySQL) or EOF is not HTTP.
pub async fn sniff_http(stream: &TcpStream, deadline: Duration) -> io::Result<bool> {
    let until = Instant::now() + deadline;
    let mut buf = [0u8; MAX_METHOD + 1];
    let mut seen = 0;
    loop {
        let n = match tokio::time::timeout_at(until, stream.peek(&mut buf)).await {
            Ok(n) => n?,
            Err(_) => return Ok(false),
        };
        if n == 0 {
            return Ok(false);
        }
        match judge(&buf[..n]) {
            Judgement::Http => return Ok(true),
            Judgement::NotHttp => return Ok(false),
            Judgement::NeedMore if n == buf.len() || Instant::now() >= until => return Ok(false),
            Judgement::NeedMore => {}
        }
        // peek returns at once while any byte is buffered: wait a little for more.
        if n == seen {
            tokio::time::sleep(Duration::from_millis(2).min(until - Instant::now())).await;
        }
        seen = n;
    }
}

/// Reads the first bytes of `stream` (a TLS session, where peeking is impossible) until they
/// tell whether it is HTTP, or until `deadline`. Returns the bytes read, to be replayed, and
/// the verdict; silence or EOF is not HTTP.
pub async fn read_first_bytes(
    stream: &mut (impl AsyncRead + Unpin),
    deadline: Duration,
) -> io::Result<(Vec<u8>, bool)> {
    let until = Instant::now() + deadline;
    let mut buf = Vec::with_capacity(MAX_METHOD + 1);
    loop {
        let mut chunk = [0u8; MAX_METHOD + 1];
        let room = MAX_METHOD + 1 - buf.len();
        let n = match tokio::time::timeout_at(until, stream.read(&mut chunk[..room])).await {
            Ok(n) => n?,
            Err(_) => return Ok((buf, false)),
        };
        if n == 0 {
            return Ok((buf, false));
        }
        buf.extend_from_slice(&chunk[..n]);
        match judge(&buf) {
            Judgement::Http => return Ok((buf, true)),
            Judgement::NotHttp => return Ok((buf, false)),
            Judgement::NeedMore if buf.len() > MAX_METHOD => return Ok((buf, false)),
            Judgement::NeedMore => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_and_others() {
        assert_eq!(judge(b"GET / HTTP/1.1\r\n"), Judgement::Http);
        assert_eq!(judge(b"POST /x HTTP/1.1"), Judgement::Http);
        assert_eq!(judge(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Judgement::Http);
        assert_eq!(judge(b"GE"), Judgement::NeedMore);
        assert_eq!(judge(b""), Judgement::NeedMore);
        assert_eq!(judge(&[0x16, 0x03, 0x01, 0x02, 0x00]), Judgement::NotHttp);
        assert_eq!(
            judge(b"\x00\x00\x00\x08\x04\xd2\x16\x2f"),
            Judgement::NotHttp
        );
        assert_eq!(judge(b"get / HTTP/1.1"), Judgement::NotHttp);
        assert_eq!(judge(b" GET"), Judgement::NotHttp);
        assert_eq!(judge(b"ABCDEFGHIJKLMNOPQRSTU"), Judgement::NotHttp);
        assert_eq!(judge(b"PING\r\n"), Judgement::NotHttp);
    }

    #[tokio::test]
    async fn first_bytes_read_until_they_decide() {
        use tokio::io::AsyncWriteExt;
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"GE").await.unwrap();
        let reading = tokio::spawn(async move {
            read_first_bytes(&mut server, Duration::from_secs(5))
                .await
                .unwrap()
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        client.write_all(b"T / HTTP/1.1\r\n").await.unwrap();
        let (bytes, http) = reading.await.unwrap();
        assert!(http);
        assert!(bytes.starts_with(b"GET "), "{bytes:?}");

        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"\x00\x01binary").await.unwrap();
        let (bytes, http) = read_first_bytes(&mut server, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(!http);
        assert_eq!(bytes, b"\x00\x01binary");

        // A client that says nothing (server-first protocol): not HTTP, after the deadline.
        let (_client, mut server) = tokio::io::duplex(64);
        let (bytes, http) = read_first_bytes(&mut server, Duration::from_millis(50))
            .await
            .unwrap();
        assert!(!http && bytes.is_empty());
    }
}
