//! Proto policies to the compiled form. Every error names the field in the proto3 JSON
//! spelling, e.g. `authorizationPolicies[0].rules[1].from[0].ipBlocks[2]`.
//!
//! Condition keys are Istio's vocabulary ([`ConditionKey`], shared with validation), matched
//! exhaustively: a key that validates always compiles. What the proxy cannot evaluate
//! (`experimental.envoy.filters.*`) gets Istio's fallback instead of an error: the rule never
//! grants access (it matches nothing in ALLOW, everything in DENY and AUDIT), and a
//! [`Fallback`] names the policy and the field.

use std::fmt;

use http::HeaderName;
use mesh_api::security::ConditionKey;
use mesh_proto::config::v1 as pb;
use pb::authorization_policy as ap;

use super::pattern::{PathPattern, Pattern};
use super::rule::{Clause, Rule, Test};
use crate::cidr::Cidr;
use crate::config::FieldError;

/// A policy that does not compile: its index in the list and the field inside it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("authorizationPolicies[{policy}].{error}")]
pub struct CompileError {
    pub policy: usize,
    pub error: FieldError,
}

/// A rule compiled with Istio's fallback because part of it cannot be evaluated here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback {
    /// The policy's name (`namespace/name` from pilot).
    pub policy: String,
    /// The field within the policy, e.g. `rules[0].when[1].key`.
    pub field: String,
    pub reason: String,
}

impl fmt::Display for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AuthorizationPolicy {}: {}: {}; the rule never grants access (in ALLOW it matches nothing, in DENY and AUDIT it matches every request), as Istio does",
            self.policy, self.field, self.reason
        )
    }
}

/// The actions the proxy enforces.
pub(super) enum Kind {
    Allow,
    Deny,
    Audit,
}

pub(super) struct Compiled {
    pub(super) name: String,
    pub(super) kind: Kind,
    pub(super) rules: Vec<Rule>,
    pub(super) fallbacks: Vec<Fallback>,
}

pub(super) fn policy(i: usize, p: &pb::AuthorizationPolicy) -> Result<Compiled, CompileError> {
    let err = |error: FieldError| CompileError { policy: i, error };
    let kind = match ap::Action::try_from(p.action) {
        Ok(ap::Action::Allow) => Kind::Allow,
        Ok(ap::Action::Deny) => Kind::Deny,
        Ok(ap::Action::Audit) => Kind::Audit,
        Ok(ap::Action::Custom) => {
            return Err(err(FieldError::new(
                "action",
                "action CUSTOM is not supported: the proxy has no external authorization providers",
            )));
        }
        Err(_) => {
            return Err(err(FieldError::new(
                "action",
                format!("unknown action {}", p.action),
            )));
        }
    };
    let namespace = p.name.split_once('/').map(|(ns, _)| ns);
    let mut fallbacks = Vec::new();
    let mut rules = Vec::with_capacity(p.rules.len());
    for (r, rule) in p.rules.iter().enumerate() {
        let mut cx = RuleContext {
            namespace,
            unsupported: Vec::new(),
        };
        let mut compiled = compile_rule(&format!("rules[{r}]"), rule, &mut cx).map_err(err)?;
        compiled.unsupported = !cx.unsupported.is_empty();
        fallbacks.extend(cx.unsupported.into_iter().map(|(field, reason)| Fallback {
            policy: p.name.clone(),
            field,
            reason,
        }));
        rules.push(compiled);
    }
    Ok(Compiled {
        name: p.name.clone(),
        kind,
        rules,
        fallbacks,
    })
}

/// What compiling one rule needs beyond its values.
struct RuleContext<'a> {
    /// The policy's namespace, for `source.serviceAccount` values without one.
    namespace: Option<&'a str>,
    /// Fields the proxy cannot evaluate, with the reason.
    unsupported: Vec<(String, String)>,
}

