"""Cluster mode of the agent: this node's NodeReclaimPlan -> pod cgroups -> engine.

    headroom agent --node-name N --state-dir D [--cgroup-root DIR] [--dry-run]

Threads: the plan watch (planwatch.PlanWatcher) hands new plans to the main loop through
a queue; the engine runs its own threads; the main loop applies plans and, every tick,
retries pods whose cgroup was missing, saves state, writes status (rate-bounded), posts
Events. The API server is needed only to learn plan changes and to report: the last plan
is kept in the state directory and enforced on start, before the API answers.

Restore rules: a pod leaving the plan gets the memory.high the agent found before its
first write (the engine keeps it in the state directory before that write, so this also
holds for pods that left while the agent was down). A clean shutdown (SIGTERM) restores
every pod too, so that uninstalling the agent leaves no memory.high behind without a
reclaimer; the next agent re-applies the saved plan at once. After a crash nothing is
restored: the next start takes the pods over again with the originals saved on disk.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from headroom import __version__, health
from headroom.agentcli import CLUSTER_STATE_DIR
from headroom.api.plan import (
    ENTRY_BOUNDS,
    INT64_MAX,
    MAX_NAME_LENGTH,
    MAX_NAMESPACE_LENGTH,
    MAX_UID_LENGTH,
    PlanReclaim,
    Problem,
    validate_spec,
)
from headroom.cgroup import CgroupRoot
from headroom.engine import ReclaimEngine, ReclaimSettings, Target
from headroom.engine.metrics import AgentMetrics
from headroom.logs import event, setup
from headroom.nodeagent.events import EventRecorder, PodRef, find_incidents, kubernetes_poster
from headroom.nodeagent.lease import LeaseKeeper
from headroom.nodeagent.planstate import PLAN_FILE, StateStore
from headroom.nodeagent.planwatch import GROUP, PLURAL, VERSION, PlanWatcher, plan_identity
from headroom.nodeagent.podcgroups import PodCgroupError, PodCgroupResolver, make_resolver
from headroom.nodeagent.status import (
    PodEntry,
    PodProblem,
    StatusSchedule,
    build_status,
    plan_conditions,
    rfc3339,
)

log = logging.getLogger("headroom.agent")

# How often the main loop retries missing cgroups, saves state, considers a status write
# and looks for incidents. Cheap: one lstat per path component per pod.
TICK_SECONDS = 2.0
# /healthz fails when the engine's loop (turns at least every second) or the main loop
# (at most a tick plus an API call with its 20 s timeout) has not turned for this long.
LOOP_STALE_SECONDS = 60.0
# Pods the engine could not take over (an error on their cgroup files) are handed to it
# again at most this often; pods whose directory is missing are looked for every tick.
RETRY_SECONDS = 30.0

@dataclass(frozen=True)
class PlanPod:
    uid: str
    namespace: str
    name: str
    qos_class: str
    memory_high: int
    dry_run: bool
    settings: ReclaimSettings


@dataclass(frozen=True)
class Plan:
    identity: str                   # planwatch.plan_identity: uid + spec
    generation: int | None
    cpu_budget_cores: float | None
    pods: tuple[PlanPod, ...]           # the usable entries
    invalid: Mapping[str, PodProblem]   # uid -> why the entry was not usable
    entries: tuple[PodEntry, ...]       # every entry, usable or not, for the status


EMPTY_PLAN = Plan("", None, None, (), {}, ())


def reclaim_settings(rec: PlanReclaim) -> ReclaimSettings:
    """The contract's checked reclaim block -> the engine's settings; the engine's own
    check runs too (raises ValueError), so nothing it would refuse reaches it."""
    settings = ReclaimSettings(
        mode=rec.mode, headroom_percent=float(rec.headroom_percent),
        target_percent=float(rec.target_percent), step_bytes=rec.step_bytes,
        max_bytes_per_second=rec.max_bytes_per_second, swappiness=rec.swappiness,
        pressure_target_percent=float(rec.pressure_target_percent),
        livelock_guard=rec.livelock_guard)
    problems = settings.problems()
    if problems:
        raise ValueError("; ".join(f"{f} {m}" for f, m in problems))
    return settings


# What a refused entry shows in the status (uid, namespace, name) is cut to these
# lengths: the status is written back to the API server and must stay small.
_SHOWN_LENGTHS = {"uid": MAX_UID_LENGTH, "namespace": MAX_NAMESPACE_LENGTH,
                  "name": MAX_NAME_LENGTH}
# Fields of an entry the contract knows; others (a newer operator's, during an upgrade)
# are ignored here rather than spoiling the entry: they are not used.
_KNOWN_ENTRY_FIELDS = frozenset(k.split(".")[0] for k in ENTRY_BOUNDS)
_KNOWN_SUBFIELDS = {parent: frozenset(k.split(".")[1] for k in ENTRY_BOUNDS
                                      if k.startswith(parent + "."))
                    for parent in ("policy", "reclaim")}


def _shown(raw: Any, key: str, default: str = "") -> str:
    v = raw.get(key) if isinstance(raw, Mapping) else None
    if not isinstance(v, str):
        return default
    return v[:_SHOWN_LENGTHS[key]]


def _known_fields(raw: Any) -> Any:
    """The entry without fields the contract does not know (nested ones too)."""
    if not isinstance(raw, Mapping):
        return raw
    out: dict[str, Any] = {}
    for k, v in raw.items():
        if k not in _KNOWN_ENTRY_FIELDS:
            continue
        if k in _KNOWN_SUBFIELDS and isinstance(v, Mapping):
            v = {sk: sv for sk, sv in v.items() if sk in _KNOWN_SUBFIELDS[k]}
        out[k] = v
    return out


def _generation(meta: Any) -> int | None:
    g = meta.get("generation") if isinstance(meta, Mapping) else None
    return g if isinstance(g, int) and not isinstance(g, bool) and 0 <= g <= INT64_MAX \
        else None


def parse_plan(obj: Mapping[str, Any] | None) -> Plan:
    """The NodeReclaimPlan object (or the saved essentials) as the agent uses it. Never
    raises. Every entry is checked against the plan contract (headroom.api.plan: typed,
    nothing coerced, bounded); a bad entry spoils only itself: it is reported as
    InvalidSpec with the contract's reasons, the others are enforced."""
    if not obj or not isinstance(obj, Mapping):
        return EMPTY_PLAN
    spec = obj.get("spec")
    raw_pods = spec.get("pods") if isinstance(spec, Mapping) else None
    if isinstance(raw_pods, list):
        pods_in = [_known_fields(p) for p in raw_pods]
        check = validate_spec({**spec, "pods": pods_in})
    else:
        pods_in = []
        check = validate_spec(spec if spec is not None else {})
    for problem in check.problems:
        event(log, "plan_field_invalid", logging.WARNING, field=f"spec.{problem.path}",
              error=problem.message)
    pods: list[PlanPod] = []
    invalid: dict[str, PodProblem] = {}
    entries: dict[str, PodEntry] = {}
    good_at = dict(check.entries)
    bad_at = dict(check.invalid)
    for i, raw in enumerate(pods_in):
        uid = _shown(raw, "uid") or f"<entry {i}>"
        entry = good_at.get(i)
        if entry is not None:
            try:
                settings = reclaim_settings(entry.reclaim)
            except ValueError as e:
                bad_at[i] = (Problem("reclaim", str(e)),)
            else:
                pods.append(PlanPod(uid=entry.uid, namespace=entry.namespace, name=entry.name,
                                    qos_class=entry.qos_class, memory_high=entry.memory_high,
                                    dry_run=entry.dry_run, settings=settings))
                entries[uid] = PodEntry(entry.uid, entry.namespace, entry.name)
                invalid.pop(uid, None)   # a duplicate before it was refused
                continue
        if uid in entries:
            # a second entry for a pod already planned: it is refused (and logged), the
            # first one stays in force and in the status
            event(log, "plan_entry_invalid", logging.WARNING, uid=uid, index=i,
                  error="; ".join(str(p) for p in bad_at.get(i, ())))
            continue
        entries.setdefault(uid, PodEntry(uid, _shown(raw, "namespace"), _shown(raw, "name")))
        reasons = "; ".join(str(p) for p in bad_at.get(i, ())) or "unusable"
        invalid[uid] = PodProblem("InvalidSpec", f"plan entry refused: {reasons}")
    meta = obj.get("metadata")
    budget = check.cpu_budget_cores
    return Plan(
        identity=plan_identity(obj),
        generation=_generation(meta),
        cpu_budget_cores=budget if budget and budget > 0 else None,
        pods=tuple(pods),
        invalid=invalid,
        entries=tuple(entries.values()),
    )


