//! Data on the wire: a connection's direction starts sending when its core has blocks for
//! it, the links are shared out among the sending directions, and each moves its rate ×
//! step bytes, finishing blocks at their exact times (see the module docs of `world`).

use super::conn::{ConnId, Side};
use super::{tcp, Ev, World};
use crate::net::{FlowId, HostId};
use ringswarm_swarm::{BlockRef, PeerKey};

/// A direction while it sends: what each step needs, kept together in one list so that a
/// step walks it in order rather than looking up each connection (a cache miss each); the
/// connection is looked at only when the direction stops.
pub(super) struct Sending {
    c: ConnId,
    side: Side,
    flow: FlowId,
    from: u32,
    to: u32,
    /// The sender's key in its core.
    key: Option<PeerKey>,
    delay_ns: u64,
    rtt_ns: u64,
    /// Which of the timeline's totals its bytes count in: into racks, into dcs, out of
    /// the origin.
    cross_rack: bool,
    cross_dc: bool,
    from_origin: bool,
    /// The block on the wire and its bytes still to send.
    block: Option<BlockRef>,
    left: f64,
    /// The congestion window, and when it last sent a byte (ns); back into the
    /// connection's [`super::conn::Dir`] when it stops.
    cwnd: f64,
    last_sent: u64,
}

impl World {
    pub(super) fn want_send(&mut self, c: ConnId, side: Side) {
        let Some(conn) = self.conn_mut(c) else { return };
        let dir = &mut conn.dirs[side.index()];
        if dir.flow.is_none() && !dir.wants {
            dir.wants = true;
            self.to_start.push((c, side));
        }
    }

    /// Ends a direction's flow (the connection closed, or an end died); a block on the
    /// wire is lost (its [`Sending`] goes at the next step: its flow is gone).
    pub(super) fn stop_dir(&mut self, c: ConnId, side: Side) {
        let Some(conn) = self.conn_mut(c) else { return };
        let dir = &mut conn.dirs[side.index()];
        dir.wants = false;
        if let Some(f) = dir.flow.take() {
            self.fleet.net.remove_flow(f);
        }
    }

    /// Moves data for one step: starts directions that have blocks to send, shares the
    /// links out, and advances every sending direction by its rate × step.
    pub(super) fn step_flows(&mut self, t: u64, end: u64) {
        let step = end - t;
        // Directions stopped since the last step, before any flow id is given again.
        let net = &self.fleet.net;
        self.sending.retain(|d| net.is_live(d.flow));
        for (c, side) in std::mem::take(&mut self.to_start) {
            let Some(conn) = self.conn(c) else { continue };
            let (a, b) = (conn.end(side).host, conn.end(side.other()).host);
            let dir = &conn.dirs[side.index()];
            if dir.flow.is_some() || !dir.wants {
                continue;
            }
            if !self.hosts[a as usize].running() || !self.hosts[b as usize].running() {
                if let Some(conn) = self.conn_mut(c) {
                    conn.dirs[side.index()].wants = false;
                }
                continue;
            }
            let (rtt, delay, key) = (conn.rtt_ns, conn.delay_ns, conn.end(side).key);
            let cwnd = tcp::after_idle(dir.cwnd, t.saturating_sub(dir.last_sent), rtt);
            let last_sent = dir.last_sent;
            let cap = tcp::rate_cap(cwnd.min(self.s.model.tcp_window as f64), rtt);
            let flow = self.fleet.start_flow(HostId(a), HostId(b), Some(cap));
            if let Some(conn) = self.conn_mut(c) {
                let dir = &mut conn.dirs[side.index()];
                dir.cwnd = cwnd;
                dir.flow = Some(flow);
                dir.wants = false;
            }
            let (ha, hb) = (HostId(a), HostId(b));
            self.sending.push(Sending {
                c,
                side,
                flow,
                from: a,
                to: b,
                key,
                delay_ns: delay,
                rtt_ns: rtt,
                cross_rack: self.fleet.rack(ha) != self.fleet.rack(hb),
                cross_dc: self.fleet.dc(ha) != self.fleet.dc(hb),
                from_origin: a == 0,
                block: None,
                left: 0.0,
                cwnd,
                last_sent,
            });
        }
        if self.sending.is_empty() {
            return;
        }
        let reshare = self.s.model.reshare_ns.max(step);
        if t % reshare < step {
            self.fleet.net.allocate();
        } else {
            self.fleet.net.fill_new();
        }
        let max_window = self.s.model.tcp_window as f64;
        let mut sending = std::mem::take(&mut self.sending);
        let mut finished = std::mem::take(&mut self.finished);
        sending.retain_mut(|d| self.advance(d, t, step, max_window, &mut finished));
        self.sending = sending;
        self.finished = finished;
    }

