#!/usr/bin/python3
"""python3-libtorrent peer for perf/fleet (one per netns; peers come from the tracker).

    lt_fleet.py seed --torrent T --data-dir D [--ip 0.0.0.0] [--port 6881]
    lt_fleet.py get  --torrent T --dest D     [--ip 0.0.0.0] [--port 6881] [--seed-for SECS]

Settings: libtorrent's high_performance_seed() preset, TCP only (uTP off: its congestion
control crawls on veth/loopback), no DHT, LSD, UPnP or NAT-PMP, several connections per IP
allowed, every tracker of the .torrent announced to (tracker IP filters and SSRF mitigation
off: the fleet's addresses are in 198.18.0.0/15).

`seed` skips the start-up hash check (seed_mode), announces, and prints `listening on IP:P`
once the tracker has answered an announce as a seed; it serves until SIGTERM/SIGINT.
`get` downloads; once every piece has passed libtorrent's hash check it flushes libtorrent's
cache, fsyncs every file, and prints `done: SECONDS` (since the torrent was added); then it
keeps seeding for --seed-for seconds or until SIGTERM/SIGINT. Both print a status line every
--status seconds and one JSON line at exit (uploaded / downloaded payload bytes, peers).
Exit 0 on success, 1 on a timeout, 2 on an error.
"""

import argparse
import json
import os
import signal
import sys
import time

try:
    import libtorrent as lt
except ImportError:
    sys.stderr.write("lt_fleet.py: python3-libtorrent missing for %s (apt-get install python3-libtorrent; run /usr/bin/python3)\n" % sys.executable)
    sys.exit(3)

STOP = False


def _stop(_sig, _frm):
    global STOP
    STOP = True


def log(msg):
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()


def session(ip, port):
    s = lt.high_performance_seed()
    s.update({
        "listen_interfaces": "%s:%d" % (ip, port),
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "enable_outgoing_tcp": True,
        "enable_incoming_tcp": True,
        "allow_multiple_connections_per_ip": True,
        "announce_to_all_trackers": True,
        "announce_to_all_tiers": True,
        "apply_ip_filter_to_trackers": False,
        "upload_rate_limit": 0,
        "download_rate_limit": 0,
        "alert_mask": lt.alert.category_t.error_notification
        | lt.alert.category_t.status_notification
        | lt.alert.category_t.tracker_notification,
        "user_agent": "lt_fleet.py/libtorrent-" + lt.__version__,
    })
    if "ssrf_mitigation" in lt.default_settings():
        s["ssrf_mitigation"] = False
    return lt.session(s)


class Alerts:
    def __init__(self):
        self.replies = 0
        self.last_reply = 0.0

    def drain(self, ses):
        for a in ses.pop_alerts():
            if isinstance(a, lt.tracker_reply_alert):
                self.replies += 1
                self.last_reply = time.monotonic()
                log("tracker reply peers=%d" % a.num_peers)
            elif isinstance(a, (lt.tracker_error_alert, lt.tracker_warning_alert)):
                log("tracker: %s" % a.message())
            elif isinstance(a, (lt.file_error_alert, lt.torrent_error_alert, lt.listen_failed_alert)):
                raise RuntimeError(a.message())
            elif isinstance(a, lt.hash_failed_alert):
                log("hash failed: %s" % a.message())


def add(ses, torrent, save_path, seed_mode):
    atp = lt.add_torrent_params()
    atp.ti = lt.torrent_info(torrent)
    atp.save_path = save_path
    if seed_mode:
        atp.flags |= lt.torrent_flags.seed_mode
    return ses.add_torrent(atp)


def reannounce(h):
    try:
        h.force_reannounce(0, -1, lt.reannounce_flags_t.ignore_min_interval)
    except (AttributeError, TypeError):
        h.force_reannounce()


def status_line(h, what):
    st = h.status()
    return "%s %5.1f%% down %.1f MiB/s up %.1f MiB/s peers=%d seeds=%d uploaded=%d downloaded=%d" % (
        what, st.progress * 100, st.download_payload_rate / 2**20, st.upload_payload_rate / 2**20,
        st.num_peers, st.num_seeds, st.total_payload_upload, st.total_payload_download)


