//! VirtualService `http` routes into the proxy's routes, for one virtual host (service port).

use std::collections::BTreeMap;

use mesh_api::networking::{
    self as api, DEFAULT_RETRY_ATTEMPTS, DEFAULT_RETRY_ON, HttpMatchRequest, HttpRoute,
};
use mesh_proto::config::v1::{
    CorsPolicy, DirectResponse, FaultInjection, HeaderMatch, HeaderOperations, HeaderValue,
    QueryParameterMatch, Redirect, RegexRewrite, RequestMirror, RetryPolicy, Route, RouteAction,
    RouteMatch, StringMatch, WeightedCluster, fault_injection, route, string_match,
};

/// What the route builder needs from its caller.
pub trait RouteEnv {
    /// The cluster of a destination (host as written in the VirtualService), or why it has none.
    fn cluster(&self, dest: &api::Destination) -> Result<String, String>;
    /// Whether a match applies to this proxy (gateways, sourceLabels, sourceNamespace).
    fn applies(&self, m: &HttpMatchRequest) -> bool;
    /// The port of the virtual host being built.
    fn port(&self) -> u32;
    /// `Kind namespace/name` of the VirtualService, for warnings.
    fn origin(&self) -> &str;
}

/// Answer of a route whose destination does not exist, as Istio's Envoy gives (503 `NC`).
pub const NO_CLUSTER_STATUS: u32 = 503;
pub const NO_CLUSTER_BODY: &str = "no healthy upstream";

fn ms(d: &mesh_api::Duration) -> u64 {
    u64::try_from(d.as_std().as_millis()).unwrap_or(u64::MAX)
}

pub(crate) fn string_match(m: &api::StringMatch) -> Option<StringMatch> {
    let kind = if let Some(e) = &m.exact {
        string_match::Kind::Exact(e.clone())
    } else if let Some(p) = &m.prefix {
        string_match::Kind::Prefix(p.clone())
    } else if let Some(r) = &m.regex {
        string_match::Kind::Regex(r.clone())
    } else {
        return None;
    };
    Some(StringMatch { kind: Some(kind) })
}

fn prefix(p: &str) -> Option<StringMatch> {
    Some(StringMatch {
        kind: Some(string_match::Kind::Prefix(p.to_string())),
    })
}

/// One Istio match into the proxy's (Istio's `translateRouteMatch`): `authority` and `scheme`
/// match the request's `:authority` and `:scheme`, as Envoy's header matchers on them.
fn route_match(m: &HttpMatchRequest) -> RouteMatch {
    let headers = m
        .headers
        .iter()
        .map(|(name, v)| HeaderMatch {
            name: name.clone(),
            value: string_match(v),
            invert: false,
        })
        .chain(m.without_headers.iter().map(|(name, v)| HeaderMatch {
            name: name.clone(),
            value: string_match(v),
            invert: true,
        }))
        .collect();
    let query_parameters = m
        .query_params
        .iter()
        .map(|(name, v)| QueryParameterMatch {
            name: name.clone(),
            // Istio reads `exact: ""` as "present".
            value: string_match(v)
                .filter(|s| s.kind != Some(string_match::Kind::Exact(String::new()))),
        })
        .collect();
    RouteMatch {
        path: match &m.uri {
            Some(u) => string_match(u),
            None => prefix("/"),
        },
        // Envoy's `case_sensitive: false`, which leaves a regex case-sensitive.
        path_ignore_case: m.ignore_uri_case,
        headers,
        query_parameters,
        method: m.method.as_ref().and_then(string_match),
        authority: m.authority.as_ref().and_then(string_match),
        scheme: m.scheme.as_ref().and_then(string_match),
    }
}

fn header_ops(ops: Option<&api::HeaderOperations>) -> Option<HeaderOperations> {
    let ops = ops?;
    let values = |m: &BTreeMap<String, String>| {
        m.iter()
            .map(|(name, value)| HeaderValue {
                name: name.clone(),
                value: value.clone(),
            })
            .collect()
    };
    Some(HeaderOperations {
        set: values(&ops.set),
        add: values(&ops.add),
        remove: ops.remove.clone(),
    })
}

