//! Fast resume: the verified-piece bitfield and the identity of every file it speaks for,
//! written atomically and only after the data it records is durable (the caller runs
//! [`super::Storage::sync`] first).
//!
//! # Where records live, and why no torrent can write them
//!
//! Records are kept in `DEST/.ringswarm/` ([`RESUME_DIR`]), beside the data. A torrent
//! cannot reach that directory: `.ringswarm` is refused as any path component of a torrent
//! (its name or any component of a file's path, see `metainfo::check_component`), so no
//! download lands in `DEST/.ringswarm`, nor in the state directory of a later download
//! into a subdirectory of `DEST`. The directory and the files in it are opened without
//! following symbolic links ([`super::beneath`]).
//!
//! Even so, a record is only trusted for the files it was made for: it stores each file's
//! [`FileIdentity`] (device, inode, size, mtime, ctime), and a file that no longer matches
//! has its pieces hashed again ([`super::fingerprint::trust`]). A record of format 1
//! (before identities) is not trusted at all.
//!
//! File format (all integers little-endian):
//!
//! ```text
//! "RSRESUME"            8 bytes magic
//! version               u32 (2)
//! info_hash             20 bytes
//! piece count           u32
//! bitfield              ceil(piece count / 8) bytes, BEP 3 layout
//! file count            u32 (non-pad files)
//! identities            file count x 56 bytes: dev, ino, size (u64), mtime s, ns,
//!                       ctime s, ns (i64)
//! checksum              SHA-1 of every preceding byte
//! ```

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use super::beneath::Dir;
use super::fingerprint::FileIdentity;
use crate::bitfield::Bitfield;

const MAGIC: &[u8; 8] = b"RSRESUME";
const VERSION: u32 = 2;
const HEADER: usize = 8 + 4 + 20 + 4;
const CHECKSUM: usize = 20;

/// The directory below a destination that holds resume records. No torrent may use this
/// name as a path component ([`crate::metainfo`] refuses it).
pub const RESUME_DIR: &str = crate::metainfo::STATE_DIR;

/// `dest/.ringswarm/<info-hash hex>.resume`
pub fn resume_path(dest: &Path, info_hash: &[u8; 20]) -> PathBuf {
    dest.join(RESUME_DIR).join(file_name(info_hash))
}

fn file_name(info_hash: &[u8; 20]) -> String {
    format!("{}.resume", crate::hex(info_hash))
}

/// What a record says: the verified pieces, and the identity of each non-pad file (in
/// layout order) when they were.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub verified: Bitfield,
    pub files: Vec<FileIdentity>,
}

/// The bytes of a resume record.
pub fn encode(info_hash: &[u8; 20], verified: &Bitfield, files: &[FileIdentity]) -> Vec<u8> {
    let bits = verified.as_bytes();
    let mut out = Vec::with_capacity(
        HEADER + bits.len() + 4 + files.len() * FileIdentity::ENCODED_LEN + CHECKSUM,
    );
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(info_hash);
    out.extend_from_slice(&verified.len().to_le_bytes());
    out.extend_from_slice(bits);
    let count = u32::try_from(files.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&count.to_le_bytes());
    for f in files {
        f.encode(&mut out);
    }
    let sum = crate::verify::sha1(&out);
    out.extend_from_slice(&sum);
    out
}

/// Why a record's bytes were not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Well formed, but for another torrent.
    OtherTorrent,
    /// Of format 1: no file identities, so it cannot say which files it speaks for.
    NoIdentities,
    /// Damaged, truncated, of another version, piece or file count; the reason says which.
    Damaged(String),
}

/// The size of a record for `piece_count` pieces and `file_count` files.
fn record_len(piece_count: u32, file_count: usize) -> usize {
    HEADER
        + piece_count.div_ceil(8) as usize
        + 4
        + file_count.saturating_mul(FileIdentity::ENCODED_LEN)
        + CHECKSUM
}

