"""Prometheus metrics of the agent, for both standalone and cluster mode.

Per-target series come from the engine's snapshot at scrape time (a custom collector),
so they need no bookkeeping and vanish when a target leaves. Every per-target series has
the labels ``namespace``, ``pod`` (empty in standalone mode unless the config names them)
and ``uid`` (the engine key: the pod UID in cluster mode, as kube-state-metrics and
cAdvisor name it, so the series join; the cgroup path relative to the root in standalone
mode). PSI "some" is ``..._waiting_seconds_total`` (cAdvisor's name for "some"; its
"stalled" is "full"). memory.reclaim writes are one counter with a ``result`` label
(``ok``, ``eagain``, ``error``), and check lateness is also a histogram over all checks
(``headroom_engine_check_lateness_seconds``).

    metrics = AgentMetrics()
    metrics.watch_engine(engine, labels_of=lambda key: targets[key].labels)
    metrics.serve(9808, "0.0.0.0")

The list of metrics and their meaning is in docs/agent.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from headroom import __version__

TARGET_LABELS = ("namespace", "pod", "uid")
WRITE_RESULTS = ("ok", "eagain", "error")

# `*_created` series double the series count for nothing a dashboard uses.
prometheus_client.disable_created_metrics()


@dataclass(frozen=True)
class TargetSample:
    key: str
    labels: Mapping[str, str]
    stats: Any                     # engine.TargetStats


# (metric name, help, TargetStats attribute, counter?)
_PER_TARGET: tuple[tuple[str, str, str, bool], ...] = (
    ("headroom_reclaimed_bytes", "Bytes reclaimed from the target by memory.reclaim.",
     "reclaimed_bytes", True),
    ("headroom_reclaim_cpu_seconds", "Agent CPU time spent reclaiming for the target.",
     "reclaim_cpu_seconds", True),
    ("headroom_memory_high_bytes", "memory.high in effect on the target, bytes.",
     "memory_high", False),
    ("headroom_memory_usage_bytes", "memory.current of the target, bytes.", "usage_bytes", False),
    ("headroom_memory_high_events", "memory.events high count since the agent took the "
     "target over: times it went over memory.high.", "high_events", True),
    ("headroom_memory_pressure_waiting_seconds", "Memory PSI 'some' time of the target since "
     "the agent took it over: time some of its tasks waited on memory (cAdvisor's "
     "container_pressure_memory_waiting_seconds_total).", "psi_some_seconds", True),
    ("headroom_working_set_bytes", "Pressure mode's working-set estimate of the target: its "
     "lowest usage over the last minute of probing at the pressure target, bytes.",
     "working_set_bytes", False),
    ("headroom_engine_lateness_seconds", "How late the target's last check ran against its "
     "schedule.", "lateness_seconds", False),
    ("headroom_memory_high_drift_corrections", "Times memory.high was found changed by "
     "someone else and put back.", "drift_corrections", True),
    ("headroom_livelock_relief_raises", "Times the livelock guard raised memory.high above "
     "the plan's value because reclaim could not defend it (reason Unreclaimable).",
     "relief_raises", True),
    ("headroom_memory_high_relieved_bytes", "memory.high written by the livelock guard above "
     "the plan's value; absent while not relieved.", "relieved_high", False),
)


def _label_values(sample: TargetSample) -> list[str]:
    return [sample.labels.get("namespace", ""), sample.labels.get("pod", ""), sample.key]


class _TargetCollector(Collector):
    def __init__(self, owner: AgentMetrics) -> None:
        self.owner = owner

    def collect(self) -> Iterator[Metric]:
        samples = list(self.owner.samples())
        for name, doc, attr, is_counter in _PER_TARGET:
            family: CounterMetricFamily | GaugeMetricFamily = (
                CounterMetricFamily(name, doc, labels=TARGET_LABELS) if is_counter
                else GaugeMetricFamily(name, doc, labels=TARGET_LABELS))
            for s in samples:
                value = getattr(s.stats, attr, None)
                if value is not None:
                    family.add_metric(_label_values(s), float(value))
            yield family
        writes = CounterMetricFamily(
            "headroom_reclaim_writes", "Writes to the target's memory.reclaim, by result: ok, "
            "eagain (the kernel reclaimed less than asked: partial success, the agent backs "
            "off), error.", labels=(*TARGET_LABELS, "result"))
        for s in samples:
            total = int(getattr(s.stats, "reclaim_writes", 0) or 0)
            eagain = int(getattr(s.stats, "eagain_count", 0) or 0)
            errors = int(getattr(s.stats, "reclaim_errors", 0) or 0)
            for result, n in (("ok", max(0, total - eagain - errors)), ("eagain", eagain),
                              ("error", errors)):
                writes.add_metric([*_label_values(s), result], float(n))
        yield writes
        lateness = self.owner.lateness()
        if lateness is not None:
            yield lateness
        applied = GaugeMetricFamily(
            "headroom_target_applied", "1 when the target's settings are applied, else 0.",
            labels=(*TARGET_LABELS, "reason"))
        for s in samples:
            applied.add_metric([*_label_values(s), str(getattr(s.stats, "reason", ""))],
                               1.0 if getattr(s.stats, "applied", False) else 0.0)
        yield applied
        caps = self.owner.capabilities()
        if caps is not None and is_dataclass(caps):
            family = GaugeMetricFamily("headroom_capability",
                                       "Kernel capability probed by the agent (1 or 0).",
                                       labels=("capability",))
            for f in fields(caps):
                value = getattr(caps, f.name)
                if value is not None:
                    family.add_metric([f.name], 1.0 if value else 0.0)
            yield family


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._samples: Callable[[], Iterable[TargetSample]] = list
        self._capabilities: Callable[[], Any] = lambda: None
        self._lateness: Callable[[], Any] = lambda: None
        self.registry.register(_TargetCollector(self))
        # the process' CPU, memory and file descriptors (process_*), and which version runs
        ProcessCollector(registry=self.registry)
        Gauge("headroom_build_info", "headroom version of this process; always 1.",
              ["version", "component"], registry=self.registry).labels(
                  version=__version__, component="agent").set(1)
        self.status_writes = Counter("headroom_status_writes", "Plan status writes by result.",
                                     ["result"], registry=self.registry)
        self.events = Counter("headroom_events", "Kubernetes Events posted, by reason.",
                              ["reason"], registry=self.registry)
        self.state_files_set_aside = Counter(
            "headroom_state_files_set_aside", "Saved state files found unreadable or "
            "malformed and moved aside, by file.", ["file"], registry=self.registry)
        self.lease_renewals = Counter("headroom_lease_renewals", "Renewals of the agent's "
                                      "Lease (its liveness), by result.", ["result"],
                                      registry=self.registry)
        for result in ("ok", "error"):
            self.lease_renewals.labels(result=result)
        self.plan_watch_connected = Gauge("headroom_plan_watch_connected",
                                          "1 while the plan watch is connected.",
                                          registry=self.registry)

    def samples(self) -> Iterable[TargetSample]:
        return self._samples()

    def capabilities(self) -> Any:
        return self._capabilities()

    def lateness(self) -> Metric | None:
        """The engine's check-lateness histogram as a metric family, if it keeps one."""
        hist = self._lateness()
        if hist is None:
            return None
        family = HistogramMetricFamily(
            "headroom_engine_check_lateness_seconds", "How late each scheduled check of a "
            "target ran against its schedule, over all targets.")
        family.add_metric([], hist.cumulative(), hist.total)
        return family

    def watch(self, samples: Callable[[], Iterable[TargetSample]],
              capabilities: Callable[[], Any] | None = None,
              lateness: Callable[[], Any] | None = None) -> None:
        """Where per-target samples (and the capabilities and the lateness histogram)
        come from at each scrape."""
        self._samples = samples
        if capabilities is not None:
            self._capabilities = capabilities
        if lateness is not None:
            self._lateness = lateness

    def watch_engine(self, engine: Any, labels_of: Callable[[str], Mapping[str, str]]) -> None:
        """The common case: samples from engine.snapshot(), labels per engine key."""
        def samples() -> list[TargetSample]:
            return [TargetSample(key, labels_of(key), stats)
                    for key, stats in sorted(engine.snapshot().items())]
        self.watch(samples, lambda: getattr(engine, "capabilities", None),
                   lambda: getattr(engine, "lateness_histogram", None))

    def text(self) -> str:
        return generate_latest(self.registry).decode()

    def serve(self, port: int, address: str = "0.0.0.0") -> Any:
        """Starts the HTTP endpoint (/metrics) in a daemon thread; returns the server
        (``server.server_port`` is the bound port; pass -1 for any free port), or None
        when port is 0 (disabled)."""
        if not port:
            return None
        from prometheus_client import start_http_server
        server, _thread = start_http_server(max(port, 0), address, registry=self.registry)
        return server
