use super::*;
use crate::route::matcher::RouteMatcher;
use crate::route::rewrite_path;
use http::{HeaderMap, Method};
use mesh_proto::config::v1::{route::Action as PbAction, string_match::Kind};
use std::collections::HashMap;

fn forward(cluster: &str) -> Option<PbAction> {
    Some(PbAction::Route(pb::RouteAction {
        clusters: vec![pb::WeightedCluster {
            cluster: cluster.into(),
            weight: 100,
            ..Default::default()
        }],
        ..Default::default()
    }))
}

fn vhost(name: &str, domains: &[&str], routes: Vec<pb::Route>) -> pb::VirtualHost {
    pb::VirtualHost {
        name: name.into(),
        domains: domains.iter().map(|d| d.to_string()).collect(),
        routes,
    }
}

fn catch_all(cluster: &str) -> pb::Route {
    pb::Route {
        name: cluster.into(),
        action: forward(cluster),
        ..Default::default()
    }
}

fn cluster_of(route: &Route) -> &str {
    match &route.action {
        Action::Forward(f) => &f.destinations[0].cluster,
        other => panic!("not a forward: {other:?}"),
    }
}

fn table() -> RouteTable {
    RouteTable::compile(&pb::RouteTable {
        name: "t".into(),
        virtual_hosts: vec![
            vhost(
                "reviews",
                &[
                    "reviews",
                    "reviews:9080",
                    "reviews.default.svc.cluster.local",
                ],
                vec![
                    pb::Route {
                        name: "jason".into(),
                        r#match: Some(pb::RouteMatch {
                            headers: vec![pb::HeaderMatch {
                                name: "end-user".into(),
                                value: Some(pb::StringMatch {
                                    kind: Some(Kind::Exact("jason".into())),
                                }),
                                invert: false,
                            }],
                            ..Default::default()
                        }),
                        action: forward("reviews-v2"),
                        ..Default::default()
                    },
                    catch_all("reviews-v1"),
                ],
            ),
            vhost("ports", &["ratings:8080"], vec![catch_all("ratings-8080")]),
            vhost("wild", &["*.example.com"], vec![catch_all("example")]),
            vhost(
                "deeper",
                &["*.api.example.com"],
                vec![catch_all("api-example")],
            ),
            vhost("default", &["*"], vec![catch_all("default")]),
        ],
    })
    .unwrap()
}

fn route_for<'t>(t: &'t RouteTable, authority: &str, headers: &HeaderMap) -> Option<&'t Route> {
    let view = RequestView {
        method: &Method::GET,
        authority,
        scheme: "http",
        path: "/",
        query: None,
        headers,
    };
    t.route(authority, &view)
}

#[test]
fn virtual_host_by_exact_suffix_and_catch_all() {
    let t = table();
    let h = HeaderMap::new();
    let name = |a: &str| t.virtual_host(a).map(|v| v.name.clone()).unwrap();
    assert_eq!(name("reviews"), "reviews");
    assert_eq!(name("REVIEWS:9080"), "reviews");
    assert_eq!(
        name("reviews:1234"),
        "reviews",
        "port stripped when no exact port entry"
    );
    assert_eq!(name("reviews.default.svc.cluster.local:9080"), "reviews");
    assert_eq!(name("ratings:8080"), "ports");
    assert_eq!(name("ratings:9090"), "default", "only the listed port");
    assert_eq!(name("www.example.com"), "wild");
    assert_eq!(name("v1.api.example.com"), "deeper", "longest suffix wins");
    assert_eq!(
        name("example.com"),
        "default",
        "*.x does not match x itself"
    );
    assert_eq!(name("[::1]:80"), "default");
    assert_eq!(
        cluster_of(route_for(&t, "reviews", &h).unwrap()),
        "reviews-v1"
    );
}

#[test]
fn first_matching_route_wins() {
    let t = table();
    let mut h = HeaderMap::new();
    h.insert("end-user", "jason".parse().unwrap());
    assert_eq!(
        cluster_of(route_for(&t, "reviews", &h).unwrap()),
        "reviews-v2"
    );
    h.insert("end-user", "bob".parse().unwrap());
    assert_eq!(
        cluster_of(route_for(&t, "reviews", &h).unwrap()),
        "reviews-v1"
    );
}

#[test]
fn no_virtual_host_means_no_route() {
    let t = RouteTable::compile(&pb::RouteTable {
        name: "t".into(),
        virtual_hosts: vec![vhost("a", &["a"], vec![catch_all("a")])],
    })
    .unwrap();
    assert!(route_for(&t, "b", &HeaderMap::new()).is_none());
}

