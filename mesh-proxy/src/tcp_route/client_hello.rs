//! The server name (SNI) of a TLS ClientHello, read from a connection's first bytes without
//! consuming them, so the TLS session passes through the proxy unterminated.

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::peek::peek_until;
use crate::tls::looks_like_tls;

/// Most bytes of a ClientHello read for its server name: one full TLS record (16 KiB) and
/// its header. Envoy's TLS inspector allows more, but no real ClientHello comes close.
pub const MAX_HELLO_BYTES: usize = 16 * 1024 + 5;

/// What the first bytes of a connection say about its server name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// A ClientHello with this server name, lowercased.
    Sni(String),
    /// A ClientHello without a server name.
    NoSni,
    /// Not TLS, or a malformed ClientHello.
    NotTls,
    /// A ClientHello so far; more bytes are needed.
    Incomplete,
}

/// Parses the server name out of a connection's first bytes: TLS handshake records carrying
/// a ClientHello (which may span several records), its `server_name` extension, host_name
/// entry.
pub fn client_hello_sni(first_bytes: &[u8]) -> Hello {
    if !first_bytes.is_empty() && !looks_like_tls(&first_bytes[..first_bytes.len().min(6)]) {
        return Hello::NotTls;
    }
    // Reassemble the handshake message from its records.
    let mut handshake = Vec::new();
    let mut rest = first_bytes;
    loop {
        if handshake.len() >= 4 {
            let len = u24(&handshake[1..4]);
            if handshake.len() >= 4 + len {
                return parse_client_hello(&handshake[4..4 + len]);
            }
        }
        if rest.len() < 5 {
            return Hello::Incomplete;
        }
        if rest[0] != 0x16 || rest[1] != 0x03 {
            return Hello::NotTls;
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        let available = (rest.len() - 5).min(len);
        handshake.extend_from_slice(&rest[5..5 + available]);
        if available < len {
            // The record is still arriving: judge the handshake header on what is here.
            return match handshake.first() {
                Some(t) if *t != 0x01 => Hello::NotTls,
                _ => Hello::Incomplete,
            };
        }
        rest = &rest[5 + len..];
    }
}

fn u24(b: &[u8]) -> usize {
    (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2])
}

/// The ClientHello body (after the handshake header), RFC 8446 section 4.1.2.
fn parse_client_hello(body: &[u8]) -> Hello {
    let mut r = Reader(body);
    let parsed = (|| {
        r.take(2 + 32)?; // legacy_version, random
        let n = usize::from(r.u8()?);
        r.take(n)?; // legacy_session_id
        let n = r.u16()?;
        r.take(n)?; // cipher_suites
        let n = usize::from(r.u8()?);
        r.take(n)?; // legacy_compression_methods
        if r.0.is_empty() {
            return Some(Hello::NoSni); // no extensions at all (SSLv3-style hello)
        }
        let n = r.u16()?;
        let mut exts = Reader(r.take(n)?);
        while !exts.0.is_empty() {
            let kind = exts.u16()?;
            let n = exts.u16()?;
            let data = exts.take(n)?;
            if kind == 0 {
                return server_name(data);
            }
        }
        Some(Hello::NoSni)
    })();
    parsed.unwrap_or(Hello::NotTls)
}

/// The `server_name` extension: a list of (name_type, name); host_name is type 0.
fn server_name(data: &[u8]) -> Option<Hello> {
    let mut r = Reader(data);
    let n = r.u16()?;
    let mut list = Reader(r.take(n)?);
    while !list.0.is_empty() {
        let kind = list.u8()?;
        let n = list.u16()?;
        let name = list.take(n)?;
        if kind == 0 {
            let name = std::str::from_utf8(name).ok()?;
            return Some(Hello::Sni(name.to_ascii_lowercase()));
        }
    }
    Some(Hello::NoSni)
}

/// Bounds-checked big-endian reads; `None` past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
}

/// Peeks at the start of `stream` for a ClientHello's server name, reading at most
/// `max_bytes` and waiting at most `deadline`. The bytes stay in the socket for whoever
/// forwards the connection. `None`: not TLS, no server name, the client sent nothing in time
/// or closed, or the hello is larger than `max_bytes`.
pub async fn peek_sni(
    stream: &TcpStream,
    max_bytes: usize,
    deadline: Duration,
) -> io::Result<Option<String>> {
    let found = peek_until(
        stream,
        max_bytes,
        deadline,
        |seen, _| match client_hello_sni(seen) {
            Hello::Sni(name) => Some(Some(name)),
            Hello::NoSni | Hello::NotTls => Some(None),
            Hello::Incomplete => None,
        },
    )
    .await?;
    Ok(found.flatten())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello as rustls writes it, for `name`.
    fn hello(name: &str) -> Vec<u8> {
        use std::sync::Arc;
        let roots = rustls::RootCertStore::empty();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from(name.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn server_name_of_a_real_client_hello() {
        let bytes = hello("DB.Example.com");
        assert_eq!(
            client_hello_sni(&bytes),
            Hello::Sni("db.example.com".into())
        );
        // Every prefix is incomplete, never a wrong answer.
        for cut in [0, 1, 5, 9, bytes.len() / 2, bytes.len() - 1] {
            assert_eq!(
                client_hello_sni(&bytes[..cut]),
                Hello::Incomplete,
                "cut at {cut}"
            );
        }
        // An IP address is never sent as SNI.
        assert_eq!(client_hello_sni(&hello("198.18.0.1")), Hello::NoSni);
    }

    #[test]
    fn client_hello_split_across_records() {
        let bytes = hello("split.example.com");
        let body = &bytes[5..];
        let (a, b) = body.split_at(40);
        let mut two = Vec::new();
        for part in [a, b] {
            two.extend_from_slice(&[0x16, 0x03, 0x01]);
            two.extend_from_slice(&(part.len() as u16).to_be_bytes());
            two.extend_from_slice(part);
        }
        assert_eq!(
            client_hello_sni(&two),
            Hello::Sni("split.example.com".into())
        );
    }

    #[test]
    fn not_tls_and_malformed() {
        assert_eq!(client_hello_sni(b"GET / HTTP/1.1\r\n"), Hello::NotTls);
        assert_eq!(client_hello_sni(b"\x00\x00\x00"), Hello::NotTls);
        // A handshake record that is not a ClientHello.
        assert_eq!(
            client_hello_sni(&[0x16, 0x03, 0x03, 0x00, 0x10, 0x02, 0, 0]),
            Hello::NotTls
        );
        // A ClientHello whose extension lengths run past its end.
        let mut bytes = hello("x.example.com");
        let last = bytes.len() - 1;
        bytes.truncate(last);
        let hs_len = u24(&bytes[6..9]) - 1;
        bytes[6..9].copy_from_slice(&(hs_len as u32).to_be_bytes()[1..]);
        let rec_len = u16::from_be_bytes([bytes[3], bytes[4]]) - 1;
        bytes[3..5].copy_from_slice(&rec_len.to_be_bytes());
        assert_eq!(client_hello_sni(&bytes), Hello::NotTls);
    }
}
