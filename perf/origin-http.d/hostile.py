#!/usr/bin/env python3
"""perf/origin-http's slow-client scenario against a running origin (loopback only).

Opens 300 connections that send half a request, one that sends a header line that never
ends, and 4 that ask for the feed and never read; meanwhile a normal client GETs the whole
feed and a conditional one, 10 times each. Prints one JSON line: the normal client's times,
the origin's RSS before and at most during (VmRSS), how the hostile connections ended.
Every wait is bounded (about 35 s in all).
"""
import argparse
import json
import socket
import threading
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def get(host, port, headers=()):
    """One Connection: close GET of /feed.json: (seconds, status, body bytes)."""
    t = time.monotonic()
    with socket.create_connection((host, port), timeout=5) as s:
        req = "GET /feed.json HTTP/1.1\r\nHost: origin\r\nConnection: close\r\n"
        req += "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
        s.sendall(req.encode())
        chunks = []
        while True:
            b = s.recv(1 << 20)
            if not b:
                break
            chunks.append(b)
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split()[1]) if head else 0
    return time.monotonic() - t, status, len(body), head.decode("latin-1")


def endless(host, port, out):
    s = socket.create_connection((host, port), timeout=5)
    s.settimeout(2)
    sent, cut = 0, False
    try:
        s.sendall(b"GET /feed.json HTTP/1.1\r\nHost: origin\r\nX-Endless: ")
        chunk = b"a" * (16 << 10)
        deadline = time.monotonic() + 30
        while sent < (64 << 20) and time.monotonic() < deadline:
            sent += s.send(chunk)
    except socket.timeout:
        pass
    except OSError:
        cut = True
    out.update(sent=sent, cut_off=cut)
    s.close()


def closed(s, deadline):
    """Whether the server closed s (EOF or reset) before deadline; bytes read meanwhile."""
    got = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False, got
        s.settimeout(left)
        try:
            b = s.recv(1 << 18)
        except socket.timeout:
            return False, got
        except OSError:
            return True, got
        if not b:
            return True, got
        got += len(b)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    a = ap.parse_args()
    host, port = a.host, a.port
    assert host.startswith("127.") or host == "::1", "loopback only"

    _, status, length, head = get(host, port)
    etag = next(l.split(":", 1)[1].strip() for l in head.split("\r\n") if l.lower().startswith("etag:"))
    for _ in range(2):
        get(host, port)
    baseline = rss_kib(a.pid)

    started = time.monotonic()
    half = []
    for _ in range(300):
        s = socket.create_connection((host, port), timeout=5)
        s.sendall(b"GET /feed.json HTTP/1.1\r\nHost: origin\r\nUser-Agent: slow")
        half.append(s)
    endless_out = {}
    t = threading.Thread(target=endless, args=(host, port, endless_out))
    t.start()
    stalled = []
    for _ in range(4):
        # A small receive buffer, set before connecting: the answer cannot all fit in the
        # kernel's buffers, so the server's writes stall (loopback's tcp_rmem may be 32 MB).
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        s.settimeout(5)
        s.connect((host, port))
        s.sendall(b"GET /feed.json HTTP/1.1\r\nHost: origin\r\n\r\n")
        stalled.append(s)
    time.sleep(1)

    peak = rss_kib(a.pid)
    full, cond = [], []
    for _ in range(10):
        secs, st, n, _ = get(host, port)
        full.append({"ms": round(secs * 1000, 1), "status": st, "bytes": n})
        secs, st, n, _ = get(host, port, [("If-None-Match", etag)])
        cond.append({"ms": round(secs * 1000, 1), "status": st})
        peak = max(peak, rss_kib(a.pid))

    t.join(35)
    deadline = started + 30
    half_open = sum(1 for s in half if not closed(s, deadline)[0])
    half_done = round(time.monotonic() - started, 1)
    time.sleep(max(0.0, started + 25 - time.monotonic()))
    stalled_end = [closed(s, time.monotonic() + 5) for s in stalled]
    for s in half + stalled:
        s.close()
    print(json.dumps({
        "feed_bytes": length,
        "rss_before_kib": baseline,
        "rss_peak_kib": peak,
        "rss_growth_kib": peak - baseline,
        "full_get_ms": [g["ms"] for g in full],
        "full_ok": all(g["status"] == 200 and g["bytes"] == length for g in full),
        "conditional_ms": [c["ms"] for c in cond],
        "conditional_ok": all(c["status"] == 304 for c in cond),
        "endless_header": endless_out,
        "half_sent_still_open": half_open,
        "half_sent_checked_at_s": half_done,
        "non_readers_closed": [c for c, _ in stalled_end],
        "non_readers_bytes_after_stall": [g for _, g in stalled_end],
    }))


if __name__ == "__main__":
    main()
