//! Command-line flags, named as Istio's `istio-iptables` names them so an injection template
//! written for Istio works unchanged. Lists stay strings here (as in Istio, where `*` and the
//! empty string carry meaning); [`super::config`] validates them.

use clap::builder::RangedI64ValueParser;
use clap::value_parser;

/// Flags and semantics as Istio's istio-iptables.
#[derive(clap::Args, Debug, Clone)]
pub struct IptablesArgs {
    /// Port to which all captured outbound TCP traffic is redirected.
    #[arg(
        short = 'p',
        long = "envoy-port",
        env = "ENVOY_PORT",
        default_value_t = 15001,
        value_parser = port()
    )]
    pub envoy_port: u16,

    /// Port to which all captured inbound TCP traffic is redirected.
    #[arg(
        short = 'z',
        long = "inbound-capture-port",
        env = "INBOUND_CAPTURE_PORT",
        default_value_t = 15006,
        value_parser = port()
    )]
    pub inbound_capture_port: u16,

    /// The proxy's tunnel port: inbound traffic to it is never captured.
    #[arg(
        short = 'e',
        long = "inbound-tunnel-port",
        env = "INBOUND_TUNNEL_PORT",
        default_value_t = 15008,
        value_parser = port()
    )]
    pub inbound_tunnel_port: u16,

    /// Comma-separated UIDs whose traffic is not redirected (the proxy's own user).
    #[arg(
        short = 'u',
        long = "proxy-uid",
        env = "PROXY_UID",
        default_value = "1337"
    )]
    pub proxy_uid: String,

    /// Comma-separated GIDs whose traffic is not redirected [default: same as --proxy-uid].
    #[arg(short = 'g', long = "proxy-gid", env = "PROXY_GID")]
    pub proxy_gid: Option<String>,

    /// How inbound connections are redirected: REDIRECT (TPROXY is not supported).
    #[arg(
        short = 'm',
        long = "istio-inbound-interception-mode",
        env = "ISTIO_INBOUND_INTERCEPTION_MODE",
        default_value = "REDIRECT"
    )]
    pub inbound_interception_mode: String,

    /// Comma-separated inbound ports to capture; `*` captures all; empty disables inbound capture.
    #[arg(
        short = 'b',
        long = "istio-inbound-ports",
        env = "ISTIO_INBOUND_PORTS",
        default_value = ""
    )]
    pub inbound_ports: String,

    /// Comma-separated inbound ports never captured; only applies with `-b '*'`.
    #[arg(
        short = 'd',
        long = "istio-local-exclude-ports",
        env = "ISTIO_LOCAL_EXCLUDE_PORTS",
        default_value = ""
    )]
    pub local_exclude_ports: String,

    /// Comma-separated outbound CIDRs to capture; `*` captures all; empty disables (except -q).
    #[arg(
        short = 'i',
        long = "istio-service-cidr",
        env = "ISTIO_SERVICE_CIDR",
        default_value = ""
    )]
    pub service_cidr: String,

    /// Comma-separated outbound CIDRs never captured.
    #[arg(
        short = 'x',
        long = "istio-service-exclude-cidr",
        env = "ISTIO_SERVICE_EXCLUDE_CIDR",
        default_value = ""
    )]
    pub service_exclude_cidr: String,

    /// Comma-separated outbound ports always captured, whatever the destination.
    #[arg(
        short = 'q',
        long = "istio-outbound-ports",
        env = "ISTIO_OUTBOUND_PORTS",
        default_value = ""
    )]
    pub outbound_ports: String,

    /// Comma-separated outbound ports never captured.
    #[arg(
        short = 'o',
        long = "istio-local-outbound-ports-exclude",
        env = "ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE",
        default_value = ""
    )]
    pub local_outbound_ports_exclude: String,

    /// Program ip6tables too, even when no global IPv6 address is found on the pod.
    #[arg(long)]
    pub ipv6: bool,

    /// Print the commands instead of running them.
    #[arg(short = 'n', long)]
    pub dry_run: bool,

    /// Remove the chains and jumps this command installs (idempotent), instead of installing.
    #[arg(long)]
    pub cleanup: bool,
}

/// Ports 1-65535: port 0 would make REDIRECT pick an arbitrary port.
fn port() -> RangedI64ValueParser<u16> {
    value_parser!(u16).range(1..)
}
