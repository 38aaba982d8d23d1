//! The HTTP/1.1 client's wire decisions, apart from I/O: how a request head is written, how a
//! response head is read, and how each message's body is framed (RFC 9112 sections 6 and 7).

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use http_body::SizeHint;

/// A response head larger than this is refused (Envoy's default header limit is 60 KiB).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Response headers past this count are refused, as hyper and Envoy do.
pub const MAX_HEADERS: usize = 100;

/// Why a response could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("malformed response head: {0}")]
    Head(httparse::Error),
    #[error("response head over {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    #[error("response has both Transfer-Encoding and Content-Length")]
    LengthAndChunked,
    #[error("response has an invalid or conflicting Content-Length")]
    BadContentLength,
    #[error("unexpected 101 Switching Protocols")]
    UnexpectedUpgrade,
    #[error("malformed chunked body: {0}")]
    Chunked(&'static str),
}

/// How a request's body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body (and no `Content-Length` written unless the request had one).
    Empty,
    Length(u64),
    Chunked,
}

/// A request's framing and the header that announces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framed {
    pub framing: RequestFraming,
    /// The request's own `Content-Length` is written as it is; otherwise any such header is
    /// left out and `announce` says what is written instead.
    pub keeps_content_length: bool,
    pub announce: Option<RequestFraming>,
}

/// Chooses the request's framing: a `Content-Length` the request already carries is kept, a
/// known size becomes one, an unknown one is chunked.
pub fn request_framing(method: &Method, headers: &HeaderMap, hint: &SizeHint) -> Framed {
    let body_carrying = matches!(*method, Method::POST | Method::PUT | Method::PATCH);
    // The common case, a GET: no body, and whatever length header it has (the downstream
    // codec validated it) goes on as it is, without a lookup.
    if hint.exact() == Some(0) && !body_carrying {
        return Framed {
            framing: RequestFraming::Empty,
            keeps_content_length: true,
            announce: None,
        };
    }
    if let Some(len) = single_content_length(headers) {
        return Framed {
            framing: if len == 0 {
                RequestFraming::Empty
            } else {
                RequestFraming::Length(len)
            },
            keeps_content_length: true,
            announce: None,
        };
    }
    let (framing, announce) = match hint.exact() {
        // A body-carrying method says its body is empty, as hyper does.
        Some(0) if body_carrying => (RequestFraming::Empty, Some(RequestFraming::Length(0))),
        Some(0) => (RequestFraming::Empty, None),
        Some(n) => (RequestFraming::Length(n), Some(RequestFraming::Length(n))),
        None => (RequestFraming::Chunked, Some(RequestFraming::Chunked)),
    };
    Framed {
        framing,
        keeps_content_length: false,
        announce,
    }
}

/// The one length all `Content-Length` values agree on, if they parse.
fn single_content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get_all(CONTENT_LENGTH)
        .iter()
        .fold(None, |seen, value| {
            fold_content_length(seen, value.as_bytes())
        })?
        .ok()
}

/// `seen` (the length of the `Content-Length` values so far: none yet, the one they agree
/// on, or `Err` when they disagree or do not parse) with one more value, a comma-separated
/// list of lengths.
fn fold_content_length(mut seen: Option<Result<u64, ()>>, value: &[u8]) -> Option<Result<u64, ()>> {
    for part in value.split(|&b| b == b',') {
        let n = parse_decimal(part.trim_ascii()).ok_or(());
        seen = Some(match (seen, n) {
            (None, n) => n,
            (Some(Ok(before)), Ok(n)) if before == n => Ok(n),
            _ => Err(()),
        });
    }
    seen
}

/// A decimal number of at most 19 digits (so it cannot overflow), nothing else: the form a
/// `Content-Length` value takes.
pub fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })
}

/// A request head, written from the routed request by reference: nothing is copied into a
/// header map of its own per attempt.
pub struct RequestHead<'a> {
    pub method: &'a Method,
    /// Written as `Host`; any `Host` among `headers` is left out.
    pub authority: &'a HeaderValue,
    pub path_and_query: &'a str,
    pub headers: &'a HeaderMap,
    /// Headers of this attempt, written after the request's own and replacing any of the same
    /// name there.
    pub added: &'a [Added<'a>],
    /// More headers written after those, replacing the request's own as they say (the trace
    /// context).
    pub fields: Option<&'a dyn HeadFields>,
}

/// Headers another part of the proxy writes into a request head itself.
pub trait HeadFields: Sync {
    /// Whether the request's own header of this name is left out.
    fn replaces(&self, name: &str) -> bool;
    /// Appends the fields, each with its CRLF.
    fn encode(&self, out: &mut Vec<u8>);
}

