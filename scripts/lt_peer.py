#!/usr/bin/python3
"""python3-libtorrent driver for interop tests and loopback benchmarks.

    lt_peer.py seed --torrent F --data-dir D --port P [--seconds N] [--seed-mode] [--tracker URL]
    lt_peer.py get  --torrent F --dest D [--peer 127.0.0.1:PORT ...] [--timeout N] [--recheck]
                    [--tracker URL]
    lt_peer.py create --path P -o F.torrent [--piece-size BYTES] [--pad] [--tracker URL]

TCP only (uTP off), high_performance_seed() settings, listening on 127.0.0.1, no DHT, LSD,
UPnP or NAT-PMP. `seed` prints `listening on 127.0.0.1:P` once the data has passed
libtorrent's hash check, then serves until --seconds pass or SIGINT/SIGTERM. `get` connects
to the given peers, prints a progress line a second, and ends with one JSON line
{"seconds": ..., "bytes": ..., ...}; exit 0 once every piece has passed libtorrent's own
hash check (with --recheck the finished files are checked again from disk), 1 on timeout,
2 on any other error.

Trackers: when the .torrent names trackers (announce / announce-list), both `seed` and `get`
announce to all of them (HTTP or UDP, BEP 15), loopback trackers included (libtorrent's SSRF
mitigation is off, so are tracker IP filters). Announces and answers are logged as
`tracker announce URL event=E` and `tracker reply URL peers=N` (errors as `tracker error
URL: ...`). `seed` then prints `listening on` only after a tracker has answered an announce
made while seeding (so the swarm knows it as a seed; bounded by --announce-timeout, error
exit 2 past it). `get` needs no --peer then (peers come from the trackers); once complete it
waits for the tracker to acknowledge the `completed` announce (bounded by
--announce-timeout, a warning past it), and its JSON line counts "tracker_replies" and
"tracker_peers" (the most peers one answer gave). Both leave the swarm before exiting: they
announce `stopped` and wait (at most 3 s) for the answer, and `get --recheck` does so before
its recheck, so the tracker never keeps listing a peer that has gone. --tracker URL
(repeatable) adds trackers to the .torrent's, --no-trackers drops the .torrent's own; both
for `seed` and `get`.

Runs under the system interpreter (/usr/bin/python3): Debian's python3-libtorrent is not
visible to a pyenv or venv python.
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
    sys.stderr.write(
        "lt_peer.py: python3-libtorrent is not installed for %s "
        "(apt-get install python3-libtorrent; run with /usr/bin/python3)\n" % sys.executable
    )
    sys.exit(3)

STOP = False


def _stop(_sig, _frm):
    global STOP
    STOP = True


def log(msg):
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()


def make_session(port, ip="127.0.0.1"):
    s = lt.high_performance_seed()
    s.update(
        {
            "listen_interfaces": "%s:%d" % (ip if ":" not in ip else "[%s]" % ip, port),
            "outgoing_interfaces": "",
            "enable_dht": False,
            "enable_lsd": False,
            "enable_upnp": False,
            "enable_natpmp": False,
            "enable_outgoing_utp": False,
            "enable_incoming_utp": False,
            "enable_outgoing_tcp": True,
            "enable_incoming_tcp": True,
            "allow_multiple_connections_per_ip": True,
            # Trackers (used only when the .torrent names some): announce to every tracker
            # of every tier, allow trackers (and the peers they return) on loopback.
            "announce_to_all_trackers": True,
            "announce_to_all_tiers": True,
            "apply_ip_filter_to_trackers": False,
            # On shutdown, wait at most 2 s (not 5) for the trackers to answer `stopped`.
            "stop_tracker_timeout": 2,
            # Local peers are never rate limited, but be explicit.
            "upload_rate_limit": 0,
            "download_rate_limit": 0,
            "alert_mask": lt.alert.category_t.error_notification
            | lt.alert.category_t.status_notification
            | lt.alert.category_t.storage_notification
            | lt.alert.category_t.peer_notification
            | lt.alert.category_t.tracker_notification,
            "user_agent": "lt_peer.py/libtorrent-" + lt.__version__,
        }
    )
    # libtorrent >= 1.2.13 / 2.0.3: "SSRF mitigation" refuses some requests to trackers on
    # localhost; our test trackers live there.
    if "ssrf_mitigation" in lt.default_settings():
        s["ssrf_mitigation"] = False
    return lt.session(s)


class Trackers:
    """Tracker answers seen so far (fed from the alert stream)."""

    def __init__(self):
        self.replies = 0
        self.errors = 0
        self.max_peers = 0
        self.last_reply = None  # time.monotonic() of the latest answer
        self.completed_sent = False  # a `completed` announce went out
        self.completed_acked = False  # ... and a tracker answered after it
        self.stopped_sent = False  # likewise for `stopped`
        self.stopped_acked = False

    def note(self, a):
        """Logs and counts tracker alerts; returns True if `a` was one."""
        if isinstance(a, lt.tracker_announce_alert):
            if a.event == lt.event_t.completed:
                self.completed_sent = True
            elif a.event == lt.event_t.stopped:
                self.stopped_sent = True
            log("tracker announce %s event=%s" % (a.tracker_url(), str(a.event).rsplit(".", 1)[-1]))
            return True
        if isinstance(a, lt.tracker_reply_alert):
            self.replies += 1
            self.max_peers = max(self.max_peers, a.num_peers)
            self.last_reply = time.monotonic()
            if self.completed_sent:
                self.completed_acked = True
            if self.stopped_sent:
                self.stopped_acked = True
            log("tracker reply %s peers=%d" % (a.tracker_url(), a.num_peers))
            return True
        if isinstance(a, lt.tracker_error_alert):
            self.errors += 1
            if self.stopped_sent:
                self.stopped_acked = True  # answered or not, it is over
            log("tracker error %s: %s" % (a.tracker_url(), a.message()))
            return True
        if isinstance(a, lt.tracker_warning_alert):
            log("tracker warning %s: %s" % (a.tracker_url(), a.message()))
            return True
        return False


TRACKERS = Trackers()


def listen_port(ses, timeout=10.0):
    """Port the session listens on (waits for the listen socket)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for a in ses.pop_alerts():
            if TRACKERS.note(a):
                continue
            if isinstance(a, lt.listen_failed_alert):
                raise RuntimeError("listen failed: %s" % a.message())
        p = ses.listen_port()
        if p:
            return p
        time.sleep(0.05)
    raise RuntimeError("no listen socket after %.0fs" % timeout)


