//! Sending a routed request upstream: endpoint choice, attempts, per-try and route timeouts,
//! retries with backoff, and the reply when every attempt failed.

use std::time::Duration;

use super::body::RequestBody;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri, Version, header};
use tokio::time::Instant;

use super::admitted::AdmittedBody;
use super::body::{BodyFailure, DownstreamBody, Replay, ResponseBody, UpstreamBody};
use super::headers::remove_hop_by_hop;
use super::local;
use super::mirror::BodyCopies;
use crate::metrics::Metrics;
use crate::retry::overrides::{ATTEMPT_COUNT, EXPECTED_RQ_TIMEOUT_MS};
use crate::retry::{Backoff, Outcome, RetryPolicy};
use crate::telemetry::peer::PEER_METADATA;
use crate::telemetry::trace::TraceHeaders;
use crate::telemetry::{self, ResponseFlag, flags};
use crate::upstream::h1::{Added, AddedValue, HeadFields, RequestHead};
use crate::upstream::limits::Admission;
use crate::upstream::outlier::Observed;
use crate::upstream::pool::Sent;
use crate::upstream::{Protocol, SendError, Target, Transport};

/// A request ready to go upstream, after routing.
pub struct Outgoing {
    pub method: Method,
    pub authority: HeaderValue,
    pub path_and_query: PathAndQuery,
    pub headers: HeaderMap,
    pub downstream_version: Version,
    pub grpc: bool,
    /// The bodies of the request's shadow copies (mirrors), fed as the body is read.
    pub copies: Option<BodyCopies>,
}

/// Where and how to send it.
pub struct Plan<'a> {
    pub target: &'a Target,
    pub hash: Option<u64>,
    pub policy: RetryPolicy,
    pub timeout: Option<Duration>,
    /// The trace context the request carries on, written into each attempt's head (a
    /// reference: the request's futures stay as small without tracing as with it).
    pub trace: Option<&'a TraceHeaders>,
}

// Not `async fn`: its future would keep the arguments twice (as captured and as the
// body's locals); an `async move` block keeps them once.
#[allow(clippy::manual_async_fn)]
pub fn forward(
    metrics: &Metrics,
    plan: Plan<'_>,
    out: Outgoing,
    body: RequestBody,
) -> impl Future<Output = Response<ResponseBody>> {
    async move {
        let grpc = out.grpc;
        let cluster = plan.target.cluster.clone();
        let mut resp = match plan.timeout {
            None => attempts(metrics, plan, out, body, None).await,
            Some(t) => {
                let deadline = Instant::now() + t;
                match tokio::time::timeout_at(
                    deadline,
                    attempts(metrics, plan, out, body, Some(deadline)),
                )
                .await
                {
                    Ok(resp) => resp,
                    Err(_) => {
                        metrics.timeout(&cluster.name);
                        local::timeout(grpc)
                    }
                }
            }
        };
        let service = metrics.istio.cluster_service(&cluster.name);
        telemetry::upstream::note(&mut resp, |info| {
            info.service = Some(service);
            info.cluster = Some(cluster);
        });
        resp
    }
}

// Statics, not consts: the head borrows them.
static ATTEMPT_COUNT_NAME: HeaderName = ATTEMPT_COUNT;
static EXPECTED_RQ_TIMEOUT_MS_NAME: HeaderName = EXPECTED_RQ_TIMEOUT_MS;
pub(super) static PEER_METADATA_NAME: HeaderName = PEER_METADATA;

/// How many tried endpoints a request remembers when picking one for a retry.
const MAX_REMEMBERED: usize = 16;

enum BodySource {
    Once(Option<DownstreamBody>),
    Replay(Replay),
}

impl BodySource {
    fn next(&mut self) -> UpstreamBody {
        match self {
            Self::Once(b) => UpstreamBody::Stream(b.take().expect("a streamed body is sent once")),
            Self::Replay(r) => UpstreamBody::Replay(r.body()),
        }
    }

    fn can_replay(&self) -> bool {
        match self {
            Self::Once(_) => false,
            Self::Replay(r) => r.can_replay(),
        }
    }
}

