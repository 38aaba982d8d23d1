//! `requestPrincipals` and `request.auth.*` conditions against a verified token's identity.

use std::net::IpAddr;

use http::HeaderMap;
use mesh_proto::config::v1 as pb;
use pb::authorization_policy::{Action, Condition, Rule, Source};
use serde_json::json;

use super::RequestAuth;
use super::{Attributes, Authorizer, Decision, HttpAttributes};
use crate::jwt::request_auth;

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn allow(rule: Rule) -> Authorizer {
    Authorizer::compile(&[pb::AuthorizationPolicy {
        name: "foo/require-jwt".into(),
        action: Action::Allow as i32,
        rules: vec![rule],
    }])
    .expect("compile")
}

fn when(key: &str, values: &[&str], not_values: &[&str]) -> Rule {
    Rule {
        when: vec![Condition {
            key: key.into(),
            values: strs(values),
            not_values: strs(not_values),
        }],
        ..Default::default()
    }
}

fn token(claims: serde_json::Value) -> RequestAuth {
    let serde_json::Value::Object(m) = claims else {
        panic!()
    };
    request_auth(&m, &[])
}

fn decide(authz: &Authorizer, auth: Option<&RequestAuth>, tcp: bool) -> Decision {
    let headers = HeaderMap::new();
    let ip: IpAddr = "127.0.0.1".parse().unwrap();
    authz.check(&Attributes {
        source_principal: None,
        source_namespace: None,
        source_ip: ip,
        remote_ip: ip,
        destination_ip: None,
        destination_port: 8000,
        sni: None,
        http: (!tcp).then_some(HttpAttributes {
            host: "httpbin.foo:8000",
            method: "GET",
            path: "/headers",
            headers: &headers,
            request_auth: auth,
        }),
    })
}

fn allowed(authz: &Authorizer, auth: Option<&RequestAuth>) -> bool {
    decide(authz, auth, false) == Decision::Allow
}

#[test]
fn request_principals_need_a_verified_token() {
    let any = allow(Rule {
        from: vec![pb::authorization_policy::Source {
            request_principals: strs(&["*"]),
            ..Default::default()
        }],
        ..Default::default()
    });
    let alice = token(json!({"iss": "testing@secure.istio.io", "sub": "alice"}));
    assert!(allowed(&any, Some(&alice)));
    assert!(!allowed(&any, None), "no token: denied");
    assert!(!allowed_tcp(&any), "TCP never carries a token");

    let exact = allow(Rule {
        from: vec![Source {
            request_principals: strs(&["testing@secure.istio.io/alice"]),
            ..Default::default()
        }],
        ..Default::default()
    });
    assert!(allowed(&exact, Some(&alice)));
    let bob = token(json!({"iss": "testing@secure.istio.io", "sub": "bob"}));
    assert!(!allowed(&exact, Some(&bob)));

    let not_bob = allow(Rule {
        from: vec![Source {
            not_request_principals: strs(&["*/bob"]),
            ..Default::default()
        }],
        ..Default::default()
    });
    assert!(allowed(&not_bob, Some(&alice)));
    assert!(!allowed(&not_bob, Some(&bob)));
}

fn allowed_tcp(authz: &Authorizer) -> bool {
    decide(authz, None, true) == Decision::Allow
}

#[test]
fn request_auth_conditions() {
    let t = token(json!({
        "iss": "issuer", "sub": "alice", "aud": "bookstore", "azp": "web-app",
        "groups": ["group1", "group2"], "scope": "read write",
        "nested": {"key1": ["valueA"]}
    }));
    let cases = [
        (when("request.auth.principal", &["issuer/alice"], &[]), true),
        (
            when("request.auth.principal", &["issuer/*"], &["*/bob"]),
            true,
        ),
        (when("request.auth.principal", &["other/alice"], &[]), false),
        (when("request.auth.audiences", &["bookstore"], &[]), true),
        (when("request.auth.audiences", &["shop"], &[]), false),
        (when("request.auth.presenter", &["web-*"], &[]), true),
        (when("request.auth.presenter", &[], &["web-app"]), false),
        (when("request.auth.claims[groups]", &["group1"], &[]), true),
        (when("request.auth.claims[groups]", &["group3"], &[]), false),
        (when("request.auth.claims[groups]", &[], &["group2"]), false),
        (when("request.auth.claims[scope]", &["write"], &[]), true),
        (
            when("request.auth.claims[nested][key1]", &["valueA"], &[]),
            true,
        ),
        (
            when("request.auth.claims[nested][key2]", &["*"], &[]),
            false,
        ),
        (when("request.auth.claims[sub]", &["alice"], &[]), true),
    ];
    for (rule, want) in cases {
        let c = &rule.when[0];
        let authz = allow(rule.clone());
        assert_eq!(
            allowed(&authz, Some(&t)),
            want,
            "{} {:?} {:?}",
            c.key,
            c.values,
            c.not_values
        );
        assert!(
            !allowed(&authz, None) || c.values.is_empty(),
            "{}: no token",
            c.key
        );
    }
}

#[test]
fn malformed_claim_keys_do_not_compile() {
    let compiles = |key: &str| {
        Authorizer::compile(&[pb::AuthorizationPolicy {
            name: "p".into(),
            action: Action::Allow as i32,
            rules: vec![when(key, &["x"], &[])],
        }])
        .is_ok()
    };
    assert!(compiles("request.auth.claims[a]"));
    assert!(compiles("request.auth.claims[a][b]"));
    // As Istio splits the key: one claim whose name is "[a]".
    assert!(compiles("request.auth.claims[[a]]"));
    for bad in [
        "request.auth.claims",
        "request.auth.claims[]",
        "request.auth.claims[a",
        "request.auth.claims[a]b",
        "request.auth.issuer",
    ] {
        assert!(!compiles(bad), "{bad}");
    }
}
