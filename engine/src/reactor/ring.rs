//! One io_uring per worker, and the memory its in-flight ops point at.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::pool::{PiecePool, SlotId};
use crate::storage::IoOp;

/// Size of the registered-buffer table; slot ids of a [`PiecePool`] index it directly.
pub(crate) const FIXED_TABLE_SIZE: u32 = 1024;

/// A finished op, reported with the caller's token. For sends, `result` is the total sent
/// (the ring resubmits partial sends itself) or a negative errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    pub token: u64,
    pub result: i32,
    pub flags: u32,
}

/// One block of a piece to send: the 13-byte PIECE header and a range of a pool slot.
#[derive(Clone, Copy, Debug)]
pub struct SendBlock {
    pub header: [u8; 13],
    pub slot: SlotId,
    pub offset: u32,
    pub len: u32,
}

/// Memory an in-flight op refers to, kept until its completion.
enum Owned {
    Connect(#[allow(dead_code)] Box<socket2::SockAddr>),
    Send(Box<SendState>),
    File(SlotId),
    EventRead(#[allow(dead_code)] Box<[u8; 8]>),
    /// A descriptor kept open until the cancel of its ops completes, so no op queued
    /// before the cancel can reach a reused descriptor number.
    Closing(#[allow(dead_code)] OwnedFd),
    /// The header template of a multishot recvmsg, read by the kernel for every datagram.
    RecvMsg(#[allow(dead_code)] Box<libc::msghdr>),
    /// One datagram to send: its header, address, iovec and bytes.
    SendTo(#[allow(dead_code)] Box<SendTo>),
}

/// A datagram in flight: everything `sendmsg` reads.
struct SendTo {
    msg: libc::msghdr,
    addr: socket2::SockAddr,
    iov: libc::iovec,
    _payload: Vec<u8>,
}

// SAFETY: the pointers in the header point into the same box or the payload it owns; only
// the worker thread owning the ring touches it.
unsafe impl Send for SendTo {}

/// A gathered send: control bytes, then (header, block) pairs.
struct SendState {
    fd: RawFd,
    _ctrl: Vec<u8>,
    _headers: Vec<[u8; 13]>,
    slots: Vec<SlotId>,
    iov: Vec<libc::iovec>,
    /// First iovec not yet fully sent.
    first: usize,
    msg: libc::msghdr,
    total: usize,
    sent: usize,
}

// SAFETY: the raw pointers in SendState point into its own heap allocations or into pool
// buffers pinned for the op; the state is only used by the worker thread that owns the ring.
unsafe impl Send for SendState {}

impl SendState {
    /// Drops `n` sent bytes from the front of the iovecs.
    fn advance(&mut self, mut n: usize) {
        self.sent += n;
        while n > 0 && self.first < self.iov.len() {
            let v = &mut self.iov[self.first];
            if n >= v.iov_len {
                n -= v.iov_len;
                self.first += 1;
            } else {
                // SAFETY: n < iov_len, so the new base stays inside the same buffer.
                v.iov_base = unsafe { (v.iov_base as *mut u8).add(n) }.cast();
                v.iov_len -= n;
                n = 0;
            }
        }
        self.msg.msg_iov = self.iov[self.first..].as_mut_ptr();
        self.msg.msg_iovlen = self.iov.len() - self.first;
    }

    fn entry(&self, token: u64) -> squeue::Entry {
        opcode::SendMsg::new(types::Fd(self.fd), &self.msg)
            .flags(libc::MSG_NOSIGNAL as u32)
            .build()
            .user_data(token)
    }
}

/// A wait that timed out, was interrupted, or found the completion queue busy is a normal
/// return: the caller reaps what is there and loops.
fn wait_outcome(r: io::Result<usize>) -> io::Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// An io_uring with the bookkeeping that keeps its ops memory-safe.
pub struct Ring {
    uring: IoUring,
    /// Entries that did not fit in the submission queue yet.
    backlog: VecDeque<squeue::Entry>,
    owned: HashMap<u64, Owned>,
    in_flight: usize,
    fixed_buffers: bool,
    /// Whether the kernel takes a minimum batch wait (6.12+); cleared on the first refusal.
    min_wait: bool,
}

impl Ring {
    /// A ring with `entries` submission slots. Asks for SINGLE_ISSUER, DEFER_TASKRUN and
    /// COOP_TASKRUN (completions run on this thread when it waits, no IPIs); falls back to a
    /// plain ring on kernels without them.
    pub fn new(entries: u32) -> io::Result<Ring> {
        let uring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_coop_taskrun()
            .setup_cqsize(entries * 8)
            .build(entries)
            .or_else(|_| IoUring::builder().setup_cqsize(entries * 8).build(entries))?;
        let fixed_buffers = uring
            .submitter()
            .register_buffers_sparse(FIXED_TABLE_SIZE)
            .is_ok();
        // Every worker's ring meets the same kernel: say it once per process, not per core.
        static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if !fixed_buffers && !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!(
                "io_uring buffer registration unavailable: using unregistered reads/writes"
            );
        }
        Ok(Ring {
            uring,
            backlog: VecDeque::new(),
            owned: HashMap::new(),
            in_flight: 0,
            fixed_buffers,
            min_wait: true,
        })
    }

    pub(crate) fn submitter(&self) -> io_uring::Submitter<'_> {
        self.uring.submitter()
    }

    /// Whether piece buffers are registered (ReadFixed/WriteFixed) or not (Read/Write).
    pub fn fixed_buffers(&self) -> bool {
        self.fixed_buffers
    }

    pub(crate) fn disable_fixed_buffers(&mut self) {
        self.fixed_buffers = false;
    }

    /// Ops submitted and not yet completed.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn push(&mut self, entry: squeue::Entry) {
        self.in_flight += 1;
        if self.backlog.is_empty() {
            // SAFETY: every entry pushed here points only at memory owned by `self.owned`,
            // by a pinned pool slot, by a provided-buffer group, by a caller that promised
            // to keep it (`send_datagram_borrowed`), or at nothing.
            if unsafe { self.uring.submission().push(&entry) }.is_ok() {
                return;
            }
        }
        self.backlog.push_back(entry);
    }

    fn flush_backlog(&mut self) {
        while let Some(entry) = self.backlog.front() {
            // SAFETY: as in `push`.
            if unsafe { self.uring.submission().push(entry) }.is_err() {
                break;
            }
            self.backlog.pop_front();
        }
    }

    /// Multishot accept on a listening socket.
    pub fn accept_multi(&mut self, listener: RawFd, token: u64) {
        let e = opcode::AcceptMulti::new(types::Fd(listener))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(token);
        self.push(e);
    }

    /// Connects `fd` to `addr`.
    pub fn connect(&mut self, fd: RawFd, addr: SocketAddr, token: u64) {
        let sa = Box::new(socket2::SockAddr::from(addr));
        let e = opcode::Connect::new(types::Fd(fd), sa.as_ptr().cast(), sa.len())
            .build()
            .user_data(token);
        self.owned.insert(token, Owned::Connect(sa));
        self.push(e);
    }

    /// Multishot receive into the provided-buffer group `group`.
    pub fn recv_multi(&mut self, fd: RawFd, group: u16, token: u64) {
        let e = opcode::RecvMulti::new(types::Fd(fd), group)
            .build()
            .user_data(token);
        self.push(e);
    }

    /// Sends `ctrl` then each block (header + data from a pinned pool slot), in order, in
    /// as many `sendmsg` calls as it takes. One completion when all is sent or on error.
    pub fn send(
        &mut self,
        pool: &mut PiecePool,
        fd: RawFd,
        ctrl: Vec<u8>,
        blocks: &[SendBlock],
        token: u64,
    ) {
        let headers: Vec<[u8; 13]> = blocks.iter().map(|b| b.header).collect();
        let mut iov = Vec::with_capacity(1 + 2 * blocks.len());
        if !ctrl.is_empty() {
            iov.push(libc::iovec {
                iov_base: ctrl.as_ptr() as *mut _,
                iov_len: ctrl.len(),
            });
        }
        let mut slots = Vec::with_capacity(blocks.len());
        let mut total = ctrl.len();
        for (b, h) in blocks.iter().zip(&headers) {
            let Some(data) = pool.data_ptr(b.slot, b.offset, b.len) else {
                tracing::error!(slot = b.slot, "send of a block outside its slot skipped");
                continue;
            };
            pool.pin(b.slot);
            slots.push(b.slot);
            iov.push(libc::iovec {
                iov_base: h.as_ptr() as *mut _,
                iov_len: h.len(),
            });
            iov.push(libc::iovec {
                iov_base: data as *mut _,
                iov_len: b.len as usize,
            });
            total += h.len() + b.len as usize;
        }
        // SAFETY: msghdr is plain data; all-zero is a valid empty header.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = iov.len();
        let state = Box::new(SendState {
            fd,
            _ctrl: ctrl,
            _headers: headers,
            slots,
            iov,
            first: 0,
            msg,
            total,
            sent: 0,
        });
        let e = state.entry(token);
        self.owned.insert(token, Owned::Send(state));
        self.push(e);
    }

    /// Reads or writes part of a pool slot from or to a file, as a storage plan says.
    pub fn file_io(
        &mut self,
        pool: &mut PiecePool,
        slot: SlotId,
        op: &IoOp,
        write: bool,
        token: u64,
    ) -> bool {
        let Some(ptr) = pool.data_ptr(slot, op.buf_offset, op.len) else {
            return false;
        };
        pool.pin(slot);
        let fd = types::Fd(op.fd);
        let fixed = self.fixed_buffers && pool.is_registered(slot);
        let e = match (write, fixed) {
            (true, true) => opcode::WriteFixed::new(fd, ptr, op.len, slot)
                .offset(op.file_offset)
                .build(),
            (true, false) => opcode::Write::new(fd, ptr, op.len)
                .offset(op.file_offset)
                .build(),
            (false, true) => opcode::ReadFixed::new(fd, ptr as *mut u8, op.len, slot)
                .offset(op.file_offset)
                .build(),
            (false, false) => opcode::Read::new(fd, ptr as *mut u8, op.len)
                .offset(op.file_offset)
                .build(),
        };
        self.owned.insert(token, Owned::File(slot));
        self.push(e.user_data(token));
        true
    }

    /// Reads 8 bytes from an eventfd (a cross-thread wake-up).
    pub fn read_eventfd(&mut self, fd: RawFd, token: u64) {
        let mut buf = Box::new([0u8; 8]);
        let e = opcode::Read::new(types::Fd(fd), buf.as_mut_ptr(), 8)
            .build()
            .user_data(token);
        self.owned.insert(token, Owned::EventRead(buf));
        self.push(e);
    }

    /// Multishot `recvmsg` of datagrams into the provided-buffer group `group`; parse each
    /// completion's buffer with [`super::udp::parse_datagram`].
    pub fn recvmsg_multi(&mut self, fd: RawFd, group: u16, token: u64) {
        let msg = Box::new(super::udp::recvmsg_template());
        let e = opcode::RecvMsgMulti::new(types::Fd(fd), &*msg, group)
            .build()
            .user_data(token);
        self.owned.insert(token, Owned::RecvMsg(msg));
        self.push(e);
    }

    /// Sends one datagram to `addr`; the many of one loop turn go in one submission.
    pub fn send_to(&mut self, fd: RawFd, addr: SocketAddr, payload: Vec<u8>, token: u64) {
        // SAFETY: msghdr is plain data; all-zero is a valid empty header.
        let msg: libc::msghdr = unsafe { std::mem::zeroed() };
        let iov = libc::iovec {
            iov_base: payload.as_ptr() as *mut _,
            iov_len: payload.len(),
        };
        let addr = socket2::SockAddr::from(addr);
        let mut d = Box::new(SendTo {
            msg,
            addr,
            iov,
            _payload: payload,
        });
        d.msg.msg_name = d.addr.as_ptr() as *mut _;
        d.msg.msg_namelen = d.addr.len();
        d.msg.msg_iov = &mut d.iov;
        d.msg.msg_iovlen = 1;
        let e = opcode::SendMsg::new(types::Fd(fd), &d.msg)
            .build()
            .user_data(token);
        self.owned.insert(token, Owned::SendTo(d));
        self.push(e);
    }

    /// Cancels every op on `fd` and closes it once the cancel has completed. `token` must
    /// be unique among ops in flight.
    pub fn cancel_and_close(&mut self, fd: OwnedFd, token: u64) {
        let e =
            opcode::AsyncCancel2::new(types::CancelBuilder::fd(types::Fd(fd.as_raw_fd())).all())
                .build()
                .user_data(token);
        self.owned.insert(token, Owned::Closing(fd));
        self.push(e);
    }

    /// Keeps the memory of ops that will never be reaped alive for good. Used when a
    /// worker must stop before the kernel has finished with its ops: leaking is the only
    /// safe way to let go of buffers the kernel may still write.
    pub fn leak_in_flight(self) {
        std::mem::forget(self);
    }

    /// Submits what is queued and waits for at least one completion or `timeout`.
    /// Sends `len` bytes at `buf` to the socket address at `addr` as one datagram
    /// (`IORING_OP_SEND` with a destination: no msghdr to build or import).
    ///
    /// # Safety
    ///
    /// `buf[..len]` and `addr[..addr_len]` must stay valid and unchanged until the
    /// completion of `token` has been reaped (or the ring is leaked).
    pub(crate) unsafe fn send_datagram_borrowed(
        &mut self,
        fd: RawFd,
        buf: *const u8,
        len: u32,
        addr: *const libc::sockaddr,
        addr_len: libc::socklen_t,
        token: u64,
    ) {
        let e = opcode::Send::new(types::Fd(fd), buf, len)
            .dest_addr(addr)
            .dest_addr_len(addr_len)
            .build()
            .user_data(token);
        self.push(e);
    }

    /// Like [`Ring::submit_and_wait`], but once the first completion is there it waits up to
    /// `batch_wait` for `batch` of them: a busy server wakes once per batch, not per
    /// datagram. Kernels before 6.12 do not take the batch wait; there it is a plain wait.
    pub fn submit_and_wait_batch(
        &mut self,
        batch: usize,
        batch_wait: Duration,
        timeout: Duration,
    ) -> io::Result<()> {
        if !self.min_wait || batch <= 1 || batch_wait.is_zero() {
            return self.submit_and_wait(timeout);
        }
        self.flush_backlog();
        let ts = types::Timespec::from(timeout);
        let usec = u32::try_from(batch_wait.as_micros()).unwrap_or(u32::MAX);
        let args = types::SubmitArgs::new().timespec(&ts).min_wait_usec(usec);
        match self.uring.submitter().submit_with_args(batch, &args) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::debug!("io_uring batch wait unavailable: waiting per completion");
                self.min_wait = false;
                self.submit_and_wait(timeout)
            }
            r => wait_outcome(r),
        }
    }