fn compile_rule(path: &str, r: &ap::Rule, cx: &mut RuleContext<'_>) -> Result<Rule, FieldError> {
    let from = r
        .from
        .iter()
        .enumerate()
        .map(|(i, s)| source(&format!("{path}.from[{i}]"), s))
        .collect::<Result<_, _>>()?;
    let to =
        r.to.iter()
            .enumerate()
            .map(|(i, o)| operation(&format!("{path}.to[{i}]"), o))
            .collect::<Result<_, _>>()?;
    let mut when = Vec::with_capacity(r.when.len());
    for (i, c) in r.when.iter().enumerate() {
        when.extend(condition(&format!("{path}.when[{i}]"), c, cx)?);
    }
    Ok(Rule {
        from,
        to,
        when,
        unsupported: false,
    })
}

type ParseFn<'a> = &'a dyn Fn(&str) -> Result<Test, String>;

/// One key of a source, operation or condition: `field` and its `not` form.
struct Key<'a> {
    /// JSON name of the positive list, e.g. `ipBlocks`; the other is `notIpBlocks`.
    field: &'static str,
    values: &'a [String],
    not_values: &'a [String],
    parse: ParseFn<'a>,
}

impl<'a> Key<'a> {
    fn new(
        field: &'static str,
        values: &'a [String],
        not_values: &'a [String],
        parse: ParseFn<'a>,
    ) -> Key<'a> {
        Key {
            field,
            values,
            not_values,
            parse,
        }
    }

    /// `None` when both lists are empty: the key is not part of the match.
    fn compile(&self, path: &str) -> Result<Option<Clause>, FieldError> {
        if self.values.is_empty() && self.not_values.is_empty() {
            return Ok(None);
        }
        let mut chars = self.field.chars();
        let not_field: String = chars
            .next()
            .map(|c| format!("not{}{}", c.to_ascii_uppercase(), chars.as_str()))
            .unwrap_or_default();
        let list = |field: &str, vs: &[String]| {
            vs.iter()
                .enumerate()
                .map(|(i, v)| {
                    (self.parse)(v).map_err(|e| FieldError::new(format!("{path}.{field}[{i}]"), e))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Some(Clause {
            any_of: list(self.field, self.values)?,
            none_of: list(&not_field, self.not_values)?,
        }))
    }
}

fn all_keys(path: &str, keys: &[Key<'_>]) -> Result<Vec<Clause>, FieldError> {
    let mut clauses = Vec::new();
    for k in keys {
        clauses.extend(k.compile(path)?);
    }
    Ok(clauses)
}

fn principal(v: &str) -> Result<Test, String> {
    Ok(Test::Principal(Pattern::parse(v)))
}

fn request_principal(v: &str) -> Result<Test, String> {
    Ok(Test::RequestPrincipal(Pattern::parse(v)))
}

fn namespace(v: &str) -> Result<Test, String> {
    Ok(Test::Namespace(Pattern::parse(v)))
}

fn source_ip(v: &str) -> Result<Test, String> {
    Cidr::parse(v).map(Test::SourceIp)
}

fn remote_ip(v: &str) -> Result<Test, String> {
    Cidr::parse(v).map(Test::RemoteIp)
}

fn destination_ip(v: &str) -> Result<Test, String> {
    Cidr::parse(v).map(Test::DestinationIp)
}

fn host(v: &str) -> Result<Test, String> {
    Ok(Test::Host(Pattern::parse(v)))
}

fn port(v: &str) -> Result<Test, String> {
    v.parse()
        .map(Test::Port)
        .map_err(|_| format!("{v:?} is not a port number (0..=65535)"))
}

fn method(v: &str) -> Result<Test, String> {
    Ok(Test::Method(Pattern::parse(v)))
}

fn path(v: &str) -> Result<Test, String> {
    PathPattern::parse(v).map(Test::Path)
}

fn sni(v: &str) -> Result<Test, String> {
    Ok(Test::Sni(Pattern::parse(v)))
}

fn audience(v: &str) -> Result<Test, String> {
    Ok(Test::Audience(Pattern::parse(v)))
}

fn presenter(v: &str) -> Result<Test, String> {
    Ok(Test::Presenter(Pattern::parse(v)))
}

fn source(at: &str, s: &ap::Source) -> Result<Vec<Clause>, FieldError> {
    all_keys(
        at,
        &[
            Key::new("principals", &s.principals, &s.not_principals, &principal),
            Key::new(
                "requestPrincipals",
                &s.request_principals,
                &s.not_request_principals,
                &request_principal,
            ),
            Key::new("namespaces", &s.namespaces, &s.not_namespaces, &namespace),
            Key::new("ipBlocks", &s.ip_blocks, &s.not_ip_blocks, &source_ip),
            Key::new(
                "remoteIpBlocks",
                &s.remote_ip_blocks,
                &s.not_remote_ip_blocks,
                &remote_ip,
            ),
        ],
    )
}

fn operation(at: &str, o: &ap::Operation) -> Result<Vec<Clause>, FieldError> {
    all_keys(
        at,
        &[
            Key::new("hosts", &o.hosts, &o.not_hosts, &host),
            Key::new("ports", &o.ports, &o.not_ports, &port),
            Key::new("methods", &o.methods, &o.not_methods, &method),
            Key::new("paths", &o.paths, &o.not_paths, &path),
        ],
    )
}

/// `None` when the key cannot be evaluated here: the rule then takes Istio's fallback.
fn condition(
    at: &str,
    c: &ap::Condition,
    cx: &mut RuleContext<'_>,
) -> Result<Option<Clause>, FieldError> {
    let key = ConditionKey::parse(&c.key).map_err(|r| FieldError::new(format!("{at}.key"), r))?;
    let header;
    let claim;
    let service_account;
    let parse: ParseFn<'_> = match &key {
        ConditionKey::SourceIp => &source_ip,
        ConditionKey::RemoteIp => &remote_ip,
        ConditionKey::SourceNamespace => &namespace,
        ConditionKey::SourcePrincipal => &principal,
        ConditionKey::SourceServiceAccount => {
            let policy_namespace = cx.namespace;
            service_account = move |v: &str| {
                let (ns, sa) = match v.split_once('/') {
                    Some((ns, sa)) => (ns, sa),
                    None => (
                        policy_namespace.ok_or_else(|| {
                            format!("{v:?} names no namespace and the policy has none")
                        })?,
                        v,
                    ),
                };
                // Any trust domain, as Istio matches service accounts.
                Ok(Test::Principal(Pattern::Suffix(format!(
                    "/ns/{ns}/sa/{sa}"
                ))))
            };
            &service_account
        }
        ConditionKey::RequestHeader(name) => {
            // A name no HTTP request can carry is never present: its values never match.
            let name = HeaderName::from_bytes(name.as_bytes()).ok();
            header = move |v: &str| Ok(Test::Header(name.clone(), Pattern::parse(v)));
            &header
        }
        ConditionKey::RequestAuthPrincipal => &request_principal,
        ConditionKey::RequestAuthAudiences => &audience,
        ConditionKey::RequestAuthPresenter => &presenter,
        ConditionKey::RequestAuthClaim(path) => {
            let path = path.clone();
            claim = move |v: &str| Ok(Test::Claim(path.clone(), Pattern::parse(v)));
            &claim
        }
        ConditionKey::DestinationIp => &destination_ip,
        ConditionKey::DestinationPort => &port,
        ConditionKey::ConnectionSni => &sni,
        ConditionKey::ExperimentalEnvoyFilter(_) => {
            let reason = key
                .sidecar_fallback()
                .unwrap_or_else(|| format!("{:?} cannot be evaluated here", c.key));
            cx.unsupported.push((format!("{at}.key"), reason));
            return Ok(None);
        }
    };
    Key::new("values", &c.values, &c.not_values, parse)
        .compile(at)?
        .map(Some)
        .ok_or_else(|| {
            FieldError::new(
                format!("{at}.values"),
                "one of values or notValues is required",
            )
        })
}
