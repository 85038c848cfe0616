"""Prometheus metrics and health checks of the operator (`headroom operator
--metrics-port`, `--health-port`).

    metrics = OperatorMetrics()
    reconciler.metrics = metrics           # rounds and writes are counted as they happen
    metrics.watch(state)                   # cache sizes and plan count read at scrape time

Series: `headroom_operator_round_duration_seconds` (histogram),
`headroom_operator_rounds_total{result}`, `headroom_operator_writes_total{kind,result}`,
`headroom_operator_cache_objects{kind}`, `headroom_operator_caches_synced`,
`headroom_operator_policy_reclaimed_bytes{kind,namespace,policy}`,
`headroom_operator_last_round_timestamp_seconds`, `headroom_build_info`, and the
process collector's `process_*`. No `*_created` series (prometheus_client's are turned
off process-wide).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import prometheus_client
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from headroom import __version__, health
from headroom.controller import status as status_mod

prometheus_client.disable_created_metrics()

WRITE_KINDS = ("plan", "status", "event")
WRITE_RESULTS = ("ok", "conflict", "error")
# A round longer than this is stuck (the slowest measured round at 10k pods is ~1 s).
ROUND_STALE_SECONDS = 300.0


class _CacheCollector(Collector):
    def __init__(self, owner: OperatorMetrics) -> None:
        self.owner = owner

    def collect(self) -> Iterator[Metric]:
        state = self.owner.state
        informers = getattr(state, "informers", None)
        sizes = GaugeMetricFamily("headroom_operator_cache_objects",
                                  "Objects in the operator's caches, by kind.", labels=["kind"])
        synced = GaugeMetricFamily("headroom_operator_caches_synced",
                                   "1 once every cache has been listed once.")
        if informers is not None:
            for kind, cache in sorted(informers.caches.items()):
                sizes.add_metric([kind], float(len(cache)))
            synced.add_metric([], 1.0 if all(i.synced for i in informers.informers) else 0.0)
        else:
            synced.add_metric([], 0.0)
        yield sizes
        yield synced
        yield self._reclaimed(informers)

    @staticmethod
    def _reclaimed(informers: Any) -> Metric:
        """Bytes reclaimed per policy, summed from the plans' status at scrape time: the
        counter the policy status no longer carries (it would rewrite every policy's
        status each time it moves). A gauge: pods that leave take their bytes along."""
        family = GaugeMetricFamily(
            "headroom_operator_policy_reclaimed_bytes", "Bytes the agents report reclaimed "
            "from the pods a policy currently has in plans, by policy.",
            labels=["kind", "namespace", "policy"])
        plans = informers.caches.get("plans") if informers is not None else None
        if plans is not None:
            for key, total in sorted(status_mod.reclaimed_by_policy(plans.values()).items()):
                ref = json.loads(key)
                if isinstance(ref, dict):
                    family.add_metric([str(ref.get("kind", "")), str(ref.get("namespace", "")),
                                       str(ref.get("name", ""))], float(total))
        return family


def build_info(registry: CollectorRegistry, component: str) -> Gauge:
    g = Gauge("headroom_build_info", "headroom version of this process; always 1.",
              ["version", "component"], registry=registry)
    g.labels(version=__version__, component=component).set(1)
    return g


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.state: Any = None
        ProcessCollector(registry=self.registry)
        build_info(self.registry, "operator")
        self.round_seconds = Histogram(
            "headroom_operator_round_duration_seconds",
            "Time of one reconcile round: resolve all policies and write what changed.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry)
        self.rounds = Counter("headroom_operator_rounds", "Reconcile rounds, by result.",
                              ["result"], registry=self.registry)
        self.writes = Counter("headroom_operator_writes",
                              "Writes of plans, policy statuses and Events, by result.",
                              ["kind", "result"], registry=self.registry)
        self.last_round = Gauge("headroom_operator_last_round_timestamp_seconds",
                                "Unix time the last reconcile round ended.",
                                registry=self.registry)
        for result in ("ok", "error"):
            self.rounds.labels(result=result)
        for kind in WRITE_KINDS:
            for result in WRITE_RESULTS:
                self.writes.labels(kind=kind, result=result)
        self.registry.register(_CacheCollector(self))

    def watch(self, state: Any) -> None:
        """The OperatorState whose caches are reported."""
        self.state = state

    def round_done(self, seconds: float, ok: bool) -> None:
        self.round_seconds.observe(seconds)
        self.rounds.labels(result="ok" if ok else "error").inc()
        self.last_round.set(time.time())

    def text(self) -> str:
        return generate_latest(self.registry).decode()

    def route(self) -> health.Route:
        def answer() -> tuple[int, bytes, str]:
            return 200, generate_latest(self.registry), prometheus_client.CONTENT_TYPE_LATEST
        return answer


def operator_checks(state: Any, stale: float = ROUND_STALE_SECONDS,
                    clock: Any = time.monotonic) -> health.Checks:
    """/healthz: the reconciler task runs and no round is stuck. /readyz: that, the
    caches have been listed and the first round is done."""
    def reconciler() -> tuple[bool, str]:
        task, rec = state.task, state.reconciler
        if task is None or rec is None:
            return True, "starting"
        if task.done():
            return False, "the reconciler task ended"
        started = getattr(rec, "round_started", None)
        if started is not None and clock() - started > stale:
            return False, f"round {rec.rounds} running for {clock() - started:.0f} s"
        return True, f"{rec.rounds} rounds"

    def caches() -> tuple[bool, str]:
        informers = state.informers
        if informers is None:
            return False, "not started"
        pending = [i.kind.name for i in informers.informers if not i.synced]
        return not pending, "listed" if not pending else f"listing {', '.join(pending)}"

    def first_round() -> tuple[bool, str]:
        rec = state.reconciler
        done = rec is not None and getattr(rec, "rounds_done", 0) > 0
        return done, "done" if done else "not yet"

    checks = health.Checks()
    checks.add("healthz", "reconciler", reconciler)
    checks.add("readyz", "reconciler", reconciler)
    checks.add("readyz", "caches", caches)
    checks.add("readyz", "first round", first_round)
    return checks
