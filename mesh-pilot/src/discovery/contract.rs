//! The proxy's own compile step, run on what pilot is about to send: a config that fails it
//! would be refused by the proxy as a whole. The object that fails (found from the typed
//! error) is replaced by a fail-closed equivalent or dropped, a warning names it, and the
//! rest is sent, so one object never freezes a proxy.
//!
//! The outbound part of a scope is checked once per distinct scope ([`check_outbound`]);
//! per proxy only its own part is checked on top of it ([`check_own`]).

use mesh_proto::config::v1::{
    self as pb, AuthorizationPolicy, DirectResponse, ProxyConfig, authorization_policy as ap,
};
use mesh_proxy::config::{ConfigError, ConfigObject, SharedPart};

use crate::translate::{NO_CLUSTER_BODY, NO_CLUSTER_STATUS, Outbound, SharedConfig};

/// Repairs before giving up: each one removes or neutralises one object, so this bounds the
/// work for a config with many bad objects.
const MAX_REPAIRS: usize = 256;

/// The outbound part checked: its repaired copy when something had to change, the checked
/// part for [`check_own`], and a warning per repair.
pub struct CheckedOutbound {
    pub repaired: Option<Outbound>,
    pub part: Option<SharedPart>,
    pub warnings: Vec<String>,
}

pub fn check_outbound(out: &Outbound) -> CheckedOutbound {
    let check =
        |cfg: &ProxyConfig| mesh_proxy::config::check_shared(&cfg.clusters, &cfg.route_tables);
    let mut cfg = ProxyConfig {
        route_tables: vec![out.route_table.clone()],
        clusters: out.clusters.clone(),
        ..Default::default()
    };
    let mut warnings = Vec::new();
    let mut last = None;
    for _ in 0..MAX_REPAIRS {
        match check(&cfg) {
            Ok(part) => {
                let repaired = (!warnings.is_empty()).then(|| Outbound {
                    route_table: cfg.route_tables.pop().unwrap_or_default(),
                    clusters: std::mem::take(&mut cfg.clusters),
                    ..out.clone()
                });
                return CheckedOutbound {
                    repaired,
                    part: Some(part),
                    warnings,
                };
            }
            Err(e) => {
                let again = last == Some(e.object);
                warnings.push(repair(&mut cfg, &e, again));
                last = Some(e.object);
            }
        }
    }
    warnings.push("outbound config: too many objects refused by the proxy's compile step; their checks stopped".into());
    CheckedOutbound {
        repaired: None,
        part: None,
        warnings,
    }
}

/// Checks `shared`'s own part (listeners, inbound route table and cluster) on top of the
/// checked outbound `part`, repairing it in place. Returns the warnings, or why nothing can
/// be sent.
pub fn check_own(
    shared: &mut SharedConfig,
    part: Option<&SharedPart>,
) -> Result<Vec<String>, String> {
    let mut cfg = shared.take_own();
    let mut warnings = Vec::new();
    let mut last = None;
    let mut result = Err("too many objects refused by the proxy's compile step".to_string());
    for _ in 0..MAX_REPAIRS {
        match mesh_proxy::config::check_with(&cfg, part) {
            Ok(report) => {
                warnings.extend(report.fallbacks.iter().map(ToString::to_string));
                result = Ok(());
                break;
            }
            Err(e) => {
                let again = last == Some(e.object);
                warnings.push(repair(&mut cfg, &e, again));
                last = Some(e.object);
            }
        }
    }
    shared.put_own(cfg);
    result.map(|()| warnings)
}

