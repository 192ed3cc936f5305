//! A peer's download rate and the request depth it earns: the requests kept outstanding
//! with a peer are its measured rate times a delay budget ([`REQUEST_HORIZON`]), so a fast
//! peer's pipe stays full and a slow one does not sit on requests (and the pieces they
//! tie up) that faster peers could serve.

use std::time::{Duration, Instant};

use ringswarm_proto::wire::BLOCK_SIZE;

/// Most blocks of 16 KiB requested and not yet received, per connection: 8 MiB in flight
/// covers bandwidth × delay on a 25 GbE link with a couple of milliseconds of RTT, and
/// keeps a seeder's view a piece or two ahead so its disk reads overlap the sending
/// (measured on loopback, 1 GiB cold: 256 → 2.1 s, 512 → 1.5 s, 1024 → 1.55 s). Depths
/// are kept in bytes ([`MAX_IN_FLIGHT`]); this is the count at BEP 3's block length, and
/// the most a peer's `reqq` is believed.
pub const MAX_REQUEST_DEPTH: u32 = 512;
/// The most bytes requested and not yet received, per connection.
pub const MAX_IN_FLIGHT: u64 = MAX_REQUEST_DEPTH as u64 * BLOCK_SIZE as u64;
/// The depth kept is the peer's measured rate times this horizon: enough to cover any
/// data-centre RTT many times over (we do not measure the RTT itself: at these rates the
/// horizon, not the RTT, sets the depth).
pub const REQUEST_HORIZON: Duration = Duration::from_millis(200);
/// Bytes in flight before the first rate sample (128 blocks of 16 KiB).
pub const INITIAL_IN_FLIGHT: u64 = 2 << 20;
/// The least bytes kept in flight (512 KiB: a 1 ms RTT still allows 500 MB/s).
pub const MIN_IN_FLIGHT: u64 = 512 << 10;
/// Requests are topped up when this many have come back, so they leave in batches
/// rather than one small send per block.
pub const REQUEST_REFILL_BATCH: u32 = 32;
/// Samples shorter than this are folded into the next one.
const MIN_SAMPLE: Duration = Duration::from_millis(50);

/// A smoothed rate of payload bytes from one peer, sampled while requests are out.
#[derive(Clone, Debug)]
pub struct RateMeter {
    bytes: u64,
    since: Instant,
    rate: f64,
    /// Bytes per request ([`crate::Config::block_len`]).
    block_len: u64,
    depth: u32,
}

impl RateMeter {
    /// A meter for requests of `block_len` bytes.
    pub fn new(now: Instant, block_len: u32) -> RateMeter {
        let block_len = u64::from(block_len.max(1));
        RateMeter {
            bytes: 0,
            since: now,
            rate: 0.0,
            block_len,
            depth: blocks_for(INITIAL_IN_FLIGHT, block_len),
        }
    }

    /// Payload bytes arrived.
    pub fn add(&mut self, bytes: u64) {
        self.bytes += bytes;
    }

    /// Bytes per second (0 before the first sample).
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Requests to keep outstanding.
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// Folds the bytes since the last sample into the rate (only while requests were out:
    /// an idle peer is not a slow one) and resizes the depth.
    pub fn sample(&mut self, now: Instant, requests_out: u32) {
        let elapsed = now.saturating_duration_since(self.since);
        if elapsed < MIN_SAMPLE {
            return;
        }
        if self.rate == 0.0 && self.bytes == 0 {
            // Nothing has arrived yet (the first answers are a round trip away): no rate
            // to go by, so the initial depth stays.
            self.since = now;
            return;
        }
        if requests_out > 0 || self.bytes > 0 {
            let sample = self.bytes as f64 / elapsed.as_secs_f64();
            self.rate = if self.rate == 0.0 {
                sample
            } else {
                0.7 * self.rate + 0.3 * sample
            };
            let bytes = (self.rate * REQUEST_HORIZON.as_secs_f64()).ceil() as u64;
            let bytes = bytes.clamp(MIN_IN_FLIGHT, MAX_IN_FLIGHT);
            self.depth = blocks_for(bytes, self.block_len);
        }
        self.bytes = 0;
        self.since = now;
    }
}

