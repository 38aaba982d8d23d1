//! How a response to a request of the connection's own codec is written, apart from I/O: its
//! head, and how its body is framed (RFC 9112 section 6), with hyper's server's choices, so a
//! client sees the same bytes whichever of the two served it.

use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRAILER, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, StatusCode};
use http_body::SizeHint;

use super::date;
use crate::upstream::h1::codec::{parse_decimal, push_field};

/// What the response's body is known to be before it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// Already ended: nothing to write.
    Empty,
    Known(u64),
    Unknown,
}

impl BodyLength {
    /// As hyper reads a body before writing its head.
    pub fn of(is_end_stream: bool, hint: &SizeHint) -> Self {
        match (is_end_stream, hint.exact()) {
            (true, _) => Self::Empty,
            (false, Some(n)) => Self::Known(n),
            (false, None) => Self::Unknown,
        }
    }
}

/// How the body goes on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes (0: none, whatever the body holds, as for HEAD and 304).
    Length(u64),
    /// Chunked, ending with the trailer fields the response announced in `Trailer`.
    Chunked { trailers: Vec<HeaderName> },
}

/// A written head: how its body follows, and whether the connection closes after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub framing: Framing,
    pub close: bool,
}

/// Why a response could not be written (the connection is closed without it, as hyper does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("response has conflicting or invalid Content-Length")]
    BadContentLength,
    #[error("response has both Content-Length and Transfer-Encoding")]
    LengthAndChunked,
}

/// What the request being answered says about its response.
#[derive(Debug, Clone, Copy)]
pub struct Answering {
    /// A HEAD request: the response's length is said, its body not sent.
    pub head: bool,
    /// The connection stays open after this response (false while the proxy drains).
    pub keep_alive: bool,
}

/// Writes the status line and headers of `status`/`headers` into `out`; on an error nothing
/// of it is left there.
pub fn encode_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    body: BodyLength,
    answering: Answering,
) -> Result<Written, HeadError> {
    if status.is_informational() {
        // A final response cannot be 1xx (the proxy answers upgrades through hyper); hyper
        // sends a 500 instead and closes.
        out.extend_from_slice(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n");
        finish(out, false);
        return Ok(Written {
            framing: Framing::Length(0),
            close: true,
        });
    }
    let start = out.len();
    let written = encode_fields(out, status, headers, body, answering);
    if written.is_err() {
        out.truncate(start);
    }
    written
}

fn encode_fields(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    body: BodyLength,
    answering: Answering,
) -> Result<Written, HeadError> {
    out.reserve(64 + headers.len() * 32);
    status_line(out, status);
    let no_body_status = matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED);
    let can_have_body = !answering.head && !no_body_status;

    let mut framing = None;
    let mut close = !answering.keep_alive;
    let mut wrote_close = false;
    let mut wrote_date = false;
    let mut trailers = Vec::new();
    let mut chunked_last = true;
    let mut encodings = 0;
    for (name, value) in headers {
        let bytes = value.as_bytes();
        if *name == CONTENT_LENGTH {
            if matches!(framing, Some(Framing::Chunked { .. })) {
                return Err(HeadError::LengthAndChunked);
            }
            let len = match body {
                // The body's own length is trusted over the header's value, as hyper does.
                BodyLength::Known(n) => n,
                BodyLength::Unknown => parse_decimal(bytes).ok_or(HeadError::BadContentLength)?,
                // No body: the header is kept only where it describes one not sent.
                BodyLength::Empty if !answering.head => continue,
                BodyLength::Empty => 0,
            };
            match framing {
                Some(Framing::Length(seen)) if seen == len => continue,
                Some(_) => return Err(HeadError::BadContentLength),
                None => framing = Some(Framing::Length(len)),
            }
        } else if *name == TRANSFER_ENCODING {
            if matches!(framing, Some(Framing::Length(_))) {
                return Err(HeadError::LengthAndChunked);
            }
            if !can_have_body {
                continue;
            }
            let last = bytes.rsplit(|&b| b == b',').next().unwrap_or_default();
            chunked_last = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
            encodings += 1;
            framing = Some(Framing::Chunked {
                trailers: Vec::new(),
            });
        } else if *name == CONNECTION {
            let closes = bytes
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
            close |= closes;
            wrote_close |= closes;
        } else if *name == DATE {
            wrote_date = true;
        } else if *name == TRAILER {
            if !can_have_body {
                continue;
            }
            trailers.extend(
                bytes
                    .split(|&b| b == b',')
                    .filter_map(|n| HeaderName::from_bytes(n.trim_ascii()).ok()),
            );
        }
        push_field(out, name.as_str().as_bytes(), bytes);
    }
    if encodings > 0 && !chunked_last {
        // The last coding of a response this codec frames is chunked.
        push_field(out, b"transfer-encoding", b"chunked");
    }
    let framing = match framing {
        Some(Framing::Chunked { .. }) => Framing::Chunked { trailers },
        Some(length) => length,
        None => match body {
            BodyLength::Unknown if can_have_body => {
                push_field(out, b"transfer-encoding", b"chunked");
                Framing::Chunked { trailers }
            }
            BodyLength::Unknown | BodyLength::Empty | BodyLength::Known(0) => {
                if !no_body_status && !answering.head {
                    push_field(out, b"content-length", b"0");
                }
                Framing::Length(0)
            }
            BodyLength::Known(n) => {
                if !no_body_status {
                    push_field(
                        out,
                        b"content-length",
                        itoa::Buffer::new().format(n).as_bytes(),
                    );
                }
                Framing::Length(n)
            }
        },
    };
    let framing = if can_have_body {
        framing
    } else {
        Framing::Length(0)
    };
    if close && !wrote_close {
        push_field(out, b"connection", b"close");
    }
    finish(out, wrote_date);
    Ok(Written { framing, close })
}

