//! Datagrams through the ring: a multishot `recvmsg` puts each datagram, with its source
//! address, into a provided buffer; replies are single send ops submitted in batches (one
//! `io_uring_enter` per loop turn carries them all), from [`ReplySlots`] that keep each
//! reply's bytes and destination in place until its send completes.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::OwnedFd;

use io_uring::types::RecvMsgOut;
use socket2::{Domain, Protocol, Socket, Type};

/// Bytes reserved for the source address in each received buffer.
const NAME_LEN: u32 = std::mem::size_of::<libc::sockaddr_storage>() as u32;

/// The header the kernel reads for every datagram of a multishot `recvmsg`: room for the
/// source address, no control data.
pub(crate) fn recvmsg_template() -> libc::msghdr {
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
    m.msg_namelen = NAME_LEN;
    m
}

/// A UDP socket on `addr` with SO_REUSEPORT, so each worker core can have its own. A port
/// another socket already holds is refused (see `net::ensure_port_free`).
pub fn udp_socket(addr: SocketAddr, reuse_port: bool) -> io::Result<OwnedFd> {
    let s = Socket::new(
        Domain::for_address(addr),
        Type::DGRAM.cloexec(),
        Some(Protocol::UDP),
    )?;
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        s.set_only_v6(false).ok();
    }
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Asks for a receive buffer of `bytes` on a datagram socket, so a burst of requests (a
/// fleet starting at once) queues instead of being dropped: as root past `rmem_max`
/// (SO_RCVBUFFORCE), else up to it. Returns the size the kernel reports.
pub fn grow_receive_buffer(fd: &OwnedFd, bytes: usize) -> usize {
    let want = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt reads one c_int from a live local; a failure leaves the socket as
    // it was.
    let forced = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(fd),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&want as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    } == 0;
    let sock = socket2::SockRef::from(fd);
    if !forced {
        sock.set_recv_buffer_size(bytes).ok();
    }
    sock.recv_buffer_size().unwrap_or(0)
}

/// Reply slots for a datagram server: each holds one reply's bytes and destination until
/// its send completes, so answering costs no allocation and no per-op bookkeeping in the
/// ring. A server takes a free slot, encodes into it, and hands it to the ring; the
/// completion (its token is `token_base | slot`) gives it back.
pub struct ReplySlots {
    slots: Box<[ReplySlot]>,
    free: Vec<u32>,
    token_base: u64,
}

struct ReplySlot {
    addr: socket2::SockAddr,
    bytes: Vec<u8>,
    in_flight: bool,
}

impl ReplySlots {
    /// Bits of a token that name the slot.
    const SLOT_BITS: u32 = 24;

    /// `count` slots (at most 2^24) whose buffers start with `capacity` bytes; completions
    /// carry `token_base | slot` (`token_base` must leave the low 24 bits clear).
    pub fn new(count: usize, capacity: usize, token_base: u64) -> ReplySlots {
        let count = count.min(1 << Self::SLOT_BITS);
        let unspecified = socket2::SockAddr::from(SocketAddr::from(([0, 0, 0, 0], 0)));
        ReplySlots {
            slots: (0..count)
                .map(|_| ReplySlot {
                    addr: unspecified.clone(),
                    bytes: Vec::with_capacity(capacity),
                    in_flight: false,
                })
                .collect(),
            free: (0..count as u32).rev().collect(),
            token_base,
        }
    }

    /// The buffer of the slot the next [`ReplySlots::send`] will use, emptied; `None` when
    /// every slot is in flight.
    pub fn buffer(&mut self) -> Option<&mut Vec<u8>> {
        let &slot = self.free.last()?;
        let bytes = &mut self.slots[slot as usize].bytes;
        bytes.clear();
        Some(bytes)
    }

