//! What a run reports: timeline samples as it goes, the report at its end, and the draws
//! that decide each host's fate.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::host::{Fate, Host};
use super::World;
use crate::net::HostId;
use crate::report::{NamedBytes, Report, Sample};
use crate::scenario::Scenario;

impl World {
    pub(super) fn take_sample(&mut self) {
        let totals = self.bytes.flowing;
        let dt = self.timeline.interval_s.max(1e-9);
        let t_s = self.now as f64 * 1e-9;
        if self.timeline.samples.last().is_some_and(|s| s.t_s >= t_s) {
            return;
        }
        let since = self.timeline.samples.last().map_or(0.0, |s| s.t_s);
        let dt = if since == 0.0 && self.timeline.samples.is_empty() {
            t_s.max(dt)
        } else {
            (t_s - since).max(1e-9)
        };
        let rate = |i: usize| (totals[i] - self.bytes.sampled[i]).max(0.0) / dt;
        let done = self.hosts[1..]
            .iter()
            .filter(|h| h.done_at.is_some())
            .count() as u64;
        self.timeline.samples.push(Sample {
            t_s,
            hosts_done: done,
            host_in_bps: rate(0),
            rack_in_bps: rate(1),
            wan_in_bps: rate(2),
            origin_out_bps: rate(3),
        });
        self.bytes.sampled = totals;
    }

    pub(super) fn report(self, wall: Instant) -> Report {
        if self.debug {
            for (k, n) in &self.kinds {
                eprintln!("events {n} × {k}");
            }
            for (i, h) in self.hosts.iter().enumerate() {
                eprintln!(
                    "host {i} {} done {:?} fate {:?} up {} down {}",
                    h.addr,
                    h.done_at.map(|t| t as f64 * 1e-9),
                    h.fate,
                    h.shared.counters.uploaded.load(Ordering::Relaxed) >> 20,
                    h.shared.counters.downloaded.load(Ordering::Relaxed) >> 20,
                );
            }
            for (r, n) in &self.closes {
                eprintln!("close {n} × {r}");
            }
        }
        let s = &self.s;
        let hosts = &self.hosts[1..];
        let mut times: Vec<f64> = hosts
            .iter()
            .filter_map(|h| h.done_at)
            .map(|t| t as f64 * 1e-9)
            .collect();
        times.sort_by(f64::total_cmp);
        let all_done = times.len() == hosts.len();
        let healthy: Vec<&Host> = hosts.iter().filter(|h| h.fate.healthy()).collect();
        let healthy_done = healthy.iter().all(|h| h.done_at.is_some());
        let last_healthy = healthy
            .iter()
            .filter_map(|h| h.done_at)
            .max()
            .map(|t| t as f64 * 1e-9);
        let pct = |p: f64| -> Option<f64> {
            if times.is_empty() {
                return None;
            }
            // Nearest rank over all hosts: a host that never finished counts as last.
            let rank = ((p * hosts.len() as f64).ceil() as usize).clamp(1, hosts.len());
            times.get(rank - 1).copied()
        };
        let link_bytes = |l: crate::net::LinkId| self.bytes.per_link[l.0 as usize];
        let dc_in_bytes = s
            .dcs
            .iter()
            .enumerate()
            .map(|(d, dc)| NamedBytes {
                name: dc.name.clone(),
                bytes: link_bytes(self.fleet.wan_in(d as u32)),
            })
            .collect();
        let rack_in_bytes: Vec<NamedBytes> = (0..self.fleet.racks() as u32)
            .map(|r| NamedBytes {
                name: self.rack_names[r as usize].clone(),
                bytes: link_bytes(self.fleet.rack_down(r)),
            })
            .collect();
        let max_rack = rack_in_bytes
            .iter()
            .max_by_key(|r| r.bytes)
            .cloned()
            .unwrap_or_default();
        let hash_failures = self.hash_failures
            + self
                .hosts
                .iter()
                .map(|h| u64::from(h.shared.counters.hash_failures.load(Ordering::Relaxed)))
                .sum::<u64>();
        Report {
            seed: s.seed,
            hosts: hosts.len() as u64,
            completed: times.len() as u64,
            dead: hosts.iter().filter(|h| h.fate.dies_at.is_some()).count() as u64,
            slow: hosts.iter().filter(|h| h.fate.slow).count() as u64,
            late: hosts.iter().filter(|h| h.fate.starts_at > 0).count() as u64,
            lower_bound_s: s.lower_bound(),
            last_host_s: if all_done {
                times.last().copied()
            } else {
                None
            },
            last_healthy_host_s: if healthy_done { last_healthy } else { None },
            p50_host_s: pct(0.50).filter(|_| times.len() * 2 >= hosts.len()),
            p99_host_s: pct(0.99).filter(|_| times.len() * 100 >= hosts.len() * 99),
            blob_bytes: s.blob,
            pieces: s.pieces(),
            piece_bytes: s.piece_size,
            block_bytes: s.model.block,
            origin_sent_bytes: link_bytes(self.fleet.host_up(HostId(0))),
            dc_in_bytes,
            rack_in_bytes_max: max_rack.bytes,
            rack_in_max: max_rack.name,
            rack_in_bytes,
            hash_failures,
            simulated_s: self.now as f64 * 1e-9,
            wall_s: wall.elapsed().as_secs_f64(),
            peak_rss_bytes: peak_rss_bytes(),
            events: self.events,
            timeline: self.timeline,
        }
    }
}

/// The fate of one host, drawn from the scenario's failure shares.
pub(super) fn draw_fate(rng: &mut u64, s: &Scenario, bound_ns: u64) -> Fate {
    let f = s.failures;
    let mut fate = Fate::default();
    if unit(rng) < f.dead {
        fate.dies_at = Some((unit(rng) * bound_ns as f64) as u64);
    }
    if unit(rng) < f.slow {
        fate.slow = true;
    }
    if unit(rng) < f.late {
        fate.starts_at = ((unit(rng) * 0.5 * bound_ns as f64) as u64).max(1);
    }
    fate
}

/// A uniform draw in [0, 1) (splitmix64).
fn unit(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// The process's peak resident memory (Linux `VmHWM`), 0 where unknown.
pub fn peak_rss_bytes() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