def capabilities_status(caps: Any) -> dict[str, bool]:
    """engine.capabilities -> status.capabilities; unprobed (None) ones are left out."""
    names = {"memory_reclaim": "memoryReclaim", "swappiness_key": "swappinessKey", "psi": "psi"}
    return {out: bool(v) for attr, out in names.items()
            if (v := getattr(caps, attr, None)) is not None}


class ClusterAgent:
    """Everything of cluster mode except the threads and the API client: testable with a
    fake engine, a fake cgroup tree and plain callables for the API writes."""

    def __init__(
        self,
        *,
        engine: Any,                          # ReclaimEngine (or a test double)
        root: CgroupRoot,
        resolver: PodCgroupResolver,
        store: StateStore,
        node: str,
        default_cpu_budget: float | None,
        dry_run: bool = False,
        write_status: Callable[[dict[str, Any]], Any] | None = None,
        events: EventRecorder | None = None,
        metrics: AgentMetrics | None = None,
        schedule: StatusSchedule | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.root = root
        self.resolver = resolver
        self.store = store
        self.node = node
        self.default_cpu_budget = default_cpu_budget
        self.dry_run = dry_run
        self.write_status = write_status
        self.events = events
        self.metrics = metrics
        self.schedule = schedule or StatusSchedule()
        self.clock = clock
        self.wall = wall
        self.plan = EMPTY_PLAN
        self.plan_exists = False             # a plan object exists in the API (or on disk)
        self.problems: dict[str, PodProblem] = {}
        self.targets: list[Target] = []
        self.next_retry = 0.0                # engine-side failures are retried this late
        self.prev_snapshot: dict[str, Any] = {}
        self.labels: dict[str, dict[str, str]] = {}
        self.conditions: list[dict[str, Any]] = []   # the last built, for transition times
        if metrics is not None:
            metrics.watch_engine(engine, lambda key: self.labels.get(key, {}))

    # -- plan intake ----------------------------------------------------------------

    def start(self) -> None:
        """Before the API answers: enforce what the last run left on disk. Never raises
        over the agent's own files (a crash loop would follow): a bad file is set aside
        by the store, a saved plan that cannot be applied is set aside here, and the
        agent waits for the API server's plan."""
        saved = self.store.load_plan()
        if saved is None:
            return
        pods = (saved.get("spec") or {}).get("pods")
        event(log, "saved_plan_loaded", pods=len(pods) if isinstance(pods, list) else 0,
              originals=len(self.engine.originals()))
        try:
            self._take(saved, save=False)
        except Exception as e:   # a bug, not bad data (parse_plan refuses that per entry)
            event(log, "saved_plan_unusable", logging.ERROR, exc_info=True)
            self.store.set_aside(PLAN_FILE, f"applying it failed: {e!r}")
            self.plan = EMPTY_PLAN

    def set_plan(self, obj: Mapping[str, Any] | None) -> None:
        """A plan from the API (None: there is none, or it was deleted)."""
        self._take(obj, save=True)

    def _take(self, obj: Mapping[str, Any] | None, save: bool) -> None:
        plan = parse_plan(obj)
        if plan.identity != self.plan.identity:
            self.schedule.forget()
        self.plan = plan
        meta = obj.get("metadata") if isinstance(obj, Mapping) else None
        self.plan_exists = isinstance(meta, Mapping) and bool(meta.get("name"))
        self.labels = {p.uid: {"namespace": p.namespace, "pod": p.name} for p in plan.pods}
        for uid, problem in plan.invalid.items():
            event(log, "plan_entry_invalid", logging.WARNING, uid=uid, error=problem.message)
        budget = plan.cpu_budget_cores or self.default_cpu_budget
        self.engine.set_cpu_budget(budget)
        event(log, "plan_applied", generation=plan.generation, pods=len(plan.pods),
              invalid=len(plan.invalid), cpu_budget_cores=budget, source="api" if save
              else "state-dir")
        if save:
            self.store.save_plan(obj)
        self.reconcile(force=True)

    # -- reconciliation --------------------------------------------------------------

    def _desired(self) -> tuple[list[Target], dict[str, PodProblem]]:
        targets: list[Target] = []
        problems: dict[str, PodProblem] = dict(self.plan.invalid)
        for pod in self.plan.pods:
            try:
                path = self.resolver.find(pod.uid, pod.qos_class)
            except PodCgroupError as e:
                problems[pod.uid] = PodProblem(e.reason, str(e))
                continue
            targets.append(Target(
                key=pod.uid, path=path, memory_high=pod.memory_high, settings=pod.settings,
                labels={"namespace": pod.namespace, "pod": pod.name},
                dry_run=pod.dry_run or self.dry_run,
            ))
        return targets, problems

    def reconcile(self, force: bool = False) -> None:
        """Hand the engine the pods whose cgroups exist. Called on every plan and tick:
        pods whose cgroup appeared since are taken over, failed ones retried."""
        targets, problems = self._desired()
        for uid, p in problems.items():
            if self.problems.get(uid) != p:
                event(log, "pod_not_applied", logging.WARNING, uid=uid, reason=p.reason,
                      error=str(p.message))
        self.problems = problems
        now = self.clock()
        retry = (now >= self.next_retry
                 and any(not s.applied for s in self.engine.snapshot().values()))
        if not force and targets == self.targets and not retry:
            return
        self.next_retry = now + RETRY_SECONDS
        self.engine.set_targets(targets)
        self.targets = targets

    # -- periodic work -----------------------------------------------------------------

    def tick(self) -> None:
        self.reconcile()
        snapshot = self.engine.snapshot()
        self._post_events(snapshot)
        self._maybe_write_status(snapshot)

    def _post_events(self, snapshot: Mapping[str, Any]) -> None:
        pods = {p.uid: PodRef(p.uid, p.namespace, p.name) for p in self.plan.pods}
        incidents = find_incidents(self.prev_snapshot, snapshot, pods)
        self.prev_snapshot = dict(snapshot)
        for inc in incidents:
            event(log, "pod_incident", logging.WARNING, uid=inc.pod.uid,
                  namespace=inc.pod.namespace, pod=inc.pod.name, reason=inc.reason,
                  message=inc.message)
            if self.events is not None:
                self.events.record(inc)
        if self.events is not None:
            self.events.limiter.forget_except(pods)

    def status(self, snapshot: Mapping[str, Any] | None = None) -> dict[str, Any]:
        snapshot = self.engine.snapshot() if snapshot is None else snapshot
        status = build_status(
            generation=self.plan.generation,
            pods=self.plan.entries,
            snapshot=snapshot,
            problems=self.problems,
            capabilities=capabilities_status(self.engine.capabilities),
            driver=self.resolver.current_driver(),
            agent_version=__version__,
        )
        status["conditions"] = plan_conditions(status, self.conditions, rfc3339(self.wall()))
        self.conditions = status["conditions"]
        return status

    def _maybe_write_status(self, snapshot: Mapping[str, Any]) -> None:
        if self.write_status is None or not self.plan_exists:
            return
        status = self.status(snapshot)
        now = self.clock()
        if not self.schedule.due(now, status):
            return
        body = {**status, "heartbeat": rfc3339(self.wall())}
        try:
            self.write_status(body)
            ok = True
        except Exception as e:   # API away: keep enforcing, try again after the interval
            ok = False
            event(log, "status_write_failed", logging.WARNING, error=_describe(e))
        self.schedule.attempted(now, status, ok)
        if self.metrics is not None:
            self.metrics.status_writes.labels(result="ok" if ok else "error").inc()

    def shutdown(self, restore: bool = True) -> None:
        self.engine.stop(restore=restore)   # restored originals leave the state dir too


def _describe(e: BaseException) -> str:
    status = getattr(e, "status", None)
    return f"HTTP {status} {getattr(e, 'reason', '')}".strip() if status else repr(e)


# -- the process ---------------------------------------------------------------------

def _load_kube_config(kubeconfig: str | None = None) -> Any:
    from kubernetes import client, config

    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig)
        return client.ApiClient()
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()   # $KUBECONFIG or ~/.kube/config
    return client.ApiClient()


