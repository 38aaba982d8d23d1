//! One inbound listener's LocalRateLimits, compiled: a bucket per limit and per route, and
//! the choice of bucket for a request. Buckets of a limit whose name and bucket did not
//! change are carried over from the previous config, so a config push does not refill them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_proto::config::v1 as pb;

use super::bucket::{Bucket, BucketSpec, Verdict};
use crate::config::FieldError;
use crate::route::RequestView;
use crate::route::matcher::RouteMatcher;

/// Where a bucket sits, with its spec: the key under which a new config finds the bucket of
/// the previous one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BucketKey {
    limit: String,
    /// `None`: the limit's own bucket; else the route's position.
    route: Option<usize>,
    spec: BucketSpec,
}

#[derive(Debug)]
struct Route {
    matchers: Vec<RouteMatcher>,
    bucket: Arc<Bucket>,
}

#[derive(Debug)]
struct Limit {
    bucket: Arc<Bucket>,
    routes: Vec<Route>,
}

impl Limit {
    /// The bucket of the first route that matches, else the limit's own.
    fn bucket_for(&self, req: &RequestView<'_>) -> &Bucket {
        self.routes
            .iter()
            .find(|r| r.matchers.iter().any(|m| m.matches(req)))
            .map_or(&self.bucket, |r| &r.bucket)
    }
}

/// A limit of the config that does not compile, with its position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("localRateLimits[{limit}].{error}")]
pub struct LimitError {
    pub limit: usize,
    pub error: FieldError,
}

/// The LocalRateLimits of one listener.
#[derive(Debug, Default)]
pub struct RateLimits {
    limits: Vec<Limit>,
    /// Every bucket by its key, for the next config to reuse.
    buckets: HashMap<BucketKey, Arc<Bucket>>,
}

