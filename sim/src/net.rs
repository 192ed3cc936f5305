//! A flow-level network model: links with capacities, flows over paths of links, and the
//! max-min fair rates of the flows ([`Network::allocate`]); and the fleet topology of a
//! scenario built on it ([`Fleet`]). Pure and deterministic: no clock, no randomness, no
//! iteration over hash maps; equal inputs give equal rates.
//!
//! # The fleet's links and paths
//!
//! Each host has an up link and a down link (its dc's `host_rate` each); each rack an
//! uplink and a downlink between it and its dc's core (`rack_uplink` each); each dc a WAN
//! out and a WAN in link (`wan_rate` each). The origin is one more host, in the first rack
//! of its dc, with links of the origin's rate. A flow from host A to host B crosses A's up
//! link; if their racks differ, A's rack uplink and B's rack downlink; if their dcs differ,
//! A's dc's WAN out and B's dc's WAN in; then B's down link: 2, 4 or 6 links. The dc
//! cores, and the network between the dcs, are taken to have no limit of their own.
//!
//! The one-way delay of a path is the sum of the delays of the links it crosses; each link
//! has the one-way delay its dc's scenario gives to its kind (`delay.host` for a host link,
//! `delay.rack` for a rack link, `delay.wan` for a WAN link). So two hosts of one rack are
//! `2 × host` apart, two racks of a dc `2 × host + 2 × rack`, and two dcs whose scenarios
//! both say `wan = "20ms"` are 40 ms apart (plus the host and rack hops): write half the
//! wanted dc-to-dc delay in each dc. The round trip is twice the one-way delay (paths are
//! symmetric).
//!
//! # Approximations
//!
//! - **Flow-level**: a transfer is a fluid flow with a rate, not packets. A flow's rate
//!   changes only when [`Network::allocate`] runs again (the driver runs it when flows
//!   start or end, or a link changes); between two runs every rate is constant.
//! - **Max-min fair sharing** stands for TCP's sharing of a bottleneck: competing flows get
//!   equal shares whatever their round-trip times (real TCP (CUBIC, Reno) favours short
//!   round trips somewhat), and a link is used to its full capacity (no headers, no
//!   retransmissions, no idle time between one piece request and the next).
//! - **No packet loss, no queues**: a path's delay is its propagation delay alone; no
//!   queueing delay builds up at a full link.
//! - **No slow start yet**: a flow runs at its fair share from its first byte. A TCP
//!   window is modelled only as a per-flow cap that the caller passes (window ÷ round trip);
//!   slow start, or a ramp, and when a connection's window is small enough to matter, come
//!   with the driver, which knows how long a connection has been idle.
//! - Links are full-duplex: the two directions never share capacity.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::scenario::Scenario;

/// The most links a path may cross (a fleet path crosses at most 6).
pub const MAX_HOPS: usize = 8;

/// A link of a [`Network`]: its index, in the order of [`Network::add_link`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkId(pub u32);

/// A flow of a [`Network`]. An id is reused once its flow is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowId(pub u32);

/// The links a flow crosses, in order: 1 to [`MAX_HOPS`], no link twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Path {
    links: [u32; MAX_HOPS],
    len: u8,
}

impl Path {
    /// # Panics
    /// If `links` is empty, longer than [`MAX_HOPS`] or names a link twice.
    pub fn new(links: &[LinkId]) -> Self {
        assert!(
            !links.is_empty() && links.len() <= MAX_HOPS,
            "a path crosses 1 to {MAX_HOPS} links, not {}",
            links.len()
        );
        let mut p = Self {
            links: [0; MAX_HOPS],
            len: 0,
        };
        for l in links {
            assert!(!p.raw().contains(&l.0), "link {} twice in a path", l.0);
            p.links[usize::from(p.len)] = l.0;
            p.len += 1;
        }
        p
    }

    pub fn links(&self) -> impl Iterator<Item = LinkId> + '_ {
        self.links[..usize::from(self.len)]
            .iter()
            .map(|&l| LinkId(l))
    }

    fn raw(&self) -> &[u32] {
        &self.links[..usize::from(self.len)]
    }
}

/// Links shared by flows; [`Network::allocate`] gives each flow its max-min fair rate.
/// Rates and capacities are in bytes per second.
#[derive(Clone, Debug, Default)]
pub struct Network {
    capacity: Vec<f64>,
    flows: Vec<Slot>,
    /// Each flow's rate, beside the slots: the driver reads every sending flow's rate each
    /// step, and a dense array of them stays in cache. NaN for a removed flow.
    rates: Vec<f64>,
    free: Vec<u32>,
    live: usize,
    /// Something changed since the last [`Network::allocate`] (a flow, a cap, a link).
    dirty: bool,
    /// Flows added since the last [`Network::allocate`], for [`Network::fill_new`].
    added: Vec<u32>,
    scratch: Scratch,
}

#[derive(Clone, Debug)]
struct Slot {
    path: Path,
    /// `f64::INFINITY`: no cap.
    cap: f64,
    rate: f64,
    live: bool,
    /// Added since the last [`Network::allocate`].
    fresh: bool,
}

