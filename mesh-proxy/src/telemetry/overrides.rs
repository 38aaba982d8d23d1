//! Telemetry metrics overrides, compiled: per side of a call and per standard metric (HTTP
//! and TCP), whether it is recorded as Istio defines it, not at all, or with labels removed
//! or set. Pilot sends
//! one entry per metric and side (see `metrics.proto`); what it sends is what validation
//! accepts, and what compiles here is what requests run.
//!
//! Values from a request (host, method, a header) have bounded cardinality: a value longer
//! than [`MAX_TAG_VALUE_LEN`] bytes, not printable ASCII, or new once [`MAX_TAG_VALUES`]
//! distinct values of that source were seen is [`OVERFLOW_VALUE`]; an absent one is
//! `unknown`.

use std::sync::Arc;

use http::Request;
use mesh_api::telemetry::is_label_name;
use mesh_proto::config::v1 as pb;
use pb::metric_tag::Value;

use super::Telemetry;
use super::custom::{StandardLabel, TagSource};
use super::interner::Interner;
use super::peer::UNKNOWN;

/// Longest request value used as a label value.
pub const MAX_TAG_VALUE_LEN: usize = 64;
/// Distinct request values one source (say `request.headers['x-tenant']`) labels.
pub const MAX_TAG_VALUES: usize = 100;
/// The label value of a request value past those bounds.
pub const OVERFLOW_VALUE: &str = "other";

/// The standard metrics, in the order of [`pb::StandardMetric`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Requests = 0,
    Duration = 1,
    RequestBytes = 2,
    ResponseBytes = 3,
    RequestMessages = 4,
    ResponseMessages = 5,
    TcpOpened = 6,
    TcpClosed = 7,
    TcpSent = 8,
    TcpReceived = 9,
}

const METRICS: usize = 10;
/// The HTTP/gRPC metrics come first.
const HTTP_METRICS: usize = 6;

impl Metric {
    fn is_tcp(index: usize) -> bool {
        index >= HTTP_METRICS
    }
}

/// A request value a label can take.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RequestValue {
    Host,
    Method,
    Header(http::HeaderName),
}

/// What one metric records on one side.
#[derive(Debug, Clone, Default)]
pub enum Rule {
    /// Istio's labels.
    #[default]
    Standard,
    Disabled,
    Changed(Arc<MetricRule>),
}

/// One metric's label changes: per standard label (in encoding order) kept, removed or set,
/// then the labels it adds.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct MetricRule {
    pub(super) standard: Vec<(StandardLabel, Slot)>,
    pub(super) added: Vec<(String, TagSource)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Slot {
    Keep,
    Remove,
    Set(TagSource),
}

/// The overrides of one side.
#[derive(Debug)]
pub struct SideOverrides {
    rules: [Rule; METRICS],
    /// The request values the rules use, read once per request; [`TagSource::Captured`]
    /// indexes this.
    captures: Vec<(RequestValue, Arc<Interner<String>>)>,
    no_captures: Arc<[Arc<String>]>,
    /// What the captures read on a TCP connection, which has no request: `unknown` each.
    tcp_captures: Arc<[Arc<String>]>,
}

/// Why an override was refused: its index in `telemetry.metrics.overrides`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverrideError {
    #[error("unknown metric {value}")]
    Metric { index: usize, value: i32 },
    #[error("unknown side {value}")]
    Side { index: usize, value: i32 },
    #[error("a second override for the same metric and side")]
    Duplicate { index: usize },
    #[error("tag {name:?}: not a Prometheus label name")]
    LabelName { index: usize, name: String },
    #[error("tag {name:?}: named twice")]
    DuplicateTag { index: usize, name: String },
    #[error("tag {name:?}: no value")]
    NoValue { index: usize, name: String },
    #[error("tag {name:?}: unknown request attribute {value}")]
    Attribute {
        index: usize,
        name: String,
        value: i32,
    },
    #[error("tag {name:?}: {header:?} is not a header name")]
    HeaderName {
        index: usize,
        name: String,
        header: String,
    },
}