def _status_writer(custom: Any, node: str) -> Callable[[dict[str, Any]], Any]:
    def write(status: dict[str, Any]) -> Any:
        return custom.patch_cluster_custom_object_status(
            GROUP, VERSION, PLURAL, node, {"status": status}, _request_timeout=(5, 15))
    return write


def _guarded(fn: Callable[..., Any], *args: Any) -> None:
    """The agent outlives a bug in one step: the engine keeps enforcing meanwhile."""
    try:
        fn(*args)
    except Exception:
        event(log, "agent_error", logging.ERROR, exc_info=True, step=fn.__name__)


def health_checks(engine: Any, loop: Mapping[str, Any],
                  stale: float = LOOP_STALE_SECONDS) -> health.Checks:
    """/healthz: both loops turn. /readyz: that, and the agent knows its plan (saved on
    disk or from the API), so it enforces what the operator decided."""
    def engine_loop() -> tuple[bool, str]:
        age = engine.loop_age()
        if age is None:
            return False, "not running"
        return age < stale, f"turned {age:.1f} s ago"

    def main_loop() -> tuple[bool, str]:
        age = time.monotonic() - float(loop["at"])
        return age < stale, f"turned {age:.1f} s ago"

    def plan() -> tuple[bool, str]:
        known = bool(loop.get("plan_known"))
        return known, "known" if known else "waiting for the saved plan or the API"

    checks = health.Checks()
    for route in ("healthz", "readyz"):
        checks.add(route, "engine loop", engine_loop)
        checks.add(route, "main loop", main_loop)
    checks.add("readyz", "plan", plan)
    return checks


