//! `decide` with plain values: a compiled snapshot, a connection context and a request view;
//! no sockets.

use http::Request;
use serde_json::{Value, json};

use super::*;
use crate::identity::IdentitySlot;
use crate::listener::ListenerSpec;
use crate::metrics::Metrics;
use crate::upstream::{Endpoints, passthrough_cluster};

/// Misses any share below 100 %.
const MISS: u32 = 999_999;
/// Hits any share above 0 %.
const HIT: u32 = 0;

fn snapshot(listener: Value, routes: Value) -> Snapshot {
    let cfg = serde_json::from_value(json!({
        "listeners": [listener],
        "routeTables": [{ "name": "rt", "virtualHosts": [{
            "name": "shop", "domains": ["shop"], "routes": routes
        }]}],
        "clusters": [
            { "name": "v1", "endpoints": [{ "address": "127.0.0.1:1001" }] },
            { "name": "v2", "endpoints": [{ "address": "127.0.0.1:1002" }] },
        ],
    }))
    .unwrap();
    let identity = Arc::new(IdentitySlot::default());
    Snapshot::compile(cfg, None, &Metrics::default(), &identity).unwrap()
}

fn outbound(policy: &str) -> Value {
    json!({
        "name": "out", "address": "127.0.0.1:0", "direction": "OUTBOUND",
        "protocol": "HTTP", "routeTable": "rt", "transparent": true,
        "outboundTrafficPolicy": policy
    })
}

fn conn(snap: &Snapshot, original_dst: Option<&str>) -> ConnContext {
    ConnContext {
        listener: Arc::new(ListenerSpec::new(&snap.source.listeners[0])),
        peer: "127.0.0.1:40000".parse().unwrap(),
        original_dst: original_dst.map(|d| d.parse().unwrap()),
        peer_identity: None,
        destination_port: 8080,
        log_downstream: Default::default(),
    }
}

fn dice(fault: u32, destination: u32) -> Dice {
    Dice {
        fault: Rolls {
            delay: fault,
            abort: fault,
        },
        destination,
        mirror: 0,
    }
}

/// Decides `req` on a connection of the snapshot's listener, without overrides.
fn decide_on<'s>(
    snap: &'s Snapshot,
    original_dst: Option<&str>,
    req: &Request<()>,
    dice: Dice,
) -> Decision<'s> {
    let authority = req.headers()["host"].clone();
    let view = RequestView {
        method: req.method(),
        authority: &authority,
        path_and_query: req.uri().path_and_query(),
        headers: req.headers(),
        request_auth: None,
    };
    let passthrough = passthrough_cluster(&Metrics::default());
    let conn = conn(snap, original_dst);
    decide(
        &view,
        &conn,
        snap,
        &passthrough,
        &Overrides::default(),
        dice,
    )
}

fn get(host: &str, path: &str) -> Request<()> {
    Request::get(path).header("host", host).body(()).unwrap()
}

fn forwarding<'a, 's>(d: &'a Decision<'s>) -> &'a Forwarding<'s> {
    match &d.action {
        Decided::Forward(f) => f,
        other => panic!("expected a forward, got {other:?}"),
    }
}

fn subset_of(f: &Forwarding<'_>) -> (String, String) {
    match &f.target.endpoints {
        Endpoints::Subset(s) => (f.target.cluster.name.clone(), s.clone()),
        Endpoints::OriginalDst(e) => ("original".into(), e.address.to_string()),
    }
}

#[test]
fn weighted_destination_by_the_dice_with_rewrites_and_policy() {
    let snap = snapshot(
        outbound("ALLOW_ANY"),
        json!([{
            "match": { "path": { "prefix": "/api/" } },
            "route": {
                "clusters": [
                    { "cluster": "v1", "weight": 50 },
                    { "cluster": "v2", "weight": 50 }
                ],
                "prefixRewrite": "/v2/",
                "authorityRewrite": "shop.internal",
                "timeoutMs": 1500,
                "retryPolicy": { "numRetries": 5, "retryOn": "5xx" }
            }
        }]),
    );
    let req = get("shop", "/api/items?page=2");
    let first = decide_on(&snap, None, &req, dice(MISS, 0));
    let last = decide_on(&snap, None, &req, dice(MISS, u32::MAX));
    assert_eq!(subset_of(forwarding(&first)).0, "v1");
    assert_eq!(subset_of(forwarding(&last)).0, "v2");
    let f = forwarding(&first);
    assert!(Arc::ptr_eq(&f.target.cluster, &snap.clusters["v1"]));
    assert_eq!(f.path_and_query.as_str(), "/v2/items?page=2");
    assert_eq!(f.authority, "shop.internal");
    assert_eq!(f.timeout, Some(Duration::from_millis(1500)));
    assert_eq!(f.retry.num_retries, 5);
    assert!(first.delay.is_none());
}

