//! Multi-host scenarios on the in-memory harness (virtual clock, deterministic, bounded).

// The virtual clock starts from a real instant (see swarm/clippy.toml).
#![allow(clippy::disallowed_methods)]

mod harness;

use std::time::Duration;

use harness::{HostSpec, Net};
use ringswarm_swarm::locality::NamedPlace;

const MIB: u64 = 1 << 20;
const PIECE: u32 = 256 << 10;
const MAX_EVENTS: u64 = 5_000_000;

fn pieces_for(bytes: u64) -> u32 {
    (bytes / u64::from(PIECE)) as u32
}

fn place(dc: &str, rack: &str) -> NamedPlace {
    NamedPlace {
        dc: Some(dc.into()),
        rack: Some(rack.into()),
    }
}

#[test]
fn each_piece_enters_each_rack_about_once() {
    let mut net = Net::new(pieces_for(16 * MIB), PIECE);
    let origin = net.add_host(HostSpec::seed(20 * MIB).at("west", "origin"));
    let racks = ["r1", "r2", "r3"];
    let mut leechers = Vec::new();
    for rack in racks {
        for _ in 0..3 {
            leechers.push(net.add_host(HostSpec::leecher(10 * MIB).at("east", rack)));
        }
    }
    net.mesh();
    let done = net.run(Duration::from_secs(120), MAX_EVENTS, |n| {
        n.all_done(&leechers)
    });
    assert!(done, "not done after {:?}", net.now - net.t0);
    let blob = net.blob_bytes();
    for rack in racks {
        let into = net.bytes_into_rack(&place("east", rack));
        eprintln!(
            "rack {rack}: {:.2} x the blob came in",
            into as f64 / blob as f64
        );
        assert!(
            into as f64 <= 1.3 * blob as f64,
            "rack {rack}: {into} bytes in for a blob of {blob}"
        );
    }
    assert!(net.hosts[origin].uploaded <= 3 * blob + blob / 2);
    for &h in &leechers {
        assert_eq!(net.hosts[h].written_bad, 0);
    }
}

#[test]
fn a_first_seeder_hands_out_distinct_pieces_before_repeating() {
    let mut net = Net::new(pieces_for(8 * MIB), PIECE);
    let seed = net.add_host(HostSpec {
        initial_seed: true,
        ..HostSpec::seed(4 * MIB)
    });
    let leechers: Vec<usize> = (0..4)
        .map(|_| net.add_host(HostSpec::leecher(4 * MIB)))
        .collect();
    net.mesh();
    let done = net.run(Duration::from_secs(120), MAX_EVENTS, |n| {
        n.all_done(&leechers)
    });
    assert!(done, "not done after {:?}", net.now - net.t0);
    let blob = net.blob_bytes();
    let up = net.hosts[seed].uploaded;
    eprintln!(
        "first seeder uploaded {:.2} x the blob; last leecher at {:?}",
        up as f64 / blob as f64,
        net.now - net.t0
    );
    assert!(
        up as f64 <= 1.2 * blob as f64,
        "the first seeder uploaded {up} bytes for a blob of {blob}"
    );
}

/// A `--cores 1` leecher with an honest seed at 4 MiB/s, and optionally a peer that holds
/// every piece but sends one block every 3 s; returns the download time.
fn hostage_run(with_trickler: bool) -> Duration {
    hostage_run_with(with_trickler.then_some((4 * MIB, Some(Duration::from_secs(3)))))
}

/// As [`hostage_run`], the other peer sending at `rate` and at most one block per
/// `trickle`.
fn hostage_run_with(other: Option<(u64, Option<Duration>)>) -> Duration {
    let with_trickler = other.is_some();
    let mut net = Net::new(pieces_for(16 * MIB), PIECE);
    let honest = net.add_host(HostSpec::seed(4 * MIB));
    let leecher = net.add_host(HostSpec::leecher(4 * MIB));
    if with_trickler {
        let (rate, trickle) = other.unwrap();
        let trickler = net.add_host(HostSpec {
            trickle,
            ..HostSpec::seed(rate)
        });
        // The trickler is dialled first: it gets every chance to take pieces.
        net.introduce(leecher, trickler);
    }
    net.introduce(leecher, honest);
    let trickler = (with_trickler).then_some(2);
    let done = net.run(Duration::from_secs(600), MAX_EVENTS, |n| {
        n.all_done(&[leecher])
    });
    assert!(done, "not done after {:?}", net.now - net.t0);
    assert_eq!(net.hosts[leecher].written_bad, 0);
    if let Some(t) = trickler {
        let got = net.hosts[leecher].recv_from.get(&t).copied().unwrap_or(0);
        eprintln!("from the trickler: {got} bytes; {} events", net.events_run);
        assert!(
            got > 0,
            "the trickler was never asked: the test proves nothing"
        );
    }
    net.elapsed(leecher).unwrap()
}

