//! Who is on the other side, as the standard metrics report it, from real proxies: TCP
//! connections between two sidecars over mTLS exchange peer metadata (a frame after the
//! ALPN-agreed handshake) so both report each other's workload, while plaintext and
//! non-exchanging TLS clients still get through, labelled unknown; and the destination proxy
//! reports its own workload's service for a call whatever authority it carries (a gateway's
//! call to `127.0.0.1:PORT`).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::mesh::*;
use common::*;
use http::StatusCode;
use mesh_echo::EchoHandle;
use mesh_proxy::Server;
use mesh_proxy::identity::IdentityHandle;
use mesh_proxy::telemetry::WorkloadMetadata;
use mesh_proxy::tls::peer_exchange;
use rustls_pki_types::ServerName;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn workload(name: &str, app: &str) -> WorkloadMetadata {
    WorkloadMetadata::from_labels(name, "default", "Kubernetes", [("app", app)])
}

/// The sum of a metric's samples whose labels contain every one of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Reads `server`'s metrics until `name{labels}` reaches `at_least` (a connection is counted
/// closed a moment after the client sees its end); bounded.
async fn metrics_until(server: &Server, name: &str, labels: &[&str], at_least: f64) -> String {
    for _ in 0..100 {
        let text = metrics_text(server);
        if sample(&text, name, labels) >= at_least {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "{name} with {labels:?} never reached {at_least}:\n{}",
        metrics_text(server)
    );
}

const ECHO_SERVICE: &str = "tcp-echo.default.svc.cluster.local";

/// A TCP echo behind its sidecar (`mode`, its services named as pilot names them), called by
/// a client sidecar over mTLS.
struct TcpPair {
    client: Arc<Server>,
    server: Arc<Server>,
    citadel: Citadel,
}

async fn tcp_pair(mode: &str) -> TcpPair {
    let citadel = Citadel::start(None).await;
    let backend = tcp_echo().await;
    let server = sidecar(
        Some(citadel.identity("tcp-echo").await),
        inbound_tcp(
            backend,
            json!({ "mtlsMode": mode, "services": [ECHO_SERVICE] }),
        ),
    )
    .await;
    server.set_workload(workload("tcp-echo-v1", "tcp-echo"));
    let client = sidecar(
        Some(citadel.identity("sleep").await),
        outbound_tcp(
            vec![endpoint(in_addr(&server), true, &[&spiffe("tcp-echo")])],
            json!({}),
        ),
    )
    .await;
    client.set_workload(workload("sleep-v1", "sleep"));
    TcpPair {
        client,
        server,
        citadel,
    }
}

#[tokio::test]
async fn both_proxies_of_an_mtls_tcp_connection_report_each_others_workload() {
    let pair = tcp_pair("MTLS_MODE_STRICT").await;
    let msg = b"twenty bytes of data";
    assert!(tcp_round_trip(out_addr(&pair.client), msg).await);

    let both = [
        "request_protocol=\"tcp\"",
        "connection_security_policy=\"mutual_tls\"",
        "source_workload=\"sleep-v1\"",
        "source_app=\"sleep\"",
        "source_principal=\"spiffe://cluster.local/ns/default/sa/sleep\"",
        "destination_workload=\"tcp-echo-v1\"",
        "destination_app=\"tcp-echo\"",
        "destination_principal=\"spiffe://cluster.local/ns/default/sa/tcp-echo\"",
    ];
    let closed = "istio_tcp_connections_closed_total";
    // The destination proxy: its caller's workload, and its own service from the config.
    let mut dest = both.to_vec();
    dest.extend([
        "reporter=\"destination\"",
        "destination_service=\"tcp-echo.default.svc.cluster.local\"",
        "destination_service_name=\"tcp-echo\"",
        "destination_service_namespace=\"default\"",
    ]);
    let text = metrics_until(&pair.server, closed, &dest, 1.0).await;
    assert_eq!(
        sample(&text, "istio_tcp_connections_opened_total", &dest),
        1.0
    );
    // The frames are not payload: exactly the application's bytes are counted.
    assert_eq!(sample(&text, "istio_tcp_received_bytes_total", &dest), 20.0);
    assert_eq!(sample(&text, "istio_tcp_sent_bytes_total", &dest), 20.0);
    assert!(!text.contains("source_workload=\"unknown\""), "{text}");
    // The source proxy: the destination's workload, the service from its cluster.
    let mut source = both.to_vec();
    source.extend(["reporter=\"source\"", "destination_service_name=\"app\""]);
    let text = metrics_until(&pair.client, closed, &source, 1.0).await;
    assert_eq!(sample(&text, "istio_tcp_sent_bytes_total", &source), 20.0);
    assert_eq!(
        sample(&text, "istio_tcp_received_bytes_total", &source),
        20.0
    );
    assert!(!text.contains("destination_workload=\"unknown\""), "{text}");
}

/// A mesh peer that agrees to the exchange but sends its frame only once the caller's first
/// bytes came: a caller holding its client's bytes until the peer's frame would stall.
async fn frame_after_payload_peer(identity: IdentityHandle, payload_len: usize) -> SocketAddr {
    let acceptor =
        tokio_rustls::TlsAcceptor::from(mesh_proxy::tls::server_config(identity).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.unwrap();
        assert!(peer_exchange::negotiated(tls.get_ref().1));
        let caller = peer_exchange::read(&mut tls).await.unwrap();
        assert!(caller.is_some(), "the caller's proxy announced itself");
        let mut payload = vec![0u8; payload_len];
        tls.read_exact(&mut payload).await.unwrap();
        let ours = workload("late-v1", "late").encode();
        peer_exchange::write(&mut tls, Some(&ours)).await.unwrap();
        tls.write_all(&payload).await.unwrap();
        tls.flush().await.unwrap();
        // Until the caller closes.
        let _ = tls.read(&mut [0u8; 1]).await;
    });
    addr
}

