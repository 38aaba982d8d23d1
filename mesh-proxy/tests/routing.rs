//! Routing through a real proxy to real upstream apps: hosts, matches, splits, header
//! operations, redirects, rewrites and direct responses.

mod common;

use std::collections::HashMap;

use common::*;
use http::StatusCode;
use serde_json::json;

#[tokio::test]
async fn routes_by_host_with_and_without_port_suffix_and_catch_all() {
    let (reviews, ratings, wild, fallback) = (
        echo("reviews", "v1").await,
        echo("ratings", "v1").await,
        echo("wild", "v1").await,
        echo("fallback", "v1").await,
    );
    let server = proxy(
        table(json!([
            { "name": "reviews", "domains": ["reviews", "reviews:9080", "reviews.default.svc.cluster.local"],
              "routes": [to("reviews")] },
            { "name": "ratings", "domains": ["ratings:8080"], "routes": [to("ratings")] },
            { "name": "wild", "domains": ["*.example.com"], "routes": [to("wild")] },
            { "name": "fallback", "domains": ["*"], "routes": [to("fallback")] },
        ])),
        json!([cluster("reviews", &[&reviews]), cluster("ratings", &[&ratings]),
               cluster("wild", &[&wild]), cluster("fallback", &[&fallback])]),
    )
    .await;
    let out = out_addr(&server);
    for (authority, expected) in [
        ("reviews", "reviews/v1"),
        ("reviews:9080", "reviews/v1"),
        ("Reviews.Default.svc.cluster.local", "reviews/v1"),
        ("ratings:8080", "ratings/v1"),
        ("ratings", "fallback/v1"),
        ("shop.example.com", "wild/v1"),
        ("unknown", "fallback/v1"),
    ] {
        let r = get(out, authority, "/").await;
        assert_eq!(r.status, StatusCode::OK, "{authority}");
        assert_eq!(r.served_by(), expected, "{authority}");
        assert_eq!(
            r.upstream_header("host").as_deref(),
            Some(authority),
            "Host is kept"
        );
    }
}

#[tokio::test]
async fn absolute_form_requests_route_by_their_uri_like_http_proxy_clients() {
    let reviews = echo("reviews", "v1").await;
    let server = proxy(
        table(json!([{ "name": "r", "domains": ["reviews:9080"], "routes": [to("reviews")] }])),
        json!([cluster("reviews", &[&reviews])]),
    )
    .await;
    // What curl -x sends: the absolute URI on the request line.
    let mut stream = tokio::net::TcpStream::connect(out_addr(&server))
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET http://reviews:9080/products?id=1 HTTP/1.1\r\nHost: reviews:9080\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains(r#""path":"/products?id=1""#), "{text}");
}

