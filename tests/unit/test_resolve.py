"""resolve(): selection, precedence, conflicts, skips, plan content and determinism."""

from __future__ import annotations

import json
import random
from types import MappingProxyType
from typing import Any

from headroom.controller.resolve import (
    CLUSTER_KIND,
    NAMESPACED_KIND,
    PodRef,
    PolicyRef,
    SkippedPod,
    resolve,
)

GI = 1 << 30


def mk_pod(name: str, ns: str = "default", node: str = "n1", labels: dict[str, str] | None = None,
           limit: str | None = "1Gi", request: str | None = None, **extra: Any) -> dict[str, Any]:
    res: dict[str, Any] = {}
    if limit:
        res["limits"] = {"memory": limit}
    if request:
        res["requests"] = {"memory": request}
    p: dict[str, Any] = {
        "metadata": {"name": name, "namespace": ns, "uid": f"uid-{ns}-{name}",
                     "labels": labels if labels is not None else {"app": "web"}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "resources": res}]},
        "status": {"phase": "Running"},
    }
    for k, v in extra.items():
        p[k] = {**p.get(k, {}), **v}
    return p


def mk_policy(name: str, ns: str = "default", selector: dict[str, Any] | None = None,
              memory_high: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    s: dict[str, Any] = {"selector": selector if selector is not None else {
        "matchLabels": {"app": "web"}}, "memoryHigh": memory_high or {"limitPercent": 50}}
    s.update(spec)
    return {"metadata": {"name": name, "namespace": ns, "generation": 1}, "spec": s}


def mk_cluster(name: str, ns_selector: dict[str, Any] | None = None,
               **kw: Any) -> dict[str, Any]:
    obj = mk_policy(name, **kw)
    del obj["metadata"]["namespace"]
    obj["spec"]["namespaceSelector"] = ns_selector if ns_selector is not None else {}
    return obj


def mk_ns(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}}


def ref(name: str, ns: str = "default") -> PolicyRef:
    return PolicyRef(NAMESPACED_KIND, ns, name)


def cref(name: str) -> PolicyRef:
    return PolicyRef(CLUSTER_KIND, "", name)


def entries(res: Any) -> dict[str, dict[str, Any]]:
    """pod name -> plan entry, over all plans."""
    return {e["name"]: e for plan in res.plans.values() for e in plan["pods"]}


def test_plan_entry_is_the_documented_shape() -> None:
    res = resolve([mk_policy("web", reclaim={"swappiness": 10, "nodeCpuBudget": "300m"})], [],
                  [mk_pod("web-0", request="512Mi")], [])
    assert res.plans == {"n1": {"nodeName": "n1", "nodeCpuBudget": "300m", "pods": [{
        "uid": "uid-default-web-0", "namespace": "default", "name": "web-0",
        "qosClass": "Burstable", "memoryHigh": GI // 2, "dryRun": False,
        "policy": {"kind": NAMESPACED_KIND, "namespace": "default", "name": "web"},
        "reclaim": {"mode": "Watermark", "headroomPercent": 5, "targetPercent": 10,
                    "stepBytes": 16 << 20, "maxBytesPerSecond": 512 << 20, "swappiness": 10,
                    "pressureTargetBasisPoints": 10, "livelockGuard": True}}]}}
    report = res.policies[ref("web")]
    assert (report.valid, report.matched_pods, report.planned_pods, report.nodes) == \
        (True, 1, 1, {"n1": 1})


def test_namespaced_policy_only_sees_its_namespace() -> None:
    pods = [mk_pod("a", ns="default"), mk_pod("b", ns="other")]
    res = resolve([mk_policy("web")], [], pods, [])
    assert set(entries(res)) == {"a"}


def test_selector_semantics_through_resolve() -> None:
    pods = [mk_pod("a", labels={"app": "web", "track": "canary"}),
            mk_pod("b", labels={"app": "web"}), mk_pod("c", labels={"app": "db"})]
    sel = {"matchLabels": {"app": "web"},
           "matchExpressions": [{"key": "track", "operator": "NotIn", "values": ["canary"]}]}
    assert set(entries(resolve([mk_policy("p", selector=sel)], [], pods, []))) == {"b"}
    assert set(entries(resolve([mk_policy("p", selector={})], [], pods, []))) == {"a", "b", "c"}


def test_only_scheduled_running_pods() -> None:
    pods = [mk_pod("run"), mk_pod("pending", status={"phase": "Pending"}),
            mk_pod("done", status={"phase": "Succeeded"}),
            mk_pod("failed", status={"phase": "Failed"}),
            mk_pod("deleting", metadata={"deletionTimestamp": "2026-01-01T00:00:00Z"}),
            mk_pod("unscheduled", node="")]
    res = resolve([mk_policy("web")], [], pods, [])
    assert set(entries(res)) == {"run", "pending"}
    assert res.policies[ref("web")].matched_pods == 2


