//! The service graph from Prometheus query results: nodes for workloads and services, an edge
//! from a calling workload to the service it called and from the service to the workload that
//! answered, each with its request rate, success rate, p99 and mTLS share. Pure: the queries'
//! samples in, the graph out.
//!
//! Which proxy's numbers count, as Kiali decides: the source proxy's (it also sees the calls
//! that never arrived: no healthy upstream, timeouts), and the destination proxy's only for
//! callers without a proxy. The two sides need not agree on the labels of one call (the
//! destination may name the service by the request's authority), so they are never merged.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

/// Istio's label values for "not known" (a caller without a proxy, a call that found no
/// destination).
const UNKNOWN: &str = "unknown";

/// The labels a call between two workloads through a service is grouped by.
pub const FLOW_LABELS: &str = "reporter, source_workload, source_workload_namespace, \
     destination_service_name, destination_service_namespace, destination_workload, \
     destination_workload_namespace";

/// The three PromQL queries the graph is computed from, over `window` (e.g. `1m`).
pub fn queries(window: &str) -> Queries {
    Queries {
        requests: format!(
            "sum by ({FLOW_LABELS}, response_code, connection_security_policy) \
             (rate(istio_requests_total[{window}]))"
        ),
        durations: format!(
            "sum by ({FLOW_LABELS}, le) \
             (rate(istio_request_duration_milliseconds_bucket[{window}]))"
        ),
        // Two sums: a rate over both names at once would hold two series of one label set.
        tcp_bytes: format!(
            "sum by ({FLOW_LABELS}, connection_security_policy) \
             (rate(istio_tcp_sent_bytes_total[{window}])) + \
             sum by ({FLOW_LABELS}, connection_security_policy) \
             (rate(istio_tcp_received_bytes_total[{window}]))"
        ),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queries {
    pub requests: String,
    pub durations: String,
    pub tcp_bytes: String,
}

/// One element of an instant query's result vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The three queries' results.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Results {
    pub requests: Vec<Sample>,
    pub durations: Vec<Sample>,
    pub tcp_bytes: Vec<Sample>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    Workload,
    Service,
    /// Callers without a proxy: outside the mesh.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Node {
    pub id: String,
    pub kind: NodeKind,
    pub name: String,
    pub namespace: String,
}

/// Whether an edge's traffic was mutual TLS: all of it, none, or some.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mtls {
    MutualTls,
    None,
    Partial,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Edge {
    pub source: String,
    pub target: String,
    /// `http` when requests were counted, else `tcp`.
    pub protocol: &'static str,
    /// Requests per second.
    pub request_rate: f64,
    /// Share of requests answered without a 5xx (Istio's dashboards' success rate); none for
    /// a TCP edge.
    pub success_rate: Option<f64>,
    /// The 99th percentile of the request duration, in milliseconds.
    pub p99_ms: Option<f64>,
    /// TCP bytes per second, both directions.
    pub tcp_bytes_rate: f64,
    pub mtls: Mtls,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
}

/// A call's path: caller, service, answering workload.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Flow {
    source: (String, String),
    service: (String, String),
    destination: (String, String),
}

fn label<'a>(s: &'a Sample, name: &str) -> &'a str {
    s.labels
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .unwrap_or(UNKNOWN)
}

fn flow_of(s: &Sample) -> Flow {
    let pair = |name: &str, namespace: &str| (label(s, name).into(), label(s, namespace).into());
    Flow {
        source: pair("source_workload", "source_workload_namespace"),
        service: pair("destination_service_name", "destination_service_namespace"),
        destination: pair("destination_workload", "destination_workload_namespace"),
    }
}

/// The samples of `samples` that count: every source proxy's report, and a destination
/// proxy's for callers without a proxy of their own (whose calls no source reported).
fn counted(samples: &[Sample]) -> Vec<(Flow, &Sample)> {
    samples
        .iter()
        .filter(|s| match label(s, "reporter") {
            "source" => true,
            "destination" => label(s, "source_workload") == UNKNOWN,
            _ => false,
        })
        .map(|s| (flow_of(s), s))
        .collect()
}

/// Sums of one edge's counted samples.
#[derive(Debug, Default)]
struct Tally {
    requests: f64,
    server_errors: f64,
    mtls_requests: f64,
    tcp_bytes: f64,
    mtls_tcp_bytes: f64,
    /// `le` -> cumulative rate.
    buckets: BTreeMap<String, f64>,
}

