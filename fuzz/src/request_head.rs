//! The HTTP/1.1 request heads the proxy's own codec takes (the rest go to hyper). Input: the
//! bytes a client sent on a connection.

use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, TE, TRANSFER_ENCODING, UPGRADE};
use http::{Method, Version};
use mesh_proxy::listener::http1_head::{Head, parse};

pub fn run(data: &[u8]) {
    let mut buf = bytes::BytesMut::from(data);
    match parse(&mut buf) {
        // Hyper reads these from the very bytes the client sent.
        Head::Handoff | Head::Partial => assert_eq!(&buf[..], data, "bytes lost"),
        Head::Own(req, body_len) => {
            // Taken off the front, the rest untouched for the next request.
            assert!(data.ends_with(&buf), "the rest of the bytes changed");
            assert!(buf.len() < data.len(), "nothing was taken");
            let head = &data[..data.len() - buf.len()];
            // A head ends with an empty line (httparse takes LF as well as CRLF line ends).
            assert!(
                head.ends_with(b"\n\r\n") || head.ends_with(b"\n\n"),
                "{head:?}"
            );
            // Only what the codec can serve alone: a body of a declared length (left on the
            // buffer), no upgrade, kept alive.
            assert_eq!(req.version(), Version::HTTP_11);
            assert_ne!(req.method(), Method::CONNECT);
            assert!(req.uri().path().starts_with('/'));
            assert!(req.uri().authority().is_none());
            let h = req.headers();
            for name in [TRANSFER_ENCODING, EXPECT, UPGRADE, TE] {
                assert!(!h.contains_key(&name), "{name} kept");
            }
            for v in h.get_all(CONTENT_LENGTH) {
                assert_eq!(v.to_str().ok().and_then(|v| v.parse().ok()), Some(body_len));
            }
            if body_len > 0 {
                assert!(h.contains_key(CONTENT_LENGTH));
            }
            for v in h.get_all(CONNECTION) {
                for token in v.as_bytes().split(|&b| b == b',') {
                    let token = token.trim_ascii().to_ascii_lowercase();
                    assert!(token != b"close" && token != b"upgrade", "{v:?} kept");
                }
            }
            // The same bytes give the same answer (nothing depends on the buffer's state).
            let mut again = bytes::BytesMut::from(head);
            assert!(matches!(parse(&mut again), Head::Own(_, n) if n == body_len));
            assert!(again.is_empty());
        }
    }
}
