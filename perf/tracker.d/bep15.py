#!/usr/bin/env python3
"""Tiny BEP 15 client for perf/tracker: checks the swarm shape and the peer-list order.

  bep15.py shape  --tracker 127.0.0.1:P --hashes FILE [--batch 70]
      Scrapes every info hash in FILE (hex, one per line, hottest first) and prints JSON:
      total peers (seeders + leechers summed over torrents), torrents with peers, the
      largest torrent, and how many torrents hold >= 100 000 peers.
  bep15.py probe  --tracker 127.0.0.1:P --hash HEX --bind 127.0.1.5 --topology FILE
      Announces once (fresh peer id, numwant 50) from the given source address and
      classifies the returned peers by the topology file: same rack / same dc / other.
  bep15.py stats --tracker ... --hash HEX
      Scrapes one torrent.

Loopback only (refuses addresses outside 127.0.0.0/8). Every request: 1 s timeout,
at most 6 tries; the whole command has a deadline (--deadline, default 120 s).
"""
import argparse
import ipaddress
import json
import os
import random
import socket
import struct
import sys
import time

PROTOCOL_ID = 0x41727101980


class Deadline(Exception):
    pass


class Client:
    def __init__(self, tracker, bind, deadline):
        host, port = tracker.rsplit(":", 1)
        self.addr = (host, int(port))
        for a in (host, bind):
            if not ipaddress.ip_address(a) in ipaddress.ip_network("127.0.0.0/8"):
                sys.exit(f"refusing non-loopback address {a}")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((bind, 0))
        self.sock.settimeout(1.0)
        self.deadline = deadline
        self.conn = None

    def request(self, build, action):
        """build(tid) -> bytes; returns the payload after action+tid."""
        for _ in range(6):
            if time.monotonic() > self.deadline:
                raise Deadline()
            tid = random.getrandbits(32)
            self.sock.sendto(build(tid), self.addr)
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                try:
                    data, _ = self.sock.recvfrom(65536)
                except socket.timeout:
                    break
                if len(data) < 8:
                    continue
                act, rtid = struct.unpack(">II", data[:8])
                if rtid != tid:
                    continue
                if act == 3:
                    raise RuntimeError("tracker error: " + data[8:].decode("utf-8", "replace"))
                if act == action:
                    return data[8:]
        raise TimeoutError(f"no answer to action {action} after 6 tries")

    def connect(self):
        body = self.request(lambda tid: struct.pack(">QII", PROTOCOL_ID, 0, tid), 0)
        self.conn = struct.unpack(">Q", body[:8])[0]

    def scrape(self, hashes):
        if self.conn is None:
            self.connect()
        try:
            body = self.request(
                lambda tid: struct.pack(">QII", self.conn, 2, tid) + b"".join(hashes), 2)
        except TimeoutError:
            self.connect()  # the id may have expired
            body = self.request(
                lambda tid: struct.pack(">QII", self.conn, 2, tid) + b"".join(hashes), 2)
        out = []
        for i in range(len(hashes)):
            s, c, l = struct.unpack(">III", body[12 * i: 12 * i + 12])
            out.append((s, c, l))
        return out

    def announce(self, info_hash, peer_id, numwant, port, left, downloaded):
        if self.conn is None:
            self.connect()
        body = self.request(lambda tid: struct.pack(
            ">QII20s20sQQQIIIiH", self.conn, 1, tid, info_hash, peer_id, downloaded, left, 0,
            2, 0, random.getrandbits(32), numwant, port), 1)
        interval, leechers, seeders = struct.unpack(">III", body[:12])
        peers = []
        rest = body[12:]
        for i in range(0, len(rest) - len(rest) % 6, 6):
            ip = socket.inet_ntoa(rest[i:i + 4])
            (p,) = struct.unpack(">H", rest[i + 4:i + 6])
            peers.append((ip, p))
        return interval, leechers, seeders, peers


def load_hashes(path):
    with open(path) as f:
        return [bytes.fromhex(l.strip()) for l in f if l.strip()]