impl RateLimits {
    /// Compiles `limits`, reusing the buckets of `previous` whose limit name, position and
    /// spec are unchanged. `now` starts the fill clock of new buckets.
    pub fn compile(
        limits: &[pb::LocalRateLimit],
        previous: Option<&RateLimits>,
        now: Instant,
    ) -> Result<Self, LimitError> {
        let mut out = RateLimits::default();
        for (i, l) in limits.iter().enumerate() {
            let err = |error: FieldError| LimitError { limit: i, error };
            let own = bucket_spec(l.bucket.as_ref()).map_err(|e| err(e.within("bucket")))?;
            let bucket = out.bucket(&l.name, None, own, previous, now);
            let mut routes = Vec::with_capacity(l.routes.len());
            for (ri, r) in l.routes.iter().enumerate() {
                let field = format!("routes[{ri}]");
                let spec = bucket_spec(r.bucket.as_ref())
                    .map_err(|e| err(e.within(&format!("{field}.bucket"))))?;
                if r.matches.is_empty() {
                    return Err(err(FieldError::new(
                        format!("{field}.matches"),
                        "at least one match is required",
                    )));
                }
                let matchers = r
                    .matches
                    .iter()
                    .enumerate()
                    .map(|(mi, m)| {
                        RouteMatcher::compile(m)
                            .map_err(|e| err(e.within(&format!("{field}.matches[{mi}]"))))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                routes.push(Route {
                    matchers,
                    bucket: out.bucket(&l.name, Some(ri), spec, previous, now),
                });
            }
            out.limits.push(Limit { bucket, routes });
        }
        Ok(out)
    }

    fn bucket(
        &mut self,
        limit: &str,
        route: Option<usize>,
        spec: BucketSpec,
        previous: Option<&RateLimits>,
        now: Instant,
    ) -> Arc<Bucket> {
        let key = BucketKey {
            limit: limit.to_string(),
            route,
            spec,
        };
        let bucket = previous
            .and_then(|p| p.buckets.get(&key))
            .cloned()
            .unwrap_or_else(|| Arc::new(Bucket::new(spec, now)));
        self.buckets.insert(key, bucket.clone());
        bucket
    }

    pub fn is_empty(&self) -> bool {
        self.limits.is_empty()
    }

    /// Takes a token for `req` from the bucket each limit picks for it. `Some`: the first
    /// refusal; the request must not go on.
    pub fn check(&self, req: &RequestView<'_>, now: Instant) -> Option<Verdict> {
        self.limits
            .iter()
            .map(|l| l.bucket_for(req).take(now))
            .find(|v| !v.allowed)
    }
}

fn bucket_spec(b: Option<&pb::TokenBucket>) -> Result<BucketSpec, FieldError> {
    let Some(b) = b else {
        return Err(FieldError::new("", "required"));
    };
    let positive = |v: u64, field: &str| {
        if v == 0 {
            Err(FieldError::new(field, "must be greater than 0"))
        } else {
            Ok(())
        }
    };
    positive(u64::from(b.max_tokens), "maxTokens")?;
    positive(u64::from(b.tokens_per_fill), "tokensPerFill")?;
    positive(b.fill_interval_ms, "fillIntervalMs")?;
    Ok(BucketSpec {
        max_tokens: b.max_tokens,
        tokens_per_fill: b.tokens_per_fill,
        fill_interval: Duration::from_millis(b.fill_interval_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, Method};
    use pb::string_match::Kind;

    fn bucket(max: u32) -> Option<pb::TokenBucket> {
        Some(pb::TokenBucket {
            max_tokens: max,
            tokens_per_fill: max,
            fill_interval_ms: 60_000,
        })
    }

    fn limit(name: &str, max: u32, route_max: u32) -> pb::LocalRateLimit {
        pb::LocalRateLimit {
            name: name.into(),
            bucket: bucket(max),
            routes: vec![pb::RateLimitRoute {
                name: "login".into(),
                matches: vec![pb::RouteMatch {
                    path: Some(pb::StringMatch {
                        kind: Some(Kind::Prefix("/login".into())),
                    }),
                    method: Some(pb::StringMatch {
                        kind: Some(Kind::Exact("POST".into())),
                    }),
                    ..Default::default()
                }],
                bucket: bucket(route_max),
            }],
        }
    }

    fn allowed(limits: &RateLimits, method: &Method, path: &str, n: usize) -> usize {
        let headers = HeaderMap::new();
        let view = RequestView {
            method,
            authority: "app",
            scheme: "http",
            path,
            query: None,
            headers: &headers,
        };
        let now = Instant::now();
        (0..n)
            .filter(|_| limits.check(&view, now).is_none())
            .count()
    }

    #[test]
    fn a_matching_route_has_its_own_bucket() {
        let limits = RateLimits::compile(&[limit("ns/a", 3, 1)], None, Instant::now()).unwrap();
        assert_eq!(allowed(&limits, &Method::POST, "/login/x", 5), 1);
        // The login route's requests did not take from the limit's own bucket.
        assert_eq!(allowed(&limits, &Method::GET, "/login/x", 5), 3);
        assert_eq!(allowed(&limits, &Method::POST, "/other", 5), 0);
    }

    #[test]
    fn every_limit_must_let_a_request_through() {
        let limits = RateLimits::compile(
            &[limit("ns/a", 5, 5), limit("ns/b", 2, 5)],
            None,
            Instant::now(),
        )
        .unwrap();
        assert_eq!(allowed(&limits, &Method::GET, "/", 10), 2);
    }

    #[test]
    fn an_unchanged_limit_keeps_its_tokens_and_a_changed_one_starts_full() {
        let now = Instant::now();
        let first = RateLimits::compile(&[limit("ns/a", 2, 1)], None, now).unwrap();
        assert_eq!(allowed(&first, &Method::GET, "/", 5), 2);
        let same = RateLimits::compile(&[limit("ns/a", 2, 1)], Some(&first), now).unwrap();
        assert_eq!(allowed(&same, &Method::GET, "/", 5), 0);
        let bigger = RateLimits::compile(&[limit("ns/a", 4, 1)], Some(&same), now).unwrap();
        assert_eq!(allowed(&bigger, &Method::GET, "/", 5), 4);
        let renamed = RateLimits::compile(&[limit("ns/b", 4, 1)], Some(&bigger), now).unwrap();
        assert_eq!(allowed(&renamed, &Method::GET, "/", 5), 4);
    }

    #[test]
    fn buckets_and_matches_that_cannot_work_are_refused() {
        let mut l = limit("ns/a", 1, 1);
        l.bucket.as_mut().unwrap().fill_interval_ms = 0;
        let e = RateLimits::compile(&[l], None, Instant::now()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "localRateLimits[0].bucket.fillIntervalMs: must be greater than 0"
        );
        let mut l = limit("ns/a", 1, 1);
        l.routes[0].matches[0].path = Some(pb::StringMatch {
            kind: Some(Kind::Regex("(".into())),
        });
        let e = RateLimits::compile(&[limit("ns/ok", 1, 1), l], None, Instant::now()).unwrap_err();
        assert_eq!(e.limit, 1);
        assert_eq!(e.error.field, "routes[0].matches[0].path");
        let mut l = limit("ns/a", 1, 1);
        l.routes[0].bucket = None;
        let e = RateLimits::compile(&[l], None, Instant::now()).unwrap_err();
        assert_eq!(e.error.field, "routes[0].bucket");
    }
}