#[test]
fn istio_default_retries_and_grpc_timeout_caps_the_route_timeout() {
    let snap = snapshot(
        outbound("ALLOW_ANY"),
        json!([{ "route": {
            "clusters": [{ "cluster": "v1", "weight": 100 }], "timeoutMs": 5000
        } }]),
    );
    let mut req = get("shop", "/");
    req.headers_mut()
        .insert("grpc-timeout", "200m".parse().unwrap());
    let d = decide_on(&snap, None, &req, dice(MISS, 0));
    let f = forwarding(&d);
    assert_eq!(f.retry, RetryPolicy::istio_default());
    assert_eq!(f.timeout, Some(Duration::from_millis(200)));
}

#[test]
fn unrouted_requests_go_to_their_original_destination_only_with_allow_any() {
    let snap = snapshot(outbound("ALLOW_ANY"), json!([]));
    let req = get("example.org", "/x?y=1");
    // No original destination: nowhere to go.
    let d = decide_on(&snap, None, &req, dice(MISS, 0));
    assert!(matches!(d.action, Decided::Reply(Reply::NoRoute)));
    let d = decide_on(&snap, Some("198.18.0.9:80"), &req, dice(MISS, 0));
    let f = forwarding(&d);
    assert_eq!(
        subset_of(f),
        ("original".to_string(), "198.18.0.9:80".to_string())
    );
    assert_eq!(f.path_and_query.as_str(), "/x?y=1");
    assert_eq!(f.retry, RetryPolicy::none());
    assert_eq!(f.timeout, None);

    let snap = snapshot(outbound("REGISTRY_ONLY"), json!([]));
    let d = decide_on(&snap, Some("198.18.0.9:80"), &req, dice(MISS, 0));
    assert!(matches!(d.action, Decided::Reply(Reply::NoRoute)));
}

#[test]
fn faults_delay_and_abort_by_the_dice() {
    let snap = snapshot(
        outbound("ALLOW_ANY"),
        json!([{
            "route": { "clusters": [{ "cluster": "v1", "weight": 100 }] },
            "fault": {
                "delay": { "fixedDelayMs": 300, "percentage": 50 },
                "abort": { "httpStatus": 418, "percentage": 50 }
            }
        }]),
    );
    let req = get("shop", "/");
    let hit = decide_on(&snap, None, &req, dice(HIT, 0));
    assert_eq!(hit.delay, Some(Duration::from_millis(300)));
    assert!(matches!(
        hit.action,
        Decided::Reply(Reply::Abort(Abort::Http(s))) if s == StatusCode::IM_A_TEAPOT
    ));
    let miss = decide_on(&snap, None, &req, dice(MISS, 0));
    assert_eq!(miss.delay, None);
    forwarding(&miss);
}

#[test]
fn direct_responses_and_redirects_are_replies() {
    let snap = snapshot(
        outbound("ALLOW_ANY"),
        json!([
            { "match": { "path": { "exact": "/health" } },
              "directResponse": { "status": 200, "body": "ok" } },
            { "match": { "path": { "prefix": "/old" } },
              "redirect": { "path": "/new", "responseCode": 302 } },
            { "route": { "clusters": [{ "cluster": "v1", "weight": 100 }] } }
        ]),
    );
    let d = decide_on(&snap, None, &get("shop", "/health"), dice(MISS, 0));
    assert!(matches!(
        d.action,
        Decided::Reply(Reply::Direct { status, ref body, .. }) if status == StatusCode::OK && body == "ok"
    ));
    let d = decide_on(&snap, None, &get("shop", "/old?q=1"), dice(MISS, 0));
    let Decided::Reply(Reply::Redirect {
        status, location, ..
    }) = d.action
    else {
        panic!("expected a redirect");
    };
    assert_eq!(status, StatusCode::FOUND);
    // A redirect path replaces the path and its query.
    assert_eq!(location.unwrap(), "http://shop/new");
}

