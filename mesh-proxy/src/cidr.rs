//! CIDR blocks or single addresses, parsed with std: layer 4 route `destinationSubnets`,
//! AuthorizationPolicy `ipBlocks` / `remoteIpBlocks` and the `source.ip` / `remote.ip`
//! conditions.

use std::fmt;
use std::net::IpAddr;

#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    len: u8,
}

impl Cidr {
    /// `198.18.0.0/15`, `198.18.0.1`, `2001:db8::/32` or `2001:db8::1`. Host bits are
    /// masked, as Envoy does.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR block"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0..={max}"))?,
        };
        Ok(Cidr {
            net: mask(net, len),
            len,
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // A dual-stack socket reports IPv4 addresses as ::ffff:a.b.c.d.
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.net.is_ipv4() && mask(ip, self.len) == self.net
    }
}

impl fmt::Debug for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.len)
    }
}

fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let m = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & m).into())
        }
        IpAddr::V6(v6) => {
            let m = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & m).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(c: &str, ip: &str) -> bool {
        Cidr::parse(c).unwrap().contains(ip.parse().unwrap())
    }

    #[test]
    fn v4() {
        assert!(has("198.18.0.0/15", "198.19.255.255"));
        assert!(!has("198.18.0.0/15", "198.20.0.0"));
        assert!(has("198.18.0.7", "198.18.0.7"));
        assert!(!has("198.18.0.7", "198.18.0.8"));
        assert!(has("198.18.3.4/16", "198.18.200.1"));
        assert!(has("0.0.0.0/0", "127.0.0.1"));
        assert!(has("198.18.0.0/15", "::ffff:198.18.0.1"));
    }

    #[test]
    fn v6() {
        assert!(has("2001:db8::/32", "2001:db8:ffff::1"));
        assert!(!has("2001:db8::/32", "2001:db9::1"));
        assert!(has("::1", "::1"));
        assert!(!has("::/0", "127.0.0.1"));
        assert!(!has("0.0.0.0/0", "::1"));
        assert!(has("::/0", "2001:db8::1"));
    }

    #[test]
    fn invalid() {
        for bad in [
            "",
            "198.18.0.0/33",
            "2001:db8::/129",
            "not-an-ip",
            "db.example.com",
            "198.18.0.0/x",
            "198.18.0.0/-1",
            "198.18.0/24",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }
}
