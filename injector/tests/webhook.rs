//! AdmissionReview round trips through the real HTTPS server with a real TLS client: the
//! review JSON is what the API server sends (tests/reviews/), the returned JSONPatch is
//! applied to the original object and the result checked.

mod common;

use std::time::Duration;

use common::{Pair, request, start, write_pair};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Pod;
use mesh_injector::Values;
use serde_json::{Value, json};

fn review(name: &str) -> Value {
    let path = format!("{}/tests/reviews/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

async fn server(values: Values) -> (tempfile::TempDir, Pair, common::Running) {
    let dir = tempfile::tempdir().unwrap();
    let pair = write_pair(dir.path(), "tls");
    let running = start(&pair.cert, &pair.key, values, Duration::from_secs(60)).await;
    (dir, pair, running)
}

/// Posts `review` and returns the AdmissionReview's `response`.
async fn admit(s: &common::Running, pair: &Pair, h2: bool, path: &str, review: &Value) -> Value {
    let r = request(
        s.addr,
        std::slice::from_ref(&pair.der),
        h2,
        "POST",
        path,
        serde_json::to_vec(review).unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let out: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(out["kind"], "AdmissionReview");
    out["response"].clone()
}

fn apply_patch(object: &Value, response: &Value) -> Value {
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes: ByteString = serde_json::from_value(response["patch"].clone()).unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&bytes.0).unwrap();
    let mut out = object.clone();
    json_patch::patch(&mut out, &patch).unwrap();
    out
}

#[tokio::test]
async fn pod_create_round_trip_over_http1_and_h2() {
    let (_dir, pair, s) = server(Values::default()).await;
    let review = review("pod-create.json");
    let original = review["request"]["object"].clone();
    for h2 in [false, true] {
        let resp = admit(&s, &pair, h2, "/inject", &review).await;
        assert_eq!(resp["uid"], review["request"]["uid"]);
        assert_eq!(resp["allowed"], true);
        let patched = apply_patch(&original, &resp);

        // Everything the API server had is still there (managedFields, tolerations,
        // the service-account volume, ownerReferences...).
        for ptr in [
            "/metadata/managedFields",
            "/metadata/ownerReferences",
            "/metadata/labels/pod-template-hash",
            "/metadata/annotations/kubectl.kubernetes.io~1restartedAt",
            "/spec/tolerations",
            "/spec/preemptionPolicy",
            "/status",
        ] {
            assert_eq!(patched.pointer(ptr), original.pointer(ptr), "{ptr}");
        }
        let pod: Pod = serde_json::from_value(patched.clone()).unwrap();
        let spec = pod.spec.unwrap();
        let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["mesh-proxy", "reviews"]);
        let inits = spec.init_containers.unwrap();
        assert_eq!(inits[0].name, "mesh-init");
        let caps = inits[0]
            .security_context
            .as_ref()
            .unwrap()
            .capabilities
            .as_ref()
            .unwrap();
        assert_eq!(caps.add.as_deref().unwrap(), ["NET_ADMIN", "NET_RAW"]);
        let vols: Vec<&str> = spec
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(
            vols,
            [
                "wlp-output",
                "kube-api-access-x7k2p",
                "mesh-data",
                "mesh-token",
                "mesh-ca-root-cert"
            ]
        );
        // The app container is the original, except its HTTP probe now goes via the proxy.
        let app = &patched["spec"]["containers"][1];
        let mut expected_app = original["spec"]["containers"][0].clone();
        expected_app["readinessProbe"]["httpGet"] =
            json!({"path": "/app-health/reviews/readyz", "port": 15021});
        assert_eq!(app, &expected_app);
        let proxy = &spec.containers[0];
        let probers = proxy
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == "MESH_KUBE_APP_PROBERS")
            .unwrap();
        let probers: Value = serde_json::from_str(probers.value.as_deref().unwrap()).unwrap();
        assert_eq!(
            probers["/app-health/reviews/readyz"]["httpGet"]["port"],
            9080
        );
        let args = proxy.args.as_ref().unwrap();
        assert!(
            args.windows(2)
                .any(|w| w == ["--app-addr", "127.0.0.1:9080"]),
            "{args:?}"
        );
        let meta = pod.metadata;
        let labels = meta.labels.unwrap();
        assert_eq!(labels["service.istio.io/canonical-name"], "reviews");
        assert_eq!(labels["service.istio.io/canonical-revision"], "v1");
        assert_eq!(labels["security.istio.io/tlsMode"], "istio");
        let ann = meta.annotations.unwrap();
        assert_eq!(ann["kubectl.kubernetes.io/default-container"], "reviews");
        assert_eq!(ann["prometheus.io/port"], "15090");
        let status: Value = serde_json::from_str(&ann["sidecar.mesh.dev/status"]).unwrap();
        assert_eq!(status["containers"], json!(["mesh-proxy"]));

        // The injected pod, sent again (a re-admission), is left alone.
        let mut again = review.clone();
        again["request"]["object"] = patched;
        let resp = admit(&s, &pair, h2, "/inject", &again).await;
        assert_eq!(resp["allowed"], true);
        assert!(resp.get("patch").is_none());
    }
}

