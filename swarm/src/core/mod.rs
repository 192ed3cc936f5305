//! [`Swarm`]: one torrent on one core, sans-I/O.
//!
//! Inputs are method calls, each with the current time: a peer connected or closed, its
//! handshake, each message, each fragment and whole block received, a piece hashed or
//! written, news from the host's other cores, the timer. Outputs are [`Action`]s, taken
//! with [`Swarm::poll_action`]; [`Swarm::poll_timeout`] says when to call
//! [`Swarm::handle_timeout`] next. Piece buffers are the driver's: the core asks for one
//! through [`PieceBuffers`] when it starts a piece and names them in its actions.
//!
//! Decisions live in one place each:
//! - which piece and which blocks to ask a peer for, endgame and work stealing:
//!   `requests.rs` (with the rules in [`crate::picker`] and [`crate::rate`]);
//! - who holds an upload slot, the one choke path, what a peer may be served:
//!   `slots.rs` (with the rules in [`crate::choker`] and the first seeder's grants in
//!   [`crate::shared`]);
//! - a piece's life from its last block to verified, and bans: `pieces.rs`;
//! - stalls, redials and the periodic work: `timers.rs`.

mod assembly;
mod peer;
mod pieces;
mod requests;
mod slots;
mod timers;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringswarm_proto::bitfield::Bitfield;
use ringswarm_proto::extension::{self, ExtHandshake, FetchingWord, MetadataMsg};
use ringswarm_proto::metainfo::Metainfo;
use ringswarm_proto::wire::{Handshake, Message};

pub use assembly::MAX_REQUESTERS;
pub use peer::{PeerInfo, Phase};

use crate::ids::{BlockRef, BufId, InfoHash, PeerId, PeerKey};
use crate::limits::RateLimiter;
use crate::locality::{locality, Locality, NamedPlace};
use crate::out::{Action, Out};
use crate::rate::MAX_REQUEST_DEPTH;
use crate::shared::Shared;
use assembly::Assembly;
use peer::Peer;

/// Requests a peer may queue with us before it is dropped.
pub const MAX_PEER_REQUESTS: usize = 2048;

/// The driver's piece memory, as the core sees it.
pub trait PieceBuffers {
    /// A buffer for `piece` (its whole length), or None when memory is full (the core then
    /// tries again later).
    fn reserve(&mut self, piece: u32) -> Option<BufId>;
}

/// How a core instance is set up.
#[derive(Clone, Debug)]
pub struct Config {
    pub our_id: PeerId,
    /// Our listening port, told to peers in the BEP 10 handshake.
    pub listen_port: Option<u16>,
    /// Upload slots for the torrent, over every core of the host.
    pub upload_slots: u32,
    /// Seeds the core's own choices that want spreading (where picks start), so a run is
    /// deterministic for a given seed.
    pub seed: u64,
    pub download_limit: Option<Arc<RateLimiter>>,
    /// Dial attempts to one address before it is given up.
    pub max_dial_attempts: u32,
    /// Bytes per requested block: BEP 3's 16 KiB on the wire. The simulator asks for
    /// larger blocks (fewer events per piece); request depths are kept in bytes, so the
    /// same rules hold at any block length.
    pub block_len: u32,
}

impl Config {
    pub fn new(our_id: PeerId) -> Config {
        Config {
            our_id,
            listen_port: None,
            upload_slots: 8,
            seed: 0,
            download_limit: None,
            max_dial_attempts: 30,
            block_len: ringswarm_proto::wire::BLOCK_SIZE,
        }
    }
}

struct HashJob {
    claimed: bool,
    writers: Vec<(PeerKey, std::net::IpAddr)>,
}

struct Redial {
    due: Instant,
    addr: SocketAddr,
    attempt: u32,
}

