"""The operator's loop: debounce events, resolve, write what changed.

Level-based: a round brings plans and policy statuses to what the caches
(informer.py: policies, pods, namespaces, nodes and plans) say and writes only
differences. With a change feed (`changes`, the informers' ObjectCache.take_changes)
a round decides only what the changed objects can affect (tracker.PlanTracker, kept
up to date from the feed); the first round, one every `resync` seconds and one after
a round that failed start over from a full snapshot. Without a feed, or with
`resync=0`, every round is `decide()` over the full snapshot (the reference the
incremental rounds are tested against). A burst of events (a Deployment scaling, a namespace
relabelled) becomes one round after `debounce` seconds of quiet (at most
`max_delay` after the first event). Writes the watch has not echoed back yet are
remembered with their resourceVersion, so a round that runs before the echo does
not write the same thing twice.
"""

from __future__ import annotations

import asyncio
import datetime
import gc
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException

from headroom.controller import plans as plans_mod
from headroom.controller import status as status_mod
from headroom.controller.kubeclient import KubeClient, WriteConflict
from headroom.controller.plans import Decisions, PlanAction, canonical
from headroom.controller.resolve import CLUSTER_KIND, NAMESPACED_KIND, PolicyRef, resolve
from headroom.controller.tracker import Change, PlanTracker

__all__ = ["Decisions", "Reconciler", "Snapshot", "decide", "policy_ref"]

log = logging.getLogger("headroom.operator")


@dataclass
class Snapshot:
    """Copies of everything the operator watches, taken at the start of a round."""

    policies: list[dict[str, Any]] = field(default_factory=list)
    cluster_policies: list[dict[str, Any]] = field(default_factory=list)
    pods: list[dict[str, Any]] = field(default_factory=list)
    namespaces: list[dict[str, Any]] = field(default_factory=list)
    nodes: list[dict[str, Any]] = field(default_factory=list)
    plans: dict[str, dict[str, Any]] = field(default_factory=dict)   # node -> plan object


def _rv(obj: Mapping[str, Any] | None) -> int | None:
    try:
        return int((obj or {}).get("metadata", {}).get("resourceVersion"))
    except (TypeError, ValueError):
        return None


def _generations(snap: Snapshot) -> dict[str, int | None]:
    """canonical policy ref -> metadata.generation, for every policy in the snapshot."""
    out = {}
    for obj in (*snap.policies, *snap.cluster_policies):
        gen = obj["metadata"].get("generation")
        out[canonical(policy_ref(obj).to_dict())] = gen if isinstance(gen, int) else None
    return out


def _causes(e: ApiException) -> list[dict[str, Any]]:
    """details.causes of a Status in an ApiException's body ([] when there are none)."""
    try:
        body = json.loads(e.body) if isinstance(e.body, str | bytes) else {}
        causes = (body.get("details") or {}).get("causes") or []
        return [c for c in causes if isinstance(c, dict)]
    except (ValueError, AttributeError):
        return []


def policy_ref(obj: Mapping[str, Any]) -> PolicyRef:
    meta = obj["metadata"]
    kind = NAMESPACED_KIND if meta.get("namespace") else CLUSTER_KIND
    return PolicyRef(kind, meta.get("namespace") or "", meta["name"])


def decide(snap: Snapshot, known_specs: Mapping[str, Mapping[str, Any] | None],
           known_status: Mapping[PolicyRef, Mapping[str, Any] | None], now: str,
           rejected: Mapping[str, str] | None = None) -> Decisions:
    """Pure: the writes that bring the cluster to what the policies say.

    `rejected`: canonical policy ref -> message, for policies whose plan entries the API
    server refused (a 422 naming the entry). Those, and every policy with an entry that
    fails the plan contract, change no plan: their pods keep their last good entries
    (or stay out), the policy is Valid=False, and every other policy's pods go on."""
    res = resolve(snap.policies, snap.cluster_policies, snap.pods, snap.namespaces,
                  nodes=snap.nodes)
    current = {node: spec for node, spec in known_specs.items() if spec is not None}
    active = plans_mod.active_pod_nodes(snap.pods)
    desired = plans_mod.freeze_invalid(res.plans, res.policies, current, active)
    bad = {key: ("InvalidPlanEntry", why) for key, why in plans_mod.check_entries(desired).items()}
    for key, why in (rejected or {}).items():
        bad.setdefault(key, ("PlanRejected", why))
    if bad:
        for ref, report in res.policies.items():
            reason_why = bad.get(canonical(ref.to_dict()))
            if reason_why and report.valid:
                report.valid = False
                report.reason, report.message = reason_why
        desired = plans_mod.quarantine(desired, set(bad), current, active)
    actions = plans_mod.plan_actions(desired, current)
    outcomes = status_mod.plan_outcomes(snap.plans)
    entries = status_mod.pods_by_policy(desired)
    by_ref = {policy_ref(p): p for p in (*snap.policies, *snap.cluster_policies)}
    statuses, events = {}, []
    for ref, report in res.policies.items():
        obj = by_ref.get(ref)
        if obj is None:
            continue
        previous = known_status.get(ref)
        new = status_mod.policy_status(report, entries.get(canonical(ref.to_dict()), {}),
                                       outcomes, previous, now)
        if canonical(new) != canonical(previous or {}):
            statuses[ref] = new
        if status_mod.newly_invalid(report, previous):
            events.append((obj, report.reason, report.message))
    return Decisions(actions, statuses, events)