def add(ses, torrent, save_path, seed_mode=False, trackers=True, extra_trackers=()):
    """Adds `torrent`; with trackers=False its own trackers are dropped, and
    `extra_trackers` (URLs) are announced to as well. Returns (handle, tracker URLs)."""
    atp = lt.add_torrent_params()
    atp.ti = lt.torrent_info(torrent)
    atp.save_path = save_path
    if seed_mode:
        atp.flags |= lt.torrent_flags.seed_mode
    if trackers and not extra_trackers:
        return ses.add_torrent(atp), [t.url for t in atp.ti.trackers()]
    # Edit the tracker list before the torrent starts (and announces): add it paused.
    entries = [{"url": t.url, "tier": t.tier} for t in atp.ti.trackers()] if trackers else []
    entries += [{"url": u, "tier": 0} for u in extra_trackers]
    atp.flags |= lt.torrent_flags.paused
    atp.flags &= ~lt.torrent_flags.auto_managed
    h = ses.add_torrent(atp)
    h.replace_trackers(entries)
    h.resume()
    return h, [e["url"] for e in entries]


def tracker_urls(h):
    return [t["url"] for t in h.trackers()]


def drain_errors(ses, fatal=True):
    """Returns the number of hash failures seen; raises on storage/torrent errors."""
    fails = 0
    for a in ses.pop_alerts():
        if TRACKERS.note(a):
            continue
        if isinstance(a, lt.hash_failed_alert):
            fails += 1
            log("hash failed: %s" % a.message())
        elif isinstance(a, (lt.file_error_alert, lt.torrent_error_alert)):
            if fatal:
                raise RuntimeError(a.message())
            log("error: %s" % a.message())
        elif isinstance(a, lt.listen_failed_alert):
            raise RuntimeError("listen failed: %s" % a.message())
    return fails


