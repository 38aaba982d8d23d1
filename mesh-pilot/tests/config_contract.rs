//! The contract between validation, pilot and the proxy: every set of resources that
//! validates is translated by pilot into per-proxy configs that the proxy's own compile step
//! accepts. Inputs: every valid document of Istio's conformance data, the examples, and
//! generated VirtualServices and AuthorizationPolicies over the whole vocabulary that Istio
//! accepts (retry conditions, condition keys, source and operation fields).
//!
//! Each input is given a world to be translated in: a ServiceEntry for every host its
//! resources name and a WorkloadEntry for every namespace and every workload selector, so
//! that routes, retry policies and authorization policies all reach some proxy's config.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mesh_api::Resource;
use mesh_pilot::registry::Registry;
use mesh_pilot::translate::{MeshIndex, ProxyContext, ROOT_NAMESPACE, resolve_host, translate};
use mesh_proto::config::v1 as pb;
use mesh_proto::discovery::v1::ProxyAddresses;
use proptest::prelude::*;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The proxy's compile step, as a proxy runs it on a config it receives (without reading
/// the proxy's certificate files, which are not on this machine).
fn proxy_accepts(cfg: &pb::ProxyConfig) -> Result<(), String> {
    mesh_proxy::config::check(cfg)
        .map(drop)
        .map_err(|e| e.to_string())
}

fn namespace_of(meta: &mesh_api::ObjectMeta) -> String {
    meta.namespace.clone().unwrap_or_else(|| "default".into())
}

/// A concrete DNS name a ServiceEntry can carry (no wildcards, no IPs, no gateway refs).
fn concrete_host(h: &str) -> Option<&str> {
    let ok = !h.is_empty()
        && !h.contains('*')
        && !h.contains('/')
        && h.parse::<std::net::IpAddr>().is_err();
    ok.then_some(h)
}

/// Hosts (fully qualified, as the registry names services) and workload selectors that
/// `resources` mention, by namespace.
#[derive(Default)]
struct Needs {
    hosts: BTreeSet<(String, String)>,
    selectors: BTreeSet<(String, BTreeMap<String, String>)>,
    namespaces: BTreeSet<String>,
}

impl Needs {
    fn of(resources: &[Resource]) -> Needs {
        let mut n = Needs::default();
        n.namespaces.insert("default".into());
        n.namespaces.insert(ROOT_NAMESPACE.into());
        for r in resources {
            match r {
                Resource::VirtualService(o) => {
                    let ns = namespace_of(&o.metadata);
                    n.namespaces.insert(ns.clone());
                    let destinations = o
                        .spec
                        .http
                        .iter()
                        .flat_map(|h| h.route.iter().map(|d| &d.destination))
                        .chain(
                            o.spec
                                .tcp
                                .iter()
                                .flat_map(|t| t.route.iter().map(|d| &d.destination)),
                        )
                        .chain(
                            o.spec
                                .tls
                                .iter()
                                .flat_map(|t| t.route.iter().map(|d| &d.destination)),
                        )
                        .map(|d| d.host.as_str());
                    for h in o.spec.hosts.iter().map(String::as_str).chain(destinations) {
                        if let Some(h) = concrete_host(h) {
                            n.hosts.insert((ns.clone(), resolve_host(h, &ns)));
                        }
                    }
                }
                Resource::DestinationRule(o) => {
                    let ns = namespace_of(&o.metadata);
                    n.namespaces.insert(ns.clone());
                    if let Some(h) = concrete_host(&o.spec.host) {
                        n.hosts.insert((ns.clone(), resolve_host(h, &ns)));
                    }
                }
                Resource::AuthorizationPolicy(o) => {
                    let ns = namespace_of(&o.metadata);
                    n.namespaces.insert(ns.clone());
                    if let Some(s) = &o.spec.selector {
                        n.selectors.insert((ns, s.match_labels.clone()));
                    }
                }
                Resource::PeerAuthentication(o) => {
                    n.namespaces.insert(namespace_of(&o.metadata));
                }
                Resource::Telemetry(o) => {
                    let ns = namespace_of(&o.metadata);
                    n.namespaces.insert(ns.clone());
                    if let Some(s) = &o.spec.selector {
                        n.selectors.insert((ns, s.match_labels.clone()));
                    }
                }
                Resource::LocalRateLimit(o) => {
                    let ns = namespace_of(&o.metadata);
                    n.namespaces.insert(ns.clone());
                    if let Some(s) = &o.spec.workload_selector {
                        n.selectors.insert((ns, s.match_labels.clone()));
                    }
                }
                Resource::Sidecar(o) => {
                    let ns = namespace_of(&o.metadata);
                    n.namespaces.insert(ns.clone());
                    if let Some(s) = &o.spec.workload_selector {
                        n.selectors.insert((ns, s.labels.clone()));
                    }
                }
                _ => {}
            }
        }
        n
    }

