//! Field-level rules shared by the kinds (hosts, labels, ports, durations...).

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::LazyLock;

use regex::Regex;

use super::Errors;
use crate::duration::Duration;
use crate::path::FieldPath;

static DNS1123_LABEL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").unwrap());
static WILDCARD_LABEL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(\*|(\*|\*-)?[a-z0-9]([-a-z0-9]*[a-z0-9])?)$").unwrap());
static LABEL_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$").unwrap());
static LABEL_VALUE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$").unwrap());
static HEADER_NAME: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[-_A-Za-z0-9]+$").unwrap());

pub fn dns1123_label(s: &str) -> Result<(), String> {
    if s.len() <= 63 && DNS1123_LABEL.is_match(s) {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a valid DNS-1123 label (lowercase alphanumerics and '-', at most 63 characters)"
        ))
    }
}

pub fn dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.len() <= 253 && !s.is_empty() && s.split('.').all(|l| DNS1123_LABEL.is_match(l)) {
        Ok(())
    } else {
        Err(format!("{s:?} is not a valid DNS-1123 subdomain"))
    }
}

fn dns1123_labels(domain: &str, full: &str) -> Result<(), String> {
    let trimmed = domain.strip_suffix('.').unwrap_or(domain);
    // An all-numeric TLD would make `1.2.3.4` a host name.
    if let Some(tld) = trimmed.rsplit('.').next()
        && !tld.is_empty()
        && tld.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!(
            "domain name {full:?} invalid (top level domain {tld:?} cannot be all-numeric)"
        ));
    }
    for label in trimmed.split('.') {
        if label.len() > 63 || !DNS1123_LABEL.is_match(label) {
            return Err(format!(
                "domain name {full:?} invalid (label {label:?} invalid)"
            ));
        }
    }
    Ok(())
}

/// Istio's `ValidateWildcardDomain`: a DNS name whose first label may be a wildcard.
pub fn wildcard_domain(domain: &str) -> Result<(), String> {
    if domain.is_empty() {
        return Err("empty domain name not allowed".into());
    }
    if domain.len() > 255 {
        return Err(format!("domain name {domain:?} too long (max 255)"));
    }
    let (first, rest) = match domain.split_once('.') {
        Some((f, r)) => (f, Some(r)),
        None => (domain, None),
    };
    if first.len() > 63 || !WILDCARD_LABEL.is_match(first) {
        return Err(format!(
            "domain name {domain:?} invalid (label {first:?} invalid)"
        ));
    }
    match rest {
        Some(r) if !r.is_empty() => dns1123_labels(r, domain),
        _ => Ok(()),
    }
}

/// Istio's `ValidateFQDN`-like check for names that may not be wildcards.
pub fn fqdn(domain: &str) -> Result<(), String> {
    if domain.is_empty() {
        return Err("empty domain name not allowed".into());
    }
    if domain.len() > 255 {
        return Err(format!("domain name {domain:?} too long (max 255)"));
    }
    dns1123_labels(domain, domain)
}

pub fn port(p: u32) -> Result<(), String> {
    if (1..=65535).contains(&p) {
        Ok(())
    } else {
        Err(format!("port number {p} must be between 1-65535"))
    }
}

/// Istio's `ValidateDuration`: at least 1ms and at millisecond precision.
pub fn duration(d: &Duration) -> Result<(), String> {
    let d = d.as_std();
    if d < std::time::Duration::from_millis(1) {
        return Err("duration must be greater than 1ms".into());
    }
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        return Err("only durations to ms precision are supported".into());
    }
    Ok(())
}

pub fn opt_duration(d: &Option<Duration>, path: &FieldPath, errs: &mut Errors) {
    if let Some(d) = d {
        errs.check(path, duration(d));
    }
}

/// A fractional percentage: 0, or within [0.0001, 100] (Envoy's resolution).
pub fn percentage(v: f64) -> Result<(), String> {
    if v > 0.0 && v < 0.0001 {
        return Err(format!(
            "percentage {v} is neither 0.0, nor in range [0.0001, 100.0]"
        ));
    }
    if (0.0..=100.0).contains(&v) {
        Ok(())
    } else {
        Err(format!("percentage {v} is out of range 0..100"))
    }
}

pub fn regex(re: &str) -> Result<(), String> {
    Regex::new(re).map_err(|e| {
        format!(
            "{re:?} is not a valid regex: {}",
            e.to_string().lines().last().unwrap_or("")
        )
    })?;
    // The proxy matches a full value, as Envoy does: it compiles `^(?:RE)$`. A pattern that
    // compiles alone but not so (a `(?x)` comment swallowing the closing anchor) would be
    // refused there.
    Regex::new(&format!("^(?:{re})$"))
        .map(|_| ())
        .map_err(|_| format!("{re:?} is not a valid regex: it cannot be matched in full"))
}

/// Kubernetes label keys (optional DNS prefix + name) and values.
pub fn labels(labels: &BTreeMap<String, String>, path: &FieldPath, errs: &mut Errors) {
    for (k, v) in labels {
        let p = path.key(k);
        errs.check(&p, label_key(k));
        if v.len() > 63 || !LABEL_VALUE.is_match(v) {
            errs.push(&p, format!("invalid label value {v:?}"));
        }
    }
}

pub fn label_key(k: &str) -> Result<(), String> {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix {
        dns1123_subdomain(p).map_err(|_| format!("invalid label key {k:?}: bad prefix"))?;
    }
    if name.len() > 63 || !LABEL_NAME.is_match(name) {
        return Err(format!("invalid label key {k:?}"));
    }
    Ok(())
}

