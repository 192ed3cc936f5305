//! Property tests: random sequences of inputs to one core (peers connecting with random
//! pieces, chokes and unchokes, rejects, blocks, hashes good and bad, writes, closes,
//! ticks, and requests from peers), with a model of what went over the wire, checked after
//! every step:
//! - a block is requested from a peer only if the peer announced the piece, and not twice
//!   from the same peer while the first request stands;
//! - a request stands until the block comes, the peer chokes or rejects it, we cancel it,
//!   or the connection closes; a standing request is always for a piece in progress here;
//!   a CANCEL withdraws a standing request; a peer is closed as stalled only with requests
//!   standing;
//!   and at the end, with a seed joining, every piece is verified (nothing was lost);
//! - each piece is in exactly one state (missing, assembling, hashing, writing, verified);
//! - the unchoked peers never exceed the slots (and the shared count agrees);
//! - nothing is queued for upload to a peer we choke.

// The virtual clock starts from a real instant (see swarm/clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use ringswarm_proto::bitfield::Bitfield;
use ringswarm_proto::metainfo::{FileEntry, Info, Metainfo};
use ringswarm_proto::wire::{Handshake, Message, BLOCK_SIZE};
use ringswarm_swarm::locality::NamedPlace;
use ringswarm_swarm::{
    Action, BlockRef, BufId, Config, Out, PeerId, PeerInfo, PeerKey, PieceBuffers, Shared, Swarm,
};

const PIECES: u32 = 6;
const BPP: u32 = 3;
const PIECE: u32 = BPP * BLOCK_SIZE;
const SLOTS: u32 = 2;
const PEERS: u8 = 4;

#[derive(Clone, Debug)]
enum Op {
    Connect {
        slot: u8,
        bits: u8,
        fast: bool,
    },
    Unchoke {
        slot: u8,
    },
    Choke {
        slot: u8,
    },
    Have {
        slot: u8,
        piece: u8,
    },
    Reject {
        slot: u8,
        pick: u8,
    },
    Block {
        slot: u8,
        pick: u8,
    },
    Hashed {
        pick: u8,
        good: bool,
    },
    Written {
        pick: u8,
    },
    Close {
        slot: u8,
    },
    Tick {
        ms: u16,
    },
    Interested {
        slot: u8,
        yes: bool,
    },
    Request {
        slot: u8,
        piece: u8,
        block: u8,
    },
    /// The driver sent the front block of the peer's upload queue.
    Sent {
        slot: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let slot = 0..PEERS;
    prop_oneof![
        2 => (slot.clone(), any::<u8>(), any::<bool>())
            .prop_map(|(slot, bits, fast)| Op::Connect { slot, bits, fast }),
        3 => slot.clone().prop_map(|slot| Op::Unchoke { slot }),
        1 => slot.clone().prop_map(|slot| Op::Choke { slot }),
        1 => (slot.clone(), 0..PIECES as u8).prop_map(|(slot, piece)| Op::Have { slot, piece }),
        1 => (slot.clone(), any::<u8>()).prop_map(|(slot, pick)| Op::Reject { slot, pick }),
        12 => (slot.clone(), any::<u8>()).prop_map(|(slot, pick)| Op::Block { slot, pick }),
        4 => (any::<u8>(), prop::bool::weighted(0.7))
            .prop_map(|(pick, good)| Op::Hashed { pick, good }),
        2 => any::<u8>().prop_map(|pick| Op::Written { pick }),
        1 => slot.clone().prop_map(|slot| Op::Close { slot }),
        3 => prop_oneof![4 => 0u16..1000, 1 => 1000u16..25_000].prop_map(|ms| Op::Tick { ms }),
        2 => (slot.clone(), prop::bool::weighted(0.7)).prop_map(|(slot, yes)| Op::Interested { slot, yes }),
        4 => (slot, 0..PIECES as u8, 0..BPP as u8)
            .prop_map(|(slot, piece, block)| Op::Request { slot, piece, block }),
        2 => (0..PEERS).prop_map(|slot| Op::Sent { slot }),
    ]
}

/// Piece buffers: at most `cap` live at once; each must end written or discarded.
struct Bufs {
    next: u32,
    cap: usize,
    live: HashSet<BufId>,
}

impl PieceBuffers for Bufs {
    fn reserve(&mut self, _piece: u32) -> Option<BufId> {
        if self.live.len() >= self.cap {
            return None;
        }
        self.next += 1;
        self.live.insert(BufId(self.next));
        Some(BufId(self.next))
    }
}

/// What the wire saw of one peer.
struct PeerModel {
    key: PeerKey,
    has: Bitfield,
    fast: bool,
    /// Requests we sent it that stand.
    out: HashSet<BlockRef>,
    /// We unchoked it (by our CHOKE / UNCHOKE messages).
    unchoked: bool,
}

struct World {
    sw: Swarm,
    shared: Arc<Shared>,
    bufs: Bufs,
    now: Instant,
    peers: HashMap<u8, PeerModel>,
    next_index: u32,
    next_ip: u32,
    hashing: Vec<(u32, BufId)>,
    writing: Vec<u32>,
}

fn meta() -> Arc<Metainfo> {
    let total = u64::from(PIECES) * u64::from(PIECE);
    Arc::new(Metainfo::from_info(
        Info {
            name: "p".into(),
            piece_length: u64::from(PIECE),
            pieces: (0..PIECES).map(|i| [i as u8; 20]).collect(),
            files: vec![FileEntry {
                path: vec![],
                length: total,
                offset: 0,
                pad: false,
            }],
            multi_file: false,
            total_length: total,
            private: false,
        },
        vec![],
    ))
}

impl World {
    fn new(verified: u8, cap: usize) -> World {
        let now = Instant::now();
        let shared = Arc::new(Shared::new(PIECES, PIECE, PIECE, now));
        for p in 0..PIECES {
            // Never everything: there is something to download.
            if verified & (1 << p) != 0 && p != 0 {
                shared.mark_verified(p);
            }
        }
        let mut cfg = Config::new(PeerId([0xEE; 20]));
        cfg.upload_slots = SLOTS;
        World {
            sw: Swarm::new(cfg, meta(), shared.clone()),
            shared,
            bufs: Bufs {
                next: 0,
                cap,
                live: HashSet::new(),
            },
            now,
            peers: HashMap::new(),
            next_index: 0,
            next_ip: 1,
            hashing: Vec::new(),
            writing: Vec::new(),
        }
    }

