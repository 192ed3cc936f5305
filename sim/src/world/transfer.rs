//! Data on the wire: a connection's direction starts sending when its core has blocks for
//! it, the links are shared out among the sending directions, and each moves its rate ×
//! step bytes, finishing blocks at their exact times (see the module docs of `world`).

use super::conn::{ConnId, Side};
use super::{tcp, Ev, World};
use crate::net::HostId;
use ringswarm_swarm::BlockRef;

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
    /// wire is lost.
    pub(super) fn stop_dir(&mut self, c: ConnId, side: Side) {
        let Some(conn) = self.conn_mut(c) else { return };
        let dir = &mut conn.dirs[side.index()];
        dir.wants = false;
        dir.block = None;
        if let Some(f) = dir.flow.take() {
            self.fleet.net.remove_flow(f);
        }
    }

    /// Moves data for one step: starts directions that have blocks to send, shares the
    /// links out, and advances every sending direction by its rate × step.
    pub(super) fn step_flows(&mut self, t: u64, end: u64) {
        let step = end - t;
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
            let rtt = conn.rtt_ns;
            let cwnd = tcp::after_idle(dir.cwnd, t.saturating_sub(dir.last_sent), rtt);
            let cap = tcp::rate_cap(cwnd.min(self.s.model.tcp_window as f64), rtt);
            let flow = self.fleet.start_flow(HostId(a), HostId(b), Some(cap));
            if let Some(conn) = self.conn_mut(c) {
                let dir = &mut conn.dirs[side.index()];
                dir.cwnd = cwnd;
                dir.flow = Some(flow);
                dir.wants = false;
            }
            self.sending.push((c, side));
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
        // Directions whose connection closed or whose flow stopped since are dropped here,
        // in the same pass (one look at each connection per step).
        let mut sending = std::mem::take(&mut self.sending);
        let mut finished = std::mem::take(&mut self.finished);
        sending.retain(|&(c, side)| self.advance(c, side, t, step, max_window, &mut finished));
        self.sending = sending;
        self.finished = finished;
    }

    /// Advances one direction through a step; false when it ran out of blocks (its flow
    /// ends).
    fn advance(
        &mut self,
        c: ConnId,
        side: Side,
        t: u64,
        step: u64,
        max_window: f64,
        finished: &mut Vec<(u64, BlockRef)>,
    ) -> bool {
        let Some(conn) = self.conns[c.index as usize]
            .as_mut()
            .filter(|x| x.gen == c.gen)
        else {
            return false;
        };
        let (from, to) = (
            conn.ends[side.index()].host,
            conn.ends[side.other().index()].host,
        );
        let (delay, rtt) = (conn.delay_ns, conn.rtt_ns);
        let sender_key = conn.ends[side.index()].key;
        let dir = &mut conn.dirs[side.index()];
        let Some(flow) = dir.flow else { return false };
        let rate = self.fleet.net.rate(flow);
        let cap = tcp::rate_cap(dir.cwnd.min(max_window), rtt);
        let mut used = 0.0f64; // seconds of the step used
        let step_s = step as f64 * 1e-9;
        let mut ran_out = false;
        if rate > 0.0 {
            loop {
                if dir.block.is_none() {
                    // The next block the core queued for this peer.
                    let host = &mut self.hosts[from as usize];
                    let next = sender_key.and_then(|k| {
                        let b = host.swarm.uploads(k)?.front().copied()?;
                        host.swarm.blocks_sent(k, 1, u64::from(b.len));
                        Some(b)
                    });
                    match next {
                        Some(b) => {
                            dir.block = Some(b);
                            dir.left = f64::from(b.len);
                        }
                        None => {
                            ran_out = true;
                            break;
                        }
                    }
                }
                let need = dir.left / rate;
                if used + need > step_s {
                    dir.left -= (step_s - used) * rate;
                    used = step_s;
                    break;
                }
                used += need;
                dir.left = 0.0;
                if let Some(b) = dir.block.take() {
                    let done = t + (used * 1e9) as u64;
                    finished.push((done, b));
                }
            }
            dir.last_sent = t + (used * 1e9) as u64;
            let moved = rate * used;
            let f = &mut self.bytes.flowing;
            f[0] += moved;
            let (ha, hb) = (HostId(from), HostId(to));
            if self.fleet.rack(ha) != self.fleet.rack(hb) {
                f[1] += moved;
            }
            if self.fleet.dc(ha) != self.fleet.dc(hb) {
                f[2] += moved;
            }
            if from == 0 {
                f[3] += moved;
            }
            if rate >= 0.95 * cap {
                let grown = tcp::grow(dir.cwnd, (used * 1e9) as u64, rtt, max_window);
                dir.cwnd = grown;
                let new_cap = tcp::rate_cap(grown.min(max_window), rtt);
                self.fleet.net.set_cap(flow, Some(new_cap));
            }
        }
        if ran_out {
            dir.flow = None;
            self.fleet.net.remove_flow(flow);
        }
        for (done, b) in finished.drain(..) {
            self.count_bytes(from, to, u64::from(b.len));
            self.push(done + delay, Ev::Block(c, side.other(), b));
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
