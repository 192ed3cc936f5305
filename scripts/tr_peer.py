#!/usr/bin/python3
"""Transmission driver for interop tests: runs a private transmission-daemon over RPC.

    tr_peer.py seed --torrent F --data-dir D --port P [--seconds N]
    tr_peer.py get  --torrent F --dest D --peer 127.0.0.1:PORT [--timeout N] [--recheck]
    tr_peer.py announce-check --torrent F --dest D [--tracker URL] [--min-peers N]
                              [--timeout N] [--seconds N] [--scrape]

Each run starts its own `transmission-daemon -f` with a throw-away config directory: peers
and RPC on 127.0.0.1 only (RPC port picked free), no DHT, LSD, PEX, uTP or port mapping,
encryption "tolerated" (plaintext preferred), no speed limits. The daemon dies with this
script (SIGTERM, and PR_SET_PDEATHSIG if this script is killed).

Transmission never dials a peer in 127.0.0.0/8 or ::1 (it treats them as "martian"; it does
accept incoming connections from them). So `get` needs a peer outside loopback: the tests
run both ends inside a network namespace with 198.18.0.1 on its `lo` (pass --ip 198.18.0.1).
Transmission has no RPC to add a peer by address either, so `get` runs a tiny HTTP tracker on
127.0.0.1 that hands out the --peer addresses, and gives Transmission a copy of the
.torrent whose `announce` points at it (the info dictionary, hence the info-hash, is
unchanged).

`seed` prints `listening on 127.0.0.1:P` once Transmission has verified the data, then serves
until --seconds pass or SIGINT/SIGTERM. `get` prints a progress line a second and a final JSON
line {"seconds": ..., "bytes": ...}; exit 0 when Transmission reports every piece verified
(and, with --recheck, a full re-verify from disk passes), 1 on timeout, 2 on other errors.

`announce-check` proves Transmission's tracker client against a tracker: it adds the torrent
(announcing to its own announce/announce-list, or to --tracker URL only) into an empty --dest
and polls RPC `trackerStats` until a tracker's last announce succeeded with at least
--min-peers peers (default 1) and, with --scrape, a scrape succeeded too (asking for a
reannounce while not). It then prints `announced {JSON}` (the tracker's stats, plus
"peer_port": Transmission's peer port) and stays registered in the swarm until --seconds
pass or SIGINT/SIGTERM, so the caller can look at the tracker meanwhile; exit 0. On timeout
it prints the last stats as `timeout {JSON}` and exits 1. It never needs a peer connection
(Transmission would not dial loopback peers anyway). Transmission 3 schedules its first
scrape a random 0-180 s after adding a torrent, so --scrape needs a --timeout to match.
"""

import argparse
import base64
import ctypes
import http.server
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

STOP = False
DAEMON = shutil.which("transmission-daemon") or "/usr/bin/transmission-daemon"


def _stop(_sig, _frm):
    global STOP
    STOP = True


def log(msg):
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()


# --- bencode, just enough to rewrite `announce` -------------------------------------------


def bdecode(b, i=0):
    c = b[i : i + 1]
    if c == b"i":
        j = b.index(b"e", i)
        return int(b[i + 1 : j]), j + 1
    if c == b"l":
        out, i = [], i + 1
        while b[i : i + 1] != b"e":
            v, i = bdecode(b, i)
            out.append(v)
        return out, i + 1
    if c == b"d":
        out, i = {}, i + 1
        while b[i : i + 1] != b"e":
            k, i = bdecode(b, i)
            v, i = bdecode(b, i)
            out[k] = v
        return out, i + 1
    j = b.index(b":", i)
    n = int(b[i:j])
    return b[j + 1 : j + 1 + n], j + 1 + n


def bencode(v):
    if isinstance(v, int):
        return b"i%de" % v
    if isinstance(v, bytes):
        return b"%d:%s" % (len(v), v)
    if isinstance(v, list):
        return b"l" + b"".join(bencode(x) for x in v) + b"e"
    if isinstance(v, dict):
        return b"d" + b"".join(bencode(k) + bencode(v[k]) for k in sorted(v)) + b"e"
    raise TypeError(type(v))


def with_announce(torrent_bytes, url):
    """The same torrent (info dict kept byte for byte) announcing to `url` only."""
    b = torrent_bytes
    if b[:1] != b"d":
        raise RuntimeError("not a torrent file")
    out, i, raw_info = [], 1, None
    while b[i : i + 1] != b"e":
        k, j = bdecode(b, i)
        _, end = bdecode(b, j)
        if k == b"info":
            raw_info = b[j:end]
        if k not in (b"announce", b"announce-list", b"info"):
            out.append((k, b[i:end]))
        i = end
    if raw_info is None:
        raise RuntimeError("torrent has no info dictionary")
    out.append((b"announce", bencode(b"announce") + bencode(url.encode())))
    out.append((b"info", bencode(b"info") + raw_info))
    return b"d" + b"".join(v for _, v in sorted(out)) + b"e"