impl Tally {
    fn edge(&self, source: String, target: String) -> Option<Edge> {
        let http = self.requests > 0.0;
        if !http && self.tcp_bytes <= 0.0 {
            return None;
        }
        let (mtls, total) = if http {
            (self.mtls_requests, self.requests)
        } else {
            (self.mtls_tcp_bytes, self.tcp_bytes)
        };
        Some(Edge {
            source,
            target,
            protocol: if http { "http" } else { "tcp" },
            request_rate: self.requests,
            success_rate: http.then(|| 1.0 - self.server_errors / self.requests),
            p99_ms: quantile(0.99, &self.buckets),
            tcp_bytes_rate: self.tcp_bytes,
            mtls: mtls_of(mtls, total),
        })
    }
}

fn mtls_of(mtls: f64, total: f64) -> Mtls {
    // Rates are ratios of counter deltas: compare with a little room for rounding.
    if mtls >= total * (1.0 - 1e-9) {
        Mtls::MutualTls
    } else if mtls <= 0.0 {
        Mtls::None
    } else {
        Mtls::Partial
    }
}

/// Prometheus's `histogram_quantile` over cumulative buckets keyed by `le`: linear
/// interpolation inside the bucket that holds the rank; a rank in the `+Inf` bucket answers
/// the highest finite bound. None without observations.
pub fn quantile(q: f64, buckets: &BTreeMap<String, f64>) -> Option<f64> {
    let mut bounds: Vec<(f64, f64)> = buckets
        .iter()
        .filter_map(|(le, count)| {
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, *count))
        })
        .collect();
    bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let &(last_le, total) = bounds.last()?;
    if last_le != f64::INFINITY || total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let index = bounds.iter().position(|&(_, count)| count >= rank)?;
    let (upper, count) = bounds[index];
    if upper == f64::INFINITY {
        return index.checked_sub(1).map(|i| bounds[i].0);
    }
    let (lower, below) = match index {
        0 if upper <= 0.0 => return Some(upper),
        0 => (0.0, 0.0),
        i => bounds[i - 1],
    };
    let inside = count - below;
    if inside <= 0.0 {
        return Some(upper);
    }
    Some(lower + (upper - lower) * (rank - below) / inside)
}

fn workload_node((name, namespace): &(String, String)) -> Node {
    if name == UNKNOWN {
        return Node {
            id: UNKNOWN.into(),
            kind: NodeKind::Unknown,
            name: UNKNOWN.into(),
            namespace: String::new(),
        };
    }
    Node {
        id: format!("workload:{namespace}/{name}"),
        kind: NodeKind::Workload,
        name: name.clone(),
        namespace: namespace.clone(),
    }
}

fn service_node((name, namespace): &(String, String)) -> Option<Node> {
    (name != UNKNOWN).then(|| Node {
        id: format!("service:{namespace}/{name}"),
        kind: NodeKind::Service,
        name: name.clone(),
        namespace: namespace.clone(),
    })
}

/// The hops of a flow: caller -> service -> workload, or caller -> workload when the service
/// is not known.
fn hops(flow: &Flow) -> Vec<(Node, Node)> {
    let source = workload_node(&flow.source);
    let destination = workload_node(&flow.destination);
    match service_node(&flow.service) {
        Some(service) if destination.kind == NodeKind::Unknown => vec![(source, service)],
        Some(service) => vec![(source, service.clone()), (service, destination)],
        None => vec![(source, destination)],
    }
}