    fn slot_of(&self, key: PeerKey) -> Option<u8> {
        self.peers
            .iter()
            .find(|(_, p)| p.key == key)
            .map(|(&s, _)| s)
    }

    /// Carries out the core's actions, checking each against the model.
    fn drain(&mut self) -> Result<(), TestCaseError> {
        for _ in 0..100_000 {
            let Some(a) = self.sw.poll_action() else {
                return Ok(());
            };
            match a {
                Action::Send { peer, msg } => {
                    let Some(slot) = self.slot_of(peer) else {
                        prop_assert!(false, "a message to an unknown peer: {msg:?}");
                        unreachable!()
                    };
                    let m = self.peers.get_mut(&slot).unwrap();
                    match msg {
                        Out::Request(b) => {
                            prop_assert!(
                                m.has.get(b.piece),
                                "requested {b:?} of a peer without it"
                            );
                            prop_assert!(
                                !self.shared.verified.get(b.piece),
                                "requested a verified piece {b:?}"
                            );
                            prop_assert!(m.out.insert(b), "requested {b:?} twice of one peer");
                        }
                        Out::Cancel(b) => {
                            prop_assert!(m.out.remove(&b), "a CANCEL of {:?}, not standing", b);
                        }
                        Out::Unchoke => {
                            prop_assert!(!m.unchoked, "unchoked twice");
                            m.unchoked = true;
                        }
                        Out::Choke => {
                            prop_assert!(m.unchoked, "choked a choked peer");
                            m.unchoked = false;
                        }
                        _ => {}
                    }
                }
                Action::Close { peer, reason } => {
                    if let Some(slot) = self.slot_of(peer) {
                        prop_assert!(
                            !reason.starts_with("stalled") || !self.peers[&slot].out.is_empty(),
                            "closed as stalled with no request standing"
                        );
                        self.close(slot);
                    }
                }
                Action::Hash { piece, buf } => {
                    prop_assert!(self.bufs.live.contains(&buf), "hash of a dead buffer");
                    prop_assert!(!self.hashing.iter().any(|h| h.0 == piece), "hashed twice");
                    self.hashing.push((piece, buf));
                }
                Action::Write { piece, buf } => {
                    prop_assert!(self.bufs.live.remove(&buf), "write of a dead buffer");
                    prop_assert!(!self.writing.contains(&piece), "written twice");
                    self.writing.push(piece);
                }
                Action::Discard { buf } => {
                    prop_assert!(self.bufs.live.remove(&buf), "discard of a dead buffer");
                }
                Action::Serve { .. }
                | Action::Dial { .. }
                | Action::Broadcast { .. }
                | Action::BroadcastFetching { .. } => {}
            }
        }
        prop_assert!(false, "the core never stopped acting");
        Ok(())
    }

    fn close(&mut self, slot: u8) {
        if let Some(m) = self.peers.remove(&slot) {
            self.sw.peer_closed(self.now, m.key);
        }
    }

    fn message(&mut self, slot: u8, msg: Message<'_>) {
        let Some(key) = self.peers.get(&slot).map(|m| m.key) else {
            return;
        };
        if self
            .sw
            .message(self.now, key, &msg, &mut self.bufs)
            .is_err()
        {
            self.close(slot);
        }
    }