/// Requests of `block_len` bytes that carry `bytes`: at least one, and at least two when
/// a block is large enough that one alone would leave the pipe idle between requests.
fn blocks_for(bytes: u64, block_len: u64) -> u32 {
    (bytes.div_ceil(block_len) as u32).max(2)
}

/// Whether requests should be topped up now: a batch's worth came back.
pub fn wants_refill(requests_out: u32, depth: u32) -> bool {
    let batch = REQUEST_REFILL_BATCH.min(depth / 4).max(1);
    requests_out + batch <= depth
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn depth_is_rate_times_the_horizon_within_bounds() {
        let t0 = Instant::now();
        let mut m = RateMeter::new(t0, BLOCK_SIZE);
        assert_eq!(m.depth(), 128);
        // 100 MiB/s for 100 ms: 0.2 s × 100 MiB = 1280 blocks → capped at 512.
        m.add(10 << 20);
        m.sample(t0 + ms(100), 10);
        assert_eq!(m.depth(), MAX_REQUEST_DEPTH);
        // 8 MiB/s: 0.2 s × 8 MiB = 102.4 blocks → 103 (after smoothing it falls toward that).
        let mut m = RateMeter::new(t0, BLOCK_SIZE);
        m.add(800 << 10);
        m.sample(t0 + ms(100), 10);
        assert_eq!(m.depth(), 100);
        // A trickle: the floor.
        let mut m = RateMeter::new(t0, BLOCK_SIZE);
        m.add(16 << 10);
        m.sample(t0 + ms(1000), 1);
        assert_eq!(m.depth(), 32);
    }

    #[test]
    fn an_idle_peer_keeps_its_rate_and_short_samples_wait() {
        let t0 = Instant::now();
        let mut m = RateMeter::new(t0, BLOCK_SIZE);
        m.add(1 << 20);
        m.sample(t0 + ms(10), 5);
        assert_eq!(m.rate(), 0.0, "10 ms is too short a sample");
        m.sample(t0 + ms(100), 5);
        let r = m.rate();
        assert!((r - 10.0 * f64::from(1 << 20)).abs() < 1.0, "{r}");
        m.sample(t0 + ms(1100), 0);
        assert_eq!(m.rate(), r, "no requests out, nothing received: not slower");
        m.sample(t0 + ms(2100), 3);
        assert!(m.rate() < r, "requests out and nothing came: slower");
    }

    #[test]
    fn depth_is_counted_in_bytes_whatever_the_block_length() {
        let t0 = Instant::now();
        // 1 MiB blocks (the simulator's): 2 MiB before a sample is 2 requests.
        let mut m = RateMeter::new(t0, 1 << 20);
        assert_eq!(m.depth(), 2);
        // 20 MiB/s: 0.2 s × 20 MiB = 4 MiB → 4 requests.
        m.add(2 << 20);
        m.sample(t0 + ms(100), 2);
        assert_eq!(m.depth(), 4);
        // Fast: capped at 8 MiB in flight, 8 requests.
        let mut m = RateMeter::new(t0, 1 << 20);
        m.add(100 << 20);
        m.sample(t0 + ms(100), 2);
        assert_eq!(m.depth(), 8);
        // Blocks larger than the cap still keep two requests out (no idle pipe).
        let m = RateMeter::new(t0, 16 << 20);
        assert_eq!(m.depth(), 2);
    }

    #[test]
    fn refills_go_out_in_batches() {
        assert!(!wants_refill(100, 128), "only 28 came back");
        assert!(wants_refill(96, 128));
        assert!(wants_refill(24, 32), "a small depth refills at a quarter");
        assert!(!wants_refill(25, 32));
    }
}
