//! The rules each flag produces, checked as the command lines `--dry-run` prints.

use super::detect::Env;
use super::{cleanup_plan, dry_run_text, parse_args, plan};

const V4: Env = Env { ipv6: false };
const V6: Env = Env { ipv6: true };

fn lines(flags: &[&str], env: &Env) -> Vec<String> {
    let commands = plan(&parse_args(flags).unwrap(), env).unwrap();
    dry_run_text(&commands)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The install lines (after the cleanup prefix), without the `iptables -t nat ` head.
fn rules(flags: &[&str], env: &Env) -> Vec<String> {
    let skip = cleanup_plan(env).len();
    lines(flags, env)
        .into_iter()
        .skip(skip)
        .map(|l| l.replacen("iptables -t nat ", "", 1))
        .collect()
}

fn has(rules: &[String], rule: &str) -> bool {
    rules.iter().any(|r| r == rule)
}

fn position(rules: &[String], rule: &str) -> usize {
    rules
        .iter()
        .position(|r| r == rule)
        .unwrap_or_else(|| panic!("missing `{rule}` in {rules:#?}"))
}

/// What the injector passes for a default pod.
const INJECTED: &[&str] = &[
    "-p",
    "15001",
    "-z",
    "15006",
    "-u",
    "1337",
    "-m",
    "REDIRECT",
    "-i",
    "*",
    "-x",
    "",
    "-b",
    "*",
    "-d",
    "15090,15021,15020",
];

#[test]
fn a_default_injected_pod() {
    let expected = "\
iptables -t nat -D PREROUTING -p tcp -j MESH_INBOUND
iptables -t nat -D OUTPUT -p tcp -j MESH_OUTPUT
iptables -t nat -F MESH_INBOUND
iptables -t nat -F MESH_REDIRECT
iptables -t nat -F MESH_IN_REDIRECT
iptables -t nat -F MESH_OUTPUT
iptables -t nat -X MESH_INBOUND
iptables -t nat -X MESH_REDIRECT
iptables -t nat -X MESH_IN_REDIRECT
iptables -t nat -X MESH_OUTPUT
iptables -t nat -N MESH_INBOUND
iptables -t nat -N MESH_REDIRECT
iptables -t nat -N MESH_IN_REDIRECT
iptables -t nat -N MESH_OUTPUT
iptables -t nat -A MESH_REDIRECT -p tcp -j REDIRECT --to-ports 15001
iptables -t nat -A MESH_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
iptables -t nat -A PREROUTING -p tcp -j MESH_INBOUND
iptables -t nat -A MESH_INBOUND -p tcp --dport 15008 -j RETURN
iptables -t nat -A MESH_INBOUND -p tcp --dport 15090 -j RETURN
iptables -t nat -A MESH_INBOUND -p tcp --dport 15021 -j RETURN
iptables -t nat -A MESH_INBOUND -p tcp --dport 15020 -j RETURN
iptables -t nat -A MESH_INBOUND -p tcp --dport 15001 -j RETURN
iptables -t nat -A MESH_INBOUND -p tcp --dport 15006 -j RETURN
iptables -t nat -A MESH_INBOUND -p tcp -j MESH_IN_REDIRECT
iptables -t nat -A OUTPUT -p tcp -j MESH_OUTPUT
iptables -t nat -A MESH_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN
iptables -t nat -A MESH_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j MESH_IN_REDIRECT
iptables -t nat -A MESH_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
iptables -t nat -A MESH_OUTPUT -m owner --uid-owner 1337 -j RETURN
iptables -t nat -A MESH_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j MESH_IN_REDIRECT
iptables -t nat -A MESH_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
iptables -t nat -A MESH_OUTPUT -m owner --gid-owner 1337 -j RETURN
iptables -t nat -A MESH_OUTPUT -d 127.0.0.1/32 -j RETURN
iptables -t nat -A MESH_OUTPUT -j MESH_REDIRECT
";
    let got = dry_run_text(&plan(&parse_args(INJECTED).unwrap(), &V4).unwrap());
    assert_eq!(got, expected);
}

#[test]
fn install_starts_with_cleanup_so_it_can_run_twice() {
    for env in [V4, V6] {
        let commands = plan(&parse_args(INJECTED).unwrap(), &env).unwrap();
        let cleanup = cleanup_plan(&env);
        assert_eq!(commands[..cleanup.len()], cleanup[..]);
        assert!(cleanup.iter().all(|c| c.missing_ok));
        // Everything after the cleanup must succeed.
        assert!(commands[cleanup.len()..].iter().all(|c| !c.missing_ok));
    }
}

#[test]
fn cleanup_removes_jumps_then_flushes_then_deletes_every_chain() {
    let text = dry_run_text(&cleanup_plan(&V4));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 10);
    assert!(lines[..2].iter().all(|l| l.contains(" -D ")));
    assert!(lines[2..6].iter().all(|l| l.contains(" -F MESH_")));
    assert!(lines[6..].iter().all(|l| l.contains(" -X MESH_")));
    // Every jump install adds is one cleanup removes.
    for rule in rules(INJECTED, &V4)
        .iter()
        .filter(|r| r.starts_with("-A PREROUTING") || r.starts_with("-A OUTPUT"))
    {
        let delete = format!("iptables -t nat {}", rule.replacen("-A", "-D", 1));
        assert!(lines.contains(&delete.as_str()), "{delete}");
    }
}

