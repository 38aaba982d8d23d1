//! Validation of the flags into a typed [`Config`]: every port, id and range is checked
//! before a single iptables command runs, so a bad flag never leaves a half-installed pod.

use std::fmt;

use super::args::IptablesArgs;
use super::net::Cidr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("--{flag}: `{value}` is not a port (1-65535) or a port range FIRST:LAST")]
    BadPort { flag: &'static str, value: String },
    #[error("--{flag}: `{value}` is not a CIDR range: {reason}")]
    BadCidr {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error("--{flag}: `*` is not allowed here")]
    Wildcard { flag: &'static str },
    #[error("--{flag}: `{value}` is not a numeric id")]
    BadId { flag: &'static str, value: String },
    #[error("--{flag}: at least one id is needed, or the proxy's own traffic would be captured")]
    NoIds { flag: &'static str },
    #[error(
        "--istio-inbound-interception-mode: TPROXY is not supported; use REDIRECT \
         (the proxy reads the original destination with SO_ORIGINAL_DST)"
    )]
    Tproxy,
    #[error("--istio-inbound-interception-mode: `{0}` is not REDIRECT or TPROXY")]
    BadMode(String),
}

/// A port or an inclusive port range, as `--dport` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub first: u16,
    pub last: u16,
}

impl Ports {
    pub const fn one(port: u16) -> Self {
        Ports {
            first: port,
            last: port,
        }
    }
}

impl fmt::Display for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}:{}", self.first, self.last)
        }
    }
}

/// Which inbound connections go to the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    Disabled,
    /// `-b '*'`: every port except these (`-d`).
    All {
        except: Vec<Ports>,
    },
    Ports(Vec<Ports>),
}

/// Which outbound destinations go to the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    Disabled,
    All,
    Cidrs(Vec<Cidr>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub outbound_port: u16,
    pub inbound_port: u16,
    pub tunnel_port: u16,
    pub uids: Vec<u32>,
    pub gids: Vec<u32>,
    pub inbound: Inbound,
    pub outbound: Outbound,
    pub outbound_exclude: Vec<Cidr>,
    pub outbound_ports_include: Vec<Ports>,
    pub outbound_ports_exclude: Vec<Ports>,
}

impl Config {
    pub fn from_args(args: &IptablesArgs) -> Result<Self, ConfigError> {
        match args.inbound_interception_mode.trim() {
            "" | "REDIRECT" => {}
            "TPROXY" => return Err(ConfigError::Tproxy),
            other => return Err(ConfigError::BadMode(other.to_string())),
        }
        let uids = ids("proxy-uid", &args.proxy_uid)?;
        let gids = match &args.proxy_gid {
            Some(gids) => ids("proxy-gid", gids)?,
            None => uids.clone(),
        };
        let inbound = if is_wildcard(&args.inbound_ports) {
            Inbound::All {
                except: ports("istio-local-exclude-ports", &args.local_exclude_ports)?,
            }
        } else {
            let ports = ports("istio-inbound-ports", &args.inbound_ports)?;
            if ports.is_empty() {
                Inbound::Disabled
            } else {
                Inbound::Ports(ports)
            }
        };
        let outbound = if is_wildcard(&args.service_cidr) {
            Outbound::All
        } else {
            let cidrs = cidrs("istio-service-cidr", &args.service_cidr)?;
            if cidrs.is_empty() {
                Outbound::Disabled
            } else {
                Outbound::Cidrs(cidrs)
            }
        };
        Ok(Config {
            outbound_port: args.envoy_port,
            inbound_port: args.inbound_capture_port,
            tunnel_port: args.inbound_tunnel_port,
            uids,
            gids,
            inbound,
            outbound,
            outbound_exclude: cidrs("istio-service-exclude-cidr", &args.service_exclude_cidr)?,
            outbound_ports_include: ports("istio-outbound-ports", &args.outbound_ports)?,
            outbound_ports_exclude: ports(
                "istio-local-outbound-ports-exclude",
                &args.local_outbound_ports_exclude,
            )?,
        })
    }

    /// Whether the app asked for loopback destinations to be captured (`-i 127.0.0.1/32`).
    pub fn captures_loopback(&self) -> bool {
        match &self.outbound {
            Outbound::Cidrs(cidrs) => cidrs.iter().any(Cidr::is_loopback),
            Outbound::All | Outbound::Disabled => false,
        }
    }
}

fn is_wildcard(value: &str) -> bool {
    value.trim() == "*"
}

/// Comma-separated items, blanks ignored, as Istio splits its lists.
fn items(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn ports(flag: &'static str, value: &str) -> Result<Vec<Ports>, ConfigError> {
    items(value)
        .map(|item| {
            let bad = || ConfigError::BadPort {
                flag,
                value: item.to_string(),
            };
            let port = |s: &str| s.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad);
            match item.split_once(':') {
                None => Ok(Ports::one(port(item)?)),
                Some((first, last)) => {
                    let ports = Ports {
                        first: port(first)?,
                        last: port(last)?,
                    };
                    if ports.first > ports.last {
                        return Err(bad());
                    }
                    Ok(ports)
                }
            }
        })
        .collect()
}

fn cidrs(flag: &'static str, value: &str) -> Result<Vec<Cidr>, ConfigError> {
    items(value)
        .map(|item| {
            if item == "*" {
                return Err(ConfigError::Wildcard { flag });
            }
            item.parse().map_err(|reason| ConfigError::BadCidr {
                flag,
                value: item.to_string(),
                reason,
            })
        })
        .collect()
}

fn ids(flag: &'static str, value: &str) -> Result<Vec<u32>, ConfigError> {
    let ids = items(value)
        .map(|item| {
            item.parse().map_err(|_| ConfigError::BadId {
                flag,
                value: item.to_string(),
            })
        })
        .collect::<Result<Vec<u32>, _>>()?;
    if ids.is_empty() {
        return Err(ConfigError::NoIds { flag });
    }
    Ok(ids)
}
