//! `ringswarm`: ship big blobs to a fleet over BitTorrent.
//!
//! This file only parses the command line, sets up logging, dispatches to one module per
//! command, and turns an error into one line on stderr and its exit code ([`exit`]: the
//! table is in `--help`). (Usage errors found by the argument parser keep clap's message
//! and its exit code 2.)

#![forbid(unsafe_code)]

mod agent;
mod args;
mod common;
mod completions;
mod config;
mod create;
mod demo;
mod exit;
mod feed;
mod fleet;
mod get;
mod info;
mod interrupt;
mod keygen;
mod logging;
mod man;
mod notify;
mod origin;
mod output;
mod progress;
mod publish;
mod seed;
mod send;
mod sim;
mod status;
mod tracker;

use clap::{Parser, Subcommand};

use crate::output::{Out, Summary};
use crate::progress::Style;

/// Ship big blobs to a fleet over BitTorrent, on a thread-per-core io_uring engine.
///
/// One-shot transfer, as handy as scp:
///   sender:    ringswarm send ./blob
///   receivers: ringswarm get 'magnet:?xt=...' /data
///
/// Or with a .torrent file:
///   ringswarm create ./blob            (writes blob.torrent)
///   ringswarm seed blob.torrent .      (serves ./blob)
///   ringswarm get blob.torrent /data --peer buildhost:6881
///
/// Try it all on this machine with `ringswarm demo`.
#[derive(Debug, Parser)]
#[command(
    name = "ringswarm",
    version = VERSION,
    verbatim_doc_comment,
    after_help = exit::EXIT_CODES_HELP
)]
struct Cli {
    /// JSON on stdout, one object per line as events happen (listening, magnet,
    /// peer_failed, complete, ...), the summary last (and no progress bar); human messages
    /// go to stderr.
    #[arg(long, global = true)]
    json: bool,

    /// Only errors on stderr: no progress, no result lines, no warnings (stdout still gets
    /// --json output).
    #[arg(short, long, global = true)]
    quiet: bool,

    /// More log output on stderr (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    /// Log lines on stderr as text or as one JSON object each.
    #[arg(long, global = true, value_name = "FORMAT", default_value = "text")]
    log_format: logging::LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Create(create::Args),
    Seed(seed::Args),
    Get(get::Args),
    Send(send::Args),
    Demo(demo::Args),
    Tracker(tracker::Args),
    Keygen(keygen::Args),
    Publish(publish::Args),
    Origin(origin::Args),
    Agent(agent::Args),
    Status(status::Args),
    Fleet(fleet::Args),
    Feed(feed::Args),
    Info(info::Args),
    Completions(completions::Args),
    Man(man::Args),
    Sim(sim::Args),
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Create(_) => "create",
            Command::Seed(_) => "seed",
            Command::Get(_) => "get",
            Command::Send(_) => "send",
            Command::Demo(_) => "demo",
            Command::Tracker(_) => "tracker",
            Command::Keygen(_) => "keygen",
            Command::Publish(_) => "publish",
            Command::Origin(_) => "origin",
            Command::Agent(_) => "agent",
            Command::Status(_) => "status",
            Command::Fleet(_) => "fleet",
            Command::Feed(_) => "feed",
            Command::Info(_) => "info",
            Command::Completions(_) => "completions",
            Command::Man(_) => "man",
            Command::Sim(_) => "sim",
        }
    }
}

/// `--version`: the crate version and the git commit (from build.rs; `unknown` outside a
/// git checkout).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("RINGSWARM_GIT_HASH"),
    ")"
);

/// What every command gets besides its own arguments.
#[derive(Clone, Copy, Debug)]
pub struct Ctx {
    pub out: Out,
    pub style: Style,
}

/// One line: the anyhow chain joined with ": ", newlines flattened. A cause that the
/// message before it already ends with (an error that prints its source) is said once.
fn error_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.split(['\n', '\r'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() {
    let cli = Cli::parse();
    ringswarm_engine::metrics::set_build(env!("CARGO_PKG_VERSION"), env!("RINGSWARM_GIT_HASH"));
    // -q: errors only, from the logs too (RUST_LOG still wins). Set before any thread runs.
    if cli.quiet && std::env::var_os("RUST_LOG").is_none() {
        std::env::set_var("RUST_LOG", "error");
    }
    logging::init_logging(cli.verbose, cli.log_format);
    let ctx = Ctx {
        out: Out {
            json: cli.json,
            quiet: cli.quiet,
        },
        style: if cli.quiet {
            Style::Off
        } else {
            Style::detect(cli.json)
        },
    };
    let name = cli.command.name();
    let result = match cli.command {
        Command::Create(a) => create::run(ctx, a),
        Command::Seed(a) => seed::run(ctx, a),
        Command::Get(a) => get::run(ctx, a),
        Command::Send(a) => send::run(ctx, a),
        Command::Demo(a) => demo::run(ctx, a),
        Command::Tracker(a) => tracker::run(ctx, a),
        Command::Keygen(a) => keygen::run(ctx, a),
        Command::Publish(a) => publish::run(ctx, a),
        Command::Origin(a) => origin::run(ctx, a),
        Command::Agent(a) => agent::run(ctx, a),
        Command::Status(a) => status::run(ctx, a),
        Command::Fleet(a) => fleet::run(ctx, a),
        Command::Feed(a) => feed::run(ctx, a),
        Command::Info(a) => info::run(ctx, a),
        Command::Completions(a) => completions::run(a),
        Command::Man(a) => man::run(a),
        Command::Sim(a) => sim::run(ctx, a),
    };
    if let Err(e) = result {
        // The reader of stdout left (`| head`): it asked for no more; not a failure.
        if output::is_stdout_closed(&e) {
            std::process::exit(0);
        }
        let line = error_line(&e);
        let code = exit::code_of(&e).as_i32();
        eprintln!("ringswarm: error: {line}");
        if cli.json && !output::summary_printed() {
            let mut s = Summary::new(name);
            s.error = Some(line);
            s.exit_code = Some(code);
            output::print_json(&s);
        }
        std::process::exit(code);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn cli_definition_is_valid() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn error_is_one_line() {
        let e = Err::<(), _>(anyhow::anyhow!("bad\nthing"))
            .context("reading `x.torrent`")
            .unwrap_err();
        assert_eq!(error_line(&e), "reading `x.torrent`: bad thing");
    }

    #[derive(Debug, thiserror::Error)]
    #[error("{path}: {source}")]
    struct WithSource {
        path: String,
        source: std::io::Error,
    }

    #[test]
    fn an_error_that_prints_its_source_is_said_once() {
        let inner = WithSource {
            path: "/x".into(),
            source: std::io::Error::other("gone\nreally"),
        };
        let e = anyhow::Error::new(inner).context("reading `/x`");
        assert_eq!(error_line(&e), "reading `/x`: /x: gone really");
    }
}
