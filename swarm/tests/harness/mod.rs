//! An in-memory network of ringswarm hosts on a virtual clock, driving the sans-I/O core as
//! the io_uring driver does: several hosts, each with one [`Shared`] and one or more
//! [`Swarm`] cores for one torrent, joined by in-memory connections. Each host has an
//! uplink of a given rate (bytes/s) that every message it sends crosses in turn, and each
//! connection a one-way delay set by where the two hosts stand (rack, dc, elsewhere).
//!
//! Messages go out as the driver sends them: [`Out::encode`] to bytes, decoded on the far
//! side with [`Message::decode`]; blocks go through `block_fragment` + `block_received`.
//! Piece bytes are not carried: a buffer remembers which hosts wrote into it, and its hash
//! is good unless one of them is a corrupting host.
//!
//! Everything is an event on one queue ordered by (time, sequence number), so a run is
//! deterministic; every run is bounded by a virtual time and an event count.

#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringswarm_proto::metainfo::{FileEntry, Info, Metainfo};
use ringswarm_proto::wire::{Handshake, Message, BLOCK_SIZE};
use ringswarm_swarm::locality::NamedPlace;
use ringswarm_swarm::{
    Action, BufId, Config, Out, PeerId, PeerInfo, PeerKey, PieceBuffers, Shared, Swarm,
};

/// The core's tail: with at most this many pieces missing it is in the endgame (the
/// core's `TAIL_PIECES`, not public).
pub const TAIL_PIECES: u32 = 4;

/// What a host is and does.
#[derive(Clone, Debug)]
pub struct HostSpec {
    pub place: NamedPlace,
    pub cores: usize,
    /// Uplink, bytes per second.
    pub up_rate: u64,
    /// Holds every piece from the start.
    pub seed: bool,
    /// A first seeder (hands out distinct pieces before repeating).
    pub initial_seed: bool,
    /// Every block it sends is garbage.
    pub corrupt: bool,
    /// Sends at most one block per this interval, whatever its uplink.
    pub trickle: Option<Duration>,
    /// Says INTERESTED but never sends a REQUEST (its requests are dropped on the way out).
    pub mute_requests: bool,
    pub upload_slots: u32,
    /// Piece buffers each core may hold at once (None: no limit).
    pub max_bufs: Option<usize>,
}

impl HostSpec {
    pub fn leecher(up_rate: u64) -> HostSpec {
        HostSpec {
            place: NamedPlace::default(),
            cores: 1,
            up_rate,
            seed: false,
            initial_seed: false,
            corrupt: false,
            trickle: None,
            mute_requests: false,
            upload_slots: 8,
            max_bufs: None,
        }
    }

    pub fn seed(up_rate: u64) -> HostSpec {
        HostSpec {
            seed: true,
            ..HostSpec::leecher(up_rate)
        }
    }

    pub fn at(mut self, dc: &str, rack: &str) -> HostSpec {
        self.place = NamedPlace {
            dc: Some(dc.into()),
            rack: Some(rack.into()),
        };
        self
    }
}

/// A buffer's life, as the harness sees it.
#[derive(Debug, Default)]
struct BufInfo {
    piece: u32,
    /// Hosts that wrote into it.
    writers: HashSet<usize>,
}

#[derive(Default)]
struct Bufs {
    next: u32,
    live: HashMap<BufId, BufInfo>,
    cap: Option<usize>,
}

impl PieceBuffers for Bufs {
    fn reserve(&mut self, piece: u32) -> Option<BufId> {
        if self.cap.is_some_and(|cap| self.live.len() >= cap) {
            return None;
        }
        self.next += 1;
        let id = BufId(self.next);
        self.live.insert(
            id,
            BufInfo {
                piece,
                writers: HashSet::new(),
            },
        );
        Some(id)
    }
}

struct Core {
    swarm: Swarm,
    bufs: Bufs,
    timer_at: Option<Instant>,
    next_key: u32,
}

