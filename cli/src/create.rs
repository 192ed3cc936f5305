//! `ringswarm create`: make a .torrent for a file or a directory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use ringswarm_engine::create::{create, CreateOptions};
use ringswarm_engine::metainfo::Metainfo;

use crate::args::{format_bytes, parse_piece_size};
use crate::common::data_bytes;
use crate::output::Summary;
use crate::Ctx;

/// Make a .torrent file for a file or a directory.
///
/// Multi-file torrents get BEP 47 pad files, so each file starts on a piece boundary (that
/// keeps O_DIRECT I/O aligned). Symlinks are not followed; entries are sorted by name, so
/// the same tree always gives the same info-hash.
///
/// Prints the info-hash, the size, the piece count and where the .torrent was written.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The file or directory to share.
    pub path: PathBuf,

    /// Where to write the .torrent [default: ./<name>.torrent].
    #[arg(short, long, value_name = "FILE.torrent")]
    pub output: Option<PathBuf>,

    /// Piece size: a power of two from 16K to 256M (4M, 4MiB, 16K, 1048576), or auto:
    /// about 1024 pieces, 1M to 16M.
    #[arg(long, value_name = "SIZE", default_value = "auto", value_parser = parse_piece_size)]
    pub piece_size: u64,

    /// Tracker announce URL; repeat for more (each becomes its own tier).
    #[arg(long = "tracker", value_name = "URL")]
    pub trackers: Vec<String>,

    /// Overwrite the output file if it exists.
    #[arg(short, long)]
    pub force: bool,
}

/// Builds the metainfo for `path` with the given piece size and trackers.
pub fn make_metainfo(path: &Path, piece_size: u64, trackers: &[String]) -> Result<Metainfo> {
    if !path.exists() {
        // Checked here for a plainer message than the engine's I/O error.
        std::fs::symlink_metadata(path).with_context(|| format!("`{}`", path.display()))?;
    }
    let options = CreateOptions {
        piece_size,
        trackers: trackers.iter().map(|t| vec![t.clone()]).collect(),
        ..CreateOptions::default()
    };
    create(path, &options).with_context(|| format!("creating a torrent for `{}`", path.display()))
}

pub fn run(ctx: Ctx, args: Args) -> Result<()> {
    let start = Instant::now();
    let meta = make_metainfo(&args.path, args.piece_size, &args.trackers)?;
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.torrent", meta.info.name)));
    if output.exists() && !args.force {
        bail!(
            "`{}` already exists (use --force to overwrite, or -o to choose another file)",
            output.display()
        );
    }
    write_atomically(&output, &meta.to_bytes())
        .with_context(|| format!("writing `{}`", output.display()))?;

    let hash = ringswarm_engine::hex(&meta.info_hash);
    let bytes = data_bytes(&meta);
    let files = meta.info.files.iter().filter(|f| !f.pad).count();
    let out = ctx.out;
    out.line(format!("info-hash: {hash}"));
    out.line(format!("name:      {}", meta.info.name));
    out.line(format!(
        "size:      {} ({} bytes) in {} file{}",
        format_bytes(bytes),
        bytes,
        files,
        if files == 1 { "" } else { "s" }
    ));
    out.line(format!(
        "pieces:    {} of {}",
        meta.piece_count(),
        format_bytes(meta.info.piece_length)
    ));
    out.line(format!("torrent:   {}", output.display()));

    let mut s = Summary::new("create");
    s.ok = true;
    s.info_hash = Some(hash);
    s.name = Some(meta.info.name.clone());
    s.bytes = Some(bytes);
    s.piece_count = Some(meta.piece_count());
    s.piece_size = Some(meta.info.piece_length);
    s.output = Some(output.display().to_string());
    s.seconds = Some(start.elapsed().as_secs_f64());
    out.summary(&s);
    Ok(())
}

/// Writes `bytes` to a temporary file beside `path`, syncs it, and renames it into place,
/// so a reader never sees half a torrent.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .with_context(|| format!("`{}` is not a file name", path.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    Ok(())
}
