//! Telemetry `metrics.overrides` for one workload, merged as Istio merges them: the layers
//! from mesh to workload, each override expanded to the metrics (`ALL_METRICS`: every
//! standard one, HTTP/gRPC and TCP) and sides (`CLIENT_AND_SERVER`: both) it matches; per metric and side a
//! later `disabled` replaces an earlier one and tag overrides replace by tag name.
//!
//! Only what the proxy evaluates is sent; validation warns about the rest (custom metrics,
//! tag names Prometheus cannot carry, other tag value expressions), which
//! is left out here.

use std::collections::BTreeMap;

use mesh_api::telemetry::{
    IstioMetric, MetricsOverrides, TagOperation, TagOverride, TagValue, Telemetry, WorkloadMode,
    is_label_name,
};
use mesh_proto::config::v1 as pb;
use pb::metric_tag::Value;

/// The metrics provider whose series the proxy serves; overrides for others do not apply.
const PROMETHEUS: &str = "prometheus";

const ALL_METRICS: [pb::StandardMetric; 10] = [
    pb::StandardMetric::RequestCount,
    pb::StandardMetric::RequestDuration,
    pb::StandardMetric::RequestSize,
    pb::StandardMetric::ResponseSize,
    pb::StandardMetric::GrpcRequestMessages,
    pb::StandardMetric::GrpcResponseMessages,
    pb::StandardMetric::TcpOpenedConnections,
    pb::StandardMetric::TcpClosedConnections,
    pb::StandardMetric::TcpSentBytes,
    pb::StandardMetric::TcpReceivedBytes,
];

/// One metric on one side, merged across layers.
#[derive(Default)]
struct Merged {
    disabled: Option<bool>,
    tags: BTreeMap<String, TagOverride>,
}

/// The overrides of `layers` (least specific first) as the proxy takes them.
pub fn resolve<'a>(layers: impl Iterator<Item = &'a Telemetry>) -> pb::MetricsOverrides {
    let mut merged: BTreeMap<(i32, i32), Merged> = BTreeMap::new();
    for t in layers {
        for m in &t.metrics {
            let for_prometheus =
                m.providers.is_empty() || m.providers.iter().any(|p| p.name == PROMETHEUS);
            if !for_prometheus {
                continue;
            }
            for o in &m.overrides {
                for key in matches(o) {
                    let entry = merged.entry(key).or_default();
                    if o.disabled.is_some() {
                        entry.disabled = o.disabled;
                    }
                    for (name, tag) in &o.tag_overrides {
                        entry.tags.insert(name.clone(), tag.clone());
                    }
                }
            }
        }
    }
    let overrides = merged
        .into_iter()
        .filter_map(|((metric, side), m)| {
            let tags: Vec<pb::MetricTag> = m
                .tags
                .iter()
                .filter_map(|(n, t)| metric_tag(n, t))
                .collect();
            let disabled = m.disabled == Some(true);
            (disabled || !tags.is_empty()).then_some(pb::MetricOverride {
                metric,
                side,
                disabled,
                tags,
            })
        })
        .collect();
    pb::MetricsOverrides { overrides }
}