/// Istio's retry translation: `attempts` retries (0 disables), `perTryTimeout`, and `retryOn`
/// split into Envoy conditions and bare status codes; no `retries` means Istio's default
/// (whose `retriable-status-codes` is 503, as Istio's `DefaultPolicy`).
pub fn retry_policy(r: Option<&api::HttpRetry>) -> RetryPolicy {
    let Some(r) = r else {
        return RetryPolicy {
            num_retries: DEFAULT_RETRY_ATTEMPTS as u32,
            per_try_timeout_ms: 0,
            retry_on: DEFAULT_RETRY_ON.to_string(),
            retriable_status_codes: vec![503],
        };
    };
    if r.attempts <= 0 {
        return RetryPolicy::default();
    }
    let mut conditions: Vec<String> = Vec::new();
    let mut codes = Vec::new();
    for part in r.retry_on_or_default().split(',').map(str::trim) {
        if part.is_empty() {
            continue;
        }
        match part.parse::<u32>() {
            Ok(code) => codes.push(code),
            Err(_) => {
                if !conditions.iter().any(|c| c == part) {
                    conditions.push(part.to_string());
                }
            }
        }
    }
    if !codes.is_empty() && !conditions.iter().any(|c| c == "retriable-status-codes") {
        conditions.push("retriable-status-codes".to_string());
    }
    RetryPolicy {
        num_retries: r.attempts as u32,
        per_try_timeout_ms: r.per_try_timeout.as_ref().map(ms).unwrap_or(0),
        retry_on: conditions.join(","),
        retriable_status_codes: codes,
    }
}

/// Base64 (standard alphabet, padding optional) for `directResponse.body.bytes`.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| *c != b'=' && !c.is_ascii_whitespace()) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

fn action(r: &HttpRoute, env: &dyn RouteEnv, warnings: &mut Vec<String>) -> route::Action {
    let origin = env.origin();
    if let Some(rd) = &r.redirect {
        // Istio's `ApplyRedirect`: FROM_REQUEST_PORT is the port the route is built for (the
        // port the request was addressed to); FROM_PROTOCOL_DEFAULT leaves the port out.
        let derive = rd.derive_port.as_deref();
        return route::Action::Redirect(Redirect {
            scheme: rd.scheme.clone().unwrap_or_default(),
            host: rd.authority.clone().unwrap_or_default(),
            port: match derive {
                Some("FROM_REQUEST_PORT") => env.port(),
                _ => rd.port.unwrap_or(0),
            },
            path: rd.uri.clone().unwrap_or_default(),
            response_code: rd.redirect_code.unwrap_or(301),
            scheme_default_port: derive == Some("FROM_PROTOCOL_DEFAULT"),
        });
    }
    if let Some(dr) = &r.direct_response {
        // Validation refuses bytes that are not base64, so the decode does not fail here.
        let (body, body_bytes) = match dr.body.as_ref().map(|b| (&b.string, &b.bytes)) {
            Some((Some(s), _)) => (s.clone(), Vec::new()),
            Some((None, Some(bytes))) => (String::new(), base64_decode(bytes).unwrap_or_default()),
            _ => (String::new(), Vec::new()),
        };
        return route::Action::DirectResponse(DirectResponse {
            status: dr.status,
            body,
            body_bytes,
        });
    }
    let mut clusters = Vec::with_capacity(r.route.len());
    let total: i32 = r.route.iter().map(|d| d.weight).sum();
    for d in &r.route {
        // A zero weight next to weighted destinations gets no traffic; alone it means 100.
        if d.weight == 0 && total > 0 {
            continue;
        }
        match env.cluster(&d.destination) {
            Ok(cluster) => clusters.push(WeightedCluster {
                cluster,
                subset: String::new(),
                weight: if total == 0 { 100 } else { d.weight as u32 },
                request_headers: header_ops(d.headers.as_ref().and_then(|h| h.request.as_ref())),
                response_headers: header_ops(d.headers.as_ref().and_then(|h| h.response.as_ref())),
            }),
            Err(reason) => {
                // Istio's Envoy answers 503 for a route to a cluster that does not exist; the
                // route stays so later routes do not catch its traffic.
                warnings.push(format!("{origin}: {reason}; the route answers 503"));
                return route::Action::DirectResponse(DirectResponse {
                    status: NO_CLUSTER_STATUS,
                    body: NO_CLUSTER_BODY.to_string(),
                    body_bytes: Vec::new(),
                });
            }
        }
    }
    let rewrite = r.rewrite.as_ref();
    route::Action::Route(RouteAction {
        clusters,
        timeout_ms: r.timeout.as_ref().map(ms).unwrap_or(0),
        retry_policy: Some(retry_policy(r.retries.as_ref())),
        prefix_rewrite: rewrite.and_then(|rw| rw.uri.clone()).unwrap_or_default(),
        authority_rewrite: rewrite
            .and_then(|rw| rw.authority.clone())
            .unwrap_or_default(),
        mirrors: mirrors(r, env, warnings),
        regex_rewrite: rewrite
            .and_then(|rw| rw.uri_regex_rewrite.as_ref())
            .map(|rr| RegexRewrite {
                pattern: rr.match_.clone(),
                substitution: rr.rewrite.clone(),
            }),
    })
}