// Not `async fn`: its future would keep the arguments twice (as captured and as the
// body's locals); an `async move` block keeps them once.
#[allow(clippy::manual_async_fn)]
fn attempts(
    metrics: &Metrics,
    plan: Plan<'_>,
    mut out: Outgoing,
    downstream_body: RequestBody,
    deadline: Option<Instant>,
) -> impl Future<Output = Response<ResponseBody>> {
    async move {
        let grpc = out.grpc;
        let cluster = &plan.target.cluster;
        let version = upstream_version(cluster.protocol, out.downstream_version);
        let max_attempts = 1 + plan.policy.num_retries;
        let (downstream_body, body_failure) = DownstreamBody::watch_messages(downstream_body, grpc);
        let downstream_body = downstream_body.with_copies(out.copies.take());
        let mut body = if max_attempts > 1 {
            BodySource::Replay(Replay::new(downstream_body, cluster.retry_buffer_bytes))
        } else {
            BodySource::Once(Some(downstream_body))
        };
        // A DNS cluster before its first answer: the only wait for DNS a request ever has,
        // boxed so the common path's future stays small.
        if let Some(first_answers) = plan.target.first_answers() {
            Box::pin(first_answers).await;
        }
        // Endpoints already tried, so a retry prefers another one; kept on the stack.
        let mut tried = [0usize; MAX_REMEMBERED];
        let mut attempt = 0;
        // The retry in progress, counted against the cluster's retry limit or budget.
        let mut _retrying = None;
        loop {
            attempt += 1;
            // Counted by the cluster's circuit breakers until the response ends.
            let Ok(mut admission) = cluster
                .pool
                .limits()
                .admit(version != Version::HTTP_2)
                .await
            else {
                return local::overflow(grpc);
            };
            let remembered = (attempt as usize - 1).min(MAX_REMEMBERED);
            // Counted in flight until this attempt ends.
            let Some(picked) = plan.target.pick(plan.hash, &tried[..remembered]) else {
                return local::no_healthy_upstream(grpc);
            };
            if remembered < MAX_REMEMBERED {
                tried[remembered] = picked.index;
            }
            let endpoint = picked.endpoint();
            // TLS origination with automatic SNI names the request's host (a rare case: the
            // transport is used as it is otherwise).
            let own_transport = endpoint.transport.for_authority(&out.authority);
            let transport = own_transport.as_ref().unwrap_or(&endpoint.transport);

            let expected_ms = plan
                .policy
                .per_try_timeout
                .or_else(|| deadline.map(|d| d.saturating_duration_since(Instant::now())))
                .map(|t| t.as_millis() as u64);
            let peer_metadata = metrics.istio.announcement(transport);

            let sent = async {
                let pool = &cluster.pool;
                match version {
                    Version::HTTP_2 => {
                        // The last possible attempt takes the headers instead of copying them.
                        let mut headers = if attempt == max_attempts {
                            std::mem::take(&mut out.headers)
                        } else {
                            out.headers.clone()
                        };
                        headers.insert(ATTEMPT_COUNT, HeaderValue::from(attempt));
                        if let Some(ms) = expected_ms {
                            headers.insert(EXPECTED_RQ_TIMEOUT_MS, HeaderValue::from(ms));
                        }
                        let req = out.h2_request(headers, peer_metadata, plan.trace, body.next());
                        pool.send_h2(endpoint.address, transport, req, &mut admission)
                            .await
                    }
                    // HTTP/1.1 writes the head from the request as it is, with this attempt's
                    // headers added: no copy of the header map per attempt.
                    _ => {
                        let mut added = [Added {
                            name: &ATTEMPT_COUNT_NAME,
                            value: AddedValue::Number(u64::from(attempt)),
                        }; 3];
                        let mut n = 1;
                        if let Some(ms) = expected_ms {
                            added[n] = Added {
                                name: &EXPECTED_RQ_TIMEOUT_MS_NAME,
                                value: AddedValue::Number(ms),
                            };
                            n += 1;
                        }
                        if let Some(v) = &peer_metadata {
                            added[n] = Added {
                                name: &PEER_METADATA_NAME,
                                value: AddedValue::Value(v),
                            };
                            n += 1;
                        }
                        let head = out.h1_head(&added[..n], plan.trace);
                        pool.send_h1(endpoint.address, transport, &head, body.next())
                            .await
                    }
                }
            };
            let result = match plan.policy.per_try_timeout {
                Some(t) => tokio::time::timeout(t, sent).await.map_err(|_| ()),
                None => Ok(sent.await),
            };
            // The client's own body broke the attempt: its fault, not the upstream's, so it is
            // neither retried nor counted against the upstream.
            if let Some(bad_body) = downstream_body_failed(&result, &body_failure) {
                tracing::debug!(cluster = %cluster.name, attempt, error = %bad_body, "malformed downstream request body");
                return local::bad_request_body(grpc, out.downstream_version);
            }
            if matches!(result, Ok(Err(SendError::Overflow(_)))) {
                return local::overflow(grpc);
            }
            let outcome = match &result {
                Err(()) => Outcome::PerTryTimeout,
                Ok(Err(SendError::Connect(_) | SendError::Handshake(_))) => Outcome::ConnectFailure,
                Ok(Err(e)) if e.is_refused_stream() => Outcome::RefusedStream,
                Ok(Err(e)) if e.is_before_request() => Outcome::ResetBeforeRequest,
                Ok(Err(_)) => Outcome::Reset,
                Ok(Ok(sent)) => plan
                    .policy
                    .response_outcome(sent.response.status().as_u16(), sent.response.headers()),
            };
            if outcome == Outcome::PerTryTimeout {
                metrics.timeout(&cluster.name);
            }
            plan.target.observe(&picked, outlier_view(outcome));
            let retriable = plan.policy.retriable(&outcome);
            let retry = attempt < max_attempts && retriable && body.can_replay();
            // Past the retry limit or budget the attempt's own answer stands, as in Envoy.
            let retry_held = retry.then(|| cluster.pool.limits().try_retry()).flatten();
            let Some(retry_held) = retry_held else {
                let upstream = Upstream {
                    metrics,
                    address: endpoint.address,
                    transport,
                    body: &body_failure,
                };
                let mut resp = finish(result, grpc, admission, upstream);
                if retriable && attempt > 1 && attempt == max_attempts {
                    flags::mark(&mut resp, ResponseFlag::UpstreamRetryLimitExceeded);
                }
                return resp;
            };
            _retrying = Some(retry_held);
            tracing::debug!(cluster = %cluster.name, attempt, ?outcome, "retrying");
            metrics.retry(&cluster.name);
            drop(result);
            drop(admission);
            tokio::time::sleep(Backoff::RETRY.delay(attempt, rand::random::<f64>())).await;
        }
    }
}