/// One torrent on one core.
pub struct Swarm {
    cfg: Config,
    meta: Arc<Metainfo>,
    shared: Arc<Shared>,
    peers: Vec<Option<Peer>>,
    /// Keys of the active and handshaking peers, in arrival order (iteration order).
    order: Vec<PeerKey>,
    assemblies: BTreeMap<u32, Assembly>,
    hashing: BTreeMap<u32, HashJob>,
    /// Pieces being written (and whether we hold their claim).
    writing: BTreeMap<u32, bool>,
    /// Pieces whose last copy failed its hash with several writers.
    single_source: BTreeSet<u32>,
    /// Pieces we told the rack peers (`rs_fetching`) we fetch from outside, until we have
    /// them or say we stopped: when we last said so, and how many of its blocks were in
    /// then.
    told_fetching: BTreeMap<u32, (Instant, u32)>,
    actions: VecDeque<Action>,
    redials: Vec<Redial>,
    next_tick: Option<Instant>,
    /// How long a share owner in the rack has before the next host may fetch its piece
    /// from outside ([`crate::picker::Overdue`]), from our download rate at the last tick.
    share_grace: Duration,
    /// Every rack peer here speaks `rs_fetching` (at the last tick; false with none).
    rack_says_fetching: bool,
    rng: u64,
    /// Our peers waiting for a slot, as last added to the torrent's count.
    waiting_published: u32,
    /// Stopped (the torrent failed or is being removed): no requests, no redials.
    stopped: bool,
}

impl Swarm {
    pub fn new(cfg: Config, meta: Arc<Metainfo>, shared: Arc<Shared>) -> Swarm {
        let rng = cfg.seed | 1;
        Swarm {
            cfg,
            meta,
            shared,
            peers: Vec::new(),
            order: Vec::new(),
            assemblies: BTreeMap::new(),
            hashing: BTreeMap::new(),
            writing: BTreeMap::new(),
            single_source: BTreeSet::new(),
            told_fetching: BTreeMap::new(),
            actions: VecDeque::new(),
            redials: Vec::new(),
            next_tick: None,
            share_grace: requests::SHARE_GRACE_MAX,
            rack_says_fetching: false,
            rng,
            waiting_published: 0,
            stopped: false,
        }
    }

    pub fn info_hash(&self) -> InfoHash {
        InfoHash(self.meta.info_hash)
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn meta(&self) -> &Arc<Metainfo> {
        &self.meta
    }

    /// The next action, in the order decided.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Swarm::handle_timeout`] wants calling next (None: nothing timed is pending).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let redial = self.redials.iter().map(|r| r.due).min();
        match (self.next_tick, redial) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Peers connected (handshaking or active) on this core.
    pub fn peer_count(&self) -> usize {
        self.order.len()
    }

    /// The blocks `peer` asked of us, in order: the driver sends from the front and says
    /// how many left with [`Swarm::blocks_sent`].
    pub fn uploads(&self, peer: PeerKey) -> Option<&VecDeque<BlockRef>> {
        self.peer(peer).map(|p| &p.uploads)
    }

    /// Whether this core is receiving, hashing or writing `piece`.
    pub fn in_progress(&self, piece: u32) -> bool {
        self.assemblies.contains_key(&piece)
            || self.hashing.contains_key(&piece)
            || self.writing.contains_key(&piece)
    }

    /// The addresses that wrote into `piece`, while it is being hashed (for the log).
    pub fn writers_of(&self, piece: u32) -> Option<Vec<std::net::IpAddr>> {
        let job = self.hashing.get(&piece)?;
        Some(job.writers.iter().map(|(_, ip)| *ip).collect())
    }

    /// Whether the core still waits on the driver for hashes or writes.
    pub fn busy(&self) -> bool {
        !self.hashing.is_empty() || !self.writing.is_empty()
    }

    fn peer(&self, key: PeerKey) -> Option<&Peer> {
        self.peers
            .get(key.index as usize)?
            .as_ref()
            .filter(|p| p.key == key)
    }

    fn peer_mut(&mut self, key: PeerKey) -> Option<&mut Peer> {
        self.peers
            .get_mut(key.index as usize)?
            .as_mut()
            .filter(|p| p.key == key)
    }

    /// Queues a message, unless the peer is gone or being closed (a CANCEL for a request
    /// it held, say, would reach nobody).
    fn send(&mut self, peer: PeerKey, msg: Out) {
        if self.peer(peer).is_some_and(|p| !p.closing) {
            self.actions.push_back(Action::Send { peer, msg });
        }
    }

    fn close(&mut self, peer: PeerKey, reason: impl Into<String>) {
        if let Some(p) = self.peer_mut(peer) {
            p.closing = true;
        }
        self.actions.push_back(Action::Close {
            peer,
            reason: reason.into(),
        });
    }

    /// A small deterministic generator (xorshift64*), seeded from the config.
    fn random(&mut self) -> u32 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    }

