"""The NodeReclaimPlan contract: typed entries and the one set of bounds they must satisfy.

The operator writes plans, the agent reads them, the API server stores them; all three
apply the bounds defined here. The operator checks every entry with ``validate_entry``
before it writes a plan (docs/architecture.md, "One typed plan"), the agent checks every
entry it reads (plan or saved state) the same way, and the plan CRD's schema carries the
same numbers: ``scripts/crd-bounds`` writes them into crds/ and the chart's copy, and
tests/unit/test_crds.py fails when they drift apart.

Typing is strict and nothing is coerced: an integer field takes a JSON integer only
(not a bool, not a float, not a numeric string), a string field a string. No field is a
float: percents are integers, the PSI target is in basis points, the CPU budget a
millicore quantity string. Standard library only: the standalone agent
imports this without the kubernetes client.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PAGE_SIZE = 4096
INT64_MAX = 2**63 - 1
# Largest page-aligned value an int64 holds: the ceiling of every byte field.
MAX_BYTES = INT64_MAX - INT64_MAX % PAGE_SIZE
# Below this memory.high a pod cannot do useful work: almost surely a unit mistake.
MIN_MEMORY_HIGH = 1 << 20
# The stated cap on a node's reclaim CPU budget (nodeCpuBudget, in policies and plans):
# more cores than any node has means the user meant something else.
MAX_CPU_BUDGET_CORES = 1024
MIN_CPU_BUDGET_CORES = 0.001          # 1m, the quantity grain of CPU
MAX_CPU_BUDGET_MILLICORES = MAX_CPU_BUDGET_CORES * 1000
# A plan's nodeCpuBudget: always millicores, "1m" .. "1024000m" (the operator writes it so).
MILLICORES_PATTERN = r"^([1-9][0-9]{0,5}|10[01][0-9]{4}|102[0-3][0-9]{3}|1024000)m$"
MAX_SWAPPINESS = 200                  # memory.reclaim swappiness= range (0..200)
MAX_UID_LENGTH = 128                  # pod UIDs are 36 characters; room for other forms
MAX_NAMESPACE_LENGTH = 63             # a DNS label
MAX_NAME_LENGTH = 253                 # a DNS subdomain

MODES = ("Watermark", "Pressure", "Off")
QOS_CLASSES = ("Guaranteed", "Burstable", "BestEffort")
POLICY_KINDS = ("MemoryReclaimPolicy", "ClusterMemoryReclaimPolicy")

# Defaults of the optional reclaim fields (equal to headroom.engine.engine.ReclaimSettings).
DEFAULT_HEADROOM_PERCENT = 5
DEFAULT_TARGET_PERCENT = 10
DEFAULT_STEP_BYTES = 16 << 20
DEFAULT_MAX_BYTES_PER_SECOND = 512 << 20
# PSI "some" target of Pressure mode in basis points (hundredths of a percent): 10 = 0.1%.
DEFAULT_PRESSURE_TARGET_BASIS_POINTS = 10
MAX_BASIS_POINTS = 9999


@dataclass(frozen=True)
class IntBound:
    """An integer field: minimum <= v <= maximum and v % multiple_of == 0."""

    minimum: int
    maximum: int
    multiple_of: int = 1

    def problem(self, v: Any) -> str | None:
        if isinstance(v, bool) or not isinstance(v, int):
            return f"must be an integer, got {_shown(v)}"
        if not self.minimum <= v <= self.maximum:
            return f"must be between {self.minimum} and {self.maximum}, got {v}"
        if v % self.multiple_of:
            return f"must be a multiple of {self.multiple_of}, got {v}"
        return None

    def schema(self) -> dict[str, Any]:
        """The CRD keywords of this bound (multipleOf as a CEL rule: see crd_rules)."""
        return {"minimum": self.minimum, "maximum": self.maximum}


@dataclass(frozen=True)
class StringBound:
    max_length: int
    min_length: int = 1
    enum: tuple[str, ...] = ()

    def problem(self, v: Any) -> str | None:
        if not isinstance(v, str):
            return f"must be a string, got {_shown(v)}"
        if self.enum:
            return None if v in self.enum else \
                f"must be one of {', '.join(self.enum)}, got {v!r}"
        if not self.min_length <= len(v) <= self.max_length:
            return (f"must be {self.min_length} to {self.max_length} characters long, "
                    f"got {len(v)}")
        return None

    def schema(self) -> dict[str, Any]:
        if self.enum:
            return {"enum": list(self.enum)}
        return {"minLength": self.min_length, "maxLength": self.max_length}


@dataclass(frozen=True)
class BoolBound:
    def problem(self, v: Any) -> str | None:
        return None if isinstance(v, bool) else f"must be a boolean, got {_shown(v)}"

    def schema(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class MillicoresBound:
    """A CPU amount as the operator writes it into a plan: whole millicores, "500m"."""

    minimum: int
    maximum: int

    def problem(self, v: Any) -> str | None:
        if not isinstance(v, str) or not re.fullmatch(MILLICORES_PATTERN, v):
            return (f"must be a string of whole millicores from {self.minimum}m to "
                    f"{self.maximum}m, got {_shown(v)}")
        return None

    def schema(self) -> dict[str, Any]:
        return {"pattern": MILLICORES_PATTERN, "maxLength": 8}


Bound = IntBound | StringBound | BoolBound | MillicoresBound

# Percents are integers (Kubernetes API conventions: no floats in an API).
_PERCENT = IntBound(1, 99)
_BYTES = IntBound(PAGE_SIZE, MAX_BYTES, PAGE_SIZE)

# Every bounded field of a plan, by its path below spec (pods[] = any entry). This table
# is the single source: validate_entry applies it, scripts/crd-bounds writes it into the
# NodeReclaimPlan CRD, tests/unit/test_crds.py checks that the CRD carries it.
SPEC_BOUNDS: dict[str, Bound] = {
    "nodeCpuBudget": MillicoresBound(1, MAX_CPU_BUDGET_MILLICORES),
}
ENTRY_BOUNDS: dict[str, Bound] = {
    "uid": StringBound(MAX_UID_LENGTH),
    "namespace": StringBound(MAX_NAMESPACE_LENGTH),
    "name": StringBound(MAX_NAME_LENGTH),
    "qosClass": StringBound(0, enum=QOS_CLASSES),
    "memoryHigh": IntBound(MIN_MEMORY_HIGH, MAX_BYTES, PAGE_SIZE),
    "dryRun": BoolBound(),
    "policy.kind": StringBound(0, enum=POLICY_KINDS),
    "policy.namespace": StringBound(MAX_NAMESPACE_LENGTH),
    "policy.name": StringBound(MAX_NAME_LENGTH),
    "reclaim.mode": StringBound(0, enum=MODES),
    "reclaim.headroomPercent": _PERCENT,
    "reclaim.targetPercent": _PERCENT,
    "reclaim.stepBytes": _BYTES,
    "reclaim.maxBytesPerSecond": _BYTES,
    "reclaim.swappiness": IntBound(0, MAX_SWAPPINESS),
    "reclaim.pressureTargetBasisPoints": IntBound(1, MAX_BASIS_POINTS),
    "reclaim.livelockGuard": BoolBound(),
}
# Schema defaults (`default:` in the plan CRD, so that `kubectl explain` and `-o yaml` show
# the values in effect); validate_entry fills in the same values for an absent field.
ENTRY_DEFAULTS: dict[str, Any] = {
    "dryRun": False,
    "reclaim.headroomPercent": DEFAULT_HEADROOM_PERCENT,
    "reclaim.targetPercent": DEFAULT_TARGET_PERCENT,
    "reclaim.stepBytes": DEFAULT_STEP_BYTES,
    "reclaim.maxBytesPerSecond": DEFAULT_MAX_BYTES_PER_SECOND,
    "reclaim.pressureTargetBasisPoints": DEFAULT_PRESSURE_TARGET_BASIS_POINTS,
    "reclaim.livelockGuard": True,
}
REQUIRED_ENTRY_FIELDS = ("uid", "namespace", "name", "qosClass", "memoryHigh", "policy",
                         "reclaim", "policy.kind", "policy.name", "reclaim.mode")
# Cross-field rule, also a CEL rule on the CRD's reclaim object (crd_rules).
HEADROOM_BELOW_TARGET = "headroomPercent must be below targetPercent"


@dataclass(frozen=True)
class Problem:
    """One reason a plan entry is unusable; ``path`` is relative to the entry
    (or to the spec for spec-level fields), in the API server's dotted form."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True)
