#!/usr/bin/env python3
"""Tables for perf/fleet from its run directory (stdlib only).

    report.py CONFIG RUNS_DIR          the markdown report (every tool, medians over rounds)
    report.py --one RUN_DIR CONFIG     one line about one run (progress on stderr)
    report.py --ok CONFIG RUNS_DIR     exit 0 if every run got every host a verified copy
    report.py --json CONFIG RUNS_DIR   the shape and the medians per tool, as JSON

A run directory (perf/fleet writes it) holds: meta (tool, round, t0, t_end, status), one
NAME.done (completion time, `date +%s.%N`) or NAME.fail per host, counters.before/after
(`scripts/netns-fleet.sh counters`), cpu.edges (/proc/stat at t0 and at the end),
cpu.samples (one a second), net.samples (the switch's /proc/net/dev, one a second),
cpuacct.before/after (ns), sha.txt, and the hosts' logs.
"""

import glob
import json
import os
import re
import statistics
import sys

TOOL_ORDER = ["ringswarm", "scp-all", "scp-seq", "rsync-tree", "libtorrent", "release"]
TOOL_LABEL = {
    "ringswarm": "ringswarm (tracker + seed on the origin, `get --seed-for` on every host)",
    "scp-all": "scp fan-out, all hosts at once",
    "scp-seq": "scp fan-out, one host after another",
    "rsync-tree": "rsync tree (origin → one host per rack → rest of the rack; with dcs: origin → one host per dc → one per rack → rest)",
    "libtorrent": "libtorrent 2.0 swarm (same tracker; TCP, high_performance_seed)",
    "release": "the fleet agent: `publish` on the origin (clock starts before it) to `current` switched on every host (`agent --lock`)",
}


def kv(path):
    d = {}
    try:
        with open(path) as f:
            for line in f:
                k, sep, v = line.rstrip("\n").partition("=")
                if sep:
                    d[k] = v
    except OSError:
        pass
    return d


def read(path, default=None):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def counters(path):
    out = {}
    for line in (read(path, "") or "").splitlines():
        parts = line.split()
        if len(parts) == 3:
            out[parts[0]] = (int(parts[1]), int(parts[2]))
    return out


def cpu_busy(a, b):
    """(busy %, busy CPU-s) between two /proc/stat `cpu` lines prefixed by a timestamp."""
    fa, fb = a.split(), b.split()
    va = [int(x) for x in fa[2:10]]  # user nice system idle iowait irq softirq steal
    vb = [int(x) for x in fb[2:10]]
    d = [y - x for x, y in zip(va, vb)]
    total = sum(d)
    if total <= 0:
        return None, None
    idle = d[3] + d[4]
    hz = os.sysconf("SC_CLK_TCK")
    return 100.0 * (total - idle) / total, (total - idle) / hz


def host_stats(rd, host):
    """(uploaded, downloaded) payload bytes from the host's JSON summary line, if any."""
    log = read(os.path.join(rd, host + ".log"), "") or ""
    for line in reversed(log.splitlines()):
        line = line.strip()
        if line.startswith("{") and "uploaded" in line:
            try:
                j = json.loads(line)
            except ValueError:
                continue
            return j.get("uploaded_bytes", j.get("uploaded")), j.get("downloaded_bytes", j.get("downloaded"))
    return None, None


def wan_drops(rd):
    """Frames the WAN forwarder dropped during the run (its figures before and after), or None."""
    def dropped(name):
        m = re.search(r"dropped (\d+) \(queue full\) \+ (\d+) \(send refused\) \+ (\d+) \(socket", read(os.path.join(rd, name), "") or "")
        return sum(int(x) for x in m.groups()) if m else None
    a, b = dropped("wan.before"), dropped("wan.after")
    return b - a if a is not None and b is not None else None


def dcs(cfg):
    return int(cfg.get("dcs") or 1)


