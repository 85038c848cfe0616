"""Incremental decisions: a round's writes, computed only for what changed since the last.

`reconciler.decide()` recomputes every plan and policy status from a snapshot of all
caches: seconds of CPU at 150,000 pods. `PlanTracker` holds an `IncrementalResolver`
(incremental.py) and, per node, the plan spec it last decided, and per policy the
per-node lines (`status.node_summary`) its status is built from. Each round it is fed
the objects that changed (informer.ObjectCache.take_changes) and decides the plans of
only the nodes those can affect and the statuses of only the policies those can affect,
by the same rules as decide(), applied per node:

* `plans.freeze_invalid`: an invalid policy's entries stay as they are on the server;
* `plans.check_entries` / `plans.quarantine` / rejected policies: a policy with an entry
  out of bounds (on any node), or one the API server refused, changes no plan;
  when a policy enters or leaves that set, every node where it has entries (decided or
  resolved) is decided again.

`load()` starts over from a full snapshot (cold start and the reconciler's periodic
resync). tests/unit/test_tracker.py applies random event sequences and checks that the
writes leave the same plans and statuses as decide() over the same objects.

Not thread-safe: the reconciler calls it from one round at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from headroom.api import plan as plan_contract
from headroom.api.policy import CLUSTER_KIND, NAMESPACED_KIND
from headroom.controller import plans as plans_mod
from headroom.controller import status as status_mod
from headroom.controller.incremental import IncrementalResolver
from headroom.controller.plans import Decisions, PlanAction, canonical
from headroom.controller.resolve import PolicyRef, PolicyReport

__all__ = ["Change", "PlanTracker"]

Change = tuple[str, Any, dict[str, Any] | None]      # (cache name, key, object or None)
Bad = dict[str, tuple[str, str]]                      # canonical ref -> (reason, message)

_POLICY_KINDS = {"policies": NAMESPACED_KIND, "cluster_policies": CLUSTER_KIND}
_ORDER = {"namespaces": 0, "nodes": 1, "policies": 2, "cluster_policies": 3, "pods": 4,
          "plans": 5}


def _ref(obj: Mapping[str, Any], kind: str) -> PolicyRef:
    meta = obj.get("metadata") or {}
    ns = "" if kind == CLUSTER_KIND else str(meta.get("namespace") or "")
    return PolicyRef(kind, ns, str(meta.get("name") or ""))


def _resolution_input(obj: Mapping[str, Any]) -> tuple[Any, ...]:
    """What resolution reads of a policy: a status-only update (our own status writes
    coming back) changes none of it and re-resolves no pod."""
    meta = obj.get("metadata") or {}
    return (meta.get("generation"), obj.get("spec"))


class PlanTracker:
    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.resolver = IncrementalResolver()
        self.loaded = False
        self.policy_objs: dict[PolicyRef, dict[str, Any]] = {}
        self.plan_objs: dict[str, dict[str, Any]] = {}       # node -> plan on the server
        self.node_objs: dict[str, dict[str, Any]] = {}
        self._inputs: dict[PolicyRef, tuple[Any, ...]] = {}
        self._refs: dict[str, PolicyRef] = {}                 # canonical ref -> ref
        self._keys: dict[PolicyRef, str] = {}                 # ref -> canonical ref
        self._entry_keys: dict[Any, str] = {}                 # policy items -> canonical
        self._generations: dict[str, int | None] = {}         # canonical ref -> generation
        # node -> uid -> (entry, its contract problems): an entry the resolver kept (the
        # same object) is not checked again
        self._checked: dict[str, dict[str, tuple[Any, list[str]]]] = {}
        self._desired: dict[str, dict[str, Any]] = {}         # node -> spec last decided
        self._by_policy: dict[str, set[str]] = {}             # canonical ref -> nodes
        self._summaries: dict[str, dict[str, dict[str, Any]]] = {}   # ref -> node -> line
        self._node_bad: dict[str, dict[str, str]] = {}        # node -> ref -> why
        self._invalid: set[str] = set()                       # refs of invalid policies
        self._bad: Bad = {}
        self._nodes: set[str] = set()                         # to decide next round
        self._lines: set[str] = set()      # nodes whose agents' status changed, plan not
        self._policies: set[PolicyRef] = set()

    # ---- input ---------------------------------------------------------------------

    def load(self, snap: Any) -> None:
        """Start over from a reconciler.Snapshot (all caches); every node and policy is
        decided in the next round."""
        self._reset()
        for kind, objs in ((NAMESPACED_KIND, snap.policies),
                           (CLUSTER_KIND, snap.cluster_policies)):
            for obj in objs:
                ref = _ref(obj, kind)
                self.policy_objs[ref] = obj
                self._inputs[ref] = _resolution_input(obj)
                gen = (obj.get("metadata") or {}).get("generation")
                self._generations[self.key(ref)] = gen if isinstance(gen, int) else None
        for obj in snap.nodes:
            self.node_objs[str(obj["metadata"]["name"])] = obj
        self.plan_objs = dict(snap.plans)
        self.resolver.load(self.node_objs, snap.namespaces, snap.policies,
                           snap.cluster_policies, snap.pods)
        self._nodes |= set(self.plan_objs) | self.resolver.nodes()
        self._policies |= set(self.policy_objs)
        self.loaded = True

    def apply(self, changes: Iterable[Change]) -> None:
        """Objects that changed: (cache name, cache key, the object now or None if it is
        gone). Kinds are applied in an order that spares work (namespaces and nodes before
        the pods they hold)."""
        for kind, key, obj in sorted(changes, key=lambda c: _ORDER.get(c[0], 9)):
            if kind in _POLICY_KINDS:
                self._apply_policy(_POLICY_KINDS[kind], key, obj)
            elif kind == "pods":
                self._apply_pod(key, obj)
            elif kind == "plans":
                name = str(((obj or {}).get("metadata") or {}).get("name") or key[1])
                old = self.plan_objs.pop(name, None)
                if obj is not None:
                    self.plan_objs[name] = obj
                desired = self._desired.get(name)
                if obj is not None and desired is not None and obj.get("spec") == desired:
                    # the echo of our write, or an agent's status: the plan stands, only
                    # the policies' status lines of that node may change
                    if (old or {}).get("status") != obj.get("status"):
                        self._lines.add(name)
                else:
                    self._nodes.add(name)
            elif kind == "nodes":
                name = str(((obj or {}).get("metadata") or {}).get("name") or key[1])
                if obj is None:
                    self.node_objs.pop(name, None)
                    self.resolver.delete_node(name)
                else:
                    self.node_objs[name] = obj
                    self.resolver.set_node(name)
            elif kind == "namespaces":
                if obj is None:
                    self.resolver.delete_namespace(key[1])
                else:
                    self.resolver.set_namespace(obj)

    def _apply_policy(self, kind: str, key: Any, obj: dict[str, Any] | None) -> None:
        if obj is None:
            ref = PolicyRef(kind, key[0] if kind == NAMESPACED_KIND else "", key[1])
            self.policy_objs.pop(ref, None)
            self._inputs.pop(ref, None)
            self._generations.pop(self.key(ref), None)
            self.resolver.delete_policy(ref)
            self._policies.add(ref)
            return
        ref = _ref(obj, kind)
        self.policy_objs[ref] = obj
        gen = (obj.get("metadata") or {}).get("generation")
        self._generations[self.key(ref)] = gen if isinstance(gen, int) else None
        self._policies.add(ref)            # its status is judged again in any case
        inputs = _resolution_input(obj)
        if self._inputs.get(ref) != inputs:
            self._inputs[ref] = inputs
            self.resolver.set_policy(obj, kind)

    def _apply_pod(self, key: Any, obj: dict[str, Any] | None) -> None:
        meta = (obj or {}).get("metadata") or {}
        pkey = (str(meta.get("namespace") or key[0] or "default"),
                str(meta.get("name") or key[1]))
        before = self.resolver.pod_placement(pkey)
        if obj is None:
            self.resolver.delete_pod(pkey)
        else:
            self.resolver.set_pod(obj)
        after = self.resolver.pod_placement(pkey)
        # freeze_invalid and quarantine keep entries of pods that still run on their node:
        # a change of that touches the node even when no policy wins the pod
        if before != after:
            for placed in (before, after):
                if placed is not None and placed[0]:
                    self._nodes.add(placed[0])

    def retry(self, nodes: Iterable[str] = (), policies: Iterable[PolicyRef] = ()) -> None:
        """Decide these again next round (their writes failed)."""
        self._nodes.update(nodes)
        self._policies.update(policies)

    def key(self, ref: PolicyRef) -> str:
        """canonical(ref.to_dict()), the policy's key in plan entries (memoized)."""
        key = self._keys.get(ref)
        if key is None:
            key = self._keys[ref] = canonical(ref.to_dict())
            self._refs[key] = ref
        return key

    def generations(self) -> Mapping[str, int | None]:
        """canonical policy ref -> metadata.generation, for every known policy."""
        return self._generations

    def stats(self) -> dict[str, int]:
        return self.resolver.stats()

    # ---- decisions -----------------------------------------------------------------

    def decide(self, known_spec: Callable[[str], dict[str, Any] | None],
               known_status: Callable[[PolicyRef], Mapping[str, Any] | None], now: str,
               rejected: Mapping[str, str] | None = None) -> Decisions:
        """reconciler.Decisions for what changed since the last call. `known_spec(node)`:
        the node's plan spec on the server as far as the reconciler knows (None: no
        plan); `known_status(ref)` likewise for a policy's status."""
        dirty_nodes, dirty_refs = self.resolver.take_dirty()
        nodes, self._nodes = self._nodes | dirty_nodes, set()
        policies, self._policies = self._policies | dirty_refs, set()
        lines, self._lines = self._lines, set()
        for ref in policies:             # validity: freeze_invalid keeps their entries
            key = self.key(ref)
            report = self.resolver.report(ref)
            invalid = report is not None and not report.valid
            if invalid != (key in self._invalid):
                self._invalid.symmetric_difference_update({key})
                nodes |= self._by_policy.get(key, set())
        current: dict[str, dict[str, Any] | None] = {}
        raw: dict[str, dict[str, Any]] = {}
        self._resolve_nodes(nodes, known_spec, current, raw)
        bad = self._global_bad(rejected or {})
        moved = {k for k in bad.keys() ^ self._bad.keys()}
        changed = moved | {k for k in bad.keys() & self._bad.keys() if bad[k] != self._bad[k]}
        more: set[str] = set()
        for key in moved:
            more |= self._by_policy.get(key, set())
            ref = self._refs.get(key)
            if ref is not None:
                more |= self.resolver.policy_nodes(ref)
        self._resolve_nodes(more - nodes, known_spec, current, raw)
        nodes |= more
        policies |= {self._refs[k] for k in changed if k in self._refs}
        self._bad = bad

        actions: list[PlanAction] = []
        for node in sorted(nodes):
            spec = raw.get(node)
            if spec is not None and bad:
                spec = plans_mod.quarantine({node: spec}, set(bad), {node: current[node]},
                                            self._active(node))[node]
            cur = current[node]
            actions += plans_mod.plan_actions({node: spec} if spec is not None else {},
                                              {node: cur} if cur is not None else {})
            policies |= self._set_desired(node, spec)
        for node in lines - nodes:
            policies |= self._set_desired(node, self._desired.get(node))

        statuses: dict[PolicyRef, dict[str, Any]] = {}
        events: list[tuple[dict[str, Any], str, str]] = []
        for ref in sorted(policies):
            obj = self.policy_objs.get(ref)
            report = self.resolver.report(ref)
            if obj is None or report is None:
                continue
            key = self.key(ref)
            if key in bad and report.valid:
                report.valid = False
                report.reason, report.message = bad[key]
            previous = known_status(ref)
            lines = self._summaries.get(key, {})
            new = status_mod.status_from_nodes(report, [lines[n] for n in sorted(lines)],
                                               previous, now)
            # compared as JSON values: the canonical JSON of a status with thousands of
            # node lines is what a round would otherwise spend most of its time on
            if new != previous:
                statuses[ref] = new
            if status_mod.newly_invalid(report, previous):
                events.append((obj, report.reason, report.message))
        return Decisions(actions, statuses, events)

    def _active(self, node: str) -> dict[str, str]:
        return dict.fromkeys(self.resolver.active_uids(node), node)

    def _resolve_nodes(self, nodes: Iterable[str],
                       known_spec: Callable[[str], dict[str, Any] | None],
                       current: dict[str, dict[str, Any] | None],
                       raw: dict[str, dict[str, Any]]) -> None:
        """Each node's resolved plan with invalid policies' entries frozen (into `raw`;
        nodes without a plan are left out), its server spec (into `current`), and the
        policies with entries out of bounds there (into _node_bad)."""
        invalid = {self._refs[k]: PolicyReport(self._refs[k], valid=False)
                   for k in self._invalid if k in self._refs}
        for node in nodes:
            current[node] = cur = known_spec(node)
            spec = self.resolver.plan(node)
            self._node_bad.pop(node, None)
            if spec is None:
                self._checked.pop(node, None)
                continue
            if invalid and cur:
                spec = plans_mod.freeze_invalid({node: spec}, invalid, {node: cur},
                                                self._active(node))[node]
            raw[node] = spec
            found = self._check(node, spec)
            if found:
                self._node_bad[node] = found

    def _check(self, node: str, spec: Mapping[str, Any]) -> dict[str, str]:
        """plans.check_entries of one node, checking only entries not seen before."""
        memo = self._checked.get(node, {})
        fresh: dict[str, tuple[Any, list[str]]] = {}
        bad: dict[str, str] = {}
        for entry in spec.get("pods") or ():
            uid = entry.get("uid") if type(entry) is dict else None
            hit = memo.get(uid) if isinstance(uid, str) else None
            problems = hit[1] if hit is not None and hit[0] is entry \
                else plan_contract.entry_problems(entry)
            if isinstance(uid, str):
                fresh[uid] = (entry, problems)
            if problems:
                key, why = plans_mod.out_of_bounds(node, entry, problems[0])
                bad.setdefault(key, why)
        self._checked[node] = fresh
        return bad

    def _global_bad(self, rejected: Mapping[str, str]) -> Bad:
        """As decide(): the first problem on the first node (by name), then rejections."""
        bad: Bad = {}
        for node in sorted(self._node_bad):
            for key, why in self._node_bad[node].items():
                bad.setdefault(key, ("InvalidPlanEntry", why))
        for key, why in rejected.items():
            bad.setdefault(key, ("PlanRejected", why))
        return bad

    def _set_desired(self, node: str, spec: dict[str, Any] | None) -> set[PolicyRef]:
        """Record the node's decided spec and its policies' status lines there; the
        policies whose line changed (their status is to be judged again)."""
        old = self._desired.pop(node, None)
        if spec is not None:
            self._desired[node] = spec
        key_of = self._entry_key
        by_policy: dict[str, list[Mapping[str, Any]]] = {}
        for entry in (spec or {}).get("pods") or ():
            by_policy.setdefault(key_of(entry), []).append(entry)
        touched: set[PolicyRef] = set()
        before = {key_of(e) for e in (old or {}).get("pods") or ()}
        outcomes = status_mod.plan_outcomes({node: self.plan_objs[node]}) \
            if node in self.plan_objs else {}
        for key in before - by_policy.keys():
            self._drop_line(key, node)
            ref = self._refs.get(key)
            if ref is not None:
                touched.add(ref)
        for key, entries in by_policy.items():
            self._by_policy.setdefault(key, set()).add(node)
            line = status_mod.node_summary(node, entries, outcomes)
            lines = self._summaries.setdefault(key, {})
            if lines.get(node) != line:
                lines[node] = line
                ref = self._refs.get(key)
                if ref is not None:
                    touched.add(ref)
        return touched

    def _entry_key(self, entry: Mapping[str, Any]) -> str:
        """canonical(entry["policy"]), memoized by the policy's items."""
        policy = entry.get("policy")
        try:
            # (items in their order: another order is another memo key, same value)
            items = tuple(policy.items()) if type(policy) is dict else None
            key = self._entry_keys.get(items)
        except TypeError:            # unhashable values: not from us, not worth a memo
            return canonical(policy)
        if key is None:
            key = canonical(policy)
            if len(self._entry_keys) < 100_000:
                self._entry_keys[items] = key
        return key

    def _drop_line(self, key: str, node: str) -> None:
        nodes = self._by_policy.get(key)
        if nodes is not None:
            nodes.discard(node)
            if not nodes:
                del self._by_policy[key]
        lines = self._summaries.get(key)
        if lines is not None:
            lines.pop(node, None)
            if not lines:
                del self._summaries[key]
