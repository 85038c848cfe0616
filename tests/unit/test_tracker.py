"""The reconciler's incremental rounds (tracker.PlanTracker) against the full decide().

The reconciler runs on informer caches (ObjectCache with change tracking) and a fake
API server that applies its writes and echoes them back into the caches, some at
once and some only later (a watch that lags). Hypothesis draws event sequences
(test_incremental's strategies: pods, policies, cluster policies, namespaces, nodes);
after each event the reconciler runs its incremental rounds until it has nothing to
write, and then a full `decide()` over the same caches and the server's plans and
statuses must find nothing to write either: same plans, same statuses. Plan
entries of one namespace/size are declared out of bounds (check_entries ->
quarantine) and the fake server refuses another policy's entries with a 422
(rejected_policies), so the isolation rules are part of the comparison.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import pytest
from headroom.api import plan as plan_contract
from headroom.controller.informer import ObjectCache, slim_plan, slim_policy
from headroom.controller.reconciler import Reconciler, Snapshot, decide, policy_ref
from headroom.controller.resolve import PolicyRef
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes.client.exceptions import ApiException
from test_incremental import _key, sequence_st
from test_resolve import mk_pod, mk_policy

EXAMPLES = int(os.environ.get("HEADROOM_PROPERTY_EXAMPLES", "150")) // 2 or 1
MI = 1 << 20
KINDS = ("policies", "cluster_policies", "pods", "namespaces", "nodes", "plans")


class FakeServer:
    """Plans and policy statuses as an API server would keep them; every write gets a
    new resourceVersion and is echoed into the caches (at once or on flush())."""

    def __init__(self, caches: dict[str, ObjectCache], lag: bool = False) -> None:
        self.caches = caches
        self.lag = lag
        self.rv = 1000
        self.plans: dict[str, dict[str, Any]] = {}
        self.pending: list[tuple[str, str, dict[str, Any]]] = []
        self.writes: list[tuple[str, str]] = []      # (verb, node or policy name)
        self.events: list[str] = []

    def next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def echo(self, kind: str, type_: str, obj: dict[str, Any]) -> None:
        if self.lag:
            self.pending.append((kind, type_, obj))
        else:
            self.caches[kind].apply(type_, obj)

    def agents_report(self, step: int) -> None:
        """Every agent writes its plan's status: every other pod applied (which ones
        changes with `step`), some bytes reclaimed."""
        for node, plan in sorted(self.plans.items()):
            pods = [{"uid": e["uid"], "applied": (i + step) % 2 == 0,
                     "memoryHigh": e["memoryHigh"], "reclaimedBytes": 4096 * (i + step)}
                    for i, e in enumerate(plan["spec"].get("pods") or ())]
            obj = {**plan, "status": {"pods": pods},
                   "metadata": {**plan["metadata"], "resourceVersion": self.next_rv()}}
            self.plans[node] = obj
            self.echo("plans", "MODIFIED", slim_plan(obj))

    def flush(self) -> None:
        for kind, type_, obj in self.pending:
            self.caches[kind].apply(type_, obj)
        self.pending = []

    def _refuse(self, spec: dict[str, Any]) -> None:
        causes = [{"field": f"spec.pods[{i}].memoryHigh", "message": "refused by the test"}
                  for i, e in enumerate(spec.get("pods") or ())
                  if e["policy"].get("namespace") == "c" and e["policy"]["name"] == "q1"]
        if causes:
            raise _unprocessable(causes)

    async def create_plan(self, body: dict[str, Any]) -> dict[str, Any]:
        node = body["metadata"]["name"]
        self._refuse(body["spec"])
        if node in self.plans:
            raise AssertionError(f"plan {node} created twice")
        self.writes.append(("create", node))
        obj = {"metadata": {"name": node, "resourceVersion": self.next_rv()},
               "spec": json.loads(json.dumps(body["spec"]))}
        self.plans[node] = obj
        self.echo("plans", "ADDED", slim_plan(obj))
        return obj

    async def replace_plan_spec(self, node: str, spec: dict[str, Any]) -> dict[str, Any]:
        self._refuse(spec)
        self.writes.append(("replace", node))
        obj = {**self.plans[node], "spec": json.loads(json.dumps(spec))}
        obj["metadata"] = {**obj["metadata"], "resourceVersion": self.next_rv()}
        self.plans[node] = obj
        self.echo("plans", "MODIFIED", slim_plan(obj))
        return obj

    async def delete_plan(self, node: str) -> dict[str, Any]:
        self.writes.append(("delete", node))
        obj = self.plans.pop(node)
        obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": self.next_rv()}}
        self.echo("plans", "DELETED", obj)
        return obj

    async def patch_policy_status(self, ref: PolicyRef, status: dict[str, Any]
                                  ) -> dict[str, Any]:
        kind = "policies" if ref.namespace else "cluster_policies"
        obj = self.caches[kind]._objects[(ref.namespace, ref.name)]
        self.writes.append(("status", ref.name))
        new = {**obj, "status": json.loads(json.dumps(status)),
               "metadata": {**obj["metadata"], "resourceVersion": self.next_rv()}}
        self.echo(kind, "MODIFIED", new)
        return new

    async def post_event(self, obj: dict[str, Any], type_: str, reason: str,
                         message: str) -> None:
        self.events.append(reason)


def _unprocessable(causes: list[dict[str, Any]]) -> ApiException:
    e = ApiException(status=422, reason="Unprocessable Entity")
    e.body = json.dumps({"kind": "Status", "details": {"causes": causes}})
    return e


def _out_of_bounds(entry: Any) -> list[str]:
    """Entries of namespace b at 300Mi are out of bounds here (a stand-in for values
    the plan contract refuses), besides whatever the real contract refuses."""
    problems = _real_entry_problems(entry)
    if isinstance(entry, dict) and entry.get("namespace") == "b" \
            and entry.get("memoryHigh") == 300 * MI:
        problems = [*problems, "memoryHigh: out of bounds in this test"]
    return problems


_real_entry_problems = plan_contract.entry_problems


class World:
    def __init__(self, lag: bool = False) -> None:
        self.caches = {k: ObjectCache(track=True) for k in KINDS}
        self.server = FakeServer(self.caches, lag)     # one resourceVersion counter
        self.reconciler = Reconciler(self.server, self.snapshot,  # type: ignore[arg-type]
                                     changes=self.take_changes, resync=1e9)

    def snapshot(self) -> Snapshot:
        c = self.caches
        return Snapshot(policies=c["policies"].values(),
                        cluster_policies=c["cluster_policies"].values(),
                        pods=c["pods"].values(), namespaces=c["namespaces"].values(),
                        nodes=c["nodes"].values(),
                        plans={p["metadata"]["name"]: p for p in c["plans"].values()})

    def take_changes(self) -> list[Any]:
        return [(name, key, obj) for name, cache in self.caches.items()
                for key, obj in cache.take_changes()]

    def event(self, kind: str, type_: str, obj: dict[str, Any]) -> None:
        key = _key(kind, obj)
        ckey = (key[0] if kind in ("pods", "policies") else "", key[1])
        cache = self.caches[kind]
        if type_ == "DELETED":
            old = cache._objects.get(ckey)
            if old is not None:
                cache.apply("DELETED", old)
            return
        meta = {**obj["metadata"], "resourceVersion": self.server.next_rv()}
        if kind == "pods":
            meta.setdefault("namespace", "default")
        if kind == "nodes":
            meta.setdefault("uid", f"uid-{meta['name']}")
        new = {**obj, "metadata": meta}
        old = cache._objects.get(ckey)
        if kind in ("policies", "cluster_policies"):
            if old is not None and "status" in old:
                new["status"] = old["status"]     # a spec update keeps the status
            new = slim_policy(new)
        cache.apply("MODIFIED" if old is not None else "ADDED", new)

    def settle(self, rounds: int = 6) -> None:
        for _ in range(rounds):
            before = len(self.server.writes)
            try:
                asyncio.run(self.reconciler.reconcile())
            except Exception:
                self.reconciler._resync_at = 0.0    # as Reconciler.run does
                raise
            self.server.flush()
            if len(self.server.writes) == before and not self.reconciler.dirty.is_set():
                return
            self.reconciler.dirty.clear()

    def full_decision(self) -> Any:
        """decide() over the caches and the server's plans and statuses."""
        snap = self.snapshot()
        specs = {n: p["spec"] for n, p in self.server.plans.items()}
        statuses = {policy_ref(p): p.get("status")
                    for p in (*snap.policies, *snap.cluster_policies)}
        rejected = {k: m for k, (m, _) in self.reconciler._rejected.items()}
        return decide(snap, specs, statuses, "2026-12-01T00:00:00Z", rejected)


