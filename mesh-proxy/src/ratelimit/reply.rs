//! The reply to a request over its limit, as Envoy's local rate limit filter makes it:
//! 429 with the draft-03 `x-ratelimit-*` headers, or for a gRPC caller a trailers-only reply
//! with RESOURCE_EXHAUSTED; flagged `RL` for telemetry.

use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

use super::bucket::Verdict;
use crate::http::body::ResponseBody;
use crate::telemetry::flags::{ResponseFlag, mark};

pub const LIMIT: &str = "x-ratelimit-limit";
pub const REMAINING: &str = "x-ratelimit-remaining";
pub const RESET: &str = "x-ratelimit-reset";

/// Envoy's body (and gRPC message) for a locally rate limited request.
pub const BODY: &str = "local_rate_limited";

/// gRPC's RESOURCE_EXHAUSTED.
pub const GRPC_RESOURCE_EXHAUSTED: u32 = 8;

fn set_headers(headers: &mut HeaderMap, v: &Verdict) {
    headers.insert(LIMIT, HeaderValue::from(v.limit));
    headers.insert(REMAINING, HeaderValue::from(v.remaining));
    headers.insert(RESET, HeaderValue::from(v.reset_seconds()));
}

/// The response to a request `v` refused.
pub fn limited(v: &Verdict, grpc: bool) -> Response<ResponseBody> {
    let mut resp = if grpc {
        let mut resp = Response::new(ResponseBody::empty());
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert("grpc-status", HeaderValue::from(GRPC_RESOURCE_EXHAUSTED));
        h.insert("grpc-message", HeaderValue::from_static(BODY));
        resp
    } else {
        let mut resp = Response::new(ResponseBody::local(BODY));
        *resp.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        resp
    };
    set_headers(resp.headers_mut(), v);
    mark(&mut resp, ResponseFlag::RateLimited);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::flags::ResponseFlags;
    use std::time::Duration;

    fn verdict() -> Verdict {
        Verdict {
            allowed: false,
            limit: 10,
            remaining: 0,
            reset: Duration::from_millis(1500),
        }
    }

    #[test]
    fn http_callers_get_429_with_the_draft_03_headers() {
        let resp = limited(&verdict(), false);
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        let h = resp.headers();
        assert_eq!(h[LIMIT], "10");
        assert_eq!(h[REMAINING], "0");
        assert_eq!(h[RESET], "2");
        let flags = resp.extensions().get::<ResponseFlags>().unwrap();
        assert_eq!(flags.to_string(), "RL");
    }

    #[test]
    fn grpc_callers_get_resource_exhausted_trailers_only() {
        let resp = limited(&verdict(), true);
        assert_eq!(resp.status(), StatusCode::OK);
        let h = resp.headers();
        assert_eq!(h["grpc-status"], "8");
        assert_eq!(h["content-type"], "application/grpc");
        assert_eq!(h[LIMIT], "10");
    }
}