    fn ensure_ticking(&mut self, now: Instant) {
        if self.next_tick.is_none() {
            self.next_tick = Some(now + timers::TICK);
        }
    }

    // ---- connections ---------------------------------------------------------------------

    /// Asks the core to connect to `addr` (from a tracker, the command line, a hand-off).
    pub fn add_peer_address(&mut self, now: Instant, addr: SocketAddr) {
        if self.stopped || self.shared.is_banned(addr.ip(), now) {
            return;
        }
        self.actions.push_back(Action::Dial { addr, attempt: 1 });
    }

    /// A dial failed (refused, unreachable, or the driver had no room for it).
    pub fn dial_failed(&mut self, now: Instant, addr: SocketAddr, attempt: u32) {
        self.schedule_redial(now, addr, attempt + 1);
    }

    fn schedule_redial(&mut self, now: Instant, addr: SocketAddr, attempt: u32) {
        if self.stopped
            || attempt > self.cfg.max_dial_attempts
            || self.shared.all_verified()
            || self.shared.is_banned(addr.ip(), now)
        {
            return;
        }
        let backoff = Duration::from_millis(250 * u64::from(attempt.min(20)));
        self.redials.push(Redial {
            due: now + backoff,
            addr,
            attempt,
        });
    }

    /// A connection is up: dialled by us (we send our handshake now) or accepted with a
    /// handshake for this torrent (call [`Swarm::handshake`] next).
    pub fn peer_connected(&mut self, now: Instant, key: PeerKey, info: PeerInfo) {
        let slot = key.index as usize;
        if self.peers.len() <= slot {
            self.peers.resize_with(slot + 1, || None);
        }
        if self.peers[slot].is_some() {
            // The driver reused an index without closing: forget the old one first.
            if let Some(old) = self.peers[slot].as_ref().map(|p| p.key) {
                self.peer_closed(now, old);
            }
        }
        let start = self.random();
        let mut peer = Peer::new(
            key,
            &info,
            self.shared.piece_count(),
            self.cfg.block_len,
            now,
            start,
        );
        if !info.our_place.is_unknown() {
            let theirs = info.their_place.clone().unwrap_or_default();
            peer.locality = locality(&info.our_place, &theirs);
            peer.our_place = Some(Box::new(info.our_place));
        }
        let outgoing = peer.outgoing;
        self.peers[slot] = Some(peer);
        self.order.push(key);
        if outgoing {
            self.send(key, Out::Handshake);
        }
        self.ensure_ticking(now);
    }