#[test]
fn ipv6_repeats_the_rules_with_ip6tables_and_v6_addresses() {
    let all = lines(INJECTED, &V6);
    let v4: Vec<&String> = all.iter().filter(|l| l.starts_with("iptables ")).collect();
    let v6: Vec<&String> = all.iter().filter(|l| l.starts_with("ip6tables ")).collect();
    assert_eq!(v4.len() + v6.len(), all.len());
    assert_eq!(v4.len(), v6.len());
    assert!(v6.iter().all(|l| !l.contains("127.0.0.")));
    assert!(
        v6.iter()
            .any(|l| l.ends_with("-A MESH_OUTPUT -o lo -s ::6/128 -j RETURN"))
    );
    assert!(
        v6.iter()
            .any(|l| l.ends_with("-A MESH_OUTPUT -d ::1/128 -j RETURN"))
    );
    assert!(v6.iter().any(|l| {
        l.contains("-o lo ! -d ::1/128 -p tcp ! --dport 15008 -m owner --uid-owner 1337")
    }));
    // Both families are cleaned up before either is installed.
    let first_install = all.iter().position(|l| l.contains(" -N ")).unwrap();
    assert!(
        all[..first_install]
            .iter()
            .all(|l| l.contains(" -D ") || l.contains(" -F ") || l.contains(" -X "))
    );
    assert!(all[first_install..].iter().all(|l| !l.contains(" -D ")));
}

#[test]
fn without_ipv6_ip6tables_is_never_called() {
    assert!(
        lines(INJECTED, &V4)
            .iter()
            .all(|l| l.starts_with("iptables -t nat "))
    );
    assert!(
        dry_run_text(&cleanup_plan(&V4))
            .lines()
            .all(|l| l.starts_with("iptables "))
    );
}

#[test]
fn capture_ports_set_the_redirect_targets() {
    let r = rules(&["-p", "16001", "-z", "16006", "-b", "*", "-i", "*"], &V4);
    assert!(has(
        &r,
        "-A MESH_REDIRECT -p tcp -j REDIRECT --to-ports 16001"
    ));
    assert!(has(
        &r,
        "-A MESH_IN_REDIRECT -p tcp -j REDIRECT --to-ports 16006"
    ));
    // The capture ports themselves are never captured inbound.
    assert!(has(&r, "-A MESH_INBOUND -p tcp --dport 16001 -j RETURN"));
    assert!(has(&r, "-A MESH_INBOUND -p tcp --dport 16006 -j RETURN"));
    assert!(!r.iter().any(|l| l.contains("15001") || l.contains("15006")));
}

