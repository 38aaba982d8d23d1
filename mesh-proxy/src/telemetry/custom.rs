//! Label sets as metrics overrides change them: Istio's labels of a request, some removed,
//! some set from a literal or a request value, some added. Two requests whose labels differ
//! only in a removed label hash and compare equal, so they count in one series.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use prometheus_client::encoding::{
    EncodeLabel, EncodeLabelSet, EncodeLabelValue, LabelSetEncoder, LabelValueEncoder,
};

use super::flags::ResponseFlags;
use super::labels::{
    PeerLabels, Reporter, RequestLabels, RequestProtocol, SecurityPolicy, TcpLabels,
};
use super::overrides::{MetricRule, Slot};

/// Istio's labels of the request metrics, in the order they are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StandardLabel {
    Reporter,
    SourceWorkload,
    SourceWorkloadNamespace,
    SourcePrincipal,
    SourceApp,
    SourceVersion,
    SourceCluster,
    DestinationWorkload,
    DestinationWorkloadNamespace,
    DestinationPrincipal,
    DestinationApp,
    DestinationVersion,
    DestinationCluster,
    DestinationService,
    DestinationServiceName,
    DestinationServiceNamespace,
    RequestProtocol,
    ResponseFlags,
    ConnectionSecurityPolicy,
    ResponseCode,
    GrpcResponseStatus,
}

impl StandardLabel {
    pub const ALL: [StandardLabel; 21] = [
        Self::Reporter,
        Self::SourceWorkload,
        Self::SourceWorkloadNamespace,
        Self::SourcePrincipal,
        Self::SourceApp,
        Self::SourceVersion,
        Self::SourceCluster,
        Self::DestinationWorkload,
        Self::DestinationWorkloadNamespace,
        Self::DestinationPrincipal,
        Self::DestinationApp,
        Self::DestinationVersion,
        Self::DestinationCluster,
        Self::DestinationService,
        Self::DestinationServiceName,
        Self::DestinationServiceNamespace,
        Self::RequestProtocol,
        Self::ResponseFlags,
        Self::ConnectionSecurityPolicy,
        Self::ResponseCode,
        Self::GrpcResponseStatus,
    ];

    /// The labels of the TCP metrics: [`Self::ALL`] without the response's code and status,
    /// which come last.
    pub const TCP: &'static [StandardLabel] = Self::ALL.split_at(Self::ALL.len() - 2).0;

    pub fn name(self) -> &'static str {
        match self {
            Self::Reporter => "reporter",
            Self::SourceWorkload => "source_workload",
            Self::SourceWorkloadNamespace => "source_workload_namespace",
            Self::SourcePrincipal => "source_principal",
            Self::SourceApp => "source_app",
            Self::SourceVersion => "source_version",
            Self::SourceCluster => "source_cluster",
            Self::DestinationWorkload => "destination_workload",
            Self::DestinationWorkloadNamespace => "destination_workload_namespace",
            Self::DestinationPrincipal => "destination_principal",
            Self::DestinationApp => "destination_app",
            Self::DestinationVersion => "destination_version",
            Self::DestinationCluster => "destination_cluster",
            Self::DestinationService => "destination_service",
            Self::DestinationServiceName => "destination_service_name",
            Self::DestinationServiceNamespace => "destination_service_namespace",
            Self::RequestProtocol => "request_protocol",
            Self::ResponseFlags => "response_flags",
            Self::ConnectionSecurityPolicy => "connection_security_policy",
            Self::ResponseCode => "response_code",
            Self::GrpcResponseStatus => "grpc_response_status",
        }
    }

    /// This label's value in `l`, borrowed.
    fn value(self, l: &RequestLabels) -> LabelValue<'_> {
        let c = &l.call;
        fn peer<'a>(p: &'a Arc<PeerLabels>, f: fn(&PeerLabels) -> &str) -> LabelValue<'a> {
            LabelValue::Str(f(p))
        }
        match self {
            Self::Reporter => LabelValue::Reporter(c.reporter),
            Self::SourceWorkload => peer(&c.source, |p| &p.workload().name),
            Self::SourceWorkloadNamespace => peer(&c.source, |p| &p.workload().namespace),
            Self::SourcePrincipal => peer(&c.source, |p| p.principal()),
            Self::SourceApp => peer(&c.source, |p| &p.workload().app),
            Self::SourceVersion => peer(&c.source, |p| &p.workload().version),
            Self::SourceCluster => peer(&c.source, |p| &p.workload().cluster),
            Self::DestinationWorkload => peer(&c.destination, |p| &p.workload().name),
            Self::DestinationWorkloadNamespace => peer(&c.destination, |p| &p.workload().namespace),
            Self::DestinationPrincipal => peer(&c.destination, |p| p.principal()),
            Self::DestinationApp => peer(&c.destination, |p| &p.workload().app),
            Self::DestinationVersion => peer(&c.destination, |p| &p.workload().version),
            Self::DestinationCluster => peer(&c.destination, |p| &p.workload().cluster),
            Self::DestinationService => LabelValue::Str(c.service.host()),
            Self::DestinationServiceName => LabelValue::Str(c.service.name()),
            Self::DestinationServiceNamespace => LabelValue::Str(
                c.service
                    .namespace()
                    .unwrap_or(&c.destination.workload().namespace),
            ),
            Self::RequestProtocol => LabelValue::Protocol(l.protocol),
            Self::ResponseFlags => LabelValue::Flags(c.response_flags),
            Self::ConnectionSecurityPolicy => LabelValue::Security(c.security),
            Self::ResponseCode => LabelValue::Code(l.response_code),
            Self::GrpcResponseStatus => LabelValue::Grpc(l.grpc_status),
        }
    }
}