#[tokio::test]
async fn the_callers_bytes_do_not_wait_for_the_peers_frame() {
    let citadel = Citadel::start(None).await;
    let peer = frame_after_payload_peer(citadel.identity("late").await, 5).await;
    let client = sidecar(
        Some(citadel.identity("sleep").await),
        outbound_tcp(vec![endpoint(peer, true, &[&spiffe("late")])], json!({})),
    )
    .await;
    client.set_workload(workload("sleep-v1", "sleep"));
    let started = std::time::Instant::now();
    assert!(tcp_round_trip(out_addr(&client), b"hello").await);
    assert!(
        started.elapsed() < peer_exchange::READ_TIMEOUT,
        "answered only after {:?}",
        started.elapsed()
    );
    // The frame that came after the payload still labels the connection, and the bytes sent
    // before it are counted.
    let source = [
        "reporter=\"source\"",
        "source_workload=\"sleep-v1\"",
        "destination_workload=\"late-v1\"",
    ];
    let text = metrics_until(&client, "istio_tcp_connections_closed_total", &source, 1.0).await;
    assert_eq!(
        sample(&text, "istio_tcp_received_bytes_total", &source),
        5.0
    );
    assert_eq!(sample(&text, "istio_tcp_sent_bytes_total", &source), 5.0);
    assert_eq!(
        sample(&text, "istio_tcp_connections_opened_total", &source),
        1.0
    );
    assert!(!text.contains("destination_workload=\"unknown\""), "{text}");
}

/// An mTLS client with a mesh certificate that does not offer the exchange (another mesh's
/// proxy version, a tool): no frame is expected from it or sent to it.
async fn tls_round_trip_without_exchange(
    identity: IdentityHandle,
    addr: SocketAddr,
    msg: &[u8],
) -> Vec<u8> {
    let config = mesh_proxy::tls::client_config(identity, vec![spiffe("tcp-echo")]).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("tcp-echo").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), None);
    tls.write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut back))
        .await
        .expect("echo within 5 s")
        .unwrap();
    back
}

