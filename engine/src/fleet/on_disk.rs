//! What an agent directory holds, read without the agent: `ringswarm status` when no agent
//! runs. Read-only: nothing is created, written, locked or hashed; the verified share comes
//! from each release's resume record, trusted only while its data files are still the ones
//! the record was made for (as a restart of the agent would decide).

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::releases::{read_release, AgentDir};
use crate::storage::beneath::Dir;
use crate::storage::fingerprint::{self, FileIdentity};
use crate::storage::resume::{self, RESUME_DIR};
use crate::storage::Layout;

/// One release found on disk.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct DiskRelease {
    pub name: String,
    pub version: String,
    pub info_hash: String,
    /// `current` (what `NAME/current` points at), `kept` (an older release) or `staged`
    /// (a download not finished).
    pub state: String,
    pub total_bytes: u64,
    pub pieces: u32,
    /// Pieces the resume record vouches for with the files as they are now: what the agent
    /// would take as verified when it starts (None: no usable record).
    pub verified_pieces: Option<u32>,
    /// The record still vouches for every piece it lists: no data file changed since (else
    /// the agent hashes the pieces of the changed ones again when it starts).
    pub files_unchanged: bool,
    /// When it was switched in, in ms since the Unix epoch.
    pub activated_ms: Option<u64>,
    pub dir: PathBuf,
}

impl DiskRelease {
    /// Every piece verified, per a record that still holds for the files.
    pub fn complete(&self) -> bool {
        self.files_unchanged && self.verified_pieces == Some(self.pieces)
    }
}

/// The releases under `root`, by name then version (staged downloads last); an error when
/// `root` is no agent directory (neither `releases/` nor `.staging/` can be read).
pub fn scan(root: &Path) -> io::Result<Vec<DiskRelease>> {
    let dir = AgentDir::new(root);
    let mut found = Vec::new();
    let releases = std::fs::read_dir(dir.releases_root());
    let staging = std::fs::read_dir(dir.staging_root());
    if let (Err(e), Err(_)) = (&releases, &staging) {
        return Err(io::Error::new(
            e.kind(),
            format!("{}: no releases/ nor .staging/ here: {e}", root.display()),
        ));
    }
    for name in releases.into_iter().flatten().flatten() {
        let Ok(versions) = std::fs::read_dir(name.path()) else {
            continue;
        };
        let current = dir.current_version(&name.file_name().to_string_lossy());
        for v in versions.flatten() {
            if let Some(mut r) = read_one(&v.path()) {
                r.state = if current.as_deref() == Some(r.version.as_str()) {
                    "current"
                } else {
                    "kept"
                }
                .to_owned();
                found.push(r);
            }
        }
    }
    found.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    let mut staged: Vec<DiskRelease> = staging
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| read_one(&e.path()))
        .map(|r| DiskRelease {
            state: "staged".to_owned(),
            ..r
        })
        .collect();
    staged.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    found.extend(staged);
    Ok(found)
}

