//! The first-bytes judgements of a connection: TLS or plaintext (PERMISSIVE mTLS), HTTP or
//! not (transparent listeners). Input: the connection's first bytes.

use mesh_proxy::listener::http_sniff::{Judgement, judge};
use mesh_proxy::tcp_route::{Hello, client_hello_sni};
use mesh_proxy::tls::looks_like_tls;

/// What `sniff_tls` peeks at most.
const TLS_PREFIX: usize = 6;

pub fn run(data: &[u8]) {
    let head = &data[..data.len().min(TLS_PREFIX)];
    let tls = looks_like_tls(head);
    // Judged on fewer bytes, a "not TLS" is final: more bytes never turn it into TLS.
    for cut in 1..head.len() {
        if !looks_like_tls(&head[..cut]) {
            assert!(!tls, "{cut} bytes are not TLS, {} are", head.len());
        }
    }

    let http = judge(data);
    // The HTTP judgement on a prefix, once made, is the one on the whole input.
    for cut in 0..data.len().min(64) {
        let partial = judge(&data[..cut]);
        assert!(
            partial == Judgement::NeedMore || partial == http,
            "{cut} bytes: {partial:?}, all: {http:?}"
        );
    }
    if tls {
        assert_eq!(http, Judgement::NotHttp, "a TLS record is not HTTP");
    }
    // A server name is only read from what looks like TLS.
    if matches!(client_hello_sni(data), Hello::Sni(_) | Hello::NoSni) {
        assert!(tls, "a ClientHello that the TLS sniff calls plaintext");
    }
}
