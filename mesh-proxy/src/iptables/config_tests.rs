//! Flag parsing and validation: defaults, `*` forms and the errors for bad values.

use super::config::{Config, ConfigError, Inbound, Outbound, Ports};
use super::parse_args;

fn config(flags: &[&str]) -> Result<Config, ConfigError> {
    Config::from_args(&parse_args(flags).unwrap())
}

fn ok(flags: &[&str]) -> Config {
    config(flags).unwrap()
}

fn err(flags: &[&str]) -> String {
    config(flags).unwrap_err().to_string()
}

#[test]
fn defaults_are_istios() {
    let cfg = ok(&[]);
    assert_eq!(cfg.outbound_port, 15001);
    assert_eq!(cfg.inbound_port, 15006);
    assert_eq!(cfg.tunnel_port, 15008);
    assert_eq!(cfg.uids, vec![1337]);
    // The gid defaults to the uid.
    assert_eq!(cfg.gids, vec![1337]);
    // As in istio-iptables, empty include lists capture nothing.
    assert_eq!(cfg.inbound, Inbound::Disabled);
    assert_eq!(cfg.outbound, Outbound::Disabled);
    assert!(cfg.outbound_exclude.is_empty());
    assert!(cfg.outbound_ports_include.is_empty());
    assert!(cfg.outbound_ports_exclude.is_empty());
}

#[test]
fn short_and_long_flags_are_istios() {
    let short = ok(&[
        "-p",
        "16001",
        "-z",
        "16006",
        "-e",
        "16008",
        "-u",
        "1000",
        "-g",
        "2000",
        "-m",
        "REDIRECT",
        "-b",
        "80,8080",
        "-d",
        "22",
        "-i",
        "198.18.0.0/15",
        "-x",
        "198.19.1.0/24",
        "-q",
        "3306",
        "-o",
        "5432",
    ]);
    let long = ok(&[
        "--envoy-port=16001",
        "--inbound-capture-port=16006",
        "--inbound-tunnel-port=16008",
        "--proxy-uid=1000",
        "--proxy-gid=2000",
        "--istio-inbound-interception-mode=REDIRECT",
        "--istio-inbound-ports=80,8080",
        "--istio-local-exclude-ports=22",
        "--istio-service-cidr=198.18.0.0/15",
        "--istio-service-exclude-cidr=198.19.1.0/24",
        "--istio-outbound-ports=3306",
        "--istio-local-outbound-ports-exclude=5432",
    ]);
    assert_eq!(short, long);
    assert_eq!(short.outbound_port, 16001);
    assert_eq!(short.inbound_port, 16006);
    assert_eq!(short.tunnel_port, 16008);
    assert_eq!(short.uids, vec![1000]);
    assert_eq!(short.gids, vec![2000]);
    assert_eq!(
        short.inbound,
        Inbound::Ports(vec![Ports::one(80), Ports::one(8080)])
    );
    assert_eq!(
        short.outbound,
        Outbound::Cidrs(vec!["198.18.0.0/15".parse().unwrap()])
    );
    assert_eq!(
        short.outbound_exclude,
        vec!["198.19.1.0/24".parse().unwrap()]
    );
    assert_eq!(short.outbound_ports_include, vec![Ports::one(3306)]);
    assert_eq!(short.outbound_ports_exclude, vec![Ports::one(5432)]);
}

#[test]
fn wildcards_capture_everything() {
    let cfg = ok(&["-b", "*", "-d", "22, 9000:9010", "-i", "*"]);
    assert_eq!(
        cfg.inbound,
        Inbound::All {
            except: vec![
                Ports::one(22),
                Ports {
                    first: 9000,
                    last: 9010
                }
            ]
        }
    );
    assert_eq!(cfg.outbound, Outbound::All);
    // -d only matters with `-b '*'`, as in Istio.
    assert_eq!(
        ok(&["-b", "80", "-d", "22"]).inbound,
        Inbound::Ports(vec![Ports::one(80)])
    );
}

