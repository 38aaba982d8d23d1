//! AuthorizationPolicy on the inbound side of a real proxy, with client identities from real
//! mTLS connections: the ALLOW/DENY matrix, TCP connections, and live policy changes.

mod common;

use std::sync::Arc;

use common::mesh::*;
use common::*;
use http::StatusCode;
use mesh_proxy::Server;
use serde_json::{Value, json};

fn principal(sa: &str) -> String {
    format!("{TD}/ns/default/sa/{sa}")
}

/// A client proxy of `sa` whose every request goes to the server proxy at `server`.
async fn client_of(citadel: &Citadel, sa: &str, server: &Server) -> Arc<Server> {
    sidecar(
        Some(citadel.identity(sa).await),
        outbound(
            vec![endpoint(in_addr(server), true, &[&spiffe("reviews")])],
            json!({}),
        ),
    )
    .await
}

/// In the proxy model's JSON: `from` holds sources and `to` operations directly.
fn matrix_policies() -> Value {
    json!([
        {
            "name": "default/allow-reads", "action": "ALLOW",
            "rules": [{
                "from": [{ "principals": [principal("productpage"), principal("ratings")] }],
                "to": [{ "methods": ["GET"] }]
            }]
        },
        {
            "name": "default/allow-writes", "action": "ALLOW",
            "rules": [{
                "from": [{ "principals": [principal("productpage")] }],
                "to": [{ "methods": ["POST"], "paths": ["/data"] }]
            }]
        },
        {
            "name": "default/deny-admin", "action": "DENY",
            "rules": [{
                "from": [{ "namespaces": ["default"], "notPrincipals": [principal("productpage")] }],
                "to": [{ "paths": ["/admin/*"] }]
            }]
        },
        // Matches everything and must change nothing.
        { "name": "default/audit-all", "action": "AUDIT", "rules": [{}] }
    ])
}

async fn call(client: &Server, method: &str, path: &str) -> Reply {
    send_h1(
        &h1_client(),
        out_addr(client),
        method,
        "reviews",
        path,
        &[],
        "",
    )
    .await
}

