//! A cluster's endpoints grouped in subsets, with a balancer per subset and outlier
//! detection: built from the spec once for a static cluster, again on every new DNS answer
//! for a DNS cluster.

use std::collections::{BTreeMap, HashMap};

use crate::fast_map::{self, FastMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use mesh_proto::config::v1 as pb;
use pb::cluster::Discovery;
use prometheus_client::metrics::counter::Counter;

use super::outlier::{self, Detector, Observed};
use super::tls_policy::{CompileFor, TransportPlan};
use crate::config::FieldError;
use crate::identity::IdentitySlot;
use crate::lb::{self, Balancer, Policy};

pub struct Members {
    /// Balancer per subset name; "" holds every endpoint.
    subsets: FastMap<String, Balancer>,
    /// Outlier detection, with each subset's members as indexes into the cluster's endpoints.
    outliers: Option<(Detector, HashMap<String, Vec<usize>>)>,
}

/// What a build of the members reads besides the spec.
pub struct BuildInput<'a> {
    pub identity: &'a Arc<IdentitySlot>,
    pub purpose: CompileFor,
    pub policy: Policy,
    /// The latest addresses of a name; None: no answer yet (the name gives no endpoint).
    pub answer: &'a dyn Fn(&str) -> Option<Arc<[IpAddr]>>,
    /// The members before, whose outlier states carry over to the same addresses.
    pub previous: Option<&'a Members>,
    pub ejections: Counter,
}

/// An endpoint's `address` split into its host (an IP or a name) and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointHost<'s> {
    Ip(SocketAddr),
    Name(&'s str, u16),
}

/// Parses an endpoint address of a cluster: names only where the cluster resolves them.
pub fn endpoint_host(address: &str, discovery: Discovery) -> Result<EndpointHost<'_>, String> {
    if let Ok(a) = address.parse::<SocketAddr>() {
        return Ok(EndpointHost::Ip(a));
    }
    let not = || format!("{address:?} is not an IP:port address");
    if discovery == Discovery::Static {
        return Err(not());
    }
    let (host, port) = address.rsplit_once(':').ok_or_else(not)?;
    let port: u16 = port.parse().map_err(|_| not())?;
    // A trailing dot (a fully qualified name) is kept for the lookup.
    let labels = host.strip_suffix('.').unwrap_or(host);
    let valid = !labels.is_empty()
        && labels.len() <= 253
        && labels.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !valid {
        return Err(format!("{address:?} is neither IP:port nor NAME:port"));
    }
    Ok(EndpointHost::Name(host, port))
}

impl Members {
    pub fn build(spec: &pb::Cluster, input: BuildInput<'_>) -> Result<Members, FieldError> {
        let discovery = spec.discovery();
        let mut transports = TransportPlan::new(spec.tls.as_ref(), input.identity, input.purpose)?;
        let mut endpoints = Vec::with_capacity(spec.endpoints.len());
        for (i, e) in spec.endpoints.iter().enumerate() {
            let host = endpoint_host(&e.address, discovery)
                .map_err(|reason| FieldError::new(format!("endpoints[{i}].address"), reason))?;
            let addresses: Vec<SocketAddr> = match host {
                EndpointHost::Ip(a) => vec![a],
                EndpointHost::Name(name, port) => {
                    let answer = (input.answer)(name);
                    let mut ips: Vec<IpAddr> =
                        answer.iter().flat_map(|a| a.iter().copied()).collect();
                    match discovery {
                        // One logical host: the answer's first address.
                        Discovery::LogicalDns => ips.truncate(1),
                        // Every address; sorted, so a server rotating its order changes nothing.
                        _ => {
                            ips.sort();
                            ips.dedup();
                        }
                    }
                    ips.into_iter()
                        .map(|ip| SocketAddr::new(ip, port))
                        .collect()
                }
            };
            for address in addresses {
                let transport = transports.for_endpoint(e, address)?;
                endpoints.push((
                    Arc::new(lb::Endpoint::new(address, e.weight.max(1)).with_transport(transport)),
                    &e.labels,
                ));
            }
        }
        let mut subsets = fast_map::with_capacity(spec.subsets.len() + 1);
        subsets.insert(
            String::new(),
            Balancer::new(
                input.policy,
                endpoints.iter().map(|(e, _)| e.clone()).collect(),
            ),
        );
        for (i, subset) in spec.subsets.iter().enumerate() {
            if subset.name.is_empty() {
                return Err(FieldError::new(
                    format!("subsets[{i}].name"),
                    "must not be empty",
                ));
            }
            let members = endpoints
                .iter()
                .filter(|(_, labels)| subset.labels.iter().all(|(k, v)| labels.get(k) == Some(v)))
                .map(|(e, _)| e.clone())
                .collect();
            if subsets
                .insert(subset.name.clone(), Balancer::new(input.policy, members))
                .is_some()
            {
                return Err(FieldError::new(
                    format!("subsets[{i}].name"),
                    format!("duplicate subset {:?}", subset.name),
                ));
            }
        }
        let outliers = spec.outlier_detection.as_ref().map(|od| {
            let members = subset_members(spec, &endpoints);
            let detector = Detector::carried_over(
                outlier::Config::from_spec(od),
                endpoints.iter().map(|(e, _)| e.address).collect(),
                input
                    .previous
                    .and_then(|p| p.outliers.as_ref())
                    .map(|(d, _)| d),
                input.ejections,
            );
            (detector, members)
        });
        Ok(Members { subsets, outliers })
    }