/// Removes or neutralises the object `e` is about; `again` when that did not help last time,
/// so it is removed outright. Returns the warning naming it.
fn repair(cfg: &mut ProxyConfig, e: &ConfigError, again: bool) -> String {
    let refused = format!("{}: {}", e.field(), e.reason());
    match e.object {
        ConfigObject::Cluster { index } => {
            let name = remove(&mut cfg.clusters, index).map(|c| c.name);
            format!(
                "cluster {}: refused by the proxy ({refused}); left out, routes to it answer {NO_CLUSTER_STATUS}",
                name.unwrap_or_default()
            )
        }
        ConfigObject::Route {
            table,
            virtual_host,
            route,
        } => {
            let Some(vh) = cfg
                .route_tables
                .get_mut(table)
                .and_then(|t| t.virtual_hosts.get_mut(virtual_host))
            else {
                return format!("refused by the proxy: {refused}");
            };
            let vh_name = vh.name.clone();
            let Some(r) = vh.routes.get_mut(route) else {
                return format!("refused by the proxy: {refused}");
            };
            let name = r.name.clone();
            if again {
                vh.routes.remove(route);
                return format!(
                    "route {name:?} of {vh_name}: refused by the proxy ({refused}); removed"
                );
            }
            // Fail closed: the route keeps its match, so later routes do not take its traffic.
            *r = pb::Route {
                name: r.name.clone(),
                r#match: r.r#match.take(),
                action: Some(pb::route::Action::DirectResponse(DirectResponse {
                    status: NO_CLUSTER_STATUS,
                    body: NO_CLUSTER_BODY.to_string(),
                    body_bytes: Vec::new(),
                })),
                ..Default::default()
            };
            format!(
                "route {name:?} of {vh_name}: refused by the proxy ({refused}); it answers {NO_CLUSTER_STATUS} instead"
            )
        }
        ConfigObject::RouteTable { index } => {
            let vh = virtual_host_index(&e.error.field);
            match (cfg.route_tables.get_mut(index), vh) {
                (Some(t), Some(v)) if v < t.virtual_hosts.len() && !again => {
                    let name = t.virtual_hosts.remove(v).name;
                    format!("virtual host {name}: refused by the proxy ({refused}); removed")
                }
                _ => {
                    let name = remove(&mut cfg.route_tables, index).map(|t| t.name);
                    format!(
                        "route table {}: refused by the proxy ({refused}); removed",
                        name.unwrap_or_default()
                    )
                }
            }
        }
        ConfigObject::Listener { index } => {
            let name = remove(&mut cfg.listeners, index).map(|l| l.name);
            format!(
                "listener {}: refused by the proxy ({refused}); removed",
                name.unwrap_or_default()
            )
        }
        ConfigObject::AuthorizationPolicy { listener, policy } => {
            let Some(l) = cfg.listeners.get_mut(listener) else {
                return format!("refused by the proxy: {refused}");
            };
            let Some(p) = l.authorization_policies.get_mut(policy) else {
                return format!("refused by the proxy: {refused}");
            };
            let name = p.name.clone();
            match fail_closed(p) {
                Some(replacement) if !again => {
                    let what = match replacement.action() {
                        ap::Action::Deny => "it denies every request",
                        _ => "it allows nothing",
                    };
                    *p = replacement;
                    format!(
                        "AuthorizationPolicy {name}: refused by the proxy ({refused}); {what} instead"
                    )
                }
                _ => {
                    l.authorization_policies.remove(policy);
                    format!(
                        "AuthorizationPolicy {name}: refused by the proxy ({refused}); an AUDIT policy changes no decision, left out"
                    )
                }
            }
        }
        ConfigObject::JwtRule { listener, rule } => {
            let issuer = cfg
                .listeners
                .get_mut(listener)
                .and_then(|l| remove(&mut l.jwt_rules, rule))
                .map(|r| r.issuer);
            format!(
                "RequestAuthentication rule for issuer {}: refused by the proxy ({refused}); removed, tokens of that issuer are refused (401) while another rule remains",
                issuer.unwrap_or_default()
            )
        }
        ConfigObject::TcpRoute { listener, route } => {
            let name = cfg
                .listeners
                .get_mut(listener)
                .and_then(|l| remove(&mut l.tcp_routes, route))
                .map(|r| r.name);
            format!(
                "layer 4 route {}: refused by the proxy ({refused}); removed",
                name.unwrap_or_default()
            )
        }
        ConfigObject::LocalRateLimit { listener, limit } => {
            let name = cfg
                .listeners
                .get_mut(listener)
                .and_then(|l| remove(&mut l.local_rate_limits, limit))
                .map(|l| l.name);
            format!(
                "LocalRateLimit {}: refused by the proxy ({refused}); removed, requests are not limited by it",
                name.unwrap_or_default()
            )
        }
        ConfigObject::AccessLog { index } => {
            let name = cfg
                .telemetry
                .as_mut()
                .and_then(|t| t.access_logging.as_mut())
                .and_then(|a| remove(&mut a.logs, index))
                .map(|l| l.name);
            format!(
                "access log {}: refused by the proxy ({refused}); removed",
                name.unwrap_or_default()
            )
        }
        ConfigObject::MetricOverride { index } => {
            cfg.telemetry
                .as_mut()
                .and_then(|t| t.metrics.as_mut())
                .and_then(|m| remove(&mut m.overrides, index));
            format!("metrics override {index}: refused by the proxy ({refused}); removed")
        }
    }
}