    /// Sends the buffer last handed out by [`ReplySlots::buffer`] to `to` through `ring`.
    /// Does nothing when no slot is free.
    pub fn send(&mut self, ring: &mut super::Ring, fd: std::os::fd::RawFd, to: SocketAddr) {
        let Some(slot) = self.free.pop() else {
            return;
        };
        let s = &mut self.slots[slot as usize];
        s.in_flight = true;
        s.addr = socket2::SockAddr::from(to);
        let len = u32::try_from(s.bytes.len()).unwrap_or(u32::MAX);
        // SAFETY: the slot leaves the free list until `complete` sees its token, so neither
        // its bytes nor its address change or move before the kernel is done with them; the
        // boxed slice never reallocates; and `Drop` leaks the slots while any is in flight.
        unsafe {
            ring.send_datagram_borrowed(
                fd,
                s.bytes.as_ptr(),
                len,
                s.addr.as_ptr().cast(),
                s.addr.len(),
                self.token_base | u64::from(slot),
            );
        }
    }

    /// Takes back the slot of a completed send; false when `token` is not one of ours.
    pub fn complete(&mut self, token: u64) -> bool {
        let mask = (1u64 << Self::SLOT_BITS) - 1;
        if token & !mask != self.token_base {
            return false;
        }
        let slot = (token & mask) as u32;
        if let Some(s) = self.slots.get_mut(slot as usize) {
            if std::mem::replace(&mut s.in_flight, false) {
                self.free.push(slot);
            }
        }
        true
    }

    /// Replies handed to the ring and not completed yet.
    pub fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}

impl Drop for ReplySlots {
    fn drop(&mut self) {
        if self.in_flight() > 0 {
            // The kernel may still read a slot: keep the memory for the life of the process.
            std::mem::forget(std::mem::take(&mut self.slots));
        }
    }
}

/// The source address and payload of a datagram delivered by a multishot `recvmsg`
/// completion (`buf` is the provided buffer, `len` bytes of it filled). None when the
/// buffer is malformed, the address is not IP, or the datagram was cut short.
pub fn parse_datagram(buf: &[u8]) -> Option<(SocketAddr, &[u8])> {
    let out = RecvMsgOut::parse(buf, &recvmsg_template()).ok()?;
    if out.is_payload_truncated() || out.is_name_data_truncated() {
        return None;
    }
    let name = out.name_data();
    let name = name.get(..(out.incoming_name_len() as usize).min(name.len()))?;
    let from = sockaddr_from_bytes(name)?;
    // The payload follows the 16-byte header and the fixed-size name field.
    let start = 16 + NAME_LEN as usize;
    let payload = buf.get(start..start + out.payload_data().len())?;
    Some((from, payload))
}