    /// The peer's handshake (its info-hash is ours: the driver routed it here). An error
    /// says why the connection must close.
    pub fn handshake(&mut self, now: Instant, key: PeerKey, hs: &Handshake) -> Result<(), String> {
        let our_id = self.cfg.our_id;
        let their_id = PeerId(hs.peer_id);
        if self.stopped {
            return Err("torrent stopped".into());
        }
        crate::metadata::check_handshake(self.info_hash(), our_id, hs)?;
        let peer = self.peer(key).ok_or("unknown connection")?;
        if peer.phase == Phase::Active {
            // Checked before the peer book: a second handshake's id must not be recorded.
            return Err("a second handshake".into());
        }
        let ip = peer.addr.ip();
        {
            let mut book = self.shared.peers.lock().map_err(|_| "peer book poisoned")?;
            if book.banned.is_banned(ip, now) {
                return Err(crate::reasons::BANNED_PEER.into());
            }
            if !book.connected.insert(their_id) {
                return Err("already connected to this peer".into());
            }
        }
        let ours = Handshake::new(self.meta.info_hash, our_id.0);
        let peer = self.peer_mut(key).ok_or("unknown connection")?;
        let incoming = !peer.outgoing;
        peer.id = their_id;
        peer.fast = hs.supports_fast() && ours.supports_fast();
        peer.ext = hs.supports_extensions() && ours.supports_extensions();
        peer.phase = Phase::Active;
        let (fast, ext, rack) = (peer.fast, peer.ext, peer.locality == Locality::Rack);
        let our_place = peer.our_place.as_deref().cloned().unwrap_or_default();
        self.shared
            .counters
            .connected
            .fetch_add(1, Ordering::Relaxed);
        if rack && !our_place.is_unknown() {
            self.shared.set_rack_peer(their_id, true, our_id);
        }
        if incoming {
            self.send(key, Out::Handshake);
        }
        if ext {
            let hs = ExtHandshake {
                extensions: vec![
                    ("ut_metadata".into(), extension::OUR_UT_METADATA_ID),
                    (extension::FETCHING.into(), extension::OUR_FETCHING_ID),
                ],
                metadata_size: Some(self.meta.info_bytes.len() as u64),
                listen_port: self.cfg.listen_port,
                client: Some(concat!("ringswarm ", env!("CARGO_PKG_VERSION")).into()),
                request_queue: Some(MAX_PEER_REQUESTS as u32),
                dc: our_place.dc.clone(),
                rack: our_place.rack.clone(),
            };
            self.send(key, Out::ExtHandshake(Box::new(hs)));
        }
        let have = self.shared.verified.snapshot();
        let count = have.count_ones();
        if fast && count == have.len() {
            self.send(key, Out::HaveAll);
        } else if fast && count == 0 {
            self.send(key, Out::HaveNone);
        } else if count > 0 {
            self.send(key, Out::Bitfield(have));
        }
        Ok(())
    }

    /// The connection is gone (closed by either side, or by the driver after an error or
    /// a [`Action::Close`]). Its requests go back to the pool; an outgoing peer that was
    /// serving us is dialled again.
    pub fn peer_closed(&mut self, now: Instant, key: PeerKey) {
        let Some(peer) = self
            .peers
            .get_mut(key.index as usize)
            .and_then(|p| p.take_if(|p| p.key == key))
        else {
            return;
        };
        self.order.retain(|&k| k != key);
        let shared = self.shared.clone();
        if peer.active() {
            shared.counters.connected.fetch_sub(1, Ordering::Relaxed);
            if let Ok(mut book) = shared.peers.lock() {
                book.connected.remove(&peer.id);
            }
            if !peer.am_choking {
                shared.counters.unchoked.fetch_sub(1, Ordering::AcqRel);
            }
            if peer.our_place.is_some() && peer.locality == Locality::Rack {
                shared.set_rack_peer(peer.id, false, self.cfg.our_id);
            }
        }
        if peer.counted {
            for i in peer.have.ones() {
                count_piece(&shared, peer.locality, peer.seed_at_open, i, false);
            }
        }
        shared.release_grants(&peer.granted);
        // What it said it fetches for the rack will not come from it.
        for &piece in &peer.fetching {
            shared.note_rack_fetching(piece, None);
        }
        for piece in peer.pieces.iter().copied() {
            self.leave_piece(piece, key, false);
        }
        if peer.outgoing {
            // A peer that was serving us starts over; one that failed early, or that we
            // dropped for stalling, backs off (a trickler is not redialled every 5 s).
            let attempt = if peer.active() && !peer.stalled {
                1
            } else {
                peer.attempt + 1
            };
            self.schedule_redial(now, peer.addr, attempt);
        }
        if self.order.is_empty() {
            self.next_tick = None;
            // No tick will rechoke here: our waiting peers leave the torrent's count now.
            self.unpublish_waiting();
        }
    }

