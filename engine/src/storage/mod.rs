//! Piece storage: piece → file spans, O_DIRECT I/O of whole verified pieces, unaligned
//! tails, preallocation, durability, fast resume. The reactor submits the [`IoOp`]s of a
//! plan as `WriteFixed`/`ReadFixed`; [`Storage::write_piece`]/[`Storage::read_piece`] run
//! the same plans with blocking `pwrite`/`pread` (recheck, tests, tools).
//!
//! # Plans
//!
//! Every non-pad file is opened twice: with `O_DIRECT` (aligned I/O that never touches the
//! page cache, so a running service keeps its hot pages) and plain (the buffered fallback).
//! A span of a piece becomes:
//!
//! - one direct op when its file offset and piece offset are multiples of [`ALIGN`] and its
//!   length is too;
//! - one direct op rounded up to [`ALIGN`] when it is aligned and ends at its file's end:
//!   the padding bytes land past the file's end and [`Storage::finish`] truncates them
//!   (`data_len` is the real length; a read at EOF returns just the real bytes). A read
//!   plan only pads when the padding lands on pad-file bytes or past the piece, never on
//!   the next file's data in the buffer;
//! - otherwise a direct aligned head plus a buffered remainder, or one buffered op when the
//!   span starts unaligned (torrents without pad files, where a file starts mid-piece), the
//!   piece length is not a multiple of [`ALIGN`], or the filesystem refused `O_DIRECT`.
//!
//! With aligned pieces, a file that starts on an [`ALIGN`] boundary of the torrent (every
//! file of a torrent with BEP 47 pad files) is written direct in every piece; a file that
//! starts elsewhere is written buffered in every piece. So no page is ever written both
//! ways. (The head/remainder split only happens in read plans, at a file's last partial
//! page.)
//!
//! Reads never write the bytes of pad files: after a read the caller zeroes
//! [`Layout::gaps`] ([`Storage::zero_gaps`] does it; [`Storage::read_piece`] does it
//! itself).
//!
//! # Durability
//!
//! Writes of either kind are not durable until `fdatasync`; [`Storage::sync`] syncs every
//! file written since the previous call (the reactor reports its completed writes with
//! [`Storage::note_written`]) and then drops the page-cache pages that buffered writes
//! left (`POSIX_FADV_DONTNEED`), except in [`Storage::open_resident`]'s mode, where every
//! I/O is buffered and the pages are meant to stay (data about to be locked in memory). [`Storage::finish`] truncates padded tails and `fsync`s
//! files and directories.
//!
//! # Links and the state directory
//!
//! In `Download` mode every file and directory below the destination is opened without
//! following symbolic links ([`beneath`]): a link found there is refused with
//! [`StorageError::Symlink`] naming it, and nothing outside the destination is created,
//! truncated, preallocated or written (the destination itself may be a link). Later
//! truncation, `fallocate` and `fsync` go through the descriptors opened that way.
//!
//! `Seed` mode opens the data files by path and does follow links (`ringswarm create` of a
//! link, then `seed`, is a supported way to share data kept elsewhere): nothing is written
//! to them, and every byte served has been verified against the torrent's hashes through
//! the very descriptors it is read from (or is vouched for by a record bound to those
//! files' identity), so a link can only serve what the torrent already describes. The
//! resume records of either mode live in the destination's `.ringswarm/`, which is never
//! followed through a link and which no torrent may name ([`resume`]).

pub mod aligned;
pub mod beneath;
pub mod fingerprint;
pub mod layout;
pub mod resume;
mod state;
pub mod survey;

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub use aligned::AlignedBuf;
use beneath::Dir;
use fingerprint::FileIdentity;
pub use layout::{FileSpec, Layout, Span};

/// O_DIRECT alignment for offsets, lengths and buffer addresses.
pub const ALIGN: usize = 4096;

const ALIGN_U32: u32 = ALIGN as u32;
const ALIGN_U64: u64 = ALIGN as u64;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("not enough disk space for {path}: {needed} bytes needed")]
    NoSpace { path: PathBuf, needed: u64 },
    #[error("{path}: is {actual} bytes, the torrent says {expected}")]
    WrongSize {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error("{path}: a file of the torrent is missing")]
    Missing { path: PathBuf },
    #[error("{path}: is a symbolic link; refusing to write through it")]
    Symlink { path: PathBuf },
    #[error(
        "{path}: `{}` is reserved for ringswarm's resume records; no torrent may write there",
        resume::RESUME_DIR
    )]
    Reserved { path: PathBuf },
}

