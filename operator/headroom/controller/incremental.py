"""Incremental resolution: resolve()'s result, kept up to date one event at a time.

`resolve()` (resolve.py) recomputes every plan from all pods and policies; at
150,000 pods that is seconds of CPU per round. `IncrementalResolver` holds the
same result as per-pod and per-node state and updates only what an event can
change:

* a pod event re-resolves that pod (its candidate policies come from an index of
  policies by namespace and by label key / key=value of their selectors);
* a policy event re-resolves the pods it selected before or selects now (those
  come from an inverted index of pods by label, with the namespace as a
  pseudo-label, as in resolve());
* a namespace label change re-resolves the pods of that namespace;
* a node event makes that node's pods eligible (or not) and adds (removes) its plan.

Nodes and policies whose output changed are collected in `take_dirty()`, so the
operator compares and writes only those plans and statuses; per node, the plan entries
that came and went in `take_entry_changes()`. A node's entries are kept in plan order
(bisect per pod), so a plan is a copy of a list, not a sort. `resolution()` builds
the whole `Resolution` (tests compare it with `resolve()` after every event:
tests/unit/test_incremental.py). Semantics are resolve()'s with ``nodes`` given:
only pods bound to a known node count, and every known node has a plan.

Not thread-safe: one thread applies events and reads plans.
"""

from __future__ import annotations

import bisect
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from headroom.api.plan import millicores
from headroom.api.pod import PodMemory, is_active, pod_memory, qos_class, resource_key
from headroom.api.policy import CLUSTER_KIND, NAMESPACED_KIND, Policy, PolicyError, parse_policy
from headroom.api.policy import policy_ref as make_policy_ref
from headroom.api.selector import LabelSelector, Requirement
from headroom.controller.resolve import (
    NAMESPACE_KEY,
    NAMESPACE_NAME_LABEL,
    PodRef,
    PolicyRef,
    PolicyReport,
    Resolution,
    SkippedPod,
)

__all__ = ["IncrementalResolver"]

# Sort key of a valid policy: resolve() visits policies in this order, first wins.
SortKey = tuple[int, int, str, str, str]   # (-priority, cluster?, kind, namespace, name)
PodKey = tuple[str, str]      # (namespace, name)
Selected = tuple[SortKey, "_PolicyState"]   # a policy selecting a pod, sortable

_intern = sys.intern
_LOG_MAX = 4096      # entries logged per node between two take_entry_changes()


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


@dataclass(eq=False)       # identity hash: states are set members and dict keys
class _PolicyState:
    """One policy (valid or not) and what it currently wins."""

    ref: PolicyRef
    generation: int | None = None
    valid: bool = True
    reason: str = "Valid"
    message: str = ""
    policy: Policy | None = None
    key: SortKey | None = None
    anchors: list[tuple[str, str] | str | None] = field(default_factory=list)
    selected: set[int] = field(default_factory=set)       # eligible pods it selects
    won: int = 0                                          # matched_pods
    nodes: dict[str, int] = field(default_factory=dict)   # node -> planned pods
    planned: int = 0                                      # sum of nodes' values
    skipped: dict[int, SkippedPod] = field(default_factory=dict)
    skipped_sorted: list[SkippedPod] | None = None        # sorted(skipped.values()), kept
    rivals: dict[_PolicyState, int] = field(default_factory=dict)  # conflict -> pods causing it
    policy_dict: dict[str, str] = field(default_factory=dict)
    reclaim: dict[str, Any] = field(default_factory=dict)

    def report(self, nodes: bool = True) -> PolicyReport:
        rep = PolicyReport(self.ref, generation=self.generation, valid=self.valid,
                           reason=self.reason, message=self.message)
        if self.policy is not None:
            rep.dry_run, rep.mode = self.policy.dry_run, self.policy.reclaim.mode
        rep.matched_pods = self.won
        rep.planned_pods = self.planned
        if nodes:
            rep.nodes = dict(sorted(self.nodes.items()))
        if self.skipped_sorted is None:
            # SkippedPod's order, compared as tuples rather than by its generated __lt__
            self.skipped_sorted = sorted(self.skipped.values(), key=_skipped_order)
        rep.skipped = list(self.skipped_sorted)
        rep.shadowed_pods = len(self.selected) - self.won
        rep.conflicts = sorted(r.ref for r in self.rivals)
        return rep


