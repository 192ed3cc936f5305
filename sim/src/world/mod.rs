//! The driver: a fleet of hosts, each running the real swarm core, around the real tracker
//! store, over the flow-level network of [`crate::net`], on virtual time.
//!
//! It does what the engine's session driver does, in memory: turns the core's actions into
//! messages that arrive one path delay later, connections that open one round trip after
//! the dial, hashes and writes that take their time, and blocks that cross the network as
//! flows sharing links; and it announces to the tracker store as `ringswarm get` does. The
//! core decides everything else, exactly as on a real host.
//!
//! # Time
//!
//! Time is virtual, in nanoseconds from the start. Events (a message, a block or a FIN
//! arriving, a timer, a hash or write done, an announce) are handled in time order, ties in
//! the order they were scheduled: a run is a pure function of the scenario and the seed.
//! Data moves in fixed steps (`model.step`): at each step boundary the links' rates are
//! shared out again among the directions that have blocks to send (max-min, with each
//! connection's TCP window as a cap), then every sending direction moves its rate × step
//! bytes, finishing blocks at their exact times within the step; a finished block arrives
//! one path delay later. A direction whose core asks to serve while it is idle starts at
//! the next boundary, and one that runs out of blocks within a step leaves the rest of its
//! share unused until the next: both cost at most a step.
//!
//! # What is not modelled
//!
//! - Control messages (requests, HAVEs, chokes...) take the path's delay and no bandwidth,
//!   and do not queue behind the data of their direction.
//! - A host's cores: each host runs one core for the torrent (the engine runs one per CPU,
//!   sharing the same [`ringswarm_swarm::Shared`] state); piece memory is unbounded.
//! - Hashing and writing take piece ÷ rate each, in parallel (many cores, fast disks).
//! - A dead host vanishes: no FIN; its peers notice as the engine would, by their cores'
//!   stall rules or the driver's send timeout (30 s) for a connection that only uploads
//!   to it, and by the connect timeout (10 s) when they dial it.

mod conn;
mod haves;
mod host;
mod outcome;
mod queue;
mod tcp;
mod transfer;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringswarm_engine::tracker::store::{
    AnnounceIn, ConnectionIds, Event as TrackerEvent, Store, StoreConfig,
};
use ringswarm_engine::tracker::topology::Topology;
use ringswarm_proto::metainfo::Metainfo;
use ringswarm_proto::wire::Handshake;
use ringswarm_swarm::locality::{Locator, NamedPlace};
use ringswarm_swarm::{Action, BlockRef, Out, PeerInfo, PeerKey};

use crate::net::{Fleet, HostId};
use crate::report::{Report, Timeline};
use crate::scenario::Scenario;
use conn::{Conn, ConnId, Dir, End, Side};
use haves::HaveGroups;
use host::{Fate, Host, Life};
use outcome::draw_fate;

pub use host::{MAX_HOSTS_PER_RACK, MAX_RACKS};

/// As the engine's `HANDSHAKE_TIMEOUT`: a dial to a host that does not answer fails after it.
const CONNECT_TIMEOUT_NS: u64 = 10_000_000_000;
/// As the engine's `SEND_TIMEOUT`: a connection whose peer takes nothing for this long is
/// closed.
const SEND_TIMEOUT_NS: u64 = 30_000_000_000;
/// The shortest re-announce interval our tracker client honours (`tracker::client`).
const MIN_ANNOUNCE_NS: u64 = 30_000_000_000;
/// Seconds added to the tracker store's clock, so a store timestamp is never 0.
const STORE_EPOCH_S: u64 = 1_000_000;

/// Why a scenario cannot be simulated.
#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    #[error("{0}")]
    Shape(String),
}

enum Ev {
    Start(u32),
    Die(u32),
    Timer(u32),
    /// An announce reaches the tracker.
    Announce(u32, TrackerEvent),
    /// The tracker's answer reaches the host.
    Peers(u32, Vec<SocketAddr>),
    /// The host's next periodic announce is due.
    Reannounce(u32),
    /// The dialer's connect completed (its SYN-ACK arrived).
    Connected(ConnId),
    DialFailed {
        host: u32,
        addr: SocketAddr,
        attempt: u32,
    },
    /// Messages from `to.other()` arrive at `to`.
    Deliver(ConnId, Side, Msgs),
    /// One host's HAVE of a piece arrives at each of these ends (connections whose path
    /// delay is the same), in order: one event rather than one per peer.
    HaveTo(u32, Vec<(ConnId, Side)>),
    /// The last byte of a block arrives at `to`.
    Block(ConnId, Side, BlockRef),
    /// The other end closed (its FIN arrives at `to`), or the send timeout fired there.
    Closed(ConnId, Side),
    Hashed(u32, u32, ringswarm_swarm::BufId),
    Written(u32, u32),
    Sample,
}

