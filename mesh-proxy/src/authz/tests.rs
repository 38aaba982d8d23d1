//! Engine behaviour, policy by policy, as Istio documents it.

use std::net::IpAddr;

use http::{HeaderMap, HeaderValue};
use mesh_proto::config::v1 as pb;
use pb::authorization_policy::{Action, Condition, Operation, Rule, Source};

use super::*;

const SLEEP: &str = "cluster.local/ns/default/sa/sleep";
const ADMIN: &str = "cluster.local/ns/ops/sa/admin";

fn policy(name: &str, action: Action, rules: Vec<Rule>) -> pb::AuthorizationPolicy {
    pb::AuthorizationPolicy {
        name: name.into(),
        action: action as i32,
        rules,
    }
}

fn from(s: Source) -> Rule {
    Rule {
        from: vec![s],
        ..Default::default()
    }
}

fn to(o: Operation) -> Rule {
    Rule {
        to: vec![o],
        ..Default::default()
    }
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

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A request, tweaked per test with struct update syntax.
struct Req {
    principal: Option<&'static str>,
    ip: &'static str,
    remote: &'static str,
    port: u16,
    destination: Option<&'static str>,
    sni: Option<&'static str>,
    http: Option<(&'static str, &'static str, &'static str)>,
    headers: HeaderMap,
    auth: Option<RequestAuth>,
}

impl Default for Req {
    fn default() -> Self {
        Req {
            principal: Some(SLEEP),
            ip: "198.18.0.10",
            remote: "198.18.0.10",
            port: 8080,
            destination: Some("198.18.0.20"),
            sni: None,
            http: Some(("httpbin.default", "GET", "/ip")),
            headers: HeaderMap::new(),
            auth: None,
        }
    }
}

impl Req {
    fn tcp() -> Req {
        Req {
            http: None,
            ..Req::default()
        }
    }

    fn run<T>(&self, f: impl FnOnce(&Attributes<'_>) -> T) -> T {
        let attrs = Attributes {
            source_principal: self.principal,
            source_namespace: None,
            source_ip: self.ip.parse::<IpAddr>().unwrap(),
            remote_ip: self.remote.parse::<IpAddr>().unwrap(),
            destination_ip: self.destination.map(|d| d.parse::<IpAddr>().unwrap()),
            destination_port: self.port,
            sni: self.sni,
            http: self.http.map(|(host, method, path)| HttpAttributes {
                host,
                method,
                path,
                headers: &self.headers,
                request_auth: self.auth.as_ref(),
            }),
        };
        f(&attrs)
    }

    fn check(&self, policies: &[pb::AuthorizationPolicy]) -> Decision {
        let authz = Authorizer::compile(policies).expect("compile");
        self.run(|a| authz.check(a))
    }

    fn allowed(&self, policies: &[pb::AuthorizationPolicy]) -> bool {
        self.check(policies) == Decision::Allow
    }
}

fn allow(rules: Vec<Rule>) -> Vec<pb::AuthorizationPolicy> {
    vec![policy("default/allow", Action::Allow, rules)]
}

fn deny(rules: Vec<Rule>) -> Vec<pb::AuthorizationPolicy> {
    vec![policy("default/deny", Action::Deny, rules)]
}

fn compile_err(policies: &[pb::AuthorizationPolicy]) -> (String, String) {
    let e = Authorizer::compile(policies).expect_err("must not compile");
    (
        format!("authorizationPolicies[{}].{}", e.policy, e.error.field),
        e.error.reason,
    )
}

// --- Evaluation order -----------------------------------------------------------------------

#[test]
fn no_policy_allows() {
    assert!(Req::default().allowed(&[]));
    assert!(Req::tcp().allowed(&[]));
    assert!(Authorizer::compile(&[]).unwrap().is_empty());
}

#[test]
fn allow_without_rules_denies_all() {
    let p = allow(vec![]);
    assert_eq!(
        Req::default().check(&p),
        Decision::Deny {
            policy: String::new()
        }
    );
    assert!(!Req::tcp().allowed(&p));
}

#[test]
fn deny_without_rules_matches_nothing() {
    assert!(Req::default().allowed(&deny(vec![])));
}

#[test]
fn allow_with_empty_rule_allows_all() {
    let p = vec![
        policy("a", Action::Allow, vec![Rule::default()]),
        policy("b", Action::Allow, vec![]),
    ];
    assert!(Req::default().allowed(&p));
    assert!(Req::tcp().allowed(&p));
}

#[test]
fn deny_wins_over_allow() {
    let p = vec![
        policy("default/allow-all", Action::Allow, vec![Rule::default()]),
        policy(
            "default/deny-get",
            Action::Deny,
            vec![to(Operation {
                methods: strs(&["GET"]),
                ..Default::default()
            })],
        ),
    ];
    assert_eq!(
        Req::default().check(&p),
        Decision::Deny {
            policy: "default/deny-get".into()
        }
    );
    let post = Req {
        http: Some(("h", "POST", "/")),
        ..Req::default()
    };
    assert!(post.allowed(&p));
}

#[test]
fn any_allow_policy_suffices() {
    let p = vec![
        policy(
            "a",
            Action::Allow,
            vec![to(Operation {
                paths: strs(&["/a"]),
                ..Default::default()
            })],
        ),
        policy(
            "b",
            Action::Allow,
            vec![to(Operation {
                paths: strs(&["/ip"]),
                ..Default::default()
            })],
        ),
    ];
    assert!(Req::default().allowed(&p));
}

#[test]
fn audit_never_changes_the_decision() {
    let audit = policy(
        "default/audit-get",
        Action::Audit,
        vec![to(Operation {
            methods: strs(&["GET"]),
            ..Default::default()
        })],
    );
    let req = Req::default();
    let authz = Authorizer::compile(std::slice::from_ref(&audit)).unwrap();
    assert_eq!(req.run(|a| authz.check(a)), Decision::Allow);
    assert_eq!(req.run(|a| authz.audited(a)), vec!["default/audit-get"]);

    let with_allow = [audit.clone(), policy("default/none", Action::Allow, vec![])];
    let authz = Authorizer::compile(&with_allow).unwrap();
    assert!(matches!(req.run(|a| authz.check(a)), Decision::Deny { .. }));
    assert_eq!(req.run(|a| authz.audited(a)), vec!["default/audit-get"]);

    let post = Req {
        http: Some(("h", "POST", "/")),
        ..Req::default()
    };
    let authz = Authorizer::compile(&[audit]).unwrap();
    assert!(post.run(|a| authz.audited(a)).is_empty());
}

// --- The matrix: two identities x three operations x ALLOW and DENY ---------------------------

#[test]
fn matrix() {
    // sleep may read, admin may read and write; admin is denied DELETE whatever ALLOW says.
    let policies = vec![
        policy(
            "default/readers",
            Action::Allow,
            vec![Rule {
                from: vec![Source {
                    principals: strs(&[SLEEP, ADMIN]),
                    ..Default::default()
                }],
                to: vec![Operation {
                    methods: strs(&["GET"]),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        ),
        policy(
            "default/writers",
            Action::Allow,
            vec![Rule {
                from: vec![Source {
                    namespaces: strs(&["ops"]),
                    ..Default::default()
                }],
                to: vec![Operation {
                    methods: strs(&["POST", "DELETE"]),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        ),
        policy(
            "default/no-delete",
            Action::Deny,
            vec![to(Operation {
                methods: strs(&["DELETE"]),
                paths: strs(&["/items/*"]),
                ..Default::default()
            })],
        ),
    ];
    let ops = [
        ("GET", "/items/1"),
        ("POST", "/items"),
        ("DELETE", "/items/1"),
    ];
    let expected = [
        // DENY is evaluated first, so it names itself even where no ALLOW would match.
        (SLEEP, [Some(""), None, Some("default/no-delete")]),
        (ADMIN, [Some(""), Some(""), Some("default/no-delete")]),
    ];
    let authz = Authorizer::compile(&policies).unwrap();
    for (who, row) in expected {
        for ((method, path), want) in ops.iter().zip(row) {
            let req = Req {
                principal: Some(who),
                http: Some(("items.default", method, path)),
                ..Req::default()
            };
            let got = req.run(|a| authz.check(a));
            let want = match want {
                Some("") => Decision::Allow,
                Some(p) => Decision::Deny { policy: p.into() },
                None => Decision::Deny {
                    policy: String::new(),
                },
            };
            assert_eq!(got, want, "{who} {method} {path}");
        }
    }
}

// --- Sources --------------------------------------------------------------------------------

#[test]
fn principals() {
    let rule = |p: &[&str], n: &[&str]| {
        allow(vec![from(Source {
            principals: strs(p),
            not_principals: strs(n),
            ..Default::default()
        })])
    };
    let req = Req::default();
    assert!(req.allowed(&rule(&[SLEEP], &[])));
    assert!(!req.allowed(&rule(&[ADMIN], &[])));
    assert!(req.allowed(&rule(&["cluster.local/ns/default/*"], &[])));
    assert!(req.allowed(&rule(&["*/sa/sleep"], &[])));
    assert!(!req.allowed(&rule(&["*/sa/admin"], &[])));
    assert!(req.allowed(&rule(&["*"], &[])));
    assert!(!req.allowed(&rule(&[], &[SLEEP])));
    assert!(req.allowed(&rule(&[], &[ADMIN])));
    assert!(!req.allowed(&rule(&["*"], &["*/sa/sleep"])));
    let plaintext = Req {
        principal: None,
        ..Req::default()
    };
    assert!(!plaintext.allowed(&rule(&["*"], &[])));
    assert!(plaintext.allowed(&rule(&[], &["*"])));
    // The `spiffe://` scheme is not part of the value.
    assert!(!req.allowed(&rule(&["spiffe://cluster.local/ns/default/sa/sleep"], &[])));
}

#[test]
fn namespaces_come_from_the_principal() {
    let rule = |p: &[&str], n: &[&str]| {
        allow(vec![from(Source {
            namespaces: strs(p),
            not_namespaces: strs(n),
            ..Default::default()
        })])
    };
    let req = Req::default();
    assert!(req.allowed(&rule(&["default"], &[])));
    assert!(!req.allowed(&rule(&["ops"], &[])));
    assert!(req.allowed(&rule(&["def*"], &[])));
    assert!(req.allowed(&rule(&["*ult"], &[])));
    assert!(req.allowed(&rule(&["*"], &[])));
    assert!(!req.allowed(&rule(&[], &["default"])));
    assert!(req.allowed(&rule(&[], &["ops"])));
    let plaintext = Req {
        principal: None,
        ..Req::default()
    };
    assert!(!plaintext.allowed(&rule(&["*"], &[])));
    assert_eq!(namespace_of(ADMIN), Some("ops"));
    assert_eq!(namespace_of("cluster.local/sa/x"), None);
}

#[test]
fn explicit_namespace_attribute() {
    let authz = Authorizer::compile(&allow(vec![from(Source {
        namespaces: strs(&["ops"]),
        ..Default::default()
    })]))
    .unwrap();
    let req = Req::default();
    let got = req.run(|a| {
        let a = Attributes {
            source_namespace: Some("ops"),
            ..a.clone()
        };
        authz.check(&a)
    });
    assert_eq!(got, Decision::Allow);
}

#[test]
fn request_principals_never_present_without_request_authentication() {
    let rule = |p: &[&str], n: &[&str]| {
        allow(vec![from(Source {
            request_principals: strs(p),
            not_request_principals: strs(n),
            ..Default::default()
        })])
    };
    assert!(!Req::default().allowed(&rule(&["*"], &[])));
    assert!(Req::default().allowed(&rule(&[], &["*"])));
}

#[test]
fn ip_blocks_v4() {
    let rule = |p: &[&str], n: &[&str]| {
        allow(vec![from(Source {
            ip_blocks: strs(p),
            not_ip_blocks: strs(n),
            ..Default::default()
        })])
    };
    let req = Req::default(); // 198.18.0.10
    assert!(req.allowed(&rule(&["198.18.0.0/24"], &[])));
    assert!(req.allowed(&rule(&["198.18.0.10"], &[])));
    assert!(!req.allowed(&rule(&["198.18.0.11"], &[])));
    assert!(!req.allowed(&rule(&["198.18.1.0/24"], &[])));
    assert!(req.allowed(&rule(&["127.0.0.1", "198.18.0.0/15"], &[])));
    assert!(!req.allowed(&rule(&["198.18.0.0/15"], &["198.18.0.0/28"])));
    assert!(req.allowed(&rule(&[], &["127.0.0.0/8"])));
    // ipBlocks look at the peer, not at X-Forwarded-For.
    let proxied = Req {
        ip: "127.0.0.1",
        remote: "198.18.0.10",
        ..Req::default()
    };
    assert!(!proxied.allowed(&rule(&["198.18.0.0/24"], &[])));
}

#[test]
fn ip_blocks_v6() {
    let rule = |p: &[&str]| {
        allow(vec![from(Source {
            ip_blocks: strs(p),
            ..Default::default()
        })])
    };
    let req = Req {
        ip: "2001:db8:1::5",
        remote: "2001:db8:1::5",
        ..Req::default()
    };
    assert!(req.allowed(&rule(&["2001:db8::/32"])));
    assert!(req.allowed(&rule(&["2001:db8:1::5"])));
    assert!(!req.allowed(&rule(&["2001:db8:2::/48"])));
    assert!(!req.allowed(&rule(&["198.18.0.0/15"])));
    let mapped = Req {
        ip: "::ffff:198.18.0.10",
        ..Req::default()
    };
    assert!(mapped.allowed(&rule(&["198.18.0.0/15"])));
}

#[test]
fn remote_ip_blocks() {
    let rule = |p: &[&str], n: &[&str]| {
        allow(vec![from(Source {
            remote_ip_blocks: strs(p),
            not_remote_ip_blocks: strs(n),
            ..Default::default()
        })])
    };
    let proxied = Req {
        ip: "127.0.0.1",
        remote: "198.19.4.4",
        ..Req::default()
    };
    assert!(proxied.allowed(&rule(&["198.19.0.0/16"], &[])));
    assert!(!proxied.allowed(&rule(&["127.0.0.1"], &[])));
    assert!(!proxied.allowed(&rule(&[], &["198.19.4.4"])));
    assert!(proxied.allowed(&rule(&[], &["127.0.0.1"])));
}

#[test]
fn fields_of_one_source_are_and_sources_are_or() {
    let both = allow(vec![from(Source {
        principals: strs(&[SLEEP]),
        ip_blocks: strs(&["198.18.1.0/24"]),
        ..Default::default()
    })]);
    assert!(!Req::default().allowed(&both));
    let either = allow(vec![Rule {
        from: vec![
            Source {
                principals: strs(&[ADMIN]),
                ..Default::default()
            },
            Source {
                ip_blocks: strs(&["198.18.0.0/24"]),
                ..Default::default()
            },
        ],
        ..Default::default()
    }]);
    assert!(Req::default().allowed(&either));
}

// --- Operations -----------------------------------------------------------------------------

fn op_allows(req: &Req, o: Operation) -> bool {
    req.allowed(&allow(vec![to(o)]))
}

#[test]
fn hosts_are_case_insensitive() {
    let req = Req {
        http: Some(("Bookinfo.Example.COM", "GET", "/")),
        ..Req::default()
    };
    let hosts = |h: &[&str], n: &[&str]| Operation {
        hosts: strs(h),
        not_hosts: strs(n),
        ..Default::default()
    };
    assert!(op_allows(&req, hosts(&["bookinfo.example.com"], &[])));
    assert!(op_allows(&req, hosts(&["*.example.com"], &[])));
    assert!(op_allows(&req, hosts(&["BOOKINFO.*"], &[])));
    assert!(op_allows(&req, hosts(&["*"], &[])));
    assert!(!op_allows(&req, hosts(&["other.example.com"], &[])));
    assert!(!op_allows(&req, hosts(&[], &["*.EXAMPLE.com"])));
    assert!(op_allows(&req, hosts(&[], &["other.example.com"])));
}

#[test]
fn ports_are_numbers() {
    let ports = |p: &[&str], n: &[&str]| Operation {
        ports: strs(p),
        not_ports: strs(n),
        ..Default::default()
    };
    let req = Req::default(); // 8080
    assert!(op_allows(&req, ports(&["8080"], &[])));
    assert!(op_allows(&req, ports(&["9000", "8080"], &[])));
    assert!(!op_allows(&req, ports(&["9000"], &[])));
    assert!(!op_allows(&req, ports(&[], &["8080"])));
    assert!(op_allows(&req, ports(&[], &["9000"])));
}

#[test]
fn methods() {
    let methods = |m: &[&str], n: &[&str]| Operation {
        methods: strs(m),
        not_methods: strs(n),
        ..Default::default()
    };
    let req = Req::default(); // GET
    assert!(op_allows(&req, methods(&["GET"], &[])));
    assert!(!op_allows(&req, methods(&["get"], &[])));
    assert!(!op_allows(&req, methods(&["POST"], &[])));
    assert!(!op_allows(&req, methods(&[], &["GET"])));
    assert!(op_allows(&req, methods(&[], &["POST", "PUT"])));
}

#[test]
fn paths() {
    let paths = |p: &[&str], n: &[&str]| Operation {
        paths: strs(p),
        not_paths: strs(n),
        ..Default::default()
    };
    let req = Req {
        http: Some(("h", "GET", "/api/v1/items")),
        ..Req::default()
    };
    assert!(op_allows(&req, paths(&["/api/v1/items"], &[])));
    assert!(!op_allows(&req, paths(&["/api/v1"], &[])));
    assert!(op_allows(&req, paths(&["/api/*"], &[])));
    assert!(op_allows(&req, paths(&["*/items"], &[])));
    assert!(op_allows(&req, paths(&["*"], &[])));
    assert!(op_allows(&req, paths(&["/api/{*}/items"], &[])));
    assert!(op_allows(&req, paths(&["/{**}/items"], &[])));
    assert!(!op_allows(&req, paths(&["/api/{*}"], &[])));
    assert!(!op_allows(&req, paths(&[], &["/api/*"])));
    assert!(op_allows(&req, paths(&[], &["/admin/*"])));
    assert!(!op_allows(&req, paths(&["/api/*"], &["*/items"])));
}

// --- Conditions -----------------------------------------------------------------------------

#[test]
fn header_conditions() {
    let mut headers = HeaderMap::new();
    headers.insert("x-tenant", HeaderValue::from_static("blue-team"));
    let req = Req {
        headers,
        ..Req::default()
    };
    let c = |v: &[&str], n: &[&str]| allow(vec![when("request.headers[X-Tenant]", v, n)]);
    assert!(req.allowed(&c(&["blue-team"], &[])));
    assert!(req.allowed(&c(&["blue-*"], &[])));
    assert!(req.allowed(&c(&["*-team"], &[])));
    assert!(req.allowed(&c(&["*"], &[])));
    assert!(!req.allowed(&c(&["red-team"], &[])));
    assert!(!req.allowed(&c(&[], &["blue-*"])));
    assert!(req.allowed(&c(&[], &["red-*"])));
    let bare = Req::default();
    assert!(!bare.allowed(&c(&["*"], &[])));
    assert!(bare.allowed(&c(&[], &["*"])));
}

#[test]
fn repeated_headers_are_joined() {
    let mut headers = HeaderMap::new();
    headers.append("x-group", HeaderValue::from_static("a"));
    headers.append("x-group", HeaderValue::from_static("b"));
    let req = Req {
        headers,
        ..Req::default()
    };
    assert!(req.allowed(&allow(vec![when(
        "request.headers[x-group]",
        &["a,b"],
        &[]
    )])));
}

#[test]
fn source_and_destination_conditions() {
    let req = Req {
        ip: "198.18.0.10",
        remote: "198.19.0.1",
        ..Req::default()
    };
    let ok = |key: &str, v: &[&str], n: &[&str]| req.allowed(&allow(vec![when(key, v, n)]));
    assert!(ok("source.ip", &["198.18.0.0/16"], &[]));
    assert!(!ok("source.ip", &["198.19.0.0/16"], &[]));
    assert!(!ok("source.ip", &[], &["198.18.0.10"]));
    assert!(ok("remote.ip", &["198.19.0.1"], &[]));
    assert!(!ok("remote.ip", &["198.18.0.10"], &[]));
    assert!(ok("source.namespace", &["default"], &[]));
    assert!(!ok("source.namespace", &["ops"], &[]));
    assert!(!ok("source.namespace", &[], &["def*"]));
    assert!(ok("source.principal", &[SLEEP], &[]));
    assert!(ok("source.principal", &["*/sa/sleep"], &[]));
    assert!(!ok("source.principal", &[ADMIN], &[]));
    assert!(ok("destination.port", &["8080"], &[]));
    assert!(!ok("destination.port", &["9000"], &[]));
    assert!(!ok("destination.port", &[], &["8080"]));
}

#[test]
fn conditions_are_and() {
    let rule = Rule {
        when: vec![
            Condition {
                key: "source.namespace".into(),
                values: strs(&["default"]),
                ..Default::default()
            },
            Condition {
                key: "destination.port".into(),
                values: strs(&["9000"]),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    assert!(!Req::default().allowed(&allow(vec![rule.clone()])));
    let on_9000 = Req {
        port: 9000,
        ..Req::default()
    };
    assert!(on_9000.allowed(&allow(vec![rule])));
}

#[test]
fn from_to_and_when_are_and() {
    let rule = Rule {
        from: vec![Source {
            principals: strs(&[SLEEP]),
            ..Default::default()
        }],
        to: vec![Operation {
            methods: strs(&["GET"]),
            ..Default::default()
        }],
        when: vec![Condition {
            key: "destination.port".into(),
            values: strs(&["8080"]),
            ..Default::default()
        }],
    };
    let p = allow(vec![rule]);
    assert!(Req::default().allowed(&p));
    assert!(
        !Req {
            principal: Some(ADMIN),
            ..Req::default()
        }
        .allowed(&p)
    );
    assert!(
        !Req {
            http: Some(("h", "PUT", "/")),
            ..Req::default()
        }
        .allowed(&p)
    );
    assert!(
        !Req {
            port: 8081,
            ..Req::default()
        }
        .allowed(&p)
    );
}

// --- TCP ------------------------------------------------------------------------------------

#[test]
fn tcp_allow_rule_with_http_field_is_ignored_whole() {
    // Istio task authz-tcp: ALLOW `methods: [GET], ports: ["9000"]` rejects port 9000 too.
    let p = allow(vec![to(Operation {
        methods: strs(&["GET"]),
        ports: strs(&["9000"]),
        ..Default::default()
    })]);
    let on_9000 = Req {
        port: 9000,
        ..Req::tcp()
    };
    assert!(!on_9000.allowed(&p));
    // The same policy still allows HTTP GET to 9000.
    assert!(
        Req {
            port: 9000,
            ..Req::default()
        }
        .allowed(&p)
    );
    // A sibling rule without HTTP fields still applies.
    let mut two = p.clone();
    two[0].rules.push(to(Operation {
        ports: strs(&["9000"]),
        ..Default::default()
    }));
    assert!(on_9000.allowed(&two));
}

#[test]
fn tcp_allow_http_only_field_anywhere_in_rule() {
    for rule in [
        from(Source {
            request_principals: strs(&["*"]),
            ..Default::default()
        }),
        from(Source {
            not_request_principals: strs(&["*"]),
            ..Default::default()
        }),
        to(Operation {
            not_paths: strs(&["/admin"]),
            ..Default::default()
        }),
        to(Operation {
            hosts: strs(&["*"]),
            ..Default::default()
        }),
        when("request.headers[x-a]", &[], &["b"]),
    ] {
        let p = allow(vec![rule]);
        assert!(!Req::tcp().allowed(&p), "{p:?}");
    }
}

#[test]
fn tcp_deny_ignores_only_the_http_fields() {
    // Istio task authz-tcp: DENY `methods: [GET]` denies every TCP connection ...
    let deny_get = deny(vec![to(Operation {
        methods: strs(&["GET"]),
        ..Default::default()
    })]);
    assert!(
        !Req {
            port: 9000,
            ..Req::tcp()
        }
        .allowed(&deny_get)
    );
    assert!(
        !Req {
            port: 9001,
            ..Req::tcp()
        }
        .allowed(&deny_get)
    );
    // ... while HTTP POST is unaffected.
    assert!(
        Req {
            http: Some(("h", "POST", "/")),
            ..Req::default()
        }
        .allowed(&deny_get)
    );
    // DENY `methods: [GET], ports: ["9000"]` denies TCP to 9000 and allows 9001.
    let deny_9000 = deny(vec![to(Operation {
        methods: strs(&["GET"]),
        ports: strs(&["9000"]),
        ..Default::default()
    })]);
    assert!(
        !Req {
            port: 9000,
            ..Req::tcp()
        }
        .allowed(&deny_9000)
    );
    assert!(
        Req {
            port: 9001,
            ..Req::tcp()
        }
        .allowed(&deny_9000)
    );
    // HTTP-only conditions are dropped too; the remaining source still has to match.
    let deny_hdr = deny(vec![Rule {
        from: vec![Source {
            principals: strs(&[ADMIN]),
            ..Default::default()
        }],
        when: vec![Condition {
            key: "request.headers[x-a]".into(),
            values: strs(&["b"]),
            ..Default::default()
        }],
        ..Default::default()
    }]);
    assert!(Req::tcp().allowed(&deny_hdr));
    assert!(
        !Req {
            principal: Some(ADMIN),
            ..Req::tcp()
        }
        .allowed(&deny_hdr)
    );
}

#[test]
fn tcp_audit_widens_like_deny() {
    let audit = [policy(
        "a",
        Action::Audit,
        vec![to(Operation {
            paths: strs(&["/x"]),
            ..Default::default()
        })],
    )];
    let authz = Authorizer::compile(&audit).unwrap();
    assert_eq!(Req::tcp().run(|a| authz.audited(a)), vec!["a"]);
    assert_eq!(Req::tcp().run(|a| authz.check(a)), Decision::Allow);
}

#[test]
fn tcp_l4_fields_apply() {
    let p = allow(vec![Rule {
        from: vec![Source {
            principals: strs(&[SLEEP]),
            ip_blocks: strs(&["198.18.0.0/15"]),
            ..Default::default()
        }],
        to: vec![Operation {
            ports: strs(&["8080"]),
            ..Default::default()
        }],
        when: vec![Condition {
            key: "source.namespace".into(),
            values: strs(&["default"]),
            ..Default::default()
        }],
    }]);
    assert!(Req::tcp().allowed(&p));
    assert!(
        !Req {
            port: 8081,
            ..Req::tcp()
        }
        .allowed(&p)
    );
    assert!(
        !Req {
            principal: Some(ADMIN),
            ..Req::tcp()
        }
        .allowed(&p)
    );
}

// --- Compile errors name the field ----------------------------------------------------------

#[test]
fn bad_ip_block_names_its_field() {
    let p = vec![
        policy("ok", Action::Allow, vec![]),
        policy(
            "bad",
            Action::Deny,
            vec![
                Rule::default(),
                from(Source {
                    ip_blocks: strs(&["198.18.0.1", "198.18.0.0/15", "198.18.0.0/40"]),
                    ..Default::default()
                }),
            ],
        ),
    ];
    let (path, reason) = compile_err(&p);
    assert_eq!(
        path,
        "authorizationPolicies[1].rules[1].from[0].ipBlocks[2]"
    );
    assert!(reason.contains("prefix length"), "{reason}");
}

#[test]
fn every_list_field_names_itself() {
    let cases: Vec<(Rule, &str)> = vec![
        (
            from(Source {
                not_ip_blocks: strs(&["x"]),
                ..Default::default()
            }),
            "from[0].notIpBlocks[0]",
        ),
        (
            from(Source {
                remote_ip_blocks: strs(&["2001:db8::/200"]),
                ..Default::default()
            }),
            "from[0].remoteIpBlocks[0]",
        ),
        (
            from(Source {
                not_remote_ip_blocks: strs(&["::1", "1.2.3"]),
                ..Default::default()
            }),
            "from[0].notRemoteIpBlocks[1]",
        ),
        (
            to(Operation {
                ports: strs(&["80", "http"]),
                ..Default::default()
            }),
            "to[0].ports[1]",
        ),
        (
            to(Operation {
                not_ports: strs(&["70000"]),
                ..Default::default()
            }),
            "to[0].notPorts[0]",
        ),
        (
            to(Operation {
                paths: strs(&["/a{*}"]),
                ..Default::default()
            }),
            "to[0].paths[0]",
        ),
        (
            when("source.ip", &["198.18.0.1", "nope"], &[]),
            "when[0].values[1]",
        ),
        (
            when("destination.port", &[], &["-1"]),
            "when[0].notValues[0]",
        ),
        (
            when("destination.ip", &["198.18.0.1", "x"], &[]),
            "when[0].values[1]",
        ),
        (when("request.headers[]", &["a"], &[]), "when[0].key"),
        (when("source.ip", &[], &[]), "when[0].values"),
    ];
    for (rule, field) in cases {
        let (path, _) = compile_err(&allow(vec![rule]));
        assert_eq!(path, format!("authorizationPolicies[0].rules[0].{field}"));
    }
}

#[test]
fn custom_is_refused() {
    let mut p = allow(vec![]);
    p[0].action = Action::Custom as i32;
    let (path, reason) = compile_err(&p);
    assert_eq!(path, "authorizationPolicies[0].action");
    assert!(reason.contains("CUSTOM is not supported"), "{reason}");
}

// --- Keys Istio accepts that need more than the connection ----------------------------------

fn jwt(principal: &str, claims: serde_json::Value) -> Option<RequestAuth> {
    Some(RequestAuth {
        principal: principal.into(),
        audiences: vec!["bookinfo".into()],
        presenter: Some("web-client".into()),
        claims: claims.as_object().cloned().unwrap_or_default(),
    })
}

#[test]
fn request_principals_need_a_verified_token() {
    let policy = allow(vec![from(Source {
        request_principals: strs(&["*"]),
        ..Default::default()
    })]);
    // Without a token even `*` matches nothing, as Istio without a JWT.
    assert!(!Req::default().allowed(&policy));
    let with_token = Req {
        auth: jwt("https://issuer/alice", serde_json::json!({})),
        ..Req::default()
    };
    assert!(with_token.allowed(&policy));
    let exact = allow(vec![from(Source {
        request_principals: strs(&["https://issuer/bob"]),
        ..Default::default()
    })]);
    assert!(!with_token.allowed(&exact));
}

#[test]
fn request_auth_conditions() {
    let token = Req {
        auth: jwt(
            "https://issuer/alice",
            serde_json::json!({"groups": ["dev", "admin"], "org": {"team": "payments"}}),
        ),
        ..Req::default()
    };
    for (key, value, want) in [
        ("request.auth.principal", "https://issuer/*", true),
        ("request.auth.audiences", "bookinfo", true),
        ("request.auth.audiences", "other", false),
        ("request.auth.presenter", "web-*", true),
        ("request.auth.claims[groups]", "admin", true),
        ("request.auth.claims[groups]", "ops", false),
        ("request.auth.claims[org][team]", "payments", true),
        ("request.auth.claims[org][missing]", "*", false),
    ] {
        let p = allow(vec![when(key, &[value], &[])]);
        assert_eq!(token.allowed(&p), want, "{key} = {value}");
        assert!(!Req::default().allowed(&p), "{key} without a token");
    }
}

#[test]
fn source_service_account() {
    let p = vec![policy(
        "default/sa",
        Action::Allow,
        vec![when("source.serviceAccount", &["sleep"], &[])],
    )];
    assert!(
        Req::default().allowed(&p),
        "sleep in the policy's namespace"
    );
    let other = Req {
        principal: Some(ADMIN),
        ..Req::default()
    };
    assert!(!other.allowed(&p));
    let qualified = allow(vec![when("source.serviceAccount", &["ops/admin"], &[])]);
    assert!(other.allowed(&qualified));
    assert!(!Req::default().allowed(&qualified));
}

#[test]
fn destination_ip_and_sni() {
    let p = allow(vec![when("destination.ip", &["198.18.0.0/24"], &[])]);
    assert!(Req::default().allowed(&p));
    let elsewhere = Req {
        destination: Some("198.18.1.1"),
        ..Req::default()
    };
    assert!(!elsewhere.allowed(&p));
    let unknown = Req {
        destination: None,
        ..Req::default()
    };
    assert!(!unknown.allowed(&p));

    let p = allow(vec![when("connection.sni", &["*.example.com"], &[])]);
    let sni = Req {
        sni: Some("api.example.com"),
        ..Req::default()
    };
    assert!(sni.allowed(&p));
    assert!(!Req::default().allowed(&p), "no SNI");
}

#[test]
fn envoy_filter_metadata_takes_istios_fallback() {
    let rule = || {
        let mut r = when(
            "experimental.envoy.filters.network.mysql_proxy[db.table]",
            &["[update]"],
            &[],
        );
        r.from.push(Source {
            principals: strs(&[ADMIN]),
            ..Default::default()
        });
        r
    };
    // ALLOW: the rule matches nothing, even for the principal it names.
    let admin = Req {
        principal: Some(ADMIN),
        ..Req::default()
    };
    assert!(!admin.allowed(&allow(vec![rule()])));
    // DENY: the rule matches every request, whoever sends it, HTTP or TCP.
    assert!(!Req::default().allowed(&deny(vec![rule()])));
    assert!(!Req::tcp().allowed(&deny(vec![rule()])));
    let authz = Authorizer::compile(&deny(vec![rule()])).unwrap();
    assert_eq!(authz.fallbacks().len(), 1);
    let f = &authz.fallbacks()[0];
    assert_eq!(f.policy, "default/deny");
    assert_eq!(f.field, "rules[0].when[0].key");
    // AUDIT audits everything.
    let audit = vec![policy("default/audit", Action::Audit, vec![rule()])];
    let authz = Authorizer::compile(&audit).unwrap();
    Req::default().run(|a| assert_eq!(authz.audited(a), ["default/audit"]));
}

#[test]
fn every_condition_key_istio_accepts_compiles() {
    for key in [
        "source.ip",
        "remote.ip",
        "source.namespace",
        "source.principal",
        "source.serviceAccount",
        "request.headers[x-a]",
        "request.headers[bad name]",
        "request.auth.principal",
        "request.auth.audiences",
        "request.auth.presenter",
        "request.auth.claims[iss]",
        "request.auth.claims[a][b]",
        "destination.ip",
        "destination.port",
        "connection.sni",
        "experimental.envoy.filters.a.b[c]",
    ] {
        let value = match key {
            "source.ip" | "remote.ip" | "destination.ip" => "198.18.0.1",
            "destination.port" => "80",
            _ => "v",
        };
        let p = vec![policy(
            "ns/p",
            Action::Allow,
            vec![when(key, &[value], &[])],
        )];
        assert!(Authorizer::compile(&p).is_ok(), "{key}");
    }
}
