"""Isolation: one policy's bad values or refused entries never hold up another policy's pods."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from headroom.controller import reconciler
from headroom.controller.plans import canonical, check_entries, quarantine, rejected_policies
from headroom.controller.reconciler import Snapshot, decide
from test_resolve import mk_pod, mk_policy

MI = 1 << 20
NOW = "2026-12-01T00:00:00Z"
HOSTILE = {
    "bytes-8Ei": {"memoryHigh": {"bytes": "8Ei"}},
    "bytes-99999999999Ei": {"memoryHigh": {"bytes": "99999999999Ei"}},
    "bytes-1e100": {"memoryHigh": {"bytes": "1e100"}},
    "step-1e100": {"reclaim": {"stepBytes": "1e100"}},
    "rate-8Ei": {"reclaim": {"maxBytesPerSecond": "8Ei"}},
    "cpu-400-digits": {"reclaim": {"nodeCpuBudget": "9" * 400}},
    "cpu-million": {"reclaim": {"nodeCpuBudget": "1000000"}},
}


def _snap(policies: list[dict[str, Any]], pods: list[dict[str, Any]],
          plans: dict[str, dict[str, Any]] | None = None) -> Snapshot:
    return Snapshot(policies=policies, pods=pods,
                    namespaces=[{"metadata": {"name": "default"}}, {"metadata": {"name": "t"}}],
                    nodes=[{"metadata": {"name": "n1", "uid": "node-uid"}}],
                    plans={n: {"spec": s} for n, s in (plans or {}).items()})


def _pods_of(decisions: reconciler.Decisions) -> dict[str, int]:
    (action,) = [a for a in decisions.actions if a.node == "n1"]
    assert action.spec is not None
    return {e["name"]: e["memoryHigh"] for e in action.spec["pods"]}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_policy_does_not_hold_up_a_bystander(name: str) -> None:
    hostile = mk_policy("hostile", ns="t", selector={}, **{"memoryHigh": {"limitPercent": 50},
                                                           **HOSTILE[name]})
    bystander = mk_policy("web", memory_high={"limitPercent": 50})
    pods = [mk_pod("web-0"), mk_pod("victim-0", ns="t")]
    d = decide(_snap([hostile, bystander], pods), {}, {}, NOW)
    assert _pods_of(d) == {"web-0": 512 * MI}
    by_name = {ref.name: st for ref, st in d.statuses.items()}
    valid = {c["type"]: c for c in by_name["hostile"]["conditions"]}["Valid"]
    assert valid["status"] == "False" and valid["reason"] == "InvalidQuantity"
    assert [e[1] for e in d.invalid_events] == ["InvalidQuantity"]
    # the bystander changes its policy: its pods follow, the hostile one still exists
    bystander2 = mk_policy("web", memory_high={"limitPercent": 25})
    current = {"n1": {"nodeName": "n1", "pods": [
        e for a in d.actions if a.spec for e in a.spec["pods"]]}}
    d2 = decide(_snap([hostile, bystander2], pods, current), current, {}, NOW)
    assert _pods_of(d2) == {"web-0": 256 * MI}
    # and when it goes, its pods leave the plan (their memory.high is restored)
    d3 = decide(_snap([hostile], pods, current), current, {}, NOW)
    assert _pods_of(d3) == {}


def _entry(name: str, policy: str, memory_high: int, ns: str = "default") -> dict[str, Any]:
    return {"uid": f"uid-{ns}-{name}", "namespace": ns, "name": name, "qosClass": "Burstable",
            "memoryHigh": memory_high, "dryRun": False,
            "policy": {"kind": "MemoryReclaimPolicy", "namespace": ns, "name": policy},
            "reclaim": {"mode": "Watermark", "headroomPercent": 5, "targetPercent": 10,
                        "stepBytes": 16 * MI, "maxBytesPerSecond": 512 * MI,
                        "pressureTargetBasisPoints": 10}}


def test_an_out_of_bounds_entry_keeps_its_policy_at_the_last_good_entries(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever resolve() puts out, the plan check runs before the write: a policy whose
    entry is out of bounds keeps its last good entries, the others are written."""
    pods = [mk_pod("web-0"), mk_pod("bad-0", ns="t"), mk_pod("bad-1", ns="t")]
    policies = [mk_policy("web"), mk_policy("bad", ns="t")]
    real_resolve = reconciler.resolve

    def tampered(*args: Any, **kw: Any) -> Any:
        res = real_resolve(*args, **kw)
        for e in res.plans["n1"]["pods"]:
            if e["name"] == "bad-0":
                e["memoryHigh"] = 2**64 + 8192      # what the issue saw reach a plan
        return res

    monkeypatch.setattr(reconciler, "resolve", tampered)
    current = {"n1": {"nodeName": "n1", "pods": [
        _entry("bad-0", "bad", 300 * MI, ns="t"), _entry("web-0", "web", 100 * MI)]}}
    d = decide(_snap(policies, pods, current), current, {}, NOW)
    # web-0 updated; bad-0 keeps its last good entry; bad-1 (never planned) stays out
    assert _pods_of(d) == {"bad-0": 300 * MI, "web-0": 512 * MI}
    status = {r.name: s for r, s in d.statuses.items()}["bad"]
    valid = {c["type"]: c for c in status["conditions"]}["Valid"]
    assert valid["status"] == "False" and valid["reason"] == "InvalidPlanEntry"
    assert "memoryHigh" in valid["message"] and "t/bad-0" in valid["message"]
    assert [e[1] for e in d.invalid_events] == ["InvalidPlanEntry"]


def test_a_refused_entry_names_its_policy_and_the_rest_is_written() -> None:
    spec = {"nodeName": "n1", "pods": [_entry("web-0", "web", 512 * MI),
                                       _entry("bad-0", "bad", 512 * MI, ns="t")]}
    causes = [{"reason": "FieldValueInvalid", "field": "spec.pods[1].memoryHigh",
               "message": "spec.pods[1].memoryHigh: Invalid value: 1: must be a multiple"},
              {"field": "metadata.name"}, {"field": "spec.pods[9].uid"}]
    refused = rejected_policies(causes, spec)
    key = canonical({"kind": "MemoryReclaimPolicy", "namespace": "t", "name": "bad"})
    assert list(refused) == [key] and "t/bad-0" in refused[key]
    pods = [mk_pod("web-0"), mk_pod("bad-0", ns="t")]
    d = decide(_snap([mk_policy("web"), mk_policy("bad", ns="t")], pods), {}, {}, NOW,
               rejected=refused)
    assert _pods_of(d) == {"web-0": 512 * MI}
    status = {r.name: s for r, s in d.statuses.items()}["bad"]
    assert {c["type"]: c for c in status["conditions"]}["Valid"]["reason"] == "PlanRejected"


def test_check_and_quarantine_are_pure() -> None:
    plans = {"n1": {"nodeName": "n1", "pods": [_entry("a", "p", MI + 1), _entry("b", "q", MI)]}}
    before = copy.deepcopy(plans)
    bad = check_entries(plans)
    assert list(bad) == [canonical({"kind": "MemoryReclaimPolicy", "namespace": "default",
                                    "name": "p"})]
    out = quarantine(plans, set(bad), {}, {})
    assert [e["name"] for e in out["n1"]["pods"]] == ["b"]
    assert plans == before