/// The messages of one delivery: most are a single one, carried without a heap
/// allocation.
enum Msgs {
    One(Out),
    Many(Vec<Out>),
}

impl Msgs {
    fn as_slice(&self) -> &[Out] {
        match self {
            Msgs::One(m) => std::slice::from_ref(m),
            Msgs::Many(v) => v,
        }
    }
}

/// Buffers kept between events so that delivering a message allocates nothing.
#[derive(Default)]
struct Spare {
    msgs: Vec<Vec<Out>>,
    batches: Vec<Vec<(PeerKey, Msgs)>>,
}

/// Buffers of each kind kept for reuse, at most.
const SPARE_MAX: usize = 256;

impl Spare {
    fn msgs(&mut self) -> Vec<Out> {
        self.msgs.pop().unwrap_or_default()
    }

    fn recycle_msgs(&mut self, msgs: Msgs) {
        if let Msgs::Many(mut v) = msgs {
            if self.msgs.len() < SPARE_MAX {
                v.clear();
                self.msgs.push(v);
            }
        }
    }
}

/// Byte counters per link, and their values at the last timeline sample.
#[derive(Default)]
struct Bytes {
    per_link: Vec<u64>,
    /// Bytes moved into hosts, into racks, into dcs and out of the origin, counted as they
    /// flow (step by step) for the timeline; the per-link counts above are counted when a
    /// block is through, exactly.
    flowing: [f64; 4],
    sampled: [f64; 4],
}

pub struct World {
    s: Scenario,
    fleet: Fleet,
    meta: Arc<Metainfo>,
    epoch: Instant,
    now: u64,
    queue: queue::Queue<Ev>,
    hosts: Vec<Host>,
    by_ip: std::collections::HashMap<IpAddr, u32>,
    conns: Vec<Option<Conn>>,
    free_conns: Vec<u32>,
    next_conn_gen: u32,
    /// Directions with a flow, and directions whose core asked to serve while idle.
    sending: Vec<transfer::Sending>,
    to_start: Vec<(ConnId, Side)>,
    /// Blocks a direction finished within a step (kept to reuse its buffer).
    finished: Vec<(u64, BlockRef)>,
    tracker: Store,
    topology: Topology,
    /// `dc/rack` of each rack, as the topology names it.
    rack_names: Vec<String>,
    peers_buf: Vec<SocketAddr>,
    bytes: Bytes,
    timeline: Timeline,
    /// Hosts that must finish for the run to end (the living, not yet done).
    unfinished: usize,
    events: u64,
    hash_failures: u64,
    /// Why cores closed connections, and how often.
    closes: std::collections::BTreeMap<String, u64>,
    /// `RINGSWARM_SIM_DEBUG` set: count events by kind and print what each host did.
    debug: bool,
    kinds: std::collections::BTreeMap<&'static str, u64>,
    spare: Spare,
    /// When [`World::run`] began, for the debug progress lines.
    wall_start: Instant,
    have_groups: HaveGroups<(ConnId, Side)>,
}