/// A release directory's record, torrent and resume record; None when it holds no release.
fn read_one(dir: &Path) -> Option<DiskRelease> {
    let (release, activated_ms) = read_release(dir).ok()?;
    let meta = release.parse_metainfo().ok()?;
    let pieces = u32::try_from(meta.info.pieces.len()).unwrap_or(u32::MAX);
    let layout = Layout::from_metainfo(&meta);
    let non_pad = layout.files().iter().filter(|f| !f.pad).count();
    let record = Dir::open(dir)
        .and_then(|d| d.open_dir(Path::new(RESUME_DIR), false))
        .ok()
        .and_then(|state| resume::load(&state, &release.info_hash, pieces, non_pad));
    // The files as they are now, judged by the storage's own rule (as the agent's start
    // and `survey` do): a piece is trusted while every file it touches is unchanged.
    let now: Vec<Option<FileIdentity>> = layout
        .files()
        .iter()
        .map(|f| {
            if f.pad {
                return None;
            }
            std::fs::symlink_metadata(dir.join(&f.path))
                .ok()
                .filter(std::fs::Metadata::is_file)
                .map(|m| FileIdentity::of(&m))
        })
        .collect();
    let trusted = fingerprint::trust(
        &layout,
        record.as_ref().map(|r| (&r.verified, r.files.as_slice())),
        &now,
    )
    .trusted
    .count_ones();
    // Trusted pieces are a subset of the recorded ones: equal counts, none lost.
    let files_unchanged = record
        .as_ref()
        .is_some_and(|r| r.verified.count_ones() == trusted);
    Some(DiskRelease {
        name: release.name.clone(),
        version: release.version.clone(),
        info_hash: crate::hex(&release.info_hash),
        state: String::new(),
        total_bytes: release.size,
        pieces,
        verified_pieces: record.map(|_| trusted),
        files_unchanged,
        activated_ms,
        dir: dir.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::Release;
    use crate::metainfo::Metainfo;

    const PIECE: u64 = 16 << 10;

    /// A release of two files (`a`: 3 pieces, `b`: 2 pieces, with a pad between).
    fn release(version: &str) -> (Release, Metainfo) {
        let src = tempfile::tempdir().unwrap();
        let data = src.path().join("app");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("a"), vec![1u8; 3 * PIECE as usize - 100]).unwrap();
        std::fs::write(data.join("b"), vec![2u8; 2 * PIECE as usize]).unwrap();
        let meta = crate::create::create(
            &data,
            &crate::create::CreateOptions {
                piece_size: PIECE,
                threads: 1,
                ..Default::default()
            },
        )
        .unwrap();
        let r = Release::new("app", version, meta.to_bytes(), 1000).unwrap();
        (r, meta)
    }

    /// Writes a release directory: record, data files, and (when `verified`) a resume
    /// record of every piece.
    fn lay_out(dir: &Path, r: &Release, meta: &Metainfo, verified: bool) {
        super::super::releases::write_record(dir, r, Some(7)).unwrap();
        for (f, path) in meta
            .info
            .files
            .iter()
            .filter(|f| !f.pad)
            .zip(super::super::data_paths(meta, dir))
        {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let byte = if f.path.last().map(String::as_str) == Some("a") {
                1
            } else {
                2
            };
            std::fs::write(&path, vec![byte; f.length as usize]).unwrap();
        }
        if verified {
            super::super::record_verified(meta, dir).unwrap();
        }
    }

    #[test]
    fn current_kept_and_staged_releases_with_their_verified_pieces() {
        let tmp = tempfile::tempdir().unwrap();
        let agent = AgentDir::new(tmp.path());
        agent.create().unwrap();
        let (v1, m1) = release("v1");
        let (v2, m2) = release("v2");
        let (v3, m3) = release("v3");
        lay_out(&agent.release("app", "v1"), &v1, &m1, true);
        lay_out(&agent.release("app", "v2"), &v2, &m2, true);
        lay_out(&agent.staging(&v3.info_hash), &v3, &m3, false);
        agent.flip_current("app", "v2").unwrap();

        let found = scan(tmp.path()).unwrap();
        let states: Vec<(&str, &str)> = found
            .iter()
            .map(|r| (r.version.as_str(), r.state.as_str()))
            .collect();
        assert_eq!(
            states,
            [("v1", "kept"), ("v2", "current"), ("v3", "staged")]
        );
        assert!(found[0].complete() && found[1].complete());
        assert_eq!(found[1].verified_pieces, Some(5));
        assert_eq!(found[1].activated_ms, Some(7));
        assert_eq!(
            (found[2].verified_pieces, found[2].complete()),
            (None, false)
        );

        // File b of v1 changes: its pieces are no longer vouched for, a's still are.
        let b = super::super::data_paths(&m1, &agent.release("app", "v1"))[1].clone();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&b, vec![9u8; 2 * PIECE as usize]).unwrap();
        let v1 = &scan(tmp.path()).unwrap()[0];
        assert_eq!(v1.verified_pieces, Some(3));
        assert!(!v1.files_unchanged && !v1.complete());
    }

    #[test]
    fn a_directory_without_releases_is_an_error_and_an_empty_one_is_not() {
        let tmp = tempfile::tempdir().unwrap();
        let err = scan(tmp.path()).unwrap_err();
        assert!(err.to_string().contains("no releases/"), "{err}");
        AgentDir::new(tmp.path()).create().unwrap();
        assert_eq!(scan(tmp.path()).unwrap(), Vec::new());
        // Not written to: no new entries beyond what `create` made.
        let mut names: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, [".agent", ".staging", "releases"]);
    }
}