/// Parses record bytes for the torrent `info_hash` with `piece_count` pieces and
/// `file_count` non-pad files.
pub fn decode(
    bytes: &[u8],
    info_hash: &[u8; 20],
    piece_count: u32,
    file_count: usize,
) -> Result<Record, DecodeError> {
    let damaged = |why: String| Err(DecodeError::Damaged(why));
    if bytes.len() < HEADER + CHECKSUM {
        return damaged(format!("{} bytes is too short", bytes.len()));
    }
    if &bytes[..8] != MAGIC {
        return damaged("bad magic".into());
    }
    let (body, sum) = bytes.split_at(bytes.len() - CHECKSUM);
    if crate::verify::sha1(body)[..] != *sum {
        return damaged("checksum mismatch".into());
    }
    let version = u32::from_le_bytes([body[8], body[9], body[10], body[11]]);
    if version == 1 {
        return Err(DecodeError::NoIdentities);
    }
    if version != VERSION {
        return damaged(format!("unknown version {version}"));
    }
    if &body[12..32] != info_hash {
        return Err(DecodeError::OtherTorrent);
    }
    let count = u32::from_le_bytes([body[32], body[33], body[34], body[35]]);
    if count != piece_count {
        return damaged(format!(
            "records {count} pieces, the torrent has {piece_count}"
        ));
    }
    if bytes.len() != record_len(piece_count, file_count) {
        return damaged(format!(
            "{} bytes, a record of {file_count} files has {}",
            bytes.len(),
            record_len(piece_count, file_count)
        ));
    }
    let bits_end = HEADER + piece_count.div_ceil(8) as usize;
    let verified = Bitfield::from_bytes(&body[HEADER..bits_end], piece_count)
        .map_err(|e| DecodeError::Damaged(e.to_string()))?;
    let files_at = bits_end + 4;
    let recorded_files = u32::from_le_bytes([
        body[bits_end],
        body[bits_end + 1],
        body[bits_end + 2],
        body[bits_end + 3],
    ]);
    if recorded_files as usize != file_count {
        return damaged(format!(
            "records {recorded_files} files, the torrent has {file_count}"
        ));
    }
    let files = body[files_at..]
        .chunks_exact(FileIdentity::ENCODED_LEN)
        .filter_map(FileIdentity::decode)
        .collect();
    Ok(Record { verified, files })
}

/// The record in `state` (a destination's `.ringswarm`), or None when it is absent, for
/// another torrent, of format 1, damaged or a symbolic link (each but absence logged).
pub fn load(
    state: &Dir,
    info_hash: &[u8; 20],
    piece_count: u32,
    file_count: usize,
) -> Option<Record> {
    let name = file_name(info_hash);
    let path = state.path().join(&name);
    // O_NONBLOCK: a FIFO put in its place must not hang the start.
    let opened = state.open_file(
        Path::new(&name),
        libc::O_RDONLY | libc::O_NONBLOCK,
        0,
        false,
    );
    let file = match opened {
        Ok(f) if f.metadata().is_ok_and(|m| m.is_file()) => f,
        Ok(_) => {
            tracing::warn!(path = %path.display(), "the resume record is not a regular file; rechecking instead");
            return None;
        }
        Err(super::StorageError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return None
        }
        Err(e) => {
            tracing::warn!(err = %e, "cannot read the resume record; rechecking instead");
            return None;
        }
    };
    // Never read more than a valid record for this torrent can hold (plus one byte to
    // notice a longer file).
    let want = record_len(piece_count, file_count);
    let mut bytes = Vec::with_capacity(want + 1);
    if let Err(e) = file.take(want as u64 + 1).read_to_end(&mut bytes) {
        tracing::warn!(path = %path.display(), err = %e, "cannot read the resume record; rechecking instead");
        return None;
    }
    match decode(&bytes, info_hash, piece_count, file_count) {
        Ok(r) => Some(r),
        Err(DecodeError::OtherTorrent) => {
            tracing::warn!(path = %path.display(), "resume record is for another torrent; ignored");
            None
        }
        Err(DecodeError::NoIdentities) => {
            tracing::warn!(path = %path.display(), "resume record of an older version (it does not say which files it is for); rechecking instead");
            None
        }
        Err(DecodeError::Damaged(why)) => {
            tracing::warn!(path = %path.display(), %why, "resume record is damaged; ignored");
            None
        }
    }
}