/// Buffers of [`Network::allocate`], kept to avoid allocating on each run.
#[derive(Clone, Debug, Default)]
struct Scratch {
    /// Per link, where its flows start in `link_flows` (CSR); one more entry than links.
    start: Vec<u32>,
    link_flows: Vec<u32>,
    remaining: Vec<f64>,
    unfixed: Vec<u32>,
    fixed: Vec<bool>,
    heap: BinaryHeap<Entry>,
}

/// A candidate for the next rate to fix: a link's fair share, or a flow's cap.
#[derive(Clone, Copy, Debug)]
struct Entry {
    share: f64,
    /// A link (`is_cap` false) or a flow (`is_cap` true).
    index: u32,
    is_cap: bool,
}

impl Ord for Entry {
    /// Reversed, for a min-heap: the smallest share first; then links before caps, then
    /// the smaller index (so that ties break the same way on every run).
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .share
            .total_cmp(&self.share)
            .then(other.is_cap.cmp(&self.is_cap))
            .then(other.index.cmp(&self.index))
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Entry {}

impl Network {
    pub fn new() -> Self {
        Self::default()
    }

    /// A new link of `capacity` bytes per second (≥ 0; a dead link has 0).
    pub fn add_link(&mut self, capacity: f64) -> LinkId {
        assert!(capacity >= 0.0, "capacity {capacity}");
        self.capacity.push(capacity);
        LinkId(u32::try_from(self.capacity.len() - 1).expect("fewer than 2^32 links"))
    }

    pub fn links(&self) -> usize {
        self.capacity.len()
    }

    pub fn capacity(&self, link: LinkId) -> f64 {
        self.capacity[link.0 as usize]
    }

    /// Changes a link's capacity (a slow host); rates change at the next
    /// [`allocate`](Self::allocate).
    pub fn set_capacity(&mut self, link: LinkId, capacity: f64) {
        assert!(capacity >= 0.0, "capacity {capacity}");
        self.capacity[link.0 as usize] = capacity;
        self.dirty = true;
    }

    /// A new flow over `path`, at most `cap` bytes per second if given (a window-limited
    /// TCP flow: window ÷ round trip). Its rate is 0 until the next
    /// [`allocate`](Self::allocate).
    pub fn add_flow(&mut self, path: Path, cap: Option<f64>) -> FlowId {
        assert!(
            path.raw()
                .iter()
                .all(|&l| (l as usize) < self.capacity.len()),
            "a path names a link the network does not have"
        );
        let cap = cap.unwrap_or(f64::INFINITY);
        assert!(cap >= 0.0, "cap {cap}");
        let slot = Slot {
            path,
            cap,
            rate: 0.0,
            live: true,
            fresh: true,
        };
        self.live += 1;
        self.dirty = true;
        let id = match self.free.pop() {
            Some(i) => {
                self.flows[i as usize] = slot;
                self.rates[i as usize] = 0.0;
                FlowId(i)
            }
            None => {
                self.flows.push(slot);
                self.rates.push(0.0);
                FlowId(u32::try_from(self.flows.len() - 1).expect("fewer than 2^32 flows"))
            }
        };
        self.added.push(id.0);
        id
    }

    /// Changes a flow's cap (`None`: none).
    pub fn set_cap(&mut self, flow: FlowId, cap: Option<f64>) {
        let cap = cap.unwrap_or(f64::INFINITY);
        assert!(cap >= 0.0, "cap {cap}");
        let slot = self.slot_mut(flow);
        if slot.cap != cap {
            slot.cap = cap;
            self.dirty = true;
        }
    }

    /// Ends a flow; its id may be given to a later flow.
    pub fn remove_flow(&mut self, flow: FlowId) {
        self.slot_mut(flow).live = false;
        self.rates[flow.0 as usize] = f64::NAN;
        self.live -= 1;
        self.dirty = true;
        self.free.push(flow.0);
    }

    /// The live flows.
    pub fn flows(&self) -> usize {
        self.live
    }

    /// Whether the flow is live (not removed).
    pub fn is_live(&self, flow: FlowId) -> bool {
        self.rates.get(flow.0 as usize).is_some_and(|r| !r.is_nan())
    }

    /// The flow's rate as of the last [`allocate`](Self::allocate).
    pub fn rate(&self, flow: FlowId) -> f64 {
        let rate = self.rates[flow.0 as usize];
        assert!(!rate.is_nan(), "flow {} was removed", flow.0);
        rate
    }

    pub fn path(&self, flow: FlowId) -> &Path {
        &self.slot(flow).path
    }

    /// The live flows, in id order.
    pub fn flow_ids(&self) -> impl Iterator<Item = FlowId> + '_ {
        self.flows
            .iter()
            .enumerate()
            .filter(|(_, s)| s.live)
            .map(|(i, _)| FlowId(i as u32))
    }

    fn slot(&self, flow: FlowId) -> &Slot {
        let s = &self.flows[flow.0 as usize];
        assert!(s.live, "flow {} was removed", flow.0);
        s
    }

