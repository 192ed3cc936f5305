//! Which addresses count as one host, for every per-host bound (the peer connection cap,
//! the tracker's per-source budgets).
//!
//! An IPv4 address is a host. An IPv6 host is given a whole /64 (SLAAC, privacy
//! addresses, a provider's delegation), so it can rotate through 2^64 addresses: counting
//! single IPv6 addresses would bound nothing. An IPv4-mapped IPv6 address is its IPv4
//! address, so a dual-stack socket does not double a host's allowance.

use std::net::{IpAddr, Ipv6Addr};

/// The key a per-host bound counts `ip` under: the IPv4 address, or the IPv6 /64.
pub fn host_group(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !0u128 >> 64 << 64)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_ipv4_address_is_its_own_host() {
        assert_eq!(host_group(ip("198.18.0.7")), ip("198.18.0.7"));
        assert_ne!(host_group(ip("198.18.0.7")), host_group(ip("198.18.0.8")));
    }

    #[test]
    fn ipv6_addresses_in_one_slash_64_are_one_host() {
        let a = host_group(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd"));
        assert_eq!(a, ip("2001:db8:1:2::"));
        assert_eq!(a, host_group(ip("2001:db8:1:2::1")));
        assert_ne!(a, host_group(ip("2001:db8:1:3::1")));
    }

    #[test]
    fn an_ipv4_mapped_address_counts_as_its_ipv4_address() {
        assert_eq!(host_group(ip("::ffff:198.18.0.7")), ip("198.18.0.7"));
    }
}
