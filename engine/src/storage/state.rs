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