class _Pod:
    """What resolution reads of one pod, and what it contributes to the output."""

    __slots__ = ("active", "budget", "entry", "facts", "labels", "name", "node", "ns",
                 "placed", "placed_key", "rivals", "selected", "skip", "uid")

    def __init__(self, ns: str, name: str) -> None:
        self.ns = ns
        self.name = name
        self.uid = ""
        self.node = ""
        self.labels: dict[str, str] = {}
        self.active = False            # bound, not finished, not being deleted
        self.facts: tuple[PodMemory, str] | None = None
        self.selected: tuple[Selected, ...] = ()  # sorted: [0] is the winner
        self.rivals: tuple[_PolicyState, ...] | None = None  # equal-precedence rivals
        self.entry: dict[str, Any] | None = None  # plan entry, on node `placed`
        self.budget: float | None = None          # its policy's nodeCpuBudget
        self.skip: SkippedPod | None = None
        self.placed = ""                          # the node the contribution counts on
        self.placed_key: tuple[str, str, str] = ("", "", "")   # its entry's sort key there


def _anchors(policy: Policy) -> list[tuple[str, str] | str | None]:
    """Index keys of a cluster policy: a pod can only match if it has one of them.
    (key, value) pairs of its smallest In requirement, else the key of an Exists
    requirement, else None (checked against every pod)."""
    ins = [r for r in policy.selector.requirements if r.operator == "In"]
    if ins:
        r = min(ins, key=lambda r: len(r.values))
        return [(r.key, v) for v in sorted(r.values)]
    for r in policy.selector.requirements:
        if r.operator == "Exists":
            return [r.key]
    return [None]


