//! The HTTP request handler: reads the request, routes it, applies the route's policy and
//! hands it to `forward`.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, header};
use hyper::body::Incoming;
use mesh_proto::config::v1::{Direction, OutboundTrafficPolicy};

use super::body::ResponseBody;
use super::forward::{Outgoing, Plan, forward};
use super::headers::{is_upgrade_request, remove_hop_by_hop};
use super::{inbound, local, upgrade};
use crate::config::Snapshot;
use crate::metrics::{DirectionLabel, Metrics, RequestLabels};
use crate::retry::{Overrides, RetryPolicy, grpc_timeout};
use crate::route::{Action, Fault, RequestView, Rolls, rewrite_path};
use crate::upstream::{Cluster, HashInput, Pool};

/// What a listener tells the handler about itself.
#[derive(Debug, Clone)]
pub struct ListenerInfo {
    pub name: String,
    pub direction: Direction,
    pub route_table: String,
    pub outbound_policy: OutboundTrafficPolicy,
}

/// One downstream connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub listener: Arc<ListenerInfo>,
    pub peer: SocketAddr,
    /// Where a redirected connection was going, when iptables redirected it.
    pub original_dst: Option<SocketAddr>,
    /// The client's verified identity, on an mTLS connection.
    pub peer_identity: Option<crate::listener::PeerIdentity>,
    /// The workload port the client connected to (for policy).
    pub destination_port: u16,
}

impl ConnInfo {
    /// The client's SPIFFE ID as policies name it, without `spiffe://`.
    pub fn principal(&self) -> Option<&str> {
        let id = &self.peer_identity.as_ref()?.spiffe_id;
        Some(id.strip_prefix("spiffe://").unwrap_or(id))
    }

    /// The TLS server name the client sent, on an mTLS connection.
    pub fn sni(&self) -> Option<&str> {
        self.peer_identity.as_ref()?.sni.as_deref()
    }
}

pub struct Proxy {
    pub state: Arc<ArcSwap<Snapshot>>,
    pub metrics: Arc<Metrics>,
    /// Connections to original destinations of unknown hosts (ALLOW_ANY).
    passthrough: Arc<Cluster>,
}

const REQUEST_ID: &str = "x-request-id";

impl Proxy {
    pub fn new(state: Arc<ArcSwap<Snapshot>>, metrics: Arc<Metrics>) -> Self {
        let passthrough = Cluster::compile(
            &mesh_proto::config::v1::Cluster {
                name: "PassthroughCluster".into(),
                ..Default::default()
            },
            None,
            || metrics.connection_stats("PassthroughCluster"),
        )
        .expect("the passthrough cluster is valid");
        Self {
            state,
            metrics,
            passthrough: Arc::new(passthrough),
        }
    }

    pub fn passthrough_pool(&self) -> &Arc<Pool> {
        &self.passthrough.pool
    }

