//! The rule semantics with inline key sets: issuers, locations, audiences and header outputs.

use http::HeaderMap;
use mesh_proto::config::v1 as pb;
use serde_json::json;

use super::test_keys::{Signer, now};
use super::{Authenticator, JwtError};

const ISS: &str = "testing@secure.istio.io";

fn rule(issuer: &str, signer: &Signer) -> pb::JwtRule {
    pb::JwtRule {
        name: "foo/jwt".into(),
        issuer: issuer.into(),
        jwks: signer.jwks(),
        ..Default::default()
    }
}

fn compile(rules: &[pb::JwtRule]) -> Authenticator {
    Authenticator::compile(rules, &|_, _| None).unwrap()
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("authorization", format!("Bearer {token}").parse().unwrap());
    h
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn check(
    a: &Authenticator,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Option<String>, JwtError> {
    block_on(a.check(headers, query, now())).map(|v| v.request_auth().map(|r| r.principal.clone()))
}

#[test]
fn valid_missing_and_refused_tokens() {
    let key = Signer::es256("k1");
    let a = compile(&[rule(ISS, &key)]);
    let ok = key.sign(&json!({"iss": ISS, "sub": "alice", "exp": now() + 600}));
    assert_eq!(
        check(&a, &bearer(&ok), None),
        Ok(Some(format!("{ISS}/alice")))
    );
    assert_eq!(
        check(&a, &HeaderMap::new(), None),
        Ok(None),
        "no token: unauthenticated"
    );
    let expired = key.sign(&json!({"iss": ISS, "sub": "alice", "exp": now() - 3600}));
    assert_eq!(check(&a, &bearer(&expired), None), Err(JwtError::Expired));
    let other_iss = key.sign(&json!({"iss": "someone-else", "sub": "alice"}));
    assert_eq!(
        check(&a, &bearer(&other_iss), None),
        Err(JwtError::UnknownIssuer)
    );
    let forged = Signer::es256("k1").sign(&json!({"iss": ISS, "sub": "mallory"}));
    assert_eq!(
        check(&a, &bearer(&forged), None),
        Err(JwtError::BadSignature)
    );
    assert_eq!(
        check(&a, &bearer("garbage"), None),
        Err(JwtError::Malformed)
    );
    // The default locations include the access_token query parameter.
    assert_eq!(
        check(&a, &HeaderMap::new(), Some(&format!("access_token={ok}"))),
        Ok(Some(format!("{ISS}/alice")))
    );
}

#[test]
fn the_rule_of_the_tokens_issuer_checks_it() {
    let one = Signer::ed25519("one");
    let two = Signer::rs256("two");
    let a = compile(&[rule("issuer-1", &one), rule("issuer-2", &two)]);
    let t2 = two.sign(&json!({"iss": "issuer-2", "sub": "bob"}));
    assert_eq!(
        check(&a, &bearer(&t2), None),
        Ok(Some("issuer-2/bob".into()))
    );
    let crossed = one.sign(&json!({"iss": "issuer-2", "sub": "bob"}));
    assert_eq!(
        check(&a, &bearer(&crossed), None),
        Err(JwtError::NoMatchingKey),
        "issuer-2's keys do not include issuer-1's"
    );
}

#[test]
fn audiences() {
    let key = Signer::es256("k");
    let mut r = rule(ISS, &key);
    r.audiences = vec!["bookstore".into(), "shop".into()];
    let a = compile(&[r]);
    let ok = key.sign(&json!({"iss": ISS, "sub": "s", "aud": ["x", "shop"]}));
    assert!(check(&a, &bearer(&ok), None).is_ok());
    let wrong = key.sign(&json!({"iss": ISS, "sub": "s", "aud": "other"}));
    assert_eq!(
        check(&a, &bearer(&wrong), None),
        Err(JwtError::AudienceNotAllowed)
    );
}

#[test]
fn custom_locations_replace_the_defaults() {
    let key = Signer::es256("k");
    let mut r = rule(ISS, &key);
    r.from_headers = vec![pb::jwt_rule::JwtHeader {
        name: "x-jwt-assertion".into(),
        prefix: String::new(),
    }];
    r.from_cookies = vec!["session".into()];
    let a = compile(&[r]);
    let t = key.sign(&json!({"iss": ISS, "sub": "c"}));
    let mut h = HeaderMap::new();
    h.insert("x-jwt-assertion", t.parse().unwrap());
    assert_eq!(check(&a, &h, None), Ok(Some(format!("{ISS}/c"))));
    let mut h = HeaderMap::new();
    h.insert("cookie", format!("a=b; session={t}").parse().unwrap());
    assert_eq!(check(&a, &h, None), Ok(Some(format!("{ISS}/c"))));
    assert_eq!(
        check(&a, &bearer(&t), None),
        Ok(None),
        "Authorization is not read"
    );
}

#[test]
fn a_token_at_a_location_only_another_issuer_reads_is_refused() {
    let k1 = Signer::es256("k1");
    let k2 = Signer::es256("k2");
    let mut r2 = rule("issuer-2", &k2);
    r2.from_headers = vec![pb::jwt_rule::JwtHeader {
        name: "x-token".into(),
        prefix: String::new(),
    }];
    let a = compile(&[rule("issuer-1", &k1), r2]);
    let mut h = HeaderMap::new();
    h.insert(
        "x-token",
        k1.sign(&json!({"iss": "issuer-1"})).parse().unwrap(),
    );
    assert_eq!(check(&a, &h, None), Err(JwtError::UnknownIssuer));
}

#[test]
fn every_token_present_must_be_valid() {
    let key = Signer::es256("k");
    let mut r = rule(ISS, &key);
    r.from_headers = vec![
        pb::jwt_rule::JwtHeader {
            name: "authorization".into(),
            prefix: "Bearer ".into(),
        },
        pb::jwt_rule::JwtHeader {
            name: "x-second".into(),
            prefix: String::new(),
        },
    ];
    let a = compile(&[r]);
    let mut h = bearer(&key.sign(&json!({"iss": ISS, "sub": "a"})));
    h.insert(
        "x-second",
        key.sign(&json!({"iss": ISS, "exp": 1})).parse().unwrap(),
    );
    assert_eq!(check(&a, &h, None), Err(JwtError::Expired));
}

#[test]
fn header_outputs() {
    let key = Signer::es256("k");
    let mut r = rule(ISS, &key);
    r.output_payload_to_header = "x-jwt-payload".into();
    r.output_claim_to_headers = vec![
        pb::jwt_rule::ClaimToHeader {
            header: "x-sub".into(),
            claim: "sub".into(),
        },
        pb::jwt_rule::ClaimToHeader {
            header: "x-level".into(),
            claim: "org.level".into(),
        },
        pb::jwt_rule::ClaimToHeader {
            header: "x-missing".into(),
            claim: "nope".into(),
        },
    ];
    let a = compile(&[r.clone()]);
    let t = key.sign(&json!({"iss": ISS, "sub": "alice", "org": {"level": 3}}));
    let mut h = bearer(&t);
    h.insert("x-missing", "spoofed".parse().unwrap());
    let v = block_on(a.check(&h, None, now())).unwrap();
    a.rewrite_headers(&v, &mut h);
    assert!(!h.contains_key("authorization"), "token removed by default");
    assert_eq!(h["x-sub"], "alice");
    assert_eq!(h["x-level"], "3");
    assert!(
        !h.contains_key("x-missing"),
        "a client's output header never passes"
    );
    let payload = t.split('.').nth(1).unwrap();
    assert_eq!(h["x-jwt-payload"], payload);

    r.forward_original_token = true;
    let a = compile(&[r]);
    let mut h = bearer(&t);
    let v = block_on(a.check(&h, None, now())).unwrap();
    a.rewrite_headers(&v, &mut h);
    assert!(h.contains_key("authorization"));

    // Unauthenticated requests lose spoofed output headers too.
    let mut h = HeaderMap::new();
    h.insert("x-sub", "admin".parse().unwrap());
    let v = block_on(a.check(&h, None, now())).unwrap();
    a.rewrite_headers(&v, &mut h);
    assert!(!h.contains_key("x-sub"));
}

#[test]
fn compile_errors_name_the_field() {
    let key = Signer::es256("k");
    let err = |r: pb::JwtRule| Authenticator::compile(&[r], &|_, _| None).unwrap_err();
    let mut r = rule(ISS, &key);
    r.jwks = "{}".into();
    assert_eq!(err(r).field(), (0, "jwks"));
    let mut r = rule(ISS, &key);
    r.jwks = String::new();
    assert_eq!(err(r).field(), (0, "jwks"));
    let mut r = rule(ISS, &key);
    r.issuer = String::new();
    assert_eq!(err(r).field(), (0, "issuer"));
    let mut r = rule(ISS, &key);
    r.output_payload_to_header = "bad header".into();
    assert_eq!(err(r).field(), (0, "outputPayloadToHeader"));
    let mut r = rule(ISS, &key);
    r.jwks = String::new();
    r.jwks_uri = "ftp://keys".into();
    assert_eq!(err(r).field(), (0, "jwksUri"));
    let mut r = rule(ISS, &key);
    r.jwks = String::new();
    r.jwks_uri = "http://127.0.0.1:1/keys".into();
    assert!(
        Authenticator::compile(&[r], &|_, _| None).is_ok(),
        "compiling needs no runtime: nothing is fetched yet"
    );
}

#[tokio::test]
async fn a_jwks_uri_that_cannot_be_fetched_fails_tokens_closed() {
    let key = Signer::es256("k");
    let mut r = rule(ISS, &key);
    r.jwks = String::new();
    // Accepted by validation (scheme and host), refused by the URL parser of the fetch.
    r.jwks_uri = "http://exa mple.com/keys".into();
    r.jwks_fetch_timeout_ms = 200;
    let a = Authenticator::compile(&[r], &|_, _| None).unwrap();
    a.start_fetching();
    let t = key.sign(&json!({"iss": ISS, "sub": "alice"}));
    assert_eq!(
        a.check(&bearer(&t), None, now()).await.map(|_| ()),
        Err(JwtError::KeysUnavailable)
    );
    let anonymous = a.check(&HeaderMap::new(), None, now()).await.unwrap();
    assert!(anonymous.request_auth().is_none());
}