    fn slot_mut(&mut self, flow: FlowId) -> &mut Slot {
        let s = &mut self.flows[flow.0 as usize];
        assert!(s.live, "flow {} was removed", flow.0);
        s
    }

    /// Sets every live flow's rate to its max-min fair share: no flow's rate can grow
    /// without shrinking that of a flow whose rate is no larger. Each flow ends either at
    /// its cap or on a *bottleneck*: a link it crosses that is full and on which no flow
    /// has a higher rate.
    ///
    /// Progressive filling: every link's fair share is its remaining capacity ÷ its flows
    /// not yet fixed; take the smallest share (or the smallest cap, if smaller), fix that
    /// link's unfixed flows at it (or that flow at its cap), take their rates off every link
    /// they cross, and go on until every flow is fixed. Fixing flows at a link's share
    /// never lowers another link's share, so the order is that of a min-heap of shares,
    /// each link's entry a lower bound of its share, brought up to date (pushed again)
    /// when it comes out stale. A cap at or above a link of its path never binds: no entry.
    ///
    /// Cost, for F flows of at most P links over L links: the per-link flow lists are built
    /// in O(F·P + L); each flow is fixed once, touching its P links; the heap holds at most
    /// one entry per link and one per binding cap, and a link comes out again at most once
    /// per flow fixed on it, so the filling is O(F·P · log(L + F)), and most links come out
    /// once or twice. No pass over all links per step.
    ///
    /// When nothing changed since the last run, the rates stand and nothing is done.
    pub fn allocate(&mut self) {
        for i in self.added.drain(..) {
            self.flows[i as usize].fresh = false;
        }
        if !std::mem::take(&mut self.dirty) {
            return;
        }
        let links = self.capacity.len();
        let s = &mut self.scratch;
        // Per-link flow lists, CSR: counts, prefix sums, then fill.
        s.start.clear();
        s.start.resize(links + 1, 0);
        for f in self.flows.iter().filter(|f| f.live) {
            for &l in f.path.raw() {
                s.start[l as usize + 1] += 1;
            }
        }
        for i in 0..links {
            s.start[i + 1] += s.start[i];
        }
        s.link_flows.clear();
        s.link_flows.resize(s.start[links] as usize, 0);
        s.unfixed.clear();
        s.unfixed.resize(links, 0);
        for (i, f) in self.flows.iter().enumerate().filter(|(_, f)| f.live) {
            for &l in f.path.raw() {
                let l = l as usize;
                s.link_flows[(s.start[l] + s.unfixed[l]) as usize] = i as u32;
                s.unfixed[l] += 1;
            }
        }
        s.remaining.clear();
        s.remaining.extend_from_slice(&self.capacity);
        s.fixed.clear();
        s.fixed.resize(self.flows.len(), false);
        s.heap.clear();
        for l in 0..links {
            if s.unfixed[l] > 0 {
                s.heap.push(Entry {
                    share: s.remaining[l] / f64::from(s.unfixed[l]),
                    index: l as u32,
                    is_cap: false,
                });
            }
        }
        for (i, f) in self.flows.iter().enumerate() {
            // A cap no smaller than a link of the path can never be what binds: no entry.
            let binds = |f: &Slot| {
                f.path
                    .raw()
                    .iter()
                    .all(|&l| f.cap < self.capacity[l as usize])
            };
            if f.live && f.cap.is_finite() && binds(f) {
                s.heap.push(Entry {
                    share: f.cap,
                    index: i as u32,
                    is_cap: true,
                });
            }
        }
        while let Some(e) = s.heap.pop() {
            if e.is_cap {
                if !s.fixed[e.index as usize] {
                    fix(&mut self.flows, s, e.index, e.share);
                }
                continue;
            }
            let l = e.index as usize;
            if s.unfixed[l] == 0 {
                continue;
            }
            // The entry is a lower bound of the link's share (shares only grow as flows
            // are fixed): one entry per link, brought up to date when it comes out.
            let share = s.remaining[l] / f64::from(s.unfixed[l]);
            if share > e.share {
                s.heap.push(Entry { share, ..e });
                continue;
            }
            for k in s.start[l]..s.start[l + 1] {
                let f = s.link_flows[k as usize];
                if !s.fixed[f as usize] {
                    fix(&mut self.flows, s, f, share);
                }
            }
        }
        for (rate, f) in self.rates.iter_mut().zip(&self.flows) {
            if f.live {
                *rate = f.rate;
            }
        }
    }
}