# --- a tracker that always answers with the given peers ----------------------------------


def start_tracker(peers):
    compact = b"".join(socket.inet_aton(h) + struct.pack(">H", p) for h, p in peers)
    body = bencode({b"interval": 5, b"min interval": 1, b"complete": 1, b"incomplete": 1, b"peers": compact})

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server naming)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, "http://127.0.0.1:%d/announce" % srv.server_address[1]


# --- the daemon -------------------------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pdeathsig():
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Daemon:
    def __init__(self, peer_port, download_dir, ip="127.0.0.1"):
        if not os.path.exists(DAEMON):
            raise RuntimeError("transmission-daemon not found (apt-get install transmission-daemon)")
        self.conf = tempfile.mkdtemp(prefix="tr-peer-")
        self.rpc_port = free_port()
        self.peer_port = peer_port or free_port()
        settings = {
            "rpc-enabled": True,
            "rpc-bind-address": "127.0.0.1",
            "rpc-port": self.rpc_port,
            "rpc-authentication-required": False,
            "rpc-whitelist-enabled": True,
            "rpc-whitelist": "127.0.0.1",
            "rpc-host-whitelist-enabled": False,
            "bind-address-ipv4": ip,
            "bind-address-ipv6": "::1",
            "peer-port": self.peer_port,
            "peer-port-random-on-start": False,
            "port-forwarding-enabled": False,
            "dht-enabled": False,
            "lpd-enabled": False,
            "pex-enabled": False,
            "utp-enabled": False,
            "blocklist-enabled": False,
            "encryption": 0,
            "download-dir": os.path.abspath(download_dir),
            "incomplete-dir-enabled": False,
            "rename-partial-files": False,
            "start-added-torrents": True,
            "watch-dir-enabled": False,
            "speed-limit-up-enabled": False,
            "speed-limit-down-enabled": False,
            "alt-speed-enabled": False,
            "ratio-limit-enabled": False,
            "idle-seeding-limit-enabled": False,
            "download-queue-enabled": False,
            "seed-queue-enabled": False,
            "queue-stalled-enabled": False,
            "cache-size-mb": 32,
            "message-level": 1,
        }
        with open(os.path.join(self.conf, "settings.json"), "w") as f:
            json.dump(settings, f)
        self.log = open(os.path.join(self.conf, "daemon.log"), "w")
        self.proc = subprocess.Popen(
            [DAEMON, "-f", "-g", self.conf, "--log-error"],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=_pdeathsig,
        )
        self.session_id = ""
        end = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("transmission-daemon exited: %s" % self.tail())
            try:
                self.rpc("session-get", {"fields": ["version"]})
                break
            except (OSError, urllib.error.URLError):
                if time.monotonic() > end:
                    raise RuntimeError("transmission-daemon RPC did not come up in 20s")
                time.sleep(0.1)

    def tail(self):
        try:
            with open(os.path.join(self.conf, "daemon.log")) as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def rpc(self, method, arguments):
        url = "http://127.0.0.1:%d/transmission/rpc" % self.rpc_port
        data = json.dumps({"method": method, "arguments": arguments}).encode()
        for _ in range(3):
            req = urllib.request.Request(url, data=data, headers={"X-Transmission-Session-Id": self.session_id})
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    out = json.load(r)
                if out.get("result") != "success":
                    raise RuntimeError("RPC %s: %s" % (method, out.get("result")))
                return out.get("arguments", {})
            except urllib.error.HTTPError as e:
                if e.code == 409:
                    self.session_id = e.headers.get("X-Transmission-Session-Id", "")
                    continue
                raise
        raise RuntimeError("RPC %s: no session id" % method)

    def add(self, torrent_bytes, download_dir):
        args = self.rpc(
            "torrent-add",
            {"metainfo": base64.b64encode(torrent_bytes).decode(), "download-dir": os.path.abspath(download_dir)},
        )
        t = args.get("torrent-added") or args.get("torrent-duplicate")
        return t["id"]

    def status(self, tid):
        fields = [
            "status",
            "percentDone",
            "leftUntilDone",
            "haveValid",
            "sizeWhenDone",
            "recheckProgress",
            "error",
            "errorString",
            "peersConnected",
            "rateDownload",
            "rateUpload",
            "uploadedEver",
            "corruptEver",
        ]
        ts = self.rpc("torrent-get", {"ids": [tid], "fields": fields})["torrents"]
        if not ts:
            raise RuntimeError("torrent %d vanished" % tid)
        return ts[0]

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        shutil.rmtree(self.conf, ignore_errors=True)


