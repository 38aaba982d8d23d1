//! The HTTP request handler: prepares the request (the proxy's own header edits), reads the
//! config once, has `decide` choose what to do, and executes the decision (`forward`,
//! `upgrade` or a local reply).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Body;
use mesh_proto::config::v1::Direction;
use tokio::time::Instant;

use super::body::{RequestBody, ResponseBody};
use super::decide::{Decided, Dice, Forwarding, Reply, RequestView, decide};
use super::forward::{Outgoing, Plan, forward};
use super::headers::{is_upgrade_request, remove_present};
use super::mirror::{self, BodyCopies};
use super::scan::RequestScan;
use super::{edge, inbound, local, upgrade};
use crate::access_log::Known;
use crate::config::Snapshot;
use crate::listener::ConnContext;
use crate::metrics::{DirectionLabel, Metrics, RateLimitedLabels, RequestLabels};
use crate::ratelimit;
use crate::retry::Overrides;
use crate::telemetry::trace::TraceHeaders;
use crate::telemetry::trace::context::{hex_into, is_trace_header};
use crate::telemetry::{RecordedBody, RequestRecord};
use crate::upstream::{Cluster, HashInput, Target};

/// The HTTP request handler of every listener.
pub struct Proxy {
    /// The config; each request reads it once, in `handle`.
    state: Arc<ArcSwap<Snapshot>>,
    metrics: Arc<Metrics>,
    /// Connections to original destinations of unknown hosts (ALLOW_ANY).
    passthrough: Arc<Cluster>,
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

impl Proxy {
    pub fn new(
        state: Arc<ArcSwap<Snapshot>>,
        metrics: Arc<Metrics>,
        passthrough: Arc<Cluster>,
    ) -> Self {
        Self {
            state,
            metrics,
            passthrough,
        }
    }

    /// Proxies one request; `began` is when its first bytes arrived, when the connection
    /// knows it (the request's duration counts from there, as Envoy's does).
    // Not `async fn`: its future would keep the arguments twice (as captured and as the
    // body's locals); an `async move` block keeps them once.
    #[allow(clippy::manual_async_fn)]
    pub fn handle(
        &self,
        conn: &ConnContext,
        mut req: Request<RequestBody>,
        began: Option<Instant>,
    ) -> impl Future<Output = Response<RecordedBody>> {
        async move {
            let scan = RequestScan::of(req.headers());
            // Istio's standard metrics, recorded once when the response ends.
            let mut record = self.metrics.istio.start(conn, &mut req, &scan, began);
            let resp = self.route(conn, req, &scan, &mut record).await;
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
            record.respond(resp)
        }
    }