impl Network {
    /// Between two [`Network::allocate`] runs: gives each flow added since the last run
    /// what its links have left (their capacity less the rates of the flows on them), up to
    /// its cap, in the order added; every other rate stands. No link is ever given more
    /// than its capacity. Cheap (a pass over the flows, then the new flows' paths), so a
    /// driver can run it every step and the full allocation less often: a new flow starts
    /// at once on the spare capacity, and gets its fair share at the next full run.
    pub fn fill_new(&mut self) {
        if self.added.is_empty() {
            return;
        }
        // A slot freed and taken again is listed twice.
        self.added.sort_unstable();
        self.added.dedup();
        let s = &mut self.scratch;
        s.remaining.clear();
        s.remaining.extend_from_slice(&self.capacity);
        for f in self.flows.iter().filter(|f| f.live && !f.fresh) {
            for &l in f.path.raw() {
                s.remaining[l as usize] -= f.rate;
            }
        }
        for &i in &self.added {
            let f = &mut self.flows[i as usize];
            if !f.live || !f.fresh {
                continue;
            }
            let room = f
                .path
                .raw()
                .iter()
                .map(|&l| s.remaining[l as usize])
                .fold(f.cap, f64::min)
                .max(0.0);
            f.rate = room;
            self.rates[i as usize] = room;
            for &l in f.path.raw() {
                s.remaining[l as usize] -= room;
            }
        }
    }
}

/// Fixes flow `f` at `rate` and takes it off the links it crosses.
fn fix(flows: &mut [Slot], s: &mut Scratch, f: u32, rate: f64) {
    let flow = &mut flows[f as usize];
    flow.rate = rate;
    s.fixed[f as usize] = true;
    for &l in flow.path.raw() {
        let l = l as usize;
        s.remaining[l] = (s.remaining[l] - rate).max(0.0);
        s.unfixed[l] -= 1;
    }
}

/// A host of a [`Fleet`]: 0 is the origin; then the hosts of each dc in scenario order,
/// rack by rack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostId(pub u32);

/// What a link of a [`Fleet`] is (rack and dc numbers are indexes: racks counted across
/// all dcs in order, dcs in scenario order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkKind {
    HostUp(HostId),
    HostDown(HostId),
    RackUp(u32),
    RackDown(u32),
    WanOut(u32),
    WanIn(u32),
}

/// The links of a scenario's fleet on a [`Network`] (see the module docs), and the path and
/// delay between any two hosts. Links are numbered: host `h`'s up and down `2h`, `2h + 1`;
/// then each rack's up and down; then each dc's WAN out and in.
#[derive(Clone, Debug)]
pub struct Fleet {
    pub net: Network,
    /// Per host: its dc and its rack.
    host_dc: Vec<u32>,
    host_rack: Vec<u32>,
    /// Per rack: its dc.
    rack_dc: Vec<u32>,
    /// Per dc: one-way delays in ns of its host, rack and WAN links.
    delays: Vec<[u64; 3]>,
    rack_base: u32,
    dc_base: u32,
}

impl Fleet {
    pub fn new(scenario: &Scenario) -> Self {
        let mut host_dc = vec![scenario.origin.dc as u32];
        let mut host_rack = vec![0];
        let mut rack_dc = Vec::new();
        let mut origin_rack = 0;
        let mut rack_rate = Vec::new();
        for (d, dc) in scenario.dcs.iter().enumerate() {
            if d == scenario.origin.dc {
                origin_rack = rack_dc.len() as u32;
                if !scenario.origin.shares_rack {
                    // A rack of its own, linked to the core at the origin's rate.
                    rack_dc.push(d as u32);
                    rack_rate.push(scenario.origin.rate);
                }
            }
            for _ in 0..dc.racks {
                let r = rack_dc.len() as u32;
                rack_dc.push(d as u32);
                rack_rate.push(dc.rack_uplink);
                for _ in 0..dc.hosts_per_rack {
                    host_dc.push(d as u32);
                    host_rack.push(r);
                }
            }
        }
        host_rack[0] = origin_rack;
        let mut net = Network::new();
        for (h, &d) in host_dc.iter().enumerate() {
            let rate = if h == 0 {
                scenario.origin.rate
            } else {
                scenario.dcs[d as usize].host_rate
            } as f64;
            net.add_link(rate);
            net.add_link(rate);
        }
        let rack_base = net.links() as u32;
        for &rate in &rack_rate {
            net.add_link(rate as f64);
            net.add_link(rate as f64);
        }
        let dc_base = net.links() as u32;
        for dc in &scenario.dcs {
            net.add_link(dc.wan_rate as f64);
            net.add_link(dc.wan_rate as f64);
        }
        let delays = scenario
            .dcs
            .iter()
            .map(|d| [d.delay.host, d.delay.rack, d.delay.wan])
            .collect();
        Self {
            net,
            host_dc,
            host_rack,
            rack_dc,
            delays,
            rack_base,
            dc_base,
        }
    }

    /// Hosts, the origin included.
    pub fn hosts(&self) -> usize {
        self.host_dc.len()
    }

    pub fn racks(&self) -> usize {
        self.rack_dc.len()
    }

    pub fn dc(&self, h: HostId) -> u32 {
        self.host_dc[h.0 as usize]
    }

    pub fn rack(&self, h: HostId) -> u32 {
        self.host_rack[h.0 as usize]
    }

    pub fn rack_dc(&self, rack: u32) -> u32 {
        self.rack_dc[rack as usize]
    }

    pub fn host_up(&self, h: HostId) -> LinkId {
        LinkId(2 * h.0)
    }

