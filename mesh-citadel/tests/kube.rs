//! The CA against a local Kubernetes API server serving real JSON: callers authenticated by
//! TokenReview (authenticated, unauthenticated, wrong audience, malformed, refused), and the
//! root certificate published by server-side apply in every served namespace.

#[path = "../../mesh-pilot/tests/kube/api_server.rs"]
mod api_server;
mod common;

use std::sync::Arc;

use api_server::FakeApi;
use common::*;
use mesh_citadel::auth::{AnyOf, Authenticator, CertAuthenticator, TokenReviewAuthenticator};
use mesh_citadel::client::{CitadelClient, ClientConfig};
use mesh_citadel::kube::root_cert::{self, PublishOptions};
use mesh_citadel::{Ca, ServeOptions};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
const AUDIENCE: &str = "mesh-ca";
/// A projected service-account token as the kubelet writes it (header.claims.signature).
const TOKEN: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6Ik1fX2tleSJ9.eyJhdWQiOlsibWVzaC1jYSJdLCJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6Ym9va2luZm86Ym9va2luZm8tcmV2aWV3cyJ9.c2lnbmF0dXJl";

/// The API server's answer for a valid token of bookinfo/bookinfo-reviews bound to a pod.
fn authenticated(audiences: &[&str]) -> String {
    json!({
        "kind": "TokenReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "spec": {"token": TOKEN, "audiences": [AUDIENCE]},
        "status": {
            "authenticated": true,
            "user": {
                "username": "system:serviceaccount:bookinfo:bookinfo-reviews",
                "uid": "3f0b6a2e-8d4c-4c1e-9b7a-2e5f6d7c8b91",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:bookinfo", "system:authenticated"],
                "extra": {
                    "authentication.kubernetes.io/credential-id": ["JTI=6c1d9a52-3e0f-4b8a-9d27-4a5b6c7d8e9f"],
                    "authentication.kubernetes.io/node-name": ["worker-1"],
                    "authentication.kubernetes.io/node-uid": ["b5e4d3c2-a1f0-4e9d-8c7b-6a5f4e3d2c1b"],
                    "authentication.kubernetes.io/pod-name": ["reviews-v1-6f8f9c5d4-x7kq2"],
                    "authentication.kubernetes.io/pod-uid": ["a1b2c3d4-0000-4000-8000-000000000011"]
                }
            },
            "audiences": audiences
        }
    })
    .to_string()
}

async fn citadel(
    api: &FakeApi,
) -> (
    std::net::SocketAddr,
    Arc<Ca>,
    tokio::sync::oneshot::Sender<()>,
) {
    let ca = Arc::new(Ca::self_signed(TD).unwrap());
    let auths: Vec<Arc<dyn Authenticator>> = vec![
        Arc::new(CertAuthenticator::new(ca.clone())),
        Arc::new(TokenReviewAuthenticator::new(api.client(), AUDIENCE, TD)),
    ];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(mesh_citadel::serve_with_shutdown(
        listener,
        ca.clone(),
        Arc::new(AnyOf::new(auths)),
        ServeOptions::default(),
        async {
            let _ = rx.await;
        },
    ));
    (addr, ca, tx)
}

