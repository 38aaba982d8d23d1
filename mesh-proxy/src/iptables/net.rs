//! IP families and CIDR ranges, validated before they reach iptables so a typo is reported
//! with the flag it came from instead of as an iptables usage error halfway through install.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Which iptables binary a rule is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn iptables(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }

    pub fn iptables_save(self) -> &'static str {
        match self {
            Family::V4 => "iptables-save",
            Family::V6 => "ip6tables-save",
        }
    }

    /// The address the app and the proxy use to reach each other without capture.
    pub fn localhost(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.1/32",
            Family::V6 => "::1/128",
        }
    }

    /// Source address of the proxy's inbound passthrough connections (Istio's 127.0.0.6).
    pub fn passthrough_source(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.6/32",
            Family::V6 => "::6/128",
        }
    }
}

/// An address range; host bits are cleared so the rule reads as iptables-save prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    pub fn family(&self) -> Family {
        match self.addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    pub fn is_loopback(&self) -> bool {
        self.addr.is_loopback()
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = match s.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{addr}` is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        // A bare address is a single host, as iptables reads `-d 198.18.0.1`.
        let len = match len {
            None => max,
            Some(len) => len
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("prefix length `{len}` is not in 0-{max}"))?,
        };
        let addr = match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        Ok(Cidr { addr, len })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_normalises_ranges() {
        assert_eq!(cidr("198.18.0.0/15").to_string(), "198.18.0.0/15");
        assert_eq!(cidr("198.19.7.9/15").to_string(), "198.18.0.0/15");
        assert_eq!(cidr("198.18.0.1").to_string(), "198.18.0.1/32");
        assert_eq!(cidr("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert_eq!(cidr("2001:db8::1/32").to_string(), "2001:db8::/32");
        assert_eq!(cidr("::/0").to_string(), "::/0");
        assert_eq!(cidr("2001:db8::1").to_string(), "2001:db8::1/128");
    }

    #[test]
    fn knows_family_and_loopback() {
        assert_eq!(cidr("198.18.0.0/15").family(), Family::V4);
        assert_eq!(cidr("2001:db8::/32").family(), Family::V6);
        assert!(cidr("127.0.0.1/32").is_loopback());
        assert!(cidr("::1/128").is_loopback());
        assert!(!cidr("198.18.0.0/15").is_loopback());
    }

    #[test]
    fn rejects_bad_ranges_with_a_reason() {
        assert_eq!(
            "198.18.0.0/33".parse::<Cidr>().unwrap_err(),
            "prefix length `33` is not in 0-32"
        );
        assert_eq!(
            "2001:db8::/129".parse::<Cidr>().unwrap_err(),
            "prefix length `129` is not in 0-128"
        );
        assert_eq!(
            "198.18.0/24".parse::<Cidr>().unwrap_err(),
            "`198.18.0` is not an IP address"
        );
        assert_eq!(
            "300.1.1.1/8".parse::<Cidr>().unwrap_err(),
            "`300.1.1.1` is not an IP address"
        );
        assert!("198.18.0.0/".parse::<Cidr>().is_err());
        assert!("198.18.0.0/-1".parse::<Cidr>().is_err());
        assert!("*".parse::<Cidr>().is_err());
    }
}
