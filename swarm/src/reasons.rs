//! Reasons for closing a peer or refusing its handshake that a caller classifies (a ban
//! for corrupt data, a peer of another torrent, metadata that does not hash right): said
//! and matched through these constants only, so rewording one cannot silently change how
//! it is classified (and which exit code a download gets).

/// A peer closed because it sent corrupt data.
pub const BANNED_CORRUPT: &str = "banned: sent corrupt data";
/// A peer refused because it is banned.
pub const BANNED_PEER: &str = "banned peer";
/// A peer whose handshake named another torrent than the one we asked for.
pub const OTHER_TORRENT: &str = "peer answered for another torrent";
/// An incoming handshake for a torrent this host does not have.
pub const UNKNOWN_TORRENT: &str = "handshake for a torrent we do not have";
/// A magnet's metadata that does not hash to its info-hash.
pub const METADATA_MISMATCH: &str = "metadata does not match the info-hash";

/// Whether `reason` is one of the ban reasons above.
pub fn is_banned(reason: &str) -> bool {
    reason == BANNED_CORRUPT || reason == BANNED_PEER
}

/// Whether `reason` says the peer is not in our torrent's swarm.
pub fn is_other_torrent(reason: &str) -> bool {
    reason == OTHER_TORRENT || reason == UNKNOWN_TORRENT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reason_is_classified_once() {
        assert!(is_banned(BANNED_CORRUPT) && is_banned(BANNED_PEER));
        assert!(is_other_torrent(OTHER_TORRENT) && is_other_torrent(UNKNOWN_TORRENT));
        for r in [OTHER_TORRENT, UNKNOWN_TORRENT, METADATA_MISMATCH] {
            assert!(!is_banned(r), "{r}");
        }
        for r in [BANNED_CORRUPT, BANNED_PEER, METADATA_MISMATCH] {
            assert!(!is_other_torrent(r), "{r}");
        }
    }
}
