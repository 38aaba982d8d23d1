//! Where a request or a connection goes upstream, resolved from one config snapshot, and the
//! one way an endpoint is chosen there.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use super::cluster::Cluster;
use super::outlier::{self, Observed};
use crate::lb::{Endpoint, Picked};
use crate::metrics::Metrics;
use crate::tcp_route::PASSTHROUGH;

/// A cluster (held, never looked up by name again) and which of its endpoints may serve.
#[derive(Debug, Clone)]
pub struct Target {
    pub cluster: Arc<Cluster>,
    pub endpoints: Endpoints,
}

#[derive(Debug, Clone)]
pub enum Endpoints {
    /// The balancer of a subset ("" for the whole cluster).
    Subset(String),
    /// Where the client was going (Envoy's ORIGINAL_DST cluster): the passthrough cluster's
    /// pool, plaintext, to this one address.
    OriginalDst(Arc<Endpoint>),
}

impl Target {
    pub fn subset(cluster: Arc<Cluster>, subset: impl Into<String>) -> Self {
        Self {
            cluster,
            endpoints: Endpoints::Subset(subset.into()),
        }
    }

    /// Where a route to `cluster` goes: its subset's endpoints, or for an ORIGINAL_DST
    /// cluster the connection's original destination (none: no endpoint, so 503 `UH`).
    pub fn route_to(
        cluster: &Arc<Cluster>,
        subset: &str,
        original_dst: Option<SocketAddr>,
    ) -> Self {
        match (cluster.original_dst_transport(), original_dst) {
            (Some(transport), Some(dst)) => Self {
                cluster: cluster.clone(),
                endpoints: Endpoints::OriginalDst(Arc::new(
                    Endpoint::new(dst, 1).with_transport(transport.clone()),
                )),
            },
            _ => Self::subset(cluster.clone(), subset),
        }
    }

    /// `dst` through `passthrough` (see [`passthrough_cluster`]).
    pub fn original_dst(passthrough: Arc<Cluster>, dst: SocketAddr) -> Self {
        Self {
            cluster: passthrough,
            endpoints: Endpoints::OriginalDst(Arc::new(Endpoint::new(dst, 1))),
        }
    }

    /// Chooses an endpoint for one HTTP attempt, one upgraded stream or one TCP connection,
    /// counted in flight (for LEAST_REQUEST) until the pick drops. `tried` holds the indexes of
    /// earlier attempts, which a retry avoids when it can. `None`: no endpoint (unknown or
    /// empty subset).
    pub fn pick(&self, hash: Option<u64>, tried: &[usize]) -> Option<Picked> {
        match &self.endpoints {
            Endpoints::Subset(subset) => {
                let members = self.cluster.members();
                let balancer = members.balancer(subset)?;
                match members.ejected(subset) {
                    None => balancer.start(hash, tried),
                    Some(ejected) => {
                        let n = balancer.endpoints().len();
                        balancer.start(hash, &outlier::avoid(&ejected, tried, n))
                    }
                }
            }
            Endpoints::OriginalDst(endpoint) => Some(Picked::single(endpoint)),
        }
    }

    /// Tells outlier detection how an attempt on `picked` ended.
    pub fn observe(&self, picked: &Picked, observed: Observed) {
        if let Endpoints::Subset(subset) = &self.endpoints {
            let address = picked.endpoint().address;
            self.cluster.members().observe(
                &self.cluster.name,
                subset,
                picked.index,
                address,
                observed,
            );
        }
    }

    /// For a DNS cluster whose names have no answer yet, the wait for them (bounded); None
    /// for every other target, which is never kept waiting.
    pub fn first_answers(&self) -> Option<impl Future<Output = ()> + Send + 'static> {
        match (&self.endpoints, self.cluster.resolving()) {
            (Endpoints::Subset(_), Some(r)) if !r.is_ready() => Some(r.first_answers()),
            _ => None,
        }
    }
}

