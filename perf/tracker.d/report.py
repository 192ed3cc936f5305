#!/usr/bin/env python3
"""Turns perf/tracker's runs.jsonl into the markdown report (medians, ratios, every run).

  report.py RUNS.jsonl --meta META.json > report.md
"""
import argparse
import json
import statistics
import sys

TRACKER_NAMES = {
    "ringswarm": "ringswarm tracker (topology on)",
    "aquatic": "aquatic_udp 0.9.0 (mio, 1 socket worker)",
}


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, spec):
    return "–" if x is None else format(x, spec)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs")
    ap.add_argument("--meta", required=True)
    a = ap.parse_args()
    runs = [json.loads(l) for l in open(a.runs) if l.strip()]
    meta = json.load(open(a.meta))
    out = []
    p = out.append

    cases = []
    for r in runs:
        if r["case"] not in cases:
            cases.append(r["case"])
    trackers = []
    for r in runs:
        if r["tracker"] not in trackers:
            trackers.append(r["tracker"])

    p("| case | tracker | runs ok | responses/s | CPU µs/response | tracker RSS MiB (end of window) | "
      "peers per announce answer | tracker CPU util | CPU µs ÷ aquatic | responses/s ÷ aquatic |")
    p("|---|---|---|---|---|---|---|---|---|---|")
    summary = {}
    for case in cases:
        for t in trackers:
            rs = [r for r in runs if r["case"] == case and r["tracker"] == t]
            ok = [r for r in rs if r.get("m", {}).get("ok") and not r.get("disturbed")]
            summary[(case, t)] = {
                "n": len(rs), "ok": len(ok),
                "rps": med([r["m"]["responses_per_s"] for r in ok]),
                "us": med([r["m"]["cpu_us_per_response"] for r in ok]),
                "rss": med([r["m"]["rss_kib_end"] / 1024 for r in ok if r["m"].get("rss_kib_end")]),
                "ppa": med([r["m"]["peers_per_announce"] for r in ok]),
                "util": med([r["m"]["tracker_cpu_util"] for r in ok]),
            }
        base = summary.get((case, "aquatic"))
        for t in trackers:
            s = summary[(case, t)]
            r_us = r_rps = None
            if base and base["us"] and s["us"]:
                r_us = s["us"] / base["us"]
            if base and base["rps"] and s["rps"]:
                r_rps = s["rps"] / base["rps"]
            p(f"| {case} | {TRACKER_NAMES.get(t, t)} | {s['ok']}/{s['n']} | {fmt(s['rps'], ',.0f')} | "
              f"{fmt(s['us'], '.2f')} | {fmt(s['rss'], '.0f')} | {fmt(s['ppa'], '.1f')} | "
              f"{fmt(s['util'], '.0%')} | {fmt(r_us, '.2f')} | {fmt(r_rps, '.2f')} |")
    p("")
    p("Medians over rounds (runs disturbed by another compile are left out; see below). CPU µs/response = the tracker process's utime+stime over the "
      "measured window (/proc/PID/stat) ÷ responses the generator received in it.")
    p("")

    p("Swarm shape the tracker held after each run (BEP 15 scrape of every generated info hash; "
      "range over all runs of the case, disturbed ones included), and the peer-list order "
      "seen by probe announces from 127.0.1.5 (rack r04, dc0) on the hottest torrent and on "
      "one of 30–60 peers (ringswarm):")
    p("")
    p("| case | tracker | runs scraped | total peers | torrents with peers | torrents ≥ 100 000 | "
      "five largest (last run) | probe: same rack / same dc / other of returned | "
      "probe lists ordered rack → dc → other |")
    p("|---|---|---|---|---|---|---|---|---|")

    def rng(xs):
        xs = [x for x in xs if x is not None]
        if not xs:
            return "–"
        lo, hi = min(xs), max(xs)
        return f"{lo:,}" if lo == hi else f"{lo:,}–{hi:,}"

    for case in cases:
        for t in trackers:
            rs = [r for r in runs if r["case"] == case and r["tracker"] == t]
            shs = [r.get("shape") or {} for r in rs]
            good = [x for x in shs if "total_peers" in x]
            failed = len(shs) - len(good)
            parts, orders = [], []
            for r in rs:
                for k in ("hottest", "mid"):
                    pr = (r.get("probe") or {}).get(k) or {}
                    if "peers_returned" in pr:
                        orders.append(bool(pr.get("ordered_rack_dc_other")))
            for k in ("hottest", "mid"):
                for r in reversed(rs):
                    pr = (r.get("probe") or {}).get(k) or {}
                    if "peers_returned" in pr:
                        parts.append(f"{k} ({pr['seeders'] + pr['leechers']:,} peers): "
                                     f"{pr['same_rack']} / {pr['same_dc']} / {pr['other']} of "
                                     f"{pr['peers_returned']}")
                        break
            probe = "; ".join(parts) or "–"
            ordered = (f"{sum(orders)} of {len(orders)} probes" if orders else "–")
            top5 = ", ".join(format(x, ",") for x in (good[-1].get("top5_torrent_peers", []) if good else []))
            p(f"| {case} | {t} | {len(good)}{f' ({failed} failed)' if failed else ''} | "
              f"{rng([x['total_peers'] for x in good])} | {rng([x['torrents_with_peers'] for x in good])} | "
              f"{rng([x['torrents_ge_100k'] for x in good])} | {top5 or '–'} | {probe} | {ordered} |")
    p("")

    p("Every run:")
    p("")
    p("| case | tracker | round | window s | warm-up s | responses/s | of which announces/s | requests/s | "
      "error answers/s | CPU µs/resp | tracker util | tracker core: softirq / not the tracker / steal | "
      "generator core busy / steal | RSS MiB start→end | UDP RcvbufErrors in window | notes |")
    p("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        m = r.get("m", {})
        if not m.get("ok"):
            p(f"| {r['case']} | {r['tracker']} | {r['round']} | failed: {m.get('error', '?')} "
              f"| | | | | | | | | | | | {r.get('notes', '')} |")
            continue
        notes = list(r.get("notes", []))
        if r.get("disturbed"):
            d = r["disturbed"] if isinstance(r["disturbed"], str) else "other processes ran"
            notes.append(f"DISTURBED ({d}); not in the medians")
        if m.get("warmup_timed_out"):
            notes.append("warm-up hit its time limit")
        if m.get("generator_error_count"):
            notes.append(f"{m['generator_error_count']} generator errors, e.g. {m['generator_errors'][0]}")
        rss0 = (m.get("rss_kib_start") or 0) / 1024
        rss1 = (m.get("rss_kib_end") or 0) / 1024
        p(f"| {r['case']} | {r['tracker']} | {r['round']} | {m['window_s']:.1f} | {m['warmup_s']:.0f} | "
          f"{m['responses_per_s']:,.0f} | {m['kinds_per_s']['announce']:,.0f} | {m['requests_per_s']:,.0f} | "
          f"{m['kinds_per_s']['error']:,.0f} | "
          f"{fmt(m['cpu_us_per_response'], '.2f')} | {m['tracker_cpu_util']:.0%} | "
          f"{m.get('tracker_core_softirq_util', 0):.0%} / {m['tracker_core_other_util']:.0%} / "
          f"{m.get('tracker_core_steal_util', 0):.0%} | "
          f"{m['gen_core_busy_util']:.0%} (generator {m.get('gen_proc_util', 0):.0%}) / "
          f"{m.get('gen_core_steal_util', 0):.0%} | {rss0:.0f}→{rss1:.0f} | "
          f"{m['udp_deltas'].get('RcvbufErrors', 0):,} | {'; '.join(notes)} |")
    p("")
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