pub fn header_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if HEADER_NAME.is_match(name) {
        Ok(())
    } else {
        Err(format!("header name {name:?} is not a valid header name"))
    }
}

pub fn ip_or_cidr(s: &str) -> Result<(), String> {
    if s.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    cidr(s)
}

pub fn cidr(s: &str) -> Result<(), String> {
    let err = || format!("{s:?} is not a valid IP address or CIDR block");
    let (ip, bits) = s.split_once('/').ok_or_else(err)?;
    let ip: IpAddr = ip.parse().map_err(|_| err())?;
    let bits: u8 = bits.parse().map_err(|_| err())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if bits > max { Err(err()) } else { Ok(()) }
}

/// `exportTo`: `.`, `*`, or namespace names; no duplicates, `*` alone.
pub fn export_to(values: &[String], path: &FieldPath, errs: &mut Errors) {
    let mut seen = HashSet::new();
    for (i, v) in values.iter().enumerate() {
        let p = path.index(i);
        if v != "." && v != "*" && v != "~" {
            errs.check(
                &p,
                dns1123_label(v)
                    .map_err(|_| format!("only ., * or namespace names are allowed, got {v:?}")),
            );
        }
        if !seen.insert(v) {
            errs.push(&p, format!("duplicate entries in exportTo: {v}"));
        }
    }
    if values.len() > 1 && values.iter().any(|v| v == "*") {
        errs.push(
            path,
            "cannot have both public (*) and non-public exportTo values",
        );
    }
}

/// A gateway reference in a VirtualService: `mesh` or `[namespace/]name`.
pub fn gateway_name(name: &str) -> Result<(), String> {
    if name == "mesh" {
        return Ok(());
    }
    let (ns, n) = match name.split_once('/') {
        Some((ns, n)) => (Some(ns), n),
        None => (None, name),
    };
    if let Some(ns) = ns {
        dns1123_label(ns).map_err(|_| format!("invalid gateway name {name:?}: bad namespace"))?;
    }
    dns1123_subdomain(n).map_err(|_| format!("invalid gateway name {name:?}"))
}

pub const HTTP_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// Whether `s` is base64 as proto3 JSON accepts it for `bytes`: the standard or URL-safe
/// alphabet, padding optional, whitespace ignored; no stray bits in the last character.
pub fn is_base64(s: &str) -> bool {
    let digits: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let body = digits
        .iter()
        .rposition(|&c| c != b'=')
        .map_or(&digits[..0], |end| &digits[..=end]);
    let padding = digits.len() - body.len();
    let alphabet = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'-' | b'_');
    // A last group of one character cannot carry a whole byte.
    padding <= 2 && body.iter().all(alphabet) && body.len() % 4 != 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_as_proto3_json_takes_it() {
        for ok in ["", "aGk=", "aGk", "/+8=", "_-8", "aGVs bG8=", "AAAA"] {
            assert!(is_base64(ok), "{ok:?}");
        }
        for bad in ["a", "aGk===", "a*bc", "aGk=x", "é"] {
            assert!(!is_base64(bad), "{bad:?}");
        }
    }

    #[test]
    fn hosts() {
        assert!(wildcard_domain("reviews").is_ok());
        assert!(wildcard_domain("*.foo.com").is_ok());
        assert!(wildcard_domain("*").is_ok());
        assert!(wildcard_domain("*x").is_ok());
        assert!(wildcard_domain("foo*.com").is_err());
        assert!(wildcard_domain("a.*.com").is_err());
        assert!(wildcard_domain("Foo.com").is_err());
        assert!(wildcard_domain("").is_err());
        assert!(wildcard_domain(&"a".repeat(256)).is_err());
        assert!(fqdn("*.foo").is_err());
        assert!(wildcard_domain("foo.123").is_err());
        assert!(wildcard_domain("istio.io.").is_ok());
    }

    #[test]
    fn ports_durations_percent() {
        assert!(port(0).is_err());
        assert!(port(65536).is_err());
        assert!(port(80).is_ok());
        assert!(duration(&std::time::Duration::from_micros(500).into()).is_err());
        assert!(duration(&std::time::Duration::from_micros(1500).into()).is_err());
        assert!(duration(&std::time::Duration::from_millis(1).into()).is_ok());
        assert!(percentage(100.1).is_err());
        assert!(percentage(-1.0).is_err());
        assert!(percentage(50.0).is_ok());
        assert!(percentage(0.00001).is_err());
        assert!(percentage(0.0).is_ok());
    }

    #[test]
    fn labels_cidrs_export_to() {
        assert!(label_key("app.kubernetes.io/name").is_ok());
        assert!(label_key("@").is_err());
        assert!(ip_or_cidr("1.2.3.4").is_ok());
        assert!(ip_or_cidr("5.6.0.0/16").is_ok());
        assert!(ip_or_cidr("1.2.3.4/99").is_err());
        assert!(ip_or_cidr("2001:db8::/32").is_ok());
        let mut e = Errors::default();
        export_to(&[".".into(), "foo".into()], &FieldPath::root(), &mut e);
        assert!(e.is_empty());
        export_to(
            &["*".into(), "foo".into(), "foo".into(), "Bad".into()],
            &FieldPath::root(),
            &mut e,
        );
        assert_eq!(e.0.len(), 3);
        assert!(regex("b.*").is_ok());
        assert!(regex("(").is_err());
        assert!(gateway_name("istio-system/gw").is_ok());
        assert!(gateway_name("mesh").is_ok());
        assert!(gateway_name("bad_name").is_err());
    }
}