impl World {
    pub fn new(s: &Scenario) -> Result<World, WorldError> {
        let mut fleet = Fleet::new(s);
        for l in 0..fleet.net.links() as u32 {
            let l = crate::net::LinkId(l);
            let payload = fleet.net.capacity(l) * s.model.payload_share;
            fleet.net.set_capacity(l, payload);
        }
        if fleet.racks() > MAX_RACKS {
            return Err(WorldError::Shape(format!(
                "{} racks: the simulator addresses at most {MAX_RACKS}",
                fleet.racks()
            )));
        }
        if let Some(d) = s.dcs.iter().find(|d| d.hosts_per_rack > MAX_HOSTS_PER_RACK) {
            return Err(WorldError::Shape(format!(
                "dc `{}`: {} hosts per rack: the simulator addresses at most {MAX_HOSTS_PER_RACK}",
                d.name, d.hosts_per_rack
            )));
        }
        let epoch = Instant::now();
        let meta = host::metainfo(s);
        // The topology, as an operator would write it: a /24 per rack.
        let origin_rack = (!s.origin.shares_rack).then(|| fleet.rack(HostId(0)));
        let mut rack_names = Vec::with_capacity(fleet.racks());
        let mut text = String::new();
        let mut numbered = 0;
        for r in 0..fleet.racks() as u32 {
            let dc = &s.dcs[fleet.rack_dc(r) as usize].name;
            let rack = if Some(r) == origin_rack {
                "origin".to_string()
            } else {
                numbered += 1;
                format!("r{numbered}")
            };
            text.push_str(&format!(
                "[[subnet]]\ncidr = \"{}/24\"\ndc = \"{dc}\"\nrack = \"{rack}\"\n",
                host::rack_net(r)
            ));
            rack_names.push(format!("{dc}/{rack}"));
        }
        let topology = Topology::from_toml_str(&text, "simulated fleet")
            .map_err(|e| WorldError::Shape(e.to_string()))?;
        let locator = Locator::new(Some(topology.clone()), NamedPlace::default());
        let mut rng = s.seed ^ 0x5157_4152_4d53_494d;
        let bound_ns = (s.lower_bound() * 1e9) as u64;
        let mut hosts = Vec::with_capacity(fleet.hosts());
        let mut by_ip = std::collections::HashMap::with_capacity(fleet.hosts());
        let mut in_rack = vec![0u32; fleet.racks()];
        for h in 0..fleet.hosts() as u32 {
            let rack = fleet.rack(HostId(h));
            let ip = if h == 0 {
                host::host_ip(rack, None)
            } else {
                in_rack[rack as usize] += 1;
                host::host_ip(rack, Some(in_rack[rack as usize] - 1))
            };
            let fate = if h == 0 {
                Fate::default()
            } else {
                draw_fate(&mut rng, s, bound_ns)
            };
            let place = locator.our_place(Some(IpAddr::V4(ip)));
            // The origin's own rack holds no downloading host: not in the split.
            let dc_share = locator.dc_share(&place, &["origin"]);
            let host = Host::new(h, ip, place, &meta, s, epoch, h == 0, fate);
            host.shared.set_dc_share(dc_share);
            by_ip.insert(host.addr.ip(), h);
            hosts.push(host);
        }
        let config = StoreConfig {
            rng_seed: Some(s.seed),
            ..StoreConfig::default()
        };
        let tracker = Store::new(config, ConnectionIds::with_key(u128::from(s.seed), 120));
        let links = fleet.net.links();
        let mut w = World {
            s: s.clone(),
            fleet,
            meta,
            epoch,
            now: 0,
            queue: queue::Queue::new(),
            hosts,
            by_ip,
            conns: Vec::new(),
            free_conns: Vec::new(),
            next_conn_gen: 0,
            sending: Vec::new(),
            to_start: Vec::new(),
            finished: Vec::new(),
            tracker,
            topology,
            rack_names,
            peers_buf: Vec::new(),
            bytes: Bytes {
                per_link: vec![0; links],
                flowing: [0.0; 4],
                sampled: [0.0; 4],
            },
            timeline: Timeline::default(),
            unfinished: 0,
            events: 0,
            hash_failures: 0,
            closes: Default::default(),
            debug: std::env::var_os("RINGSWARM_SIM_DEBUG").is_some(),
            kinds: Default::default(),
            spare: Spare::default(),
            wall_start: Instant::now(),
            have_groups: HaveGroups::default(),
        };
        for h in 0..w.hosts.len() as u32 {
            let fate = w.hosts[h as usize].fate;
            w.push(fate.starts_at, Ev::Start(h));
            if let Some(t) = fate.dies_at {
                w.push(t, Ev::Die(h));
            }
            if fate.slow {
                let rate = w.s.dcs[w.fleet.dc(HostId(h)) as usize].host_rate as f64
                    * w.s.model.payload_share
                    / 4.0;
                w.fleet.set_host_rate(HostId(h), rate);
            }
            if h != 0 && fate.dies_at.is_none() {
                w.unfinished += 1;
            }
        }
        let interval = w.sample_interval_ns();
        w.timeline.interval_s = interval as f64 * 1e-9;
        w.push(interval, Ev::Sample);
        Ok(w)
    }

