//! Delegate VirtualServices, merged into their roots as Istio's `mergeVirtualServices` does:
//! a root's `http` route with `delegate: {name, namespace}` is replaced by the delegate's
//! routes, each with the root's match merged into its own (`MergeHTTPRoutes`); a delegate
//! route whose match conflicts with every root match is dropped. Destinations of a delegate
//! are resolved in the delegate's own namespace.

use std::collections::{BTreeMap, HashMap};

use mesh_api::networking::{Destination, HttpMatchRequest, HttpRoute, StringMatch};

use super::hosts;
use super::index::VsEntry;
use crate::registry::export_visible;

/// A delegate VirtualService (one without `hosts`), by (namespace, name).
pub(super) struct Delegates {
    by_name: HashMap<(String, String), Delegate>,
}

struct Delegate {
    export_to: Vec<String>,
    /// Its `http` routes, destinations resolved in its namespace.
    http: Vec<HttpRoute>,
}

impl Delegates {
    /// The delegates among `entries`.
    pub(super) fn of(entries: &[VsEntry]) -> Self {
        let by_name = entries
            .iter()
            .filter(|e| e.spec.hosts.is_empty())
            .map(|e| {
                let mut http = e.spec.http.clone();
                for r in &mut http {
                    resolve_destinations(r, &e.namespace);
                }
                let delegate = Delegate {
                    export_to: e.spec.export_to.clone(),
                    http,
                };
                ((e.namespace.clone(), e.name.clone()), delegate)
            })
            .collect();
        Self { by_name }
    }

    /// Replaces every delegating route of `root` by the merged routes of its delegate.
    pub(super) fn merge_into(&self, root: &mut VsEntry, warnings: &mut Vec<String>) {
        if !root.spec.http.iter().any(|r| r.delegate.is_some()) {
            return;
        }
        let origin = format!("VirtualService {}/{}", root.namespace, root.name);
        let mut merged = Vec::with_capacity(root.spec.http.len());
        for route in std::mem::take(&mut root.spec.http) {
            let Some(d) = &route.delegate else {
                merged.push(route);
                continue;
            };
            let ns = d
                .namespace
                .clone()
                .unwrap_or_else(|| root.namespace.clone());
            let Some(delegate) = self.by_name.get(&(ns.clone(), d.name.clone())) else {
                warnings.push(format!(
                    "{origin}: delegate VirtualService {ns}/{} not found; route skipped",
                    d.name
                ));
                continue;
            };
            if !export_visible(&delegate.export_to, &ns, &root.namespace) {
                warnings.push(format!(
                    "{origin}: delegate VirtualService {ns}/{} is not exported to {}; route skipped",
                    d.name, root.namespace
                ));
                continue;
            }
            for (i, leaf) in delegate.http.iter().enumerate() {
                match merge_route(&route, leaf) {
                    Some(r) => merged.push(r),
                    None => warnings.push(format!(
                        "{origin}: route {} of delegate {ns}/{} has a match that conflicts with the root's; that route is dropped",
                        leaf.name.clone().unwrap_or_else(|| i.to_string()),
                        d.name
                    )),
                }
            }
        }
        root.spec.http = merged;
    }
}

fn resolve_destinations(r: &mut HttpRoute, namespace: &str) {
    let resolve = |d: &mut Destination| d.host = hosts::resolve(&d.host, namespace);
    r.route.iter_mut().for_each(|d| resolve(&mut d.destination));
    r.mirror.iter_mut().for_each(resolve);
    r.mirrors
        .iter_mut()
        .for_each(|m| resolve(&mut m.destination));
}

fn joined_name(root: Option<&String>, leaf: Option<&String>) -> Option<String> {
    match (root, leaf) {
        (Some(r), Some(l)) => Some(format!("{r}-{l}")),
        (r, l) => l.or(r).cloned(),
    }
}

/// Istio's `mergeHTTPRoute`: the delegate's route with the root's matches merged in and the
/// root's settings where the delegate has none; `None` on a match conflict.
fn merge_route(root: &HttpRoute, leaf: &HttpRoute) -> Option<HttpRoute> {
    let mut out = leaf.clone();
    out.matches = merge_matches(&root.matches, &leaf.matches)?;
    out.name = joined_name(root.name.as_ref(), leaf.name.as_ref());
    fn inherit<T: Clone>(slot: &mut Option<T>, root: &Option<T>) {
        if slot.is_none() {
            slot.clone_from(root);
        }
    }
    inherit(&mut out.rewrite, &root.rewrite);
    inherit(&mut out.direct_response, &root.direct_response);
    inherit(&mut out.timeout, &root.timeout);
    inherit(&mut out.retries, &root.retries);
    inherit(&mut out.fault, &root.fault);
    inherit(&mut out.mirror, &root.mirror);
    inherit(&mut out.mirror_percent, &root.mirror_percent);
    inherit(&mut out.mirror_percentage, &root.mirror_percentage);
    inherit(&mut out.cors_policy, &root.cors_policy);
    inherit(&mut out.headers, &root.headers);
    if out.mirrors.is_empty() {
        out.mirrors.clone_from(&root.mirrors);
    }
    Some(out)
}

