//! Recording why a dialled peer failed, in the torrent's host-wide book, and telling the
//! operator once per peer and reason.

use std::net::SocketAddr;

use super::super::failures::PeerFailureReason;
use super::Ctx;

impl Ctx {
    /// Records why the dialled connection `index` failed (see [`Ctx::note_failure`]);
    /// accepted connections are not recorded (their port says nothing).
    pub(super) fn peer_failed(&self, index: usize, reason: PeerFailureReason) {
        let Some(conn) = self.conns.get(index).and_then(Option::as_ref) else {
            return;
        };
        if let (true, Some(t)) = (conn.outgoing, conn.torrent) {
            self.note_failure(t, conn.addr, reason);
        }
    }

    /// Records a failure of a peer of torrent `t` in the host-wide book, and reports it
    /// when it is news (not the same failure of a redial, not another core's).
    pub(super) fn note_failure(&self, t: usize, addr: SocketAddr, reason: PeerFailureReason) {
        let shared = &self.torrents[t].shared;
        let (line, warns) = (reason.to_string(), reason.warns());
        if shared.failures.record(addr, reason) {
            let name = &shared.meta.info.name;
            if warns {
                tracing::warn!("{name}: peer {addr} {line}");
            } else {
                tracing::info!("{name}: peer {addr} {line}");
            }
        }
    }
}