#[tokio::test]
async fn first_match_on_path_headers_method_and_query() {
    let apps = [
        echo("exact", "v1").await,
        echo("prefix", "v1").await,
        echo("regex", "v1").await,
        echo("jason", "v1").await,
        echo("absent", "v1").await,
        echo("post", "v1").await,
        echo("query", "v1").await,
        echo("rest", "v1").await,
    ];
    let names = [
        "exact", "prefix", "regex", "jason", "absent", "post", "query", "rest",
    ];
    let route = |m: serde_json::Value, c: &str| {
        let mut r = to(c);
        r["match"] = m;
        r
    };
    let server = proxy(
        table(json!([{ "name": "svc", "domains": ["svc"], "routes": [
            route(json!({"path": {"exact": "/login"}}), "exact"),
            route(json!({"path": {"prefix": "/static/"}}), "prefix"),
            route(json!({"path": {"regex": "/api/v[0-9]+/.*"}}), "regex"),
            route(json!({"headers": [{"name": "end-user", "value": {"exact": "jason"}}]}), "jason"),
            route(json!({"path": {"prefix": "/needs-token"}, "headers": [{"name": "x-token", "invert": true}]}), "absent"),
            route(json!({"method": {"exact": "POST"}}), "post"),
            route(json!({"queryParameters": [{"name": "debug", "value": {"exact": "1"}}]}), "query"),
            to("rest"),
        ]}])),
        serde_json::Value::Array(
            names.iter().zip(apps.iter()).map(|(n, a)| cluster(n, &[a])).collect(),
        ),
    )
    .await;
    let out = out_addr(&server);
    let client = h1_client();
    let who = |r: Reply| r.json()["name"].as_str().unwrap().to_string();
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        ("GET", "/login", &[], "exact"),
        ("GET", "/login/x", &[], "rest"),
        ("GET", "/static/app.js", &[], "prefix"),
        ("GET", "/api/v2/users", &[], "regex"),
        ("GET", "/api/vx/users", &[], "rest"),
        ("GET", "/", &[("end-user", "jason")], "jason"),
        ("GET", "/login", &[("end-user", "jason")], "exact"),
        ("GET", "/needs-token", &[], "absent"),
        ("GET", "/needs-token", &[("x-token", "t")], "rest"),
        ("POST", "/", &[], "post"),
        ("GET", "/?debug=1", &[], "query"),
        ("GET", "/?debug=0", &[], "rest"),
    ];
    for (method, path, headers, expected) in cases {
        let r = send_h1(&client, out, method, "svc", path, headers, "").await;
        assert_eq!(who(r), *expected, "{method} {path} {headers:?}");
    }
}

#[tokio::test]
async fn weighted_split_follows_integer_weights_and_subsets() {
    let (v1, v2) = (echo("reviews", "v1").await, echo("reviews", "v2").await);
    let reviews = json!({
        "name": "reviews", "lbPolicy": "ROUND_ROBIN",
        "subsets": [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}],
        "endpoints": [
            {"address": v1.addr().to_string(), "labels": {"version": "v1"}},
            {"address": v2.addr().to_string(), "labels": {"version": "v2"}},
        ],
    });
    let server = proxy(
        table(
            json!([{ "name": "r", "domains": ["reviews"], "routes": [{ "route": { "clusters": [
                {"cluster": "reviews", "subset": "v1", "weight": 80},
                {"cluster": "reviews", "subset": "v2", "weight": 20},
            ]}}]}]),
        ),
        json!([reviews]),
    )
    .await;
    let out = out_addr(&server);
    let client = h1_client();
    let mut counts: HashMap<String, u32> = HashMap::new();
    let n = 1000;
    for _ in 0..n {
        let r = send_h1(&client, out, "GET", "reviews", "/", &[], "").await;
        *counts.entry(r.served_by()).or_default() += 1;
    }
    let v2_share = counts.get("reviews/v2").copied().unwrap_or(0) as f64 / n as f64;
    // Binomial(1000, 0.2): standard deviation 1.3 %; 5 sigma either way.
    assert!(
        (0.135..=0.265).contains(&v2_share),
        "v2 share {v2_share}: {counts:?}"
    );
    assert_eq!(counts.len(), 2, "{counts:?}");
}

#[tokio::test]
async fn request_and_response_headers_are_set_added_and_removed() {
    let app = echo("app", "v1").await;
    let server = proxy(
        table(json!([{ "name": "a", "domains": ["app"], "routes": [{
            "route": { "clusters": [{ "cluster": "app", "weight": 100,
                "requestHeaders": { "add": [{"name": "x-dest", "value": "app"}] },
                "responseHeaders": { "set": [{"name": "x-dest-resp", "value": "1"}] } }] },
            "requestHeaders": {
                "set": [{"name": "x-set", "value": "route"}],
                "add": [{"name": "x-add", "value": "second"}],
                "remove": ["x-secret"] },
            "responseHeaders": {
                "set": [{"name": "x-served-by", "value": "mesh"}],
                "remove": ["x-echo-version"] },
        }]}])),
        json!([cluster("app", &[&app])]),
    )
    .await;
    let r = get_with(
        out_addr(&server),
        "app",
        "/",
        &[
            ("x-set", "client"),
            ("x-add", "first"),
            ("x-secret", "hush"),
        ],
    )
    .await;
    assert_eq!(r.upstream_header("x-set").as_deref(), Some("route"));
    assert_eq!(r.upstream_header("x-add").as_deref(), Some("first, second"));
    assert_eq!(r.upstream_header("x-dest").as_deref(), Some("app"));
    assert_eq!(r.upstream_header("x-secret"), None);
    assert_eq!(r.headers["x-served-by"], "mesh");
    assert_eq!(r.headers["x-dest-resp"], "1");
    assert!(r.headers.get("x-echo-version").is_none());
    assert_eq!(
        r.headers["x-echo-name"], "app",
        "other response headers pass"
    );
}

