//! What a torrent's files look like on disk, so a resume record is trusted only for the
//! very files it was made for, unchanged: each record stores, per file, its
//! [`FileIdentity`] (device, inode, size, mtime and ctime, nanoseconds included) taken with
//! `fstat` on the descriptors the data was written through. Any write changes mtime and
//! ctime, and ctime cannot be set from user space, so a file modified, replaced or
//! truncated behind our back no longer matches and its pieces are hashed again
//! ([`trust`]); a record without identities (format 1, before issue 11) matches nothing.
//!
//! Timestamps move in kernel clock ticks (a few ms): a write in the same tick as the
//! record's `fstat` that keeps size and inode would go unseen. Our own writes of pieces
//! after that `fstat` are not in the record's bitfield anyway; a stranger's write that
//! close is out of reach of any stat-based check (and needs write access to `DEST`).
//!
//! The identity holds no path: a directory renamed as a whole (the agent moving a release
//! out of staging) keeps its record valid.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;

use super::layout::Layout;
use crate::bitfield::Bitfield;

/// One file as `stat` sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileIdentity {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: i64,
    pub ctime_sec: i64,
    pub ctime_nsec: i64,
}

impl FileIdentity {
    pub fn of(m: &Metadata) -> FileIdentity {
        FileIdentity {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_sec: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            ctime_sec: m.ctime(),
            ctime_nsec: m.ctime_nsec(),
        }
    }

    /// Bytes in a resume record.
    pub const ENCODED_LEN: usize = 7 * 8;

    pub fn encode(&self, out: &mut Vec<u8>) {
        for v in [self.dev, self.ino, self.size] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in [
            self.mtime_sec,
            self.mtime_nsec,
            self.ctime_sec,
            self.ctime_nsec,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }

    /// From [`FileIdentity::ENCODED_LEN`] bytes (None when shorter).
    pub fn decode(b: &[u8]) -> Option<FileIdentity> {
        let word = |i: usize| -> Option<[u8; 8]> { b.get(i * 8..i * 8 + 8)?.try_into().ok() };
        let u = |i| word(i).map(u64::from_le_bytes);
        let s = |i| word(i).map(i64::from_le_bytes);
        Some(FileIdentity {
            dev: u(0)?,
            ino: u(1)?,
            size: u(2)?,
            mtime_sec: s(3)?,
            mtime_nsec: s(4)?,
            ctime_sec: s(5)?,
            ctime_nsec: s(6)?,
        })
    }
}

/// What a resume record is worth against the files as they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trust {
    /// Recorded pieces whose every file is unchanged: verified without hashing.
    pub trusted: Bitfield,
    /// Pieces to hash: not trusted, and in some file that has data and is not known to be
    /// as recorded.
    pub recheck: Bitfield,
}