/// The (metric, side) pairs an override applies to; none for custom metrics.
fn matches(o: &MetricsOverrides) -> Vec<(i32, i32)> {
    let selector = o.match_.as_ref();
    if selector.is_some_and(|s| s.custom_metric.is_some()) {
        return Vec::new();
    }
    let metrics: &[pb::StandardMetric] = match selector.and_then(|s| s.metric) {
        None | Some(IstioMetric::AllMetrics) => &ALL_METRICS,
        Some(IstioMetric::RequestCount) => &[pb::StandardMetric::RequestCount],
        Some(IstioMetric::RequestDuration) => &[pb::StandardMetric::RequestDuration],
        Some(IstioMetric::RequestSize) => &[pb::StandardMetric::RequestSize],
        Some(IstioMetric::ResponseSize) => &[pb::StandardMetric::ResponseSize],
        Some(IstioMetric::GrpcRequestMessages) => &[pb::StandardMetric::GrpcRequestMessages],
        Some(IstioMetric::GrpcResponseMessages) => &[pb::StandardMetric::GrpcResponseMessages],
        Some(IstioMetric::TcpOpenedConnections) => &[pb::StandardMetric::TcpOpenedConnections],
        Some(IstioMetric::TcpClosedConnections) => &[pb::StandardMetric::TcpClosedConnections],
        Some(IstioMetric::TcpSentBytes) => &[pb::StandardMetric::TcpSentBytes],
        Some(IstioMetric::TcpReceivedBytes) => &[pb::StandardMetric::TcpReceivedBytes],
    };
    let sides: &[pb::MetricSide] = match selector.and_then(|s| s.mode).unwrap_or_default() {
        WorkloadMode::Client => &[pb::MetricSide::Client],
        WorkloadMode::Server => &[pb::MetricSide::Server],
        WorkloadMode::ClientAndServer => &[pb::MetricSide::Client, pb::MetricSide::Server],
    };
    metrics
        .iter()
        .flat_map(|m| sides.iter().map(move |s| (*m as i32, *s as i32)))
        .collect()
}