def _at_fixed_point(world: World, what: Any) -> None:
    d = world.full_decision()
    assert [(a.verb, a.node) for a in d.actions] == [], what
    assert {r.name: s for r, s in d.statuses.items()} == {}, what


BAD_SELECTOR = {"matchExpressions": [{"key": "app", "operator": "Bad"}]}


def check_sequence(events: list[tuple[str, str, dict[str, Any]]], lag: bool,
                   breaks: list[bool]) -> None:
    """`breaks`: which policy events make the policy invalid (more often than the shared
    strategies do, so that frozen entries meet pod and policy events); after the same
    events (when not a policy event) the agents report their plans' status."""
    world = World(lag)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plan_contract, "entry_problems", _out_of_bounds)
        for (kind, type_, obj), broken in zip(events, breaks, strict=True):
            if broken and kind in ("policies", "cluster_policies") and type_ != "DELETED":
                obj = {**obj, "spec": {**obj["spec"], "selector": BAD_SELECTOR}}
            world.event(kind, type_, obj)
            world.settle()
            _at_fixed_point(world, (kind, type_, obj))
            if broken and kind not in ("policies", "cluster_policies"):
                world.server.agents_report(len(world.server.writes))
                world.server.flush()
                world.settle()
                _at_fixed_point(world, ("agents", kind, type_, obj))
        # and a restart from the same cluster writes nothing
        again = Reconciler(world.server, world.snapshot,  # type: ignore[arg-type]
                           changes=world.take_changes, resync=1e9)
        again._rejected = dict(world.reconciler._rejected)
        before = len(world.server.writes)
        asyncio.run(again.reconcile())
        assert world.server.writes[before:] == []


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequence_st.flatmap(lambda evs: st.tuples(
    st.just(evs), st.lists(st.sampled_from([False, False, True]), min_size=len(evs),
                           max_size=len(evs)))), st.booleans())
