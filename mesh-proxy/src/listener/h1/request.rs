//! Which HTTP/1.1 request heads the connection's own codec takes, read apart from I/O.
//!
//! The codec serves the request shape that is nearly all of a sidecar's HTTP/1.1 traffic: an
//! origin-form HTTP/1.1 request on a keep-alive connection, without a body or with one of a
//! declared `Content-Length`. Everything else (a chunked body, an upgrade, `Expect`,
//! `Connection: close`, HTTP/1.0, absolute-form and `*` targets, and every malformed or
//! oversized head) is handed to hyper with the bytes exactly as they arrived, so its answers to
//! them (400, 431, chunked bodies, upgrades) are unchanged.

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, TE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};

use crate::upstream::h1::codec::parse_decimal;

/// A head with more header fields than this goes to hyper (which refuses it with 431, its
/// limit being the same).
pub const MAX_HEADERS: usize = 100;

/// What the front of the read buffer holds.
// Not boxed: returned once per request and moved on at once; a box would be an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Head {
    /// A request head this codec serves, taken off the buffer, and the length of the body
    /// that follows it (0: none).
    Own(Request<()>, u64),
    /// The start of a head: read more.
    Partial,
    /// A request this codec leaves to hyper; the buffer is untouched.
    Handoff,
}

/// Reads the request head at the front of `buf`. An [`Head::Own`] request's header values
/// share the head's bytes (taken off `buf`) rather than being copied.
pub fn parse(buf: &mut BytesMut) -> Head {
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Head::Partial,
        Err(_) => return Head::Handoff,
    };
    if req.version != Some(1) {
        return Head::Handoff;
    }
    let (Some(method), Some(path)) = (req.method, req.path) else {
        return Head::Handoff;
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Head::Handoff;
    };
    if method == Method::CONNECT || !path.starts_with('/') {
        return Head::Handoff;
    }
    // Offsets into the buffer, so the target and the values can be slices of it once frozen.
    let base = buf.as_ptr() as usize;
    let path_span = span(base, path.as_bytes());
    let mut names = Vec::with_capacity(req.headers.len());
    let mut content_length = None;
    for h in req.headers.iter() {
        let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else {
            return Head::Handoff;
        };
        if name == CONTENT_LENGTH {
            // Every value one plain number, all the same; anything else is hyper's to judge.
            match (parse_decimal(h.value), content_length) {
                (Some(len), None) => content_length = Some(len),
                (Some(len), Some(seen)) if len == seen => {}
                _ => return Head::Handoff,
            }
        } else if !is_own(&name, h.value) {
            return Head::Handoff;
        }
        names.push((name, span(base, h.value)));
    }
    let head = buf.split_to(len).freeze();
    let Ok(uri) = Uri::from_maybe_shared(head.slice(path_span.0..path_span.1)) else {
        return handed_back(buf, head);
    };
    let mut headers = HeaderMap::with_capacity(names.len());
    for (name, (start, end)) in names {
        let Ok(value) = HeaderValue::from_maybe_shared(head.slice(start..end)) else {
            return handed_back(buf, head);
        };
        headers.append(name, value);
    }
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Head::Own(request, content_length.unwrap_or(0))
}

fn span(base: usize, part: &[u8]) -> (usize, usize) {
    let start = part.as_ptr() as usize - base;
    (start, start + part.len())
}

/// Puts a head taken off the buffer back in front of what followed it (rare: a target or
/// value that httparse accepts and `http` does not).
fn handed_back(buf: &mut BytesMut, head: Bytes) -> Head {
    let rest = std::mem::take(buf);
    buf.extend_from_slice(&head);
    buf.extend_from_slice(&rest);
    Head::Handoff
}

/// Whether a header field keeps the request in this codec's shape: no chunked body, no
/// upgrade, no interim response asked for, the connection kept alive.
fn is_own(name: &HeaderName, value: &[u8]) -> bool {
    if *name == CONNECTION {
        value
            .split(|&b| b == b',')
            .all(|token| !is_close_or_upgrade(token.trim_ascii()))
    } else {
        !(*name == TRANSFER_ENCODING || *name == EXPECT || *name == UPGRADE || *name == TE)
    }
}