def wait_checked(ses, timeout):
    """Waits for torrent_checked_alert (libtorrent's hash check of the files on disk)."""
    end = time.monotonic() + timeout
    while True:
        for al in ses.pop_alerts():
            if TRACKERS.note(al):
                continue
            if isinstance(al, lt.torrent_checked_alert):
                return
            if isinstance(al, (lt.file_error_alert, lt.torrent_error_alert, lt.listen_failed_alert)):
                raise RuntimeError(al.message())
        if time.monotonic() > end or STOP:
            raise RuntimeError("hash check did not finish in %ds" % timeout)
        time.sleep(0.02)


def parse_peer(s):
    host, _, port = s.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError("peer must be HOST:PORT, got %r" % s)
    return (host.strip("[]"), int(port))


def reannounce(h):
    try:
        h.force_reannounce(0, -1, lt.reannounce_flags_t.ignore_min_interval)
    except (AttributeError, TypeError):
        h.force_reannounce()


def wait_announced(ses, h, done, what, timeout):
    """Polls the alerts until `done()`, asking for a fresh announce every 5 s meanwhile;
    raises after `timeout` seconds."""
    end = time.monotonic() + timeout
    next_ask = time.monotonic() + 5
    while not done():
        drain_errors(ses, fatal=False)
        now = time.monotonic()
        if now > end or STOP:
            raise RuntimeError("no tracker of %s answered %s within %ds" % (tracker_urls(h), what, timeout))
        if now >= next_ask:
            reannounce(h)
            next_ask = now + 5
        time.sleep(0.02)


def leave_swarm(ses, h, urls, timeout=3.0):
    """Says `stopped` to the trackers and waits (at most `timeout` s) for the answer.

    Removing the torrent also sends `stopped`, but libtorrent posts no alert for a removed
    torrent's announces, and a session destroyed right after the removal closes its sockets
    before the announce goes out: the tracker would keep listing a peer that is gone. So:
    pause (not auto-managed, or the session would resume it) and wait; then remove."""
    if not urls:
        return
    # Forget earlier `stopped` announces (a recheck stops and restarts the torrent).
    drain_errors(ses, fatal=False)
    TRACKERS.stopped_sent = TRACKERS.stopped_acked = False
    h.unset_flags(lt.torrent_flags.auto_managed)
    h.pause()
    end = time.monotonic() + timeout
    while not TRACKERS.stopped_acked and time.monotonic() < end:
        drain_errors(ses, fatal=False)
        time.sleep(0.01)
    if not TRACKERS.stopped_acked:
        log("warning: no tracker answered `stopped` within %.0fs" % timeout)


def cmd_seed(a):
    ses = make_session(a.port, a.ip)
    h, urls = add(ses, a.torrent, a.data_dir, a.seed_mode, trackers=not a.no_trackers, extra_trackers=a.tracker)
    port = listen_port(ses)
    # Wait for libtorrent's own hash check of the data on disk.
    if not a.seed_mode:
        wait_checked(ses, a.check_timeout)
    st = h.status()
    if not st.is_seeding:
        raise RuntimeError("data in %s fails the hash check (%.1f%% present)" % (a.data_dir, st.progress * 100))
    if urls:
        # Announce as a seed (left = 0) and wait for the answer, so a leecher that starts
        # after `listening on` finds this seed through the tracker.
        drain_errors(ses, fatal=False)
        since = time.monotonic()
        reannounce(h)
        answered = lambda: TRACKERS.last_reply is not None and TRACKERS.last_reply > since  # noqa: E731
        wait_announced(ses, h, answered, "an announce as a seed", a.announce_timeout)
    log("listening on %s:%d" % (a.ip, port))
    end = time.monotonic() + a.seconds
    last = 0.0
    while not STOP and time.monotonic() < end:
        drain_errors(ses, fatal=False)
        now = time.monotonic()
        if a.verbose and now - last >= 1.0:
            st = h.status()
            log("seeding peers=%d up=%.1f MiB/s total_up=%d" % (st.num_peers, st.upload_rate / 2**20, st.all_time_upload))
            last = now
        time.sleep(0.1)
    st = h.status()
    leave_swarm(ses, h, urls)
    log(json.dumps({"role": "seed", "uploaded": st.all_time_upload, "tracker_replies": TRACKERS.replies}))
    return 0


