#!/usr/bin/env python3
"""One measured window of perf/tracker.

Follows the load generator's log (aquatic_udp_load_test prints a report block every 5 s:
"Requests out: X/second", "Responses in: Y/second", per-kind rates, "Peers per announce
response: Z"). A block boundary is the moment its "Requests out" line shows up; at each
boundary the tracker's CPU time (utime+stime from /proc/PID/stat, all threads), RSS and the
system's per-CPU and UDP counters are sampled.

Warm-up: blocks are skipped until the generator has had at least --warm-announces announce
responses (so every simulated peer has announced) and --warm-min seconds have passed, at
most --warm-max seconds. Then --blocks blocks form the measured window.

Responses in the window = sum over its blocks of rate × (this boundary − previous one).
CPU µs per response = tracker CPU time over the window / responses in the window.

Prints one JSON object on stdout. Every wait is bounded; exits non-zero on timeout or when
the tracker or generator dies.
"""
import argparse
import json
import os
import re
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

RE = {
    "req": re.compile(r"^Requests out: ([\d.]+)/second"),
    "resp": re.compile(r"^Responses in: ([\d.]+)/second"),
    "connect": re.compile(r"^\s*- Connect responses:\s+([\d.]+)"),
    "announce": re.compile(r"^\s*- Announce responses:\s+([\d.]+)"),
    "scrape": re.compile(r"^\s*- Scrape responses:\s+([\d.]+)"),
    "error": re.compile(r"^\s*- Error responses:\s+([\d.]+)"),
    "ppa": re.compile(r"^Peers per announce response: ([\d.]+|NaN|inf)"),
}


def proc_cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    fields = s[s.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime = field 14, stime = field 15
    return int(fields[11]) + int(fields[12])


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "Threads"):
                out[k] = int(v.split()[0])
    return out


def cpu_busy():
    """Busy ticks per CPU (everything but idle, iowait and steal), and softirq and steal
    ticks (keys cpuN, cpuN.softirq, cpuN.steal)."""
    busy = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                p = line.split()
                v = [int(x) for x in p[1:]]
                # user nice system idle iowait irq softirq steal
                busy[p[0]] = v[0] + v[1] + v[2] + v[5] + v[6]
                busy[p[0] + ".softirq"] = v[6]
                busy[p[0] + ".steal"] = v[7]
    return busy


def udp_counters():
    with open("/proc/net/snmp") as f:
        lines = [l.split() for l in f if l.startswith("Udp:")]
    return dict(zip(lines[0][1:], (int(x) for x in lines[1][1:])))


BUSY_COMMS = ("rustc", "cargo", "cc", "ld", "cc1", "collect2", "ld.lld", "mold")


def compilers_running():
    """Compiler processes running now (another build on the same 2 cores)."""
    n = 0
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/comm") as f:
                    if f.read().strip() in BUSY_COMMS:
                        n += 1
            except OSError:
                pass
    return n


def sample(pid, gen_pid):
    try:
        gen_ticks = proc_cpu_ticks(gen_pid)
    except OSError:
        gen_ticks = 0
    t = os.times()
    return {
        "self_cpu_s": t.user + t.system,
        "compilers": compilers_running(),
        "gen_ticks": gen_ticks,
        "t": time.monotonic(),
        "ticks": proc_cpu_ticks(pid),
        "status": proc_status(pid),
        "cpus": cpu_busy(),
        "udp": udp_counters(),
    }


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
        return st[st.rindex(")") + 2] not in "ZX"
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tracker-pid", type=int, required=True)
    ap.add_argument("--gen-pid", type=int, required=True)
    ap.add_argument("--gen-log", required=True)
    ap.add_argument("--blocks", type=int, default=5, help="report blocks (5 s each) measured")
    ap.add_argument("--warm-announces", type=float, default=0)
    ap.add_argument("--warm-min", type=float, default=10)
    ap.add_argument("--warm-max", type=float, default=150)
    ap.add_argument("--start-timeout", type=float, default=120,
                    help="seconds to wait for the generator's first report")
    ap.add_argument("--tracker-cpu", default="cpu1")
    ap.add_argument("--gen-cpu", default="cpu0")
    ap.add_argument("--on-window-start", default="",
                    help="file to touch when the measured window starts")
    a = ap.parse_args()

    t_begin = time.monotonic()
    deadline = t_begin + a.start_timeout + a.warm_max + (a.blocks + 4) * 5 + 30
    pos = 0
    partial = ""
    block = None
    blocks = []  # completed blocks: dict with boundary sample + rates
    first_report_t = None
    warm_announces = 0.0
    window_start = None  # index into blocks of the boundary that opens the window
    prev_boundary_t = None
    errors = []

    def fail(msg):
        print(json.dumps({"ok": False, "error": msg, "blocks_seen": len(blocks)}))
        sys.exit(1)

    while True:
        now = time.monotonic()
        if now > deadline:
            fail("timed out waiting for generator reports")
        if first_report_t is None and now - t_begin > a.start_timeout:
            fail(f"no generator report within {a.start_timeout:.0f} s")
        if not alive(a.tracker_pid):
            fail("the tracker exited during the run")
        if not alive(a.gen_pid):
            fail("the load generator exited during the run")
        try:
            with open(a.gen_log, "r", errors="replace") as f:
                f.seek(pos)
                chunk = f.read()
                pos = f.tell()
        except OSError as e:
            fail(f"cannot read generator log: {e}")
        if not chunk:
            time.sleep(0.01)
            continue
        data = partial + chunk
        lines = data.split("\n")
        partial = lines.pop()
        for line in lines:
            m = RE["req"].match(line)
            if m:
                s = sample(a.tracker_pid, a.gen_pid)
                if first_report_t is None:
                    first_report_t = s["t"]
                block = {"boundary": s, "req": float(m.group(1)), "dt": None}
                if prev_boundary_t is not None:
                    block["dt"] = s["t"] - prev_boundary_t
                prev_boundary_t = s["t"]
                continue
            if "Received invalid response" in line or "recv error" in line:
                errors.append(line.strip()[:200])
            if block is None:
                continue
            for k in ("resp", "connect", "announce", "scrape", "error"):
                m = RE[k].match(line)
                if m:
                    block[k] = float(m.group(1))
            m = RE["ppa"].match(line)
            if m:
                try:
                    block["ppa"] = float(m.group(1))
                except ValueError:
                    block["ppa"] = 0.0
                blocks.append(block)
                b = block
                block = None
                i = len(blocks) - 1
                if window_start is None:
                    # The first block's interval began when the generator's monitor started,
                    # which we did not see; use its nominal 5 s for the warm-up count.
                    warm_announces += b.get("announce", 0) * (b["dt"] or 5.0)
                    warmed = (
                        warm_announces >= a.warm_announces
                        and b["boundary"]["t"] - first_report_t >= a.warm_min - 5
                    )
                    overdue = b["boundary"]["t"] - first_report_t >= a.warm_max
                    if warmed or overdue:
                        window_start = i
                        warm_secs = b["boundary"]["t"] - first_report_t + 5
                        warm_timed_out = overdue and not warmed
                        if a.on_window_start:
                            open(a.on_window_start, "w").close()
                elif i - window_start >= a.blocks:
                    return finish(a, blocks, window_start, warm_secs, warm_announces,
                                  warm_timed_out, errors)


