//! Proto policies to the compiled form. Every error names the field in the proto3 JSON
//! spelling, e.g. `authorizationPolicies[0].rules[1].from[0].ipBlocks[2]`.

use http::HeaderName;
use mesh_proto::config::v1 as pb;
use pb::authorization_policy as ap;

use super::pattern::{PathPattern, Pattern};
use super::rule::{Clause, Rule, Test};
use crate::cidr::Cidr;

/// `(field path, reason)`.
pub type CompileError = (String, String);

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
}

pub(super) fn policy(i: usize, p: &pb::AuthorizationPolicy) -> Result<Compiled, CompileError> {
    let path = format!("authorizationPolicies[{i}]");
    let kind = match ap::Action::try_from(p.action) {
        Ok(ap::Action::Allow) => Kind::Allow,
        Ok(ap::Action::Deny) => Kind::Deny,
        Ok(ap::Action::Audit) => Kind::Audit,
        Ok(ap::Action::Custom) => {
            return Err((
                format!("{path}.action"),
                "action CUSTOM is not supported: the proxy has no external authorization providers"
                    .into(),
            ));
        }
        Err(_) => {
            return Err((
                format!("{path}.action"),
                format!("unknown action {}", p.action),
            ));
        }
    };
    let rules = p
        .rules
        .iter()
        .enumerate()
        .map(|(r, rule)| compile_rule(&format!("{path}.rules[{r}]"), rule))
        .collect::<Result<_, _>>()?;
    Ok(Compiled {
        name: p.name.clone(),
        kind,
        rules,
    })
}

fn compile_rule(path: &str, r: &ap::Rule) -> Result<Rule, CompileError> {
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
    let when = r
        .when
        .iter()
        .enumerate()
        .map(|(i, c)| condition(&format!("{path}.when[{i}]"), c))
        .collect::<Result<_, _>>()?;
    Ok(Rule { from, to, when })
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
    fn compile(&self, path: &str) -> Result<Option<Clause>, CompileError> {
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
                .map(|(i, v)| (self.parse)(v).map_err(|e| (format!("{path}.{field}[{i}]"), e)))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Some(Clause {
            any_of: list(self.field, self.values)?,
            none_of: list(&not_field, self.not_values)?,
        }))
    }
}

fn all_keys(path: &str, keys: &[Key<'_>]) -> Result<Vec<Clause>, CompileError> {
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

fn audience(v: &str) -> Result<Test, String> {
    Ok(Test::Audience(Pattern::parse(v)))
}

fn presenter(v: &str) -> Result<Test, String> {
    Ok(Test::Presenter(Pattern::parse(v)))
}

/// `request.auth.claims[a][b]` to `["a", "b"]`; `None` unless every part is one non-empty
/// bracketed name.
pub(super) fn claim_path(key: &str) -> Option<Vec<String>> {
    let mut rest = key.strip_prefix("request.auth.claims")?;
    let mut path = Vec::new();
    while !rest.is_empty() {
        let (name, tail) = rest.strip_prefix('[')?.split_once(']')?;
        if name.is_empty() || name.contains('[') {
            return None;
        }
        path.push(name.to_owned());
        rest = tail;
    }
    (!path.is_empty()).then_some(path)
}

fn source(at: &str, s: &ap::Source) -> Result<Vec<Clause>, CompileError> {
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

fn operation(at: &str, o: &ap::Operation) -> Result<Vec<Clause>, CompileError> {
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

fn condition(at: &str, c: &ap::Condition) -> Result<Clause, CompileError> {
    let key_err = |reason: String| (format!("{at}.key"), reason);
    let header;
    let claim;
    let parse: ParseFn<'_> = match c.key.as_str() {
        "source.ip" => &source_ip,
        "remote.ip" => &remote_ip,
        "source.namespace" => &namespace,
        "source.principal" => &principal,
        "destination.port" => &port,
        "request.auth.principal" => &request_principal,
        "request.auth.audiences" => &audience,
        "request.auth.presenter" => &presenter,
        k if k.starts_with("request.auth.claims[") => {
            let path = claim_path(k).ok_or_else(|| {
                key_err(format!(
                    "{k:?}: expected request.auth.claims[<name>] or request.auth.claims[<a>][<b>]..."
                ))
            })?;
            claim = move |v: &str| Ok(Test::Claim(path.clone(), Pattern::parse(v)));
            &claim
        }
        k if k.starts_with("request.headers[") => {
            let name = k
                .strip_prefix("request.headers[")
                .and_then(|n| n.strip_suffix(']'))
                .filter(|n| !n.is_empty())
                .ok_or_else(|| key_err(format!("{k:?}: expected request.headers[<name>]")))?;
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| key_err(format!("{name:?} is not a valid header name")))?;
            header = move |v: &str| Ok(Test::Header(name.clone(), Pattern::parse(v)));
            &header
        }
        k => return Err(key_err(format!("condition key {k:?} is not supported"))),
    };
    Key::new("values", &c.values, &c.not_values, parse)
        .compile(at)?
        .ok_or_else(|| {
            (
                format!("{at}.values"),
                "one of values or notValues is required".into(),
            )
        })
}
