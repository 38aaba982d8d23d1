//! Decoding a chunked response body from the read buffer, strictly: bare LFs, oversized
//! sizes and endless extensions or trailers are errors, not guesses (guesses are how bodies
//! get smuggled).

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};

use super::codec::{MAX_HEAD_BYTES, MAX_HEADERS, ProtocolError};

/// A chunk-size line (size and extensions) longer than this is refused.
const MAX_SIZE_LINE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    Trailers,
    Done,
}

#[derive(Debug)]
pub enum Decoded {
    Data(Bytes),
    Trailers(HeaderMap),
    /// The body ended (after its trailers, if any were returned).
    Done,
    /// More bytes must be read first.
    NeedMore,
}

#[derive(Debug)]
pub struct ChunkedDecoder {
    state: State,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self { state: State::Size }
    }
}

impl ChunkedDecoder {
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The next piece of the body from the front of `buf`, consuming what it used.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ProtocolError> {
        loop {
            match self.state {
                State::Size => {
                    let Some(line) = take_line(buf, MAX_SIZE_LINE)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let size = parse_size(&line)?;
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = (buf.len() as u64).min(left) as usize;
                    let data = buf.split_to(n).freeze();
                    self.state = match left - n as u64 {
                        0 => State::DataEnd,
                        rest => State::Data(rest),
                    };
                    return Ok(Decoded::Data(data));
                }
                State::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(ProtocolError::Chunked("chunk data not followed by CRLF"));
                    }
                    let _ = buf.split_to(2);
                    self.state = State::Size;
                }
                State::Trailers => {
                    if buf.starts_with(b"\r\n") {
                        let _ = buf.split_to(2);
                        self.state = State::Done;
                        return Ok(Decoded::Done);
                    }
                    let Some(end) = find(buf, b"\r\n\r\n") else {
                        if buf.len() > MAX_HEAD_BYTES {
                            return Err(ProtocolError::Chunked("trailers too large"));
                        }
                        return Ok(Decoded::NeedMore);
                    };
                    let block = buf.split_to(end + 4);
                    self.state = State::Done;
                    return parse_trailers(&block).map(Decoded::Trailers);
                }
                State::Done => return Ok(Decoded::Done),
            }
        }
    }
}

/// A CRLF-terminated line off the front of `buf`, without its CRLF.
fn take_line(buf: &mut BytesMut, max: usize) -> Result<Option<BytesMut>, ProtocolError> {
    match buf.iter().take(max + 2).position(|&b| b == b'\n') {
        Some(i) if i > 0 && buf[i - 1] == b'\r' => {
            let mut line = buf.split_to(i + 1);
            line.truncate(i - 1);
            Ok(Some(line))
        }
        Some(_) => Err(ProtocolError::Chunked("bare LF in chunk size line")),
        None if buf.len() > max => Err(ProtocolError::Chunked("chunk size line too long")),
        None => Ok(None),
    }
}

/// `1*HEXDIG *( BWS ";" chunk-ext )`: the size; extensions are ignored.
fn parse_size(line: &[u8]) -> Result<u64, ProtocolError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(ProtocolError::Chunked("chunk size is not hexadecimal"));
    }
    if digits > 15 {
        return Err(ProtocolError::Chunked("chunk size too large"));
    }
    let rest = &line[digits..];
    let after_ws = rest
        .iter()
        .skip_while(|&&b| b == b' ' || b == b'\t')
        .copied();
    match after_ws.clone().next() {
        None if rest.is_empty() => {}
        Some(b';') => {
            if rest.iter().any(|&b| b < 0x20 && b != b'\t') {
                return Err(ProtocolError::Chunked(
                    "control character in chunk extension",
                ));
            }
        }
        _ => return Err(ProtocolError::Chunked("junk after chunk size")),
    }
    let text = std::str::from_utf8(&line[..digits]).expect("hex digits are ASCII");
    u64::from_str_radix(text, 16).map_err(|_| ProtocolError::Chunked("chunk size too large"))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_trailers(block: &[u8]) -> Result<HeaderMap, ProtocolError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let parsed = httparse::parse_headers(block, &mut slots)
        .map_err(|_| ProtocolError::Chunked("malformed trailers"))?;
    let httparse::Status::Complete((_, fields)) = parsed else {
        return Err(ProtocolError::Chunked("malformed trailers"));
    };
    let mut trailers = HeaderMap::with_capacity(fields.len());
    for f in fields {
        let name = HeaderName::from_bytes(f.name.as_bytes())
            .map_err(|_| ProtocolError::Chunked("malformed trailer name"))?;
        let value = HeaderValue::from_bytes(f.value)
            .map_err(|_| ProtocolError::Chunked("malformed trailer value"))?;
        trailers.append(name, value);
    }
    Ok(trailers)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `step` bytes: the data, the trailers, and whether it
    /// ended.
    fn decode_in_steps(
        input: &[u8],
        step: usize,
    ) -> Result<(Vec<u8>, Option<HeaderMap>, bool), ProtocolError> {
        let mut d = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        let mut trailers = None;
        let mut fed = 0;
        loop {
            match d.decode(&mut buf)? {
                Decoded::Data(b) => data.extend_from_slice(&b),
                Decoded::Trailers(t) => trailers = Some(t),
                Decoded::Done => return Ok((data, trailers, true)),
                Decoded::NeedMore if fed >= input.len() => return Ok((data, trailers, false)),
                Decoded::NeedMore => {
                    let end = (fed + step).min(input.len());
                    buf.extend_from_slice(&input[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn chunks_decode_whatever_the_read_boundaries() {
        let input = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n";
        for step in [1, 2, 3, 7, input.len()] {
            let (data, trailers, done) = decode_in_steps(input, step).unwrap();
            assert_eq!(data, b"hello world", "step {step}");
            assert!(trailers.is_none() && done);
        }
    }

    #[test]
    fn trailers_are_returned() {
        let input = b"3\r\nabc\r\n0\r\ngrpc-status: 0\r\nx-t: v\r\n\r\n";
        for step in [1, 5, input.len()] {
            let (data, trailers, done) = decode_in_steps(input, step).unwrap();
            let t = trailers.expect("trailers");
            assert_eq!((data.as_slice(), done), (&b"abc"[..], true));
            assert_eq!(
                (t["grpc-status"].as_bytes(), t["x-t"].as_bytes()),
                (&b"0"[..], &b"v"[..])
            );
        }
    }

    #[test]
    fn a_body_cut_short_is_not_done() {
        let (data, _, done) = decode_in_steps(b"5\r\nhel", 2).unwrap();
        assert_eq!((data.as_slice(), done), (&b"hel"[..], false));
    }

    #[test]
    fn malformed_chunking_is_an_error() {
        for bad in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"x\r\n",
            b"5 junk\r\nhello\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"10000000000000000\r\n",
            b"-5\r\n",
        ] {
            assert!(
                decode_in_steps(bad, 3).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long_ext = format!("5;{}\r\n", "e".repeat(MAX_SIZE_LINE + 1));
        assert!(decode_in_steps(long_ext.as_bytes(), 64).is_err());
    }
}
