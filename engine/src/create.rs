//! Making metainfo from a file or a directory: BEP 47 pad files so each file of a
//! multi-file torrent starts on a piece boundary; pieces hashed on all cores.
//!
//! - A directory is walked depth-first with entries sorted by name (bytes), so the same tree
//!   always gives the same torrent. Symbolic links and special files below it are skipped
//!   with a warning; `path` itself is followed when it is a link, as the user named it.
//!   Empty directories leave no trace; 0-byte files are kept.
//! - A pad file goes after each file whose end is not on a piece boundary, unless only empty
//!   files follow it (a 0-byte file needs no alignment, and a trailing pad would only add
//!   zeros to transfer).
//! - Hashing splits the pieces into one contiguous range per thread, so each thread reads
//!   sequentially, with positioned reads of up to [`READ_CHUNK`] bytes into one buffer per
//!   thread: memory stays at `threads × READ_CHUNK` whatever the piece size.
//! - Nothing to hash (every file empty) is an error, as parsing rejects such torrents.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::metainfo::{self, FileEntry, Info, Metainfo, MetainfoError};
use crate::verify::{Digest, Sha1Stream};

/// `CreateOptions::piece_size` for "choose from the total size" ([`auto_piece_size`]).
pub const AUTO_PIECE_SIZE: u64 = 0;
/// Piece size when the size is unknown: 4 MiB.
pub const DEFAULT_PIECE_SIZE: u64 = 4 << 20;
/// Smallest piece size accepted: one BitTorrent block.
pub const MIN_PIECE_SIZE: u64 = 16 << 10;
/// Largest read issued while hashing.
pub const READ_CHUNK: usize = 4 << 20;

/// The piece size for `total` bytes: about 1024 pieces, a power of two from 1 MiB to
/// 16 MiB. A swarm relays a piece only once it is whole and verified, so the first hop
/// of every piece, and the tail, take a piece time each: with ~1000 pieces that is ~0.1 %
/// of the transfer per hop (a 256 MiB blob in 4 MiB pieces has only 64, and its fleet
/// run is 1.2 × slower than in 1 MiB pieces; perf/RESULTS.md). Below 1 MiB the per-piece
/// costs (a hash job, an O_DIRECT write, a HAVE to every peer) start to show; above
/// 16 MiB a piece holds too much of a 64-slot buffer pool.
pub fn auto_piece_size(total: u64) -> u64 {
    total
        .div_ceil(1024)
        .max(1)
        .next_power_of_two()
        .clamp(1 << 20, 16 << 20)
}

#[derive(Clone, Debug)]
pub struct CreateOptions {
    /// Power of two, ≥ 16 KiB; or [`AUTO_PIECE_SIZE`]: from the total ([`auto_piece_size`]).
    pub piece_size: u64,
    /// BEP 12 tiers; each `--tracker` is its own tier.
    pub trackers: Vec<Vec<String>>,
    /// Insert BEP 47 pad files in multi-file torrents (default true).
    pub pad_files: bool,
    /// Hashing threads (default: online CPUs).
    pub threads: usize,
}