    /// The addresses of every endpoint, in the order of the whole cluster's balancer.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.subsets
            .get("")
            .map(|b| b.endpoints().iter().map(|e| e.address).collect())
            .unwrap_or_default()
    }

    /// The balancer of a subset ("" for the whole cluster); None for an unknown subset.
    pub fn balancer(&self, subset: &str) -> Option<&Balancer> {
        self.subsets.get(subset)
    }

    /// Indexes (in `subset`'s balancer) of the endpoints outlier detection ejected; None when
    /// none is, the common case, decided without a lock.
    pub fn ejected(&self, subset: &str) -> Option<Vec<usize>> {
        let (detector, members) = self.outliers.as_ref()?;
        if !detector.any_ejected() {
            return None;
        }
        let ejected = detector.ejected_now(tokio::time::Instant::now());
        let in_subset: Vec<usize> = match members.get(subset) {
            Some(m) => (0..m.len()).filter(|i| ejected.contains(&m[*i])).collect(),
            None => ejected,
        };
        (!in_subset.is_empty()).then_some(in_subset)
    }

    /// Counts how an attempt on endpoint `index` of `subset`'s balancer ended; `address`
    /// guards against members rebuilt (by a DNS answer) since the pick.
    pub fn observe(
        &self,
        cluster: &str,
        subset: &str,
        index: usize,
        address: SocketAddr,
        observed: Observed,
    ) {
        let Some((detector, members)) = &self.outliers else {
            return;
        };
        let same = self
            .balancer(subset)
            .and_then(|b| b.endpoints().get(index))
            .is_some_and(|e| e.address == address);
        if !same {
            return;
        }
        let host = match members.get(subset) {
            Some(m) => m.get(index).copied(),
            None => Some(index),
        };
        if let Some(host) = host
            && detector.observe(host, observed, tokio::time::Instant::now())
        {
            tracing::info!(%cluster, endpoint = host, "outlier detection ejected an endpoint");
        }
    }
}

/// For each named subset, its members as indexes into the cluster's endpoints ("" is all).
fn subset_members(
    spec: &pb::Cluster,
    endpoints: &[(Arc<lb::Endpoint>, &BTreeMap<String, String>)],
) -> HashMap<String, Vec<usize>> {
    spec.subsets
        .iter()
        .map(|s| {
            let members = endpoints
                .iter()
                .enumerate()
                .filter(|(_, (_, labels))| s.labels.iter().all(|(k, v)| labels.get(k) == Some(v)))
                .map(|(i, _)| i)
                .collect();
            (s.name.clone(), members)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_endpoints_of_dns_clusters_only() {
        assert_eq!(
            endpoint_host("127.0.0.1:80", Discovery::Static),
            Ok(EndpointHost::Ip("127.0.0.1:80".parse().unwrap()))
        );
        assert!(endpoint_host("api.example.com:443", Discovery::Static).is_err());
        assert_eq!(
            endpoint_host("api.example.com:443", Discovery::StrictDns),
            Ok(EndpointHost::Name("api.example.com", 443))
        );
        assert_eq!(
            endpoint_host("[::1]:8080", Discovery::LogicalDns),
            Ok(EndpointHost::Ip("[::1]:8080".parse().unwrap()))
        );
        assert_eq!(
            endpoint_host("api.example.com.:443", Discovery::StrictDns),
            Ok(EndpointHost::Name("api.example.com.", 443))
        );
        for bad in [
            "api.example.com",
            "api..example.com:1",
            "a b:1",
            ":80",
            "x:99999",
        ] {
            assert!(endpoint_host(bad, Discovery::StrictDns).is_err(), "{bad}");
        }
    }

    fn members(discovery: &str, answer: &[&str]) -> Vec<SocketAddr> {
        let spec: pb::Cluster = serde_saphyr::from_str(&format!(
            "{{name: ext, discovery: {discovery}, endpoints: [{{address: 'api.example.com:8443'}}, {{address: '127.0.0.9:80'}}]}}"
        ))
        .unwrap();
        let ips: Arc<[IpAddr]> = answer.iter().map(|a| a.parse().unwrap()).collect();
        let lookup = |name: &str| (name == "api.example.com").then(|| ips.clone());
        let m = Members::build(
            &spec,
            BuildInput {
                identity: &Arc::default(),
                purpose: CompileFor::Proxy,
                policy: Policy::RoundRobin,
                answer: &lookup,
                previous: None,
                ejections: Counter::default(),
            },
        )
        .unwrap();
        m.addresses()
    }

    #[test]
    fn strict_dns_uses_every_address_and_logical_dns_the_first() {
        let addrs =
            |v: &[&str]| -> Vec<SocketAddr> { v.iter().map(|a| a.parse().unwrap()).collect() };
        assert_eq!(
            members("STRICT_DNS", &["127.0.0.3", "127.0.0.2", "127.0.0.3"]),
            addrs(&["127.0.0.2:8443", "127.0.0.3:8443", "127.0.0.9:80"])
        );
        assert_eq!(
            members("LOGICAL_DNS", &["127.0.0.3", "127.0.0.2"]),
            addrs(&["127.0.0.3:8443", "127.0.0.9:80"])
        );
        // No answer yet: the name gives no endpoint, the IP endpoint stays.
        assert_eq!(members("STRICT_DNS", &[]), addrs(&["127.0.0.9:80"]));
    }
}
