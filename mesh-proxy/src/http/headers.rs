//! Header hygiene between hops: hop-by-hop headers stay on their hop.

use http::{HeaderMap, HeaderName, header};

/// gRPC's status, in trailers or a trailers-only response. Header names read on every
/// request are constants: a `&str` name is parsed (validated, lowercased) at each lookup.
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// The deadline a gRPC client sets (`grpc-timeout: 150m`).
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes hop-by-hop headers and those named in `Connection`. `te: trailers` survives, since
/// gRPC needs it end to end; `Upgrade` survives on an upgrade request. This runs twice per
/// request: one pass over the names finds whether there is anything to do, and the common
/// message (none of them, or only `Connection: keep-alive`) costs no hashed lookup.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let present = headers
        .keys()
        .fold(Present::default(), |p, name| p.with(name));
    remove_present(headers, keep_upgrade, present);
}

/// [`remove_hop_by_hop`] for a message whose hop-by-hop names were found already (a
/// request's, by its [`super::scan::RequestScan`]).
pub fn remove_present(headers: &mut HeaderMap, keep_upgrade: bool, present: Present) {
    if present == Present::default() {
        return;
    }
    if present.connection {
        remove_connection_named(headers, keep_upgrade);
        if !keep_upgrade {
            headers.remove(header::CONNECTION);
        }
    }
    if present.upgrade && !keep_upgrade {
        headers.remove(header::UPGRADE);
    }
    if present.keep_alive {
        headers.remove(&KEEP_ALIVE);
    }
    if present.proxy_connection {
        headers.remove(&PROXY_CONNECTION);
    }
    if present.transfer_encoding {
        headers.remove(header::TRANSFER_ENCODING);
    }
    if let Some(te) = present.te.then(|| headers.get(header::TE)).flatten() {
        let trailers = te.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
        if !trailers || te.as_bytes() != b"trailers" {
            headers.remove(header::TE);
            if trailers {
                headers.insert(header::TE, http::HeaderValue::from_static("trailers"));
            }
        }
    }
}

/// Removes the headers `Connection` names (beyond the hop-by-hop tokens themselves).
fn remove_connection_named(headers: &mut HeaderMap, keep_upgrade: bool) {
    let Some(conn) = headers
        .get(header::CONNECTION)
        .and_then(|v| v.to_str().ok())
    else {
        return;
    };
    // The common value is one such token (`keep-alive` from most servers): no split, no list.
    if !conn.contains(',') && names_no_header(conn.trim(), keep_upgrade) {
        return;
    }
    let named: Vec<HeaderName> = conn
        .split(',')
        .map(str::trim)
        .filter(|t| !names_no_header(t, keep_upgrade))
        .filter_map(|t| HeaderName::from_bytes(t.to_ascii_lowercase().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
}

/// A `Connection` token that is an option of the connection, not the name of a header to
/// remove (`upgrade` too, on an upgrade request, where the `Upgrade` header stays).
fn names_no_header(token: &str, keep_upgrade: bool) -> bool {
    token.eq_ignore_ascii_case("keep-alive")
        || token.eq_ignore_ascii_case("close")
        || token.eq_ignore_ascii_case("te")
        || (keep_upgrade && token.eq_ignore_ascii_case("upgrade"))
}

/// Which hop-by-hop headers a message has, found in one pass over its names.
#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
pub struct Present {
    connection: bool,
    upgrade: bool,
    keep_alive: bool,
    proxy_connection: bool,
    transfer_encoding: bool,
    te: bool,
}

impl Present {
    fn with(self, name: &HeaderName) -> Self {
        self.with_str(name.as_str())
    }

    /// Notes `name` (lowercase, as header names are) when it is hop-by-hop.
    pub fn with_str(mut self, name: &str) -> Self {
        match name {
            "connection" => self.connection = true,
            "upgrade" => self.upgrade = true,
            "keep-alive" => self.keep_alive = true,
            "proxy-connection" => self.proxy_connection = true,
            "transfer-encoding" => self.transfer_encoding = true,
            "te" => self.te = true,
            _ => {}
        }
        self
    }

    /// Whether an `Upgrade` header was there.
    pub fn upgrade(&self) -> bool {
        self.upgrade
    }
}

/// The `Upgrade` protocol of an HTTP/1.1 upgrade request (`present`: its hop-by-hop names).
pub fn is_upgrade_request(req: &http::Request<super::body::RequestBody>, present: Present) -> bool {
    req.version() <= http::Version::HTTP_11
        && present.upgrade
        && req
            .headers()
            .get(header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_listed() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-secret".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        h.insert("te", "trailers, deflate".parse().unwrap());
        h.insert("x-app", "kept".parse().unwrap());
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h["x-app"], "kept");
        assert_eq!(h["te"], "trailers");
    }

    #[test]
    fn a_single_connection_token_is_an_option_or_a_header_named() {
        for (option, keep_upgrade) in [(" Keep-Alive ", false), ("close", false), ("upgrade", true)]
        {
            let mut h = HeaderMap::new();
            h.insert("connection", option.parse().unwrap());
            h.insert("x-app", "kept".parse().unwrap());
            remove_hop_by_hop(&mut h, keep_upgrade);
            assert_eq!(h["x-app"], "kept", "{option}");
        }
        let mut h = HeaderMap::new();
        h.insert("connection", "X-Secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("x-app", "kept".parse().unwrap());
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-app"], "kept");
    }

    #[test]
    fn upgrade_headers_survive_on_upgrade_requests() {
        let mut h = HeaderMap::new();
        h.insert("connection", "Upgrade".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        remove_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "Upgrade");
        remove_hop_by_hop(&mut h, false);
        assert!(h.is_empty());
    }

    #[test]
    fn each_hop_by_hop_header_alone_is_removed() {
        for name in [
            "connection",
            "upgrade",
            "keep-alive",
            "proxy-connection",
            "transfer-encoding",
        ] {
            let mut h = HeaderMap::new();
            h.insert(HeaderName::from_static(name), "x".parse().unwrap());
            h.insert("x-app", "kept".parse().unwrap());
            remove_hop_by_hop(&mut h, false);
            assert_eq!(h.len(), 1, "{name}: {h:?}");
        }
        let mut h = HeaderMap::new();
        h.insert("te", "gzip".parse().unwrap());
        remove_hop_by_hop(&mut h, false);
        assert!(h.is_empty(), "{h:?}");
    }
}