def cmd_shape(a, deadline):
    hashes = load_hashes(a.hashes)
    c = Client(a.tracker, a.bind, deadline)
    total = 0
    nonempty = 0
    big = 0
    best = (0, -1)
    completed = 0
    sizes = []
    for i in range(0, len(hashes), a.batch):
        stats = c.scrape(hashes[i:i + a.batch])
        for j, (s, comp, l) in enumerate(stats):
            n = s + l
            sizes.append(n)
            total += n
            completed += comp
            if n:
                nonempty += 1
            if n >= 100_000:
                big += 1
            if n > best[0]:
                best = (n, i + j)
    top = c.scrape([hashes[0]])[0] if hashes else (0, 0, 0)
    print(json.dumps({
        "torrents_scraped": len(hashes),
        "torrents_with_peers": nonempty,
        "total_peers": total,
        "largest_torrent_peers": best[0],
        "largest_torrent_index": best[1],
        "torrents_ge_100k": big,
        "top5_torrent_peers": sorted(sizes, reverse=True)[:5],
        # a swarm of 30..60 peers: a numwant-50 probe there sees all three classes
        "mid_torrent_index": next((i for i, n in enumerate(sizes) if 30 <= n <= 60), None),
        "hottest": {"index": 0, "seeders": top[0], "leechers": top[2], "completed": top[1]},
    }))


def load_topology(path):
    """Minimal reader for the [[subnet]] tables perf/tracker writes (cidr, dc, rack)."""
    nets = []
    cur = None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line == "[[subnet]]":
                cur = {}
                nets.append(cur)
            elif "=" in line and cur is not None:
                k, v = (x.strip() for x in line.split("=", 1))
                cur[k] = v.strip('"')
    return [(ipaddress.ip_network(n["cidr"]), n["dc"], n["rack"]) for n in nets]


def place(topo, ip):
    ip = ipaddress.ip_address(ip)
    best = None
    for net, dc, rack in topo:
        if ip in net and (best is None or net.prefixlen > best[0].prefixlen):
            best = (net, dc, rack)
    return (best[1], best[2]) if best else (None, None)


def cmd_probe(a, deadline):
    topo = load_topology(a.topology)
    me = place(topo, a.bind)
    c = Client(a.tracker, a.bind, deadline)
    peer_id = b"-RSPROBE" + os.urandom(12)
    # left > 0, downloaded > 0: seeds and leechers mixed within each class.
    interval, leechers, seeders, peers = c.announce(
        bytes.fromhex(a.hash), peer_id, a.numwant, 6881, 1000, 1)
    classes = []
    for ip, _ in peers:
        dc, rack = place(topo, ip)
        if me[1] is not None and (dc, rack) == me:
            classes.append("rack")
        elif me[0] is not None and dc == me[0]:
            classes.append("dc")
        else:
            classes.append("other")
    # Is the list ordered rack, then dc, then other?
    order = {"rack": 0, "dc": 1, "other": 2}
    ranks = [order[x] for x in classes]
    print(json.dumps({
        "source": a.bind, "place": {"dc": me[0], "rack": me[1]},
        "seeders": seeders, "leechers": leechers, "peers_returned": len(peers),
        "same_rack": classes.count("rack"), "same_dc": classes.count("dc"),
        "other": classes.count("other"),
        "ordered_rack_dc_other": ranks == sorted(ranks),
        "first_classes": "".join(x[0] for x in classes[:60]),
    }))
    # Leave the swarm again.
    c.request(lambda tid: struct.pack(
        ">QII20s20sQQQIIIiH", c.conn, 1, tid, bytes.fromhex(a.hash), peer_id, 1, 1000, 0,
        3, 0, 0, 0, 6881), 1)


def cmd_stats(a, deadline):
    c = Client(a.tracker, a.bind, deadline)
    s, comp, l = c.scrape([bytes.fromhex(a.hash)])[0]
    print(json.dumps({"seeders": s, "leechers": l, "completed": comp, "peers": s + l}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["shape", "probe", "stats"])
    ap.add_argument("--tracker", required=True)
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--hashes")
    ap.add_argument("--hash")
    ap.add_argument("--topology")
    ap.add_argument("--numwant", type=int, default=50)
    ap.add_argument("--batch", type=int, default=70)
    ap.add_argument("--deadline", type=float, default=120)
    a = ap.parse_args()
    deadline = time.monotonic() + a.deadline
    try:
        {"shape": cmd_shape, "probe": cmd_probe, "stats": cmd_stats}[a.cmd](a, deadline)
    except (Deadline, TimeoutError, RuntimeError, OSError) as e:
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
