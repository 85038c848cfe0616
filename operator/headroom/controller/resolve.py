"""Pure resolve(): policies + pods + namespaces (+ nodes) -> one NodeReclaimPlan spec per node.

No I/O, no clock, no randomness: equal input gives equal (byte-equal when
serialised with json.dumps) output, so the operator can compare plans and write
only the ones that changed. The contract is described in docs/architecture.md,
section "resolve() contract".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from headroom.api.pod import PodMemory, is_active, pod_memory, qos_class
from headroom.api.policy import (
    CLUSTER_KIND,
    NAMESPACED_KIND,
    Policy,
    PolicyError,
    PolicyRef,
    parse_policy,
    policy_ref,
)
from headroom.api.selector import LabelIndex

__all__ = ["CLUSTER_KIND", "NAMESPACED_KIND", "PodRef", "PolicyRef", "PolicyReport",
           "Resolution", "SkippedPod", "resolve"]

# Kubernetes sets this label on every namespace; added here when an object lacks it.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"

@dataclass(frozen=True, order=True)
class PodRef:
    namespace: str
    name: str
    uid: str


@dataclass(frozen=True, order=True)
class SkippedPod:
    """A pod the policy won but that got no plan entry, with a machine-readable reason."""

    pod: PodRef
    node: str
    reason: str       # NoMemoryLimit | BelowMinimum | ...
    message: str


@dataclass
class PolicyReport:
    """What resolve() found out about one policy (input for its status and Events)."""

    ref: PolicyRef
    generation: int | None = None
    valid: bool = True
    reason: str = "Valid"          # Valid, or why not (InvalidSelector, InvalidQuantity, ...)
    message: str = ""
    dry_run: bool = False
    mode: str = "Watermark"
    matched_pods: int = 0          # active pods this policy won (planned + skipped)
    planned_pods: int = 0          # pods written into plans
    nodes: dict[str, int] = field(default_factory=dict)   # node -> planned pods (sorted keys)
    skipped: list[SkippedPod] = field(default_factory=list)   # sorted
    shadowed_pods: int = 0         # selected, but a policy of higher precedence won
    conflicts: list[PolicyRef] = field(default_factory=list)  # equal-precedence rivals (sorted)


@dataclass
class Resolution:
    """Result of resolve().

    ``plans``: node name -> NodeReclaimPlan ``spec`` dict (keys sorted by node;
    pods sorted by namespace, name, uid). ``policies``: every input policy,
    valid or not, keyed by its PolicyRef (sorted).
    """

    plans: dict[str, dict[str, Any]]
    policies: dict[PolicyRef, PolicyReport]


def resolve(
    policies: Sequence[Mapping[str, Any]],
    cluster_policies: Sequence[Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]],
    namespaces: Sequence[Mapping[str, Any]],
    nodes: Sequence[Mapping[str, Any]] | None = None,
) -> Resolution:
    """Resolve raw Kubernetes objects (dicts as kopf / the client give them) into plans.

    ``nodes``: when given, exactly these nodes get a plan (an empty ``pods`` list
    where nothing applies) and pods bound to other nodes are ignored; when None,
    only nodes with at least one planned pod get a plan.
    """
    reports: dict[PolicyRef, PolicyReport] = {}
    valid: list[Policy] = []
    for kind, objs in ((NAMESPACED_KIND, policies), (CLUSTER_KIND, cluster_policies)):
        for obj in objs:
            ref = policy_ref(obj, kind)
            if ref in reports:
                continue  # a duplicate in the input: the first one counts
            report = reports[ref] = PolicyReport(ref)
            gen = (obj.get("metadata") or {}).get("generation")
            report.generation = gen if isinstance(gen, int) else None
            try:
                policy = parse_policy(obj, kind)
            except PolicyError as e:
                report.valid, report.reason, report.message = False, e.reason, e.message
                continue
            report.dry_run, report.mode = policy.dry_run, policy.reclaim.mode
            valid.append(policy)

    node_names = None if nodes is None else {_name(n) for n in nodes}
    by_ns = _active_pods_by_namespace(pods, node_names)
    winners = _pick_winners(valid, by_ns, _namespace_labels(namespaces, by_ns), reports)
    plans = _build_plans(winners, by_ns, reports, node_names)
    for report in reports.values():
        report.nodes = dict(sorted(report.nodes.items()))
        report.skipped.sort()
        report.conflicts.sort()
    return Resolution(plans=plans, policies=dict(sorted(reports.items())))


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


class _Namespace:
    """The active pods of one namespace, with a label index built on first use."""

    def __init__(self) -> None:
        self.pods: list[Mapping[str, Any]] = []
        self._index: LabelIndex | None = None

    @property
    def index(self) -> LabelIndex:
        if self._index is None:
            self._index = LabelIndex(
                (p.get("metadata") or {}).get("labels") or {} for p in self.pods)
        return self._index


def _active_pods_by_namespace(pods: Sequence[Mapping[str, Any]],
                              node_names: set[str] | None) -> dict[str, _Namespace]:
    by_ns: dict[str, _Namespace] = {}
    for pod in pods:
        if not is_active(pod):
            continue
        if node_names is not None and pod["spec"]["nodeName"] not in node_names:
            continue
        ns = str((pod.get("metadata") or {}).get("namespace") or "default")
        by_ns.setdefault(ns, _Namespace()).pods.append(pod)
    return by_ns


def _namespace_labels(namespaces: Sequence[Mapping[str, Any]],
                      by_ns: Mapping[str, _Namespace]) -> dict[str, dict[str, str]]:
    """Labels of every namespace that has active pods (a missing object: only its name label)."""
    labels = {_name(ns): dict((ns.get("metadata") or {}).get("labels") or {})
              for ns in namespaces}
    out = {}
    for name in by_ns:
        lab = labels.get(name, {})
        lab.setdefault(NAMESPACE_NAME_LABEL, name)
        out[name] = lab
    return out


def _pick_winners(valid: list[Policy], by_ns: Mapping[str, _Namespace],
                  ns_labels: Mapping[str, Mapping[str, str]],
                  reports: Mapping[PolicyRef, PolicyReport]) -> dict[tuple[str, int], Policy]:
    """(namespace, pod index) -> winning policy. Policies are visited best first, so the
    first policy to select a pod wins; a later one of equal precedence is a conflict."""
    ns_names = sorted(ns_labels)
    ns_index = LabelIndex(ns_labels[n] for n in ns_names)
    winners: dict[tuple[str, int], Policy] = {}
    conflicts: set[tuple[PolicyRef, PolicyRef]] = set()
    for policy in sorted(valid, key=lambda p: (p.precedence(), p.ref)):
        if policy.namespace_selector is None:
            namespaces = [policy.ref.namespace] if policy.ref.namespace in by_ns else []
        else:
            namespaces = [ns_names[i] for i in policy.namespace_selector.select(ns_index)]
        report = reports[policy.ref]
        for ns in namespaces:
            for i in policy.selector.select(by_ns[ns].index):
                won = winners.setdefault((ns, i), policy)
                if won is policy:
                    continue
                report.shadowed_pods += 1
                if won.precedence() == policy.precedence():
                    conflicts.add((won.ref, policy.ref))
    for a, b in conflicts:
        reports[a].conflicts.append(b)
        reports[b].conflicts.append(a)
    return winners


def _build_plans(winners: Mapping[tuple[str, int], Policy], by_ns: Mapping[str, _Namespace],
                 reports: Mapping[PolicyRef, PolicyReport],
                 node_names: set[str] | None) -> dict[str, dict[str, Any]]:
    entries: dict[str, list[dict[str, Any]]] = {n: [] for n in node_names or ()}
    budgets: dict[str, float] = {}
    for (ns, i), policy in winners.items():
        pod = by_ns[ns].pods[i]
        meta = pod.get("metadata") or {}
        node = str(pod["spec"]["nodeName"])
        ref = PodRef(ns, str(meta.get("name") or ""), str(meta.get("uid") or ""))
        report = reports[policy.ref]
        report.matched_pods += 1
        mem: PodMemory = pod_memory(pod)
        high, reason, message = policy.memory_high.for_pod(mem)
        if high is None:
            report.skipped.append(SkippedPod(ref, node, reason, message))
            continue
        report.planned_pods += 1
        report.nodes[node] = report.nodes.get(node, 0) + 1
        entries.setdefault(node, []).append({
            "uid": ref.uid,
            "namespace": ref.namespace,
            "name": ref.name,
            "qosClass": qos_class(pod),
            "memoryHigh": high,
            "dryRun": policy.dry_run,
            "policy": policy.ref.to_dict(),
            "reclaim": policy.reclaim.to_plan(),
        })
        budget = policy.reclaim.node_cpu_budget
        if budget is not None:
            budgets[node] = min(budget, budgets.get(node, budget))
    plans: dict[str, dict[str, Any]] = {}
    for node in sorted(entries):
        spec: dict[str, Any] = {"nodeName": node}
        if node in budgets:
            spec["cpuBudgetCores"] = budgets[node]
        spec["pods"] = sorted(entries[node],
                              key=lambda e: (e["namespace"], e["name"], e["uid"]))
        plans[node] = spec
    return plans
