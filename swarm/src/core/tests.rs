//! Unit tests of the core's decisions on a virtual clock: `t0` is taken once, every input
//! carries `t0 + something`. Each test name says what it proves.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringswarm_proto::bitfield::Bitfield;
use ringswarm_proto::extension::{self, ExtHandshake, MetadataMsg};
use ringswarm_proto::metainfo::{FileEntry, Info, Metainfo};
use ringswarm_proto::wire::{Handshake, Message, BLOCK_SIZE, MAX_BLOCK_SIZE};

use super::timers::{REFUSAL_MEMORY, STALL_CEILING, STALL_FLOOR};
use super::*;
use crate::limits::RateLimiter;
use crate::locality::NamedPlace;
use crate::rate::{RateMeter, INITIAL_IN_FLIGHT, REQUEST_REFILL_BATCH};

const OUR_ID: PeerId = PeerId([0x80; 20]);
/// Blocks per piece in these tests.
const BPP: u32 = 4;
const PIECE: u32 = BPP * BLOCK_SIZE;
/// Requests before the first rate sample, at BEP 3's block length.
const INITIAL_REQUEST_DEPTH: u32 = (INITIAL_IN_FLIGHT / BLOCK_SIZE as u64) as u32;

struct Bufs {
    next: u32,
    full: bool,
}

impl PieceBuffers for Bufs {
    fn reserve(&mut self, _piece: u32) -> Option<BufId> {
        if self.full {
            return None;
        }
        self.next += 1;
        Some(BufId(self.next))
    }
}

fn meta(pieces: u32) -> Arc<Metainfo> {
    let total = u64::from(pieces) * u64::from(PIECE);
    let info = Info {
        name: "t".into(),
        piece_length: u64::from(PIECE),
        pieces: (0..pieces).map(|i| [i as u8; 20]).collect(),
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

fn ip(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, (i >> 8) as u8, i as u8))
}

fn addr(i: u32) -> SocketAddr {
    SocketAddr::new(ip(i), 6881)
}

fn pid(i: u32) -> PeerId {
    PeerId([i as u8; 20])
}

fn blk(piece: u32, b: u32) -> BlockRef {
    BlockRef {
        piece,
        begin: b * BLOCK_SIZE,
        len: BLOCK_SIZE,
    }
}

fn place(dc: &str, rack: &str) -> NamedPlace {
    NamedPlace {
        dc: Some(dc.into()),
        rack: Some(rack.into()),
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A swarm of `pieces` pieces of [`BPP`] blocks, its shared state and buffers, and `t0`.
struct T {
    sw: Swarm,
    shared: Arc<Shared>,
    bufs: Bufs,
    t0: Instant,
}

impl T {
    fn new(pieces: u32) -> T {
        T::with(pieces, |_| {})
    }

    fn with(pieces: u32, setup: impl FnOnce(&mut Config)) -> T {
        let t0 = Instant::now();
        let m = meta(pieces);
        let shared = Arc::new(Shared::new(pieces, PIECE, PIECE, t0));
        let mut cfg = Config::new(OUR_ID);
        setup(&mut cfg);
        T {
            sw: Swarm::new(cfg, m, shared.clone()),
            shared,
            bufs: Bufs {
                next: 0,
                full: false,
            },
            t0,
        }
    }

    /// Another core of the same host (same shared state).
    fn second_core(&self) -> T {
        T {
            sw: Swarm::new(
                Config::new(OUR_ID),
                self.sw.meta().clone(),
                self.shared.clone(),
            ),
            shared: self.shared.clone(),
            bufs: Bufs {
                next: 1000,
                full: false,
            },
            t0: self.t0,
        }
    }

    fn at(&self, d: Duration) -> Instant {
        self.t0 + d
    }

    fn verify(&self, pieces: impl IntoIterator<Item = u32>) {
        for p in pieces {
            self.shared.mark_verified(p);
        }
    }

    fn verify_all(&self) {
        self.verify(0..self.shared.piece_count());
    }

    fn acts(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.sw.poll_action()).collect()
    }

    fn info(i: u32, outgoing: bool) -> PeerInfo {
        PeerInfo {
            addr: addr(i),
            outgoing,
            attempt: 1,
            our_place: NamedPlace::default(),
            their_place: None,
        }
    }

    /// Connects peer `i` (incoming, fast and extensions) and takes its handshake.
    fn connect(&mut self, i: u32) -> PeerKey {
        self.connect_as(i, T::info(i, false), true, self.t0)
    }

    fn connect_as(&mut self, i: u32, info: PeerInfo, fast: bool, now: Instant) -> PeerKey {
        let key = PeerKey { index: i, gen: 0 };
        self.sw.peer_connected(now, key, info);
        let mut hs = Handshake::new(self.sw.meta.info_hash, pid(i).0);
        if !fast {
            hs.reserved[7] &= !0x04;
        }
        self.sw.handshake(now, key, &hs).expect("handshake");
        self.acts();
        key
    }

    fn msg(&mut self, now: Instant, key: PeerKey, m: Message<'_>) -> Result<(), String> {
        self.sw.message(now, key, &m, &mut self.bufs)
    }

    /// Peer `i` connects holding every piece and unchokes us.
    fn seed(&mut self, i: u32) -> PeerKey {
        let k = self.connect(i);
        self.msg(self.t0, k, Message::HaveAll).unwrap();
        self.msg(self.t0, k, Message::Unchoke).unwrap();
        k
    }

    /// Peer `i` holds every piece, has proven itself, and unchokes us.
    fn proven_seed(&mut self, i: u32) -> PeerKey {
        let k = self.connect(i);
        self.msg(self.t0, k, Message::HaveAll).unwrap();
        self.prove(k);
        self.msg(self.t0, k, Message::Unchoke).unwrap();
        k
    }

    /// Peer `i` holds only `piece` and unchokes us.
    fn holder(&mut self, i: u32, piece: u32) -> PeerKey {
        let k = self.connect(i);
        self.msg(self.t0, k, Message::Have { index: piece })
            .unwrap();
        self.msg(self.t0, k, Message::Unchoke).unwrap();
        k
    }

    fn prove(&mut self, key: PeerKey) {
        self.sw.peer_mut(key).unwrap().proven = true;
    }

    /// Makes `key` measure `bytes_per_sec`.
    fn set_rate(&mut self, key: PeerKey, bytes_per_sec: u64, now: Instant) {
        let mut m = RateMeter::new(now - secs(1), BLOCK_SIZE);
        m.add(bytes_per_sec);
        m.sample(now, 1);
        self.sw.peer_mut(key).unwrap().meter = m;
    }

    fn deliver(&mut self, now: Instant, key: PeerKey, b: BlockRef) -> Option<BufId> {
        let buf = self.sw.block_fragment(key, b.piece, b.begin, b.len);
        self.sw
            .block_received(now, key, b.piece, b.begin, b.len, &mut self.bufs)
            .unwrap();
        buf
    }

    fn tick(&mut self, now: Instant) {
        self.sw.handle_timeout(now, &mut self.bufs);
    }

    /// An interested peer `i` with nothing, as a seed sees it.
    fn leecher(&mut self, i: u32) -> PeerKey {
        let k = self.connect(i);
        self.msg(self.t0, k, Message::HaveNone).unwrap();
        self.msg(self.t0, k, Message::Interested).unwrap();
        k
    }

    fn request(&mut self, now: Instant, key: PeerKey, b: BlockRef) -> Result<(), String> {
        self.msg(
            now,
            key,
            Message::Request {
                index: b.piece,
                begin: b.begin,
                length: b.len,
            },
        )
    }
}

fn sent(acts: &[Action], key: PeerKey) -> Vec<Out> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Send { peer, msg } if *peer == key => Some(msg.clone()),
            _ => None,
        })
        .collect()
}

fn requests(acts: &[Action], key: PeerKey) -> Vec<BlockRef> {
    sent(acts, key)
        .into_iter()
        .filter_map(|m| match m {
            Out::Request(b) => Some(b),
            _ => None,
        })
        .collect()
}

fn cancels(acts: &[Action], key: PeerKey) -> Vec<BlockRef> {
    sent(acts, key)
        .into_iter()
        .filter_map(|m| match m {
            Out::Cancel(b) => Some(b),
            _ => None,
        })
        .collect()
}

fn pieces_of(reqs: &[BlockRef]) -> Vec<u32> {
    let mut v: Vec<u32> = reqs.iter().map(|b| b.piece).collect();
    v.sort_unstable();
    v.dedup();
    v
}

fn closed(acts: &[Action], key: PeerKey) -> bool {
    acts.iter()
        .any(|a| matches!(a, Action::Close { peer, .. } if *peer == key))
}

fn dials(acts: &[Action]) -> Vec<(SocketAddr, u32)> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Dial { addr, attempt } => Some((*addr, *attempt)),
            _ => None,
        })
        .collect()
}

// ---- handshake ---------------------------------------------------------------------------

#[test]
fn a_handshake_with_our_own_peer_id_is_refused() {
    let mut t = T::new(4);
    let k = PeerKey { index: 1, gen: 0 };
    t.sw.peer_connected(t.t0, k, T::info(1, true));
    let hs = Handshake::new(t.sw.meta.info_hash, OUR_ID.0);
    assert!(t.sw.handshake(t.t0, k, &hs).is_err());
    assert_eq!(t.shared.counters.connected.load(Ordering::Relaxed), 0);
}

#[test]
fn a_handshake_for_another_torrent_is_refused() {
    let mut t = T::new(4);
    let k = PeerKey { index: 1, gen: 0 };
    t.sw.peer_connected(t.t0, k, T::info(1, false));
    let hs = Handshake::new([0xAB; 20], pid(1).0);
    let err = t.sw.handshake(t.t0, k, &hs).unwrap_err();
    assert!(err.contains("another torrent"), "{err}");
}

#[test]
fn a_second_connection_to_the_same_peer_id_is_refused_even_on_another_core() {
    let mut t = T::new(4);
    let mut other = t.second_core();
    t.connect(1);
    let k = PeerKey { index: 2, gen: 0 };
    other.sw.peer_connected(t.t0, k, T::info(2, false));
    let hs = Handshake::new(t.sw.meta.info_hash, pid(1).0);
    let err = other.sw.handshake(t.t0, k, &hs).unwrap_err();
    assert!(err.contains("already connected"), "{err}");
}

#[test]
fn a_peer_id_is_free_again_once_its_connection_closed() {
    let mut t = T::new(4);
    let k = t.connect(1);
    t.sw.peer_closed(t.t0, k);
    let k2 = PeerKey { index: 2, gen: 0 };
    t.sw.peer_connected(t.t0, k2, T::info(2, false));
    let hs = Handshake::new(t.sw.meta.info_hash, pid(1).0);
    assert!(t.sw.handshake(t.t0, k2, &hs).is_ok());
}

#[test]
fn a_banned_address_is_refused_at_the_handshake() {
    let mut t = T::new(4);
    t.shared.peers.lock().unwrap().banned.ban(ip(1), t.t0);
    let k = PeerKey { index: 1, gen: 0 };
    t.sw.peer_connected(t.t0, k, T::info(1, false));
    let hs = Handshake::new(t.sw.meta.info_hash, pid(1).0);
    let err = t.sw.handshake(t.t0, k, &hs).unwrap_err();
    assert!(err.contains("banned"), "{err}");
}

#[test]
fn an_incoming_peer_is_answered_with_handshake_ext_handshake_and_have_none() {
    let mut t = T::new(4);
    let k = PeerKey { index: 1, gen: 0 };
    t.sw.peer_connected(t.t0, k, T::info(1, false));
    assert!(t.acts().is_empty(), "an incoming peer speaks first");
    let hs = Handshake::new(t.sw.meta.info_hash, pid(1).0);
    t.sw.handshake(t.t0, k, &hs).unwrap();
    let out = sent(&t.acts(), k);
    assert_eq!(out.len(), 3, "{out:?}");
    assert_eq!(out[0], Out::Handshake);
    let Out::ExtHandshake(ext) = &out[1] else {
        panic!("{out:?}")
    };
    assert_eq!(
        ext.id_of("ut_metadata"),
        Some(extension::OUR_UT_METADATA_ID)
    );
    assert_eq!(ext.metadata_size, Some(t.sw.meta.info_bytes.len() as u64));
    assert_eq!(out[2], Out::HaveNone);
}

#[test]
fn a_seed_answers_have_all_and_a_partial_peer_a_bitfield() {
    let mut t = T::new(4);
    t.verify_all();
    let k = PeerKey { index: 1, gen: 0 };
    t.sw.peer_connected(t.t0, k, T::info(1, false));
    let hs = Handshake::new(t.sw.meta.info_hash, pid(1).0);
    t.sw.handshake(t.t0, k, &hs).unwrap();
    assert_eq!(sent(&t.acts(), k).last(), Some(&Out::HaveAll));

    let mut t = T::new(4);
    t.verify([1, 3]);
    let k = PeerKey { index: 1, gen: 0 };
    t.sw.peer_connected(t.t0, k, T::info(1, false));
    t.sw.handshake(t.t0, k, &hs_for(&t, 1)).unwrap();
    let Some(Out::Bitfield(bits)) = sent(&t.acts(), k).last().cloned() else {
        panic!()
    };
    assert_eq!(bits.ones().collect::<Vec<_>>(), vec![1, 3]);
}

fn hs_for(t: &T, i: u32) -> Handshake {
    Handshake::new(t.sw.meta.info_hash, pid(i).0)
}

#[test]
fn without_the_fast_extension_an_empty_peer_says_nothing_and_a_seed_sends_a_bitfield() {
    let mut t = T::new(4);
    let k = PeerKey { index: 1, gen: 0 };
    t.sw.peer_connected(t.t0, k, T::info(1, false));
    let mut hs = hs_for(&t, 1);
    hs.reserved = [0; 8];
    t.sw.handshake(t.t0, k, &hs).unwrap();
    assert_eq!(sent(&t.acts(), k), vec![Out::Handshake]);

    let mut t = T::new(4);
    t.verify_all();
    t.sw.peer_connected(t.t0, k, T::info(1, false));
    t.sw.handshake(t.t0, k, &hs).unwrap();
    let out = sent(&t.acts(), k);
    assert!(matches!(out.as_slice(), [Out::Handshake, Out::Bitfield(b)] if b.is_complete()));
}

#[test]
fn an_outgoing_peer_gets_our_handshake_on_connect_and_not_again() {
    let mut t = T::new(4);
    let k = PeerKey { index: 1, gen: 0 };
    t.sw.peer_connected(t.t0, k, T::info(1, true));
    assert_eq!(sent(&t.acts(), k), vec![Out::Handshake]);
    t.sw.handshake(t.t0, k, &hs_for(&t, 1)).unwrap();
    let out = sent(&t.acts(), k);
    assert!(!out.contains(&Out::Handshake), "{out:?}");
}

#[test]
fn a_late_bitfield_after_have_none_counts_as_haves() {
    // aria2 opens with HAVE NONE and sends its BITFIELD once it has pieces.
    let mut t = T::new(4);
    let k = t.connect_as(1, T::info(1, true), true, t.t0);
    t.msg(t.t0, k, Message::HaveNone).unwrap();
    t.acts();
    t.msg(
        t.t0,
        k,
        Message::Bitfield {
            bits: &[0b0100_0000],
        },
    )
    .unwrap();
    assert!(sent(&t.acts(), k).contains(&Out::Interested));
    assert_eq!(t.shared.availability[1].load(Ordering::Relaxed), 1);
    // A second late BITFIELD adds only what is new; a cleared bit is not taken back.
    t.msg(
        t.t0,
        k,
        Message::Bitfield {
            bits: &[0b0011_0000],
        },
    )
    .unwrap();
    let counts: Vec<u32> = (0..4)
        .map(|i| t.shared.availability[i].load(Ordering::Relaxed))
        .collect();
    assert_eq!(counts, vec![0, 1, 1, 1]);
    t.msg(t.t0, k, Message::HaveAll).unwrap();
    assert_eq!(t.shared.availability[0].load(Ordering::Relaxed), 1);
    t.msg(t.t0, k, Message::HaveNone).unwrap();
    assert_eq!(t.shared.availability[3].load(Ordering::Relaxed), 1);
}

