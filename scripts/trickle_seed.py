#!/usr/bin/env python3
"""A slow but honest seed: genuine blocks, one every few seconds (standard library only).

    trickle_seed.py --torrent T --data PATH [--ip 127.0.0.1] [--port 0] [--every 3]
                    [--seconds 300] [--no-fast] [--bitfield] [--ignore-cancel] [--no-verify]

The slow-peer hostage scenario of issue 12: a peer that holds every piece and never sends
anything wrong, only slowly. It listens on IP:PORT and prints `listening on IP:PORT`
(flushed). To every peer that connects with the torrent's info-hash it answers the
handshake (BEP 6 fast extension bit set, unless --no-fast), says HAVE ALL (a full BITFIELD
with --bitfield, or when either side lacks the fast extension), unchokes at once, and
answers REQUESTs with the real block read from --data, but only one block every --every
seconds per connection (the first at once), first come first served; the other requests
wait in a queue. A CANCEL removes its request from the queue (unless --ignore-cancel: then
the cancelled block is still sent, late). More than 4096 queued requests on one connection
are rejected (BEP 6 REJECT; dropped without the fast extension). A REQUEST outside the
torrent closes the connection. It never dials anyone.

--data is the torrent's data: PATH/<name> when that exists (as `ringswarm seed` finds it),
else PATH itself, whatever its name (the file of a single-file torrent, the directory of a
multi-file one). Pad files
(BEP 47) read as zeros. Every piece is checked against the torrent's SHA-1 hashes before
listening (--no-verify skips it); a wrong piece is an error (exit 2).

stdout: `listening on IP:PORT`, then `trickle_seed: first request` once the first REQUEST
arrives, and at the end one line `trickle_seed: N connections, N handshakes, N requests,
N blocks sent, N cancelled, N rejected, N queued at the end` and the same counters as JSON
on the next line. stderr: one line per connection when it ends.

Bounded: it exits after --seconds whatever happens (or at once on SIGTERM/SIGINT), and every
socket has a timeout. Use it on 127.0.0.0/8 only.
"""

import argparse
import hashlib
import json
import os
import signal
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bad_peer import STOP, alive, bdecode, message, recv_exact  # noqa: E402
from hostile_peers import (  # noqa: E402
    BITFIELD,
    HAVE_ALL,
    INTERESTED,
    PIECE,
    PSTR,
    REQUEST,
    UNCHOKE,
    handshake,
    read_message,
)

CANCEL = 8
REJECT = 0x10
MAX_BLOCK = 128 << 10  # clients ask for 16 KiB; more is not a request we answer
MAX_QUEUE = 4096  # queued requests per connection
IDLE_KEEPALIVE = 30.0  # seconds without sending anything before a keep-alive


class Torrent:
    """The parts of a .torrent this peer needs, and its data on disk."""

    def __init__(self, path):
        with open(path, "rb") as f:
            data = f.read()
        top, _ = bdecode(data)
        if not isinstance(top, dict) or b"info" not in top:
            raise ValueError("%s: no info dictionary" % path)
        info, start, end = top[b"info"]
        self.info_hash = hashlib.sha1(data[start:end]).digest()
        self.name = info[b"name"][0].decode("utf-8", "replace")
        self.piece_length = info[b"piece length"][0]
        hashes = info[b"pieces"][0]
        if len(hashes) % 20 or self.piece_length <= 0:
            raise ValueError("%s: bad pieces or piece length" % path)
        self.hashes = [hashes[i : i + 20] for i in range(0, len(hashes), 20)]
        self.multi = b"files" in info
        if self.multi:
            self.files = []
            for f in info[b"files"][0]:
                parts = [p.decode("utf-8", "replace") for p in f[b"path"][0]]
                if any(p in ("", ".", "..") or "/" in p for p in parts):
                    raise ValueError("%s: unsafe path %r" % (path, parts))
                pad = b"p" in (f[b"attr"][0] if b"attr" in f else b"")
                self.files.append((os.path.join(*parts), f[b"length"][0], pad))
        else:
            self.files = [(None, info[b"length"][0], False)]
        self.total = sum(length for _, length, _ in self.files)
        if len(self.hashes) != (self.total + self.piece_length - 1) // self.piece_length:
            raise ValueError("%s: %d hashes for %d bytes" % (path, len(self.hashes), self.total))
        self.spans = []  # (offset, length, fd or None for a pad file)

    def piece_size(self, index):
        return min(self.piece_length, self.total - index * self.piece_length)

    def open_data(self, data):
        """Opens the files under --data (see the module doc)."""
        kind_ok = os.path.isdir if self.multi else os.path.isfile
        inside = os.path.join(data, self.name)
        if kind_ok(inside):
            root = inside
        elif kind_ok(data):
            root = data
        else:
            raise ValueError(
                "--data %s: the torrent's %s %r is neither %s nor %s itself"
                % (data, "directory" if self.multi else "file", self.name, inside, data)
            )
        offset = 0
        for rel, length, pad in self.files:
            fd = None
            if not pad and length > 0:
                p = root if rel is None else os.path.join(root, rel)
                fd = os.open(p, os.O_RDONLY)
                if os.fstat(fd).st_size < length:
                    raise ValueError("%s: shorter than the torrent says (%d bytes)" % (p, length))
            self.spans.append((offset, length, fd))
            offset += length

    def read(self, offset, n):
        out = bytearray()
        for start, length, fd in self.spans:
            if n == 0:
                break
            if offset >= start + length or length == 0:
                continue
            at = offset - start
            take = min(n, length - at)
            chunk = bytes(take) if fd is None else os.pread(fd, take, at)
            if len(chunk) != take:
                raise IOError("short read at byte %d" % offset)
            out += chunk
            offset += take
            n -= take
        if n:
            raise IOError("read past the end of the torrent")
        return bytes(out)

    def verify(self):
        """Index of the first piece whose data does not match its hash, or None."""
        for i, want in enumerate(self.hashes):
            if not alive(float("inf")):
                return None
            if hashlib.sha1(self.read(i * self.piece_length, self.piece_size(i))).digest() != want:
                return i
        return None


