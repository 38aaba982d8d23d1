//! The Telemetry of one workload: Istio's precedence (the root namespace's Telemetry without
//! selector is mesh-wide, then the workload namespace's without selector, then the one of
//! that namespace whose selector matches the workload; each more specific one overrides what
//! it sets), resolved per side of a call into the proxy's access logs and metrics overrides,
//! and into tracing settings kept as the API's structs for the tracing translation.
//!
//! Pure functions of the store's resources and the workload's namespace and labels.

use std::collections::BTreeMap;

use mesh_api::Object;
use mesh_api::Resource;
use mesh_api::telemetry::{
    self as api, ACCESS_LOG_PROVIDERS, ENVOY_JSON_PROVIDER, ENVOY_TEXT_PROVIDER, ModeSelector,
    Telemetry, WorkloadMode,
};
use mesh_proto::config::v1 as pb;
use pb::access_log::{Format, Mode};

use crate::authz::{namespace_of, selects};

mod metrics;

/// The provider of an `accessLogging` entry that names none (Istio's default provider,
/// which Istio's default mesh config defines as a file access log to stdout).
pub const DEFAULT_ACCESS_LOG_PROVIDER: &str = ENVOY_TEXT_PROVIDER;

/// The Telemetry objects that apply to a workload, least specific first.
#[derive(Debug, Default, Clone, Copy)]
pub struct Applicable<'a> {
    pub mesh: Option<&'a Object<Telemetry>>,
    pub namespace: Option<&'a Object<Telemetry>>,
    pub workload: Option<&'a Object<Telemetry>>,
}

impl<'a> Applicable<'a> {
    fn layers(&self) -> impl Iterator<Item = &'a Telemetry> {
        [self.mesh, self.namespace, self.workload]
            .into_iter()
            .flatten()
            .map(|o| &o.spec)
    }
}

fn targets_ref(t: &Telemetry) -> bool {
    t.target_ref.is_some() || !t.target_refs.is_empty()
}

fn has_selector(t: &Telemetry) -> bool {
    t.selector
        .as_ref()
        .is_some_and(|s| !s.match_labels.is_empty())
}