/// The graph of the calls in `results`; edges without traffic in the window are left out.
pub fn graph(results: &Results) -> Graph {
    let mut tallies: BTreeMap<(Node, Node), Tally> = BTreeMap::new();
    let mut add = |flow: &Flow, update: &dyn Fn(&mut Tally)| {
        for hop in hops(flow) {
            update(tallies.entry(hop).or_default());
        }
    };
    for (flow, s) in counted(&results.requests) {
        let error = label(s, "response_code").starts_with('5');
        let mtls = label(s, "connection_security_policy") == "mutual_tls";
        add(&flow, &|t: &mut Tally| {
            t.requests += s.value;
            if error {
                t.server_errors += s.value;
            }
            if mtls {
                t.mtls_requests += s.value;
            }
        });
    }
    for (flow, s) in counted(&results.durations) {
        let le = label(s, "le").to_owned();
        add(&flow, &|t: &mut Tally| {
            *t.buckets.entry(le.clone()).or_default() += s.value;
        });
    }
    for (flow, s) in counted(&results.tcp_bytes) {
        let mtls = label(s, "connection_security_policy") == "mutual_tls";
        add(&flow, &|t: &mut Tally| {
            t.tcp_bytes += s.value;
            if mtls {
                t.mtls_tcp_bytes += s.value;
            }
        });
    }
    let mut nodes = BTreeSet::new();
    let mut edges = Vec::new();
    for ((from, to), tally) in tallies {
        let Some(edge) = tally.edge(from.id.clone(), to.id.clone()) else {
            continue;
        };
        edges.push(edge);
        nodes.insert(from);
        nodes.insert(to);
    }
    Graph {
        nodes: nodes.into_iter().collect(),
        edges,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Labels of a call from `src` to the `svc` service answered by `dst`, all in default.
    fn call(reporter: &str, src: &str, svc: &str, dst: &str) -> Vec<(&'static str, String)> {
        vec![
            ("reporter", reporter.into()),
            ("source_workload", src.into()),
            ("source_workload_namespace", "default".into()),
            ("destination_service_name", svc.into()),
            ("destination_service_namespace", "default".into()),
            ("destination_workload", dst.into()),
            ("destination_workload_namespace", "default".into()),
        ]
    }

    fn with(mut labels: Vec<(&'static str, String)>, more: &[(&'static str, &str)]) -> Sample {
        labels.extend(more.iter().map(|(k, v)| (*k, v.to_string())));
        Sample {
            labels: labels.into_iter().map(|(k, v)| (k.into(), v)).collect(),
            value: 0.0,
        }
    }

    fn requests(
        reporter: &str,
        src: &str,
        svc: &str,
        dst: &str,
        code: &str,
        mtls: &str,
        rate: f64,
    ) -> Sample {
        Sample {
            value: rate,
            ..with(
                call(reporter, src, svc, dst),
                &[
                    ("response_code", code),
                    ("connection_security_policy", mtls),
                ],
            )
        }
    }

    fn edge<'a>(g: &'a Graph, source: &str, target: &str) -> &'a Edge {
        g.edges
            .iter()
            .find(|e| e.source == source && e.target == target)
            .unwrap_or_else(|| panic!("no edge {source} -> {target} in {g:#?}"))
    }

    #[test]
    fn a_call_becomes_caller_to_service_to_workload() {
        let g = graph(&Results {
            requests: vec![
                requests(
                    "source",
                    "productpage-v1",
                    "reviews",
                    "reviews-v1",
                    "200",
                    "mutual_tls",
                    8.0,
                ),
                requests(
                    "source",
                    "productpage-v1",
                    "reviews",
                    "reviews-v3",
                    "200",
                    "mutual_tls",
                    1.5,
                ),
                requests(
                    "source",
                    "productpage-v1",
                    "reviews",
                    "reviews-v3",
                    "503",
                    "mutual_tls",
                    0.5,
                ),
            ],
            ..Results::default()
        });
        let ids: Vec<&str> = g.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "service:default/reviews",
                "workload:default/productpage-v1",
                "workload:default/reviews-v1",
                "workload:default/reviews-v3",
            ]
        );
        let to_service = edge(
            &g,
            "workload:default/productpage-v1",
            "service:default/reviews",
        );
        assert_eq!(to_service.request_rate, 10.0);
        assert_eq!(to_service.success_rate, Some(0.95));
        assert_eq!(to_service.protocol, "http");
        assert_eq!(to_service.mtls, Mtls::MutualTls);
        let v3 = edge(&g, "service:default/reviews", "workload:default/reviews-v3");
        assert_eq!(v3.request_rate, 2.0);
        assert_eq!(v3.success_rate, Some(0.75));
        assert_eq!(g.edges.len(), 3);
    }

    #[test]
    fn the_source_report_counts_and_the_destination_one_only_for_callers_without_a_proxy() {
        let g = graph(&Results {
            requests: vec![
                requests(
                    "source",
                    "productpage-v1",
                    "details",
                    "details-v1",
                    "200",
                    "mutual_tls",
                    2.0,
                ),
                // The same calls seen by the destination: not counted twice.
                requests(
                    "destination",
                    "productpage-v1",
                    "details",
                    "details-v1",
                    "200",
                    "mutual_tls",
                    2.0,
                ),
                // A caller outside the mesh, only the destination saw it, in plaintext.
                requests(
                    "destination",
                    "unknown",
                    "details",
                    "details-v1",
                    "200",
                    "none",
                    1.0,
                ),
            ],
            ..Results::default()
        });
        assert_eq!(
            edge(
                &g,
                "workload:default/productpage-v1",
                "service:default/details"
            )
            .request_rate,
            2.0
        );
        let outside = edge(&g, "unknown", "service:default/details");
        assert_eq!(outside.mtls, Mtls::None);
        assert_eq!(outside.request_rate, 1.0);
        let answered = edge(&g, "service:default/details", "workload:default/details-v1");
        assert_eq!(answered.request_rate, 3.0);
        assert_eq!(answered.mtls, Mtls::Partial);
        assert!(g.nodes.iter().any(|n| n.kind == NodeKind::Unknown));
    }

    #[test]
    fn idle_edges_are_left_out_and_unknown_destinations_end_at_the_service() {
        let g = graph(&Results {
            requests: vec![
                requests(
                    "source",
                    "productpage-v1",
                    "ratings",
                    "ratings-v1",
                    "200",
                    "mutual_tls",
                    0.0,
                ),
                requests(
                    "source",
                    "productpage-v1",
                    "reviews",
                    "unknown",
                    "503",
                    "none",
                    1.0,
                ),
            ],
            ..Results::default()
        });
        assert_eq!(g.edges.len(), 1, "{g:#?}");
        let failing = edge(
            &g,
            "workload:default/productpage-v1",
            "service:default/reviews",
        );
        assert_eq!(failing.success_rate, Some(0.0));
        assert!(!g.nodes.iter().any(|n| n.name == "ratings"));
    }

    #[test]
    fn p99_comes_from_the_summed_buckets_of_the_edge() {
        let bucket = |dst: &str, le: &str, rate: f64| Sample {
            value: rate,
            ..with(
                call("source", "productpage-v1", "reviews", dst),
                &[("le", le)],
            )
        };
        let g = graph(&Results {
            requests: vec![
                requests(
                    "source",
                    "productpage-v1",
                    "reviews",
                    "reviews-v1",
                    "200",
                    "mutual_tls",
                    1.0,
                ),
                requests(
                    "source",
                    "productpage-v1",
                    "reviews",
                    "reviews-v3",
                    "200",
                    "mutual_tls",
                    1.0,
                ),
            ],
            durations: vec![
                // reviews-v1: everything within 10 ms; reviews-v3: everything in 25..50 ms.
                bucket("reviews-v1", "10", 1.0),
                bucket("reviews-v1", "25", 1.0),
                bucket("reviews-v1", "50", 1.0),
                bucket("reviews-v1", "+Inf", 1.0),
                bucket("reviews-v3", "10", 0.0),
                bucket("reviews-v3", "25", 0.0),
                bucket("reviews-v3", "50", 1.0),
                bucket("reviews-v3", "+Inf", 1.0),
            ],
            ..Results::default()
        });
        let v1 = edge(&g, "service:default/reviews", "workload:default/reviews-v1");
        assert_eq!(v1.p99_ms, Some(9.9));
        // Both together: rank 1.98 of 2 lies in the 25..50 bucket, which holds 1 of them.
        let both = edge(
            &g,
            "workload:default/productpage-v1",
            "service:default/reviews",
        );
        assert_eq!(both.p99_ms, Some(25.0 + 25.0 * 0.98));
    }

    #[test]
    fn quantiles_follow_prometheus() {
        let b = |pairs: &[(&str, f64)]| -> BTreeMap<String, f64> {
            pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        };
        assert_eq!(quantile(0.5, &b(&[("1", 0.0), ("+Inf", 0.0)])), None);
        assert_eq!(quantile(0.5, &b(&[("1", 1.0)])), None, "no +Inf bucket");
        assert_eq!(
            quantile(0.5, &b(&[("1", 2.0), ("2", 4.0), ("+Inf", 4.0)])),
            Some(1.0)
        );
        assert_eq!(
            quantile(0.99, &b(&[("1", 1.0), ("2", 1.0), ("+Inf", 4.0)])),
            Some(2.0)
        );
    }

    #[test]
    fn tcp_edges_carry_bytes_and_their_mtls() {
        let tcp = |mtls: &str, rate: f64| Sample {
            value: rate,
            ..with(
                call("source", "sleep-v1", "tcp-echo", "tcp-echo-v1"),
                &[("connection_security_policy", mtls)],
            )
        };
        let g = graph(&Results {
            tcp_bytes: vec![tcp("mutual_tls", 300.0)],
            ..Results::default()
        });
        let e = edge(&g, "workload:default/sleep-v1", "service:default/tcp-echo");
        assert_eq!(e.protocol, "tcp");
        assert_eq!(e.tcp_bytes_rate, 300.0);
        assert_eq!(e.success_rate, None);
        assert_eq!(e.mtls, Mtls::MutualTls);
    }

    #[test]
    fn queries_group_by_the_flow_labels() {
        let q = queries("1m");
        assert!(q.requests.starts_with("sum by (reporter, source_workload,"));
        assert!(q.requests.ends_with("(rate(istio_requests_total[1m]))"));
        assert!(q.durations.contains(", le)"));
        assert!(q.tcp_bytes.contains("istio_tcp_received_bytes_total"));
    }
}