fn is_close_or_upgrade(token: &[u8]) -> bool {
    token.eq_ignore_ascii_case(b"close") || token.eq_ignore_ascii_case(b"upgrade")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> (Head, BytesMut) {
        let mut buf = BytesMut::from(text);
        let head = parse(&mut buf);
        (head, buf)
    }

    fn own(text: &str) -> (Request<()>, u64, BytesMut) {
        match parse_str(text) {
            (Head::Own(req, body), rest) => (req, body, rest),
            (other, _) => panic!("{text:?}: {other:?}"),
        }
    }

    fn handed_off(text: &str) {
        let (head, rest) = parse_str(text);
        assert!(matches!(head, Head::Handoff), "{text:?}: {head:?}");
        assert_eq!(
            rest,
            text.as_bytes(),
            "{text:?}: the bytes go to hyper untouched"
        );
    }

    #[test]
    fn a_bodiless_keep_alive_request_is_read_and_taken_off_the_buffer() {
        let (req, body, rest) = own(
            "GET /a/b?c=d HTTP/1.1\r\nHost: svc\r\nX-Two: 1\r\nx-two: 2\r\n\r\nGET /next HTTP/1.1\r\n",
        );
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri(), "/a/b?c=d");
        assert_eq!(req.version(), Version::HTTP_11);
        assert_eq!(req.headers()["host"], "svc");
        let twos: Vec<_> = req.headers().get_all("x-two").iter().collect();
        assert_eq!(twos, ["1", "2"]);
        assert_eq!(body, 0);
        assert_eq!(
            rest, "GET /next HTTP/1.1\r\n",
            "a pipelined head stays for the next read"
        );
    }

    #[test]
    fn keep_alive_tokens_and_a_zero_length_stay_in_the_codec() {
        own("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n");
        let (_, body, _) = own("DELETE /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(body, 0);
        own("GET / HTTP/1.1\r\nHost: a\r\nConnection: x-custom\r\nX-Custom: 1\r\n\r\n");
    }

    #[test]
    fn a_declared_length_body_stays_in_the_codec_and_on_the_buffer() {
        let (req, body, rest) = own(
            "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\nabcGET",
        );
        assert_eq!((req.method(), body), (&Method::POST, 3));
        assert_eq!(req.headers().get_all(CONTENT_LENGTH).iter().count(), 2);
        assert_eq!(
            rest, "abcGET",
            "the body is read from the buffer by the connection"
        );
    }

    #[test]
    fn an_incomplete_head_asks_for_more() {
        let (head, rest) = parse_str("GET / HTTP/1.1\r\nHost: a\r\n");
        assert!(matches!(head, Head::Partial));
        assert_eq!(rest, "GET / HTTP/1.1\r\nHost: a\r\n");
    }

    #[test]
    fn chunked_bodies_odd_lengths_upgrades_and_closes_go_to_hyper() {
        handed_off("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
        handed_off(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        handed_off("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 0,0\r\n\r\n");
        handed_off("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n");
        handed_off("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n");
        handed_off("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n");
        handed_off("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n");
        handed_off(
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        );
        handed_off("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Close\r\n\r\n");
        handed_off("GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n");
    }

    #[test]
    fn other_versions_and_targets_go_to_hyper() {
        handed_off("GET / HTTP/1.0\r\nHost: a\r\n\r\n");
        handed_off("GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n");
        handed_off("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
        handed_off("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n");
    }

    #[test]
    fn malformed_and_oversized_heads_go_to_hyper() {
        handed_off("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n");
        handed_off("GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n");
        handed_off("G@T / HTTP/1.1\r\nHost: a\r\n\r\n");
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
        handed_off(&format!("GET / HTTP/1.1\r\n{many}\r\n"));
    }

    #[test]
    fn a_target_the_http_crate_refuses_is_put_back_whole() {
        // httparse takes any visible byte in the target; `Uri` refuses a `<`.
        let text = "GET /<x> HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\n";
        handed_off(text);
    }
}
