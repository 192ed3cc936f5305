//! A storage's resume record: what is verified at start (trusted from the record where the
//! files are as it says, hashed elsewhere), and saving it. See [`super::resume`] for where
//! records live and why a download cannot forge one.

use std::io;
use std::path::Path;

use super::fingerprint::{self, FileIdentity};
use super::{resume, Storage, StorageError};
use crate::bitfield::Bitfield;

impl Storage {
    /// The identity of each layout file when it was opened, before this storage changed
    /// it (None for pad files).
    pub fn opened_identities(&self) -> Vec<Option<FileIdentity>> {
        self.files
            .iter()
            .map(|f| f.as_ref().map(|f| f.opened))
            .collect()
    }

    /// The identity of each non-pad file now (`fstat` of its descriptor).
    pub fn current_identities(&self) -> Result<Vec<FileIdentity>, StorageError> {
        self.files
            .iter()
            .flatten()
            .map(|f| {
                f.buffered
                    .metadata()
                    .map(|m| FileIdentity::of(&m))
                    .map_err(|e| StorageError::io(&f.path, e))
            })
            .collect()
    }

    /// The pieces verified on disk: those of the resume record whose files are unchanged
    /// since it was written, plus those that hash right among the others that may hold
    /// data ([`fingerprint::trust`]). When a recheck finds everything, the record is
    /// written (best effort: read-only data only costs the next start a recheck).
    pub fn verified_at_start(
        &self,
        info_hash: &[u8; 20],
        hashes: &[[u8; 20]],
        threads: usize,
    ) -> Result<Bitfield, StorageError> {
        let n = self.layout.piece_count();
        let file_count = self.files.iter().flatten().count();
        let record = self
            .open_state(false)
            .ok()
            .and_then(|d| resume::load(&d, info_hash, n, file_count));
        let trust = fingerprint::trust(
            &self.layout,
            record.as_ref().map(|r| (&r.verified, r.files.as_slice())),
            &self.opened_identities(),
        );
        let mut verified = trust.trusted;
        if trust.recheck.count_ones() > 0 {
            let found = self.recheck_only(hashes, threads, Some(&trust.recheck))?;
            for p in found.ones() {
                verified.set(p);
            }
            if verified.is_complete() {
                if let Err(e) = self.save_resume(info_hash, &verified) {
                    tracing::debug!(err = %e, "no verification record (read-only data?)");
                }
            }
        }
        Ok(verified)
    }

    /// Writes the resume record for `verified` with the files' identities as they are
    /// now. Call after [`Storage::sync`] (and [`Storage::finish`] when complete), so the
    /// record never speaks for data that is not durable.
    pub fn save_resume(&self, info_hash: &[u8; 20], verified: &Bitfield) -> io::Result<()> {
        let files = self.current_identities().map_err(io::Error::other)?;
        let state = self.open_state(true).map_err(io::Error::other)?;
        resume::save(&state, info_hash, verified, &files)
    }

