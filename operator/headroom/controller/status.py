"""Pure aggregation of the agents' plan statuses into each policy's status.

A pod counts as enforced when the agent on its node reports it `applied` with the
memory.high the plan asks for (a status written for an older plan does not count).
The status is bounded: at most MAX_NODES_LISTED nodes and MAX_SKIPPED_LISTED skipped
pods, and no counters (bytes reclaimed per policy is the operator's metric
headroom_operator_policy_reclaimed_bytes, see ``reclaimed_by_policy``).
Conditions keep their lastTransitionTime while their status stays the same, so an
unchanged policy produces a byte-equal status and the operator writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from headroom.controller.plans import canonical
from headroom.controller.resolve import PolicyRef, PolicyReport

MAX_SKIPPED_LISTED = 20   # status lists this many skipped pods, counts all of them
# status.nodes lists this many nodes (most behind first), nodeCount counts all of them: a
# policy over thousands of nodes keeps a status of bounded size that changes only when
# the listed progress does.
MAX_NODES_LISTED = 10
MAX_MESSAGE_LENGTH = 32768  # metav1.Condition's bound

Outcomes = Mapping[tuple[str, str], Mapping[str, Any]]   # (node, pod uid) -> agent's entry


def plan_outcomes(plans: Mapping[str, Mapping[str, Any]]) -> dict[tuple[str, str], Any]:
    """(node, uid) -> per-pod status entry, from the NodeReclaimPlan objects on the server."""
    out = {}
    for node, plan in plans.items():
        for entry in (plan.get("status") or {}).get("pods") or ():
            if entry.get("uid"):
                out[(node, entry["uid"])] = entry
    return out


def pods_by_policy(plans: Mapping[str, Mapping[str, Any]]
                   ) -> dict[str, dict[str, list[Mapping[str, Any]]]]:
    """canonical(policy ref) -> node -> the plan entries that policy put there."""
    out: dict[str, dict[str, list[Mapping[str, Any]]]] = {}
    for node, spec in plans.items():
        for entry in spec.get("pods") or ():
            out.setdefault(canonical(entry.get("policy")), {}).setdefault(node, []).append(entry)
    return out


def _condition(type_: str, ok: bool, reason: str, message: str, generation: int | None,
               previous: Mapping[str, Mapping[str, Any]], now: str) -> dict[str, Any]:
    status = "True" if ok else "False"
    before = previous.get(type_) or {}
    since = before.get("lastTransitionTime") if before.get("status") == status else None
    cond: dict[str, Any] = {"type": type_, "status": status, "reason": reason or type_,
                            "message": message[:MAX_MESSAGE_LENGTH],
                            "lastTransitionTime": since or now}
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


def _ready(report: PolicyReport, planned: int, enforced: int) -> tuple[bool, str, str]:
    if not report.valid:
        return False, "Invalid", "the policy is not valid"
    if report.dry_run:
        return True, "DryRun", f"dry run: {planned} pods would be enforced"
    if planned == 0:
        return True, "NoPods", "no pod to enforce"
    if enforced >= planned:
        return True, "Enforced", f"{enforced}/{planned} pods enforced"
    return False, "Pending", f"{enforced}/{planned} pods enforced"


def _ref_dict(ref: PolicyRef) -> dict[str, str]:
    out = {"kind": ref.kind, "name": ref.name}
    if ref.namespace:
        out["namespace"] = ref.namespace
    return out


def node_summary(node: str, entries: list[Mapping[str, Any]],
                 outcomes: Outcomes) -> dict[str, Any]:
    """One policy's line in `.status.nodes` for one node: its plan entries there and what
    the agent reports about them."""
    enforced = 0
    for entry in entries:
        outcome = outcomes.get((node, entry.get("uid", ""))) or {}
        if outcome.get("applied") and not entry.get("dryRun") and \
                outcome.get("memoryHigh", entry.get("memoryHigh")) == entry.get("memoryHigh"):
            enforced += 1
    return {"node": node, "pods": len(entries), "enforced": enforced}


def policy_status(report: PolicyReport, entries: Mapping[str, list[Mapping[str, Any]]],
                  outcomes: Outcomes, previous: Mapping[str, Any] | None,
                  now: str) -> dict[str, Any]:
    """The whole `.status` of one policy. `entries`: node -> this policy's plan entries."""
    return status_from_nodes(report, [node_summary(node, entries[node], outcomes)
                                      for node in sorted(entries)], previous, now)


