//! Piece → file spans. Pure: no I/O.
//!
//! The torrent's data is the concatenation of its files (pad files included). A piece is a
//! window `[index * piece_length, min((index + 1) * piece_length, total))` of that stream;
//! its spans are the parts of that window lying in non-pad, non-empty files, in order.
//! The first file of a piece is found by binary search over the files' end offsets, so a
//! lookup is O(log n + spans) even for torrents with 100k files.
//!
//! A layout whose piece length is 0 or does not fit a `u32` (spans carry `u32` offsets) has
//! no pieces: such a torrent is rejected upstream, and here it simply yields nothing.

use std::ops::Range;
use std::path::PathBuf;

/// A file as storage sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSpec {
    /// Relative to the destination root (already validated by metainfo).
    pub path: PathBuf,
    pub length: u64,
    /// BEP 47 pad file: takes piece space, never on disk.
    pub pad: bool,
}

/// A part of a piece that lies in one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub file: usize,
    pub file_offset: u64,
    pub piece_offset: u32,
    pub len: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    piece_length: u64,
    files: Vec<FileSpec>,
    /// Start of each file in the torrent's byte stream.
    starts: Vec<u64>,
    /// End (exclusive) of each file; non-decreasing, so it can be binary searched.
    ends: Vec<u64>,
    total_length: u64,
    piece_count: u32,
}

impl Layout {
    pub fn new(piece_length: u64, files: Vec<FileSpec>) -> Layout {
        let mut starts = Vec::with_capacity(files.len());
        let mut ends = Vec::with_capacity(files.len());
        let mut at = 0u64;
        for f in &files {
            starts.push(at);
            // A sum past u64::MAX cannot come from a real torrent; saturate instead of
            // wrapping so offsets stay ordered.
            at = at.saturating_add(f.length);
            ends.push(at);
        }
        let total_length = at;
        let piece_count = if piece_length == 0 || piece_length > u64::from(u32::MAX) {
            0
        } else {
            u32::try_from(total_length.div_ceil(piece_length)).unwrap_or(u32::MAX)
        };
        Layout {
            piece_length,
            files,
            starts,
            ends,
            total_length,
            piece_count,
        }
    }

    /// From a torrent: paths from `Metainfo::relative_path`.
    pub fn from_metainfo(meta: &crate::metainfo::Metainfo) -> Layout {
        let files = meta
            .info
            .files
            .iter()
            .map(|f| FileSpec {
                path: meta.relative_path(f),
                length: f.length,
                pad: f.pad,
            })
            .collect();
        Layout::new(meta.info.piece_length, files)
    }

    pub fn piece_length(&self) -> u64 {
        self.piece_length
    }

    pub fn total_length(&self) -> u64 {
        self.total_length
    }

    pub fn piece_count(&self) -> u32 {
        self.piece_count
    }

    /// Bytes of piece `index` (the last one may be short); 0 for an index out of range.
    pub fn piece_size(&self, index: u32) -> u32 {
        match self.piece_range(index) {
            // The range is at most piece_length long, which fits a u32 (see `new`).
            Some(r) => (r.end - r.start) as u32,
            None => 0,
        }
    }

    pub fn files(&self) -> &[FileSpec] {
        &self.files
    }

    /// Byte offset of file `file` in the torrent's data stream (0 when out of range).
    pub fn file_start(&self, file: usize) -> u64 {
        self.starts.get(file).copied().unwrap_or(0)
    }

    /// The byte range of piece `index` in the torrent's data stream.
    pub fn piece_range(&self, index: u32) -> Option<Range<u64>> {
        if index >= self.piece_count {
            return None;
        }
        let start = u64::from(index) * self.piece_length;
        let end = start
            .saturating_add(self.piece_length)
            .min(self.total_length);
        Some(start..end)
    }

    /// The pieces that hold bytes of file `file` (empty for a zero-length or unknown file).
    pub fn pieces_of_file(&self, file: usize) -> Range<u32> {
        let (Some(&start), Some(&end)) = (self.starts.get(file), self.ends.get(file)) else {
            return 0..0;
        };
        if start == end || self.piece_count == 0 {
            return 0..0;
        }
        let first = start / self.piece_length;
        let last = (end - 1) / self.piece_length;
        let clamp = |p: u64| u32::try_from(p).unwrap_or(u32::MAX).min(self.piece_count);
        clamp(first)..clamp(last + 1)
    }