/// The HTTP version a request goes upstream in, by the cluster's protocol.
pub(super) fn upstream_version(protocol: Protocol, downstream_version: Version) -> Version {
    match protocol {
        Protocol::Http1 => Version::HTTP_11,
        Protocol::Http2 => Version::HTTP_2,
        Protocol::SameAsDownstream if downstream_version == Version::HTTP_2 => Version::HTTP_2,
        Protocol::SameAsDownstream => Version::HTTP_11,
    }
}

/// An attempt's end as outlier detection counts it: an answer, or a local-origin failure.
fn outlier_view(outcome: Outcome) -> Observed {
    match outcome {
        Outcome::Response { status, .. } => Observed::Status(status),
        _ => Observed::LocalFailure,
    }
}

/// The send error of an attempt that failed because reading the downstream body failed. An
/// upstream response that came back anyway stands.
fn downstream_body_failed<'r>(
    result: &'r Result<Result<Sent, SendError>, ()>,
    failure: &BodyFailure,
) -> Option<&'r SendError> {
    match result {
        Ok(Err(e)) if failure.happened() => Some(e),
        _ => None,
    }
}

impl Outgoing {
    /// The request as the HTTP/2 client takes it: `headers` (the request's own, or a copy)
    /// with the peer metadata and trace context added, the authority in the URI.
    pub(super) fn h2_request(
        &self,
        mut headers: HeaderMap,
        peer_metadata: Option<HeaderValue>,
        trace: Option<&TraceHeaders>,
        body: UpstreamBody,
    ) -> Request<UpstreamBody> {
        if let Some(v) = peer_metadata {
            headers.insert(PEER_METADATA, v);
        }
        if let Some(trace) = trace {
            trace.write_into(&mut headers);
        }
        headers.remove(header::HOST);
        let uri = Uri::builder()
            .scheme("http")
            .authority(self.authority.as_bytes())
            .path_and_query(self.path_and_query.clone())
            .build();
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        // The authority was validated as a header value; an invalid URI falls back to the
        // path.
        *req.uri_mut() = uri.unwrap_or_else(|_| Uri::from(self.path_and_query.clone()));
        *req.version_mut() = Version::HTTP_2;
        *req.headers_mut() = headers;
        req
    }

    /// The head the HTTP/1.1 client writes from the request as it is, with `added` and the
    /// trace context.
    pub(super) fn h1_head<'a>(
        &'a self,
        added: &'a [Added<'a>],
        trace: Option<&'a TraceHeaders>,
    ) -> RequestHead<'a> {
        RequestHead {
            method: &self.method,
            authority: &self.authority,
            path_and_query: self.path_and_query.as_str(),
            headers: &self.headers,
            added,
            fields: trace.map(|t| t as &dyn HeadFields),
        }
    }
}

/// What the response's telemetry learns from the attempt that answered.
struct Upstream<'a> {
    metrics: &'a Metrics,
    address: std::net::SocketAddr,
    transport: &'a Transport,
    body: &'a BodyFailure,
}

/// The response of the last attempt, with what telemetry learned from the upstream.
fn finish(
    result: Result<Result<Sent, SendError>, ()>,
    grpc: bool,
    admission: Admission,
    upstream: Upstream<'_>,
) -> Response<ResponseBody> {
    let mut resp = match result {
        Err(()) => local::timeout(grpc),
        Ok(Err(SendError::Connect(e))) => {
            tracing::debug!(error = %e, "upstream connect failed");
            local::connect_failure(grpc)
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "upstream request failed");
            local::reset(grpc)
        }
        Ok(Ok(Sent { response })) => {
            let (mut parts, body) = response.into_parts();
            remove_hop_by_hop(&mut parts.headers, false);
            let peer = upstream
                .metrics
                .istio
                .upstream_peer(&mut parts.headers, upstream.transport);
            let mut resp = Response::from_parts(
                parts,
                ResponseBody::Admitted(AdmittedBody::new(body, admission)),
            );
            telemetry::upstream::note(&mut resp, |info| info.peer = peer);
            resp
        }
    };
    let (received, messages) = (upstream.body.received(), upstream.body.messages());
    telemetry::upstream::note(&mut resp, |info| {
        info.request_bytes = Some(received);
        info.request_messages = messages;
        info.host = Some(upstream.address);
    });
    resp
}
