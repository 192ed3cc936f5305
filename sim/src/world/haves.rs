//! A host's HAVE of a new piece goes to every peer at once (the core's announce): one event
//! per peer was most of a run's events. The receivers that share a path delay (same rack,
//! same dc, another dc) get it at the same instant, so they share one event here.
//!
//! Order per connection: a group is sent (pushed to the queue) before any other message of
//! the same batch that follows it, and groups close when the piece changes, so no message
//! to a receiver can be pushed between the HAVE's place in the batch and its group's push.

/// Open groups of one piece's HAVE, by arrival time, in the order opened; and spare
/// receiver lists.
pub struct HaveGroups<T> {
    piece: Option<u32>,
    open: Vec<(u64, Vec<T>)>,
    spare: Vec<Vec<T>>,
}

/// Receiver lists kept for reuse, at most.
const SPARE_MAX: usize = 256;

impl<T> Default for HaveGroups<T> {
    fn default() -> Self {
        HaveGroups {
            piece: None,
            open: Vec::new(),
            spare: Vec::new(),
        }
    }
}

impl<T> HaveGroups<T> {
    /// A HAVE of `piece` for `to`, arriving at `at`. Open groups of another piece are
    /// sent first, through `send(at, piece, receivers)`.
    pub fn have(&mut self, at: u64, to: T, piece: u32, send: &mut impl FnMut(u64, u32, Vec<T>)) {
        if self.piece != Some(piece) {
            self.close(send);
            self.piece = Some(piece);
        }
        match self.open.iter_mut().find(|(t, _)| *t == at) {
            Some((_, receivers)) => receivers.push(to),
            None => {
                let mut receivers = self.spare.pop().unwrap_or_default();
                receivers.push(to);
                self.open.push((at, receivers));
            }
        }
    }

    /// Sends the open groups, in the order they were opened: before any other message,
    /// and at the end of a batch.
    pub fn close(&mut self, send: &mut impl FnMut(u64, u32, Vec<T>)) {
        let Some(piece) = self.piece.take() else {
            return;
        };
        for (at, receivers) in self.open.drain(..) {
            send(at, piece, receivers);
        }
    }

    /// A delivered group's list, for reuse.
    pub fn recycle(&mut self, mut receivers: Vec<T>) {
        if self.spare.len() < SPARE_MAX {
            receivers.clear();
            self.spare.push(receivers);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a batch item is: a lone HAVE (grouped) or any other message (sent alone).
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Msg {
        Have(u32),
        Other(u32),
    }

    /// An event as pushed: its time, its push order, and what it carries to whom.
    type Pushed = (u64, usize, Vec<(u32, Msg)>);

    /// Runs a batch of (receiver, delay, message) through the groups as the driver does;
    /// returns the events in queue order (time, then push order) and how many there were.
    fn deliveries(batch: &[(u32, u64, Msg)]) -> (Vec<(u64, u32, Msg)>, usize) {
        let mut pushed: Vec<Pushed> = Vec::new();
        let mut groups = HaveGroups::default();
        for &(to, at, msg) in batch {
            let mut send = |at, piece, receivers: Vec<u32>| {
                let seq = pushed.len();
                let msgs = receivers.iter().map(|&r| (r, Msg::Have(piece))).collect();
                pushed.push((at, seq, msgs));
            };
            match msg {
                Msg::Have(p) => groups.have(at, to, p, &mut send),
                Msg::Other(_) => {
                    groups.close(&mut send);
                    let seq = pushed.len();
                    pushed.push((at, seq, vec![(to, msg)]));
                }
            }
        }
        groups.close(&mut |at, piece, receivers: Vec<u32>| {
            let seq = pushed.len();
            let msgs = receivers.iter().map(|&r| (r, Msg::Have(piece))).collect();
            pushed.push((at, seq, msgs));
        });
        let events = pushed.len();
        pushed.sort_by_key(|&(at, seq, _)| (at, seq));
        let arrived = pushed
            .into_iter()
            .flat_map(|(at, _, msgs)| msgs.into_iter().map(move |(to, m)| (at, to, m)))
            .collect();
        (arrived, events)
    }

    #[test]
    fn an_announce_is_one_event_per_path_delay() {
        let rack = 40_000;
        let dc = 240_000;
        let batch: Vec<_> = (0..10)
            .map(|to| (to, if to % 3 == 0 { dc } else { rack }, Msg::Have(7)))
            .collect();
        let (arrived, events) = deliveries(&batch);
        assert_eq!(events, 2);
        assert_eq!(arrived.len(), 10);
        // Each receiver gets it once, at its own path delay.
        for (to, at, _) in &batch {
            assert!(arrived.contains(&(*at, *to, Msg::Have(7))));
        }
    }

    #[test]
    fn a_message_after_a_have_still_arrives_after_it() {
        let batch = [
            (1, 10, Msg::Have(3)),
            (2, 10, Msg::Have(3)),
            (1, 10, Msg::Other(0)),
            (3, 10, Msg::Have(3)),
            (1, 10, Msg::Have(4)),
        ];
        let (arrived, _) = deliveries(&batch);
        let to_1: Vec<_> = arrived.iter().filter(|a| a.1 == 1).map(|a| a.2).collect();
        assert_eq!(to_1, [Msg::Have(3), Msg::Other(0), Msg::Have(4)]);
    }

    #[test]
    fn every_receiver_gets_its_messages_in_send_order_whatever_the_batch() {
        // Batches drawn at random (a fixed generator): receivers 0..6, each with its own
        // delay (one path per connection), pieces 0..3, some other messages between.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for _ in 0..500 {
            let len = 1 + next(30) as usize;
            let batch: Vec<_> = (0..len)
                .map(|i| {
                    let to = next(6) as u32;
                    let msg = if next(4) == 0 {
                        Msg::Other(i as u32)
                    } else {
                        Msg::Have(next(3) as u32)
                    };
                    (to, 1_000 * (1 + u64::from(to % 3)), msg)
                })
                .collect();
            let (arrived, events) = deliveries(&batch);
            assert!(events <= batch.len());
            for to in 0..6 {
                let sent: Vec<_> = batch.iter().filter(|b| b.0 == to).map(|b| b.2).collect();
                let got: Vec<_> = arrived.iter().filter(|a| a.1 == to).map(|a| a.2).collect();
                assert_eq!(got, sent, "receiver {to} of {batch:?}");
            }
        }
    }
}
