//! The security config of one workload: which AuthorizationPolicies and PeerAuthentications
//! apply to it (Istio's selection and precedence), translated into the proxy's model.
//! Pure functions of the store's resources and the workload's namespace and labels.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use mesh_api::security::authorization_policy::{self as api, Action};
use mesh_api::security::{self as sec, WorkloadSelector};
use mesh_api::{Object, Resource};
use mesh_proto::config::v1 as pb;
use pb::authorization_policy as ap;

/// Namespace of an object loaded without one (same as the registry's).
const DEFAULT_NAMESPACE: &str = "default";

pub(crate) fn namespace_of(meta: &mesh_api::ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
}

/// No selector, or every `matchLabels` entry present with the same value.
pub(crate) fn selects(
    selector: Option<&WorkloadSelector>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.is_none_or(|s| s.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// How a workload policy kind (AuthorizationPolicy, RequestAuthentication) is selected.
pub(crate) struct Selection<'a> {
    pub selector: Option<&'a WorkloadSelector>,
    /// `targetRef`/`targetRefs` set: Istio attaches such a policy to gateways and waypoints,
    /// never to sidecars.
    pub targets_ref: bool,
}

/// Istio's selection of a workload's policies of one kind (`kind` picks them out of the
/// store): those of the root namespace (mesh-wide without a selector, else to matching
/// workloads of every namespace) followed by those of the workload's namespace
/// (namespace-wide without a selector), each group sorted by name so the output does not
/// depend on the order of `resources`. Policies attached by `targetRef` are left out.
pub(crate) fn select<'a, T>(
    resources: &'a [Resource],
    namespace: &str,
    labels: &BTreeMap<String, String>,
    root_namespace: &str,
    kind: impl Fn(&'a Resource) -> Option<(&'a Object<T>, Selection<'a>)>,
) -> Vec<&'a Object<T>> {
    let scopes: &[&str] = if namespace == root_namespace {
        &[root_namespace]
    } else {
        &[root_namespace, namespace]
    };
    let mut out = Vec::new();
    for scope in scopes {
        let mut selected: Vec<&Object<T>> = resources
            .iter()
            .filter_map(&kind)
            .filter(|(o, how)| {
                namespace_of(&o.metadata) == *scope
                    && !how.targets_ref
                    && selects(how.selector, labels)
            })
            .map(|(o, _)| o)
            .collect();
        selected.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        out.extend(selected);
    }
    out
}

/// The AuthorizationPolicies of a workload (Istio's selection, [`select`]), in the proxy's
/// model.
pub fn policies_for(
    resources: &[Resource],
    namespace: &str,
    labels: &BTreeMap<String, String>,
    root_namespace: &str,
) -> Vec<pb::AuthorizationPolicy> {
    select(resources, namespace, labels, root_namespace, |r| match r {
        Resource::AuthorizationPolicy(o) => Some((
            o.as_ref(),
            Selection {
                selector: o.spec.selector.as_ref(),
                targets_ref: o.spec.target_ref.is_some() || !o.spec.target_refs.is_empty(),
            },
        )),
        _ => None,
    })
    .into_iter()
    .map(translate)
    .collect()
}

/// What selection and translation cannot honour in the AuthorizationPolicies, one line per
/// policy: a CUSTOM action (no external authorizer here, so it is enforced as DENY, see
/// [`translate`]) and `targetRef`s (gateways and waypoints, which this mesh does not run).
pub fn warnings(resources: &[Resource]) -> Vec<String> {
    resources
        .iter()
        .filter_map(|r| match r {
            Resource::AuthorizationPolicy(o) => Some(o),
            _ => None,
        })
        .filter_map(|o| {
            let name = format!("{}/{}", namespace_of(&o.metadata), o.metadata.name);
            if o.spec.target_ref.is_some() || !o.spec.target_refs.is_empty() {
                Some(format!(
                    "AuthorizationPolicy {name}: targetRef attaches it to a gateway or waypoint, which this mesh does not run; it applies to no sidecar"
                ))
            } else if o.spec.action == Action::Custom {
                let provider = o.spec.provider.as_ref().map_or("", |p| p.name.as_str());
                Some(format!(
                    "AuthorizationPolicy {name}: CUSTOM action with provider {provider:?}: no external authorizer is available, so requests matching its rules are denied (as Istio does for a CUSTOM policy whose provider it cannot use)"
                ))
            } else {
                None
            }
        })
        .collect()
}

