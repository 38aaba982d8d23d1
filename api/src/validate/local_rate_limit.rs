//! LocalRateLimit rules: a bucket that can let a request through (rate and burst above 0,
//! burst not below the rate), a unit, routes with at least one match that says something.

use super::Errors;
use super::destination_rule::selector_labels;
use super::virtual_service::string_match;
use crate::networking::{LocalRateLimit, RateLimitMatch, StringMatch};
use crate::path::FieldPath;

pub fn validate(l: &LocalRateLimit, p: &FieldPath, errs: &mut Errors) {
    if let Some(sel) = &l.workload_selector {
        selector_labels(
            &sel.match_labels,
            &p.key("workloadSelector").key("matchLabels"),
            errs,
        );
    }
    bucket(l.requests_per_unit, l.burst, p, errs);
    if l.unit.is_none() {
        errs.push(&p.key("unit"), "required value (SECOND, MINUTE or HOUR)");
    }
    for (i, r) in l.routes.iter().enumerate() {
        let rp = p.key("routes").index(i);
        if r.name.as_deref() == Some("") {
            errs.push(&rp.key("name"), "name may not be empty");
        }
        bucket(r.requests_per_unit, r.burst, &rp, errs);
        if r.match_.is_empty() {
            errs.push(
                &rp.key("match"),
                "at least one match is required (a route without one would take every request)",
            );
        }
        for (j, m) in r.match_.iter().enumerate() {
            request_match(m, &rp.key("match").index(j), errs);
        }
    }
}

fn bucket(requests_per_unit: u32, burst: Option<u32>, p: &FieldPath, errs: &mut Errors) {
    if requests_per_unit == 0 {
        errs.push(&p.key("requestsPerUnit"), "must be greater than 0");
    }
    if let Some(b) = burst
        && b < requests_per_unit
    {
        errs.push(
            &p.key("burst"),
            format!("burst {b} must be at least requestsPerUnit ({requests_per_unit})"),
        );
    }
}

fn request_match(m: &RateLimitMatch, p: &FieldPath, errs: &mut Errors) {
    if m.uri.is_none() && m.method.is_none() {
        errs.push(p, "a match must set uri or method");
    }
    for (name, sm) in [("uri", &m.uri), ("method", &m.method)] {
        if let Some(sm) = sm {
            condition(sm, &p.key(name), errs);
        }
    }
}

fn condition(m: &StringMatch, p: &FieldPath, errs: &mut Errors) {
    if m.exact.is_none() && m.prefix.is_none() && m.regex.is_none() {
        errs.push(p, "one of exact, prefix or regex is required");
    }
    string_match(m, p, errs);
}
