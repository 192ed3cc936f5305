//! TCP's window, as far as the flow model needs it: a connection sends at most its
//! congestion window per round trip. The window starts at the initial window (RFC 6928:
//! ten segments), doubles every round trip while the window is what limits the flow (slow
//! start: a fluid model loses no packet, so it never leaves slow start), up to the most
//! the sender keeps in flight (its socket buffer, [`crate::scenario::Model::tcp_window`]);
//! after an idle period longer than the retransmission timeout it starts over (Linux's
//! `tcp_slow_start_after_idle`, on by default; RFC 2861).
//!
//! Inside a rack (tens of microseconds of round trip) the window opens within a
//! millisecond and never binds; across datacenters (tens of milliseconds) it takes a dozen
//! round trips to open, and a full window still caps one connection at window ÷ round trip
//! (4 MiB ÷ 40 ms ≈ 100 MiB/s): that is what this module is for.

/// RFC 6928's initial window: 10 segments of 1448 payload bytes.
pub const INITIAL_WINDOW: f64 = 10.0 * 1448.0;
/// Linux's least retransmission timeout (`TCP_RTO_MIN`, 200 ms).
pub const MIN_RTO_NS: u64 = 200_000_000;

/// The retransmission timeout for a round trip of `rtt_ns`: Linux's floor, or the round
/// trip and its variance (taken as one more round trip) when longer.
pub fn rto_ns(rtt_ns: u64) -> u64 {
    MIN_RTO_NS.max(2 * rtt_ns)
}

/// The window after `idle_ns` without sending.
pub fn after_idle(cwnd: f64, idle_ns: u64, rtt_ns: u64) -> f64 {
    if idle_ns > rto_ns(rtt_ns) {
        INITIAL_WINDOW.min(cwnd)
    } else {
        cwnd
    }
}

/// The window after `dt_ns` of sending limited by the window: it doubles per round trip,
/// up to `max`.
pub fn grow(cwnd: f64, dt_ns: u64, rtt_ns: u64, max: f64) -> f64 {
    let rtts = dt_ns as f64 / rtt_ns.max(1) as f64;
    (cwnd * 2f64.powf(rtts.min(64.0))).min(max)
}

/// The most a window of `cwnd` bytes sends per second over a round trip of `rtt_ns`.
pub fn rate_cap(cwnd: f64, rtt_ns: u64) -> f64 {
    cwnd / (rtt_ns.max(1) as f64 * 1e-9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_start_doubles_per_round_trip_up_to_the_buffer() {
        let rtt = 40_000_000;
        let w = grow(INITIAL_WINDOW, rtt, rtt, 4e6);
        assert!((w - 2.0 * INITIAL_WINDOW).abs() < 1e-6);
        let w = grow(INITIAL_WINDOW, 3 * rtt, rtt, 4e6);
        assert!((w - 8.0 * INITIAL_WINDOW).abs() < 1e-6);
        assert_eq!(grow(INITIAL_WINDOW, 100 * rtt, rtt, 4e6), 4e6);
        // 4 MB per 40 ms: 100 MB/s.
        assert!((rate_cap(4e6, rtt) - 1e8).abs() < 1.0);
    }

    #[test]
    fn an_idle_connection_starts_over_after_the_timeout() {
        let rtt = 100_000; // 100 us: the 200 ms floor applies
        assert_eq!(after_idle(4e6, 150_000_000, rtt), 4e6);
        assert_eq!(after_idle(4e6, 250_000_000, rtt), INITIAL_WINDOW);
        let wan = 200_000_000; // 200 ms: the timeout is 400 ms
        assert_eq!(after_idle(4e6, 300_000_000, wan), 4e6);
        assert_eq!(after_idle(4e6, 500_000_000, wan), INITIAL_WINDOW);
    }
}