def finish(a, blocks, w0, warm_secs, warm_announces, warm_timed_out, errors):
    s0 = blocks[w0]["boundary"]
    s1 = blocks[w0 + a.blocks]["boundary"]
    win = blocks[w0 + 1: w0 + a.blocks + 1]
    secs = s1["t"] - s0["t"]
    responses = sum(b.get("resp", 0) * b["dt"] for b in win)
    requests = sum(b.get("req", 0) * b["dt"] for b in win)
    kinds = {k: sum(b.get(k, 0) * b["dt"] for b in win)
             for k in ("connect", "announce", "scrape", "error")}
    ann = kinds["announce"]
    ppa = (sum(b.get("ppa", 0) * b.get("announce", 0) * b["dt"] for b in win) / ann) if ann else 0
    cpu_s = (s1["ticks"] - s0["ticks"]) / CLK_TCK
    tcpu = a.tracker_cpu
    gcpu = a.gen_cpu
    tracker_core_busy = (s1["cpus"].get(tcpu, 0) - s0["cpus"].get(tcpu, 0)) / CLK_TCK
    gen_core_busy = (s1["cpus"].get(gcpu, 0) - s0["cpus"].get(gcpu, 0)) / CLK_TCK
    def core(key):
        return (s1["cpus"].get(key, 0) - s0["cpus"].get(key, 0)) / CLK_TCK / secs

    udp = {k: s1["udp"].get(k, 0) - s0["udp"].get(k, 0)
           for k in ("InDatagrams", "OutDatagrams", "InErrors", "RcvbufErrors", "SndbufErrors")}
    out = {
        "ok": True,
        "window_s": round(secs, 3),
        "warmup_s": round(warm_secs, 1),
        "warmup_announces": int(warm_announces),
        "warmup_timed_out": warm_timed_out,
        "responses": int(responses),
        "requests": int(requests),
        "responses_per_s": responses / secs,
        "requests_per_s": requests / secs,
        "kinds_per_s": {k: v / secs for k, v in kinds.items()},
        "peers_per_announce": ppa,
        "tracker_cpu_s": cpu_s,
        "tracker_cpu_util": cpu_s / secs,
        "cpu_us_per_response": cpu_s * 1e6 / responses if responses else None,
        "tracker_core_busy_util": tracker_core_busy / secs,
        "tracker_core_other_util": (tracker_core_busy - cpu_s) / secs,
        "gen_core_busy_util": gen_core_busy / secs,
        "gen_proc_util": (s1["gen_ticks"] - s0["gen_ticks"]) / CLK_TCK / secs,
        # other processes on the generator's core, this script's own polling not counted
        "gen_core_other_util": (gen_core_busy - (s1["gen_ticks"] - s0["gen_ticks"]) / CLK_TCK
                                - (s1["self_cpu_s"] - s0["self_cpu_s"])) / secs,
        "tracker_core_softirq_util": core(tcpu + ".softirq"),
        "tracker_core_steal_util": core(tcpu + ".steal"),
        "gen_core_softirq_util": core(gcpu + ".softirq"),
        "gen_core_steal_util": core(gcpu + ".steal"),
        "rss_kib_start": s0["status"].get("VmRSS"),
        "rss_kib_end": s1["status"].get("VmRSS"),
        "hwm_kib_end": s1["status"].get("VmHWM"),
        "threads": s1["status"].get("Threads"),
        "compilers_seen_in_window": max(b["boundary"]["compilers"]
                                        for b in [blocks[w0]] + win),
        "udp_deltas": udp,
        "generator_errors": errors[:5],
        "generator_error_count": len(errors),
        "per_block": [
            {"dt": round(b["dt"], 3), "resp_per_s": b.get("resp"), "req_per_s": b.get("req"),
             "error_per_s": b.get("error"), "ppa": b.get("ppa")}
            for b in win
        ],
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