def test_cluster_policy_uses_namespace_labels() -> None:
    pods = [mk_pod("a", ns="prod"), mk_pod("b", ns="dev"), mk_pod("c", ns="unlisted")]
    nss = [mk_ns("prod", env="prod"), mk_ns("dev", env="dev")]
    res = resolve([], [mk_cluster("c", {"matchLabels": {"env": "prod"}})], pods, nss)
    assert set(entries(res)) == {"a"}
    assert entries(res)["a"]["policy"] == {"kind": CLUSTER_KIND, "name": "c"}
    # The automatic name label works even for namespaces missing from the input.
    by_name = {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In",
                                     "values": ["unlisted", "dev"]}]}
    assert set(entries(resolve([], [mk_cluster("c", by_name)], pods, nss))) == {"b", "c"}
    assert set(entries(resolve([], [mk_cluster("c")], pods, nss))) == {"a", "b", "c"}


def test_higher_priority_wins_without_conflict() -> None:
    low = mk_policy("low", memory_high={"limitPercent": 50})
    high = mk_policy("high", memory_high={"limitPercent": 80}, priority=5)
    res = resolve([low, high], [], [mk_pod("a")], [])
    assert entries(res)["a"]["policy"]["name"] == "high"
    assert res.policies[ref("low")].shadowed_pods == 1
    assert res.policies[ref("low")].matched_pods == 0
    assert res.policies[ref("high")].conflicts == res.policies[ref("low")].conflicts == []


def test_cluster_policy_with_higher_priority_beats_namespaced() -> None:
    res = resolve([mk_policy("ns")], [mk_cluster("cl", priority=1)], [mk_pod("a")], [])
    assert entries(res)["a"]["policy"]["kind"] == CLUSTER_KIND


def test_namespaced_beats_cluster_at_equal_priority_without_conflict() -> None:
    res = resolve([mk_policy("ns")], [mk_cluster("cl")], [mk_pod("a"), mk_pod("b", ns="x")], [])
    e = entries(res)
    assert e["a"]["policy"]["kind"] == NAMESPACED_KIND
    assert e["b"]["policy"]["kind"] == CLUSTER_KIND
    assert res.policies[cref("cl")].shadowed_pods == 1
    assert res.policies[cref("cl")].conflicts == []


def test_tie_is_broken_by_name_and_reported_on_both() -> None:
    pods = [mk_pod("a"), mk_pod("b")]
    for order in ([mk_policy("zeta"), mk_policy("alpha")], [mk_policy("alpha"), mk_policy("zeta")]):
        res = resolve(order, [], pods, [])
        assert {e["policy"]["name"] for e in entries(res).values()} == {"alpha"}
        assert res.policies[ref("alpha")].conflicts == [ref("zeta")]
        assert res.policies[ref("zeta")].conflicts == [ref("alpha")]
        assert res.policies[ref("zeta")].shadowed_pods == 2


def test_tie_between_cluster_policies_is_a_conflict() -> None:
    res = resolve([], [mk_cluster("b"), mk_cluster("a")], [mk_pod("p")], [])
    assert entries(res)["p"]["policy"]["name"] == "a"
    assert res.policies[cref("b")].conflicts == [cref("a")]


def test_pod_without_limit_is_skipped_with_reason_and_not_given_to_a_lower_policy() -> None:
    pods = [mk_pod("nolimit", limit=None, request="1Gi"), mk_pod("ok")]
    fallback = mk_policy("fallback", memory_high={"bytes": "2Gi"}, priority=-1)
    for mh in ({"limitPercent": 90}, {"throttlingPercent": 50}):
        res = resolve([mk_policy("web", memory_high=mh), fallback], [], pods, [])
        assert set(entries(res)) == {"ok"}
        report = res.policies[ref("web")]
        assert report.matched_pods == 2 and report.planned_pods == 1
        assert report.skipped == [SkippedPod(PodRef("default", "nolimit", "uid-default-nolimit"),
                                             "n1", "NoMemoryLimit", report.skipped[0].message)]
        assert "limit" in report.skipped[0].message


def test_bytes_form_applies_without_limit_and_is_capped_at_the_limit() -> None:
    pods = [mk_pod("nolimit", limit=None), mk_pod("small", limit="1Gi")]
    res = resolve([mk_policy("web", memory_high={"bytes": "3Gi"})], [], pods, [])
    e = entries(res)
    assert e["nolimit"]["memoryHigh"] == 3 * GI
    assert e["small"]["memoryHigh"] == GI


def test_memory_high_is_page_aligned_and_follows_the_kubelet_formula() -> None:
    pods = [mk_pod("a", limit="1000000000", request="300000001")]
    res = resolve([mk_policy("web", memory_high={"throttlingPercent": 90})], [], pods, [])
    high = entries(res)["a"]["memoryHigh"]
    assert high % 4096 == 0
    exact = 300000001 + 0.9 * (1000000000 - 300000001)
    assert exact - 4096 < high <= exact


def test_below_minimum_is_skipped() -> None:
    res = resolve([mk_policy("web", memory_high={"limitPercent": 1})], [],
                  [mk_pod("tiny", limit="64Mi")], [])
    assert res.plans == {}
    assert res.policies[ref("web")].skipped[0].reason == "BelowMinimum"