#[test]
fn weighted_pick_follows_integer_weights() {
    let t = RouteTable::compile(&pb::RouteTable {
        name: "t".into(),
        virtual_hosts: vec![vhost(
            "r",
            &["r"],
            vec![pb::Route {
                action: Some(PbAction::Route(pb::RouteAction {
                    clusters: vec![
                        pb::WeightedCluster {
                            cluster: "v1".into(),
                            weight: 80,
                            ..Default::default()
                        },
                        pb::WeightedCluster {
                            cluster: "v2".into(),
                            weight: 20,
                            ..Default::default()
                        },
                        pb::WeightedCluster {
                            cluster: "never".into(),
                            weight: 0,
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                })),
                ..Default::default()
            }],
        )],
    })
    .unwrap();
    let Action::Forward(f) = &route_for(&t, "r", &HeaderMap::new()).unwrap().action else {
        panic!("forward expected")
    };
    let mut counts = HashMap::new();
    for roll in 0..1000u32 {
        *counts.entry(f.pick(roll).cluster.as_str()).or_insert(0) += 1;
    }
    assert_eq!(counts["v1"], 800);
    assert_eq!(counts["v2"], 200);
    assert!(!counts.contains_key("never"));
}

#[test]
fn a_binary_direct_response_body_is_served_byte_for_byte() {
    let body = vec![0xff, 0x00, 0xc3, 0x28];
    let table = RouteTable::compile(&pb::RouteTable {
        name: "t".into(),
        virtual_hosts: vec![vhost(
            "r",
            &["r"],
            vec![pb::Route {
                action: Some(PbAction::DirectResponse(pb::DirectResponse {
                    status: 200,
                    body: "ignored when bytes are set".into(),
                    body_bytes: body.clone(),
                })),
                ..Default::default()
            }],
        )],
    })
    .unwrap();
    let route = &table.virtual_host("r").expect("vhost r").routes[0];
    let Action::Direct { body: served, .. } = &route.action else {
        panic!("a direct response");
    };
    assert_eq!(&served[..], &body[..]);
}

#[test]
fn errors_name_the_field() {
    let err = RouteTable::compile(&pb::RouteTable {
        name: "t".into(),
        virtual_hosts: vec![vhost(
            "r",
            &["r"],
            vec![pb::Route {
                action: Some(PbAction::DirectResponse(pb::DirectResponse {
                    status: 42,
                    ..Default::default()
                })),
                ..Default::default()
            }],
        )],
    })
    .unwrap_err();
    assert_eq!(
        err.field(),
        "virtualHosts[0].routes[0].directResponse.status"
    );

    let err = RouteTable::compile(&pb::RouteTable {
        name: "t".into(),
        virtual_hosts: vec![vhost("a", &["a"], vec![]), vhost("b", &["A"], vec![])],
    })
    .unwrap_err();
    assert_eq!(err.field(), "virtualHosts[1].domains[0]");
}

#[test]
fn redirect_location_keeps_what_it_does_not_replace() {
    let r = Redirect::compile(&pb::Redirect {
        path: "/v2/login".into(),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        r.location("http", "shop:8080", "/login?x=1"),
        "http://shop:8080/v2/login"
    );
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
    let r = Redirect::compile(&pb::Redirect {
        scheme: "https".into(),
        host: "secure.shop".into(),
        response_code: 308,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        r.location("http", "shop:8080", "/a?b"),
        "https://secure.shop/a?b"
    );
    assert_eq!(r.status, StatusCode::PERMANENT_REDIRECT);
}

#[test]
fn https_redirect_drops_the_default_port_of_the_old_scheme_only() {
    let r = Redirect::compile(&pb::Redirect {
        scheme: "https".into(),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(r.location("http", "shop:80", "/a"), "https://shop/a");
    assert_eq!(r.location("http", "shop", "/a"), "https://shop/a");
    assert_eq!(r.location("http", "shop:8080", "/a"), "https://shop:8080/a");
}

#[test]
fn redirect_port_of_the_scheme() {
    let redirect = |r: pb::Redirect| Redirect::compile(&r).unwrap();
    // derivePort FROM_PROTOCOL_DEFAULT: the scheme's default port, so none in the Location.
    let r = redirect(pb::Redirect {
        scheme: "https".into(),
        scheme_default_port: true,
        ..Default::default()
    });
    assert_eq!(r.location("http", "shop:8080", "/a"), "https://shop/a");
    let r = redirect(pb::Redirect {
        path: "/b".into(),
        scheme_default_port: true,
        ..Default::default()
    });
    assert_eq!(r.location("http", "shop:8080", "/a"), "http://shop/b");
    // An explicit port that is the scheme's default is left out, as Istio does.
    let r = redirect(pb::Redirect {
        host: "other".into(),
        port: 443,
        scheme: "https".into(),
        ..Default::default()
    });
    assert_eq!(r.location("http", "shop:8080", "/a"), "https://other/a");
    let r = redirect(pb::Redirect {
        host: "other".into(),
        port: 9080,
        ..Default::default()
    });
    assert_eq!(r.location("http", "shop", "/a"), "http://other:9080/a");
}

#[test]
fn prefix_rewrite_replaces_the_matched_prefix() {
    let m = |kind: Kind| {
        RouteMatcher::compile(&pb::RouteMatch {
            path: Some(pb::StringMatch { kind: Some(kind) }),
            ..Default::default()
        })
        .unwrap()
    };
    assert_eq!(
        rewrite_path(&m(Kind::Prefix("/api".into())), "/v1", "/api/users"),
        "/v1/users"
    );
    assert_eq!(
        rewrite_path(&m(Kind::Prefix("/api/".into())), "/", "/api/users"),
        "/users"
    );
    assert_eq!(
        rewrite_path(&m(Kind::Exact("/old".into())), "/new", "/old"),
        "/new"
    );
    assert_eq!(
        rewrite_path(&RouteMatcher::default(), "/base", "/x"),
        "/base/x"
    );
    // As Envoy's prefix_rewrite on a regex route: the whole matched path is replaced.
    assert_eq!(
        rewrite_path(
            &m(Kind::Regex("/api/v[0-9]+/.*".into())),
            "/v1",
            "/api/v2/users"
        ),
        "/v1"
    );
}
