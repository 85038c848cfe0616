"""Pressure mode on a real kernel, side by side: the kernel alone, senpai.py, and
headroom's Pressure mode, in the QEMU test guest with zram swap; prints Markdown tables.
Not a test (tests/vm/guest/test_pressure_real.py runs one short headroom arm).

    .venv/bin/python bench/bench_pressure.py --senpai PATH/TO/senpai.py
    .venv/bin/python bench/bench_pressure.py --kernels 6.1 --arms kernel,headroom --settle 60

senpai.py is Facebook's public Senpai script (github.com/facebookincubator/senpai); it is
not part of this repository: get it yourself and give its path (it runs unmodified, with
its default settings unless --senpai-args says otherwise). Without --senpai its arm is
left out.

Each arm, in one guest boot, in order: a fresh cgroup without memory.high; a process
(tests/vm/workloads/anon_alloc.py) fills --cold + --hot MiB of anonymous memory and then
touches the first --hot MiB over and over (the hot loop); the reclaimer starts once the
memory is filled. Every --sample seconds this process reads memory.current,
memory.pressure (some total), memory.stat workingset_refault_anon and memory.swap.current.
After --settle seconds the hot part grows to --grow MiB (pages that were cold, probably
swapped out by then) for --grow-seconds more. Reported per arm: usage at the start, at
the end of the settle phase and of the grow phase; saving against the kernel alone; how
fast it got there (seconds to 90% of its own reduction); PSI some as a share of wall
time in each phase; refaulted anon memory (MiB) in each phase; the hot loop's rounds per
second in each phase; the reclaimer's CPU; for headroom its working-set estimate.

Guest time is emulated (TCG): compare arms within one boot, not with other machines.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CHECKOUT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(CHECKOUT / "tests" / "vm"))
import guest_support  # noqa: E402

MiB = 1 << 20
ARMS = ("kernel", "senpai", "headroom")
WORKLOAD = CHECKOUT / "tests" / "vm" / "workloads" / "anon_alloc.py"


@dataclass
class Options:
    cold_mib: int = 256
    hot_mib: int = 32
    grow_mib: int = 96
    settle_s: float = 120.0
    # set: the settle phase ends as soon as usage is at most this (after min_settle_s),
    # settle_s at the latest (the test: emulation speed varies with the machine's load)
    settle_until_mib: float | None = None
    min_settle_s: float = 0.0
    grow_s: float = 60.0
    sample_s: float = 1.0
    target_percent: float = 0.17   # pressureTargetBasisPoints 17: Senpai's 10 ms per 6 s
    senpai: Path | None = None
    senpai_args: list[str] = field(default_factory=list)
    pressure_interval: float | None = None   # Tuning overrides (None: engine defaults)
    probe_fraction: float | None = None
    cgroup_root: Path = guest_support.CGROUP_ROOT


def progress(msg: str) -> None:
    print(f"[bench_pressure {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _stat_key(cg: Path, key: str) -> int:
    for line in (cg / "memory.stat").read_text().splitlines():
        k, _, v = line.partition(" ")
        if k == key:
            return int(v)
    return 0


def _psi_total(cg: Path) -> int:
    first = (cg / "memory.pressure").read_text().splitlines()[0]
    return int(first.rsplit("total=", 1)[1])


def sample(cg: Path, t0: float) -> dict[str, float]:
    return {"t": time.monotonic() - t0, "usage": int((cg / "memory.current").read_text()),
            "psi_us": _psi_total(cg), "refault_anon": _stat_key(cg, "workingset_refault_anon"),
            "swap": int((cg / "memory.swap.current").read_text())}


def _engine(opts: Options, root: Path, cg: Path) -> Any:
    from headroom.cgroup import CgroupRoot
    from headroom.engine import ReclaimEngine, ReclaimSettings, Target, decisions

    over: dict[str, float] = {}
    if opts.pressure_interval is not None:
        over["pressure_interval"] = opts.pressure_interval
    if opts.probe_fraction is not None:
        over["pressure_probe_fraction"] = opts.probe_fraction
    engine = ReclaimEngine(CgroupRoot(root), cpu_budget_cores=0.5,
                           tuning=decisions.Tuning(**over))
    engine.start()
    engine.set_targets([Target("pressure", cg, None, ReclaimSettings(
        mode="Pressure", pressure_target_percent=opts.target_percent))])
    return engine


def _process_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_arm(arm: str, opts: Options, scratch: Path) -> dict[str, Any]:
    """One arm in a fresh cgroup; returns its samples and the workload's JSON."""
    root = opts.cgroup_root
    guest_support.require_cgroup2(root)
    cg = guest_support.create_cgroup(root, f"hr-pressure-{arm}")
    ready, grow = scratch / f"{arm}.ready", scratch / f"{arm}.grow"
    for f in (ready, grow):
        f.unlink(missing_ok=True)
    total = opts.settle_s + opts.grow_s   # the longest the workload may have to run
    proc = subprocess.Popen(
        [sys.executable, str(WORKLOAD), "--size", f"{opts.cold_mib + opts.hot_mib}M",
         "--hot", f"{opts.hot_mib}M", "--grow-to", f"{opts.grow_mib}M", "--grow-file",
         str(grow), "--ready-file", str(ready), "--duration", str(total + 1),
         "--cgroup", str(cg)], stdout=subprocess.PIPE, text=True)
    reclaimer: Any = None
    senpai_rusage = None
    try:
        deadline = time.monotonic() + 600
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{arm}: workload ended or hung before filling its memory")
            time.sleep(0.2)
        t0 = time.monotonic()
        samples = [sample(cg, t0)]
        cpu0, main0 = _process_cpu(), time.thread_time()
        if arm == "headroom":
            reclaimer = _engine(opts, root, cg)
        elif arm == "senpai":
            if opts.senpai is None:
                raise ValueError("the senpai arm needs --senpai PATH")
            reclaimer = subprocess.Popen([sys.executable, str(opts.senpai), str(cg),
                                          *opts.senpai_args], stdout=subprocess.DEVNULL)
        grown, end = False, total
        while (now := time.monotonic() - t0) < end:
            low = (opts.settle_until_mib is not None and now >= opts.min_settle_s
                   and samples[-1]["usage"] <= opts.settle_until_mib * MiB)
            if not grown and (now >= opts.settle_s or low):
                end = now + opts.grow_s
                grow.touch()
                grown = True
                samples.append({**sample(cg, t0), "grow": 1})
                if arm == "headroom":
                    at = reclaimer.snapshot()["pressure"]
                    samples[-1].update(reclaimed=at.reclaimed_bytes,
                                       working_set=getattr(at, "working_set_bytes", None))
            time.sleep(max(0.0, opts.sample_s - (time.monotonic() - t0 - now)))
            samples.append(sample(cg, t0))
        out: dict[str, Any] = {"arm": arm, "samples": samples}
        if arm == "headroom":
            st = reclaimer.snapshot()["pressure"]
            reclaimer.stop(restore=True)
            out["reclaimer_cpu_s"] = (_process_cpu() - cpu0) - (time.thread_time() - main0)
            out["engine"] = {k: v for k, v in asdict(st).items()}
            reclaimer = None
        elif arm == "senpai":
            reclaimer.send_signal(signal.SIGTERM)
            _, _, senpai_rusage = os.wait4(reclaimer.pid, 0)
            reclaimer.returncode = 0
            out["reclaimer_cpu_s"] = senpai_rusage.ru_utime + senpai_rusage.ru_stime
            reclaimer = None
        else:
            out["reclaimer_cpu_s"] = 0.0
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)   # an early end: anon_alloc prints on SIGINT
        stdout, _ = proc.communicate(timeout=300)
        lines = stdout.strip().splitlines()
        out["workload"] = json.loads(lines[-1]) if lines else None
        return out
    finally:
        if reclaimer is not None:
            if arm == "headroom":
                reclaimer.stop(restore=True)
            else:
                reclaimer.kill()
                reclaimer.wait()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        guest_support.remove_cgroup(cg)


