//! The release flow (see `shared/DESIGN.md`, "Release flow"): the build machine
//! publishes a release into the signed feed, a long-running origin serves that feed over
//! HTTP and seeds every live release, and an agent on every service host polls the feed,
//! downloads each new release, verifies it, switches it in atomically and keeps seeding it.
//!
//! - [`publish`]: make the metainfo, add the release to the feed, sign it (build machine);
//! - [`origin`]: serve the feed and seed the releases it lists;
//! - [`agent`]: the daemon on every service host;
//! - [`hook`]: the command run after each activation (journaled, sandboxed env, timeout);
//! - [`releases`]: the agent's directory: staging, releases, the `current` links;
//! - [`http`]: the feed and metrics over HTTP, both ends;
//! - [`files`]: durable writes (write, fsync, rename, fsync the directory).

pub mod agent;
pub mod files;
pub mod hook;
pub mod http;
pub mod on_disk;
pub mod origin;
pub mod progress;
pub mod publish;
pub mod releases;

/// A new random signing key for the release feed (the feed format takes keys from its
/// caller; the randomness is here, with the rest of the I/O).
pub fn generate_key() -> crate::feed::SigningKey {
    crate::feed::SigningKey::from_bytes(&rand::random())
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The data files of `meta` stored below `dest` (pad files left out), in torrent order:
/// the paths a seeding storage opens, and the ones the mlock pass locks.
pub fn data_paths(
    meta: &crate::metainfo::Metainfo,
    dest: &std::path::Path,
) -> Vec<std::path::PathBuf> {
    meta.info
        .files
        .iter()
        .filter(|f| !f.pad)
        .map(|f| dest.join(meta.relative_path(f)))
        .collect()
}

/// Records that the data of `meta` below `dest` is verified whole, so a session adding it
/// to seed trusts it without hashing it again (as long as the files do not change: the
/// record holds their identity). Only for data just verified, e.g. hashed by `create`.
pub fn record_verified(
    meta: &crate::metainfo::Metainfo,
    dest: &std::path::Path,
) -> std::io::Result<()> {
    use crate::storage::{Layout, OpenMode, Storage};
    let storage = Storage::open(dest, Layout::from_metainfo(meta), OpenMode::Seed)
        .map_err(std::io::Error::other)?;
    let all = crate::bitfield::Bitfield::full(meta.piece_count());
    storage.save_resume(&meta.info_hash, &all)
}
