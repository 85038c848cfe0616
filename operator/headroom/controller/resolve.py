"""Pure resolve(): policies + pods + namespaces (+ nodes) -> one NodeReclaimPlan spec per node.

No I/O, no clock, no randomness: equal input gives equal (byte-equal when
serialised with json.dumps) output, so the operator can compare plans and write
only the ones that changed. The contract is described in docs/architecture.md,
section "resolve() contract".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from headroom.api.plan import millicores
from headroom.api.pod import PodMemory, is_active, pod_memory, qos_class, resource_key
from headroom.api.policy import (
    CLUSTER_KIND,
    NAMESPACED_KIND,
    Policy,
    PolicyError,
    PolicyRef,
    parse_policy,
    policy_ref,
)
from headroom.api.selector import LabelIndex, LabelSelector, Requirement

__all__ = ["CLUSTER_KIND", "NAMESPACED_KIND", "PodRef", "PolicyRef", "PolicyReport",
           "Resolution", "SkippedPod", "resolve"]

# Kubernetes sets this label on every namespace; added here when an object lacks it.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
# Pseudo-label under which pods are indexed by namespace (a space is invalid in label keys).
NAMESPACE_KEY = " namespace"


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
    active = [p for p in pods if is_active(p)
              and (node_names is None or p["spec"]["nodeName"] in node_names)]
    index = LabelIndex((p.get("metadata") or {}).get("labels") or {} for p in active)
    for i, pod in enumerate(active):
        index.add(NAMESPACE_KEY, _namespace(pod), i)
    winners = _pick_winners(valid, index, _namespace_labels(namespaces, index), reports)
    plans = _build_plans(zip(active, winners, strict=True), reports, node_names)
    for report in reports.values():
        report.nodes = dict(sorted(report.nodes.items()))
        report.skipped.sort()
        report.conflicts.sort()
    return Resolution(plans=plans, policies=dict(sorted(reports.items())))


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def _namespace(pod: Mapping[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("namespace") or "default")


def _namespace_labels(namespaces: Sequence[Mapping[str, Any]],
                      index: LabelIndex) -> dict[str, dict[str, str]]:
    """Labels of every namespace that has active pods (a missing object: only its name label)."""
    labels = {_name(ns): dict((ns.get("metadata") or {}).get("labels") or {})
              for ns in namespaces}
    out = {}
    for key, name in index.by_pair:
        if key == NAMESPACE_KEY:
            lab = labels.get(name, {})
            lab.setdefault(NAMESPACE_NAME_LABEL, name)
            out[name] = lab
    return out


def _scope(policy: Policy, ns_names: list[str], ns_index: LabelIndex) -> LabelSelector:
    """The policy's pod selector restricted to the namespaces it applies to."""
    if policy.namespace_selector is None:
        namespaces = frozenset([policy.ref.namespace])
    else:
        chosen = policy.namespace_selector.select(ns_index)
        if len(chosen) == len(ns_names):
            return policy.selector     # every namespace: no restriction needed
        namespaces = frozenset(ns_names[i] for i in chosen)
    restriction = Requirement(NAMESPACE_KEY, "In", namespaces)
    return LabelSelector((*policy.selector.requirements, restriction))


def _pick_winners(valid: list[Policy], index: LabelIndex,
                  ns_labels: Mapping[str, Mapping[str, str]],
                  reports: Mapping[PolicyRef, PolicyReport]) -> list[Policy | None]:
    """The winning policy of each active pod (aligned with the index).

    Policies are visited best first, so the first policy to select a pod wins; a
    later one of the same precedence (priority, namespaced/cluster) selecting it is
    a conflict. Each policy costs a few set operations over one index of all pods
    (the namespace is a pseudo-label); Python loops only over pods as they are won.
    """
    ns_names = sorted(ns_labels)
    ns_index = LabelIndex(ns_labels[n] for n in ns_names)
    ordered = sorted(valid, key=lambda p: (p.precedence(), p.ref))
    owner = [-1] * index.size
    taken: set[int] = set()
    group_taken: set[int] = set()      # won within the current precedence group
    group: tuple[int, int] | None = None
    conflicts: set[tuple[int, int]] = set()
    for k, policy in enumerate(ordered):
        if policy.precedence() != group:
            group, group_taken = policy.precedence(), set()
        selected = _scope(policy, ns_names, ns_index).select(index)
        if not selected:
            continue
        new = selected - taken
        reports[policy.ref].shadowed_pods += len(selected) - len(new)
        conflicts.update((r, k) for r in set(map(owner.__getitem__, selected & group_taken)))
        for i in new:
            owner[i] = k
        taken |= new
        group_taken |= new
    for a, b in conflicts:
        reports[ordered[a].ref].conflicts.append(ordered[b].ref)
        reports[ordered[b].ref].conflicts.append(ordered[a].ref)
    return [ordered[k] if k >= 0 else None for k in owner]


def _memory_and_qos(pod: Mapping[str, Any],
                    cache: dict[str, tuple[PodMemory, str]]) -> tuple[PodMemory, str]:
    key = resource_key(pod)
    if key is None:
        return pod_memory(pod), qos_class(pod)
    if key not in cache:
        cache[key] = (pod_memory(pod), qos_class(pod))
    return cache[key]


def _build_plans(won: Iterable[tuple[Mapping[str, Any], Policy | None]],
                 reports: Mapping[PolicyRef, PolicyReport],
                 node_names: set[str] | None) -> dict[str, dict[str, Any]]:
    entries: dict[str, list[dict[str, Any]]] = {n: [] for n in node_names or ()}
    budgets: dict[str, float] = {}
    facts: dict[str, tuple[PodMemory, str]] = {}
    shared: dict[PolicyRef, tuple[dict[str, str], dict[str, Any]]] = {}
    for pod, policy in won:
        if policy is None:
            continue
        meta = pod.get("metadata") or {}
        node = str(pod["spec"]["nodeName"])
        report = reports[policy.ref]
        report.matched_pods += 1
        mem, qos = _memory_and_qos(pod, facts)
        high, reason, message = policy.memory_high.for_pod(mem)
        if high is None:
            ref = PodRef(_namespace(pod), str(meta.get("name") or ""), str(meta.get("uid") or ""))
            report.skipped.append(SkippedPod(ref, node, reason, message))
            continue
        report.planned_pods += 1
        report.nodes[node] = report.nodes.get(node, 0) + 1
        if policy.ref not in shared:
            shared[policy.ref] = (policy.ref.to_dict(), policy.reclaim.to_plan())
        policy_dict, reclaim = shared[policy.ref]
        entries.setdefault(node, []).append({
            "uid": str(meta.get("uid") or ""),
            "namespace": _namespace(pod),
            "name": str(meta.get("name") or ""),
            "qosClass": qos,
            "memoryHigh": high,
            "dryRun": policy.dry_run,
            "policy": dict(policy_dict),
            "reclaim": dict(reclaim),
        })
        budget = policy.reclaim.node_cpu_budget
        if budget is not None:
            budgets[node] = min(budget, budgets.get(node, budget))
    plans: dict[str, dict[str, Any]] = {}
    for node in sorted(entries):
        spec: dict[str, Any] = {"nodeName": node}
        if node in budgets:
            spec["nodeCpuBudget"] = millicores(budgets[node])
        spec["pods"] = sorted(entries[node],
                              key=lambda e: (e["namespace"], e["name"], e["uid"]))
        plans[node] = spec
    return plans
