//! PeerAuthentication rules.

use super::Errors;
use super::destination_rule::selector_labels;
use super::rules;
use crate::path::FieldPath;
use crate::security::PeerAuthentication;

pub fn validate(pa: &PeerAuthentication, p: &FieldPath, errs: &mut Errors) {
    if let Some(sel) = &pa.selector {
        selector_labels(
            &sel.match_labels,
            &p.key("selector").key("matchLabels"),
            errs,
        );
    }
    let Some(ports) = &pa.port_level_mtls else {
        return;
    };
    let pp = p.key("portLevelMtls");
    if ports.is_empty() {
        errs.push(&pp, "portLevelMtls must have at least 1 entry when set");
    }
    // Port-level settings only make sense for a known workload's ports.
    if pa
        .selector
        .as_ref()
        .is_none_or(|s| s.match_labels.is_empty())
    {
        errs.push(&pp, "portLevelMtls requires selector");
    }
    for key in ports.keys() {
        match key.parse::<u32>() {
            Ok(n) => errs.check(
                &pp.key(key),
                rules::port(n).map_err(|_| "port must be between 1-65535".to_string()),
            ),
            Err(_) => errs.push(
                &pp.key(key),
                format!("type conversion error from {key:?} to port number"),
            ),
        }
    }
}
