//! DNS clusters (ServiceEntry `resolution: DNS` / `DNS_ROUND_ROBIN`): names resolved by the
//! proxy against a real DNS server on loopback whose answers change under it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::dns::TestDns;
use common::*;
use mesh_echo::EchoHandle;
use mesh_proxy::Server;
use mesh_proxy::dns::{DnsSettings, Timing};
use mesh_proxy::server::Options;
use serde_json::json;

const NAME: &str = "backend.example.test";

/// Two apps on the same port at two loopback addresses: what one name can point to.
async fn two_backends() -> (EchoHandle, EchoHandle, u16) {
    for _ in 0..20 {
        let first = echo_at("127.0.0.2:0", "first").await;
        let port = first.addr().port();
        if let Some(second) = try_echo_at(&format!("127.0.0.3:{port}"), "second").await {
            return (first, second, port);
        }
    }
    panic!("no port free on both 127.0.0.2 and 127.0.0.3");
}

async fn echo_at(addr: &str, name: &str) -> EchoHandle {
    try_echo_at(addr, name).await.expect("echo starts")
}

async fn try_echo_at(addr: &str, name: &str) -> Option<EchoHandle> {
    let config = mesh_echo::EchoConfig {
        name: name.into(),
        version: "v1".into(),
        fail_status: None,
    };
    mesh_echo::spawn(addr, config).await.ok()
}

fn timing(first_answer_wait: Duration) -> Timing {
    Timing {
        first_answer_wait,
        query_timeout: Duration::from_secs(1),
        ..Timing::default()
    }
}

async fn proxy_with_dns(dns: &TestDns, discovery: &str, port: u16, timing: Timing) -> Arc<Server> {
    let server = Server::with_options(Options {
        dns: DnsSettings {
            server: Some(dns.addr),
            timing,
        },
        ..Options::default()
    });
    let clusters = json!([{
        "name": "ext", "discovery": discovery, "lbPolicy": "ROUND_ROBIN",
        "endpoints": [{ "address": format!("{NAME}:{port}") }],
    }]);
    let routes = table(json!([{ "name": "ext", "domains": ["*"], "routes": [to("ext")] }]));
    server
        .apply(outbound_config(routes, clusters))
        .await
        .expect("a DNS cluster is valid");
    server
}