    /// The proxy's metrics, for the TCP path that shares the listener.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Prepares the request (the proxy's own header edits), decides, then executes.
    // Not `async fn`: its future would keep the arguments twice (as captured and as the
    // body's locals); an `async move` block keeps them once.
    #[allow(clippy::manual_async_fn)]
    fn route(
        &self,
        conn: &ConnContext,
        mut req: Request<RequestBody>,
        scan: &RequestScan,
        record: &mut RequestRecord,
    ) -> impl Future<Output = Response<ResponseBody>> {
        async move {
            let grpc = scan.grpc;
            let Some(authority) = authority_of(&req) else {
                let snapshot = self.state.load();
                let logs = snapshot.access_log.for_direction(conn.listener.direction);
                record.access_log(
                    logs,
                    &self.metrics.access_log,
                    conn,
                    &req,
                    &Known::default(),
                );
                let overrides = snapshot
                    .metrics_overrides
                    .for_direction(conn.listener.direction);
                record.metric_overrides(overrides, &req);
                return local::bad_request("missing host");
            };
            let upgrade = is_upgrade_request(&req, scan.hop_by_hop);
            let outbound = conn.listener.direction == Direction::Outbound;
            let overrides = if scan.envoy {
                Overrides::take(req.headers_mut(), outbound)
            } else {
                Overrides::default()
            };
            remove_present(req.headers_mut(), upgrade, scan.hop_by_hop);
            if conn.listener.is_gateway() {
                edge::sanitize_external(req.headers_mut(), conn.listener.scheme());
            }
            // Every listener makes one when there is none, as Envoy's `generate_request_id`; the
            // gateway has removed the client's.
            let made_id;
            let mut made_request_id = None;
            if !(scan.request_id && req.headers().contains_key(REQUEST_ID)) {
                made_id = request_id_digits();
                req.headers_mut()
                    .insert(REQUEST_ID, request_id_value(&made_id));
                made_request_id = Some(&made_id[..]);
            }
            // The one read of the config for this request.
            let snapshot = self.state.load_full();
            let tracing = snapshot
                .source
                .telemetry
                .as_ref()
                .and_then(|t| t.tracing.as_ref());
            // What the log's capture would otherwise look through the headers for.
            let known = Known {
                authority: Some(&authority),
                made_request_id,
                arrived_with: Some(scan),
            };
            record.access_log(
                snapshot.access_log.for_direction(conn.listener.direction),
                &self.metrics.access_log,
                conn,
                &req,
                &known,
            );
            let mut trace = None;
            if let Some(begun) = self.metrics.tracer.begin(conn, &req, scan, tracing) {
                record.trace(begun.span, begun.trace.trace_hex());
                trace = Some(begun.trace);
            }
            record.metric_overrides(
                snapshot
                    .metrics_overrides
                    .for_direction(conn.listener.direction),
                &req,
            );
            let mut request_auth = None;
            if conn.listener.is_inbound() {
                request_auth = match inbound::authenticate(
                    &snapshot, conn, &mut req, &authority, grpc,
                )
                .await
                {
                    Ok(auth) => auth,
                    Err(unauthorized) => return unauthorized,
                };
                inbound::set_xfcc(req.headers_mut(), conn);
            }

            let view = RequestView {
                method: req.method(),
                authority: &authority,
                path_and_query: req.uri().path_and_query(),
                headers: req.headers(),
                request_auth: request_auth.as_ref(),
            };
            let decision = decide(
                &view,
                conn,
                &snapshot,
                &self.passthrough,
                &overrides,
                Dice::random(),
            );
            if let Some(delay) = decision.delay {
                tokio::time::sleep(delay).await;
            }
            // After authorization, before the request goes anywhere: a refused or locally answered
            // request takes no token.
            if !snapshot.rate_limits.is_empty()
                && matches!(decision.action, Decided::Forward(_))
                && let Some(limited) = self.rate_limit(conn, &snapshot, &req, &authority, grpc)
            {
                return limited;
            }
            let mut resp = match decision.action {
                Decided::Reply(reply) => local_reply(reply, grpc),
                Decided::Forward(f) => {
                    self.execute(conn, req, *f, trace.as_ref(), upgrade, grpc)
                        .await
                }
            };
            if let Some((policy, origin)) = decision.cors {
                policy.apply(origin, resp.headers_mut());
            }
            resp
        }
    }

    /// Sends a decided request upstream.
    // Not `async fn`: its future would keep the arguments twice (as captured and as the
    // body's locals); an `async move` block keeps them once.
    #[allow(clippy::manual_async_fn)]
    fn execute(
        &self,
        conn: &ConnContext,
        mut req: Request<RequestBody>,
        f: Forwarding<'_>,
        trace: Option<&TraceHeaders>,
        upgrade: bool,
        grpc: bool,
    ) -> impl Future<Output = Response<ResponseBody>> {
        async move {
            for ops in f.request_headers.iter().flatten() {
                ops.apply(req.headers_mut());
            }
            // The trace context was read before the route's edits: one that sets a trace header
            // makes the attempt look for trace headers by name.
            let edited;
            let trace = match trace {
                Some(t)
                    if f.request_headers
                        .iter()
                        .flatten()
                        .any(|ops| ops.writes_any(is_trace_header)) =>
                {
                    edited = t.after_header_edits();
                    Some(&edited)
                }
                t => t,
            };
            // Hashed after the route's header edits, so a route may set the key.
            let hash = f.target.cluster.hash_key(&HashInput {
                headers: req.headers(),
                query: req.uri().query(),
                source_ip: conn.peer.ip(),
            });
            let mut resp = if upgrade {
                if let Some(trace) = trace {
                    trace.write_into(req.headers_mut());
                }
                // Boxed: upgrades are rare, and inline their state would be part of every
                // request's future.
                Box::pin(upgrade::forward(
                    &f.target,
                    hash,
                    req,
                    f.authority,
                    f.path_and_query,
                ))
                .await
            } else {
                let (parts, body) = req.into_parts();
                let mut out = Outgoing {
                    method: parts.method,
                    authority: f.authority,
                    path_and_query: f.path_and_query,
                    headers: parts.headers,
                    downstream_version: parts.version,
                    grpc,
                    copies: None,
                };
                if !f.mirrors.is_empty() {
                    let no_body = body.is_end_stream();
                    out.copies = Some(self.mirror(&out, f.mirrors, no_body, f.timeout, trace));
                }
                let plan = Plan {
                    target: &f.target,
                    hash,
                    policy: f.retry,
                    timeout: f.timeout,
                    trace,
                };
                forward(&self.metrics, plan, out, body).await
            };
            for ops in f.response_headers.iter().flatten() {
                ops.apply(resp.headers_mut());
            }
            resp
        }
    }
}

impl Proxy {
    /// The reply to a request over one of its listener's LocalRateLimits, counted; `None`
    /// when every limit lets it through.
    fn rate_limit<B>(
        &self,
        conn: &ConnContext,
        snapshot: &Snapshot,
        req: &Request<B>,
        authority: &HeaderValue,
        grpc: bool,
    ) -> Option<Response<ResponseBody>> {
        let limits = snapshot.rate_limits.get(&conn.listener.name)?;
        let view = crate::route::RequestView {
            method: req.method(),
            authority: authority.to_str().unwrap_or_default(),
            scheme: conn.listener.scheme(),
            path: req.uri().path(),
            query: req.uri().query(),
            headers: req.headers(),
        };
        let verdict = limits.check(&view, std::time::Instant::now())?;
        let direction = match conn.listener.direction {
            Direction::Inbound => DirectionLabel::Inbound,
            _ => DirectionLabel::Outbound,
        };
        self.metrics
            .rate_limited
            .get_or_create(&RateLimitedLabels {
                direction,
                listener: conn.listener.name.to_string(),
            })
            .inc();
        Some(ratelimit::reply::limited(&verdict, grpc))
    }