fn status_line(out: &mut Vec<u8>, status: StatusCode) {
    if status == StatusCode::OK {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        return;
    }
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    // A reason is always written: some parsers expect one.
    let reason = status.canonical_reason().unwrap_or("<none>");
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The `Date` field unless the response had one, and the end of the head.
fn finish(out: &mut Vec<u8>, wrote_date: bool) {
    if !wrote_date {
        out.extend_from_slice(b"date: ");
        date::extend(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    const KEEP: Answering = Answering {
        head: false,
        keep_alive: true,
    };

    fn headers(fields: &[(&'static str, &'static str)]) -> HeaderMap {
        fields
            .iter()
            .map(|(n, v)| (HeaderName::from_static(n), HeaderValue::from_static(v)))
            .collect()
    }

    /// The head without its date line (which changes every second).
    fn encode(
        status: u16,
        fields: &[(&'static str, &'static str)],
        body: BodyLength,
        answering: Answering,
    ) -> (String, Result<Written, HeadError>) {
        let mut out = Vec::new();
        let status = StatusCode::from_u16(status).unwrap();
        let written = encode_head(&mut out, status, &headers(fields), body, answering);
        let text = String::from_utf8(out).unwrap();
        let without_date = text
            .split_inclusive("\r\n")
            .filter(|line| !line.starts_with("date: "))
            .collect();
        (without_date, written)
    }

    fn length(n: u64) -> Result<Written, HeadError> {
        Ok(Written {
            framing: Framing::Length(n),
            close: false,
        })
    }

    fn chunked(trailers: &[&'static str]) -> Result<Written, HeadError> {
        Ok(Written {
            framing: Framing::Chunked {
                trailers: trailers
                    .iter()
                    .map(|t| HeaderName::from_static(t))
                    .collect(),
            },
            close: false,
        })
    }

    #[test]
    fn a_known_length_is_said_and_a_date_added() {
        let mut out = Vec::new();
        let written = encode_head(
            &mut out,
            StatusCode::OK,
            &headers(&[("server", "nginx")]),
            BodyLength::Known(1024),
            KEEP,
        );
        assert_eq!(written, length(1024));
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 200 OK\r\nserver: nginx\r\ncontent-length: 1024\r\ndate: "),
            "{text}"
        );
        assert!(text.ends_with(" GMT\r\n\r\n"), "{text}");
    }

    #[test]
    fn the_response_s_own_date_and_length_are_kept() {
        let fields = [
            ("content-length", "5"),
            ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ];
        let mut out = Vec::new();
        let written = encode_head(
            &mut out,
            StatusCode::NOT_FOUND,
            &headers(&fields),
            BodyLength::Unknown,
            KEEP,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 404 Not Found\r\ncontent-length: 5\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n"
        );
        assert_eq!(written, length(5));
    }

    #[test]
    fn an_unknown_length_is_chunked_with_the_announced_trailers() {
        let (text, written) = encode(
            200,
            &[("trailer", "grpc-status, x-sum")],
            BodyLength::Unknown,
            KEEP,
        );
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\ntrailer: grpc-status, x-sum\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        assert_eq!(written, chunked(&["grpc-status", "x-sum"]));
    }

    #[test]
    fn an_ended_body_says_zero_except_where_no_body_is_meant() {
        let (text, written) = encode(503, &[("content-length", "9")], BodyLength::Empty, KEEP);
        assert_eq!(
            text,
            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"
        );
        assert_eq!(written, length(0));
        let (text, _) = encode(204, &[], BodyLength::Empty, KEEP);
        assert_eq!(text, "HTTP/1.1 204 No Content\r\n\r\n");
        let (text, written) = encode(304, &[("etag", "\"x\"")], BodyLength::Known(7), KEEP);
        assert_eq!(text, "HTTP/1.1 304 Not Modified\r\netag: \"x\"\r\n\r\n");
        assert_eq!(written, length(0));
    }

    #[test]
    fn a_head_response_says_the_length_and_sends_nothing() {
        let head = Answering {
            head: true,
            keep_alive: true,
        };
        let (text, written) = encode(200, &[("content-length", "1024")], BodyLength::Empty, head);
        assert_eq!(text, "HTTP/1.1 200 OK\r\ncontent-length: 1024\r\n\r\n");
        assert_eq!(written, length(0));
        let (text, written) = encode(200, &[], BodyLength::Unknown, head);
        assert_eq!(text, "HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(written, length(0));
    }

    #[test]
    fn closing_is_said_when_draining_and_followed_when_asked() {
        let draining = Answering {
            head: false,
            keep_alive: false,
        };
        let (text, written) = encode(200, &[], BodyLength::Known(2), draining);
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n"
        );
        assert!(written.unwrap().close);
        let (text, written) = encode(200, &[("connection", "close")], BodyLength::Known(2), KEEP);
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\n"
        );
        assert!(written.unwrap().close);
    }

    #[test]
    fn conflicting_framing_is_refused_and_nothing_left_written() {
        for fields in [
            &[("content-length", "1"), ("content-length", "2")][..],
            &[("content-length", "x")][..],
            &[("content-length", "1"), ("transfer-encoding", "chunked")][..],
        ] {
            let mut out = b"before".to_vec();
            let written = encode_head(
                &mut out,
                StatusCode::OK,
                &headers(fields),
                BodyLength::Unknown,
                KEEP,
            );
            assert!(written.is_err(), "{fields:?}");
            assert_eq!(out, b"before", "{fields:?}");
        }
    }

    #[test]
    fn an_interim_status_becomes_a_500_that_closes() {
        let (text, written) = encode(101, &[("upgrade", "x")], BodyLength::Empty, KEEP);
        assert_eq!(
            text,
            "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n"
        );
        assert!(written.unwrap().close);
    }
}