impl Default for CreateOptions {
    fn default() -> Self {
        Self {
            piece_size: DEFAULT_PIECE_SIZE,
            trackers: Vec::new(),
            pad_files: true,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("piece size {0} is not a power of two of at least 16 KiB")]
    BadPieceSize(u64),
    #[error("{0}: nothing to share (no regular files)")]
    Empty(String),
    #[error("{path}: {reason}")]
    BadPath { path: String, reason: String },
    #[error("{0}: every file is empty (0 bytes); a torrent needs at least one byte")]
    ZeroLength(String),
    #[error(
        "{total} bytes in pieces of {piece_size} bytes make {pieces} pieces, more than the \
         {max} a torrent may have: use a larger piece size"
    )]
    TooManyPieces {
        total: u64,
        piece_size: u64,
        pieces: u64,
        max: u64,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CreateError + '_ {
    move |source| CreateError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A file found on disk, relative to the root.
struct Found {
    disk: PathBuf,
    rel: Vec<String>,
    length: u64,
}

/// Where the bytes of one stretch of the torrent come from: a file, or zeros for a pad.
#[derive(Clone, Debug)]
struct Span {
    offset: u64,
    length: u64,
    disk: Option<PathBuf>,
}

/// Creates the metainfo for `path` (a file or a directory; symlinks below it are skipped,
/// entries sorted by name for a deterministic result).
pub fn create(path: &Path, options: &CreateOptions) -> Result<Metainfo, CreateError> {
    let asked = options.piece_size;
    if asked != AUTO_PIECE_SIZE
        && (!asked.is_power_of_two()
            || !(MIN_PIECE_SIZE..=metainfo::MAX_PIECE_LENGTH).contains(&asked))
    {
        return Err(CreateError::BadPieceSize(asked));
    }
    let shown = || path.display().to_string();
    let meta = std::fs::metadata(path).map_err(io_err(path))?;
    let name = root_name(path)?;

    let (found, multi_file) = if meta.is_file() {
        let file = Found {
            disk: path.to_owned(),
            rel: Vec::new(),
            length: meta.len(),
        };
        (vec![file], false)
    } else if meta.is_dir() {
        let mut found = Vec::new();
        walk(path, &mut Vec::new(), &mut found)?;
        if found.is_empty() {
            return Err(CreateError::Empty(shown()));
        }
        (found, true)
    } else {
        return Err(CreateError::BadPath {
            path: shown(),
            reason: "not a regular file or a directory".into(),
        });
    };

    let piece = if asked == AUTO_PIECE_SIZE {
        auto_piece_size(found.iter().fold(0u64, |t, f| t.saturating_add(f.length)))
    } else {
        asked
    };
    let (files, spans) = lay_out(found, piece, multi_file && options.pad_files);
    let total = spans
        .iter()
        .try_fold(0u64, |acc, s| acc.checked_add(s.length))
        .ok_or_else(|| CreateError::BadPath {
            path: shown(),
            reason: "total size does not fit in 64 bits".into(),
        })?;
    if total == 0 {
        return Err(CreateError::ZeroLength(shown()));
    }
    let pieces = total.div_ceil(piece);
    if pieces > metainfo::MAX_PIECES {
        return Err(CreateError::TooManyPieces {
            total,
            piece_size: piece,
            pieces,
            max: metainfo::MAX_PIECES,
        });
    }

    let hashes = hash_pieces(&spans, piece, total, options.threads, READ_CHUNK)?;
    let info = Info {
        name,
        piece_length: piece,
        pieces: hashes,
        files,
        multi_file,
        total_length: total,
        private: false,
    };
    Ok(Metainfo::from_info(info, options.trackers.clone()))
}

/// The torrent's name: the last component of `path` (resolved for `.` and the like).
fn root_name(path: &Path) -> Result<String, CreateError> {
    let bad = |reason: String| CreateError::BadPath {
        path: path.display().to_string(),
        reason,
    };
    let resolved;
    let file_name = match path.file_name() {
        Some(n) => n,
        None => {
            resolved = std::fs::canonicalize(path).map_err(io_err(path))?;
            resolved
                .file_name()
                .ok_or_else(|| bad("has no name to give the torrent".into()))?
        }
    };
    let name = file_name
        .to_str()
        .ok_or_else(|| bad("name is not valid UTF-8".into()))?;
    metainfo::check_component(name, "name").map_err(|e| bad(reason_of(e)))?;
    Ok(name.to_owned())
}

fn reason_of(e: MetainfoError) -> String {
    match e {
        MetainfoError::UnsafePath { reason, .. } | MetainfoError::Invalid { reason, .. } => reason,
        other => other.to_string(),
    }
}

/// Collects the regular files below `dir`, depth-first in name order.
fn walk(dir: &Path, rel: &mut Vec<String>, out: &mut Vec<Found>) -> Result<(), CreateError> {
    let mut entries = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_err(dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let disk = entry.path();
        // DirEntry::file_type does not follow symlinks.
        let kind = entry.file_type().map_err(io_err(&disk))?;
        if kind.is_symlink() {
            tracing::warn!(path = %disk.display(), "skipping symbolic link");
            continue;
        }
        if !kind.is_dir() && !kind.is_file() {
            tracing::warn!(path = %disk.display(), "skipping: not a regular file or directory");
            continue;
        }
        let name = entry.file_name();
        if name == crate::storage::resume::RESUME_DIR {
            // A download's resume records (`get` into this tree): state, not data.
            tracing::warn!(path = %disk.display(), "skipping ringswarm's resume records");
            continue;
        }
        let bad = |reason: String| CreateError::BadPath {
            path: disk.display().to_string(),
            reason,
        };
        let name = name
            .to_str()
            .ok_or_else(|| bad("name is not valid UTF-8".into()))?;
        metainfo::check_component(name, "path").map_err(|e| bad(reason_of(e)))?;
        rel.push(name.to_owned());
        if kind.is_dir() {
            walk(&disk, rel, out)?;
        } else {
            let length = entry.metadata().map_err(io_err(&disk))?.len();
            out.push(Found {
                disk,
                rel: rel.clone(),
                length,
            });
        }
        rel.pop();
    }
    Ok(())
}

/// Torrent file entries and the matching byte sources, with pad files when `pad`.
fn lay_out(found: Vec<Found>, piece: u64, pad: bool) -> (Vec<FileEntry>, Vec<Span>) {
    // Index of the last non-empty file: no pad is needed after it.
    let last_data = found.iter().rposition(|f| f.length > 0);
    let mut files = Vec::with_capacity(found.len() * 2);
    let mut spans = Vec::with_capacity(found.len() * 2);
    let mut offset = 0u64;
    for (i, f) in found.into_iter().enumerate() {
        files.push(FileEntry {
            path: f.rel,
            length: f.length,
            offset,
            pad: false,
        });
        spans.push(Span {
            offset,
            length: f.length,
            disk: Some(f.disk),
        });
        offset = offset.saturating_add(f.length);
        let tail = offset % piece;
        if pad && tail != 0 && last_data.is_some_and(|last| i < last) {
            let length = piece - tail;
            files.push(FileEntry {
                path: vec![".pad".into(), length.to_string()],
                length,
                offset,
                pad: true,
            });
            spans.push(Span {
                offset,
                length,
                disk: None,
            });
            offset += length;
        }
    }
    (files, spans)
}

/// SHA-1 of every piece, `threads` contiguous ranges of pieces hashed in parallel.
fn hash_pieces(
    spans: &[Span],
    piece: u64,
    total: u64,
    threads: usize,
    chunk: usize,
) -> Result<Vec<Digest>, CreateError> {
    let count = usize::try_from(total.div_ceil(piece)).unwrap_or(usize::MAX);
    let threads = threads.clamp(1, count.max(1));
    let per = count.div_ceil(threads);
    let cancel = AtomicBool::new(false);
    let job = Job {
        spans,
        piece,
        total,
        chunk: chunk.max(1),
        cancel: &cancel,
    };
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let start = (t * per).min(count);
                let end = (start + per).min(count);
                let job = &job;
                scope.spawn(move || {
                    let result = job.hash_range(start, end);
                    if result.is_err() {
                        job.cancel.store(true, Ordering::Relaxed);
                    }
                    result
                })
            })
            .collect();
        let mut out = Vec::with_capacity(count);
        let mut first_err = None;
        for handle in handles {
            match handle.join() {
                Ok(Ok(hashes)) => out.extend(hashes),
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    })
}