def serve(ses, h, al, until, every, what):
    last = time.monotonic()
    while not STOP and time.monotonic() < until:
        al.drain(ses)
        if time.monotonic() - last >= every:
            log(status_line(h, what))
            last = time.monotonic()
        time.sleep(0.1)


def summary(h, role, extra=None):
    st = h.status()
    d = {"role": role, "uploaded": st.total_payload_upload, "downloaded": st.total_payload_download,
         "peers": st.num_peers, "progress": st.progress}
    d.update(extra or {})
    log(json.dumps(d))


def cmd_seed(a):
    ses = session(a.ip, a.port)
    al = Alerts()
    h = add(ses, a.torrent, a.data_dir, seed_mode=True)
    since = time.monotonic()
    end = since + a.announce_timeout
    next_ask = since + 3
    while al.last_reply <= since or not h.status().is_seeding:
        al.drain(ses)
        if STOP or time.monotonic() > end:
            raise RuntimeError("no tracker answer as a seed within %ds" % a.announce_timeout)
        if time.monotonic() >= next_ask:
            reannounce(h)
            next_ask = time.monotonic() + 3
        time.sleep(0.05)
    log("listening on %s:%d" % (a.ip, ses.listen_port()))
    serve(ses, h, al, time.monotonic() + a.seconds, a.status, "seed")
    summary(h, "seed")
    return 0


def cmd_get(a):
    os.makedirs(a.dest, exist_ok=True)
    ses = session(a.ip, a.port)
    al = Alerts()
    h = add(ses, a.torrent, a.dest, seed_mode=False)
    ti = h.torrent_file()
    t0 = time.monotonic()
    deadline = t0 + a.timeout
    last = t0
    while True:
        al.drain(ses)
        st = h.status()
        if st.is_seeding:
            break
        now = time.monotonic()
        if now - last >= a.status:
            log(status_line(h, "get"))
            last = now
        if STOP or now > deadline:
            log("timeout" if not STOP else "stopped")
            summary(h, "get", {"ok": False})
            return 1
        time.sleep(0.05)
    # libtorrent 2 writes through mmap: flush, then fsync every file, so "done" means durable
    # (ringswarm fsyncs before it reports done; the scp/rsync jobs fsync too).
    h.flush_cache()
    fl_end = time.monotonic() + 30
    while time.monotonic() < fl_end:
        if any(isinstance(x, lt.cache_flushed_alert) for x in ses.pop_alerts()):
            break
        time.sleep(0.01)
    fs = ti.files()
    for i in range(fs.num_files()):
        if fs.file_flags(i) & lt.file_storage.flag_pad_file:
            continue
        fd = os.open(os.path.join(a.dest, fs.file_path(i)), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    took = time.monotonic() - t0
    log("done: %.3f" % took)
    serve(ses, h, al, time.monotonic() + a.seed_for, a.status, "seeding")
    summary(h, "get", {"ok": True, "seconds": round(took, 3)})
    return 0


def main():
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("seed", "get"):
        p = sub.add_parser(name)
        p.add_argument("--torrent", required=True)
        p.add_argument("--ip", default="0.0.0.0")
        p.add_argument("--port", type=int, default=6881)
        p.add_argument("--status", type=float, default=2.0, help="seconds between status lines")
        if name == "seed":
            p.add_argument("--data-dir", required=True)
            p.add_argument("--seconds", type=float, default=7200)
            p.add_argument("--announce-timeout", type=int, default=60)
            p.set_defaults(fn=cmd_seed)
        else:
            p.add_argument("--dest", required=True)
            p.add_argument("--timeout", type=float, default=3600)
            p.add_argument("--seed-for", type=float, default=3600)
            p.set_defaults(fn=cmd_get)
    a = ap.parse_args()
    try:
        return a.fn(a)
    except RuntimeError as e:
        sys.stderr.write("lt_fleet.py %s: %s\n" % (a.cmd, e))
        return 2


if __name__ == "__main__":
    sys.exit(main())