    /// Stops the torrent's transfers (it failed, or is being removed): every peer is
    /// closed, nothing more is requested or dialled. Pieces being hashed or written finish.
    pub fn stop(&mut self, reason: &str) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        self.redials.clear();
        for key in self.order.clone() {
            self.close(key, reason);
        }
    }

    /// Gives up every piece in progress (their buffers come back as [`Action::Discard`]):
    /// the core is going away.
    pub fn forget_pieces(&mut self) {
        let pieces: Vec<u32> = self.assemblies.keys().copied().collect();
        for piece in pieces {
            self.give_up(piece);
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    // ---- messages ----------------------------------------------------------------------

    /// One message from an active peer (block payloads come through
    /// [`Swarm::block_fragment`] and [`Swarm::block_received`] instead). An error says why
    /// the peer must be dropped.
    pub fn message(
        &mut self,
        now: Instant,
        key: PeerKey,
        msg: &Message<'_>,
        bufs: &mut dyn PieceBuffers,
    ) -> Result<(), String> {
        let n = self.shared.piece_count();
        // At least half the torrent missing here (see `Peer::seed_met_early`).
        let early = self.shared.missing().saturating_mul(2) >= n;
        let peer = self.peer_mut(key).ok_or("unknown connection")?;
        if !peer.active() {
            return Err("message before the handshake".into());
        }
        match *msg {
            Message::KeepAlive
            | Message::Port { .. }
            | Message::Suggest { .. }
            | Message::AllowedFast { .. }
            | Message::Unknown { .. }
            | Message::Piece { .. } => {}
            Message::Choke => {
                // Our requests are void (dropped, or rejected under BEP 6): they go back
                // to the pool so other peers can fetch them.
                peer.peer_choking = true;
                self.drop_requests(key);
            }
            Message::Unchoke => {
                peer.peer_choking = false;
                peer.refill_blocked = false;
                self.fill(now, key, bufs);
            }
            Message::Interested => {
                if !peer.peer_interested {
                    peer.waiting_since = now;
                }
                peer.peer_interested = true;
                self.try_unchoke(now, key);
            }
            Message::NotInterested => {
                peer.peer_interested = false;
                self.choke(now, key);
            }
            Message::Have { index: piece } => {
                if piece >= n {
                    return Err(format!("HAVE for piece {piece} of {n}"));
                }
                if self.note_have(now, key, piece) {
                    self.after_peer_has(now, key, Some(piece), bufs);
                }
            }
            // After the first, a BITFIELD or HAVE ALL is read as HAVEs for the pieces it
            // adds: aria2 opens with HAVE NONE and sends its BITFIELD later. A bit it clears
            // is ignored (a peer does not lose pieces; we keep counting what it announced).
            Message::Bitfield { bits } if peer.got_bitfield => {
                let field =
                    Bitfield::from_bytes(bits, n).map_err(|e| format!("bad bitfield: {e}"))?;
                self.late_pieces(now, key, &field, bufs);
            }
            Message::HaveAll if peer.got_bitfield => {
                if !peer.fast {
                    return Err("HAVE ALL without the fast extension".into());
                }
                self.late_pieces(now, key, &Bitfield::full(n), bufs);
            }
            Message::HaveNone if peer.got_bitfield => {
                if !peer.fast {
                    return Err("HAVE NONE without the fast extension".into());
                }
            }
            Message::Bitfield { bits } => {
                let field =
                    Bitfield::from_bytes(bits, n).map_err(|e| format!("bad bitfield: {e}"))?;
                peer.got_bitfield = true;
                peer.opened_complete = field.is_complete();
                peer.seed_at_open = field.is_complete() && !peer.counted;
                peer.seed_met_early = peer.seed_at_open && early;
                self.set_peer_pieces(now, key, field, bufs);
            }
            Message::HaveAll => {
                if !peer.fast {
                    return Err("HAVE ALL without the fast extension".into());
                }
                peer.got_bitfield = true;
                peer.opened_complete = true;
                peer.seed_at_open = !peer.counted;
                peer.seed_met_early = peer.seed_at_open && early;
                self.set_peer_pieces(now, key, Bitfield::full(n), bufs);
            }
            Message::HaveNone => {
                if !peer.fast {
                    return Err("HAVE NONE without the fast extension".into());
                }
                peer.got_bitfield = true;
            }
            Message::Request {
                index,
                begin,
                length,
            } => {
                let block = BlockRef {
                    piece: index,
                    begin,
                    len: length,
                };
                self.on_request(now, key, block)?;
            }
            Message::Cancel {
                index,
                begin,
                length,
            } => {
                let want = BlockRef {
                    piece: index,
                    begin,
                    len: length,
                };
                peer.uploads.retain(|r| *r != want);
            }
            Message::Reject {
                index,
                begin,
                length,
            } => {
                if !peer.fast {
                    return Err("REJECT without the fast extension".into());
                }
                let block = BlockRef {
                    piece: index,
                    begin,
                    len: length,
                };
                self.on_reject(now, key, block, bufs);
            }
            Message::Extended { id, payload } => self.on_extended(now, key, id, payload, bufs)?,
        }
        Ok(())
    }

    fn on_extended(
        &mut self,
        now: Instant,
        key: PeerKey,
        id: u8,
        payload: &[u8],
        bufs: &mut dyn PieceBuffers,
    ) -> Result<(), String> {
        let n = self.shared.piece_count();
        let shared = self.shared.clone();
        let peer = self.peer_mut(key).ok_or("unknown connection")?;
        if id == extension::HANDSHAKE_ID {
            let hs = ExtHandshake::decode(payload)
                .map_err(|e| format!("bad extension handshake: {e}"))?;
            peer.their_metadata_id = hs.id_of("ut_metadata");
            peer.their_fetching_id = hs.id_of(extension::FETCHING);
            peer.max_requests = hs
                .request_queue
                .map_or(MAX_REQUEST_DEPTH, |q| q.clamp(16, MAX_REQUEST_DEPTH));
            // The place a peer states counts only where the topology does not place it.
            if let Some(ours) = peer.our_place.as_deref() {
                if !peer.placed_by_topology {
                    let stated = NamedPlace {
                        dc: hs.dc.clone(),
                        rack: hs.rack.clone(),
                    };
                    let now = locality(ours, &stated);
                    self.set_locality(key, now);
                }
            }
            return Ok(());
        }
        if id == extension::OUR_FETCHING_ID {
            let word = extension::decode_fetching(payload).map_err(|e| e.to_string())?;
            let piece = word.piece();
            if piece >= n {
                return Err(format!("rs_fetching for piece {piece} of {n}"));
            }
            // Only a rack peer's word counts, and only for a piece it has not announced.
            if peer.locality != Locality::Rack || peer.have.get(piece) {
                return Ok(());
            }
            match word {
                // A renewal of a word it gave counts even at the cap.
                FetchingWord::Started(_)
                    if peer.fetching.contains(&piece)
                        || peer.fetching.len() < peer::MAX_FETCHING =>
                {
                    if !peer.fetching.contains(&piece) {
                        peer.fetching.push(piece);
                    }
                    let them = peer.id;
                    shared.note_rack_fetching(piece, Some(now));
                    self.yield_fetch(now, piece, them, bufs);
                }
                FetchingWord::Started(_) => {}
                FetchingWord::Stopped(_) => {
                    peer.fetching.retain(|&p| p != piece);
                    // The piece is free for the next host in the order, unless another
                    // rack peer here still says it fetches it.
                    if !self
                        .order
                        .iter()
                        .filter_map(|&k| self.peer(k))
                        .any(|p| p.fetching.contains(&piece))
                    {
                        shared.note_rack_fetching(piece, None);
                    }
                }
            }
            return Ok(());
        }
        if id != extension::OUR_UT_METADATA_ID {
            return Ok(());
        }
        let msg =
            MetadataMsg::decode(payload).map_err(|e| format!("bad ut_metadata message: {e}"))?;
        if let (MetadataMsg::Request { piece }, Some(their_id)) = (msg, peer.their_metadata_id) {
            let info = &self.meta.info_bytes;
            let start = piece as usize * extension::METADATA_PIECE_SIZE;
            let reply = if start < info.len() {
                let end = (start + extension::METADATA_PIECE_SIZE).min(info.len());
                MetadataMsg::Data {
                    piece,
                    total_size: info.len() as u64,
                    data: &info[start..end],
                }
                .encode()
            } else {
                MetadataMsg::Reject { piece }.encode()
            };
            self.send(
                key,
                Out::Extended {
                    id: their_id,
                    payload: reply,
                },
            );
        }
        Ok(())
    }

    /// Moves a peer to another locality (its BEP 10 handshake placed it): its pieces move
    /// in or out of the rack availability, and the rack membership (our share) follows.
    fn set_locality(&mut self, key: PeerKey, now: Locality) {
        let our_id = self.cfg.our_id;
        let shared = self.shared.clone();
        let Some(peer) = self.peer_mut(key) else {
            return;
        };
        let was = peer.locality;
        if was == now {
            return;
        }
        if peer.counted {
            for i in peer.have.ones() {
                count_piece(&shared, was, peer.seed_at_open, i, false);
                count_piece(&shared, now, peer.seed_at_open, i, true);
            }
        }
        let into_rack = now == Locality::Rack;
        if was == Locality::Rack || into_rack {
            shared.set_rack_peer(peer.id, into_rack, our_id);
        }
        peer.locality = now;
    }

    fn set_peer_pieces(
        &mut self,
        now: Instant,
        key: PeerKey,
        field: Bitfield,
        bufs: &mut dyn PieceBuffers,
    ) {
        let shared = self.shared.clone();
        let Some(peer) = self.peer_mut(key) else {
            return;
        };
        let (locality, seed) = (peer.locality, peer.seed_at_open);
        if peer.counted {
            for i in peer.have.ones() {
                count_piece(&shared, locality, seed, i, false);
            }
        }
        for i in field.ones() {
            count_piece(&shared, locality, seed, i, true);
            // Not `seen_outside`: that clock starts when a piece newly appears outside the
            // rack (a HAVE). A seed's whole bitfield would make every piece overdue after
            // the grace, and each host fetch any of them across the uplink (perf/fleet:
            // 2.5 × the blob into each rack instead of 1.1 ×).
            shared.note_delivered(i);
        }
        peer.have = field;
        peer.counted = true;
        self.after_peer_has(now, key, None, bufs);
    }

    /// Counts one piece a peer announced in a HAVE; false when it was known already.
    fn note_have(&mut self, now: Instant, key: PeerKey, piece: u32) -> bool {
        let shared = self.shared.clone();
        let Some(peer) = self.peer_mut(key) else {
            return false;
        };
        let added = add_piece(&shared, peer, piece);
        if added && peer.locality != Locality::Rack {
            shared.note_seen_outside(piece, now);
        }
        peer.fetching.retain(|&p| p != piece);
        added
    }

    /// A BITFIELD or HAVE ALL after the first: the pieces it adds, as HAVEs, except that
    /// they start no `seen_outside` clock (as a first BITFIELD does not: a whole field at
    /// once would make every piece overdue after the grace, see `set_peer_pieces`). A
    /// message that completes the peer's set in one go is a seed's (or a liar's) and does
    /// not make the peer a receiver of ours (`counts_as_receiver`).
    fn late_pieces(
        &mut self,
        now: Instant,
        key: PeerKey,
        field: &Bitfield,
        bufs: &mut dyn PieceBuffers,
    ) {
        let shared = self.shared.clone();
        let Some(peer) = self.peer_mut(key) else {
            return;
        };
        let mut added = 0u32;
        for piece in field.ones() {
            if add_piece(&shared, peer, piece) {
                added += 1;
            }
        }
        if added > 1 && peer.have.is_complete() {
            peer.opened_complete = true;
        }
        if added > 0 {
            self.after_peer_has(now, key, None, bufs);
        }
    }

    /// After the peer gained pieces: note a complete peer, become interested if it has
    /// something we lack, and ask for it. `new` is the piece a HAVE announced; None after
    /// a whole bitfield.
    fn after_peer_has(
        &mut self,
        now: Instant,
        key: PeerKey,
        new: Option<u32>,
        bufs: &mut dyn PieceBuffers,
    ) {
        let shared = self.shared.clone();
        let Some(peer) = self.peer_mut(key) else {
            return;
        };
        if counts_as_receiver(peer.opened_complete, peer.uploaded_to, &peer.have) {
            if let Ok(mut book) = shared.peers.lock() {
                book.completed.insert(peer.id);
            }
        }
        if !peer.am_interested && !shared.all_verified() {
            let wants = match new {
                Some(i) => !shared.verified.get(i),
                None => peer.have.ones().any(|i| !shared.verified.get(i)),
            };
            if wants {
                peer.am_interested = true;
                self.send(key, Out::Interested);
            }
        }
        if let Some(peer) = self.peer_mut(key) {
            // A peer whose last refill found nothing to ask for, announcing a piece we
            // hold or fetch already, offers nothing new: no refill (the tick refills every
            // peer anyway). HAVEs are most of a swarm's messages, and a refill scans the
            // torrent's pieces.
            let nothing_new = new.is_some_and(|i| {
                peer.refill_blocked && (shared.verified.get(i) || shared.claimed.get(i))
            });
            if nothing_new {
                return;
            }
            peer.refill_blocked = false;
        }
        self.fill(now, key, bufs);
    }
}

/// Counts a piece a peer announced in its availability; false when it was known already.
fn add_piece(shared: &Shared, peer: &mut Peer, piece: u32) -> bool {
    if peer.have.get(piece) {
        return false;
    }
    peer.have.set(piece);
    peer.counted = true;
    count_piece(shared, peer.locality, peer.seed_at_open, piece, true);
    shared.note_delivered(piece);
    true
}

/// Counts a peer at `locality` holding `piece` in (`add`) or out of the availabilities:
/// the torrent's, our dc's and our rack's.
///
/// A seed from the start (the origin) does not count in our dc's: its upload is the
/// scarcest in the fleet, so a piece that another dc already holds may come over the WAN
/// rather than from it again; each piece still crosses the WAN about once, one way or the
/// other. (Counting it held the origin's dc to the origin alone: in a 2-dc simulation of
/// the emulated fleet the origin sent 2.9 × the blob and its dc's hosts took 3 × the
/// bound.)
fn count_piece(shared: &Shared, locality: Locality, seed: bool, piece: u32, add: bool) {
    let i = piece as usize;
    let counts = [
        Some(&shared.availability),
        (locality <= Locality::Dc && !seed).then_some(&shared.dc_availability),
        (locality == Locality::Rack).then_some(&shared.rack_availability),
    ];
    for a in counts.into_iter().flatten().filter_map(|c| c.get(i)) {
        if add {
            a.fetch_add(1, Ordering::Relaxed);
        } else {
            a.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Whether a peer counts as a receiver of ours (`send --receivers`, `peers_completed`): it
/// holds every piece by its own announcements, we sent it payload, and it did not open by
/// claiming every piece (HAVE ALL or a full BITFIELD at once is a seed, or a liar).
pub fn counts_as_receiver(opened_complete: bool, uploaded_to: u64, have: &Bitfield) -> bool {
    !opened_complete && uploaded_to > 0 && have.is_complete()
}

#[cfg(test)]
mod tests;
