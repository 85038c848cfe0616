#!/usr/bin/env python3
"""Allocate anonymous memory, keep a hot subset busy and leave the rest cold.

    anon_alloc.py --size 512M --hot 64M --duration 10 --cgroup /sys/fs/cgroup/demo

Maps --size bytes of anonymous memory and writes every page (half random, half zero
bytes: compressible about 2:1, like real heaps, so zram has something to do). Then,
for --rounds rounds or --duration seconds, touches one byte of every page of the
first --hot bytes and times each round (a round stalls when hot pages were swapped
out). The cold rest is never touched again, so a reclaimer can push it to swap.
--ready-file is created once the memory is filled; --hold keeps the memory for that
many seconds after the rounds. --grow-to makes the hot part that large once
--grow-file exists (checked every round): the working set grows into memory that
was cold (and maybe swapped out). Prints one JSON line at the end. Stdlib only.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/vm: guest_support
from guest_support import join_cgroup, latency_summary, parse_size

PAGE = mmap.PAGESIZE
CHUNK = 1 << 20


def fill(mem: mmap.mmap, size: int) -> None:
    """Write every page of mem."""
    page = os.urandom(PAGE // 2) + bytes(PAGE // 2)
    chunk = page * (CHUNK // PAGE)
    for off in range(0, size, CHUNK):
        n = min(CHUNK, size - off)
        mem[off:off + n] = chunk[:n]


def touch(mem: mmap.mmap, hot: int) -> int:
    """Read one byte of every hot page (faults swapped-out pages back in)."""
    total = 0
    for off in range(0, hot, PAGE):
        total += mem[off]
    return total


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=parse_size, default=parse_size("512M"))
    p.add_argument("--hot", type=parse_size, default=parse_size("64M"))
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--duration", type=float, default=None,
                   help="touch the hot set for this many seconds instead of --rounds")
    p.add_argument("--interval", type=float, default=0.0, help="sleep between rounds (s)")
    p.add_argument("--cgroup", type=Path, help="move into this cgroup directory first")
    p.add_argument("--ready-file", type=Path, help="created once the memory is filled")
    p.add_argument("--hold", type=float, default=0.0, help="keep the memory this long after")
    p.add_argument("--grow-to", type=parse_size, help="hot size once --grow-file exists")
    p.add_argument("--grow-file", type=Path)
    args = p.parse_args(argv)
    if args.hot > args.size or (args.grow_to or 0) > args.size:
        p.error("--hot and --grow-to must not exceed --size")
    if (args.grow_to is None) != (args.grow_file is None):
        p.error("--grow-to and --grow-file go together")

    if args.cgroup:
        join_cgroup(args.cgroup)
    mem = mmap.mmap(-1, args.size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    t0 = time.monotonic()
    fill(mem, args.size)
    fill_s = time.monotonic() - t0
    if args.ready_file:
        args.ready_file.touch()

    rounds: list[int] = []
    hot, grown_at, grown_round = args.hot, None, None
    start = time.monotonic()
    try:
        while (len(rounds) < args.rounds if args.duration is None
               else time.monotonic() - start < args.duration):
            if grown_at is None and args.grow_file is not None and args.grow_file.exists():
                hot, grown_at, grown_round = args.grow_to, time.monotonic(), len(rounds)
            r0 = time.perf_counter_ns()
            touch(mem, hot)
            rounds.append(time.perf_counter_ns() - r0)
            if args.interval:
                time.sleep(args.interval)
    except KeyboardInterrupt:   # SIGINT: stop early, still report
        pass
    end = time.monotonic()
    if args.hold:
        time.sleep(args.hold)
    summary = {"workload": "anon_alloc", "size": args.size, "hot": args.hot,
               "fill_s": round(fill_s, 3), "duration_s": round(end - start, 3),
               "cgroup": str(args.cgroup or ""), **latency_summary(rounds)}
    if args.grow_to is not None:
        # rounds per second before and after the growth: the hot loop's throughput
        before = grown_round if grown_round is not None else len(rounds)
        summary.update({
            "grow_to": args.grow_to, "rounds_before": before,
            "seconds_before": round((grown_at or end) - start, 3),
            "rounds_after": len(rounds) - before,
            "seconds_after": round(end - grown_at, 3) if grown_at is not None else 0.0})
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