#[test]
fn a_trickling_peer_does_not_hold_a_one_core_download_hostage() {
    let alone = hostage_run(false);
    let with = hostage_run(true);
    eprintln!("honest seed alone: {alone:?}; with a trickling peer: {with:?}");
    assert!(
        with.as_secs_f64() <= 1.3 * alone.as_secs_f64(),
        "{with:?} with the trickler, {alone:?} without"
    );
}

#[test]
fn a_slow_but_steady_peer_does_not_hold_the_download_either() {
    let alone = hostage_run(false);
    for rate in [64 << 10, 256 << 10, MIB] {
        let with = hostage_run_with(Some((rate, None)));
        eprintln!("with a {rate} B/s peer: {with:?} ({alone:?} alone)");
        assert!(
            with.as_secs_f64() <= 1.3 * alone.as_secs_f64(),
            "{with:?} with a {rate} B/s peer, {alone:?} without"
        );
    }
}

#[test]
fn a_corrupting_peer_is_banned_and_the_download_completes_with_good_data() {
    let mut net = Net::new(pieces_for(8 * MIB), PIECE);
    let honest = net.add_host(HostSpec::seed(4 * MIB));
    let liar = net.add_host(HostSpec {
        corrupt: true,
        ..HostSpec::seed(8 * MIB)
    });
    let leechers: Vec<usize> = (0..2)
        .map(|_| net.add_host(HostSpec::leecher(4 * MIB)))
        .collect();
    for &l in &leechers {
        net.introduce(l, liar);
        net.introduce(l, honest);
    }
    net.introduce(leechers[1], leechers[0]);
    let done = net.run(Duration::from_secs(120), MAX_EVENTS, |n| {
        n.all_done(&leechers)
    });
    assert!(done, "not done after {:?}", net.now - net.t0);
    let liar_ip = net.hosts[liar].ip;
    for &l in &leechers {
        let h = &net.hosts[l];
        assert!(
            h.shared.is_banned(liar_ip, net.now),
            "host {l} did not ban the liar; closes: {:?}",
            h.closes
        );
        assert_eq!(h.written_bad, 0, "host {l} wrote a corrupt piece");
        assert_eq!(h.written, net.meta.piece_count());
        let failures = h
            .shared
            .counters
            .hash_failures
            .load(std::sync::atomic::Ordering::Relaxed);
        assert!(failures <= 2, "host {l}: {failures} hash failures");
    }
}

#[test]
fn an_idle_unchoked_peer_loses_its_slot_to_a_waiting_peer() {
    let mut net = Net::new(pieces_for(4 * MIB), PIECE);
    let seed = net.add_host(HostSpec {
        upload_slots: 1,
        ..HostSpec::seed(4 * MIB)
    });
    let idle = net.add_host(HostSpec {
        mute_requests: true,
        ..HostSpec::leecher(4 * MIB)
    });
    let waiting = net.add_host(HostSpec::leecher(4 * MIB));
    net.introduce(idle, seed);
    // The waiting peer comes a little later: the idle one holds the only slot by then.
    net.run(Duration::from_millis(50), MAX_EVENTS, |_| false);
    net.introduce(waiting, seed);
    let done = net.run(Duration::from_secs(60), MAX_EVENTS, |n| {
        n.all_done(&[waiting])
    });
    assert!(done, "not done after {:?}", net.now - net.t0);
    let took = net.elapsed(waiting).unwrap();
    eprintln!("the waiting peer finished at {took:?}");
    // 4 MiB at 4 MiB/s is about a second; the slot frees within a second or so.
    assert!(took <= Duration::from_secs(4), "{took:?}");
    assert!(!net.hosts[idle].shared.all_verified());
    // It had the slot first, and lost it.
    let idle_saw: Vec<bool> = net.hosts[idle].chokes.iter().map(|c| c.1).collect();
    assert!(idle_saw.starts_with(&[true, false]), "{idle_saw:?}");
    let first_unchoke = |h: usize| {
        net.hosts[h]
            .chokes
            .iter()
            .find(|c| c.1)
            .map(|c| c.2 - net.t0)
            .unwrap()
    };
    assert!(first_unchoke(idle) < first_unchoke(waiting));
}

#[test]
fn two_cores_of_one_host_share_a_torrent_without_fetching_a_piece_twice_outside_the_endgame() {
    let mut net = Net::new(pieces_for(16 * MIB), PIECE);
    let seeds: Vec<usize> = (0..3)
        .map(|_| net.add_host(HostSpec::seed(4 * MIB)))
        .collect();
    let host = net.add_host(HostSpec {
        cores: 2,
        ..HostSpec::leecher(4 * MIB)
    });
    for &s in &seeds {
        net.introduce(host, s);
    }
    let done = net.run(Duration::from_secs(120), MAX_EVENTS, |n| {
        n.all_done(&[host])
    });
    assert!(done, "not done after {:?}", net.now - net.t0);
    let h = &net.hosts[host];
    for c in 0..2 {
        assert!(
            net.swarm(host, c).peer_count() > 0,
            "core {c} had no peer: the test proves nothing"
        );
    }
    eprintln!(
        "duplicate blocks: {} outside the endgame, {} in it",
        h.dup_blocks_outside_endgame, h.dup_blocks_in_endgame
    );
    assert_eq!(h.dup_blocks_outside_endgame, 0);
    assert_eq!(h.written, net.meta.piece_count());
    assert_eq!(h.written_bad, 0);
}