impl OverrideError {
    pub fn index(&self) -> usize {
        match self {
            Self::Metric { index, .. }
            | Self::Side { index, .. }
            | Self::Duplicate { index }
            | Self::LabelName { index, .. }
            | Self::DuplicateTag { index, .. }
            | Self::NoValue { index, .. }
            | Self::Attribute { index, .. }
            | Self::HeaderName { index, .. } => *index,
        }
    }

    /// The field inside the override, in proto3 JSON names.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Metric { .. } | Self::Duplicate { .. } => "metric",
            Self::Side { .. } => "side",
            _ => "tags",
        }
    }
}

/// The overrides of a config, by the side of the call a listener serves; `None` where a
/// side has none, so requests there take one branch.
#[derive(Debug, Default)]
pub struct MetricsConfig {
    client: Option<Arc<SideOverrides>>,
    server: Option<Arc<SideOverrides>>,
}

impl MetricsConfig {
    /// Compiles `telemetry.metrics`; request values are bounded per source by `telemetry`'s
    /// shared counts (so a config push does not reset them).
    pub fn compile(
        cfg: Option<&pb::Telemetry>,
        telemetry: &Telemetry,
    ) -> Result<Self, OverrideError> {
        let list = cfg
            .and_then(|t| t.metrics.as_ref())
            .map_or(&[][..], |m| m.overrides.as_slice());
        let mut client = SideOverrides::default();
        let mut server = SideOverrides::default();
        let mut seen = [[false; METRICS]; 2];
        for (index, o) in list.iter().enumerate() {
            let metric =
                pb::StandardMetric::try_from(o.metric).map_err(|_| OverrideError::Metric {
                    index,
                    value: o.metric,
                })? as usize;
            let side = pb::MetricSide::try_from(o.side).map_err(|_| OverrideError::Side {
                index,
                value: o.side,
            })?;
            if std::mem::replace(&mut seen[side as usize][metric], true) {
                return Err(OverrideError::Duplicate { index });
            }
            let target = match side {
                pb::MetricSide::Client => &mut client,
                pb::MetricSide::Server => &mut server,
            };
            target.rules[metric] = if o.disabled {
                Rule::Disabled
            } else {
                match target.rule_of(index, metric, &o.tags, telemetry)? {
                    Some(rule) => Rule::Changed(Arc::new(rule)),
                    None => Rule::Standard,
                }
            };
        }
        let keep = |mut s: SideOverrides| {
            let unknown = Arc::new(UNKNOWN.to_owned());
            s.tcp_captures = s.captures.iter().map(|_| unknown.clone()).collect();
            s.rules
                .iter()
                .any(|r| !matches!(r, Rule::Standard))
                .then(|| Arc::new(s))
        };
        Ok(Self {
            client: keep(client),
            server: keep(server),
        })
    }

    /// The overrides for requests on a listener of `direction`.
    #[inline]
    pub fn for_direction(&self, direction: pb::Direction) -> Option<&Arc<SideOverrides>> {
        match direction {
            pb::Direction::Inbound => self.server.as_ref(),
            _ => self.client.as_ref(),
        }
    }
}

impl Default for SideOverrides {
    fn default() -> Self {
        Self {
            rules: Default::default(),
            captures: Vec::new(),
            no_captures: Arc::from(Vec::new()),
            tcp_captures: Arc::from(Vec::new()),
        }
    }
}