/// Istio's `mergeHTTPMatchRequests`: every delegate match is merged with each root match it
/// does not conflict with; a delegate match that conflicts with all of them is a conflict.
fn merge_matches(
    root: &[HttpMatchRequest],
    leaf: &[HttpMatchRequest],
) -> Option<Vec<HttpMatchRequest>> {
    if root.is_empty() {
        return Some(leaf.to_vec());
    }
    if leaf.is_empty() {
        return Some(root.to_vec());
    }
    let mut out = Vec::new();
    for l in leaf {
        let before = out.len();
        out.extend(
            root.iter()
                .filter(|r| !has_conflict(r, l))
                .map(|r| merge_match(r, l)),
        );
        if out.len() == before {
            return None;
        }
    }
    Some(out)
}

/// Istio's `mergeHTTPMatchRequest`: the delegate's conditions, the root's where it has none.
fn merge_match(root: &HttpMatchRequest, leaf: &HttpMatchRequest) -> HttpMatchRequest {
    fn union<V: Clone>(
        root: &BTreeMap<String, V>,
        leaf: &BTreeMap<String, V>,
    ) -> BTreeMap<String, V> {
        let mut out = root.clone();
        out.extend(leaf.iter().map(|(k, v)| (k.clone(), v.clone())));
        out
    }
    let mut out = leaf.clone();
    out.name = joined_name(root.name.as_ref(), leaf.name.as_ref());
    for (slot, from) in [
        (&mut out.uri, &root.uri),
        (&mut out.scheme, &root.scheme),
        (&mut out.method, &root.method),
        (&mut out.authority, &root.authority),
    ] {
        if slot.is_none() {
            slot.clone_from(from);
        }
    }
    out.headers = union(&root.headers, &leaf.headers);
    out.without_headers = union(&root.without_headers, &leaf.without_headers);
    out.query_params = union(&root.query_params, &leaf.query_params);
    out.source_labels = union(&root.source_labels, &leaf.source_labels);
    if out.port.is_none() {
        out.port = root.port;
    }
    if out.source_namespace.is_none() {
        out.source_namespace.clone_from(&root.source_namespace);
    }
    if out.gateways.is_empty() {
        out.gateways.clone_from(&root.gateways);
    }
    if out.stat_prefix.is_none() {
        out.stat_prefix.clone_from(&root.stat_prefix);
    }
    out
}

/// Istio's `hasConflict`: the delegate's match must select a subset of what the root's does.
fn has_conflict(root: &HttpMatchRequest, leaf: &HttpMatchRequest) -> bool {
    let pairs = [
        (&root.uri, &leaf.uri),
        (&root.scheme, &leaf.scheme),
        (&root.method, &leaf.method),
        (&root.authority, &leaf.authority),
    ];
    if pairs
        .iter()
        .any(|(r, l)| string_match_conflict(r.as_ref(), l.as_ref()))
    {
        return true;
    }
    let map_conflict = |r: &BTreeMap<String, StringMatch>, l: &BTreeMap<String, StringMatch>| {
        l.iter()
            .any(|(k, lv)| string_match_conflict(r.get(k), Some(lv)))
    };
    if map_conflict(&root.headers, &leaf.headers)
        || map_conflict(&root.without_headers, &leaf.without_headers)
        || map_conflict(&root.query_params, &leaf.query_params)
    {
        return true;
    }
    if root.ignore_uri_case != leaf.ignore_uri_case {
        return true;
    }
    if let (Some(r), Some(l)) = (root.port, leaf.port)
        && r > 0
        && l > 0
        && r != l
    {
        return true;
    }
    if let Some(ns) = root.source_namespace.as_deref().filter(|ns| !ns.is_empty())
        && leaf.source_namespace.as_deref() != Some(ns)
    {
        return true;
    }
    if leaf
        .source_labels
        .iter()
        .any(|(k, v)| root.source_labels.get(k).is_some_and(|rv| rv != v))
    {
        return true;
    }
    if !root.gateways.is_empty() && !leaf.gateways.is_empty() {
        return root.gateways.len() < leaf.gateways.len()
            || leaf.gateways.iter().any(|g| !root.gateways.contains(g));
    }
    false
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// Istio's `stringMatchConflict`.
fn string_match_conflict(root: Option<&StringMatch>, leaf: Option<&StringMatch>) -> bool {
    let (Some(root), Some(leaf)) = (root, leaf) else {
        return false;
    };
    let (r_exact, r_prefix, r_regex) = (
        non_empty(&root.exact),
        non_empty(&root.prefix),
        non_empty(&root.regex),
    );
    let (l_exact, l_prefix, l_regex) = (
        non_empty(&leaf.exact),
        non_empty(&leaf.prefix),
        non_empty(&leaf.regex),
    );
    let any_leaf = l_exact.is_some() || l_prefix.is_some() || l_regex.is_some();
    let any_root = r_exact.is_some() || r_prefix.is_some() || r_regex.is_some();
    if r_regex.is_some() && any_leaf {
        return true;
    }
    if l_regex.is_some() && any_root {
        return true;
    }
    if let Some(exact) = r_exact {
        return l_prefix.is_some() || l_exact != Some(exact);
    }
    if let Some(prefix) = r_prefix {
        if let Some(l) = l_prefix {
            return !l.starts_with(prefix);
        }
        if let Some(l) = l_exact {
            return !l.starts_with(prefix);
        }
    }
    true
}

#[cfg(test)]
#[path = "delegate_tests.rs"]
mod tests;
