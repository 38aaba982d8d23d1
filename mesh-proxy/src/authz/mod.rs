//! Authorization: Istio's AuthorizationPolicy evaluated for one request or connection, and the
//! PeerAuthentication mode of a port. Pure decisions, no I/O: the listener builds
//! [`Attributes`] and calls [`Authorizer::check`].
//!
//! Evaluation follows Istio: any matching DENY policy denies; otherwise, when ALLOW policies
//! exist, one of them must match; AUDIT policies never change the decision. A policy matches
//! when any of its rules does; a policy without rules matches nothing.

mod compile;
mod mtls;
mod pattern;
mod request_auth;
mod rule;

#[cfg(test)]
mod request_auth_tests;
#[cfg(test)]
mod tests;

use std::net::IpAddr;

use http::HeaderMap;
use mesh_proto::config::v1 as pb;

pub use compile::{CompileError, Fallback};
pub use mtls::effective_mtls;
pub use request_auth::RequestAuth;

/// What a policy can look at.
#[derive(Clone, Debug)]
pub struct Attributes<'a> {
    /// Peer identity from its mTLS certificate, without `spiffe://`; `None` for plaintext.
    pub source_principal: Option<&'a str>,
    /// `None`: taken from `source_principal` (`.../ns/<ns>/sa/...`).
    pub source_namespace: Option<&'a str>,
    /// Peer address of the connection.
    pub source_ip: IpAddr,
    /// The original client: from X-Forwarded-For when that is trusted, else `source_ip`.
    pub remote_ip: IpAddr,
    /// Where the client was going: the connection's original destination; `None` when it
    /// is not known (then `destination.ip` conditions do not match).
    pub destination_ip: Option<IpAddr>,
    pub destination_port: u16,
    /// The TLS server name (SNI) the client sent; `None` for plaintext or no SNI.
    pub sni: Option<&'a str>,
    /// `None` for TCP connections.
    pub http: Option<HttpAttributes<'a>>,
}

#[derive(Clone, Debug)]
pub struct HttpAttributes<'a> {
    /// Host or `:authority`, as sent (with the port when the client sent one).
    pub host: &'a str,
    pub method: &'a str,
    /// Without the query string.
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    /// What request authentication established; `None` when no verified token came with
    /// the request (then `requestPrincipals` and `request.auth.*` match nothing).
    pub request_auth: Option<&'a RequestAuth>,
}

impl Attributes<'_> {
    fn namespace(&self) -> Option<&str> {
        self.source_namespace
            .or_else(|| self.source_principal.and_then(namespace_of))
    }
}

/// The namespace in a SPIFFE path such as `cluster.local/ns/default/sa/sleep`.
pub fn namespace_of(principal: &str) -> Option<&str> {
    let segments: Vec<&str> = principal.split('/').collect();
    segments
        .windows(4)
        .find(|w| w[0] == "ns" && w[2] == "sa")
        .map(|w| w[1])
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// `policy` names the DENY policy that matched; it is empty when the request was denied
    /// because ALLOW policies exist and none matched.
    Deny {
        policy: String,
    },
}

/// Compiled policies of one workload, immutable and cheap to share behind an `Arc`.
#[derive(Clone, Debug, Default)]
pub struct Authorizer {
    deny: Vec<Policy>,
    allow: Vec<Policy>,
    audit: Vec<Policy>,
    fallbacks: Vec<Fallback>,
}

#[derive(Clone, Debug)]
struct Policy {
    name: String,
    rules: Vec<rule::Rule>,
}

impl Policy {
    fn matches(&self, attrs: &Attributes<'_>, widen: bool) -> bool {
        self.rules.iter().any(|r| r.matches(attrs, widen))
    }
}

impl Authorizer {
    /// Fails on the first invalid value (bad CIDR, bad port, unknown condition key, CUSTOM
    /// action), naming its field. What is valid but cannot be evaluated here compiles with
    /// Istio's fallback and is listed in [`Authorizer::fallbacks`].
    pub fn compile(policies: &[pb::AuthorizationPolicy]) -> Result<Authorizer, CompileError> {
        let mut out = Authorizer::default();
        for (i, p) in policies.iter().enumerate() {
            let c = compile::policy(i, p)?;
            out.fallbacks.extend(c.fallbacks);
            let policy = Policy {
                name: c.name,
                rules: c.rules,
            };
            match c.kind {
                compile::Kind::Allow => out.allow.push(policy),
                compile::Kind::Deny => out.deny.push(policy),
                compile::Kind::Audit => out.audit.push(policy),
            }
        }
        Ok(out)
    }

    /// Rules compiled with Istio's fallback, one entry per field that cannot be evaluated.
    pub fn fallbacks(&self) -> &[Fallback] {
        &self.fallbacks
    }

    /// Whether no policy applies, so `check` would allow everything.
    pub fn is_empty(&self) -> bool {
        self.deny.is_empty() && self.allow.is_empty() && self.audit.is_empty()
    }

    pub fn check(&self, attrs: &Attributes<'_>) -> Decision {
        if let Some(p) = self.deny.iter().find(|p| p.matches(attrs, true)) {
            return Decision::Deny {
                policy: p.name.clone(),
            };
        }
        if self.allow.is_empty() || self.allow.iter().any(|p| p.matches(attrs, false)) {
            Decision::Allow
        } else {
            Decision::Deny {
                policy: String::new(),
            }
        }
    }

    /// Whether any AUDIT policy exists, so callers skip [`Authorizer::audited`] otherwise.
    pub fn has_audit(&self) -> bool {
        !self.audit.is_empty()
    }

    /// Names of the AUDIT policies that match, for the access log; the decision is `check`'s.
    pub fn audited(&self, attrs: &Attributes<'_>) -> Vec<&str> {
        self.audit
            .iter()
            .filter(|p| p.matches(attrs, true))
            .map(|p| p.name.as_str())
            .collect()
    }
}
