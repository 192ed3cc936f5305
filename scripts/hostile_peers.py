#!/usr/bin/env python3
"""Hostile BitTorrent peers that waste a host's capacity, for tests (standard library only).

    hostile_peers.py idle    --torrent T --target HOST:PORT --sources 127.0.0.2,127.0.0.3
                             --conns N [--seconds 60]
    hostile_peers.py haveall --torrent T --target HOST:PORT [--bitfield] [--seconds 60]
    hostile_peers.py sparse  --torrent T --target HOST:PORT --pieces N [--seconds 60]
    hostile_peers.py trickle --torrent T [--ip 127.0.0.1] [--port 0] [--every 2] [--seconds 60]
    hostile_peers.py greedy  --torrent T --target HOST:PORT [--pieces N] [--seconds 60]

idle: opens N connections to the target, spread round-robin over the source addresses
  (each bound before connecting), does the handshake (fast extension bit set), says
  INTERESTED and never requests anything; it reads and counts what comes back. Once every
  connection has been tried it prints `idle: ready N accepted, N refused` (refused: closed
  before answering the handshake). At the end: `idle: N accepted, N refused, N unchoked,
  N open at the end`, and the counters as JSON on the next line.
haveall: one connection that sends HAVE ALL (or, with --bitfield, a full BITFIELD) right
  after the handshake, then INTERESTED, and requests nothing; prints `haveall: ready`.
sparse: one connection that asks for one 16 KiB block (at offset 0) of each of the first N
  pieces, one at a time, waiting for each PIECE; prints `sparse: N blocks, N bytes` and JSON.
trickle: listens and prints `listening on IP:PORT`; to every peer that connects it sends
  its handshake (extension bit set) one byte every --every seconds, and nothing else.
greedy: once unchoked, sends REQUESTs for every block of the first N pieces and, in the same
  write, NOT_INTERESTED; then reads for 3 s and prints `greedy: N pieces before the choke,
  N after, N rejects` (and JSON): a choke must drop the queued requests (REJECT each under
  the fast extension), so nothing is sent after the CHOKE.

Bounded: each mode exits after --seconds whatever happens (or at once on SIGTERM/SIGINT),
and every socket has a timeout.
"""

import argparse
import json
import os
import signal
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bad_peer import STOP, alive, load_torrent, message, recv_exact  # noqa: E402

PSTR = b"BitTorrent protocol"
CHOKE, UNCHOKE, INTERESTED, NOT_INTERESTED, HAVE, BITFIELD, REQUEST, PIECE = range(8)
HAVE_ALL = 0x0E
BLOCK = 16 << 10


def handshake(info_hash, peer_id, fast=True):
    reserved = bytearray(8)
    reserved[5] |= 0x10  # BEP 10 extension protocol
    if fast:
        reserved[7] |= 0x04  # BEP 6 fast extension
    return bytes([len(PSTR)]) + PSTR + bytes(reserved) + info_hash + peer_id


def peer_id(n):
    return (b"-HP0001-%06d%06d" % (os.getpid() % 1000000, n))[:20]


def report(line, counters):
    """Prints a mode's summary line, then its counters as JSON on the next line."""
    print(line, flush=True)
    print(json.dumps(counters), flush=True)


def read_message(sock, deadline):
    (length,) = struct.unpack(">I", recv_exact(sock, 4, deadline))
    if length > (1 << 20) + 64:
        raise ValueError("message too large")
    if length == 0:
        return None, b""
    body = recv_exact(sock, length, deadline)
    return body[0], body[1:]


def read_until(sock, wanted, deadline):
    """Reads messages until one of type `wanted`."""
    while True:
        mid, _ = read_message(sock, deadline)
        if mid == wanted:
            return


def connect(target, source, deadline):
    host, port = target.rsplit(":", 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(max(0.1, min(5.0, deadline - time.monotonic())))
    if source:
        s.bind((source, 0))
    s.connect((host, int(port)))
    s.settimeout(0.5)
    return s


def open_peer(args, info_hash, n, source, deadline):
    """Connects and handshakes; returns the socket, or None when refused."""
    s = connect(args.target, source, deadline)
    s.sendall(handshake(info_hash, peer_id(n)))
    try:
        theirs = recv_exact(s, 68, min(deadline, time.monotonic() + 5))
    except (ConnectionError, OSError, TimeoutError):
        s.close()
        return None
    if theirs[28:48] != info_hash:
        s.close()
        return None
    return s


def run_idle(args):
    info_hash = load_torrent(args.torrent)[0]
    deadline = time.monotonic() + args.seconds
    sources = [a for a in args.sources.split(",") if a] or [None]
    stats = {"accepted": 0, "refused": 0, "unchoked": 0, "open_at_end": 0}
    lock = threading.Lock()
    socks = []
    for n in range(args.conns):
        try:
            s = open_peer(args, info_hash, n, sources[n % len(sources)], deadline)
        except OSError:
            s = None
        if s is None:
            stats["refused"] += 1
            continue
        stats["accepted"] += 1
        s.sendall(message(INTERESTED))
        socks.append(s)
    print("idle: ready %d accepted, %d refused" % (stats["accepted"], stats["refused"]), flush=True)

    def reader(s):
        try:
            while True:
                mid, _ = read_message(s, deadline)
                if mid == UNCHOKE:
                    with lock:
                        stats["unchoked"] += 1
        except (ConnectionError, OSError, TimeoutError, ValueError) as e:
            if isinstance(e, TimeoutError):
                with lock:
                    stats["open_at_end"] += 1

    threads = [threading.Thread(target=reader, args=(s,), daemon=True) for s in socks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()) + 1)
    for s in socks:
        s.close()
    report(
        "idle: %d accepted, %d refused, %d unchoked, %d open at the end"
        % (stats["accepted"], stats["refused"], stats["unchoked"], stats["open_at_end"]),
        stats,
    )