class PlanPolicyRef:
    kind: str
    name: str
    namespace: str = ""       # "" for a ClusterMemoryReclaimPolicy


@dataclass(frozen=True)
class PlanReclaim:
    """The reclaim block with defaults filled in; every value within its bound."""

    mode: str = "Watermark"
    headroom_percent: int = DEFAULT_HEADROOM_PERCENT
    target_percent: int = DEFAULT_TARGET_PERCENT
    step_bytes: int = DEFAULT_STEP_BYTES
    max_bytes_per_second: int = DEFAULT_MAX_BYTES_PER_SECOND
    swappiness: int | None = None
    pressure_target_basis_points: int = DEFAULT_PRESSURE_TARGET_BASIS_POINTS
    livelock_guard: bool = True

    @property
    def pressure_target_percent(self) -> float:
        """The engine's unit (percent of wall time) of pressureTargetBasisPoints."""
        return self.pressure_target_basis_points / 100


@dataclass(frozen=True)
class PlanEntry:
    """One pod of a NodeReclaimPlan, as validated: safe to act on."""

    uid: str
    namespace: str
    name: str
    qos_class: str
    memory_high: int
    dry_run: bool
    policy: PlanPolicyRef
    reclaim: PlanReclaim


_RECLAIM_ATTRS = {
    "mode": "mode", "headroomPercent": "headroom_percent", "targetPercent": "target_percent",
    "stepBytes": "step_bytes", "maxBytesPerSecond": "max_bytes_per_second",
    "swappiness": "swappiness", "pressureTargetBasisPoints": "pressure_target_basis_points",
    "livelockGuard": "livelock_guard",
}


