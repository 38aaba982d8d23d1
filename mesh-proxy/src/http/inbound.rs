//! What the inbound side adds to a request before it is decided: the RequestAuthentication
//! check, the client identity header for the application; and the wording of an authorization
//! denial.

use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};

use super::body::ResponseBody;
use super::local;
use crate::authz::RequestAuth;
use crate::config::Snapshot;
use crate::jwt::unix_now;
use crate::listener::ConnContext;
use crate::tls::XFCC;

/// Envoy's RBAC filter wording, which clients and tests of Istio look for.
pub const DENIED: &str = "RBAC: access denied";

/// Checks the request's JWTs against the listener's RequestAuthentication rules and rewrites
/// its headers (token removed, claims written). `Ok(None)`: no rules, or no token (the request
/// goes on unauthenticated); `Err`: the 401 to send.
pub async fn authenticate<B>(
    snapshot: &Snapshot,
    conn: &ConnContext,
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
            // RFC 6750 section 3, as Envoy's jwt_authn filter words it.
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

/// The application learns the client's identity from the proxy only: whatever the client
/// sent is dropped, and on mTLS connections Istio's `By=...;URI=...` takes its place.
pub fn set_xfcc(headers: &mut HeaderMap, conn: &ConnContext) {
    headers.remove(XFCC);
    if let Some(v) = conn.peer_identity.as_ref().and_then(|p| p.xfcc.clone()) {
        headers.insert(XFCC, v);
    }
}
