//! What the pod looks like: whether it has IPv6, which decides if ip6tables is programmed.

use super::net::Family;

/// Facts about the pod's network that the plan depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Env {
    /// Program ip6tables as well as iptables.
    pub ipv6: bool,
}

impl Env {
    /// Looks at the current network namespace; `force_ipv6` is the `--ipv6` flag.
    pub fn detect(force_ipv6: bool) -> Self {
        // No file means the kernel has IPv6 disabled: IPv4 only.
        let if_inet6 = std::fs::read_to_string("/proc/net/if_inet6").unwrap_or_default();
        Env {
            ipv6: force_ipv6 || has_global_ipv6(&if_inet6),
        }
    }

    pub fn families(&self) -> Vec<Family> {
        if self.ipv6 {
            vec![Family::V4, Family::V6]
        } else {
            vec![Family::V4]
        }
    }
}

/// Whether `/proc/net/if_inet6` lists an address of global scope. Loopback (scope 0x10) and
/// link-local (0x20) addresses exist on every interface with IPv6 enabled and say nothing
/// about whether the pod was given an IPv6 address.
pub fn has_global_ipv6(if_inet6: &str) -> bool {
    if_inet6.lines().any(|line| {
        // address ifindex prefix-length scope flags name
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() >= 6
            && fields[0].len() == 32
            && !fields[0].starts_with("fe8")
            && u8::from_str_radix(fields[3], 16) == Ok(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LO: &str = "00000000000000000000000000000001 01 80 10 80       lo\n";
    const LINK_LOCAL: &str = "fe8000000000000000fc00fffe000001 04 40 20 80     eth0\n";
    const GLOBAL: &str = "20010db8000000000000000000000002 04 40 00 80     eth0\n";

    #[test]
    fn only_a_global_address_means_ipv6() {
        assert!(!has_global_ipv6(""));
        assert!(!has_global_ipv6(LO));
        assert!(!has_global_ipv6(&format!("{LO}{LINK_LOCAL}")));
        assert!(has_global_ipv6(&format!("{LO}{LINK_LOCAL}{GLOBAL}")));
        assert!(!has_global_ipv6("garbage line\n"));
    }

    #[test]
    fn families_follow_ipv6() {
        assert_eq!(Env { ipv6: false }.families(), vec![Family::V4]);
        assert_eq!(Env { ipv6: true }.families(), vec![Family::V4, Family::V6]);
        assert!(Env::detect(true).ipv6);
    }
}