    fn connect(&mut self, slot: u8, bits: Bitfield, fast: bool) {
        if self.peers.contains_key(&slot) {
            return;
        }
        self.next_index += 1;
        self.next_ip += 1;
        let key = PeerKey {
            index: self.next_index,
            gen: 0,
        };
        let ip = IpAddr::V4(Ipv4Addr::new(
            10,
            1,
            (self.next_ip >> 8) as u8,
            self.next_ip as u8,
        ));
        let info = PeerInfo {
            addr: SocketAddr::new(ip, 6881),
            outgoing: false,
            attempt: 0,
            our_place: NamedPlace::default(),
            their_place: None,
        };
        self.sw.peer_connected(self.now, key, info);
        let mut id = [0u8; 20];
        id[..4].copy_from_slice(&self.next_index.to_be_bytes());
        let mut hs = Handshake::new(self.sw.meta().info_hash, id);
        if !fast {
            hs.reserved[7] &= !0x04;
        }
        if self.sw.handshake(self.now, key, &hs).is_err() {
            self.sw.peer_closed(self.now, key);
            return;
        }
        self.peers.insert(
            slot,
            PeerModel {
                key,
                has: Bitfield::new(PIECES),
                fast,
                out: HashSet::new(),
                unchoked: false,
            },
        );
        let full = bits.is_complete();
        let empty = bits.count_ones() == 0;
        self.peers.get_mut(&slot).unwrap().has = bits.clone();
        if fast && full {
            self.message(slot, Message::HaveAll);
        } else if fast && empty {
            self.message(slot, Message::HaveNone);
        } else if !empty {
            self.message(
                slot,
                Message::Bitfield {
                    bits: bits.as_bytes(),
                },
            );
        }
    }

    fn apply(&mut self, op: &Op) {
        self.now += Duration::from_millis(1);
        match *op {
            Op::Connect { slot, bits, fast } => {
                let mut b = Bitfield::new(PIECES);
                for p in 0..PIECES {
                    if bits & (1 << p) != 0 {
                        b.set(p);
                    }
                }
                self.connect(slot, b, fast);
            }
            Op::Unchoke { slot } => self.message(slot, Message::Unchoke),
            Op::Choke { slot } => {
                if let Some(m) = self.peers.get_mut(&slot) {
                    m.out.clear();
                }
                self.message(slot, Message::Choke);
            }
            Op::Have { slot, piece } => {
                if let Some(m) = self.peers.get_mut(&slot) {
                    m.has.set(u32::from(piece));
                }
                self.message(
                    slot,
                    Message::Have {
                        index: u32::from(piece),
                    },
                );
            }
            Op::Reject { slot, pick } => {
                let Some(m) = self.peers.get_mut(&slot) else {
                    return;
                };
                let Some(b) = nth(&m.out, pick) else { return };
                if !m.fast {
                    return;
                }
                m.out.remove(&b);
                self.message(
                    slot,
                    Message::Reject {
                        index: b.piece,
                        begin: b.begin,
                        length: b.len,
                    },
                );
            }
            Op::Block { slot, pick } => {
                let Some(m) = self.peers.get_mut(&slot) else {
                    return;
                };
                let Some(b) = nth(&m.out, pick) else { return };
                m.out.remove(&b);
                let key = m.key;
                self.sw.block_fragment(key, b.piece, b.begin, b.len);
                if self
                    .sw
                    .block_received(self.now, key, b.piece, b.begin, b.len, &mut self.bufs)
                    .is_err()
                {
                    self.close(slot);
                }
            }
            Op::Hashed { pick, good } => {
                if self.hashing.is_empty() {
                    return;
                }
                let (piece, buf) = self.hashing.remove(usize::from(pick) % self.hashing.len());
                self.sw
                    .piece_hashed(self.now, piece, buf, good, &mut self.bufs);
            }
            Op::Written { pick } => {
                if self.writing.is_empty() {
                    return;
                }
                let piece = self.writing.remove(usize::from(pick) % self.writing.len());
                self.sw.piece_written(piece, true);
            }
            Op::Close { slot } => self.close(slot),
            Op::Tick { ms } => {
                self.now += Duration::from_millis(u64::from(ms));
                self.sw.handle_timeout(self.now, &mut self.bufs);
            }
            Op::Interested { slot, yes } => self.message(
                slot,
                if yes {
                    Message::Interested
                } else {
                    Message::NotInterested
                },
            ),
            Op::Sent { slot } => {
                if let Some(m) = self.peers.get(&slot) {
                    self.sw
                        .blocks_sent(self.now, m.key, 1, u64::from(BLOCK_SIZE));
                }
            }
            Op::Request { slot, piece, block } => self.message(
                slot,
                Message::Request {
                    index: u32::from(piece),
                    begin: u32::from(block) * BLOCK_SIZE,
                    length: BLOCK_SIZE,
                },
            ),
        }
    }

