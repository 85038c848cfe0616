"""`headroom agent --standalone --config FILE.yaml`: the engine without Kubernetes.

The config (standalone_config.py) names cgroups by glob; the globs are
re-scanned every `rescanInterval`, so new cgroups are taken over and vanished
ones released. SIGTERM/SIGINT stop cleanly, restoring every memory.high the
agent changed. The originals are kept in --state-dir (default /var/lib/headroom/
standalone) before the first write, so a restart after a crash restores the owner's
values, not the agent's. A bad config, cgroup root or state dir exits 2 before anything
is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

from headroom import logs
from headroom.agentcli import STANDALONE_STATE_DIR
from headroom.cgroup import CgroupError, CgroupRoot
from headroom.engine import ReclaimEngine, Target, TargetStats
from headroom.engine.metrics import AgentMetrics
from headroom.logs import event
from headroom.standalone.config import Config, ConfigError, load

log = logging.getLogger("headroom.standalone")
EXIT_USAGE = 2


def scan(root: CgroupRoot, cfg: Config, warned: set[str]) -> list[Target]:
    """Current targets: each cgroup matched by the first entry whose glob matches it.
    `warned` remembers cgroups already reported as skipped, to log each once."""
    targets: dict[str, Target] = {}
    for entry in cfg.entries:
        for cg in root.glob(entry.glob):
            key = cg.rel
            if key in targets:
                continue  # an earlier entry wins
            try:
                high, why = entry.resolve_high(cg.read_max() if entry.memory_high_percent
                                               else None)
            except CgroupError:
                continue  # vanished between glob and read
            if why:
                if key not in warned:
                    warned.add(key)
                    event(log, "cgroup_skipped", logging.WARNING, cgroup=key,
                          entry=entry.index, reason=why)
                continue
            targets[key] = Target(key=key, path=cg.path, memory_high=high,
                                  settings=entry.settings,
                                  labels={"cgroup": key, "entry": str(entry.index)},
                                  dry_run=entry.dry_run)
    return list(targets.values())


def usable_state_dir(path: str) -> None:
    """The originals must be kept durably before anything is written: refuse to start
    (ValueError) rather than own memory.high values that a crash would lose."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as e:
        raise ValueError(f"state dir {path}: {e.strerror or e}; pass --state-dir DIR "
                         "(env HEADROOM_STATE_DIR)") from e
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"state dir {path} is not writable; pass --state-dir DIR "
                         "(env HEADROOM_STATE_DIR)")


def summary(snap: Mapping[str, TargetStats]) -> dict[str, Any]:
    stats = list(snap.values())
    return {
        "targets": len(stats),
        "applied": sum(s.applied for s in stats),
        "reclaimed_bytes": sum(s.reclaimed_bytes for s in stats),
        "reclaim_cpu_seconds": round(sum(s.reclaim_cpu_seconds for s in stats), 6),
        "reclaim_writes": sum(s.reclaim_writes for s in stats),
        "eagain_count": sum(s.eagain_count for s in stats),
        "high_events": sum(s.high_events for s in stats),
        "dry_run_bytes": sum(s.dry_run_bytes for s in stats),
    }


def run(args: argparse.Namespace) -> int:
    logs.setup(getattr(args, "log_level", "info"), fmt=getattr(args, "log_format", "json"))
    # First of all: a SIGTERM during start-up must still end in the clean stop (the
    # first scan takes the cgroups over, then everything is restored), not in the
    # default action that leaves an earlier run's values behind.
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        event(log, "signal", signal=signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _run(args, stop)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _run(args: argparse.Namespace, stop: threading.Event) -> int:
    if not args.config:
        print("headroom agent --standalone: --config FILE is required", file=sys.stderr)
        return EXIT_USAGE
    try:
        cfg = load(args.config)
    except ConfigError as e:
        print(f"headroom: invalid config: {e}", file=sys.stderr)
        return EXIT_USAGE
    state_dir = getattr(args, "state_dir", None) or STANDALONE_STATE_DIR
    metrics = AgentMetrics()
    try:
        root = CgroupRoot(args.cgroup_root)
        if not args.dry_run:
            usable_state_dir(state_dir)
        engine = ReclaimEngine(root, cpu_budget_cores=cfg.cpu_budget or args.cpu_budget,
                               dry_run=args.dry_run, state_dir=state_dir,
                               on_state_set_aside=lambda f: metrics.state_files_set_aside
                               .labels(file=f).inc())
    except (CgroupError, ValueError) as e:
        print(f"headroom: {e}", file=sys.stderr)
        return EXIT_USAGE

    event(log, "standalone_start", config=str(cfg.path), cgroup_root=str(root.path),
          state_dir=state_dir,
          entries=len(cfg.entries), dry_run=args.dry_run, cpu_budget_cores=cfg.cpu_budget
          or args.cpu_budget, fake_root=root.fake)
    warned: set[str] = set()
    labels: dict[str, Mapping[str, str]] = {}
    metrics.watch_engine(engine, lambda key: labels.get(key, {}))
    try:
        metrics.serve(args.metrics_port, args.metrics_address)
    except OSError as e:  # a taken port must not stop reclaim: metrics are secondary
        event(log, "metrics_unavailable", logging.WARNING, port=args.metrics_port, error=str(e))
    engine.start()
    try:
        next_summary = time.monotonic() + cfg.summary_interval
        while True:   # one scan even when stopped during start-up: it finds what to restore
            targets = scan(root, cfg, warned)
            labels.update((t.key, t.labels) for t in targets)
            engine.set_targets(targets)
            if stop.is_set():
                break
            if cfg.summary_interval and time.monotonic() >= next_summary:
                event(log, "summary", **summary(engine.snapshot()),
                      capabilities=dataclasses.asdict(engine.capabilities))
                next_summary += cfg.summary_interval
            stop.wait(cfg.rescan_interval)
    finally:
        final = summary(engine.snapshot())
        engine.stop(restore=True)
        event(log, "standalone_stop", **final)
    return 0
