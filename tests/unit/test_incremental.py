"""IncrementalResolver equals resolve() after every event of random event sequences.

Hypothesis draws sequences of pod, policy, namespace and node events over a small
universe (few names, labels and nodes, so selectors overlap, policies tie, pods move,
and skips, invalid policies and unknown nodes all occur). After each event the
incremental state must equal a full resolve() of the same objects (plans and every
policy report: matched, planned, nodes, skipped, shadowed, conflicts), and every
plan or report that changed must have been reported by take_dirty().

HEADROOM_PROPERTY_EXAMPLES raises the number of sequences (default 150, fast enough
for CI); e.g. HEADROOM_PROPERTY_EXAMPLES=5000 for a long run.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from headroom.controller.incremental import IncrementalResolver
from headroom.controller.resolve import Resolution, resolve
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("HEADROOM_PROPERTY_EXAMPLES", "150"))

NAMESPACES = ["a", "b", "c"]          # c has pods but rarely policies
NODES = ["n1", "n2", "n3"]          # pods may also name n4, which never exists
LABEL_KEYS = ["app", "tier"]
LABEL_VALUES = ["web", "db", "x"]

labels_st = st.dictionaries(st.sampled_from(LABEL_KEYS), st.sampled_from(LABEL_VALUES),
                            max_size=2)
pod_labels_st = st.one_of(st.dictionaries(st.sampled_from(LABEL_KEYS),
                                          st.sampled_from(LABEL_VALUES), min_size=1,
                                          max_size=2), st.just({}))


@st.composite
def pod_st(draw: Any) -> dict[str, Any]:
    ns = draw(st.sampled_from(["a", "b", "a", "c"]))
    name = f"p{draw(st.integers(0, 7))}"
    limit = draw(st.sampled_from(["1Gi", "2Gi", "1Gi", "64Mi", None, "512Ki"]))
    request = draw(st.sampled_from([None, "256Mi", "1Gi"]))
    res: dict[str, Any] = {}
    if limit:
        res["limits"] = {"memory": limit}
    if request:
        res["requests"] = {"memory": request}
    meta: dict[str, Any] = {"name": name, "namespace": ns,
                            "uid": f"{ns}-{name}-{draw(st.integers(0, 1))}",
                            "labels": draw(pod_labels_st)}
    if draw(st.sampled_from([False] * 9 + [True])):
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    spec: dict[str, Any] = {"containers": [{"name": "c", "resources": res}]}
    node = draw(st.sampled_from(["n1", "n2", "n1", "n2", "n3", "n4", None]))
    if node:
        spec["nodeName"] = node
    phase = draw(st.sampled_from(["Running"] * 4 + ["Pending", "Succeeded", "Failed"]))
    return {"metadata": meta, "spec": spec, "status": {"phase": phase}}


requirement_st = st.one_of(
    st.fixed_dictionaries({"key": st.sampled_from(LABEL_KEYS),
                           "operator": st.sampled_from(["In", "NotIn"]),
                           "values": st.lists(st.sampled_from(LABEL_VALUES), min_size=1,
                                              max_size=2, unique=True)}),
    st.fixed_dictionaries({"key": st.sampled_from([*LABEL_KEYS, "kubernetes.io/metadata.name",
                                                   "env"]),
                           "operator": st.sampled_from(["Exists", "DoesNotExist"])}),
)
selector_st = st.fixed_dictionaries({}, optional={
    "matchLabels": labels_st, "matchExpressions": st.lists(requirement_st, max_size=2)})
ns_selector_st = st.one_of(
    st.just({}),
    st.fixed_dictionaries({"matchLabels": st.dictionaries(
        st.sampled_from(["env", "kubernetes.io/metadata.name"]),
        st.sampled_from(["prod", "dev", "a", "b"]), max_size=1)}),
    st.fixed_dictionaries({"matchExpressions": st.lists(st.fixed_dictionaries({
        "key": st.just("env"), "operator": st.sampled_from(["Exists", "DoesNotExist"])}),
        min_size=1, max_size=1)}))
memory_high_st = st.sampled_from([{"limitPercent": 50}, {"limitPercent": 1},
                                  {"throttlingPercent": 50}, {"bytes": "300Mi"},
                                  {"bytes": "1Gi"}])
reclaim_st = st.sampled_from([None, {"nodeCpuBudget": "500m"}, {"nodeCpuBudget": "250m"},
                              {"mode": "Pressure"}, None, None, {"mode": "bogus"}])


@st.composite
def policy_st(draw: Any, cluster: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": draw(selector_st),
                            "memoryHigh": draw(memory_high_st),
                            "priority": draw(st.sampled_from([0, 1, 0, -1]))}
    reclaim = draw(reclaim_st)
    if reclaim is not None:
        spec["reclaim"] = reclaim
    if draw(st.booleans()):
        spec["dryRun"] = draw(st.booleans())
    if draw(st.sampled_from([False] * 12 + [True])):
        spec["selector"] = {"matchExpressions": [{"key": "app", "operator": "Bad"}]}
    meta: dict[str, Any] = {"name": f"q{draw(st.integers(0, 2))}",
                            "generation": draw(st.integers(1, 3))}
    if cluster:
        spec["namespaceSelector"] = draw(ns_selector_st)
    else:
        meta["namespace"] = draw(st.sampled_from(["a", "b", "a", "c"]))
    return {"metadata": meta, "spec": spec}


namespace_st = st.builds(
    lambda name, labels: {"metadata": {"name": name, "labels": labels}},
    st.sampled_from(NAMESPACES),
    st.dictionaries(st.sampled_from(["env", "team"]), st.sampled_from(["prod", "dev"]),
                    max_size=2))

event_st = st.one_of(
    st.tuples(st.just("pods"), st.sampled_from(["ADDED", "ADDED", "DELETED"]), pod_st()),
    st.tuples(st.just("policies"), st.sampled_from(["ADDED", "ADDED", "DELETED"]),
              policy_st(cluster=False)),
    st.tuples(st.just("cluster_policies"), st.sampled_from(["ADDED", "ADDED", "DELETED"]),
              policy_st(cluster=True)),
    st.tuples(st.just("namespaces"), st.sampled_from(["ADDED", "ADDED", "DELETED"]),
              namespace_st),
    st.tuples(st.just("nodes"), st.sampled_from(["ADDED", "DELETED"]),
              st.builds(lambda n: {"metadata": {"name": n}}, st.sampled_from(NODES))),
)


def _key(kind: str, obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj["metadata"]
    ns = meta.get("namespace") or ("default" if kind == "pods" else "")
    return ns, meta["name"]


def _full(world: dict[str, dict[tuple[str, str], dict[str, Any]]]) -> Resolution:
    def objs(kind: str) -> list[dict[str, Any]]:
        return [world[kind][k] for k in sorted(world[kind])]
    return resolve(objs("policies"), objs("cluster_policies"), objs("pods"),
                   objs("namespaces"), nodes=objs("nodes"))


def _unshadowed(report: Any, shadowed: bool) -> Any:
    """The report as take_dirty(shadowed) answers for it."""
    if report is None or shadowed:
        return report
    return dataclasses.replace(report, shadowed_pods=0)


def check_sequence(events: list[tuple[str, str, dict[str, Any]]]) -> None:
    world: dict[str, dict[tuple[str, str], dict[str, Any]]] = {
        k: {} for k in ("policies", "cluster_policies", "pods", "namespaces", "nodes")}
    inc = IncrementalResolver()
    kept: dict[str, list[Any]] = {}
    before = _full(world)
    for step, (kind, type_, obj) in enumerate(events):
        key = _key(kind, obj)
        if type_ == "DELETED":
            if key not in world[kind]:
                continue      # a watch never reports deleting what it did not have
            obj = world[kind].pop(key)
        else:
            world[kind][key] = obj
        inc.apply(kind, type_, obj)
        want = _full(world)
        got = inc.resolution()
        assert got.plans == want.plans, (kind, type_, obj)
        assert got.policies == want.policies, (kind, type_, obj)
        # every other step without the policies whose report differs in shadowed_pods alone
        shadowed = step % 2 == 0
        nodes, policies = inc.take_dirty(shadowed=shadowed)
        changed_nodes = {n for n in {*want.plans, *before.plans}
                         if want.plans.get(n) != before.plans.get(n)}
        changed_policies = {r for r in {*want.policies, *before.policies}
                            if _unshadowed(want.policies.get(r), shadowed)
                            != _unshadowed(before.policies.get(r), shadowed)}
        assert changed_nodes <= nodes, (kind, type_, obj)
        assert changed_policies <= policies, (kind, type_, obj)
        before = want
        _check_entry_changes(inc, kept, (kind, type_, obj))


def _check_entry_changes(inc: IncrementalResolver, kept: dict[str, list[Any]],
                         what: Any) -> None:
    """take_entry_changes(): the last plan's entries, less those that went, plus those
    that came, are the plan's entries now (as objects); `kept` holds the last plans."""
    for node in NODES:
        diff = inc.take_entry_changes(node)
        plan = inc.plan(node)
        if plan is None:
            assert diff is None, what
            kept.pop(node, None)
            continue
        if diff is not None and node in kept:
            came, gone = ({id(e) for e in part} for part in diff)
            old = {id(e) for e in kept[node]}
            assert gone <= old and not came & old, what
            assert (old - gone) | came == {id(e) for e in plan["pods"]}, what
        kept[node] = plan["pods"]