@dataclass
class _Written:
    rv: int
    value: Any


class Reconciler:
    def __init__(self, client: KubeClient, snapshot: Callable[[], Snapshot],
                 debounce: float = 0.5, max_delay: float = 5.0,
                 changes: Callable[[], Iterable[Change]] | None = None,
                 resync: float = 600.0) -> None:
        self.client = client
        self.snapshot = snapshot
        self.changes = changes if resync > 0 else None
        self.resync = resync
        self.tracker = PlanTracker() if self.changes is not None else None
        self._resync_at = 0.0          # monotonic time of the next full round
        self.full_rounds = 0
        self._frozen = False
        self.debounce = debounce
        self.max_delay = max_delay
        self.dirty = asyncio.Event()
        self.rounds = 0
        self.rounds_done = 0                     # rounds that ended without an exception
        self.round_started: float | None = None  # monotonic; None between rounds (health)
        self.metrics: Any = None                 # controller.metrics.OperatorMetrics
        self._plans: dict[str, _Written] = {}
        self._statuses: dict[PolicyRef, _Written] = {}
        # canonical policy ref -> (message, policy generation) of plan entries the API
        # server refused; forgotten when the policy changes (or goes)
        self._rejected: dict[str, tuple[str, int | None]] = {}
        self._generations: dict[str, int | None] = {}

    def poke(self) -> None:
        self.dirty.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.dirty.wait()
            first = loop.time()
            while loop.time() - first < self.max_delay:   # wait for a quiet moment
                self.dirty.clear()
                try:
                    await asyncio.wait_for(self.dirty.wait(), self.debounce)
                except TimeoutError:
                    break
            self.dirty.clear()
            self.round_started = time.monotonic()
            try:
                await self.reconcile()
                ok = True
                self.rounds_done += 1
            except Exception:  # keep the loop alive; the next event or retry fixes it
                ok = False
                self._resync_at = 0.0     # the next round starts over from a snapshot
                log.exception("reconcile round failed; retrying")
            if self.metrics is not None:
                self.metrics.round_done(time.monotonic() - self.round_started, ok)
            self.round_started = None
            if not ok:
                await asyncio.sleep(1.0)
                self.poke()

    def _known(self, snap: Snapshot) -> tuple[dict[str, Any], dict[PolicyRef, Any]]:
        """Server state as the watch shows it, overlaid with our newer, unechoed writes."""
        specs: dict[str, Any] = {node: plan.get("spec") for node, plan in snap.plans.items()}
        for node, w in list(self._plans.items()):
            seen = _rv(snap.plans.get(node))
            if w.value is None:          # deleted by us: gone once the watch says so
                if node in snap.plans:
                    specs.pop(node, None)
                else:
                    del self._plans[node]
            elif seen is not None and seen >= w.rv:
                del self._plans[node]
            else:
                specs[node] = w.value
        statuses: dict[PolicyRef, Any] = {}
        for obj in (*snap.policies, *snap.cluster_policies):
            ref = policy_ref(obj)
            statuses[ref] = obj.get("status")
            w = self._statuses.get(ref)
            if w is not None and (_rv(obj) or 0) < w.rv:
                statuses[ref] = w.value
            elif w is not None:
                del self._statuses[ref]
        return specs, statuses

    async def reconcile(self) -> Decisions:
        self.rounds += 1
        started = time.monotonic()
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if self.tracker is None:
            snap = self.snapshot()
            specs, statuses = self._known(snap)
            generations = _generations(snap)
            rejected = self._current_rejections(generations)
            decisions = await asyncio.to_thread(decide, snap, specs, statuses, now, rejected)
            nodes: Mapping[str, Any] = {n["metadata"]["name"]: n for n in snap.nodes}
            by_ref: Mapping[PolicyRef, Any] = {policy_ref(p): p
                                               for p in (*snap.policies, *snap.cluster_policies)}
            sizes = (len(snap.pods), len(by_ref), len(nodes))
        else:
            decisions = await asyncio.to_thread(self._decide_incrementally, now)
            nodes = self.tracker.node_objs
            by_ref = self.tracker.policy_objs
            st = self.tracker.stats()
            sizes = (st["pods"], st["policies"], len(nodes))
        decided = time.monotonic() - started
        results = await asyncio.gather(
            *(self._write_plan(a, nodes) for a in decisions.actions),
            *(self._write_status(ref, st) for ref, st in decisions.statuses.items()
              if ref in by_ref),
            *(self.client.post_event(obj, "Warning", reason, message)
              for obj, reason, message in decisions.invalid_events),
            return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if self.metrics is not None:
            kinds = (["plan"] * len(decisions.actions)
                     + ["status"] * (len(results) - len(decisions.actions)
                                     - len(decisions.invalid_events))
                     + ["event"] * len(decisions.invalid_events))
            for kind, r in zip(kinds, results, strict=True):
                result = ("ok" if not isinstance(r, BaseException) else
                          "conflict" if isinstance(r, WriteConflict) else "error")
                self.metrics.writes.labels(kind=kind, result=result).inc()
        for err in failed:
            if not isinstance(err, WriteConflict):
                log.warning("write failed: %s", err)
        if failed:
            self.poke()     # something moved under us: another round sorts it out
            if self.tracker is not None:
                statused = [ref for ref in decisions.statuses if ref in by_ref]
                self.tracker.retry(
                    (a.node for a, r in zip(decisions.actions, results, strict=False)
                     if isinstance(r, BaseException)),
                    (ref for ref, r in zip(statused, results[len(decisions.actions):],
                                           strict=False) if isinstance(r, BaseException)))
        writes = bool(decisions.actions or decisions.statuses)
        log.log(logging.INFO if writes or self.rounds == 1 else logging.DEBUG,
                "round %d: %d pods, %d policies, %d nodes; decided in %.2f s, done in %.2f s; "
                "%d plan writes, %d status writes", self.rounds, *sizes, decided,
                time.monotonic() - started, len(decisions.actions), len(decisions.statuses))
        return decisions

    def _current_rejections(self, generations: Mapping[str, int | None]) -> dict[str, str]:
        """Refusals still in force: forgotten when their policy changes or goes."""
        self._generations = dict(generations)
        self._rejected = {k: v for k, v in self._rejected.items()
                          if k in generations and generations[k] == v[1]}
        return {k: msg for k, (msg, _) in self._rejected.items()}

    def _decide_incrementally(self, now: str) -> Decisions:
        """In a worker thread: apply the change feed (or start over from a snapshot when a
        full round is due), then decide what it affects."""
        tracker, changes = self.tracker, self.changes
        assert tracker is not None and changes is not None
        feed = list(changes())        # drained before any snapshot: nothing is missed
        if not tracker.loaded or time.monotonic() >= self._resync_at:
            if self._frozen:
                # the old state has reference cycles (policies and their rivals): frozen
                # objects are never collected, so let the collector see them again
                gc.unfreeze()
            tracker.load(self.snapshot())
            self._resync_at = time.monotonic() + self.resync
            self.full_rounds += 1
            # the loaded state lives as long as the caches: keep it out of the
            # collector's full passes (which would otherwise walk every cached pod)
            gc.collect()
            gc.freeze()
            self._frozen = True
        else:
            try:
                tracker.apply(feed)
            except Exception:
                self._resync_at = 0.0     # the state is suspect: start over next round
                raise
        rejected = self._current_rejections(tracker.generations())
        try:
            return tracker.decide(self._known_spec, self._known_status, now, rejected)
        except Exception:
            self._resync_at = 0.0
            raise

    def _known_spec(self, node: str) -> dict[str, Any] | None:
        """A node's plan spec as the server has it, or as we last wrote it if the watch
        has not echoed that write yet (None: no plan)."""
        assert self.tracker is not None
        plan = self.tracker.plan_objs.get(node)
        w = self._plans.get(node)
        if w is not None:
            seen = _rv(plan)
            if w.value is None:
                if plan is None:
                    del self._plans[node]
                return None
            if seen is not None and seen >= w.rv:
                del self._plans[node]
            else:
                return dict(w.value)
        return None if plan is None else plan.get("spec")

    def _known_status(self, ref: PolicyRef) -> Mapping[str, Any] | None:
        assert self.tracker is not None
        obj = self.tracker.policy_objs.get(ref) or {}
        w = self._statuses.get(ref)
        if w is not None and (_rv(obj) or 0) < w.rv:
            return w.value
        if w is not None:
            del self._statuses[ref]
        return obj.get("status")

    async def _write_plan(self, action: PlanAction, nodes: Mapping[str, Any]) -> None:
        if action.verb == "delete":
            resp = await self.client.delete_plan(action.node)
            self._plans[action.node] = _Written(_rv(resp) or 0, None)
            return
        assert action.spec is not None
        try:
            if action.verb == "create":
                body = plans_mod.plan_body(nodes[action.node], action.spec)
                resp = await self.client.create_plan(body)
            else:
                resp = await self.client.replace_plan_spec(action.node, dict(action.spec))
        except ApiException as e:
            if e.status != 422:
                raise
            refused = plans_mod.rejected_policies(_causes(e), action.spec)
            for key, why in refused.items():
                self._rejected[key] = (why, self._generations.get(key))
                log.warning("plan of node %s refused because of policy %s: %s",
                            action.node, key, why)
            if not refused:
                log.warning("plan of node %s refused and no entry named: %s",
                            action.node, e.body)
            raise
        self._plans[action.node] = _Written(_rv(resp) or 0, action.spec)

    async def _write_status(self, ref: PolicyRef, status: dict[str, Any]) -> None:
        resp = await self.client.patch_policy_status(ref, status)
        self._statuses[ref] = _Written(_rv(resp) or 0, status)
