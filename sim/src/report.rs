//! What a run reports: the figures `perf/fleet` reports for an emulated fleet (the last
//! host against the lower bound, bytes into each rack and dc, the origin's bytes), the
//! run's own cost, and the timeline a plot is drawn from.

use serde::Serialize;

/// The result of one run ([`crate::run`]); `--json` prints it as one object.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    pub seed: u64,
    /// Hosts that download (the origin not counted).
    pub hosts: u64,
    /// Of them, hosts that hold every piece verified when the run ended.
    pub completed: u64,
    /// Hosts the scenario's failures hit: dead (never finish), slow, late.
    pub dead: u64,
    pub slow: u64,
    pub late: u64,
    /// [`crate::scenario::Scenario::lower_bound`].
    pub lower_bound_s: f64,
    /// Seconds from the start until the last host finished (None: some host never did).
    pub last_host_s: Option<f64>,
    /// The same over the healthy hosts (neither dead nor slow nor late).
    pub last_healthy_host_s: Option<f64>,
    /// Percentiles of the finishing times over every host that finished.
    pub p50_host_s: Option<f64>,
    pub p99_host_s: Option<f64>,
    pub blob_bytes: u64,
    pub pieces: u64,
    pub piece_bytes: u64,
    /// The simulation's block (request) length.
    pub block_bytes: u64,
    pub origin_sent_bytes: u64,
    /// Bytes that entered each dc over its WAN link, in scenario order.
    pub dc_in_bytes: Vec<NamedBytes>,
    /// Bytes into the rack that took in the most over its uplink, and which rack.
    pub rack_in_bytes_max: u64,
    pub rack_in_max: String,
    /// Bytes into each rack over its uplink, in scenario order (racks named `dc/rN`).
    pub rack_in_bytes: Vec<NamedBytes>,
    /// Pieces that failed verification anywhere (0 unless a scenario corrupts data).
    pub hash_failures: u64,
    /// Virtual seconds simulated.
    pub simulated_s: f64,
    /// Real seconds the run took, and the process's peak resident memory.
    pub wall_s: f64,
    pub peak_rss_bytes: u64,
    /// Events handled (messages, blocks, timers), for the cost of a run.
    pub events: u64,
    pub timeline: Timeline,
}

/// Bytes with a name (a dc or a rack).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NamedBytes {
    pub name: String,
    pub bytes: u64,
}

/// Samples at a fixed interval of virtual time.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Timeline {
    pub interval_s: f64,
    pub samples: Vec<Sample>,
}

/// One sample: the state at `t_s`, and the mean rates over the interval before it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Sample {
    pub t_s: f64,
    /// Hosts done (verified every piece) so far.
    pub hosts_done: u64,
    /// Bytes per second into hosts (all host down links together).
    pub host_in_bps: f64,
    /// Bytes per second into racks over their uplinks (all racks together).
    pub rack_in_bps: f64,
    /// Bytes per second into dcs over their WAN links (all dcs together).
    pub wan_in_bps: f64,
    /// Bytes per second the origin sent.
    pub origin_out_bps: f64,
}

impl Report {
    /// The largest of the dcs' WAN intake, in blobs.
    pub fn dc_in_blobs_max(&self) -> f64 {
        let max = self.dc_in_bytes.iter().map(|d| d.bytes).max().unwrap_or(0);
        max as f64 / self.blob_bytes.max(1) as f64
    }

    /// A few lines for a person: what `ringswarm sim` prints without `--json`.
    pub fn summary(&self) -> String {
        let blob = self.blob_bytes.max(1) as f64;
        let ratio = |t: Option<f64>| match t {
            Some(t) => format!(
                "{t:.2} s ({:.3} × bound)",
                t / self.lower_bound_s.max(1e-12)
            ),
            None => "never".to_string(),
        };
        let mut s = String::new();
        s.push_str(&format!(
            "{} of {} hosts done (dead {}, slow {}, late {}); lower bound {:.2} s\n",
            self.completed, self.hosts, self.dead, self.slow, self.late, self.lower_bound_s
        ));
        s.push_str(&format!("last host:         {}\n", ratio(self.last_host_s)));
        s.push_str(&format!(
            "last healthy host: {}\n",
            ratio(self.last_healthy_host_s)
        ));
        s.push_str(&format!(
            "p50 {}, p99 {}\n",
            ratio(self.p50_host_s),
            ratio(self.p99_host_s)
        ));
        s.push_str(&format!(
            "origin sent {:.3} × blob; most into one rack {:.3} × blob ({})\n",
            self.origin_sent_bytes as f64 / blob,
            self.rack_in_bytes_max as f64 / blob,
            self.rack_in_max
        ));
        let dcs: Vec<String> = self
            .dc_in_bytes
            .iter()
            .map(|d| format!("{} {:.3}", d.name, d.bytes as f64 / blob))
            .collect();
        s.push_str(&format!("into each dc (× blob): {}\n", dcs.join(", ")));
        s.push_str(&format!(
            "simulated {:.2} s in {:.1} s wall, {} events, peak RSS {} MiB",
            self.simulated_s,
            self.wall_s,
            self.events,
            self.peak_rss_bytes >> 20
        ));
        s
    }
}