#[test]
fn a_late_bitfield_starts_no_overdue_clock_and_a_late_whole_set_is_a_seed() {
    let mut t = T::new(4);
    let place = |rack: &str| NamedPlace {
        dc: Some("d".into()),
        rack: Some(rack.into()),
    };
    let outside = |i| PeerInfo {
        our_place: place("a"),
        their_place: Some(place("b")),
        ..T::info(i, true)
    };
    let k = t.connect_as(1, outside(1), true, t.t0);
    assert_ne!(t.sw.peer(k).unwrap().locality, Locality::Rack);
    t.msg(t.t0, k, Message::HaveNone).unwrap();
    t.msg(
        t.t0,
        k,
        Message::Bitfield {
            bits: &[0b1000_0000],
        },
    )
    .unwrap();
    let clocks = |t: &T| -> Vec<u64> {
        (0..4)
            .map(|i| t.shared.seen_outside[i].load(Ordering::Relaxed))
            .collect()
    };
    // As a first BITFIELD: a whole field at once must not make every piece overdue later.
    assert_eq!(clocks(&t), vec![0; 4]);
    t.msg(t.t0, k, Message::Have { index: 1 }).unwrap();
    assert_ne!(clocks(&t)[1], 0, "a HAVE starts the clock");
    assert!(!t.sw.peer(k).unwrap().opened_complete);
    // The rest at once: a seed (or a liar), not a receiver we completed.
    t.msg(t.t0, k, Message::HaveAll).unwrap();
    assert!(t.sw.peer(k).unwrap().opened_complete);
    assert_eq!(clocks(&t)[2], 0);

    // One last piece in a late BITFIELD is a receiver's news, like a HAVE.
    let j = t.connect_as(2, outside(2), true, t.t0);
    t.msg(
        t.t0,
        j,
        Message::Bitfield {
            bits: &[0b1110_0000],
        },
    )
    .unwrap();
    t.msg(
        t.t0,
        j,
        Message::Bitfield {
            bits: &[0b1111_0000],
        },
    )
    .unwrap();
    assert!(!t.sw.peer(j).unwrap().opened_complete);
}

#[test]
fn messages_before_the_handshake_and_protocol_violations_drop_the_peer() {
    let mut t = T::new(4);
    let k = PeerKey { index: 1, gen: 0 };
    t.sw.peer_connected(t.t0, k, T::info(1, false));
    assert!(t.msg(t.t0, k, Message::Unchoke).is_err());
    t.sw.handshake(t.t0, k, &hs_for(&t, 1)).unwrap();
    assert!(t.msg(t.t0, k, Message::Have { index: 4 }).is_err());
    t.msg(t.t0, k, Message::HaveNone).unwrap();
    assert!(
        t.msg(t.t0, k, Message::Bitfield { bits: &[0xf0, 0] })
            .is_err(),
        "a late BITFIELD of the wrong length"
    );
    let slow = t.connect_as(2, T::info(2, false), false, t.t0);
    assert!(t.msg(t.t0, slow, Message::HaveAll).is_err());
    assert!(t
        .msg(
            t.t0,
            slow,
            Message::Reject {
                index: 0,
                begin: 0,
                length: BLOCK_SIZE
            }
        )
        .is_err());
}

// ---- interest ----------------------------------------------------------------------------

#[test]
fn we_are_interested_only_in_a_peer_with_a_piece_we_lack() {
    let mut t = T::new(4);
    t.verify([0, 1]);
    let k = t.connect(1);
    let mut bits = Bitfield::new(4);
    bits.set(0);
    bits.set(1);
    t.msg(
        t.t0,
        k,
        Message::Bitfield {
            bits: bits.as_bytes(),
        },
    )
    .unwrap();
    assert!(!sent(&t.acts(), k).contains(&Out::Interested));
    t.msg(t.t0, k, Message::Have { index: 1 }).unwrap();
    assert!(
        t.acts().is_empty(),
        "a HAVE of a piece we hold changes nothing"
    );
    t.msg(t.t0, k, Message::Have { index: 3 }).unwrap();
    assert_eq!(sent(&t.acts(), k), vec![Out::Interested]);
    t.msg(t.t0, k, Message::Have { index: 2 }).unwrap();
    assert!(!sent(&t.acts(), k).contains(&Out::Interested), "said once");
}

#[test]
fn the_last_piece_written_sends_have_and_not_interested_to_every_peer() {
    let mut t = T::new(2);
    t.verify([0]);
    let a = t.seed(1);
    let reqs = requests(&t.acts(), a);
    let b = t.connect(2);
    t.msg(t.t0, b, Message::HaveNone).unwrap();
    assert_eq!(pieces_of(&reqs), vec![1]);
    for r in reqs {
        t.deliver(t.t0, a, r);
    }
    let acts = t.acts();
    let Some(&Action::Hash { piece: 1, buf }) =
        acts.iter().find(|x| matches!(x, Action::Hash { .. }))
    else {
        panic!("{acts:?}")
    };
    t.sw.piece_hashed(t.t0, 1, buf, true, &mut t.bufs);
    assert!(t.acts().contains(&Action::Write { piece: 1, buf }));
    t.sw.piece_written(1, true);
    let acts = t.acts();
    assert_eq!(sent(&acts, a), vec![Out::Have(1), Out::NotInterested]);
    assert_eq!(sent(&acts, b), vec![Out::Have(1)]);
    assert!(acts.contains(&Action::Broadcast { piece: 1 }));
    assert!(t.shared.all_verified());
}

// ---- picking -----------------------------------------------------------------------------

#[test]
fn the_rarest_piece_is_asked_for_first() {
    let mut t = T::new(8);
    // Availability: piece 5 is held by the seed alone, every other piece by two more.
    for i in [2, 3] {
        let k = t.connect(i);
        let mut bits = Bitfield::full(8);
        bits.clear(5);
        t.msg(
            t.t0,
            k,
            Message::Bitfield {
                bits: bits.as_bytes(),
            },
        )
        .unwrap();
    }
    let s = t.seed(1);
    let reqs = requests(&t.acts(), s);
    assert_eq!(
        pieces_of(&reqs),
        vec![5],
        "an unproven peer: one piece, the rarest"
    );
    assert_eq!(reqs.len(), BPP as usize);
}

#[test]
fn an_unproven_peer_fills_one_piece_at_a_time_and_a_proven_one_fills_its_depth() {
    let mut t = T::new(64);
    let s = t.seed(1);
    let reqs = requests(&t.acts(), s);
    assert_eq!(reqs.len(), BPP as usize);
    assert_eq!(pieces_of(&reqs).len(), 1);
    let piece = reqs[0].piece;
    for r in &reqs {
        t.deliver(t.t0, s, *r);
    }
    let acts = t.acts();
    let next = requests(&acts, s);
    assert_eq!(
        next.len(),
        BPP as usize,
        "still unproven: the next piece, alone"
    );
    assert_eq!(pieces_of(&next).len(), 1);
    let buf = acts
        .iter()
        .find_map(|a| match a {
            Action::Hash { buf, .. } => Some(*buf),
            _ => None,
        })
        .unwrap();
    t.sw.piece_hashed(t.t0, piece, buf, true, &mut t.bufs);
    let acts = t.acts();
    assert_eq!(
        requests(&acts, s).len(),
        (INITIAL_REQUEST_DEPTH - BPP) as usize,
        "proven: the full depth"
    );
}

#[test]
fn requests_are_topped_up_in_batches_and_when_a_piece_completes() {
    let mut t = T::new(64);
    let s = t.proven_seed(1);
    let reqs = requests(&t.acts(), s);
    assert_eq!(reqs.len(), INITIAL_REQUEST_DEPTH as usize);
    // Three blocks of each piece (no piece completes): nothing until a batch came back.
    let partial: Vec<BlockRef> = reqs
        .iter()
        .copied()
        .filter(|b| b.begin < 3 * BLOCK_SIZE)
        .collect();
    let now = t.at(ms(110));
    for (n, b) in partial
        .iter()
        .take(REQUEST_REFILL_BATCH as usize)
        .enumerate()
    {
        t.deliver(now, s, *b);
        let got = requests(&t.acts(), s).len();
        if n + 1 < REQUEST_REFILL_BATCH as usize {
            assert_eq!(got, 0, "after {} blocks", n + 1);
        } else {
            assert_eq!(got, REQUEST_REFILL_BATCH as usize);
        }
    }
    // The last block of a piece: hashed, and topped up at once.
    let last = reqs
        .iter()
        .find(|b| b.begin == 3 * BLOCK_SIZE)
        .copied()
        .unwrap();
    t.deliver(now, s, last);
    let acts = t.acts();
    assert!(acts
        .iter()
        .any(|a| matches!(a, Action::Hash { piece, .. } if *piece == last.piece)));
    assert_eq!(requests(&acts, s).len(), 1);
}

#[test]
fn the_extension_handshake_request_queue_bounds_the_depth() {
    let mut t = T::new(64);
    let s = t.connect(1);
    t.msg(t.t0, s, Message::HaveAll).unwrap();
    t.prove(s);
    let hs = ExtHandshake {
        request_queue: Some(4),
        ..Default::default()
    }
    .encode();
    t.msg(
        t.t0,
        s,
        Message::Extended {
            id: extension::HANDSHAKE_ID,
            payload: &hs,
        },
    )
    .unwrap();
    t.msg(t.t0, s, Message::Unchoke).unwrap();
    assert_eq!(requests(&t.acts(), s).len(), 16, "reqq 4 is raised to 16");
}

#[test]
fn no_buffer_means_no_request_and_the_claim_is_released_until_a_tick_finds_one() {
    let mut t = T::new(8);
    t.bufs.full = true;
    let s = t.seed(1);
    assert!(requests(&t.acts(), s).is_empty());
    assert_eq!(t.shared.claimed.count_ones(), 0);
    t.bufs.full = false;
    t.tick(t.at(ms(100)));
    assert_eq!(requests(&t.acts(), s).len(), BPP as usize);
}

/// Our place east/r1; peer `i` placed by the topology at `their`.
fn placed(i: u32, their: NamedPlace) -> PeerInfo {
    PeerInfo {
        addr: addr(i),
        outgoing: false,
        attempt: 1,
        our_place: place("east", "r1"),
        their_place: Some(their),
    }
}

/// 16 pieces; a rack peer (id above ours: we rank 0 of 2, our share is the even pieces)
/// holding pieces 0-7 and choking us; a remote peer `x`, connected, nothing announced.
fn rack_setup() -> (T, PeerKey) {
    let mut t = T::new(16);
    let r = t.connect_as(0x90, placed(0x90, place("east", "r1")), true, t.t0);
    let mut bits = Bitfield::new(16);
    for i in 0..8 {
        bits.set(i);
    }
    t.msg(
        t.t0,
        r,
        Message::Bitfield {
            bits: bits.as_bytes(),
        },
    )
    .unwrap();
    assert_eq!(
        t.shared.share(),
        crate::picker::Share {
            rank: 0,
            members: 2
        }
    );
    t.shared.note_rack_block(t.t0);
    let x = t.connect_as(1, placed(1, place("west", "r1")), true, t.t0);
    (t, x)
}

#[test]
fn pieces_only_a_seed_outside_holds_get_their_turns_once_our_share_is_fetched() {
    let (mut t, x) = rack_setup();
    // The origin opens with HAVE ALL: no HAVE starts a clock for its pieces.
    t.msg(t.t0, x, Message::HaveAll).unwrap();
    t.prove(x);
    let stamps = |t: &T| -> Vec<u64> {
        [9, 11, 13, 15]
            .iter()
            .map(|&i| t.shared.seen_outside[i].load(Ordering::Relaxed))
            .collect()
    };
    // Our share (the even pieces the rack lacks) is not fetched yet: nothing is stamped.
    t.tick(t.at(ms(100)));
    assert_eq!(stamps(&t), vec![0; 4]);
    t.verify([8, 10, 12]);
    t.tick(t.at(ms(200)));
    assert_eq!(stamps(&t), vec![0; 4], "piece 14 is still ours to fetch");
    // Fetched: the odd pieces, another host's share that nobody announced, are stamped
    // now; the rack's hosts take their turns at them from here.
    t.verify([14]);
    let now = t.at(ms(300));
    t.tick(now);
    let stamp = t.shared.seen_outside_clock(now);
    assert_eq!(stamps(&t), vec![stamp; 4]);
    // Pieces a rack peer has are not stamped: they come from the rack.
    assert_eq!(t.shared.seen_outside[3].load(Ordering::Relaxed), 0);
    // A turn later (we are second in the order for odd pieces), they are asked of the
    // origin.
    t.acts();
    t.msg(now, x, Message::Unchoke).unwrap();
    assert!(requests(&t.acts(), x).is_empty(), "not before our turn");
    t.tick(t.at(ms(300) + super::requests::SHARE_GRACE_MAX));
    let asked = pieces_of(&requests(&t.acts(), x));
    assert!(asked.iter().any(|p| p % 2 == 1), "{asked:?}");
}

#[test]
fn a_remote_peer_is_asked_only_for_what_the_rack_lacks_our_share_first() {
    let (mut t, x) = rack_setup();
    t.msg(t.t0, x, Message::HaveAll).unwrap();
    t.prove(x);
    t.msg(t.t0, x, Message::Unchoke).unwrap();
    let reqs = requests(&t.acts(), x);
    assert_eq!(
        pieces_of(&reqs),
        vec![8, 10, 12, 14],
        "the rack has 0-7; the odd ones are another host's share"
    );
}

#[test]
fn a_piece_outside_our_share_comes_from_outside_once_overdue_after_share_grace() {
    let (mut t, x) = rack_setup();
    // Announced one by one (HAVE): each starts its clock outside the rack.
    for index in 0..t.shared.piece_count() {
        t.msg(t.t0, x, Message::Have { index }).unwrap();
    }
    t.prove(x);
    t.msg(t.t0, x, Message::Unchoke).unwrap();
    t.acts();
    // The rack keeps delivering (never quiet): only the grace lets the odd pieces in.
    let before = super::requests::SHARE_GRACE_MAX - ms(200);
    t.shared.note_rack_block(t.at(before));
    t.tick(t.at(before));
    assert!(requests(&t.acts(), x).is_empty(), "not overdue yet");
    let after = super::requests::SHARE_GRACE_MAX + ms(100);
    t.shared.note_rack_block(t.at(after));
    t.tick(t.at(after));
    assert_eq!(pieces_of(&requests(&t.acts(), x)), vec![9, 11, 13, 15]);
}

/// Says, as a peer, that it speaks `rs_fetching` (as id 9).
fn speaks_fetching(t: &mut T, k: PeerKey) {
    let hs = ExtHandshake {
        extensions: vec![(extension::FETCHING.into(), 9)],
        ..Default::default()
    }
    .encode();
    t.msg(t.t0, k, ext(extension::HANDSHAKE_ID, &hs)).unwrap();
}

/// [`rack_setup`], with its rack peer (returned third) speaking `rs_fetching`.
fn fetching_rack_setup() -> (T, PeerKey, PeerKey) {
    let (mut t, x) = rack_setup();
    let r = PeerKey {
        index: 0x90,
        gen: 0,
    };
    speaks_fetching(&mut t, r);
    (t, x, r)
}