/// One Istio AuthorizationPolicy as the proxy evaluates it. Values are carried as written;
/// the proxy checks them and rejects what it cannot enforce (`request.auth.*`).
///
/// CUSTOM delegates the decision to an external authorizer (`provider`); this mesh has none.
/// Istio, when it cannot use a CUSTOM policy's provider, generates a DENY policy with the same
/// rules ("deny-due-to-bad-CUSTOM-action"): fail closed. The same is done here, so a request
/// the operator wanted checked is never let through unchecked, and requests outside the
/// policy's rules are unaffected. [`warnings`] reports each such policy.
pub fn translate(o: &Object<sec::AuthorizationPolicy>) -> pb::AuthorizationPolicy {
    let namespace = namespace_of(&o.metadata);
    let action = match o.spec.action {
        Action::Allow => ap::Action::Allow,
        Action::Deny | Action::Custom => ap::Action::Deny,
        Action::Audit => ap::Action::Audit,
    };
    pb::AuthorizationPolicy {
        name: format!("{namespace}/{}", o.metadata.name),
        action: action as i32,
        rules: o
            .spec
            .rules
            .iter()
            .map(|r| ap::Rule {
                from: r
                    .from
                    .iter()
                    .map(|f| source(f.source.as_ref(), namespace))
                    .collect(),
                to: r
                    .to
                    .iter()
                    .map(|t| operation(t.operation.as_ref()))
                    .collect(),
                when: r.when.iter().map(condition).collect(),
            })
            .collect(),
    }
}

/// `serviceAccounts` ("sa" in the policy's namespace, or "ns/sa") become principal suffixes
/// `*/ns/<ns>/sa/<sa>`, any trust domain, as Istio matches them. Istio's validation forbids
/// combining them with `principals`, so adding them to that list keeps the meaning.
fn service_account_principals(
    accounts: &[String],
    namespace: &str,
) -> impl Iterator<Item = String> {
    accounts.iter().map(move |a| match a.split_once('/') {
        Some((ns, sa)) => format!("*/ns/{ns}/sa/{sa}"),
        None => format!("*/ns/{namespace}/sa/{a}"),
    })
}

fn source(s: Option<&api::Source>, namespace: &str) -> ap::Source {
    let Some(s) = s else {
        return ap::Source::default();
    };
    let chain = |list: &[String], accounts: &[String]| -> Vec<String> {
        list.iter()
            .cloned()
            .chain(service_account_principals(accounts, namespace))
            .collect()
    };
    ap::Source {
        principals: chain(&s.principals, &s.service_accounts),
        not_principals: chain(&s.not_principals, &s.not_service_accounts),
        request_principals: s.request_principals.clone(),
        not_request_principals: s.not_request_principals.clone(),
        namespaces: s.namespaces.clone(),
        not_namespaces: s.not_namespaces.clone(),
        ip_blocks: s.ip_blocks.clone(),
        not_ip_blocks: s.not_ip_blocks.clone(),
        remote_ip_blocks: s.remote_ip_blocks.clone(),
        not_remote_ip_blocks: s.not_remote_ip_blocks.clone(),
    }
}

fn operation(o: Option<&sec::Operation>) -> ap::Operation {
    let Some(o) = o else {
        return ap::Operation::default();
    };
    ap::Operation {
        hosts: o.hosts.clone(),
        not_hosts: o.not_hosts.clone(),
        ports: o.ports.clone(),
        not_ports: o.not_ports.clone(),
        methods: o.methods.clone(),
        not_methods: o.not_methods.clone(),
        paths: o.paths.clone(),
        not_paths: o.not_paths.clone(),
    }
}

