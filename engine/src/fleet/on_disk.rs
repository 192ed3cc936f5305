//! What an agent directory holds, read without the agent: `ringswarm status` when no agent
//! runs. Read-only: nothing is created, written, locked or hashed; the verified share comes
//! from each release's resume record, trusted only while its data files are still the ones
//! the record was made for (as a restart of the agent would decide).

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::data_paths;
use super::releases::{read_release, AgentDir};
use crate::storage::beneath::Dir;
use crate::storage::fingerprint::FileIdentity;
use crate::storage::resume::{self, RESUME_DIR};

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
    /// Pieces the resume record says are verified (None: no usable record).
    pub verified_pieces: Option<u32>,
    /// The data files are those the record speaks for (else the agent hashes them again
    /// when it starts).
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
    let paths = data_paths(&meta, dir);
    let record = Dir::open(dir)
        .and_then(|d| d.open_dir(Path::new(RESUME_DIR), false))
        .ok()
        .and_then(|state| resume::load(&state, &release.info_hash, pieces, paths.len()));
    let files_unchanged = record.as_ref().is_some_and(|r| {
        r.files.len() == paths.len()
            && paths.iter().zip(&r.files).all(|(p, id)| {
                std::fs::symlink_metadata(p)
                    .is_ok_and(|m| m.is_file() && FileIdentity::of(&m) == *id)
            })
    });
    Some(DiskRelease {
        name: release.name.clone(),
        version: release.version.clone(),
        info_hash: crate::hex(&release.info_hash),
        state: String::new(),
        total_bytes: release.size,
        pieces,
        verified_pieces: record.map(|r| r.verified.count_ones()),
        files_unchanged,
        activated_ms,
        dir: dir.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