#[tokio::test]
async fn two_identities_three_operations_allow_and_deny() {
    let citadel = Citadel::start(None).await;
    let app = echo("reviews", "v1").await;
    let server = sidecar(
        Some(citadel.identity("reviews").await),
        inbound(
            app.addr(),
            json!({ "authorizationPolicies": matrix_policies() }),
        ),
    )
    .await;
    let productpage = client_of(&citadel, "productpage", &server).await;
    let ratings = client_of(&citadel, "ratings", &server).await;

    let ops = [
        ("GET", "/public"),
        ("GET", "/admin/users"),
        ("POST", "/data"),
    ];
    let expected = [
        ("productpage", &productpage, [200, 200, 200]),
        // GET allowed; /admin denied by DENY; POST matches no ALLOW policy.
        ("ratings", &ratings, [200, 403, 403]),
    ];
    for (who, client, statuses) in expected {
        for ((method, path), want) in ops.iter().zip(statuses) {
            let reply = call(client, method, path).await;
            assert_eq!(reply.status.as_u16(), want, "{who} {method} {path}");
            if want == 403 {
                assert_eq!(
                    &reply.body[..],
                    b"RBAC: access denied",
                    "{who} {method} {path}"
                );
            }
        }
    }
    assert_eq!(app.requests(), 4, "denied requests never reach the app");

    // A plaintext caller (PERMISSIVE port) has no principal: no ALLOW policy matches it.
    let plain = get(in_addr(&server), "reviews", "/public").await;
    assert_eq!(plain.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn policy_changes_apply_live_to_open_connections() {
    let citadel = Citadel::start(None).await;
    let app = echo("reviews", "v1").await;
    let port = free_port().await;
    let address = format!("127.0.0.1:{port}");
    let with = |policies: Value| {
        config(inbound_json(
            &address,
            app.addr(),
            json!({ "mtlsMode": "MTLS_MODE_STRICT", "authorizationPolicies": policies }),
        ))
    };
    let server = sidecar(Some(citadel.identity("reviews").await), with(json!([]))).await;
    let client = client_of(&citadel, "productpage", &server).await;
    let h1 = h1_client();
    let status = async |headers: &[(&str, &str)]| {
        send_h1(&h1, out_addr(&client), "GET", "reviews", "/", headers, "")
            .await
            .status
    };
    assert_eq!(status(&[]).await, StatusCode::OK);

    // DENY productpage on this workload port unless it names the blue tenant.
    server
        .apply(with(json!([{
            "name": "default/deny-untagged", "action": "DENY",
            "rules": [{
                "from": [{ "principals": [principal("productpage")] }],
                "to": [{ "ports": [port.to_string()] }],
                "when": [{ "key": "request.headers[x-tenant]", "notValues": ["blue"] }]
            }]
        }])))
        .await
        .unwrap();
    assert_eq!(status(&[]).await, StatusCode::FORBIDDEN);
    assert_eq!(status(&[("x-tenant", "blue")]).await, StatusCode::OK);

    // Back to no policy: allowed again; the pooled mTLS connection served all of it.
    server.apply(with(json!([]))).await.unwrap();
    assert_eq!(status(&[]).await, StatusCode::OK);
    let accepted = metric(
        &metrics_text(&server),
        "mesh_proxy_downstream_connections_total",
        "listener=\"in\"",
    );
    assert_eq!(
        accepted, 1.0,
        "policy changes neither rebind nor drop connections"
    );

    // A policy the proxy cannot enforce is rejected with its field, and the last one stays.
    let err = server
        .apply(with(json!([{
            "name": "default/bad", "action": "ALLOW",
            "rules": [{ "from": [{ "ipBlocks": ["198.18.0.0/40"] }] }]
        }])))
        .await
        .unwrap_err();
    assert_eq!(
        err.field(),
        "listeners[0].authorizationPolicies[0].rules[0].from[0].ipBlocks[0]"
    );
    assert_eq!(status(&[]).await, StatusCode::OK);
}

#[tokio::test]
async fn denied_tcp_connections_are_closed() {
    let citadel = Citadel::start(None).await;
    let backend = tcp_echo().await;
    let server = sidecar(
        Some(citadel.identity("reviews").await),
        inbound_tcp(
            backend,
            json!({
                "mtlsMode": "MTLS_MODE_STRICT",
                "authorizationPolicies": [{
                    "name": "default/only-productpage", "action": "ALLOW",
                    "rules": [{ "from": [{ "principals": [principal("productpage")] }] }]
                }]
            }),
        ),
    )
    .await;
    let tcp_client = async |sa: &str| {
        sidecar(
            Some(citadel.identity(sa).await),
            outbound_tcp(
                vec![endpoint(in_addr(&server), true, &[&spiffe("reviews")])],
                json!({}),
            ),
        )
        .await
    };
    let productpage = tcp_client("productpage").await;
    let ratings = tcp_client("ratings").await;
    assert!(tcp_round_trip(out_addr(&productpage), b"hello").await);
    assert!(!tcp_round_trip(out_addr(&ratings), b"hello").await);

    // DENY with an HTTP-only field denies every TCP connection of that source (Istio's rule).
    server
        .apply(inbound_tcp(
            backend,
            json!({
                "mtlsMode": "MTLS_MODE_STRICT",
                "authorizationPolicies": [{
                    "name": "default/deny-get", "action": "DENY",
                    "rules": [{
                        "from": [{ "principals": [principal("productpage")] }],
                        "to": [{ "methods": ["GET"] }]
                    }]
                }]
            }),
        ))
        .await
        .unwrap();
    assert!(!tcp_round_trip(out_addr(&productpage), b"hello").await);
    assert!(tcp_round_trip(out_addr(&ratings), b"hello").await);
}
