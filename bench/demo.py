"""The demo (`./scripts/demo [--kernel 6.1|6.12]`), host side.

Builds the guest kernel if needed, boots it once and runs bench/pagecache_compare.py
inside (the kernel alone, then headroom's ReclaimEngine, same workload, same
memory.high), relaying the guest's progress lines; then prints the side-by-side table
and writes out/demo.png (bench/compare_report.py). Every step is announced with the
seconds elapsed since the demo started.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent
sys.path.insert(0, str(CHECKOUT / "tests" / "vm"))
sys.path.insert(0, str(HERE))
import compare_report  # noqa: E402
import qemu_guest  # noqa: E402

T0 = time.monotonic()


def say(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f} s] demo: {msg}", file=sys.stderr, flush=True)


@contextmanager
def ticking(what: str, every: float = 10.0) -> Iterator[None]:
    """Announce `what`, then a line every `every` seconds until it is done."""
    say(what)
    done = threading.Event()

    def tick() -> None:
        start = time.monotonic()
        while not done.wait(every):
            say(f"... still {what[0].lower() + what[1:]} ({time.monotonic() - start:.0f} s)")

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--kernel", choices=sorted(qemu_guest.KERNELS), default="6.1")
    p.add_argument("--file-mib", type=int, default=1024, help="file streamed (default 1024)")
    p.add_argument("--passes", type=int, default=2, help="reads of the file per arm")
    p.add_argument("--high-mib", type=int, default=256, help="memory.high (default 256)")
    p.add_argument("--hot-mib", type=int, default=160,
                   help="second workload: a hot file this large re-read beside a stream of "
                        "5 x memory.high (0: only the stream)")
    p.add_argument("--png", type=Path, default=CHECKOUT / "out" / "demo.png")
    p.add_argument("--timeout", type=float, default=1800, help="guest timeout, seconds")
    a = p.parse_args(argv)

    try:
        with ticking(f"Preparing the Debian {a.kernel} guest kernel (downloaded and "
                     "unpacked into .cache/vm on first use)"):
            k = qemu_guest.ensure_kernel(a.kernel)
    except qemu_guest.KernelUnavailable as e:
        say(f"cannot get the guest kernel: {e}")
        return 1
    say(f"kernel ready: {k.package} ({k.release})")
    with qemu_guest.shared_tmpdir() as shared:
        results, hot_results = shared / "results.json", shared / "hotset.json"
        compare = [str(CHECKOUT / ".venv" / "bin" / "python"), str(HERE / "pagecache_compare.py"),
                   "--high-mib", str(a.high_mib)]
        steps = [[*compare, "--out", str(results), "--file-mib", str(a.file_mib),
                  "--passes", str(a.passes)]]
        if a.hot_mib:
            steps.append([*compare, "--out", str(hot_results), "--file-mib",
                          str(5 * a.high_mib), "--passes", "1", "--hot-mib", str(a.hot_mib)])
        argv_guest = ["sh", "-c", " && ".join(shlex.join(step) for step in steps)]
        say(f"booting the guest (QEMU, software emulation: expect a few minutes); "
            f"inside it: {a.passes} x {a.file_mib} MiB of page cache through a cgroup at "
            f"memory.high {a.high_mib} MiB, first with the kernel alone, then with "
            "headroom's reclaim engine"
            + (f"; then the same with a hot {a.hot_mib} MiB file re-read beside a stream of "
               f"{5 * a.high_mib} MiB" if a.hot_mib else ""))
        try:
            result = qemu_guest.run(a.kernel, argv_guest, a.timeout, stream=True)
        except qemu_guest.GuestError as e:
            say(f"the guest failed: {e}")
            return 1
        if result.rc != 0 or not results.exists():
            say(f"the guest run failed (exit {result.rc})")
            return 1
        doc = json.loads(results.read_text())
        hot_doc = json.loads(hot_results.read_text()) if a.hot_mib else None
    say(f"guest done after {result.duration:.0f} s (boot {result.boot_seconds or 0:.0f} s)")
    print()
    print(compare_report.table(doc))
    print()
    if hot_doc is not None:
        print(compare_report.table(hot_doc))
        print()
    compare_report.plot(doc, a.png)
    say(f"wrote {a.png}: memory.current over time for both runs, with the memory.high line")
    return 0


if __name__ == "__main__":
    sys.exit(main())
