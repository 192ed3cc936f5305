//! `ringswarm feed show`: the releases in a feed, readable.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, Result};
use ringswarm_engine::feed::Feed;
use ringswarm_engine::fleet::view::http_get;
use serde::Serialize;

use crate::args::format_bytes;
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
    /// The feed: an http:// URL (e.g. http://origin:8470/feed.json) or a file.
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

fn time_of(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn read_source(source: &str) -> Result<Vec<u8>> {
    if source.starts_with("http://") || source.starts_with("https://") {
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
        println!("{}", serde_json::to_string(&json)?);
        return Ok(());
    }
    println!("feed {} sequence {}", args.feed, feed.sequence);
    match signature {
        "good" => println!("signature: good"),
        _ => println!("signature: unchecked (give --pubkey to check it)"),
    }
    println!("signed: {}", time_of(feed.signed_ms));
    match (feed.expires_ms, &fresh) {
        (Some(e), Ok(())) => println!("expires: {} (fresh)", time_of(e)),
        (Some(e), Err(_)) => println!("expires: {} (EXPIRED: agents refuse it)", time_of(e)),
        (None, _) => println!("expires: never set (agents refuse it)"),
    }
    println!("{} releases:", feed.releases.len());
    let w_name = feed
        .releases
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let w_ver = feed
        .releases
        .iter()
        .map(|r| r.version.len())
        .max()
        .unwrap_or(7)
        .max(7);
    println!(
        "  {:w_name$}  {:w_ver$}  {:>12}  {:40}  published",
        "name", "version", "size", "info-hash"
    );
    for r in &feed.releases {
        println!(
            "  {:w_name$}  {:w_ver$}  {:>12}  {:40}  {}",
            r.name,
            r.version,
            format_bytes(r.size),
            ringswarm_engine::hex(&r.info_hash),
            time_of(r.published_ms)
        );
    }
    Ok(())
}
