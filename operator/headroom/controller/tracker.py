"""Incremental decisions: a round's writes, computed only for what changed since the last.

`reconciler.decide()` recomputes every plan and policy status from a snapshot of all
caches: seconds of CPU at 150,000 pods. `PlanTracker` holds an `IncrementalResolver`
(incremental.py) and, per node, the plan spec it last decided, and per policy the
per-node lines (`status.node_summary`) its status is built from, with their sums and
their listing order (`status.status_from_totals`). Each round it is fed the objects that
changed (informer.ObjectCache.take_changes) and decides the plans of only the nodes
those can affect and the statuses of only the policies those can affect, by the same
rules as decide(), applied per node:

* `plans.freeze_invalid`: an invalid policy's entries stay as they are on the server;
* `plans.check_entries` / `plans.quarantine` / rejected policies: a policy with an entry
  out of bounds (on any node), or one the API server refused, changes no plan;
  when a policy enters or leaves that set, every node where it has entries (decided or
  resolved) is decided again.

Work per node follows the entries that changed there: the resolver reports which came
and went (`IncrementalResolver.take_entry_changes`); only those are checked against the
plan contract and counted into (out of) the policies' lines, and a policy's status is
built from its totals and its first MAX_NODES_LISTED lines, not from all its lines.

`load()` starts over from a full snapshot (cold start and the reconciler's periodic
resync). tests/unit/test_tracker.py applies random event sequences and checks that the
writes leave the same plans and statuses as decide() over the same objects.

Not thread-safe: the reconciler calls it from one round at a time.
"""

from __future__ import annotations