/// Where a set label's value comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TagSource {
    Literal(Arc<str>),
    /// The request value at this index of the request's captured values.
    Captured(usize),
}

/// One label value, borrowed from the label set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum LabelValue<'a> {
    Str(&'a str),
    Reporter(Reporter),
    Protocol(RequestProtocol),
    Flags(ResponseFlags),
    Security(SecurityPolicy),
    Code(u16),
    Grpc(Option<u32>),
}

impl EncodeLabelValue for LabelValue<'_> {
    fn encode(&self, e: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        match self {
            Self::Str(s) => EncodeLabelValue::encode(s, e),
            Self::Reporter(v) => v.encode(e),
            Self::Protocol(v) => v.encode(e),
            Self::Flags(v) => v.encode(e),
            Self::Security(v) => v.encode(e),
            Self::Code(v) => v.encode(e),
            Self::Grpc(Some(v)) => v.encode(e),
            Self::Grpc(None) => EncodeLabelValue::encode(&"", e),
        }
    }
}

/// A request's labels under one metric's rule, with the request values it captured.
#[derive(Debug, Clone)]
pub struct ChangedLabels {
    pub labels: RequestLabels,
    pub rule: Arc<MetricRule>,
    pub captured: Arc<[Arc<String>]>,
}

impl ChangedLabels {
    fn source<'a>(&'a self, s: &'a TagSource) -> LabelValue<'a> {
        match s {
            TagSource::Literal(v) => LabelValue::Str(v),
            TagSource::Captured(i) => {
                LabelValue::Str(self.captured.get(*i).map_or("", |v| v.as_str()))
            }
        }
    }

    /// The labels as they are shown: name and value, removed ones left out.
    fn each(&self) -> impl Iterator<Item = (&str, LabelValue<'_>)> {
        let standard = self
            .rule
            .standard
            .iter()
            .filter_map(|(l, slot)| match slot {
                Slot::Keep => Some((l.name(), l.value(&self.labels))),
                Slot::Remove => None,
                Slot::Set(s) => Some((l.name(), self.source(s))),
            });
        let added = self
            .rule
            .added
            .iter()
            .map(|(name, s)| (name.as_str(), self.source(s)));
        standard.chain(added)
    }
}

impl Hash for ChangedLabels {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for (_, v) in self.each() {
            v.hash(state);
        }
    }
}

impl PartialEq for ChangedLabels {
    fn eq(&self, other: &Self) -> bool {
        (Arc::ptr_eq(&self.rule, &other.rule) || self.rule == other.rule)
            && self.each().eq(other.each())
    }
}

impl Eq for ChangedLabels {}

impl EncodeLabelSet for ChangedLabels {
    fn encode(&self, e: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        for (name, value) in self.each() {
            (name, value).encode(e.encode_label())?;
        }
        Ok(())
    }
}