    pub fn host_down(&self, h: HostId) -> LinkId {
        LinkId(2 * h.0 + 1)
    }

    pub fn rack_up(&self, rack: u32) -> LinkId {
        LinkId(self.rack_base + 2 * rack)
    }

    pub fn rack_down(&self, rack: u32) -> LinkId {
        LinkId(self.rack_base + 2 * rack + 1)
    }

    pub fn wan_out(&self, dc: u32) -> LinkId {
        LinkId(self.dc_base + 2 * dc)
    }

    pub fn wan_in(&self, dc: u32) -> LinkId {
        LinkId(self.dc_base + 2 * dc + 1)
    }

    /// What link `l` is (for counting bytes into racks and dcs).
    pub fn kind(&self, l: LinkId) -> LinkKind {
        let (base, n) = if l.0 >= self.dc_base {
            (self.dc_base, l.0 - self.dc_base)
        } else if l.0 >= self.rack_base {
            (self.rack_base, l.0 - self.rack_base)
        } else {
            (0, l.0)
        };
        let up = n % 2 == 0;
        match (base, up) {
            (0, true) => LinkKind::HostUp(HostId(n / 2)),
            (0, false) => LinkKind::HostDown(HostId(n / 2)),
            (b, true) if b == self.rack_base => LinkKind::RackUp(n / 2),
            (b, false) if b == self.rack_base => LinkKind::RackDown(n / 2),
            (_, true) => LinkKind::WanOut(n / 2),
            (_, false) => LinkKind::WanIn(n / 2),
        }
    }

    /// The links from `a` to `b` (see the module docs).
    ///
    /// # Panics
    /// If `a == b`.
    pub fn path(&self, a: HostId, b: HostId) -> Path {
        assert_ne!(a, b, "a flow from a host to itself");
        let mut links = [LinkId(0); 6];
        let mut n = 0;
        let mut push = |l| {
            links[n] = l;
            n += 1;
        };
        push(self.host_up(a));
        let (ra, rb) = (self.rack(a), self.rack(b));
        if ra != rb {
            push(self.rack_up(ra));
            let (da, db) = (self.dc(a), self.dc(b));
            if da != db {
                push(self.wan_out(da));
                push(self.wan_in(db));
            }
            push(self.rack_down(rb));
        }
        push(self.host_down(b));
        Path::new(&links[..n])
    }

    /// The one-way delay from `a` to `b` in nanoseconds: the sum of its links' delays.
    pub fn one_way_delay_ns(&self, a: HostId, b: HostId) -> u64 {
        self.path(a, b)
            .links()
            .map(|l| match self.kind(l) {
                LinkKind::HostUp(h) | LinkKind::HostDown(h) => self.delays[self.dc(h) as usize][0],
                LinkKind::RackUp(r) | LinkKind::RackDown(r) => {
                    self.delays[self.rack_dc(r) as usize][1]
                }
                LinkKind::WanOut(d) | LinkKind::WanIn(d) => self.delays[d as usize][2],
            })
            .sum()
    }

    /// The round trip between `a` and `b` in nanoseconds (twice the one-way delay).
    pub fn rtt_ns(&self, a: HostId, b: HostId) -> u64 {
        2 * self.one_way_delay_ns(a, b)
    }

    /// Starts a flow from `a` to `b`, at most `cap` bytes per second if given.
    pub fn start_flow(&mut self, a: HostId, b: HostId, cap: Option<f64>) -> FlowId {
        let path = self.path(a, b);
        self.net.add_flow(path, cap)
    }