impl StorageError {
    /// As an `io::Error` of the same kind (the message kept whole).
    pub fn into_io(self) -> io::Error {
        let kind = match &self {
            StorageError::Io { source, .. } => source.kind(),
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, self)
    }

    fn io(path: &Path, source: io::Error) -> StorageError {
        StorageError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// How files are opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Create missing files and directories, preallocate with `fallocate`, keep existing
    /// data (resume).
    Download,
    /// Existing files of the right sizes, opened read-only.
    Seed,
}

/// One I/O of a piece plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoOp {
    /// Index into the layout's files.
    pub file: usize,
    /// The descriptor to use: O_DIRECT when `direct`, else a buffered one.
    pub fd: RawFd,
    pub direct: bool,
    pub file_offset: u64,
    /// Offset of the data in the piece buffer.
    pub buf_offset: u32,
    /// Bytes to submit. For a direct op at a file's unaligned end this is rounded up to
    /// [`ALIGN`] (the piece buffer has room: its size is the piece length rounded up).
    pub len: u32,
    /// Bytes that are the file's real data (`<= len`); a read completes when at least
    /// this many came back.
    pub data_len: u32,
}

/// One open non-pad file.
#[derive(Debug)]
struct OpenFile {
    /// Absolute (below the root).
    path: PathBuf,
    length: u64,
    /// Opened with `O_DIRECT`; None when the filesystem refused it.
    direct: Option<File>,
    /// Opened without `O_DIRECT`.
    buffered: File,
    /// Some plan for this file has a buffered write (see `buffered_prone`).
    buffered_prone: bool,
    /// Written (either way) since the last sync.
    written: AtomicBool,
    /// Written buffered since the last sync: its pages are dropped after the sync.
    buffered_written: AtomicBool,
    /// Read buffered by `read_piece` (recheck drops those pages afterwards).
    buffered_read: AtomicBool,
    /// Written and read through the page cache, and left there ([`Storage::open_resident`]).
    keep_cached: bool,
    /// What the file was when opened, before this storage changed it (resume records are
    /// checked against it).
    opened: FileIdentity,
}

impl OpenFile {
    fn file_for(&self, direct: bool) -> &File {
        match (&self.direct, direct) {
            (Some(d), true) => d,
            _ => &self.buffered,
        }
    }
}

/// The open files of one torrent.
#[derive(Debug)]
pub struct Storage {
    root: PathBuf,
    /// The root, open: files and directories below it are opened through it.
    root_dir: Dir,
    /// `root/.ringswarm`, opened (created) in `Download` mode.
    state_dir: Option<Dir>,
    layout: Layout,
    mode: OpenMode,
    /// Indexed like `layout.files()`; None for pad files.
    files: Vec<Option<OpenFile>>,
    /// Directories holding the files, relative to the root (and their ancestors up to the
    /// root, the empty path): fsynced by `finish`.
    dirs: Vec<PathBuf>,
    /// The root's parent when the root was created: fsynced by `finish` too.
    root_parent: Option<PathBuf>,
}

impl Storage {
    /// Opens (and in `Download` mode creates and preallocates) every non-pad file below
    /// `root`. ENOSPC from `fallocate` is [`StorageError::NoSpace`].
    ///
    /// Every non-pad file takes two descriptors; when `RLIMIT_NOFILE`'s soft limit is too
    /// low for that, it is raised towards the hard limit.
    pub fn open(root: &Path, layout: Layout, mode: OpenMode) -> Result<Storage, StorageError> {
        Storage::open_with(root, layout, mode, true, false)
    }

    /// [`Storage::open`] for data that is to be locked in memory once complete (the fleet
    /// agent's `--lock`): every write and read goes through the page cache and its pages
    /// are left there, so the lock pass finds them resident instead of reading the whole
    /// blob back from disk. It costs no memory the lock would not take anyway.
    pub fn open_resident(
        root: &Path,
        layout: Layout,
        mode: OpenMode,
    ) -> Result<Storage, StorageError> {
        Storage::open_with(root, layout, mode, false, true)
    }