#[tokio::test]
async fn plaintext_and_non_exchanging_clients_still_work_and_are_unknown() {
    let pair = tcp_pair("MTLS_MODE_PERMISSIVE").await;
    let inbound = in_addr(&pair.server);
    // Plaintext straight to the inbound port: served, its caller unknown.
    assert!(tcp_round_trip(inbound, b"plain").await);
    let plain = [
        "reporter=\"destination\"",
        "connection_security_policy=\"none\"",
        "source_workload=\"unknown\"",
        "destination_workload=\"tcp-echo-v1\"",
    ];
    let closed = "istio_tcp_connections_closed_total";
    metrics_until(&pair.server, closed, &plain, 1.0).await;
    // mTLS without the exchange: the bytes are the application's own, the caller is named by
    // its certificate only.
    let identity = pair.citadel.identity("legacy").await;
    let echoed =
        tls_round_trip_without_exchange(identity, inbound, b"MPX1 looks like a frame").await;
    assert_eq!(echoed, b"MPX1 looks like a frame");
    let legacy = [
        "reporter=\"destination\"",
        "connection_security_policy=\"mutual_tls\"",
        "source_workload=\"unknown\"",
        "source_principal=\"spiffe://cluster.local/ns/default/sa/legacy\"",
    ];
    let text = metrics_until(&pair.server, closed, &legacy, 1.0).await;
    assert_eq!(
        sample(&text, "istio_tcp_received_bytes_total", &legacy),
        23.0
    );
}

/// The app's sidecar (STRICT mTLS, serving `reviews` as pilot says) and an ingress gateway
/// routing every host to it.
async fn gateway_to_sidecar(services: Value) -> (Arc<Server>, Arc<Server>, EchoHandle, Citadel) {
    let citadel = Citadel::start(None).await;
    let app = echo("reviews", "v1").await;
    let sidecar_proxy = sidecar(
        Some(citadel.identity("reviews").await),
        inbound(
            app.addr(),
            json!({ "mtlsMode": "MTLS_MODE_STRICT", "services": services }),
        ),
    )
    .await;
    sidecar_proxy.set_workload(workload("reviews-v1", "reviews"));
    let gateway = sidecar(
        Some(citadel.identity("ingressgateway").await),
        config(json!({
            "version": "1",
            "listeners": [{
                "name": "gw", "address": "127.0.0.1:0", "direction": "GATEWAY",
                "protocol": "HTTP", "routeTable": "gw"
            }],
            "routeTables": [{ "name": "gw", "virtualHosts": [{
                "name": "all", "domains": ["*"],
                "routes": [{ "route": { "clusters": [{ "cluster": "outbound|9080||reviews.default.svc.cluster.local", "weight": 100 }] } }]
            }]}],
            "clusters": [{
                "name": "outbound|9080||reviews.default.svc.cluster.local",
                "endpoints": [endpoint(in_addr(&sidecar_proxy), true, &[&spiffe("reviews")])]
            }],
        })),
    )
    .await;
    gateway.set_workload(workload("istio-ingressgateway", "istio-ingressgateway"));
    (gateway, sidecar_proxy, app, citadel)
}

#[tokio::test]
async fn a_gateway_call_to_an_address_reports_the_destination_workloads_service() {
    let (gateway, sidecar_proxy, _app, _citadel) =
        gateway_to_sidecar(json!(["reviews.default.svc.cluster.local"])).await;
    let gw = gateway.listener_addr("gw").unwrap();
    // The client names the gateway by its address, as `curl http://127.0.0.1:PORT/` does.
    let reply = get(gw, &gw.to_string(), "/reviews/1").await;
    assert_eq!(reply.status, StatusCode::OK);
    let labels = [
        "reporter=\"destination\"",
        "source_workload=\"istio-ingressgateway\"",
        "destination_workload=\"reviews-v1\"",
        "destination_service=\"reviews.default.svc.cluster.local\"",
        "destination_service_name=\"reviews\"",
        "destination_service_namespace=\"default\"",
    ];
    let text = metrics_until(&sidecar_proxy, "istio_requests_total", &labels, 1.0).await;
    assert!(
        !text.contains("destination_service_name=\"127.0.0.1\""),
        "{text}"
    );
    // Both sides agree on the service.
    let source = [
        "reporter=\"source\"",
        "destination_service_name=\"reviews\"",
    ];
    metrics_until(&gateway, "istio_requests_total", &source, 1.0).await;
}

#[tokio::test]
async fn without_services_from_pilot_the_destination_reports_the_host() {
    let (gateway, sidecar_proxy, _app, _citadel) = gateway_to_sidecar(json!([])).await;
    let gw = gateway.listener_addr("gw").unwrap();
    let reply = get(gw, "reviews.default.svc.cluster.local", "/").await;
    assert_eq!(reply.status, StatusCode::OK);
    let labels = [
        "reporter=\"destination\"",
        "destination_service=\"reviews.default.svc.cluster.local\"",
    ];
    metrics_until(&sidecar_proxy, "istio_requests_total", &labels, 1.0).await;
}
