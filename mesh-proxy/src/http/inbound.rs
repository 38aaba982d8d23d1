//! What the inbound side adds to a request before routing: the RequestAuthentication check,
//! the AuthorizationPolicy decision and the client identity header for the application.

use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};

use super::ConnInfo;
use super::body::ResponseBody;
use super::local;
use crate::authz::{Attributes, Decision, HttpAttributes, RequestAuth};
use crate::config::Snapshot;
use crate::jwt::unix_now;
use crate::tls::XFCC;

/// Envoy's RBAC filter wording, which clients and tests of Istio look for.
const DENIED: &str = "RBAC: access denied";

/// Checks the request's JWTs against the listener's RequestAuthentication rules and rewrites
/// its headers (token removed, claims written). `Ok(None)`: no rules, or no token (the request
/// goes on unauthenticated); `Err`: the 401 to send.
pub async fn authenticate<B>(
    snapshot: &Snapshot,
    conn: &ConnInfo,
    req: &mut Request<B>,
    authority: &HeaderValue,
    grpc: bool,
) -> Result<Option<RequestAuth>, Response<ResponseBody>> {
    let Some(security) = snapshot.listener_security.get(&conn.listener.name) else {
        return Ok(None);
    };
    let authn = &security.authenticator;
    if authn.is_empty() {
        return Ok(None);
    }
    match authn
        .check(req.headers(), req.uri().query(), unix_now())
        .await
    {
        Ok(verified) => {
            authn.rewrite_headers(&verified, req.headers_mut());
            Ok(verified.request_auth().cloned())
        }
        Err(e) => {
            tracing::debug!(
                listener = %conn.listener.name,
                principal = conn.principal().unwrap_or("-"),
                error = %e,
                "request refused by request authentication"
            );
            let mut resp = local::reply(StatusCode::UNAUTHORIZED, e.reply_text(), grpc);
            // RFC 6750 §3, as Envoy's jwt_authn filter words it.
            let realm = format!(
                "Bearer realm=\"http://{}{}\", error=\"invalid_token\"",
                authority.to_str().unwrap_or_default(),
                req.uri().path()
            );
            if let Ok(v) = HeaderValue::from_str(&realm) {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            Err(resp)
        }
    }
}

/// `Some(403)` when the listener's policies deny the request. `request_auth` is what
/// [`authenticate`] verified.
pub fn authorize<B>(
    snapshot: &Snapshot,
    conn: &ConnInfo,
    req: &Request<B>,
    authority: &HeaderValue,
    grpc: bool,
    request_auth: Option<&RequestAuth>,
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
        destination_port: conn.destination_port,
        http: Some(HttpAttributes {
            host: authority.to_str().unwrap_or_default(),
            method: req.method().as_str(),
            path: req.uri().path(),
            headers: req.headers(),
            request_auth,
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