/// The Telemetries of `resources`, oldest first (then by namespace and name): where Istio
/// finds two for one slot, the oldest wins.
fn telemetries(resources: &[Resource]) -> Vec<&Object<Telemetry>> {
    let mut all: Vec<&Object<Telemetry>> = resources
        .iter()
        .filter_map(|r| match r {
            Resource::Telemetry(t) => Some(t.as_ref()),
            _ => None,
        })
        .filter(|t| !targets_ref(&t.spec))
        .collect();
    all.sort_by(|a, b| {
        let key = |o: &&Object<Telemetry>| {
            (
                o.metadata.creation_timestamp.clone().unwrap_or_default(),
                namespace_of(&o.metadata).to_owned(),
                o.metadata.name.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
    all
}

/// Istio's selection: one mesh-wide, one namespace-wide and one workload Telemetry at most.
pub fn applicable<'a>(
    resources: &'a [Resource],
    namespace: &str,
    labels: &BTreeMap<String, String>,
    root_namespace: &str,
) -> Applicable<'a> {
    let all = telemetries(resources);
    let first = |ns: &str, pred: &dyn Fn(&Telemetry) -> bool| {
        all.iter()
            .copied()
            .find(|t| namespace_of(&t.metadata) == ns && pred(&t.spec))
    };
    let namespace_wide = |t: &Telemetry| !has_selector(t);
    let selecting = |t: &Telemetry| has_selector(t) && selects(t.selector.as_ref(), labels);
    let mesh = first(root_namespace, &namespace_wide);
    // A workload of the root namespace has the mesh-wide Telemetry as its namespace's.
    let namespace_wide = if namespace == root_namespace {
        None
    } else {
        first(namespace, &namespace_wide)
    };
    let workload = first(namespace, &selecting);
    Applicable {
        mesh,
        namespace: namespace_wide,
        workload,
    }
}

/// One workload's telemetry settings.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Resolved {
    /// The proxy's access logs.
    pub access_logging: pb::AccessLogging,
    /// Tracing for outbound requests (the CLIENT side), merged across the layers.
    pub client_tracing: Option<api::Tracing>,
    /// Tracing for inbound requests (the SERVER side).
    pub server_tracing: Option<api::Tracing>,
    /// Changes to the standard metrics, per metric and side.
    pub metrics: pb::MetricsOverrides,
}

impl Resolved {
    /// The proxy's `Telemetry`; `None` when nothing is set (the proxy's defaults).
    pub fn to_proto(&self) -> Option<pb::Telemetry> {
        let access_logging =
            (!self.access_logging.logs.is_empty()).then(|| self.access_logging.clone());
        let tracing = self.tracing_proto();
        let metrics = (!self.metrics.overrides.is_empty()).then(|| self.metrics.clone());
        (access_logging.is_some() || tracing.is_some() || metrics.is_some()).then_some(
            pb::Telemetry {
                access_logging,
                tracing,
                metrics,
            },
        )
    }

    /// The proxy's one tracing setting from the two sides'. The sampling percentage and
    /// custom tags are the client side's where it has settings (the first proxy of a call,
    /// a client, decides sampling), else the server side's; each side reports its spans
    /// unless its `disableSpanReporting` says otherwise. Unset on both sides: the proxy's
    /// defaults (1 %, both sides).
    fn tracing_proto(&self) -> Option<pb::Tracing> {
        let (client, server) = (self.client_tracing.as_ref(), self.server_tracing.as_ref());
        let base = client.or(server)?;
        let reports =
            |t: Option<&api::Tracing>| t.and_then(|t| t.disable_span_reporting) != Some(true);
        let (mode, disable_span_reporting) = match (reports(client), reports(server)) {
            (true, true) => (pb::TracingMode::ClientAndServer, false),
            (true, false) => (pb::TracingMode::Client, false),
            (false, true) => (pb::TracingMode::Server, false),
            (false, false) => (pb::TracingMode::ClientAndServer, true),
        };
        Some(pb::Tracing {
            random_sampling_percentage: base.random_sampling_percentage,
            custom_tags: base
                .custom_tags
                .iter()
                .filter_map(|(name, tag)| custom_tag(name, tag))
                .collect(),
            disable_span_reporting,
            mode: mode as i32,
        })
    }

    /// Why the proxy's tracing differs from what the two sides asked for, if it does.
    pub fn tracing_warnings(&self) -> Option<String> {
        let (Some(c), Some(s)) = (&self.client_tracing, &self.server_tracing) else {
            return None;
        };
        (c.random_sampling_percentage != s.random_sampling_percentage
            || c.custom_tags != s.custom_tags)
            .then(|| {
                "Telemetry tracing: client and server sides set different sampling or custom \
                 tags; the client side's apply to both"
                    .to_string()
            })
    }
}

fn custom_tag(name: &str, tag: &api::CustomTag) -> Option<pb::TracingCustomTag> {
    use pb::tracing_custom_tag::Type;
    let r#type = if let Some(l) = &tag.literal {
        Type::Literal(pb::TracingLiteral {
            value: l.value.clone(),
        })
    } else if let Some(e) = &tag.environment {
        Type::Environment(pb::TracingEnvironment {
            name: e.name.clone(),
            default_value: e.default_value.clone().unwrap_or_default(),
        })
    } else if let Some(h) = &tag.header {
        Type::Header(pb::TracingRequestHeader {
            name: h.name.clone(),
            default_value: h.default_value.clone().unwrap_or_default(),
        })
    } else {
        return None;
    };
    Some(pb::TracingCustomTag {
        name: name.to_string(),
        r#type: Some(r#type),
    })
}

pub fn resolve(
    resources: &[Resource],
    namespace: &str,
    labels: &BTreeMap<String, String>,
    root_namespace: &str,
) -> Resolved {
    let layers = applicable(resources, namespace, labels, root_namespace);
    Resolved {
        access_logging: access_logging(&layers),
        client_tracing: tracing(&layers, WorkloadMode::Client),
        server_tracing: tracing(&layers, WorkloadMode::Server),
        metrics: metrics::resolve(layers.layers()),
    }
}

