//! `ringswarm info`: what a .torrent file or a magnet link holds.

use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, Result};
use ringswarm_engine::bencode;
use ringswarm_engine::magnet::Magnet;
use ringswarm_engine::metainfo::Metainfo;
use serde::Serialize;

use crate::args::format_bytes;
use crate::Ctx;

/// Files listed unless --all.
const FILES_SHOWN: usize = 20;

/// Show what a .torrent file or a magnet link holds: name, size, pieces and piece size,
/// files, trackers, info-hash (v1), private flag, creator and creation date.
///
/// A magnet holds only the info-hash, a name and trackers: the rest comes from peers.
/// With --json, prints one JSON object (every file).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A .torrent file or a magnet:? link.
    #[arg(value_name = "FILE.torrent|MAGNET")]
    pub source: String,

    /// List every file (else the first 20).
    #[arg(long)]
    pub all: bool,
}

#[derive(Serialize, Default)]
struct FileJson {
    path: String,
    size: u64,
}

#[derive(Serialize, Default)]
struct InfoJson {
    kind: &'static str,
    info_hash: String,
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pieces: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    piece_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    private: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_by: Option<String>,
    /// Seconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    creation_date: Option<i64>,
    trackers: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    files: Vec<FileJson>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    peers: Vec<String>,
}

fn of_magnet(m: &Magnet) -> InfoJson {
    InfoJson {
        kind: "magnet",
        info_hash: ringswarm_engine::hex(&m.info_hash),
        name: m.display_name.clone(),
        trackers: m.trackers.clone(),
        peers: m.peers.clone(),
        ..InfoJson::default()
    }
}

fn of_torrent(bytes: &[u8]) -> Result<InfoJson> {
    let meta = Metainfo::from_bytes(bytes)?;
    // `created by` and `creation date` are outside what a download needs, so the metainfo
    // parser keeps neither: read them from the top-level dictionary here.
    let top = bencode::decode(bytes).ok();
    let field = |key: &[u8]| top.as_ref().and_then(|v| v.as_dict()?.get(key).cloned());
    let mut trackers: Vec<String> = meta.announce_list.iter().flatten().cloned().collect();
    if let Some(a) = &meta.announce {
        if !trackers.contains(a) {
            trackers.insert(0, a.clone());
        }
    }
    Ok(InfoJson {
        kind: "torrent",
        info_hash: ringswarm_engine::hex(&meta.info_hash),
        name: Some(meta.info.name.clone()),
        size: Some(meta.info.total_length),
        pieces: Some(meta.piece_count()),
        piece_size: Some(meta.info.piece_length),
        private: Some(meta.info.private),
        created_by: field(b"created by").and_then(|v| v.as_str().map(str::to_owned)),
        creation_date: field(b"creation date").and_then(|v| v.as_int()),
        trackers,
        files: meta
            .info
            .files
            .iter()
            .filter(|f| !f.pad)
            .map(|f| FileJson {
                path: meta.relative_path(f).display().to_string(),
                size: f.length,
            })
            .collect(),
        peers: Vec::new(),
    })
}

pub fn run(ctx: Ctx, args: Args) -> Result<()> {
    let info = if args
        .source
        .get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case("magnet:"))
    {
        of_magnet(&Magnet::parse(&args.source).with_context(|| "the magnet link".to_owned())?)
    } else {
        let bytes =
            std::fs::read(&args.source).with_context(|| format!("reading `{}`", args.source))?;
        of_torrent(&bytes).with_context(|| format!("`{}`", args.source))?
    };
    if ctx.out.json {
        println!("{}", serde_json::to_string(&info)?);
        return Ok(());
    }
    let none = || "-".to_owned();
    println!("name:        {}", info.name.clone().unwrap_or_else(none));
    println!("info-hash:   {} (v1)", info.info_hash);
    if info.kind == "magnet" {
        println!("(a magnet link: size, pieces and files come from peers)");
    }
    if let (Some(size), Some(pieces), Some(piece)) = (info.size, info.pieces, info.piece_size) {
        println!("size:        {} ({size} bytes)", format_bytes(size));
        println!("pieces:      {pieces} of {}", format_bytes(piece));
    }
    if let Some(p) = info.private {
        println!("private:     {}", if p { "yes" } else { "no" });
    }
    if let Some(c) = &info.created_by {
        println!("created by:  {c}");
    }
    if let Some(d) = info.creation_date.and_then(|d| u64::try_from(d).ok()) {
        let t = UNIX_EPOCH + Duration::from_secs(d);
        println!("created:     {}", humantime::format_rfc3339_seconds(t));
    }
    if info.trackers.is_empty() {
        println!("trackers:    none");
    } else {
        println!("trackers:");
        for t in &info.trackers {
            println!("  {t}");
        }
    }
    for p in &info.peers {
        println!("peer:        {p}");
    }
    if info.kind == "torrent" {
        println!("files:       {}", info.files.len());
        let shown = if args.all {
            info.files.len()
        } else {
            FILES_SHOWN
        };
        for f in info.files.iter().take(shown) {
            println!("  {}  {}", f.path, format_bytes(f.size));
        }
        if info.files.len() > shown {
            println!("  … {} more (--all lists them)", info.files.len() - shown);
        }
    }
    Ok(())
}
