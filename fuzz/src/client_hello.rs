//! The server name of a TLS ClientHello, read from a connection's first bytes for layer 4
//! routes, and the `sniHosts` it is matched against. Input: the connection's first bytes.

use mesh_proxy::tcp_route::{Hello, SniHost, client_hello_sni};

/// Prefixes checked one by one up to this length; longer inputs are cut at a few points.
const EVERY_PREFIX_UP_TO: usize = 2048;

pub fn run(data: &[u8]) {
    let full = client_hello_sni(data);
    // The proxy peeks at a growing prefix and acts on the first answer that is not
    // `Incomplete`: that answer must be the one the whole input gives.
    for cut in cuts(data.len()) {
        let partial = client_hello_sni(&data[..cut]);
        assert!(
            partial == Hello::Incomplete || partial == full,
            "{cut} bytes say {partial:?}, all {} say {full:?}",
            data.len()
        );
    }
    if let Hello::Sni(name) = &full {
        assert_eq!(*name, name.to_ascii_lowercase(), "names are lowercased");
        // A name that is a valid sniHost matches itself exactly, and the wildcard of its
        // parent domain when its first label is not empty.
        if let Ok(host) = SniHost::parse(name) {
            assert!(host.matches(name), "{host:?} does not match {name}");
            if let Some((first, parent)) = name.split_once('.')
                && !first.is_empty()
                && let Ok(wild) = SniHost::parse(&format!("*.{parent}"))
            {
                assert!(wild.matches(name), "{wild:?} does not match {name}");
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        sni_host(text);
    }
}

fn cuts(len: usize) -> Vec<usize> {
    if len <= EVERY_PREFIX_UP_TO {
        (0..len).collect()
    } else {
        (0..64).map(|i| i * len / 64).collect()
    }
}

/// `sniHosts` from config: what parses matches what it says it matches.
fn sni_host(text: &str) {
    let Ok(host) = SniHost::parse(text) else {
        return;
    };
    let lower = text.to_ascii_lowercase();
    match &host {
        SniHost::Exact(h) => {
            assert_eq!(*h, lower);
            assert!(host.matches(h));
        }
        SniHost::Suffix(s) => {
            assert!(s.starts_with('.') && !s[1..].is_empty());
            assert!(host.matches(&format!("a{s}")));
            assert!(!host.matches(s), "the bare suffix is not a subdomain");
        }
        SniHost::Any => assert_eq!(text, "*"),
    }
}