/// The key of a request metric's series: Istio's labels, or labels an override changed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RequestKey {
    Standard(RequestLabels),
    Changed(ChangedLabels),
}

/// The key of a TCP metric's series: Istio's labels, or labels an override changed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TcpKey {
    Standard(TcpLabels),
    Changed(ChangedLabels),
}

impl EncodeLabelSet for TcpKey {
    fn encode(&self, e: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        match self {
            Self::Standard(l) => l.encode(e),
            Self::Changed(c) => c.encode(e),
        }
    }
}

impl EncodeLabelSet for RequestKey {
    fn encode(&self, e: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        match self {
            Self::Standard(l) => l.encode(e),
            Self::Changed(c) => c.encode(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::registry::Registry;

    use super::super::labels::{CallLabels, ServiceLabels};
    use super::super::peer::WorkloadMetadata;
    use super::*;

    fn labels(code: u16) -> RequestLabels {
        let peer = |name: &str, sa: &str| {
            Arc::new(PeerLabels::of(
                WorkloadMetadata::from_labels(name, "default", "c1", [("app", name)]),
                Some(sa),
            ))
        };
        RequestLabels {
            call: CallLabels {
                reporter: Reporter::Source,
                source: peer("productpage", "spiffe://cluster.local/ns/default/sa/pp"),
                destination: peer("reviews", "spiffe://cluster.local/ns/default/sa/reviews"),
                service: Arc::new(ServiceLabels::from_host(
                    "reviews.default.svc.cluster.local",
                )),
                response_flags: ResponseFlags::default(),
                security: SecurityPolicy::MutualTls,
            },
            protocol: RequestProtocol::Grpc,
            response_code: code,
            grpc_status: Some(14),
        }
    }

    /// The exposition of one series per key, counted once each.
    fn exposition(keys: &[RequestKey]) -> String {
        let mut registry = Registry::default();
        let family = Family::<RequestKey, Counter>::default();
        registry.register("istio_requests", "", family.clone());
        for k in keys {
            family.get_or_create(k).inc();
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    fn changed(code: u16, rule: &Arc<MetricRule>) -> RequestKey {
        RequestKey::Changed(ChangedLabels {
            labels: labels(code),
            rule: rule.clone(),
            captured: Arc::from(vec![Arc::new("acme".to_string())]),
        })
    }

    #[test]
    fn the_tcp_labels_are_all_but_the_responses_code_and_status() {
        assert_eq!(StandardLabel::TCP.len(), StandardLabel::ALL.len() - 2);
        for l in StandardLabel::ALL {
            let response = matches!(
                l,
                StandardLabel::ResponseCode | StandardLabel::GrpcResponseStatus
            );
            assert_eq!(StandardLabel::TCP.contains(&l), !response, "{l:?}");
        }
    }

    #[test]
    fn a_rule_keeping_every_label_encodes_them_as_istio_does() {
        let keep = Arc::new(MetricRule {
            standard: StandardLabel::ALL
                .iter()
                .map(|l| (*l, Slot::Keep))
                .collect(),
            added: Vec::new(),
        });
        assert_eq!(
            exposition(&[changed(200, &keep)]),
            exposition(&[RequestKey::Standard(labels(200))])
        );
    }

    #[test]
    fn removed_labels_merge_series_and_set_labels_take_their_values() {
        let rule = Arc::new(MetricRule {
            standard: StandardLabel::ALL
                .iter()
                .map(|l| match l {
                    StandardLabel::ResponseCode => (*l, Slot::Remove),
                    StandardLabel::DestinationApp => {
                        (*l, Slot::Set(TagSource::Literal("renamed".into())))
                    }
                    _ => (*l, Slot::Keep),
                })
                .collect(),
            added: vec![("tenant".into(), TagSource::Captured(0))],
        });
        let text = exposition(&[changed(200, &rule), changed(503, &rule)]);
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("istio_requests_total{"))
            .collect();
        assert_eq!(series.len(), 1, "{text}");
        assert!(series[0].ends_with(" 2"), "{text}");
        assert!(!series[0].contains("response_code"), "{text}");
        assert!(series[0].contains("destination_app=\"renamed\""), "{text}");
        assert!(series[0].contains("grpc_response_status=\"14\""), "{text}");
        assert!(series[0].contains(",tenant=\"acme\"}"), "{text}");
    }
}
