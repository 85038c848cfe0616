#!/usr/bin/env python3
"""Stream a file through the page cache with fixed-size reads and report latencies.

    pagecache_stream.py --size 1G --block 1M --passes 2 --cgroup /sys/fs/cgroup/demo
    pagecache_stream.py --write --fsync-every 16M --size 640M --cgroup ...

With --write it writes the file instead (dirty page cache, fsync after every
--fsync-every bytes and at the end), timing every write.

Creates the file (on the guest's ext4 scratch disk by default) if it is missing or
has another size, drops its pages from the cache (posix_fadvise DONTNEED, this file
only) and reads it sequentially, timing every read. Prints one JSON line at the end:
ops, bytes, p50/p99/max/mean latency in microseconds, duration. With --cgroup the
process first moves itself into that cgroup (checked to be a real cgroup2 directory),
so both the creation and the reads are charged there; run once with --prepare-only
outside the cgroup to keep the creation out of a measurement. Stdlib only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/vm: guest_support
from guest_support import SCRATCH, join_cgroup, latency_summary, parse_size


def ensure_file(path: Path, size: int, block: int) -> bool:
    """Create path with `size` bytes unless it already has that size; True if created."""
    if path.exists() and path.stat().st_size == size:
        return False
    # Half random, half zeros: realistic for compression, cheap to produce.
    chunk = (os.urandom(block // 2) + bytes(block - block // 2))
    with path.open("wb") as fh:
        written = 0
        while written < size:
            n = min(block, size - written)
            fh.write(chunk[:n])
            written += n
        fh.flush()
        os.fsync(fh.fileno())
    return True


def stream(path: Path, block: int, passes: int, duration: float | None,
           until: Path | None = None, pass_ends: list[float] | None = None
           ) -> tuple[list[int], int, float]:
    """Read path sequentially `passes` times (or until `duration` seconds have passed,
    or, with `until`, until that file exists); returns per-read latencies in ns, bytes
    read and the elapsed seconds. `pass_ends` gets CLOCK_MONOTONIC at each pass's end."""
    buf = bytearray(block)
    latencies: list[int] = []
    total = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        start = time.monotonic()
        done = 0
        def more() -> bool:
            if until is not None:
                return not until.exists()
            return (done < passes) if duration is None else time.monotonic() - start < duration

        while more():
            offset = 0
            while True:
                t0 = time.perf_counter_ns()
                n = os.preadv(fd, [buf], offset)
                latencies.append(time.perf_counter_ns() - t0)
                if n == 0:
                    latencies.pop()  # the end-of-file read is not an operation
                    break
                offset += n
                total += n
            done += 1
            if pass_ends is not None:
                pass_ends.append(time.monotonic())
        return latencies, total, time.monotonic() - start
    finally:
        os.close(fd)


def write_stream(path: Path, size: int, block: int, fsync_every: int
                 ) -> tuple[list[int], int, float]:
    """Write `size` bytes to path (truncated first), fsync after every `fsync_every`
    bytes and at the end; per-write latencies in ns (an fsync counts in the write that
    triggers it), bytes written and the elapsed seconds."""
    chunk = os.urandom(block // 2) + bytes(block - block // 2)
    latencies: list[int] = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        start, written, synced = time.monotonic(), 0, 0
        while written < size:
            t0 = time.perf_counter_ns()
            written += os.write(fd, chunk[:min(block, size - written)])
            if written - synced >= fsync_every or written >= size:
                os.fsync(fd)
                synced = written
            latencies.append(time.perf_counter_ns() - t0)
        return latencies, written, time.monotonic() - start
    finally:
        os.close(fd)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--file", type=Path, default=SCRATCH / "pagecache_stream.dat")
    p.add_argument("--size", type=parse_size, default=parse_size("1G"))
    p.add_argument("--block", type=parse_size, default=parse_size("1M"))
    p.add_argument("--passes", type=int, default=1)
    p.add_argument("--duration", type=float, default=None,
                   help="stream for this many seconds instead of --passes")
    p.add_argument("--until-file", type=Path,
                   help="re-read the file until this file exists (instead of --passes)")
    p.add_argument("--ready-file", type=Path,
                   help="create this file after the first pass (a warm cache)")
    p.add_argument("--cgroup", type=Path, help="move into this cgroup directory first")
    p.add_argument("--prepare-only", action="store_true", help="create the file and exit")
    p.add_argument("--keep-cache", action="store_true",
                   help="do not drop the file's cached pages before streaming")
    p.add_argument("--latencies", type=Path, help="also write every latency (us), one a line")
    p.add_argument("--write", action="store_true", help="write the file instead of reading it")
    p.add_argument("--fsync-every", type=parse_size, default=parse_size("16M"))
    args = p.parse_args(argv)

    if args.cgroup:
        join_cgroup(args.cgroup)
    if args.write:
        latencies, total, elapsed = write_stream(args.file, args.size, args.block,
                                                 args.fsync_every)
        print(json.dumps({"workload": "pagecache_write", "file": str(args.file),
                          "bytes": total, "duration_s": round(elapsed, 3),
                          **latency_summary(latencies)}))
        return 0
    created = ensure_file(args.file, args.size, args.block)
    if args.prepare_only:
        print(json.dumps({"workload": "pagecache_stream", "file": str(args.file),
                          "size": args.size, "created": created}))
        return 0
    if not args.keep_cache:
        fd = os.open(args.file, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    pass_ends: list[float] = []
    if args.ready_file:
        latencies, total, elapsed = stream(args.file, args.block, 1, None, None, pass_ends)
        args.ready_file.touch()
    else:
        latencies, total, elapsed = [], 0, 0.0
    more, n, t = stream(args.file, args.block, args.passes, args.duration, args.until_file,
                        pass_ends)
    latencies, total, elapsed = latencies + more, total + n, elapsed + t
    if args.latencies:
        args.latencies.write_text("".join(f"{ns / 1000:.1f}\n" for ns in latencies))
    summary = {"workload": "pagecache_stream", "file": str(args.file), "size": args.size,
               "block": args.block, "bytes": total, "duration_s": round(elapsed, 3),
               "cgroup": str(args.cgroup or ""), "pass_ends": [round(x, 4) for x in pass_ends],
               **latency_summary(latencies)}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