CHECKING = (1, 2)  # check-wait, check
SEEDING = (5, 6)


def wait_verified(d, tid, timeout):
    """Waits for Transmission's hash check; returns the final status dict."""
    end = time.monotonic() + timeout
    time.sleep(0.2)
    while True:
        st = d.status(tid)
        if st["error"] == 3:
            raise RuntimeError("transmission: %s" % st["errorString"])
        if st["status"] not in CHECKING and st["recheckProgress"] in (0, 1):
            return st
        if time.monotonic() > end or STOP:
            raise RuntimeError("hash check did not finish in %ds" % timeout)
        time.sleep(0.1)


def parse_peer(s):
    host, _, port = s.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError("peer must be HOST:PORT, got %r" % s)
    return (host.strip("[]"), int(port))


def cmd_seed(a):
    d = Daemon(a.port, a.data_dir, a.ip)
    try:
        with open(a.torrent, "rb") as f:
            raw = f.read()
        tid = d.add(raw, a.data_dir)
        d.rpc("torrent-verify", {"ids": [tid]})
        st = wait_verified(d, tid, a.check_timeout)
        if st["percentDone"] < 1.0:
            raise RuntimeError("data in %s fails the hash check (%.1f%% present)" % (a.data_dir, st["percentDone"] * 100))
        d.rpc("torrent-start-now", {"ids": [tid]})
        log("listening on %s:%d" % (a.ip, d.peer_port))
        end = time.monotonic() + a.seconds
        while not STOP and time.monotonic() < end:
            if d.proc.poll() is not None:
                raise RuntimeError("transmission-daemon died: %s" % d.tail())
            time.sleep(0.2)
        st = d.status(tid)
        log(json.dumps({"role": "seed", "uploaded": st["uploadedEver"]}))
        return 0
    finally:
        d.close()


def cmd_get(a):
    os.makedirs(a.dest, exist_ok=True)
    srv, url = start_tracker(a.peer)
    d = Daemon(a.port, a.dest, a.ip)
    try:
        with open(a.torrent, "rb") as f:
            raw = with_announce(f.read(), url)
        t0 = time.monotonic()
        tid = d.add(raw, a.dest)
        deadline = t0 + a.timeout
        last_print = 0.0
        last_announce = t0
        while True:
            st = d.status(tid)
            now = time.monotonic()
            if st["error"] == 3:  # local error (1, 2: tracker warning/error, not fatal here)
                raise RuntimeError("transmission: %s" % st["errorString"])
            if st["leftUntilDone"] == 0 and st["percentDone"] >= 1.0 and st["status"] not in CHECKING:
                break
            if st["peersConnected"] == 0 and now - last_announce > 10:
                d.rpc("torrent-reannounce", {"ids": [tid]})
                last_announce = now
            if now - last_print >= 1.0:
                log(
                    "progress %5.1f%% %7.1f MiB/s peers=%d status=%d"
                    % (st["percentDone"] * 100, st["rateDownload"] / 2**20, st["peersConnected"], st["status"])
                )
                last_print = now
            if now > deadline or STOP:
                log(json.dumps({"error": "timeout", "timeout": a.timeout, "bytes": st["haveValid"]}))
                return 1
            time.sleep(0.05)
        t_done = time.monotonic()
        # Stopping closes the files, which flushes Transmission's write cache.
        d.rpc("torrent-stop", {"ids": [tid]})
        end = time.monotonic() + 30
        while d.status(tid)["status"] != 0 and time.monotonic() < end:
            time.sleep(0.05)
        ok = True
        if a.recheck:
            d.rpc("torrent-verify", {"ids": [tid]})
            st = wait_verified(d, tid, int(a.timeout))
            ok = st["percentDone"] >= 1.0
            if not ok:
                log("recheck failed: %.1f%% verifies" % (st["percentDone"] * 100))
        st = d.status(tid)
        log(
            json.dumps(
                {
                    "seconds": round(t_done - t0, 3),
                    "bytes": st["haveValid"],
                    "corrupt_bytes": st["corruptEver"],
                    "rechecked": bool(a.recheck),
                    "ok": ok,
                }
            )
        )
        return 0 if ok else 2
    finally:
        d.close()
        srv.shutdown()