#[tokio::test]
async fn redirect_rewrite_and_direct_response() {
    let app = echo("app", "v1").await;
    let server = proxy(
        table(json!([{ "name": "a", "domains": ["app"], "routes": [
            { "match": {"path": {"prefix": "/old"}}, "redirect": {"path": "/new", "responseCode": 302} },
            { "match": {"path": {"prefix": "/api/"}},
              "route": { "clusters": [{"cluster": "app", "weight": 100}],
                         "prefixRewrite": "/v2/", "authorityRewrite": "app.internal" } },
            { "match": {"path": {"exact": "/health"}}, "directResponse": {"status": 200, "body": "ok"} },
        ]}])),
        json!([cluster("app", &[&app])]),
    )
    .await;
    let out = out_addr(&server);
    let r = get(out, "app:8000", "/old/page").await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(r.headers["location"], "http://app:8000/new");

    let r = get(out, "app", "/api/users?limit=2").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["path"], "/v2/users?limit=2");
    assert_eq!(r.upstream_header("host").as_deref(), Some("app.internal"));

    let r = get(out, "app", "/health").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], b"ok");
    assert_eq!(
        app.requests(),
        1,
        "only the rewritten request reached the app"
    );

    let r = get(out, "app", "/nothing").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "no route");
}

#[tokio::test]
async fn consistent_hash_keeps_a_key_on_one_endpoint() {
    let apps = [
        echo("a", "1").await,
        echo("a", "2").await,
        echo("a", "3").await,
    ];
    let mut c = cluster("a", &[&apps[0], &apps[1], &apps[2]]);
    c["lbPolicy"] = json!("RING_HASH");
    c["hashPolicy"] = json!({"header": "x-user"});
    let server = proxy(
        table(json!([{ "name": "a", "domains": ["a"], "routes": [to("a")] }])),
        json!([c]),
    )
    .await;
    let out = out_addr(&server);
    let client = h1_client();
    let mut owners = HashMap::new();
    for user in 0..20 {
        let user = format!("user-{user}");
        for _ in 0..5 {
            let r = send_h1(&client, out, "GET", "a", "/", &[("x-user", &user)], "").await;
            let owner = r.served_by();
            assert_eq!(
                owners.entry(user.clone()).or_insert(owner.clone()),
                &owner,
                "{user} moved"
            );
        }
    }
    let distinct: std::collections::HashSet<_> = owners.values().collect();
    assert!(
        distinct.len() > 1,
        "20 keys all on one endpoint: {owners:?}"
    );
}

#[tokio::test]
async fn round_robin_spreads_over_endpoints() {
    let apps = [
        echo("a", "1").await,
        echo("a", "2").await,
        echo("a", "3").await,
    ];
    let server = proxy(
        table(json!([{ "name": "a", "domains": ["a"], "routes": [to("a")] }])),
        json!([cluster("a", &[&apps[0], &apps[1], &apps[2]])]),
    )
    .await;
    let out = out_addr(&server);
    let client = h1_client();
    for _ in 0..30 {
        send_h1(&client, out, "GET", "a", "/", &[], "").await;
    }
    for app in &apps {
        assert_eq!(app.requests(), 10);
    }
}