class Stats:
    FIELDS = ("connections", "handshakes", "requests", "blocks_sent", "cancelled", "rejected", "queued_at_end")

    def __init__(self):
        self.lock = threading.Lock()
        self.counts = dict.fromkeys(self.FIELDS, 0)
        self.first_request = threading.Event()

    def add(self, **kw):
        with self.lock:
            for k, v in kw.items():
                self.counts[k] += v

    def snapshot(self):
        with self.lock:
            return dict(self.counts)


class Conn:
    """One peer: a reader thread queues its requests, the caller's thread trickles blocks."""

    def __init__(self, sock, addr, torrent, args, stats, deadline):
        self.sock, self.addr, self.t, self.args = sock, addr, torrent, args
        self.stats, self.deadline = stats, deadline
        self.cond = threading.Condition()
        self.queue = []  # (index, begin, length), oldest first
        self.closed = False
        self.fast = False
        self.send_lock = threading.Lock()
        self.sent = 0

    def send(self, data):
        with self.send_lock:
            self.sock.sendall(data)

    def open(self):
        """The handshake, HAVE ALL or BITFIELD, UNCHOKE. False if the peer is not ours."""
        head = recv_exact(self.sock, 1 + len(PSTR) + 8 + 20, min(self.deadline, time.monotonic() + 10))
        if head[0] != len(PSTR) or head[1 : 1 + len(PSTR)] != PSTR or head[-20:] != self.t.info_hash:
            return False
        theirs_fast = bool(head[1 + len(PSTR) + 7] & 0x04)
        ours_fast = not self.args.no_fast
        my_id = (b"-TS0001-%06d%06d" % (os.getpid() % 1000000, self.stats.snapshot()["connections"]))[:20]
        self.send(handshake(self.t.info_hash, my_id, fast=ours_fast))
        recv_exact(self.sock, 20, min(self.deadline, time.monotonic() + 10))  # their peer id
        self.fast = ours_fast and theirs_fast
        if self.fast and not self.args.bitfield:
            have = message(HAVE_ALL)
        else:
            n = len(self.t.hashes)
            bits = bytearray(b"\xff" * (n // 8))
            if n % 8:
                bits.append((0xFF << (8 - n % 8)) & 0xFF)
            have = message(BITFIELD, bytes(bits))
        self.send(have + message(UNCHOKE))
        self.stats.add(handshakes=1)
        return True

    def read_loop(self):
        """Reads the peer's messages into the queue until it closes or the lifetime ends."""
        try:
            while alive(self.deadline):
                mid, payload = read_message(self.sock, self.deadline)
                if mid == REQUEST and len(payload) == 12:
                    if not self.on_request(*struct.unpack(">III", payload)):
                        return
                elif mid == CANCEL and len(payload) == 12:
                    self.on_cancel(struct.unpack(">III", payload))
                elif mid == INTERESTED:
                    self.send(message(UNCHOKE))
                # everything else (bitfield, have, extended, keep-alive...) is ignored
        except (ConnectionError, OSError, TimeoutError, ValueError, struct.error):
            pass
        finally:
            with self.cond:
                self.closed = True
                self.cond.notify_all()

    def on_request(self, index, begin, length):
        if index >= len(self.t.hashes) or length == 0 or length > MAX_BLOCK:
            return False
        if begin + length > self.t.piece_size(index):
            return False
        self.stats.add(requests=1)
        if not self.stats.first_request.is_set():
            self.stats.first_request.set()
            print("trickle_seed: first request (piece %d from %s:%d)" % ((index,) + self.addr), flush=True)
        with self.cond:
            if len(self.queue) < MAX_QUEUE:
                self.queue.append((index, begin, length))
                self.cond.notify_all()
                return True
        self.stats.add(rejected=1)
        if self.fast:
            self.send(message(REJECT, struct.pack(">III", index, begin, length)))
        return True

    def on_cancel(self, req):
        if self.args.ignore_cancel:
            return
        with self.cond:
            if req in self.queue:
                self.queue.remove(req)
                self.stats.add(cancelled=1)

    def trickle(self):
        """Sends the oldest queued block, then waits --every seconds before the next."""
        next_at = 0.0
        last_sent = time.monotonic()
        while alive(self.deadline):
            with self.cond:
                now = time.monotonic()
                if self.closed:
                    break
                if not self.queue or now < next_at:
                    wait = 0.2 if not self.queue else min(0.2, next_at - now)
                    self.cond.wait(max(0.01, wait))
                    req = None
                else:
                    req = self.queue.pop(0)
            if req is None:
                if time.monotonic() - last_sent > IDLE_KEEPALIVE:
                    self.send(struct.pack(">I", 0))
                    last_sent = time.monotonic()
                continue
            index, begin, length = req
            block = self.t.read(index * self.t.piece_length + begin, length)
            self.send(message(PIECE, struct.pack(">II", index, begin) + block))
            self.stats.add(blocks_sent=1)
            self.sent += 1
            last_sent = time.monotonic()
            next_at = last_sent + self.args.every


def serve(sock, addr, torrent, args, stats, deadline):
    conn = Conn(sock, addr, torrent, args, stats, deadline)
    reader = None
    try:
        sock.settimeout(1.0)
        if not conn.open():
            return
        reader = threading.Thread(target=conn.read_loop, daemon=True)
        reader.start()
        conn.trickle()
    except (ConnectionError, OSError, TimeoutError, struct.error):
        pass
    finally:
        with conn.cond:
            left = len(conn.queue)
            conn.closed = True
        stats.add(queued_at_end=left)
        try:
            sock.close()
        except OSError:
            pass
        if reader is not None:
            reader.join(timeout=2.0)
        print(
            "trickle_seed: %s:%d done: %d blocks sent, %d still queued" % (addr + (conn.sent, left)),
            file=sys.stderr,
            flush=True,
        )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--torrent", required=True, help="the .torrent to serve")
    ap.add_argument("--data", required=True, help="its data: DIR holding <name>, or <name> itself")
    ap.add_argument("--ip", default="127.0.0.1", help="address to listen on")
    ap.add_argument("--port", type=int, default=0, help="port to listen on (0: any free port)")
    ap.add_argument("--every", type=float, default=3.0, help="seconds between two blocks to one peer")
    ap.add_argument("--seconds", type=float, default=300.0, help="lifetime (exits after it)")
    ap.add_argument("--no-fast", action="store_true", help="do not advertise BEP 6 (then: BITFIELD)")
    ap.add_argument("--bitfield", action="store_true", help="a full BITFIELD instead of HAVE ALL")
    ap.add_argument("--ignore-cancel", action="store_true", help="send cancelled blocks anyway")
    ap.add_argument("--no-verify", action="store_true", help="skip the piece hash check at start")
    args = ap.parse_args()
    if not 0 < args.every <= 3600 or not 0 <= args.seconds <= 86400:
        ap.error("--every must be in (0, 3600], --seconds in [0, 86400]")
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: STOP.set())

    try:
        torrent = Torrent(args.torrent)
        torrent.open_data(args.data)
        bad = None if args.no_verify else torrent.verify()
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        print("trickle_seed: %s" % e, file=sys.stderr)
        sys.exit(2)
    if bad is not None:
        print("trickle_seed: piece %d of --data does not match the torrent's hash" % bad, file=sys.stderr)
        sys.exit(2)
    print(
        "trickle_seed: info-hash %s, %d pieces of %d bytes%s; one block every %g s"
        % (torrent.info_hash.hex(), len(torrent.hashes), torrent.piece_length,
           "" if args.no_verify else ", all verified", args.every),
        file=sys.stderr,
        flush=True,
    )

    deadline = time.monotonic() + args.seconds
    stats = Stats()
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((args.ip, args.port))
    srv.listen(64)
    srv.settimeout(0.2)
    print("listening on %s:%d" % srv.getsockname(), flush=True)

    threads = []
    while alive(deadline):
        try:
            sock, addr = srv.accept()
        except (socket.timeout, InterruptedError):
            continue
        except OSError:
            break
        stats.add(connections=1)
        t = threading.Thread(target=serve, args=(sock, addr, torrent, args, stats, deadline), daemon=True)
        t.start()
        threads.append(t)
    STOP.set()  # connection threads stop within their next wait
    srv.close()
    for t in threads:
        t.join(timeout=3.0)
    s = stats.snapshot()
    print(
        "trickle_seed: %d connections, %d handshakes, %d requests, %d blocks sent, %d cancelled, "
        "%d rejected, %d queued at the end"
        % tuple(s[k] for k in Stats.FIELDS),
        flush=True,
    )
    print(json.dumps(s), flush=True)


if __name__ == "__main__":
    main()