def cmd_get(a):
    os.makedirs(a.dest, exist_ok=True)
    ses = make_session(a.port, a.ip)
    h, urls = add(ses, a.torrent, a.dest, trackers=not a.no_trackers, extra_trackers=a.tracker)
    listen_port(ses)
    has_trackers = bool(urls)
    if not a.peer and not has_trackers:
        raise RuntimeError("no --peer given and the torrent names no tracker: no way to find peers")
    ti = h.torrent_file()
    total = ti.total_size()
    t0 = time.monotonic()
    deadline = t0 + a.timeout
    fails = 0
    last_print = 0.0
    last_connect = -10.0
    started = None
    while True:
        fails += drain_errors(ses)
        st = h.status()
        now = time.monotonic()
        if st.is_seeding or st.is_finished:
            break
        if st.state == lt.torrent_status.downloading:
            if started is None:
                started = now
            # (Re)connect while no peer is attached; bounded by the deadline.
            if a.peer and st.num_peers == 0 and now - last_connect >= 2.0:
                for p in a.peer:
                    h.connect_peer(p)
                last_connect = now
        if now - last_print >= 1.0:
            log(
                "progress %5.1f%% %7.1f MiB/s peers=%d state=%s"
                % (st.progress * 100, st.download_rate / 2**20, st.num_peers, st.state)
            )
            last_print = now
        if now > deadline:
            leave_swarm(ses, h, urls)
            log(json.dumps({"error": "timeout", "timeout": a.timeout, "bytes": st.total_wanted_done, "total": total}))
            return 1
        if STOP:
            leave_swarm(ses, h, urls)
            return 1
        time.sleep(0.02)
    t_done = time.monotonic()
    if has_trackers:
        # libtorrent announces `completed` when the download finishes; wait for the
        # tracker's answer to it so the swarm's completed count includes this download.
        try:
            wait_announced(ses, h, lambda: TRACKERS.completed_acked, "the `completed` announce", a.announce_timeout)
        except RuntimeError as e:
            log("warning: %s" % e)
    # libtorrent 2 writes through mmap; flush so every byte is in the files before we exit.
    h.flush_cache()
    flush_end = time.monotonic() + 30
    while time.monotonic() < flush_end:
        alerts = [x for x in ses.pop_alerts() if not TRACKERS.note(x)]
        if any(isinstance(x, lt.cache_flushed_alert) for x in alerts):
            break
        time.sleep(0.01)
    # Leave the swarm before the recheck: a recheck stops and restarts the torrent, and
    # libtorrent sends no `stopped` for a `started` still in flight when it is paused.
    leave_swarm(ses, h, urls)
    ok = True
    if a.recheck:
        if urls:
            # Rechecking needs a running torrent; without trackers it announces nothing.
            h.replace_trackers([])
            h.resume()
        h.force_recheck()
        wait_checked(ses, a.timeout)
        st = h.status()
        ok = st.is_seeding
        if not ok:
            log("recheck failed: %.1f%% of pieces verify" % (st.progress * 100))
    st = h.status()
    summary = {
        "seconds": round(t_done - (started or t0), 3),
        "seconds_total": round(t_done - t0, 3),
        "bytes": st.total_wanted_done,
        "total": total,
        "hash_failures": fails,
        "rechecked": bool(a.recheck),
        "ok": ok,
        "tracker_replies": TRACKERS.replies,
        "tracker_peers": TRACKERS.max_peers,
    }
    ses.remove_torrent(h)
    log(json.dumps(summary))
    return 0 if ok else 2


