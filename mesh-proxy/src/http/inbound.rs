//! What the inbound side adds to a request before routing: the AuthorizationPolicy decision
//! and the client identity header for the application.

use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};

use super::ConnInfo;
use super::body::ResponseBody;
use super::local;
use crate::authz::{Attributes, Decision, HttpAttributes};
use crate::config::Snapshot;
use crate::tls::XFCC;

/// Envoy's RBAC filter wording, which clients and tests of Istio look for.
const DENIED: &str = "RBAC: access denied";

/// `Some(403)` when the listener's policies deny the request.
pub fn authorize<B>(
    snapshot: &Snapshot,
    conn: &ConnInfo,
    req: &Request<B>,
    authority: &HeaderValue,
    grpc: bool,
) -> Option<Response<ResponseBody>> {
    let security = snapshot.listener_security.get(&conn.listener.name)?;
    let authz = &security.authorizer;
    if authz.is_empty() {
        return None;
    }
    let attrs = Attributes {
        source_principal: conn.principal(),
        source_namespace: None,
        source_ip: conn.peer.ip(),
        remote_ip: conn.peer.ip(),
        destination_ip: conn.original_dst.map(|a| a.ip()),
        destination_port: conn.destination_port,
        sni: conn.sni(),
        http: Some(HttpAttributes {
            host: authority.to_str().unwrap_or_default(),
            method: req.method().as_str(),
            path: req.uri().path(),
            headers: req.headers(),
            // No request authentication runs yet: no request carries a verified token.
            request_auth: None,
        }),
    };
    if authz.has_audit() {
        let audited = authz.audited(&attrs);
        if !audited.is_empty() {
            tracing::info!(
                listener = %conn.listener.name,
                principal = conn.principal().unwrap_or("-"),
                method = %req.method(),
                path = req.uri().path(),
                policies = ?audited,
                "request audited"
            );
        }
    }
    match authz.check(&attrs) {
        Decision::Allow => None,
        Decision::Deny { policy } => {
            tracing::debug!(
                listener = %conn.listener.name,
                principal = conn.principal().unwrap_or("-"),
                %policy,
                "request denied by authorization policy"
            );
            Some(local::reply(StatusCode::FORBIDDEN, DENIED, grpc))
        }
    }
}

/// The application learns the client's identity from the proxy only: whatever the client
/// sent is dropped, and on mTLS connections Istio's `By=...;URI=...` takes its place.
pub fn set_xfcc(headers: &mut HeaderMap, conn: &ConnInfo) {
    headers.remove(XFCC);
    if let Some(v) = conn.peer_identity.as_ref().and_then(|p| p.xfcc.clone()) {
        headers.insert(XFCC, v);
    }
}
