//! Sockets: creation and options (socket2), and the eventfd that wakes a worker. All
//! data moves through the ring.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// A listening TCP socket with SO_REUSEPORT, so each worker can have its own and the
/// kernel spreads connections among them.
pub fn listener(addr: SocketAddr) -> io::Result<OwnedFd> {
    let s = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.cloexec(),
        Some(Protocol::TCP),
    )?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(false).ok();
    }
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

/// Fails when another socket already holds `addr`. SO_REUSEPORT would otherwise let us
/// silently share a port with an unrelated process of the same user; binding once
/// without it first turns that into a clear "address in use".
pub fn ensure_port_free(addr: SocketAddr) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let s = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.cloexec(),
        Some(Protocol::TCP),
    )?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(false).ok();
    }
    s.bind(&addr.into())
}

/// The UDP twin of [`ensure_port_free`].
pub fn ensure_udp_port_free(addr: SocketAddr) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let s = Socket::new(
        Domain::for_address(addr),
        Type::DGRAM.cloexec(),
        Some(Protocol::UDP),
    )?;
    if addr.is_ipv6() {
        s.set_only_v6(false).ok();
    }
    s.bind(&addr.into())
}

/// A TCP socket for connecting to `addr`.
pub fn stream_for(addr: &SocketAddr, source: Option<IpAddr>) -> io::Result<OwnedFd> {
    let s = Socket::new(
        Domain::for_address(*addr),
        Type::STREAM.cloexec(),
        Some(Protocol::TCP),
    )?;
    s.set_tcp_nodelay(true)?;
    // Dial from the address we listen on, so peers (and their topology) see the address
    // the tracker hands out for us, not whichever one the route picks.
    if let Some(ip) = source.filter(|ip| ip.is_ipv4() == addr.is_ipv4()) {
        s.bind(&SocketAddr::new(ip, 0).into())?;
    }
    Ok(s.into())
}

/// Adopts a descriptor returned by an accept completion.
pub fn adopt(fd: RawFd) -> OwnedFd {
    // SAFETY: the kernel just created this descriptor for us in an accept completion and
    // nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

pub fn tune_accepted(fd: &OwnedFd) {
    SockRef::from(fd).set_tcp_nodelay(true).ok();
}

pub fn local_addr(fd: &OwnedFd) -> io::Result<SocketAddr> {
    SockRef::from(fd)
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an IP socket"))
}

pub fn peer_addr(fd: &OwnedFd) -> io::Result<SocketAddr> {
    SockRef::from(fd)
        .peer_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an IP socket"))
}

/// Ends both directions now, so pending ops on the socket finish promptly.
pub fn shutdown(fd: &OwnedFd) {
    SockRef::from(fd).shutdown(std::net::Shutdown::Both).ok();
}

/// An eventfd: other threads `wake` a worker blocked in its ring.
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd has no memory arguments; a non-negative result is a new descriptor
        // we own.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just created and is owned by nobody else.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live local to our eventfd; failure (counter
        // overflow) only means the worker is already awake.
        unsafe {
            libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8);
        }
    }
}