fn condition(c: &sec::Condition) -> ap::Condition {
    ap::Condition {
        key: c.key.clone(),
        values: c.values.clone(),
        not_values: c.not_values.clone(),
    }
}

fn mode(m: Option<&sec::Mtls>) -> pb::MtlsMode {
    match m.map(|m| m.mode) {
        None | Some(sec::MtlsMode::Unset) => pb::MtlsMode::Unset,
        Some(sec::MtlsMode::Disable) => pb::MtlsMode::Disable,
        Some(sec::MtlsMode::Permissive) => pb::MtlsMode::Permissive,
        Some(sec::MtlsMode::Strict) => pb::MtlsMode::Strict,
    }
}

/// The PeerAuthentication in force for a workload, resolved as Istio composes it: a
/// workload-selector policy of its namespace beats the namespace-wide one, which beats the
/// mesh-wide one (root namespace, no selector); an UNSET level inherits from the one above;
/// PERMISSIVE when nothing is set. Port-level modes come from the workload policy only; an
/// UNSET port inherits the workload's resolved mode. Selector policies in the root namespace
/// apply to no workload, as in Istio. With several policies at one level the oldest wins:
/// Istio's order is creation timestamp (an object without one counts as oldest), then name,
/// then namespace.
///
/// Returns the workload mode and the port overrides sorted by port, all modes resolved.
pub fn mtls_for(
    resources: &[Resource],
    namespace: &str,
    labels: &BTreeMap<String, String>,
    root_namespace: &str,
) -> (pb::MtlsMode, Vec<pb::PortMtls>) {
    let mut mesh = None;
    let mut ns_wide = None;
    let mut workload = None;
    for r in resources {
        let Resource::PeerAuthentication(o) = r else {
            continue;
        };
        let ns = namespace_of(&o.metadata);
        let has_selector = o
            .spec
            .selector
            .as_ref()
            .is_some_and(|s| !s.match_labels.is_empty());
        let slot = match (has_selector, ns) {
            (false, ns) if ns == root_namespace => &mut mesh,
            (false, ns) if ns == namespace => &mut ns_wide,
            (true, ns) if ns == namespace && ns != root_namespace => &mut workload,
            _ => continue,
        };
        if has_selector && !selects(o.spec.selector.as_ref(), labels) {
            continue;
        }
        keep_oldest(slot, o);
    }

    let mut resolved = pb::MtlsMode::Permissive;
    for level in [mesh, ns_wide, workload].into_iter().flatten() {
        let m = mode(level.spec.mtls.as_ref());
        if m != pb::MtlsMode::Unset {
            resolved = m;
        }
    }
    let mut ports: Vec<pb::PortMtls> = workload
        .and_then(|w| w.spec.port_level_mtls.as_ref())
        .into_iter()
        .flatten()
        // Validation reports a bad port key; such an entry is skipped here.
        .filter_map(|(port, m)| {
            let port = port.parse::<u32>().ok()?;
            let m = match mode(Some(m)) {
                pb::MtlsMode::Unset => resolved,
                m => m,
            };
            Some(pb::PortMtls {
                port,
                mode: m as i32,
            })
        })
        .collect();
    ports.sort_by_key(|p| p.port);
    (resolved, ports)
}

/// The workloads whose PeerAuthentication is DISABLE on a port: callers' auto mTLS sends them
/// plaintext, as Istio's `mtlsChecker` drops such endpoints' `tlsMode`. Modes are resolved once
/// per workload (namespace, labels), and with the rule the workload's own proxy applies.
#[derive(Debug)]
pub struct MtlsDisabled<'a> {
    security: &'a [Resource],
    root_namespace: &'a str,
    modes: RefCell<WorkloadModes>,
}

