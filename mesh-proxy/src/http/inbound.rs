//! What the inbound side adds to a request before it is decided: the client identity header
//! for the application; and the wording of an authorization denial.

use http::HeaderMap;

use crate::listener::ConnContext;
use crate::tls::XFCC;

/// Envoy's RBAC filter wording, which clients and tests of Istio look for.
pub const DENIED: &str = "RBAC: access denied";

/// The application learns the client's identity from the proxy only: whatever the client
/// sent is dropped, and on mTLS connections Istio's `By=...;URI=...` takes its place.
pub fn set_xfcc(headers: &mut HeaderMap, conn: &ConnContext) {
    headers.remove(XFCC);
    if let Some(v) = conn.peer_identity.as_ref().and_then(|p| p.xfcc.clone()) {
        headers.insert(XFCC, v);
    }
}
