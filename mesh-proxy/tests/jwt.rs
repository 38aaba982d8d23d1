//! Istio's "JWT authentication" task on real proxies: a client sidecar (mTLS from a real CA)
//! calls httpbin's sidecar, which checks tokens against a JWKS server on loopback that
//! rotates its keys; then AuthorizationPolicy `requestPrincipals` and `request.auth.claims`.

mod common;

#[path = "../src/jwt/test_keys.rs"]
mod test_keys;

use std::sync::Arc;
use std::time::Duration;

use common::mesh::*;
use common::*;
use mesh_proxy::Server;
use serde_json::{Value, json};
use test_keys::{JwksServer, Signer, jwks_of, now};

const ISSUER: &str = "testing@secure.istio.io";

/// The RequestAuthentication of Istio's task, fetched from `jwks_uri`, with a short refresh
/// so that removed keys are noticed within the test.
fn jwt_rules(jwks_uri: &str) -> Value {
    json!([{
        "name": "foo/jwt-example",
        "issuer": ISSUER,
        "audiences": ["httpbin"],
        "jwksUri": jwks_uri,
        "outputClaimToHeaders": [{ "header": "x-jwt-sub", "claim": "sub" }],
        "jwksRefreshMs": 1000,
        "jwksFetchTimeoutMs": 1000,
    }])
}

fn require_jwt() -> Value {
    json!([{
        "name": "foo/require-jwt", "action": "ALLOW",
        "rules": [{ "from": [{ "requestPrincipals": [format!("{ISSUER}/{ISSUER}")] }] }]
    }])
}

struct Mesh {
    _citadel: Citadel,
    app: mesh_echo::EchoHandle,
    /// httpbin's inbound address, fixed so that config updates keep the socket.
    address: String,
    httpbin: Arc<Server>,
    sleep: Arc<Server>,
}

impl Mesh {
    async fn start(security: Value) -> Mesh {
        let citadel = Citadel::start(None).await;
        let app = echo("httpbin", "v1").await;
        let address = format!("127.0.0.1:{}", free_port().await);
        let httpbin = sidecar(
            Some(citadel.identity("httpbin").await),
            config(inbound_json(&address, app.addr(), security)),
        )
        .await;
        let sleep = sidecar(
            Some(citadel.identity("sleep").await),
            outbound(
                vec![endpoint(in_addr(&httpbin), true, &[&spiffe("httpbin")])],
                json!({}),
            ),
        )
        .await;
        Mesh {
            _citadel: citadel,
            app,
            address,
            httpbin,
            sleep,
        }
    }

    async fn apply(&self, security: Value) {
        let mut cfg = inbound_json(&self.address, self.app.addr(), security);
        cfg["version"] = json!(now().to_string());
        self.httpbin
            .apply(config(cfg))
            .await
            .expect("config applies");
    }

    /// `curl httpbin.foo:8000/headers` from sleep, with a bearer token when given.
    async fn call(&self, token: Option<&str>) -> Reply {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        get_with(
            out_addr(&self.sleep),
            "httpbin.foo:8000",
            "/headers",
            &headers,
        )
        .await
    }
}

fn claims(sub: &str, extra: Value) -> Value {
    let mut c = json!({ "iss": ISSUER, "sub": sub, "aud": "httpbin", "exp": now() + 3600 });
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        c[k] = v;
    }
    c
}

fn assert_401(reply: &Reply, what: &str) {
    assert_eq!(reply.status.as_u16(), 401, "{what}: {:?}", reply.body);
    let challenge = reply.headers["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with("Bearer realm=") && challenge.ends_with("error=\"invalid_token\""),
        "{what}: {challenge}"
    );
}

