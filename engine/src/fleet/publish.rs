//! `publish`: on the build machine, turn a finished blob into a release of the feed.
//!
//! The origin directory holds what the origin serves and seeds:
//! - `feed.json`: the signed feed ([`crate::feed`]);
//! - `sources/<info-hash>.json`: where each release's data lies on this machine;
//! - `published.json`: every name and version ever published, so none is reused;
//! - `origin.lock`: held by the running origin (publish warns when nobody holds it).
//!
//! The fleet's topology is given here (`--topology`, a file or URL) and signed into the
//! feed with the releases; a publish without one keeps the previous feed's, so the
//! operator gives it once (see [`crate::feed`]).
//!
//! The data is hashed once, here; the record that it is verified is left beside it, so the
//! origin starts seeding at once instead of hashing it again.

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

use super::files::write_atomic;
use crate::create::{create, CreateError, CreateOptions};
use crate::feed::{Feed, FeedError, Release};

pub const FEED_FILE: &str = "feed.json";
pub const ORIGIN_LOCK: &str = "origin.lock";
const PUBLISH_LOCK: &str = ".publish.lock";
/// Every `name/version` ever published from this directory, with its info-hash.
const LEDGER: &str = "published.json";

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error(transparent)]
    Create(#[from] CreateError),
    #[error("{path}: {err}")]
    Feed { path: PathBuf, err: FeedError },
    #[error("{0}")]
    Refused(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PublishError + '_ {
    move |err| PublishError::Io {
        path: path.to_path_buf(),
        err,
    }
}

/// Where a release's data lies on the origin machine.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Source {
    /// The directory holding the torrent's root (the data is at `dest/<name>`).
    pub dest: PathBuf,
}

pub fn source_path(origin_dir: &Path, info_hash: &[u8; 20]) -> PathBuf {
    origin_dir
        .join("sources")
        .join(format!("{}.json", crate::hex(info_hash)))
}

pub struct PublishSpec {
    /// The blob: a file or a directory.
    pub data: PathBuf,
    pub name: String,
    pub version: String,
    pub key: SigningKey,
    pub origin_dir: PathBuf,
    /// The fleet's trackers, written into the metainfo (each a tier).
    pub trackers: Vec<String>,
    pub piece_size: u64,
    /// Releases of this name kept in the feed (the newest); older ones leave it.
    pub keep: usize,
    /// How long agents act on the feed signed now ([`crate::feed::Feed::check_fresh`]).
    pub valid_for: std::time::Duration,
    /// What becomes of the feed's topology.
    pub topology: TopologyChange,
}

/// What a publish does to the feed's topology.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum TopologyChange {
    /// Keep the previous feed's (none if it had none).
    #[default]
    Keep,
    /// Carry this text (checked to parse by the caller, e.g. with
    /// [`crate::tracker::read_topology`]).
    Set(String),
    /// Carry none from now on.
    Clear,
}

impl TopologyChange {
    fn apply(&self, feed: &mut Feed) -> Result<(), PublishError> {
        match self {
            TopologyChange::Keep => {}
            TopologyChange::Set(text) => {
                crate::feed::parse_topology(text)
                    .map_err(|e| PublishError::Refused(format!("--topology: {e}")))?;
                feed.topology = Some(text.clone());
            }
            TopologyChange::Clear => feed.topology = None,
        }
        Ok(())
    }
}

#[derive(Debug)]
pub struct Published {
    pub release: Release,
    pub sequence: u64,
    /// Releases of the name that left the feed.
    pub retired: Vec<String>,
    /// An origin holds the directory's lock (it will seed the release).
    pub origin_running: bool,
}

/// Reads the origin's feed, checked against `key` (a feed another key signed is not
/// extended); an absent feed is an empty one.
pub fn read_own_feed(origin_dir: &Path, key: &SigningKey) -> Result<Feed, PublishError> {
    let path = origin_dir.join(FEED_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => Feed::verify(&bytes, &key.verifying_key())
            .map_err(|err| PublishError::Feed { path, err }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Feed::default()),
        Err(e) => Err(io_err(&path)(e)),
    }
}

/// Whether a running origin holds `origin_dir`'s lock.
pub fn origin_running(origin_dir: &Path) -> bool {
    matches!(
        super::files::try_lock_file(&origin_dir.join(ORIGIN_LOCK)),
        Ok(None)
    )
}