#[test]
fn tunnel_port_is_never_captured() {
    let r = rules(&["-e", "16008", "-b", "*"], &V4);
    assert!(has(&r, "-A MESH_INBOUND -p tcp --dport 16008 -j RETURN"));
    assert!(
        r.iter()
            .any(|l| l.contains("! --dport 16008 -m owner --uid-owner 1337"))
    );
}

#[test]
fn inbound_wildcard_redirects_all_but_excluded_and_proxy_ports() {
    let r = rules(&["-b", "*", "-d", "22,9000:9010,15021"], &V4);
    let catch_all = position(&r, "-A MESH_INBOUND -p tcp -j MESH_IN_REDIRECT");
    for port in [
        "15008",
        "15090",
        "15021",
        "15020",
        "15001",
        "15006",
        "22",
        "9000:9010",
    ] {
        let rule = format!("-A MESH_INBOUND -p tcp --dport {port} -j RETURN");
        assert!(position(&r, &rule) < catch_all, "{rule}");
        // Listed once even when also given with -d.
        assert_eq!(r.iter().filter(|l| **l == rule).count(), 1, "{rule}");
    }
}

#[test]
fn inbound_port_list_redirects_only_those_ports() {
    let r = rules(&["-b", "80,8080", "-d", "22"], &V4);
    assert!(has(&r, "-A PREROUTING -p tcp -j MESH_INBOUND"));
    // Each listed port after the bypass RETURNs.
    let bypass = position(&r, "-A MESH_INBOUND -p tcp --dport 15006 -j RETURN");
    assert!(position(&r, "-A MESH_INBOUND -p tcp --dport 80 -j MESH_IN_REDIRECT") > bypass);
    assert!(has(
        &r,
        "-A MESH_INBOUND -p tcp --dport 8080 -j MESH_IN_REDIRECT"
    ));
    assert!(!has(&r, "-A MESH_INBOUND -p tcp -j MESH_IN_REDIRECT"));
    // -d is Istio's "only with *": ignored here.
    assert!(!r.iter().any(|l| l.contains("--dport 22")));
    // An explicitly listed proxy port is still not captured: its RETURN comes first.
    let r = rules(&["-b", "15021,80"], &V4);
    assert!(
        position(&r, "-A MESH_INBOUND -p tcp --dport 15021 -j RETURN")
            < position(
                &r,
                "-A MESH_INBOUND -p tcp --dport 15021 -j MESH_IN_REDIRECT"
            )
    );
}

#[test]
fn empty_inbound_ports_install_no_inbound_capture() {
    let r = rules(&["-b", "", "-i", "*"], &V4);
    assert!(!r.iter().any(|l| l.contains("PREROUTING")));
    assert!(!r.iter().any(|l| l.starts_with("-A MESH_INBOUND")));
    // The chain still exists, so cleanup and install stay symmetric.
    assert!(has(&r, "-N MESH_INBOUND"));
}

#[test]
fn outbound_wildcard_redirects_everything_not_exempted() {
    let r = rules(&["-i", "*"], &V4);
    let redirect = position(&r, "-A MESH_OUTPUT -j MESH_REDIRECT");
    assert_eq!(redirect, r.len() - 1);
    for exempt in [
        "-A MESH_OUTPUT -m owner --uid-owner 1337 -j RETURN",
        "-A MESH_OUTPUT -m owner --gid-owner 1337 -j RETURN",
        "-A MESH_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN",
        "-A MESH_OUTPUT -d 127.0.0.1/32 -j RETURN",
        "-A MESH_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN",
    ] {
        assert!(position(&r, exempt) < redirect, "{exempt}");
    }
}