def _added(kind: str, objs: st.SearchStrategy[dict[str, Any]],
           n: int) -> st.SearchStrategy[list[tuple[str, str, dict[str, Any]]]]:
    return st.lists(st.tuples(st.just(kind), st.just("ADDED"), objs), min_size=1, max_size=n)


# a populated start (nodes, namespaces, pods, policies), then random events of every kind
sequence_st = st.tuples(
    st.just([("nodes", "ADDED", {"metadata": {"name": n}}) for n in NODES[:2]]),
    _added("namespaces", namespace_st, 3),
    _added("policies", policy_st(cluster=False), 5),
    _added("cluster_policies", policy_st(cluster=True), 4),
    _added("pods", pod_st(), 16),
    st.lists(event_st, min_size=1, max_size=40),
).map(lambda parts: [e for part in parts for e in part])


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequence_st)
def test_incremental_equals_full_resolve(events: list[tuple[str, str, dict[str, Any]]]) -> None:
    check_sequence(events)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequence_st)
def test_bulk_load_equals_full_resolve(events: list[tuple[str, str, dict[str, Any]]]) -> None:
    """load() (the cold start: everything at once) gives resolve()'s result, and events
    applied after it keep giving it."""
    world: dict[str, dict[tuple[str, str], dict[str, Any]]] = {
        k: {} for k in ("policies", "cluster_policies", "pods", "namespaces", "nodes")}
    half = len(events) // 2
    for kind, type_, obj in events[:half]:
        key = _key(kind, obj)
        if type_ == "DELETED":
            world[kind].pop(key, None)
        else:
            world[kind][key] = obj

    def objs(kind: str) -> list[dict[str, Any]]:
        return [world[kind][k] for k in sorted(world[kind])]
    inc = IncrementalResolver()
    inc.load([o["metadata"]["name"] for o in objs("nodes")], objs("namespaces"),
             objs("policies"), objs("cluster_policies"), objs("pods"))
    want = _full(world)
    got = inc.resolution()
    assert got.plans == want.plans
    assert got.policies == want.policies
    for kind, type_, obj in events[half:]:
        key = _key(kind, obj)
        if type_ == "DELETED":
            if key not in world[kind]:
                continue
            obj = world[kind].pop(key)
        else:
            world[kind][key] = obj
        inc.apply(kind, type_, obj)
        want = _full(world)
        got = inc.resolution()
        assert (got.plans, got.policies) == (want.plans, want.policies), (kind, type_, obj)


