use super::*;
use mesh_api::networking::{HttpRetry, VirtualService};

struct Mock;

impl RouteEnv for Mock {
    fn cluster(&self, dest: &api::Destination) -> Result<String, String> {
        match dest.subset.as_deref() {
            Some("missing") => Err("subset missing is not defined".into()),
            s => Ok(format!(
                "outbound|{}|{}|{}",
                dest.port.as_ref().map_or(9080, |p| p.number),
                s.unwrap_or(""),
                dest.host
            )),
        }
    }
    fn applies(&self, m: &HttpMatchRequest) -> bool {
        m.source_labels.is_empty()
    }
    fn port(&self) -> u32 {
        9080
    }
    fn origin(&self) -> &str {
        "VirtualService default/vs"
    }
}

fn vs(yaml_spec: &str) -> VirtualService {
    let yaml = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs}}\nspec:\n  hosts: [reviews]\n{yaml_spec}"
    );
    let (r, e) = mesh_api::load_str("vs.yaml", &yaml);
    assert!(e.is_empty(), "{e:?}");
    let mesh_api::Resource::VirtualService(v) = &r[0] else {
        panic!()
    };
    v.spec.clone()
}

fn routes(yaml_spec: &str) -> (Vec<Route>, Vec<String>) {
    let mut w = Vec::new();
    let r = http_routes(&vs(yaml_spec).http, &Mock, &mut w);
    (r, w)
}

fn action(r: &Route) -> &RouteAction {
    match r.action.as_ref().unwrap() {
        route::Action::Route(a) => a,
        other => panic!("{other:?}"),
    }
}

#[test]
fn each_match_is_a_route_with_the_same_action_in_order() {
    let (r, _) = routes(
        "  http:
  - name: api
    match:
    - {name: a, uri: {prefix: /api}}
    - headers: {end-user: {exact: jason}}
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v3}}]
",
    );
    assert_eq!(r.len(), 3);
    assert_eq!(r[0].name, "api.a");
    assert_eq!(r[1].name, "api");
    assert_eq!(action(&r[0]), action(&r[1]));
    let m0 = r[0].r#match.as_ref().unwrap();
    assert_eq!(
        m0.path.as_ref().unwrap().kind,
        Some(string_match::Kind::Prefix("/api".into()))
    );
    let m1 = r[1].r#match.as_ref().unwrap();
    assert_eq!(m1.headers[0].name, "end-user");
    assert_eq!(
        m1.headers[0].value.as_ref().unwrap().kind,
        Some(string_match::Kind::Exact("jason".into()))
    );
    assert_eq!(
        m1.path.as_ref().unwrap().kind,
        Some(string_match::Kind::Prefix("/".into()))
    );
    assert_eq!(
        action(&r[2]).clusters[0].cluster,
        "outbound|9080|v3|reviews"
    );
    assert_eq!(action(&r[2]).clusters[0].weight, 100);
}

