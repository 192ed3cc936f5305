//! What a seeder reads from disk for a peer's requests: the requested blocks plus a
//! read-ahead earned by the requests queued behind them, not the whole piece.
//!
//! With 16 MiB pieces, reading the whole piece for each 16 KiB request let a peer asking
//! one block of every piece make us read 1000 times what it asked. Here a read covers the
//! run of queued requests of that piece starting at the block, plus as much again (at
//! most [`MAX_READ_AHEAD`]): a peer streaming a piece has many blocks queued and gets
//! them in a few large reads (the whole piece, cacheable for others, once the window
//! covers a quarter of it), a peer asking scattered blocks costs about twice what it
//! asked, and no pattern of requests costs more than 8 times (a whole piece needs a
//! window of a quarter of it, which needs a queued run of half that).

use crate::storage::IoOp;

/// O_DIRECT alignment of file offsets, buffer offsets and lengths.
const ALIGN: u32 = 4096;

/// The most read beyond the queued run. Measured with perf/loopback, 1 GiB in 16 MiB
/// pieces on a shared 2-core VM (noisy: ±0.5 s run to run): 1 MiB 2.06-2.34 s, 4 MiB
/// 2.54 s, whole-piece reads (before) 2.44-3.44 s; the sender's CPU within 10 %.
pub(crate) const MAX_READ_AHEAD: u32 = 1 << 20;

/// The byte range `start..end` of a piece of `piece_size` bytes to read for the request
/// at `begin..begin + len`, given the peer's other queued requests of that piece
/// (`(begin, len)`, any order). `start` is aligned down; the reads round the end up.
pub(crate) fn read_window(
    piece_size: u32,
    begin: u32,
    len: u32,
    queued: &[(u32, u32)],
    max_read_ahead: u32,
) -> (u32, u32) {
    let mut later: Vec<(u32, u32)> = queued.iter().copied().filter(|q| q.0 > begin).collect();
    later.sort_unstable();
    // The run of requests that follow on from this one (within an alignment unit).
    let mut end = begin.saturating_add(len);
    let mut run = len;
    for (b, l) in later {
        if b > end.next_multiple_of(ALIGN) {
            break;
        }
        let e = b.saturating_add(l);
        if e > end {
            run = run.saturating_add(e - end);
            end = e;
        }
    }
    let ahead = run.min(max_read_ahead);
    let start = begin - begin % ALIGN;
    let end = end.saturating_add(ahead).min(piece_size);
    // A peer streaming the piece: read it whole, in one read, for the cache. (A peer's
    // request window slides over the pieces, so the run at a piece's first block is
    // often just a refill batch: a quarter keeps 4 MiB pieces whole-read from 512 KiB.)
    if end - start >= piece_size / 4 {
        return (0, piece_size);
    }
    (start, end)
}