def cmd_create(a):
    fs = lt.file_storage()
    lt.add_files(fs, a.path)
    flags = lt.create_torrent.v1_only
    if a.pad:
        # BEP 47 pad files after every file, so each file starts on a piece boundary.
        flags |= lt.create_torrent.canonical_files
    t = lt.create_torrent(fs, a.piece_size, flags=flags)
    for tr in a.tracker:
        t.add_tracker(tr)
    lt.set_piece_hashes(t, os.path.dirname(os.path.abspath(a.path)))
    with open(a.output, "wb") as f:
        f.write(lt.bencode(t.generate()))
    pads = sum(1 for i in range(fs.num_files()) if fs.file_flags(i) & lt.file_storage.flag_pad_file)
    log("wrote %s (%d pieces of %d bytes, %d pad files)" % (a.output, t.num_pieces(), t.piece_length(), pads))
    return 0


def main():
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("seed", help="seed a torrent from a directory holding its data")
    s.add_argument("--torrent", required=True)
    s.add_argument("--data-dir", required=True, help="directory holding the torrent's file or folder")
    s.add_argument("--port", type=int, required=True, help="listen port (0: any)")
    s.add_argument("--ip", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    s.add_argument("--seconds", type=float, default=3600, help="stop after this long (default 3600)")
    s.add_argument("--check-timeout", type=int, default=600, help="limit for the initial hash check")
    s.add_argument("--seed-mode", action="store_true", help="skip the initial hash check")
    s.add_argument("--verbose", action="store_true", help="print a status line a second")
    s.add_argument("--announce-timeout", type=int, default=60, help="limit for the first tracker answer")
    s.add_argument("--no-trackers", action="store_true", help="ignore the .torrent's trackers")
    s.add_argument("--tracker", action="append", default=[], help="also announce to this URL (repeatable)")
    s.set_defaults(fn=cmd_seed)

    g = sub.add_parser("get", help="download a torrent from the given peers")
    g.add_argument("--torrent", required=True)
    g.add_argument("--dest", required=True)
    g.add_argument(
        "--peer",
        type=parse_peer,
        action="append",
        default=[],
        help="HOST:PORT (repeatable); optional when the torrent names a tracker",
    )
    g.add_argument("--port", type=int, default=0, help="own listen port (default: any)")
    g.add_argument("--ip", default="127.0.0.1", help="own listen address (default 127.0.0.1)")
    g.add_argument("--timeout", type=float, default=600, help="give up after this many seconds (exit 1)")
    g.add_argument("--recheck", action="store_true", help="re-hash the finished files from disk")
    g.add_argument("--announce-timeout", type=int, default=30, help="limit for the `completed` announce's answer")
    g.add_argument("--no-trackers", action="store_true", help="ignore the .torrent's trackers")
    g.add_argument("--tracker", action="append", default=[], help="also announce to this URL (repeatable)")
    g.set_defaults(fn=cmd_get)

    c = sub.add_parser("create", help="make a v1 .torrent with libtorrent's create_torrent")
    c.add_argument("--path", required=True)
    c.add_argument("-o", "--output", required=True)
    c.add_argument("--piece-size", type=int, default=0)
    c.add_argument("--tracker", action="append", default=[])
    c.add_argument("--pad", action="store_true", help="add BEP 47 pad files (canonical_files)")
    c.set_defaults(fn=cmd_create)

    a = ap.parse_args()
    try:
        return a.fn(a)
    except RuntimeError as e:
        sys.stderr.write("lt_peer.py %s: %s\n" % (a.cmd, e))
        return 2


if __name__ == "__main__":
    sys.exit(main())
