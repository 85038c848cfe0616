"""Pure decisions about NodeReclaimPlans: what to write, what to keep, what to delete.

The operator writes a plan only when its spec differs from the one on the server
(or from the one it has just written and not yet seen come back through the
watch), so that restarts and bursts of unrelated events cost no writes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from headroom.api import GROUP, VERSION
from headroom.api import plan as plan_contract
from headroom.controller.resolve import PolicyRef, PolicyReport

PLAN_KIND = "NodeReclaimPlan"


def canonical(value: Any) -> str:
    """Byte-stable text of a JSON value, for comparisons."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def plan_body(node: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[str, Any]:
    """A new NodeReclaimPlan owned by its Node, so the garbage collector removes it with
    the node even while the operator is down."""
    meta = node["metadata"]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": PLAN_KIND,
        "metadata": {
            "name": meta["name"],
            "labels": {"app.kubernetes.io/managed-by": "headroom"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": meta["name"],
                                 "uid": meta["uid"], "controller": True}],
        },
        "spec": dict(spec),
    }


@dataclass(frozen=True)
class PlanAction:
    verb: str                               # create | replace | delete
    node: str
    spec: Mapping[str, Any] | None = None


@dataclass
class Decisions:
    """A round's writes: plans, policy statuses (only those that differ), and Events."""

    actions: list[PlanAction]
    statuses: dict[PolicyRef, dict[str, Any]]
    invalid_events: list[tuple[dict[str, Any], str, str]]   # (policy, reason, message)


def plan_actions(desired: Mapping[str, Mapping[str, Any]],
                 current: Mapping[str, Mapping[str, Any] | None]) -> list[PlanAction]:
    """Writes that bring `current` (node -> spec on the server, as far as we know) to
    `desired`; plans of nodes that have no desired plan (deleted nodes) are deleted."""
    actions = []
    for node, spec in desired.items():
        if node not in current:
            actions.append(PlanAction("create", node, spec))
        elif current[node] != spec:
            # compared as JSON values (dict equality: key order does not count, and it
            # costs a fraction of serialising both plans)
            actions.append(PlanAction("replace", node, spec))
    actions += [PlanAction("delete", node) for node in current if node not in desired]
    return actions


def _pod_sort_key(entry: Mapping[str, Any]) -> tuple[str, str, str]:
    return (entry.get("namespace", ""), entry.get("name", ""), entry.get("uid", ""))


def policy_key(entry: Mapping[str, Any]) -> str:
    """canonical() of a plan entry's policy ref: whose entry it is."""
    return canonical(entry.get("policy"))


def freeze_invalid(plans: dict[str, dict[str, Any]],
                   reports: Mapping[PolicyRef, PolicyReport],
                   current: Mapping[str, Mapping[str, Any] | None],
                   active_pods: Mapping[str, str],
                   key: Callable[[Mapping[str, Any]], str] = policy_key
                   ) -> dict[str, dict[str, Any]]:
    """Keep the plan entries of policies that are now invalid as they are on the server.

    An invalid policy changes no plan: resolve() lets it match nothing, so without
    this its pods would fall to another policy or leave the plans. Level-based (it
    reads the plans on the server, not operator memory), so it survives restarts.
    `active_pods`: uid -> node of the pods that still run; others are not kept.
    `key`: policy_key or a memoized equal.
    """
    frozen = {canonical(ref.to_dict()) for ref, rep in reports.items() if not rep.valid}
    if not frozen:
        return plans
    out = {node: dict(spec) for node, spec in plans.items()}
    for node, spec in current.items():
        if node not in out or not spec:
            continue
        keep = [e for e in spec.get("pods") or ()
                if key(e) in frozen and active_pods.get(e.get("uid")) == node]
        if not keep:
            continue
        uids = {e["uid"] for e in keep}
        pods = [e for e in out[node].get("pods") or () if e.get("uid") not in uids]
        out[node]["pods"] = sorted([*pods, *keep], key=_pod_sort_key)
    return out


def active_pod_nodes(pods: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """uid -> node of bound pods that have not terminated."""
    out = {}
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        phase = (pod.get("status") or {}).get("phase")
        if node and phase not in ("Succeeded", "Failed"):
            out[pod["metadata"]["uid"]] = node
    return out


# ---- isolation: a bad entry hurts only its own policy ------------------------------------

def check_entries(plans: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """canonical(policy ref) -> why, for every policy with an entry that fails the plan
    contract (headroom.api.plan) in `plans`. Pure; the first problem found is reported."""
    bad: dict[str, str] = {}
    for node, spec in plans.items():
        for entry in spec.get("pods") or ():
            problems = plan_contract.entry_problems(entry)
            if problems:
                key, why = out_of_bounds(node, entry, problems[0])
                bad.setdefault(key, why)
    return bad


def out_of_bounds(node: str, entry: Any, problem: str) -> tuple[str, str]:
    """(canonical policy ref, why) of a plan entry that fails the contract."""
    key = canonical(entry.get("policy") if isinstance(entry, Mapping) else None)
    return key, (f"the plan entry of pod {entry.get('namespace')}/{entry.get('name')} "
                 f"on node {node} is out of bounds: {problem}")


def quarantine(plans: Mapping[str, Mapping[str, Any]], bad: Collection[str],
               current: Mapping[str, Mapping[str, Any] | None],
               active_pods: Mapping[str, str],
               key: Callable[[Mapping[str, Any]], str] = policy_key
               ) -> dict[str, dict[str, Any]]:
    """Plans in which the policies in `bad` (canonical refs) change nothing: their new
    entries are left out and their entries on the server (the last good ones, if still
    valid and the pod still runs on that node) are kept. Every other entry is as given.
    `key`: policy_key or a memoized equal."""
    if not bad:
        return {node: dict(spec) for node, spec in plans.items()}
    out: dict[str, dict[str, Any]] = {}
    for node, spec in plans.items():
        pods = [e for e in spec.get("pods") or () if key(e) not in bad]
        taken = {e.get("uid") for e in pods}
        for e in (current.get(node) or {}).get("pods") or ():
            if isinstance(e, Mapping) and key(e) in bad \
                    and e.get("uid") not in taken and active_pods.get(e.get("uid")) == node \
                    and not plan_contract.entry_problems(e):
                pods.append(e)
                taken.add(e.get("uid"))
        out[node] = {**spec, "pods": sorted(pods, key=_pod_sort_key)}
    return out


_ENTRY_FIELD = re.compile(r"^spec\.pods\[(\d+)\]")


def rejected_policies(causes: Sequence[Mapping[str, Any]],
                      spec: Mapping[str, Any]) -> dict[str, str]:
    """canonical(policy ref) -> the server's message, for the entries of `spec` that a 422
    names (`details.causes[].field` = "spec.pods[3].memoryHigh" and the like). Causes
    that name no entry are left out: the caller then cannot isolate them."""
    pods = list(spec.get("pods") or ())
    out: dict[str, str] = {}
    for cause in causes:
        m = _ENTRY_FIELD.match(str(cause.get("field") or ""))
        if m and int(m.group(1)) < len(pods):
            entry = pods[int(m.group(1))]
            out.setdefault(canonical(entry.get("policy")),
                           f"the API server refused the plan entry of pod "
                           f"{entry.get('namespace')}/{entry.get('name')}: "
                           f"{cause.get('message') or cause.get('field')}")
    return out
