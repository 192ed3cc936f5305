//! Host-wide limits, shared by every worker core: payload rates and connections.
//!
//! Rates (`--max-upload-rate`, `--max-download-rate`): one token bucket per direction.
//! Uploads take tokens before a batch of blocks is sent; downloads before requests are
//! sent, so the peers' answers arrive at the limited rate without us having to stall
//! reading sockets (which would back up the peers' other traffic too). A worker that gets
//! no tokens tries again at its next tick (100 ms), so the bucket holds a tenth of a
//! second's worth, at least 256 KiB, as burst.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Smallest burst: a few blocks, so a low rate still moves whole batches.
const MIN_BURST: f64 = 256.0 * 1024.0;

#[derive(Debug)]
pub struct RateLimiter {
    bytes_per_sec: f64,
    burst: f64,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl RateLimiter {
    /// A limiter of `bytes_per_sec` (> 0), starting full.
    pub fn new(bytes_per_sec: u64) -> RateLimiter {
        let rate = bytes_per_sec.max(1) as f64;
        let burst = (rate / 10.0).max(MIN_BURST);
        RateLimiter {
            bytes_per_sec: rate,
            burst,
            state: Mutex::new(Bucket {
                tokens: burst,
                refilled: Instant::now(),
            }),
        }
    }

    /// Takes up to `want` bytes' worth of tokens now; returns how many were granted.
    pub fn take(&self, want: u64) -> u64 {
        self.take_at(want, Instant::now())
    }

    fn take_at(&self, want: u64, now: Instant) -> u64 {
        let mut b = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(b.refilled).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.bytes_per_sec).min(self.burst);
        b.refilled = now;
        let granted = (want as f64).min(b.tokens.max(0.0)).floor();
        b.tokens -= granted;
        granted as u64
    }

    /// Gives back tokens taken but not used.
    pub fn give_back(&self, bytes: u64) {
        let mut b = self.state.lock().unwrap_or_else(|e| e.into_inner());
        b.tokens = (b.tokens + bytes as f64).min(self.burst);
    }
}

/// Takes `want` from `limiter`, or all of it when there is no limit.
pub fn take(limiter: Option<&RateLimiter>, want: u64) -> u64 {
    limiter.map_or(want, |l| l.take(want))
}

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

/// How long a ban lasts by default: long enough to stop a peer sending bad data, short
/// enough that a host fixed (or an address reused) is served again.
pub const DEFAULT_BAN_DURATION: Duration = Duration::from_secs(3600);

/// Banned addresses, each until its ban expires.
#[derive(Debug)]
pub struct BanList {
    duration: Duration,
    until: HashMap<IpAddr, Instant>,
}

impl Default for BanList {
    fn default() -> Self {
        BanList::new(DEFAULT_BAN_DURATION)
    }
}

impl BanList {
    pub fn new(duration: Duration) -> BanList {
        BanList {
            duration,
            until: HashMap::new(),
        }
    }

    /// Bans `ip` from `now` for the ban duration.
    pub fn ban(&mut self, ip: IpAddr, now: Instant) {
        self.until.insert(ip, now + self.duration);
    }

    /// Whether `ip` is banned at `now`; forgets expired bans.
    pub fn is_banned(&mut self, ip: IpAddr, now: Instant) -> bool {
        match self.until.get(&ip) {
            Some(&until) if now < until => true,
            Some(_) => {
                self.until.remove(&ip);
                false
            }
            None => false,
        }
    }

    /// Bans in force at `now`.
    pub fn count(&self, now: Instant) -> usize {
        self.until.values().filter(|&&u| now < u).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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

    #[test]
    fn bans_expire_after_the_ban_duration() {
        let t0 = Instant::now();
        let ip: IpAddr = "198.18.0.9".parse().unwrap();
        let mut bans = BanList::default();
        bans.ban(ip, t0);
        assert!(bans.is_banned(ip, t0 + Duration::from_secs(3599)));
        assert_eq!(bans.count(t0 + Duration::from_secs(3599)), 1);
        assert!(
            !bans.is_banned(ip, t0 + Duration::from_secs(3600)),
            "an hour by default"
        );
        assert_eq!(bans.count(t0 + Duration::from_secs(3600)), 0);
        let mut bans = BanList::new(Duration::from_secs(5));
        bans.ban(ip, t0);
        assert!(bans.is_banned(ip, t0 + Duration::from_secs(4)));
        assert!(
            !bans.is_banned(ip, t0 + Duration::from_secs(5)),
            "configurable"
        );
        assert!(!bans.is_banned("198.18.0.10".parse().unwrap(), t0));
    }

    #[test]
    fn grants_the_rate_over_time_with_a_bounded_burst() {
        let l = RateLimiter::new(10 << 20); // 10 MiB/s: burst 1 MiB
        let t0 = Instant::now();
        assert_eq!(l.take_at(u64::MAX, t0), 1 << 20);
        assert_eq!(l.take_at(1000, t0), 0);
        // 50 ms later: half a MiB more.
        let half = l.take_at(u64::MAX, t0 + Duration::from_millis(50));
        assert!((half as i64 - (512 << 10)).abs() < 1024, "{half}");
        // A long idle time still refills only the burst.
        assert_eq!(l.take_at(u64::MAX, t0 + Duration::from_secs(60)), 1 << 20);
        l.give_back(4096);
        assert_eq!(l.take_at(u64::MAX, t0 + Duration::from_secs(60)), 4096);
        // Total over 10 s ≈ 10 s × rate + the initial burst.
        let l = RateLimiter::new(1 << 20);
        let mut got = 0;
        for ms in (0..10_000).step_by(100) {
            got += l.take_at(u64::MAX, t0 + Duration::from_millis(ms));
        }
        let expected = 10 << 20;
        assert!(
            got <= expected + (256 << 10) && got >= expected - (256 << 10),
            "{got}"
        );
    }
}
