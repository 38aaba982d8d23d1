//! Replies the proxy makes itself (no route, no upstream, timeouts), as Envoy words them.
//! gRPC callers get a trailers-only gRPC reply, so their client libraries see a status code.

use http::{HeaderValue, Response, StatusCode, Version, header};

use super::body::ResponseBody;
use crate::route::Abort;
use crate::telemetry::flags::{ResponseFlag, mark};

/// A reply flagged with why the proxy made it (Envoy's response flags, for telemetry).
fn flagged(mut resp: Response<ResponseBody>, flag: ResponseFlag) -> Response<ResponseBody> {
    mark(&mut resp, flag);
    resp
}

pub fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// gRPC's status for a local HTTP reply (the mapping of gRPC's HTTP-to-gRPC table).
fn grpc_status(status: StatusCode) -> u32 {
    match status.as_u16() {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 => 14,
        504 => 4,
        _ => 2,
    }
}

pub fn reply(status: StatusCode, message: &'static str, grpc: bool) -> Response<ResponseBody> {
    if grpc {
        let mut resp = Response::new(ResponseBody::empty());
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert("grpc-status", HeaderValue::from(grpc_status(status)));
        h.insert("grpc-message", HeaderValue::from_static(message));
        return resp;
    }
    let mut resp = Response::new(ResponseBody::local(message));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

pub fn no_route(grpc: bool) -> Response<ResponseBody> {
    flagged(
        reply(StatusCode::NOT_FOUND, "route not found", grpc),
        ResponseFlag::NoRouteFound,
    )
}

pub fn no_healthy_upstream(grpc: bool) -> Response<ResponseBody> {
    flagged(
        reply(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream", grpc),
        ResponseFlag::NoHealthyUpstream,
    )
}

/// The route names a cluster the config lacks (Envoy's `NC`; the same 503 as no upstream).
pub fn no_cluster(grpc: bool) -> Response<ResponseBody> {
    flagged(
        reply(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream", grpc),
        ResponseFlag::NoClusterFound,
    )
}

pub fn timeout(grpc: bool) -> Response<ResponseBody> {
    flagged(
        reply(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream request timeout",
            grpc,
        ),
        ResponseFlag::UpstreamRequestTimeout,
    )
}

pub fn connect_failure(grpc: bool) -> Response<ResponseBody> {
    flagged(
        reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
            grpc,
        ),
        ResponseFlag::UpstreamConnectionFailure,
    )
}

/// Envoy's header on a reply refused by a circuit breaker (response flag `UO`).
pub const OVERLOADED: &str = "x-envoy-overloaded";

/// A request refused by a circuit breaker of its cluster.
pub fn overflow(grpc: bool) -> Response<ResponseBody> {
    let mut resp = reply(
        StatusCode::SERVICE_UNAVAILABLE,
        "upstream connect error or disconnect/reset before headers. reset reason: overflow",
        grpc,
    );
    resp.headers_mut()
        .insert(OVERLOADED, HeaderValue::from_static("true"));
    flagged(resp, ResponseFlag::UpstreamOverflow)
}

pub fn reset(grpc: bool) -> Response<ResponseBody> {
    flagged(
        reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
            grpc,
        ),
        ResponseFlag::UpstreamConnectionTermination,
    )
}

/// An aborted request (fault injection), worded as Envoy's fault filter. A gRPC abort is a
/// trailers-only reply with the configured code; an HTTP abort to a gRPC caller maps as above.
pub fn fault_abort(abort: Abort, grpc: bool) -> Response<ResponseBody> {
    const MESSAGE: &str = "fault filter abort";
    let resp = match abort {
        Abort::Http(status) => reply(status, MESSAGE, grpc),
        Abort::Grpc(code) => {
            let mut resp = reply(StatusCode::OK, MESSAGE, true);
            resp.headers_mut()
                .insert("grpc-status", HeaderValue::from(code));
            resp
        }
    };
    flagged(resp, ResponseFlag::FaultInjected)
}

/// The client's request body was malformed (bad chunk size, shorter than its Content-Length).
/// An HTTP/1.1 connection is closed after it: where the next request would start is unknown.
pub fn bad_request_body(grpc: bool, version: Version) -> Response<ResponseBody> {
    let mut resp = reply(
        StatusCode::BAD_REQUEST,
        "malformed downstream request body",
        grpc,
    );
    if version < Version::HTTP_2 {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

pub fn bad_request(message: &'static str) -> Response<ResponseBody> {
    reply(StatusCode::BAD_REQUEST, message, false)
}
