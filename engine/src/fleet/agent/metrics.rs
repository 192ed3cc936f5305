//! The agent's metrics exposition, built from its status each time the status is published.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{AgentStatus, State};
use crate::fleet::hook::{HookCounters, Hooks};
use crate::metrics::{as_gauge, label, Labels, Metrics};
use crate::session::TorrentStats;

impl State {
    pub(super) fn render_metrics(&self, status: &AgentStatus, stats: &[TorrentStats]) -> String {
        let c = &self.counters;
        let mut e = Metrics::new();
        write_transfer_metrics(&mut e, stats.iter());
        e.gauge(
            "ringswarm_locked_bytes",
            "Bytes of releases locked in memory.",
            as_gauge(status.locked_bytes),
        );
        e.counter(
            "ringswarm_feed_errors_total",
            "Feeds rejected or not fetched.",
            c.feed_errors.load(Ordering::Relaxed),
        );
        e.gauge(
            "ringswarm_feed_sequence",
            "Sequence of the newest accepted feed.",
            as_gauge(status.feed_sequence),
        );
        e.counter(
            "ringswarm_activations_total",
            "Releases switched in.",
            c.activations.load(Ordering::Relaxed),
        );
        e.gauge(
            "ringswarm_feed_expired",
            "1 while the newest feed is expired (nothing is activated), else 0.",
            i64::from(status.feed_expired),
        );
        let hooks = self.hooks.as_ref().map(Hooks::counters);
        let hook_count =
            |f: fn(&HookCounters) -> &AtomicU64| hooks.map_or(0, |h| f(h).load(Ordering::Relaxed));
        e.counter(
            "ringswarm_hook_failures_total",
            "Hooks that failed (timeouts included).",
            hook_count(|h| &h.failures),
        );
        e.counter(
            "ringswarm_hook_timeouts_total",
            "Hooks killed at --hook-timeout.",
            hook_count(|h| &h.timeouts),
        );
        e.counter(
            "ringswarm_lock_failures_total",
            "Releases activated without the lock asked for.",
            c.lock_failures.load(Ordering::Relaxed),
        );
        e.counter(
            "ringswarm_download_failures_total",
            "Downloads stopped by an error.",
            c.download_failures.load(Ordering::Relaxed),
        );
        let latency: Vec<(Labels, f64)> = self
            .latency
            .iter()
            .map(|(n, ms)| (label("name", n.as_str()), *ms as f64 / 1000.0))
            .collect();
        e.gauge_f64_family(
            "ringswarm_publish_to_activation_seconds",
            "Publish to activation of the newest release of each name.",
            &latency,
        );
        e.gauge_family(
            "ringswarm_release_info",
            "The active (current) release of each name (always 1).",
            &release_info(status),
        );
        e.finish()
    }
}

/// `name` and `version` of each current release.
fn release_info(status: &AgentStatus) -> Vec<(Labels, i64)> {
    status
        .releases
        .iter()
        .filter(|r| r.state == "current")
        .map(|r| {
            (
                vec![("name", r.name.clone()), ("version", r.version.clone())],
                1,
            )
        })
        .collect()
}

/// Transfer counters summed over torrents, by class (local: our rack, or everything while
/// our rack is unknown; remote: outside it).
pub fn write_transfer_metrics<'a>(e: &mut Metrics, stats: impl Iterator<Item = &'a TorrentStats>) {
    let (mut down, mut down_out, mut up, mut up_out) = (0u64, 0u64, 0u64, 0u64);
    let (mut verified, mut failed, mut peers, mut hits, mut misses) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    for s in stats {
        down += s.downloaded_bytes;
        down_out += s.downloaded_outside_rack_bytes;
        up += s.uploaded_bytes;
        up_out += s.uploaded_outside_rack_bytes;
        verified += u64::from(s.verified_pieces);
        failed += u64::from(s.hash_failures);
        peers += u64::from(s.connected_peers);
        hits += s.cache_hits;
        misses += s.cache_misses;
    }
    let classes = |total: u64, outside: u64| {
        [
            (label("class", "local"), total.saturating_sub(outside)),
            (label("class", "remote"), outside),
        ]
    };
    e.counter_family(
        "ringswarm_bytes_in_total",
        "Payload bytes received from peers.",
        &classes(down, down_out),
    );
    e.counter_family(
        "ringswarm_bytes_out_total",
        "Payload bytes sent to peers.",
        &classes(up, up_out),
    );
    e.gauge(
        "ringswarm_pieces_verified",
        "Pieces held verified.",
        as_gauge(verified),
    );
    e.counter(
        "ringswarm_pieces_failed_total",
        "Pieces that failed their hash check.",
        failed,
    );
    e.gauge("ringswarm_peers", "Peers connected.", as_gauge(peers));
    e.counter_family(
        "ringswarm_upload_cache_total",
        "Upload requests served from the recent-piece cache (hit) or the disk (miss).",
        &[
            (label("result", "hit"), hits),
            (label("result", "miss"), misses),
        ],
    );
}