def run(args: argparse.Namespace) -> int:
    setup(args.log_level, fmt=getattr(args, "log_format", "json"))
    # First of all: a SIGTERM during start-up (seconds: the client's imports) must still
    # end in the clean stop that restores every memory.high, not in the default action.
    stop = {"signal": 0}

    def on_signal(signum: int, _frame: Any) -> None:
        stop["signal"] = signum   # only a flag: the loop notices within a second

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # urllib3 logs each connection retry; the agent logs one event per failed call itself.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    node = args.node_name
    if not node:
        event(log, "config_error", logging.ERROR, error="--node-name (env NODE_NAME) is required")
        return 2
    from kubernetes import client

    api_client = _load_kube_config(getattr(args, "kubeconfig", None))
    custom = client.CustomObjectsApi(api_client)
    core = client.CoreV1Api(api_client)
    root = CgroupRoot(args.cgroup_root)   # verifies cgroup2fs (or the test override)
    try:
        resolver = make_resolver(root.path, args.cgroup_driver, args.kubelet_cgroup_root)
    except ValueError as e:
        event(log, "config_error", logging.ERROR, error=str(e))
        return 2
    state_dir = args.state_dir or CLUSTER_STATE_DIR
    metrics = AgentMetrics()

    def set_aside(name: str) -> None:
        metrics.state_files_set_aside.labels(file=name).inc()

    engine = ReclaimEngine(root, cpu_budget_cores=args.cpu_budget, dry_run=args.dry_run,
                           state_dir=state_dir, on_state_set_aside=set_aside)
    store = StateStore(state_dir, on_set_aside=set_aside)
    agent = ClusterAgent(
        engine=engine, root=root, resolver=resolver,
        store=store, node=node, default_cpu_budget=args.cpu_budget,
        dry_run=args.dry_run, write_status=_status_writer(custom, node),
        events=EventRecorder(kubernetes_poster(core), node,
                             on_posted=lambda r: metrics.events.labels(reason=r).inc()),
        metrics=metrics,
        schedule=StatusSchedule(args.status_interval, args.heartbeat_interval),
    )
    server = metrics.serve(args.metrics_port, args.metrics_address)
    lease = None
    if getattr(args, "lease_namespace", None):
        lease = LeaseKeeper(client.CoordinationV1Api(api_client), args.lease_namespace, node,
                            getattr(args, "pod_name", None) or socket.gethostname(),
                            on_result=lambda r: metrics.lease_renewals.labels(result=r).inc())
    plans: queue.Queue[dict[str, Any] | None] = queue.Queue()
    watcher = PlanWatcher(custom, node, plans.put)
    loop = {"at": time.monotonic(), "plan_known": False}
    health_server = health.serve(getattr(args, "health_port", 0),
                                 getattr(args, "health_address", "0.0.0.0"),
                                 health_checks(engine, loop).routes())

    event(log, "agent_starting", node=node, cgroup_root=str(root.path),
          cgroup_driver=args.cgroup_driver, kubelet_cgroup_root=args.kubelet_cgroup_root,
          state_dir=str(state_dir), dry_run=args.dry_run, version=__version__,
          pid=os.getpid())
    engine.start()
    agent.start()
    loop["plan_known"] = agent.plan_exists   # a saved plan is enforced before the API answers
    watcher.start()
    if lease is not None:
        lease.start()
    next_tick = time.monotonic()
    try:
        while not stop["signal"]:
            loop["at"] = time.monotonic()
            try:
                obj = plans.get(timeout=1.0)
                while True:   # only the newest plan matters
                    try:
                        obj = plans.get_nowait()
                    except queue.Empty:
                        break
                _guarded(agent.set_plan, obj)
                loop["plan_known"] = True    # a plan, or the API's word that there is none
            except queue.Empty:
                pass
            metrics.plan_watch_connected.set(1 if watcher.connected else 0)
            if time.monotonic() >= next_tick:
                _guarded(agent.tick)
                next_tick = time.monotonic() + TICK_SECONDS
    finally:
        event(log, "agent_stopping", signal=stop["signal"])
        watcher.stop()
        if lease is not None:
            lease.stop()
        agent.shutdown(restore=True)
        if server is not None:
            server.shutdown()
        if health_server is not None:
            health_server.shutdown()
    return 0


if __name__ == "__main__":   # pragma: no cover
    from headroom.cli import main

    sys.exit(main(["agent", *sys.argv[1:]]))