def test_incremental_rounds_leave_what_a_full_round_decides(
        drawn: tuple[list[tuple[str, str, dict[str, Any]]], list[bool]], lag: bool) -> None:
    check_sequence(drawn[0], lag, drawn[1])


# ---- work proportional to what changed ----------------------------------------------

def _sel(app: str) -> dict[str, Any]:
    return {"matchLabels": {"app": app}}


def _cluster(world: World, nodes: int = 4, per_node: int = 3) -> None:
    world.event("namespaces", "ADDED", {"metadata": {"name": "default"}})
    for n in range(nodes):
        world.event("nodes", "ADDED", {"metadata": {"name": f"n{n}"}})
    world.event("policies", "ADDED", mk_policy("web", memory_high={"limitPercent": 50}))
    world.event("policies", "ADDED", mk_policy("db", selector=_sel("db"),
                                               memory_high={"limitPercent": 25}))
    for n in range(nodes):
        for i in range(per_node):
            world.event("pods", "ADDED", mk_pod(f"web-{n}-{i}", node=f"n{n}"))


def _counting_plans(world: World) -> list[str]:
    tracker = world.reconciler.tracker
    assert tracker is not None
    seen: list[str] = []
    real = tracker.resolver.plan

    def plan(node: str) -> Any:
        seen.append(node)
        return real(node)

    tracker.resolver.plan = plan  # type: ignore[method-assign]
    return seen