/// Reads a `sockaddr_in` or `sockaddr_in6` from its bytes.
fn sockaddr_from_bytes(b: &[u8]) -> Option<SocketAddr> {
    let family = i32::from(u16::from_ne_bytes(b.get(0..2)?.try_into().ok()?));
    let port = u16::from_be_bytes(b.get(2..4)?.try_into().ok()?);
    match family {
        libc::AF_INET => {
            let ip: [u8; 4] = b.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
        }
        libc::AF_INET6 => {
            let flow = u32::from_be_bytes(b.get(4..8)?.try_into().ok()?);
            let ip: [u8; 16] = b.get(8..24)?.try_into().ok()?;
            let scope = u32::from_ne_bytes(b.get(24..28)?.try_into().ok()?);
            let ip = Ipv6Addr::from(ip);
            // An IPv4 peer on a dual-stack socket: report it as IPv4 (BEP 15 answers
            // by address family).
            match ip.to_ipv4_mapped() {
                Some(v4) => Some(SocketAddr::V4(SocketAddrV4::new(v4, port))),
                None => Some(SocketAddr::V6(SocketAddrV6::new(ip, port, flow, scope))),
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::reactor::{BufRing, PiecePool, Ring};

    #[test]
    fn datagrams_round_trip_through_the_ring() {
        let mut ring = Ring::new(64).unwrap();
        let mut bufs = BufRing::new(&ring, 3, 16, 2048).unwrap();
        let mut pool = PiecePool::new(0);
        let sock = udp_socket("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let local = socket2::SockRef::from(&sock)
            .local_addr()
            .unwrap()
            .as_socket()
            .unwrap();
        ring.recvmsg_multi(sock.as_raw_fd(), bufs.group(), 1);
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        for i in 0..3u8 {
            client.send_to(&[i; 100], local).unwrap();
        }
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut done = Vec::new();
        while got.len() < 3 && Instant::now() < deadline {
            ring.submit_and_wait(Duration::from_millis(50)).unwrap();
            ring.reap(&mut pool, &mut done);
            for c in done.drain(..) {
                assert_eq!(c.token, 1);
                assert!(c.result > 0, "recvmsg failed: {}", c.result);
                let bid = io_uring::cqueue::buffer_select(c.flags).unwrap();
                let (from, payload) = parse_datagram(bufs.get(bid, c.result as usize)).unwrap();
                got.push((from, payload.to_vec()));
                bufs.recycle(bid);
                assert!(io_uring::cqueue::more(c.flags), "multishot ended early");
            }
        }
        assert_eq!(got.len(), 3);
        let client_addr = client.local_addr().unwrap();
        for (i, (from, payload)) in got.iter().enumerate() {
            assert_eq!(*from, client_addr);
            assert_eq!(payload, &vec![i as u8; 100]);
        }
        // Replies go back in one batch.
        for i in 0..3u8 {
            ring.send_to(
                sock.as_raw_fd(),
                client_addr,
                vec![i + 10; 20],
                100 + u64::from(i),
            );
        }
        let mut replies = 0;
        while replies < 3 && Instant::now() < deadline {
            ring.submit_and_wait(Duration::from_millis(50)).unwrap();
            ring.reap(&mut pool, &mut done);
            replies += done
                .drain(..)
                .filter(|c| c.token >= 100 && c.result == 20)
                .count();
        }
        assert_eq!(replies, 3);
        let mut buf = [0u8; 64];
        for i in 0..3u8 {
            let (n, from) = client.recv_from(&mut buf).unwrap();
            assert_eq!(from, local);
            assert_eq!(&buf[..n], &[i + 10; 20]);
        }
    }

    #[test]
    fn reply_slots_send_from_place_and_come_back() {
        let mut ring = Ring::new(64).unwrap();
        let mut pool = PiecePool::new(0);
        let sock = udp_socket("127.0.0.1:0".parse().unwrap(), false).unwrap();
        assert!(grow_receive_buffer(&sock, 1 << 20) > 0);
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let to = client.local_addr().unwrap();
        let base = 7 << 56;
        let mut slots = ReplySlots::new(2, 8, base);
        // Two replies fill both slots; a third has nowhere to go until one completes.
        for i in 0..2u8 {
            let out = slots.buffer().unwrap();
            out.extend_from_slice(&[i; 40]); // grows past the initial capacity
            slots.send(&mut ring, sock.as_raw_fd(), to);
        }
        assert_eq!(slots.in_flight(), 2);
        assert!(slots.buffer().is_none());
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut done = Vec::new();
        while slots.in_flight() > 0 && Instant::now() < deadline {
            ring.submit_and_wait_batch(2, Duration::from_micros(50), Duration::from_millis(50))
                .unwrap();
            ring.reap(&mut pool, &mut done);
            for c in done.drain(..) {
                assert_eq!(c.result, 40);
                assert!(slots.complete(c.token));
            }
        }
        assert_eq!(slots.in_flight(), 0);
        assert!(!slots.complete(1), "a foreign token is not ours");
        let mut buf = [0u8; 64];
        for i in 0..2u8 {
            let (n, _) = client.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[i; 40]);
        }
        assert!(slots.buffer().is_some());
    }

    #[test]
    fn malformed_buffers_are_refused() {
        assert!(parse_datagram(&[]).is_none());
        assert!(parse_datagram(&[0u8; 10]).is_none());
        assert!(sockaddr_from_bytes(&[0xff, 0xff, 0, 0]).is_none());
    }
}