fn fetching_told(acts: &[Action], key: PeerKey) -> Vec<u32> {
    sent(acts, key)
        .into_iter()
        .filter_map(|m| match m {
            Out::Extended { id: 9, payload } => match extension::decode_fetching(&payload) {
                Ok(FetchingWord::Started(p)) => Some(p),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[test]
fn rack_peers_say_what_they_fetch_from_outside_and_a_crossed_pick_goes_to_the_lower_id() {
    let (mut t, x) = rack_setup();
    let r = PeerKey {
        index: 0x90,
        gen: 0,
    };
    // A second rack peer, with a lower id than ours: ranks 0x10, us, 0x90 (we are 1 of 3).
    let low = t.connect_as(0x10, placed(0x10, place("east", "r1")), true, t.t0);
    speaks_fetching(&mut t, r);
    speaks_fetching(&mut t, low);
    t.tick(t.at(ms(100)));
    t.acts();
    t.msg(t.t0, x, Message::HaveAll).unwrap();
    t.prove(x);
    t.msg(t.t0, x, Message::Unchoke).unwrap();
    let acts = t.acts();
    assert_eq!(
        pieces_of(&requests(&acts, x)),
        vec![10, 13],
        "our share of 8-15"
    );
    // Both rack peers hear of it (r holds 0-7, not these).
    assert_eq!(fetching_told(&acts, low), vec![10, 13]);
    assert_eq!(fetching_told(&acts, r), vec![10, 13]);
    // The lower id fetches 10 too (its word crossed ours): we give it up, nothing came.
    t.msg(
        t.t0,
        low,
        ext(
            extension::OUR_FETCHING_ID,
            &extension::encode_fetching(FetchingWord::Started(10)),
        ),
    )
    .unwrap();
    let acts = t.acts();
    let cancels: Vec<u32> = sent(&acts, x)
        .into_iter()
        .filter_map(|m| match m {
            Out::Cancel(b) => Some(b.piece),
            _ => None,
        })
        .collect();
    assert!(
        !cancels.is_empty() && cancels.iter().all(|&p| p == 10),
        "{cancels:?}"
    );
    assert!(
        !pieces_of(&requests(&acts, x)).contains(&10),
        "not asked again"
    );
    // The higher id says it fetches 13: ours stays.
    t.msg(
        t.t0,
        r,
        ext(
            extension::OUR_FETCHING_ID,
            &extension::encode_fetching(FetchingWord::Started(13)),
        ),
    )
    .unwrap();
    assert!(sent(&t.acts(), x).is_empty());
    // A rack peer that leaves takes its word with it.
    assert_ne!(t.shared.rack_fetching[10].load(Ordering::Relaxed), 0);
    t.sw.peer_closed(t.t0, low);
    assert_eq!(t.shared.rack_fetching[10].load(Ordering::Relaxed), 0);
}

#[test]
fn a_piece_a_rack_peer_fetches_is_left_to_it_until_its_word_lapses() {
    let (mut t, x, r) = fetching_rack_setup();
    // It fetches 8 and 12, both ours (we are rank 0 of 2: the even pieces).
    for piece in [8, 12] {
        t.msg(
            t.t0,
            r,
            ext(
                extension::OUR_FETCHING_ID,
                &extension::encode_fetching(FetchingWord::Started(piece)),
            ),
        )
        .unwrap();
    }
    t.msg(t.t0, x, Message::HaveAll).unwrap();
    t.prove(x);
    t.msg(t.t0, x, Message::Unchoke).unwrap();
    assert_eq!(pieces_of(&requests(&t.acts(), x)), vec![10, 14]);
    // No rate yet: the word holds the lease of the longest grace.
    let later = super::requests::fetch_lease(super::requests::SHARE_GRACE_MAX) + ms(100);
    t.shared.note_rack_block(t.at(later));
    t.tick(t.at(later));
    let got = pieces_of(&requests(&t.acts(), x));
    assert!(got.contains(&8) || got.contains(&12), "lapsed: {got:?}");
}

fn fetching_words(acts: &[Action], key: PeerKey) -> Vec<FetchingWord> {
    sent(acts, key)
        .into_iter()
        .filter_map(|m| match m {
            Out::Extended { id: 9, payload } => extension::decode_fetching(&payload).ok(),
            _ => None,
        })
        .collect()
}

#[test]
fn a_rack_peers_stop_word_frees_its_piece_at_once() {
    let (mut t, x, r) = fetching_rack_setup();
    for piece in [8, 12] {
        let word = extension::encode_fetching(FetchingWord::Started(piece));
        t.msg(t.t0, r, ext(extension::OUR_FETCHING_ID, &word))
            .unwrap();
    }
    t.msg(t.t0, x, Message::HaveAll).unwrap();
    t.prove(x);
    t.msg(t.t0, x, Message::Unchoke).unwrap();
    assert_eq!(pieces_of(&requests(&t.acts(), x)), vec![10, 14]);
    // It gave 8 up without it: 8 is ours again long before its lease ends; 12 is not.
    let stop = extension::encode_fetching(FetchingWord::Stopped(8));
    t.msg(t.t0, r, ext(extension::OUR_FETCHING_ID, &stop))
        .unwrap();
    assert_eq!(t.shared.rack_fetching[8].load(Ordering::Relaxed), 0);
    assert_ne!(t.shared.rack_fetching[12].load(Ordering::Relaxed), 0);
    let soon = t.at(ms(100));
    t.shared.note_rack_block(soon);
    t.tick(soon);
    assert_eq!(pieces_of(&requests(&t.acts(), x)), vec![8]);
}

#[test]
fn a_piece_given_up_without_it_is_said_stopped_to_the_rack_and_a_new_start_said_again() {
    let (mut t, x, r) = fetching_rack_setup();
    t.msg(t.t0, x, Message::HaveAll).unwrap();
    t.prove(x);
    t.msg(t.t0, x, Message::Unchoke).unwrap();
    let acts = t.acts();
    assert_eq!(pieces_of(&requests(&acts, x)), vec![8, 10, 12, 14]);
    assert_eq!(
        fetching_words(&acts, r),
        [8, 10, 12, 14].map(FetchingWord::Started)
    );
    // x chokes us with nothing delivered: every piece is given up, and the rack hears so.
    t.msg(t.t0, x, Message::Choke).unwrap();
    assert_eq!(
        fetching_words(&t.acts(), r),
        [8, 10, 12, 14].map(FetchingWord::Stopped)
    );
    // Fetched again: said again.
    t.msg(t.t0, x, Message::Unchoke).unwrap();
    let acts = t.acts();
    assert_eq!(
        fetching_words(&acts, r),
        [8, 10, 12, 14].map(FetchingWord::Started)
    );
    let reqs = requests(&acts, x);
    let hashed = |t: &mut T, piece: u32, good: bool| {
        for b in reqs.iter().filter(|b| b.piece == piece) {
            t.deliver(t.t0, x, *b);
        }
        let acts = t.acts();
        let buf = acts
            .iter()
            .find_map(|a| match a {
                Action::Hash { piece: p, buf } if *p == piece => Some(*buf),
                _ => None,
            })
            .unwrap();
        t.sw.piece_hashed(t.t0, piece, buf, good, &mut t.bufs);
    };
    // Verified: the HAVE says the rest, no stop word.
    hashed(&mut t, 8, true);
    t.sw.piece_written(8, true);
    let acts = t.acts();
    assert!(fetching_words(&acts, r).is_empty(), "{acts:?}");
    assert!(sent(&acts, r).contains(&Out::Have(8)));
    // A copy that fails its hash is a fetch that ended without the piece.
    hashed(&mut t, 10, false);
    assert_eq!(
        fetching_words(&t.acts(), r),
        vec![FetchingWord::Stopped(10)]
    );
}

#[test]
fn a_fetch_from_outside_that_moves_is_said_again_every_half_grace() {
    let (mut t, x, r) = fetching_rack_setup();
    t.msg(t.t0, x, Message::HaveAll).unwrap();
    t.prove(x);
    t.msg(t.t0, x, Message::Unchoke).unwrap();
    let acts = t.acts();
    let reqs = requests(&acts, x);
    assert_eq!(fetching_words(&acts, r).len(), 4);
    // No rate yet: the longest grace; nothing said again before half of it.
    let half = super::requests::SHARE_GRACE_MAX / 2;
    t.tick(t.at(half - ms(100)));
    assert!(fetching_words(&t.acts(), r).is_empty());
    // A block of 8 came: 8 is said again; 10, 12 and 14, with nothing in, are not (a
    // sender that sends nothing cannot hold the rack's piece past the lease).
    for b in reqs.iter().filter(|b| b.piece == 8 && b.begin == 0) {
        t.deliver(t.at(half), x, *b);
    }
    t.tick(t.at(half));
    assert_eq!(fetching_words(&t.acts(), r), vec![FetchingWord::Started(8)]);
    // Nothing more of 8 by the next half grace: not said again.
    t.tick(t.at(half * 2 + ms(10)));
    assert!(fetching_words(&t.acts(), r).is_empty());
    // Heard again, the word holds on from then.
    t.msg(
        t.at(half),
        r,
        ext(
            extension::OUR_FETCHING_ID,
            &extension::encode_fetching(FetchingWord::Started(9)),
        ),
    )
    .unwrap();
    let stamp = t.shared.rack_fetching[9].load(Ordering::Relaxed);
    assert_eq!(stamp, t.shared.seen_outside_clock(t.at(half)));
}

#[test]
fn a_rack_peer_holds_at_most_max_fetching_words_and_may_renew_them_at_the_cap() {
    let mut t = T::new(200);
    let r = t.connect_as(0x90, placed(0x90, place("east", "r1")), true, t.t0);
    speaks_fetching(&mut t, r);
    let say = |t: &mut T, at: Instant, piece: u32| {
        let word = extension::encode_fetching(FetchingWord::Started(piece));
        t.msg(at, r, ext(extension::OUR_FETCHING_ID, &word))
            .unwrap();
    };
    let (t0, cap) = (t.t0, super::peer::MAX_FETCHING as u32);
    for piece in 0..cap {
        say(&mut t, t0, piece);
    }
    // One word too many is not heard (a hostile rack peer cannot freeze every piece)...
    say(&mut t, t0, cap);
    assert_eq!(
        t.shared.rack_fetching[cap as usize].load(Ordering::Relaxed),
        0
    );
    // ...but a renewal of a word it gave is.
    let later = t.at(ms(300));
    say(&mut t, later, 5);
    assert_eq!(
        t.shared.rack_fetching[5].load(Ordering::Relaxed),
        t.shared.seen_outside_clock(later)
    );
}

#[test]
fn a_malformed_or_out_of_range_fetching_word_closes_the_peer_with_one_line() {
    let (mut t, _, r) = fetching_rack_setup();
    let err = t
        .msg(t.t0, r, ext(extension::OUR_FETCHING_ID, &[0, 0, 0, 1, 7]))
        .unwrap_err();
    assert!(err.contains("rs_fetching") && !err.contains('\n'), "{err}");
    let word = extension::encode_fetching(FetchingWord::Stopped(16));
    let err = t
        .msg(t.t0, r, ext(extension::OUR_FETCHING_ID, &word))
        .unwrap_err();
    assert!(err.contains("piece 16 of 16"), "{err}");
}

#[test]
fn a_remote_seeds_bitfield_does_not_make_every_piece_overdue() {
    let (mut t, x) = rack_setup();
    t.msg(t.t0, x, Message::HaveAll).unwrap();
    t.prove(x);
    t.msg(t.t0, x, Message::Unchoke).unwrap();
    t.acts();
    let later = super::requests::SHARE_GRACE_MAX * 3;
    t.shared.note_rack_block(t.at(later));
    t.tick(t.at(later));
    let got = pieces_of(&requests(&t.acts(), x));
    assert!(got.iter().all(|p| p % 2 == 0), "only our share: {got:?}");
}

#[test]
fn a_quiet_rack_lets_a_remote_peer_fetch_beyond_our_share() {
    let (mut t, x) = rack_setup();
    t.prove(x);
    t.msg(t.t0, x, Message::Unchoke).unwrap();
    t.shared.note_rack_block(t.at(secs(10)));
    // Piece 9 (not our share) is seen outside lately: not overdue.
    t.msg(t.at(secs(14)), x, Message::Have { index: 9 })
        .unwrap();
    t.tick(t.at(ms(14_500)));
    assert!(
        requests(&t.acts(), x).is_empty(),
        "the rack is not quiet yet"
    );
    t.tick(t.at(ms(15_100)));
    assert_eq!(pieces_of(&requests(&t.acts(), x)), vec![9]);
}

#[test]
fn a_remote_seed_met_early_serves_the_last_eighth_even_what_the_rack_has() {
    let n = 16;
    let setup_met = |complete: bool, dc: &str, met_late: bool| {
        let mut t = T::new(n);
        if met_late {
            t.verify(0..n - 2);
        }
        let r = t.connect_as(0x90, placed(0x90, place("east", "r1")), true, t.t0);
        t.msg(t.t0, r, Message::HaveAll).unwrap();
        let x = t.connect_as(1, placed(1, place(dc, "r2")), true, t.t0);
        let mut bits = Bitfield::full(n);
        if !complete {
            bits.clear(0);
        }
        t.msg(
            t.t0,
            x,
            Message::Bitfield {
                bits: bits.as_bytes(),
            },
        )
        .unwrap();
        if !met_late {
            t.verify(0..n - 2);
        }
        t.prove(x);
        t.msg(t.t0, x, Message::Unchoke).unwrap();
        requests(&t.acts(), x)
    };
    let setup = |complete: bool, dc: &str| setup_met(complete, dc, false);
    assert!(
        !setup(true, "east").is_empty(),
        "a seed of our dc, in another rack, in the tail"
    );
    assert!(
        setup_met(true, "east", true).is_empty(),
        "a seed we met in our tail finished while we downloaded: not the origin"
    );
    assert!(
        setup(false, "east").is_empty(),
        "a non-seed of another rack: only what the rack lacks"
    );
    assert!(
        setup(true, "west").is_empty(),
        "a seed in another dc: never what our dc has (each piece crosses the WAN once)"
    );
}

#[test]
fn the_dc_availability_counts_our_dc_but_not_a_seed_from_the_start() {
    let mut t = T::new(4);
    let mate = t.connect_as(1, placed(1, place("east", "r1")), true, t.t0);
    let other_rack = t.connect_as(2, placed(2, place("east", "r2")), true, t.t0);
    let other_dc = t.connect_as(3, placed(3, place("west", "r1")), true, t.t0);
    let origin = t.connect_as(4, placed(4, place("east", "build")), true, t.t0);
    for k in [mate, other_rack, other_dc] {
        t.msg(t.t0, k, Message::Have { index: 1 }).unwrap();
    }
    t.msg(t.t0, origin, Message::HaveAll).unwrap();
    let count = |a: &[std::sync::atomic::AtomicU32], i: usize| a[i].load(Ordering::Relaxed);
    assert_eq!(count(&t.shared.availability, 1), 4);
    assert_eq!(
        count(&t.shared.dc_availability, 1),
        2,
        "rack mate and other rack"
    );
    assert_eq!(count(&t.shared.rack_availability, 1), 1);
    assert_eq!(
        count(&t.shared.dc_availability, 0),
        0,
        "the origin is not counted"
    );
    t.sw.peer_closed(t.t0, other_rack);
    t.sw.peer_closed(t.t0, origin);
    assert_eq!(count(&t.shared.dc_availability, 1), 1);
    assert_eq!(count(&t.shared.availability, 0), 0);
}

#[test]
fn a_rack_peer_stated_in_the_extension_handshake_joins_the_rack_availability() {
    let mut t = T::new(4);
    let mut info = T::info(1, false);
    info.our_place = place("east", "r1");
    let k = t.connect_as(1, info, true, t.t0);
    t.msg(t.t0, k, Message::Have { index: 2 }).unwrap();
    assert_eq!(t.shared.rack_availability[2].load(Ordering::Relaxed), 0);
    let hs = ExtHandshake {
        dc: Some("east".into()),
        rack: Some("r1".into()),
        ..Default::default()
    }
    .encode();
    t.msg(
        t.t0,
        k,
        Message::Extended {
            id: extension::HANDSHAKE_ID,
            payload: &hs,
        },
    )
    .unwrap();
    assert_eq!(t.shared.rack_availability[2].load(Ordering::Relaxed), 1);
    assert_eq!(t.shared.share().members, 2);
    t.sw.peer_closed(t.t0, k);
    assert_eq!(t.shared.rack_availability[2].load(Ordering::Relaxed), 0);
    assert_eq!(t.shared.availability[2].load(Ordering::Relaxed), 0);
    assert_eq!(t.shared.share().members, 1);
}

// ---- refusals, chokes, closes --------------------------------------------------------------

#[test]
fn a_reject_sends_the_piece_elsewhere_and_it_is_not_asked_again_for_a_while() {
    let mut t = T::new(8);
    let s = t.seed(1);
    let reqs = requests(&t.acts(), s);
    let p = reqs[0].piece;
    t.msg(
        t.t0,
        s,
        Message::Reject {
            index: p,
            begin: 0,
            length: BLOCK_SIZE,
        },
    )
    .unwrap();
    let acts = t.acts();
    let c = cancels(&acts, s);
    let others: Vec<BlockRef> = (1..BPP).map(|b| blk(p, b)).collect();
    assert_eq!(
        c, others,
        "its other requests there are withdrawn, the rejected one is not cancelled"
    );
    let again = requests(&acts, s);
    assert!(!again.is_empty());
    assert!(again.iter().all(|b| b.piece != p), "{again:?}");
    assert!(
        !t.shared.claimed.get(p),
        "the refused piece is free for others"
    );
    let o = t.holder(2, p);
    assert_eq!(pieces_of(&requests(&t.acts(), o)), vec![p]);
}

#[test]
fn refusals_are_forgotten_after_the_refusal_memory() {
    let mut t = T::new(1);
    let s = t.seed(1);
    t.acts();
    t.msg(
        t.t0,
        s,
        Message::Reject {
            index: 0,
            begin: BLOCK_SIZE,
            length: BLOCK_SIZE,
        },
    )
    .unwrap();
    assert!(
        requests(&t.acts(), s).is_empty(),
        "the only piece was refused"
    );
    t.tick(t.at(REFUSAL_MEMORY - ms(100)));
    assert!(requests(&t.acts(), s).is_empty());
    t.tick(t.at(REFUSAL_MEMORY));
    assert_eq!(requests(&t.acts(), s).len(), BPP as usize);
}

#[test]
fn a_reject_of_a_block_never_asked_for_is_ignored() {
    let mut t = T::new(4);
    let s = t.seed(1);
    let reqs = requests(&t.acts(), s);
    let other = (reqs[0].piece + 1) % 4;
    t.msg(
        t.t0,
        s,
        Message::Reject {
            index: other,
            begin: 0,
            length: BLOCK_SIZE,
        },
    )
    .unwrap();
    assert!(t.acts().is_empty());
    assert!(!t.sw.peer(s).unwrap().refused.get(other));
}

#[test]
fn a_choke_from_the_peer_returns_its_blocks_to_the_pool() {
    let mut t = T::new(4);
    let a = t.seed(1);
    let reqs = requests(&t.acts(), a);
    let p = reqs[0].piece;
    t.msg(t.t0, a, Message::Choke).unwrap();
    let acts = t.acts();
    assert!(
        cancels(&acts, a).is_empty(),
        "a choke voids the requests: no CANCEL"
    );
    assert!(acts.iter().any(|x| matches!(x, Action::Discard { .. })));
    assert!(!t.shared.claimed.get(p));
    assert_eq!(t.sw.peer(a).unwrap().requests_out, 0);
    let b = t.holder(2, p);
    assert_eq!(pieces_of(&requests(&t.acts(), b)), vec![p]);
    // A late block from the choking peer is dropped.
    assert_eq!(t.sw.block_fragment(a, p, 0, BLOCK_SIZE), None);
}

#[test]
fn a_closed_peer_releases_its_pieces_and_its_availability() {
    let mut t = T::new(4);
    let a = t.seed(1);
    let p = requests(&t.acts(), a)[0].piece;
    assert_eq!(t.shared.availability[p as usize].load(Ordering::Relaxed), 1);
    t.sw.peer_closed(t.t0, a);
    assert!(!t.shared.claimed.get(p));
    assert!(!t.sw.in_progress(p));
    assert_eq!(t.shared.availability[p as usize].load(Ordering::Relaxed), 0);
    assert_eq!(t.sw.peer_count(), 0);
    assert_eq!(t.sw.poll_timeout(), None, "nothing left to time");
}

#[test]
fn a_late_block_after_a_cancel_is_dropped() {
    let mut t = T::new(4);
    let a = t.seed(1);
    let p = requests(&t.acts(), a)[0].piece;
    t.msg(
        t.t0,
        a,
        Message::Reject {
            index: p,
            begin: 0,
            length: BLOCK_SIZE,
        },
    )
    .unwrap();
    t.acts();
    assert_eq!(t.sw.block_fragment(a, p, BLOCK_SIZE, BLOCK_SIZE), None);
    t.sw.block_received(t.t0, a, p, BLOCK_SIZE, BLOCK_SIZE, &mut t.bufs)
        .unwrap();
    assert_eq!(t.shared.counters.downloaded.load(Ordering::Relaxed), 0);
}

#[test]
fn a_block_outside_the_torrent_drops_the_peer() {
    let mut t = T::new(4);
    let a = t.seed(1);
    assert!(t
        .sw
        .block_received(t.t0, a, 4, 0, BLOCK_SIZE, &mut t.bufs)
        .is_err());
    assert!(t
        .sw
        .block_received(t.t0, a, 0, PIECE - 10, BLOCK_SIZE, &mut t.bufs)
        .is_err());
}

// ---- endgame and work stealing -------------------------------------------------------------

#[test]
fn in_the_endgame_the_missing_blocks_of_another_peers_piece_are_joined() {
    let mut t = T::new(2);
    // A peer working on one piece with only half its blocks asked.
    let a = t.seed(1);
    let ra = requests(&t.acts(), a);
    let first = ra[0].piece;
    {
        let asm = t.sw.assemblies.get_mut(&first).unwrap();
        for b in 2..BPP as usize {
            asm.blocks[b] = super::assembly::Block::Missing;
        }
        t.sw.peer_mut(a).unwrap().requests_out = 2;
    }
    let b = t.seed(2);
    t.prove(b);
    t.sw.fill(t.at(ms(50)), b, &mut t.bufs);
    let rb = requests(&t.acts(), b);
    let joined: Vec<u32> = rb
        .iter()
        .filter(|r| r.piece == first)
        .map(|r| r.begin / BLOCK_SIZE)
        .collect();
    assert_eq!(joined, vec![2, 3], "only the missing blocks: {rb:?}");
    assert_eq!(
        rb.iter().filter(|r| r.piece != first).count(),
        BPP as usize,
        "and the other piece whole"
    );
}

#[test]
fn outside_the_endgame_a_peer_does_not_join_another_peers_piece() {
    let mut t = T::new(64);
    let a = t.seed(1);
    let first = requests(&t.acts(), a)[0].piece;
    {
        let asm = t.sw.assemblies.get_mut(&first).unwrap();
        asm.blocks[3] = super::assembly::Block::Missing;
        t.sw.peer_mut(a).unwrap().requests_out = 3;
    }
    let b = t.seed(2);
    t.prove(b);
    t.sw.fill(t.at(ms(50)), b, &mut t.bufs);
    let rb = requests(&t.acts(), b);
    assert!(!rb.is_empty());
    assert!(rb.iter().all(|r| r.piece != first), "{rb:?}");
}

/// Two proven seeds on one core: A (asked for both pieces first), then B; rates set.
fn steal_setup(rate_a: u64, rate_b: u64) -> (T, PeerKey, PeerKey, Vec<BlockRef>) {
    let mut t = T::new(2);
    let a = t.connect(1);
    t.msg(t.t0, a, Message::HaveAll).unwrap();
    t.prove(a);
    t.set_rate(a, rate_a, t.t0);
    t.msg(t.t0, a, Message::Unchoke).unwrap();
    let ra = requests(&t.acts(), a);
    assert_eq!(ra.len(), 2 * BPP as usize);
    let b = t.connect(2);
    t.msg(t.t0, b, Message::HaveAll).unwrap();
    t.prove(b);
    t.set_rate(b, rate_b, t.t0);
    t.msg(t.t0, b, Message::Unchoke).unwrap();
    assert!(
        requests(&t.acts(), b).is_empty(),
        "A's requests are fresh: nothing to steal yet"
    );
    (t, a, b, ra)
}

#[test]
fn a_much_faster_peer_steals_late_blocks_and_the_first_copy_cancels_the_other() {
    let (mut t, a, b, ra) = steal_setup(16 << 10, 4 << 20);
    let now = t.at(super::requests::STEAL_AFTER + ms(50));
    t.sw.fill(now, b, &mut t.bufs);
    let rb = requests(&t.acts(), b);
    assert_eq!(rb.len(), ra.len(), "every late block of the slow peer");
    // B's copy comes first: A is told to cancel, and A's copy is dropped.
    t.deliver(now, b, rb[0]);
    let acts = t.acts();
    assert_eq!(cancels(&acts, a), vec![rb[0]]);
    assert_eq!(t.deliver(now, a, rb[0]), None);
    assert_eq!(
        t.shared.counters.downloaded.load(Ordering::Relaxed),
        u64::from(BLOCK_SIZE),
        "one copy counted"
    );
    // A's copy of another block wins there: B is cancelled.
    t.deliver(now, a, rb[1]);
    assert_eq!(cancels(&t.acts(), b), vec![rb[1]]);
}

#[test]
fn no_block_is_stolen_from_an_equally_fast_peer() {
    let (mut t, _a, b, _) = steal_setup(4 << 20, 4 << 20);
    let now = t.at(secs(1));
    t.sw.fill(now, b, &mut t.bufs);
    assert!(requests(&t.acts(), b).is_empty());
}

#[test]
fn no_block_is_stolen_before_it_is_late() {
    let (mut t, _a, b, _) = steal_setup(16 << 10, 4 << 20);
    let now = t.at(super::requests::STEAL_AFTER - ms(1));
    t.sw.fill(now, b, &mut t.bufs);
    assert!(requests(&t.acts(), b).is_empty());
}

#[test]
fn an_unproven_peer_lends_a_hand_with_one_piece_only_and_only_when_idle() {
    let (mut t, _a, b, ra) = steal_setup(16 << 10, 4 << 20);
    t.sw.peer_mut(b).unwrap().proven = false;
    let now = t.at(secs(1));
    t.sw.fill(now, b, &mut t.bufs);
    let rb = requests(&t.acts(), b);
    assert_eq!(pieces_of(&rb).len(), 1, "one piece: {rb:?}");
    assert!(rb.len() < ra.len());
    // Working on that piece now, it takes no other.
    let later = t.at(secs(2));
    t.sw.fill(later, b, &mut t.bufs);
    let more = requests(&t.acts(), b);
    assert!(
        pieces_of(&more).iter().all(|p| pieces_of(&rb).contains(p)),
        "{more:?}"
    );
}

#[test]
fn a_request_outstanding_for_ten_horizons_is_late_for_any_peer() {
    let (mut t, a, b, ra) = steal_setup(4 << 20, 4 << 20);
    // As fast as A: nothing to steal while A's requests are recent...
    t.sw.fill(t.at(ms(500)), b, &mut t.bufs);
    assert!(requests(&t.acts(), b).is_empty());
    // ...but a block A has not sent in 2 s is asked of B too.
    t.sw.fill(t.at(super::requests::LATE_REQUEST), b, &mut t.bufs);
    assert_eq!(requests(&t.acts(), b).len(), ra.len());
    let _ = a;
}

#[test]
fn another_core_fetches_a_duplicate_in_the_endgame_and_drops_it_when_verified_elsewhere() {
    let mut one = T::new(2);
    let mut two = one.second_core();
    let a = one.seed(1);
    one.prove(a);
    one.tick(one.at(ms(100)));
    let ra: Vec<BlockRef> = requests(&one.acts(), a);
    assert_eq!(pieces_of(&ra), vec![0, 1]);
    let b = two.seed(2);
    two.prove(b);
    two.tick(two.at(ms(100)));
    let rb = requests(&two.acts(), b);
    assert_eq!(pieces_of(&rb), vec![0, 1], "endgame duplicates of both");
    assert!(!two.sw.assemblies.values().any(|x| x.claimed));
    // Core one finishes piece 0 first.
    let now = one.at(ms(200));
    for r in ra.iter().filter(|r| r.piece == 0) {
        one.deliver(now, a, *r);
    }
    let buf = one
        .acts()
        .iter()
        .find_map(|x| match x {
            Action::Hash { piece: 0, buf } => Some(*buf),
            _ => None,
        })
        .unwrap();
    one.sw.piece_hashed(now, 0, buf, true, &mut one.bufs);
    one.sw.piece_written(0, true);
    assert!(one.acts().contains(&Action::Broadcast { piece: 0 }));
    two.sw.verified_elsewhere(0);
    let acts = two.acts();
    let c = cancels(&acts, b);
    assert_eq!(c.len(), BPP as usize, "{acts:?}");
    assert!(c.iter().all(|x| x.piece == 0));
    assert!(acts.iter().any(|x| matches!(x, Action::Discard { .. })));
    assert!(sent(&acts, b).contains(&Out::Have(0)));
    assert!(!two.sw.in_progress(0));
    assert!(
        two.shared.claimed.get(1),
        "core one's claim on piece 1 stands"
    );
}

#[test]
fn a_duplicate_that_completes_after_the_piece_is_verified_is_discarded() {
    let mut one = T::new(1);
    let mut two = one.second_core();
    let a = one.seed(1);
    one.prove(a);
    one.acts();
    let b = two.seed(2);
    two.prove(b);
    two.tick(two.at(ms(100)));
    let rb = requests(&two.acts(), b);
    assert_eq!(rb.len(), BPP as usize);
    one.shared.mark_verified(0);
    for r in &rb {
        two.deliver(two.at(ms(200)), b, *r);
    }
    let acts = two.acts();
    assert!(acts.iter().any(|x| matches!(x, Action::Discard { .. })));
    assert!(!acts.iter().any(|x| matches!(x, Action::Hash { .. })));
}

// ---- hashes, strikes, bans ---------------------------------------------------------------

/// Delivers every block requested of `key` in `acts` and returns the Hash actions.
fn deliver_all(t: &mut T, now: Instant, key: PeerKey, reqs: &[BlockRef]) -> Vec<(u32, BufId)> {
    for r in reqs {
        t.deliver(now, key, *r);
    }
    let acts = t.acts();
    acts.iter()
        .filter_map(|x| match x {
            Action::Hash { piece, buf } => Some((*piece, *buf)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_bad_piece_from_a_single_writer_is_a_strike_without_a_ban() {
    let mut t = T::new(4);
    let a = t.seed(1);
    let reqs = requests(&t.acts(), a);
    let t0 = t.t0;
    let hashes = deliver_all(&mut t, t0, a, &reqs);
    let [(p, buf)] = hashes[..] else { panic!() };
    t.sw.piece_hashed(t.t0, p, buf, false, &mut t.bufs);
    let acts = t.acts();
    assert!(acts.contains(&Action::Discard { buf }));
    assert!(!closed(&acts, a));
    assert!(!t.shared.claimed.get(p), "it is fetched again");
    assert_eq!(t.shared.peers.lock().unwrap().strikes.get(&ip(1)), Some(&1));
    assert!(!t.shared.is_banned(ip(1), t.t0));
}

#[test]
fn two_bad_pieces_from_one_peer_ban_its_address_and_close_it() {
    let mut t = T::new(4);
    let a = t.seed(1);
    let mut reqs = requests(&t.acts(), a);
    for round in 0..2 {
        for r in &reqs {
            t.deliver(t.t0, a, *r);
        }
        let acts = t.acts();
        let (p, buf) = acts
            .iter()
            .find_map(|x| match x {
                Action::Hash { piece, buf } => Some((*piece, *buf)),
                _ => None,
            })
            .unwrap();
        // The unproven peer took its next piece when the last block came in.
        let next = requests(&acts, a);
        t.sw.piece_hashed(t.t0, p, buf, false, &mut t.bufs);
        let acts = t.acts();
        assert_eq!(closed(&acts, a), round == 1, "round {round}");
        reqs = next;
    }
    assert!(t.shared.is_banned(ip(1), t.at(secs(60))));
    assert_eq!(t.shared.counters.hash_failures.load(Ordering::Relaxed), 2);
    // It cannot come back, nor be dialled.
    t.sw.peer_closed(t.t0, a);
    t.sw.add_peer_address(t.t0, addr(1));
    assert!(dials(&t.acts()).is_empty());
}

#[test]
fn a_bad_piece_with_several_writers_strikes_nobody_and_comes_next_from_one_peer() {
    let mut t = T::new(1);
    let a = t.seed(1);
    let ra = requests(&t.acts(), a);
    t.prove(a);
    // As if A's depth were 2: blocks 2 and 3 are missing.
    {
        let asm = t.sw.assemblies.get_mut(&0).unwrap();
        asm.blocks[2] = super::assembly::Block::Missing;
        asm.blocks[3] = super::assembly::Block::Missing;
        t.sw.peer_mut(a).unwrap().requests_out = 2;
    }
    let b = t.seed(2);
    t.prove(b);
    t.sw.fill(t.at(ms(50)), b, &mut t.bufs);
    let rb = requests(&t.acts(), b);
    assert_eq!(rb, vec![blk(0, 2), blk(0, 3)]);
    t.deliver(t.at(ms(60)), a, ra[0]);
    t.deliver(t.at(ms(60)), a, ra[1]);
    let now = t.at(ms(60));
    let hashes = deliver_all(&mut t, now, b, &rb);
    let [(0, buf)] = hashes[..] else { panic!() };
    t.sw.piece_hashed(t.at(ms(70)), 0, buf, false, &mut t.bufs);
    let acts = t.acts();
    assert!(!closed(&acts, a) && !closed(&acts, b));
    assert!(t.shared.peers.lock().unwrap().strikes.is_empty());
    // The next copy comes from one peer: A takes it, B does not join.
    t.tick(t.at(ms(200)));
    let acts = t.acts();
    assert_eq!(requests(&acts, a).len(), BPP as usize, "{acts:?}");
    assert!(requests(&acts, b).is_empty(), "{acts:?}");
    assert!(t.sw.assemblies[&0].single_source);
}

#[test]
fn a_good_piece_proves_its_writers_and_a_failed_write_fetches_it_again() {
    let mut t = T::new(4);
    let a = t.seed(1);
    let reqs = requests(&t.acts(), a);
    let t0 = t.t0;
    let hashes = deliver_all(&mut t, t0, a, &reqs);
    let [(p, buf)] = hashes[..] else { panic!() };
    assert!(!t.sw.peer(a).unwrap().proven);
    t.sw.piece_hashed(t.t0, p, buf, true, &mut t.bufs);
    assert!(t.sw.peer(a).unwrap().proven);
    assert!(t.sw.busy());
    t.sw.piece_written(p, false);
    assert!(!t.shared.verified.get(p));
    assert!(!t.shared.claimed.get(p), "the piece is missing again");
    assert!(!t.sw.busy());
}

// ---- choking -----------------------------------------------------------------------------

#[test]
fn an_interested_peer_gets_a_free_slot_at_once() {
    let mut t = T::new(4);
    t.verify_all();
    let k = t.connect(1);
    t.msg(t.t0, k, Message::Interested).unwrap();
    assert_eq!(sent(&t.acts(), k), vec![Out::Unchoke]);
    assert_eq!(t.shared.counters.unchoked.load(Ordering::Relaxed), 1);
}

#[test]
fn an_idle_unchoked_peer_loses_its_slot() {
    let mut t = T::new(4);
    t.verify_all();
    let k = t.leecher(1);
    t.acts();
    t.tick(t.at(ms(2900)));
    assert!(!sent(&t.acts(), k).contains(&Out::Choke));
    t.tick(t.at(secs(3)));
    assert!(sent(&t.acts(), k).contains(&Out::Choke));
    assert_eq!(t.shared.counters.unchoked.load(Ordering::Relaxed), 0);
}

#[test]
fn an_unchoked_peer_that_keeps_asking_keeps_its_slot_when_nobody_waits() {
    let mut t = T::new(4);
    t.verify_all();
    let k = t.leecher(1);
    t.acts();
    for s in 1..=12u64 {
        let now = t.at(secs(s));
        t.request(now, k, blk(0, 0)).unwrap();
        t.sw.blocks_sent(t.t0, k, 1, u64::from(BLOCK_SIZE));
        t.tick(now + ms(10));
    }
    assert!(!sent(&t.acts(), k).contains(&Out::Choke));
}

#[test]
fn slots_rotate_to_a_waiting_peer() {
    let mut t = T::with(4, |c| c.upload_slots = 1);
    t.verify_all();
    let a = t.leecher(1);
    t.request(t.t0, a, blk(0, 0)).unwrap(); // stays queued: A is busy
    let b = t.leecher(2);
    let acts = t.acts();
    assert!(!t.sw.peer(a).unwrap().am_choking);
    assert!(!sent(&acts, b).contains(&Out::Unchoke), "no slot free");
    t.tick(t.at(secs(5)));
    assert!(t.acts().is_empty());
    t.tick(t.at(secs(10)));
    let acts = t.acts();
    assert!(sent(&acts, a).contains(&Out::Choke), "{acts:?}");
    assert_eq!(sent(&acts, b), vec![Out::Unchoke]);
    assert_eq!(t.shared.counters.unchoked.load(Ordering::Relaxed), 1);
}

#[test]
fn a_nearer_peer_waits_for_a_slot_instead_of_taking_a_farther_ones() {
    let mut t = T::with(4, |c| c.upload_slots = 1);
    t.verify_all();
    let x = t.connect_as(1, placed(1, place("west", "r9")), true, t.t0);
    t.msg(t.t0, x, Message::Interested).unwrap();
    assert_eq!(sent(&t.acts(), x), vec![Out::Unchoke]);
    // A rack peer comes: the peer in the other dc keeps its slot. Its requests are for
    // what its own dc lacks, as worth serving as any (taking its slot each time a nearer
    // peer asked left a second dc starved: `ringswarm sim`, 2 dcs of 4 racks of 40, the
    // last host at 2.17 x the bound instead of 1.55 x).
    let d = t.connect_as(2, placed(2, place("east", "r1")), true, t.t0);
    t.msg(t.t0, d, Message::Interested).unwrap();
    let acts = t.acts();
    assert!(
        sent(&acts, x).is_empty() && sent(&acts, d).is_empty(),
        "{acts:?}"
    );
    // Idle while another waits: the slot goes to the rack peer.
    let later = t.at(crate::choker::SlotRules::default().contested_idle + ms(10));
    t.tick(later);
    let acts = t.acts();
    assert_eq!(sent(&acts, x), vec![Out::Choke]);
    assert_eq!(sent(&acts, d), vec![Out::Unchoke]);
    assert_eq!(t.shared.counters.unchoked.load(Ordering::Relaxed), 1);
}

#[test]
fn a_peer_given_a_slot_in_a_rechoke_keeps_it_through_that_rechoke() {
    let mut t = T::with(4, |c| c.upload_slots = 1);
    t.verify_all();
    let holder = t.connect_as(1, placed(1, place("east", "r1")), true, t.t0);
    t.msg(t.t0, holder, Message::Interested).unwrap();
    // A peer in another dc waits first, a rack peer after it.
    let far = t.connect_as(2, placed(2, place("west", "r9")), true, t.t0);
    t.msg(t.t0, far, Message::Interested).unwrap();
    let near = t.connect_as(3, placed(3, place("east", "r1")), true, t.at(ms(1)));
    t.msg(t.at(ms(1)), near, Message::Interested).unwrap();
    t.acts();
    // The holder idles: the slot goes to the longest waiting, and stays with it (a slot
    // given and taken back in one rechoke is a wasted round trip for the peer, and, each
    // rechoke again, no service at all).
    let later = t.at(crate::choker::SlotRules::default().contested_idle + ms(10));
    t.tick(later);
    let acts = t.acts();
    assert_eq!(sent(&acts, holder), vec![Out::Choke]);
    assert_eq!(sent(&acts, far), vec![Out::Unchoke]);
    assert!(sent(&acts, near).is_empty(), "{acts:?}");
}

#[test]
fn not_interested_chokes_and_drops_the_queued_uploads_with_rejects() {
    let mut t = T::new(4);
    t.verify_all();
    let k = t.leecher(1);
    for b in 0..3 {
        t.request(t.t0, k, blk(1, b)).unwrap();
    }
    assert_eq!(t.sw.uploads(k).unwrap().len(), 3);
    t.acts();
    t.msg(t.t0, k, Message::NotInterested).unwrap();
    assert_eq!(
        sent(&t.acts(), k),
        vec![
            Out::Choke,
            Out::Reject(blk(1, 0)),
            Out::Reject(blk(1, 1)),
            Out::Reject(blk(1, 2))
        ]
    );
    assert!(t.sw.uploads(k).unwrap().is_empty());
    assert_eq!(t.shared.counters.unchoked.load(Ordering::Relaxed), 0);
}

#[test]
fn a_choke_drops_the_queue_silently_without_the_fast_extension() {
    let mut t = T::new(4);
    t.verify_all();
    let k = t.connect_as(1, T::info(1, false), false, t.t0);
    t.msg(t.t0, k, Message::Interested).unwrap();
    t.request(t.t0, k, blk(1, 0)).unwrap();
    t.acts();
    t.msg(t.t0, k, Message::NotInterested).unwrap();
    assert_eq!(sent(&t.acts(), k), vec![Out::Choke]);
    assert!(t.sw.uploads(k).unwrap().is_empty());
}

#[test]
fn nothing_is_queued_for_a_choked_peer() {
    let mut t = T::new(4);
    t.verify_all();
    let k = t.connect(1);
    t.request(t.t0, k, blk(0, 0)).unwrap();
    let acts = t.acts();
    assert_eq!(sent(&acts, k), vec![Out::Reject(blk(0, 0))]);
    assert!(!acts.iter().any(|a| matches!(a, Action::Serve { .. })));
    assert!(t.sw.uploads(k).unwrap().is_empty());
    // And after an idle choke, a late request is refused too.
    t.msg(t.t0, k, Message::Interested).unwrap();
    t.tick(t.at(secs(3)));
    assert!(sent(&t.acts(), k).contains(&Out::Choke));
    t.request(t.at(secs(3)), k, blk(0, 0)).unwrap();
    assert_eq!(sent(&t.acts(), k), vec![Out::Reject(blk(0, 0))]);
    assert!(t.sw.uploads(k).unwrap().is_empty());
}

#[test]
fn a_cancel_removes_a_queued_upload_and_blocks_sent_drain_the_queue() {
    let mut t = T::new(4);
    t.verify_all();
    let k = t.leecher(1);
    for b in 0..3 {
        t.request(t.t0, k, blk(2, b)).unwrap();
    }
    let acts = t.acts();
    assert_eq!(
        acts.iter()
            .filter(|a| matches!(a, Action::Serve { peer } if *peer == k))
            .count(),
        3
    );
    t.msg(
        t.t0,
        k,
        Message::Cancel {
            index: 2,
            begin: BLOCK_SIZE,
            length: BLOCK_SIZE,
        },
    )
    .unwrap();
    let q: Vec<BlockRef> = t.sw.uploads(k).unwrap().iter().copied().collect();
    assert_eq!(q, vec![blk(2, 0), blk(2, 2)]);
    t.sw.blocks_sent(t.t0, k, 1, u64::from(BLOCK_SIZE));
    let q: Vec<BlockRef> = t.sw.uploads(k).unwrap().iter().copied().collect();
    assert_eq!(q, vec![blk(2, 2)]);
    assert_eq!(
        t.shared.counters.uploaded.load(Ordering::Relaxed),
        u64::from(BLOCK_SIZE)
    );
}

#[test]
fn invalid_requests_drop_the_peer_and_a_piece_we_lack_is_rejected() {
    let mut t = T::new(4);
    t.verify([0, 1, 2]);
    let k = t.leecher(1);
    t.acts();
    let bad = [
        BlockRef {
            piece: 4,
            begin: 0,
            len: BLOCK_SIZE,
        },
        BlockRef {
            piece: 0,
            begin: 0,
            len: 0,
        },
        BlockRef {
            piece: 0,
            begin: 0,
            len: MAX_BLOCK_SIZE + 1,
        },
        BlockRef {
            piece: 0,
            begin: PIECE - 100,
            len: BLOCK_SIZE,
        },
    ];
    for b in bad {
        assert!(t.request(t.t0, k, b).is_err(), "{b:?}");
    }
    t.request(t.t0, k, blk(3, 0)).unwrap();
    assert_eq!(sent(&t.acts(), k), vec![Out::Reject(blk(3, 0))]);
    t.request(t.t0, k, blk(2, 0)).unwrap();
    assert_eq!(t.sw.uploads(k).unwrap().len(), 1);
}

#[test]
fn the_upload_queue_is_capped() {
    let mut t = T::new(4);
    t.verify_all();
    let k = t.leecher(1);
    for i in 0..MAX_PEER_REQUESTS {
        t.request(t.t0, k, blk(i as u32 % 4, i as u32 % BPP))
            .unwrap();
    }
    t.acts();
    let err = t.request(t.t0, k, blk(0, 0)).unwrap_err();
    assert!(err.contains("too many"), "{err}");
}

#[test]
fn a_first_seeder_hands_out_distinct_pieces_and_rejects_one_granted_to_another() {
    let mut t = T::new(4);
    t.verify_all();
    t.shared.initial_seed.store(true, Ordering::Relaxed);
    let a = t.leecher(1);
    let b = t.leecher(2);
    t.acts();
    t.request(t.t0, a, blk(0, 0)).unwrap();
    t.request(t.t0, a, blk(0, 1)).unwrap();
    t.request(t.t0, b, blk(0, 0)).unwrap();
    t.request(t.t0, b, blk(1, 0)).unwrap();
    let acts = t.acts();
    assert!(sent(&acts, a).is_empty());
    assert_eq!(sent(&acts, b), vec![Out::Reject(blk(0, 0))]);
    assert_eq!(t.sw.uploads(a).unwrap().len(), 2);
    let q: Vec<BlockRef> = t.sw.uploads(b).unwrap().iter().copied().collect();
    assert_eq!(q, vec![blk(1, 0)]);
    // Once A announces piece 0, it is out: B gets it from A, not from us...
    t.msg(t.t0, a, Message::Have { index: 0 }).unwrap();
    t.request(t.t0, b, blk(0, 0)).unwrap();
    assert_eq!(sent(&t.acts(), b), vec![Out::Reject(blk(0, 0))]);
    // ...until every piece is out.
    for index in 1..4 {
        t.msg(t.t0, a, Message::Have { index }).unwrap();
    }
    t.request(t.t0, b, blk(0, 0)).unwrap();
    assert!(sent(&t.acts(), b).is_empty());
    assert_eq!(t.sw.uploads(b).unwrap().len(), 2);
}

#[test]
fn a_first_seeders_grants_go_back_when_the_peer_leaves() {
    let mut t = T::new(4);
    t.verify_all();
    t.shared.initial_seed.store(true, Ordering::Relaxed);
    let a = t.leecher(1);
    let b = t.leecher(2);
    t.request(t.t0, a, blk(3, 0)).unwrap();
    t.sw.peer_closed(t.t0, a);
    t.acts();
    t.request(t.t0, b, blk(3, 0)).unwrap();
    assert!(sent(&t.acts(), b).is_empty());
    assert_eq!(t.sw.uploads(b).unwrap().len(), 1);
}

// ---- stalls, redials, stop ------------------------------------------------------------------

#[test]
fn a_lone_silent_peer_is_dropped_only_after_the_stall_ceiling() {
    let mut t = T::new(4);
    let a = t.seed(1);
    t.acts();
    t.tick(t.at(STALL_FLOOR + secs(1)));
    assert!(
        !closed(&t.acts(), a),
        "nobody else delivers: the path may be slow"
    );
    t.tick(t.at(STALL_CEILING - ms(100)));
    assert!(!closed(&t.acts(), a));
    t.tick(t.at(STALL_CEILING + ms(100)));
    assert!(closed(&t.acts(), a));
}

#[test]
fn a_silent_peer_is_dropped_after_the_stall_floor_while_others_deliver() {
    let mut t = T::new(4);
    let a = t.seed(1);
    t.acts();
    let b = t.seed(2);
    let rb = requests(&t.acts(), b);
    assert!(!rb.is_empty());
    t.deliver(t.at(ms(4500)), b, rb[0]);
    t.acts();
    t.tick(t.at(ms(4900)));
    assert!(!closed(&t.acts(), a), "not yet 5 s");
    t.tick(t.at(ms(5100)));
    let acts = t.acts();
    assert!(closed(&acts, a), "{acts:?}");
    assert!(!closed(&acts, b));
}

#[test]
fn a_peer_without_requests_out_never_stalls() {
    let mut t = T::new(4);
    let k = t.connect(1);
    t.msg(t.t0, k, Message::HaveNone).unwrap();
    t.tick(t.at(STALL_CEILING * 2));
    assert!(!closed(&t.acts(), k));
}

#[test]
fn an_outgoing_peer_that_served_us_is_redialled_after_a_back_off() {
    let mut t = T::new(4);
    let k = t.connect_as(1, T::info(1, true), true, t.t0);
    let now = t.at(secs(1));
    t.sw.peer_closed(now, k);
    assert_eq!(t.sw.poll_timeout(), Some(now + ms(250)));
    t.tick(now + ms(249));
    assert!(dials(&t.acts()).is_empty());
    t.tick(now + ms(250));
    assert_eq!(dials(&t.acts()), vec![(addr(1), 1)]);
    assert_eq!(t.sw.poll_timeout(), None);
}

#[test]
fn failed_dials_back_off_longer_and_give_up_after_max_attempts() {
    let mut t = T::with(4, |c| c.max_dial_attempts = 3);
    t.sw.add_peer_address(t.t0, addr(1));
    assert_eq!(dials(&t.acts()), vec![(addr(1), 1)]);
    t.sw.dial_failed(t.t0, addr(1), 1);
    assert_eq!(t.sw.poll_timeout(), Some(t.at(ms(500))));
    t.tick(t.at(ms(500)));
    assert_eq!(dials(&t.acts()), vec![(addr(1), 2)]);
    t.sw.dial_failed(t.at(ms(500)), addr(1), 2);
    assert_eq!(t.sw.poll_timeout(), Some(t.at(ms(1250))));
    t.tick(t.at(ms(1250)));
    assert_eq!(dials(&t.acts()), vec![(addr(1), 3)]);
    t.sw.dial_failed(t.at(ms(1250)), addr(1), 3);
    assert_eq!(t.sw.poll_timeout(), None, "three attempts: given up");
}

#[test]
fn a_banned_address_is_not_dialled_nor_redialled() {
    let mut t = T::new(4);
    t.shared.peers.lock().unwrap().banned.ban(ip(1), t.t0);
    t.sw.add_peer_address(t.t0, addr(1));
    assert!(dials(&t.acts()).is_empty());
    t.sw.add_peer_address(t.t0, addr(2));
    assert_eq!(dials(&t.acts()).len(), 1);
    t.sw.dial_failed(t.t0, addr(2), 1);
    t.shared.peers.lock().unwrap().banned.ban(ip(2), t.t0);
    t.tick(t.at(secs(1)));
    assert!(dials(&t.acts()).is_empty());
}

#[test]
fn nothing_is_redialled_once_every_piece_is_verified() {
    let mut t = T::new(4);
    t.verify_all();
    t.sw.dial_failed(t.t0, addr(1), 1);
    assert_eq!(t.sw.poll_timeout(), None);
}

#[test]
fn stop_closes_every_peer_and_asks_for_nothing_more() {
    let mut t = T::new(4);
    let a = t.seed(1);
    let b = t.connect(2);
    t.sw.dial_failed(t.t0, addr(3), 1);
    t.acts();
    t.sw.stop("removed");
    let acts = t.acts();
    assert!(closed(&acts, a) && closed(&acts, b));
    assert!(t.sw.is_stopped());
    assert_eq!(
        t.sw.poll_timeout().map(|_| ()),
        Some(()),
        "the tick may remain"
    );
    t.tick(t.at(secs(1)));
    assert!(dials(&t.acts()).is_empty(), "no redial after stop");
    t.sw.add_peer_address(t.t0, addr(4));
    t.msg(t.at(secs(1)), a, Message::Unchoke).unwrap();
    let acts = t.acts();
    assert!(dials(&acts).is_empty());
    assert!(requests(&acts, a).is_empty());
}

#[test]
fn an_index_reused_without_a_close_forgets_the_old_connection() {
    let mut t = T::new(4);
    let old = t.seed(1);
    t.acts();
    let new = PeerKey {
        index: old.index,
        gen: 1,
    };
    t.sw.peer_connected(t.t0, new, T::info(7, false));
    assert_eq!(t.sw.peer_count(), 1);
    assert_eq!(t.shared.counters.connected.load(Ordering::Relaxed), 0);
    assert_eq!(t.shared.claimed.count_ones(), 0);
    assert!(t.sw.peer(old).is_none());
    t.sw.handshake(t.t0, new, &hs_for(&t, 1)).unwrap();
}

// ---- metadata ----------------------------------------------------------------------------

#[test]
fn ut_metadata_requests_are_served_and_out_of_range_ones_rejected() {
    let mut t = T::new(4);
    let k = t.connect(1);
    let req = MetadataMsg::Request { piece: 0 }.encode();
    // Before the peer told its id for ut_metadata: nothing to answer with.
    t.msg(t.t0, k, ext(extension::OUR_UT_METADATA_ID, &req))
        .unwrap();
    assert!(t.acts().is_empty());
    let hs = ExtHandshake {
        extensions: vec![("ut_metadata".into(), 7)],
        ..Default::default()
    }
    .encode();
    t.msg(t.t0, k, ext(extension::HANDSHAKE_ID, &hs)).unwrap();
    t.msg(t.t0, k, ext(extension::OUR_UT_METADATA_ID, &req))
        .unwrap();
    let info = t.sw.meta.info_bytes.clone();
    let want = MetadataMsg::Data {
        piece: 0,
        total_size: info.len() as u64,
        data: &info,
    }
    .encode();
    assert_eq!(
        sent(&t.acts(), k),
        vec![Out::Extended {
            id: 7,
            payload: want
        }]
    );
    let far = MetadataMsg::Request { piece: 5 }.encode();
    t.msg(t.t0, k, ext(extension::OUR_UT_METADATA_ID, &far))
        .unwrap();
    assert_eq!(
        sent(&t.acts(), k),
        vec![Out::Extended {
            id: 7,
            payload: MetadataMsg::Reject { piece: 5 }.encode()
        }]
    );
    assert!(t
        .msg(t.t0, k, ext(extension::OUR_UT_METADATA_ID, b"garbage"))
        .is_err());
}

fn ext(id: u8, payload: &[u8]) -> Message<'_> {
    Message::Extended { id, payload }
}

#[test]
fn verified_elsewhere_tells_every_peer_and_not_interested_at_the_end() {
    let mut t = T::new(2);
    t.verify([0]);
    let a = t.seed(1);
    t.acts();
    t.shared.mark_verified(1);
    t.sw.verified_elsewhere(1);
    let acts = t.acts();
    let out = sent(&acts, a);
    assert!(
        out.ends_with(&[Out::Have(1), Out::NotInterested]),
        "{out:?}"
    );
    assert_eq!(
        cancels(&acts, a).len(),
        BPP as usize,
        "our copy is abandoned"
    );
    assert!(acts.iter().any(|x| matches!(x, Action::Discard { .. })));
    assert!(!t.sw.in_progress(1));
}

#[test]
fn a_peer_that_completes_from_us_counts_as_a_receiver_but_a_seed_does_not() {
    let mut full = Bitfield::full(3);
    assert!(counts_as_receiver(false, 10, &full));
    assert!(!counts_as_receiver(true, 10, &full), "opened as a seed");
    assert!(!counts_as_receiver(false, 0, &full), "we sent it nothing");
    full.clear(1);
    assert!(!counts_as_receiver(false, 10, &full));
}

#[test]
fn a_second_handshake_is_refused_and_leaves_no_peer_id_behind() {
    let mut t = T::new(4);
    let k = t.connect(1);
    let err = t.sw.handshake(t.t0, k, &hs_for(&t, 9)).unwrap_err();
    assert!(err.contains("second handshake"), "{err}");
    t.sw.peer_closed(t.t0, k);
    assert!(
        t.shared.peers.lock().unwrap().connected.is_empty(),
        "neither id stays connected"
    );
    let k2 = PeerKey { index: 2, gen: 0 };
    t.sw.peer_connected(t.t0, k2, T::info(2, false));
    assert!(t.sw.handshake(t.t0, k2, &hs_for(&t, 9)).is_ok());
}

#[test]
fn a_peer_being_closed_gets_no_slot_and_no_request_after_the_close() {
    let mut t = T::new(4);
    t.verify([1]);
    let k = t.connect(1);
    t.msg(t.t0, k, Message::Have { index: 0 }).unwrap();
    t.msg(t.t0, k, Message::Unchoke).unwrap();
    t.msg(t.t0, k, Message::Interested).unwrap();
    assert!(!requests(&t.acts(), k).is_empty());
    // Idle in its slot: choked, and still waiting for one.
    t.tick(t.at(ms(3100)));
    assert!(sent(&t.acts(), k).contains(&Out::Choke));
    // No block for the stall ceiling: closed, and nothing for it after the CLOSE.
    t.tick(t.at(STALL_CEILING + ms(200)));
    let acts = t.acts();
    let at = acts
        .iter()
        .position(|a| matches!(a, Action::Close { peer, .. } if *peer == k))
        .expect("closed");
    let after: Vec<&Action> = acts[at + 1..]
        .iter()
        .filter(|a| matches!(a, Action::Send { peer, .. } if *peer == k))
        .collect();
    assert!(after.is_empty(), "{after:?}");
    assert_eq!(t.shared.counters.unchoked.load(Ordering::Relaxed), 0);
    t.tick(t.at(STALL_CEILING + ms(300)));
    assert!(!closed(&t.acts(), k), "closed once, not every tick");
}

#[test]
fn a_piece_written_by_two_cores_is_announced_once() {
    let mut one = T::new(1);
    let mut two = one.second_core();
    let a = one.seed(1);
    let ra = requests(&one.acts(), a);
    let b = two.seed(2);
    two.prove(b);
    two.tick(two.at(ms(100)));
    let rb = requests(&two.acts(), b);
    assert_eq!(rb.len(), BPP as usize, "an endgame duplicate");
    let now = one.at(ms(200));
    let h1 = deliver_all(&mut one, now, a, &ra);
    let h2 = deliver_all(&mut two, now, b, &rb);
    let ([(0, buf1)], [(0, buf2)]) = (&h1[..], &h2[..]) else {
        panic!("{h1:?} {h2:?}")
    };
    // Both copies pass their hash before either is written.
    one.sw.piece_hashed(now, 0, *buf1, true, &mut one.bufs);
    two.sw.piece_hashed(now, 0, *buf2, true, &mut two.bufs);
    one.acts();
    two.acts();
    one.sw.piece_written(0, true);
    let acts = one.acts();
    assert!(acts.contains(&Action::Broadcast { piece: 0 }));
    assert_eq!(sent(&acts, a), vec![Out::Have(0), Out::NotInterested]);
    two.sw.verified_elsewhere(0);
    assert_eq!(sent(&two.acts(), b), vec![Out::Have(0), Out::NotInterested]);
    two.sw.piece_written(0, true);
    let acts = two.acts();
    assert!(acts.is_empty(), "announced already: {acts:?}");
    assert!(!two.sw.busy());
}

#[test]
fn a_steal_keeps_the_remaining_requester_of_a_block_whose_first_requester_left() {
    let mut t = T::new(1);
    // A asks for every block; B (faster) steals them once late; then A chokes us, so
    // each block is requested from B alone, in the second place.
    let a = t.connect(1);
    t.msg(t.t0, a, Message::HaveAll).unwrap();
    t.prove(a);
    t.set_rate(a, 16 << 10, t.t0);
    t.msg(t.t0, a, Message::Unchoke).unwrap();
    assert_eq!(requests(&t.acts(), a).len(), BPP as usize);
    let b = t.connect(2);
    t.msg(t.t0, b, Message::HaveAll).unwrap();
    t.prove(b);
    t.set_rate(b, 256 << 10, t.t0);
    t.msg(t.t0, b, Message::Unchoke).unwrap();
    let now = t.at(ms(300));
    t.sw.fill(now, b, &mut t.bufs);
    let rb = requests(&t.acts(), b);
    assert_eq!(rb.len(), BPP as usize);
    t.msg(now, a, Message::Choke).unwrap();
    t.acts();
    // C, much faster than B, steals from B.
    let c = t.connect(3);
    t.msg(now, c, Message::HaveAll).unwrap();
    t.prove(c);
    t.set_rate(c, 8 << 20, now);
    t.msg(now, c, Message::Unchoke).unwrap();
    let later = now + ms(300);
    t.sw.fill(later, c, &mut t.bufs);
    let rc = requests(&t.acts(), c);
    assert_eq!(rc.len(), BPP as usize);
    // B's copy of block 0 still counts and C is cancelled for it; C's copy of block 1
    // cancels B's.
    assert!(
        t.deliver(later, b, rb[0]).is_some(),
        "B is still a requester"
    );
    assert_eq!(cancels(&t.acts(), c), vec![rb[0]]);
    t.deliver(later, c, rb[1]);
    assert_eq!(cancels(&t.acts(), b), vec![rb[1]]);
    assert_eq!(t.sw.peer(b).unwrap().requests_out, BPP - 2);
}

/// Our place east/r1, piece 0 of 2 verified; a slow remote peer X working on piece 1; a
/// rack peer R holding piece 1 (`r_serves`: proven and unchoking us, else neither); a
/// fast proven remote seed S. Returns what S asks for once X's requests are late.
fn rescue_from_remote(r_serves: bool) -> Vec<BlockRef> {
    rescue_from_remote_with(|t, r| {
        if r_serves {
            t.prove(r);
            t.msg(t.t0, r, Message::Unchoke).unwrap();
        }
    })
}

/// [`rescue_from_remote`], with `set_up_r` putting the rack peer R in the state to test.
fn rescue_from_remote_with(set_up_r: impl FnOnce(&mut T, PeerKey)) -> Vec<BlockRef> {
    let mut t = T::new(2);
    t.verify([0]);
    let x = t.connect_as(1, placed(1, place("west", "w1")), true, t.t0);
    t.msg(t.t0, x, Message::HaveAll).unwrap();
    t.set_rate(x, 1 << 10, t.t0);
    t.msg(t.t0, x, Message::Unchoke).unwrap();
    assert_eq!(pieces_of(&requests(&t.acts(), x)), vec![1]);
    let r = t.connect_as(0x90, placed(0x90, place("east", "r1")), true, t.t0);
    t.msg(t.t0, r, Message::HaveAll).unwrap();
    set_up_r(&mut t, r);
    let s = t.connect_as(2, placed(2, place("west", "w2")), true, t.t0);
    t.msg(t.t0, s, Message::HaveAll).unwrap();
    t.prove(s);
    t.set_rate(s, 4 << 20, t.t0);
    t.msg(t.t0, s, Message::Unchoke).unwrap();
    assert!(requests(&t.acts(), s).is_empty());
    t.sw.fill(t.at(ms(300)), s, &mut t.bufs);
    requests(&t.acts(), s)
}

#[test]
fn a_remote_peer_rescues_a_piece_the_rack_has_but_no_rack_peer_here_can_fetch() {
    assert_eq!(
        pieces_of(&rescue_from_remote(false)),
        vec![1],
        "the rack peer holding it is unproven and choking us: the remote seed steals"
    );
    assert!(
        rescue_from_remote(true).is_empty(),
        "a rack peer able to fetch it: the remote seed stays out"
    );
}

#[test]
fn a_rack_peer_that_chokes_us_or_is_being_closed_does_not_keep_a_remote_rescuer_out() {
    assert_eq!(
        pieces_of(&rescue_from_remote_with(|t, r| t.prove(r))),
        vec![1],
        "proven, but choking us: it cannot fetch the piece, the remote seed steals"
    );
    assert_eq!(
        pieces_of(&rescue_from_remote_with(|t, r| {
            t.prove(r);
            t.msg(t.t0, r, Message::Unchoke).unwrap();
            t.sw.close(r, "stalled");
        })),
        vec![1],
        "proven and unchoking, but being closed: the remote seed steals"
    );
}

/// Our place east/r1, piece 0 of 2 verified; a proven rack peer R holding piece 1 and
/// unchoking us, asked for its blocks at t0 and silent since (a host that died without a
/// FIN); a fast proven remote seed S. What S asks for at `at`.
fn rescue_from_a_silent_rack_peer(at: Duration) -> Vec<BlockRef> {
    let mut t = T::new(2);
    t.verify([0]);
    let r = t.connect_as(0x90, placed(0x90, place("east", "r1")), true, t.t0);
    t.msg(t.t0, r, Message::HaveAll).unwrap();
    t.prove(r);
    t.msg(t.t0, r, Message::Unchoke).unwrap();
    assert_eq!(pieces_of(&requests(&t.acts(), r)), vec![1]);
    let s = t.connect_as(2, placed(2, place("west", "w2")), true, t.t0);
    t.msg(t.t0, s, Message::HaveAll).unwrap();
    t.prove(s);
    t.set_rate(s, 4 << 20, t.t0);
    t.msg(t.t0, s, Message::Unchoke).unwrap();
    assert!(
        requests(&t.acts(), s).is_empty(),
        "the rack peer fetches it"
    );
    t.sw.fill(t.at(at), s, &mut t.bufs);
    requests(&t.acts(), s)
}

#[test]
fn a_rack_peer_that_stalls_on_the_last_piece_does_not_keep_a_remote_rescuer_out() {
    assert!(
        rescue_from_a_silent_rack_peer(ms(500)).is_empty(),
        "silent for less than STALLING: the rack peer may still deliver"
    );
    assert_eq!(
        pieces_of(&rescue_from_a_silent_rack_peer(
            requests::STALLING + ms(100)
        )),
        vec![1],
        "silent for STALLING: the remote seed steals (not STALL_CEILING later)"
    );
}

// ---- coverage of the remaining decisions (issue 12) --------------------------------------

/// `values[i]` of per-piece counters.
fn counts(values: &[std::sync::atomic::AtomicU32]) -> Vec<u32> {
    values.iter().map(|v| v.load(Ordering::Relaxed)).collect()
}

#[test]
fn the_core_hands_out_the_torrents_shared_state() {
    let t = T::new(4);
    assert!(Arc::ptr_eq(t.sw.shared(), &t.shared));
}

#[test]
fn poll_timeout_is_the_earlier_of_the_tick_and_the_next_redial() {
    let mut t = T::new(4);
    let now = t.at(secs(1));
    t.connect_as(1, T::info(1, false), true, now);
    // A redial half a second after `now`: the tick (100 ms) comes first.
    t.sw.dial_failed(now, addr(5), 1);
    assert_eq!(t.sw.poll_timeout(), Some(now + timers::TICK));
    // A redial due at t0 + 500 ms: before the tick.
    t.sw.dial_failed(t.t0, addr(6), 1);
    assert_eq!(t.sw.poll_timeout(), Some(t.at(ms(500))));
}

#[test]
fn while_a_piece_is_hashed_the_core_is_busy_and_names_its_writers() {
    let mut t = T::new(4);
    let a = t.seed(1);
    let reqs = requests(&t.acts(), a);
    assert!(!t.sw.busy());
    let t0 = t.t0;
    let hashes = deliver_all(&mut t, t0, a, &reqs);
    let [(p, buf)] = hashes[..] else {
        panic!("{hashes:?}")
    };
    assert!(t.sw.busy(), "waiting on the hash");
    assert_eq!(t.sw.writers_of(p), Some(vec![ip(1)]));
    assert_eq!(t.sw.writers_of((p + 1) % 4), None, "not being hashed");
    t.sw.piece_hashed(t0, p, buf, true, &mut t.bufs);
    assert_eq!(t.sw.writers_of(p), None, "hashed");
    assert!(t.sw.busy(), "waiting on the write");
}

#[test]
fn inputs_for_an_unknown_or_stale_connection_are_refused_or_ignored() {
    let mut t = T::new(4);
    let a = t.seed(1);
    t.acts();
    let never = PeerKey { index: 50, gen: 0 };
    let stale = PeerKey {
        index: a.index,
        gen: 9,
    };
    for k in [never, stale] {
        let e = t.msg(t.t0, k, Message::Interested).unwrap_err();
        assert!(e.contains("unknown connection"), "{e}");
        let e = t.sw.handshake(t.t0, k, &hs_for(&t, 7)).unwrap_err();
        assert!(e.contains("unknown connection"), "{e}");
        assert_eq!(t.sw.block_fragment(k, 0, 0, BLOCK_SIZE), None);
        t.sw.blocks_sent(t.t0, k, 1, 100);
        t.sw.peer_closed(t.t0, k);
    }
    assert!(t.acts().is_empty());
    assert_eq!(t.shared.counters.uploaded.load(Ordering::Relaxed), 0);
    assert_eq!(
        t.shared.counters.connected.load(Ordering::Relaxed),
        1,
        "the real connection is untouched"
    );
    assert_eq!(t.sw.peer_count(), 1);
    assert_eq!(counts(&t.shared.availability), vec![1; 4]);
}

#[test]
fn a_connection_closed_twice_is_counted_out_once() {
    let mut t = T::new(4);
    let a = t.seed(1);
    t.acts();
    t.sw.peer_closed(t.t0, a);
    t.sw.peer_closed(t.t0, a);
    assert_eq!(t.shared.counters.connected.load(Ordering::Relaxed), 0);
    assert_eq!(counts(&t.shared.availability), vec![0; 4]);
    assert_eq!(t.sw.peer_count(), 0);
}

#[test]
fn an_outgoing_peer_lost_before_its_handshake_is_redialled_with_a_longer_back_off() {
    let mut t = T::new(4);
    let k = PeerKey { index: 1, gen: 0 };
    let mut info = T::info(1, true);
    info.attempt = 2;
    t.sw.peer_connected(t.t0, k, info);
    assert_eq!(sent(&t.acts(), k), vec![Out::Handshake]);
    t.sw.peer_closed(t.t0, k);
    assert_eq!(
        t.shared.counters.connected.load(Ordering::Relaxed),
        0,
        "it was never counted in"
    );
    assert_eq!(
        t.sw.poll_timeout(),
        Some(t.at(ms(750))),
        "attempt 3: 3 × 250 ms"
    );
    t.tick(t.at(ms(750)));
    assert_eq!(dials(&t.acts()), vec![(addr(1), 3)]);
}

#[test]
fn after_stop_nothing_is_redialled_and_a_second_stop_closes_nobody_again() {
    let mut t = T::new(4);
    let a = t.connect_as(1, T::info(1, true), true, t.t0);
    t.sw.stop("failed");
    assert!(closed(&t.acts(), a));
    t.sw.stop("failed");
    assert!(t.acts().is_empty(), "closed once");
    // The outgoing peer that served us goes, a dial fails: neither is dialled again.
    t.sw.peer_closed(t.t0, a);
    t.sw.dial_failed(t.t0, addr(2), 1);
    assert_eq!(t.sw.poll_timeout(), None);
    assert!(t.acts().is_empty());
}

#[test]
fn forget_pieces_discards_every_buffer_cancels_its_requests_and_releases_the_claims() {
    let mut t = T::new(8);
    let a = t.proven_seed(1);
    let reqs = requests(&t.acts(), a);
    let pieces = pieces_of(&reqs);
    assert!(pieces.len() > 1, "{pieces:?}");
    t.sw.forget_pieces();
    let acts = t.acts();
    let discards = acts
        .iter()
        .filter(|x| matches!(x, Action::Discard { .. }))
        .count();
    assert_eq!(discards, pieces.len());
    let cancelled = cancels(&acts, a);
    assert_eq!(cancelled.len(), reqs.len());
    assert!(reqs.iter().all(|r| cancelled.contains(r)));
    assert_eq!(t.shared.claimed.count_ones(), 0);
    assert!(pieces.iter().all(|&p| !t.sw.in_progress(p)));
    assert_eq!(t.sw.peer(a).unwrap().requests_out, 0);
}

#[test]
fn keep_alive_port_suggest_allowed_fast_piece_and_unknown_messages_change_nothing() {
    let mut t = T::new(4);
    let k = t.connect(1);
    for m in [
        Message::KeepAlive,
        Message::Port { port: 6881 },
        Message::Suggest { index: 0 },
        Message::AllowedFast { index: 0 },
        Message::Unknown { id: 77 },
        Message::Piece {
            index: 0,
            begin: 0,
            data: &[0; 4],
        },
    ] {
        t.msg(t.t0, k, m).unwrap();
    }
    assert!(t.acts().is_empty());
    let p = t.sw.peer(k).unwrap();
    assert!(p.peer_choking && !p.am_interested && !p.got_bitfield);
    assert_eq!(p.requests_out, 0);
    assert_eq!(t.shared.claimed.count_ones(), 0);
}

#[test]
fn a_late_bitfield_or_have_none_after_have_all_changes_nothing() {
    let mut t = T::new(4);
    let a = t.connect(1);
    t.msg(t.t0, a, Message::HaveAll).unwrap();
    t.msg(t.t0, a, Message::Bitfield { bits: &[0x80] }).unwrap();
    t.msg(t.t0, a, Message::HaveNone).unwrap();
    assert_eq!(
        counts(&t.shared.availability),
        vec![1; 4],
        "each piece counted once, none taken back"
    );
}

#[test]
fn a_bitfield_of_the_wrong_size_or_with_spare_bits_set_drops_the_peer() {
    let mut t = T::new(4);
    let a = t.connect(1);
    let e = t
        .msg(t.t0, a, Message::Bitfield { bits: &[0xf0, 0] })
        .unwrap_err();
    assert!(e.contains("bad bitfield"), "{e}");
    let e = t
        .msg(t.t0, a, Message::Bitfield { bits: &[0x08] })
        .unwrap_err();
    assert!(e.contains("bad bitfield"), "{e}");
    assert!(!t.sw.peer(a).unwrap().got_bitfield);
    assert_eq!(counts(&t.shared.availability), vec![0; 4]);
}

#[test]
fn have_none_without_the_fast_extension_drops_the_peer() {
    let mut t = T::new(4);
    let k = t.connect_as(1, T::info(1, false), false, t.t0);
    let e = t.msg(t.t0, k, Message::HaveNone).unwrap_err();
    assert!(e.contains("fast extension"), "{e}");
}

#[test]
fn a_malformed_extension_handshake_drops_the_peer_and_an_unassigned_extension_id_is_ignored() {
    let mut t = T::new(4);
    let k = t.connect(1);
    let e = t
        .msg(t.t0, k, ext(extension::HANDSHAKE_ID, b"garbage"))
        .unwrap_err();
    assert!(e.contains("bad extension handshake"), "{e}");
    t.msg(t.t0, k, ext(extension::OUR_FETCHING_ID + 1, b"garbage"))
        .unwrap();
    assert!(t.acts().is_empty());
    let e = t
        .msg(t.t0, k, ext(extension::OUR_FETCHING_ID, b"xy"))
        .unwrap_err();
    assert!(e.contains("rs_fetching"), "{e}");
    let e = t
        .msg(
            t.t0,
            k,
            ext(
                extension::OUR_FETCHING_ID,
                &extension::encode_fetching(FetchingWord::Started(4)),
            ),
        )
        .unwrap_err();
    assert!(e.contains("piece 4 of 4"), "{e}");
}

#[test]
fn a_peer_restating_its_place_moves_between_rack_dc_and_remote_and_the_rack_counts_follow() {
    let mut t = T::new(4);
    let mut info = T::info(1, false);
    info.our_place = place("east", "r1");
    let k = t.connect_as(1, info, true, t.t0);
    t.msg(t.t0, k, Message::Have { index: 2 }).unwrap();
    let state = |t: &mut T, dc: &str, rack: &str| {
        let hs = ExtHandshake {
            dc: Some(dc.into()),
            rack: Some(rack.into()),
            ..Default::default()
        }
        .encode();
        t.msg(t.t0, k, ext(extension::HANDSHAKE_ID, &hs)).unwrap();
        let p = t.sw.peer(k).unwrap();
        (
            p.locality,
            t.shared.rack_availability[2].load(Ordering::Relaxed),
            t.shared.share().members,
        )
    };
    assert_eq!(state(&mut t, "east", "r1"), (Locality::Rack, 1, 2));
    assert_eq!(
        state(&mut t, "east", "r2"),
        (Locality::Dc, 0, 1),
        "out of the rack: out of its availability and membership"
    );
    assert_eq!(
        state(&mut t, "west", "r1"),
        (Locality::Remote, 0, 1),
        "dc to remote: the rack counts do not move"
    );
    assert_eq!(counts(&t.shared.availability), vec![0, 0, 1, 0]);
    t.sw.peer_closed(t.t0, k);
    assert_eq!(counts(&t.shared.availability), vec![0; 4]);
    assert_eq!(counts(&t.shared.rack_availability), vec![0; 4]);
}

#[test]
fn a_bitfield_after_haves_replaces_their_counts() {
    let mut t = T::new(4);
    // Our place unknown: a rack peer. And a remote peer, for a placed view of us.
    let r = t.connect(1);
    let x = t.connect_as(2, placed(2, place("west", "w1")), true, t.t0);
    for k in [r, x] {
        t.msg(t.t0, k, Message::Have { index: 0 }).unwrap();
        t.msg(
            t.t0,
            k,
            Message::Bitfield {
                bits: &[0b0110_0000],
            },
        )
        .unwrap();
    }
    assert_eq!(counts(&t.shared.availability), vec![0, 2, 2, 0]);
    assert_eq!(counts(&t.shared.rack_availability), vec![0, 1, 1, 0]);
    t.sw.peer_closed(t.t0, r);
    t.sw.peer_closed(t.t0, x);
    assert_eq!(counts(&t.shared.availability), vec![0; 4]);
    assert_eq!(counts(&t.shared.rack_availability), vec![0; 4]);
}

#[test]
fn a_peer_still_handshaking_is_passed_over_by_the_tick_and_hears_no_have() {
    let mut t = T::new(2);
    t.verify([0]);
    let h = PeerKey { index: 9, gen: 0 };
    t.sw.peer_connected(t.t0, h, T::info(9, false));
    let a = t.seed(1);
    let reqs = requests(&t.acts(), a);
    let t0 = t.t0;
    let hashes = deliver_all(&mut t, t0, a, &reqs);
    let [(p, buf)] = hashes[..] else {
        panic!("{hashes:?}")
    };
    t.sw.piece_hashed(t0, p, buf, true, &mut t.bufs);
    t.sw.piece_written(p, true);
    let acts = t.acts();
    assert!(sent(&acts, a).contains(&Out::Have(p)));
    assert!(sent(&acts, h).is_empty(), "{acts:?}");
    t.tick(t.at(STALL_CEILING + secs(1)));
    let acts = t.acts();
    assert!(!closed(&acts, h) && sent(&acts, h).is_empty(), "{acts:?}");
    assert_eq!(t.sw.peer(h).unwrap().phase, Phase::Handshaking);
    // Its handshake, when it comes, tells it everything at once.
    t.sw.handshake(t.t0, h, &hs_for(&t, 9)).unwrap();
    assert!(sent(&t.acts(), h).contains(&Out::HaveAll));
}

#[test]
fn a_hash_or_write_result_for_a_piece_not_in_that_state_only_discards_the_buffer() {
    let mut t = T::new(4);
    t.sw.piece_hashed(t.t0, 2, BufId(77), true, &mut t.bufs);
    assert_eq!(t.acts(), vec![Action::Discard { buf: BufId(77) }]);
    assert!(!t.sw.busy());
    t.sw.piece_written(2, true);
    assert!(t.acts().is_empty());
    assert!(
        !t.shared.verified.get(2),
        "a write never asked for verifies nothing"
    );
}

#[test]
fn a_piece_hashed_after_stop_is_discarded_and_its_claim_released() {
    let mut t = T::new(4);
    let a = t.seed(1);
    let reqs = requests(&t.acts(), a);
    let t0 = t.t0;
    let hashes = deliver_all(&mut t, t0, a, &reqs);
    let [(p, buf)] = hashes[..] else {
        panic!("{hashes:?}")
    };
    assert!(t.shared.claimed.get(p));
    t.sw.stop("removed");
    t.acts();
    t.sw.piece_hashed(t0, p, buf, true, &mut t.bufs);
    assert_eq!(t.acts(), vec![Action::Discard { buf }], "no write");
    assert!(!t.shared.claimed.get(p));
    assert!(!t.sw.busy());
}

#[test]
fn a_duplicate_copy_that_fails_its_hash_or_write_leaves_the_claim_of_the_core_that_owns_it() {
    let mut one = T::new(1);
    let mut two = one.second_core();
    let a = one.seed(1);
    assert_eq!(requests(&one.acts(), a).len(), BPP as usize);
    assert!(one.shared.claimed.get(0));
    let b = two.seed(2);
    two.prove(b);
    for round in 1..=2u64 {
        let now = two.at(ms(100 * round));
        two.tick(now);
        let rb = requests(&two.acts(), b);
        assert_eq!(
            rb.len(),
            BPP as usize,
            "round {round}: an endgame duplicate"
        );
        let hashes = deliver_all(&mut two, now, b, &rb);
        let [(0, buf)] = hashes[..] else {
            panic!("{hashes:?}")
        };
        if round == 1 {
            two.sw.piece_hashed(now, 0, buf, false, &mut two.bufs);
        } else {
            two.sw.piece_hashed(now, 0, buf, true, &mut two.bufs);
            two.sw.piece_written(0, false);
        }
        two.acts();
        assert!(
            two.shared.claimed.get(0),
            "round {round}: core one still fetches it"
        );
    }
}

#[test]
fn a_block_that_is_not_exactly_one_of_ours_is_dropped_without_effect() {
    let mut t = T::new(4);
    let a = t.seed(1);
    let reqs = requests(&t.acts(), a);
    let r = reqs[0];
    assert_eq!(
        t.sw.block_fragment(a, r.piece, r.begin + 1, r.len - 1),
        None
    );
    assert_eq!(t.sw.block_fragment(a, r.piece, r.begin, r.len - 1), None);
    t.sw.block_received(t.t0, a, r.piece, r.begin + 1, r.len - 1, &mut t.bufs)
        .unwrap();
    assert!(t.acts().is_empty());
    assert_eq!(t.sw.peer(a).unwrap().requests_out, BPP);
    assert_eq!(t.shared.counters.downloaded.load(Ordering::Relaxed), 0);
}

#[test]
fn a_writer_that_left_is_still_banned_by_its_second_bad_piece() {
    let mut t = T::new(4);
    assert!(!t.shared.strike(ip(1), t.t0), "an earlier bad piece");
    let a = t.seed(1);
    let reqs = requests(&t.acts(), a);
    let t0 = t.t0;
    let hashes = deliver_all(&mut t, t0, a, &reqs);
    let [(p, buf)] = hashes[..] else {
        panic!("{hashes:?}")
    };
    t.sw.peer_closed(t0, a);
    t.acts();
    t.sw.piece_hashed(t0, p, buf, false, &mut t.bufs);
    assert_eq!(t.acts(), vec![Action::Discard { buf }], "nobody to close");
    assert!(t.shared.is_banned(ip(1), t0));
}

#[test]
fn unpublish_waiting_takes_this_cores_waiting_peers_out_of_the_torrents_count() {
    let mut t = T::with(4, |c| c.upload_slots = 1);
    t.verify_all();
    let a = t.leecher(1);
    let b = t.leecher(2);
    t.acts();
    t.tick(t.at(ms(100)));
    assert!(!t.sw.peer(a).unwrap().am_choking && t.sw.peer(b).unwrap().am_choking);
    let waiting = || t.shared.counters.waiting.load(Ordering::Relaxed);
    assert_eq!(waiting(), 1);
    t.sw.unpublish_waiting();
    assert_eq!(t.shared.counters.waiting.load(Ordering::Relaxed), 0);
    t.sw.unpublish_waiting();
    assert_eq!(
        t.shared.counters.waiting.load(Ordering::Relaxed),
        0,
        "taken out once"
    );
}

#[test]
fn a_peer_being_closed_is_not_unchoked_when_it_says_interested() {
    let mut t = T::new(4);
    let k = t.holder(1, 0);
    assert!(!requests(&t.acts(), k).is_empty());
    let now = t.at(STALL_CEILING + secs(1));
    t.tick(now);
    assert!(closed(&t.acts(), k), "stalled");
    t.msg(now, k, Message::Interested).unwrap();
    assert!(sent(&t.acts(), k).is_empty(), "no UNCHOKE after the CLOSE");
    assert_eq!(t.shared.counters.unchoked.load(Ordering::Relaxed), 0);
}

#[test]
fn a_piece_whose_last_request_goes_stays_while_another_peer_works_on_it() {
    let mut t = T::new(1);
    let a = t.seed(1);
    assert_eq!(requests(&t.acts(), a).len(), BPP as usize);
    // B works on piece 0 with no request out there (as when its own requests there all
    // came in while A's are still out), and is choking us.
    let b = t.connect(2);
    t.msg(t.t0, b, Message::HaveAll).unwrap();
    t.sw.peer_mut(b).unwrap().pieces.push(0);
    t.acts();
    t.msg(t.t0, a, Message::Choke).unwrap();
    let acts = t.acts();
    assert!(
        !acts.iter().any(|x| matches!(x, Action::Discard { .. })),
        "{acts:?}"
    );
    assert!(t.sw.in_progress(0) && t.shared.claimed.get(0));
    // B unchokes us: the missing blocks of the piece it works on come first.
    t.msg(t.t0, b, Message::Unchoke).unwrap();
    let rb = requests(&t.acts(), b);
    assert_eq!(rb, (0..BPP).map(|i| blk(0, i)).collect::<Vec<_>>());
}

#[test]
fn a_download_limit_sends_only_the_requests_its_tokens_allow() {
    // 1 MiB/s: a burst of 256 KiB (16 blocks), then 0.1 MiB (6 blocks) per 100 ms.
    let limit = Arc::new(RateLimiter::new(1 << 20, Instant::now()));
    let l = limit.clone();
    let mut t = T::with(16, move |c| c.download_limit = Some(l));
    let a = t.proven_seed(1);
    assert_eq!(requests(&t.acts(), a).len(), 16);
    assert!(t.sw.peer(a).unwrap().refill_blocked);
    let now = t.at(ms(100));
    t.tick(now);
    assert_eq!(requests(&t.acts(), a).len(), 6);
    // The bucket is empty: nothing more now, not even in the pieces it works on.
    t.sw.fill(now, a, &mut t.bufs);
    assert!(requests(&t.acts(), a).is_empty());
    assert_eq!(t.sw.peer(a).unwrap().requests_out, 22);
    assert_eq!(
        limit.take_at(u64::MAX, now),
        6553,
        "the part-block given back"
    );
}

#[test]
fn a_download_limit_gets_back_the_tokens_of_requests_not_sent() {
    // 100 MiB/s: a burst of 10 MiB, far more than the one piece of 4 blocks needs.
    let limit = Arc::new(RateLimiter::new(100 << 20, Instant::now()));
    let l = limit.clone();
    let mut t = T::with(1, move |c| c.download_limit = Some(l));
    let a = t.proven_seed(1);
    assert_eq!(requests(&t.acts(), a).len(), BPP as usize);
    assert_eq!(
        limit.take_at(u64::MAX, t.t0),
        (10 << 20) - u64::from(BPP * BLOCK_SIZE),
        "only the blocks asked for are spent"
    );
}

#[test]
fn a_peer_placing_itself_in_our_rack_before_announcing_pieces_joins_the_membership_only() {
    let mut t = T::new(4);
    let mut info = T::info(1, false);
    info.our_place = place("east", "r1");
    let k = t.connect_as(1, info, true, t.t0);
    let hs = ExtHandshake {
        dc: Some("east".into()),
        rack: Some("r1".into()),
        ..Default::default()
    }
    .encode();
    t.msg(t.t0, k, ext(extension::HANDSHAKE_ID, &hs)).unwrap();
    assert_eq!(t.shared.share().members, 2);
    assert_eq!(counts(&t.shared.rack_availability), vec![0; 4]);
    // What it announces from now on counts in the rack.
    t.msg(t.t0, k, Message::Have { index: 2 }).unwrap();
    assert_eq!(counts(&t.shared.rack_availability), vec![0, 0, 1, 0]);
}

/// Poisons the torrent's peer book: a thread panics holding its lock.
fn poison_peer_book(shared: &Shared) {
    std::thread::scope(|s| {
        let poisoner = s.spawn(|| {
            let _held = shared.peers.lock().unwrap();
            panic!("poisoning the peer book on purpose");
        });
        assert!(poisoner.join().is_err());
    });
    assert!(shared.peers.is_poisoned());
}

#[test]
fn a_poisoned_peer_book_refuses_new_peers_but_lets_a_connected_one_finish_and_leave() {
    let mut t = T::new(4);
    t.verify_all();
    let k = t.leecher(1);
    t.request(t.t0, k, blk(0, 0)).unwrap();
    t.sw.blocks_sent(t.t0, k, 1, u64::from(BLOCK_SIZE));
    t.acts();
    poison_peer_book(&t.shared);
    // Completing from us cannot be recorded; it is no error.
    for i in 0..4 {
        t.msg(t.t0, k, Message::Have { index: i }).unwrap();
    }
    let k2 = PeerKey { index: 2, gen: 0 };
    t.sw.peer_connected(t.t0, k2, T::info(2, false));
    let e = t.sw.handshake(t.t0, k2, &hs_for(&t, 2)).unwrap_err();
    assert!(e.contains("poisoned"), "{e}");
    t.sw.peer_closed(t.t0, k);
    t.sw.peer_closed(t.t0, k2);
    assert_eq!(t.shared.counters.connected.load(Ordering::Relaxed), 0);
    assert_eq!(t.shared.counters.unchoked.load(Ordering::Relaxed), 0);
    assert_eq!(counts(&t.shared.availability), vec![0; 4]);
}

// ---- regressions from the review of issue 12 ------------------------------------------

#[test]
fn a_piece_released_by_another_core_is_not_started_twice_here() {
    let mut one = T::new(2);
    let mut two = one.second_core();
    let a = one.seed(1);
    one.prove(a);
    one.tick(one.at(ms(100)));
    one.acts();
    let b = two.seed(2);
    two.prove(b);
    two.tick(two.at(ms(100)));
    two.acts();
    assert!(
        two.sw.in_progress(0),
        "core two has an endgame duplicate of piece 0"
    );
    // Core one's peer leaves: its claim on piece 0 is released.
    one.sw.peer_closed(one.at(ms(150)), a);
    one.acts();
    assert!(!one.shared.claimed.get(0));
    // Core two refills: its duplicate stays the only copy, with its buffer.
    let before = two.sw.assemblies.get(&0).map(|x| x.buf);
    two.tick(two.at(ms(200)));
    let acts = two.acts();
    assert_eq!(two.sw.assemblies.get(&0).map(|x| x.buf), before);
    assert!(
        !requests(&acts, b).iter().any(|r| r.piece == 0),
        "no second request for blocks already asked: {acts:?}"
    );
}

#[test]
fn a_core_left_without_peers_takes_its_waiting_peers_out_of_the_count() {
    let mut t = T::with(1, |c| c.upload_slots = 1);
    t.verify_all();
    let a = t.leecher(1);
    let b = t.leecher(2);
    t.tick(t.at(ms(100)));
    assert_eq!(t.shared.counters.waiting.load(Ordering::Relaxed), 1);
    t.sw.peer_closed(t.at(ms(150)), b);
    t.sw.peer_closed(t.at(ms(150)), a);
    assert_eq!(t.shared.counters.waiting.load(Ordering::Relaxed), 0);
}

#[test]
fn a_stopped_torrent_refuses_new_peers() {
    let mut t = T::new(2);
    t.sw.stop("failed");
    let key = PeerKey { index: 5, gen: 0 };
    t.sw.peer_connected(t.t0, key, T::info(5, false));
    let hs = hs_for(&t, 5);
    let e = t.sw.handshake(t.t0, key, &hs).unwrap_err();
    assert!(e.contains("stopped"), "{e}");
}

#[test]
fn a_reject_that_names_no_requested_block_withdraws_nothing() {
    let mut t = T::new(2);
    let a = t.proven_seed(1);
    let reqs = requests(&t.acts(), a);
    let first = reqs[0];
    let out = t.sw.peer(a).unwrap().requests_out;
    // Unaligned: not block 0.
    t.msg(
        t.t0,
        a,
        Message::Reject {
            index: first.piece,
            begin: first.begin + 1,
            length: first.len,
        },
    )
    .unwrap();
    assert_eq!(t.sw.peer(a).unwrap().requests_out, out);
    assert!(t.sw.assemblies[&first.piece].blocks[0].requested_by(a));
}

#[test]
fn a_block_stolen_lately_is_not_late_for_a_third_peer() {
    let (mut t, a, b, ra) = steal_setup(16 << 10, 4 << 20);
    let now = t.at(super::requests::STEAL_AFTER + ms(50));
    t.sw.fill(now, b, &mut t.bufs);
    assert_eq!(requests(&t.acts(), b).len(), ra.len());
    // The slow peer leaves; the blocks are B's alone now, asked just now.
    t.sw.peer_closed(now, a);
    t.acts();
    let c = t.connect(3);
    t.msg(now, c, Message::HaveAll).unwrap();
    t.sw.peer_mut(c).unwrap().pieces.clear();
    t.msg(now, c, Message::Unchoke).unwrap();
    let later = now + super::requests::LATE_REQUEST / 2;
    t.sw.fill(later, c, &mut t.bufs);
    let rc = requests(&t.acts(), c);
    assert!(
        !rc.iter().any(|r| ra.contains(r)),
        "B's fresh requests are not late: {rc:?}"
    );
}

#[test]
fn a_peer_that_never_delivered_does_not_shorten_the_others_stall_limit() {
    let mut t = T::new(4);
    let a = t.proven_seed(1);
    t.acts();
    // B unchokes at 19 s and gets requests: it has delivered nothing.
    let b = t.connect(2);
    t.msg(t.t0, b, Message::HaveAll).unwrap();
    t.prove(b);
    t.msg(t.at(secs(19)), b, Message::Unchoke).unwrap();
    t.acts();
    t.tick(t.at(secs(19) + ms(500)));
    assert!(
        !closed(&t.acts(), a),
        "A is held to the 20 s limit: nobody delivers"
    );
}

#[test]
fn an_unproven_co_writer_of_a_bad_piece_is_struck() {
    let (mut t, a, b, ra) = steal_setup(16 << 10, 4 << 20);
    // B (unproven now) joins A's piece; both write into it; the hash fails.
    t.sw.peer_mut(b).unwrap().proven = false;
    t.sw.peer_mut(b).unwrap().pieces.clear();
    let now = t.at(super::requests::LATE_REQUEST);
    t.sw.fill(now, b, &mut t.bufs);
    let rb = requests(&t.acts(), b);
    let piece = rb[0].piece;
    // The first block from A, the rest from B.
    for (i, r) in ra.iter().filter(|r| r.piece == piece).enumerate() {
        let from = if i == 0 || !rb.contains(r) { a } else { b };
        t.deliver(now, from, *r);
    }
    let buf = t
        .acts()
        .iter()
        .find_map(|x| match x {
            Action::Hash { piece: p, buf } if *p == piece => Some(*buf),
            _ => None,
        })
        .expect("hashed");
    assert!(t.sw.hashing[&piece].writers.len() >= 2);
    t.sw.piece_hashed(now, piece, buf, false, &mut t.bufs);
    let book = t.shared.peers.lock().unwrap();
    assert_eq!(book.strikes.get(&ip(2)), Some(&1), "the unproven writer");
    assert_eq!(book.strikes.get(&ip(1)), None, "not the proven one");
}

#[test]
fn a_peer_dropped_for_stalling_is_redialled_with_a_back_off() {
    let mut t = T::new(4);
    let key = PeerKey { index: 1, gen: 0 };
    t.connect_as(1, T::info(1, true), true, t.t0);
    t.msg(t.t0, key, Message::HaveAll).unwrap();
    t.msg(t.t0, key, Message::Unchoke).unwrap();
    t.acts();
    t.tick(t.at(secs(21)));
    assert!(closed(&t.acts(), key));
    t.sw.peer_closed(t.at(secs(21)), key);
    t.tick(t.at(secs(21) + ms(300)));
    assert!(dials(&t.acts()).is_empty(), "not at once");
    t.tick(t.at(secs(22)));
    assert_eq!(dials(&t.acts()), vec![(addr(1), 2)]);
}

#[test]
fn two_slow_peers_on_one_block_make_room_for_a_fast_one() {
    let (mut t, a, b, ra) = steal_setup(16 << 10, 4 << 20);
    // A third, slow peer joins A's late blocks: both places are taken by slow peers.
    let c = t.connect(3);
    t.msg(t.t0, c, Message::HaveAll).unwrap();
    t.prove(c);
    t.set_rate(c, 16 << 10, t.t0);
    t.msg(t.t0, c, Message::Unchoke).unwrap();
    t.acts();
    let late = t.at(super::requests::LATE_REQUEST);
    t.sw.fill(late, c, &mut t.bufs);
    assert_eq!(requests(&t.acts(), c).len(), ra.len());
    // B, much faster than both, takes A's place 200 ms later; A is told to cancel.
    let now = late + super::requests::STEAL_AFTER;
    t.set_rate(b, 4 << 20, now);
    t.sw.fill(now, b, &mut t.bufs);
    let acts = t.acts();
    assert_eq!(requests(&acts, b).len(), ra.len(), "{acts:?}");
    assert_eq!(cancels(&acts, a).len(), ra.len());
    assert_eq!(t.sw.peer(a).unwrap().requests_out, 0);
    assert!(t.sw.assemblies[&ra[0].piece].blocks[0].requested_by(c));
}

#[test]
fn a_rack_peer_on_another_core_keeps_a_remote_peer_out_of_its_piece() {
    let mut t = T::new(2);
    t.verify([0]);
    let x = t.connect_as(1, placed(1, place("west", "w1")), true, t.t0);
    t.msg(t.t0, x, Message::HaveAll).unwrap();
    t.set_rate(x, 1 << 10, t.t0);
    t.msg(t.t0, x, Message::Unchoke).unwrap();
    assert_eq!(pieces_of(&requests(&t.acts(), x)), vec![1]);
    // A rack peer of ours announced piece 1 on another core.
    t.shared.rack_availability[1].fetch_add(1, Ordering::Relaxed);
    let s = t.connect_as(2, placed(2, place("west", "w2")), true, t.t0);
    t.msg(t.t0, s, Message::HaveAll).unwrap();
    t.prove(s);
    t.set_rate(s, 4 << 20, t.t0);
    t.msg(t.t0, s, Message::Unchoke).unwrap();
    t.sw.fill(t.at(ms(300)), s, &mut t.bufs);
    assert!(
        requests(&t.acts(), s).is_empty(),
        "the rack has it: no duplicate across the uplink"
    );
}