/// Istio's mirror translation: `mirror` with `mirrorPercentage` (else the deprecated integer
/// `mirrorPercent`, else 100 %), then each of `mirrors` with its own `percentage` (100 % when
/// unset). A share of 0 mirrors nothing, and a mirror to a destination without a cluster is
/// dropped with a warning: the route itself still works.
fn mirrors(r: &HttpRoute, env: &dyn RouteEnv, warnings: &mut Vec<String>) -> Vec<RequestMirror> {
    let single = r.mirror.as_ref().map(|d| {
        let share = match (&r.mirror_percentage, r.mirror_percent) {
            (Some(p), _) => p.value,
            (None, Some(p)) => f64::from(p),
            (None, None) => 100.0,
        };
        (d, share)
    });
    let listed = r.mirrors.iter().map(|m| {
        (
            &m.destination,
            m.percentage.as_ref().map_or(100.0, |p| p.value),
        )
    });
    let mut out = Vec::new();
    for (destination, percentage) in single.into_iter().chain(listed) {
        if percentage <= 0.0 {
            continue;
        }
        match env.cluster(destination) {
            Ok(cluster) => out.push(RequestMirror {
                cluster,
                subset: String::new(),
                percentage: percentage.min(100.0),
            }),
            Err(reason) => {
                warnings.push(format!("{}: mirror: {reason}; not mirrored", env.origin()))
            }
        }
    }
    out
}

/// Istio's `TranslateCORSPolicy`: lists joined with commas, `maxAge` in whole seconds, the
/// deprecated exact `allowOrigin` beside `allowOrigins`, unmatched preflights forwarded unless
/// `IGNORE`.
fn cors_policy(c: &api::CorsPolicy) -> CorsPolicy {
    let exact = |o: &String| StringMatch {
        kind: Some(string_match::Kind::Exact(o.clone())),
    };
    CorsPolicy {
        allow_origins: c
            .allow_origin
            .iter()
            .map(exact)
            .chain(c.allow_origins.iter().filter_map(string_match))
            .collect(),
        allow_methods: c.allow_methods.join(","),
        allow_headers: c.allow_headers.join(","),
        expose_headers: c.expose_headers.join(","),
        max_age: c
            .max_age
            .as_ref()
            .map(|d| d.as_std().as_secs().to_string())
            .unwrap_or_default(),
        allow_credentials: c.allow_credentials.unwrap_or(false),
        ignore_unmatched_preflights: c.unmatched_preflights.as_deref() == Some("IGNORE"),
    }
}

