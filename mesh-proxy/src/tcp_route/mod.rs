//! Layer 4 routes (Istio's VirtualService `tcp` and `tls`): picking where a connection goes by
//! its destination address, port and TLS server name, then a cluster by weight.
//!
//! Compiled once per config; the socket side ([`crate::listener`]) peeks the server name
//! only when a route that could take the connection asks for one.

mod client_hello;
mod sni;

use std::net::SocketAddr;

use mesh_proto::config::v1 as pb;

use crate::config::FieldError;

pub use crate::cidr::Cidr;
pub use client_hello::{Hello, MAX_HELLO_BYTES, client_hello_sni, peek_sni};
pub use sni::SniHost;

/// Istio's name for the original destination of a redirected connection: a route to it
/// forwards there (ServiceEntry `resolution: NONE`). On a listener without an original
/// destination the connection is closed.
pub const PASSTHROUGH: &str = "PassthroughCluster";

/// A compiled route list of one listener, in config order (first match wins).
#[derive(Debug, Default)]
pub struct TcpRoutes {
    routes: Vec<TcpRoute>,
}

#[derive(Debug)]
pub struct TcpRoute {
    pub name: String,
    /// Empty: every connection.
    matches: Vec<Match>,
    destinations: Vec<Destination>,
    total_weight: u32,
}

#[derive(Debug)]
struct Match {
    /// 0: any.
    port: u16,
    /// Empty: any.
    subnets: Vec<Cidr>,
    /// Empty: any, TLS or not.
    sni: Vec<SniHost>,
}

/// One weighted cluster of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub cluster: String,
    pub subset: String,
    weight: u32,
}

/// How a match judges a connection before its server name is known.
enum Verdict {
    No,
    Yes,
    /// Matches if the server name does.
    NeedsSni,
}

impl Match {
    fn judge(&self, dst: SocketAddr) -> Verdict {
        if self.port != 0 && self.port != dst.port() {
            return Verdict::No;
        }
        if !self.subnets.is_empty() && !self.subnets.iter().any(|c| c.contains(dst.ip())) {
            return Verdict::No;
        }
        if self.sni.is_empty() {
            Verdict::Yes
        } else {
            Verdict::NeedsSni
        }
    }

    fn matches(&self, dst: SocketAddr, sni: Option<&str>) -> bool {
        match self.judge(dst) {
            Verdict::No => false,
            Verdict::Yes => true,
            Verdict::NeedsSni => sni.is_some_and(|name| self.sni.iter().any(|h| h.matches(name))),
        }
    }
}

impl TcpRoute {
    fn judge(&self, dst: SocketAddr) -> Verdict {
        if self.matches.is_empty() {
            return Verdict::Yes;
        }
        let mut verdict = Verdict::No;
        for m in &self.matches {
            match m.judge(dst) {
                Verdict::Yes => return Verdict::Yes,
                Verdict::NeedsSni => verdict = Verdict::NeedsSni,
                Verdict::No => {}
            }
        }
        verdict
    }

    fn matches(&self, dst: SocketAddr, sni: Option<&str>) -> bool {
        self.matches.is_empty() || self.matches.iter().any(|m| m.matches(dst, sni))
    }

    /// A destination by weight; `roll` is a uniformly random number.
    pub fn pick(&self, roll: u32) -> &Destination {
        crate::route::weighted::pick(&self.destinations, self.total_weight, roll, |d| d.weight)
    }
}

/// A layer 4 route that does not compile: its index and the field inside it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tcpRoutes[{route}].{error}")]
pub struct TcpRouteError {
    pub route: usize,
    pub error: FieldError,
}

impl TcpRoutes {
    /// Validates and compiles `routes`. `cluster_ok(cluster, subset)` says whether the config
    /// has that cluster and subset, or why not. Errors name the route.
    pub fn compile(
        routes: &[pb::TcpRoute],
        cluster_ok: impl Fn(&str, &str) -> Result<(), String>,
    ) -> Result<Self, TcpRouteError> {
        let mut out = Vec::with_capacity(routes.len());
        for (i, r) in routes.iter().enumerate() {
            // Fields are relative to the route; the error carries its index.
            let at = |f: String| f;
            let err = |field: String, reason: String| TcpRouteError {
                route: i,
                error: FieldError::new(field, reason),
            };
            let mut matches = Vec::with_capacity(r.matches.len());
            for (mi, m) in r.matches.iter().enumerate() {
                let field = |f: &str| at(format!("matches[{mi}].{f}"));
                let port = u16::try_from(m.destination_port).map_err(|_| {
                    err(
                        field("destinationPort"),
                        format!("{} is not a port", m.destination_port),
                    )
                })?;
                let subnets = m
                    .destination_subnets
                    .iter()
                    .enumerate()
                    .map(|(si, s)| {
                        Cidr::parse(s)
                            .map_err(|e| err(field(&format!("destinationSubnets[{si}]")), e))
                    })
                    .collect::<Result<_, _>>()?;
                let sni = m
                    .sni_hosts
                    .iter()
                    .enumerate()
                    .map(|(si, s)| {
                        SniHost::parse(s).map_err(|e| err(field(&format!("sniHosts[{si}]")), e))
                    })
                    .collect::<Result<_, _>>()?;
                matches.push(Match { port, subnets, sni });
            }
            if r.clusters.is_empty() {
                return Err(err(
                    at("clusters".into()),
                    "at least one cluster is required".into(),
                ));
            }
            let mut destinations = Vec::with_capacity(r.clusters.len());
            for (ci, wc) in r.clusters.iter().enumerate() {
                let field = |f: &str| at(format!("clusters[{ci}].{f}"));
                if wc.cluster == PASSTHROUGH {
                    if !wc.subset.is_empty() {
                        return Err(err(
                            field("subset"),
                            format!("{PASSTHROUGH} has no subsets"),
                        ));
                    }
                } else {
                    cluster_ok(&wc.cluster, &wc.subset).map_err(|e| err(field("cluster"), e))?;
                }
                if wc.request_headers.is_some() || wc.response_headers.is_some() {
                    return Err(err(
                        field("requestHeaders"),
                        "header operations do not apply to TCP routes".into(),
                    ));
                }
                destinations.push(Destination {
                    cluster: wc.cluster.clone(),
                    subset: wc.subset.clone(),
                    weight: wc.weight,
                });
            }
            let total_weight = destinations
                .iter()
                .try_fold(0u32, |sum, d| sum.checked_add(d.weight))
                .ok_or_else(|| err(at("clusters".into()), "weights overflow".into()))?;
            if total_weight == 0 {
                return Err(err(
                    at("clusters".into()),
                    "weights must not all be 0".into(),
                ));
            }
            out.push(TcpRoute {
                name: r.name.clone(),
                matches,
                destinations,
                total_weight,
            });
        }
        Ok(Self { routes: out })
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Whether the route for a connection to `dst` depends on its server name: a route asking
    /// for one comes before any route that takes the connection without.
    pub fn needs_sni(&self, dst: SocketAddr) -> bool {
        for r in &self.routes {
            match r.judge(dst) {
                Verdict::Yes => return false,
                Verdict::NeedsSni => return true,
                Verdict::No => {}
            }
        }
        false
    }

    /// The first route matching a connection to `dst` with server name `sni`.
    pub fn select(&self, dst: SocketAddr, sni: Option<&str>) -> Option<&TcpRoute> {
        self.routes.iter().find(|r| r.matches(dst, sni))
    }
}

#[cfg(test)]
mod tests;
