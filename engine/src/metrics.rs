//! Prometheus exposition for the daemons' `/metrics`, through `prometheus-client` (its
//! registry, families with labels and OpenMetrics text encoder).
//!
//! Each scrape is rendered from a snapshot of the daemon's counters into a fresh registry:
//! the counters live in the engine's own atomics (the hot paths never touch the registry),
//! so a registry kept between scrapes would only be a second copy of them.
//!
//! Names are written at the call sites exactly as they appear on the wire: a counter is
//! named with its `_total` suffix (`ringswarm_bytes_in_total`), which is taken off before
//! registering because prometheus-client adds it back (and names the family without it in
//! `# HELP`/`# TYPE`, as OpenMetrics wants). Help texts end with a full stop here and are
//! given to the registry without it (it adds its own).
//!
//! Every exposition starts with `ringswarm_build_info{version,git} 1` (see [`set_build`]).
//! It and `ringswarm_release_info` are gauges set to 1, the usual Prometheus form of an
//! info metric, rather than OpenMetrics' `info` type, so that a family has one label set
//! per release and queries join on them as on any `*_info` gauge.

use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The content type of [`Metrics::finish`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of one sample: `(key, value)` pairs in order.
pub type Labels = Vec<(&'static str, String)>;

static BUILD: OnceLock<(String, String)> = OnceLock::new();

/// Sets the version and git hash `ringswarm_build_info` reports (the binary knows them; the
/// engine alone reports its crate version and `unknown`). The first call wins.
pub fn set_build(version: &str, git: &str) {
    let _ = BUILD.set((version.to_owned(), git.to_owned()));
}

fn build() -> (String, String) {
    BUILD
        .get()
        .cloned()
        .unwrap_or_else(|| (env!("CARGO_PKG_VERSION").to_owned(), "unknown".to_owned()))
}

/// One scrape's metrics, being registered.
pub struct Metrics {
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// An exposition holding `ringswarm_build_info` already.
    pub fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::default(),
        };
        let (version, git) = build();
        m.gauge_family(
            "ringswarm_build_info",
            "Version and git commit of this binary (always 1).",
            &[(vec![("version", version), ("git", git)], 1)],
        );
        m
    }

    /// A counter without labels; `name` ends in `_total`.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        let c = Counter::<u64>::default();
        c.inc_by(value);
        self.registry
            .register(family_name(name), help_text(help), c);
    }

    /// A counter with one sample per label set; `name` ends in `_total`.
    pub fn counter_family(&mut self, name: &str, help: &str, samples: &[(Labels, u64)]) {
        let family = Family::<Labels, Counter<u64>>::default();
        for (labels, value) in samples {
            family.get_or_create(labels).inc_by(*value);
        }
        self.registry
            .register(family_name(name), help_text(help), family);
    }

    /// An integer gauge without labels.
    pub fn gauge(&mut self, name: &str, help: &str, value: i64) {
        let g = Gauge::<i64>::default();
        g.set(value);
        self.registry.register(name, help_text(help), g);
    }

    /// An integer gauge with one sample per label set.
    pub fn gauge_family(&mut self, name: &str, help: &str, samples: &[(Labels, i64)]) {
        let family = Family::<Labels, Gauge<i64>>::default();
        for (labels, value) in samples {
            family.get_or_create(labels).set(*value);
        }
        self.registry.register(name, help_text(help), family);
    }

    /// A gauge of fractional values (seconds) with one sample per label set.
    pub fn gauge_f64_family(&mut self, name: &str, help: &str, samples: &[(Labels, f64)]) {
        let family = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        for (labels, value) in samples {
            family.get_or_create(labels).set(*value);
        }
        self.registry.register(name, help_text(help), family);
    }

    /// The OpenMetrics text (served as [`CONTENT_TYPE`]).
    pub fn finish(self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail; an encoder error would be a bug of ours
        // (a duplicate name) and leaves what was written.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

/// A gauge saturated into the i64 a gauge holds.
pub fn as_gauge(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// One label.
pub fn label(key: &'static str, value: impl Into<String>) -> Labels {
    vec![(key, value.into())]
}

fn family_name(name: &str) -> &str {
    debug_assert!(name.ends_with("_total"), "counter {name} lacks _total");
    name.strip_suffix("_total").unwrap_or(name)
}

fn help_text(help: &str) -> &str {
    help.strip_suffix('.').unwrap_or(help)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_labels_help_and_build_info() {
        let mut e = Metrics::new();
        e.counter("rs_feed_errors_total", "Feeds rejected.", 3);
        e.counter_family(
            "rs_bytes_in_total",
            "Payload bytes received.",
            &[(label("class", "local"), 10), (label("class", "remote"), 2)],
        );
        e.gauge("rs_peers", "Peers.", 4);
        e.gauge_f64_family(
            "rs_seconds",
            "Seconds.",
            &[(label("name", "a\"b\\c\nd"), 1.5)],
        );
        let text = e.finish();
        let (version, git) = build();
        for line in [
            "# HELP ringswarm_build_info Version and git commit of this binary (always 1).",
            "# TYPE ringswarm_build_info gauge",
            &format!("ringswarm_build_info{{version=\"{version}\",git=\"{git}\"}} 1"),
            "# HELP rs_feed_errors Feeds rejected.",
            "# TYPE rs_feed_errors counter",
            "rs_feed_errors_total 3",
            "# TYPE rs_bytes_in counter",
            "rs_bytes_in_total{class=\"local\"} 10",
            "rs_bytes_in_total{class=\"remote\"} 2",
            "# TYPE rs_peers gauge",
            "rs_peers 4",
            "rs_seconds{name=\"a\\\"b\\\\c\\nd\"} 1.5",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        assert!(!text.contains(".."), "{text}");
    }
}
