//! `ringswarm fleet`: the origin's fleet view in a terminal.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use ringswarm_engine::fleet::view::{http_get, FleetView, ReleaseView};
use serde::Deserialize;

use crate::args::{format_bytes, format_rate, parse_duration};
use crate::interrupt::interrupted;
use crate::output::{printable, write_stdout, Text};
use crate::Ctx;

/// Show which host runs which release: per live release, hosts done / downloading /
/// missing per datacenter and rack, the slowest hosts and the throughput.
///
/// Reads URL/fleet.json from the origin (which joins its feed with the tracker's peers:
/// start it with --tracker-http). A host is "missing" from a release when the tracker saw
/// it on another release of the same name in the last 10 minutes but not on this one.
/// With --json, prints the origin's JSON on one line as the summary (`"event":"summary"`);
/// with --watch, one `"event":"view"` line per redraw.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The origin's HTTP address, e.g. http://origin:8470.
    #[arg(long, value_name = "URL")]
    pub origin: String,

    /// Redraw every 2 s until Ctrl-C.
    #[arg(long)]
    pub watch: bool,

    /// How long to wait for the origin (30s, 1m, or seconds).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// The origin's answer: the view, and the JSON as sent (fields this version does not know
/// are kept for --json).
fn fetch(url: &str, timeout: Duration) -> Result<(serde_json::Value, FleetView)> {
    let body = http_get(url, timeout).map_err(anyhow::Error::msg)?;
    let no_view = || format!("{url} is no fleet view (is the origin ringswarm's?)");
    let json: serde_json::Value = serde_json::from_slice(&body).with_context(no_view)?;
    let view = FleetView::deserialize(&json).with_context(no_view)?;
    Ok((json, view))
}

/// The view as text: one block per release. Every string from the origin is made
/// [`printable`]: a hostile origin cannot send escapes to the terminal.
pub fn render(view: &FleetView) -> String {
    let mut out = String::new();
    if let Some(e) = &view.error {
        out.push_str(&format!("tracker: {}\n", printable(e)));
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
    let hash: String = r.info_hash.chars().take(12).collect();
    out.push_str(&format!(
        "\n{} {}{}  {}  {}…\n  {} done, {} downloading, {} missing; {}\n",
        printable(&r.name),
        printable(&r.version),
        if r.newest { "" } else { " (previous)" },
        format_bytes(r.size),
        printable(&hash),
        r.done,
        r.downloading,
        r.missing,
        format_rate(r.rate as f64),
    ));
    let name = |s: &str| {
        if s.is_empty() {
            "?".to_owned()
        } else {
            printable(s).into_owned()
        }
    };
    let dc_w = r
        .places
        .iter()
        .map(|p| name(&p.dc).chars().count())
        .max()
        .unwrap_or(2)
        .max(2);
    let rack_w = r
        .places
        .iter()
        .map(|p| name(&p.rack).chars().count())
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
                printable(&h.addr),
                name(&h.dc),
                name(&h.rack),
                h.progress * 100.0,
                format_rate(h.rate as f64)
            ));
        }
    }
    let missing: Vec<String> = r
        .hosts
        .iter()
        .filter(|h| h.state == ringswarm_engine::fleet::view::HostState::Missing)
        .map(|h| printable(&h.addr).into_owned())
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
    if crate::feed::is_https(base) {
        bail!(
            "--origin `{}`: {}",
            args.origin,
            crate::feed::HTTPS_UNSUPPORTED
        );
    }
    if !base.starts_with("http://") {
        bail!("--origin `{}`: expected an http:// URL", args.origin);
    }
    let url = format!("{base}/fleet.json");
    let timeout = args.timeout.max(Duration::from_secs(1));
    let stop = crate::common::stop_flag();
    loop {
        let (json, view) = fetch(&url, timeout)?;
        if ctx.out.json && !args.watch {
            ctx.out
                .result("fleet", json, None)
                .context("writing the result")?;
            return Ok(());
        }
        if ctx.out.json {
            let mut line = serde_json::json!({ "event": "view" });
            if let (Some(event), serde_json::Value::Object(body)) = (line.as_object_mut(), json) {
                for (key, value) in body {
                    event.entry(key).or_insert(value);
                }
            }
            write_stdout(format!("{line}\n").as_bytes()).context("writing the view")?;
        } else {
            let mut text = Text::new();
            if args.watch {
                // Clear the screen and home the cursor, as `watch` does.
                text.push("\x1b[2J\x1b[H");
            }
            text.push(&render(&view));
            text.print().context("writing the view")?;
        }
        if !args.watch {
            return Ok(());
        }
        for _ in 0..20 {
            if interrupted(&stop) {
                if ctx.out.json {
                    ctx.out
                        .result("fleet", serde_json::json!({}), None)
                        .context("writing the result")?;
                }
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
