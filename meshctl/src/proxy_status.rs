//! `meshctl proxy-status`: every proxy connected to pilot, the config version it ACKed
//! against the one pilot sent it last, and why it NACKed, like `istioctl proxy-status`.

use std::process::ExitCode;

use crate::pilot::{self, ProxyStatus, Syncz, TypeStatus};
use crate::table::Table;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only this proxy (id, workload.namespace or workload name).
    pub proxy: Option<String>,
    /// Pilot's debug address.
    #[arg(long, env = "MESH_PILOT", default_value = pilot::DEFAULT_PILOT)]
    pub pilot: String,
    /// Output format: table, or json (pilot's record as is).
    #[arg(short, long, default_value = "table", value_parser = ["table", "json"])]
    pub output: String,
}

/// Istio's words for a type's state: SYNCED when the proxy ACKed what it was sent last,
/// NACK when it rejected it, STALE while the answer is pending, NOT SENT before any push.
pub fn state(t: &TypeStatus) -> &'static str {
    if t.nack.is_some() {
        "NACK"
    } else if t.sent.is_empty() && t.acked.is_empty() {
        "NOT SENT"
    } else if t.sent.is_empty() || t.acked == t.sent {
        "SYNCED"
    } else {
        "STALE"
    }
}

/// Versions are content hashes; their first 12 characters tell them apart.
fn short(version: &str) -> &str {
    version.get(..12).unwrap_or(version)
}

fn versions(t: &TypeStatus) -> String {
    let latest = if t.sent.is_empty() { &t.acked } else { &t.sent };
    match (t.acked.as_str(), latest.as_str()) {
        ("", "") => "-".to_owned(),
        (acked, latest) if acked == latest => short(acked).to_owned(),
        (acked, latest) => format!("{} -> {}", short(acked), short(latest)),
    }
}

/// The table, then one line per NACK reason and per translation problem. Rows go by proxy
/// id: pilot lists proxies in connection order, which changes from run to run.
pub fn render(status: &Syncz, proxies: &[&ProxyStatus]) -> String {
    let mut proxies = proxies.to_vec();
    proxies.sort_by(|a, b| a.id.cmp(&b.id));
    let mut t = Table::new(&[
        "NAME",
        "WORKLOAD",
        "CONFIG",
        "ENDPOINTS",
        "VERSION (ACKED -> LATEST)",
        "GENERATION",
        "ADMIN",
    ]);
    for p in &proxies {
        t.row(vec![
            p.id.clone(),
            format!("{}.{}", p.workload, p.namespace),
            state(&p.config).to_owned(),
            state(&p.endpoints).to_owned(),
            versions(&p.config),
            format!("{}/{}", p.generation, status.generation),
            if p.admin.is_empty() {
                "-".to_owned()
            } else {
                p.admin.clone()
            },
        ]);
    }
    let mut out = t.render();
    for p in proxies {
        for (kind, s) in [("CONFIG", &p.config), ("ENDPOINTS", &p.endpoints)] {
            if let Some(reason) = &s.nack {
                out.push_str(&format!("{}: {kind} NACK: {reason}\n", p.id));
            }
        }
        for problem in &p.problems {
            out.push_str(&format!("{}: {problem}\n", p.id));
        }
    }
    out
}

pub fn run(args: &Args) -> ExitCode {
    let status = match pilot::syncz(&args.pilot) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("meshctl proxy-status: {e}");
            return ExitCode::FAILURE;
        }
    };
    let selected: Vec<&ProxyStatus> = match &args.proxy {
        None => status.proxies.iter().collect(),
        Some(name) => match pilot::find(&status.proxies, name) {
            Ok(p) => vec![p],
            Err(e) => {
                eprintln!("meshctl proxy-status: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    if args.output == "json" {
        let json: Vec<serde_json::Value> = selected
            .iter()
            .map(|p| {
                serde_json::json!({
                    "id": p.id, "workload": p.workload, "namespace": p.namespace,
                    "admin": p.admin, "generation": p.generation, "synced": p.synced,
                    "config": {"state": state(&p.config), "sent": p.config.sent,
                               "acked": p.config.acked, "nack": p.config.nack},
                    "endpoints": {"state": state(&p.endpoints), "sent": p.endpoints.sent,
                                  "acked": p.endpoints.acked, "nack": p.endpoints.nack},
                    "problems": p.problems,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "generation": status.generation,
                "proxies": json,
            }))
            .unwrap_or_default()
        );
    } else {
        print!("{}", render(&status, &selected));
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(sent: &str, acked: &str, nack: Option<&str>) -> TypeStatus {
        TypeStatus {
            sent: sent.into(),
            acked: acked.into(),
            nack: nack.map(Into::into),
        }
    }

    #[test]
    fn states_follow_istio() {
        assert_eq!(state(&status("", "", None)), "NOT SENT");
        assert_eq!(state(&status("a", "a", None)), "SYNCED");
        assert_eq!(state(&status("", "a", None)), "SYNCED", "held from before");
        assert_eq!(state(&status("b", "a", None)), "STALE");
        assert_eq!(state(&status("b", "a", Some("bad"))), "NACK");
    }

    #[test]
    fn the_table_shows_acked_against_latest_and_nack_reasons() {
        let syncz = Syncz {
            generation: 4,
            proxies: vec![
                ProxyStatus {
                    id: "reviews-v1.default".into(),
                    workload: "reviews-v1".into(),
                    namespace: "default".into(),
                    admin: "127.0.0.1:15102".into(),
                    generation: 4,
                    synced: true,
                    config: status("0123456789abcdef", "0123456789abcdef", None),
                    endpoints: status("e1", "e1", None),
                    problems: vec![],
                },
                ProxyStatus {
                    id: "details-v1.default".into(),
                    workload: "details-v1".into(),
                    namespace: "default".into(),
                    generation: 3,
                    config: status(
                        "fedcba9876543210",
                        "0123456789abcdef",
                        Some("listener x: bad address"),
                    ),
                    endpoints: status("e1", "e1", None),
                    problems: vec!["no route to ratings".into()],
                    ..Default::default()
                },
            ],
        };
        let all: Vec<&ProxyStatus> = syncz.proxies.iter().collect();
        let text = render(&syncz, &all);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NAME "), "{text}");
        // By id: details before reviews, though reviews connected first.
        assert!(
            lines[1].contains("NACK")
                && lines[1].contains("0123456789ab -> fedcba987654")
                && lines[1].contains("3/4"),
            "{text}"
        );
        assert!(
            lines[2].contains("SYNCED")
                && lines[2].contains("0123456789ab ")
                && lines[2].contains("4/4"),
            "{text}"
        );
        assert_eq!(
            lines[3],
            "details-v1.default: CONFIG NACK: listener x: bad address"
        );
        assert_eq!(lines[4], "details-v1.default: no route to ratings");
    }
}