    pub fn submit_and_wait(&mut self, timeout: Duration) -> io::Result<()> {
        self.flush_backlog();
        let ts = types::Timespec::from(timeout);
        let args = types::SubmitArgs::new().timespec(&ts);
        wait_outcome(self.uring.submitter().submit_with_args(1, &args))
    }

    /// Moves finished ops to `out`, resubmitting partial sends and releasing the memory of
    /// ops that are done.
    pub fn reap(&mut self, pool: &mut PiecePool, out: &mut Vec<Completion>) {
        let mut resubmit = Vec::new();
        {
            let mut cq = self.uring.completion();
            cq.sync();
            for cqe in &mut cq {
                let token = cqe.user_data();
                let result = cqe.result();
                let flags = cqe.flags();
                let multishot_continues = cqueue::more(flags);
                if !multishot_continues {
                    self.in_flight = self.in_flight.saturating_sub(1);
                }
                // A multishot op keeps its memory until its last completion.
                let owned = if multishot_continues {
                    None
                } else {
                    self.owned.remove(&token)
                };
                match owned {
                    Some(Owned::Send(mut state)) => {
                        if result > 0 && state.sent + (result as usize) < state.total {
                            state.advance(result as usize);
                            resubmit.push(state.entry(token));
                            self.owned.insert(token, Owned::Send(state));
                            continue;
                        }
                        for &slot in &state.slots {
                            pool.unpin(slot);
                        }
                        let result = if result < 0 {
                            result
                        } else if result == 0 && state.total > state.sent {
                            -libc::EPIPE
                        } else {
                            i32::try_from(state.total).unwrap_or(i32::MAX)
                        };
                        out.push(Completion {
                            token,
                            result,
                            flags,
                        });
                    }
                    Some(Owned::File(slot)) => {
                        pool.unpin(slot);
                        out.push(Completion {
                            token,
                            result,
                            flags,
                        });
                    }
                    Some(Owned::Connect(_))
                    | Some(Owned::EventRead(_))
                    | Some(Owned::Closing(_))
                    | Some(Owned::RecvMsg(_))
                    | Some(Owned::SendTo(_))
                    | None => out.push(Completion {
                        token,
                        result,
                        flags,
                    }),
                }
            }
        }
        for e in resubmit {
            self.push(e);
        }
    }
}