    /// The invariants that hold between any two inputs.
    fn check(&self) -> Result<(), TestCaseError> {
        let mut unchoked = 0;
        for (slot, m) in &self.peers {
            if m.unchoked {
                unchoked += 1;
            } else {
                let q = self.sw.uploads(m.key).map_or(0, |q| q.len());
                prop_assert_eq!(q, 0, "uploads queued for choked peer {}", slot);
            }
            for b in &m.out {
                prop_assert!(
                    self.sw.in_progress(b.piece)
                        && !self.shared.verified.get(b.piece)
                        && !self.hashing.iter().any(|h| h.0 == b.piece)
                        && !self.writing.contains(&b.piece),
                    "a request stands for {:?}, a piece not being assembled",
                    b
                );
            }
        }
        prop_assert!(
            unchoked <= SLOTS,
            "{} unchoked of {} slots",
            unchoked,
            SLOTS
        );
        prop_assert_eq!(
            self.shared.counters.unchoked.load(Ordering::Relaxed),
            unchoked
        );
        for p in 0..PIECES {
            let verified = self.shared.verified.get(p);
            let hashing = self.hashing.iter().filter(|h| h.0 == p).count();
            let writing = self.writing.iter().filter(|&&w| w == p).count();
            let states = usize::from(verified) + hashing + writing;
            prop_assert!(states <= 1, "piece {} is in {} states", p, states);
            if verified {
                prop_assert!(!self.sw.in_progress(p), "verified piece {} in progress", p);
            }
            if hashing + writing > 0 {
                prop_assert!(self.sw.in_progress(p));
            }
        }
        Ok(())
    }

    /// A seed joins and everyone delivers what is asked: every piece must get verified.
    fn finish(&mut self) -> Result<(), TestCaseError> {
        let slot = (PEERS..=u8::MAX)
            .find(|s| !self.peers.contains_key(s))
            .unwrap();
        self.connect(slot, Bitfield::full(PIECES), true);
        self.message(slot, Message::Unchoke);
        self.drain()?;
        for _ in 0..400 {
            if self.shared.all_verified() && self.writing.is_empty() && self.hashing.is_empty() {
                prop_assert!(
                    self.bufs.live.is_empty(),
                    "buffers leaked: {:?}",
                    self.bufs.live
                );
                return Ok(());
            }
            let slots: Vec<u8> = self.peers.keys().copied().collect();
            for s in slots {
                for _ in 0..PIECES * BPP * 4 {
                    if self.peers.get(&s).is_none_or(|m| m.out.is_empty()) {
                        break;
                    }
                    self.apply(&Op::Block { slot: s, pick: 0 });
                    self.drain()?;
                }
            }
            for _ in 0..self.hashing.len() {
                self.apply(&Op::Hashed {
                    pick: 0,
                    good: true,
                });
                self.drain()?;
            }
            for _ in 0..self.writing.len() {
                self.apply(&Op::Written { pick: 0 });
                self.drain()?;
            }
            self.check()?;
            self.apply(&Op::Tick { ms: 100 });
            self.drain()?;
            // Peers that hold pieces we lack unchoke us; the seed keeps us unchoked.
            let slots: Vec<u8> = self.peers.keys().copied().collect();
            for s in slots {
                self.message(s, Message::Unchoke);
            }
            self.drain()?;
            if !self.peers.contains_key(&slot) {
                // The seed was dropped (a stall on a long tick): another one comes.
                self.connect(slot, Bitfield::full(PIECES), true);
                self.message(slot, Message::Unchoke);
                self.drain()?;
            }
        }
        let missing: Vec<u32> = (0..PIECES)
            .filter(|&p| !self.shared.verified.get(p))
            .collect();
        prop_assert!(false, "pieces {:?} never completed", missing);
        Ok(())
    }
}

/// The `pick`-th request (in a stable order) of a set.
fn nth(set: &HashSet<BlockRef>, pick: u8) -> Option<BlockRef> {
    let mut v: Vec<BlockRef> = set.iter().copied().collect();
    v.sort_by_key(|b| (b.piece, b.begin));
    (!v.is_empty()).then(|| v[usize::from(pick) % v.len()])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn the_core_keeps_its_invariants(
        verified in any::<u8>(),
        cap in prop_oneof![1usize..4, Just(usize::MAX)],
        ops in prop::collection::vec(op(), 1..150),
    ) {
        let mut w = World::new(verified, cap);
        w.drain()?;
        for op in &ops {
            w.apply(op);
            w.drain()?;
            w.check()?;
        }
        w.finish()?;
    }
}