/// The ops of a whole-piece read plan clipped to the piece bytes `start..end` (widened
/// to [`ALIGN`]); offsets stay those of the whole piece buffer. A direct op keeps aligned
/// offsets and length (its bounds and the widened range are all aligned).
pub(crate) fn clip_plan(ops: Vec<IoOp>, start: u32, end: u32) -> Vec<IoOp> {
    let lo = start - start % ALIGN;
    let hi = end.saturating_add(ALIGN - 1) / ALIGN * ALIGN;
    ops.into_iter()
        .filter_map(|op| {
            let op_end = op.buf_offset + op.len;
            let s = op.buf_offset.max(lo);
            let e = op_end.min(hi);
            if s >= e {
                return None;
            }
            let data_end = (op.buf_offset + op.data_len).min(e);
            Some(IoOp {
                file_offset: op.file_offset + u64::from(s - op.buf_offset),
                buf_offset: s,
                len: e - s,
                data_len: data_end.saturating_sub(s),
                ..op
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u32 = 1 << 20;
    const BLOCK: u32 = 16 << 10;

    #[test]
    fn a_lone_request_reads_about_twice_its_size() {
        let (s, e) = read_window(16 * MIB, 5 * MIB, BLOCK, &[], MAX_READ_AHEAD);
        assert_eq!((s, e), (5 * MIB, 5 * MIB + 2 * BLOCK));
        // Unaligned begin: the start is aligned down.
        let (s, e) = read_window(16 * MIB, 5000, 100, &[], MAX_READ_AHEAD);
        assert_eq!((s, e), (4096, 5200));
        // Scattered requests of the same piece do not join the run.
        let q = [(8 * MIB, BLOCK), (12 * MIB, BLOCK)];
        assert_eq!(
            read_window(16 * MIB, 0, BLOCK, &q, MAX_READ_AHEAD),
            (0, 2 * BLOCK)
        );
    }

    #[test]
    fn a_streaming_peer_earns_read_ahead_up_to_the_cap() {
        let queued: Vec<(u32, u32)> = (1..64).map(|b| (b * BLOCK, BLOCK)).collect();
        // 64 blocks (1 MiB) queued from 0: read them and 1 MiB more.
        assert_eq!(
            read_window(16 * MIB, 0, BLOCK, &queued, MAX_READ_AHEAD),
            (0, 2 * MIB)
        );
        let queued: Vec<(u32, u32)> = (1..128).map(|b| (b * BLOCK, BLOCK)).collect();
        assert_eq!(
            read_window(16 * MIB, 0, BLOCK, &queued, MAX_READ_AHEAD),
            (0, 3 * MIB),
            "2 MiB queued, 1 MiB (the cap) ahead"
        );
        // A quarter of the piece or more: the whole piece, to cache.
        let queued: Vec<(u32, u32)> = (1..192).map(|b| (b * BLOCK, BLOCK)).collect();
        assert_eq!(
            read_window(16 * MIB, 0, BLOCK, &queued, MAX_READ_AHEAD),
            (0, 16 * MIB)
        );
        // Small pieces are read whole once a few blocks are queued.
        let queued = [(BLOCK, BLOCK)];
        assert_eq!(
            read_window(MIB / 4, 0, BLOCK, &queued, MAX_READ_AHEAD),
            (0, MIB / 4)
        );
        // 4 MiB pieces: a refill batch of 32 blocks at the piece's start reads it whole.
        let queued: Vec<(u32, u32)> = (1..32).map(|b| (b * BLOCK, BLOCK)).collect();
        assert_eq!(
            read_window(4 * MIB, 0, BLOCK, &queued, MAX_READ_AHEAD),
            (0, 4 * MIB)
        );
        // The end never passes the piece.
        assert_eq!(
            read_window(16 * MIB, 16 * MIB - BLOCK, BLOCK, &[], MAX_READ_AHEAD),
            (16 * MIB - BLOCK, 16 * MIB)
        );
    }

    #[test]
    fn no_run_of_requests_costs_more_than_eight_times_its_size() {
        for piece in [256 << 10, MIB, 4 * MIB, 16 * MIB, 64 * MIB] {
            for blocks in 1..=piece / BLOCK {
                let queued: Vec<(u32, u32)> = (1..blocks).map(|b| (b * BLOCK, BLOCK)).collect();
                let (s, e) = read_window(piece, 0, BLOCK, &queued, MAX_READ_AHEAD);
                let asked = blocks * BLOCK;
                assert!(
                    e - s <= 8 * asked,
                    "piece {piece}, {blocks} blocks: {s}..{e}"
                );
                assert!(e - s >= asked, "piece {piece}, {blocks} blocks: {s}..{e}");
            }
        }
    }

    fn op(direct: bool, file_offset: u64, buf_offset: u32, len: u32, data_len: u32) -> IoOp {
        IoOp {
            file: 0,
            fd: -1,
            direct,
            file_offset,
            buf_offset,
            len,
            data_len,
        }
    }

    #[test]
    fn clipping_keeps_direct_ops_aligned_and_offsets_in_the_piece_buffer() {
        // A piece over two files: 3 MiB direct at file offset 1 MiB, then a 1 MiB tail of a
        // second file whose real data ends 100 bytes short (padded direct read).
        let plan = vec![
            op(true, MIB as u64, 0, 3 * MIB, 3 * MIB),
            op(true, 0, 3 * MIB, MIB, MIB - 100),
        ];
        let got = clip_plan(plan.clone(), 2 * MIB + 10, 2 * MIB + 20_000);
        assert_eq!(got.len(), 1);
        let o = &got[0];
        assert_eq!((o.buf_offset, o.len), (2 * MIB, 20480));
        assert_eq!(o.file_offset, 3 * MIB as u64);
        assert_eq!(o.data_len, 20480);
        for o in &got {
            assert_eq!(o.buf_offset % ALIGN, 0);
            assert_eq!(o.len % ALIGN, 0);
            assert_eq!(o.file_offset % u64::from(ALIGN), 0);
        }
        // Across the file boundary, into the padded tail.
        let got = clip_plan(plan.clone(), 3 * MIB - 4096, 4 * MIB);
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].buf_offset, got[0].len), (3 * MIB - 4096, 4096));
        assert_eq!(got[0].file_offset, 4 * MIB as u64 - 4096);
        assert_eq!(
            (got[1].buf_offset, got[1].len, got[1].data_len),
            (3 * MIB, MIB, MIB - 100)
        );
        // The whole piece is the plan unchanged.
        let whole = clip_plan(plan.clone(), 0, 4 * MIB);
        assert_eq!(whole.len(), 2);
        assert_eq!(
            (whole[0].file_offset, whole[0].len, whole[1].data_len),
            (MIB as u64, 3 * MIB, MIB - 100)
        );
        // A buffered op is cut to the widened range.
        let got = clip_plan(vec![op(false, 7, 0, MIB, MIB)], 5000, 6000);
        assert_eq!(
            (got[0].file_offset, got[0].buf_offset, got[0].len),
            (7 + 4096, 4096, 4096)
        );
    }
}
