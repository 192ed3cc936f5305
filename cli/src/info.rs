//! `ringswarm info`: what a .torrent file or a magnet link holds.

use std::path::Path;

use anyhow::{Context, Result};
use ringswarm_engine::bencode;
use ringswarm_engine::magnet::Magnet;
use ringswarm_engine::metainfo::Metainfo;
use serde::Serialize;

use crate::args::{format_bytes, format_time_secs};
use crate::common::load_torrent_bytes;
use crate::get::is_magnet;
use crate::output::{printable, Text};
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

fn of_torrent(meta: &Metainfo, bytes: &[u8]) -> InfoJson {
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
    InfoJson {
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
    }
}

pub fn run(ctx: Ctx, args: Args) -> Result<()> {
    let info = if is_magnet(&args.source) {
        of_magnet(&Magnet::parse(&args.source).with_context(|| "the magnet link".to_owned())?)
    } else {
        let (meta, bytes) = load_torrent_bytes(Path::new(&args.source))?;
        of_torrent(&meta, &bytes)
    };
    if ctx.out.json {
        ctx.out
            .result("info", serde_json::to_value(&info)?, None)
            .context("writing the result")?;
        return Ok(());
    }
    render(&info, args.all)
        .print()
        .context("writing the result")?;
    Ok(())
}

/// The human form; every string from the torrent or the link is made [`printable`].
fn render(info: &InfoJson, all: bool) -> Text {
    let mut out = Text::new();
    let name = info.name.as_deref().map_or("-".into(), printable);
    out.line(format!("name:        {name}"));
    out.line(format!("info-hash:   {} (v1)", info.info_hash));
    if info.kind == "magnet" {
        out.line("(a magnet link: size, pieces and files come from peers)");
    }
    if let (Some(size), Some(pieces), Some(piece)) = (info.size, info.pieces, info.piece_size) {
        out.line(format!(
            "size:        {} ({size} bytes)",
            format_bytes(size)
        ));
        out.line(format!("pieces:      {pieces} of {}", format_bytes(piece)));
    }
    if let Some(p) = info.private {
        out.line(format!("private:     {}", if p { "yes" } else { "no" }));
    }
    if let Some(c) = &info.created_by {
        out.line(format!("created by:  {}", printable(c)));
    }
    if let Some(d) = info.creation_date {
        out.line(format!("created:     {}", format_time_secs(d)));
    }
    if info.trackers.is_empty() {
        out.line("trackers:    none");
    } else {
        out.line("trackers:");
        for t in &info.trackers {
            out.line(format!("  {}", printable(t)));
        }
    }
    for p in &info.peers {
        out.line(format!("peer:        {}", printable(p)));
    }
    if info.kind == "torrent" {
        out.line(format!("files:       {}", info.files.len()));
        let shown = if all { info.files.len() } else { FILES_SHOWN };
        for f in info.files.iter().take(shown) {
            out.line(format!(
                "  {}  {}",
                printable(&f.path),
                format_bytes(f.size)
            ));
        }
        if info.files.len() > shown {
            out.line(format!(
                "  … {} more (--all lists them)",
                info.files.len() - shown
            ));
        }
    }
    out
}
