//! The pure half of the request path: from a request view, its connection and one config
//! snapshot to a [`Decision`] (authorization, route, target, rewrites, policy, fault), with
//! no I/O. `proxy` executes it. Random draws come in as [`Dice`], so a test fixes them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use mesh_proto::config::v1::OutboundTrafficPolicy;

use super::mirror;
use crate::authz::{HttpAttributes, RequestAuth};
use crate::config::Snapshot;
use crate::listener::{ConnContext, authorize};
use crate::retry::{Overrides, RetryPolicy, grpc_timeout};
use crate::route::{self, Abort, Action, Cors, CorsCheck, HeaderOps, Rolls};
use crate::upstream::{Cluster, Target};

/// What the decision reads of a request, after the proxy's own header edits (override headers
/// taken, hop-by-hop headers removed, request id and client identity set).
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a Method,
    pub authority: &'a HeaderValue,
    /// `None` reads as `/`.
    pub path_and_query: Option<&'a PathAndQuery>,
    pub headers: &'a HeaderMap,
    /// The end user's verified JWT, on an inbound request that carried one.
    pub request_auth: Option<&'a RequestAuth>,
}

impl RequestView<'_> {
    fn path(&self) -> &str {
        self.path_and_query.map_or("/", |p| p.path())
    }

    fn query(&self) -> Option<&str> {
        self.path_and_query.and_then(|p| p.query())
    }

    fn path_and_query(&self) -> PathAndQuery {
        self.path_and_query
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"))
    }
}

/// The random draws one request may need.
#[derive(Debug, Clone, Copy)]
pub struct Dice {
    pub fault: Rolls,
    /// Which weighted destination of the route.
    pub destination: u32,
    /// Which of the route's mirrors take the request.
    pub mirror: u64,
}

impl Dice {
    pub fn random() -> Self {
        Self {
            fault: Rolls::random(),
            destination: crate::fast_rand::u32(),
            mirror: crate::fast_rand::u64(),
        }
    }
}

/// What to do with one request. Borrows the snapshot it was decided from, which the caller
/// holds until the response.
#[derive(Debug)]
pub struct Decision<'s> {
    /// Waited out before the action (an injected fault delay).
    pub delay: Option<Duration>,
    pub action: Decided<'s>,
    /// A request from an origin the route's CORS policy allows: whatever answers it, upstream
    /// or the proxy, the response gets the policy's headers for this origin.
    pub cors: Option<(&'s Cors, HeaderValue)>,
}

#[derive(Debug)]
pub enum Decided<'s> {
    /// The proxy answers itself.
    Reply(Reply<'s>),
    /// The request goes upstream.
    Forward(Box<Forwarding<'s>>),
}

/// A reply the proxy makes without an upstream.
#[derive(Debug)]
pub enum Reply<'s> {
    /// AuthorizationPolicy refused it (403).
    Denied,
    /// No route, and no original destination to go on to (404).
    NoRoute,
    /// The route's cluster is not in the config (503).
    NoCluster,
    BadRequest(&'static str),
    /// Injected by a fault.
    Abort(Abort),
    /// A CORS preflight the route's policy answers: 200 with these headers.
    Preflight(HeaderMap),
    Direct {
        status: StatusCode,
        body: Bytes,
        headers: &'s HeaderOps,
    },
    Redirect {
        status: StatusCode,
        location: Option<HeaderValue>,
        headers: &'s HeaderOps,
    },
}

/// A request to send upstream, as decided.
#[derive(Debug)]
pub struct Forwarding<'s> {
    pub target: Target,
    pub authority: HeaderValue,
    pub path_and_query: PathAndQuery,
    /// Header edits for the request, in order (the route's, then the destination's).
    pub request_headers: [Option<&'s HeaderOps>; 2],
    /// Header edits for the response, in order (the destination's, then the route's).
    pub response_headers: [Option<&'s HeaderOps>; 2],
    pub retry: RetryPolicy,
    /// The whole request's deadline, attempts and backoff included.
    pub timeout: Option<Duration>,
    /// Where shadow copies go (the route's mirrors whose share took this request and whose
    /// cluster exists).
    pub mirrors: Vec<Target>,
}

impl Decision<'_> {
    fn reply(reply: Reply<'_>) -> Decision<'_> {
        Decision {
            delay: None,
            action: Decided::Reply(reply),
            cors: None,
        }
    }
}

/// Decides what to do with `req` on `conn` by `snapshot`. `passthrough` is the cluster of
/// original destinations; `overrides` what the request's override headers asked for.
pub fn decide<'s>(
    req: &RequestView<'_>,
    conn: &ConnContext,
    snapshot: &'s Snapshot,
    passthrough: &Arc<Cluster>,
    overrides: &Overrides,
    dice: Dice,
) -> Decision<'s> {
    let authority = req.authority.to_str().unwrap_or_default();
    if conn.listener.is_inbound()
        && let Some(security) = snapshot.listener_security.get(&conn.listener.name)
    {
        let http = HttpAttributes {
            host: authority,
            method: req.method.as_str(),
            path: req.path(),
            headers: req.headers,
            request_auth: req.request_auth,
        };
        if authorize(security, conn, Some(http)).is_err() {
            return Decision::reply(Reply::Denied);
        }
    }
    let route = snapshot
        .route_tables
        .get(&conn.listener.route_table)
        .and_then(|t| {
            t.route(
                authority,
                &route::RequestView {
                    method: req.method,
                    authority,
                    scheme: conn.listener.scheme(),
                    path: req.path(),
                    query: req.query(),
                    headers: req.headers,
                },
            )
        });
    let Some(route) = route else {
        return unrouted(req, conn, passthrough);
    };
    // CORS comes before the fault, as Envoy's filter order has it: a preflight is answered
    // even on a route that aborts.
    let cors = match route
        .cors
        .as_ref()
        .map(|c| (c, c.check(req.method, req.headers)))
    {
        Some((_, CorsCheck::Preflight(headers))) => {
            return Decision::reply(Reply::Preflight(headers));
        }
        Some((policy, CorsCheck::Allowed(origin))) => Some((policy, origin)),
        Some((_, CorsCheck::Pass)) | None => None,
    };
    let fault = route.fault.as_ref();
    let delay = fault.and_then(|f| f.delay(dice.fault));
    let action = match (fault.and_then(|f| f.abort(dice.fault)), &route.action) {
        (Some(abort), _) => Decided::Reply(Reply::Abort(abort)),
        (None, Action::Direct { status, body }) => Decided::Reply(Reply::Direct {
            status: *status,
            body: body.clone(),
            headers: &route.response_headers,
        }),
        (None, Action::Redirect(r)) => {
            let location = r.location(
                conn.listener.scheme(),
                authority,
                req.path_and_query().as_str(),
            );
            Decided::Reply(Reply::Redirect {
                status: r.status,
                location: HeaderValue::from_str(&location).ok(),
                headers: &route.response_headers,
            })
        }
        (None, Action::Forward(f)) => forwarding(req, conn, route, f, snapshot, overrides, dice),
    };
    Decision {
        delay,
        action,
        cors,
    }
}

