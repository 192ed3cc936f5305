#!/usr/bin/env python3
"""A WAN between emulated datacenters: a learning L2 bridge that holds every frame for a fixed
one-way delay before forwarding it (this kernel has no netem). Python 3 standard library only.

    wan-delay.py --port IFACE --port IFACE [...] --delay 20ms [--queue-bytes N]
                 [--max-seconds S] [--stats FILE]

Each --port is an interface of this network namespace (one veth per datacenter, its peer on
that dc's core bridge), read and written whole frames at a time through an AF_PACKET socket.
A frame read on one port is queued with the moment it is due (now + --delay) and sent, when
due, to the port its destination MAC was last seen on (or to every other port: broadcast,
multicast, unknown). One delay is added per crossing, so the round trip between two dcs is
twice --delay. The queue holds at most --queue-bytes of frames (a switch buffer): beyond
that a frame is dropped and counted, as is a frame the outgoing port's qdisc refuses.

Frames must be at most the MTU (GSO/TSO and checksum offload off on the veths whose frames
arrive here: scripts/netns-fleet.sh does that with ethtool), since a frame is sent as read.

Ends cleanly on SIGTERM/SIGINT, and by itself after --max-seconds. On exit, and on SIGUSR1
(within half a second), it writes one line of figures so far (frames, bytes, drops, the
kernel's socket drops, CPU seconds) to --stats (on exit also to stderr).
"""

import argparse
import collections
import os
import resource
import select
import signal
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_IGNORE_OUTGOING = 23  # Linux >= 4.20: do not hand back the frames we send
RECV_BATCH = 256  # frames drained from one port per wake-up, so no port starves the others
MAC_TABLE_MAX = 4096
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33
SOCKET_BUFFER = 32 << 20


def duration_s(text):
    t = text.strip().lower()
    for suffix, mult in (("ms", 1e-3), ("us", 1e-6), ("s", 1.0)):
        if t.endswith(suffix):
            try:
                v = float(t[: -len(suffix)]) * mult
            except ValueError:
                break
            if v < 0:
                break
            return v
    raise argparse.ArgumentTypeError("a duration like 20ms, 500us or 1s: %r" % text)


def positive_int(text):
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v <= 0:
        raise argparse.ArgumentTypeError("a positive integer: %r" % text)
    return v


def open_port(ifname):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    except OSError as e:
        raise SystemExit("wan-delay: PACKET_IGNORE_OUTGOING unsupported (%s): kernel too old" % e)
    # Room for a burst while Python is busy elsewhere: as root past net.core.rmem_max.
    for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            s.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER)
        except OSError:
            s.setsockopt(socket.SOL_SOCKET, plain, SOCKET_BUFFER)
    s.bind((ifname, ETH_P_ALL))
    s.setblocking(False)
    return s


def main(argv):
    ap = argparse.ArgumentParser(description="delaying L2 forwarder between emulated datacenters")
    ap.add_argument("--port", action="append", required=True, help="an interface (at least two)")
    ap.add_argument("--delay", type=duration_s, required=True, help="one-way delay, e.g. 20ms")
    ap.add_argument("--queue-bytes", type=positive_int, default=8 << 20)
    ap.add_argument("--max-seconds", type=positive_int, default=6 * 3600)
    ap.add_argument("--stats", help="write the exit figures here too")
    a = ap.parse_args(argv)
    if len(a.port) < 2 or len(set(a.port)) != len(a.port):
        ap.error("at least two distinct --port interfaces")

    try:
        socks = [open_port(p) for p in a.port]
    except OSError as e:
        print("wan-delay: cannot open the ports %s: %s" % (",".join(a.port), e), file=sys.stderr)
        return 1
    stop, report = [], []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    signal.signal(signal.SIGUSR1, lambda *_: report.append(1))

    ep = select.epoll()
    port_of_fd = {}
    for i, s in enumerate(socks):
        ep.register(s.fileno(), select.EPOLLIN)
        port_of_fd[s.fileno()] = i
    nports = len(socks)
    others = [[j for j in range(nports) if j != i] for i in range(nports)]

    queue = collections.deque()  # (due, [out ports], frame); FIFO = time order (one delay)
    queued = 0
    mac_port = {}
    fwd_frames = fwd_bytes = drop_queue = drop_send = 0
    max_queued = 0
    delay = a.delay
    started = time.monotonic()
    deadline = started + a.max_seconds
    print("wan-delay: ports %s, delay %.3f ms, queue %d bytes, pid %d" % (
        ",".join(a.port), delay * 1e3, a.queue_bytes, os.getpid()), file=sys.stderr, flush=True)

    kernel_drops = 0

    def figures(what):
        nonlocal kernel_drops
        for s in socks:
            try:  # the kernel resets these counters on every read
                kernel_drops += struct.unpack("II", s.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))[1]
            except OSError:
                pass
        ru = resource.getrusage(resource.RUSAGE_SELF)
        line = ("wan-delay: %s %.1f s: forwarded %d frames, %d bytes; dropped %d (queue full) + %d (send refused) "
                "+ %d (socket buffer, kernel); most queued %d bytes; CPU %.2f s user + %.2f s sys" % (
                    what, time.monotonic() - started, fwd_frames, fwd_bytes, drop_queue, drop_send, kernel_drops,
                    max_queued, ru.ru_utime, ru.ru_stime))
        if a.stats:
            try:
                with open(a.stats + ".tmp", "w") as f:
                    f.write(line + "\n")
                os.replace(a.stats + ".tmp", a.stats)
            except OSError as e:
                print("wan-delay: cannot write %s: %s" % (a.stats, e), file=sys.stderr)
        return line

    while not stop:
        if report:
            report.clear()
            figures("after")
        now = time.monotonic()
        if now >= deadline:
            print("wan-delay: --max-seconds reached", file=sys.stderr)
            break
        while queue and queue[0][0] <= now:
            _, outs, frame = queue.popleft()
            queued -= len(frame)
            for j in outs:
                try:
                    socks[j].send(frame)
                    fwd_frames += 1
                    fwd_bytes += len(frame)
                except OSError:  # ENOBUFS (the qdisc dropped it), EAGAIN, EMSGSIZE
                    drop_send += 1
        timeout = min(queue[0][0] - now if queue else 0.5, deadline - now)
        try:
            events = ep.poll(max(timeout, 0.0))
        except InterruptedError:
            continue
        due = time.monotonic() + delay
        for fd, _ in events:
            i = port_of_fd[fd]
            s = socks[i]
            for _ in range(RECV_BATCH):
                try:
                    frame = s.recv(65536)
                except (BlockingIOError, InterruptedError):
                    break
                if len(frame) < 14:
                    continue
                src = frame[6:12]
                if not src[0] & 1:
                    if len(mac_port) >= MAC_TABLE_MAX:
                        mac_port.clear()
                    mac_port[src] = i
                dst = frame[0:6]
                j = None if dst[0] & 1 else mac_port.get(dst)
                if j == i:
                    continue  # both ends on the same side: not ours to forward
                if queued + len(frame) > a.queue_bytes:
                    drop_queue += 1
                    continue
                queue.append((due, others[i] if j is None else (j,), frame))
                queued += len(frame)
                if queued > max_queued:
                    max_queued = queued
    print(figures("exit after"), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