    /// Advances one direction through a step; false when it ran out of blocks (its flow
    /// ends).
    fn advance(
        &mut self,
        d: &mut Sending,
        t: u64,
        step: u64,
        max_window: f64,
        finished: &mut Vec<(u64, BlockRef)>,
    ) -> bool {
        let flow = d.flow;
        let rate = self.fleet.net.rate(flow);
        let rtt = d.rtt_ns;
        let cap = tcp::rate_cap(d.cwnd.min(max_window), rtt);
        let mut used = 0.0f64; // seconds of the step used
        let step_s = step as f64 * 1e-9;
        let mut ran_out = false;
        if rate > 0.0 {
            loop {
                if d.block.is_none() {
                    // The next block the core queued for this peer.
                    let now = self.instant(t + (used * 1e9) as u64);
                    let host = &mut self.hosts[d.from as usize];
                    let next = d.key.and_then(|k| {
                        let b = host.swarm.uploads(k)?.front().copied()?;
                        host.swarm.blocks_sent(now, k, 1, u64::from(b.len));
                        Some(b)
                    });
                    match next {
                        Some(b) => {
                            d.block = Some(b);
                            d.left = f64::from(b.len);
                        }
                        None => {
                            ran_out = true;
                            break;
                        }
                    }
                }
                let need = d.left / rate;
                if used + need > step_s {
                    d.left -= (step_s - used) * rate;
                    used = step_s;
                    break;
                }
                used += need;
                d.left = 0.0;
                if let Some(b) = d.block.take() {
                    let done = t + (used * 1e9) as u64;
                    finished.push((done, b));
                }
            }
            d.last_sent = t + (used * 1e9) as u64;
            let moved = rate * used;
            let f = &mut self.bytes.flowing;
            f[0] += moved;
            if d.cross_rack {
                f[1] += moved;
            }
            if d.cross_dc {
                f[2] += moved;
            }
            if d.from_origin {
                f[3] += moved;
            }
            if rate >= 0.95 * cap {
                let grown = tcp::grow(d.cwnd, (used * 1e9) as u64, rtt, max_window);
                d.cwnd = grown;
                let new_cap = tcp::rate_cap(grown.min(max_window), rtt);
                self.fleet.net.set_cap(flow, Some(new_cap));
            }
        }
        if ran_out {
            self.fleet.net.remove_flow(flow);
            if let Some(conn) = self.conn_mut(d.c) {
                let dir = &mut conn.dirs[d.side.index()];
                dir.flow = None;
                dir.cwnd = d.cwnd;
                dir.last_sent = d.last_sent;
            }
        }
        for (done, b) in finished.drain(..) {
            self.count_bytes(d.from, d.to, u64::from(b.len));
            self.push(done + d.delay_ns, Ev::Block(d.c, d.side.other(), b));
        }
        !ran_out
    }

    fn count_bytes(&mut self, from: u32, to: u32, n: u64) {
        let path = self.fleet.path(HostId(from), HostId(to));
        for l in path.links() {
            self.bytes.per_link[l.0 as usize] += n;
        }
    }
}