    /// The spans of piece `index` in non-pad files, in order; zero-length files have none.
    pub fn spans(&self, index: u32) -> Vec<Span> {
        let Some(range) = self.piece_range(index) else {
            return Vec::new();
        };
        let mut spans = Vec::new();
        // First file that ends after the piece starts (zero-length files before it end at
        // or before the start, so they are skipped by the search).
        let mut i = self.ends.partition_point(|&end| end <= range.start);
        while i < self.files.len() && self.starts[i] < range.end {
            let f = &self.files[i];
            if !f.pad && f.length > 0 {
                let from = self.starts[i].max(range.start);
                let to = self.ends[i].min(range.end);
                if to > from {
                    spans.push(Span {
                        file: i,
                        file_offset: from - self.starts[i],
                        piece_offset: (from - range.start) as u32,
                        len: (to - from) as u32,
                    });
                }
            }
            i += 1;
        }
        spans
    }

    /// The parts of piece `index` that lie in no span (pad files), as ranges of piece
    /// offsets, in order. A piece read from disk must have these zeroed before hashing or
    /// uploading: no read writes them.
    pub fn gaps(&self, index: u32) -> Vec<Range<u32>> {
        let size = self.piece_size(index);
        let mut gaps = Vec::new();
        let mut at = 0u32;
        for s in self.spans(index) {
            if s.piece_offset > at {
                gaps.push(at..s.piece_offset);
            }
            at = s.piece_offset + s.len;
        }
        if size > at {
            gaps.push(at..size);
        }
        gaps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn file(name: &str, length: u64) -> FileSpec {
        FileSpec {
            path: PathBuf::from(name),
            length,
            pad: false,
        }
    }

    fn pad(length: u64) -> FileSpec {
        FileSpec {
            path: PathBuf::from(".pad").join(length.to_string()),
            length,
            pad: true,
        }
    }

    fn span(file: usize, file_offset: u64, piece_offset: u32, len: u32) -> Span {
        Span {
            file,
            file_offset,
            piece_offset,
            len,
        }
    }

    #[test]
    fn single_file_with_a_short_last_piece() {
        let l = Layout::new(16384, vec![file("a", 40000)]);
        assert_eq!(l.piece_count(), 3);
        assert_eq!(l.total_length(), 40000);
        assert_eq!(l.piece_size(0), 16384);
        assert_eq!(l.piece_size(2), 40000 - 32768);
        assert_eq!(l.piece_size(3), 0);
        assert_eq!(l.spans(0), vec![span(0, 0, 0, 16384)]);
        assert_eq!(l.spans(1), vec![span(0, 16384, 0, 16384)]);
        assert_eq!(l.spans(2), vec![span(0, 32768, 0, 40000 - 32768)]);
        assert_eq!(l.spans(3), vec![]);
        assert!(l.gaps(2).is_empty());
        assert_eq!(l.pieces_of_file(0), 0..3);
    }

    #[test]
    fn multi_file_with_pads() {
        // a: 5000 bytes + pad to 8192, b: 8192, c: 100 (last, no pad).
        let l = Layout::new(
            8192,
            vec![file("a", 5000), pad(3192), file("b", 8192), file("c", 100)],
        );
        assert_eq!(l.piece_count(), 3);
        assert_eq!(l.spans(0), vec![span(0, 0, 0, 5000)]);
        assert_eq!(l.gaps(0), vec![5000..8192]);
        assert_eq!(l.spans(1), vec![span(2, 0, 0, 8192)]);
        assert_eq!(l.spans(2), vec![span(3, 0, 0, 100)]);
        assert_eq!(l.piece_size(2), 100);
        assert_eq!(l.pieces_of_file(1), 0..1);
        assert_eq!(l.pieces_of_file(3), 2..3);
    }

    #[test]
    fn foreign_multi_file_without_pads() {
        let l = Layout::new(4096, vec![file("a", 3000), file("b", 6000), file("c", 10)]);
        assert_eq!(l.piece_count(), 3);
        assert_eq!(
            l.spans(0),
            vec![span(0, 0, 0, 3000), span(1, 0, 3000, 1096)]
        );
        assert_eq!(l.spans(1), vec![span(1, 1096, 0, 4096)]);
        assert_eq!(l.spans(2), vec![span(1, 5192, 0, 808), span(2, 0, 808, 10)]);
        assert_eq!(l.piece_size(2), 818);
        assert!(l.gaps(0).is_empty());
        assert_eq!(l.pieces_of_file(1), 0..3);
    }

    #[test]
    fn zero_length_files_have_no_spans() {
        let l = Layout::new(
            4096,
            vec![
                file("e0", 0),
                file("a", 4096),
                file("e1", 0),
                file("e2", 0),
                file("b", 1),
            ],
        );
        assert_eq!(l.piece_count(), 2);
        assert_eq!(l.spans(0), vec![span(1, 0, 0, 4096)]);
        assert_eq!(l.spans(1), vec![span(4, 0, 0, 1)]);
        assert_eq!(l.pieces_of_file(0), 0..0);
        assert_eq!(l.pieces_of_file(2), 0..0);
        let empty = Layout::new(4096, vec![file("e", 0)]);
        assert_eq!(empty.piece_count(), 0);
        assert_eq!(empty.spans(0), vec![]);
    }

    #[test]
    fn bad_piece_lengths_yield_nothing() {
        let l = Layout::new(0, vec![file("a", 10)]);
        assert_eq!(l.piece_count(), 0);
        assert_eq!(l.spans(0), vec![]);
        assert_eq!(l.piece_size(0), 0);
        let l = Layout::new(1 << 33, vec![file("a", 10)]);
        assert_eq!(l.piece_count(), 0);
        assert_eq!(l.pieces_of_file(0), 0..0);
        let l = Layout::new(1, vec![file("a", u64::MAX), file("b", 5)]);
        assert_eq!(l.piece_count(), u32::MAX);
        assert_eq!(l.piece_size(u32::MAX - 1), 1);
    }

    #[test]
    fn from_metainfo_keeps_pads_and_paths() {
        use crate::metainfo::{FileEntry, Info, Metainfo};
        let entry = |path: &[&str], length, offset, pad| FileEntry {
            path: path.iter().map(|s| s.to_string()).collect(),
            length,
            offset,
            pad,
        };
        let info = Info {
            name: "rel".into(),
            piece_length: 4096,
            pieces: vec![[0; 20]; 3],
            files: vec![
                entry(&["a", "x.bin"], 100, 0, false),
                entry(&[".pad", "3996"], 3996, 100, true),
                entry(&["b"], 5000, 4096, false),
            ],
            multi_file: true,
            total_length: 9096,
            private: false,
        };
        let meta = Metainfo {
            info_hash: [0; 20],
            info_bytes: Vec::new(),
            announce: None,
            announce_list: Vec::new(),
            info,
        };
        let l = Layout::from_metainfo(&meta);
        assert_eq!(l.piece_length(), 4096);
        assert_eq!(l.total_length(), 9096);
        assert_eq!(l.piece_count(), 3);
        assert_eq!(
            l.files()[0],
            FileSpec {
                path: "rel/a/x.bin".into(),
                length: 100,
                pad: false
            }
        );
        assert!(l.files()[1].pad);
        assert_eq!(l.file_start(2), 4096);
        assert_eq!(l.spans(1), vec![span(2, 0, 0, 4096)]);
    }

    #[test]
    fn many_files_lookup() {
        let files: Vec<FileSpec> = (0..100_000).map(|i| file(&i.to_string(), 1000)).collect();
        let l = Layout::new(1 << 20, files);
        let s = l.spans(50);
        assert_eq!(s[0].file, (50 << 20) / 1000);
        assert_eq!(s.iter().map(|s| s.len).sum::<u32>(), 1 << 20);
    }

    proptest! {
        #[test]
        fn spans_tile_the_piece(
            lens in proptest::collection::vec((0u64..20_000, any::<bool>()), 1..12),
            piece_length in 1u64..20_000,
        ) {
            let files: Vec<FileSpec> = lens
                .iter()
                .enumerate()
                .map(|(i, &(len, p))| if p { pad(len) } else { file(&i.to_string(), len) })
                .collect();
            let l = Layout::new(piece_length, files.clone());
            let total: u64 = lens.iter().map(|x| x.0).sum();
            prop_assert_eq!(u64::from(l.piece_count()), total.div_ceil(piece_length));
            let mut covered = vec![0u64; files.len()];
            for p in 0..l.piece_count() {
                let mut at = 0u32;
                let mut gaps = l.gaps(p).into_iter().peekable();
                for s in l.spans(p) {
                    let f = &files[s.file];
                    prop_assert!(!f.pad && s.len > 0);
                    prop_assert!(s.file_offset + u64::from(s.len) <= f.length);
                    prop_assert_eq!(
                        u64::from(p) * piece_length + u64::from(s.piece_offset),
                        l.file_start(s.file) + s.file_offset
                    );
                    if s.piece_offset > at {
                        prop_assert_eq!(gaps.next(), Some(at..s.piece_offset));
                    }
                    prop_assert!(s.piece_offset >= at);
                    at = s.piece_offset + s.len;
                    covered[s.file] += u64::from(s.len);
                    prop_assert!(l.pieces_of_file(s.file).contains(&p));
                }
                if l.piece_size(p) > at {
                    prop_assert_eq!(gaps.next(), Some(at..l.piece_size(p)));
                }
                prop_assert_eq!(gaps.next(), None);
            }
            for (i, f) in files.iter().enumerate() {
                prop_assert_eq!(covered[i], if f.pad { 0 } else { f.length });
            }
        }
    }
}