class IncrementalResolver:
    def __init__(self) -> None:
        self._policies: dict[PolicyRef, _PolicyState] = {}
        # candidate policies of a pod: namespaced ones by namespace; cluster ones by anchor
        self._ns_policies: dict[str, set[_PolicyState]] = {}
        self._cl_by_pair: dict[tuple[str, str], set[_PolicyState]] = {}
        self._cl_by_key: dict[str, set[_PolicyState]] = {}
        self._cl_any: set[_PolicyState] = set()
        # namespace -> cluster policy -> whether its namespaceSelector matches (lazily)
        self._ns_match: dict[str, dict[_PolicyState, bool]] = {}
        # pods: slots; an inverted label index over eligible pods (namespace = pseudo-label)
        self._slot: dict[PodKey, int] = {}
        self._pods: list[_Pod | None] = []
        self._free: list[int] = []
        self._by_pair: dict[tuple[str, str], set[int]] = {}
        self._by_key: dict[str, set[int]] = {}
        self._eligible: set[int] = set()
        self._pod_namespaces: set[str] = set()        # namespaces with eligible pods
        self._by_node: dict[str, set[int]] = {}       # active pods, known node or not
        self._ns_labels: dict[str, dict[str, str]] = {}
        self._nodes: set[str] = set()
        # per node: its plan's entries, kept in plan order
        self._entries: dict[str, _NodeEntries] = {}
        self._facts: dict[str, tuple[PodMemory, str]] = {}
        self._dirty_nodes: set[str] = set()
        self._dirty_policies: set[_PolicyState] = set()
        self._dirty_shadowed: set[_PolicyState] = set()   # only shadowed_pods may differ

    # ---- events ------------------------------------------------------------------------

    def apply(self, kind: str, type_: str, obj: Mapping[str, Any]) -> None:
        """An informer event: kind is the cache name (pods, policies, cluster_policies,
        namespaces, nodes), type_ ADDED / MODIFIED / DELETED."""
        deleted = type_ == "DELETED"
        if kind == "pods":
            meta = obj.get("metadata") or {}
            key = (str(meta.get("namespace") or "default"), str(meta.get("name") or ""))
            self.delete_pod(key) if deleted else self.set_pod(obj)
        elif kind in ("policies", "cluster_policies"):
            pkind = NAMESPACED_KIND if kind == "policies" else CLUSTER_KIND
            if deleted:
                self.delete_policy(make_policy_ref(obj, pkind))
            else:
                self.set_policy(obj, pkind)
        elif kind == "namespaces":
            self.delete_namespace(_name(obj)) if deleted else self.set_namespace(obj)
        elif kind == "nodes":
            self.delete_node(_name(obj)) if deleted else self.set_node(_name(obj))

    def set_node(self, name: str) -> None:
        if name in self._nodes:
            return
        self._nodes.add(name)
        self._entries[name] = _NodeEntries()
        self._dirty_nodes.add(name)
        for i in list(self._by_node.get(name, ())):
            self._refresh(i)

    def delete_node(self, name: str) -> None:
        if name not in self._nodes:
            return
        self._nodes.discard(name)
        for i in list(self._by_node.get(name, ())):
            self._refresh(i)
        del self._entries[name]
        self._dirty_nodes.add(name)

    def set_namespace(self, obj: Mapping[str, Any]) -> None:
        name = _name(obj)
        labels = {_intern(str(k)): _intern(str(v))
                  for k, v in ((obj.get("metadata") or {}).get("labels") or {}).items()}
        if self._ns_labels.get(name) == labels:
            return
        self._ns_labels[name] = labels
        self._ns_match.pop(name, None)
        self._refresh_namespace(name)

    def delete_namespace(self, name: str) -> None:
        if self._ns_labels.pop(name, None) is not None:
            self._ns_match.pop(name, None)
            self._refresh_namespace(name)

    def _refresh_namespace(self, name: str) -> None:
        # only cluster policies read namespace labels
        if self._cl_any or self._cl_by_pair or self._cl_by_key:
            for i in list(self._by_pair.get((NAMESPACE_KEY, name), ())):
                self._refresh(i)

    def set_pod(self, obj: Mapping[str, Any]) -> None:
        self._refresh(self._record(obj))

    def load(self, nodes: Iterable[str], namespaces: Iterable[Mapping[str, Any]],
             policies: Iterable[Mapping[str, Any]],
             cluster_policies: Iterable[Mapping[str, Any]],
             pods: Iterable[Mapping[str, Any]]) -> None:
        """A fresh resolver's whole input at once (cold start): the same state as the
        objects applied one by one, built as resolve() does, by set operations per
        policy over the label index rather than candidate policies per pod."""
        assert not self._slot and not self._policies, "load() is for a fresh resolver"
        for name in nodes:
            self.set_node(name)
        for ns in namespaces:
            self.set_namespace(ns)
        for kind, objs in ((NAMESPACED_KIND, policies), (CLUSTER_KIND, cluster_policies)):
            for obj in objs:
                self.set_policy(obj, kind)          # no pods yet: nothing to resolve
        for obj in pods:
            i = self._record(obj)
            pod = self._pods[i]
            assert pod is not None
            if pod.active and pod.node in self._nodes and i not in self._eligible:
                self._index(i, pod)
        chosen: dict[int, list[Selected]] = {}
        for state in self._policies.values():
            if state.policy is None or state.key is None:
                continue
            state.selected = self._select(state.policy)
            mine = (state.key, state)
            for i in state.selected:
                chosen.setdefault(i, []).append(mine)
        pods_ = self._pods
        for i, selected in chosen.items():
            selected.sort()
            pod = pods_[i]
            assert pod is not None
            self._settle(i, pod, tuple(selected))
        self._dirty_policies.update(self._policies.values())

    def _record(self, obj: Mapping[str, Any]) -> int:
        """Store what resolution reads of a pod (its slot); resolving it is _refresh's."""
        meta = obj.get("metadata") or {}
        ns = _intern(str(meta.get("namespace") or "default"))
        name = str(meta.get("name") or "")
        i = self._slot.get((ns, name))
        if i is None:
            i = self._free.pop() if self._free else len(self._pods)
            if i == len(self._pods):
                self._pods.append(None)
            self._pods[i] = _Pod(ns, name)
            self._slot[(ns, name)] = i
        pod = self._pods[i]
        assert pod is not None
        active = is_active(obj)
        node = _intern(str((obj.get("spec") or {}).get("nodeName") or ""))
        labels = {_intern(str(k)): _intern(str(v))
                  for k, v in (meta.get("labels") or {}).items()}
        if i in self._eligible:       # _refresh indexes it again under its new labels
            self._unindex(i, pod)
        if pod.active:
            self._by_node[pod.node].discard(i)
        if active:
            self._by_node.setdefault(node, set()).add(i)
        pod.uid, pod.node, pod.labels, pod.active = str(meta.get("uid") or ""), node, labels, active
        key = resource_key(obj)
        facts = self._facts.get(key) if key is not None else None
        if facts is None:
            facts = (pod_memory(obj), qos_class(obj))
            if key is not None:
                self._facts[key] = facts
        pod.facts = facts
        return i

    def delete_pod(self, key: PodKey) -> None:
        i = self._slot.pop(key, None)
        if i is None:
            return
        pod = self._pods[i]
        assert pod is not None
        if pod.active:
            self._by_node[pod.node].discard(i)
        pod.active = False
        self._refresh(i)
        self._pods[i] = None
        self._free.append(i)

    def set_policy(self, obj: Mapping[str, Any], kind: str) -> None:
        ref = make_policy_ref(obj, kind)
        state = self._policies.get(ref)
        if state is None:
            state = self._policies[ref] = _PolicyState(ref)
        if state.policy is not None:
            self._unindex_policy(state)
        gen = (obj.get("metadata") or {}).get("generation")
        state.generation = gen if isinstance(gen, int) else None
        try:
            policy: Policy | None = parse_policy(obj, kind)
        except PolicyError as e:
            policy = None
            state.valid, state.reason, state.message = False, e.reason, e.message
        else:
            state.valid, state.reason, state.message = True, "Valid", ""
        state.policy = policy
        self._dirty_policies.add(state)
        now: set[int] = set()
        if policy is not None:
            state.key = (*policy.precedence(), ref.kind, ref.namespace, ref.name)
            state.policy_dict = ref.to_dict()
            state.reclaim = policy.reclaim.to_plan()
            self._index_policy(state)
            now = self._select(policy)
        else:
            state.key = None
        before = state.selected
        state.selected = now
        mine = None if state.key is None else (state.key, state)
        for i in before | now:
            pod = self._pods[i]
            assert pod is not None
            sel = [s for s in pod.selected if s[1] is not state]
            if i in now:
                assert mine is not None
                sel.append(mine)
                sel.sort()
            self._settle(i, pod, tuple(sel))

    def delete_policy(self, ref: PolicyRef) -> None:
        state = self._policies.get(ref)
        if state is None:
            return
        if state.policy is not None:
            self._unindex_policy(state)
        before, state.selected = state.selected, set()
        for i in before:
            pod = self._pods[i]
            assert pod is not None
            self._settle(i, pod, tuple(s for s in pod.selected if s[1] is not state))
        del self._policies[ref]
        self._dirty_policies.add(state)

    # ---- output ------------------------------------------------------------------------

    def take_dirty(self, shadowed: bool = True) -> tuple[set[str], set[PolicyRef]]:
        """Nodes whose plan and policies whose report may have changed since the last call
        (a node no longer known: its plan is to go; a policy no longer known: deleted).
        With `shadowed` False, policies whose report can differ only in shadowed_pods
        (a pod they select but do not win came or went) are left out."""
        nodes, policies = self._dirty_nodes, self._dirty_policies
        if shadowed:
            policies |= self._dirty_shadowed
        self._dirty_nodes, self._dirty_policies, self._dirty_shadowed = set(), set(), set()
        return nodes, {s.ref for s in policies}

    def nodes(self) -> set[str]:
        return set(self._nodes)

    def plan(self, node: str) -> dict[str, Any] | None:
        """The node's plan spec as resolve() builds it, None for an unknown node."""
        entries = self._entries.get(node)
        if entries is None:
            return None
        spec: dict[str, Any] = {"nodeName": node}
        if entries.budgets:
            spec["nodeCpuBudget"] = millicores(min(entries.budgets))
        spec["pods"] = list(entries.pods)
        return spec

    def take_entry_changes(self, node: str
                           ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
        """The node's plan entries that came and went (net, by identity: plan() lists
        the same entry objects until they change) since the last call for this node, so
        that a caller that keeps something per entry patches it instead of going over the
        whole plan. None: not known (an unknown node, the first call since the node came,
        or too many changes since the last call)."""
        entries = self._entries.get(node)
        return None if entries is None else entries.take_changes()

    def pod_placement(self, key: PodKey) -> tuple[str, bool, str] | None:
        """(node, active, uid) of a known pod: what the plans' freeze and quarantine read."""
        i = self._slot.get(key)
        pod = None if i is None else self._pods[i]
        return None if pod is None else (pod.node, pod.active, pod.uid)

    def active_uids(self, node: str) -> set[str]:
        """uids of the active pods bound to `node` (known node or not)."""
        pods = self._pods
        return {p.uid for p in (pods[i] for i in self._by_node.get(node, ())) if p is not None}

    def policy_nodes(self, ref: PolicyRef) -> set[str]:
        """Nodes where the policy has plan entries (as resolve() would plan them)."""
        state = self._policies.get(ref)
        return set() if state is None else set(state.nodes)

    def policy_refs(self) -> list[PolicyRef]:
        return sorted(self._policies)

    def report(self, ref: PolicyRef, nodes: bool = True) -> PolicyReport | None:
        """resolve()'s PolicyReport of the policy; without `nodes` (O(its nodes)) its
        `nodes` is left empty (for callers that keep their own per-node counts)."""
        state = self._policies.get(ref)
        return None if state is None else state.report(nodes)

    def valid(self, ref: PolicyRef) -> bool | None:
        """Whether the policy is valid (None: not known)."""
        state = self._policies.get(ref)
        return None if state is None else state.valid

    def resolution(self) -> Resolution:
        """Everything, as resolve() returns it (for tests and comparisons)."""
        plans = {n: self.plan(n) for n in sorted(self._nodes)}
        return Resolution(plans=plans,  # type: ignore[arg-type]
                          policies={r: self._policies[r].report() for r in self.policy_refs()})

    def stats(self) -> dict[str, int]:
        return {"pods": len(self._slot), "eligible": len(self._eligible),
                "policies": len(self._policies), "nodes": len(self._nodes)}

    # ---- internals ---------------------------------------------------------------------

    def _index(self, i: int, pod: _Pod) -> None:
        by_pair, by_key = self._by_pair, self._by_key
        for k, v in (*pod.labels.items(), (NAMESPACE_KEY, pod.ns)):
            by_pair.setdefault((k, v), set()).add(i)
            by_key.setdefault(k, set()).add(i)
        self._eligible.add(i)
        self._pod_namespaces.add(pod.ns)

    def _unindex(self, i: int, pod: _Pod) -> None:
        for k, v in (*pod.labels.items(), (NAMESPACE_KEY, pod.ns)):
            s = self._by_pair[(k, v)]
            s.discard(i)
            if not s:
                del self._by_pair[(k, v)]
                if k == NAMESPACE_KEY:
                    self._pod_namespaces.discard(v)
            s = self._by_key[k]
            s.discard(i)
            if not s:
                del self._by_key[k]
        self._eligible.discard(i)

    def _index_policy(self, state: _PolicyState) -> None:
        policy = state.policy
        assert policy is not None
        if not policy.is_cluster:
            self._ns_policies.setdefault(state.ref.namespace, set()).add(state)
            state.anchors = []
            return
        state.anchors = _anchors(policy)
        for a in state.anchors:
            if a is None:
                self._cl_any.add(state)
            elif isinstance(a, tuple):
                self._cl_by_pair.setdefault(a, set()).add(state)
            else:
                self._cl_by_key.setdefault(a, set()).add(state)

    def _unindex_policy(self, state: _PolicyState) -> None:
        if state.ref.kind != CLUSTER_KIND:
            s = self._ns_policies[state.ref.namespace]
            s.discard(state)
            if not s:
                del self._ns_policies[state.ref.namespace]
            return
        for cache in self._ns_match.values():
            cache.pop(state, None)
        for a in state.anchors:
            if a is None:
                self._cl_any.discard(state)
                continue
            table: dict[Any, set[_PolicyState]] = (self._cl_by_pair if isinstance(a, tuple)
                                                    else self._cl_by_key)
            s = table[a]
            s.discard(state)
            if not s:
                del table[a]

    def _namespace_labels(self, ns: str) -> dict[str, str]:
        lab = self._ns_labels.get(ns)
        if lab is None:
            return {NAMESPACE_NAME_LABEL: ns}
        if NAMESPACE_NAME_LABEL in lab:
            return lab
        return {**lab, NAMESPACE_NAME_LABEL: ns}

    def _select(self, policy: Policy) -> set[int]:
        """Eligible pods the policy selects (resolve()'s _scope + LabelSelector.select)."""
        if policy.namespace_selector is None:
            namespaces = frozenset([policy.ref.namespace])
        else:
            ns_sel = policy.namespace_selector
            namespaces = frozenset(n for n in self._pod_namespaces
                                   if ns_sel.matches(self._namespace_labels(n)))
        reqs = (*policy.selector.requirements, Requirement(NAMESPACE_KEY, "In", namespaces))
        positive: list[set[int]] = []
        negative: list[set[int]] = []
        empty: set[int] = set()
        for r in reqs:
            if r.operator in ("In", "NotIn"):
                sets = [self._by_pair.get((r.key, v), empty) for v in r.values]
                s = sets[0] if len(sets) == 1 else set().union(*sets)
            else:
                s = self._by_key.get(r.key, empty)
            (positive if r.operator in ("In", "Exists") else negative).append(s)
        positive.sort(key=len)
        result = set(positive[0])
        for s in positive[1:]:
            result &= s
        for s in negative:
            result -= s
        return result

    def _candidates(self, pod: _Pod) -> set[_PolicyState]:
        out = set(self._ns_policies.get(pod.ns, ()))
        by_pair, by_key = self._cl_by_pair, self._cl_by_key
        if by_pair:
            for pair in pod.labels.items():
                s = by_pair.get(pair)
                if s:
                    out |= s
        if by_key:
            for k in pod.labels:
                s = by_key.get(k)
                if s:
                    out |= s
        out |= self._cl_any
        return out

    def _selecting(self, pod: _Pod) -> tuple[Selected, ...]:
        """The valid policies selecting an eligible pod, best first."""
        labels = {**pod.labels, NAMESPACE_KEY: pod.ns}
        ns_match: dict[_PolicyState, bool] | None = None
        out = []
        for state in self._candidates(pod):
            policy = state.policy
            assert policy is not None and state.key is not None
            if policy.namespace_selector is not None:
                if ns_match is None:
                    ns_match = self._ns_match.setdefault(pod.ns, {})
                m = ns_match.get(state)
                if m is None:
                    m = ns_match[state] = policy.namespace_selector.matches(
                        self._namespace_labels(pod.ns))
                if not m:
                    continue
            elif policy.ref.namespace != pod.ns:
                continue
            if _matches(policy.selector, labels):
                out.append((state.key, state))
        out.sort()
        return tuple(out)

    def _refresh(self, i: int) -> None:
        """Re-resolve one pod from scratch (its candidates, then its contribution)."""
        pod = self._pods[i]
        assert pod is not None
        eligible = pod.active and pod.node in self._nodes
        if eligible and i not in self._eligible:
            self._index(i, pod)
        elif not eligible and i in self._eligible:
            self._unindex(i, pod)
        selected = self._selecting(pod) if eligible else ()
        if selected != pod.selected:
            old = {s[1] for s in pod.selected}
            new = {s[1] for s in selected}
            for state in old - new:
                state.selected.discard(i)
            for state in new - old:
                state.selected.add(i)
            # selected, not won: of their reports only shadowed_pods can change here
            self._dirty_shadowed.update(old ^ new)
        self._settle(i, pod, selected)

    def _contribution(self, pod: _Pod, state: _PolicyState) -> tuple[
            dict[str, Any] | None, float | None, SkippedPod | None]:
        """(plan entry, cpu budget, None) or (None, None, skipped) for the pod won by state."""
        policy = state.policy
        assert policy is not None and pod.facts is not None
        mem, qos = pod.facts
        high, reason, message = policy.memory_high.for_pod(mem)
        if high is None:
            return None, None, SkippedPod(PodRef(pod.ns, pod.name, pod.uid), pod.node,
                                          reason, message)
        entry = {"uid": pod.uid, "namespace": pod.ns, "name": pod.name, "qosClass": qos,
                 "memoryHigh": high, "dryRun": policy.dry_run,
                 "policy": state.policy_dict, "reclaim": state.reclaim}
        return entry, policy.reclaim.node_cpu_budget, None

    def _settle(self, i: int, pod: _Pod, selected: tuple[Selected, ...]) -> None:
        """Replace the pod's contribution (winner, rivals, entry or skip) by the one
        `selected` (sorted) gives; nothing is marked dirty when it stays the same."""
        entry = budget = skip = None
        new_w = rivals = None
        if selected:
            new_w = selected[0][1]
            group = selected[0][0][:2]
            rivals = tuple(s[1] for s in selected[1:] if s[0][:2] == group)
            entry, budget, skip = self._contribution(pod, new_w)
        old_w = pod.selected[0][1] if pod.selected else None
        pod.selected = selected
        node = pod.node
        if (old_w is new_w and rivals == pod.rivals and pod.placed == node
                and skip == pod.skip and entry == pod.entry and budget == pod.budget):
            return
        dirty_p = self._dirty_policies
        if old_w is not None:        # remove the old contribution
            old_w.won -= 1
            if pod.skip is not None:
                del old_w.skipped[i]
                if old_w.skipped_sorted is not None:
                    ordered = old_w.skipped_sorted
                    del ordered[bisect.bisect_left(ordered, _skipped_order(pod.skip),
                                                   key=_skipped_order)]
            elif pod.entry is not None:
                _dec(old_w.nodes, pod.placed)
                old_w.planned -= 1
                node_entries = self._entries.get(pod.placed)
                if node_entries is not None:
                    node_entries.remove(pod.placed_key, pod.budget)
                self._dirty_nodes.add(pod.placed)
            counts = old_w.rivals
            for r in pod.rivals or ():       # (_dec, inlined: pods can have many rivals)
                n = counts[r] - 1
                if n:
                    counts[r] = n
                else:
                    del counts[r]
                theirs = r.rivals
                n = theirs[old_w] - 1
                if n:
                    theirs[old_w] = n
                else:
                    del theirs[old_w]
                    dirty_p.add(r)           # a rival's report reads only who its rivals are
            dirty_p.add(old_w)
        pod.entry, pod.budget, pod.skip, pod.rivals, pod.placed = entry, budget, skip, rivals, node
        if new_w is None:
            return
        new_w.won += 1
        if skip is not None:
            new_w.skipped[i] = skip
            if new_w.skipped_sorted is not None:
                bisect.insort(new_w.skipped_sorted, skip, key=_skipped_order)
        elif entry is not None:
            new_w.nodes[node] = new_w.nodes.get(node, 0) + 1
            new_w.planned += 1
            pod.placed_key = key = (pod.ns, pod.name, pod.uid)
            self._entries[node].add(key, entry, budget)
            self._dirty_nodes.add(node)
        counts = new_w.rivals
        for r in rivals or ():
            counts[r] = counts.get(r, 0) + 1
            theirs = r.rivals
            n = theirs.get(new_w, 0)
            theirs[new_w] = n + 1
            if not n:
                dirty_p.add(r)
        dirty_p.add(new_w)


class _NodeEntries:
    """A node's plan entries in plan order (namespace, name, uid: resolve()'s), patched
    one at a time (bisect) instead of sorted for every plan, and the count of each cpu
    budget among them (the plan's is the smallest).

    Once take_changes() has been called, the entries that come and go are logged for
    the next call (at most _LOG_MAX of each: beyond, the log is dropped)."""

    __slots__ = ("budgets", "came", "gone", "keys", "logging", "pods")

    def __init__(self) -> None:
        self.keys: list[tuple[str, str, str]] = []
        self.pods: list[dict[str, Any]] = []
        self.budgets: dict[float, int] = {}
        self.logging = False
        self.came: list[dict[str, Any]] = []
        self.gone: list[dict[str, Any]] = []

    def add(self, key: tuple[str, str, str], entry: dict[str, Any],
            budget: float | None) -> None:
        at = bisect.bisect_left(self.keys, key)
        self.keys.insert(at, key)
        self.pods.insert(at, entry)
        if budget is not None:
            self.budgets[budget] = self.budgets.get(budget, 0) + 1
        if self.logging:
            self.came.append(entry)
            if len(self.came) > _LOG_MAX:
                self._drop_log()

    def remove(self, key: tuple[str, str, str], budget: float | None) -> None:
        at = bisect.bisect_left(self.keys, key)
        assert self.keys[at] == key, key
        if self.logging:
            self.gone.append(self.pods[at])
            if len(self.gone) > _LOG_MAX:
                self._drop_log()
        del self.keys[at]
        del self.pods[at]
        if budget is not None:
            _dec(self.budgets, budget)

    def _drop_log(self) -> None:
        self.logging = False
        self.came, self.gone = [], []

    def take_changes(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
        """(entries that came, entries that went) since the last call, net (an entry that
        came and went is in neither); None on the first call, or when the log was
        dropped: then nothing is known about what changed."""
        if not self.logging:
            self.logging = True
            return None
        came, gone = self.came, self.gone
        self.came, self.gone = [], []
        if came and gone:
            both = set(map(id, came)) & set(map(id, gone))
            if both:
                came = [e for e in came if id(e) not in both]
                gone = [e for e in gone if id(e) not in both]
        return came, gone


def _skipped_order(s: SkippedPod) -> tuple[str, str, str, str, str, str]:
    """The order of SkippedPod (a dataclass with order=True: its fields, PodRef's first)."""
    return (s.pod.namespace, s.pod.name, s.pod.uid, s.node, s.reason, s.message)


def _dec(counts: dict[Any, int], key: Any) -> bool:
    """Count one less of `key`; whether it is gone."""
    n = counts[key] - 1
    if n:
        counts[key] = n
        return False
    del counts[key]
    return True


def _matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    return all(r.matches(labels) for r in selector.requirements)