/// One tag override as the proxy takes it; `None` for what it does not evaluate.
fn metric_tag(name: &str, tag: &TagOverride) -> Option<pb::MetricTag> {
    if !is_label_name(name) {
        return None;
    }
    let value = match tag.operation.unwrap_or_default() {
        TagOperation::Remove => Value::Remove(true),
        TagOperation::Upsert => match TagValue::parse(tag.value.as_deref()?).ok()? {
            TagValue::Literal(s) => Value::Literal(s),
            TagValue::RequestHost => Value::Attribute(pb::RequestAttribute::Host as i32),
            TagValue::RequestMethod => Value::Attribute(pb::RequestAttribute::Method as i32),
            TagValue::RequestHeader(h) => Value::RequestHeader(h),
        },
    };
    Some(pb::MetricTag {
        name: name.to_owned(),
        value: Some(value),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use mesh_api::Resource;
    use pb::{MetricSide as Side, StandardMetric as M};

    use super::*;

    const ROOT: &str = "istio-system";

    fn load(yaml: &str) -> Vec<Resource> {
        let (r, e) = mesh_api::load_str("t.yaml", yaml);
        assert!(e.is_empty(), "{e:?}");
        r
    }

    fn overrides(resources: &[Resource], ns: &str, labels: &[(&str, &str)]) -> Vec<Entry> {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let r = crate::telemetry::resolve(resources, ns, &labels, ROOT);
        r.metrics.overrides.iter().map(Entry::of).collect()
    }

    /// (metric, side, disabled, tags as `name=value`) of one override.
    #[derive(Debug, PartialEq)]
    struct Entry(M, Side, bool, Vec<String>);

    impl Entry {
        fn of(o: &pb::MetricOverride) -> Self {
            let tags = o
                .tags
                .iter()
                .map(|t| {
                    let v = match t.value.as_ref().unwrap() {
                        Value::Remove(_) => "REMOVE".to_string(),
                        Value::Literal(s) => format!("'{s}'"),
                        Value::Attribute(a) => format!("{:?}", pb::RequestAttribute::try_from(*a)),
                        Value::RequestHeader(h) => format!("header:{h}"),
                    };
                    format!("{}={v}", t.name)
                })
                .collect();
            Entry(o.metric(), o.side(), o.disabled, tags)
        }
    }

    fn e(m: M, s: Side, disabled: bool, tags: &[&str]) -> Entry {
        Entry(m, s, disabled, tags.iter().map(|t| t.to_string()).collect())
    }

    const LAYERS: &str = "
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  metrics:
  - providers: [{name: prometheus}]
    overrides:
    - match: {metric: REQUEST_COUNT}
      tagOverrides:
        response_flags: {operation: REMOVE}
        team: {value: \"'mesh'\"}
    - match: {metric: REQUEST_SIZE, mode: SERVER}
      disabled: true
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: ns, namespace: default}
spec:
  metrics:
  - overrides:
    - match: {metric: REQUEST_COUNT, mode: CLIENT}
      tagOverrides:
        team: {value: \"'books'\"}
        method: {value: request.method}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: reviews, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  metrics:
  - overrides:
    - match: {metric: REQUEST_SIZE, mode: SERVER}
      disabled: false
    - match: {metric: REQUEST_COUNT}
      tagOverrides:
        response_flags: {value: \"'-'\"}
        tenant: {value: \"request.headers['X-Tenant']\"}
        host: {value: request.host}
";

    #[test]
    fn mesh_then_namespace_then_workload_per_metric_and_side() {
        let resources = load(LAYERS);
        // Another namespace: the mesh's overrides, CLIENT_AND_SERVER expanded to both sides.
        assert_eq!(
            overrides(&resources, "shop", &[]),
            [
                e(
                    M::RequestCount,
                    Side::Client,
                    false,
                    &["response_flags=REMOVE", "team='mesh'"]
                ),
                e(
                    M::RequestCount,
                    Side::Server,
                    false,
                    &["response_flags=REMOVE", "team='mesh'"]
                ),
                e(M::RequestSize, Side::Server, true, &[]),
            ]
        );
        // The namespace's replaces `team` and adds `method` on the client side only.
        assert_eq!(
            overrides(&resources, "default", &[("app", "ratings")]),
            [
                e(
                    M::RequestCount,
                    Side::Client,
                    false,
                    &["method=Ok(Method)", "response_flags=REMOVE", "team='books'"]
                ),
                e(
                    M::RequestCount,
                    Side::Server,
                    false,
                    &["response_flags=REMOVE", "team='mesh'"]
                ),
                e(M::RequestSize, Side::Server, true, &[]),
            ]
        );
        // The workload's turns the request size back on and upserts the removed tag.
        assert_eq!(
            overrides(&resources, "default", &[("app", "reviews")]),
            [
                e(
                    M::RequestCount,
                    Side::Client,
                    false,
                    &[
                        "host=Ok(Host)",
                        "method=Ok(Method)",
                        "response_flags='-'",
                        "team='books'",
                        "tenant=header:x-tenant",
                    ]
                ),
                e(
                    M::RequestCount,
                    Side::Server,
                    false,
                    &[
                        "host=Ok(Host)",
                        "response_flags='-'",
                        "team='mesh'",
                        "tenant=header:x-tenant",
                    ]
                ),
            ]
        );
    }

    #[test]
    fn all_metrics_expands_and_what_the_proxy_does_not_evaluate_is_left_out() {
        let yaml = "
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  metrics:
  - overrides:
    - match: {mode: SERVER}
      tagOverrides:
        source_principal: {operation: REMOVE}
        port: {value: string(destination.port)}
        bad-name: {value: \"'x'\"}
    - match: {metric: TCP_SENT_BYTES, mode: CLIENT}
      disabled: true
    - match: {customMetric: mine}
      disabled: true
  - providers: [{name: stackdriver}]
    overrides:
    - disabled: true
";
        let resources = load(yaml);
        let got = overrides(&resources, "default", &[]);
        let mut want: Vec<Entry> = ALL_METRICS
            .iter()
            .map(|m| e(*m, Side::Server, false, &["source_principal=REMOVE"]))
            .collect();
        want.insert(8, e(M::TcpSentBytes, Side::Client, true, &[]));
        assert_eq!(got, want);
        // Each proxy accepts what is sent.
        let r = crate::telemetry::resolve(&resources, "default", &BTreeMap::new(), ROOT);
        let cfg = pb::ProxyConfig {
            telemetry: r.to_proto(),
            ..Default::default()
        };
        mesh_proxy::config::check(&cfg).expect("the proxy accepts the overrides");
    }
}
