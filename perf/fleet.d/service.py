#!/usr/bin/env python3
"""A stand-in for the service on a fleet host, for perf/fleet's release scenario.

    service.py --hot FILE --current DIR --blob NAME --out FILE [--duration SECS]

Twice a second it touches every page of its hot file (one byte a page, through a
read-only mapping: what a service does to its hot set, and cheap) and reads a slice of it
with read(2), round and round; and it reads a slice of the current release
(DIR/NAME, through the `current` link the agent flips), and records what a service would
feel: the hot file's residency before each turn, and, at the moment it first sees a new
release behind `current`, how much of that release is already in memory. Residency comes
from mincore(2) over a read-only mapping (ctypes; the mapping is never touched, so the
measurement does not fault pages in). Lines of --out:

    T hot PCT             the hot file's resident share before the turn's read
    T switch TARGET PCT   a new release seen behind `current`, its resident share then

It prints `ready` once the hot file has been read once. Stops after --duration or on TERM.
"""

import argparse
import ctypes
import mmap
import os
import signal
import sys
import time

PAGE = os.sysconf("SC_PAGE_SIZE")
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
PROT_READ, MAP_SHARED = 1, 1
MAP_FAILED = ctypes.c_void_p(-1).value


def resident_pct(path):
    """Share of the file's pages in memory (mincore), or None if it cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return 100.0
        addr = libc.mmap(None, size, PROT_READ, MAP_SHARED, fd, 0)
        if addr in (None, MAP_FAILED):
            return None
        try:
            pages = (size + PAGE - 1) // PAGE
            vec = (ctypes.c_ubyte * pages)()
            if libc.mincore(addr, size, vec) != 0:
                return None
            # Linux sets bit 0 only (the others are reserved, 0).
            return 100.0 * (pages - bytes(vec).count(0)) / pages
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)


def touch_pages(path):
    """Reads one byte of every page of the file through a read-only mapping."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return
            with mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ) as m:
                m[::PAGE]  # one byte a page, copied in C
    except (OSError, ValueError):
        pass


def read_range(path, offset, length, chunk=1 << 20):
    """Reads [offset, offset+length) of path (wrapping at the end); returns the next offset."""
    try:
        with open(path, "rb", buffering=0) as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return 0
            offset %= size
            left = length
            while left > 0:
                f.seek(offset)
                got = f.read(min(chunk, left, size - offset))
                if not got:
                    break
                left -= len(got)
                offset = (offset + len(got)) % size
            return offset
    except OSError:
        return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hot", required=True)
    ap.add_argument("--current", required=True, help="the agent's NAME/current link")
    ap.add_argument("--blob", required=True, help="the file inside a release")
    ap.add_argument("--out", required=True)
    ap.add_argument("--duration", type=float, default=600)
    ap.add_argument("--slice", type=int, default=4 << 20, help="bytes of the release read per turn")
    ap.add_argument("--hot-slice", type=int, default=4 << 20, help="bytes of the hot file read per turn")
    ap.add_argument("--turn", type=float, default=0.5, help="seconds between turns")
    a = ap.parse_args()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    hot_size = os.path.getsize(a.hot)
    read_range(a.hot, 0, hot_size)
    print("ready", flush=True)
    end = time.time() + a.duration
    seen, offset, hot_offset = None, 0, 0
    with open(a.out, "a", buffering=1) as out:
        while not stop and time.time() < end:
            pct = resident_pct(a.hot)
            out.write("%.6f hot %.3f\n" % (time.time(), pct if pct is not None else -1))
            touch_pages(a.hot)
            hot_offset = read_range(a.hot, hot_offset, a.hot_slice)
            try:
                target = os.readlink(a.current)
            except OSError:
                target = None
            if target is not None and target != seen:
                seen = target
                pct = resident_pct(os.path.join(a.current, a.blob))
                out.write("%.6f switch %s %.3f\n" % (time.time(), target, pct if pct is not None else -1))
                offset = 0
            if seen is not None:
                offset = read_range(os.path.join(a.current, a.blob), offset, a.slice)
            time.sleep(a.turn)
    return 0


if __name__ == "__main__":
    sys.exit(main())
