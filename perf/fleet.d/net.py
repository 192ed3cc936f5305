#!/usr/bin/env python3
"""Small network checks for perf/fleet (stdlib only; run inside a netns with `ip netns exec`).

    net.py port IP PORT TIMEOUT
        exit 0 once a TCP connect to IP:PORT succeeds, 1 after TIMEOUT seconds
    net.py scrape IP PORT INFOHASH_HEX TIMEOUT [MIN_SEEDERS]
        BEP 15 scrape of a UDP tracker until it counts at least MIN_SEEDERS (default 1)
        seeders for the torrent; prints `seeders=S completed=C leechers=L`; exit 1 on timeout
"""

import os
import socket
import struct
import sys
import time


def port(ip, p, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection((ip, p), timeout=1):
                return 0
        except OSError:
            time.sleep(0.1)
    sys.stderr.write("net.py: nothing accepts on %s:%d after %.0fs\n" % (ip, p, timeout))
    return 1


def scrape_once(ip, p, info_hash):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1.0)
        tid = struct.unpack(">I", os.urandom(4))[0]
        s.sendto(struct.pack(">QII", 0x41727101980, 0, tid), (ip, p))
        data, _ = s.recvfrom(2048)
        action, rtid, conn = struct.unpack(">IIQ", data[:16])
        if action != 0 or rtid != tid:
            raise OSError("bad connect answer")
        tid += 1
        tid &= 0xFFFFFFFF
        s.sendto(struct.pack(">QII", conn, 2, tid) + info_hash, (ip, p))
        data, _ = s.recvfrom(2048)
        action, rtid = struct.unpack(">II", data[:8])
        if action != 2 or rtid != tid or len(data) < 20:
            raise OSError("bad scrape answer (action %d)" % action)
        return struct.unpack(">III", data[8:20])


def scrape(ip, p, hexhash, timeout, min_seeders):
    ih = bytes.fromhex(hexhash)
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            last = scrape_once(ip, p, ih)
            if last[0] >= min_seeders:
                print("seeders=%d completed=%d leechers=%d" % last)
                return 0
        except OSError:
            pass
        time.sleep(0.2)
    sys.stderr.write("net.py: tracker %s:%d counts %s (seeders, completed, leechers), wanted %d seeders, after %.0fs\n" % (ip, p, last, min_seeders, timeout))
    return 1


def main(a):
    if len(a) >= 4 and a[0] == "port":
        return port(a[1], int(a[2]), float(a[3]))
    if len(a) >= 5 and a[0] == "scrape":
        return scrape(a[1], int(a[2]), a[3], float(a[4]), int(a[5]) if len(a) > 5 else 1)
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