    /// [`Storage::open`]; `use_direct: false` behaves as if the filesystem refused
    /// `O_DIRECT` (tests of the buffered fallback on filesystems that have it), and then
    /// `keep_cached` leaves the pages in the cache instead of dropping them after a sync.
    fn open_with(
        root: &Path,
        layout: Layout,
        mode: OpenMode,
        use_direct: bool,
        keep_cached: bool,
    ) -> Result<Storage, StorageError> {
        let non_pad = layout.files().iter().filter(|f| !f.pad).count();
        raise_nofile_limit(non_pad.saturating_mul(2) as u64);

        let mut dirs = BTreeSet::new();
        let mut root_parent = None;
        if let Some(spec) = layout.files().iter().find(|f| reserved(&f.path)) {
            return Err(StorageError::Reserved {
                path: root.join(&spec.path),
            });
        }
        if mode == OpenMode::Download {
            let root_existed = root.exists();
            // The root itself may be a link (or below one): it is the caller's choice.
            fs::create_dir_all(root).map_err(|e| StorageError::io(root, e))?;
            dirs.insert(PathBuf::new());
            if !root_existed {
                root_parent = root
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .map(Path::to_path_buf);
            }
        }
        let root_dir = match Dir::open(root) {
            Ok(d) => d,
            Err(StorageError::Io { source, .. })
                if mode == OpenMode::Seed && source.kind() == io::ErrorKind::NotFound =>
            {
                let first = layout.files().iter().find(|f| !f.pad);
                return Err(StorageError::Missing {
                    path: first.map_or(root.to_path_buf(), |f| root.join(&f.path)),
                });
            }
            Err(e) => return Err(e),
        };
        let state_dir = match mode {
            OpenMode::Download => Some(root_dir.open_dir(Path::new(resume::RESUME_DIR), true)?),
            OpenMode::Seed => None,
        };

        let piece_aligned = layout.piece_length().is_multiple_of(ALIGN_U64);
        let mut files = Vec::with_capacity(layout.files().len());
        let mut refused_direct: Option<(PathBuf, io::Error)> = None;
        let mut refused_count = 0usize;
        for (i, spec) in layout.files().iter().enumerate() {
            if spec.pad {
                files.push(None);
                continue;
            }
            let path = root.join(&spec.path);
            let (direct, buffered, opened) = match mode {
                OpenMode::Download => open_for_download(&root_dir, &spec.path, spec.length)?,
                OpenMode::Seed => open_for_seed(&path, spec.length)?,
            };
            let direct = match direct {
                Ok(_) if !use_direct => None,
                Ok(f) => Some(f),
                Err(e) => {
                    refused_count += 1;
                    refused_direct.get_or_insert((path.clone(), e));
                    None
                }
            };
            if mode == OpenMode::Download {
                let mut dir = spec.path.parent();
                while let Some(d) = dir {
                    if !dirs.insert(d.to_path_buf()) {
                        break;
                    }
                    dir = d.parent();
                }
            }
            // Write plans of this file are all direct exactly when it starts aligned in the
            // torrent, pieces are aligned, and O_DIRECT is available (see the module docs).
            let buffered_prone = direct.is_none()
                || !piece_aligned
                || !layout.file_start(i).is_multiple_of(ALIGN_U64);
            files.push(Some(OpenFile {
                path,
                length: spec.length,
                direct,
                buffered,
                buffered_prone,
                written: AtomicBool::new(false),
                buffered_written: AtomicBool::new(false),
                buffered_read: AtomicBool::new(false),
                keep_cached: !use_direct && keep_cached,
                opened,
            }));
        }
        if let Some((path, err)) = refused_direct {
            tracing::warn!(
                path = %path.display(),
                %err,
                files = refused_count,
                "the filesystem refuses O_DIRECT; using buffered I/O (pages are dropped after \
                 each sync) for these files"
            );
        }
        Ok(Storage {
            root: root.to_path_buf(),
            root_dir,
            state_dir,
            layout,
            mode,
            files,
            dirs: dirs.into_iter().collect(),
            root_parent,
        })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn mode(&self) -> OpenMode {
        self.mode
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Absolute paths of the non-pad files, in layout order.
    pub fn file_paths(&self) -> Vec<PathBuf> {
        self.files
            .iter()
            .flatten()
            .map(|f| f.path.clone())
            .collect()
    }

    /// The absolute path of file `file` (None for a pad file or an index out of range).
    pub fn file_path(&self, file: usize) -> Option<&Path> {
        self.open_file(file).map(|f| f.path.as_path())
    }

    /// The `O_DIRECT` descriptor of file `file`; None for pad files and files on a
    /// filesystem that refused `O_DIRECT`.
    pub fn fd_direct(&self, file: usize) -> Option<RawFd> {
        self.open_file(file)
            .and_then(|f| f.direct.as_ref())
            .map(AsRawFd::as_raw_fd)
    }

    /// The buffered descriptor of file `file`; None for pad files.
    pub fn fd_buffered(&self, file: usize) -> Option<RawFd> {
        self.open_file(file).map(|f| f.buffered.as_raw_fd())
    }

    /// Size of a piece buffer that every plan fits in: the piece length rounded up to
    /// [`ALIGN`].
    pub fn piece_buffer_len(&self) -> usize {
        (self.layout.piece_length() as usize).next_multiple_of(ALIGN)
    }

    fn open_file(&self, file: usize) -> Option<&OpenFile> {
        self.files.get(file).and_then(Option::as_ref)
    }

    /// The writes that store piece `index` from a piece buffer.
    pub fn write_plan(&self, index: u32) -> Vec<IoOp> {
        self.plan(index, false)
    }

    /// The reads that load piece `index` into a piece buffer. Afterwards the pad-file
    /// bytes of the buffer must be zeroed: [`Storage::zero_gaps`].
    pub fn read_plan(&self, index: u32) -> Vec<IoOp> {
        self.plan(index, true)
    }

    fn plan(&self, index: u32, read: bool) -> Vec<IoOp> {
        let spans = self.layout.spans(index);
        let piece_aligned = self.layout.piece_length().is_multiple_of(ALIGN_U64);
        let mut ops = Vec::with_capacity(spans.len() + 1);
        for (k, s) in spans.iter().enumerate() {
            let Some(f) = self.open_file(s.file) else {
                continue;
            };
            let buffered = |file_offset: u64, buf_offset: u32, len: u32| IoOp {
                file: s.file,
                fd: f.buffered.as_raw_fd(),
                direct: false,
                file_offset,
                buf_offset,
                len,
                data_len: len,
            };
            let direct_fd = f
                .direct
                .as_ref()
                .filter(|_| piece_aligned)
                .map(AsRawFd::as_raw_fd);
            let aligned = s.file_offset % ALIGN_U64 == 0 && s.piece_offset % ALIGN_U32 == 0;
            let Some(dfd) = direct_fd.filter(|_| aligned) else {
                ops.push(buffered(s.file_offset, s.piece_offset, s.len));
                continue;
            };
            let direct = |file_offset: u64, buf_offset: u32, len: u32, data_len: u32| IoOp {
                file: s.file,
                fd: dfd,
                direct: true,
                file_offset,
                buf_offset,
                len,
                data_len,
            };
            let head = s.len - s.len % ALIGN_U32;
            let rest = s.len - head;
            if rest == 0 {
                ops.push(direct(s.file_offset, s.piece_offset, s.len, s.len));
                continue;
            }
            let ends_file = s.file_offset + u64::from(s.len) == f.length;
            // The padded end in the buffer; it cannot overflow: piece_offset + len is at most
            // the piece length, a u32 that is a multiple of ALIGN here.
            let padded_end = (s.piece_offset + s.len).next_multiple_of(ALIGN_U32);
            // A read must not let the padding clobber the next file's bytes in the buffer.
            let padding_free = !read
                || spans
                    .get(k + 1)
                    .is_none_or(|n| n.piece_offset >= padded_end);
            if ends_file && padding_free {
                ops.push(direct(
                    s.file_offset,
                    s.piece_offset,
                    padded_end - s.piece_offset,
                    s.len,
                ));
            } else {
                if head > 0 {
                    ops.push(direct(s.file_offset, s.piece_offset, head, head));
                }
                ops.push(buffered(
                    s.file_offset + u64::from(head),
                    s.piece_offset + head,
                    rest,
                ));
            }
        }
        ops
    }

    /// Zeroes the bytes of piece `index` that lie in pad files ([`Layout::gaps`]): reads
    /// never write them, and a padded direct read may have left file-tail bytes there.
    /// Call after every op of a read plan has completed. `buf` shorter than the piece is
    /// zeroed as far as it goes.
    pub fn zero_gaps(&self, index: u32, buf: &mut [u8]) {
        for g in self.layout.gaps(index) {
            let end = (g.end as usize).min(buf.len());
            if let Some(part) = buf.get_mut(g.start as usize..end) {
                part.fill(0);
            }
        }
    }

    /// Records that a write to file `file` completed (the reactor calls this for each op of
    /// a write plan it ran): the next [`Storage::sync`] makes it durable. Unknown indices
    /// are ignored.
    pub fn note_written(&self, file: usize) {
        if let Some(f) = self.open_file(file) {
            if f.buffered_prone {
                f.buffered_written.store(true, Ordering::Release);
            }
            f.written.store(true, Ordering::Release);
        }
    }

    fn check_buffer(&self, index: u32, ops: &[IoOp], buf_len: usize) -> Result<(), StorageError> {
        let need = ops
            .iter()
            .map(|op| op.buf_offset as usize + op.len as usize)
            .max()
            .unwrap_or(0)
            .max(self.layout.piece_size(index) as usize);
        if buf_len >= need {
            return Ok(());
        }
        let path = ops
            .first()
            .and_then(|op| self.file_path(op.file))
            .unwrap_or(&self.root);
        Err(StorageError::io(
            path,
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("piece {index}: buffer of {buf_len} bytes is smaller than the {need} the piece needs"),
            ),
        ))
    }

    fn check_index(&self, index: u32) -> Result<(), StorageError> {
        if index < self.layout.piece_count() {
            return Ok(());
        }
        Err(StorageError::io(
            &self.root,
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "piece {index} is out of range ({} pieces)",
                    self.layout.piece_count()
                ),
            ),
        ))
    }

    /// Blocking write of a verified piece (the plan, with `pwrite`).
    pub fn write_piece(&self, index: u32, buf: &AlignedBuf) -> Result<(), StorageError> {
        self.check_index(index)?;
        let ops = self.write_plan(index);
        if self.mode == OpenMode::Seed {
            let path = ops
                .first()
                .and_then(|op| self.file_path(op.file))
                .unwrap_or(&self.root);
            return Err(StorageError::io(
                path,
                io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "opened read-only for seeding",
                ),
            ));
        }
        self.check_buffer(index, &ops, buf.len())?;
        let data = buf.as_slice();
        for op in &ops {
            let Some(f) = self.open_file(op.file) else {
                continue;
            };
            write_op(f, op, data).map_err(|e| StorageError::io(&f.path, e))?;
            if !op.direct {
                f.buffered_written.store(true, Ordering::Release);
            }
            f.written.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// Blocking read of a piece (the plan, with `pread`). Pad-file bytes are zeroed.
    pub fn read_piece(&self, index: u32, buf: &mut AlignedBuf) -> Result<(), StorageError> {
        self.check_index(index)?;
        let ops = self.read_plan(index);
        self.check_buffer(index, &ops, buf.len())?;
        let data = buf.as_mut_slice();
        for op in &ops {
            let Some(f) = self.open_file(op.file) else {
                continue;
            };
            let got = read_op(f, op, data).map_err(|e| StorageError::io(&f.path, e))?;
            if got < op.data_len as usize {
                return Err(StorageError::io(
                    &f.path,
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "short read: {got} of {} bytes at offset {}; the file is shorter \
                             than the torrent says",
                            op.data_len, op.file_offset
                        ),
                    ),
                ));
            }
            if !op.direct {
                f.buffered_read.store(true, Ordering::Release);
            }
        }
        self.zero_gaps(index, data);
        Ok(())
    }

    /// Makes everything written so far durable: `fdatasync` each file written since the
    /// last call, and drop the pages buffered writes left in the cache
    /// (`POSIX_FADV_DONTNEED`).
    pub fn sync(&self) -> Result<(), StorageError> {
        let mut first_err = None;
        for f in self.files.iter().flatten() {
            if !f.written.swap(false, Ordering::AcqRel) {
                continue;
            }
            let buffered = f.buffered_written.swap(false, Ordering::AcqRel);
            if let Err(e) = f.buffered.sync_data() {
                // Keep the marks so a later sync retries.
                if buffered {
                    f.buffered_written.store(true, Ordering::Release);
                }
                f.written.store(true, Ordering::Release);
                first_err.get_or_insert(StorageError::io(&f.path, e));
                continue;
            }
            if buffered {
                drop_cache(f);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// After the last piece: truncate padded tails to the true lengths, `fsync` files and
    /// their directories. In `Seed` mode nothing was written and this does nothing.
    pub fn finish(&self) -> Result<(), StorageError> {
        if self.mode == OpenMode::Seed {
            return Ok(());
        }
        for f in self.files.iter().flatten() {
            let size = f
                .buffered
                .metadata()
                .map_err(|e| StorageError::io(&f.path, e))?
                .len();
            if size != f.length {
                f.buffered
                    .set_len(f.length)
                    .map_err(|e| StorageError::io(&f.path, e))?;
            }
        }
        for f in self.files.iter().flatten() {
            f.written.store(false, Ordering::Release);
            let buffered = f.buffered_written.swap(false, Ordering::AcqRel);
            if let Err(e) = f.buffered.sync_all() {
                f.written.store(true, Ordering::Release);
                return Err(StorageError::io(&f.path, e));
            }
            if buffered {
                drop_cache(f);
            }
        }
        for rel in &self.dirs {
            let dir = self.root_dir.open_dir(rel, false)?;
            dir.sync().map_err(|e| StorageError::io(dir.path(), e))?;
        }
        if let Some(parent) = &self.root_parent {
            File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(|e| StorageError::io(parent, e))?;
        }
        Ok(())
    }

    /// Drops the cached pages of every file (`POSIX_FADV_DONTNEED`), e.g. after a seed
    /// served pieces with buffered reads. Dirty pages are not dropped (sync first).
    pub fn mark_dont_need(&self) {
        for f in self.files.iter().flatten() {
            drop_cache(f);
        }
    }

    /// Hashes the data on disk and returns which pieces match `hashes` (resume without a
    /// resume file, and `seed` start-up), on `threads` threads.
    ///
    /// Each thread reads whole pieces with [`Storage::read_piece`] into its own buffer, so
    /// memory stays at one piece per thread. Pieces without a hash in `hashes` are not
    /// verified. Pages that buffered reads brought in are dropped afterwards.
    pub fn recheck(
        &self,
        hashes: &[[u8; 20]],
        threads: usize,
    ) -> Result<crate::bitfield::Bitfield, StorageError> {
        self.recheck_only(hashes, threads, None)
    }

    /// [`Storage::recheck`] of the pieces set in `only` (all when None); the others are
    /// neither read nor reported.
    pub fn recheck_only(
        &self,
        hashes: &[[u8; 20]],
        threads: usize,
        only: Option<&crate::bitfield::Bitfield>,
    ) -> Result<crate::bitfield::Bitfield, StorageError> {
        let n = self.layout.piece_count();
        let wanted = |p: u32| only.is_none_or(|b| b.get(p));
        let count = n.min(u32::try_from(hashes.len()).unwrap_or(u32::MAX));
        let mut verified = crate::bitfield::Bitfield::new(n);
        if count == 0 {
            return Ok(verified);
        }
        let threads = threads.clamp(1, count as usize).min(256);
        let next = AtomicU64::new(0);
        let stop = AtomicBool::new(false);
        let worker = || -> Result<Vec<u32>, StorageError> {
            let mut buf = AlignedBuf::try_new(self.piece_buffer_len()).ok_or_else(|| {
                StorageError::io(
                    &self.root,
                    io::Error::new(io::ErrorKind::OutOfMemory, "piece length too large"),
                )
            })?;
            let mut good = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let p = next.fetch_add(1, Ordering::Relaxed);
                let Ok(p) = u32::try_from(p) else { break };
                if p >= count {
                    break;
                }
                if !wanted(p) {
                    continue;
                }
                if let Err(e) = self.read_piece(p, &mut buf) {
                    stop.store(true, Ordering::Relaxed);
                    return Err(e);
                }
                let size = self.layout.piece_size(p) as usize;
                if crate::verify::sha1(&buf[..size]) == hashes[p as usize] {
                    good.push(p);
                }
            }
            Ok(good)
        };
        let results: Vec<Result<Vec<u32>, StorageError>> = std::thread::scope(|s| {
            let mut handles = Vec::new();
            for _ in 1..threads {
                match std::thread::Builder::new()
                    .name("recheck".into())
                    .spawn_scoped(s, worker)
                {
                    Ok(h) => handles.push(h),
                    Err(e) => {
                        tracing::debug!(err = %e, "could not start a recheck thread; using fewer");
                        break;
                    }
                }
            }
            let mut results = vec![worker()];
            for h in handles {
                results.push(h.join().unwrap_or_else(|_| {
                    Err(StorageError::io(
                        &self.root,
                        io::Error::other("a recheck thread panicked"),
                    ))
                }));
            }
            results
        });
        for f in self.files.iter().flatten() {
            if f.buffered_read.swap(false, Ordering::AcqRel) {
                drop_cache(f);
            }
        }
        for r in results {
            for p in r? {
                verified.set(p);
            }
        }
        Ok(verified)
    }
}

/// Opens one file for download, below `root` and through no link, creating it and its
/// directories: (direct or why not, buffered, what it was before we changed it).
fn open_for_download(root: &Dir, rel: &Path, length: u64) -> Result<Opened, StorageError> {
    let path = root.path().join(rel);
    let path = path.as_path();
    let buffered = root.open_file(rel, libc::O_RDWR | libc::O_CREAT, 0o644, true)?;
    let meta = buffered.metadata().map_err(|e| StorageError::io(path, e))?;
    if !meta.is_file() {
        return Err(StorageError::io(path, not_a_regular_file()));
    }
    let opened = FileIdentity::of(&meta);
    let direct = match root.open_file(rel, libc::O_RDWR | libc::O_DIRECT, 0, false) {
        Ok(f) => Ok(f),
        Err(StorageError::Io { source, .. }) => Err(source),
        Err(e) => return Err(e),
    };
    let direct = refused_direct(path, direct)?;
    same_file(path, &direct, &meta)?;
    // A padded tail written before a crash (finish never ran) leaves the file too long.
    if meta.len() > length {
        buffered
            .set_len(length)
            .map_err(|e| StorageError::io(path, e))?;
    }
    preallocate(&buffered, path, length, meta.blocks().saturating_mul(512))?;
    Ok((direct, buffered, opened))
}

/// An opened file: (direct or why not, buffered, its identity when opened).
type Opened = (io::Result<File>, File, FileIdentity);

/// Whether a path below the root would land in the state directory.
fn reserved(rel: &Path) -> bool {
    rel.components()
        .any(|c| c.as_os_str() == resume::RESUME_DIR)
}

/// Opens one file for seeding: it must exist with exactly `length` bytes. Links are
/// followed (see the module docs).
fn open_for_seed(path: &Path, length: u64) -> Result<Opened, StorageError> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(StorageError::Missing {
                path: path.to_path_buf(),
            })
        }
        Err(e) => return Err(StorageError::io(path, e)),
    };
    if !meta.is_file() {
        return Err(StorageError::io(path, not_a_regular_file()));
    }
    if meta.len() != length {
        return Err(StorageError::WrongSize {
            path: path.to_path_buf(),
            expected: length,
            actual: meta.len(),
        });
    }
    let buffered = File::open(path).map_err(|e| StorageError::io(path, e))?;
    let meta = buffered.metadata().map_err(|e| StorageError::io(path, e))?;
    let opened = FileIdentity::of(&meta);
    let direct = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path);
    let direct = refused_direct(path, direct)?;
    same_file(path, &direct, &meta)?;
    Ok((direct, buffered, opened))
}