def _phase(samples: list[dict[str, float]], grow_t: float) -> tuple[list[dict[str, float]],
                                                                    list[dict[str, float]]]:
    settle = [s for s in samples if s["t"] <= grow_t]
    grow = [s for s in samples if s["t"] >= grow_t]
    return settle, grow


def summarize(run: dict[str, Any], opts: Options) -> dict[str, Any]:
    samples = run["samples"]
    grow_t = next((s["t"] for s in samples if s.get("grow")), samples[-1]["t"])
    settle, grow = _phase(samples, grow_t)

    def share(ph: list[dict[str, float]]) -> float:
        dt = ph[-1]["t"] - ph[0]["t"]
        return (ph[-1]["psi_us"] - ph[0]["psi_us"]) / 1e6 / dt * 100 if dt > 0 else 0.0

    def refault_mib(ph: list[dict[str, float]]) -> float:
        return (ph[-1]["refault_anon"] - ph[0]["refault_anon"]) * 4096 / MiB

    start, end = settle[0]["usage"], settle[-1]["usage"]
    ninety = start - 0.9 * (start - end)
    t90 = next((s["t"] for s in settle if s["usage"] <= ninety), None) if end < start else None
    grow_target = opts.grow_mib * MiB
    t_back = next((s["t"] - grow_t for s in grow if s["usage"] >= grow_target), None)
    out = {"arm": run["arm"], "usage_start_mib": start / MiB, "usage_settled_mib": end / MiB,
           "usage_min_mib": min(s["usage"] for s in settle) / MiB,
           "usage_grown_mib": grow[-1]["usage"] / MiB, "t90_s": t90,
           "grow_reached_s": t_back,
           "psi_settle_pct": share(settle), "psi_grow_pct": share(grow),
           "psi_total_ms": (samples[-1]["psi_us"] - samples[0]["psi_us"]) / 1000,
           "refault_settle_mib": refault_mib(settle), "refault_grow_mib": refault_mib(grow),
           "swap_settled_mib": settle[-1]["swap"] / MiB,
           "reclaimer_cpu_s": run.get("reclaimer_cpu_s", 0.0)}
    w = run.get("workload") or {}
    if w.get("seconds_before"):
        out["rounds_settle_per_s"] = w["rounds_before"] / w["seconds_before"]
    if w.get("seconds_after"):
        out["rounds_grow_per_s"] = w["rounds_after"] / w["seconds_after"]
    eng = run.get("engine")
    if eng:
        out["reclaimed_mib"] = eng["reclaimed_bytes"] / MiB
        at_grow = next(s for s in samples if s.get("grow"))
        out["reclaimed_grow_mib"] = (eng["reclaimed_bytes"] - at_grow["reclaimed"]) / MiB
        out["working_set_settled_mib"] = (None if at_grow.get("working_set") is None
                                          else at_grow["working_set"] / MiB)
        out["reclaim_writes"] = eng["reclaim_writes"]
        out["reclaim_cpu_s"] = eng["reclaim_cpu_seconds"]
        ws = eng.get("working_set_bytes")
        out["working_set_mib"] = None if ws is None else ws / MiB
    return out