    fn sample_interval_ns(&self) -> u64 {
        let auto = (self.s.lower_bound() * 1e9 / 200.0) as u64;
        self.s
            .model
            .sample_ns
            .unwrap_or(auto)
            .max(self.s.model.step_ns)
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.queue.push(at, ev);
    }

    pub(super) fn instant(&self, t: u64) -> Instant {
        self.epoch + Duration::from_nanos(t)
    }

    /// Runs until every living host holds the blob, or the time limit.
    pub fn run(mut self) -> Report {
        let wall = Instant::now();
        self.wall_start = wall;
        let bound = self.s.lower_bound();
        let limit = self
            .s
            .model
            .max_time_ns
            .unwrap_or((bound * 10.0 * 1e9) as u64 + 120_000_000_000);
        let step = self.s.model.step_ns;
        let mut t = 0;
        while t <= limit && self.unfinished > 0 {
            let end = t + step;
            self.now = t;
            self.step_flows(t, end);
            while let Some((at, ev)) = self.queue.pop_before(end) {
                self.now = at.max(t);
                self.events += 1;
                if self.debug {
                    *self.kinds.entry(kind_of(&ev)).or_default() += 1;
                }
                self.handle(ev);
                if self.unfinished == 0 {
                    break;
                }
            }
            t = end;
            if self.sending.is_empty() && self.to_start.is_empty() {
                // Nothing moves until the next event: skip the empty steps.
                match self.queue.next_time() {
                    Some(next) => t = t.max(next / step * step),
                    None => break,
                }
            }
        }
        self.take_sample();
        self.report(wall)
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Start(h) => self.start_host(h),
            Ev::Die(h) => self.kill_host(h),
            Ev::Timer(h) => {
                let host = &mut self.hosts[h as usize];
                if host.timer_at != Some(self.now) || !host.running() {
                    return;
                }
                host.timer_at = None;
                let now = self.instant(self.now);
                let host = &mut self.hosts[h as usize];
                host.swarm.handle_timeout(now, &mut host.bufs);
                self.drain(h);
            }
            Ev::Announce(h, event) => self.announce_at_tracker(h, event),
            Ev::Peers(h, peers) => self.peers_arrived(h, peers),
            Ev::Reannounce(h) => {
                if self.hosts[h as usize].running() {
                    self.send_announce(h, TrackerEvent::None);
                }
            }
            Ev::Connected(c) => self.connected(c),
            Ev::DialFailed {
                host,
                addr,
                attempt,
            } => {
                if self.hosts[host as usize].running() {
                    let now = self.instant(self.now);
                    self.hosts[host as usize]
                        .swarm
                        .dial_failed(now, addr, attempt);
                    self.drain(host);
                }
            }
            Ev::Deliver(c, to, msgs) => {
                self.deliver(c, to, msgs.as_slice());
                self.spare.recycle_msgs(msgs);
            }
            Ev::HaveTo(piece, receivers) => {
                let have = [Out::Have(piece)];
                for &(c, to) in &receivers {
                    self.deliver(c, to, &have);
                }
                self.have_groups.recycle(receivers);
            }
            Ev::Block(c, to, block) => self.block_arrived(c, to, block),
            Ev::Closed(c, to) => self.close_end(c, to),
            Ev::Hashed(h, piece, buf) => {
                if !self.hosts[h as usize].running() {
                    return;
                }
                let now = self.instant(self.now);
                let host = &mut self.hosts[h as usize];
                host.swarm
                    .piece_hashed(now, piece, buf, true, &mut host.bufs);
                self.drain(h);
            }
            Ev::Written(h, piece) => {
                if !self.hosts[h as usize].running() {
                    return;
                }
                self.hosts[h as usize].swarm.piece_written(piece, true);
                self.drain(h);
                self.check_done(h);
            }
            Ev::Sample => {
                self.take_sample();
                if self.debug {
                    // Progress, for runs too long to wait for their report.
                    let done = self.hosts.iter().filter(|h| h.done_at.is_some()).count();
                    eprintln!(
                        "progress: {:.3} s simulated, {done} of {} hosts hold the blob, {} events, {:.0} s wall",
                        self.now as f64 * 1e-9,
                        self.hosts.len(),
                        self.events,
                        self.wall_start.elapsed().as_secs_f64(),
                    );
                }
                let next = self.now + self.sample_interval_ns();
                self.push(next, Ev::Sample);
            }
        }
    }

    // ---- hosts -----------------------------------------------------------------------

    fn start_host(&mut self, h: u32) {
        let host = &mut self.hosts[h as usize];
        if host.life != Life::NotStarted {
            return;
        }
        host.life = Life::Running;
        self.send_announce(h, TrackerEvent::Started);
    }

    fn kill_host(&mut self, h: u32) {
        let host = &mut self.hosts[h as usize];
        if host.life == Life::Dead {
            return;
        }
        host.life = Life::Dead;
        host.timer_at = None;
        // A dying host was never counted in `unfinished` (its fate is known from the start).
        // Its connections go silent: each living peer finds out by its own rules, or by
        // the send timeout.
        let conns: Vec<(ConnId, Side)> = host.keys.iter().flatten().map(|k| (k.0, k.1)).collect();
        for (c, side) in conns {
            self.stop_dir(c, side);
            self.stop_dir(c, side.other());
            let at = self.now + SEND_TIMEOUT_NS;
            self.push(at, Ev::Closed(c, side.other()));
        }
    }

    /// Sends the core's actions on their way.
    fn drain(&mut self, h: u32) {
        // Reentrant (a close drains the peer's core): each call takes its own buffer.
        let mut batch = self.spare.batches.pop().unwrap_or_default();
        while let Some(action) = self.hosts[h as usize].swarm.poll_action() {
            match action {
                Action::Send { peer, msg } => match batch.last_mut() {
                    Some((k, msgs)) if *k == peer => match msgs {
                        Msgs::Many(v) => v.push(msg),
                        Msgs::One(_) => {
                            let mut v = self.spare.msgs();
                            if let Msgs::One(first) =
                                std::mem::replace(msgs, Msgs::Many(Vec::new()))
                            {
                                v.push(first);
                            }
                            v.push(msg);
                            *msgs = Msgs::Many(v);
                        }
                    },
                    _ => batch.push((peer, Msgs::One(msg))),
                },
                Action::Serve { peer } => {
                    if let Some((c, side)) = self.hosts[h as usize].conn_of(peer) {
                        self.want_send(c, side);
                    }
                }
                Action::Hash { piece, buf } => {
                    let at = self.now + self.piece_time(piece, self.s.model.hash_rate);
                    self.push(at, Ev::Hashed(h, piece, buf));
                }
                Action::Write { piece, buf: _ } => {
                    let at = self.now + self.piece_time(piece, self.s.model.disk_rate);
                    self.push(at, Ev::Written(h, piece));
                }
                Action::Discard { .. }
                | Action::Broadcast { .. }
                | Action::BroadcastFetching { .. } => {}
                Action::Close { peer, reason } => {
                    *self.closes.entry(reason).or_default() += 1;
                    self.flush(h, &mut batch);
                    if let Some((c, side)) = self.hosts[h as usize].conn_of(peer) {
                        self.close_local(c, side);
                    }
                }
                Action::Dial { addr, attempt } => self.dial(h, addr, attempt),
            }
        }
        self.flush(h, &mut batch);
        if self.spare.batches.len() < SPARE_MAX {
            self.spare.batches.push(batch);
        }
        self.schedule_timer(h);
    }

    /// Messages the host queued, on their way to each peer; lone HAVEs of one piece in a
    /// row (the core's announce) share an event per path delay ([`haves`]).
    fn flush(&mut self, h: u32, batch: &mut Vec<(PeerKey, Msgs)>) {
        let mut groups = std::mem::take(&mut self.have_groups);
        for (key, msgs) in batch.drain(..) {
            // A key is mapped only while its end is open: the connection is there.
            let target = self.hosts[h as usize].route(key);
            let Some((c, side, delay)) = target else {
                self.spare.recycle_msgs(msgs);
                continue;
            };
            let at = self.now + delay;
            match msgs {
                Msgs::One(Out::Have(piece)) => {
                    groups.have(at, (c, side.other()), piece, &mut |at, p, r| {
                        self.queue.push(at, Ev::HaveTo(p, r))
                    })
                }
                msgs => {
                    groups.close(&mut |at, p, r| self.queue.push(at, Ev::HaveTo(p, r)));
                    self.queue.push(at, Ev::Deliver(c, side.other(), msgs));
                }
            }
        }
        groups.close(&mut |at, p, r| self.queue.push(at, Ev::HaveTo(p, r)));
        self.have_groups = groups;
    }

    fn schedule_timer(&mut self, h: u32) {
        let host = &self.hosts[h as usize];
        let Some(due) = host.swarm.poll_timeout() else {
            return;
        };
        let at = (due.saturating_duration_since(self.epoch).as_nanos() as u64).max(self.now);
        if host.timer_at.is_some_and(|t| t <= at) {
            return;
        }
        self.hosts[h as usize].timer_at = Some(at);
        self.push(at, Ev::Timer(h));
    }

    fn piece_time(&self, piece: u32, rate: u64) -> u64 {
        let size = self.hosts[0].shared.piece_size(piece);
        (f64::from(size) / rate.max(1) as f64 * 1e9) as u64
    }

    fn check_done(&mut self, h: u32) {
        let host = &mut self.hosts[h as usize];
        if host.done_at.is_some() || !host.shared.all_verified() {
            return;
        }
        host.done_at = Some(self.now);
        if host.fate.dies_at.is_none() {
            self.unfinished -= 1;
        }
        self.send_announce(h, TrackerEvent::Completed);
    }

    // ---- the tracker -----------------------------------------------------------------

    fn send_announce(&mut self, h: u32, event: TrackerEvent) {
        let at = self.now + self.fleet_delay(h, 0);
        self.push(at, Ev::Announce(h, event));
    }

    fn fleet_delay(&self, a: u32, b: u32) -> u64 {
        if a == b {
            0
        } else {
            self.fleet.one_way_delay_ns(HostId(a), HostId(b))
        }
    }

    fn announce_at_tracker(&mut self, h: u32, event: TrackerEvent) {
        let host = &self.hosts[h as usize];
        if host.life == Life::Dead {
            return;
        }
        let place = self.topology.resolve(host.addr.ip(), None, None);
        let req = AnnounceIn {
            info_hash: self.meta.info_hash,
            peer_id: host.id.0,
            addr: host.addr,
            ip: None,
            port: host.addr.port(),
            event,
            left: host.left(self.s.blob),
            downloaded: 0,
            numwant: self.s.model.numwant as i32,
            place,
        };
        let now_s = STORE_EPOCH_S + self.now / 1_000_000_000;
        let mut peers = std::mem::take(&mut self.peers_buf);
        let interval = match self.tracker.announce(&req, now_s, &mut peers) {
            Ok(out) => u64::from(out.interval) * 1_000_000_000,
            Err(_) => {
                peers.clear();
                MIN_ANNOUNCE_NS
            }
        };
        let answer = peers.clone();
        self.peers_buf = peers;
        let at = self.now + self.fleet_delay(0, h);
        self.push(at, Ev::Peers(h, answer));
        if event != TrackerEvent::Completed {
            let next = at + interval.max(MIN_ANNOUNCE_NS);
            self.push(next, Ev::Reannounce(h));
        }
    }

    fn peers_arrived(&mut self, h: u32, peers: Vec<SocketAddr>) {
        let now_ns = self.now;
        let now = self.instant(now_ns);
        let host = &mut self.hosts[h as usize];
        if !host.running() {
            return;
        }
        for addr in peers {
            if addr == host.addr {
                continue;
            }
            let fresh = host
                .offered
                .get(&addr)
                .is_none_or(|&at| now_ns >= at + host::REOFFER_AFTER_NS);
            if fresh {
                host.offered.insert(addr, now_ns);
                host.swarm.add_peer_address(now, addr);
            }
        }
        self.drain(h);
    }

    // ---- connections -------------------------------------------------------------------

    fn conn(&self, c: ConnId) -> Option<&Conn> {
        self.conns
            .get(c.index as usize)?
            .as_ref()
            .filter(|x| x.gen == c.gen)
    }

    fn conn_mut(&mut self, c: ConnId) -> Option<&mut Conn> {
        self.conns
            .get_mut(c.index as usize)?
            .as_mut()
            .filter(|x| x.gen == c.gen)
    }

    fn dial(&mut self, h: u32, addr: SocketAddr, attempt: u32) {
        let target = self.by_ip.get(&addr.ip()).copied();
        let Some(b) = target.filter(|&b| b != h && addr.port() == host::PORT) else {
            self.push(
                self.now,
                Ev::DialFailed {
                    host: h,
                    addr,
                    attempt,
                },
            );
            return;
        };
        let rtt = self.fleet.rtt_ns(HostId(h), HostId(b));
        match self.hosts[b as usize].life {
            // Nobody listens yet: refused after a round trip.
            Life::NotStarted => {
                self.push(
                    self.now + rtt,
                    Ev::DialFailed {
                        host: h,
                        addr,
                        attempt,
                    },
                );
            }
            Life::Dead => {
                let at = self.now + CONNECT_TIMEOUT_NS;
                self.push(
                    at,
                    Ev::DialFailed {
                        host: h,
                        addr,
                        attempt,
                    },
                );
            }
            Life::Running => {
                self.next_conn_gen = self.next_conn_gen.wrapping_add(1);
                let index = match self.free_conns.pop() {
                    Some(i) => i,
                    None => {
                        self.conns.push(None);
                        (self.conns.len() - 1) as u32
                    }
                };
                let id = ConnId {
                    index,
                    gen: self.next_conn_gen,
                };
                let window = tcp::INITIAL_WINDOW;
                self.conns[index as usize] = Some(Conn {
                    gen: id.gen,
                    ends: [
                        End {
                            host: h,
                            key: None,
                            closed: false,
                        },
                        End {
                            host: b,
                            key: None,
                            closed: false,
                        },
                    ],
                    dirs: [Dir::new(window), Dir::new(window)],
                    delay_ns: rtt / 2,
                    rtt_ns: rtt,
                    attempt,
                });
                self.push(self.now + rtt, Ev::Connected(id));
            }
        }
    }

    fn connected(&mut self, c: ConnId) {
        let Some(conn) = self.conn(c) else { return };
        let (a, b, attempt, delay) = (
            conn.ends[0].host,
            conn.ends[1].host,
            conn.attempt,
            conn.delay_ns,
        );
        if !self.hosts[a as usize].running() {
            self.free_conn(c);
            return;
        }
        let addr = self.hosts[b as usize].addr;
        if self.hosts[b as usize].life == Life::Dead {
            self.free_conn(c);
            let at = self.now + CONNECT_TIMEOUT_NS;
            self.push(
                at,
                Ev::DialFailed {
                    host: a,
                    addr,
                    attempt,
                },
            );
            return;
        }
        let info = self.peer_info(a, b, true, attempt);
        let now = self.instant(self.now);
        let host = &mut self.hosts[a as usize];
        let key = host.new_key(c, Side::Dialer, delay);
        if let Some(conn) = self.conn_mut(c) {
            conn.ends[0].key = Some(key);
        }
        self.hosts[a as usize].swarm.peer_connected(now, key, info);
        self.drain(a);
    }

    fn peer_info(&self, us: u32, them: u32, outgoing: bool, attempt: u32) -> PeerInfo {
        PeerInfo {
            addr: self.hosts[them as usize].addr,
            outgoing,
            attempt,
            our_place: self.hosts[us as usize].place.clone(),
            their_place: Some(self.hosts[them as usize].place.clone()),
        }
    }

    fn deliver(&mut self, c: ConnId, to: Side, msgs: &[Out]) {
        let Some(conn) = self.conn(c) else { return };
        let end = conn.end(to);
        let (h, from, conn_delay) = (end.host, conn.end(to.other()).host, conn.delay_ns);
        if end.closed || !self.hosts[h as usize].running() {
            return;
        }
        let now = self.instant(self.now);
        let mut key = end.key;
        for msg in msgs {
            let result = match (key, msg) {
                (None, Out::Handshake) => {
                    // The acceptor learns of the connection with the dialer's handshake.
                    let info = self.peer_info(h, from, false, 0);
                    let k = self.hosts[h as usize].new_key(c, to, conn_delay);
                    if let Some(conn) = self.conn_mut(c) {
                        conn.end_mut(to).key = Some(k);
                    }
                    key = Some(k);
                    let hs = Handshake::new(self.meta.info_hash, self.hosts[from as usize].id.0);
                    let host = &mut self.hosts[h as usize];
                    host.swarm.peer_connected(now, k, info);
                    host.swarm.handshake(now, k, &hs)
                }
                (None, _) => Err("a message before the handshake".to_string()),
                (Some(k), Out::Handshake) => {
                    let hs = Handshake::new(self.meta.info_hash, self.hosts[from as usize].id.0);
                    self.hosts[h as usize].swarm.handshake(now, k, &hs)
                }
                (Some(k), msg) => {
                    let host = &mut self.hosts[h as usize];
                    conn::deliver(&mut host.swarm, now, k, msg, &mut host.bufs)
                }
            };
            if result.is_err() {
                self.drain(h);
                self.close_local(c, to);
                return;
            }
        }
        self.drain(h);
    }

    fn block_arrived(&mut self, c: ConnId, to: Side, b: BlockRef) {
        let Some(conn) = self.conn(c) else { return };
        let end = conn.end(to);
        let h = end.host;
        let Some(key) = end.key.filter(|_| !end.closed) else {
            return;
        };
        if !self.hosts[h as usize].running() {
            return;
        }
        let now = self.instant(self.now);
        let host = &mut self.hosts[h as usize];
        host.swarm.block_fragment(key, b.piece, b.begin, b.len);
        let result = host
            .swarm
            .block_received(now, key, b.piece, b.begin, b.len, &mut host.bufs);
        self.drain(h);
        if result.is_err() {
            self.close_local(c, to);
        }
    }

    /// This end closes: its core is told now, the other end one path delay later.
    fn close_local(&mut self, c: ConnId, side: Side) {
        let Some(conn) = self.conn(c) else { return };
        let delay = conn.delay_ns;
        let other_closed = conn.end(side.other()).closed;
        self.close_end(c, side);
        if !other_closed {
            self.push(self.now + delay, Ev::Closed(c, side.other()));
        }
    }

    /// Tells `side`'s core its connection is gone; frees the connection once both ends
    /// know.
    fn close_end(&mut self, c: ConnId, side: Side) {
        let Some(conn) = self.conn_mut(c) else { return };
        let end = conn.end_mut(side);
        if end.closed {
            return;
        }
        end.closed = true;
        let (h, key) = (end.host, end.key.take());
        let both = conn.ends.iter().all(|e| e.closed);
        self.stop_dir(c, Side::Dialer);
        self.stop_dir(c, Side::Acceptor);
        if let Some(key) = key {
            self.hosts[h as usize].free_key(key);
            if self.hosts[h as usize].running() {
                let now = self.instant(self.now);
                self.hosts[h as usize].swarm.peer_closed(now, key);
                self.drain(h);
            }
        }
        if both {
            self.free_conn(c);
        }
    }

    fn free_conn(&mut self, c: ConnId) {
        if self.conn(c).is_none() {
            return;
        }
        self.stop_dir(c, Side::Dialer);
        self.stop_dir(c, Side::Acceptor);
        // Keys of ends that never closed (a dead host's) are dropped with it.
        if let Some(conn) = self.conns[c.index as usize].take() {
            for e in conn.ends.iter() {
                if let Some(k) = e.key {
                    self.hosts[e.host as usize].free_key(k);
                }
            }
        }
        self.free_conns.push(c.index);
    }
}

/// An event's kind, for `RINGSWARM_SIM_DEBUG`'s counts.
fn kind_of(ev: &Ev) -> &'static str {
    match ev {
        Ev::Start(_) => "start",
        Ev::Die(_) => "die",
        Ev::Timer(_) => "timer",
        Ev::Announce(..) => "announce",
        Ev::Peers(..) => "peers",
        Ev::Reannounce(_) => "reannounce",
        Ev::Connected(_) => "connected",
        Ev::DialFailed { .. } => "dial failed",
        Ev::HaveTo(..) => "deliver have",
        Ev::Deliver(_, _, m) => match m.as_slice().first() {
            Some(Out::Have(_)) => "deliver have",
            Some(Out::Request(_)) => "deliver request",
            Some(Out::Cancel(_)) => "deliver cancel",
            _ => "deliver other",
        },
        Ev::Block(..) => "block",
        Ev::Closed(..) => "closed",
        Ev::Hashed(..) => "hashed",
        Ev::Written(..) => "written",
        Ev::Sample => "sample",
    }
}