/// Sends requests until one is served by `name` (bounded), returning how many it took.
async fn until_served_by(server: &Server, name: &str, limit: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + limit;
    let mut sent = 0;
    loop {
        sent += 1;
        let reply = get(out_addr(server), NAME, "/").await;
        if reply.status == 200 && reply.served_by() == format!("{name}/v1") {
            return sent;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never served by {name} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn strict_dns_follows_the_answer_and_keeps_the_last_one_when_the_server_fails() {
    let (_first, _second, port) = two_backends().await;
    let dns = TestDns::start(&["127.0.0.2"], 1).await;
    let server = proxy_with_dns(&dns, "STRICT_DNS", port, timing(Duration::from_secs(5))).await;

    // The very first request waits for the first answer instead of failing.
    let reply = get(out_addr(&server), NAME, "/").await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.served_by(), "first/v1");

    // The name now points elsewhere: once the 1 s TTL runs out, requests follow.
    dns.answer(&["127.0.0.3"]);
    until_served_by(&server, "second", Duration::from_secs(5)).await;

    // The server fails: the lookups are counted as failures and the last answer stays.
    dns.fail(true);
    let queries = dns.queries();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server
        .metrics()
        .dns_failures
        .get_or_create(&mesh_proxy::dns::NameLabels { name: NAME.into() })
        .get()
        == 0
    {
        assert!(tokio::time::Instant::now() < deadline, "no failure counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(dns.queries() > queries, "the name was asked again");
    for _ in 0..5 {
        let reply = get(out_addr(&server), NAME, "/").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.served_by(), "second/v1");
    }
    let text = admin_metrics(&server);
    assert!(
        text.contains(&format!(
            "mesh_proxy_dns_resolution_failures_total{{name=\"{NAME}\"}}"
        )),
        "{text}"
    );

    // Back to answering: both addresses are endpoints of a STRICT_DNS cluster.
    dns.answer(&["127.0.0.2", "127.0.0.3"]);
    until_served_by(&server, "first", Duration::from_secs(40)).await;
    until_served_by(&server, "second", Duration::from_secs(2)).await;
}

#[tokio::test]
async fn logical_dns_connects_to_the_first_address_of_the_answer() {
    let (_first, _second, port) = two_backends().await;
    let dns = TestDns::start(&["127.0.0.3", "127.0.0.2"], 1).await;
    let server = proxy_with_dns(&dns, "LOGICAL_DNS", port, timing(Duration::from_secs(5))).await;
    for _ in 0..6 {
        let reply = get(out_addr(&server), NAME, "/").await;
        assert_eq!(reply.served_by(), "second/v1");
    }
    dns.answer(&["127.0.0.2", "127.0.0.3"]);
    until_served_by(&server, "first", Duration::from_secs(5)).await;
    for _ in 0..6 {
        let reply = get(out_addr(&server), NAME, "/").await;
        assert_eq!(reply.served_by(), "first/v1");
    }
}

#[tokio::test]
async fn a_name_whose_lookups_fail_is_503_and_requests_stop_waiting_for_it() {
    let (_first, _second, port) = two_backends().await;
    let dns = TestDns::start(&["127.0.0.2"], 1).await;
    dns.fail(true);
    let wait = Duration::from_secs(3);
    let server = proxy_with_dns(&dns, "STRICT_DNS", port, timing(wait)).await;
    // The first request waits for the first lookup, which fails: 503 without the whole wait.
    let started = tokio::time::Instant::now();
    let reply = get(out_addr(&server), NAME, "/").await;
    assert_eq!(reply.status, 503);
    assert_eq!(&reply.body[..], b"no healthy upstream");
    assert!(started.elapsed() < wait, "{:?}", started.elapsed());
    // Later requests do not wait for DNS at all.
    let started = tokio::time::Instant::now();
    assert_eq!(get(out_addr(&server), NAME, "/").await.status, 503);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );

    // The server recovers: the name's retry (1 s backoff) brings the endpoint.
    dns.fail(false);
    until_served_by(&server, "first", Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_config_update_keeps_the_answers_of_its_names() {
    let (_first, _second, port) = two_backends().await;
    let dns = TestDns::start(&["127.0.0.2"], 300).await;
    let server = proxy_with_dns(&dns, "STRICT_DNS", port, timing(Duration::from_secs(5))).await;
    assert_eq!(
        get(out_addr(&server), NAME, "/").await.served_by(),
        "first/v1"
    );
    let queries = dns.queries();
    // The same cluster in a new config: the name is not asked again, no request waits.
    let clusters = json!([{
        "name": "ext", "discovery": "STRICT_DNS", "lbPolicy": "LEAST_REQUEST",
        "endpoints": [{ "address": format!("{NAME}:{port}") }],
    }]);
    let routes = table(json!([{ "name": "ext", "domains": ["*"], "routes": [to("ext")] }]));
    server
        .apply(outbound_config(routes, clusters))
        .await
        .unwrap();
    let snapshot = server.snapshot();
    let cluster = &snapshot.clusters["ext"];
    assert!(cluster.resolving().unwrap().is_ready());
    assert_eq!(cluster.members().addresses().len(), 1);
    assert_eq!(
        get(out_addr(&server), NAME, "/").await.served_by(),
        "first/v1"
    );
    assert_eq!(dns.queries(), queries);
}

fn admin_metrics(server: &Server) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, server.registry()).unwrap();
    text
}

#[tokio::test]
async fn the_first_request_waits_for_the_first_answer_at_most_the_bound() {
    let (_first, _second, port) = two_backends().await;
    // A server that never answers: every lookup times out (1 s), longer than the wait.
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server = Server::with_options(Options {
        dns: DnsSettings {
            server: Some(silent.local_addr().unwrap()),
            timing: Timing {
                first_answer_wait: Duration::from_millis(300),
                query_timeout: Duration::from_secs(2),
                ..Timing::default()
            },
        },
        ..Options::default()
    });
    let clusters = json!([{
        "name": "ext", "discovery": "STRICT_DNS",
        "endpoints": [{ "address": format!("{NAME}:{port}") }],
    }]);
    let routes = table(json!([{ "name": "ext", "domains": ["*"], "routes": [to("ext")] }]));
    server
        .apply(outbound_config(routes, clusters))
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let reply = get(out_addr(&server), NAME, "/").await;
    let took = started.elapsed();
    assert_eq!(reply.status, 503);
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(1500),
        "{took:?}"
    );
}
