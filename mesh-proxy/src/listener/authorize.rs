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
        destination_ip: conn.original_dst.map(|a| a.ip()),
        destination_port: conn.destination_port,
        sni: conn.sni(),
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http::HeaderMap;
    use mesh_proto::config::v1 as pb;

    use super::*;
    use crate::listener::ListenerSpec;

    fn security(policies: serde_json::Value) -> (ListenerSecurity, Arc<ListenerSpec>) {
        let listener: pb::Listener = serde_json::from_value(serde_json::json!({
            "name": "in", "address": "127.0.0.1:0", "direction": "INBOUND",
            "protocol": "HTTP", "authorizationPolicies": policies
        }))
        .unwrap();
        let security = ListenerSecurity::compile(&listener).unwrap();
        (security, Arc::new(ListenerSpec::new(&listener)))
    }

    fn conn(listener: &Arc<ListenerSpec>, port: u16) -> ConnContext {
        ConnContext {
            listener: listener.clone(),
            peer: "127.0.0.1:40000".parse().unwrap(),
            original_dst: None,
            peer_identity: None,
            destination_port: port,
            log_downstream: Default::default(),
        }
    }

    #[test]
    fn one_check_for_connections_and_requests() {
        let (security, listener) = security(serde_json::json!([
            { "name": "default/allow-8080", "action": "ALLOW",
              "rules": [{ "to": [{ "ports": ["8080"] }] }] },
            { "name": "default/deny-admin", "action": "DENY",
              "rules": [{ "to": [{ "paths": ["/admin"] }] }] }
        ]));
        let headers = HeaderMap::new();
        let request = |path| {
            Some(HttpAttributes {
                host: "app",
                method: "GET",
                path,
                headers: &headers,
                request_auth: None,
            })
        };
        assert_eq!(
            authorize(&security, &conn(&listener, 8080), request("/")),
            Ok(())
        );
        assert_eq!(
            authorize(&security, &conn(&listener, 8080), request("/admin")),
            Err(Denied {
                policy: "default/deny-admin".into()
            })
        );
        // Another port: no ALLOW policy matches.
        assert_eq!(
            authorize(&security, &conn(&listener, 9090), request("/")),
            Err(Denied {
                policy: String::new()
            })
        );
        // A TCP connection has no path: the DENY rule that names one applies to all of it,
        // as Istio does, even on the allowed port.
        assert_eq!(
            authorize(&security, &conn(&listener, 8080), None),
            Err(Denied {
                policy: "default/deny-admin".into()
            })
        );
    }

    #[test]
    fn no_policies_allow_everything() {
        let (security, listener) = security(serde_json::json!([]));
        assert_eq!(authorize(&security, &conn(&listener, 1), None), Ok(()));
    }
}
