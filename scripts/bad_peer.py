#!/usr/bin/env python3
"""A corrupting BitTorrent peer, for tests (python3 standard library only).

    bad_peer.py --torrent T.torrent [--ip 0.0.0.0] [--port 0] [--seconds 60] [--seed 1]

Listens on IP:PORT and prints `listening on IP:PORT` (flushed) once it accepts. For every
peer that connects with the torrent's info-hash it does the BEP 3 handshake (reserved bits
all zero: no extensions), sends a BITFIELD claiming every piece and an UNCHOKE, and answers
every REQUEST with a PIECE of exactly the requested length filled with garbage, so every
piece fetched from it fails its SHA-1 check. Everything else the peer sends is read and
ignored. It never dials anyone.

The info-hash is the SHA-1 of the raw bytes of the torrent's bencoded `info` value (found
with the small bdecoder below, which records where each value starts and ends).

Bounded: it exits after --seconds whatever happens (or at once on SIGTERM/SIGINT), and
every socket has a timeout. At the end it prints one line: `bad_peer: N connections, N handshakes, N requests answered, N
bytes of garbage sent` (and the same counters as JSON on the next line).
"""

import argparse
import hashlib
import json
import random
import signal
import socket
import struct
import sys
import threading
import time

PSTR = b"BitTorrent protocol"
MAX_MESSAGE = 1 << 20  # anything larger is not a message we would answer
MAX_BLOCK = 128 << 10  # refuse absurd REQUEST lengths (clients ask for 16 KiB)

CHOKE, UNCHOKE, INTERESTED, NOT_INTERESTED, HAVE, BITFIELD, REQUEST, PIECE, CANCEL = range(9)


# ---------------------------------------------------------------------------------------
# A tiny bdecoder: decode(data, i) -> (value, end). Dicts map key -> (value, start, end),
# so the caller can take the raw bytes of any value.


def bdecode(data, i=0):
    c = data[i : i + 1]
    if c == b"i":
        end = data.index(b"e", i)
        return int(data[i + 1 : end]), end + 1
    if c == b"l":
        i += 1
        out = []
        while data[i : i + 1] != b"e":
            v, i = bdecode(data, i)
            out.append(v)
        return out, i + 1
    if c == b"d":
        i += 1
        out = {}
        while data[i : i + 1] != b"e":
            k, i = bdecode(data, i)
            start = i
            v, i = bdecode(data, i)
            out[k] = (v, start, i)
        return out, i + 1
    if c.isdigit():
        colon = data.index(b":", i)
        n = int(data[i:colon])
        start = colon + 1
        if start + n > len(data):
            raise ValueError("truncated string")
        return data[start : start + n], start + n
    raise ValueError("bad bencode at byte %d" % i)


def load_torrent(path):
    """-> (info_hash, piece_count, piece_length, total_length)"""
    with open(path, "rb") as f:
        data = f.read()
    top, _ = bdecode(data)
    if not isinstance(top, dict) or b"info" not in top:
        raise ValueError("%s: no info dictionary" % path)
    info, start, end = top[b"info"]
    info_hash = hashlib.sha1(data[start:end]).digest()
    piece_length = info[b"piece length"][0]
    pieces = info[b"pieces"][0]
    if len(pieces) % 20:
        raise ValueError("%s: pieces is not a multiple of 20 bytes" % path)
    if b"length" in info:
        total = info[b"length"][0]
    else:
        total = sum(f[b"length"] for f in info[b"files"][0])
    return info_hash, len(pieces) // 20, piece_length, total


# ---------------------------------------------------------------------------------------


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.connections = 0
        self.handshakes = 0
        self.requests = 0
        self.garbage_bytes = 0

    def add(self, **kw):
        with self.lock:
            for k, v in kw.items():
                setattr(self, k, getattr(self, k) + v)

    def as_dict(self):
        with self.lock:
            return {
                "connections": self.connections,
                "handshakes": self.handshakes,
                "requests": self.requests,
                "garbage_bytes": self.garbage_bytes,
            }


STOP = threading.Event()


def alive(deadline):
    return time.monotonic() < deadline and not STOP.is_set()


