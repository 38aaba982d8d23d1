//! The security settings of one inbound listener, compiled once per config: the mTLS mode
//! (with its port overrides), the JWT authenticator and the authorizer. Read per connection
//! and per request from the snapshot, so a policy change applies to open connections too,
//! without rebinding.

use std::collections::HashMap;
use std::sync::Arc;

use mesh_proto::config::v1 as pb;
use pb::{MtlsMode, PortMtls};

use crate::authz::{self, Authorizer, effective_mtls};
use crate::jwt::remote::{FetchSettings, RemoteJwks};
use crate::jwt::{self, Authenticator};

/// The part of a listener's security that does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecurityError {
    #[error(transparent)]
    Authorization(#[from] authz::CompileError),
    #[error(transparent)]
    Jwt(#[from] jwt::CompileError),
}

/// Running `jwksUri` key sets by URI and fetch settings, handed from one config to the next.
pub type RemoteKeys = HashMap<(String, FetchSettings), Arc<RemoteJwks>>;

#[derive(Debug, Default)]
pub struct ListenerSecurity {
    mode: MtlsMode,
    port_mtls: Vec<PortMtls>,
    /// RequestAuthentication: checked before the authorizer on every HTTP request.
    pub authenticator: Authenticator,
    pub authorizer: Authorizer,
}

impl ListenerSecurity {
    pub fn compile(listener: &pb::Listener) -> Result<Self, SecurityError> {
        Self::compile_reusing(listener, &RemoteKeys::new())
    }

    /// As [`ListenerSecurity::compile`], keeping the key sets of `remote` that the listener
    /// still uses (no refetch, no gap in keys on a config update).
    pub fn compile_reusing(
        listener: &pb::Listener,
        remote: &RemoteKeys,
    ) -> Result<Self, SecurityError> {
        let reuse = |uri: &str, settings: &FetchSettings| {
            remote.get(&(uri.to_owned(), settings.clone())).cloned()
        };
        Ok(Self {
            mode: listener.mtls_mode(),
            port_mtls: listener.port_mtls.clone(),
            authenticator: Authenticator::compile(&listener.jwt_rules, &reuse)?,
            authorizer: Authorizer::compile(&listener.authorization_policies)?,
        })
    }

    /// The mode on a workload port: the port override, else the listener's; PERMISSIVE when
    /// neither is set.
    pub fn mode_for(&self, port: u16) -> MtlsMode {
        effective_mtls(self.mode, &self.port_mtls, port)
    }
}

/// Whether two listener specs need the same socket and accept loop: everything but the
/// security settings (JWT rules included) and the layer 4 routes, which are read from the snapshot at each
/// connection.
pub fn same_socket(a: &pb::Listener, b: &pb::Listener) -> bool {
    let strip = |l: &pb::Listener| pb::Listener {
        authorization_policies: Vec::new(),
        mtls_mode: 0,
        port_mtls: Vec::new(),
        tcp_routes: Vec::new(),
        jwt_rules: Vec::new(),
        ..l.clone()
    };
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_changes_keep_the_socket() {
        let a = pb::Listener {
            name: "in".into(),
            address: "127.0.0.1:1".into(),
            ..Default::default()
        };
        let mut b = a.clone();
        b.mtls_mode = MtlsMode::Strict as i32;
        b.authorization_policies
            .push(pb::AuthorizationPolicy::default());
        b.tcp_routes.push(pb::TcpRoute::default());
        b.jwt_rules.push(pb::JwtRule::default());
        assert!(same_socket(&a, &b));
        b.address = "127.0.0.1:2".into();
        assert!(!same_socket(&a, &b));
    }

    #[test]
    fn port_override_and_default() {
        let l = pb::Listener {
            mtls_mode: MtlsMode::Strict as i32,
            port_mtls: vec![PortMtls {
                port: 9000,
                mode: MtlsMode::Disable as i32,
            }],
            ..Default::default()
        };
        let s = ListenerSecurity::compile(&l).unwrap();
        assert_eq!(s.mode_for(8080), MtlsMode::Strict);
        assert_eq!(s.mode_for(9000), MtlsMode::Disable);
        let unset = ListenerSecurity::compile(&pb::Listener::default()).unwrap();
        assert_eq!(unset.mode_for(8080), MtlsMode::Permissive);
    }
}