#[test]
fn match_fields() {
    let (r, _) = routes(
        "  http:
  - match:
    - uri: {exact: /Login}
      ignoreUriCase: true
      method: {exact: POST}
      queryParams: {debug: {exact: \"\"}, user: {regex: 'a.*'}}
      withoutHeaders: {x-canary: {}}
    - port: 9999
      uri: {prefix: /other-port}
    - sourceLabels: {app: other}
    route: [{destination: {host: reviews}}]
",
    );
    assert_eq!(
        r.len(),
        1,
        "other port and unselected source drop their matches"
    );
    let m = r[0].r#match.as_ref().unwrap();
    assert_eq!(
        m.path.as_ref().unwrap().kind,
        Some(string_match::Kind::Exact("/Login".into()))
    );
    assert!(m.path_ignore_case);
    assert_eq!(
        m.method.as_ref().unwrap().kind,
        Some(string_match::Kind::Exact("POST".into()))
    );
    assert_eq!(m.query_parameters[0].name, "debug");
    assert_eq!(
        m.query_parameters[0].value, None,
        "exact \"\" means present"
    );
    assert_eq!(
        m.query_parameters[1].value.as_ref().unwrap().kind,
        Some(string_match::Kind::Regex("a.*".into()))
    );
    assert_eq!(m.headers[0].name, "x-canary");
    assert!(m.headers[0].invert);
    assert_eq!(m.headers[0].value, None);
}

#[test]
fn route_with_only_inapplicable_matches_is_dropped() {
    let (r, _) = routes(
        "  http:
  - match: [{port: 1234}]
    route: [{destination: {host: reviews}}]
",
    );
    assert!(r.is_empty());
}

#[test]
fn weights_timeout_rewrite_and_headers() {
    let (r, _) = routes(
        "  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 80
      headers: {request: {set: {x-version: v1}}}
    - destination: {host: reviews, subset: v2}
      weight: 20
    - destination: {host: reviews, subset: v3}
      weight: 0
    timeout: 1.5s
    rewrite: {uri: /v2, authority: reviews.internal}
    headers:
      request: {set: {x-a: '1'}, add: {x-b: '2'}, remove: [x-c]}
      response: {remove: [server]}
",
    );
    let a = action(&r[0]);
    let w: Vec<_> = a
        .clusters
        .iter()
        .map(|c| (c.cluster.as_str(), c.weight))
        .collect();
    assert_eq!(
        w,
        [
            ("outbound|9080|v1|reviews", 80),
            ("outbound|9080|v2|reviews", 20)
        ]
    );
    let set = &a.clusters[0].request_headers.as_ref().unwrap().set[0];
    assert_eq!((set.name.as_str(), set.value.as_str()), ("x-version", "v1"));
    assert_eq!(a.timeout_ms, 1500);
    assert_eq!(a.prefix_rewrite, "/v2");
    assert_eq!(a.authority_rewrite, "reviews.internal");
    let req = r[0].request_headers.as_ref().unwrap();
    assert_eq!(req.set[0].name, "x-a");
    assert_eq!(req.add[0].value, "2");
    assert_eq!(req.remove, ["x-c"]);
    assert_eq!(r[0].response_headers.as_ref().unwrap().remove, ["server"]);
}

#[test]
fn retries() {
    let d = retry_policy(None);
    assert_eq!(d.num_retries, 2);
    assert_eq!(
        d.retry_on,
        "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
    );
    let off = retry_policy(Some(&HttpRetry::default()));
    assert_eq!(off.num_retries, 0);
    let (r, _) = routes(
        "  http:
  - route: [{destination: {host: reviews}}]
    retries: {attempts: 3, perTryTimeout: 2s, retryOn: 'gateway-error,503,connect-failure,429'}
",
    );
    let p = action(&r[0]).retry_policy.clone().unwrap();
    assert_eq!(p.num_retries, 3);
    assert_eq!(p.per_try_timeout_ms, 2000);
    assert_eq!(
        p.retry_on,
        "gateway-error,connect-failure,retriable-status-codes"
    );
    assert_eq!(p.retriable_status_codes, [503, 429]);
    let (r, _) = routes(
        "  http:
  - route: [{destination: {host: reviews}}]
    retries: {attempts: 4}
",
    );
    let p = action(&r[0]).retry_policy.clone().unwrap();
    assert_eq!((p.num_retries, p.retry_on.as_str()), (4, DEFAULT_RETRY_ON));
}

#[test]
fn redirect_and_direct_response() {
    let (r, _) = routes(
        "  http:
  - match: [{uri: {exact: /old}}]
    redirect: {uri: /new, authority: example.com, redirectCode: 308}
  - match: [{uri: {exact: /gone}}]
    directResponse: {status: 410, body: {string: gone}}
  - match: [{uri: {exact: /hello}}]
    directResponse: {status: 200, body: {bytes: aGVsbG8=}}
  - directResponse: {status: 200, body: {bytes: /wDDKA==}}
",
    );
    assert_eq!(
        r[0].action,
        Some(route::Action::Redirect(Redirect {
            scheme: String::new(),
            host: "example.com".into(),
            port: 0,
            path: "/new".into(),
            response_code: 308,
            scheme_default_port: false,
        }))
    );
    assert_eq!(
        r[1].action,
        Some(route::Action::DirectResponse(DirectResponse {
            status: 410,
            body: "gone".into(),
            body_bytes: Vec::new(),
        }))
    );
    assert_eq!(
        r[2].action,
        Some(route::Action::DirectResponse(DirectResponse {
            status: 200,
            body: String::new(),
            body_bytes: b"hello".to_vec(),
        }))
    );
    // Bytes that are not UTF-8 are kept as they are.
    assert_eq!(
        r[3].action,
        Some(route::Action::DirectResponse(DirectResponse {
            status: 200,
            body: String::new(),
            body_bytes: vec![0xff, 0x00, 0xc3, 0x28],
        }))
    );
}

#[test]
fn unknown_destination_answers_503_and_warns() {
    let (r, w) = routes(
        "  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: missing}}]
  - route: [{destination: {host: reviews, subset: v1}}]
",
    );
    assert_eq!(r.len(), 2, "the route stays so jason does not fall through");
    assert_eq!(
        r[0].action,
        Some(route::Action::DirectResponse(DirectResponse {
            status: 503,
            body: "no healthy upstream".into(),
            body_bytes: Vec::new(),
        }))
    );
    assert_eq!(w.len(), 1);
    assert!(w[0].contains("subset missing"), "{w:?}");
}

#[test]
fn mirrors_are_translated_with_istios_shares() {
    let (r, w) = routes(
        "  http:
  - mirror: {host: reviews, subset: v2}
    mirrorPercentage: {value: 25.5}
    route: [{destination: {host: reviews, subset: v1}}]
  - mirrors:
    - destination: {host: reviews, subset: v2}
    - destination: {host: reviews, subset: v3}
      percentage: {value: 0}
    - destination: {host: reviews, subset: missing}
    route: [{destination: {host: reviews, subset: v1}}]
  - mirror: {host: reviews, subset: v3}
    mirrorPercent: 10
    route: [{destination: {host: reviews, subset: v1}}]
",
    );
    let shares = |i: usize| -> Vec<(String, f64)> {
        action(&r[i])
            .mirrors
            .iter()
            .map(|m| (m.cluster.clone(), m.percentage))
            .collect()
    };
    assert_eq!(shares(0), [("outbound|9080|v2|reviews".to_string(), 25.5)]);
    // 100 % when unset; a share of 0 mirrors nothing; a missing subset is warned and dropped.
    assert_eq!(shares(1), [("outbound|9080|v2|reviews".to_string(), 100.0)]);
    assert!(
        w.iter()
            .any(|w| w.contains("mirror") && w.contains("subset missing")),
        "{w:?}"
    );
    assert_eq!(shares(2), [("outbound|9080|v3|reviews".to_string(), 10.0)]);
    assert_eq!(
        action(&r[0]).clusters[0].cluster,
        "outbound|9080|v1|reviews",
        "the route itself is unchanged"
    );
}

fn fault_of(yaml_fault: &str) -> (Option<FaultInjection>, Vec<String>) {
    let (r, w) = routes(&format!(
        "  http:
  - fault: {yaml_fault}
    route: [{{destination: {{host: reviews, subset: v1}}}}]
"
    ));
    assert_eq!(
        action(&r[0]).clusters[0].cluster,
        "outbound|9080|v1|reviews",
        "a fault keeps the route's action"
    );
    (r[0].fault.clone(), w)
}

fn delay(ms: u64, percentage: f64) -> Option<fault_injection::Delay> {
    Some(fault_injection::Delay {
        fixed_delay_ms: ms,
        percentage,
    })
}

fn abort(error: fault_injection::abort::Error, percentage: f64) -> Option<fault_injection::Abort> {
    Some(fault_injection::Abort {
        error: Some(error),
        percentage,
    })
}

#[test]
fn fault_delay_and_abort_with_percentage() {
    use fault_injection::abort::Error;
    let (f, w) = fault_of(
        "{delay: {fixedDelay: 1.5s, percentage: {value: 12.5}}, \
         abort: {httpStatus: 503, percentage: {value: 0.1}}}",
    );
    assert_eq!(
        f,
        Some(FaultInjection {
            delay: delay(1500, 12.5),
            abort: abort(Error::HttpStatus(503), 0.1),
        })
    );
    assert!(w.is_empty(), "{w:?}");
    let (f, _) = fault_of("{abort: {grpcStatus: UNAVAILABLE, percentage: {value: 50}}}");
    assert_eq!(
        f,
        Some(FaultInjection {
            delay: None,
            abort: abort(Error::GrpcStatus("UNAVAILABLE".into()), 50.0),
        })
    );
}

#[test]
fn fault_integer_percent_and_istio_defaults() {
    use fault_injection::abort::Error;
    // The deprecated integer `percent` is the share when `percentage` is unset...
    let (f, _) =
        fault_of("{delay: {fixedDelay: 7s, percent: 100}, abort: {httpStatus: 500, percent: 30}}");
    assert_eq!(
        f,
        Some(FaultInjection {
            delay: delay(7000, 100.0),
            abort: abort(Error::HttpStatus(500), 30.0),
        })
    );
    // ...`percentage` wins when both are set...
    let (f, _) = fault_of("{delay: {fixedDelay: 1s, percent: 100, percentage: {value: 5}}}");
    assert_eq!(f.unwrap().delay, delay(1000, 5.0));
    // ...and with neither, no request is affected (Istio's default), which is reported.
    let (f, w) = fault_of("{delay: {fixedDelay: 1s}, abort: {httpStatus: 500}}");
    assert_eq!(
        f,
        Some(FaultInjection {
            delay: delay(1000, 0.0),
            abort: abort(Error::HttpStatus(500), 0.0),
        })
    );
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w.iter().all(|w| w.contains("without percentage")), "{w:?}");
}

#[test]
fn fault_http2_error_abort_is_dropped_with_a_warning() {
    // Validation rejects http2Error as Istio does; translation still never emits it.
    let http2 = api::FaultAbort {
        http2_error: Some("REFUSED_STREAM".into()),
        percentage: Some(api::Percent { value: 100.0 }),
        ..Default::default()
    };
    let mut w = Vec::new();
    let only_abort = api::HttpFaultInjection {
        delay: None,
        abort: Some(http2.clone()),
    };
    assert_eq!(fault(Some(&only_abort), "vs", &mut w), None);
    assert!(w.iter().any(|w| w.contains("http2Error")), "{w:?}");
    let with_delay = api::HttpFaultInjection {
        delay: Some(api::FaultDelay {
            fixed_delay: Some(std::time::Duration::from_secs(2).into()),
            percentage: Some(api::Percent { value: 100.0 }),
            ..Default::default()
        }),
        abort: Some(http2),
    };
    assert_eq!(
        fault(Some(&with_delay), "vs", &mut w),
        Some(FaultInjection {
            delay: delay(2000, 100.0),
            abort: None,
        })
    );
}

#[test]
fn fault_applies_to_every_match_of_its_route_only() {
    let (r, _) = routes(
        "  http:
  - match: [{headers: {end-user: {exact: jason}}}, {uri: {prefix: /test}}]
    fault: {abort: {httpStatus: 500, percentage: {value: 100}}}
    route: [{destination: {host: reviews, subset: v1}}]
  - route: [{destination: {host: reviews, subset: v1}}]
",
    );
    assert_eq!(r.len(), 3);
    assert!(r[0].fault.is_some() && r[1].fault.is_some());
    assert_eq!(r[0].fault, r[1].fault);
    assert_eq!(r[2].fault, None);
}

#[test]
fn default_route_goes_to_the_service_with_default_retries() {
    let r = default_route("outbound|80||a".into());
    let a = action(&r);
    assert_eq!(a.clusters[0].cluster, "outbound|80||a");
    assert_eq!(a.retry_policy.as_ref().unwrap().num_retries, 2);
    assert_eq!(a.timeout_ms, 0);
}

#[test]
fn base64() {
    assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
    assert_eq!(base64_decode("aGk").unwrap(), b"hi");
    assert!(base64_decode("*").is_none());
}

#[test]
fn cors_policy_is_translated_as_istio_does() {
    let (r, w) = routes(
        "  http:
  - corsPolicy:
      allowOrigins: [{exact: 'https://shop.example.com'}, {regex: 'https://.*[.]dev[.]example[.]com'}]
      allowMethods: [GET, POST]
      allowHeaders: [x-custom, content-type]
      exposeHeaders: [x-trace]
      maxAge: 24h
      allowCredentials: true
      unmatchedPreflights: IGNORE
    route: [{destination: {host: reviews, subset: v1}}]
",
    );
    assert!(w.is_empty(), "{w:?}");
    let cors = r[0].cors.clone().expect("translated, not skipped");
    assert_eq!(cors.allow_origins.len(), 2);
    assert_eq!(cors.allow_methods, "GET,POST");
    assert_eq!(cors.allow_headers, "x-custom,content-type");
    assert_eq!(cors.expose_headers, "x-trace");
    assert_eq!(cors.max_age, "86400");
    assert!(cors.allow_credentials);
    assert!(cors.ignore_unmatched_preflights);
    // The deprecated exact `allowOrigin` still counts; unmatched preflights go upstream by
    // default.
    let (r, _) = routes(
        "  http:
  - corsPolicy: {allowOrigin: ['https://a.example.com']}
    route: [{destination: {host: reviews, subset: v1}}]
",
    );
    let cors = r[0].cors.clone().unwrap();
    assert_eq!(
        cors.allow_origins[0].kind,
        Some(string_match::Kind::Exact("https://a.example.com".into()))
    );
    assert!(!cors.ignore_unmatched_preflights);
}
