//! AuthorizationPolicy rules (Istio `ValidateAuthorizationPolicy`).

use super::Errors;
use super::destination_rule::selector_labels;
use super::request_authentication::target_refs;
use super::rules;
use crate::path::FieldPath;
use crate::security::authorization_policy::Source;
use crate::security::{
    Action, AuthorizationPolicy, Condition, ConditionKey, Operation, path_template,
};

pub fn validate(ap: &AuthorizationPolicy, ns: Option<&str>, p: &FieldPath, errs: &mut Errors) {
    if let Some(sel) = &ap.selector {
        selector_labels(
            &sel.match_labels,
            &p.key("selector").key("matchLabels"),
            errs,
        );
    }
    target_refs(
        ap.selector.is_some(),
        &ap.target_ref,
        &ap.target_refs,
        ns,
        p,
        errs,
    );
    match (ap.action, &ap.provider) {
        (Action::Custom, None) => errs.push(&p.key("provider"), "CUSTOM action without provider"),
        (Action::Custom, Some(pr)) if pr.name.is_empty() => {
            errs.push(&p.key("provider").key("name"), "provider name must be set")
        }
        (Action::Allow | Action::Deny | Action::Audit, Some(_)) => errs.push(
            &p.key("provider"),
            "provider must not be set with non CUSTOM action",
        ),
        _ => {}
    }
    for (i, rule) in ap.rules.iter().enumerate() {
        let rp = p.key("rules").index(i);
        for (j, from) in rule.from.iter().enumerate() {
            let fp = rp.key("from").index(j).key("source");
            match &from.source {
                None => errs.push(&fp, "`from.source` must not be nil"),
                Some(s) => source(s, &fp, errs),
            }
        }
        for (j, to) in rule.to.iter().enumerate() {
            let tp = rp.key("to").index(j).key("operation");
            match &to.operation {
                None => errs.push(&tp, "`to.operation` must not be nil"),
                Some(o) => operation(o, &tp, errs),
            }
        }
        for (j, c) in rule.when.iter().enumerate() {
            condition(c, &rp.key("when").index(j), errs);
        }
    }
}

fn non_empty_values(field: &str, values: &[String], p: &FieldPath, errs: &mut Errors) {
    for (i, v) in values.iter().enumerate() {
        if v.is_empty() {
            errs.push(
                &p.key(field).index(i),
                format!("empty value not allowed, found in {field}"),
            );
        }
    }
}

fn source(s: &Source, p: &FieldPath, errs: &mut Errors) {
    let lists: [(&str, &Vec<String>); 12] = [
        ("principals", &s.principals),
        ("notPrincipals", &s.not_principals),
        ("requestPrincipals", &s.request_principals),
        ("notRequestPrincipals", &s.not_request_principals),
        ("namespaces", &s.namespaces),
        ("notNamespaces", &s.not_namespaces),
        ("serviceAccounts", &s.service_accounts),
        ("notServiceAccounts", &s.not_service_accounts),
        ("ipBlocks", &s.ip_blocks),
        ("notIpBlocks", &s.not_ip_blocks),
        ("remoteIpBlocks", &s.remote_ip_blocks),
        ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
    ];
    if lists.iter().all(|(_, l)| l.is_empty()) {
        errs.push(p, "`from.source` must not be empty");
    }
    for (field, values) in lists {
        non_empty_values(field, values, p, errs);
    }
    let sa = !s.service_accounts.is_empty() || !s.not_service_accounts.is_empty();
    let ns_or_principal = !s.namespaces.is_empty()
        || !s.not_namespaces.is_empty()
        || !s.principals.is_empty()
        || !s.not_principals.is_empty();
    if sa && ns_or_principal {
        errs.push(
            p,
            "Cannot set serviceAccounts with namespaces or principals",
        );
    }
    for (field, values) in [
        ("ipBlocks", &s.ip_blocks),
        ("notIpBlocks", &s.not_ip_blocks),
        ("remoteIpBlocks", &s.remote_ip_blocks),
        ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
    ] {
        for (i, v) in values.iter().enumerate() {
            errs.check(&p.key(field).index(i), rules::ip_or_cidr(v));
        }
    }
}

fn operation(o: &Operation, p: &FieldPath, errs: &mut Errors) {
    let lists: [(&str, &Vec<String>); 8] = [
        ("hosts", &o.hosts),
        ("notHosts", &o.not_hosts),
        ("ports", &o.ports),
        ("notPorts", &o.not_ports),
        ("methods", &o.methods),
        ("notMethods", &o.not_methods),
        ("paths", &o.paths),
        ("notPaths", &o.not_paths),
    ];
    if lists.iter().all(|(_, l)| l.is_empty()) {
        errs.push(p, "`to.operation` must not be empty");
    }
    for (field, values) in lists {
        non_empty_values(field, values, p, errs);
    }
    for (field, values) in [("paths", &o.paths), ("notPaths", &o.not_paths)] {
        for (i, v) in values.iter().enumerate() {
            if let Err(reason) = path_template::check(v) {
                errs.push(&p.key(field).index(i), reason);
            }
        }
    }
    for (field, values) in [("ports", &o.ports), ("notPorts", &o.not_ports)] {
        for (i, v) in values.iter().enumerate() {
            let ok = v.parse::<u32>().is_ok_and(|n| rules::port(n).is_ok());
            if !ok {
                errs.push(&p.key(field).index(i), format!("invalid port: {v}"));
            }
        }
    }
}

fn condition(c: &Condition, p: &FieldPath, errs: &mut Errors) {
    if c.key.is_empty() {
        errs.push(&p.key("key"), "`key` must not be empty");
        return;
    }
    let key = ConditionKey::parse(&c.key);
    if let Err(reason) = &key {
        errs.push(&p.key("key"), reason.clone());
    }
    if c.values.is_empty() && c.not_values.is_empty() {
        errs.push(
            p,
            format!(
                "at least one of `values` or `notValues` must be set for key {}",
                c.key
            ),
        );
    }
    for (field, values) in [("values", &c.values), ("notValues", &c.not_values)] {
        for (i, v) in values.iter().enumerate() {
            let vp = p.key(field).index(i);
            let Ok(key) = &key else { continue };
            if key.takes_ip() {
                errs.check(&vp, rules::ip_or_cidr(v));
            } else if key.takes_port() {
                let ok = v.parse::<u32>().is_ok_and(|n| rules::port(n).is_ok());
                if !ok {
                    errs.push(&vp, format!("invalid port: {v}"));
                }
            }
        }
    }
}

/// What a sidecar cannot evaluate in `ap`, one line per field: such a rule takes Istio's
/// fallback (it never grants access). `name` is how the policy is named in the lines.
pub fn fallbacks(ap: &AuthorizationPolicy, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, rule) in ap.rules.iter().enumerate() {
        for (j, c) in rule.when.iter().enumerate() {
            if let Some(reason) = ConditionKey::parse(&c.key)
                .ok()
                .and_then(|k| k.sidecar_fallback())
            {
                out.push(format!(
                    "AuthorizationPolicy {name}: spec.rules[{i}].when[{j}].key: {reason}; the rule never grants access (in ALLOW it matches nothing, in DENY and AUDIT it matches every request), as Istio does"
                ));
            }
        }
    }
    out
}