#[tokio::test]
async fn istio_jwt_task_with_key_rotation() {
    let old_key = Signer::rs256("old");
    let new_key = Signer::es256("new");
    let jwks = JwksServer::start(Some(old_key.jwks())).await;
    let mesh = Mesh::start(json!({ "jwtRules": jwt_rules(&jwks.uri()) })).await;

    // A valid token: 200; the application sees the claim header, not the token.
    let valid = old_key.sign(&claims(ISSUER, json!({})));
    let reply = mesh.call(Some(&valid)).await;
    assert_eq!(reply.status.as_u16(), 200, "{:?}", reply.body);
    assert_eq!(reply.upstream_header("x-jwt-sub").as_deref(), Some(ISSUER));
    assert_eq!(reply.upstream_header("authorization"), None);

    // Expired, another issuer, another audience, not a JWT: 401, never reaching the app.
    let served = mesh.app.requests();
    let expired = old_key.sign(&claims(ISSUER, json!({ "exp": now() - 3600 })));
    assert_401(&mesh.call(Some(&expired)).await, "expired");
    let wrong_issuer =
        old_key.sign(&json!({ "iss": "other@example.com", "sub": "x", "aud": "httpbin" }));
    assert_401(&mesh.call(Some(&wrong_issuer)).await, "wrong issuer");
    let wrong_audience = old_key.sign(&claims(ISSUER, json!({ "aud": "other" })));
    assert_401(&mesh.call(Some(&wrong_audience)).await, "wrong audience");
    assert_401(&mesh.call(Some("deadbeef")).await, "invalid token");
    assert_eq!(mesh.app.requests(), served);

    // No token and no policy: allowed, unauthenticated.
    assert_eq!(mesh.call(None).await.status.as_u16(), 200);

    // The issuer rotates: the new key is published beside the old one, and a token signed
    // with it works at once (its unknown kid makes the proxy fetch the keys again).
    jwks.set(Some(jwks_of(&[&old_key, &new_key])));
    let rotated = new_key.sign(&claims(ISSUER, json!({})));
    assert_eq!(
        mesh.call(Some(&rotated)).await.status.as_u16(),
        200,
        "new key"
    );
    assert_eq!(
        mesh.call(Some(&valid)).await.status.as_u16(),
        200,
        "old key still published"
    );

    // The old key is withdrawn: its tokens fail once the periodic refresh sees it gone.
    jwks.set(Some(new_key.jwks()));
    let mut old_refused = false;
    for _ in 0..50 {
        if mesh.call(Some(&valid)).await.status.as_u16() == 401 {
            old_refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        old_refused,
        "the old key's token is refused after the refresh"
    );

    // The JWKS server goes away: the last good keys stay in use.
    jwks.set(None);
    let hits = jwks.hits();
    for _ in 0..50 {
        if jwks.hits() >= hits + 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(jwks.hits() >= hits + 2, "refreshes failed meanwhile");
    assert_eq!(
        mesh.call(Some(&rotated)).await.status.as_u16(),
        200,
        "last good keys"
    );
}

#[tokio::test]
async fn require_a_valid_token_with_request_principals() {
    let key = Signer::es256("k1");
    let jwks = JwksServer::start(Some(key.jwks())).await;
    let rules = jwt_rules(&jwks.uri());
    let mesh = Mesh::start(json!({ "jwtRules": rules })).await;
    let valid = key.sign(&claims(ISSUER, json!({ "groups": ["group1", "group2"] })));
    assert_eq!(mesh.call(None).await.status.as_u16(), 200, "no policy yet");

    // Istio's `requestPrincipals: ["testing@secure.istio.io/testing@secure.istio.io"]`.
    mesh.apply(json!({ "jwtRules": rules, "authorizationPolicies": require_jwt() }))
        .await;
    let denied = mesh.call(None).await;
    assert_eq!(
        denied.status.as_u16(),
        403,
        "no token: denied by the policy"
    );
    assert_eq!(&denied.body[..], b"RBAC: access denied");
    assert_eq!(mesh.call(Some(&valid)).await.status.as_u16(), 200);
    let someone_else = key.sign(&claims("mallory", json!({})));
    assert_eq!(mesh.call(Some(&someone_else)).await.status.as_u16(), 403);
    let expired = key.sign(&claims(ISSUER, json!({ "exp": now() - 3600 })));
    assert_401(&mesh.call(Some(&expired)).await, "expired under the policy");

    // `requestPrincipals: ["*"]`: any valid token.
    let any = json!([{ "name": "foo/any-jwt", "action": "ALLOW",
                       "rules": [{ "from": [{ "requestPrincipals": ["*"] }] }] }]);
    mesh.apply(json!({ "jwtRules": rules, "authorizationPolicies": any }))
        .await;
    assert_eq!(mesh.call(None).await.status.as_u16(), 403);
    assert_eq!(mesh.call(Some(&someone_else)).await.status.as_u16(), 200);

    // The task's second policy: the token must carry group1 in its `groups` claim.
    let groups = json!([{
        "name": "foo/require-group1", "action": "ALLOW",
        "rules": [{
            "from": [{ "requestPrincipals": [format!("{ISSUER}/{ISSUER}")] }],
            "when": [{ "key": "request.auth.claims[groups]", "values": ["group1"] }]
        }]
    }]);
    mesh.apply(json!({ "jwtRules": rules, "authorizationPolicies": groups }))
        .await;
    assert_eq!(mesh.call(Some(&valid)).await.status.as_u16(), 200);
    let no_group = key.sign(&claims(ISSUER, json!({ "groups": ["group3"] })));
    assert_eq!(mesh.call(Some(&no_group)).await.status.as_u16(), 403);
    // The config updates kept the running key set: one fetch in all.
    assert_eq!(jwks.hits(), 1);
}

#[tokio::test]
async fn tokens_fail_closed_when_the_keys_were_never_fetched() {
    let key = Signer::es256("k1");
    let jwks = JwksServer::start(None).await;
    let mesh = Mesh::start(json!({ "jwtRules": jwt_rules(&jwks.uri()) })).await;
    let token = key.sign(&claims(ISSUER, json!({})));
    let reply = mesh.call(Some(&token)).await;
    assert_401(&reply, "no keys");
    assert_eq!(&reply.body[..], b"Jwks remote fetch is failed");
    assert_eq!(
        mesh.call(None).await.status.as_u16(),
        200,
        "no token still passes"
    );
    // The server comes back: the worker's retries pick the keys up.
    jwks.set(Some(key.jwks()));
    let mut ok = false;
    for _ in 0..50 {
        if mesh.call(Some(&token)).await.status.as_u16() == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok);
}
