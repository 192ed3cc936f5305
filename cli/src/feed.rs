//! `ringswarm feed show`: the releases in a feed, readable.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ringswarm_engine::feed::Feed;
use ringswarm_engine::fleet::view::http_get;
use serde::Serialize;

use crate::args::{format_bytes, format_time};
use crate::output::{printable, Text};
use crate::Ctx;

/// Read a release feed.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: FeedCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum FeedCommand {
    Show(ShowArgs),
}

/// Show the releases in a feed: name, version, size, info-hash, published time, and the
/// feed's sequence and expiry.
///
/// The signature is checked with --pubkey (a bad one is an error); without it the output
/// says the feed is unchecked. With --json, prints one JSON object.
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The feed: an http:// URL (e.g. http://origin:8470/feed.json) or a file (https is
    /// not supported: the feed's signature is what agents trust).
    #[arg(value_name = "URL|FILE")]
    pub feed: String,

    /// The publisher's public key: a file (as `ringswarm keygen` writes NAME.pub) or the
    /// base64 key itself.
    #[arg(long, value_name = "FILE|KEY")]
    pub pubkey: Option<String>,
}

#[derive(Serialize)]
struct ReleaseJson {
    name: String,
    version: String,
    size: u64,
    info_hash: String,
    published_ms: u64,
}

#[derive(Serialize)]
struct FeedJson {
    source: String,
    signature: &'static str,
    sequence: u64,
    signed_ms: u64,
    expires_ms: Option<u64>,
    fresh: bool,
    releases: Vec<ReleaseJson>,
}

/// The one line for an https:// URL, as `--topology` words it: the HTTP client here has
/// no TLS, and needs none for a signed feed.
pub const HTTPS_UNSUPPORTED: &str =
    "https is not supported (only http:// URLs, or a file): serve the feed over http; \
     its signature is what agents trust";

/// True when `source` is an https:// URL (any case).
pub fn is_https(source: &str) -> bool {
    source
        .get(..8)
        .is_some_and(|p| p.eq_ignore_ascii_case("https://"))
}

fn read_source(source: &str) -> Result<Vec<u8>> {
    if is_https(source) {
        bail!("`{source}`: {HTTPS_UNSUPPORTED}");
    }
    if source.starts_with("http://") {
        http_get(source, Duration::from_secs(10)).map_err(anyhow::Error::msg)
    } else {
        std::fs::read(Path::new(source)).with_context(|| format!("reading `{source}`"))
    }
}

pub fn run(ctx: Ctx, args: Args) -> Result<()> {
    let FeedCommand::Show(args) = args.command;
    let bytes = read_source(&args.feed)?;
    let (feed, signature) = match &args.pubkey {
        Some(key) => {
            let key = crate::keygen::load_public(key)?;
            let feed = Feed::verify(&bytes, &key)
                .with_context(|| format!("checking the signature of `{}`", args.feed))?;
            (feed, "good")
        }
        None => (
            Feed::read_unverified(&bytes).with_context(|| format!("`{}`", args.feed))?,
            "unchecked",
        ),
    };
    let now = ringswarm_engine::fleet::now_ms();
    let fresh = feed.check_fresh(now);
    if ctx.out.json {
        let json = FeedJson {
            source: args.feed.clone(),
            signature,
            sequence: feed.sequence,
            signed_ms: feed.signed_ms,
            expires_ms: feed.expires_ms,
            fresh: fresh.is_ok(),
            releases: feed
                .releases
                .iter()
                .map(|r| ReleaseJson {
                    name: r.name.clone(),
                    version: r.version.clone(),
                    size: r.size,
                    info_hash: ringswarm_engine::hex(&r.info_hash),
                    published_ms: r.published_ms,
                })
                .collect(),
        };
        ctx.out
            .result("feed", serde_json::to_value(&json)?, None)
            .context("writing the result")?;
        return Ok(());
    }
    render(&args.feed, &feed, signature, fresh.is_ok())
        .print()
        .context("writing the result")?;
    Ok(())
}

/// The human form; names and versions from the feed are made [`printable`].
fn render(source: &str, feed: &Feed, signature: &str, fresh: bool) -> Text {
    let mut out = Text::new();
    out.line(format!(
        "feed {} sequence {}",
        printable(source),
        feed.sequence
    ));
    match signature {
        "good" => out.line("signature: good"),
        _ => out.line("signature: unchecked (give --pubkey to check it)"),
    }
    out.line(format!("signed: {}", format_time(feed.signed_ms)));
    match (feed.expires_ms, fresh) {
        (Some(e), true) => out.line(format!("expires: {} (fresh)", format_time(e))),
        (Some(e), false) => out.line(format!(
            "expires: {} (EXPIRED: agents refuse it)",
            format_time(e)
        )),
        (None, _) => out.line("expires: never set (agents refuse it)"),
    }
    out.line(format!("{} releases:", feed.releases.len()));
    let rows: Vec<(String, String)> = feed
        .releases
        .iter()
        .map(|r| {
            (
                printable(&r.name).into_owned(),
                printable(&r.version).into_owned(),
            )
        })
        .collect();
    let width = |pick: fn(&(String, String)) -> &String, least: usize| {
        rows.iter()
            .map(|r| pick(r).chars().count())
            .max()
            .unwrap_or(least)
            .max(least)
    };
    let w_name = width(|r| &r.0, 4);
    let w_ver = width(|r| &r.1, 7);
    out.line(format!(
        "  {:w_name$}  {:w_ver$}  {:>12}  {:40}  published",
        "name", "version", "size", "info-hash"
    ));
    for (r, (name, version)) in feed.releases.iter().zip(&rows) {
        out.line(format!(
            "  {:w_name$}  {:w_ver$}  {:>12}  {:40}  {}",
            name,
            version,
            format_bytes(r.size),
            ringswarm_engine::hex(&r.info_hash),
            format_time(r.published_ms)
        ));
    }
    out
}