pub struct Host {
    pub spec: HostSpec,
    pub id: PeerId,
    pub ip: IpAddr,
    pub shared: Arc<Shared>,
    cores: Vec<Core>,
    up_busy: Instant,
    next_trickle: Instant,
    pump_scheduled: bool,
    /// Connections with blocks queued to send, round robin.
    serving: VecDeque<(usize, PeerKey)>,
    pub done_at: Option<Instant>,
    /// Payload bytes received on the wire, per sending host.
    pub recv_from: HashMap<usize, u64>,
    /// Payload bytes sent on the wire.
    pub uploaded: u64,
    /// Blocks received whose bytes this host already had (wire duplicates), outside and
    /// inside the endgame.
    pub dup_blocks_outside_endgame: u64,
    pub dup_blocks_in_endgame: u64,
    have_blocks: HashSet<(u32, u32)>,
    /// Pieces written, and whether any writer was a corrupting host.
    pub written_bad: u32,
    pub written: u32,
    pub closes: Vec<String>,
    /// CHOKE and UNCHOKE received: (from host, unchoked, when).
    pub chokes: Vec<(usize, bool, Instant)>,
}

#[derive(Clone, Copy, Debug)]
struct Side {
    host: usize,
    core: usize,
    key: PeerKey,
    connected: bool,
}

struct Conn {
    sides: [Side; 2],
    alive: bool,
    delay: Duration,
}

#[derive(Debug)]
enum Wire {
    Handshake(Handshake),
    Msg(Vec<u8>),
    Block {
        piece: u32,
        begin: u32,
        len: u32,
        from: usize,
    },
}

#[derive(Debug)]
enum Ev {
    Deliver {
        conn: usize,
        to: usize,
        what: Wire,
    },
    Closed {
        conn: usize,
        side: usize,
    },
    Timer {
        host: usize,
        core: usize,
    },
    Pump {
        host: usize,
    },
    Hashed {
        host: usize,
        core: usize,
        piece: u32,
        buf: BufId,
        good: bool,
    },
    Written {
        host: usize,
        core: usize,
        piece: u32,
    },
    Broadcast {
        host: usize,
        from: usize,
        piece: u32,
    },
    BroadcastFetching {
        host: usize,
        from: usize,
        word: ringswarm_proto::extension::FetchingWord,
    },
    Connect {
        host: usize,
        core: usize,
        addr: SocketAddr,
        attempt: u32,
    },
}

/// The network.
pub struct Net {
    pub t0: Instant,
    pub now: Instant,
    pub meta: Arc<Metainfo>,
    pub hosts: Vec<Host>,
    conns: Vec<Conn>,
    by_key: HashMap<(usize, usize, PeerKey), (usize, usize)>,
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    events: HashMap<u64, Ev>,
    seq: u64,
    pub events_run: u64,
    pub log: Vec<String>,
}

/// One-way delay between two places.
pub fn delay(a: &NamedPlace, b: &NamedPlace) -> Duration {
    if a.is_unknown() || b.is_unknown() {
        Duration::from_micros(500)
    } else if a == b {
        Duration::from_micros(100)
    } else if a.dc == b.dc {
        Duration::from_micros(500)
    } else {
        Duration::from_millis(5)
    }
}

pub fn metainfo(pieces: u32, piece_len: u32) -> Arc<Metainfo> {
    let total = u64::from(pieces) * u64::from(piece_len);
    let info = Info {
        name: "blob".into(),
        piece_length: u64::from(piece_len),
        pieces: (0..pieces).map(|i| [(i % 251) as u8; 20]).collect(),
        files: vec![FileEntry {
            path: vec![],
            length: total,
            offset: 0,
            pad: false,
        }],
        multi_file: false,
        total_length: total,
        private: false,
    };
    Arc::new(Metainfo::from_info(info, vec![]))
}

