//! `ringswarm status`: ask the local agent what it holds and does.

use std::path::PathBuf;

use anyhow::{Context, Result};
use ringswarm_engine::fleet::agent::query_status;

use crate::args::format_bytes;
use crate::Ctx;

/// Show the local agent's releases, downloads, peers and locked memory.
///
/// Asks the agent over its Unix socket (DIR/.agent/status.sock). With --json, prints the
/// agent's status object as it is.
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
    let status = query_status(&socket).with_context(|| {
        format!(
            "asking the agent at `{}` (is `ringswarm agent` running?)",
            socket.display()
        )
    })?;
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