def _shown(v: Any) -> str:
    text = repr(v)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{text} ({type(v).__name__})"


def _check_object(raw: Any, known: set[str], path: str, problems: list[Problem]) -> bool:
    if not isinstance(raw, Mapping):
        problems.append(Problem(path, f"must be an object, got {_shown(raw)}"))
        return False
    for key in raw:
        if key not in known:
            problems.append(Problem(f"{path}.{key}" if path else str(key), "unknown field"))
    return True


# The policy-level part of valid entries (dryRun, policy, reclaim: the same for every pod
# of a policy), checked once per distinct value: key (see _settings_key) -> what
# validate_entry makes of it. Only valid combinations are kept; anything else takes the
# full check, so problems and their order are always the full check's.
_SETTINGS: dict[tuple[Any, ...], tuple[bool, PlanPolicyRef, PlanReclaim]] = {}
_SETTINGS_MAX = 4096
_TOP_FIELDS = frozenset(k.split(".")[0] for k in ENTRY_BOUNDS)
_POD_FIELDS = tuple((k, ENTRY_BOUNDS[k]) for k in ("uid", "namespace", "name", "qosClass",
                                                   "memoryHigh"))
_NO_DRY_RUN = object()
_PLAIN = frozenset((str, int, bool))     # JSON's scalars as plans carry them (no floats)


def _settings_key(raw: dict[str, Any]) -> tuple[Any, ...] | None:
    """The entry's dryRun, policy and reclaim as a hashable value that tells apart what
    compares equal but validates differently (True and 1: the exact type of every value
    is part of it). None unless they are dicts of str, int and bool values."""
    policy, reclaim = raw.get("policy"), raw.get("reclaim")
    if type(policy) is not dict or type(reclaim) is not dict:
        return None
    dry = raw.get("dryRun", _NO_DRY_RUN)
    types = tuple(map(type, policy.values())), tuple(map(type, reclaim.values()))
    if (type(dry) is not bool and dry is not _NO_DRY_RUN) \
            or not _PLAIN.issuperset(types[0]) or not _PLAIN.issuperset(types[1]):
        return None
    return (type(dry), dry, tuple(policy.items()), types[0], tuple(reclaim.items()), types[1])


def _known_valid(raw: Any) -> tuple[bool, PlanPolicyRef, PlanReclaim] | None:
    """(dry run, policy, reclaim) of a valid entry whose settings were seen valid before,
    or None (not known to be valid: the full check decides). Never accepts what the full
    check refuses: every per-pod field is checked by its bound, the rest was checked in
    full for settings of the same value and types."""
    if type(raw) is not dict or not raw.keys() <= _TOP_FIELDS:
        return None
    key = _settings_key(raw)
    known = None if key is None else _SETTINGS.get(key)
    if known is None:
        return None
    for path, bound in _POD_FIELDS:
        if path not in raw or bound.problem(raw[path]) is not None:
            return None
    return known