/// When the file's inode last changed (any write or metadata change moves it).
fn ctime(m: &std::fs::Metadata) -> std::time::SystemTime {
    use std::os::unix::fs::MetadataExt;
    let secs = u64::try_from(m.ctime()).unwrap_or(0);
    let nanos = u32::try_from(m.ctime_nsec()).unwrap_or(0);
    std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos)
}

/// Signs the origin's feed again, unchanged but for a higher sequence and a new expiry:
/// for a fleet with nothing new to publish within `--valid-for`. Returns the sequence.
pub fn refresh(
    origin_dir: &Path,
    key: &SigningKey,
    valid_for: std::time::Duration,
    topology: &TopologyChange,
) -> Result<Feed, PublishError> {
    let lock_path = origin_dir.join(PUBLISH_LOCK);
    if !origin_dir.join(FEED_FILE).exists() {
        return Err(PublishError::Refused(format!(
            "{}: no feed to refresh (publish a release first)",
            origin_dir.join(FEED_FILE).display()
        )));
    }
    let lock = std::fs::File::create(&lock_path).map_err(io_err(&lock_path))?;
    lock.lock().map_err(io_err(&lock_path))?;
    let mut feed = read_own_feed(origin_dir, key)?;
    topology.apply(&mut feed)?;
    stamp(&mut feed, valid_for);
    let signed = check_size(feed.sign(key))?;
    let path = origin_dir.join(FEED_FILE);
    write_atomic(&path, &signed).map_err(io_err(&path))?;
    Ok(feed)
}

/// Gives the feed its next sequence, signing time and expiry.
fn stamp(feed: &mut Feed, valid_for: std::time::Duration) {
    let now = super::now_ms();
    feed.sequence = next_sequence(feed.sequence, now);
    feed.signed_ms = now;
    let valid_ms = u64::try_from(valid_for.as_millis()).unwrap_or(u64::MAX);
    feed.expires_ms = Some(now.saturating_add(valid_ms));
}

/// The sequence of the next feed: above the last one, and at least the time in ms, so a
/// publish into a lost (empty) origin directory still outnumbers every feed signed before
/// (as long as the build machine's clock does not go back).
pub fn next_sequence(last: u64, now_ms: u64) -> u64 {
    last.saturating_add(1).max(now_ms)
}