fn applies(mode: WorkloadMode, side: WorkloadMode) -> bool {
    mode == WorkloadMode::ClientAndServer || mode == side
}

/// Per side, each provider's filter: a more specific layer replaces a provider's settings or
/// (`disabled: true`) removes it.
fn access_log_side(layers: &Applicable<'_>, side: WorkloadMode) -> BTreeMap<String, String> {
    let mut providers = BTreeMap::new();
    for t in layers.layers() {
        for entry in &t.access_logging {
            if !applies(ModeSelector::mode(&entry.match_), side) {
                continue;
            }
            let names: Vec<&str> = if entry.providers.is_empty() {
                vec![DEFAULT_ACCESS_LOG_PROVIDER]
            } else {
                entry.providers.iter().map(|p| p.name.as_str()).collect()
            };
            for name in names {
                if entry.disabled == Some(true) {
                    providers.remove(name);
                } else {
                    let filter = entry
                        .filter
                        .as_ref()
                        .map(|f| f.expression.clone())
                        .unwrap_or_default();
                    providers.insert(name.to_owned(), filter);
                }
            }
        }
    }
    // Providers the mesh does not implement write nothing (validation warns about them).
    providers.retain(|name, _| ACCESS_LOG_PROVIDERS.contains(&name.as_str()));
    providers
}

fn access_logging(layers: &Applicable<'_>) -> pb::AccessLogging {
    let client = access_log_side(layers, WorkloadMode::Client);
    let mut server = access_log_side(layers, WorkloadMode::Server);
    let format = |name: &str| {
        if name == ENVOY_JSON_PROVIDER {
            Format::Json
        } else {
            Format::Text
        }
    };
    let log = |name: &str, mode: Mode, filter: String| pb::AccessLog {
        name: name.to_owned(),
        format: format(name) as i32,
        mode: mode as i32,
        filter,
    };
    let mut logs = Vec::new();
    for (name, filter) in client {
        // The same settings on both sides are one log.
        if server.get(&name) == Some(&filter) {
            server.remove(&name);
            logs.push(log(&name, Mode::ClientAndServer, filter));
        } else {
            logs.push(log(&name, Mode::Client, filter));
        }
    }
    for (name, filter) in server {
        logs.push(log(&name, Mode::Server, filter));
    }
    pb::AccessLogging { logs }
}

/// Istio's tracing merge for one side: each layer's matching entries override what they set
/// (providers, sampling, span reporting, request-id sampling), custom tags merge by name.
fn tracing(layers: &Applicable<'_>, side: WorkloadMode) -> Option<api::Tracing> {
    let mut merged: Option<api::Tracing> = None;
    for t in layers.layers() {
        for entry in &t.tracing {
            if !applies(ModeSelector::mode(&entry.match_), side) {
                continue;
            }
            let m = merged.get_or_insert_with(api::Tracing::default);
            if !entry.providers.is_empty() {
                m.providers = entry.providers.clone();
            }
            if entry.random_sampling_percentage.is_some() {
                m.random_sampling_percentage = entry.random_sampling_percentage;
            }
            if entry.disable_span_reporting.is_some() {
                m.disable_span_reporting = entry.disable_span_reporting;
            }
            if entry.use_request_id_for_trace_sampling.is_some() {
                m.use_request_id_for_trace_sampling = entry.use_request_id_for_trace_sampling;
            }
            if entry.enable_istio_tags.is_some() {
                m.enable_istio_tags = entry.enable_istio_tags;
            }
            for (k, v) in &entry.custom_tags {
                m.custom_tags.insert(k.clone(), v.clone());
            }
        }
    }
    merged
}