#[tokio::test]
async fn native_sidecar_opt_out_and_other_kinds() {
    let values = Values {
        cluster_version: Some("v1.31.1".into()),
        ..Values::default()
    };
    let (_dir, pair, s) = server(values).await;
    let review = review("pod-create.json");
    let resp = admit(&s, &pair, false, "/inject", &review).await;
    let patched = apply_patch(&review["request"]["object"], &resp);
    assert_eq!(patched["spec"]["initContainers"][1]["name"], "mesh-proxy");
    assert_eq!(
        patched["spec"]["initContainers"][1]["restartPolicy"],
        "Always"
    );
    assert_eq!(patched["spec"]["containers"].as_array().unwrap().len(), 1);

    let mut opted_out = review.clone();
    opted_out["request"]["object"]["metadata"]["labels"]["sidecar.istio.io/inject"] =
        json!("false");
    let resp = admit(&s, &pair, false, "/inject", &opted_out).await;
    assert_eq!(
        (resp["allowed"].clone(), resp.get("patch")),
        (json!(true), None)
    );

    let mut system = review.clone();
    system["request"]["namespace"] = json!("kube-system");
    system["request"]["object"]["metadata"]["namespace"] = json!("kube-system");
    assert!(
        admit(&s, &pair, false, "/inject", &system)
            .await
            .get("patch")
            .is_none()
    );

    let mut svc = review.clone();
    svc["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "Service"});
    svc["request"]["object"] =
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}});
    let resp = admit(&s, &pair, false, "/inject", &svc).await;
    assert_eq!(resp["allowed"], true);
    assert!(resp.get("patch").is_none());
}

#[tokio::test]
async fn validate_on_the_wire() {
    let (_dir, pair, s) = server(Values::default()).await;
    let mut review = review("virtualservice-update.json");
    let resp = admit(&s, &pair, true, "/validate", &review).await;
    assert_eq!(resp["uid"], review["request"]["uid"]);
    assert_eq!(resp["allowed"], false);
    assert_eq!(resp["status"]["code"], 400);
    let msg = resp["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("spec.http[0].route: total destination weight 110 != 100"),
        "{msg}"
    );

    review["request"]["object"]["spec"]["http"][0]["route"][1]["weight"] = json!(50);
    let resp = admit(&s, &pair, true, "/validate", &review).await;
    assert_eq!(resp["allowed"], true, "{resp}");
}

#[tokio::test]
async fn malformed_requests_health_and_routes() {
    let (_dir, pair, s) = server(Values::default()).await;
    let roots = [pair.der.clone()];
    let r = request(
        s.addr,
        &roots,
        false,
        "POST",
        "/inject",
        b"{\"apiVersion\":".to_vec(),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("not an AdmissionReview"));
    let mut no_request = review("pod-create.json");
    no_request.as_object_mut().unwrap().remove("request");
    let r = request(
        s.addr,
        &roots,
        true,
        "POST",
        "/validate",
        serde_json::to_vec(&no_request).unwrap(),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("without a request"));
    let r = request(s.addr, &roots, false, "GET", "/healthz", vec![]).await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ok\n"[..]));
    assert_eq!(
        request(s.addr, &roots, false, "GET", "/inject", vec![])
            .await
            .status,
        405
    );
    assert_eq!(
        request(s.addr, &roots, false, "POST", "/mutate", vec![])
            .await
            .status,
        404
    );
    let big = vec![b' '; mesh_injector::server::MAX_BODY + 1];
    assert_eq!(
        request(s.addr, &roots, false, "POST", "/inject", big)
            .await
            .status,
        413
    );
    // ALPN: the API server may speak either.
    assert_eq!(
        request(s.addr, &roots, true, "GET", "/healthz", vec![])
            .await
            .alpn
            .as_deref(),
        Some(&b"h2"[..])
    );
}

#[tokio::test]
async fn serving_certificate_is_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let first = write_pair(dir.path(), "tls");
    let s = start(
        &first.cert,
        &first.key,
        Values::default(),
        Duration::from_millis(50),
    )
    .await;
    let roots = [first.der.clone()];
    let r = request(s.addr, &roots, false, "GET", "/healthz", vec![]).await;
    assert_eq!(r.peer, first.der.to_vec());

    // The Secret is updated: a new pair replaces the files.
    let second = write_pair(dir.path(), "next");
    std::fs::write(&first.key, std::fs::read(&second.key).unwrap()).unwrap();
    std::fs::write(&first.cert, std::fs::read(&second.cert).unwrap()).unwrap();
    let both = [first.der.clone(), second.der.clone()];
    let mut served = Vec::new();
    for _ in 0..100 {
        served = request(s.addr, &both, false, "GET", "/healthz", vec![])
            .await
            .peer;
        if served == second.der.to_vec() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(served, second.der.to_vec(), "new certificate not served");
    // A client that trusts only the new certificate now connects.
    let r = request(
        s.addr,
        std::slice::from_ref(&second.der),
        true,
        "GET",
        "/healthz",
        vec![],
    )
    .await;
    assert_eq!(r.status, 200);

    // A broken update keeps the last good pair, once the reloader has read and rejected it.
    let failed_before = s.certs.failed_reloads();
    std::fs::write(&first.cert, "-----BEGIN CERTIFICATE-----\nnope\n").unwrap();
    let mut rejected = false;
    for _ in 0..500 {
        rejected = s.certs.failed_reloads() > failed_before;
        if rejected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(rejected, "the broken certificate was not read within 10 s");
    assert_eq!(s.certs.current_leaf(), second.der.to_vec());
    let r = request(
        s.addr,
        std::slice::from_ref(&second.der),
        false,
        "GET",
        "/healthz",
        vec![],
    )
    .await;
    assert_eq!(r.status, 200);
}