    pub async fn handle(&self, conn: &ConnInfo, req: Request<Incoming>) -> Response<ResponseBody> {
        let resp = self.route(conn, req).await;
        let direction = match conn.listener.direction {
            Direction::Inbound => DirectionLabel::Inbound,
            _ => DirectionLabel::Outbound,
        };
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                direction,
                response_code: resp.status().as_u16(),
            })
            .inc();
        resp
    }

    async fn route(&self, conn: &ConnInfo, mut req: Request<Incoming>) -> Response<ResponseBody> {
        let grpc = local::is_grpc(req.headers());
        let Some(authority) = authority_of(&req) else {
            return local::bad_request("missing host");
        };
        let upgrade = is_upgrade_request(&req);
        let outbound = conn.listener.direction == Direction::Outbound;
        let overrides = Overrides::take(req.headers_mut(), outbound);
        remove_hop_by_hop(req.headers_mut(), upgrade);
        if outbound && !req.headers().contains_key(REQUEST_ID) {
            req.headers_mut().insert(REQUEST_ID, new_request_id());
        }

        let snapshot = self.state.load_full();
        if conn.listener.direction == Direction::Inbound {
            if let Some(denied) = inbound::authorize(&snapshot, conn, &req, &authority, grpc) {
                return denied;
            }
            inbound::set_xfcc(req.headers_mut(), conn);
        }
        let route = snapshot
            .route_tables
            .get(&conn.listener.route_table)
            .and_then(|t| {
                t.route(
                    authority.to_str().unwrap_or_default(),
                    &RequestView {
                        method: req.method(),
                        path: req.uri().path(),
                        query: req.uri().query(),
                        headers: req.headers(),
                    },
                )
            });
        let Some(route) = route else {
            return self.unrouted(conn, req, authority, upgrade, grpc).await;
        };
        if let Some(fault) = &route.fault
            && let Some(resp) = inject_fault(fault, grpc).await
        {
            return resp;
        }

        let forward_action = match &route.action {
            Action::Direct { status, body } => {
                let mut resp = Response::new(ResponseBody::local(body.clone()));
                *resp.status_mut() = *status;
                route.response_headers.apply(resp.headers_mut());
                return resp;
            }
            Action::Redirect(r) => {
                let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
                let location = r.location("http", authority.to_str().unwrap_or_default(), pq);
                let mut resp = Response::new(ResponseBody::empty());
                *resp.status_mut() = r.status;
                if let Ok(v) = HeaderValue::from_str(&location) {
                    resp.headers_mut().insert(header::LOCATION, v);
                }
                route.response_headers.apply(resp.headers_mut());
                return resp;
            }
            Action::Forward(f) => f,
        };

        let destination = forward_action.pick(rand::random());
        let Some(cluster) = snapshot.clusters.get(&destination.cluster) else {
            return local::no_healthy_upstream(grpc);
        };
        route.request_headers.apply(req.headers_mut());
        destination.request_headers.apply(req.headers_mut());

        let path_and_query = match &forward_action.prefix_rewrite {
            None => req
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
            Some(rewrite) => {
                let mut p = rewrite_path(&route.matcher, rewrite, req.uri().path());
                if let Some(q) = req.uri().query() {
                    p.push('?');
                    p.push_str(q);
                }
                match PathAndQuery::try_from(p) {
                    Ok(pq) => pq,
                    Err(_) => return local::bad_request("rewritten path is invalid"),
                }
            }
        };
        let authority = forward_action
            .authority_rewrite
            .clone()
            .unwrap_or(authority);

        let policy = overrides.apply_to_retry(
            forward_action
                .retry
                .clone()
                .unwrap_or_else(RetryPolicy::istio_default),
        );
        let mut timeout = overrides.apply_to_timeout(forward_action.timeout);
        if let Some(g) = grpc_timeout(req.headers()) {
            timeout = Some(timeout.map_or(g, |t| t.min(g)));
        }
        let hash = cluster.hash_key(&HashInput {
            headers: req.headers(),
            query: req.uri().query(),
            source_ip: conn.peer.ip(),
        });

        let mut resp = if upgrade {
            upgrade::forward(
                cluster,
                &destination.subset,
                hash,
                req,
                authority,
                path_and_query,
            )
            .await
        } else {
            let (parts, body) = req.into_parts();
            let out = Outgoing {
                method: parts.method,
                authority,
                path_and_query,
                headers: parts.headers,
                downstream_version: parts.version,
                grpc,
            };
            let plan = Plan {
                cluster,
                subset: &destination.subset,
                hash,
                policy,
                timeout,
            };
            forward(&self.metrics, plan, out, body).await
        };
        destination.response_headers.apply(resp.headers_mut());
        route.response_headers.apply(resp.headers_mut());
        resp
    }

    /// A request no route matched: on a redirected connection with ALLOW_ANY it goes on to
    /// where it was going; otherwise 404.
    async fn unrouted(
        &self,
        conn: &ConnInfo,
        req: Request<Incoming>,
        authority: HeaderValue,
        upgrade: bool,
        grpc: bool,
    ) -> Response<ResponseBody> {
        let Some(dst) = conn.original_dst else {
            return local::no_route(grpc);
        };
        if conn.listener.outbound_policy == OutboundTrafficPolicy::RegistryOnly {
            return local::no_route(grpc);
        }
        let path_and_query = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        if upgrade {
            return upgrade::forward_to(
                &self.passthrough.pool,
                dst,
                req,
                authority,
                path_and_query,
            )
            .await;
        }
        let (parts, body) = req.into_parts();
        let cluster = self.passthrough_for(dst);
        let out = Outgoing {
            method: parts.method,
            authority,
            path_and_query,
            headers: parts.headers,
            downstream_version: parts.version,
            grpc,
        };
        let plan = Plan {
            cluster: &cluster,
            subset: "",
            hash: None,
            policy: RetryPolicy::none(),
            timeout: None,
        };
        forward(&self.metrics, plan, out, body).await
    }

    /// A one-endpoint view of the passthrough cluster, sharing its connection pool.
    fn passthrough_for(&self, dst: SocketAddr) -> Arc<Cluster> {
        let spec = mesh_proto::config::v1::Cluster {
            name: "PassthroughCluster".into(),
            endpoints: vec![mesh_proto::config::v1::Endpoint {
                address: dst.to_string(),
                ..Default::default()
            }],
            ..Default::default()
        };
        Arc::new(
            Cluster::compile(&spec, Some(&self.passthrough), || {
                unreachable!("the pool is shared")
            })
            .expect("a socket address is a valid endpoint"),
        )
    }
}

/// Applies a route's fault: waits out an injected delay, then returns the injected abort, if any.
async fn inject_fault(fault: &Fault, grpc: bool) -> Option<Response<ResponseBody>> {
    let rolls = Rolls::random();
    if let Some(delay) = fault.delay(rolls) {
        tokio::time::sleep(delay).await;
    }
    fault
        .abort(rolls)
        .map(|abort| local::fault_abort(abort, grpc))
}

/// The request's authority: `:authority` / absolute-form URI first, then `Host`.
fn authority_of<B>(req: &Request<B>) -> Option<HeaderValue> {
    if let Some(a) = req.uri().authority() {
        return HeaderValue::from_str(a.as_str()).ok();
    }
    req.headers()
        .get(header::HOST)
        .filter(|h| !h.is_empty())
        .cloned()
}

fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let v: u128 = rand::random();
    // A version 4 UUID: the version and variant bits are fixed.
    let v = (v & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let mut out = [0u8; 36];
    let mut nibble = 32;
    for (i, byte) in out.iter_mut().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            *byte = b'-';
            continue;
        }
        nibble -= 1;
        *byte = HEX[((v >> (nibble * 4)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&out).expect("hex and dashes are a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_uuid_v4() {
        let id = new_request_id();
        let s = id.to_str().unwrap();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"), "{s}");
        assert_ne!(new_request_id(), id);
    }

    #[test]
    fn authority_prefers_the_uri() {
        let req = Request::builder()
            .uri("http://reviews:9080/x")
            .header("host", "other")
            .body(())
            .unwrap();
        assert_eq!(authority_of(&req).unwrap(), "reviews:9080");
        let req = Request::builder()
            .uri("/x")
            .header("host", "ratings")
            .body(())
            .unwrap();
        assert_eq!(authority_of(&req).unwrap(), "ratings");
        let req = Request::builder().uri("/x").body(()).unwrap();
        assert!(authority_of(&req).is_none());
    }
}