def load_run(rd, cfg):
    meta = kv(os.path.join(rd, "meta"))
    r = {"dir": rd, "tool": meta.get("tool"), "round": int(meta.get("round", 0)), "meta": meta,
         "discarded": ".disturbed" in os.path.basename(rd)}
    hosts = ["h%d" % i for i in range(1, int(cfg["hosts"]) + 1)]
    r["hosts"] = hosts
    if "t0" not in meta:
        r["error"] = meta.get("status", "did not start")
        return r
    t0 = float(meta["t0"])
    done, fails = {}, {}
    for h in hosts:
        d = read(os.path.join(rd, h + ".done"))
        if d:
            done[h] = float(d) - t0
        else:
            fails[h] = read(os.path.join(rd, h + ".fail"), "no result")
    r["done"], r["fails"] = done, fails
    sha = {}
    for line in (read(os.path.join(rd, "sha.txt"), "") or "").splitlines():
        p = line.split()
        if len(p) == 2:
            sha[p[0]] = p[1]
    r["sha"] = sha
    r["sha_ok"] = sum(1 for h in hosts if sha.get(h) == "ok")
    r["complete"] = len(done) == len(hosts) and r["sha_ok"] == len(hosts)
    if done:
        ts = sorted(done.values())
        r["last"] = ts[-1] if len(done) == len(hosts) else None
        r["first"] = ts[0]
        r["median"] = statistics.median(ts)
    cb, ca = counters(os.path.join(rd, "counters.before")), counters(os.path.join(rd, "counters.after"))
    size = int(cfg["size"])
    racks = int(cfg["racks"])
    r["up_out"], r["up_in"] = [], []
    for k in range(1, racks + 1):
        key = "rack%d" % k
        if key in ca and key in cb:
            r["up_out"].append((ca[key][0] - cb[key][0]) / size)
            r["up_in"].append((ca[key][1] - cb[key][1]) / size)
    r["dc_out"], r["dc_in"] = [], []
    for k in range(1, dcs(cfg) + 1 if dcs(cfg) > 1 else 1):
        key = "dc%d" % k
        if key in ca and key in cb:
            r["dc_out"].append((ca[key][0] - cb[key][0]) / size)
            r["dc_in"].append((ca[key][1] - cb[key][1]) / size)
    try:
        ticks = int(read(os.path.join(rd, "wan-cpu.after"))) - int(read(os.path.join(rd, "wan-cpu.before")))
        r["wan_cpu_s"] = ticks / os.sysconf("SC_CLK_TCK") if dcs(cfg) > 1 else None
    except (TypeError, ValueError):
        r["wan_cpu_s"] = None
    r["wan_drops"] = wan_drops(rd)
    if "origin" in ca and "origin" in cb:
        r["origin_up"] = (ca["origin"][0] - cb["origin"][0]) / size
        r["origin_down"] = (ca["origin"][1] - cb["origin"][1]) / size
    r["host_up"] = {h: (ca[h][0] - cb[h][0]) / size for h in hosts if h in ca and h in cb}
    edges = (read(os.path.join(rd, "cpu.edges"), "") or "").splitlines()
    if len(edges) >= 2:
        r["cpu_mean"], r["cpu_s"] = cpu_busy(edges[0], edges[-1])
    samples = (read(os.path.join(rd, "cpu.samples"), "") or "").splitlines()
    peaks = []
    for a, b in zip(samples, samples[1:]):
        try:
            pct, _ = cpu_busy(a, b)
        except (ValueError, IndexError):
            continue
        if pct is not None:
            peaks.append(pct)
    r["cpu_peak"] = max(peaks) if peaks else None
    r["cpu_samples"] = peaks
    try:
        r["own_cpu_s"] = (int(read(os.path.join(rd, "cpuacct.after"))) - int(read(os.path.join(rd, "cpuacct.before")))) / 1e9
    except (TypeError, ValueError):
        r["own_cpu_s"] = None
    if "t_end" in meta:
        r["wall"] = float(meta["t_end"]) - t0
    r["stats"] = {h: host_stats(rd, h) for h in hosts}
    if r["tool"] == "release":
        release_stats(r, rd, hosts, t0)
    return r


def release_stats(r, rd, hosts, t0):
    """The release scenario: when each agent noticed the feed (its `downloading` log line
    after the publish), the service's hot-file residency over the run, and the release's
    residency when the service first saw it behind `current`."""
    meta = r["meta"]
    published = float(meta["published"]) if "published" in meta else None
    t_end = float(meta.get("t_end", "inf"))
    r["published_s"] = published - t0 if published else None
    noticed, hot_min, at_switch, control_min = {}, {}, {}, {}
    control_from = float(meta["control_from"]) if "control_from" in meta else None
    for h in hosts:
        for line in (read(os.path.join(rd, h + ".tlog"), "") or "").splitlines():
            t, _, text = line.partition(" ")
            if "downloading" in text and published:
                try:
                    noticed[h] = float(t) - published
                except ValueError:
                    pass
                break
        for line in (read(os.path.join(rd, h + ".service"), "") or "").splitlines():
            p = line.split()
            try:
                t = float(p[0])
            except (ValueError, IndexError):
                continue
            if control_from is not None and control_from <= t < t0 and p[1] == "hot" and len(p) == 3:
                control_min[h] = min(control_min.get(h, 100.0), float(p[2]))
            if not t0 <= t <= t_end:
                continue
            if p[1] == "hot" and len(p) == 3:
                hot_min[h] = min(hot_min.get(h, 100.0), float(p[2]))
            elif p[1] == "switch" and len(p) == 4 and h not in at_switch:
                at_switch[h] = float(p[3])
    r["noticed"], r["hot_min"], r["at_switch"] = noticed, hot_min, at_switch
    r["control_min"] = control_min
    r["control_s"] = t0 - control_from if control_from is not None else None
    # Samples below 99 %: during the release, and in the control window before it.
    r["dips"], r["control_dips"] = 0, 0
    for h in hosts:
        for line in (read(os.path.join(rd, h + ".service"), "") or "").splitlines():
            p = line.split()
            if len(p) != 3 or p[1] != "hot":
                continue
            try:
                t, pct = float(p[0]), float(p[2])
            except ValueError:
                continue
            if pct < 99.0 and t0 <= t <= t_end:
                r["dips"] += 1
            elif pct < 99.0 and control_from is not None and control_from <= t < t0:
                r["control_dips"] += 1
    mem = []
    for line in (read(os.path.join(rd, "memcg.txt"), "") or "").splitlines():
        p = line.split()
        if len(p) == 4:
            mem.append((int(p[1]), int(p[2]), int(p[3])))
    r["memcg"] = mem