impl SideOverrides {
    /// The label changes of `tags`; `None` when they change nothing (removing a label the
    /// metric does not have), so that such a metric keeps its standard series.
    fn rule_of(
        &mut self,
        index: usize,
        metric: usize,
        tags: &[pb::MetricTag],
        telemetry: &Telemetry,
    ) -> Result<Option<MetricRule>, OverrideError> {
        let labels: &[StandardLabel] = if Metric::is_tcp(metric) {
            StandardLabel::TCP
        } else {
            &StandardLabel::ALL
        };
        let mut standard: Vec<(StandardLabel, Slot)> =
            labels.iter().map(|l| (*l, Slot::Keep)).collect();
        let mut added = Vec::new();
        let mut names = std::collections::HashSet::new();
        for tag in tags {
            let name = tag.name.as_str();
            if !is_label_name(name) {
                return Err(OverrideError::LabelName {
                    index,
                    name: name.to_owned(),
                });
            }
            if !names.insert(name) {
                return Err(OverrideError::DuplicateTag {
                    index,
                    name: name.to_owned(),
                });
            }
            let slot = match &tag.value {
                None => {
                    return Err(OverrideError::NoValue {
                        index,
                        name: name.to_owned(),
                    });
                }
                Some(Value::Remove(_)) => Slot::Remove,
                Some(Value::Literal(s)) => Slot::Set(TagSource::Literal(s.as_str().into())),
                Some(Value::Attribute(a)) => {
                    let value = match pb::RequestAttribute::try_from(*a) {
                        Ok(pb::RequestAttribute::Host) => RequestValue::Host,
                        Ok(pb::RequestAttribute::Method) => RequestValue::Method,
                        Err(_) => {
                            return Err(OverrideError::Attribute {
                                index,
                                name: name.to_owned(),
                                value: *a,
                            });
                        }
                    };
                    Slot::Set(self.capture(value, telemetry))
                }
                Some(Value::RequestHeader(h)) => {
                    let header = http::HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                        OverrideError::HeaderName {
                            index,
                            name: name.to_owned(),
                            header: h.clone(),
                        }
                    })?;
                    Slot::Set(self.capture(RequestValue::Header(header), telemetry))
                }
            };
            match standard.iter_mut().find(|(l, _)| l.name() == name) {
                Some((_, s)) => *s = slot,
                None => match slot {
                    // Removing a label the metric does not have changes nothing.
                    Slot::Remove | Slot::Keep => {}
                    Slot::Set(source) => added.push((name.to_owned(), source)),
                },
            }
        }
        let changed = !added.is_empty() || standard.iter().any(|(_, s)| *s != Slot::Keep);
        Ok(changed.then_some(MetricRule { standard, added }))
    }

    fn capture(&mut self, value: RequestValue, telemetry: &Telemetry) -> TagSource {
        let at = match self.captures.iter().position(|(v, _)| *v == value) {
            Some(at) => at,
            None => {
                let values = telemetry.tag_values(&value);
                self.captures.push((value, values));
                self.captures.len() - 1
            }
        };
        TagSource::Captured(at)
    }

    pub fn rule(&self, metric: Metric) -> &Rule {
        &self.rules[metric as usize]
    }

    /// Whether every HTTP/gRPC metric is off on this side.
    pub fn all_disabled(&self) -> bool {
        self.rules[..HTTP_METRICS]
            .iter()
            .all(|r| matches!(r, Rule::Disabled))
    }

    /// The values a TCP metric's request-valued tags take: `unknown` each.
    pub fn tcp_captures(&self) -> &Arc<[Arc<String>]> {
        &self.tcp_captures
    }

    /// The request values the rules use, bounded; empty when they use none.
    pub fn capture_values<B>(&self, req: &Request<B>) -> Arc<[Arc<String>]> {
        if self.captures.is_empty() {
            // Literals and removals only: nothing to read, nothing to allocate.
            return self.no_captures.clone();
        }
        self.captures
            .iter()
            .map(|(source, values)| {
                let raw = match source {
                    RequestValue::Method => Some(req.method().as_str()),
                    RequestValue::Host => req
                        .uri()
                        .authority()
                        .map(|a| a.as_str())
                        .or_else(|| req.headers().get(http::header::HOST)?.to_str().ok()),
                    RequestValue::Header(h) => req
                        .headers()
                        .get(h)
                        .map(|v| v.to_str().unwrap_or(OVERFLOW_VALUE)),
                };
                bounded(values, raw)
            })
            .collect()
    }
}

