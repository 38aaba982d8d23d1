//! Telling HTTP from other protocols by a connection's first bytes, on transparent listeners
//! that receive whatever the application sends.

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::peek::peek_until;

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

/// Peeks at the start of `stream`: true when its first bytes are not HTTP. Silence until
/// `deadline`, or EOF, is not judged (false): the connection stays HTTP, as Istio's
/// detection without a timeout does, so a slow HTTP client never loses its HTTP handling
/// (mTLS origination, routing); server-first protocols need a declared TCP port.
pub async fn sends_non_http(stream: &TcpStream, deadline: Duration) -> io::Result<bool> {
    let verdict = peek_until(stream, MAX_METHOD + 1, deadline, |seen, _| {
        match judge(seen) {
            Judgement::Http => Some(false),
            Judgement::NotHttp => Some(true),
            // A longer run of method characters than any method: not HTTP.
            Judgement::NeedMore if seen.len() > MAX_METHOD => Some(true),
            Judgement::NeedMore => None,
        }
    })
    .await?;
    Ok(verdict.unwrap_or(false))
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
}