    /// The state directory (`root/.ringswarm`), opened without following links; created
    /// when `create`.
    fn open_state(&self, create: bool) -> Result<super::beneath::Dir, StorageError> {
        match &self.state_dir {
            Some(d) => d.open_dir(Path::new(""), false),
            None => self
                .root_dir
                .open_dir(Path::new(resume::RESUME_DIR), create),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{FileSpec, Layout, OpenMode, Storage, StorageError};
    use crate::bitfield::Bitfield;
    use std::fs;
    use std::path::{Path, PathBuf};

    fn test_dir() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("ringswarm-state-")
            .tempdir_in("/var/tmp")
            .or_else(|_| tempfile::tempdir())
            .expect("a temporary directory")
    }

    fn layout() -> Layout {
        let f = |name: &str, length| FileSpec {
            path: PathBuf::from(name),
            length,
            pad: false,
        };
        // Pieces of 4096: a = 0, 1; b = 2, 3, 4 (b starts mid-piece 2 ... ends in 4);
        // c = 4.
        Layout::new(
            4096,
            vec![f("t/a", 8192), f("t/sub/b", 9000), f("t/c", 1000)],
        )
    }

    fn data(l: &Layout) -> Vec<u8> {
        (0..l.total_length()).map(|i| (i * 7 % 251) as u8).collect()
    }

    fn hashes(l: &Layout, d: &[u8]) -> Vec<[u8; 20]> {
        (0..l.piece_count())
            .map(|p| {
                let r = l.piece_range(p).unwrap();
                crate::verify::sha1(&d[r.start as usize..r.end as usize])
            })
            .collect()
    }

    const HASH: [u8; 20] = [9; 20];

    /// Downloads everything into `root` and records it.
    fn complete(root: &Path) -> (Layout, Vec<[u8; 20]>) {
        let l = layout();
        let d = data(&l);
        let st = Storage::open(root, l.clone(), OpenMode::Download).unwrap();
        let mut buf = super::super::AlignedBuf::new(st.piece_buffer_len());
        for p in 0..l.piece_count() {
            let r = l.piece_range(p).unwrap();
            buf[..(r.end - r.start) as usize].copy_from_slice(&d[r.start as usize..r.end as usize]);
            st.write_piece(p, &buf).unwrap();
        }
        st.sync().unwrap();
        st.finish().unwrap();
        st.save_resume(&HASH, &Bitfield::full(l.piece_count()))
            .unwrap();
        (l.clone(), hashes(&l, &d))
    }

    fn bits(n: u32, on: impl IntoIterator<Item = u32>) -> Bitfield {
        let mut b = Bitfield::new(n);
        on.into_iter().for_each(|p| b.set(p));
        b
    }

    #[test]
    fn a_record_is_trusted_only_for_unchanged_files() {
        let dir = test_dir();
        let (l, good) = complete(dir.path());
        let wrong = vec![[0u8; 20]; good.len()];
        for mode in [OpenMode::Download, OpenMode::Seed] {
            // Hashes that match nothing: what is verified came from the record alone.
            let st = Storage::open(dir.path(), l.clone(), mode).unwrap();
            assert!(st
                .verified_at_start(&HASH, &wrong, 2)
                .unwrap()
                .is_complete());
        }
        // b rewritten behind the record's back: same size, one byte changed, mtime put back.
        let b = dir.path().join("t/sub/b");
        let mtime = fs::metadata(&b).unwrap().modified().unwrap();
        let mut bytes = fs::read(&b).unwrap();
        bytes[5000] ^= 1; // piece 3 (b starts at 8192: offset 13192)
        fs::write(&b, &bytes).unwrap();
        fs::File::options()
            .write(true)
            .open(&b)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let st = Storage::open(dir.path(), l.clone(), OpenMode::Seed).unwrap();
        // a's pieces (0, 1) are still trusted; b's (2, 3, 4) are hashed: 2 and 4 verify.
        assert_eq!(
            st.verified_at_start(&HASH, &good, 2).unwrap(),
            bits(5, [0, 1, 2, 4])
        );
        let st = Storage::open(dir.path(), l.clone(), OpenMode::Seed).unwrap();
        assert_eq!(
            st.verified_at_start(&HASH, &wrong, 2).unwrap(),
            bits(5, [0, 1])
        );
    }

    #[test]
    fn a_replaced_file_or_a_missing_record_means_a_recheck() {
        let dir = test_dir();
        let (l, good) = complete(dir.path());
        let wrong = vec![[0u8; 20]; good.len()];
        // c replaced by a copy: same bytes, another inode.
        let c = dir.path().join("t/c");
        let copy = dir.path().join("t/c.new");
        fs::copy(&c, &copy).unwrap();
        fs::rename(&copy, &c).unwrap();
        // Piece 4 lies in b and c: only the pieces of a and b alone are trusted.
        let st = Storage::open(dir.path(), l.clone(), OpenMode::Download).unwrap();
        assert_eq!(
            st.verified_at_start(&HASH, &wrong, 1).unwrap(),
            bits(5, [0, 1, 2, 3])
        );
        // No record: everything with data is hashed.
        fs::remove_dir_all(dir.path().join(".ringswarm")).unwrap();
        let st = Storage::open(dir.path(), l.clone(), OpenMode::Download).unwrap();
        assert!(st.verified_at_start(&HASH, &wrong, 1).unwrap().count_ones() == 0);
        let st = Storage::open(dir.path(), l.clone(), OpenMode::Download).unwrap();
        assert!(st.verified_at_start(&HASH, &good, 1).unwrap().is_complete());
    }

    #[test]
    fn a_record_moves_with_its_directory() {
        let dir = test_dir();
        let (l, good) = complete(&dir.path().join("staging"));
        fs::rename(dir.path().join("staging"), dir.path().join("release")).unwrap();
        let wrong = vec![[0u8; 20]; good.len()];
        let st = Storage::open(&dir.path().join("release"), l, OpenMode::Seed).unwrap();
        assert!(st
            .verified_at_start(&HASH, &wrong, 1)
            .unwrap()
            .is_complete());
    }

    #[test]
    fn links_below_the_root_are_refused_in_download_mode() {
        use std::os::unix::fs::symlink;
        let dir = test_dir();
        let outside = test_dir();
        fs::write(outside.path().join("victim"), b"keep").unwrap();
        let l = layout();
        let cases: [(&str, &Path, &str); 4] = [
            ("t", outside.path(), "t"),
            ("t/sub", outside.path(), "t/sub"),
            ("t/a", &outside.path().join("victim"), "t/a"),
            (".ringswarm", outside.path(), ".ringswarm"),
        ];
        for (i, (at, target, named)) in cases.into_iter().enumerate() {
            let root = dir.path().join(format!("d{i}"));
            fs::create_dir_all(root.join(at).parent().unwrap()).unwrap();
            symlink(target, root.join(at)).unwrap();
            let err = Storage::open(&root, l.clone(), OpenMode::Download).unwrap_err();
            assert!(
                matches!(&err, StorageError::Symlink { path } if *path == root.join(named)),
                "{at}: {err}"
            );
        }
        assert_eq!(fs::read(outside.path().join("victim")).unwrap(), b"keep");
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 1);

        // The root itself may be a link.
        fs::create_dir(dir.path().join("real")).unwrap();
        symlink(dir.path().join("real"), dir.path().join("link")).unwrap();
        let (l, good) = complete(&dir.path().join("link"));
        let st = Storage::open(&dir.path().join("link"), l, OpenMode::Seed).unwrap();
        assert!(st.verified_at_start(&HASH, &good, 1).unwrap().is_complete());
        assert!(dir.path().join("real/t/sub/b").is_file());
    }

    #[test]
    fn seeding_follows_links_to_data_kept_elsewhere() {
        use std::os::unix::fs::symlink;
        let dir = test_dir();
        let (l, good) = complete(&dir.path().join("src"));
        let seed = dir.path().join("seed");
        fs::create_dir(&seed).unwrap();
        symlink(dir.path().join("src/t"), seed.join("t")).unwrap();
        let st = Storage::open(&seed, l, OpenMode::Seed).unwrap();
        assert!(st.verified_at_start(&HASH, &good, 1).unwrap().is_complete());
    }

    #[test]
    fn the_state_directory_is_reserved() {
        let dir = test_dir();
        let f = |name: &str| FileSpec {
            path: PathBuf::from(name),
            length: 10,
            pad: false,
        };
        for name in [".ringswarm/x.resume", "t/.ringswarm/x.resume"] {
            let l = Layout::new(4096, vec![f("t/ok"), f(name)]);
            let err = Storage::open(dir.path(), l, OpenMode::Download).unwrap_err();
            assert!(
                matches!(err, StorageError::Reserved { .. }),
                "{name}: {err}"
            );
            assert!(err.to_string().contains("reserved"), "{err}");
        }
        assert!(!dir.path().join("t").exists());
    }
}
