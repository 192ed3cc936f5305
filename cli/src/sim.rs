//! `ringswarm sim`: the fleet simulator (crate `ringswarm-sim`) on a scenario file.

use std::path::PathBuf;

use anyhow::{Context, Result};
use ringswarm_sim::scenario::Scenario;

use crate::output::Text;
use crate::Ctx;

/// Simulate a fleet download: the real swarm core and tracker store on every host of a
/// scenario (datacenters, racks, link rates and delays, failures), over a flow-level
/// network, on virtual time.
///
/// The run is a pure function of the scenario and the seed. It prints the last host's time
/// against the lower bound (the largest of blob ÷ host rate, blob ÷ origin rate and, for
/// each dc but the origin's, blob ÷ its WAN rate), the percentiles, the bytes into each dc
/// and the busiest rack, and what the run cost. `--json` prints the whole report (the
/// timeline included) as one object. The scenario format is in `sim/README.md`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The scenario (TOML).
    #[arg(value_name = "SCENARIO.toml")]
    pub scenario: PathBuf,

    /// Overrides the scenario's seed.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,

    /// Draws the timeline (hosts done; throughput per link class) to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

pub fn run(ctx: Ctx, args: Args) -> Result<()> {
    let text = std::fs::read_to_string(&args.scenario)
        .with_context(|| format!("reading {}", args.scenario.display()))?;
    let mut scenario =
        Scenario::parse(&text).with_context(|| format!("{}", args.scenario.display()))?;
    if let Some(seed) = args.seed {
        scenario.seed = seed;
    }
    let report =
        ringswarm_sim::run(&scenario).with_context(|| format!("{}", args.scenario.display()))?;
    if let Some(path) = &args.plot {
        ringswarm_sim::plot::draw_svg(&report, path)?;
    }
    if ctx.out.json {
        ctx.out
            .result("sim", serde_json::to_value(&report)?, None)
            .context("writing the result")?;
        return Ok(());
    }
    if !ctx.out.quiet {
        let mut out = Text::new();
        for line in report.summary().lines() {
            out.line(line);
        }
        out.print().context("writing the result")?;
    }
    Ok(())
}