def test_priority_change_moves_pods_and_conflicts() -> None:
    """A hand-written sequence through the documented precedence rules (docs/api.md)."""
    pod = {"metadata": {"name": "p", "namespace": "a", "uid": "u", "labels": {"app": "web"}},
           "spec": {"nodeName": "n1", "containers": [
               {"name": "c", "resources": {"limits": {"memory": "1Gi"}}}]},
           "status": {"phase": "Running"}}

    def pol(name: str, prio: int, cluster: bool = False) -> dict[str, Any]:
        spec: dict[str, Any] = {"selector": {"matchLabels": {"app": "web"}},
                                "memoryHigh": {"limitPercent": 50}, "priority": prio}
        meta: dict[str, Any] = {"name": name}
        if cluster:
            spec["namespaceSelector"] = {}
        else:
            meta["namespace"] = "a"
        return {"metadata": meta, "spec": spec}

    check_sequence([
        ("nodes", "ADDED", {"metadata": {"name": "n1"}}),
        ("pods", "ADDED", pod),
        ("cluster_policies", "ADDED", pol("c", 0, cluster=True)),   # wins alone
        ("policies", "ADDED", pol("y", 0)),      # namespaced beats cluster at equal priority
        ("policies", "ADDED", pol("x", 0)),      # tie with y: x wins by name, both conflict
        ("cluster_policies", "ADDED", pol("c", 5, cluster=True)),   # higher priority wins
        ("policies", "DELETED", pol("x", 0)),
        ("nodes", "DELETED", {"metadata": {"name": "n1"}}),
    ])


