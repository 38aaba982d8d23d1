//! What the inbound side adds to a request before routing: the AuthorizationPolicy decision
//! and the client identity header for the application.

use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};

use super::body::ResponseBody;
use super::local;
use crate::authz::HttpAttributes;
use crate::config::Snapshot;
use crate::listener::{self, ConnContext};
use crate::tls::XFCC;

/// Envoy's RBAC filter wording, which clients and tests of Istio look for.
const DENIED: &str = "RBAC: access denied";

/// `Some(403)` when the listener's policies deny the request.
pub fn authorize<B>(
    snapshot: &Snapshot,
    conn: &ConnContext,
    req: &Request<B>,
    authority: &HeaderValue,
    grpc: bool,
) -> Option<Response<ResponseBody>> {
    let security = snapshot.listener_security.get(&conn.listener.name)?;
    let http = HttpAttributes {
        host: authority.to_str().unwrap_or_default(),
        method: req.method().as_str(),
        path: req.uri().path(),
        headers: req.headers(),
    };
    listener::authorize(security, conn, Some(http))
        .err()
        .map(|_| local::reply(StatusCode::FORBIDDEN, DENIED, grpc))
}

/// The application learns the client's identity from the proxy only: whatever the client
/// sent is dropped, and on mTLS connections Istio's `By=...;URI=...` takes its place.
pub fn set_xfcc(headers: &mut HeaderMap, conn: &ConnContext) {
    headers.remove(XFCC);
    if let Some(v) = conn.peer_identity.as_ref().and_then(|p| p.xfcc.clone()) {
        headers.insert(XFCC, v);
    }
}