/// Decides which pieces a record vouches for. `recorded` is the record's bitfield and its
/// identities of the non-pad files (in layout order), or None without a usable record;
/// `now` has the identity of each layout file as opened (None for pad files).
///
/// A piece is trusted when the record has it and every file it touches is identical to
/// the record's; a piece touching a changed file with data is hashed again. Without a
/// record every piece touching a file with data is hashed.
pub fn trust(
    layout: &Layout,
    recorded: Option<(&Bitfield, &[FileIdentity])>,
    now: &[Option<FileIdentity>],
) -> Trust {
    let n = layout.piece_count();
    let mut trusted = Bitfield::new(n);
    let mut recheck = Bitfield::new(n);
    let non_pad = layout.files().iter().filter(|f| !f.pad).count();
    // A record of another shape (file count, piece count) is no record.
    let recorded = recorded.filter(|(bits, ids)| ids.len() == non_pad && bits.len() == n);
    let mut changed = vec![false; layout.files().len()];
    let mut has_data = vec![false; layout.files().len()];
    let mut k = 0usize;
    for (i, f) in layout.files().iter().enumerate() {
        if f.pad {
            continue;
        }
        let current = now.get(i).copied().flatten();
        has_data[i] = current.is_some_and(|c| c.size > 0);
        changed[i] = match (recorded, current) {
            (Some((_, ids)), Some(c)) => ids[k] != c,
            _ => true,
        };
        k += 1;
    }
    for p in 0..n {
        let spans = layout.spans(p);
        let any_changed = spans.iter().any(|s| changed[s.file]);
        if !any_changed {
            if recorded.is_some_and(|(bits, _)| bits.get(p)) {
                trusted.set(p);
            }
        } else if spans.iter().any(|s| has_data[s.file]) {
            recheck.set(p);
        }
    }
    Trust { trusted, recheck }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::layout::FileSpec;
    use std::path::PathBuf;

    fn id(ino: u64, size: u64, mtime_nsec: i64) -> FileIdentity {
        FileIdentity {
            dev: 1,
            ino,
            size,
            mtime_sec: 1_700_000_000,
            mtime_nsec,
            ctime_sec: 1_700_000_000,
            ctime_nsec: mtime_nsec,
        }
    }

    fn layout() -> Layout {
        // Pieces of 100: a = 0..150 (pieces 0, 1), pad 150..200, b = 200..400 (2, 3),
        // c = 400..450 (4).
        let f = |name: &str, length, pad| FileSpec {
            path: PathBuf::from(name),
            length,
            pad,
        };
        Layout::new(
            100,
            vec![
                f("a", 150, false),
                f(".pad/50", 50, true),
                f("b", 200, false),
                f("c", 50, false),
            ],
        )
    }

    fn bits(n: u32, on: &[u32]) -> Bitfield {
        let mut b = Bitfield::new(n);
        on.iter().for_each(|&p| {
            b.set(p);
        });
        b
    }

    #[test]
    fn identity_round_trips() {
        let i = FileIdentity {
            dev: 7,
            ino: u64::MAX,
            size: 3,
            mtime_sec: -5,
            mtime_nsec: 999_999_999,
            ctime_sec: i64::MAX,
            ctime_nsec: 0,
        };
        let mut out = Vec::new();
        i.encode(&mut out);
        assert_eq!(out.len(), FileIdentity::ENCODED_LEN);
        assert_eq!(FileIdentity::decode(&out), Some(i));
        assert_eq!(FileIdentity::decode(&out[..55]), None);
    }

    #[test]
    fn unchanged_files_keep_the_record() {
        let l = layout();
        let ids = [id(1, 150, 0), id(2, 200, 0), id(3, 50, 0)];
        let now = [Some(ids[0]), None, Some(ids[1]), Some(ids[2])];
        let rec = bits(5, &[0, 2, 4]);
        let t = trust(&l, Some((&rec, &ids)), &now);
        assert_eq!(t.trusted, rec);
        assert_eq!(t.recheck, Bitfield::new(5));
    }

    #[test]
    fn a_changed_file_loses_its_pieces_to_a_recheck() {
        let l = layout();
        let ids = [id(1, 150, 0), id(2, 200, 0), id(3, 50, 0)];
        let rec = bits(5, &[0, 1, 2, 3, 4]);
        // b rewritten in place: same inode and size, another mtime/ctime.
        let now = [Some(ids[0]), None, Some(id(2, 200, 5)), Some(ids[2])];
        let t = trust(&l, Some((&rec, &ids)), &now);
        assert_eq!(t.trusted, bits(5, &[0, 1, 4]));
        assert_eq!(t.recheck, bits(5, &[2, 3]));
        // Replaced (another inode), grown, or cut to nothing.
        for other in [id(9, 200, 0), id(2, 201, 0), id(2, 0, 0)] {
            let now = [Some(ids[0]), None, Some(other), Some(ids[2])];
            let t = trust(&l, Some((&rec, &ids)), &now);
            assert_eq!(t.trusted, bits(5, &[0, 1, 4]), "{other:?}");
            let want = if other.size == 0 {
                bits(5, &[])
            } else {
                bits(5, &[2, 3])
            };
            assert_eq!(t.recheck, want, "{other:?}");
        }
    }

    #[test]
    fn no_record_or_a_misshapen_one_trusts_nothing() {
        let l = layout();
        let ids = [id(1, 150, 0), id(2, 200, 0), id(3, 50, 0)];
        let now = [Some(ids[0]), None, Some(id(2, 0, 0)), Some(ids[2])];
        let t = trust(&l, None, &now);
        assert_eq!(t.trusted, Bitfield::new(5));
        assert_eq!(t.recheck, bits(5, &[0, 1, 4]));
        let rec = bits(5, &[0, 1, 2, 3, 4]);
        let t = trust(&l, Some((&rec, &ids[..2])), &now);
        assert_eq!(t.trusted, Bitfield::new(5));
        let rec4 = bits(4, &[0, 1, 2, 3]);
        let t = trust(&l, Some((&rec4, &ids)), &now);
        assert_eq!(t.trusted, Bitfield::new(5));
    }

    #[test]
    fn a_piece_across_files_needs_them_all() {
        // Without pads: piece 1 spans a and b.
        let f = |name: &str, length| FileSpec {
            path: PathBuf::from(name),
            length,
            pad: false,
        };
        let l = Layout::new(100, vec![f("a", 150), f("b", 150)]);
        let ids = [id(1, 150, 0), id(2, 150, 0)];
        let rec = bits(3, &[0, 1, 2]);
        let now = [Some(ids[0]), Some(id(2, 150, 1))];
        let t = trust(&l, Some((&rec, &ids)), &now);
        assert_eq!(t.trusted, bits(3, &[0]));
        assert_eq!(t.recheck, bits(3, &[1, 2]));
    }
}