def _fmt(v: Any, spec: str) -> str:
    return "–" if v is None else spec.format(v)


def table(summaries: list[dict[str, Any]]) -> str:
    kernel = next((s for s in summaries if s["arm"] == "kernel"), None)
    cols = [("usage at start MiB", "usage_start_mib", "{:.0f}"),
            ("after settle MiB", "usage_settled_mib", "{:.0f}"),
            ("saved vs kernel", None, ""), ("to 90% of its reduction s", "t90_s", "{:.0f}"),
            ("PSI some settle %", "psi_settle_pct", "{:.3f}"),
            ("refaults settle MiB", "refault_settle_mib", "{:.1f}"),
            ("hot loop rounds/s settle", "rounds_settle_per_s", "{:.2f}"),
            ("after growth MiB", "usage_grown_mib", "{:.0f}"),
            ("grown hot set reached after s", "grow_reached_s", "{:.0f}"),
            ("PSI some growth %", "psi_grow_pct", "{:.3f}"),
            ("refaults growth MiB", "refault_grow_mib", "{:.1f}"),
            ("hot loop rounds/s growth", "rounds_grow_per_s", "{:.2f}"),
            ("reclaimer CPU s", "reclaimer_cpu_s", "{:.2f}"),
            ("working-set estimate MiB", "working_set_mib", "{:.0f}")]
    lines = ["| arm | " + " | ".join(c[0] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for s in summaries:
        cells = []
        for _, key, spec in cols:
            if key is None:
                saved = (None if kernel is None or s is kernel else
                         (1 - s["usage_settled_mib"] / kernel["usage_settled_mib"]) * 100)
                cells.append(_fmt(saved, "{:.0f}%"))
            else:
                cells.append(_fmt(s.get(key), spec))
        lines.append(f"| {s['arm']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def in_guest(a: argparse.Namespace, opts: Options) -> int:
    if os.environ.get("HEADROOM_IN_GUEST") != "1":
        print("bench_pressure --in-guest makes cgroups and turns swap on: only in the QEMU "
              "guest", file=sys.stderr)
        return 2
    scratch = Path(guest_support.SCRATCH)
    doc: dict[str, Any] = {"kernel": platform.release(), "options": {
        k: str(v) for k, v in asdict(opts).items()}, "runs": []}
    guest_support.enable_zram_swap(1 << 30)
    try:
        for arm in a.arms:
            progress(f"arm {arm}")
            run = run_arm(arm, opts, scratch)
            doc["runs"].append(run)
            a.out.write_text(json.dumps(doc))
    finally:
        guest_support.disable_zram_swap()
    return 0


def on_host(a: argparse.Namespace, opts: Options) -> int:
    import qemu_guest

    argv = ["--arms", ",".join(a.arms), "--cold", str(a.cold), "--hot", str(a.hot),
            "--grow", str(a.grow), "--settle", str(a.settle), "--grow-seconds",
            str(a.grow_seconds), "--target-percent", str(a.target_percent)]
    if opts.senpai:
        argv += ["--senpai", str(opts.senpai), f"--senpai-args={a.senpai_args}"]
    for flag, v in (("--pressure-interval", a.pressure_interval),
                    ("--probe-fraction", a.probe_fraction)):
        if v is not None:
            argv += [flag, str(v)]
    docs = []
    for kernel in a.kernels:
        with qemu_guest.shared_tmpdir() as tmp:
            out = tmp / "result.json"
            result = qemu_guest.run(kernel, [sys.executable, str(Path(__file__).resolve()),
                                             "--in-guest", "--out", str(out), *argv],
                                    timeout=a.timeout, memory_mb=2048, stream=True)
            if result.rc != 0:
                print(f"bench_pressure: the guest run on {kernel} failed (exit {result.rc})",
                      file=sys.stderr)
            if out.exists():
                docs.append(json.loads(out.read_text()))
    if a.save:
        a.save.write_text(json.dumps(docs, indent=1))
    for doc in docs:
        print(report(doc, opts))
    return 0


def report(doc: dict[str, Any], opts: Options) -> str:
    return (f"Kernel {doc['kernel']}:\n\n"
            + table([summarize(r, opts) for r in doc["runs"]]) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kernels", type=lambda s: s.split(","), default=["6.1", "6.12"])
    p.add_argument("--arms", type=lambda s: s.split(","), default=None)
    p.add_argument("--senpai", type=Path, help="path of senpai.py (not in this repository)")
    p.add_argument("--senpai-args", default="", help="extra arguments for senpai.py")
    p.add_argument("--cold", type=int, default=256, help="MiB")
    p.add_argument("--hot", type=int, default=32, help="MiB")
    p.add_argument("--grow", type=int, default=96, help="MiB of hot set after the growth")
    p.add_argument("--settle", type=float, default=120.0, help="seconds")
    p.add_argument("--grow-seconds", type=float, default=60.0)
    p.add_argument("--target-percent", type=float, default=0.17)
    p.add_argument("--pressure-interval", type=float, help="engine Tuning override")
    p.add_argument("--probe-fraction", type=float, help="engine Tuning override")
    p.add_argument("--timeout", type=float, default=3600, help="per guest boot, seconds")
    p.add_argument("--save", type=Path, help="host: also write the raw results (JSON) here")
    p.add_argument("--load", type=Path, help="host: only print the tables of a --save file")
    p.add_argument("--in-guest", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.arms is None:
        a.arms = [x for x in ARMS if x != "senpai" or a.senpai]
    if "senpai" in a.arms and a.senpai is None:
        p.error("the senpai arm needs --senpai PATH")
    opts = Options(cold_mib=a.cold, hot_mib=a.hot, grow_mib=a.grow, settle_s=a.settle,
                   grow_s=a.grow_seconds, target_percent=a.target_percent,
                   senpai=a.senpai.resolve() if a.senpai else None,
                   senpai_args=a.senpai_args.split(), pressure_interval=a.pressure_interval,
                   probe_fraction=a.probe_fraction)
    if a.load:
        for doc in json.loads(a.load.read_text()):
            print(report(doc, opts))
        return 0
    if a.in_guest:
        return in_guest(a, opts)
    return on_host(a, opts)


if __name__ == "__main__":
    sys.exit(main())
