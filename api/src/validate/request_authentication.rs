//! RequestAuthentication rules, and the `targetRef(s)` rules shared with AuthorizationPolicy.

use std::sync::LazyLock;

use regex::Regex;

use super::Errors;
use super::destination_rule::selector_labels;
use super::rules;
use crate::path::FieldPath;
use crate::security::{PolicyTargetReference, RequestAuthentication};

static GROUP: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$").unwrap()
});
static KIND: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$").unwrap());
static HEADER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[-_A-Za-z0-9]+$").unwrap());

pub(super) fn target_refs(
    has_selector: bool,
    one: &Option<PolicyTargetReference>,
    many: &[PolicyTargetReference],
    ns: Option<&str>,
    p: &FieldPath,
    errs: &mut Errors,
) {
    let set = [has_selector, one.is_some(), !many.is_empty()]
        .into_iter()
        .filter(|b| *b)
        .count();
    if set > 1 {
        errs.push(p, "only one of targetRefs or selector can be set");
    }
    if let Some(r) = one {
        target_ref(r, ns, &p.key("targetRef"), errs);
    }
    for (i, r) in many.iter().enumerate() {
        target_ref(r, ns, &p.key("targetRefs").index(i), errs);
    }
}

fn target_ref(r: &PolicyTargetReference, ns: Option<&str>, p: &FieldPath, errs: &mut Errors) {
    if r.name.as_deref().is_none_or(str::is_empty) {
        errs.push(&p.key("name"), "name is required");
    }
    if let Some(g) = &r.group
        && !GROUP.is_match(g)
    {
        errs.push(
            &p.key("group"),
            format!("group {g:?} should match {}", GROUP.as_str()),
        );
    }
    if !KIND.is_match(&r.kind) {
        errs.push(
            &p.key("kind"),
            format!("kind {:?} should match {}", r.kind, KIND.as_str()),
        );
    }
    if let Some(target_ns) = r.namespace.as_deref()
        && !target_ns.is_empty()
        && Some(target_ns) != ns
    {
        errs.push(
            &p.key("namespace"),
            "cross namespace referencing is not currently supported",
        );
    }
}

fn jwks_uri(uri: &str) -> Result<(), String> {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Err(format!(
            "invalid jwksUri {uri:?}: url must have scheme http:// or https://"
        ));
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(format!(
            "invalid jwksUri {uri:?}: url must have scheme http:// or https://"
        ));
    }
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("invalid jwksUri {uri:?}: missing host"));
    }
    Ok(())
}

/// Length in bytes of an unpadded base64url value (`None` if it is not one), enough to
/// check key sizes without decoding.
fn base64url_len(v: &str) -> Option<usize> {
    let v = v.trim_end_matches('=');
    let valid = v
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (valid && v.len() % 4 != 1).then_some(v.len() * 6 / 8)
}

/// Whether one JWK is a key the proxy verifies with, by the proxy's rules: RSA (`n`, `e`),
/// EC P-256 / P-384 (`x`, `y` of at most 32 / 48 bytes), OKP Ed25519 (`x` of 32 bytes); a
/// key for another `use` than `sig` is skipped.
fn usable_jwk(k: &serde_json::Value) -> bool {
    let bytes = |f: &str| {
        k.get(f)
            .and_then(serde_json::Value::as_str)
            .and_then(base64url_len)
            .filter(|n| *n > 0)
    };
    let str_of = |f: &str| k.get(f).and_then(serde_json::Value::as_str);
    if str_of("use").is_some_and(|u| u != "sig") {
        return false;
    }
    let coordinates_within = |size: usize| {
        bytes("x").is_some_and(|n| n <= size) && bytes("y").is_some_and(|n| n <= size)
    };
    match (str_of("kty"), str_of("crv")) {
        (Some("RSA"), _) => bytes("n").is_some() && bytes("e").is_some(),
        (Some("EC"), Some("P-256")) => coordinates_within(32),
        (Some("EC"), Some("P-384")) => coordinates_within(48),
        (Some("OKP"), Some("Ed25519")) => bytes("x") == Some(32),
        _ => false,
    }
}