type WorkloadModes = HashMap<(String, BTreeMap<String, String>), (pb::MtlsMode, Vec<pb::PortMtls>)>;

impl<'a> MtlsDisabled<'a> {
    /// `None` when no PeerAuthentication sets DISABLE (for a workload or a port), so no
    /// endpoint needs the check.
    pub fn new(security: &'a [Resource], root_namespace: &'a str) -> Option<Self> {
        let disable = |m: &sec::Mtls| m.mode == sec::MtlsMode::Disable;
        let any = security.iter().any(|r| {
            let Resource::PeerAuthentication(o) = r else {
                return false;
            };
            o.spec.mtls.as_ref().is_some_and(disable)
                || o.spec
                    .port_level_mtls
                    .iter()
                    .flatten()
                    .any(|(_, m)| disable(m))
        });
        any.then(|| Self {
            security,
            root_namespace,
            modes: RefCell::default(),
        })
    }

    /// Whether the workload (`namespace`, `labels`) takes plaintext only on `port`.
    pub fn on(&self, namespace: &str, labels: &BTreeMap<String, String>, port: u32) -> bool {
        let Ok(port) = u16::try_from(port) else {
            return false;
        };
        let mut modes = self.modes.borrow_mut();
        let (mode, ports) = modes
            .entry((namespace.to_string(), labels.clone()))
            .or_insert_with(|| mtls_for(self.security, namespace, labels, self.root_namespace));
        mesh_proxy::authz::effective_mtls(*mode, ports, port) == pb::MtlsMode::Disable
    }
}