/// A policy that can never grant more than the refused one: an ALLOW that matches nothing (so
/// it still restricts the workload to the other ALLOW policies) or a DENY that matches
/// everything. `None` for AUDIT, which decides nothing.
fn fail_closed(p: &AuthorizationPolicy) -> Option<AuthorizationPolicy> {
    let rules = match p.action() {
        ap::Action::Allow => Vec::new(),
        ap::Action::Deny | ap::Action::Custom => vec![ap::Rule::default()],
        ap::Action::Audit => return None,
    };
    Some(AuthorizationPolicy {
        name: p.name.clone(),
        action: if p.action() == ap::Action::Allow {
            ap::Action::Allow
        } else {
            ap::Action::Deny
        } as i32,
        rules,
    })
}

fn remove<T>(list: &mut Vec<T>, index: usize) -> Option<T> {
    (index < list.len()).then(|| list.remove(index))
}

/// `virtualHosts[3].domains[0]` -> 3.
fn virtual_host_index(field: &str) -> Option<usize> {
    field
        .strip_prefix("virtualHosts[")?
        .split(']')
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::config::v1::{Listener, RouteTable};

    fn listener(policies: Vec<AuthorizationPolicy>) -> Listener {
        Listener {
            name: "inbound".into(),
            address: "127.0.0.1:15006".into(),
            direction: pb::Direction::Inbound as i32,
            protocol: pb::ListenerProtocol::Http as i32,
            route_table: "inbound".into(),
            authorization_policies: policies,
            ..Default::default()
        }
    }

    fn own(policies: Vec<AuthorizationPolicy>) -> SharedConfig {
        SharedConfig {
            listeners: vec![listener(policies)],
            inbound: Some((
                RouteTable {
                    name: "inbound".into(),
                    ..Default::default()
                },
                pb::Cluster {
                    name: "inbound|app".into(),
                    endpoints: vec![pb::Endpoint {
                        address: "127.0.0.1:8080".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            )),
            ..Default::default()
        }
    }

    fn policy(name: &str, action: ap::Action, cidr: &str) -> AuthorizationPolicy {
        AuthorizationPolicy {
            name: name.into(),
            action: action as i32,
            rules: vec![ap::Rule {
                from: vec![ap::Source {
                    ip_blocks: vec![cidr.into()],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn a_bad_policy_fails_closed_and_the_rest_is_kept() {
        let mut shared = own(vec![
            policy("foo/good", ap::Action::Allow, "198.18.0.0/15"),
            policy("istio-system/bad-allow", ap::Action::Allow, "198.18.0.0/99"),
            policy("foo/bad-deny", ap::Action::Deny, "nope"),
            policy("foo/bad-audit", ap::Action::Audit, "nope"),
        ]);
        let warnings = check_own(&mut shared, None).expect("repaired");
        let kept = &shared.listeners[0].authorization_policies;
        let names: Vec<&str> = kept.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            ["foo/good", "istio-system/bad-allow", "foo/bad-deny"]
        );
        assert_eq!(kept[0].rules[0].from[0].ip_blocks, ["198.18.0.0/15"]);
        assert!(kept[1].rules.is_empty(), "an ALLOW that matches nothing");
        assert_eq!(kept[2].action(), ap::Action::Deny);
        assert_eq!(kept[2].rules, [ap::Rule::default()], "a DENY of everything");
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(
            warnings[0].contains("istio-system/bad-allow"),
            "{warnings:?}"
        );
        assert!(warnings[0].contains("ipBlocks[0]"), "{warnings:?}");
        assert!(warnings[2].contains("foo/bad-audit"), "{warnings:?}");
        assert!(shared.inbound.is_some());
        mesh_proxy::config::check(&shared.to_config()).expect("the repaired config compiles");
    }

    #[test]
    fn an_access_log_the_proxy_refuses_is_left_out_and_the_others_kept() {
        let log = |name: &str, filter: &str| pb::AccessLog {
            name: name.into(),
            filter: filter.into(),
            ..Default::default()
        };
        let mut shared = own(Vec::new());
        shared.telemetry = Some(pb::Telemetry {
            access_logging: Some(pb::AccessLogging {
                logs: vec![
                    log("envoy", "response.code >= 400"),
                    log("bad", "response.code ="),
                ],
            }),
            ..Default::default()
        });
        let warnings = check_own(&mut shared, None).expect("repaired");
        let logs = &shared
            .telemetry
            .as_ref()
            .unwrap()
            .access_logging
            .as_ref()
            .unwrap()
            .logs;
        assert_eq!(logs, &[log("envoy", "response.code >= 400")]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with(
                "access log bad: refused by the proxy (telemetry.accessLogging.logs[1].filter:"
            ),
            "{warnings:?}"
        );
    }

    #[test]
    fn unsupported_keys_are_reported_not_refused() {
        let mut p = policy("foo/filters", ap::Action::Allow, "198.18.0.0/15");
        p.rules[0].when.push(ap::Condition {
            key: "experimental.envoy.filters.network.mysql_proxy[db.table]".into(),
            values: vec!["[update]".into()],
            not_values: vec![],
        });
        let mut shared = own(vec![p.clone()]);
        let warnings = check_own(&mut shared, None).expect("compiles");
        assert_eq!(shared.listeners[0].authorization_policies, [p]);
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("foo/filters") && warnings[0].contains("when[0].key"),
            "{warnings:?}"
        );
    }

    #[test]
    fn a_bad_route_answers_503_and_a_bad_cluster_is_left_out() {
        let route = |name: &str, cluster: &str, retry_on: &str| pb::Route {
            name: name.into(),
            r#match: Some(pb::RouteMatch::default()),
            action: Some(pb::route::Action::Route(pb::RouteAction {
                clusters: vec![pb::WeightedCluster {
                    cluster: cluster.into(),
                    weight: 100,
                    ..Default::default()
                }],
                retry_policy: Some(pb::RetryPolicy {
                    num_retries: 1,
                    retry_on: retry_on.into(),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            ..Default::default()
        };
        let cluster = |name: &str, address: &str| pb::Cluster {
            name: name.into(),
            endpoints: vec![pb::Endpoint {
                address: address.into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let out = Outbound {
            route_table: RouteTable {
                name: "outbound".into(),
                virtual_hosts: vec![pb::VirtualHost {
                    name: "reviews:9080".into(),
                    domains: vec!["reviews".into()],
                    routes: vec![
                        route("sometimes", "a", "5xx,sometimes"),
                        route("to-b", "b", "5xx"),
                        route("fine", "a", "5xx"),
                    ],
                }],
            },
            clusters: vec![
                cluster("a", "198.18.0.1:80"),
                cluster("b", "not-an-address"),
            ],
            ..Default::default()
        };
        let checked = check_outbound(&out);
        assert!(checked.part.is_some());
        let repaired = checked.repaired.expect("something changed");
        assert_eq!(repaired.clusters.len(), 1);
        let routes = &repaired.route_table.virtual_hosts[0].routes;
        assert_eq!(routes.len(), 3);
        for r in &routes[..2] {
            assert!(
                matches!(&r.action, Some(pb::route::Action::DirectResponse(d)) if d.status == 503),
                "{r:?}"
            );
        }
        assert!(matches!(
            &routes[2].action,
            Some(pb::route::Action::Route(_))
        ));
        assert_eq!(checked.warnings.len(), 3, "{:?}", checked.warnings);
        assert!(checked.warnings.iter().any(|w| w.contains("cluster b")));
        assert!(checked.warnings.iter().any(|w| w.contains("\"sometimes\"")));
    }
}