/// The cluster of original destinations: no endpoints of its own, one connection pool shared
/// by every passthrough request and connection of the proxy.
pub fn passthrough_cluster(metrics: &Metrics) -> Arc<Cluster> {
    let spec = mesh_proto::config::v1::Cluster {
        name: PASSTHROUGH.into(),
        ..Default::default()
    };
    let cluster = Cluster::compile(&spec, None, || metrics.connection_stats(PASSTHROUGH))
        .expect("the passthrough cluster is valid");
    Arc::new(cluster)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::ConnectionStats;

    fn cluster(yaml: &str) -> Arc<Cluster> {
        let spec = serde_saphyr::from_str(yaml).unwrap();
        Arc::new(Cluster::compile(&spec, None, ConnectionStats::default).unwrap())
    }

    #[test]
    fn a_pick_counts_in_flight_until_dropped() {
        let c = cluster("{name: a, endpoints: [{address: '127.0.0.1:1'}]}");
        let target = Target::subset(c.clone(), "");
        let endpoint = c.members().balancer("").unwrap().endpoints()[0].clone();
        let first = target.pick(None, &[]).unwrap();
        let second = target.pick(None, &[]).unwrap();
        assert_eq!(endpoint.active_requests(), 2);
        drop(first);
        assert_eq!(endpoint.active_requests(), 1);
        drop(second);
        assert_eq!(endpoint.active_requests(), 0);
    }

    #[test]
    fn least_request_sends_new_work_away_from_held_picks() {
        let c = cluster(
            "{name: a, lbPolicy: LEAST_REQUEST, endpoints: [{address: '127.0.0.1:1'}, {address: '127.0.0.1:2'}]}",
        );
        let target = Target::subset(c, "");
        let held = target.pick(None, &[]).unwrap();
        for _ in 0..100 {
            let next = target.pick(None, &[]).unwrap();
            assert_ne!(next.index, held.index);
        }
    }

    #[test]
    fn every_policy_skips_ejected_endpoints_and_uses_them_when_all_are() {
        for policy in [
            "ROUND_ROBIN",
            "LEAST_REQUEST",
            "RANDOM",
            "RING_HASH",
            "MAGLEV",
        ] {
            let c = cluster(&format!(
                "{{name: a, lbPolicy: {policy}, hashPolicy: {{header: x-user}},
                  outlierDetection: {{consecutive5xx: 1, maxEjectionPercent: 100}},
                  subsets: [{{name: v1, labels: {{v: '1'}}}}],
                  endpoints: [{{address: '127.0.0.1:1', labels: {{v: '1'}}}},
                              {{address: '127.0.0.1:2'}},
                              {{address: '127.0.0.1:3', labels: {{v: '1'}}}}]}}"
            ));
            let all = Target::subset(c.clone(), "");
            let key = Some(crate::lb::hash_key(b"alice"));
            let first = all.pick(key, &[]).unwrap();
            let ejected = first.endpoint().address;
            all.observe(&first, Observed::Status(503));
            drop(first);
            for _ in 0..200 {
                let p = all.pick(key, &[]).unwrap();
                assert_ne!(p.endpoint().address, ejected, "{policy}");
            }
            // The subset sees the same ejection through its own indexes.
            let v1 = Target::subset(c.clone(), "v1");
            for _ in 0..50 {
                let p = v1.pick(key, &[]).unwrap();
                if ejected.port() != 2 {
                    assert_ne!(p.endpoint().address, ejected, "{policy} subset");
                }
            }
            // Every endpoint ejected: all are used again rather than none.
            for _ in 0..20 {
                let p = all.pick(None, &[]).unwrap();
                all.observe(&p, Observed::Status(503));
            }
            assert!(all.pick(key, &[]).is_some(), "{policy}");
        }
    }

    #[test]
    fn unknown_subset_has_no_endpoint_and_original_dst_has_one() {
        let c = cluster("{name: a, endpoints: [{address: '127.0.0.1:1'}]}");
        assert!(Target::subset(c, "v9").pick(None, &[]).is_none());
        let dst: SocketAddr = "198.18.0.7:5432".parse().unwrap();
        let passthrough = passthrough_cluster(&Metrics::default());
        let target = Target::original_dst(passthrough, dst);
        let picked = target.pick(None, &[]).unwrap();
        assert_eq!(picked.endpoint().address, dst);
        assert_eq!(picked.endpoint().active_requests(), 1);
    }
}