def test_a_rival_is_dirty_when_its_conflicts_change_and_shadowed_pods_apart() -> None:
    """Two policies of equal precedence: the first pod they both select makes them
    rivals (both dirty); a second only changes the loser's shadowed_pods, which
    take_dirty(shadowed=False) leaves out and take_dirty() reports."""
    from test_resolve import mk_pod, mk_policy

    inc = IncrementalResolver()
    inc.apply("nodes", "ADDED", {"metadata": {"name": "n1"}})
    inc.apply("policies", "ADDED", mk_policy("a"))
    inc.apply("policies", "ADDED", mk_policy("b"))
    inc.take_dirty()
    a, b = (r for r in inc.policy_refs())
    inc.apply("pods", "ADDED", mk_pod("web-0", node="n1"))
    assert inc.take_dirty(shadowed=False)[1] == {a, b}
    assert inc.report(b).conflicts == [a]        # type: ignore[union-attr]
    inc.apply("pods", "ADDED", mk_pod("web-1", node="n1"))
    assert inc.take_dirty(shadowed=False)[1] == {a}
    inc.apply("pods", "ADDED", mk_pod("web-2", node="n1"))
    assert inc.take_dirty()[1] == {a, b}
    assert inc.report(b).shadowed_pods == 3      # type: ignore[union-attr]


def test_a_long_log_of_entry_changes_is_dropped() -> None:
    """More changes on a node between two calls than the log keeps: not known (None),
    and known again from the next call on."""
    from headroom.controller import incremental
    from test_resolve import mk_pod, mk_policy

    inc = IncrementalResolver()
    inc.apply("nodes", "ADDED", {"metadata": {"name": "n1"}})
    inc.apply("policies", "ADDED", mk_policy("a"))
    assert inc.take_entry_changes("n1") is None          # the first call
    assert inc.take_entry_changes("n1") == ([], [])
    for i in range(incremental._LOG_MAX + 1):
        inc.apply("pods", "ADDED", mk_pod(f"web-{i}", node="n1"))
    assert inc.take_entry_changes("n1") is None
    inc.apply("pods", "DELETED", mk_pod("web-0", node="n1"))
    came, gone = inc.take_entry_changes("n1")            # type: ignore[misc]
    assert came == [] and [e["name"] for e in gone] == ["web-0"]
    assert inc.take_entry_changes("nowhere") is None