def test_a_pod_event_writes_and_resolves_only_its_nodes_plan() -> None:
    world = World()
    _cluster(world)
    world.settle()
    assert sorted(n for v, n in world.server.writes if v == "create") == ["n0", "n1", "n2", "n3"]
    _at_fixed_point(world, "start")
    seen = _counting_plans(world)
    before = len(world.server.writes)
    world.event("pods", "ADDED", mk_pod("web-2-0", node="n2", labels={"app": "db"}))
    world.settle()
    assert world.server.writes[before:] == [("replace", "n2"), ("status", "db"),
                                            ("status", "web")]
    assert set(seen) == {"n2"}
    _at_fixed_point(world, "relabel")
    # a pod moving from n1 to n3 (deleted, created again elsewhere): those two plans
    del seen[:]
    before = len(world.server.writes)
    world.event("pods", "DELETED", mk_pod("web-1-0", node="n1"))
    world.event("pods", "ADDED", mk_pod("web-1-0", node="n3"))
    world.settle()
    assert sorted(w for w in world.server.writes[before:] if w[0] != "status") == [
        ("replace", "n1"), ("replace", "n3")]
    assert set(seen) == {"n1", "n3"}
    _at_fixed_point(world, "move")


def test_a_status_echo_and_an_unrelated_policy_resolve_no_node() -> None:
    world = World()
    _cluster(world)
    world.settle()
    seen = _counting_plans(world)
    before = len(world.server.writes)
    world.settle()          # the echoes of the statuses written above
    world.event("policies", "ADDED", mk_policy("none", selector=_sel("nothing")))
    world.settle()
    assert world.server.writes[before:] == [("status", "none")]
    assert seen == []


def test_an_out_of_bounds_entry_is_quarantined_incrementally() -> None:
    """The isolation of plans.py, per node: the policy's pods keep their last good
    entries, the other policy's pods on the same node are updated, the policy is
    Valid=False, and all of it undone when the policy is fixed."""
    world = World()
    _cluster(world, nodes=2, per_node=2)
    world.event("pods", "ADDED", mk_pod("db-0", node="n0", labels={"app": "db"}))
    world.settle()
    plan0 = world.server.plans["n0"]["spec"]
    db_before = next(e["memoryHigh"] for e in plan0["pods"] if e["name"] == "db-0")
    web_before = next(e["memoryHigh"] for e in plan0["pods"] if e["name"] == "web-0-0")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plan_contract, "entry_problems",
                   lambda e: ["memoryHigh: too big"] if e.get("memoryHigh") == 600 * MI
                   else _real_entry_problems(e))
        world.event("policies", "ADDED", mk_policy("db", selector=_sel("db"),
                                                   memory_high={"bytes": "600Mi"}))
        world.event("policies", "ADDED", mk_policy("web", memory_high={"limitPercent": 40}))
        world.settle()
        _at_fixed_point(world, "quarantined")
        pods = {e["name"]: e["memoryHigh"] for e in world.server.plans["n0"]["spec"]["pods"]}
        assert pods["db-0"] == db_before
        assert pods["web-0-0"] != web_before      # the other policy's pod is updated
        db = world.caches["policies"]._objects[("default", "db")]
        valid = {c["type"]: c for c in db["status"]["conditions"]}["Valid"]
        assert (valid["status"], valid["reason"]) == ("False", "InvalidPlanEntry")
        assert world.server.events == ["InvalidPlanEntry"]
        world.event("policies", "ADDED", mk_policy("db", selector=_sel("db"),
                                                   memory_high={"bytes": "500Mi"}))
        world.settle()
        _at_fixed_point(world, "fixed")
    pods = {e["name"]: e["memoryHigh"] for e in world.server.plans["n0"]["spec"]["pods"]}
    assert pods["db-0"] == 500 * MI


def test_a_refused_plan_names_its_policy_and_the_rest_is_written() -> None:
    world = World()
    world.event("namespaces", "ADDED", {"metadata": {"name": "c"}})
    world.event("nodes", "ADDED", {"metadata": {"name": "n1"}})
    world.event("policies", "ADDED", mk_policy("q1", ns="c", selector=_sel("bad")))
    world.event("policies", "ADDED", mk_policy("q2", ns="c", selector=_sel("good")))
    world.event("pods", "ADDED", mk_pod("bad-0", ns="c", node="n1", labels={"app": "bad"}))
    world.event("pods", "ADDED", mk_pod("good-0", ns="c", node="n1", labels={"app": "good"}))
    world.settle()      # the first write is refused (422 naming q1's entry), the next is not
    assert [e["name"] for e in world.server.plans["n1"]["spec"]["pods"]] == ["good-0"]
    q1 = world.caches["policies"]._objects[("c", "q1")]
    valid = {c["type"]: c for c in q1["status"]["conditions"]}["Valid"]
    assert valid["reason"] == "PlanRejected"
    _at_fixed_point(world, "refused")