    /// Starts the shadow copies of a request, each with a body fed from the original's.
    fn mirror(
        &self,
        out: &Outgoing,
        targets: Vec<Target>,
        no_body: bool,
        timeout: Option<Duration>,
        trace: Option<&TraceHeaders>,
    ) -> BodyCopies {
        let (copies, bodies) = BodyCopies::new(targets.len(), no_body);
        for (target, body) in targets.into_iter().zip(bodies) {
            let copy = Outgoing {
                method: out.method.clone(),
                authority: mirror::shadow_authority(&out.authority),
                path_and_query: out.path_and_query.clone(),
                headers: out.headers.clone(),
                downstream_version: out.downstream_version,
                grpc: out.grpc,
                copies: None,
            };
            let metrics = self.metrics.clone();
            let trace = trace.copied();
            tokio::spawn(mirror::send_copy(
                metrics, target, copy, body, timeout, trace,
            ));
        }
        copies
    }
}

/// The response of a reply the proxy makes itself.
fn local_reply(reply: Reply<'_>, grpc: bool) -> Response<ResponseBody> {
    match reply {
        Reply::Denied => local::reply(StatusCode::FORBIDDEN, inbound::DENIED, grpc),
        Reply::NoRoute => local::no_route(grpc),
        Reply::NoCluster => local::no_cluster(grpc),
        Reply::BadRequest(message) => local::bad_request(message),
        Reply::Abort(abort) => local::fault_abort(abort, grpc),
        Reply::Preflight(headers) => {
            let mut resp = Response::new(ResponseBody::empty());
            *resp.headers_mut() = headers;
            resp
        }
        Reply::Direct {
            status,
            body,
            headers,
        } => {
            let mut resp = Response::new(ResponseBody::local(body));
            *resp.status_mut() = status;
            headers.apply(resp.headers_mut());
            resp
        }
        Reply::Redirect {
            status,
            location,
            headers,
        } => {
            let mut resp = Response::new(ResponseBody::empty());
            *resp.status_mut() = status;
            if let Some(v) = location {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            headers.apply(resp.headers_mut());
            resp
        }
    }
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

#[cfg(test)]
fn new_request_id() -> HeaderValue {
    request_id_value(&request_id_digits())
}

fn request_id_value(digits: &[u8; 36]) -> HeaderValue {
    HeaderValue::from_bytes(digits).expect("hex and dashes are a valid header value")
}

/// A version 4 UUID's 36 characters.
fn request_id_digits() -> [u8; 36] {
    // The version and variant bits are fixed.
    let v = crate::fast_rand::u128();
    let v = (v & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let raw = v.to_be_bytes();
    let mut out = [b'-'; 36];
    // The five groups (8-4-4-4-12 digits), each from its bytes.
    for (bytes, digits) in [
        (0..4, 0..8),
        (4..6, 9..13),
        (6..8, 14..18),
        (8..10, 19..23),
        (10..16, 24..36),
    ] {
        hex_into(&raw[bytes], &mut out[digits]);
    }
    out
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
        for (i, c) in s.chars().enumerate() {
            if matches!(i, 8 | 13 | 18 | 23) {
                assert_eq!(c, '-', "{s}");
            } else {
                assert!(c.is_ascii_hexdigit() && !c.is_ascii_uppercase(), "{s}");
            }
        }
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
