//! Host-wide connection limits, shared by every worker core (rates and bans are the swarm
//! core's: [`ringswarm_swarm::limits`]).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;

/// The group an address is counted in for the per-address cap: its host
/// ([`crate::hostaddr::host_group`]: an IPv4 address, an IPv6 /64). None for this host's own
/// loopback address (127.0.0.1, ::1), where every local peer comes from, exempt from the
/// cap.
pub fn addr_group(ip: IpAddr) -> Option<IpAddr> {
    let own_loopback = match ip {
        IpAddr::V4(v4) => v4 == Ipv4Addr::LOCALHOST,
        IpAddr::V6(v6) => {
            v6 == Ipv6Addr::LOCALHOST || v6.to_ipv4_mapped() == Some(Ipv4Addr::LOCALHOST)
        }
    };
    (!own_loopback).then(|| crate::hostaddr::host_group(ip))
}

/// Connections: at most `max_total` peers at once (connecting or connected, every torrent
/// and core), and at most `max_per_ip` from or to one address group ([`addr_group`]: an
/// IPv4 address, an IPv6 /64), so one host cannot take every slot.
#[derive(Debug)]
pub struct ConnectionLimits {
    max_total: u32,
    max_per_ip: u32,
    counts: Mutex<(u32, HashMap<IpAddr, u32>)>,
}

impl ConnectionLimits {
    pub fn new(max_total: u32, max_per_ip: u32) -> ConnectionLimits {
        ConnectionLimits {
            max_total: max_total.max(1),
            max_per_ip: max_per_ip.max(1),
            counts: Mutex::new((0, HashMap::new())),
        }
    }

    /// Takes a slot for a connection with `ip`; false when a limit is reached.
    pub fn acquire(&self, ip: IpAddr) -> bool {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per_ip) = &mut *c;
        if *total >= self.max_total {
            return false;
        }
        if let Some(group) = addr_group(ip) {
            let n = per_ip.entry(group).or_insert(0);
            if *n >= self.max_per_ip {
                return false;
            }
            *n += 1;
        }
        *total += 1;
        true
    }

    /// Gives back the slot of a connection with `ip`.
    pub fn release(&self, ip: IpAddr) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per_ip) = &mut *c;
        *total = total.saturating_sub(1);
        if let Some(group) = addr_group(ip) {
            if let Some(n) = per_ip.get_mut(&group) {
                *n -= 1;
                if *n == 0 {
                    per_ip.remove(&group);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_limits_total_and_per_address() {
        let l = ConnectionLimits::new(4, 2);
        let a: IpAddr = "198.18.0.1".parse().unwrap();
        let b: IpAddr = "198.18.0.2".parse().unwrap();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(l.acquire(a) && l.acquire(a));
        assert!(!l.acquire(a), "per-address cap");
        assert!(
            l.acquire(lo) && l.acquire(lo),
            "this host's loopback address is exempt from the per-address cap"
        );
        assert!(!l.acquire(b), "total cap");
        l.release(a);
        assert!(l.acquire(b));
        assert!(!l.acquire(a));
        l.release(lo);
        l.release(b);
        assert!(l.acquire(a));
    }

    #[test]
    fn addresses_count_by_ipv4_address_and_ipv6_slash_64() {
        let g = |s: &str| addr_group(s.parse().unwrap());
        assert_eq!(g("198.18.0.1"), Some("198.18.0.1".parse().unwrap()));
        assert_ne!(g("198.18.0.1"), g("198.18.0.2"), "IPv4: /32");
        assert_ne!(g("127.0.0.2"), g("127.0.0.3"));
        assert_eq!(g("127.0.0.1"), None, "this host is exempt");
        assert_eq!(g("::1"), None);
        assert_eq!(g("::ffff:127.0.0.1"), None);
        assert_eq!(g("::ffff:198.18.0.1"), g("198.18.0.1"), "v4-mapped is IPv4");
        assert_eq!(g("2001:db8:1:2::1"), g("2001:db8:1:2:ffff:ffff:ffff:ffff"));
        assert_eq!(
            g("2001:db8:1:2::1"),
            Some("2001:db8:1:2::".parse().unwrap())
        );
        assert_ne!(g("2001:db8:1:2::1"), g("2001:db8:1:3::1"), "IPv6: /64");
        // One /64 holds the cap however many addresses it uses.
        let l = ConnectionLimits::new(100, 2);
        assert!(l.acquire("2001:db8::1".parse().unwrap()));
        assert!(l.acquire("2001:db8::2".parse().unwrap()));
        assert!(!l.acquire("2001:db8::3".parse().unwrap()));
        assert!(l.acquire("2001:db8:0:1::3".parse().unwrap()));
        l.release("2001:db8::1".parse().unwrap());
        assert!(l.acquire("2001:db8::4".parse().unwrap()));
        // 127.0.0.2 is another address: capped.
        assert!(l.acquire("127.0.0.2".parse().unwrap()) && l.acquire("127.0.0.2".parse().unwrap()));
        assert!(!l.acquire("127.0.0.2".parse().unwrap()));
    }
}
