use super::*;

fn wc(cluster: &str, weight: u32) -> pb::WeightedCluster {
    pb::WeightedCluster {
        cluster: cluster.into(),
        weight,
        ..Default::default()
    }
}

fn m(port: u32, subnets: &[&str], sni: &[&str]) -> pb::TcpMatch {
    pb::TcpMatch {
        destination_port: port,
        destination_subnets: subnets.iter().map(|s| s.to_string()).collect(),
        sni_hosts: sni.iter().map(|s| s.to_string()).collect(),
    }
}

fn route(
    name: &str,
    matches: Vec<pb::TcpMatch>,
    clusters: Vec<pb::WeightedCluster>,
) -> pb::TcpRoute {
    pb::TcpRoute {
        name: name.into(),
        matches,
        clusters,
    }
}

fn any_cluster(_: &str, _: &str) -> Result<(), String> {
    Ok(())
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn selected<'a>(routes: &'a TcpRoutes, dst: &str, sni: Option<&str>) -> Option<&'a str> {
    routes.select(addr(dst), sni).map(|r| r.name.as_str())
}

#[test]
fn first_match_wins_by_port_subnet_and_sni() {
    let routes = TcpRoutes::compile(
        &[
            route(
                "tls",
                vec![m(443, &[], &["*.example.com"])],
                vec![wc("a", 1)],
            ),
            route(
                "subnet",
                vec![m(0, &["198.18.0.0/16"], &[])],
                vec![wc("b", 1)],
            ),
            route(
                "port",
                vec![m(5432, &[], &[]), m(5433, &[], &[])],
                vec![wc("c", 1)],
            ),
            route("all", vec![], vec![wc("d", 1)]),
        ],
        any_cluster,
    )
    .unwrap();
    assert_eq!(
        selected(&routes, "10.0.0.1:443", Some("db.example.com")),
        Some("tls")
    );
    // No server name: the SNI route is passed over.
    assert_eq!(selected(&routes, "198.18.0.1:443", None), Some("subnet"));
    assert_eq!(selected(&routes, "198.18.0.1:5432", None), Some("subnet"));
    assert_eq!(selected(&routes, "10.0.0.1:5433", None), Some("port"));
    assert_eq!(selected(&routes, "10.0.0.1:9", None), Some("all"));
    assert!(routes.needs_sni(addr("10.0.0.1:443")));
    assert!(!routes.needs_sni(addr("10.0.0.1:444")));
}

#[test]
fn without_a_catch_all_nothing_may_match() {
    let routes = TcpRoutes::compile(
        &[route(
            "db",
            vec![m(5432, &["127.0.0.2"], &[])],
            vec![wc("a", 1)],
        )],
        any_cluster,
    )
    .unwrap();
    assert_eq!(selected(&routes, "127.0.0.2:5432", None), Some("db"));
    assert_eq!(selected(&routes, "127.0.0.3:5432", None), None);
    assert_eq!(selected(&routes, "127.0.0.2:5433", None), None);
    assert!(!routes.needs_sni(addr("127.0.0.2:5432")));
}

#[test]
fn weights_pick_in_proportion() {
    let routes = TcpRoutes::compile(
        &[route(
            "split",
            vec![],
            vec![wc("a", 25), wc("b", 75), wc("zero", 0)],
        )],
        any_cluster,
    )
    .unwrap();
    let r = routes.select(addr("127.0.0.1:1"), None).unwrap();
    let mut a = 0;
    for roll in 0..100 {
        match r.pick(roll).cluster.as_str() {
            "a" => a += 1,
            "b" => {}
            other => panic!("picked {other}"),
        }
    }
    assert_eq!(a, 25);
}

#[test]
fn invalid_routes_are_rejected_with_the_field() {
    let known = |c: &str, s: &str| {
        if c == "db" && s.is_empty() {
            Ok(())
        } else {
            Err(format!("unknown cluster {c:?} subset {s:?}"))
        }
    };
    let cases = [
        (
            route("r", vec![m(0, &["10.0.0.0/40"], &[])], vec![wc("db", 1)]),
            "tcpRoutes[0].matches[0].destinationSubnets[0]",
        ),
        (
            route("r", vec![m(70000, &[], &[])], vec![wc("db", 1)]),
            "tcpRoutes[0].matches[0].destinationPort",
        ),
        (
            route("r", vec![m(0, &[], &["db.*.com"])], vec![wc("db", 1)]),
            "tcpRoutes[0].matches[0].sniHosts[0]",
        ),
        (
            route("r", vec![], vec![wc("db", 0)]),
            "tcpRoutes[0].clusters",
        ),
        (route("r", vec![], vec![]), "tcpRoutes[0].clusters"),
        (
            route("r", vec![], vec![wc("nope", 1)]),
            "tcpRoutes[0].clusters[0].cluster",
        ),
    ];
    for (r, field) in cases {
        let err = TcpRoutes::compile(&[r], known).unwrap_err();
        assert_eq!(err.route, 0);
        assert_eq!(
            format!("tcpRoutes[{}].{}", err.route, err.error.field),
            field,
            "{err:?}"
        );
    }
}