mod random_networks {
    use super::*;
    use proptest::prelude::*;

    /// The core's SHARE_GRACE (not public).
    const SHARE_GRACE_SECS: f64 = 4.0;

    /// In rack r1, r2 or r3 of dc east, or (3) not placed at all.
    fn placed(spec: HostSpec, rack: u8) -> HostSpec {
        match rack {
            0..=2 => spec.at("east", ["r1", "r2", "r3"][rack as usize]),
            _ => spec,
        }
    }

    #[derive(Clone, Debug)]
    struct Shape {
        pieces: u32,
        seeds: Vec<(u64, bool, bool, bool)>,
        leechers: Vec<(u64, usize, u8, Option<usize>)>,
    }

    fn shape() -> impl Strategy<Value = Shape> {
        (
            4u32..24,
            prop::collection::vec(
                (
                    1u64..8,
                    any::<bool>(),
                    any::<bool>(),
                    prop::bool::weighted(0.3),
                ),
                1..4,
            ),
            prop::collection::vec(
                (1u64..8, 1usize..3, 0u8..4, prop::option::of(3usize..6)),
                1..5,
            ),
        )
            .prop_map(|(pieces, seeds, leechers)| Shape {
                pieces,
                seeds,
                leechers,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        /// Any small network with one honest seed completes with good data: seeds of
        /// random rates (some first seeders, some corrupting or trickling), leechers with one or two
        /// cores in up to three racks or none, some short of piece buffers (but with more
        /// than the peers that may trickle: with fewer, trickling peers holding every
        /// buffer hold the download, a known limit); none waits much longer than one copy
        /// from the honest seed takes.
        #[test]
        fn every_leecher_completes_with_good_data(s in shape()) {
            let mut net = Net::new(s.pieces, 64 << 10);
            for (i, &(rate, first, corrupt, trickles)) in s.seeds.iter().enumerate() {
                // The first seed is honest and sends at its rate; others may corrupt or
                // trickle.
                let corrupt = corrupt && i > 0;
                net.add_host(HostSpec {
                    initial_seed: first && !corrupt,
                    corrupt,
                    trickle: (trickles && i > 0).then_some(Duration::from_millis(1500)),
                    ..HostSpec::seed(rate * MIB)
                });
            }
            let leechers: Vec<usize> = s
                .leechers
                .iter()
                .map(|&(rate, cores, rack, max_bufs)| {
                    net.add_host(HostSpec {
                        cores,
                        max_bufs,
                        ..placed(HostSpec::leecher(rate * MIB), rack)
                    })
                })
                .collect();
            net.mesh();
            let done = net.run(Duration::from_secs(300), MAX_EVENTS, |n| n.all_done(&leechers));
            prop_assert!(done, "not done after {:?}", net.now - net.t0);
            for &l in &leechers {
                prop_assert_eq!(net.hosts[l].written_bad, 0);
            }
            // No tail: within a few times what the honest seed alone needs for one copy.
            // Placed hosts may wait for their rack's share owner up to the share grace (a
            // trickling peer may hold a share owner's piece that long: by design).
            let alone = net.blob_bytes() as f64 / (s.seeds[0].0 * MIB) as f64;
            let grace = if s.leechers.iter().any(|l| l.2 < 3) { SHARE_GRACE_SECS } else { 0.0 };
            let took = (net.now - net.t0).as_secs_f64();
            prop_assert!(
                took <= 3.0 * alone + grace + 2.0,
                "took {took:.2} s, one copy from the seed {alone:.2} s"
            );
        }
    }
}

/// An honest seed that arrives when the only missing piece is held by a trickling peer:
/// unproven, it may still lend a hand with that one piece, and the trickler's requests are
/// late (outstanding for ten request horizons) for any peer.
#[test]
fn an_honest_peer_arriving_late_rescues_the_last_piece_from_a_trickler() {
    let mut net = Net::new(1, 256 << 10);
    let trickler = net.add_host(HostSpec {
        trickle: Some(Duration::from_secs(3)),
        ..HostSpec::seed(4 * MIB)
    });
    let honest = net.add_host(HostSpec::seed(4 * MIB));
    let leecher = net.add_host(HostSpec::leecher(4 * MIB));
    net.introduce(leecher, trickler);
    net.run(Duration::from_secs(1), MAX_EVENTS, |_| false);
    net.introduce(leecher, honest);
    let done = net.run(Duration::from_secs(600), MAX_EVENTS, |n| {
        n.all_done(&[leecher])
    });
    assert!(done);
    let took = net.elapsed(leecher).unwrap();
    assert!(took <= Duration::from_secs(3), "{took:?}");
}