/// Refuses a direct descriptor that is not the file `meta` describes: the name could have
/// been swapped between the two opens, and the record's identity is the buffered one's.
fn same_file(
    path: &Path,
    direct: &io::Result<File>,
    meta: &fs::Metadata,
) -> Result<(), StorageError> {
    let Ok(d) = direct else {
        return Ok(());
    };
    let same = d
        .metadata()
        .is_ok_and(|m| m.dev() == meta.dev() && m.ino() == meta.ino());
    if same {
        Ok(())
    } else {
        Err(StorageError::io(
            path,
            io::Error::other("the file was replaced while being opened"),
        ))
    }
}

fn not_a_regular_file() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "not a regular file")
}

/// EINVAL from an `O_DIRECT` open means the filesystem does not support it (tmpfs on older
/// kernels, some FUSE and network filesystems): fall back. Other errors are real.
fn refused_direct(path: &Path, r: io::Result<File>) -> Result<io::Result<File>, StorageError> {
    match r {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(Err(e)),
        Err(e) => Err(StorageError::io(path, e)),
        ok => Ok(ok),
    }
}

/// `fallocate(fd, 0, 0, length)`: reserves the blocks and keeps the size at `length`
/// (mode 0 extends a shorter file). Filesystems without it get `set_len`.
fn preallocate(file: &File, path: &Path, length: u64, allocated: u64) -> Result<(), StorageError> {
    // Nothing to reserve when every block is there already; skipping also leaves the
    // file's mtime and ctime alone, so its resume record still matches.
    let full = || file.metadata().is_ok_and(|m| m.len() >= length);
    if length == 0 || (allocated >= length && full()) {
        return Ok(());
    }
    let Ok(len) = libc::off_t::try_from(length) else {
        return Err(StorageError::io(
            path,
            io::Error::from_raw_os_error(libc::EFBIG),
        ));
    };
    loop {
        // SAFETY: fallocate only reads its integer arguments; the descriptor is owned by
        // `file`, which outlives the call.
        let r = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::ENOSPC) => {
                let needed = length.saturating_sub(allocated);
                return Err(StorageError::NoSpace {
                    path: path.to_path_buf(),
                    needed: if needed == 0 { length } else { needed },
                });
            }
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => {
                let size = file
                    .metadata()
                    .map_err(|e| StorageError::io(path, e))?
                    .len();
                if size < length {
                    file.set_len(length)
                        .map_err(|e| StorageError::io(path, e))?;
                }
                return Ok(());
            }
            _ => return Err(StorageError::io(path, e)),
        }
    }
}

