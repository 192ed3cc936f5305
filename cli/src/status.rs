//! `ringswarm status`: ask the local agent what it holds and does; when no agent runs, say
//! so and show what is on disk.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ringswarm_engine::fleet::agent::{query_status, AgentStatus, ReleaseStatus};
use ringswarm_engine::fleet::on_disk::{self, DiskRelease};

use crate::args::{format_bytes, format_time};
use crate::exit::{failure, Code};
use crate::output::{is_stdout_closed, printable, Text};
use crate::progress::download_line;
use crate::Ctx;

/// Show the local agent's releases, downloads (rate, ETA), peers and locked memory.
///
/// Asks the agent over its Unix socket (DIR/.agent/status.sock). With --json, prints the
/// agent's status object as the summary (`"event":"summary"`, `ok`, then its fields).
///
/// When no agent answers (no socket, or nothing listening on it), says that the agent is
/// not running and lists what is on disk under DIR instead, read-only: the releases of
/// each name, which one is current, their sizes and how many pieces their resume records
/// say are verified (`--json`: the summary, with `ok: false`, `agent_running: false` and
/// the releases). The exit code is then 3, LSB's "program is not running", as `systemctl
/// status` uses it: a check script tells a stopped agent from a failed command (1) without
/// parsing text.
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
            let why = format!(
                "the agent is not running: nothing answers at `{}` ({e})",
                socket.display()
            );
            ctx.out.warn(format!(
                "the agent is not running; showing what is on disk under `{}`",
                args.dir.display()
            ));
            match show_disk(ctx, &args.dir, &why) {
                // A reader that left early changes nothing: the answer is the exit code.
                Err(e) if !is_stdout_closed(&e) => return Err(e),
                _ => return Err(failure(Code::NotRunning, why)),
            }
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
        ctx.out
            .result("status", serde_json::to_value(&status)?, None)
            .context("writing the result")?;
        return Ok(());
    }
    render(&status).print().context("writing the result")?;
    Ok(())
}

/// The agent's status as text; strings that came from the feed or the origin are made
/// [`printable`].
fn render(status: &AgentStatus) -> Text {
    let mut out = Text::new();
    out.line(format!(
        "feed {} (sequence {}, {} errors{}{})",
        printable(&status.feed_url),
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
            .map_or(String::new(), |e| format!("; last: {}", printable(e)))
    ));
    out.line(format!(
        "{} peers, {} locked",
        status.peers,
        format_bytes(status.locked_bytes)
    ));
    for r in &status.releases {
        out.line(release_line(r));
    }
    out
}

/// One release: a download as [`download_line`] words it (as the agent prints it), any
/// other state with its size; then what else is known, in parentheses.
fn release_line(r: &ReleaseStatus) -> String {
    let downloading = r.state == "downloading";
    let mut extra = Vec::new();
    if r.locked {
        extra.push("locked".to_owned());
    }
    if !downloading {
        extra.push(format!("{} peers", r.peers));
    }
    extra.push(format!("{} out", format_bytes(r.uploaded_bytes)));
    if let Some(ms) = r.activation_ms {
        extra.push(format!(
            "activated {:.1}s after publish",
            ms as f64 / 1000.0
        ));
    }
    if let Some(h) = &r.hook {
        extra.push(printable(h).into_owned());
    }
    if let Some(e) = &r.lock_error {
        extra.push(printable(e).into_owned());
    }
    if let Some(e) = &r.error {
        extra.push(format!("error: {}", printable(e)));
    }
    let what = if downloading {
        format!(": {}", download_line(r))
    } else {
        format!(" {}", format_bytes(r.total_bytes))
    };
    format!(
        "{:<10} {} {}{what} ({})",
        printable(&r.state),
        printable(&r.name),
        printable(&r.version),
        extra.join(", ")
    )
}

/// The releases on disk under `dir`, as `status` shows them without an agent; under
/// `--json`, as the failed summary (`why` is its error).
fn show_disk(ctx: Ctx, dir: &Path, why: &str) -> Result<()> {
    let releases = on_disk::scan(dir).with_context(|| format!("reading `{}`", dir.display()))?;
    if ctx.out.json {
        let json = serde_json::json!({
            "agent_running": false,
            "dir": dir,
            "releases": releases,
        });
        ctx.out
            .result("status", json, Some((Code::NotRunning.as_i32(), why)))
            .context("writing the result")?;
        return Ok(());
    }
    let mut out = Text::new();
    out.line(format!(
        "agent not running; on disk under {}:",
        printable(&dir.display().to_string())
    ));
    if releases.is_empty() {
        out.line("no releases");
    }
    for r in &releases {
        out.line(disk_line(r));
    }
    out.print().context("writing the result")?;
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
        extra.push(format!("activated {}", format_time(ms)));
    }
    format!(
        "{:<10} {} {} {} ({})",
        printable(&r.state),
        printable(&r.name),
        printable(&r.version),
        format_bytes(r.total_bytes),
        extra.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_download_reads_as_the_agent_prints_it() {
        let r = ReleaseStatus {
            name: "index".into(),
            version: "v1".into(),
            state: "downloading".into(),
            total_bytes: 16 << 20,
            verified_bytes: 3 << 20,
            peers: 4,
            rate_bytes_per_sec: 1048576.0,
            eta_secs: Some(13),
            uploaded_bytes: 0,
            ..ReleaseStatus::default()
        };
        assert_eq!(
            release_line(&r),
            format!("downloading index v1: {} (0 B out)", download_line(&r))
        );
        let done = ReleaseStatus {
            state: "current".into(),
            name: "ind\x1bex".into(),
            ..r
        };
        assert_eq!(
            release_line(&done),
            "current    ind?ex v1 16.00 MiB (4 peers, 0 B out)"
        );
    }
}