#[test]
fn outbound_cidrs_redirect_only_those_ranges_of_the_right_family() {
    let flags = ["-i", "198.18.0.0/16,2001:db8::/32"];
    let r = rules(&flags, &V4);
    assert!(has(&r, "-A MESH_OUTPUT -d 198.18.0.0/16 -j MESH_REDIRECT"));
    assert!(!has(&r, "-A MESH_OUTPUT -j MESH_REDIRECT"));
    assert!(!r.iter().any(|l| l.contains("2001:db8")));
    let all = lines(&flags, &V6);
    assert!(all.contains(
        &"ip6tables -t nat -A MESH_OUTPUT -d 2001:db8::/32 -j MESH_REDIRECT".to_string()
    ));
    assert!(
        !all.iter()
            .any(|l| l.starts_with("ip6tables") && l.contains("198.18."))
    );
}

#[test]
fn empty_outbound_cidrs_redirect_nothing_but_keep_exemptions() {
    let r = rules(&["-i", ""], &V4);
    assert!(!r.iter().any(|l| l.ends_with("-j MESH_REDIRECT")));
    assert!(has(&r, "-A OUTPUT -p tcp -j MESH_OUTPUT"));
}

#[test]
fn excluded_cidrs_return_before_any_redirect() {
    let r = rules(
        &["-i", "*", "-x", "198.18.4.0/24,198.19.0.1,2001:db8::/48"],
        &V4,
    );
    let redirect = position(&r, "-A MESH_OUTPUT -j MESH_REDIRECT");
    assert!(position(&r, "-A MESH_OUTPUT -d 198.18.4.0/24 -j RETURN") < redirect);
    assert!(position(&r, "-A MESH_OUTPUT -d 198.19.0.1/32 -j RETURN") < redirect);
    assert!(!r.iter().any(|l| l.contains("2001:db8")));
    let all = lines(&["-i", "*", "-x", "2001:db8::/48"], &V6);
    assert!(
        all.contains(&"ip6tables -t nat -A MESH_OUTPUT -d 2001:db8::/48 -j RETURN".to_string())
    );
}

#[test]
fn excluded_outbound_ports_return_first() {
    let r = rules(&["-i", "*", "-o", "5432,6379:6380"], &V4);
    assert!(
        position(&r, "-A MESH_OUTPUT -p tcp --dport 5432 -j RETURN")
            < position(&r, "-A MESH_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN")
    );
    assert!(has(&r, "-A MESH_OUTPUT -p tcp --dport 6379:6380 -j RETURN"));
}

#[test]
fn included_outbound_ports_redirect_whatever_the_destination() {
    let r = rules(&["-i", "", "-q", "3306"], &V4);
    let rule = position(&r, "-A MESH_OUTPUT -p tcp --dport 3306 -j MESH_REDIRECT");
    // ...but after the proxy's own traffic is exempted.
    assert!(position(&r, "-A MESH_OUTPUT -m owner --uid-owner 1337 -j RETURN") < rule);
}

#[test]
fn several_uids_and_a_separate_gid() {
    let r = rules(&["-u", "1337,1338", "-g", "2000", "-i", "*"], &V4);
    for owner in ["--uid-owner 1337", "--uid-owner 1338", "--gid-owner 2000"] {
        assert!(
            has(&r, &format!("-A MESH_OUTPUT -m owner {owner} -j RETURN")),
            "{owner}"
        );
    }
    assert!(!r.iter().any(|l| l.contains("--gid-owner 1337")));
}

#[test]
fn an_included_loopback_range_keeps_app_to_self_traffic_captured() {
    let r = rules(&["-i", "127.0.0.1/32"], &V4);
    assert!(!r.iter().any(|l| l.contains("-o lo -m owner !")));
    assert!(has(&r, "-A MESH_OUTPUT -d 127.0.0.1/32 -j MESH_REDIRECT"));
    // The proxy's own calls to the pod IP still go inbound.
    assert!(
        r.iter()
            .any(|l| l.ends_with("--uid-owner 1337 -j MESH_IN_REDIRECT"))
    );
}

#[test]
fn invalid_flags_produce_no_plan() {
    let args = parse_args(&["-i", "198.18.0.0/99"]).unwrap();
    assert!(plan(&args, &V4).is_err());
    let args = parse_args(&["-m", "TPROXY"]).unwrap();
    assert!(plan(&args, &V4).is_err());
}