struct Job<'a> {
    spans: &'a [Span],
    piece: u64,
    total: u64,
    chunk: usize,
    /// Set when a thread fails, so the others stop early.
    cancel: &'a AtomicBool,
}

impl Job<'_> {
    fn hash_range(&self, first: usize, end: usize) -> Result<Vec<Digest>, CreateError> {
        let mut out = Vec::with_capacity(end.saturating_sub(first));
        let mut buf = vec![
            0u8;
            self.chunk
                .min(usize::try_from(self.piece).unwrap_or(usize::MAX))
        ];
        // The file last read: a range of pieces walks the files in order.
        let mut open: Option<(usize, File)> = None;
        let start_at = first as u64 * self.piece;
        let mut idx = self
            .spans
            .partition_point(|s| s.offset + s.length <= start_at);
        for p in first..end {
            if self.cancel.load(Ordering::Relaxed) {
                break;
            }
            let start = p as u64 * self.piece;
            let stop = (start + self.piece).min(self.total);
            let mut sha = Sha1Stream::new();
            let mut pos = start;
            while pos < stop {
                // Skip spans that end before `pos`, including empty ones.
                while self
                    .spans
                    .get(idx)
                    .is_some_and(|s| s.offset + s.length <= pos)
                {
                    idx += 1;
                }
                let Some(span) = self.spans.get(idx) else {
                    return Err(CreateError::BadPath {
                        path: String::new(),
                        reason: format!("internal: no file covers byte {pos}"),
                    });
                };
                let upto = stop.min(span.offset + span.length);
                while pos < upto {
                    let n = usize::try_from(upto - pos).map_or(buf.len(), |n| n.min(buf.len()));
                    let part = &mut buf[..n];
                    match &span.disk {
                        None => part.fill(0),
                        Some(disk) => {
                            let file = match open.take() {
                                Some((i, f)) if i == idx => f,
                                _ => File::open(disk).map_err(io_err(disk))?,
                            };
                            let file = &open.insert((idx, file)).1;
                            file.read_exact_at(part, pos - span.offset)
                                .map_err(|e| {
                                    if e.kind() == std::io::ErrorKind::UnexpectedEof {
                                        std::io::Error::new(
                                            e.kind(),
                                            "file became shorter while being hashed",
                                        )
                                    } else {
                                        e
                                    }
                                })
                                .map_err(io_err(disk))?;
                        }
                    }
                    sha.update(part);
                    pos += n as u64;
                }
            }
            out.push(sha.finish());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const PIECE: u64 = 16 << 10;

    fn opts(threads: usize) -> CreateOptions {
        CreateOptions {
            piece_size: PIECE,
            trackers: vec![vec!["http://t/announce".into()]],
            pad_files: true,
            threads,
        }
    }

    /// Bytes that differ per file and per position, so misplaced reads change hashes.
    fn content(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] ^ seed)
            .collect()
    }

    /// Hashes of the torrent's concatenated data, the plain way.
    fn reference_hashes(root: &Path, m: &Metainfo) -> Vec<Digest> {
        let mut all = Vec::new();
        for f in &m.info.files {
            if f.pad {
                all.extend(std::iter::repeat_n(0u8, f.length as usize));
            } else {
                let disk = root.parent().unwrap().join(m.relative_path(f));
                all.extend(fs::read(disk).unwrap());
            }
        }
        assert_eq!(all.len() as u64, m.info.total_length);
        all.chunks(m.info.piece_length as usize)
            .map(crate::verify::sha1)
            .collect()
    }

    /// a.bin 20000, m/c 0, m/d 16384, m/empty/ (dir), m/link (symlink), z.bin 5.
    fn sample_tree() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("release");
        fs::create_dir_all(root.join("m/empty")).unwrap();
        fs::write(root.join("z.bin"), content(3, 5)).unwrap();
        fs::write(root.join("a.bin"), content(1, 20_000)).unwrap();
        fs::write(root.join("m/c"), b"").unwrap();
        fs::write(root.join("m/d"), content(2, PIECE as usize)).unwrap();
        std::os::unix::fs::symlink(root.join("a.bin"), root.join("m/link")).unwrap();
        (tmp, root)
    }

    #[test]
    fn directory_with_pad_files() {
        let (_tmp, root) = sample_tree();
        let m = create(&root, &opts(2)).unwrap();
        assert!(m.info.multi_file);
        assert_eq!(m.info.name, "release");
        let layout: Vec<(Vec<&str>, u64, u64, bool)> = m
            .info
            .files
            .iter()
            .map(|f| {
                let path = f.path.iter().map(String::as_str).collect();
                (path, f.offset, f.length, f.pad)
            })
            .collect();
        assert_eq!(
            layout,
            vec![
                (vec!["a.bin"], 0, 20_000, false),
                (vec![".pad", "12768"], 20_000, 12_768, true),
                (vec!["m", "c"], 32_768, 0, false),
                (vec!["m", "d"], 32_768, 16_384, false),
                (vec!["z.bin"], 49_152, 5, false),
            ]
        );
        assert_eq!(m.info.total_length, 49_157);
        assert_eq!(m.piece_count(), 4);
        for f in m.info.files.iter().filter(|f| !f.pad && f.length > 0) {
            assert_eq!(f.offset % PIECE, 0, "{:?}", f.path);
        }
        assert_eq!(m.info.pieces, reference_hashes(&root, &m));
        assert_eq!(m.announce_list, vec![vec!["http://t/announce".to_string()]]);
        // What we write, we read back unchanged.
        assert_eq!(Metainfo::from_bytes(&m.to_bytes()).unwrap(), m);
    }

    #[test]
    fn no_trailing_pad_before_empty_files() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("r");
        fs::create_dir(&root).unwrap();
        fs::write(root.join("a"), content(1, 100)).unwrap();
        fs::write(root.join("b"), content(2, 100)).unwrap();
        fs::write(root.join("c"), b"").unwrap();
        let m = create(&root, &opts(1)).unwrap();
        let pads: Vec<u64> = m
            .info
            .files
            .iter()
            .filter(|f| f.pad)
            .map(|f| f.offset)
            .collect();
        assert_eq!(pads, vec![100]);
        assert_eq!(m.info.total_length, PIECE + 100);
        assert_eq!(m.info.pieces, reference_hashes(&root, &m));
    }

    #[test]
    fn without_pad_files_pieces_span_files() {
        let (_tmp, root) = sample_tree();
        let m = create(
            &root,
            &CreateOptions {
                pad_files: false,
                ..opts(3)
            },
        )
        .unwrap();
        assert!(m.info.files.iter().all(|f| !f.pad));
        assert_eq!(m.info.total_length, 20_000 + 16_384 + 5);
        assert_eq!(m.info.pieces, reference_hashes(&root, &m));
    }

    #[test]
    fn thread_count_and_chunking_do_not_change_hashes() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("r");
        fs::create_dir(&root).unwrap();
        for (i, len) in [70_001usize, 3, 0, 50_000, 16_384, 1]
            .into_iter()
            .enumerate()
        {
            fs::write(root.join(format!("f{i}")), content(i as u8, len)).unwrap();
        }
        let want = create(&root, &opts(1)).unwrap();
        assert_eq!(want.info.pieces, reference_hashes(&root, &want));
        for threads in [2, 3, 7, 64] {
            assert_eq!(
                create(&root, &opts(threads)).unwrap(),
                want,
                "{threads} threads"
            );
        }
        // Reads smaller than a piece, and of odd sizes, give the same hashes.
        let found: Vec<Found> = want
            .info
            .files
            .iter()
            .filter(|f| !f.pad)
            .map(|f| Found {
                disk: root.join(&f.path[0]),
                rel: f.path.clone(),
                length: f.length,
            })
            .collect();
        let (_, spans) = lay_out(found, PIECE, true);
        for chunk in [1000, 4096, 7777] {
            let hashes = hash_pieces(&spans, PIECE, want.info.total_length, 2, chunk).unwrap();
            assert_eq!(hashes, want.info.pieces, "chunk {chunk}");
        }
    }

    #[test]
    fn single_file() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("blob.bin");
        fs::write(&file, content(9, 100_000)).unwrap();
        let m = create(&file, &opts(2)).unwrap();
        assert!(!m.info.multi_file);
        assert_eq!(m.info.name, "blob.bin");
        assert_eq!(m.info.files.len(), 1);
        assert!(m.info.files[0].path.is_empty());
        assert_eq!(m.info.total_length, 100_000);
        assert_eq!(m.piece_count(), 7);
        assert_eq!(m.info.pieces, reference_hashes(&file, &m));
        // A symlink given as the path itself is followed.
        let link = tmp.path().join("link.bin");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let via_link = create(&link, &opts(1)).unwrap();
        assert_eq!(via_link.info.pieces, m.info.pieces);
        assert_eq!(via_link.info.name, "link.bin");
    }

    #[test]
    fn auto_piece_sizes() {
        assert_eq!(auto_piece_size(0), 1 << 20);
        assert_eq!(auto_piece_size(256 << 20), 1 << 20);
        assert_eq!(auto_piece_size(1 << 30), 1 << 20);
        assert_eq!(auto_piece_size((1 << 30) + 1), 2 << 20);
        assert_eq!(auto_piece_size(4 << 30), 4 << 20);
        assert_eq!(auto_piece_size(1 << 40), 16 << 20);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("b.bin");
        std::fs::write(&f, vec![7u8; 3 << 20]).unwrap();
        let auto = CreateOptions {
            piece_size: AUTO_PIECE_SIZE,
            ..CreateOptions::default()
        };
        let meta = create(&f, &auto).unwrap();
        assert_eq!(meta.info.piece_length, 1 << 20);
        assert_eq!(meta.info.pieces.len(), 3);
    }

    #[test]
    fn bad_piece_sizes() {
        let tmp = tempfile::tempdir().unwrap();
        for size in [1000, 8192, 3 * PIECE, 512 << 20] {
            let o = CreateOptions {
                piece_size: size,
                ..opts(1)
            };
            assert!(
                matches!(create(tmp.path(), &o), Err(CreateError::BadPieceSize(s)) if s == size),
                "{size}"
            );
        }
    }

    #[test]
    fn nothing_to_share() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("r");
        fs::create_dir_all(root.join("sub/empty")).unwrap();
        assert!(matches!(
            create(&root, &opts(1)),
            Err(CreateError::Empty(_))
        ));
        fs::write(root.join("sub/zero"), b"").unwrap();
        assert!(matches!(
            create(&root, &opts(1)),
            Err(CreateError::ZeroLength(_))
        ));
        assert!(matches!(
            create(&root.join("sub/zero"), &opts(1)),
            Err(CreateError::ZeroLength(_))
        ));
        assert!(matches!(
            create(&root.join("missing"), &opts(1)),
            Err(CreateError::Io { .. })
        ));
    }

    #[test]
    fn unsafe_names_are_rejected_naming_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("r");
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::write(root.join("sub/back\\slash"), b"x").unwrap();
        match create(&root, &opts(1)) {
            Err(CreateError::BadPath { path, reason }) => {
                assert!(path.ends_with("sub/back\\slash"), "{path}");
                assert!(reason.contains("separator"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn resume_records_are_state_not_data() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("r");
        fs::create_dir_all(root.join(".ringswarm")).unwrap();
        fs::write(root.join(".ringswarm/x.resume"), b"state").unwrap();
        fs::write(root.join("data"), b"data").unwrap();
        let m = create(&root, &opts(1)).unwrap();
        let paths: Vec<_> = m.info.files.iter().map(|f| f.path.clone()).collect();
        assert_eq!(paths, vec![vec!["data".to_string()]]);
        // Given as the root itself, it is refused.
        match create(&root.join(".ringswarm"), &opts(1)) {
            Err(CreateError::BadPath { reason, .. }) => {
                assert!(reason.contains("reserved"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn root_name_resolves_dot() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("named");
        fs::create_dir(&root).unwrap();
        assert_eq!(root_name(&root.join(".")).unwrap(), "named");
        assert!(matches!(
            root_name(Path::new("/")),
            Err(CreateError::BadPath { .. })
        ));
    }

    #[test]
    fn many_pieces_over_the_limit_are_refused() {
        // Checked before any file is read: a sparse file stands in for a huge one.
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("sparse");
        let f = File::create(&file).unwrap();
        f.set_len((metainfo::MAX_PIECES + 1) * PIECE).unwrap();
        assert!(matches!(
            create(&file, &opts(1)),
            Err(CreateError::TooManyPieces { .. })
        ));
    }
}