def net_samples(rd):
    """[(time, {iface: (rx_bytes, tx_bytes)})] from net.samples (switch-side veth ends)."""
    out, cur = [], None
    for line in (read(os.path.join(rd, "net.samples"), "") or "").splitlines():
        if line.startswith("@ "):
            cur = (float(line[2:]), {})
            out.append(cur)
        elif cur is not None and ":" in line:
            name, _, rest = line.partition(":")
            v = rest.split()
            if len(v) >= 9:
                cur[1][name.strip()] = (int(v[0]), int(v[8]))
    return [x for x in out if x[1]]


def timeline(r, cfg):
    """What the links did over a run: per-host start/finish and rates, origin and uplinks."""
    samples = net_samples(r["dir"])
    if len(samples) < 3 or "t0" not in r["meta"]:
        return None
    t0 = float(r["meta"]["t0"])
    size = int(cfg["size"])
    hosts = r["hosts"]
    racks = int(cfg["racks"])
    base = samples[0][1]

    def series(iface, idx):
        b = base.get(iface, (0, 0))[idx]
        return [(t - t0, d.get(iface, (0, 0))[idx] - b) for t, d in samples]

    down = {h: series(h, 1) for h in hosts}          # switch end tx = into the host
    origin = series("o", 0)                          # switch end rx = sent by the origin
    rin = [series("c%d" % k, 1) for k in range(1, racks + 1)]
    dcin = [series("w%d" % k, 0) for k in range(1, dcs(cfg) + 1)] if dcs(cfg) > 1 else []  # switch end rx = into the dc

    def first_at(ser, amount):
        prev = None
        for t, v in ser:
            if v >= amount:
                if prev is None or v == prev[1]:
                    return t
                # linear interpolation inside the second
                return prev[0] + (t - prev[0]) * (amount - prev[1]) / (v - prev[1])
            prev = (t, v)
        return None

    hb = int(cfg["host_bps"]) / 8.0
    T = {"hosts": {}}
    for h in hosts:
        start = first_at(down[h], 1 << 20)
        half = first_at(down[h], size // 2)
        d = r["done"].get(h)
        T["hosts"][h] = (start, half, d)
    starts = [v[0] for v in T["hosts"].values() if v[0] is not None]
    dones = [v[2] for v in T["hosts"].values() if v[2] is not None]
    T["start_med"] = statistics.median(starts) if starts else None
    T["start_max"] = max(starts) if starts else None
    T["done_first"] = min(dones) if dones else None
    T["done_last"] = max(dones) if len(dones) == len(hosts) else None
    total = origin[-1][1]
    T["origin_total"] = total / size
    T["origin_1x"] = first_at(origin, size)
    T["origin_99"] = first_at(origin, int(total * 0.99)) if total else None
    # the whole fleet's receive: when it had 50 %, 90 %, 99 % of H blobs (L2 bytes: a bit more
    # than the payload)
    agg = [(t, sum(down[h][i][1] for h in hosts)) for i, (t, _) in enumerate(origin)]
    T["agg"] = {q: first_at(agg, int(q * len(hosts) * size)) for q in (0.5, 0.9, 0.99)}
    # mean receive rate of a host between its first MiB and its done, in host-link units
    rates = []
    for h, (st, _, d) in T["hosts"].items():
        if st is not None and d is not None and d > st:
            rates.append(size / (d - st) / hb)
    T["host_rate_med"] = statistics.median(rates) if rates else None
    T["host_rate_min"] = min(rates) if rates else None
    # rows: every STEP seconds until the last done (or the end of the samples)
    end = (T["done_last"] or samples[-1][0] - t0) + 1.5
    n = sum(1 for t, _ in samples if t - t0 <= end)
    step = max(1, -(-n // 24))
    rows = []
    idx = [i for i, (t, _) in enumerate(samples) if t - t0 <= end]
    for j in range(step, len(idx) + step - 1, step):
        i1 = idx[min(j, len(idx) - 1)]
        i0 = idx[j - step]
        if i1 <= i0:
            break
        dt = samples[i1][0] - samples[i0][0]
        mbit = lambda ser: (ser[i1][1] - ser[i0][1]) * 8 / dt / 1e6
        t = samples[i1][0] - t0
        ndone = sum(1 for x in dones if x <= t)
        rows.append((t, mbit(origin), [mbit(x) for x in rin] + [mbit(x) for x in dcin],
                     statistics.mean(mbit(down[h]) for h in hosts), min(mbit(down[h]) for h in hosts),
                     agg[i1][1] / (len(hosts) * size), ndone))
    T["rows"] = rows
    # where the uplink bytes go: bytes into the racks as a share of what the hosts took in,
    # per phase (start: until 5 s; middle: until the hosts held 90 %; tail: the rest). With
    # R racks of equal size, each piece entering each rack once is 1/(hosts per rack).
    t90 = T["agg"][0.9]
    T["phases"] = []
    if t90 and t90 > 5:
        cuts = [0.0, 5.0, t90, samples[-1][0] - t0]
        ix = [min(range(len(samples)), key=lambda i: abs(samples[i][0] - t0 - c)) for c in cuts]
        for name, a, b in zip(("start (0–5 s)", "middle (5 s–90 %)", "tail (90 %–end)"), ix, ix[1:]):
            took = agg[b][1] - agg[a][1]
            into = sum(x[b][1] - x[a][1] for x in rin)
            T["phases"].append((name, samples[b][0] - samples[a][0], took / size, into / size))
    return T


def disk_use(r):
    """(busy %, MiB/s written, MiB/s read, ms per write, mean in flight) from disk.samples."""
    rows = [l.split() for l in (read(os.path.join(r["dir"], "disk.samples"), "") or "").splitlines()]
    rows = [x for x in rows if len(x) >= 15]
    if len(rows) < 2 or "t_end" not in r["meta"]:
        return None
    t_end = float(r["meta"]["t_end"])
    inside = [x for x in rows if float(x[0]) <= t_end + 0.5]
    a, b = inside[0], inside[-1]
    dt = float(b[0]) - float(a[0])
    if dt <= 0:
        return None
    d = lambda i: int(b[i]) - int(a[i])
    writes = d(8)
    return (100.0 * d(13) / 1000 / dt, d(10) * 512 / 2**20 / dt, d(6) * 512 / 2**20 / dt,
            d(11) / writes if writes else 0.0, d(14) / 1000 / dt)


def timeline_md(r, cfg):
    T = timeline(r, cfg)
    if not T:
        return []
    lb = float(cfg["lower_bound"])
    L = ["**Round %d, %s**: hosts' first MiB at %s s (median) / %s s (last); the hosts together had received 50 / 90 / 99 %% of "
         "hosts × blob (L2 bytes) at %s / %s / %s s; first host done %s s, last %s s; a host's mean rate from its first MiB to done: "
         "%s × its link (median), %s × (slowest); the origin sent %s × blob, 1 × blob by %s s, 99 %% of its bytes by %s s "
         "(lower bound %.1f s)." % (
             r["round"], r["tool"], f(T["start_med"], "%.1f"), f(T["start_max"], "%.1f"),
             f(T["agg"][0.5], "%.1f"), f(T["agg"][0.9], "%.1f"), f(T["agg"][0.99], "%.1f"),
             f(T["done_first"], "%.1f"), f(T["done_last"], "%.1f"), f(T["host_rate_med"]), f(T["host_rate_min"]),
             f(T["origin_total"]), f(T["origin_1x"], "%.1f"), f(T["origin_99"], "%.1f"), lb)]
    if T["phases"]:
        L[-1] += " Bytes into the racks as a share of the hosts' intake (each piece entering each rack once: %.0f %%): %s." % (
            100.0 * int(cfg["racks"]) / int(cfg["hosts"]),
            "; ".join("%s, %.1f s: %.2f blobs in, %.0f %% (%.2f blobs) over uplinks" % (n, d, took, 100 * into / took if took else 0, into)
                      for n, d, took, into in T["phases"]))
    disk = disk_use(r)
    if disk:
        L[-1] += " The data disk (every host's copy and the origin's source live on it), t0 to the end: busy %.0f %% of the time, %.0f MiB/s written, %.0f MiB/s read, %.1f ms per write, %.1f requests in flight on average." % disk
    got = [r["stats"][h][1] for h in r["hosts"] if r["stats"].get(h) and r["stats"][h][1] is not None]
    if got:
        size = int(cfg["size"])
        L[-1] += " Payload a host received (its JSON summary; pieces fetched twice count twice): median %.2f × blob, most %.2f ×." % (
            statistics.median(got) / size, max(got) / size)
    L.append("")
    L.append("| until s | origin sends Mbit/s | into each rack%s Mbit/s | hosts receive Mbit/s, mean / slowest | hosts received, %% of hosts × blob | hosts done |" % (
        " / into each dc" if dcs(cfg) > 1 else ""))
    L.append("|---|---|---|---|---|---|")
    for t, o, rin, hm, hmin, frac, nd in T["rows"]:
        L.append("| %.1f | %.0f | %s | %.0f / %.0f | %.0f | %d |" % (t, o, " / ".join("%.0f" % x for x in rin), hm, hmin, 100 * frac, nd))
    L.append("")
    L.append("Per host (s): " + "; ".join("%s %s→%s→%s" % (h, f(a, "%.1f"), f(b, "%.1f"), f(c, "%.1f"))
                                          for h, (a, b, c) in T["hosts"].items()) + " (first MiB → half → done)")
    L.append("")
    return L


def f(v, spec="%.2f"):
    return "–" if v is None else spec % v


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def one_line(r, cfg):
    if "error" in r:
        return "  %s: %s" % (r["tool"], r["error"])
    lb = float(cfg["lower_bound"])
    s = "  %s: last host %s s (%s × lower bound %.1f s), first %s s; %d/%d sha256 ok" % (
        r["tool"], f(r.get("last"), "%.1f"), f(r["last"] / lb if r.get("last") else None),
        lb, f(r.get("first"), "%.1f"), r["sha_ok"], len(r["hosts"]))
    s += "; uplinks in %s / out %s × blob; origin sent %s × blob; CPU %s %% mean, %s %% peak, own %s CPU-s" % (
        "/".join("%.2f" % x for x in r["up_in"]), "/".join("%.2f" % x for x in r["up_out"]),
        f(r.get("origin_up")), f(r.get("cpu_mean"), "%.0f"), f(r.get("cpu_peak"), "%.0f"), f(r.get("own_cpu_s"), "%.1f"))
    if r.get("dc_in"):
        s += "; dcs in %s / out %s × blob (WAN forwarder %s CPU-s, %s frames dropped)" % (
            "/".join("%.2f" % x for x in r["dc_in"]), "/".join("%.2f" % x for x in r["dc_out"]), f(r.get("wan_cpu_s"), "%.1f"),
            "?" if r.get("wan_drops") is None else r["wan_drops"])
    if r["fails"]:
        s += "; FAILED: " + "; ".join("%s: %s" % (h, m[:200]) for h, m in sorted(r["fails"].items()))
    return s


def load_all(cfg, runs_dir):
    runs = [load_run(d, cfg) for d in sorted(glob.glob(os.path.join(runs_dir, "r*-*")))]
    tools = [t for t in TOOL_ORDER if t in cfg.get("tools", "").split(",")]
    return runs, tools


def medians(cfg, runs, tools):
    """{tool: medians over its complete runs} and {tool: those runs}, {tool: every run}."""
    racks = int(cfg["racks"])
    by = {t: [r for r in runs if r["tool"] == t and not r["discarded"]] for t in tools}
    ok = {}
    for t in tools:
        clean = [r for r in by[t] if r.get("complete") and "disturbed" not in r["meta"]]
        ok[t] = clean or [r for r in by[t] if r.get("complete")]
    M = {}
    for t in tools:
        rs = ok[t]
        if not rs:
            continue
        M[t] = {
            "last": med([r["last"] for r in rs]),
            "first": med([r["first"] for r in rs]),
            "median": med([r["median"] for r in rs]),
            "up_in": [med([r["up_in"][k] for r in rs if len(r["up_in"]) > k]) for k in range(racks)],
            "up_out": [med([r["up_out"][k] for r in rs if len(r["up_out"]) > k]) for k in range(racks)],
            "origin_up": med([r.get("origin_up") for r in rs]),
            "dc_in": [med([r["dc_in"][k] for r in rs if len(r["dc_in"]) > k]) for k in range(dcs(cfg))] if dcs(cfg) > 1 else [],
            "dc_out": [med([r["dc_out"][k] for r in rs if len(r["dc_out"]) > k]) for k in range(dcs(cfg))] if dcs(cfg) > 1 else [],
            "wan_cpu_s": med([r.get("wan_cpu_s") for r in rs]),
            "wan_drops": sum(r["wan_drops"] for r in rs if r.get("wan_drops") is not None) if any(r.get("wan_drops") is not None for r in rs) else None,
            "cpu_mean": med([r.get("cpu_mean") for r in rs]),
            "cpu_peak": med([r.get("cpu_peak") for r in rs]),
            "own_cpu_s": med([r.get("own_cpu_s") for r in rs]),
            "cpu_s": med([r.get("cpu_s") for r in rs]),
        }
    return M, ok, by


def report(cfg, runs_dir):
    runs, tools = load_all(cfg, runs_dir)
    size = int(cfg["size"])
    lb = float(cfg["lower_bound"])
    M, ok, by = medians(cfg, runs, tools)
    base = M.get("ringswarm", {}).get("last")
    mib = size / 2**20
    L = []
    L.append("# Fleet: %s blob from one origin to %s hosts in %s racks%s (network namespaces, tc tbf)" % (
        ("%d MiB" % mib) if mib == int(mib) else ("%.1f MiB" % mib), cfg["hosts"], cfg["racks"],
        (" in %d dcs" % dcs(cfg)) if dcs(cfg) > 1 else ""))
    L.append("")
    L.append("- date: %s" % cfg.get("date"))
    L.append("- command: `%s`" % cfg.get("cmdline"))
    L.append("- commit: %s" % cfg.get("commit"))
    L.append("- machine: %s" % cfg.get("machine"))
    L.append("- links (tbf, both directions): hosts and origin %s, rack uplinks %s (each rack: %s hosts = %s of host links behind it); tbf queue %s; one L2 segment in 198.18.0.0/16"
             % (cfg["host_rate"], cfg["uplink_rate"], hosts_per_rack(cfg), per_rack_sum(cfg), cfg.get("queue")))
    if dcs(cfg) > 1:
        L.append("- datacenters: %d; racks per dc %s (racks in contiguous blocks; the origin in dc1); each dc's WAN link %s (tbf, both directions), one-way delay %s between any two dcs (perf/fleet.d/wan-delay.py, a delaying L2 forwarder; RTT 2 × it)" % (
            dcs(cfg), " / ".join(str(cfg.get("rack_dc", "").split().count(str(d))) for d in range(1, dcs(cfg) + 1)), cfg.get("wan_rate"), cfg.get("wan_delay")))
    if cfg.get("piece_size"):
        if int(cfg.get("piece_size") or 0) > 0:
            L.append("- piece size: %s KiB (`ringswarm create --piece-size`; ringswarm and libtorrent share the .torrent)" % (int(cfg["piece_size"]) // 1024))
    L.append("- lower bound: the largest of blob ÷ host link rate, blob ÷ origin link rate%s = %.1f s (TCP/IP headers alone cost ≈ 4 %% of a link, so ≈ 1.05 × is the practical floor)" % (
        " and, for each dc other than the origin's, blob ÷ its WAN rate" if dcs(cfg) > 1 else "", lb))
    L.append("- page cache %s before every run; destinations empty; tools in turn%s" % (
        "dropped" if cfg.get("drop_caches") == "1" else "NOT dropped",
        ", the first tool rotating each round; figures are medians over the rounds in which every host got a verified copy" if int(cfg.get("rounds", 1)) > 1 else ""))
    L.append("- a host is done when: ringswarm prints `done:` (every piece verified, fsync'd); libtorrent has hash-checked every piece and fsync'd; scp/rsync exited 0 and the file was fsync'd. Every copy is sha256-checked afterwards")
    L.append("- uplink/origin bytes: veth counters (L2 frames, headers included), in units of the blob size; `in` = into the rack, `out` = out of it")
    L.append("- CPU: the whole machine's mean busy %% over the run and its busiest second (/proc/stat), and the CPU-seconds of this benchmark's own processes (cpuacct cgroup, %s CPUs)" % os.cpu_count())
    L.append("")
    multi = dcs(cfg) > 1
    L.append("| tool | runs ok | last host s | ÷ lower bound | ÷ ringswarm | first / median host s | rack uplinks in, × blob | rack uplinks out, × blob |%s origin sent, × blob | sha256 ok | CPU busy %% mean / peak | own CPU-s |" % (
        " into each dc over its WAN link, × blob | out of each dc, × blob | WAN forwarder CPU-s / frames dropped (all runs) |" if multi else ""))
    L.append("|---|---|---|---|---|---|---|---|%s---|---|---|---|" % ("---|---|---|" if multi else ""))
    for t in tools:
        n = len(by[t])
        m = M.get(t)
        if not m:
            why = "; ".join(r.get("error") or "; ".join("%s: %s" % (h, e[:80]) for h, e in sorted(r.get("fails", {}).items())[:2]) or "sha256: %s" % r.get("sha") for r in by[t])
            L.append("| %s | 0/%d | failed | | | | | | %s| | | | %s |" % (t, n, "| | | " if multi else "", why.replace("|", "/")[:300]))
            continue
        dist = " (disturbed: a tracker benchmark ran meanwhile)" if any("disturbed" in r["meta"] for r in ok[t]) else ""
        dccols = " %s | %s | %s |" % (" / ".join(f(x) for x in m["dc_in"]), " / ".join(f(x) for x in m["dc_out"]),
                                     f(m["wan_cpu_s"], "%.1f") + " / " + ("?" if m["wan_drops"] is None else str(m["wan_drops"]))) if multi else ""
        L.append("| %s | %d/%d%s | %.1f | %.2f | %s | %.1f / %.1f | %s | %s |%s %s | %d/%s | %s / %s | %s |" % (
            t, len(ok[t]), n, dist, m["last"], m["last"] / lb, f(m["last"] / base if base else None),
            m["first"], m["median"], " / ".join(f(x) for x in m["up_in"]), " / ".join(f(x) for x in m["up_out"]),
            dccols, f(m["origin_up"]), ok[t][-1]["sha_ok"], cfg["hosts"], f(m["cpu_mean"], "%.0f"), f(m["cpu_peak"], "%.0f"), f(m["own_cpu_s"], "%.1f")))
    L.append("")
    L.append("Tools: " + "; ".join("**%s** = %s" % (t, TOOL_LABEL[t]) for t in tools) + ".")
    L.append("")
    if cfg.get("versions"):
        L.append("Versions: " + cfg["versions"].replace(";", "; "))
        L.append("")
    if "ringswarm" in M:
        L.extend(targets(M, lb))
        if multi:
            L.extend(dc_targets(M, lb))
    if "release" in M:
        L.extend(release_section(ok["release"], lb, cfg))
    tl = []
    for r in runs:
        if r["tool"] in ("ringswarm", "libtorrent") and "error" not in r and not r["discarded"]:
            tl.extend(timeline_md(r, cfg))
    if tl:
        L.append("<details><summary>timelines (switch veth counters, sampled every second; L2 bytes)</summary>")
        L.append("")
        L.extend(tl)
        L.append("</details>")
        L.append("")
    L.append("<details><summary>every run, every host</summary>")
    L.append("")
    L.append("| run | tool | status | last host s | hosts done at (s, h1…) | bytes sent by each host, × blob (veth) | BT payload uploaded by each host, × blob | CPU busy % mean / peak | machine busy CPU-s | own CPU-s |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        if "error" in r:
            L.append("| %d | %s | %s | | | | | | | |" % (r["round"], r["tool"], r["error"].replace("|", "/")[:200]))
            continue
        times = " ".join(f(r["done"].get(h), "%.1f") for h in r["hosts"])
        hup = " ".join(f(r["host_up"].get(h)) for h in r["hosts"])
        st = [r["stats"][h][0] for h in r["hosts"]]
        bt = " ".join(f(x / size if x is not None else None) for x in st) if any(x is not None for x in st) else "–"
        status = r["meta"].get("status", "?") + (" (%s)" % r["meta"]["disturbed"] if "disturbed" in r["meta"] else "")
        if r["discarded"]:
            status = "discarded, run again: " + status
        if not r["complete"]:
            status += "; sha256 %d/%d" % (r["sha_ok"], len(r["hosts"]))
        L.append("| %d | %s | %s | %s | %s | %s | %s | %s / %s | %s | %s |" % (
            r["round"], r["tool"], status, f(r.get("last"), "%.1f"), times, hup, bt,
            f(r.get("cpu_mean"), "%.0f"), f(r.get("cpu_peak"), "%.0f"), f(r.get("cpu_s"), "%.1f"), f(r.get("own_cpu_s"), "%.1f")))
    L.append("")
    L.append("</details>")
    fails = [(r["round"], r["tool"], h, e) for r in runs for h, e in sorted(r.get("fails", {}).items())]
    if fails:
        L.append("")
        L.append("Failures:")
        for rnd, t, h, e in fails[:40]:
            L.append("- round %d, %s, %s: %s" % (rnd, t, h, e.replace("\n", " ")[:400]))
    return "\n".join(L) + "\n"


def hosts_per_rack(cfg):
    h, r = int(cfg["hosts"]), int(cfg["racks"])
    lo, hi = h // r, -(-h // r)
    return str(lo) if lo == hi else "%d–%d" % (lo, hi)


def per_rack_sum(cfg):
    h, r = int(cfg["hosts"]), int(cfg["racks"])
    bps = int(cfg["host_bps"]) * (-(-h // r))
    return "%g Mbit/s" % (bps / 1e6)


def targets(M, lb):
    rs = M["ringswarm"]
    L = ["Against the targets of issue 4 (ringswarm, medians):", "",
         "| target | measured | |", "|---|---|---|"]

    def row(name, value, limit, text):
        L.append("| %s | %s | %s |" % (name, text, "met" if value is not None and value <= limit else ("**missed**" if value is not None else "not measured")))

    row("last host ≤ 1.2 × lower bound", rs["last"] / lb, 1.2, "%.2f ×" % (rs["last"] / lb))
    fan = [(t, M[t]["last"]) for t in ("scp-all", "scp-seq", "rsync-tree") if t in M]
    if fan:
        t, best = min(fan, key=lambda x: x[1])
        row("≤ 0.5 × the best scp/rsync fan-out", rs["last"] / best, 0.5, "%.2f × %s (%.1f s)" % (rs["last"] / best, t, best))
    if "libtorrent" in M:
        row("≤ 0.8 × libtorrent", rs["last"] / M["libtorrent"]["last"], 0.8, "%.2f × (%.1f s)" % (rs["last"] / M["libtorrent"]["last"], M["libtorrent"]["last"]))
    if rs["up_in"]:
        worst_in = max(x for x in rs["up_in"] if x is not None)
        worst_out = max(x for x in rs["up_out"] if x is not None)
        row("bytes into each rack over its uplink ≤ 1.25 × blob", worst_in, 1.25, "worst rack %.2f ×" % worst_in)
        row("bytes out of each rack over its uplink ≤ 1.25 × blob", worst_out, 1.25, "worst rack %.2f ×" % worst_out)
    if rs["origin_up"] is not None:
        row("origin uploads ≤ 1.5 × blob", rs["origin_up"], 1.5, "%.2f ×" % rs["origin_up"])
    L.append("")
    return L


def dc_targets(M, lb):
    """Issue 14's targets for the emulated fleet in datacenters (ringswarm, medians)."""
    rs = M["ringswarm"]
    L = ["Against the targets of issue 14 for the emulated datacenters (ringswarm, medians):", "",
         "| target | measured | |", "|---|---|---|"]
    worst = max((x for x in rs["dc_in"] if x is not None), default=None)
    L.append("| bytes into each dc over its WAN link ≤ 1.1 × blob | %s | %s |" % (
        "worst dc %s × (each: %s)" % (f(worst), " / ".join(f(x) for x in rs["dc_in"])),
        "not measured" if worst is None else ("met" if worst <= 1.1 else "**missed**")))
    L.append("| last host ≤ 1.3 × the lower bound | %.2f × | %s |" % (rs["last"] / lb, "met" if rs["last"] / lb <= 1.3 else "**missed**"))
    L.append("")
    return L


def summary_json(cfg, runs_dir):
    """The shape and the medians per tool (the simulator's comparison reads these)."""
    runs, tools = load_all(cfg, runs_dir)
    M, ok, by = medians(cfg, runs, tools)
    size = int(cfg["size"])
    lb = float(cfg["lower_bound"])
    hosts, racks = int(cfg["hosts"]), int(cfg["racks"])
    shape = {
        "hosts": hosts, "racks": racks, "dcs": dcs(cfg),
        "rack_dc": [int(x) for x in cfg.get("rack_dc", "").split()] or [1] * racks,
        "hosts_per_rack": [sum(1 for i in range(1, hosts + 1) if ((i - 1) * racks) // hosts + 1 == r) for r in range(1, racks + 1)],
        "origin": {"dc": 1, "rack": "core", "rate_bps": int(cfg.get("origin_bps") or cfg["host_bps"])},
        "host_rate_bps": int(cfg["host_bps"]), "rack_uplink_bps": int(cfg["uplink_bps"]),
        "wan_rate_bps": int(cfg.get("wan_bps") or 0), "wan_delay_one_way": cfg.get("wan_delay") or None,
        "tbf_queue": cfg.get("queue"), "blob_bytes": size, "piece_bytes": int(cfg.get("piece_size") or 0),
        "lower_bound_s": lb,
    }
    out = {"command": cfg.get("cmdline"), "date": cfg.get("date"), "commit": cfg.get("commit"), "shape": shape,
           "units": "bytes over links are L2 frame bytes (veth counters) ÷ blob", "tools": {}}
    for t in tools:
        m = M.get(t)
        entry = {"runs": len(by[t]), "runs_ok": len(ok[t])}
        if m:
            entry.update({
                "last_host_s": m["last"], "last_over_bound": m["last"] / lb, "first_host_s": m["first"], "median_host_s": m["median"],
                "rack_in_blobs": m["up_in"], "rack_out_blobs": m["up_out"], "dc_in_blobs": m["dc_in"], "dc_out_blobs": m["dc_out"],
                "origin_sent_blobs": m["origin_up"], "wan_forwarder_cpu_s": m["wan_cpu_s"], "wan_forwarder_drops": m["wan_drops"],
                "last_host_s_each_run": [r["last"] for r in ok[t]],
            })
        out["tools"][t] = entry
    return json.dumps(out, indent=1) + "\n"


def release_section(rs, lb, cfg):
    """The release scenario's own figures and the targets of issue 5 (medians over runs)."""
    def worst(key, fn):
        vals = [fn(r[key].values()) for r in rs if r.get(key)]
        return med(vals) if vals else None
    last = med([r["last"] for r in rs])
    noticed = worst("noticed", max)
    hot = worst("hot_min", min)
    switch = worst("at_switch", min)
    publish = med([r.get("published_s") for r in rs])
    L = ["Release scenario (issue 5; %d run%s, medians): `ringswarm publish` on the origin, then every `ringswarm agent --lock` switches `current`; each host's stand-in service reads a %s hot file and the current release, agent and service in one memory cgroup of %s." % (
        len(rs), "" if len(rs) == 1 else "s", human(int(cfg.get("hot_size", 0))), human(int(cfg.get("service_mem", 0)))), ""]
    L.append("| target | measured | |")
    L.append("|---|---|---|")

    def row(name, ok, text):
        L.append("| %s | %s | %s |" % (name, text, "not measured" if ok is None else ("met" if ok else "**missed**")))

    row("publish to last activation ≤ 1.3 × lower bound", None if last is None else last / lb <= 1.3,
        "%.1f s = %.2f × (publish itself: %s s)" % (last, last / lb, f(publish, "%.1f")) if last else "–")
    row("feed change noticed by every agent within 3 s", None if noticed is None else noticed <= 3.0,
        "slowest agent %s s after the publish" % f(noticed, "%.1f"))
    lowest = min((min(r["hot_min"].values()) for r in rs if r.get("hot_min")), default=None)
    control = min((min(r["control_min"].values()) for r in rs if r.get("control_min")), default=None)
    control_s = med([r.get("control_s") for r in rs])
    dips = sum(r.get("dips", 0) for r in rs)
    control_dips = sum(r.get("control_dips", 0) for r in rs)
    row("service hot set ≥ 99 % resident on every host during the release", None if lowest is None else lowest >= 99.0,
        "lowest sample of all runs %s %%; samples below 99 %%: %d during the releases, %d in the control windows (the services alone for %s s before each publish; lowest %s %%)" % (
            f(lowest, "%.1f"), dips, control_dips, f(control_s, "%.0f"), f(control, "%.1f")))
    row("with --lock the new release is 100 % resident at activation", None if switch is None else switch >= 100.0,
        "least resident host when its service first saw it: %s %%" % f(switch, "%.1f"))
    L.append("")
    mem = [m for r in rs for m in r.get("memcg", [])]
    if mem:
        L.append("Memory cgroups (agent + service of one host, limit %s): peak use %s (largest host), limit hit %d times over all hosts and runs." % (
            human(mem[0][2]), human(max(m[0] for m in mem)), sum(m[1] for m in mem)))
        L.append("")
    if cfg.get("damon", "none") != "none":
        L.append("The kernel runs a DAMON scheme (%s): it pages out physical regions it finds cold, whoever's pages they hold; hot-file dips that show in the control window too are its doing, not the release's." % cfg["damon"])
        L.append("")
    return L


def human(n):
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return ("%d %s" % (n // size, unit)) if n % size == 0 else ("%.1f %s" % (n / size, unit))
    return "%d B" % n


def main(a):
    if a and a[0] == "--one":
        cfg = kv(a[2])
        sys.stderr.write(one_line(load_run(a[1], cfg), cfg) + "\n")
        return 0
    if a and a[0] == "--ok":
        cfg = kv(a[1])
        runs, tools = load_all(cfg, a[2])
        return 0 if runs and all(r.get("complete") for r in runs) else 1
    if a and a[0] == "--json" and len(a) == 3:
        sys.stdout.write(summary_json(kv(a[1]), a[2]))
        return 0
    if len(a) == 2:
        sys.stdout.write(report(kv(a[0]), a[1]))
        return 0
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
