//! The compiled form of a policy and how one request is matched against it.

use http::HeaderName;

use super::Attributes;
use super::pattern::{PathPattern, Pattern};
use crate::cidr::Cidr;

/// One value test on one request attribute.
#[derive(Clone, Debug)]
pub(super) enum Test {
    Principal(Pattern),
    RequestPrincipal(Pattern),
    Namespace(Pattern),
    SourceIp(Cidr),
    RemoteIp(Cidr),
    DestinationIp(Cidr),
    Host(Pattern),
    Port(u16),
    Method(Pattern),
    Path(PathPattern),
    /// `None`: a name no request can carry, so never present.
    Header(Option<HeaderName>, Pattern),
    /// The TLS server name of the downstream connection.
    Sni(Pattern),
    /// Any of the verified token's audiences.
    Audience(Pattern),
    Presenter(Pattern),
    /// A claim of the verified token, by its path into nested claims.
    Claim(Vec<String>, Pattern),
}

impl Test {
    /// Fields that only exist on HTTP requests (Istio's list: hosts, methods, paths,
    /// request principals, `request.auth.*`, request headers).
    pub(super) fn http_only(&self) -> bool {
        matches!(
            self,
            Test::RequestPrincipal(_)
                | Test::Host(_)
                | Test::Method(_)
                | Test::Path(_)
                | Test::Header(..)
                | Test::Audience(_)
                | Test::Presenter(_)
                | Test::Claim(..)
        )
    }

    fn matches(&self, a: &Attributes<'_>) -> bool {
        let http = a.http.as_ref();
        let auth = http.and_then(|h| h.request_auth);
        match self {
            Test::Principal(p) => p.matches(a.source_principal),
            // Without a verified token there is no request principal: even `*` does not match,
            // exactly as Istio without a JWT.
            Test::RequestPrincipal(p) => p.matches(auth.map(|r| r.principal.as_str())),
            Test::Audience(p) => {
                auth.is_some_and(|r| r.audiences.iter().any(|v| p.matches(Some(v))))
            }
            Test::Presenter(p) => p.matches(auth.and_then(|r| r.presenter.as_deref())),
            Test::Claim(path, p) => {
                auth.is_some_and(|r| r.claim_values(path).into_iter().any(|v| p.matches(Some(v))))
            }
            Test::Namespace(p) => p.matches(a.namespace()),
            Test::SourceIp(c) => c.contains(a.source_ip),
            Test::RemoteIp(c) => c.contains(a.remote_ip),
            Test::DestinationIp(c) => a.destination_ip.is_some_and(|ip| c.contains(ip)),
            Test::Sni(p) => p.matches(a.sni),
            Test::Host(p) => p.matches_ignore_case(http.map(|h| h.host)),
            Test::Port(port) => *port == a.destination_port,
            Test::Method(p) => p.matches(http.map(|h| h.method)),
            Test::Path(p) => p.matches(http.map(|h| h.path)),
            Test::Header(name, p) => {
                let Some(name) = name else { return false };
                // Repeated headers are seen joined with ",", as Envoy's header matcher does.
                let joined = http.and_then(|h| {
                    let mut values = h.headers.get_all(name).iter().peekable();
                    values.peek()?;
                    let strs: Option<Vec<&str>> = values.map(|v| v.to_str().ok()).collect();
                    Some(strs?.join(","))
                });
                p.matches(joined.as_deref())
            }
        }
    }
}

/// One key of a source, operation or condition: any of `values` (when given) and none of
/// `not_values`.
#[derive(Clone, Debug)]
pub(super) struct Clause {
    pub(super) any_of: Vec<Test>,
    pub(super) none_of: Vec<Test>,
}

impl Clause {
    fn http_only(&self) -> bool {
        self.any_of.iter().chain(&self.none_of).any(Test::http_only)
    }

    fn matches(&self, a: &Attributes<'_>) -> bool {
        (self.any_of.is_empty() || self.any_of.iter().any(|t| t.matches(a)))
            && !self.none_of.iter().any(|t| t.matches(a))
    }
}

#[derive(Clone, Debug, Default)]
pub(super) struct Rule {
    /// Each entry is one `from` source: the AND of its clauses. Entries are OR-ed.
    pub(super) from: Vec<Vec<Clause>>,
    /// Each entry is one `to` operation, same shape.
    pub(super) to: Vec<Vec<Clause>>,
    /// AND-ed.
    pub(super) when: Vec<Clause>,
    /// Part of the rule cannot be evaluated here (see `compile::Fallback`).
    pub(super) unsupported: bool,
}

impl Rule {
    fn has_http_only(&self) -> bool {
        self.from
            .iter()
            .chain(&self.to)
            .flatten()
            .chain(&self.when)
            .any(Clause::http_only)
    }

    /// `widen` selects Istio's treatment of HTTP-only fields on TCP traffic for DENY and AUDIT.
    /// Istio's "TCP Traffic" task (istio.io docs/tasks/security/authorization/authz-tcp) and its
    /// RBAC builder (`checkError` in pilot/pkg/security/authz/model): for ALLOW, a rule that
    /// uses an HTTP-only field is ignored as a whole, so it never matches a TCP connection;
    /// for DENY and AUDIT only the HTTP-only fields are ignored and the rest of the rule still
    /// applies, so `to: [{operation: {methods: [GET]}}]` denies every TCP connection and
    /// `methods: [GET], ports: ["9000"]` denies TCP connections to port 9000.
    pub(super) fn matches(&self, a: &Attributes<'_>, widen: bool) -> bool {
        // Istio's fallback for what cannot be evaluated: never grant access, so an ALLOW rule
        // matches nothing and a DENY (or AUDIT) rule matches everything.
        if self.unsupported {
            return widen;
        }
        let tcp = a.http.is_none();
        if tcp && !widen && self.has_http_only() {
            return false;
        }
        let all = |clauses: &[Clause]| {
            clauses
                .iter()
                .filter(|c| !(tcp && c.http_only()))
                .all(|c| c.matches(a))
        };
        (self.from.is_empty() || self.from.iter().any(|s| all(s)))
            && (self.to.is_empty() || self.to.iter().any(|o| all(o)))
            && all(&self.when)
    }
}