def validate_entry(raw: Any) -> tuple[PlanEntry | None, tuple[Problem, ...]]:
    """A raw plan pod entry -> (PlanEntry, ()) or (None, problems). Never raises.

    Unknown fields are problems too: the server prunes them, so an entry that has them
    was not written through the server (or was written by something else).

    The policy-level fields (dryRun, policy, reclaim) are checked once per distinct
    value (by value and exact type, not by identity: a policy whose settings change is
    checked again); the per-pod fields of every entry are always checked."""
    known = _known_valid(raw)
    if known is not None:
        return PlanEntry(uid=raw["uid"], namespace=raw["namespace"], name=raw["name"],
                         qos_class=raw["qosClass"], memory_high=raw["memoryHigh"],
                         dry_run=known[0], policy=known[1], reclaim=known[2]), ()
    return _validate_and_remember(raw)


def _validate_and_remember(raw: Any) -> tuple[PlanEntry | None, tuple[Problem, ...]]:
    """The full check; a valid entry's settings are remembered for _known_valid."""
    entry, problems = _validate_full(raw)
    if entry is not None:
        key = _settings_key(raw)
        if key is not None:
            if len(_SETTINGS) >= _SETTINGS_MAX:
                _SETTINGS.clear()
            _SETTINGS[key] = (entry.dry_run, entry.policy, entry.reclaim)
    return entry, problems


def _validate_full(raw: Any) -> tuple[PlanEntry | None, tuple[Problem, ...]]:
    """validate_entry without the cache: every field of the entry checked."""
    problems: list[Problem] = []
    if not _check_object(raw, set(_TOP_FIELDS), "", problems):
        return None, tuple(problems)
    policy, reclaim = raw.get("policy"), raw.get("reclaim")
    if "policy" in raw:
        _check_object(policy, {"kind", "namespace", "name"}, "policy", problems)
    if "reclaim" in raw:
        _check_object(reclaim, set(_RECLAIM_ATTRS), "reclaim", problems)
    values: dict[str, Any] = {}
    for path, bound in ENTRY_BOUNDS.items():
        parent, _, key = path.rpartition(".")
        container = raw if not parent else raw.get(parent)
        if not isinstance(container, Mapping):
            continue    # reported above (wrong type) or below (missing)
        if key not in container:
            if path in REQUIRED_ENTRY_FIELDS:
                problems.append(Problem(path, "required"))
            continue
        why = bound.problem(container[key])
        if why:
            problems.append(Problem(path, why))
        else:
            values[path] = container[key]
    for path in REQUIRED_ENTRY_FIELDS:
        if "." not in path and path not in raw and path not in ENTRY_BOUNDS:
            problems.append(Problem(path, "required"))     # policy, reclaim
    if problems:
        return None, tuple(problems)
    settings: dict[str, Any] = {attr: values[f"reclaim.{key}"]
                                for key, attr in _RECLAIM_ATTRS.items()
                                if f"reclaim.{key}" in values}
    rec = PlanReclaim(**settings)
    if not rec.headroom_percent < rec.target_percent:
        return None, (Problem("reclaim.targetPercent",
                              f"{HEADROOM_BELOW_TARGET} ({rec.headroom_percent} >= "
                              f"{rec.target_percent})"),)
    entry = PlanEntry(
        uid=values["uid"], namespace=values["namespace"], name=values["name"],
        qos_class=values["qosClass"], memory_high=values["memoryHigh"],
        dry_run=values.get("dryRun", False),
        policy=PlanPolicyRef(values["policy.kind"], values["policy.name"],
                             values.get("policy.namespace", "")),
        reclaim=rec,
    )
    return entry, ()


def validate_cpu_budget(raw: Any) -> tuple[float | None, tuple[Problem, ...]]:
    """spec.nodeCpuBudget ("500m") -> (cores or None when absent, problems)."""
    if raw is None:
        return None, ()
    why = SPEC_BOUNDS["nodeCpuBudget"].problem(raw)
    if why:
        return None, (Problem("nodeCpuBudget", why),)
    return int(raw[:-1]) / 1000, ()


def millicores(cores: float) -> str:
    """Cores -> a plan's nodeCpuBudget ("500m"), rounded to the millicore grain."""
    return f"{max(1, min(MAX_CPU_BUDGET_MILLICORES, round(cores * 1000)))}m"


