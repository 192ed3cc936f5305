//! `ringswarm fleet`: the origin's fleet view in a terminal.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use ringswarm_engine::fleet::view::{http_get, FleetView, ReleaseView};

use crate::args::{format_bytes, format_rate};
use crate::interrupt::interrupted;
use crate::Ctx;

/// Show which host runs which release: per live release, hosts done / downloading /
/// missing per datacenter and rack, the slowest hosts and the throughput.
///
/// Reads URL/fleet.json from the origin (which joins its feed with the tracker's peers:
/// start it with --tracker-http). A host is "missing" from a release when the tracker saw
/// it on another release of the same name in the last 10 minutes but not on this one.
/// With --json, prints the origin's JSON as it is.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The origin's HTTP address, e.g. http://origin:8470.
    #[arg(long, value_name = "URL")]
    pub origin: String,

    /// Redraw every 2 s until Ctrl-C.
    #[arg(long)]
    pub watch: bool,

    /// Seconds to wait for the origin.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub timeout: u64,
}

fn fetch(url: &str, timeout: Duration) -> Result<(Vec<u8>, FleetView)> {
    let body = http_get(url, timeout).map_err(anyhow::Error::msg)?;
    let view = serde_json::from_slice(&body)
        .with_context(|| format!("{url} is no fleet view (is the origin ringswarm's?)"))?;
    Ok((body, view))
}

/// The view as text: one block per release.
pub fn render(view: &FleetView) -> String {
    let mut out = String::new();
    if let Some(e) = &view.error {
        out.push_str(&format!("tracker: {e}\n"));
    }
    let n = view.releases.len();
    out.push_str(&format!(
        "{n} live release{}, {} in all\n",
        if n == 1 { "" } else { "s" },
        format_rate(view.throughput as f64)
    ));
    for r in &view.releases {
        render_release(&mut out, r);
    }
    out
}

fn render_release(out: &mut String, r: &ReleaseView) {
    out.push_str(&format!(
        "\n{} {}{}  {}  {}…\n  {} done, {} downloading, {} missing; {}\n",
        r.name,
        r.version,
        if r.newest { "" } else { " (previous)" },
        format_bytes(r.size),
        &r.info_hash[..r.info_hash.len().min(12)],
        r.done,
        r.downloading,
        r.missing,
        format_rate(r.rate as f64),
    ));
    let name = |s: &str| {
        if s.is_empty() {
            "?".to_owned()
        } else {
            s.to_owned()
        }
    };
    let dc_w = r
        .places
        .iter()
        .map(|p| name(&p.dc).len())
        .max()
        .unwrap_or(2)
        .max(2);
    let rack_w = r
        .places
        .iter()
        .map(|p| name(&p.rack).len())
        .max()
        .unwrap_or(4)
        .max(4);
    out.push_str(&format!(
        "  {:dc_w$}  {:rack_w$}  {:>5}  {:>11}  {:>7}\n",
        "dc", "rack", "done", "downloading", "missing"
    ));
    for p in &r.places {
        out.push_str(&format!(
            "  {:dc_w$}  {:rack_w$}  {:>5}  {:>11}  {:>7}\n",
            name(&p.dc),
            name(&p.rack),
            p.done,
            p.downloading,
            p.missing
        ));
    }
    if !r.slowest.is_empty() {
        out.push_str("  slowest:\n");
        for h in &r.slowest {
            out.push_str(&format!(
                "    {}  {}/{}  {:.1} %  {}\n",
                h.addr,
                name(&h.dc),
                name(&h.rack),
                h.progress * 100.0,
                format_rate(h.rate as f64)
            ));
        }
    }
    let missing: Vec<&str> = r
        .hosts
        .iter()
        .filter(|h| h.state == ringswarm_engine::fleet::view::HostState::Missing)
        .map(|h| h.addr.as_str())
        .collect();
    if !missing.is_empty() {
        out.push_str(&format!("  missing: {}\n", missing.join(", ")));
    }
    if r.peers_truncated || r.hosts_truncated {
        out.push_str("  (only part of the hosts is listed; the counts are complete)\n");
    }
}

pub fn run(ctx: Ctx, args: Args) -> Result<()> {
    let base = args.origin.trim_end_matches('/');
    if !base.starts_with("http://") && !base.starts_with("https://") {
        bail!("--origin `{}`: expected an http:// URL", args.origin);
    }
    let url = format!("{base}/fleet.json");
    let timeout = Duration::from_secs(args.timeout.max(1));
    let stop = crate::common::stop_flag();
    loop {
        let (body, view) = fetch(&url, timeout)?;
        if ctx.out.json {
            println!("{}", String::from_utf8_lossy(&body).trim_end());
        } else {
            if args.watch {
                // Clear the screen and home the cursor, as `watch` does.
                print!("\x1b[2J\x1b[H");
            }
            print!("{}", render(&view));
        }
        if !args.watch {
            return Ok(());
        }
        for _ in 0..20 {
            if interrupted(&stop) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