#[test]
fn lists_tolerate_blanks_and_spaces() {
    let cfg = ok(&["-b", " 80 ,, 443 ,", "-u", "1337, 1338", "-i", ""]);
    assert_eq!(
        cfg.inbound,
        Inbound::Ports(vec![Ports::one(80), Ports::one(443)])
    );
    assert_eq!(cfg.uids, vec![1337, 1338]);
    assert_eq!(cfg.gids, vec![1337, 1338]);
    assert_eq!(cfg.outbound, Outbound::Disabled);
}

#[test]
fn loopback_includes_are_noticed() {
    assert!(ok(&["-i", "127.0.0.1/32,198.18.0.0/15"]).captures_loopback());
    assert!(ok(&["-i", "::1/128"]).captures_loopback());
    assert!(!ok(&["-i", "198.18.0.0/15"]).captures_loopback());
    assert!(!ok(&["-i", "*"]).captures_loopback());
}

#[test]
fn bad_ports_are_rejected_with_the_flag_and_value() {
    assert_eq!(
        err(&["-b", "80,70000"]),
        "--istio-inbound-ports: `70000` is not a port (1-65535) or a port range FIRST:LAST"
    );
    assert!(err(&["-b", "*", "-d", "http"]).starts_with("--istio-local-exclude-ports: `http`"));
    assert!(err(&["-o", "0"]).starts_with("--istio-local-outbound-ports-exclude: `0`"));
    assert!(err(&["-q", "90:80"]).starts_with("--istio-outbound-ports: `90:80`"));
    assert!(err(&["-b", "*,80"]).starts_with("--istio-inbound-ports: `*`"));
    assert!(err(&["-d", "*", "-b", "*"]).starts_with("--istio-local-exclude-ports: `*`"));
}

#[test]
fn capture_ports_are_checked_by_the_parser() {
    for flags in [["-p", "0"], ["-z", "65536"], ["-p", "http"], ["-e", "-1"]] {
        assert!(parse_args(&flags).is_err(), "{flags:?}");
    }
}

#[test]
fn bad_cidrs_are_rejected_with_the_flag_value_and_reason() {
    assert_eq!(
        err(&["-i", "198.18.0.0/15,198.18.0.0/40"]),
        "--istio-service-cidr: `198.18.0.0/40` is not a CIDR range: prefix length `40` is not in 0-32"
    );
    assert_eq!(
        err(&["-x", "198.18.0/24"]),
        "--istio-service-exclude-cidr: `198.18.0/24` is not a CIDR range: `198.18.0` is not an IP address"
    );
    assert_eq!(
        err(&["-x", "*"]),
        "--istio-service-exclude-cidr: `*` is not allowed here"
    );
    assert!(err(&["-i", "198.18.0.0/15,*"]).starts_with("--istio-service-cidr: `*`"));
}

#[test]
fn ids_must_be_numeric_and_present() {
    assert_eq!(
        err(&["-u", "istio-proxy"]),
        "--proxy-uid: `istio-proxy` is not a numeric id"
    );
    assert!(err(&["-g", "1337,x"]).starts_with("--proxy-gid: `x`"));
    assert!(err(&["-u", ""]).starts_with("--proxy-uid: at least one id is needed"));
    assert!(err(&["-g", " , "]).starts_with("--proxy-gid: at least one id is needed"));
}

#[test]
fn only_redirect_interception_is_supported() {
    assert!(config(&["-m", "REDIRECT"]).is_ok());
    assert!(config(&["-m", ""]).is_ok());
    assert_eq!(config(&["-m", "TPROXY"]).unwrap_err(), ConfigError::Tproxy);
    assert!(err(&["-m", "TPROXY"]).contains("TPROXY is not supported; use REDIRECT"));
    assert_eq!(
        err(&["-m", "NAT"]),
        "--istio-inbound-interception-mode: `NAT` is not REDIRECT or TPROXY"
    );
}

#[test]
fn mode_flags_parse() {
    let args = parse_args(&["--dry-run", "--cleanup", "--ipv6"]).unwrap();
    assert!(args.dry_run && args.cleanup && args.ipv6);
    let args = parse_args(&["-n"]).unwrap();
    assert!(args.dry_run && !args.cleanup && !args.ipv6);
}