#[test]
fn inbound_requests_are_authorized_before_routing() {
    let listener = json!({
        "name": "in", "address": "127.0.0.1:0", "direction": "INBOUND",
        "protocol": "HTTP", "routeTable": "rt",
        "authorizationPolicies": [{
            "name": "default/deny-admin", "action": "DENY",
            "rules": [{ "to": [{ "paths": ["/admin/*"] }] }]
        }]
    });
    let snap = snapshot(
        listener,
        json!([{ "route": { "clusters": [{ "cluster": "v1", "weight": 100 }] } }]),
    );
    let d = decide_on(&snap, None, &get("shop", "/admin/users"), dice(MISS, 0));
    assert!(matches!(d.action, Decided::Reply(Reply::Denied)));
    let d = decide_on(&snap, None, &get("shop", "/users"), dice(MISS, 0));
    assert_eq!(subset_of(forwarding(&d)).0, "v1");
}

#[test]
fn scheme_match_follows_the_connection_and_regex_rewrite_keeps_the_query() {
    let snap = snapshot(
        outbound("ALLOW_ANY"),
        json!([
            {
                "match": { "scheme": { "exact": "https" } },
                "route": {
                    "clusters": [{ "cluster": "v2" }],
                    "regexRewrite": { "pattern": "^/api/(v[0-9]+)/", "substitution": "/\\1/api/" }
                }
            },
            { "route": { "clusters": [{ "cluster": "v1" }] } }
        ]),
    );
    let req = get("shop", "/api/v3/items?page=2");
    let plain = decide_on(&snap, None, &req, dice(MISS, 0));
    assert_eq!(subset_of(forwarding(&plain)).0, "v1");
    assert_eq!(
        forwarding(&plain).path_and_query.as_str(),
        "/api/v3/items?page=2"
    );

    // The same request on a connection whose TLS the proxy terminated.
    let mut tls = conn(&snap, None);
    let mut spec = ListenerSpec::new(&snap.source.listeners[0]);
    spec.terminates_tls = true;
    tls.listener = Arc::new(spec);
    let authority = req.headers()["host"].clone();
    let view = RequestView {
        method: req.method(),
        authority: &authority,
        path_and_query: req.uri().path_and_query(),
        headers: req.headers(),
        request_auth: None,
    };
    let passthrough = passthrough_cluster(&Metrics::default());
    let d = decide(
        &view,
        &tls,
        &snap,
        &passthrough,
        &Overrides::default(),
        dice(MISS, 0),
    );
    assert_eq!(subset_of(forwarding(&d)).0, "v2");
    assert_eq!(
        forwarding(&d).path_and_query.as_str(),
        "/v3/api/items?page=2"
    );
}

#[test]
fn a_route_to_an_original_dst_cluster_goes_where_the_connection_was_going() {
    let cfg = serde_json::from_value(json!({
        "listeners": [outbound("ALLOW_ANY")],
        "routeTables": [{ "name": "rt", "virtualHosts": [{
            "name": "ext", "domains": ["api.example.com"],
            "routes": [{ "route": { "clusters": [{ "cluster": "ext", "weight": 100 }] } }]
        }]}],
        "clusters": [{ "name": "ext", "discovery": "ORIGINAL_DST" }],
    }))
    .unwrap();
    let snap = Snapshot::compile(
        cfg,
        None,
        &Metrics::default(),
        &Arc::new(IdentitySlot::default()),
    )
    .unwrap();
    let req = get("api.example.com", "/x");
    let redirected = decide_on(&snap, Some("198.18.7.7:80"), &req, dice(MISS, 0));
    let f = forwarding(&redirected);
    assert_eq!(
        subset_of(f),
        ("original".to_string(), "198.18.7.7:80".to_string())
    );
    assert_eq!(
        f.target.cluster.name, "ext",
        "the cluster's own pool and limits"
    );
    // Not redirected (an explicit listener): no destination, so no endpoint (503 UH).
    let explicit = decide_on(&snap, None, &req, dice(MISS, 0));
    assert!(forwarding(&explicit).target.pick(None, &[]).is_none());
}