def run_haveall(args):
    info_hash, pieces, _, _ = load_torrent(args.torrent)
    deadline = time.monotonic() + args.seconds
    s = open_peer(args, info_hash, 1, None, deadline)
    if s is None:
        print("haveall: refused", flush=True)
        return
    if args.bitfield:
        bits = bytearray((pieces + 7) // 8)
        for i in range(pieces):
            bits[i // 8] |= 0x80 >> (i % 8)
        s.sendall(message(BITFIELD, bytes(bits)))
    else:
        s.sendall(message(HAVE_ALL))
    s.sendall(message(INTERESTED))
    print("haveall: ready", flush=True)
    try:
        while True:
            read_message(s, deadline)
    except (ConnectionError, OSError, TimeoutError, ValueError):
        pass
    s.close()


def run_sparse(args):
    info_hash, pieces, piece_length, _ = load_torrent(args.torrent)
    deadline = time.monotonic() + args.seconds
    s = open_peer(args, info_hash, 2, None, deadline)
    got = {"blocks": 0, "bytes": 0}
    if s is None:
        print("sparse: refused", flush=True)
        return
    s.sendall(message(INTERESTED))
    try:
        read_until(s, UNCHOKE, deadline)
        for p in range(min(args.pieces, pieces)):
            s.sendall(message(REQUEST, struct.pack(">III", p, 0, BLOCK)))
            while True:
                mid, payload = read_message(s, deadline)
                if mid == PIECE:
                    got["blocks"] += 1
                    got["bytes"] += len(payload) - 8
                    break
    except (ConnectionError, OSError, TimeoutError, ValueError) as e:
        print("sparse: stopped: %s" % e, flush=True)
    s.close()
    report("sparse: %d blocks, %d bytes" % (got["blocks"], got["bytes"]), got)


def run_greedy(args):
    info_hash, pieces, piece_length, total = load_torrent(args.torrent)
    deadline = time.monotonic() + args.seconds
    s = open_peer(args, info_hash, 4, None, deadline)
    got = {"before_choke": 0, "after_choke": 0, "rejects": 0, "requested": 0}
    if s is None:
        print("greedy: refused", flush=True)
        return
    s.sendall(message(INTERESTED))
    try:
        read_until(s, UNCHOKE, deadline)
        out = bytearray()
        for p in range(min(args.pieces, pieces)):
            size = min(piece_length, total - p * piece_length)
            for begin in range(0, size, BLOCK):
                out += message(REQUEST, struct.pack(">III", p, begin, min(BLOCK, size - begin)))
                got["requested"] += 1
        out += message(NOT_INTERESTED)
        s.sendall(bytes(out))
        choked = False
        until = min(deadline, time.monotonic() + 3)
        while True:
            mid, _ = read_message(s, until)
            if mid == CHOKE:
                choked = True
            elif mid == PIECE:
                got["after_choke" if choked else "before_choke"] += 1
            elif mid == 0x10:  # REJECT
                got["rejects"] += 1
    except (ConnectionError, OSError, TimeoutError, ValueError):
        pass
    s.close()
    report(
        "greedy: %d pieces before the choke, %d after, %d rejects, %d requested"
        % (got["before_choke"], got["after_choke"], got["rejects"], got["requested"]),
        got,
    )


def run_trickle(args):
    info_hash = load_torrent(args.torrent)[0]
    deadline = time.monotonic() + args.seconds
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((args.ip, args.port))
    srv.listen(16)
    srv.settimeout(0.2)
    print("listening on %s:%d" % srv.getsockname(), flush=True)

    def trickle(c):
        data = handshake(info_hash, peer_id(3))
        try:
            for b in data:
                if not alive(deadline):
                    break
                c.sendall(bytes([b]))
                STOP.wait(args.every)
        except OSError:
            pass
        c.close()

    while alive(deadline):
        try:
            c, _ = srv.accept()
        except socket.timeout:
            continue
        c.settimeout(1)
        threading.Thread(target=trickle, args=(c,), daemon=True).start()
    srv.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=["idle", "haveall", "sparse", "trickle", "greedy"])
    ap.add_argument("--torrent", required=True)
    ap.add_argument("--target", default="127.0.0.1:6881")
    ap.add_argument("--sources", default="")
    ap.add_argument("--conns", type=int, default=70)
    ap.add_argument("--pieces", type=int, default=16)
    ap.add_argument("--bitfield", action="store_true")
    ap.add_argument("--ip", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--every", type=float, default=2.0)
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: STOP.set())
    modes = {
        "idle": run_idle,
        "haveall": run_haveall,
        "sparse": run_sparse,
        "trickle": run_trickle,
        "greedy": run_greedy,
    }
    modes[args.mode](args)


if __name__ == "__main__":
    main()