/// The upstream request of a forwarding route.
fn forwarding<'s>(
    req: &RequestView<'_>,
    conn: &ConnContext,
    route: &'s route::Route,
    action: &'s route::Forward,
    snapshot: &'s Snapshot,
    overrides: &Overrides,
    dice: Dice,
) -> Decided<'s> {
    let destination = action.pick(dice.destination);
    let Some(cluster) = snapshot.clusters.get(&destination.cluster) else {
        return Decided::Reply(Reply::NoCluster);
    };
    let path_and_query = match &action.path_rewrite {
        None => req.path_and_query(),
        Some(rewrite) => {
            let mut p = rewrite.apply(&route.matcher, req.path()).into_owned();
            if let Some(q) = req.query() {
                p.push('?');
                p.push_str(q);
            }
            match PathAndQuery::try_from(p) {
                Ok(pq) => pq,
                Err(_) => return Decided::Reply(Reply::BadRequest("rewritten path is invalid")),
            }
        }
    };
    let retry = overrides.apply_to_retry(
        action
            .retry
            .clone()
            .unwrap_or_else(RetryPolicy::istio_default),
    );
    let mut timeout = overrides.apply_to_timeout(action.timeout);
    if let Some(g) = grpc_timeout(req.headers) {
        timeout = Some(timeout.map_or(g, |t| t.min(g)));
    }
    let mirrors = action
        .mirrors
        .iter()
        .enumerate()
        .filter(|(i, m)| mirror::takes(dice.mirror, *i, m.share_ppm))
        .filter_map(|(_, m)| {
            let cluster = snapshot.clusters.get(&m.cluster)?;
            Some(Target::subset(cluster.clone(), m.subset.as_str()))
        })
        .collect();
    Decided::Forward(Box::new(Forwarding {
        target: Target::route_to(cluster, destination.subset.as_str(), conn.original_dst),
        authority: action
            .authority_rewrite
            .clone()
            .unwrap_or_else(|| req.authority.clone()),
        path_and_query,
        request_headers: [
            Some(&route.request_headers),
            Some(&destination.request_headers),
        ],
        response_headers: [
            Some(&destination.response_headers),
            Some(&route.response_headers),
        ],
        retry,
        timeout,
        mirrors,
    }))
}

/// A request no route matched: on a redirected connection with ALLOW_ANY it goes on to where
/// it was going, as it is, once; otherwise 404.
fn unrouted<'s>(
    req: &RequestView<'_>,
    conn: &ConnContext,
    passthrough: &Arc<Cluster>,
) -> Decision<'s> {
    let Some(dst) = conn.original_dst else {
        return Decision::reply(Reply::NoRoute);
    };
    if conn.listener.outbound_policy == OutboundTrafficPolicy::RegistryOnly {
        return Decision::reply(Reply::NoRoute);
    }
    Decision {
        delay: None,
        action: Decided::Forward(Box::new(Forwarding {
            target: Target::original_dst(passthrough.clone(), dst),
            authority: req.authority.clone(),
            path_and_query: req.path_and_query(),
            request_headers: [None, None],
            response_headers: [None, None],
            retry: RetryPolicy::none(),
            timeout: None,
            mirrors: Vec::new(),
        })),
        cors: None,
    }
}

#[cfg(test)]
mod tests;
