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

NAMESPACED_KIND = "MemoryReclaimPolicy"
CLUSTER_KIND = "ClusterMemoryReclaimPolicy"


@dataclass(frozen=True, order=True)
class PolicyRef:
    """Identity of a policy. ``namespace`` is "" for ClusterMemoryReclaimPolicy."""

    kind: str
    namespace: str
    name: str

    def to_dict(self) -> dict[str, str]:
        """The ``policy`` field of a plan pod entry (no namespace key for cluster policies)."""
        if self.namespace:
            return {"kind": self.kind, "namespace": self.namespace, "name": self.name}
        return {"kind": self.kind, "name": self.name}


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
    raise NotImplementedError("stub: implementation follows")
