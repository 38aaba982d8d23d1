//! The one AuthorizationPolicy check of the data path, for a TCP connection and for an HTTP
//! request alike: the attributes are built here, AUDIT matches and denials are logged here.

use super::context::ConnContext;
use crate::authz::{Attributes, Decision, HttpAttributes};
use crate::config::ListenerSecurity;

/// A request or connection the listener's policies refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// The DENY policy that matched; empty when ALLOW policies exist and none matched.
    pub policy: String,
}

/// Checks `conn` (and the request, when `http` is given) against the listener's policies.
pub fn authorize(
    security: &ListenerSecurity,
    conn: &ConnContext,
    http: Option<HttpAttributes<'_>>,
) -> Result<(), Denied> {
    let authz = &security.authorizer;
    if authz.is_empty() {
        return Ok(());
    }
    let what = if http.is_some() {
        "request"
    } else {
        "tcp connection"
    };
    let attrs = Attributes {
        source_principal: conn.principal(),
        source_namespace: None,
        source_ip: conn.peer.ip(),
        remote_ip: conn.peer.ip(),
        destination_port: conn.destination_port,
        http,
    };
    let method = attrs.http.as_ref().map_or("-", |h| h.method);
    let path = attrs.http.as_ref().map_or("-", |h| h.path);
    if authz.has_audit() {
        let audited = authz.audited(&attrs);
        if !audited.is_empty() {
            tracing::info!(
                listener = %conn.listener.name,
                peer = %conn.peer,
                principal = conn.principal().unwrap_or("-"),
                method,
                path,
                policies = ?audited,
                "{what} audited"
            );
        }
    }
    match authz.check(&attrs) {
        Decision::Allow => Ok(()),
        Decision::Deny { policy } => {
            tracing::debug!(
                listener = %conn.listener.name,
                peer = %conn.peer,
                principal = conn.principal().unwrap_or("-"),
                %policy,
                "{what} denied by authorization policy"
            );
            Err(Denied { policy })
        }
    }
}