def test_unknown_node_plans_are_deleted_and_nodes_get_plans() -> None:
    world = World()
    _cluster(world, nodes=3, per_node=1)
    world.settle()
    world.event("nodes", "DELETED", {"metadata": {"name": "n1"}})
    world.settle()
    assert sorted(world.server.plans) == ["n0", "n2"]
    assert ("delete", "n1") in world.server.writes
    _at_fixed_point(world, "node gone")


def test_full_rounds_without_a_feed_are_the_reference() -> None:
    """resync=0: every round is decide() over the snapshot (the fallback)."""
    world = World()
    world.reconciler = Reconciler(world.server, world.snapshot,  # type: ignore[arg-type]
                                  changes=world.take_changes, resync=0)
    assert world.reconciler.tracker is None
    _cluster(world, nodes=2, per_node=1)
    world.settle()
    assert sorted(world.server.plans) == ["n0", "n1"]
    _at_fixed_point(world, "full")


def test_an_invalid_policys_frozen_entries_follow_their_pods() -> None:
    """freeze_invalid per node: entries of a policy that became invalid stay, and leave
    when their pod ends, though no policy wins that pod any more."""
    world = World()
    _cluster(world, nodes=2, per_node=2)
    world.settle()
    broken = mk_policy("web", selector={"matchExpressions": [{"key": "app", "operator": "Bad"}]})
    world.event("policies", "ADDED", broken)
    world.settle()
    _at_fixed_point(world, "frozen")
    assert [e["name"] for e in world.server.plans["n1"]["spec"]["pods"]] == ["web-1-0", "web-1-1"]
    world.event("pods", "DELETED", mk_pod("web-1-0", node="n1"))
    world.settle()
    assert [e["name"] for e in world.server.plans["n1"]["spec"]["pods"]] == ["web-1-1"]
    _at_fixed_point(world, "frozen pod gone")
    world.event("policies", "DELETED", broken)
    world.settle()
    assert world.server.plans["n1"]["spec"]["pods"] == []
    _at_fixed_point(world, "invalid policy gone")


def test_a_resync_starts_over_and_frees_the_old_state() -> None:
    """A full round again (resync due): the same plans (no writes), and the old state,
    frozen out of the collector after the first round, is collected (it has cycles)."""
    import gc
    import weakref

    world = World()
    _cluster(world, nodes=2, per_node=2)
    world.event("policies", "ADDED", mk_policy("web-tie"))    # rivals of each other: a cycle
    world.settle()
    tracker = world.reconciler.tracker
    assert tracker is not None and gc.get_freeze_count() > 0
    old = weakref.ref(tracker.resolver._policies[PolicyRef("MemoryReclaimPolicy", "default",
                                                           "web-tie")])
    assert old().rivals  # type: ignore[union-attr]
    before = len(world.server.writes)
    world.reconciler._resync_at = 0.0
    world.settle()
    assert world.reconciler.full_rounds == 2
    assert world.server.writes[before:] == []
    del tracker
    gc.collect()
    assert old() is None