    /// ServiceEntries and WorkloadEntries for what the resources need, as YAML.
    fn world(&self) -> String {
        let mut out = String::new();
        for (i, (ns, host)) in self.hosts.iter().enumerate() {
            out += &format!(
                "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n\
                 metadata: {{name: contract-se-{i}, namespace: {ns}}}\n\
                 spec:\n  hosts: [\"{host}\"]\n  location: MESH_INTERNAL\n  resolution: STATIC\n\
                 \x20 ports:\n\
                 \x20 - {{number: 80, name: http, protocol: HTTP}}\n\
                 \x20 - {{number: 9080, name: http-app, protocol: HTTP}}\n\
                 \x20 - {{number: 443, name: tls, protocol: TLS}}\n\
                 \x20 - {{number: 3306, name: tcp-db, protocol: TCP}}\n\
                 \x20 endpoints: [{{address: 198.18.1.{}, labels: {{version: v1}}}}]\n---\n",
                i % 250 + 1
            );
        }
        let mut workloads: Vec<(String, BTreeMap<String, String>)> = self
            .namespaces
            .iter()
            .map(|ns| (ns.clone(), BTreeMap::new()))
            .collect();
        workloads.extend(self.selectors.iter().cloned());
        for (i, (ns, labels)) in workloads.iter().enumerate() {
            let labels: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("\"{k}\": \"{v}\""))
                .collect();
            out += &format!(
                "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n\
                 metadata: {{name: contract-we-{i}, namespace: {ns}}}\n\
                 spec:\n  address: 198.18.2.{}\n  labels: {{{}}}\n  serviceAccount: sa\n---\n",
                i % 250 + 1,
                labels.join(", ")
            );
        }
        out
    }
}

/// Translates `resources` for every workload of their world and compiles each config with
/// the proxy's compile step. Returns the failures, naming the proxy.
fn failures(resources: Vec<Resource>) -> Vec<String> {
    checked(resources).0
}

/// [`failures`], and the configs that were checked.
fn checked(resources: Vec<Resource>) -> (Vec<String>, Vec<pb::ProxyConfig>) {
    let world = Needs::of(&resources).world();
    let (extra, errors) = mesh_api::load_str("world.yaml", &world);
    assert!(
        errors.is_empty(),
        "the test's own world is valid: {errors:?}"
    );
    let mut all = resources;
    all.extend(extra);
    let index = MeshIndex::new(&all, Arc::new(Registry::build(&all)));
    let addresses = ProxyAddresses {
        outbound: "127.0.0.1:15001".into(),
        inbound: "127.0.0.1:15006".into(),
        application: "127.0.0.1:8080".into(),
        transparent: true,
        gateway: None,
    };
    let mut out = Vec::new();
    let mut configs = Vec::new();
    for workload in index.registry().workloads() {
        let proxy = ProxyContext {
            id: &workload.name,
            workload,
            addresses: &addresses,
        };
        let translated = translate(&index, &proxy).expect("addresses are valid");
        if let Err(e) = proxy_accepts(&translated.config) {
            out.push(format!(
                "proxy {}/{}: {e}",
                workload.namespace, workload.name
            ));
        }
        configs.push(translated.config);
    }
    (out, configs)
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
}