import bisect
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
Diff = tuple[list[Any], list[Any]]                    # plan entries (that came, that went)
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
        # node -> (whether the spec last checked was the resolver's plan, id -> entry of
        # that spec or None, id -> (entry, contract problems) of those with problems):
        # an entry the resolver kept (the same object) is not checked again
        self._checked: dict[str, tuple[bool, dict[int, Any] | None,
                                       dict[int, tuple[Any, Any]]]] = {}
        # nodes whose decided spec lists the resolver's plan as it was resolved
        self._pure: set[str] = set()
        self._desired: dict[str, dict[str, Any]] = {}         # node -> spec last decided
        # canonical ref -> node -> its status line there (status.node_summary), for the
        # nodes where _desired gives it entries; and per ref their sums and listing order
        self._summaries: dict[str, dict[str, dict[str, Any]]] = {}
        self._totals: dict[str, _Totals] = {}
        # node -> (the plan's status object, status.plan_outcomes of it) that its lines
        # were computed with
        self._outcomes: dict[str, tuple[Any, dict[tuple[str, str], Any]]] = {}
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
                    status = obj.get("status")
                    if (old or {}).get("status") != status:
                        self._lines.add(name)
                    else:
                        seen = self._outcomes.get(name)
                        if seen is not None and old is not None \
                                and seen[0] is old.get("status"):
                            # the same outcomes: the lines stand (and need no recount)
                            self._outcomes[name] = (status, seen[1])
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
        # (a policy's status does not show its shadowed pods)
        dirty_nodes, dirty_refs = self.resolver.take_dirty(shadowed=False)
        nodes, self._nodes = self._nodes | dirty_nodes, set()
        policies, self._policies = self._policies | dirty_refs, set()
        lines, self._lines = self._lines, set()
        for ref in policies:             # validity: freeze_invalid keeps their entries
            key = self.key(ref)
            invalid = self.resolver.valid(ref) is False
            if invalid != (key in self._invalid):
                self._invalid.symmetric_difference_update({key})
                nodes |= self._summaries.get(key, {}).keys()
        current: dict[str, dict[str, Any] | None] = {}
        raw: dict[str, dict[str, Any]] = {}
        diffs: dict[str, tuple[Any, Diff | None]] = {}
        self._resolve_nodes(nodes, known_spec, current, raw, diffs)
        bad = self._global_bad(rejected or {})
        moved = {k for k in bad.keys() ^ self._bad.keys()}
        changed = moved | {k for k in bad.keys() & self._bad.keys() if bad[k] != self._bad[k]}
        more: set[str] = set()
        for key in moved:
            more |= self._summaries.get(key, {}).keys()
            ref = self._refs.get(key)
            if ref is not None:
                more |= self.resolver.policy_nodes(ref)
        self._resolve_nodes(more - nodes, known_spec, current, raw, diffs)
        nodes |= more
        policies |= {self._refs[k] for k in changed if k in self._refs}
        self._bad = bad

        actions: list[PlanAction] = []
        for node in sorted(nodes):
            spec = raw.get(node)
            if spec is not None and bad:
                spec = plans_mod.quarantine({node: spec}, set(bad), {node: current[node]},
                                            self._active(node), self._entry_key)[node]
            cur = current[node]
            actions += plans_mod.plan_actions({node: spec} if spec is not None else {},
                                              {node: cur} if cur is not None else {})
            # the resolver's own plan (nothing frozen or quarantined), as was the last
            # one: the entries that came and went are the resolver's
            resolved, diff = diffs.get(node, (None, None))
            pure = spec is not None and spec.get("pods") is resolved
            policies |= self._set_desired(
                node, spec, diff if pure and node in self._pure else None)
            if pure:
                self._pure.add(node)
            else:
                self._pure.discard(node)
        for node in lines - nodes:
            policies |= self._set_desired(node, self._desired.get(node))

        statuses: dict[PolicyRef, dict[str, Any]] = {}
        events: list[tuple[dict[str, Any], str, str]] = []
        for ref in sorted(policies):
            obj = self.policy_objs.get(ref)
            report = self.resolver.report(ref, nodes=False)
            if obj is None or report is None:
                continue
            key = self.key(ref)
            if key in bad and report.valid:
                report.valid = False
                report.reason, report.message = bad[key]
            previous = known_status(ref)
            lines = self._summaries.get(key, {})
            totals = self._totals.get(key) or _NO_TOTALS
            new = status_mod.status_from_totals(
                report, totals.enforced, totals.planned, len(lines),
                [lines[n] for _, _, n in totals.order[:status_mod.MAX_NODES_LISTED]],
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
                       raw: dict[str, dict[str, Any]],
                       diffs: dict[str, tuple[Any, Diff | None]]) -> None:
        """Each node's resolved plan with invalid policies' entries frozen (into `raw`;
        nodes without a plan are left out), its server spec (into `current`), the
        policies with entries out of bounds there (into _node_bad), and (into `diffs`)
        the resolver's pods list with the entries that came and went since the node was
        last resolved (None: not known)."""
        invalid = {self._refs[k]: PolicyReport(self._refs[k], valid=False)
                   for k in self._invalid if k in self._refs}
        for node in nodes:
            current[node] = cur = known_spec(node)
            spec = self.resolver.plan(node)
            diff = self.resolver.take_entry_changes(node)
            self._node_bad.pop(node, None)
            if spec is None:
                self._checked.pop(node, None)
                continue
            resolved = spec["pods"]
            diffs[node] = (resolved, diff)
            if invalid and cur:
                spec = plans_mod.freeze_invalid({node: spec}, invalid, {node: cur},
                                                self._active(node), self._entry_key)[node]
            raw[node] = spec
            found = self._check(node, spec, diff, spec.get("pods") is resolved)
            if found:
                self._node_bad[node] = found

    def _check(self, node: str, spec: Mapping[str, Any], diff: Diff | None,
               pure: bool) -> dict[str, str]:
        """plans.check_entries of one node, checking only entries not seen before: those
        that came (`diff`, when the spec is the resolver's plan (`pure`) and the last one
        checked was too), else those not in the last spec checked (by identity: an
        entry the resolver kept is the same object)."""
        pods = spec.get("pods") or ()
        seen = self._checked.get(node)
        ids: dict[int, Any] | None = None
        fresh: Iterable[Any]
        if pure and diff is not None and seen is not None and seen[0]:
            fresh, gone = diff
            problems = seen[2]
            if problems:
                for entry in gone:
                    problems.pop(id(entry), None)
        else:
            ids = _by_id(pods)
            problems = {}
            if seen is None or seen[1] is None:
                fresh = ids.values()
            else:
                fresh = [ids[i] for i in ids.keys() - seen[1].keys()]
                if seen[2]:
                    problems = {i: p for i, p in seen[2].items() if i in ids}
        for entry in fresh:
            found = plan_contract.entry_problems(entry)
            if found:
                problems[id(entry)] = (entry, found)
        # (checked entries stay alive in `ids` or in the resolver's plan, entries with
        # problems in `problems`: their ids stay theirs)
        self._checked[node] = (pure, ids, problems)
        bad: dict[str, str] = {}
        if problems:
            for entry in pods:               # the first problem per policy, in spec order
                hit = problems.get(id(entry))
                if hit is not None:
                    key, why = plans_mod.out_of_bounds(node, entry, hit[1][0])
                    bad.setdefault(key, why)
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

    def _set_desired(self, node: str, spec: dict[str, Any] | None,
                     diff: Diff | None = None) -> set[PolicyRef]:
        """Record the node's decided spec and its policies' status lines there; the
        policies whose line changed (their status is to be judged again).

        The lines are patched with the entries that came and went: `diff` (the
        resolver's, when both the old and the new spec are its plans), else found by
        identity (the resolver keeps an unchanged pod's entry object); unless the
        agent's outcomes for the node changed since they were counted: then they are
        counted again."""
        old = self._desired.pop(node, None)
        if spec is not None:
            self._desired[node] = spec
        plan = self.plan_objs.get(node)
        status = None if plan is None else plan.get("status")
        seen = self._outcomes.get(node)
        if seen is not None and seen[0] is status:
            outcomes, same = seen[1], True
        else:
            outcomes = status_mod.plan_outcomes({node: plan}) if plan is not None else {}
            same = outcomes == (seen[1] if seen is not None else {})
        if spec is None and plan is None:
            self._outcomes.pop(node, None)
        else:
            self._outcomes[node] = (status, outcomes)
        old_pods = (old or {}).get("pods") or ()
        new_pods = (spec or {}).get("pods") or ()
        key_of = self._entry_key
        touched: set[str] = set()
        recount = not same
        if diff is None and not recount and old_pods is not new_pods:
            old_ids, new_ids = _by_id(old_pods), _by_id(new_pods)
            if len(old_ids) != len(old_pods) or len(new_ids) != len(new_pods):
                recount = True          # an entry listed twice: not from us
            else:
                diff = ([new_ids[i] for i in new_ids.keys() - old_ids.keys()],
                        [old_ids[i] for i in old_ids.keys() - new_ids.keys()])
        if recount:
            # counted again from the spec, as status.node_summary of each policy's entries
            by_policy: dict[str, list[Any]] = {}
            for entry in new_pods:
                by_policy.setdefault(key_of(entry), []).append(entry)
            for key in {key_of(e) for e in old_pods} - by_policy.keys():
                if self._set_line(key, node, None):
                    touched.add(key)
            for key, entries in by_policy.items():
                if self._set_line(key, node, status_mod.node_summary(node, entries, outcomes)):
                    touched.add(key)
        elif diff is not None:
            deltas: dict[str, tuple[list[Any], list[Any]]] = {}
            for entry in diff[1]:
                deltas.setdefault(key_of(entry), ([], []))[0].append(entry)
            for entry in diff[0]:
                deltas.setdefault(key_of(entry), ([], []))[1].append(entry)
            for key, (gone, came) in deltas.items():
                line = self._summaries.get(key, {}).get(node)
                pods = len(came) - len(gone)
                enforced = 0
                if outcomes:
                    enforced = (status_mod.node_summary(node, came, outcomes)["enforced"]
                                - status_mod.node_summary(node, gone, outcomes)["enforced"])
                if line is not None:
                    pods += line["pods"]
                    enforced += line["enforced"]
                new = {"node": node, "pods": pods, "enforced": enforced} if pods else None
                if self._set_line(key, node, new):
                    touched.add(key)
        refs = self._refs
        return {refs[k] for k in touched if k in refs}

    def _set_line(self, key: str, node: str, line: dict[str, Any] | None) -> bool:
        """Set (None: drop) the policy's status line on the node, keeping its totals and
        listing order; whether it changed."""
        lines = self._summaries.get(key)
        old = None if lines is None else lines.get(node)
        if old == line:
            return False
        totals = self._totals.get(key)
        if totals is None:
            totals = self._totals[key] = _Totals()
        if old is not None:
            totals.remove(old)
        if line is not None:
            totals.add(line)
            if lines is None:
                lines = self._summaries[key] = {}
            lines[node] = line
        else:
            assert lines is not None
            del lines[node]
            if not lines:
                del self._summaries[key]
                del self._totals[key]
        return True

    def _entry_key(self, entry: Mapping[str, Any]) -> str:
        """plans.policy_key(entry), canonical(entry["policy"]), memoized by the policy's
        items and their exact types (True and 1 are equal keys, not equal JSON)."""
        policy = entry.get("policy")
        if type(policy) is not dict:
            return canonical(policy)
        # (items in their order: another order is another memo key, same value)
        items = (tuple(policy.items()), tuple(map(type, policy.values())))
        try:
            key = self._entry_keys.get(items)
        except TypeError:            # unhashable values: not from us, not worth a memo
            return canonical(policy)
        if key is None:
            key = canonical(policy)
            if len(self._entry_keys) < 100_000:
                self._entry_keys[items] = key
        return key



class _Totals:
    """A policy's status lines summed up, and their keys in status.listing_order: what
    status.status_from_totals needs, patched per line instead of recounted."""

    __slots__ = ("enforced", "order", "planned")

    def __init__(self) -> None:
        self.enforced = 0
        self.planned = 0
        self.order: list[tuple[int, int, str]] = []     # sorted listing_order keys

    def add(self, line: Mapping[str, Any]) -> None:
        self.enforced += line["enforced"]
        self.planned += line["pods"]
        bisect.insort(self.order, status_mod.listing_order(line))

    def remove(self, line: Mapping[str, Any]) -> None:
        self.enforced -= line["enforced"]
        self.planned -= line["pods"]
        at = bisect.bisect_left(self.order, status_mod.listing_order(line))
        del self.order[at]


_NO_TOTALS = _Totals()


def _by_id(entries: Iterable[Any]) -> dict[int, Any]:
    """id -> entry (fewer keys than entries: the same object listed twice)."""
    return dict(zip(map(id, entries), entries, strict=False))