    /// Sets both of a host's links to `rate` bytes per second (a slow host: a quarter of
    /// its rate; a dead one: 0).
    pub fn set_host_rate(&mut self, h: HostId, rate: f64) {
        let (up, down) = (self.host_up(h), self.host_down(h));
        self.net.set_capacity(up, rate);
        self.net.set_capacity(down, rate);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    fn path(links: &[u32]) -> Path {
        Path::new(&links.iter().map(|&l| LinkId(l)).collect::<Vec<_>>())
    }

    fn net(caps: &[f64]) -> Network {
        let mut n = Network::new();
        for &c in caps {
            n.add_link(c);
        }
        n
    }

    #[test]
    fn one_flow_gets_the_bottleneck_rate() {
        let mut n = net(&[10.0, 3.0, 7.0]);
        let f = n.add_flow(path(&[0, 1, 2]), None);
        n.allocate();
        assert_eq!(n.rate(f), 3.0);
    }

    #[test]
    fn two_flows_split_a_link() {
        let mut n = net(&[10.0, 100.0]);
        let a = n.add_flow(path(&[0]), None);
        let b = n.add_flow(path(&[0, 1]), None);
        n.allocate();
        assert_eq!((n.rate(a), n.rate(b)), (5.0, 5.0));
        n.remove_flow(a);
        n.allocate();
        assert_eq!(n.rate(b), 10.0, "alone again, it takes the whole link");
    }

    /// Links 0, 1, 2 of 10, 4 and 9; flow 0 crosses all three, flow 1 link 0, flow 2 link
    /// 1, flows 3 and 4 link 2. Fair shares first: 10/2, 4/2, 9/3: link 1 binds, flows 0
    /// and 2 get 2. Then link 0 has 8 for flow 1 alone and link 2 has 7 for flows 3 and 4:
    /// 3.5 each, the smaller, fixed next; flow 1 gets 8 last.
    #[test]
    fn the_classic_max_min_example() {
        let mut n = net(&[10.0, 4.0, 9.0]);
        let f: Vec<FlowId> = [&[0u32, 1, 2][..], &[0], &[1], &[2], &[2]]
            .iter()
            .map(|p| n.add_flow(path(p), None))
            .collect();
        n.allocate();
        let rates: Vec<f64> = f.iter().map(|&f| n.rate(f)).collect();
        assert_eq!(rates, [2.0, 8.0, 2.0, 3.5, 3.5]);
    }

    #[test]
    fn a_capped_flow_leaves_the_rest_to_others() {
        let mut n = net(&[10.0]);
        let capped = n.add_flow(path(&[0]), Some(3.0));
        let a = n.add_flow(path(&[0]), None);
        let b = n.add_flow(path(&[0]), None);
        n.allocate();
        assert_eq!((n.rate(capped), n.rate(a), n.rate(b)), (3.0, 3.5, 3.5));
        // A cap above the fair share does not bind.
        n.set_cap(capped, Some(4.0));
        n.set_cap(a, Some(100.0));
        n.allocate();
        assert!(close(n.rate(capped), 10.0 / 3.0), "{}", n.rate(capped));
        assert!(close(n.rate(a), 10.0 / 3.0));
    }

    #[test]
    fn a_dead_link_stops_its_flows_only() {
        let mut n = net(&[0.0, 10.0]);
        let dead = n.add_flow(path(&[0, 1]), None);
        let other = n.add_flow(path(&[1]), None);
        n.allocate();
        assert_eq!((n.rate(dead), n.rate(other)), (0.0, 10.0));
    }

    #[test]
    fn ids_are_reused_and_rates_kept_apart() {
        let mut n = net(&[10.0]);
        let a = n.add_flow(path(&[0]), None);
        let b = n.add_flow(path(&[0]), None);
        n.remove_flow(a);
        let c = n.add_flow(path(&[0]), Some(1.0));
        assert_eq!(c, a);
        assert_eq!(n.flows(), 2);
        assert_eq!(n.flow_ids().collect::<Vec<_>>(), [a, b]);
        n.allocate();
        assert_eq!((n.rate(b), n.rate(c)), (9.0, 1.0));
    }

    #[test]
    fn new_flows_take_what_is_left_until_the_next_allocation() {
        let mut n = net(&[10.0, 4.0]);
        let a = n.add_flow(path(&[0]), None);
        let b = n.add_flow(path(&[0]), None);
        n.allocate();
        assert_eq!((n.rate(a), n.rate(b)), (5.0, 5.0));
        let c = n.add_flow(path(&[0, 1]), None);
        n.fill_new();
        assert_eq!(n.rate(c), 0.0, "link 0 is full");
        n.remove_flow(a);
        n.fill_new();
        assert_eq!(
            (n.rate(b), n.rate(c)),
            (5.0, 4.0),
            "a's rate is free; link 1 caps c"
        );
        let d = n.add_flow(path(&[0]), Some(0.5));
        n.fill_new();
        assert_eq!(n.rate(d), 0.5, "its cap");
        n.allocate();
        assert_eq!((n.rate(b), n.rate(c), n.rate(d)), (5.5, 4.0, 0.5));
    }

    fn scenario(dcs: &[(&str, u32, u32, &str, &str, &str)]) -> Scenario {
        let mut t = format!(
            "blob = \"1GiB\"\norigin = {{ dc = \"{}\", rate = \"25Gbit\", shares_rack = true }}\n",
            dcs[0].0
        );
        for (name, racks, hosts, rack_up, wan, wan_delay) in dcs {
            t += &format!(
                "[[dc]]\nname = \"{name}\"\nracks = {racks}\nhosts_per_rack = {hosts}\n\
                 host_rate = \"25Gbit\"\nrack_uplink = \"{rack_up}\"\nwan_rate = \"{wan}\"\n\
                 delay = {{ host = \"20us\", rack = \"100us\", wan = \"{wan_delay}\" }}\n"
            );
        }
        Scenario::parse(&t).unwrap()
    }

    const GBIT: f64 = 125_000_000.0;

    #[test]
    fn fleet_layout_paths_and_delays() {
        // east: 2 racks of 3 (hosts 1..=6); west: 1 rack of 2 (hosts 7, 8); origin 0 in
        // east's rack 0.
        let f = Fleet::new(&scenario(&[
            ("east", 2, 3, "100Gbit", "10Gbit", "10ms"),
            ("west", 1, 2, "100Gbit", "40Gbit", "15ms"),
        ]));
        assert_eq!((f.hosts(), f.racks(), f.net.links()), (9, 3, 18 + 6 + 4));
        assert_eq!((f.dc(HostId(0)), f.rack(HostId(0))), (0, 0));
        assert_eq!((f.dc(HostId(4)), f.rack(HostId(4))), (0, 1));
        assert_eq!((f.dc(HostId(8)), f.rack(HostId(8))), (1, 2));
        assert_eq!(f.net.capacity(f.host_up(HostId(0))), 25.0 * GBIT);
        assert_eq!(f.net.capacity(f.wan_in(1)), 40.0 * GBIT);
        for l in 0..f.net.links() as u32 {
            let back = match f.kind(LinkId(l)) {
                LinkKind::HostUp(h) => f.host_up(h),
                LinkKind::HostDown(h) => f.host_down(h),
                LinkKind::RackUp(r) => f.rack_up(r),
                LinkKind::RackDown(r) => f.rack_down(r),
                LinkKind::WanOut(d) => f.wan_out(d),
                LinkKind::WanIn(d) => f.wan_in(d),
            };
            assert_eq!(back, LinkId(l));
        }
        let same_rack = f.path(HostId(1), HostId(2));
        assert_eq!(
            same_rack.links().collect::<Vec<_>>(),
            [f.host_up(HostId(1)), f.host_down(HostId(2))]
        );
        assert_eq!(f.one_way_delay_ns(HostId(1), HostId(2)), 40_000);
        assert_eq!(
            f.path(HostId(0), HostId(5)).links().collect::<Vec<_>>(),
            [
                f.host_up(HostId(0)),
                f.rack_up(0),
                f.rack_down(1),
                f.host_down(HostId(5))
            ]
        );
        assert_eq!(f.one_way_delay_ns(HostId(0), HostId(5)), 240_000);
        assert_eq!(
            f.path(HostId(5), HostId(8)).links().collect::<Vec<_>>(),
            [
                f.host_up(HostId(5)),
                f.rack_up(1),
                f.wan_out(0),
                f.wan_in(1),
                f.rack_down(2),
                f.host_down(HostId(8))
            ]
        );
        // 2 × 20 µs + 2 × 100 µs + 10 ms + 15 ms.
        assert_eq!(f.one_way_delay_ns(HostId(5), HostId(8)), 25_240_000);
        assert_eq!(f.rtt_ns(HostId(8), HostId(5)), 50_480_000);
    }

    #[test]
    fn by_default_the_origin_has_a_rack_of_its_own() {
        let s = Scenario::parse(
            "blob = \"1GiB\"\norigin = { dc = \"b\", rate = \"10Gbit\" }\n\
             [[dc]]\nname = \"a\"\nracks = 2\nhosts_per_rack = 2\nhost_rate = \"25Gbit\"\n\
             rack_uplink = \"100Gbit\"\nwan_rate = \"100Gbit\"\n\
             [[dc]]\nname = \"b\"\nracks = 1\nhosts_per_rack = 2\nhost_rate = \"25Gbit\"\n\
             rack_uplink = \"100Gbit\"\nwan_rate = \"100Gbit\"\n",
        )
        .unwrap();
        let f = Fleet::new(&s);
        // a: racks 0, 1; b: the origin's rack 2, then rack 3.
        assert_eq!((f.hosts(), f.racks()), (7, 4));
        assert_eq!((f.dc(HostId(0)), f.rack(HostId(0))), (1, 2));
        assert_eq!((f.rack(HostId(5)), f.rack(HostId(6))), (3, 3));
        assert_eq!(f.rack_dc(2), 1);
        assert_eq!(f.net.capacity(f.rack_up(2)), 10.0 * GBIT);
        assert_eq!(f.net.capacity(f.rack_up(3)), 100.0 * GBIT);
    }

    #[test]
    fn a_flow_crossing_the_wan_gets_the_wan_share() {
        // east: 4 racks of 4; west: 4 racks of 4; WAN 10 Gbit, hosts 25, racks 400.
        let mut f = Fleet::new(&scenario(&[
            ("east", 4, 4, "400Gbit", "10Gbit", "10ms"),
            ("west", 4, 4, "400Gbit", "100Gbit", "10ms"),
        ]));
        // Four east → west flows, from and to distinct hosts: 10 / 4 = 2.5 Gbit each.
        let wan: Vec<FlowId> = (0..4)
            .map(|i| f.start_flow(HostId(1 + 4 * i), HostId(17 + 4 * i), None))
            .collect();
        // A flow inside east from one of the same senders: it gets the rest of that
        // sender's host link, 25 - 2.5.
        let local = f.start_flow(HostId(1), HostId(2), None);
        f.net.allocate();
        for &w in &wan {
            assert!(close(f.net.rate(w), 2.5 * GBIT), "{}", f.net.rate(w) / GBIT);
        }
        assert!(close(f.net.rate(local), 22.5 * GBIT));
        // A slow receiver at a quarter of 25 Gbit: 6.25 > 2.5, so it does not bind.
        f.set_host_rate(HostId(17), 25.0 / 4.0 * GBIT);
        f.net.allocate();
        assert!(close(f.net.rate(wan[0]), 2.5 * GBIT));
        // At 1 Gbit it does: the other three share 9 Gbit.
        f.set_host_rate(HostId(17), GBIT);
        f.net.allocate();
        assert!(close(f.net.rate(wan[0]), GBIT));
        for &w in &wan[1..] {
            assert!(close(f.net.rate(w), 3.0 * GBIT), "{}", f.net.rate(w) / GBIT);
        }
    }

    #[test]
    fn an_oversubscribed_rack_uplink_binds() {
        // 8 hosts of rack 0 send to 8 hosts of rack 1 over 100 Gbit racks: 12.5 each.
        let mut f = Fleet::new(&scenario(&[("east", 2, 8, "100Gbit", "10Gbit", "1ms")]));
        let flows: Vec<FlowId> = (1..=8)
            .map(|i| f.start_flow(HostId(i), HostId(i + 8), None))
            .collect();
        f.net.allocate();
        for fl in flows {
            assert!(close(f.net.rate(fl), 12.5 * GBIT));
        }
    }

    /// The max-min conditions: no link over capacity, and every flow at its cap or on a
    /// bottleneck (a full link where no flow is faster).
    fn check_max_min(n: &Network) -> Result<(), TestCaseError> {
        let mut load = vec![0.0; n.links()];
        let mut fastest = vec![0.0f64; n.links()];
        for f in n.flow_ids() {
            let r = n.rate(f);
            prop_assert!(r >= 0.0 && r.is_finite());
            for l in n.path(f).links() {
                load[l.0 as usize] += r;
                fastest[l.0 as usize] = fastest[l.0 as usize].max(r);
            }
        }
        // Relative slack for rounding: shares are quotients, loads sums of them.
        let eps = |x: f64| 1e-9 * x.abs().max(1.0);
        let full = |l: usize| {
            let c = n.capacity(LinkId(l as u32));
            load[l] >= c - eps(c)
        };
        for (l, &x) in load.iter().enumerate() {
            let c = n.capacity(LinkId(l as u32));
            prop_assert!(x <= c + eps(c), "link {l} over: {x} > {c}");
        }
        for f in n.flow_ids() {
            let r = n.rate(f);
            let capped = n.flows[f.0 as usize].cap;
            let at_cap = capped.is_finite() && (r - capped).abs() <= eps(capped);
            let bottleneck = n
                .path(f)
                .links()
                .any(|l| full(l.0 as usize) && r >= fastest[l.0 as usize] - eps(r));
            prop_assert!(
                at_cap || bottleneck,
                "flow {} at {r} has no bottleneck",
                f.0
            );
        }
        Ok(())
    }

    /// The 3-dc example (9 601 hosts, about 2·10⁴ links) with 10⁵ flows between hosts
    /// drawn by a fixed generator, a fifth of them capped: the conditions hold at scale.
    #[test]
    fn max_min_conditions_hold_at_fleet_scale() {
        let s = Scenario::parse(include_str!("../examples/fleet-3dc.toml")).unwrap();
        let mut f = Fleet::new(&s);
        let hosts = f.hosts() as u64;
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..100_000 {
            let a = next() % hosts;
            let b = (a + 1 + next() % (hosts - 1)) % hosts;
            let cap = (i % 5 == 0).then(|| (next() % 1000) as f64 * 1e6);
            f.start_flow(HostId(a as u32), HostId(b as u32), cap);
        }
        f.net.allocate();
        check_max_min(&f.net).unwrap();
    }

    proptest! {
        #[test]
        fn max_min_conditions_hold(
            caps in prop::collection::vec(0u32..=100, 1..8),
            flows in prop::collection::vec(
                (prop::collection::vec(any::<bool>(), 8), prop::option::of(1u32..=60)),
                1..24,
            ),
            removed in prop::collection::vec(any::<bool>(), 24),
        ) {
            let mut n = net(&caps.iter().map(|&c| f64::from(c)).collect::<Vec<_>>());
            let mut ids = Vec::new();
            for (mask, cap) in &flows {
                let links: Vec<u32> =
                    (0..caps.len() as u32).filter(|&l| mask[l as usize]).collect();
                let links = if links.is_empty() { vec![0] } else { links };
                ids.push(n.add_flow(path(&links), cap.map(f64::from)));
            }
            n.allocate();
            check_max_min(&n)?;
            // Remove some, add one back (a reused id), allocate again.
            for (id, gone) in ids.iter().zip(&removed) {
                if *gone && n.flows() > 1 {
                    n.remove_flow(*id);
                }
            }
            n.add_flow(path(&[0]), None);
            n.allocate();
            check_max_min(&n)?;
            // Deterministic: the same network allocated again gives the same rates.
            let before: Vec<f64> = n.flow_ids().map(|f| n.rate(f)).collect();
            n.allocate();
            let after: Vec<f64> = n.flow_ids().map(|f| n.rate(f)).collect();
            prop_assert_eq!(before, after);
        }
    }
}
