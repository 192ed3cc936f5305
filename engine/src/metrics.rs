//! Prometheus text exposition (format 0.0.4) for the daemons' `/metrics`: a few counters
//! and gauges written in one pass from a snapshot, so no registry is kept.

use std::fmt::Write as _;

/// Metric text being written; every metric gets its HELP and TYPE lines once.
#[derive(Default)]
pub struct Exposition {
    text: String,
}

#[derive(Clone, Copy)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// One metric with one or more labelled samples (`labels` like `class="local"`; empty
    /// for none).
    pub fn metric(&mut self, name: &str, help: &str, kind: Kind, samples: &[(&str, f64)]) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            if labels.is_empty() {
                let _ = writeln!(self.text, "{name} {value}");
            } else {
                let _ = writeln!(self.text, "{name}{{{labels}}} {value}");
            }
        }
    }

    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.metric(name, help, Kind::Counter, &[("", value as f64)]);
    }

    pub fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.metric(name, help, Kind::Gauge, &[("", value)]);
    }

    pub fn finish(self) -> String {
        self.text
    }
}

/// A label value quoted for the exposition format.
pub fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_text_format() {
        let mut e = Exposition::new();
        e.counter("rs_feed_errors_total", "Feeds rejected.", 3);
        e.metric(
            "rs_bytes_in_total",
            "Payload bytes received.",
            Kind::Counter,
            &[("class=\"local\"", 10.0), ("class=\"remote\"", 2.0)],
        );
        let text = e.finish();
        assert_eq!(
            text,
            "# HELP rs_feed_errors_total Feeds rejected.\n# TYPE rs_feed_errors_total counter\n\
             rs_feed_errors_total 3\n# HELP rs_bytes_in_total Payload bytes received.\n\
             # TYPE rs_bytes_in_total counter\nrs_bytes_in_total{class=\"local\"} 10\n\
             rs_bytes_in_total{class=\"remote\"} 2\n"
        );
        assert_eq!(label("a\"b\\c\nd"), "\"a\\\"b\\\\c\\nd\"");
    }
}