/// A header one attempt adds.
#[derive(Debug, Clone, Copy)]
pub struct Added<'a> {
    pub name: &'a HeaderName,
    pub value: AddedValue<'a>,
}

#[derive(Debug, Clone, Copy)]
pub enum AddedValue<'a> {
    /// Written in decimal, without a header value of its own.
    Number(u64),
    Value(&'a HeaderValue),
}

/// Appends `METHOD path HTTP/1.1`, the headers and the blank line to `out`.
pub fn encode_head(out: &mut Vec<u8>, head: &RequestHead<'_>, framed: &Framed) {
    let path = if head.path_and_query.is_empty() {
        "/"
    } else {
        head.path_and_query
    };
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(head.authority.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in head.headers {
        let replaced = *name == HOST
            || *name == TRANSFER_ENCODING
            || (*name == CONTENT_LENGTH && !framed.keeps_content_length)
            || head.added.iter().any(|a| a.name == name)
            || head.fields.is_some_and(|f| f.replaces(name.as_str()));
        if !replaced {
            push_field(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    for added in head.added {
        match added.value {
            AddedValue::Number(n) => {
                push_field(
                    out,
                    added.name.as_str().as_bytes(),
                    itoa::Buffer::new().format(n).as_bytes(),
                );
            }
            AddedValue::Value(v) => push_field(out, added.name.as_str().as_bytes(), v.as_bytes()),
        }
    }
    if let Some(fields) = head.fields {
        fields.encode(out);
    }
    match framed.announce {
        Some(RequestFraming::Length(n)) => {
            push_field(
                out,
                b"content-length",
                itoa::Buffer::new().format(n).as_bytes(),
            );
        }
        Some(RequestFraming::Chunked) => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Some(RequestFraming::Empty) | None => {}
    }
    out.extend_from_slice(b"\r\n");
}

/// One header field line.
pub fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A chunk's size line, as `encode_head` writes headers: into the caller's buffer.
pub fn encode_chunk_size(out: &mut Vec<u8>, len: usize) {
    let mut digits = [0u8; 16];
    let mut n = len;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk, with trailers when there are any.
pub fn encode_last_chunk(out: &mut Vec<u8>, trailers: Option<&HeaderMap>) {
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers.into_iter().flatten() {
        push_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// A response head taken off the front of the read buffer.
#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    /// What the headers say about framing, noted as they were parsed.
    fields: FramingFields,
}

/// The framing headers of a response, read in the parsing pass instead of looked up after.
#[derive(Debug, Default, Clone, Copy)]
struct FramingFields {
    /// `Content-Length`: the length all its values agree on, or `Err` when they do not or do
    /// not parse.
    content_length: Option<Result<u64, ()>>,
    /// `Transfer-Encoding`: whether its last coding is chunked.
    chunked: Option<bool>,
    close: bool,
    keep_alive: bool,
}

impl FramingFields {
    fn note(&mut self, name: &HeaderName, value: &[u8]) {
        if *name == CONTENT_LENGTH {
            self.content_length = fold_content_length(self.content_length, value);
        } else if *name == TRANSFER_ENCODING {
            let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
            self.chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if *name == CONNECTION {
            for token in value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                self.close |= token.eq_ignore_ascii_case(b"close");
                self.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
}

/// Parses a response head at the front of `buf` and removes it; `Ok(None)` when the head is
/// not complete yet. Header values share the head's bytes rather than being copied.
pub fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, ProtocolError> {
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .allow_obsolete_multiline_headers_in_responses(false)
        .parse_response_with_uninit_headers(&mut resp, buf, &mut slots);
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(ProtocolError::HeadTooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(ProtocolError::HeadTooLarge),
        Err(e) => return Err(ProtocolError::Head(e)),
    };
    if len > MAX_HEAD_BYTES {
        return Err(ProtocolError::HeadTooLarge);
    }
    let status = StatusCode::from_u16(resp.code.unwrap_or(0))
        .map_err(|_| ProtocolError::Head(httparse::Error::Status))?;
    let version = if resp.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    // Offsets into the buffer, so the values can be slices of it once it is frozen.
    let base = buf.as_ptr() as usize;
    let mut spans = Vec::with_capacity(resp.headers.len());
    let mut fields = FramingFields::default();
    for h in resp.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| ProtocolError::Head(httparse::Error::HeaderName))?;
        fields.note(&name, h.value);
        let start = h.value.as_ptr() as usize - base;
        spans.push((name, start, start + h.value.len()));
    }
    let bytes: Bytes = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(spans.len());
    for (name, start, end) in spans {
        let value = HeaderValue::from_maybe_shared(bytes.slice(start..end))
            .map_err(|_| ProtocolError::Head(httparse::Error::HeaderValue))?;
        headers.append(name, value);
    }
    Ok(Some(Head {
        status,
        version,
        headers,
        fields,
    }))
}

/// How a response's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    Empty,
    Length(u64),
    Chunked,
    /// Read until the server closes the connection.
    UntilClose,
}

/// What a response head means for its body and its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// 100 Continue and the like: the final response is still to come.
    Interim,
    Final {
        framing: ResponseFraming,
        /// Whether the connection may carry another request after this response.
        keep_alive: bool,
    },
}

/// The framing of a response to a request sent with `method` (RFC 9112 section 6.3). A
/// response that frames itself two ways, or with conflicting lengths, is refused: it is how
/// responses are smuggled.
pub fn response_reading(method: &Method, head: &Head) -> Result<Reading, ProtocolError> {
    let status = head.status.as_u16();
    if status == 101 {
        return Err(ProtocolError::UnexpectedUpgrade);
    }
    if (100..200).contains(&status) {
        return Ok(Reading::Interim);
    }
    let f = head.fields;
    // HTTP/1.1 keeps the connection unless `Connection: close`; HTTP/1.0 only with
    // `Connection: keep-alive`.
    let keep_alive = match head.version {
        Version::HTTP_10 => f.keep_alive && !f.close,
        _ => !f.close,
    };
    let chunked = f.chunked;
    let has_length = f.content_length.is_some();
    if chunked.is_some() && has_length {
        return Err(ProtocolError::LengthAndChunked);
    }
    if *method == Method::HEAD || status == 204 || status == 304 {
        return Ok(Reading::Final {
            framing: ResponseFraming::Empty,
            keep_alive,
        });
    }
    let framing = match chunked {
        Some(true) => ResponseFraming::Chunked,
        Some(false) => ResponseFraming::UntilClose,
        None => match f.content_length {
            Some(Ok(0)) => ResponseFraming::Empty,
            Some(Ok(n)) => ResponseFraming::Length(n),
            Some(Err(())) => return Err(ProtocolError::BadContentLength),
            None => ResponseFraming::UntilClose,
        },
    };
    Ok(Reading::Final {
        framing,
        keep_alive: keep_alive && framing != ResponseFraming::UntilClose,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Option<Head>, ProtocolError> {
        parse_head(&mut BytesMut::from(text.as_bytes()))
    }

    fn reading(method: Method, text: &str) -> Result<Reading, ProtocolError> {
        response_reading(&method, &head(text)?.expect("complete head"))
    }

    fn keep(framing: ResponseFraming) -> Result<Reading, ProtocolError> {
        Ok(Reading::Final {
            framing,
            keep_alive: true,
        })
    }

    #[test]
    fn a_head_is_parsed_once_complete_and_leaves_the_body() {
        let mut buf =
            BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello"[..]);
        let h = parse_head(&mut buf).unwrap().unwrap();
        assert_eq!(h.status, StatusCode::OK);
        assert_eq!(h.headers["x-a"], "b");
        assert_eq!(&buf[..], b"hello");
        assert!(head("HTTP/1.1 200 OK\r\nContent-Le").unwrap().is_none());
    }

    #[test]
    fn malformed_and_oversized_heads_are_refused() {
        assert!(matches!(
            head("HTTP/1.1 2OO OK\r\n\r\n"),
            Err(ProtocolError::Head(_))
        ));
        assert!(matches!(
            head("HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n"),
            Err(ProtocolError::Head(_))
        ));
        let big = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD_BYTES + 1));
        assert_eq!(head(&big).unwrap_err(), ProtocolError::HeadTooLarge);
        let many: String = (0..=MAX_HEADERS).map(|i| format!("h{i}: v\r\n")).collect();
        assert_eq!(
            head(&format!("HTTP/1.1 200 OK\r\n{many}\r\n")).unwrap_err(),
            ProtocolError::HeadTooLarge
        );
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        use ResponseFraming::*;
        assert_eq!(
            reading(Method::GET, "HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n"),
            keep(Length(7))
        );
        assert_eq!(
            reading(
                Method::GET,
                "HTTP/1.1 200 OK\r\ncontent-length: 7, 7\r\n\r\n"
            ),
            keep(Length(7))
        );
        assert_eq!(
            reading(
                Method::GET,
                "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n"
            ),
            keep(Chunked)
        );
        assert_eq!(
            reading(Method::HEAD, "HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n"),
            keep(Empty)
        );
        assert_eq!(
            reading(Method::GET, "HTTP/1.1 204 No Content\r\n\r\n"),
            keep(Empty)
        );
        assert_eq!(
            reading(
                Method::GET,
                "HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n"
            ),
            keep(Empty)
        );
        assert_eq!(
            reading(Method::GET, "HTTP/1.1 100 Continue\r\n\r\n"),
            Ok(Reading::Interim)
        );
        let until_close = Ok(Reading::Final {
            framing: UntilClose,
            keep_alive: false,
        });
        assert_eq!(reading(Method::GET, "HTTP/1.1 200 OK\r\n\r\n"), until_close);
        assert_eq!(
            reading(
                Method::GET,
                "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n"
            ),
            until_close
        );
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        assert_eq!(
            reading(
                Method::GET,
                "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n"
            ),
            Err(ProtocolError::LengthAndChunked)
        );
        assert_eq!(
            reading(
                Method::GET,
                "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n"
            ),
            Err(ProtocolError::BadContentLength)
        );
        assert_eq!(
            reading(Method::GET, "HTTP/1.1 200 OK\r\ncontent-length: +3\r\n\r\n"),
            Err(ProtocolError::BadContentLength)
        );
        assert_eq!(
            reading(Method::GET, "HTTP/1.1 101 Switching Protocols\r\n\r\n"),
            Err(ProtocolError::UnexpectedUpgrade)
        );
    }

    #[test]
    fn keep_alive_follows_version_and_connection() {
        let ka = |t: &str| match reading(Method::GET, t) {
            Ok(Reading::Final { keep_alive, .. }) => keep_alive,
            other => panic!("{other:?}"),
        };
        assert!(ka("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"));
        assert!(!ka(
            "HTTP/1.1 200 OK\r\nconnection: Close\r\ncontent-length: 0\r\n\r\n"
        ));
        assert!(!ka("HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n"));
        assert!(ka(
            "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n"
        ));
    }

    #[test]
    fn request_framing_keeps_a_length_and_announces_the_rest() {
        let framing = |method: Method, headers: &[(&str, &str)], hint: SizeHint| {
            let mut map = HeaderMap::new();
            for (n, v) in headers {
                map.append(
                    HeaderName::from_bytes(n.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            let f = request_framing(&method, &map, &hint);
            (f.framing, f.keeps_content_length, f.announce)
        };
        use RequestFraming::*;
        let unknown = SizeHint::new();
        assert_eq!(
            framing(Method::POST, &[("content-length", "5")], unknown),
            (Length(5), true, None)
        );
        assert_eq!(
            framing(
                Method::POST,
                &[("content-length", "x")],
                SizeHint::with_exact(3)
            ),
            (Length(3), false, Some(Length(3)))
        );
        assert_eq!(
            framing(Method::POST, &[], SizeHint::with_exact(3)),
            (Length(3), false, Some(Length(3)))
        );
        assert_eq!(
            framing(Method::POST, &[], unknown),
            (Chunked, false, Some(Chunked))
        );
        assert_eq!(
            framing(Method::GET, &[], SizeHint::with_exact(0)),
            (Empty, true, None)
        );
        assert_eq!(
            framing(Method::PUT, &[], SizeHint::with_exact(0)),
            (Empty, false, Some(Length(0)))
        );
    }

    #[test]
    fn a_head_writes_host_and_added_headers_in_place_of_the_requests_own() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("old"));
        headers.insert("x-a", HeaderValue::from_static("1"));
        headers.insert("x-envoy-attempt-count", HeaderValue::from_static("7"));
        headers.insert("content-length", HeaderValue::from_static("bad"));
        headers.insert("transfer-encoding", HeaderValue::from_static("gzip"));
        let attempt = HeaderName::from_static("x-envoy-attempt-count");
        let meta = HeaderValue::from_static("m");
        let meta_name = HeaderName::from_static("x-meta");
        let added = [
            Added {
                name: &attempt,
                value: AddedValue::Number(2),
            },
            Added {
                name: &meta_name,
                value: AddedValue::Value(&meta),
            },
        ];
        let head = RequestHead {
            method: &Method::POST,
            authority: &HeaderValue::from_static("svc:80"),
            path_and_query: "/a?b",
            headers: &headers,
            added: &added,
            fields: None,
        };
        let framed = request_framing(head.method, head.headers, &SizeHint::new());
        let mut out = Vec::new();
        encode_head(&mut out, &head, &framed);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /a?b HTTP/1.1\r\nhost: svc:80\r\nx-a: 1\r\nx-envoy-attempt-count: 2\r\nx-meta: m\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }

    #[test]
    fn chunks_encode_as_http_1_1() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-t", HeaderValue::from_static("v"));
        let mut out = Vec::new();
        encode_chunk_size(&mut out, 0x1a2);
        encode_last_chunk(&mut out, Some(&trailers));
        assert_eq!(out, b"1a2\r\n0\r\nx-t: v\r\n\r\n");
    }
}