/// A set without one usable key would reject every token, so it is refused here rather than
/// at the proxy.
fn jwks(doc: &str) -> Result<(), String> {
    let set: serde_json::Value =
        serde_json::from_str(doc).map_err(|e| format!("jwks is not valid JSON: {e}"))?;
    let keys = set
        .get("keys")
        .and_then(serde_json::Value::as_array)
        .ok_or("jwks must be a JSON Web Key Set: an object with a \"keys\" list")?;
    if keys.iter().any(usable_jwk) {
        Ok(())
    } else {
        Err("jwks has no usable key (supported: RSA, EC P-256 and P-384, OKP Ed25519)".into())
    }
}

fn non_empty(field: &str, values: &[String], p: &FieldPath, errs: &mut Errors) {
    for (i, v) in values.iter().enumerate() {
        if v.is_empty() {
            errs.push(&p.key(field).index(i), "should be at least 1 chars long");
        }
    }
}

pub fn validate(ra: &RequestAuthentication, ns: Option<&str>, p: &FieldPath, errs: &mut Errors) {
    if let Some(sel) = &ra.selector {
        selector_labels(
            &sel.match_labels,
            &p.key("selector").key("matchLabels"),
            errs,
        );
    }
    target_refs(
        ra.selector.is_some(),
        &ra.target_ref,
        &ra.target_refs,
        ns,
        p,
        errs,
    );
    for (i, rule) in ra.jwt_rules.iter().enumerate() {
        let rp = p.key("jwtRules").index(i);
        if rule.issuer.is_empty() {
            errs.push(&rp.key("issuer"), "issuer must be set");
        }
        non_empty("audiences", &rule.audiences, &rp, errs);
        non_empty("fromParams", &rule.from_params, &rp, errs);
        non_empty("fromCookies", &rule.from_cookies, &rp, errs);
        non_empty(
            "spaceDelimitedClaims",
            &rule.space_delimited_claims,
            &rp,
            errs,
        );
        if let Some(uri) = &rule.jwks_uri {
            errs.check(&rp.key("jwksUri"), jwks_uri(uri));
        }
        match (&rule.jwks, &rule.jwks_uri) {
            (Some(doc), _) => errs.check(&rp.key("jwks"), jwks(doc)),
            (None, Some(_)) => {}
            (None, None) => errs.push(
                &rp.key("jwksUri"),
                "jwksUri or jwks is required: the mesh does not discover keys from the issuer (OpenID discovery)",
            ),
        }
        for (j, h) in rule.from_headers.iter().enumerate() {
            if h.name.is_empty() {
                errs.push(
                    &rp.key("fromHeaders").index(j).key("name"),
                    "name is required and should be at least 1 chars long",
                );
            } else {
                errs.check(
                    &rp.key("fromHeaders").index(j).key("name"),
                    rules::header_name(&h.name),
                );
            }
        }
        for (j, c) in rule.output_claim_to_headers.iter().enumerate() {
            let cp = rp.key("outputClaimToHeaders").index(j);
            if c.claim.is_empty() {
                errs.push(&cp.key("claim"), "claim should be at least 1 chars long");
            }
            if c.header.is_empty() {
                errs.push(&cp.key("header"), "header should be at least 1 chars long");
            } else if !HEADER.is_match(&c.header) {
                errs.push(
                    &cp.key("header"),
                    format!("header {:?} should match {}", c.header, HEADER.as_str()),
                );
            }
        }
        if let Some(h) = &rule.output_payload_to_header {
            errs.check(&rp.key("outputPayloadToHeader"), rules::header_name(h));
        }
        if let Some(t) = &rule.timeout {
            errs.check(
                &rp.key("timeout"),
                rules::duration(t)
                    .map_err(|_| "must be a valid duration greater than 1ms".to_string()),
            );
        }
    }
}