pub fn publish(spec: &PublishSpec) -> Result<Published, PublishError> {
    crate::feed::check_label(&spec.name, "--name").map_err(PublishError::Refused)?;
    crate::feed::check_label(&spec.version, "--version").map_err(PublishError::Refused)?;
    let dir = &spec.origin_dir;
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    // One publish at a time: each reads the feed, extends it and writes it back.
    let lock_path = dir.join(PUBLISH_LOCK);
    let lock = std::fs::File::create(&lock_path).map_err(io_err(&lock_path))?;
    lock.lock().map_err(io_err(&lock_path))?;

    let mut feed = read_own_feed(dir, &spec.key)?;
    spec.topology.apply(&mut feed)?;
    // Every name and version ever published here, also those that left the feed: a
    // version reused for other data would leave hosts that kept the old one on it.
    let ledger_path = dir.join(LEDGER);
    let mut ledger: std::collections::BTreeMap<String, String> = match std::fs::read(&ledger_path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| PublishError::Refused(format!("{}: {e}", ledger_path.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
        Err(e) => return Err(io_err(&ledger_path)(e)),
    };
    let ledger_key = format!("{}/{}", spec.name, spec.version);
    if let Some(hash) = ledger.get(&ledger_key) {
        return Err(PublishError::Refused(format!(
            "{} {} was published already (info-hash {hash}); give a new --version",
            spec.name, spec.version
        )));
    }

    let data = std::path::absolute(&spec.data).map_err(io_err(&spec.data))?;
    let options = CreateOptions {
        piece_size: spec.piece_size,
        trackers: spec.trackers.iter().map(|t| vec![t.clone()]).collect(),
        ..CreateOptions::default()
    };
    let dest = data.parent().map(Path::to_path_buf).ok_or_else(|| {
        PublishError::Refused(format!("{}: has no parent directory", data.display()))
    })?;
    let started = std::time::SystemTime::now();
    let meta = create(&data, &options)?;
    let release = Release::new(&spec.name, &spec.version, meta.to_bytes(), super::now_ms())
        .map_err(|err| PublishError::Feed {
            path: data.clone(),
            err,
        })?;
    // A file changed while it was hashed (ctime moves with any write) may not match its
    // hashes: then no record, and the origin hashes the data again before seeding.
    let paths = super::data_paths(&meta, &dest);
    let unchanged = paths
        .iter()
        .all(|p| std::fs::metadata(p).is_ok_and(|m| ctime(&m) < started));
    if unchanged {
        if let Err(e) = super::record_verified(&meta, &dest) {
            tracing::warn!(path = %dest.display(), err = %e, "no verification record; the origin hashes the data again");
        }
    } else {
        tracing::warn!(path = %data.display(), "the data changed while it was hashed; the origin hashes it again");
    }

    let source = source_path(dir, &meta.info_hash);
    let text = serde_json::to_vec_pretty(&Source { dest }).unwrap_or_default();
    write_atomic(&source, &text).map_err(io_err(&source))?;

    feed.releases.push(release.clone());
    let mut retired = Vec::new();
    let mut same_name: Vec<usize> = (0..feed.releases.len())
        .filter(|&i| feed.releases[i].name == spec.name)
        .collect();
    while same_name.len() > spec.keep.max(1) {
        let i = same_name.remove(0);
        retired.push(feed.releases[i].label());
        feed.releases[i].name.clear();
    }
    feed.releases.retain(|r| !r.name.is_empty());
    stamp(&mut feed, spec.valid_for);
    let signed = check_size(feed.sign(&spec.key))?;
    ledger.insert(ledger_key, crate::hex(&release.info_hash));
    let text = serde_json::to_vec_pretty(&ledger).unwrap_or_default();
    write_atomic(&ledger_path, &text).map_err(io_err(&ledger_path))?;
    let path = dir.join(FEED_FILE);
    write_atomic(&path, &signed).map_err(io_err(&path))?;
    Ok(Published {
        release,
        sequence: feed.sequence,
        retired,
        origin_running: origin_running(dir),
    })
}

/// Refuses a signed feed larger than agents accept.
fn check_size(signed: Vec<u8>) -> Result<Vec<u8>, PublishError> {
    if signed.len() > crate::feed::MAX_FEED_BYTES {
        return Err(PublishError::Refused(format!(
            "the feed would be {} bytes, more than the {} agents accept: publish with a \
             smaller --keep, a larger --piece-size or a smaller --topology",
            signed.len(),
            crate::feed::MAX_FEED_BYTES
        )));
    }
    Ok(signed)
}

#[cfg(test)]
mod tests {
    use super::next_sequence;

    #[test]
    fn a_publish_keeps_sets_or_clears_the_topology() {
        use super::{Feed, TopologyChange};
        let text = "[[subnet]]\ncidr = \"10.0.0.0/8\"\ndc = \"a\"\nrack = \"b\"\n";
        let mut feed = Feed {
            topology: Some(text.into()),
            ..Feed::default()
        };
        TopologyChange::Keep.apply(&mut feed).unwrap();
        assert_eq!(feed.topology.as_deref(), Some(text));
        let other = text.replace("rack = \"b\"", "rack = \"c\"");
        TopologyChange::Set(other.clone()).apply(&mut feed).unwrap();
        assert_eq!(feed.topology.as_deref(), Some(other.as_str()));
        let e = TopologyChange::Set("cidr = 1".into())
            .apply(&mut feed)
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--topology: topology in the feed"),
            "{e}"
        );
        assert_eq!(feed.topology.as_deref(), Some(other.as_str()));
        TopologyChange::Clear.apply(&mut feed).unwrap();
        assert_eq!(feed.topology, None);
    }

    #[test]
    fn the_sequence_never_goes_back() {
        assert_eq!(next_sequence(0, 1_000), 1_000);
        assert_eq!(next_sequence(1_000, 1_000), 1_001);
        // A clock behind the last feed (or an old small sequence) still moves forward.
        assert_eq!(next_sequence(5_000, 1_000), 5_001);
        assert_eq!(next_sequence(u64::MAX, 0), u64::MAX);
    }
}