def test_invalid_policy_contributes_nothing_and_lets_others_win() -> None:
    bad = mk_policy("bad", selector={"matchExpressions": [{"key": "a", "operator": "Near"}]},
                    priority=100)
    res = resolve([bad, mk_policy("good")], [], [mk_pod("a")], [])
    assert entries(res)["a"]["policy"]["name"] == "good"
    report = res.policies[ref("bad")]
    assert (report.valid, report.reason, report.matched_pods) == (False, "InvalidSelector", 0)
    assert "operator" in report.message and report.generation == 1


def test_dry_run_pods_appear_with_dry_run_flag() -> None:
    res = resolve([mk_policy("web", dryRun=True)], [], [mk_pod("a")], [])
    assert entries(res)["a"]["dryRun"] is True
    assert res.policies[ref("web")].dry_run


def test_cpu_budget_is_the_smallest_of_the_policies_on_the_node() -> None:
    pods = [mk_pod("a", labels={"app": "a"}), mk_pod("b", labels={"app": "b"}),
            mk_pod("c", labels={"app": "c"}, node="n2"), mk_pod("d", labels={"app": "d"},
                                                                node="n3")]
    pols = [mk_policy("a", selector={"matchLabels": {"app": "a"}},
                      reclaim={"nodeCpuBudget": "500m"}),
            mk_policy("b", selector={"matchLabels": {"app": "b"}},
                      reclaim={"nodeCpuBudget": "200m"}),
            mk_policy("c", selector={"matchLabels": {"app": "c"}},
                      reclaim={"nodeCpuBudget": 2}),
            mk_policy("d", selector={"matchLabels": {"app": "d"}})]
    res = resolve(pols, [], pods, [])
    assert res.plans["n1"]["nodeCpuBudget"] == "200m"
    assert res.plans["n2"]["nodeCpuBudget"] == "2000m"
    assert "nodeCpuBudget" not in res.plans["n3"]


def test_nodes_given_yields_empty_plans_and_drops_pods_of_unknown_nodes() -> None:
    pods = [mk_pod("a", node="n1"), mk_pod("b", node="gone")]
    res = resolve([mk_policy("web")], [], pods, [], nodes=[mk_ns("n1"), mk_ns("n2")])
    assert list(res.plans) == ["n1", "n2"]
    assert res.plans["n2"] == {"nodeName": "n2", "pods": []}
    assert set(entries(res)) == {"a"}
    assert set(resolve([mk_policy("web")], [], pods, []).plans) == {"gone", "n1"}


def test_every_policy_gets_a_report_even_without_pods() -> None:
    res = resolve([mk_policy("web")], [mk_cluster("c")], [], [])
    assert list(res.policies) == [cref("c"), ref("web")]
    assert res.plans == {}


def test_deterministic_and_byte_equal_under_input_permutation() -> None:
    rng = random.Random(7)
    pods = [mk_pod(f"p{i}", ns=f"ns{i % 3}", node=f"n{i % 4}",
                   labels={"app": rng.choice(["web", "db"]), "i": str(i)}) for i in range(60)]
    pols = [mk_policy(f"pol{i}", ns=f"ns{i % 3}", selector={"matchLabels": {"app": "web"}},
                      priority=i % 2) for i in range(6)]
    cls = [mk_cluster(f"c{i}", selector={}, priority=1) for i in range(2)]
    nss = [mk_ns(f"ns{i}") for i in range(3)]
    first = resolve(pols, cls, pods, nss)
    for _ in range(5):
        rng.shuffle(pods)
        rng.shuffle(pols)
        rng.shuffle(cls)
        again = resolve(pols, cls, pods, nss)
        assert json.dumps(again.plans) == json.dumps(first.plans)
        assert again.policies == first.policies
    assert sum(len(p["pods"]) for p in first.plans.values()) == 60
    for plan in first.plans.values():
        keys = [(e["namespace"], e["name"], e["uid"]) for e in plan["pods"]]
        assert keys == sorted(keys)


def _frozen(x: Any) -> Any:
    """Read-only, non-dict mappings all the way down (as some clients hand out)."""
    if isinstance(x, dict):
        return MappingProxyType({k: _frozen(v) for k, v in x.items()})
    if isinstance(x, list):
        return tuple(_frozen(v) for v in x)
    return x


def test_input_is_not_modified_and_may_be_any_mapping() -> None:
    pods = [mk_pod("a", request="512Mi"), mk_pod("b", ns="x", limit=None)]
    pols, cls, nss = [mk_policy("web")], [mk_cluster("c", memory_high={"bytes": "1Gi"})], []
    before = json.dumps([pods, pols, cls])
    plain = resolve(pols, cls, pods, nss)
    assert json.dumps([pods, pols, cls]) == before
    frozen = resolve(_frozen(pols), _frozen(cls), _frozen(pods), nss)
    assert json.dumps(frozen.plans) == json.dumps(plain.plans)
    assert len(entries(plain)) == 2