@dataclass(frozen=True)
class SpecCheck:
    """A whole plan spec, checked entry by entry: one bad entry spoils only itself."""

    entries: tuple[tuple[int, PlanEntry], ...]            # (index in spec.pods, entry)
    invalid: tuple[tuple[int, tuple[Problem, ...]], ...]  # (index, problems)
    cpu_budget_cores: float | None
    problems: tuple[Problem, ...]                         # spec-level (paths below spec)


def validate_spec(raw: Any) -> SpecCheck:
    """A raw NodeReclaimPlan spec -> SpecCheck. Never raises. A uid listed twice makes
    every entry after the first with that uid invalid."""
    spec_problems: list[Problem] = []
    if not isinstance(raw, Mapping):
        return SpecCheck((), (), None, (Problem("spec", f"must be an object, got "
                                                        f"{_shown(raw)}"),))
    budget, budget_problems = validate_cpu_budget(raw.get("nodeCpuBudget"))
    spec_problems += budget_problems
    pods = raw.get("pods")
    if pods is None:
        pods = []
    if not isinstance(pods, list | tuple):
        spec_problems.append(Problem("pods", f"must be a list, got {_shown(pods)}"))
        pods = []
    good: list[tuple[int, PlanEntry]] = []
    bad: list[tuple[int, tuple[Problem, ...]]] = []
    seen: set[str] = set()
    for i, item in enumerate(pods):
        entry, problems = validate_entry(item)
        if entry is not None and entry.uid in seen:
            entry, problems = None, (Problem("uid", f"duplicate uid {entry.uid!r}"),)
        if entry is None:
            bad.append((i, problems))
        else:
            seen.add(entry.uid)
            good.append((i, entry))
    return SpecCheck(tuple(good), tuple(bad), budget, tuple(spec_problems))


def entry_problems(raw: Any) -> tuple[Problem, ...]:
    """Shorthand for the operator's check before a write: () when the entry is valid."""
    if _known_valid(raw) is not None:
        return ()
    return _validate_and_remember(raw)[1]


# ---- what the CRD must carry (used by scripts/crd-bounds and the drift test) -----------

def _entry_schema_path(path: str) -> tuple[str, ...]:
    """"reclaim.stepBytes" -> the property path below spec.pods.items."""
    return tuple(path.split("."))


def crd_bounds() -> dict[tuple[str, ...], dict[str, Any]]:
    """Property path below the plan's ``spec`` ("pods" then "[]" for the items) ->
    the schema keywords the bound requires there (besides type and description)."""
    out: dict[tuple[str, ...], dict[str, Any]] = {}
    for path, bound in SPEC_BOUNDS.items():
        out[(path,)] = bound.schema()
    for path, bound in ENTRY_BOUNDS.items():
        keywords = bound.schema()
        if path in ENTRY_DEFAULTS:
            keywords["default"] = ENTRY_DEFAULTS[path]
        out[("pods", "[]", *_entry_schema_path(path))] = keywords
    return out


def crd_rules() -> dict[tuple[str, ...], list[dict[str, str]]]:
    """Property path (as in crd_bounds) -> the x-kubernetes-validations it needs: page
    alignment (multipleOf as CEL, which every API server version and our emulator
    evaluate alike) and headroomPercent < targetPercent on the reclaim object."""
    out: dict[tuple[str, ...], list[dict[str, str]]] = {}
    for path, bound in ENTRY_BOUNDS.items():
        if isinstance(bound, IntBound) and bound.multiple_of > 1:
            key = path.rpartition(".")[2]
            out[("pods", "[]", *_entry_schema_path(path))] = [{
                "rule": f"self % {bound.multiple_of} == 0",
                "message": f"{key} must be a multiple of {bound.multiple_of}"}]
    out[("pods", "[]", "reclaim")] = [{
        "rule": f"(has(self.headroomPercent) ? self.headroomPercent : "
                f"{DEFAULT_HEADROOM_PERCENT}) < (has(self.targetPercent) ? "
                f"self.targetPercent : {DEFAULT_TARGET_PERCENT})",
        "message": f"{HEADROOM_BELOW_TARGET} (defaults {DEFAULT_HEADROOM_PERCENT} and "
                   f"{DEFAULT_TARGET_PERCENT})"}]
    return out