def _counting(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[Any]:
    calls: list[Any] = []
    real = getattr(module, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_a_pod_event_recounts_only_its_nodes_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    """A policy over many nodes: a pod event patches that node's line and the policy's
    totals (no node_summary of the other nodes, no status from all lines), and the
    status is the full round's (at the fixed point)."""
    from headroom.controller import status as status_mod
    from headroom.controller import tracker as tracker_mod

    world = World()
    _cluster(world, nodes=12, per_node=2)
    world.settle()
    world.server.agents_report(0)        # outcomes on every node: enforced counts
    world.settle()
    _at_fixed_point(world, "start")
    summaries = _counting(monkeypatch, status_mod, "node_summary")
    from_nodes = _counting(monkeypatch, status_mod, "status_from_nodes")
    checks = _counting(monkeypatch, tracker_mod.plan_contract, "entry_problems")
    before = len(world.server.writes)
    world.event("pods", "ADDED", mk_pod("web-5-9", node="n5"))
    world.settle()
    assert world.server.writes[before:] == [("replace", "n5"), ("status", "web")]
    assert {args[0] for args in summaries} <= {"n5"}
    assert from_nodes == []
    assert len(checks) == 1                  # the new entry alone
    _at_fixed_point(world, "new pod")
    status = world.caches["policies"]._objects[("default", "web")]["status"]
    assert status["nodeCount"] == 12 and status["matchedPods"] == 25
    # an agent's status on one node: that node's lines are counted again, no other
    del summaries[:]
    plan = world.server.plans["n3"]
    pods = [{"uid": e["uid"], "applied": True, "memoryHigh": e["memoryHigh"]}
            for e in plan["spec"]["pods"]]
    obj = {**plan, "status": {"pods": pods},
           "metadata": {**plan["metadata"], "resourceVersion": world.server.next_rv()}}
    world.server.plans["n3"] = obj
    world.caches["plans"].apply("MODIFIED", slim_plan(obj))
    world.settle()
    assert {args[0] for args in summaries} == {"n3"}
    _at_fixed_point(world, "agent on n3")


def test_status_lines_are_patched_as_a_recount_would_give(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """After pod and policy events and agents' reports, every policy's lines, totals
    and listing order are what counting every node's desired spec again gives."""
    from headroom.controller import status as status_mod

    world = World()
    _cluster(world, nodes=6, per_node=3)
    world.settle()
    steps = [("pods", mk_pod("web-1-0", node="n1", labels={"app": "db"})),
             ("agents", None),
             ("policies", mk_policy("web-hi", priority=5)),
             ("pods", mk_pod("web-4-7", node="n4")),
             ("agents", None),
             ("pods", mk_pod("web-2-1", node="n5"))]
    for kind, obj in steps:
        if kind == "agents":
            world.server.agents_report(len(world.server.writes))
            world.server.flush()
        else:
            world.event(kind, "ADDED", obj)
        world.settle()
        _at_fixed_point(world, (kind, obj))
        tracker = world.reconciler.tracker
        assert tracker is not None
        want: dict[str, dict[str, dict[str, Any]]] = {}
        for node, spec in tracker._desired.items():
            outcomes = status_mod.plan_outcomes({node: tracker.plan_objs[node]}) \
                if node in tracker.plan_objs else {}
            grouped: dict[str, list[Any]] = {}
            for e in spec.get("pods") or ():
                grouped.setdefault(tracker._entry_key(e), []).append(e)
            for key, entries in grouped.items():
                want.setdefault(key, {})[node] = status_mod.node_summary(node, entries,
                                                                         outcomes)
        assert tracker._summaries == want
        for key, lines in want.items():
            totals = tracker._totals[key]
            assert totals.planned == sum(n["pods"] for n in lines.values())
            assert totals.enforced == sum(n["enforced"] for n in lines.values())
            assert totals.order == sorted(map(status_mod.listing_order, lines.values()))
        assert tracker._totals.keys() == want.keys()


def test_the_entry_key_memo_tells_apart_what_only_compares_equal() -> None:
    """canonical() of an entry's policy, memoized: values that are equal as keys (True
    and 1) but not as JSON get their own text, and odd policies are not memoized."""
    from headroom.controller.plans import canonical
    from headroom.controller.tracker import PlanTracker

    tracker = PlanTracker()
    entries = [{"policy": {"kind": "K", "name": True}}, {"policy": {"kind": "K", "name": 1}},
               {"policy": {"kind": "K", "name": 1.0}}, {"policy": {"name": 1, "kind": "K"}},
               {"policy": "K"}, {"policy": None}, {"policy": ["K"]}, {"policy": {"k": [1]}},
               {}]
    for _ in range(2):
        assert [tracker._entry_key(e) for e in entries] == [
            canonical(e.get("policy")) for e in entries]
