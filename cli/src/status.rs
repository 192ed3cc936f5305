//! `ringswarm status`: ask the local agent what it holds and does; when no agent runs, say
//! so and show what is on disk.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use ringswarm_engine::fleet::agent::query_status;
use ringswarm_engine::fleet::on_disk::{self, DiskRelease};

use crate::args::{format_bytes, format_rate};
use crate::progress::format_eta;
use crate::Ctx;

/// The exit code when no agent runs (the releases on disk are shown all the same): LSB's
/// "program is not running", as `systemctl status` uses it, so a check script can tell a
/// stopped agent from a failed command (1) without parsing text.
pub const EXIT_NOT_RUNNING: i32 = 3;

/// Show the local agent's releases, downloads (rate, ETA), peers and locked memory.
///
/// Asks the agent over its Unix socket (DIR/.agent/status.sock). With --json, prints the
/// agent's status object as it is.
///
/// When no agent answers (no socket, or nothing listening on it), says that the agent is
/// not running and lists what is on disk under DIR instead, read-only: the releases of
/// each name, which one is current, their sizes and how many pieces their resume records
/// say are verified (`--json`: one object with `agent_running: false`). The exit code is
/// then 3.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The agent's directory [default: /var/lib/ringswarm].
    #[arg(long, value_name = "DIR", default_value = "/var/lib/ringswarm")]
    pub dir: PathBuf,

    /// The status socket, when not DIR/.agent/status.sock.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

pub fn run(ctx: Ctx, args: Args) -> Result<()> {
    let socket = args
        .socket
        .unwrap_or_else(|| args.dir.join(".agent").join("status.sock"));
    let status = match query_status(&socket) {
        Ok(status) => status,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {
            eprintln!(
                "ringswarm: warning: the agent is not running (nothing answers at `{}`: {e}); \
                 showing what is on disk under `{}`",
                socket.display(),
                args.dir.display()
            );
            show_disk(ctx, &args.dir)?;
            std::process::exit(EXIT_NOT_RUNNING);
        }
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "asking the agent at `{}` (is `ringswarm agent` running?)",
                    socket.display()
                )
            })
        }
    };
    if ctx.out.json {
        println!("{}", serde_json::to_string(&status)?);
        return Ok(());
    }
    println!(
        "feed {} (sequence {}, {} errors{}{})",
        status.feed_url,
        status.feed_sequence,
        status.feed_errors,
        if status.feed_expired {
            "; FEED EXPIRED: nothing is activated until a fresh one"
        } else {
            ""
        },
        status
            .last_feed_error
            .as_ref()
            .map_or(String::new(), |e| format!("; last: {e}"))
    );
    println!(
        "{} peers, {} locked",
        status.peers,
        format_bytes(status.locked_bytes)
    );
    for r in &status.releases {
        let progress = if r.state == "downloading" {
            format!(
                " {:.1}% of {}",
                100.0 * r.verified_bytes as f64 / r.total_bytes.max(1) as f64,
                format_bytes(r.total_bytes)
            )
        } else {
            format!(" {}", format_bytes(r.total_bytes))
        };
        let mut extra = Vec::new();
        if r.state == "downloading" {
            extra.push(format_rate(r.rate_bytes_per_sec));
            extra.push(format!("ETA {}", format_eta(r.eta_secs)));
        }
        if r.locked {
            extra.push("locked".to_owned());
        }
        extra.push(format!("{} peers", r.peers));
        extra.push(format!("{} out", format_bytes(r.uploaded_bytes)));
        if let Some(ms) = r.activation_ms {
            extra.push(format!(
                "activated {:.1}s after publish",
                ms as f64 / 1000.0
            ));
        }
        if let Some(h) = &r.hook {
            extra.push(h.clone());
        }
        if let Some(e) = &r.lock_error {
            extra.push(e.clone());
        }
        if let Some(e) = &r.error {
            extra.push(format!("error: {e}"));
        }
        println!(
            "{:<10} {} {}{progress} ({})",
            r.state,
            r.name,
            r.version,
            extra.join(", ")
        );
    }
    Ok(())
}

/// The releases on disk under `dir`, as `status` shows them without an agent.
fn show_disk(ctx: Ctx, dir: &Path) -> Result<()> {
    let releases = on_disk::scan(dir).with_context(|| format!("reading `{}`", dir.display()))?;
    if ctx.out.json {
        let json = serde_json::json!({
            "agent_running": false,
            "dir": dir,
            "releases": releases,
        });
        println!("{json}");
        return Ok(());
    }
    println!("agent not running; on disk under {}:", dir.display());
    if releases.is_empty() {
        println!("no releases");
    }
    for r in &releases {
        println!("{}", disk_line(r));
    }
    Ok(())
}

fn disk_line(r: &DiskRelease) -> String {
    let mut extra = vec![match r.verified_pieces {
        Some(v) => format!("{v}/{} pieces verified", r.pieces),
        None => format!("0/{} pieces verified (no resume record)", r.pieces),
    }];
    if r.complete() {
        extra.push("complete".to_owned());
    } else if r.verified_pieces.is_some() && !r.files_unchanged {
        extra.push("files changed since verified: the agent hashes them again".to_owned());
    }
    if let Some(ms) = r.activated_ms {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
        extra.push(format!(
            "activated {}",
            humantime::format_rfc3339_seconds(at)
        ));
    }
    format!(
        "{:<10} {} {} {} ({})",
        r.state,
        r.name,
        r.version,
        format_bytes(r.total_bytes),
        extra.join(", ")
    )
}