def recv_exact(sock, n, deadline):
    buf = bytearray()
    while len(buf) < n:
        if not alive(deadline):
            raise TimeoutError("lifetime over")
        try:
            chunk = sock.recv(n - len(buf))
        except socket.timeout:
            continue
        if not chunk:
            raise ConnectionError("peer closed")
        buf += chunk
    return bytes(buf)


def message(msg_id, payload=b""):
    return struct.pack(">IB", 1 + len(payload), msg_id) + payload


def serve_peer(sock, addr, torrent, garbage, stats, deadline):
    info_hash, piece_count, piece_length, total = torrent
    my_id = b"-BP0001-" + bytes(random.getrandbits(8) for _ in range(12))
    try:
        sock.settimeout(1.0)
        head = recv_exact(sock, 1 + len(PSTR) + 8 + 20, deadline)
        if head[0] != len(PSTR) or head[1 : 1 + len(PSTR)] != PSTR:
            return
        if head[-20:] != info_hash:
            return
        sock.sendall(bytes([len(PSTR)]) + PSTR + bytes(8) + info_hash + my_id)
        recv_exact(sock, 20, deadline)  # their peer id
        stats.add(handshakes=1)
        bits = bytearray((piece_count + 7) // 8)
        for i in range(piece_count):
            bits[i // 8] |= 0x80 >> (i % 8)
        sock.sendall(message(BITFIELD, bytes(bits)) + message(UNCHOKE))
        while alive(deadline):
            (length,) = struct.unpack(">I", recv_exact(sock, 4, deadline))
            if length == 0:
                continue  # keep-alive
            if length > MAX_MESSAGE:
                return
            body = recv_exact(sock, length, deadline)
            if body[0] == INTERESTED:
                sock.sendall(message(UNCHOKE))
            elif body[0] == REQUEST and length == 13:
                index, begin, n = struct.unpack(">III", body[1:13])
                size = min(piece_length, total - index * piece_length) if index < piece_count else 0
                if n == 0 or n > MAX_BLOCK or begin + n > size:
                    return  # a request no honest client sends
                # The right length, wrong bytes: rotate the garbage so blocks differ.
                off = (index * 7919 + begin) % (len(garbage) - n + 1)
                sock.sendall(message(PIECE, struct.pack(">II", index, begin) + garbage[off : off + n]))
                stats.add(requests=1, garbage_bytes=n)
            # everything else (bitfield, have, cancel, extended...) is ignored
    except (OSError, TimeoutError, ConnectionError, struct.error):
        pass
    finally:
        try:
            sock.close()
        except OSError:
            pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--torrent", required=True, help="the .torrent whose info-hash to answer for")
    ap.add_argument("--ip", default="0.0.0.0", help="address to listen on")
    ap.add_argument("--port", type=int, default=0, help="port to listen on (0: any free port)")
    ap.add_argument("--seconds", type=float, default=60.0, help="lifetime (exits after it)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the garbage bytes")
    args = ap.parse_args()

    torrent = load_torrent(args.torrent)
    rng = random.Random(args.seed)
    garbage = rng.randbytes(2 * MAX_BLOCK)
    deadline = time.monotonic() + max(args.seconds, 0.0)
    stats = Stats()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: STOP.set())

    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((args.ip, args.port))
    srv.listen(64)
    srv.settimeout(0.2)
    host, port = srv.getsockname()
    print("info-hash %s, %d pieces of %d bytes" % (torrent[0].hex(), torrent[1], torrent[2]), file=sys.stderr)
    print("listening on %s:%d" % (host, port), flush=True)

    threads = []
    while alive(deadline):
        try:
            sock, addr = srv.accept()
        except socket.timeout:
            continue
        except InterruptedError:
            continue
        except OSError:
            break
        stats.add(connections=1)
        print("connection from %s:%d" % addr, file=sys.stderr, flush=True)
        t = threading.Thread(target=serve_peer, args=(sock, addr, torrent, garbage, stats, deadline), daemon=True)
        t.start()
        threads.append(t)
    srv.close()
    for t in threads:
        t.join(timeout=2.0)
    s = stats.as_dict()
    print(
        "bad_peer: %d connections, %d handshakes, %d requests answered, %d bytes of garbage sent"
        % (s["connections"], s["handshakes"], s["requests"], s["garbage_bytes"]),
        flush=True,
    )
    print(json.dumps(s), flush=True)


if __name__ == "__main__":
    main()
