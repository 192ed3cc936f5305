//! A session: one BitTorrent peer serving and fetching torrents on a thread-per-core
//! io_uring engine. WORK IN PROGRESS — the public API below is the contract the CLI uses.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::metainfo::Metainfo;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error("{0}")]
    Config(String),
}

/// Session settings.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Worker threads, one per core; 0 means all online CPUs.
    pub cores: usize,
    /// Where to accept peers; None accepts none (a pure downloader).
    pub listen: Option<SocketAddr>,
    /// Our peer id; the default is `-RS0100-` and 12 random bytes.
    pub peer_id: [u8; 20],
    /// Peers unchoked at once per torrent (a trusted fleet: no tit-for-tat).
    pub upload_slots: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self { cores: 0, listen: None, peer_id: random_peer_id(), upload_slots: 64 }
    }
}

/// `-RS0100-` followed by 12 random alphanumerics (the Azureus-style convention).
pub fn random_peer_id() -> [u8; 20] {
    use rand::Rng;
    let mut id = *b"-RS0100-000000000000";
    let mut rng = rand::rng();
    for b in &mut id[8..] {
        *b = rng.sample(rand::distr::Alphanumeric);
    }
    id
}

/// What a torrent is added for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TorrentMode {
    /// Fetch what is missing (resuming what is verified), then keep serving.
    Download,
    /// The data is all there: check it (or trust a complete resume file) and serve it.
    Seed,
}

#[derive(Clone, Debug)]
pub struct TorrentSpec {
    pub metainfo: Arc<Metainfo>,
    /// The destination directory; files land at `dest/<relative_path>`.
    pub dest: PathBuf,
    pub mode: TorrentMode,
    /// Peers to connect to.
    pub peers: Vec<SocketAddr>,
}

/// A snapshot of a torrent's progress.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TorrentStats {
    pub piece_count: u32,
    pub verified_pieces: u32,
    pub total_bytes: u64,
    pub verified_bytes: u64,
    /// Payload bytes received, including any that failed verification.
    pub downloaded_bytes: u64,
    pub uploaded_bytes: u64,
    pub connected_peers: u32,
    /// Every piece verified, written, and made durable (fsync).
    pub complete: bool,
    /// A fatal error (disk full, storage failure): the torrent stopped.
    pub error: Option<String>,
    pub hash_failures: u32,
    pub banned_peers: u32,
    /// Distinct remote peers seen holding a full copy.
    pub peers_completed: u32,
    /// Upload requests served from the per-core recent-piece cache vs from disk.
    pub cache_hits: u64,
    pub cache_misses: u64,
}

/// A running session.
pub struct Session {
    _private: (),
}

impl Session {
    pub fn start(config: SessionConfig) -> Result<Session, SessionError> {
        let _ = config;
        todo!()
    }

    /// The bound listening address (with the real port when 0 was asked for).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        todo!()
    }

    /// Adds a torrent: opens its storage (a `Seed` checks the data first) and starts
    /// connecting to its peers.
    pub fn add_torrent(&self, spec: TorrentSpec) -> Result<TorrentHandle, SessionError> {
        let _ = spec;
        todo!()
    }

    /// Stops every worker and waits for them.
    pub fn shutdown(self) {
        todo!()
    }
}

/// A handle on a torrent of a running session.
#[derive(Clone)]
pub struct TorrentHandle {
    _private: Arc<()>,
}

impl TorrentHandle {
    pub fn info_hash(&self) -> [u8; 20] {
        todo!()
    }

    pub fn stats(&self) -> TorrentStats {
        todo!()
    }

    /// Connects to more peers.
    pub fn add_peers(&self, peers: &[SocketAddr]) {
        let _ = peers;
        todo!()
    }

    /// Absolute paths of the torrent's files (for the mlock pass).
    pub fn file_paths(&self) -> Vec<PathBuf> {
        todo!()
    }
}