/// Every file of Istio's conformance data, alone: its valid documents.
#[test]
fn every_valid_conformance_document_compiles_in_the_proxy() {
    let mut files = Vec::new();
    yaml_files(&repo_root().join("tests/conformance/istio"), &mut files);
    assert!(files.len() > 50, "conformance data found: {}", files.len());
    let mut broken = Vec::new();
    let mut translated_files = 0;
    for file in &files {
        let (resources, _invalid) = mesh_api::load_path(file);
        if resources.is_empty() {
            continue;
        }
        translated_files += 1;
        for f in failures(resources) {
            broken.push(format!("{}: {f}", file.display()));
        }
    }
    assert!(
        translated_files > 30,
        "files with valid documents: {translated_files}"
    );
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// Each example directory (bookinfo, tcp-echo) as one config set, and the bookinfo samples
/// all together, as an operator applies them.
#[test]
fn the_examples_and_the_bookinfo_samples_compile_in_the_proxy() {
    let mut sets: Vec<(String, Vec<PathBuf>)> = Vec::new();
    for example in ["bookinfo", "tcp-echo"] {
        let mut files = Vec::new();
        yaml_files(&repo_root().join("examples").join(example), &mut files);
        sets.push((example.into(), files));
    }
    let mut samples = Vec::new();
    yaml_files(
        &repo_root().join("tests/conformance/istio/samples/bookinfo/networking"),
        &mut samples,
    );
    sets.push(("bookinfo samples".into(), samples));
    let mut broken = Vec::new();
    for (name, files) in sets {
        let mut resources = Vec::new();
        for f in &files {
            resources.extend(mesh_api::load_path(f).0);
        }
        assert!(!resources.is_empty(), "{name}: no resources");
        broken.extend(
            failures(resources)
                .into_iter()
                .map(|f| format!("{name}: {f}")),
        );
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
    // The proxy's own example config.
    let local = repo_root().join("examples/local-proxy/config.yaml");
    let cfg = mesh_proxy::config::load_config_file(&local).expect("loads");
    proxy_accepts(&cfg).expect("examples/local-proxy/config.yaml compiles");
}

/// Every retry condition Istio's validation accepts, Envoy's and bare status codes.
const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
    "503",
    "429",
];

/// Every condition key Istio documents, with values of the right shape for it.
const CONDITIONS: &[(&str, &[&str])] = &[
    ("source.ip", &["198.18.0.1", "198.18.0.0/15"]),
    ("remote.ip", &["198.18.0.1", "2001:db8::/32"]),
    ("source.namespace", &["foo", "foo-*", "*"]),
    ("source.principal", &["cluster.local/ns/foo/sa/bar", "*"]),
    ("source.serviceAccount", &["foo/bar", "bar"]),
    ("request.headers[x-user]", &["alice", "a*", "*"]),
    ("request.auth.principal", &["iss/sub", "*"]),
    ("request.auth.audiences", &["aud", "*"]),
    ("request.auth.presenter", &["client", "*"]),
    ("request.auth.claims[groups]", &["admin", "*"]),
    ("request.auth.claims[nested][key]", &["v", "*"]),
    ("destination.ip", &["198.18.0.1", "198.18.0.0/16"]),
    ("destination.port", &["8080", "9090"]),
    ("connection.sni", &["www.example.com", "*.example.com"]),
    (
        "experimental.envoy.filters.network.mysql_proxy[db.table]",
        &["[update]"],
    ),
];

const SOURCE_FIELDS: &[(&str, &[&str])] = &[
    ("principals", &["cluster.local/ns/foo/sa/bar", "*"]),
    ("notPrincipals", &["*/sa/admin"]),
    ("requestPrincipals", &["iss/sub", "*"]),
    ("notRequestPrincipals", &["iss/*"]),
    ("namespaces", &["foo", "*"]),
    ("notNamespaces", &["bar"]),
    ("ipBlocks", &["198.18.0.0/15"]),
    ("notIpBlocks", &["198.18.0.1"]),
    ("remoteIpBlocks", &["2001:db8::/32"]),
    ("notRemoteIpBlocks", &["2001:db8::1"]),
];

const OPERATION_FIELDS: &[(&str, &[&str])] = &[
    ("hosts", &["a.example", "*.example"]),
    ("notHosts", &["b.example"]),
    ("ports", &["8080"]),
    ("notPorts", &["9090"]),
    ("methods", &["GET", "*"]),
    ("notMethods", &["POST"]),
    ("paths", &["/a/*", "/api/{*}/x", "/{**}/end"]),
    ("notPaths", &["/a/b"]),
];

fn json_list(values: &[&str]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

fn pick<'a>(table: &'a [(&'a str, &'a [&'a str])]) -> impl Strategy<Value = (String, String)> + 'a {
    (0..table.len(), any::<prop::sample::Index>()).prop_map(move |(i, v)| {
        let (key, values) = table[i];
        let value = values[v.index(values.len())];
        (key.to_string(), json_list(&[value]))
    })
}

fn virtual_service() -> impl Strategy<Value = String> {
    (
        prop::sample::subsequence(RETRY_ON, 1..5),
        1..4u32,
        any::<bool>(),
    )
        .prop_map(|(on, attempts, per_try)| {
            let per_try = if per_try { ", perTryTimeout: 2s" } else { "" };
            format!(
                "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
                 metadata: {{name: gen, namespace: foo}}\n\
                 spec:\n  hosts: [reviews]\n  http:\n\
                 \x20 - route: [{{destination: {{host: reviews}}}}]\n\
                 \x20   retries: {{attempts: {attempts}, retryOn: \"{}\"{per_try}}}\n",
                on.join(",")
            )
        })
}

fn authorization_policy() -> impl Strategy<Value = String> {
    let action = prop::sample::select(vec!["ALLOW", "DENY", "AUDIT"]);
    let rule = (
        prop::collection::vec(pick(SOURCE_FIELDS), 0..3),
        prop::collection::vec(pick(OPERATION_FIELDS), 0..3),
        prop::collection::vec((pick(CONDITIONS), any::<bool>()), 0..3),
    )
        .prop_map(|(from, to, when)| {
            let mut r = String::from("  - {");
            let mut parts = Vec::new();
            if !from.is_empty() {
                let fields: Vec<String> = from.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                parts.push(format!("from: [{{source: {{{}}}}}]", fields.join(", ")));
            }
            if !to.is_empty() {
                let fields: Vec<String> = to.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                parts.push(format!("to: [{{operation: {{{}}}}}]", fields.join(", ")));
            }
            if !when.is_empty() {
                let conds: Vec<String> = when
                    .iter()
                    .map(|((k, v), not)| {
                        let field = if *not { "notValues" } else { "values" };
                        format!("{{key: \"{k}\", {field}: {v}}}")
                    })
                    .collect();
                parts.push(format!("when: [{}]", conds.join(", ")));
            }
            r += &parts.join(", ");
            r += "}\n";
            r
        });
    (
        action,
        prop::collection::vec(rule, 0..3),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(action, rules, root, selector)| {
            let ns = if root { ROOT_NAMESPACE } else { "foo" };
            let selector = if selector {
                "  selector: {matchLabels: {app: reviews}}\n"
            } else {
                ""
            };
            let rules = if rules.is_empty() {
                String::new()
            } else {
                format!("  rules:\n{}", rules.concat())
            };
            format!(
                "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
                 metadata: {{name: gen, namespace: {ns}}}\n\
                 spec:\n{selector}  action: {action}\n{rules}"
            )
        })
}

/// Pieces of access-log filters, valid and not: what validates must be what the proxy runs.
const FILTER_PIECES: &[&str] = &[
    "response.code >= 400",
    "response.code == 503",
    "404 != response.code",
    "request.headers['x-debug'] == 'on'",
    "'1' != request.headers[\"X-Tenant\"]",
    "true",
    "false",
    "!(response.code < 500)",
    "response.code in [500]",
    "response.code >",
    "response.size > 10",
    "request.headers['a'] > 'b'",
    "(response.code > 1",
];

fn telemetry() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop::sample::select(FILTER_PIECES), 1..4),
        prop::collection::vec(prop::sample::select(vec!["&&", "||"]), 3),
        prop::sample::select(vec!["envoy", "envoy-json", "otel"]),
        prop::sample::select(vec!["CLIENT", "SERVER", "CLIENT_AND_SERVER"]),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(pieces, ops, provider, mode, root, selector)| {
            let mut filter = pieces[0].to_string();
            for (piece, op) in pieces[1..].iter().zip(ops) {
                filter = format!("{filter} {op} {piece}");
            }
            let ns = if root { ROOT_NAMESPACE } else { "foo" };
            let selector = if selector {
                "  selector: {matchLabels: {app: reviews}}\n"
            } else {
                ""
            };
            format!(
                "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\n\
                 metadata: {{name: gen, namespace: {ns}}}\n\
                 spec:\n{selector}  accessLogging:\n\
                 \x20 - providers: [{{name: {provider}}}]\n\
                 \x20   match: {{mode: {mode}}}\n\
                 \x20   filter: {{expression: {filter:?}}}\n"
            )
        })
}

/// Tag values: the ones the proxy evaluates and others validation only warns about.
const TAG_VALUES: &[&str] = &[
    "'books'",
    "\"x\"",
    "''",
    "request.host",
    "request.method",
    "request.headers['X-Tenant']",
    "request.headers['a b']",
    "request.headers[x]",
    "string(destination.port)",
    "request.path",
    "'",
    "",
];

const TAG_NAMES: &[&str] = &[
    "team",
    "response_code",
    "source_principal",
    "grpc_response_status",
    "not_a_standard_label",
    "bad-name",
    "__reserved",
    "9lives",
];

const METRIC_NAMES: &[&str] = &[
    "ALL_METRICS",
    "REQUEST_COUNT",
    "REQUEST_DURATION",
    "REQUEST_SIZE",
    "RESPONSE_SIZE",
    "GRPC_REQUEST_MESSAGES",
    "GRPC_RESPONSE_MESSAGES",
    "TCP_SENT_BYTES",
    "TCP_OPENED_CONNECTIONS",
];

fn metrics_override() -> impl Strategy<Value = String> {
    (
        prop::sample::select(METRIC_NAMES),
        prop::sample::select(vec!["CLIENT", "SERVER", "CLIENT_AND_SERVER"]),
        prop::option::of(any::<bool>()),
        prop::collection::vec(
            (
                prop::sample::select(TAG_NAMES),
                any::<bool>(),
                prop::sample::select(TAG_VALUES),
            ),
            0..4,
        ),
    )
        .prop_map(|(metric, mode, disabled, tags)| {
            let mut out = format!("    - match: {{metric: {metric}, mode: {mode}}}\n");
            if let Some(d) = disabled {
                out += &format!("      disabled: {d}\n");
            }
            if !tags.is_empty() {
                out += "      tagOverrides:\n";
                for (name, remove, value) in tags {
                    if remove {
                        out += &format!("        {name:?}: {{operation: REMOVE}}\n");
                    } else {
                        out += &format!("        {name:?}: {{value: {value:?}}}\n");
                    }
                }
            }
            out
        })
}

/// A mesh-wide, a namespace-wide and a workload Telemetry with metrics overrides.
fn metrics_telemetries() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::collection::vec(metrics_override(), 1..4), 3).prop_map(|layers| {
        let places = [
            (ROOT_NAMESPACE, ""),
            ("foo", ""),
            ("foo", "  selector: {matchLabels: {app: reviews}}\n"),
        ];
        places
            .iter()
            .zip(layers)
            .enumerate()
            .map(|(i, ((ns, selector), overrides))| {
                format!(
                    "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\n\
                         metadata: {{name: gen{i}, namespace: {ns}}}\n\
                         spec:\n{selector}  metrics:\n  - overrides:\n{}",
                    overrides.concat()
                )
            })
            .collect::<Vec<_>>()
            .join("---\n")
    })
}

/// Path and method conditions: exact, prefix and regex, with regexes that do not compile.
const RATE_LIMIT_CONDITIONS: &[&str] = &[
    "{prefix: /login}",
    "{exact: /}",
    "{exact: ''}",
    "{regex: '/api/v[0-9]+/.*'}",
    "{regex: '(?i)/Login'}",
    "{regex: '('}",
    "{regex: '[z-a]'}",
    "{regex: '(?x)/a#'}",
    "{}",
    "{exact: GET}",
    "{prefix: P}",
    "{regex: 'GET|POST'}",
];

/// LocalRateLimits over the whole schema (rates, bursts, units, routes and their matches),
/// valid and not, mesh-wide, namespace-wide and with a selector.
fn local_rate_limit() -> impl Strategy<Value = String> {
    let rate = prop::sample::select(vec![0u32, 1, 2, 10, 1000, u32::MAX]);
    let burst = prop::option::of(prop::sample::select(vec![0u32, 1, 5, 1000, u32::MAX]));
    let unit = prop::option::of(prop::sample::select(vec!["SECOND", "MINUTE", "HOUR"]));
    let condition = prop::option::of(prop::sample::select(RATE_LIMIT_CONDITIONS));
    let route = (
        prop::collection::vec((condition.clone(), condition), 0..3),
        rate.clone(),
        burst.clone(),
        unit.clone(),
    );
    (
        rate,
        burst,
        unit,
        prop::collection::vec(route, 0..3),
        prop::sample::select(vec![ROOT_NAMESPACE, "foo"]),
        any::<bool>(),
    )
        .prop_map(|(rate, burst, unit, routes, ns, selector)| {
            let mut spec = format!("  requestsPerUnit: {rate}\n");
            if let Some(u) = unit {
                spec += &format!("  unit: {u}\n");
            }
            if let Some(b) = burst {
                spec += &format!("  burst: {b}\n");
            }
            if selector {
                spec += "  workloadSelector: {matchLabels: {app: reviews}}\n";
            }
            if !routes.is_empty() {
                spec += "  routes:\n";
            }
            for (matches, rate, burst, unit) in routes {
                let matches: Vec<String> = matches
                    .iter()
                    .map(|(uri, method)| {
                        let fields: Vec<String> = [("uri", uri), ("method", method)]
                            .iter()
                            .filter_map(|(k, v)| v.map(|v| format!("{k}: {v}")))
                            .collect();
                        format!("{{{}}}", fields.join(", "))
                    })
                    .collect();
                spec += &format!(
                    "  - {{match: [{}], requestsPerUnit: {rate}{}{}}}\n",
                    matches.join(", "),
                    burst.map(|b| format!(", burst: {b}")).unwrap_or_default(),
                    unit.map(|u| format!(", unit: {u}")).unwrap_or_default(),
                );
            }
            format!(
                "apiVersion: networking.mesh.dev/v1alpha1\nkind: LocalRateLimit\n\
                 metadata: {{name: gen, namespace: {ns}}}\nspec:\n{spec}"
            )
        })
}

proptest! {
    // Bounded so the test runs in seconds; no regression files are written into the tree.
    #![proptest_config(ProptestConfig {
        cases: 96,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn generated_retry_policies_that_validate_compile(vs in virtual_service()) {
        let (resources, errors) = mesh_api::load_str("gen.yaml", &vs);
        prop_assume!(errors.is_empty());
        let broken = failures(resources);
        prop_assert!(broken.is_empty(), "{vs}\n{}", broken.join("\n"));
    }

    #[test]
    fn generated_access_log_filters_that_validate_compile(t in telemetry()) {
        let (resources, errors) = mesh_api::load_str("gen.yaml", &t);
        prop_assume!(errors.is_empty());
        let broken = failures(resources);
        prop_assert!(broken.is_empty(), "{t}\n{}", broken.join("\n"));
    }

    #[test]
    fn generated_metrics_overrides_that_validate_compile(t in metrics_telemetries()) {
        let (resources, errors) = mesh_api::load_str("gen.yaml", &t);
        prop_assume!(errors.is_empty());
        let broken = failures(resources);
        prop_assert!(broken.is_empty(), "{t}\n{}", broken.join("\n"));
    }

    #[test]
    fn generated_local_rate_limits_that_validate_compile(l in local_rate_limit()) {
        let (resources, errors) = mesh_api::load_str("gen.yaml", &l);
        prop_assume!(errors.is_empty());
        let (broken, configs) = checked(resources);
        prop_assert!(broken.is_empty(), "{l}\n{}", broken.join("\n"));
        // Not vacuous: the limit reached an inbound listener.
        let limited = configs
            .iter()
            .flat_map(|c| &c.listeners)
            .filter(|l| !l.local_rate_limits.is_empty())
            .count();
        prop_assert!(limited > 0, "{l}: no proxy got the limit");
    }

    #[test]
    fn generated_authorization_policies_that_validate_compile(ap in authorization_policy()) {
        let (resources, errors) = mesh_api::load_str("gen.yaml", &ap);
        prop_assume!(errors.is_empty());
        let broken = failures(resources);
        prop_assert!(broken.is_empty(), "{ap}\n{}", broken.join("\n"));
    }
}