async fn connect(addr: std::net::SocketAddr, ca: &Ca, token: &str) -> CitadelClient {
    CitadelClient::connect(ClientConfig {
        addr: addr.to_string(),
        server_name: "mesh-citadel".into(),
        roots: ders(ca.trust_bundle_pem()),
        client_identity: None,
        token: Some(token.to_string()),
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn token_review_decides_who_the_caller_is() {
    let api = FakeApi::start().await;
    let (addr, ca, _stop) = citadel(&api).await;
    let mut client = connect(addr, &ca, TOKEN).await;

    // Authenticated for the CA's audience: the certificate carries the service account's ID.
    api.reply("POST", REVIEWS, 201, authenticated(&[AUDIENCE]));
    let (_key, csr_pem) = csr(&["spiffe://cluster.local/ns/kube-system/sa/admin"], &[]);
    let chain = client.create_certificate(&csr_pem, None).await.unwrap();
    assert_eq!(
        sans(&chain[0]),
        ["URI:spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews"],
        "the reviewed identity, not the CSR's"
    );
    let sent = api.requests_of(REVIEWS);
    assert_eq!(sent.len(), 1);
    let review: Value = serde_json::from_str(&sent[0].body).unwrap();
    assert_eq!(review["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(review["kind"], "TokenReview");
    assert_eq!(review["spec"]["token"], TOKEN);
    assert_eq!(review["spec"]["audiences"], json!([AUDIENCE]));

    let refused = |reply: (u16, String), expect: &'static str| {
        let api = api.clone();
        let mut client = client.clone();
        async move {
            api.reply("POST", REVIEWS, reply.0, reply.1);
            let (_key, csr_pem) = csr(&[], &[]);
            let status = client.create_certificate(&csr_pem, None).await.unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
            assert!(status.message().contains(expect), "{expect}: {status:?}");
            assert!(
                !status.message().contains(TOKEN),
                "the token is never echoed"
            );
        }
    };
    // The API server does not know the token.
    refused(
        (
            201,
            json!({"kind":"TokenReview","apiVersion":"authentication.k8s.io/v1","metadata":{"creationTimestamp":null},
                   "spec":{"token":TOKEN,"audiences":[AUDIENCE]},
                   "status":{"user":{},"error":"[invalid bearer token, service account token has been invalidated]"}})
            .to_string(),
        ),
        "invalidated",
    )
    .await;
    // Authenticated, but for the API server's own audience: a server that ignored
    // spec.audiences would answer this way.
    refused(
        (
            201,
            authenticated(&["https://kubernetes.default.svc.cluster.local"]),
        ),
        "not for audience mesh-ca",
    )
    .await;
    // Not JSON a TokenReview can be read from.
    refused(
        (201, r#"{"kind":"TokenReview","apiVersion":"authentication.k8s.io/v1","status":{"authenticated":"yes"#.to_string()),
        "TokenReview failed",
    )
    .await;
    // The CA's service account may not create TokenReviews.
    refused(
        (
            403,
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"tokenreviews.authentication.k8s.io is forbidden: User \"system:serviceaccount:mesh-system:mesh-citadel\" cannot create resource \"tokenreviews\" in API group \"authentication.k8s.io\" at the cluster scope","reason":"Forbidden","details":{"group":"authentication.k8s.io","kind":"tokenreviews"},"code":403}"#.to_string(),
        ),
        "forbidden",
    )
    .await;
    assert_eq!(api.requests_of(REVIEWS).len(), 5);
}

const NAMESPACES: &str = "/api/v1/namespaces";
const CONFIG_MAPS: &str = "/api/v1/configmaps";

fn namespace(name: &str, phase: &str, rv: u32) -> Value {
    json!({
        "metadata": {
            "name": name,
            "uid": format!("5b0c1d7e-4a0b-4a8e-9a55-{rv:012}"),
            "resourceVersion": rv.to_string(),
            "creationTimestamp": "2026-11-20T09:12:44Z",
            "labels": {"kubernetes.io/metadata.name": name, "istio-injection": "enabled"}
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": phase}
    })
}

fn applied_to(api: &FakeApi, namespace: &str, name: &str) -> Vec<api_server::Recorded> {
    api.requests_of(&format!("/api/v1/namespaces/{namespace}/configmaps/{name}"))
}

#[tokio::test]
async fn the_root_certificate_is_published_in_every_served_namespace() {
    let api = FakeApi::start().await;
    api.set_list(
        NAMESPACES,
        json!({"kind":"NamespaceList","apiVersion":"v1","metadata":{"resourceVersion":"500"},
               "items":[namespace("bookinfo", "Active", 100), namespace("old", "Terminating", 101)]})
        .to_string(),
    );
    api.set_list(
        CONFIG_MAPS,
        r#"{"kind":"ConfigMapList","apiVersion":"v1","metadata":{"resourceVersion":"500"},"items":[]}"#,
    );
    let ca = Ca::self_signed(TD).unwrap();
    let bundle = root_cert::bundle(ca.trust_bundle_pem());
    let stop = CancellationToken::new();
    let options = PublishOptions {
        namespace_selector: Some("istio-injection=enabled".into()),
        ..PublishOptions::default()
    };
    tokio::spawn(root_cert::publish(
        api.client(),
        bundle.clone().into(),
        options,
        stop.clone(),
    ));

    let path = "/api/v1/namespaces/bookinfo/configmaps/mesh-ca-root-cert";
    let applied = api.wait_requests(path, 1, |r| r.method == "PATCH").await;
    assert_eq!(applied[0].query["fieldManager"], "mesh-citadel");
    assert_eq!(applied[0].content_type, "application/apply-patch+yaml");
    let body: Value = serde_json::from_str(&applied[0].body).unwrap();
    assert_eq!(body["kind"], "ConfigMap");
    assert_eq!(body["metadata"]["namespace"], "bookinfo");
    assert_eq!(body["data"]["root-cert.pem"], bundle.as_str());
    assert!(bundle.starts_with("-----BEGIN CERTIFICATE-----"));
    api.wait_requests(
        "/api/v1/namespaces/bookinfo/configmaps/istio-ca-root-cert",
        1,
        |r| r.method == "PATCH",
    )
    .await;
    // Only namespaces the selector picks are listed and watched.
    let watches = api.wait_requests(NAMESPACES, 1, |r| r.is_watch()).await;
    assert_eq!(watches[0].query["labelSelector"], "istio-injection=enabled");

    // A new namespace where Istio's control plane owns istio-ca-root-cert: the conflict is
    // left alone, the mesh's own ConfigMap is published.
    api.reply(
        "PATCH",
        "/api/v1/namespaces/payments/configmaps/istio-ca-root-cert",
        409,
        r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Apply failed with 1 conflict: conflict with \"pilot-discovery\" using v1: .data.root-cert.pem","reason":"Conflict","details":{"causes":[{"reason":"FieldManagerConflict","message":"conflict with \"pilot-discovery\" using v1","field":".data.root-cert.pem"}]},"code":409}"#,
    );
    let mut payments = namespace("payments", "Active", 510);
    payments["kind"] = json!("Namespace");
    payments["apiVersion"] = json!("v1");
    api.send(
        NAMESPACES,
        &json!({"type": "ADDED", "object": payments}).to_string(),
    )
    .await;
    api.wait_requests(
        "/api/v1/namespaces/payments/configmaps/mesh-ca-root-cert",
        1,
        |r| r.method == "PATCH",
    )
    .await;
    assert_eq!(
        applied_to(&api, "payments", "istio-ca-root-cert").len(),
        1,
        "tried once, not forced"
    );

    // Someone deletes the published ConfigMap: it is put back.
    let before = applied_to(&api, "bookinfo", "mesh-ca-root-cert").len();
    let deleted = json!({"type": "DELETED", "object": {
        "kind": "ConfigMap", "apiVersion": "v1",
        "metadata": {"name": "mesh-ca-root-cert", "namespace": "bookinfo", "uid": "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b",
                     "resourceVersion": "530", "creationTimestamp": "2026-11-20T09:30:00Z",
                     "labels": {"mesh.dev/ca-root-cert": "true", "app.kubernetes.io/managed-by": "mesh-citadel"}},
        "data": {"root-cert.pem": bundle}
    }});
    api.send(CONFIG_MAPS, &deleted.to_string()).await;
    api.wait_requests(path, before + 1, |r| r.method == "PATCH")
        .await;

    // Nothing is published in a terminating namespace, listed so or changed again while
    // terminating. Namespace events are published one after the other in the order they come,
    // so once a namespace added later has its ConfigMap, the ones before it were handled.
    let mut old = namespace("old", "Terminating", 101);
    old["metadata"]["resourceVersion"] = json!("540");
    let later = namespace("later", "Active", 541);
    for (kind, mut ns) in [("MODIFIED", old), ("ADDED", later)] {
        ns["kind"] = json!("Namespace");
        ns["apiVersion"] = json!("v1");
        api.send(NAMESPACES, &json!({"type": kind, "object": ns}).to_string())
            .await;
    }
    api.wait_requests(
        "/api/v1/namespaces/later/configmaps/mesh-ca-root-cert",
        1,
        |r| r.method == "PATCH",
    )
    .await;
    assert!(applied_to(&api, "old", "mesh-ca-root-cert").is_empty());
    assert!(applied_to(&api, "old", "istio-ca-root-cert").is_empty());
    stop.cancel();
}