/// Writes the record into `state` atomically: temp file, fsync, rename, fsync of the
/// directory. Nothing is followed through a symbolic link.
pub fn save(
    state: &Dir,
    info_hash: &[u8; 20],
    verified: &Bitfield,
    files: &[FileIdentity],
) -> io::Result<()> {
    let name = file_name(info_hash);
    let tmp = format!("{name}.tmp.{}", std::process::id());
    let result = (|| {
        let mut f = state
            .open_file(
                Path::new(&tmp),
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
                0o644,
                false,
            )
            .map_err(io::Error::other)?;
        f.write_all(&encode(info_hash, verified, files))?;
        f.sync_all()?;
        drop(f);
        state.rename(tmp.as_ref(), name.as_ref())?;
        // Older versions' completion fingerprint, superseded by the identities here.
        let _ = state.remove_file(format!("{}.verified", crate::hex(info_hash)).as_ref());
        state.sync()
    })();
    if result.is_err() {
        let _ = state.remove_file(&OsString::from_vec(tmp.into_bytes()));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> (tempfile::TempDir, Dir) {
        let t = tempfile::tempdir().expect("tempdir");
        let d = Dir::open(t.path()).unwrap();
        (t, d)
    }

    fn sample(n: u32) -> Bitfield {
        let mut b = Bitfield::new(n);
        for i in (0..n).filter(|i| i % 3 == 0) {
            b.set(i);
        }
        b
    }

    fn ids(n: usize) -> Vec<FileIdentity> {
        (0..n)
            .map(|i| FileIdentity {
                dev: 1,
                ino: 100 + i as u64,
                size: 4096,
                mtime_sec: 1_700_000_000,
                mtime_nsec: i as i64,
                ctime_sec: 1_700_000_001,
                ctime_nsec: 7,
            })
            .collect()
    }

    #[test]
    fn path_is_below_dot_ringswarm() {
        let p = resume_path(Path::new("/data/x"), &[0xab; 20]);
        assert_eq!(
            p,
            Path::new("/data/x/.ringswarm").join(format!("{}.resume", "ab".repeat(20)))
        );
    }

    #[test]
    fn save_then_load() {
        let (t, d) = dir();
        let hash = [7u8; 20];
        assert_eq!(load(&d, &hash, 21, 2), None);
        let bits = sample(21);
        save(&d, &hash, &bits, &ids(2)).unwrap();
        let want = Record {
            verified: bits.clone(),
            files: ids(2),
        };
        assert_eq!(load(&d, &hash, 21, 2), Some(want));
        // Overwrite with a newer state.
        let full = Bitfield::full(21);
        save(&d, &hash, &full, &ids(2)).unwrap();
        assert_eq!(load(&d, &hash, 21, 2).unwrap().verified, full);
        // No temp files left behind.
        let names: Vec<_> = std::fs::read_dir(t.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
        // Zero pieces, zero files is valid.
        save(&d, &hash, &Bitfield::new(0), &[]).unwrap();
        assert_eq!(load(&d, &hash, 0, 0).unwrap().verified, Bitfield::new(0));
    }

    #[test]
    fn mismatches_and_damage_are_ignored() {
        let (t, d) = dir();
        let hash = [1u8; 20];
        let path = resume_path(t.path(), &hash);
        let path = t.path().join(path.file_name().unwrap());
        save(&d, &hash, &sample(40), &ids(3)).unwrap();
        assert_eq!(load(&d, &[2u8; 20], 40, 3), None);
        assert_eq!(load(&d, &hash, 41, 3), None);
        assert_eq!(load(&d, &hash, 39, 3), None);
        assert_eq!(load(&d, &hash, 40, 2), None);
        assert_eq!(load(&d, &hash, 40, 4), None);

        let good = std::fs::read(&path).unwrap();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            std::fs::write(&path, &bad).unwrap();
            assert_eq!(load(&d, &hash, 40, 3), None, "flipped byte {i}");
        }
        for cut in 0..good.len() {
            std::fs::write(&path, &good[..cut]).unwrap();
            assert_eq!(load(&d, &hash, 40, 3), None, "cut at {cut}");
        }
        let mut long = good.clone();
        long.push(0);
        std::fs::write(&path, &long).unwrap();
        assert_eq!(load(&d, &hash, 40, 3), None);
        std::fs::write(&path, &good).unwrap();
        assert_eq!(load(&d, &hash, 40, 3).unwrap().verified, sample(40));
    }

    /// A record as versions before file identities wrote it.
    fn format_1(hash: &[u8; 20], bits: &Bitfield) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(hash);
        out.extend_from_slice(&bits.len().to_le_bytes());
        out.extend_from_slice(bits.as_bytes());
        let sum = crate::verify::sha1(&out);
        out.extend_from_slice(&sum);
        out
    }

    #[test]
    fn decode_reports_reasons() {
        let hash = [3u8; 20];
        let bytes = encode(&hash, &sample(9), &ids(1));
        assert_eq!(
            decode(&bytes, &[4u8; 20], 9, 1),
            Err(DecodeError::OtherTorrent)
        );
        assert!(matches!(
            decode(&bytes, &hash, 10, 1),
            Err(DecodeError::Damaged(_))
        ));
        assert!(matches!(
            decode(b"short", &hash, 9, 1),
            Err(DecodeError::Damaged(_))
        ));
        assert_eq!(
            decode(&format_1(&hash, &Bitfield::full(9)), &hash, 9, 1),
            Err(DecodeError::NoIdentities)
        );
        // Spare bits set, with a valid checksum.
        let mut body = encode(&hash, &sample(9), &[]);
        body.truncate(body.len() - 20 - 4);
        *body.last_mut().unwrap() |= 0x01;
        body.extend_from_slice(&0u32.to_le_bytes());
        let sum = crate::verify::sha1(&body);
        body.extend_from_slice(&sum);
        assert!(matches!(
            decode(&body, &hash, 9, 0),
            Err(DecodeError::Damaged(_))
        ));
    }

    #[test]
    fn an_old_record_is_not_loaded() {
        let (t, d) = dir();
        let hash = [5u8; 20];
        std::fs::write(
            resume_path(t.path(), &hash)
                .file_name()
                .map(|n| t.path().join(n))
                .unwrap(),
            format_1(&hash, &Bitfield::full(8)),
        )
        .unwrap();
        assert_eq!(load(&d, &hash, 8, 1), None);
    }

    #[test]
    fn a_fifo_in_place_of_a_record_does_not_hang() {
        let (t, d) = dir();
        let hash = [8u8; 20];
        let name = resume_path(t.path(), &hash);
        let c = std::ffi::CString::new(
            t.path()
                .join(name.file_name().unwrap())
                .into_os_string()
                .into_encoded_bytes(),
        )
        .unwrap();
        // SAFETY: `c` is a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_eq!(load(&d, &hash, 8, 1), None);
    }

    #[test]
    fn a_linked_record_is_neither_read_nor_written_through() {
        let (t, d) = dir();
        let outside = tempfile::tempdir().unwrap();
        let hash = [6u8; 20];
        let target = outside.path().join("r");
        std::fs::write(&target, encode(&hash, &Bitfield::full(8), &ids(1))).unwrap();
        let name = resume_path(t.path(), &hash);
        let name = t.path().join(name.file_name().unwrap());
        std::os::unix::fs::symlink(&target, &name).unwrap();
        assert_eq!(load(&d, &hash, 8, 1), None);
        // Saving replaces the link itself (rename), never writes the target.
        let before = std::fs::read(&target).unwrap();
        save(&d, &hash, &sample(8), &ids(1)).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), before);
        assert!(!std::fs::symlink_metadata(&name).unwrap().is_symlink());
    }
}