def status_from_nodes(report: PolicyReport, nodes: list[dict[str, Any]],
                      previous: Mapping[str, Any] | None, now: str) -> dict[str, Any]:
    """The whole `.status` of one policy from its node_summary() lines (sorted by node),
    so that an incremental caller recomputes only the lines of nodes that changed."""
    return status_from_totals(report, sum(n["enforced"] for n in nodes),
                              sum(n["pods"] for n in nodes), len(nodes),
                              sorted(nodes, key=listing_order)[:MAX_NODES_LISTED],
                              previous, now)


def listing_order(line: Mapping[str, Any]) -> tuple[int, int, str]:
    """Which node lines `.status.nodes` lists: the first MAX_NODES_LISTED in this order
    (most behind, then most pods, then by name)."""
    return (line["enforced"] - line["pods"], -line["pods"], line["node"])


def status_from_totals(report: PolicyReport, enforced_total: int, planned_total: int,
                       node_count: int, listed: list[Mapping[str, Any]],
                       previous: Mapping[str, Any] | None, now: str) -> dict[str, Any]:
    """status_from_nodes() from what it reads of the lines: the sums of their `enforced`
    and `pods`, their number, and the first MAX_NODES_LISTED by listing_order() (any
    order), for a caller that keeps those up to date instead of all lines."""
    # bounded: the MAX_NODES_LISTED nodes most behind (then with most pods), by name
    listed = sorted(listed, key=lambda n: n["node"])
    prev_conditions = {c.get("type"): c for c in (previous or {}).get("conditions") or ()}
    gen = report.generation
    ready = _ready(report, planned_total, enforced_total)
    conflicts = [_ref_dict(r) for r in report.conflicts]
    rivals = ", ".join(f"{r.kind} {r.namespace + '/' if r.namespace else ''}{r.name}"
                       for r in report.conflicts)
    return {
        "observedGeneration": gen,
        "matchedPods": report.matched_pods,
        "enforcedPods": enforced_total,
        "skippedPods": len(report.skipped),
        "nodeCount": node_count,
        "nodes": [dict(n) for n in listed],
        "skipped": [{"namespace": s.pod.namespace, "name": s.pod.name, "node": s.node,
                     "reason": s.reason, "message": s.message}
                    for s in report.skipped[:MAX_SKIPPED_LISTED]],
        "conflicts": conflicts,
        "conditions": [
            _condition("Valid", report.valid, report.reason,
                       report.message or ("the policy is valid" if report.valid else ""),
                       gen, prev_conditions, now),
            _condition("Ready", *ready, gen, prev_conditions, now),
            _condition("Conflicts", bool(conflicts), "Tie" if conflicts else "NoConflicts",
                       f"same precedence as {rivals}; ties are broken by kind, namespace "
                       f"and name" if conflicts else "no tie with another policy",
                       gen, prev_conditions, now),
        ],
    }


def newly_invalid(report: PolicyReport, previous: Mapping[str, Any] | None) -> bool:
    """Whether an Event should say that this policy became invalid (once per generation
    and reason, judged from the status already on the server)."""
    if report.valid:
        return False
    prev = {c.get("type"): c for c in (previous or {}).get("conditions") or ()}.get("Valid")
    return not prev or prev.get("status") != "False" or prev.get("reason") != report.reason \
        or prev.get("observedGeneration") != report.generation


def reclaimed_by_policy(plans: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """canonical(policy ref) -> bytes the agents report reclaimed from its pods, summed
    over the NodeReclaimPlan objects (spec says whose pod, status how much)."""
    out: dict[str, int] = {}
    for plan in plans:
        owners = {e.get("uid"): canonical(e.get("policy"))
                  for e in (plan.get("spec") or {}).get("pods") or () if isinstance(e, Mapping)}
        for entry in (plan.get("status") or {}).get("pods") or ():
            if not isinstance(entry, Mapping) or entry.get("uid") not in owners:
                continue
            n = entry.get("reclaimedBytes")
            if isinstance(n, int) and not isinstance(n, bool) and n > 0:
                key = owners[entry["uid"]]
                out[key] = out.get(key, 0) + n
    return out