fn keep_oldest<'a>(
    slot: &mut Option<&'a Object<sec::PeerAuthentication>>,
    o: &'a Object<sec::PeerAuthentication>,
) {
    // RFC 3339 timestamps in UTC compare as text; a missing one sorts first, as Istio's zero time.
    let key = |x: &'a Object<sec::PeerAuthentication>| {
        (
            x.metadata.creation_timestamp.as_deref().unwrap_or(""),
            x.metadata.name.as_str(),
            namespace_of(&x.metadata),
        )
    };
    if slot.is_none_or(|cur| key(o) < key(cur)) {
        *slot = Some(o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "istio-system";

    fn load(yaml: &str) -> Vec<Resource> {
        let (res, errs) = mesh_api::load_str("test.yaml", yaml);
        assert!(errs.is_empty(), "{errs:?}");
        res
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn ap(name: &str, ns: &str, selector: Option<&str>) -> String {
        let selector = selector
            .map(|s| format!("  selector: {{matchLabels: {{app: {s}}}}}\n"))
            .unwrap_or_default();
        format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
             metadata: {{name: {name}, namespace: {ns}}}\nspec:\n{selector}  action: DENY\n---\n"
        )
    }

    fn names(p: &[pb::AuthorizationPolicy]) -> Vec<&str> {
        p.iter().map(|p| p.name.as_str()).collect()
    }

    #[test]
    fn authorization_policy_selection() {
        let yaml = [
            ap("mesh-wide", ROOT, None),
            ap("root-httpbin", ROOT, Some("httpbin")),
            ap("ns-wide", "foo", None),
            ap("httpbin-only", "foo", Some("httpbin")),
            ap("sleep-only", "foo", Some("sleep")),
            ap("other-ns", "bar", None),
            ap("other-ns-httpbin", "bar", Some("httpbin")),
        ]
        .concat();
        let res = load(&yaml);
        let httpbin = labels(&[("app", "httpbin"), ("version", "v1")]);
        assert_eq!(
            names(&policies_for(&res, "foo", &httpbin, ROOT)),
            [
                "istio-system/mesh-wide",
                "istio-system/root-httpbin",
                "foo/httpbin-only",
                "foo/ns-wide"
            ]
        );
        let sleep = labels(&[("app", "sleep")]);
        assert_eq!(
            names(&policies_for(&res, "foo", &sleep, ROOT)),
            ["istio-system/mesh-wide", "foo/ns-wide", "foo/sleep-only"]
        );
        assert_eq!(
            names(&policies_for(&res, "baz", &labels(&[]), ROOT)),
            ["istio-system/mesh-wide"]
        );
        assert_eq!(
            names(&policies_for(&res, ROOT, &labels(&[]), ROOT)),
            ["istio-system/mesh-wide"]
        );
    }

    #[test]
    fn target_refs_are_not_for_sidecars() {
        let res = load(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
             metadata: {name: gw, namespace: foo}\n\
             spec:\n  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}]\n\
             \x20 action: DENY\n",
        );
        assert!(policies_for(&res, "foo", &labels(&[]), ROOT).is_empty());
    }

    #[test]
    fn translation_keeps_every_field() {
        let res = load(
            r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p, namespace: foo}
spec:
  action: AUDIT
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/foo/sa/sleep"]
        notPrincipals: ["*/sa/admin"]
        requestPrincipals: ["iss/sub"]
        notRequestPrincipals: ["iss/bad"]
        namespaces: ["foo"]
        notNamespaces: ["bar"]
        ipBlocks: ["198.18.0.0/15"]
        notIpBlocks: ["198.18.0.1"]
        remoteIpBlocks: ["2001:db8::/32"]
        notRemoteIpBlocks: ["2001:db8::1"]
    - source:
        serviceAccounts: ["sleep", "bar/client"]
    to:
    - operation:
        hosts: ["a.example"]
        notHosts: ["b.example"]
        ports: ["8080"]
        notPorts: ["9090"]
        methods: ["GET"]
        notMethods: ["POST"]
        paths: ["/a/*"]
        notPaths: ["/a/b"]
    when:
    - key: request.headers[x-a]
      values: ["1"]
      notValues: ["2"]
"#,
        );
        let p = &policies_for(&res, "foo", &labels(&[]), ROOT)[0];
        assert_eq!(p.name, "foo/p");
        assert_eq!(p.action(), ap::Action::Audit);
        let r = &p.rules[0];
        let s = &r.from[0];
        let one = |v: &[String], want: &str| assert_eq!(v, [want.to_string()]);
        one(&s.principals, "cluster.local/ns/foo/sa/sleep");
        one(&s.not_principals, "*/sa/admin");
        one(&s.request_principals, "iss/sub");
        one(&s.not_request_principals, "iss/bad");
        one(&s.namespaces, "foo");
        one(&s.not_namespaces, "bar");
        one(&s.ip_blocks, "198.18.0.0/15");
        one(&s.not_ip_blocks, "198.18.0.1");
        one(&s.remote_ip_blocks, "2001:db8::/32");
        one(&s.not_remote_ip_blocks, "2001:db8::1");
        assert_eq!(
            r.from[1].principals,
            ["*/ns/foo/sa/sleep", "*/ns/bar/sa/client"]
        );
        let o = &r.to[0];
        one(&o.hosts, "a.example");
        one(&o.not_hosts, "b.example");
        one(&o.ports, "8080");
        one(&o.not_ports, "9090");
        one(&o.methods, "GET");
        one(&o.not_methods, "POST");
        one(&o.paths, "/a/*");
        one(&o.not_paths, "/a/b");
        assert_eq!(r.when[0].key, "request.headers[x-a]");
        one(&r.when[0].values, "1");
        one(&r.when[0].not_values, "2");
    }

    #[test]
    fn actions_translate() {
        for (yaml, want) in [
            ("ALLOW", ap::Action::Allow),
            ("DENY", ap::Action::Deny),
            ("AUDIT", ap::Action::Audit),
            // No external authorizer: fail closed, as Istio does for an unusable provider.
            ("CUSTOM", ap::Action::Deny),
        ] {
            let provider = if yaml == "CUSTOM" {
                "  provider: {name: ext}\n"
            } else {
                ""
            };
            let res = load(&format!(
                "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
                 metadata: {{name: p, namespace: foo}}\nspec:\n  action: {yaml}\n{provider}"
            ));
            assert_eq!(
                policies_for(&res, "foo", &labels(&[]), ROOT)[0].action(),
                want
            );
        }
    }

    #[test]
    fn custom_keeps_its_rules_and_is_reported() {
        let res = load(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
             metadata: {name: ext, namespace: foo}\n\
             spec:\n  action: CUSTOM\n  provider: {name: opa}\n\
             \x20 rules: [{to: [{operation: {paths: [/admin/*]}}]}]\n",
        );
        let p = &policies_for(&res, "foo", &labels(&[]), ROOT)[0];
        assert_eq!(p.action(), ap::Action::Deny);
        // Only the requests the policy covers are denied, not every request.
        assert_eq!(p.rules[0].to[0].paths, ["/admin/*"]);
        let w = warnings(&res);
        assert_eq!(w.len(), 1);
        assert!(
            w[0].contains("foo/ext") && w[0].contains("\"opa\""),
            "{w:?}"
        );
        assert!(warnings(&load(&ap("plain", "foo", None))).is_empty());
    }

    #[test]
    fn target_ref_policies_are_reported() {
        let res = load(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
             metadata: {name: gw, namespace: foo}\n\
             spec:\n  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}]\n\
             \x20 action: DENY\n",
        );
        let w = warnings(&res);
        assert_eq!(w.len(), 1);
        assert!(
            w[0].contains("foo/gw") && w[0].contains("targetRef"),
            "{w:?}"
        );
    }

    #[test]
    fn selection_order_does_not_depend_on_input_order() {
        let yaml = [
            ap("b", "foo", None),
            ap("a", "foo", None),
            ap("z", ROOT, None),
        ]
        .concat();
        let got = policies_for(&load(&yaml), "foo", &labels(&[]), ROOT);
        assert_eq!(names(&got), ["istio-system/z", "foo/a", "foo/b"]);
    }

    #[test]
    fn istio_valid_policies_translate() {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/conformance/istio/pkg/config/validation/testdata/crds"
        );
        let (res, errs) = mesh_api::load_path(format!("{dir}/authz-valid.yaml"));
        assert!(errs.is_empty(), "{errs:?}");
        let count = res
            .iter()
            .filter(|r| matches!(r, Resource::AuthorizationPolicy(_)))
            .count();
        assert_eq!(count, 2);
        // Both are in the default namespace; "full" selects app=httpbin.
        let got = policies_for(&res, "default", &labels(&[("app", "httpbin")]), ROOT);
        assert_eq!(
            names(&got),
            [
                "default/full",
                "default/service-account-and-namespace-principal-split"
            ]
        );
        let full = &got[0].rules[0];
        assert_eq!(full.from[0].principals.len(), 4);
        assert_eq!(full.to[0].paths.len(), 6);
        assert_eq!(full.when.len(), 14);
        let split = &got[1].rules[0];
        assert_eq!(
            split.from[0].principals,
            ["*/ns/baz/sa/sa", "*/ns/default/sa/sa"]
        );
        assert_eq!(split.from[1].principals, ["bar"]);
        assert_eq!(split.from[2].namespaces, ["bar"]);
    }

    fn pa(
        name: &str,
        ns: &str,
        selector: Option<&str>,
        mode: &str,
        ports: &[(u32, &str)],
    ) -> String {
        let selector = selector
            .map(|s| format!("  selector: {{matchLabels: {{app: {s}}}}}\n"))
            .unwrap_or_default();
        let mtls = if mode.is_empty() {
            String::new()
        } else {
            format!("  mtls: {{mode: {mode}}}\n")
        };
        let ports = if ports.is_empty() {
            String::new()
        } else {
            let entries: Vec<String> = ports
                .iter()
                .map(|(p, m)| format!("\"{p}\": {{mode: {m}}}"))
                .collect();
            format!("  portLevelMtls: {{{}}}\n", entries.join(", "))
        };
        format!(
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
             metadata: {{name: {name}, namespace: {ns}}}\nspec:\n{selector}{mtls}{ports}---\n"
        )
    }

    fn port(port: u32, mode: pb::MtlsMode) -> pb::PortMtls {
        pb::PortMtls {
            port,
            mode: mode as i32,
        }
    }

    fn httpbin() -> BTreeMap<String, String> {
        labels(&[("app", "httpbin")])
    }

    #[test]
    fn mtls_default_is_permissive() {
        assert_eq!(
            mtls_for(&[], "foo", &httpbin(), ROOT),
            (pb::MtlsMode::Permissive, vec![])
        );
    }

    #[test]
    fn mtls_precedence() {
        let mesh = pa("mesh", ROOT, None, "STRICT", &[]);
        let ns = pa("ns", "foo", None, "DISABLE", &[]);
        let wl = pa("wl", "foo", Some("httpbin"), "PERMISSIVE", &[]);
        let other = pa("other", "bar", None, "DISABLE", &[]);
        let m = |yaml: &str, ns: &str| mtls_for(&load(yaml), ns, &httpbin(), ROOT).0;
        assert_eq!(m(&mesh, "foo"), pb::MtlsMode::Strict);
        assert_eq!(
            m(&[mesh.clone(), other.clone()].concat(), "foo"),
            pb::MtlsMode::Strict
        );
        assert_eq!(
            m(&[mesh.clone(), ns.clone()].concat(), "foo"),
            pb::MtlsMode::Disable
        );
        assert_eq!(
            m(&[mesh.clone(), ns.clone(), wl.clone()].concat(), "foo"),
            pb::MtlsMode::Permissive
        );
        // The workload policy selects app=httpbin only.
        let sleep = mtls_for(
            &load(&[ns.clone(), wl].concat()),
            "foo",
            &labels(&[("app", "sleep")]),
            ROOT,
        );
        assert_eq!(sleep.0, pb::MtlsMode::Disable);
        // A selector in the root namespace applies to no workload.
        let root_sel = pa("root-sel", ROOT, Some("httpbin"), "DISABLE", &[]);
        assert_eq!(m(&[mesh, root_sel].concat(), "foo"), pb::MtlsMode::Strict);
    }

    #[test]
    fn disabled_for_callers_by_workload_then_port() {
        let strict_port_off = load(&pa(
            "wl",
            "foo",
            Some("httpbin"),
            "STRICT",
            &[(8080, "DISABLE")],
        ));
        let d = MtlsDisabled::new(&strict_port_off, ROOT).unwrap();
        assert!(d.on("foo", &httpbin(), 8080));
        assert!(!d.on("foo", &httpbin(), 9090));
        let ns_off = load(&pa("ns", "foo", None, "DISABLE", &[]));
        let d = MtlsDisabled::new(&ns_off, ROOT).unwrap();
        assert!(d.on("foo", &httpbin(), 9090));
        assert!(!d.on("bar", &httpbin(), 9090));
        let strict = load(&pa("mesh", ROOT, None, "STRICT", &[]));
        assert!(MtlsDisabled::new(&strict, ROOT).is_none());
    }

    #[test]
    fn mtls_unset_inherits() {
        let mesh = pa("mesh", ROOT, None, "STRICT", &[]);
        let ns = pa("ns", "foo", None, "UNSET", &[]);
        let wl = pa("wl", "foo", Some("httpbin"), "", &[(8080, "DISABLE")]);
        let (mode, ports) = mtls_for(&load(&[mesh, ns, wl].concat()), "foo", &httpbin(), ROOT);
        assert_eq!(mode, pb::MtlsMode::Strict);
        assert_eq!(ports, [port(8080, pb::MtlsMode::Disable)]);
    }

    #[test]
    fn mtls_port_level() {
        let ns = pa("ns", "foo", None, "STRICT", &[]);
        let wl = pa(
            "wl",
            "foo",
            Some("httpbin"),
            "PERMISSIVE",
            &[(9000, "STRICT"), (80, "DISABLE"), (8080, "UNSET")],
        );
        let (mode, ports) = mtls_for(&load(&[ns.clone(), wl].concat()), "foo", &httpbin(), ROOT);
        assert_eq!(mode, pb::MtlsMode::Permissive);
        assert_eq!(
            ports,
            [
                port(80, pb::MtlsMode::Disable),
                port(8080, pb::MtlsMode::Permissive),
                port(9000, pb::MtlsMode::Strict)
            ]
        );
        // Port-level settings of a namespace-wide policy are not used (Istio requires a
        // selector for them).
        let (_, ports) = mtls_for(&load(&ns), "foo", &httpbin(), ROOT);
        assert!(ports.is_empty());
    }

    #[test]
    fn mtls_oldest_wins_at_one_level() {
        let a = pa("a", "foo", None, "STRICT", &[]).replace(
            "namespace: foo}",
            "namespace: foo, creationTimestamp: '2026-01-02T00:00:00Z'}",
        );
        let b = pa("b", "foo", None, "DISABLE", &[]).replace(
            "namespace: foo}",
            "namespace: foo, creationTimestamp: '2026-01-01T00:00:00Z'}",
        );
        let (mode, _) = mtls_for(&load(&[a, b].concat()), "foo", &httpbin(), ROOT);
        assert_eq!(mode, pb::MtlsMode::Disable);
    }

    #[test]
    fn mtls_same_age_goes_by_name_and_no_timestamp_is_oldest() {
        // Equal (here: absent) timestamps: Istio orders by name, whatever the input order.
        let b = pa("b", "foo", None, "STRICT", &[]);
        let a = pa("a", "foo", None, "DISABLE", &[]);
        let (mode, _) = mtls_for(&load(&[b.clone(), a].concat()), "foo", &httpbin(), ROOT);
        assert_eq!(mode, pb::MtlsMode::Disable);
        // An object without a timestamp is older than one with.
        let dated = pa("a", "foo", None, "DISABLE", &[]).replace(
            "namespace: foo}",
            "namespace: foo, creationTimestamp: '2026-01-01T00:00:00Z'}",
        );
        let (mode, _) = mtls_for(&load(&[dated, b].concat()), "foo", &httpbin(), ROOT);
        assert_eq!(mode, pb::MtlsMode::Strict);
    }

    #[test]
    fn mtls_oldest_workload_policy_wins_and_brings_its_ports() {
        let old = pa(
            "old",
            "foo",
            Some("httpbin"),
            "STRICT",
            &[(8080, "DISABLE")],
        )
        .replace(
            "namespace: foo}",
            "namespace: foo, creationTimestamp: '2026-01-01T00:00:00Z'}",
        );
        let new = pa(
            "new",
            "foo",
            Some("httpbin"),
            "DISABLE",
            &[(9090, "STRICT")],
        )
        .replace(
            "namespace: foo}",
            "namespace: foo, creationTimestamp: '2026-02-01T00:00:00Z'}",
        );
        let (mode, ports) = mtls_for(&load(&[new, old].concat()), "foo", &httpbin(), ROOT);
        assert_eq!(mode, pb::MtlsMode::Strict);
        assert_eq!(ports, [port(8080, pb::MtlsMode::Disable)]);
    }

    #[test]
    fn mtls_in_the_root_namespace() {
        // For a workload of the root namespace, its namespace-wide policy is the mesh policy.
        let mesh = pa("mesh", ROOT, None, "STRICT", &[]);
        assert_eq!(
            mtls_for(&load(&mesh), ROOT, &httpbin(), ROOT).0,
            pb::MtlsMode::Strict
        );
    }
}