impl Net {
    pub fn new(pieces: u32, piece_len: u32) -> Net {
        let t0 = Instant::now();
        Net {
            t0,
            now: t0,
            meta: metainfo(pieces, piece_len),
            hosts: Vec::new(),
            conns: Vec::new(),
            by_key: HashMap::new(),
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            seq: 0,
            events_run: 0,
            log: Vec::new(),
        }
    }

    pub fn blob_bytes(&self) -> u64 {
        self.meta.info.total_length
    }

    pub fn add_host(&mut self, spec: HostSpec) -> usize {
        let h = self.hosts.len();
        let n = self.meta.piece_count();
        let piece_len = self.meta.info.piece_length as u32;
        let last = self.meta.piece_size(n - 1);
        let shared = Arc::new(Shared::new(n, piece_len, last, self.t0));
        if spec.seed {
            for p in 0..n {
                shared.mark_verified(p);
            }
        }
        shared
            .initial_seed
            .store(spec.initial_seed, Ordering::Relaxed);
        let mut id = [0u8; 20];
        id[..8].copy_from_slice(b"-SIM001-");
        id[8..16].copy_from_slice(&(h as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
        id[16..20].copy_from_slice(&(h as u32).to_be_bytes());
        let cores = (0..spec.cores)
            .map(|c| {
                let mut cfg = Config::new(PeerId(id));
                cfg.upload_slots = spec.upload_slots;
                cfg.seed = (h as u64) << 16 | c as u64;
                Core {
                    swarm: Swarm::new(cfg, self.meta.clone(), shared.clone()),
                    bufs: Bufs {
                        cap: spec.max_bufs,
                        ..Bufs::default()
                    },
                    timer_at: None,
                    next_key: 0,
                }
            })
            .collect();
        self.hosts.push(Host {
            spec,
            id: PeerId(id),
            ip: IpAddr::V4(Ipv4Addr::new(10, (h >> 16) as u8, (h >> 8) as u8, h as u8)),
            shared,
            cores,
            up_busy: self.t0,
            next_trickle: self.t0,
            pump_scheduled: false,
            serving: VecDeque::new(),
            done_at: None,
            recv_from: HashMap::new(),
            uploaded: 0,
            dup_blocks_outside_endgame: 0,
            dup_blocks_in_endgame: 0,
            have_blocks: HashSet::new(),
            written_bad: 0,
            written: 0,
            closes: Vec::new(),
            chokes: Vec::new(),
        });
        h
    }

    pub fn addr(&self, h: usize) -> SocketAddr {
        SocketAddr::new(self.hosts[h].ip, 6881)
    }

    /// Host `a` learns of host `b` (on its core `b % cores`) and dials it.
    pub fn introduce(&mut self, a: usize, b: usize) {
        let core = b % self.hosts[a].cores.len();
        let addr = self.addr(b);
        let now = self.now;
        self.hosts[a].cores[core].swarm.add_peer_address(now, addr);
        self.drain(a, core);
    }

    /// Every host dials every host added before it.
    pub fn mesh(&mut self) {
        for a in 0..self.hosts.len() {
            for b in 0..a {
                self.introduce(a, b);
            }
        }
    }

    pub fn swarm(&self, h: usize, c: usize) -> &Swarm {
        &self.hosts[h].cores[c].swarm
    }

    fn push(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq)));
        self.events.insert(self.seq, ev);
    }

    /// Runs until `done` holds (checked after each event), the queue empties, `max_time`
    /// of virtual time passes or `max_events` events ran. True when `done` held.
    pub fn run(
        &mut self,
        max_time: Duration,
        max_events: u64,
        mut done: impl FnMut(&Net) -> bool,
    ) -> bool {
        let end = self.t0 + max_time;
        let mut budget = max_events;
        while budget > 0 {
            if done(self) {
                return true;
            }
            let Some(Reverse((at, seq))) = self.queue.pop() else {
                return false;
            };
            if at > end {
                // Left for a later run (a stage of a scenario ends here, the world goes on).
                self.queue.push(Reverse((at, seq)));
                return false;
            }
            budget -= 1;
            self.events_run += 1;
            self.now = self.now.max(at);
            let ev = self.events.remove(&seq).expect("event");
            self.handle(ev);
        }
        done(self)
    }

    pub fn all_done(&self, hosts: &[usize]) -> bool {
        hosts.iter().all(|&h| self.hosts[h].shared.all_verified())
    }

    pub fn elapsed(&self, h: usize) -> Option<Duration> {
        self.hosts[h].done_at.map(|t| t - self.t0)
    }

    /// Payload bytes that came into `rack` from hosts outside it.
    pub fn bytes_into_rack(&self, place: &NamedPlace) -> u64 {
        self.hosts
            .iter()
            .filter(|h| h.spec.place == *place)
            .flat_map(|h| h.recv_from.iter())
            .filter(|(&from, _)| self.hosts[from].spec.place != *place)
            .map(|(_, &b)| b)
            .sum()
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver { conn, to, what } => self.deliver(conn, to, what),
            Ev::Closed { conn, side } => {
                let s = self.conns[conn].sides[side];
                if s.connected {
                    let now = self.now;
                    self.hosts[s.host].cores[s.core]
                        .swarm
                        .peer_closed(now, s.key);
                    self.conns[conn].sides[side].connected = false;
                    self.drain(s.host, s.core);
                }
            }
            Ev::Timer { host, core } => {
                let now = self.now;
                let c = &mut self.hosts[host].cores[core];
                if c.timer_at.is_some_and(|t| t <= now) {
                    c.timer_at = None;
                    c.swarm.handle_timeout(now, &mut c.bufs);
                }
                self.drain(host, core);
            }
            Ev::Pump { host } => self.pump(host),
            Ev::Hashed {
                host,
                core,
                piece,
                buf,
                good,
            } => {
                let now = self.now;
                let c = &mut self.hosts[host].cores[core];
                c.swarm.piece_hashed(now, piece, buf, good, &mut c.bufs);
                if !good {
                    // The bytes are gone: fetching them again is no duplicate.
                    self.hosts[host].have_blocks.retain(|&(p, _)| p != piece);
                }
                self.drain(host, core);
            }
            Ev::Written { host, core, piece } => {
                self.hosts[host].cores[core]
                    .swarm
                    .piece_written(piece, true);
                self.drain(host, core);
            }
            Ev::Broadcast { host, from, piece } => {
                for c in 0..self.hosts[host].cores.len() {
                    if c != from {
                        self.hosts[host].cores[c].swarm.verified_elsewhere(piece);
                        self.drain(host, c);
                    }
                }
            }
            Ev::BroadcastFetching { host, from, word } => {
                for c in 0..self.hosts[host].cores.len() {
                    if c != from {
                        self.hosts[host].cores[c].swarm.fetching_elsewhere(word);
                        self.drain(host, c);
                    }
                }
            }
            Ev::Connect {
                host,
                core,
                addr,
                attempt,
            } => self.connect(host, core, addr, attempt),
        }
    }

    fn connect(&mut self, a: usize, core: usize, addr: SocketAddr, attempt: u32) {
        let now = self.now;
        let Some(b) = self.hosts.iter().position(|h| h.ip == addr.ip()) else {
            self.hosts[a].cores[core]
                .swarm
                .dial_failed(now, addr, attempt);
            self.drain(a, core);
            return;
        };
        let key_a = self.new_key(a, core);
        // Incoming connections are spread over the far host's cores.
        let b_core = (self.conns.len() + a) % self.hosts[b].cores.len();
        let key_b = self.new_key(b, b_core);
        let conn = self.conns.len();
        self.conns.push(Conn {
            sides: [
                Side {
                    host: a,
                    core,
                    key: key_a,
                    connected: true,
                },
                Side {
                    host: b,
                    core: b_core,
                    key: key_b,
                    connected: false,
                },
            ],
            alive: true,
            delay: delay(&self.hosts[a].spec.place, &self.hosts[b].spec.place),
        });
        self.by_key.insert((a, core, key_a), (conn, 0));
        self.by_key.insert((b, b_core, key_b), (conn, 1));
        let info = self.peer_info(a, b, true, attempt);
        self.hosts[a].cores[core]
            .swarm
            .peer_connected(now, key_a, info);
        self.drain(a, core);
    }

    fn new_key(&mut self, h: usize, c: usize) -> PeerKey {
        let core = &mut self.hosts[h].cores[c];
        core.next_key += 1;
        PeerKey {
            index: core.next_key,
            gen: 0,
        }
    }

    fn peer_info(&self, me: usize, them: usize, outgoing: bool, attempt: u32) -> PeerInfo {
        let ours = self.hosts[me].spec.place.clone();
        let theirs = self.hosts[them].spec.place.clone();
        PeerInfo {
            addr: self.addr(them),
            outgoing,
            attempt,
            their_place: (!theirs.is_unknown()).then_some(theirs),
            our_place: ours,
        }
    }

    /// Puts `bytes` on host `h`'s uplink now; returns when the last byte left.
    fn uplink(&mut self, h: usize, bytes: u64) -> Instant {
        let host = &mut self.hosts[h];
        let start = host.up_busy.max(self.now);
        let secs = bytes as f64 / host.spec.up_rate as f64;
        host.up_busy = start + Duration::from_secs_f64(secs);
        host.up_busy
    }

    fn transmit(&mut self, conn: usize, from_side: usize, bytes: u64, what: Wire) {
        let h = self.conns[conn].sides[from_side].host;
        let left = self.uplink(h, bytes);
        let at = left + self.conns[conn].delay;
        self.push(
            at,
            Ev::Deliver {
                conn,
                to: 1 - from_side,
                what,
            },
        );
    }

    fn close(&mut self, conn: usize, from_side: usize, reason: String) {
        if !self.conns[conn].alive {
            return;
        }
        self.conns[conn].alive = false;
        let s = self.conns[conn].sides[from_side];
        self.hosts[s.host].closes.push(reason);
        let d = self.conns[conn].delay;
        let now = self.now;
        self.push(
            now,
            Ev::Closed {
                conn,
                side: from_side,
            },
        );
        self.push(
            now + d,
            Ev::Closed {
                conn,
                side: 1 - from_side,
            },
        );
    }

    fn deliver(&mut self, conn: usize, to: usize, what: Wire) {
        if !self.conns[conn].alive {
            return;
        }
        let now = self.now;
        let side = self.conns[conn].sides[to];
        let (h, c, key) = (side.host, side.core, side.key);
        let result = match what {
            Wire::Handshake(hs) => {
                if !side.connected {
                    let from = self.conns[conn].sides[1 - to].host;
                    let info = self.peer_info(h, from, false, 0);
                    self.hosts[h].cores[c].swarm.peer_connected(now, key, info);
                    self.conns[conn].sides[to].connected = true;
                }
                self.hosts[h].cores[c].swarm.handshake(now, key, &hs)
            }
            Wire::Msg(bytes) => match Message::decode(&bytes[4..]) {
                Ok(m) => {
                    if matches!(m, Message::Choke | Message::Unchoke) {
                        let from = self.conns[conn].sides[1 - to].host;
                        let unchoked = m == Message::Unchoke;
                        self.hosts[h].chokes.push((from, unchoked, now));
                    }
                    let core = &mut self.hosts[h].cores[c];
                    core.swarm.message(now, key, &m, &mut core.bufs)
                }
                Err(e) => Err(format!("undecodable: {e}")),
            },
            Wire::Block {
                piece,
                begin,
                len,
                from,
            } => {
                if std::env::var("HARNESS_LOG").is_ok() {
                    let t = (now - self.t0).as_secs_f64();
                    self.log.push(format!(
                        "{t:.3} block {from}->{h}/{c} piece {piece} begin {begin}"
                    ));
                }
                self.block_in(h, c, key, piece, begin, len, from)
            }
        };
        if let Err(e) = result {
            self.close(conn, to, e);
        }
        self.drain(h, c);
    }

    #[allow(clippy::too_many_arguments)]
    fn block_in(
        &mut self,
        h: usize,
        c: usize,
        key: PeerKey,
        piece: u32,
        begin: u32,
        len: u32,
        from: usize,
    ) -> Result<(), String> {
        let now = self.now;
        let host = &mut self.hosts[h];
        *host.recv_from.entry(from).or_default() += u64::from(len);
        let missing = host.shared.missing();
        let endgame =
            missing <= TAIL_PIECES || host.shared.verified.count_neither(&host.shared.claimed) == 0;
        if !host.have_blocks.insert((piece, begin)) {
            if endgame {
                host.dup_blocks_in_endgame += 1;
            } else {
                host.dup_blocks_outside_endgame += 1;
            }
        }
        let core = &mut host.cores[c];
        if let Some(buf) = core.swarm.block_fragment(key, piece, begin, len) {
            if let Some(b) = core.bufs.live.get_mut(&buf) {
                assert_eq!(b.piece, piece, "a block into another piece's buffer");
                b.writers.insert(from);
            }
        }
        core.swarm
            .block_received(now, key, piece, begin, len, &mut core.bufs)
    }

    /// Sends the next queued block of host `h` (round robin over its connections) when its
    /// uplink is free.
    fn pump(&mut self, h: usize) {
        self.hosts[h].pump_scheduled = false;
        let bounded = self.hosts[h].serving.len();
        for _ in 0..bounded {
            let Some((c, key)) = self.hosts[h].serving.pop_front() else {
                return;
            };
            let Some(&(conn, side)) = self.by_key.get(&(h, c, key)) else {
                continue;
            };
            if !self.conns[conn].alive {
                continue;
            }
            let now = self.now;
            let swarm = &mut self.hosts[h].cores[c].swarm;
            let Some(&b) = swarm.uploads(key).and_then(|q| q.front()) else {
                continue;
            };
            swarm.blocks_sent(now, key, 1, u64::from(b.len));
            let more = swarm.uploads(key).is_some_and(|q| !q.is_empty());
            if more {
                self.hosts[h].serving.push_back((c, key));
            }
            self.hosts[h].uploaded += u64::from(b.len);
            self.transmit(
                conn,
                side,
                13 + u64::from(b.len),
                Wire::Block {
                    piece: b.piece,
                    begin: b.begin,
                    len: b.len,
                    from: h,
                },
            );
            let host = &mut self.hosts[h];
            let mut next = host.up_busy;
            if let Some(every) = host.spec.trickle {
                host.next_trickle = self.now + every;
                next = next.max(host.next_trickle);
            }
            if !host.serving.is_empty() {
                host.pump_scheduled = true;
                self.push(next, Ev::Pump { host: h });
            }
            self.drain(h, c);
            return;
        }
    }

    fn schedule_pump(&mut self, h: usize) {
        let host = &mut self.hosts[h];
        if host.pump_scheduled {
            return;
        }
        host.pump_scheduled = true;
        let at = host.up_busy.max(host.next_trickle).max(self.now);
        self.push(at, Ev::Pump { host: h });
    }

    /// Carries out what core `c` of host `h` asked for.
    fn drain(&mut self, h: usize, c: usize) {
        let now = self.now;
        // Bounded: the core emits a finite batch per input.
        for _ in 0..1_000_000 {
            let Some(action) = self.hosts[h].cores[c].swarm.poll_action() else {
                break;
            };
            match action {
                Action::Send { peer, msg } => {
                    let Some(&(conn, side)) = self.by_key.get(&(h, c, peer)) else {
                        continue;
                    };
                    if !self.conns[conn].alive {
                        continue;
                    }
                    if self.hosts[h].spec.mute_requests && matches!(msg, Out::Request(_)) {
                        continue;
                    }
                    if std::env::var("HARNESS_LOG").is_ok() && !matches!(msg, Out::Handshake) {
                        let t = (now - self.t0).as_secs_f64();
                        let to = self.conns[conn].sides[1 - side].host;
                        self.log.push(format!("{t:.3} {h}/{c}->{to} {msg:?}"));
                    }
                    let what = match msg {
                        Out::Handshake => {
                            Wire::Handshake(Handshake::new(self.meta.info_hash, self.hosts[h].id.0))
                        }
                        other => {
                            let mut bytes = Vec::new();
                            other.encode(
                                ringswarm_swarm::InfoHash(self.meta.info_hash),
                                self.hosts[h].id,
                                &mut bytes,
                            );
                            Wire::Msg(bytes)
                        }
                    };
                    let size = match &what {
                        Wire::Handshake(_) => 68,
                        Wire::Msg(b) => b.len() as u64,
                        Wire::Block { .. } => unreachable!(),
                    };
                    self.transmit(conn, side, size, what);
                }
                Action::Serve { peer } => {
                    let host = &mut self.hosts[h];
                    if !host.serving.contains(&(c, peer)) {
                        host.serving.push_back((c, peer));
                    }
                    self.schedule_pump(h);
                }
                Action::Hash { piece, buf } => {
                    let corrupt = self.hosts[h].cores[c]
                        .bufs
                        .live
                        .get(&buf)
                        .is_some_and(|b| b.writers.iter().any(|&w| self.hosts[w].spec.corrupt));
                    self.push(
                        now + Duration::from_micros(200),
                        Ev::Hashed {
                            host: h,
                            core: c,
                            piece,
                            buf,
                            good: !corrupt,
                        },
                    );
                }
                Action::Write { piece, buf } => {
                    let info = self.hosts[h].cores[c].bufs.live.remove(&buf);
                    let bad = info.is_some_and(|b| {
                        b.piece != piece || b.writers.iter().any(|&w| self.hosts[w].spec.corrupt)
                    });
                    let host = &mut self.hosts[h];
                    host.written += 1;
                    host.written_bad += u32::from(bad);
                    self.push(
                        now + Duration::from_micros(200),
                        Ev::Written {
                            host: h,
                            core: c,
                            piece,
                        },
                    );
                }
                Action::Discard { buf } => {
                    self.hosts[h].cores[c].bufs.live.remove(&buf);
                }
                Action::Close { peer, reason } => {
                    if let Some(&(conn, side)) = self.by_key.get(&(h, c, peer)) {
                        self.close(conn, side, reason);
                    }
                }
                Action::Dial { addr, attempt } => {
                    self.push(
                        now + Duration::from_micros(100),
                        Ev::Connect {
                            host: h,
                            core: c,
                            addr,
                            attempt,
                        },
                    );
                }
                Action::Broadcast { piece } => {
                    self.push(
                        now,
                        Ev::Broadcast {
                            host: h,
                            from: c,
                            piece,
                        },
                    );
                }
                Action::BroadcastFetching { word } => {
                    self.push(
                        now,
                        Ev::BroadcastFetching {
                            host: h,
                            from: c,
                            word,
                        },
                    );
                }
            }
        }
        let host = &mut self.hosts[h];
        if host.done_at.is_none() && host.shared.all_verified() {
            host.done_at = Some(now);
        }
        let core = &mut host.cores[c];
        if let Some(t) = core.swarm.poll_timeout() {
            if core.timer_at.is_none_or(|at| t < at) {
                core.timer_at = Some(t);
                let at = t.max(now);
                self.push(at, Ev::Timer { host: h, core: c });
            }
        }
    }
}

/// Payload blocks in a piece of `piece_len` bytes.
pub fn blocks_per_piece(piece_len: u32) -> u32 {
    piece_len.div_ceil(BLOCK_SIZE)
}