/// A request value as a label value: `unknown` when absent, [`OVERFLOW_VALUE`] past the
/// bounds.
fn bounded(values: &Interner<String>, raw: Option<&str>) -> Arc<String> {
    let value = match raw {
        None | Some("") => UNKNOWN,
        Some(v) if v.len() > MAX_TAG_VALUE_LEN || !v.bytes().all(|b| (0x20..0x7f).contains(&b)) => {
            OVERFLOW_VALUE
        }
        Some(v) => v,
    };
    values
        .get_or_insert(value, || value.to_owned())
        .or_else(|| values.get_or_insert(OVERFLOW_VALUE, || OVERFLOW_VALUE.to_owned()))
        .unwrap_or_else(|| Arc::new(OVERFLOW_VALUE.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(name: &str, value: Value) -> pb::MetricTag {
        pb::MetricTag {
            name: name.into(),
            value: Some(value),
        }
    }

    fn config(overrides: Vec<pb::MetricOverride>) -> pb::Telemetry {
        pb::Telemetry {
            metrics: Some(pb::MetricsOverrides { overrides }),
            ..Default::default()
        }
    }

    fn count(side: pb::MetricSide, disabled: bool, tags: Vec<pb::MetricTag>) -> pb::MetricOverride {
        pb::MetricOverride {
            metric: pb::StandardMetric::RequestCount as i32,
            side: side as i32,
            disabled,
            tags,
        }
    }

    #[test]
    fn no_overrides_and_no_op_overrides_leave_both_sides_without_any() {
        let t = Telemetry::default();
        let c = MetricsConfig::compile(None, &t).unwrap();
        assert!(c.for_direction(pb::Direction::Inbound).is_none());
        assert!(c.for_direction(pb::Direction::Outbound).is_none());
        // Removing a label the metric does not have changes nothing.
        let noop = config(vec![count(
            pb::MetricSide::Client,
            false,
            vec![tag("not_a_label", Value::Remove(true))],
        )]);
        let c = MetricsConfig::compile(Some(&noop), &t).unwrap();
        assert!(c.for_direction(pb::Direction::Outbound).is_none());
    }

    #[test]
    fn tcp_rules_carry_the_tcp_labels_and_unknown_request_values() {
        let t = Telemetry::default();
        let cfg = config(vec![
            pb::MetricOverride {
                metric: pb::StandardMetric::TcpSentBytes as i32,
                side: pb::MetricSide::Server as i32,
                disabled: false,
                tags: vec![
                    tag(
                        "method",
                        Value::Attribute(pb::RequestAttribute::Method as i32),
                    ),
                    tag("response_code", Value::Remove(true)),
                ],
            },
            pb::MetricOverride {
                metric: pb::StandardMetric::TcpOpenedConnections as i32,
                side: pb::MetricSide::Server as i32,
                disabled: true,
                tags: vec![],
            },
        ]);
        let c = MetricsConfig::compile(Some(&cfg), &t).unwrap();
        let server = c.for_direction(pb::Direction::Inbound).unwrap();
        assert!(matches!(server.rule(Metric::TcpOpened), Rule::Disabled));
        assert!(matches!(server.rule(Metric::Requests), Rule::Standard));
        // The HTTP metrics are all on: requests are recorded.
        assert!(!server.all_disabled());
        let Rule::Changed(rule) = server.rule(Metric::TcpSent) else {
            panic!("changed");
        };
        // `response_code` is not a TCP label: removing it changes nothing there.
        assert_eq!(rule.standard.len(), StandardLabel::TCP.len());
        assert!(rule.standard.iter().all(|(_, s)| *s == Slot::Keep));
        assert_eq!(rule.added.len(), 1);
        let captured: Vec<&str> = server.tcp_captures().iter().map(|v| v.as_str()).collect();
        assert_eq!(captured, ["unknown"]);
    }

    #[test]
    fn each_side_gets_its_own_rules() {
        let t = Telemetry::default();
        let cfg = config(vec![
            count(pb::MetricSide::Server, true, vec![]),
            count(
                pb::MetricSide::Client,
                false,
                vec![tag("response_code", Value::Remove(true))],
            ),
        ]);
        let c = MetricsConfig::compile(Some(&cfg), &t).unwrap();
        let server = c.for_direction(pb::Direction::Inbound).unwrap();
        assert!(matches!(server.rule(Metric::Requests), Rule::Disabled));
        assert!(matches!(server.rule(Metric::Duration), Rule::Standard));
        assert!(!server.all_disabled());
        let client = c.for_direction(pb::Direction::Outbound).unwrap();
        let Rule::Changed(rule) = client.rule(Metric::Requests) else {
            panic!("changed");
        };
        let code = rule
            .standard
            .iter()
            .find(|(l, _)| *l == StandardLabel::ResponseCode);
        assert_eq!(code.map(|(_, s)| s), Some(&Slot::Remove));
    }

    #[test]
    fn what_pilot_never_sends_is_refused_with_its_index() {
        let t = Telemetry::default();
        let ok = count(pb::MetricSide::Client, true, vec![]);
        let refused = |o: pb::MetricOverride| {
            MetricsConfig::compile(Some(&config(vec![ok.clone(), o])), &t).unwrap_err()
        };
        assert_eq!(refused(ok.clone()), OverrideError::Duplicate { index: 1 });
        let bad_label = count(
            pb::MetricSide::Server,
            false,
            vec![tag("a-b", Value::Literal("x".into()))],
        );
        assert!(matches!(
            refused(bad_label),
            OverrideError::LabelName { index: 1, .. }
        ));
        let bad_header = count(
            pb::MetricSide::Server,
            false,
            vec![tag("h", Value::RequestHeader("a b".into()))],
        );
        assert!(matches!(
            refused(bad_header),
            OverrideError::HeaderName { .. }
        ));
        let mut bad_metric = ok.clone();
        bad_metric.metric = 99;
        assert_eq!(refused(bad_metric).to_string(), "unknown metric 99");
    }

    #[test]
    fn request_values_are_bounded_in_length_and_count() {
        let t = Telemetry::default();
        let cfg = config(vec![count(
            pb::MetricSide::Server,
            false,
            vec![tag("tenant", Value::RequestHeader("x-tenant".into()))],
        )]);
        let c = MetricsConfig::compile(Some(&cfg), &t).unwrap();
        let side = c.for_direction(pb::Direction::Inbound).unwrap();
        let value = |tenant: Option<&str>| {
            let mut req = Request::builder();
            if let Some(v) = tenant {
                req = req.header("x-tenant", v);
            }
            side.capture_values(&req.body(()).unwrap())[0].to_string()
        };
        assert_eq!(value(None), UNKNOWN);
        assert_eq!(
            value(Some(&"x".repeat(MAX_TAG_VALUE_LEN + 1))),
            OVERFLOW_VALUE
        );
        let x64 = "x".repeat(MAX_TAG_VALUE_LEN);
        assert_eq!(value(Some(&x64)), x64);
        // `unknown` and the 64-byte value took two places.
        for i in 0..MAX_TAG_VALUES - 2 {
            assert_eq!(value(Some(&format!("t{i}"))), format!("t{i}"));
        }
        assert_eq!(value(Some("one-more")), OVERFLOW_VALUE);
        assert_eq!(value(Some("t0")), "t0");
        // A new config of the same proxy keeps the count.
        let again = MetricsConfig::compile(Some(&cfg), &t).unwrap();
        let side = again.for_direction(pb::Direction::Inbound).unwrap();
        let req = Request::builder()
            .header("x-tenant", "fresh")
            .body(())
            .unwrap();
        assert_eq!(side.capture_values(&req)[0].as_str(), OVERFLOW_VALUE);
    }
}