/// Writes one op with `pwrite` until done. A direct op cut short at an unaligned point
/// finishes its real bytes through the buffered descriptor.
fn write_op(f: &OpenFile, op: &IoOp, buf: &[u8]) -> io::Result<()> {
    let start = op.buf_offset as usize;
    let mut direct = op.direct && f.direct.is_some();
    let mut limit = if direct { op.len } else { op.data_len } as usize;
    let mut done = 0usize;
    while done < limit {
        let data = &buf[start + done..start + limit];
        match f
            .file_for(direct)
            .write_at(data, op.file_offset + done as u64)
        {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        if direct && done < limit && !done.is_multiple_of(ALIGN) {
            direct = false;
            limit = limit.min(op.data_len as usize);
        }
    }
    Ok(())
}

/// Reads one op with `pread` until `len` bytes or end of file; returns the bytes read. A
/// direct op cut short at an unaligned point (a padded tail at EOF) finishes its real
/// bytes through the buffered descriptor.
fn read_op(f: &OpenFile, op: &IoOp, buf: &mut [u8]) -> io::Result<usize> {
    let start = op.buf_offset as usize;
    let mut direct = op.direct && f.direct.is_some();
    let mut limit = if direct { op.len } else { op.data_len } as usize;
    let mut done = 0usize;
    while done < limit {
        let data = &mut buf[start + done..start + limit];
        match f
            .file_for(direct)
            .read_at(data, op.file_offset + done as u64)
        {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        if direct && done < limit && !done.is_multiple_of(ALIGN) {
            direct = false;
            limit = limit.min(op.data_len as usize).max(done);
        }
    }
    Ok(done)
}

/// Swaps two paths in one step (`renameat2(RENAME_EXCHANGE)`): each name then leads to
/// what the other did, and at no moment does either lead to nothing. Both must exist, on
/// one filesystem that supports the flag (ext4, xfs, btrfs, tmpfs).
pub fn exchange_paths(a: &Path, b: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let to_c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path has a NUL byte"))
    };
    let (ca, cb) = (to_c(a)?, to_c(b)?);
    // SAFETY: both pointers are NUL-terminated strings that outlive the call; AT_FDCWD
    // makes relative paths relative to the working directory, as elsewhere.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `posix_fadvise(POSIX_FADV_DONTNEED)` over the whole file; failure only costs cache.
fn drop_cache(f: &OpenFile) {
    if f.keep_cached {
        return;
    }
    // SAFETY: posix_fadvise only reads its integer arguments; the descriptor is owned by
    // `f.buffered`, which outlives the call.
    let r = unsafe { libc::posix_fadvise(f.buffered.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if r != 0 {
        tracing::debug!(path = %f.path.display(), err = %io::Error::from_raw_os_error(r), "posix_fadvise(DONTNEED) failed");
    }
}

/// Raises the soft `RLIMIT_NOFILE` so `needed` more descriptors fit (best effort, up to the
/// hard limit).
fn raise_nofile_limit(needed: u64) {
    let want = needed.saturating_add(1024);
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into the valid, exclusively borrowed `lim`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    if lim.rlim_cur == libc::RLIM_INFINITY || lim.rlim_cur >= want {
        return;
    }
    let target = if lim.rlim_max == libc::RLIM_INFINITY {
        want
    } else {
        want.min(lim.rlim_max)
    };
    if target > lim.rlim_cur {
        let new = libc::rlimit {
            rlim_cur: target,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads one valid `rlimit`.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } == 0 {
            tracing::debug!(from = lim.rlim_cur, to = target, "raised RLIMIT_NOFILE");
        }
    }
    if target < want {
        tracing::warn!(
            needed,
            hard_limit = lim.rlim_max,
            "RLIMIT_NOFILE's hard limit is low for this torrent's file count; opening may fail"
        );
    }
}

#[cfg(test)]
mod tests;