/// Istio's `TranslateFault`. A delay takes `percentage`, else the deprecated integer
/// `percent`; an abort takes `percentage`. Unset, the share is 0: Istio documents "if left
/// unspecified, no request will be delayed" / "no request will be aborted", and that is what
/// its Envoy config does. The abort's integer `percent` is honoured too: Istio has since
/// removed it, but it was the abort's share while it existed and Istio's bookinfo samples
/// (`virtual-service-ratings-test-abort.yaml`) still set it, meaning every matching request.
/// An abort by `http2Error` is dropped with a warning, as Istio drops it.
pub fn fault(
    f: Option<&api::HttpFaultInjection>,
    origin: &str,
    warnings: &mut Vec<String>,
) -> Option<FaultInjection> {
    let f = f?;
    let share = |percentage: Option<&api::Percent>,
                 percent: Option<i32>,
                 what: &str,
                 warnings: &mut Vec<String>| match (percentage, percent) {
        (Some(p), _) => p.value.clamp(0.0, 100.0),
        (None, Some(p)) => f64::from(p.clamp(0, 100)),
        (None, None) => {
            warnings.push(format!(
                "{origin}: fault {what} without percentage applies to no request (Istio's default)"
            ));
            0.0
        }
    };
    let delay = f.delay.as_ref().and_then(|d| {
        // Validation admits fixedDelay only (exponentialDelay is not supported, as in Istio).
        let fixed = d.fixed_delay.as_ref()?;
        Some(fault_injection::Delay {
            fixed_delay_ms: ms(fixed),
            percentage: share(d.percentage.as_ref(), d.percent, "delay", warnings),
        })
    });
    let abort = f.abort.as_ref().and_then(|a| {
        let error = if let Some(code) = a.http_status {
            fault_injection::abort::Error::HttpStatus(code.clamp(0, 599) as u32)
        } else if let Some(status) = &a.grpc_status {
            fault_injection::abort::Error::GrpcStatus(status.clone())
        } else {
            warnings.push(format!(
                "{origin}: fault abort by http2Error is not supported (Istio supports httpStatus and grpcStatus only); the abort is dropped"
            ));
            return None;
        };
        Some(fault_injection::Abort {
            error: Some(error),
            percentage: share(a.percentage.as_ref(), a.percent, "abort", warnings),
        })
    });
    if delay.is_none() && abort.is_none() {
        return None;
    }
    Some(FaultInjection { delay, abort })
}

/// The routes of one VirtualService for the virtual host of `env.port()`, in order: each
/// `http` entry gives one route per applicable match (or one catch-all without matches).
pub fn http_routes(
    http: &[HttpRoute],
    env: &dyn RouteEnv,
    warnings: &mut Vec<String>,
) -> Vec<Route> {
    let mut out = Vec::new();
    for r in http {
        // The index replaced every delegating route whose delegate it found by the delegate's
        // routes (`delegate.rs`) and warned about the others.
        if r.delegate.is_some() {
            continue;
        }
        let matches: Vec<Option<&HttpMatchRequest>> = if r.matches.is_empty() {
            vec![None]
        } else {
            r.matches
                .iter()
                .filter(|m| m.port.is_none_or(|p| p == env.port()) && env.applies(m))
                .map(Some)
                .collect()
        };
        if matches.is_empty() {
            continue;
        }
        let action = action(r, env, warnings);
        let fault = fault(r.fault.as_ref(), env.origin(), warnings);
        for m in matches {
            let rm = match m {
                Some(m) => route_match(m),
                None => RouteMatch {
                    path: prefix("/"),
                    ..Default::default()
                },
            };
            let name = match (r.name.as_deref(), m.and_then(|m| m.name.as_deref())) {
                (Some(r), Some(m)) => format!("{r}.{m}"),
                (Some(n), None) | (None, Some(n)) => n.to_string(),
                (None, None) => String::new(),
            };
            out.push(Route {
                name,
                r#match: Some(rm),
                action: Some(action.clone()),
                request_headers: header_ops(r.headers.as_ref().and_then(|h| h.request.as_ref())),
                response_headers: header_ops(r.headers.as_ref().and_then(|h| h.response.as_ref())),
                fault: fault.clone(),
                cors: r.cors_policy.as_ref().map(cors_policy),
            });
        }
    }
    out
}

/// The route of a service without VirtualService: everything to the service's cluster.
pub fn default_route(cluster: String) -> Route {
    Route {
        name: "default".to_string(),
        r#match: Some(RouteMatch {
            path: prefix("/"),
            ..Default::default()
        }),
        action: Some(route::Action::Route(RouteAction {
            clusters: vec![WeightedCluster {
                cluster,
                weight: 100,
                ..Default::default()
            }],
            retry_policy: Some(retry_policy(None)),
            ..Default::default()
        })),
        ..Default::default()
    }
}

#[cfg(test)]
#[path = "routes_tests.rs"]
mod tests;