TRACKER_FIELDS = (
    "announce",
    "tier",
    "hasAnnounced",
    "lastAnnounceSucceeded",
    "lastAnnounceResult",
    "lastAnnouncePeerCount",
    "lastAnnounceTimedOut",
    "hasScraped",
    "lastScrapeSucceeded",
    "lastScrapeResult",
    "lastScrapeTimedOut",
    "seederCount",
    "leecherCount",
    "downloadCount",
)


def cmd_announce_check(a):
    os.makedirs(a.dest, exist_ok=True)
    d = Daemon(a.port, a.dest, a.ip)
    try:
        with open(a.torrent, "rb") as f:
            raw = f.read()
        if a.tracker:
            raw = with_announce(raw, a.tracker)
        tid = d.add(raw, a.dest)
        t0 = time.monotonic()
        deadline = t0 + a.timeout
        last_ask = t0
        last_print = 0.0
        stats = []
        while True:
            ts = d.rpc("torrent-get", {"ids": [tid], "fields": ["trackerStats", "error", "errorString"]})["torrents"]
            if not ts:
                raise RuntimeError("torrent %d vanished" % tid)
            stats = [{k: t.get(k) for k in TRACKER_FIELDS} for t in ts[0]["trackerStats"]]
            good = [
                t
                for t in stats
                if t["lastAnnounceSucceeded"]
                and t["lastAnnouncePeerCount"] >= a.min_peers
                and (not a.scrape or t["lastScrapeSucceeded"])
            ]
            if good:
                out = dict(good[0])
                out["peer_port"] = d.peer_port
                log("announced " + json.dumps(out))
                break
            now = time.monotonic()
            if now - last_print >= 1.0:
                log("trackers " + json.dumps(stats))
                last_print = now
            if now > deadline or STOP:
                log("timeout " + json.dumps(stats))
                return 1
            if d.proc.poll() is not None:
                raise RuntimeError("transmission-daemon died: %s" % d.tail())
            if now - last_ask > 5:
                # Refused (quietly) by Transmission before the tracker's min interval.
                d.rpc("torrent-reannounce", {"ids": [tid]})
                last_ask = now
            time.sleep(0.1)
        end = time.monotonic() + a.seconds
        while not STOP and time.monotonic() < end:
            if d.proc.poll() is not None:
                raise RuntimeError("transmission-daemon died: %s" % d.tail())
            time.sleep(0.1)
        return 0
    finally:
        d.close()


def main():
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("seed")
    s.add_argument("--torrent", required=True)
    s.add_argument("--data-dir", required=True)
    s.add_argument("--port", type=int, required=True, help="peer port on 127.0.0.1 (0: any free one)")
    s.add_argument("--seconds", type=float, default=3600)
    s.add_argument("--check-timeout", type=int, default=600)
    s.add_argument("--ip", default="127.0.0.1", help="peer listen address (default 127.0.0.1)")
    s.set_defaults(fn=cmd_seed)
    g = sub.add_parser("get")
    g.add_argument("--torrent", required=True)
    g.add_argument("--dest", required=True)
    g.add_argument("--peer", type=parse_peer, action="append", required=True)
    g.add_argument("--port", type=int, default=0)
    g.add_argument("--timeout", type=float, default=600)
    g.add_argument("--recheck", action="store_true")
    g.add_argument("--ip", default="127.0.0.1", help="peer listen address (default 127.0.0.1)")
    g.set_defaults(fn=cmd_get)
    c = sub.add_parser("announce-check", help="announce to a tracker, check the answer in trackerStats")
    c.add_argument("--torrent", required=True)
    c.add_argument("--dest", required=True, help="download dir (stays empty)")
    c.add_argument("--tracker", help="announce here only, instead of the torrent's trackers")
    c.add_argument("--min-peers", type=int, default=1, help="peers the announce must return (default 1)")
    c.add_argument("--scrape", action="store_true", help="also wait for a successful scrape")
    c.add_argument("--timeout", type=float, default=60, help="give up after this many seconds (exit 1)")
    c.add_argument("--seconds", type=float, default=3600, help="then stay in the swarm this long")
    c.add_argument("--port", type=int, default=0, help="peer port (0: any free one)")
    c.add_argument("--ip", default="127.0.0.1", help="peer listen address (default 127.0.0.1)")
    c.set_defaults(fn=cmd_announce_check)
    a = ap.parse_args()
    try:
        return a.fn(a)
    except RuntimeError as e:
        sys.stderr.write("tr_peer.py %s: %s\n" % (a.cmd, e))
        return 2


if __name__ == "__main__":
    sys.exit(main())
