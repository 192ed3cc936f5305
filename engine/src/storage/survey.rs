//! What a destination already holds for a torrent, looked at before a download touches
//! it: for each file that exists with data, how many of its pieces hold bytes that are not
//! the torrent's. A download then overwrites those; the CLI says so first (or refuses,
//! with `--no-clobber`).
//!
//! A piece whose bytes in the file are all zero is not counted: that is what a
//! preallocated file of an interrupted download reads as where nothing was written yet
//! (pieces are written whole, only once verified). A file the destination's resume record
//! vouches for (unchanged since a download of this torrent wrote it) is not read at all,
//! so resuming a big download costs no extra pass over it. Files below a symbolic link are
//! left out: opening the storage refuses them anyway, with its own message.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::beneath::Dir;
use super::fingerprint::{self, FileIdentity};
use super::layout::Layout;
use super::resume;

/// One existing file of the torrent, and how much of it a download would replace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileOnDisk {
    /// Index into the layout's files.
    pub file: usize,
    pub path: PathBuf,
    /// Pieces holding bytes of this file.
    pub pieces: u32,
    /// Of those, pieces whose bytes here are not all zero and do not match the torrent.
    pub differing: u32,
}

/// Surveys the files of torrent `info_hash` (`layout`, piece `hashes`) below `root`.
/// Files that do not exist, are empty, lie below a link, or are as the resume record left
/// them are not reported.
pub fn survey(
    root: &Path,
    info_hash: &[u8; 20],
    layout: &Layout,
    hashes: &[[u8; 20]],
) -> io::Result<Vec<FileOnDisk>> {
    let mut found = Vec::new();
    let mut open: Vec<Option<File>> = Vec::with_capacity(layout.files().len());
    let mut identities = Vec::with_capacity(layout.files().len());
    for spec in layout.files() {
        let path = root.join(&spec.path);
        let file = if spec.pad || below_link(root, &spec.path) {
            None
        } else {
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_file() && m.len() > 0 => Some((File::open(&path)?, m)),
                _ => None,
            }
        };
        identities.push(file.as_ref().map(|(_, m)| FileIdentity::of(m)));
        open.push(file.map(|(f, _)| f));
    }
    // Pieces the record does not vouch for, in files with data: only these are read.
    let record = Dir::open(root)
        .and_then(|d| d.open_dir(Path::new(resume::RESUME_DIR), false))
        .ok()
        .and_then(|d| {
            let non_pad = layout.files().iter().filter(|f| !f.pad).count();
            resume::load(&d, info_hash, layout.piece_count(), non_pad)
        });
    let recheck = fingerprint::trust(
        layout,
        record.as_ref().map(|r| (&r.verified, r.files.as_slice())),
        &identities,
    )
    .recheck;
    let mut buf = vec![0u8; usize::try_from(layout.piece_length()).unwrap_or(0)];
    for (i, spec) in layout.files().iter().enumerate() {
        if open[i].is_none() {
            continue;
        }
        let pieces = layout.pieces_of_file(i);
        let mut differing = 0;
        for p in pieces.clone().filter(|&p| recheck.get(p)) {
            let size = layout.piece_size(p) as usize;
            let Some(piece) = buf.get_mut(..size) else {
                continue;
            };
            piece.fill(0);
            let mut ours_zero = true;
            for span in layout.spans(p) {
                let at = span.piece_offset as usize;
                let part = &mut piece[at..at + span.len as usize];
                if let Some(f) = &open[span.file] {
                    read_upto(f, part, span.file_offset)?;
                }
                if span.file == i && part.iter().any(|&b| b != 0) {
                    ours_zero = false;
                }
            }
            let matches = hashes
                .get(p as usize)
                .is_some_and(|h| crate::verify::sha1(piece) == *h);
            if !ours_zero && !matches {
                differing += 1;
            }
        }
        found.push(FileOnDisk {
            file: i,
            path: root.join(&spec.path),
            pieces: pieces.end - pieces.start,
            differing,
        });
    }
    Ok(found)
}

/// Reads as much of `buf` as the file has at `offset`; the rest stays as it was (zero).
fn read_upto(f: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// True when `rel` below `root` passes through (or is) a symbolic link.
fn below_link(root: &Path, rel: &Path) -> bool {
    let mut at = root.to_path_buf();
    rel.components().any(|c| {
        at.push(c);
        std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink())
    })
}

#[cfg(test)]
mod tests {
    use super::super::FileSpec;
    use super::*;

    fn layout(files: &[(&str, u64)]) -> Layout {
        Layout::new(
            16,
            files
                .iter()
                .map(|(p, l)| FileSpec {
                    path: p.into(),
                    length: *l,
                    pad: false,
                })
                .collect(),
        )
    }

    fn hashes(data: &[u8]) -> Vec<[u8; 20]> {
        data.chunks(16).map(crate::verify::sha1).collect()
    }

    #[test]
    fn counts_pieces_that_hold_other_data() {
        let dir = tempfile::tempdir().unwrap();
        let want: Vec<u8> = (0..64u8).collect();
        let l = layout(&[("a", 40), ("b", 24)]);
        let h = hashes(&want);
        // Nothing there yet: nothing to report.
        assert!(survey(dir.path(), &[1; 20], &l, &h).unwrap().is_empty());
        // `a`: the right first piece, zeros (preallocated) in the second, other bytes in
        // the last 8; `b` all right.
        let mut a = want[..40].to_vec();
        a[16..32].fill(0);
        a[32..40].fill(0xee);
        std::fs::write(dir.path().join("a"), &a).unwrap();
        std::fs::write(dir.path().join("b"), &want[40..]).unwrap();
        let got = survey(dir.path(), &[1; 20], &l, &h).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].file, got[0].pieces, got[0].differing), (0, 3, 1));
        // Piece 2 spans a and b: b's part is right, but the piece differs because of a.
        assert_eq!((got[1].file, got[1].pieces, got[1].differing), (1, 2, 1));
    }

    #[test]
    fn links_are_left_to_the_storage() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join("a"), [1u8; 16]).unwrap();
        std::os::unix::fs::symlink(other.path().join("a"), dir.path().join("a")).unwrap();
        let l = layout(&[("a", 16)]);
        assert!(survey(dir.path(), &[1; 20], &l, &hashes(&[0u8; 16]))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_file_the_record_vouches_for_is_not_read() {
        use super::super::{OpenMode, Storage};
        use crate::bitfield::Bitfield;
        let dir = tempfile::tempdir().unwrap();
        let l = layout(&[("a", 32)]);
        let h = hashes(&[7u8; 32]);
        let info_hash = [9u8; 20];
        let storage = Storage::open(dir.path(), l.clone(), OpenMode::Download).unwrap();
        // Not the torrent's data, but written before the record: the record speaks for it
        // (a download of ours writes only verified pieces, so this is only a test's trick).
        std::fs::write(dir.path().join("a"), [1u8; 32]).unwrap();
        storage.save_resume(&info_hash, &Bitfield::new(2)).unwrap();
        drop(storage);
        assert!(survey(dir.path(), &info_hash, &l, &h).unwrap()[0].differing == 0);
        // Changed since the record: read, and found to differ.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(dir.path().join("a"), [2u8; 32]).unwrap();
        assert_eq!(
            survey(dir.path(), &info_hash, &l, &h).unwrap()[0].differing,
            2
        );
    }
}