/// Where Istio's selection finds more than one Telemetry for one slot (two mesh-wide, two
/// namespace-wide in a namespace): the oldest applies, the others are named here.
pub fn warnings(resources: &[Resource], root_namespace: &str) -> Vec<String> {
    let all = telemetries(resources);
    let mut by_ns: BTreeMap<&str, Vec<&Object<Telemetry>>> = BTreeMap::new();
    for t in all.iter().filter(|t| !has_selector(&t.spec)) {
        by_ns.entry(namespace_of(&t.metadata)).or_default().push(t);
    }
    let mut out = Vec::new();
    for (ns, list) in by_ns {
        let scope = if ns == root_namespace {
            "mesh-wide"
        } else {
            "namespace-wide"
        };
        for extra in list.iter().skip(1) {
            out.push(format!(
                "Telemetry {ns}/{}: another {scope} Telemetry ({ns}/{}) is older and applies; this one is ignored",
                extra.metadata.name, list[0].metadata.name
            ));
        }
    }
    for r in resources {
        if let Resource::Telemetry(_) = r {
            out.extend(mesh_api::validate::warnings(r).iter().map(|w| {
                format!(
                    "Telemetry {}/{}: {}: {}",
                    r.namespace().unwrap_or("default"),
                    r.name(),
                    w.field,
                    w.reason
                )
            }));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "istio-system";

    fn load(yaml: &str) -> Vec<Resource> {
        let (r, e) = mesh_api::load_str("t.yaml", yaml);
        assert!(e.is_empty(), "{e:?}");
        r
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// (provider, format, mode, filter) of each log.
    fn logs(r: &Resolved) -> Vec<(String, Format, Mode, String)> {
        r.access_logging
            .logs
            .iter()
            .map(|l| (l.name.clone(), l.format(), l.mode(), l.filter.clone()))
            .collect()
    }

    fn log(name: &str, format: Format, mode: Mode, filter: &str) -> (String, Format, Mode, String) {
        (name.into(), format, mode, filter.into())
    }

    const LAYERS: &str = "
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  accessLogging:
  - providers: [{name: envoy}]
  tracing:
  - randomSamplingPercentage: 1
    providers: [{name: otel}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: errors-only, namespace: default}
spec:
  accessLogging:
  - filter: {expression: 'response.code >= 400'}
  tracing:
  - randomSamplingPercentage: 50
    customTags:
      team: {literal: {value: books}}
---
apiVersion: telemetry.istio.io/v1beta1
kind: Telemetry
metadata: {name: reviews-v1, namespace: default}
spec:
  selector: {matchLabels: {app: reviews, version: v1}}
  accessLogging:
  - match: {mode: CLIENT}
    disabled: true
  - match: {mode: SERVER}
    providers: [{name: envoy-json}, {name: otel}]
  tracing:
  - match: {mode: SERVER}
    disableSpanReporting: true
";

    #[test]
    fn mesh_then_namespace_then_workload() {
        let resources = load(LAYERS);
        // Another namespace: the mesh-wide Telemetry alone.
        let other = resolve(&resources, "shop", &labels(&[("app", "cart")]), ROOT);
        assert_eq!(
            logs(&other),
            [log("envoy", Format::Text, Mode::ClientAndServer, "")]
        );
        // The namespace's Telemetry overrides the mesh's filter for the same provider.
        let ns = resolve(
            &resources,
            "default",
            &labels(&[("app", "reviews"), ("version", "v2")]),
            ROOT,
        );
        assert_eq!(
            logs(&ns),
            [log(
                "envoy",
                Format::Text,
                Mode::ClientAndServer,
                "response.code >= 400"
            )]
        );
        // The workload's turns its outbound logs off and adds JSON logs for inbound; the
        // provider the mesh does not implement writes nothing.
        let wl = resolve(
            &resources,
            "default",
            &labels(&[("app", "reviews"), ("version", "v1")]),
            ROOT,
        );
        assert_eq!(
            logs(&wl),
            [
                log("envoy", Format::Text, Mode::Server, "response.code >= 400"),
                log("envoy-json", Format::Json, Mode::Server, ""),
            ]
        );
    }

    #[test]
    fn tracing_settings_merge_by_layer_and_side() {
        let resources = load(LAYERS);
        let wl = resolve(
            &resources,
            "default",
            &labels(&[("app", "reviews"), ("version", "v1")]),
            ROOT,
        );
        let client = wl.client_tracing.clone().unwrap();
        assert_eq!(client.random_sampling_percentage, Some(50.0));
        assert_eq!(client.providers[0].name, "otel");
        assert!(client.custom_tags.contains_key("team"));
        assert_eq!(client.disable_span_reporting, None);
        let server = wl.server_tracing.clone().unwrap();
        assert_eq!(server.disable_span_reporting, Some(true));
        assert_eq!(server.random_sampling_percentage, Some(50.0));
        let none = resolve(&[], "default", &labels(&[]), ROOT);
        assert_eq!(none.client_tracing, None);
        assert_eq!(none.to_proto(), None);

        // What the proxy gets: the sampling and tags, reporting on the client side only.
        let tracing = wl.to_proto().unwrap().tracing.unwrap();
        assert_eq!(tracing.random_sampling_percentage, Some(50.0));
        assert_eq!(tracing.mode, pb::TracingMode::Client as i32);
        assert!(!tracing.disable_span_reporting);
        let team = tracing
            .custom_tags
            .iter()
            .find(|t| t.name == "team")
            .unwrap();
        assert!(team.r#type.is_some(), "{team:?}");
    }

    #[test]
    fn the_oldest_of_two_namespace_wide_telemetries_applies_and_the_other_is_named() {
        let yaml = "
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: newer, namespace: default, creationTimestamp: '2024-02-01T00:00:00Z'}
spec:
  accessLogging: [{disabled: true}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: older, namespace: default, creationTimestamp: '2024-01-01T00:00:00Z'}
spec:
  accessLogging: [{providers: [{name: envoy}]}]
";
        let resources = load(yaml);
        let r = resolve(&resources, "default", &labels(&[]), ROOT);
        assert_eq!(
            logs(&r),
            [log("envoy", Format::Text, Mode::ClientAndServer, "")]
        );
        let w = warnings(&resources, ROOT);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with(
                "Telemetry default/newer: another namespace-wide Telemetry (default/older)"
            ),
            "{w:?}"
        );
    }

    #[test]
    fn a_mesh_wide_disable_is_overridden_by_a_namespace_and_unimplemented_fields_are_warned() {
        let yaml = "
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: off, namespace: istio-system}
spec:
  accessLogging: [{disabled: true}]
  metrics:
  - overrides:
    - {match: {metric: REQUEST_COUNT}, disabled: true}
    - {match: {metric: TCP_SENT_BYTES}, disabled: true}
    - {match: {customMetric: mine}, disabled: true}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: on, namespace: shop}
spec:
  accessLogging: [{match: {mode: CLIENT}}]
";
        let resources = load(yaml);
        let default = resolve(&resources, "default", &labels(&[]), ROOT)
            .to_proto()
            .unwrap();
        assert_eq!(default.access_logging, None);
        // The request count and the TCP sent bytes are off on both sides; the custom
        // metric's override is left out.
        let metrics = default.metrics.unwrap().overrides;
        let off: Vec<(i32, bool)> = metrics.iter().map(|o| (o.metric, o.disabled)).collect();
        let (count, sent) = (
            pb::StandardMetric::RequestCount as i32,
            pb::StandardMetric::TcpSentBytes as i32,
        );
        assert_eq!(
            off,
            [(count, true), (count, true), (sent, true), (sent, true)],
            "{metrics:?}"
        );
        let shop = resolve(&resources, "shop", &labels(&[]), ROOT);
        assert_eq!(logs(&shop), [log("envoy", Format::Text, Mode::Client, "")]);
        let w = warnings(&resources, ROOT);
        assert!(
            w.iter().any(|l| l.starts_with(
                "Telemetry istio-system/off: spec.metrics[0].overrides[2].match.customMetric: custom metrics are not implemented"
            )),
            "{w:?}"
        );
    }
}
