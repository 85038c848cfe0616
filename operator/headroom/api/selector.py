"""Label selectors (metav1.LabelSelector): compile once, match one object or select from an index.

Semantics as in Kubernetes: ``matchLabels`` and ``matchExpressions`` are ANDed;
``In``/``NotIn`` need a non-empty ``values``, ``Exists``/``DoesNotExist`` none;
``NotIn`` also matches objects without the key; an empty selector matches
everything.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from headroom.api import syntax

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


class SelectorError(ValueError):
    """A selector Kubernetes would reject."""


# The CRD's rule says the same (crds/*policies.yaml): `matchLabels: {app: null}` reaches
# the server as `{}` after kubectl apply (client side) drops the null, so an empty
# matchLabels is refused rather than read as "everything".
EMPTY_MATCH_LABELS = ("must not be empty: omit matchLabels to select every object (kubectl "
                      "apply drops a label whose value is null, which would leave it empty)")


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str
    values: frozenset[str]

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "In":
            return labels.get(self.key) in self.values
        if self.operator == "NotIn":
            return labels.get(self.key) not in self.values
        if self.operator == "Exists":
            return self.key in labels
        return self.key not in labels


class LabelIndex:
    """Inverted index over the labels of a list of objects, so that a selector costs
    time proportional to what it selects instead of to the number of objects."""

    def __init__(self, labels: Iterable[Mapping[str, str]]) -> None:
        self.by_pair: dict[tuple[str, str], set[int]] = {}
        self.by_key: dict[str, set[int]] = {}
        self.size = 0
        by_pair, by_key = self.by_pair, self.by_key
        for i, lab in enumerate(labels):   # inlined add(): this loop is hot at 10k pods
            self.size = i + 1
            for k, v in lab.items():
                by_pair.setdefault((k, v), set()).add(i)
                by_key.setdefault(k, set()).add(i)

    def add(self, key: str, value: str, i: int) -> None:
        """Index object i (< size) under key=value."""
        self.by_pair.setdefault((key, value), set()).add(i)
        self.by_key.setdefault(key, set()).add(i)

    def with_value(self, key: str, values: Iterable[str]) -> set[int]:
        out: set[int] = set()
        for v in values:
            out |= self.by_pair.get((key, v), set())
        return out


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    def select(self, index: LabelIndex) -> set[int]:
        """Indices of the indexed objects this selector matches."""
        positive: list[set[int]] = []
        negative: list[set[int]] = []
        for r in self.requirements:
            if r.operator == "In":
                positive.append(index.with_value(r.key, r.values))
            elif r.operator == "Exists":
                positive.append(index.by_key.get(r.key, set()))
            elif r.operator == "NotIn":
                negative.append(index.with_value(r.key, r.values))
            else:
                negative.append(index.by_key.get(r.key, set()))
        if positive:
            positive.sort(key=len)
            result = set(positive[0])
            for s in positive[1:]:
                result &= s
        else:
            result = set(range(index.size))
        for s in negative:
            result -= s
        return result


def _key(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise SelectorError(f"{where}: must be a non-empty string, got {value!r}")
    if not syntax.is_label_key(value):
        raise SelectorError(f"{where}: Invalid value: {_quoted(value)}: "
                            f"{syntax.LABEL_KEY_MESSAGE}")
    return value


def _value(value: Any, where: str) -> str:
    if not isinstance(value, str):
        hint = " (a null value would select every pod)" if value is None else ""
        raise SelectorError(f"{where}: must be a string, got {value!r}{hint}")
    if not syntax.is_label_value(value):
        raise SelectorError(f"{where}: Invalid value: {_quoted(value)}: "
                            f"{syntax.LABEL_VALUE_MESSAGE}")
    return value


def _quoted(value: str) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + '..."'


def compile_selector(raw: Any, field: str = "selector") -> LabelSelector:
    """Validate and compile a raw selector dict as Kubernetes validates a LabelSelector
    (qualified-name keys, label-syntax values, operators and their values), within the
    size bounds of the CRD. Raises SelectorError with the field path."""
    if raw is None:
        raise SelectorError(f"{field} is required ({{}} selects everything)")
    if not isinstance(raw, Mapping):
        raise SelectorError(f"{field} must be an object, got {type(raw).__name__}")
    unknown = sorted(str(k) for k in raw if k not in ("matchLabels", "matchExpressions"))
    if unknown:
        raise SelectorError(f"{field}.{unknown[0]}: unknown field")
    reqs: list[Requirement] = []
    match_labels = raw.get("matchLabels")
    if match_labels is None:
        match_labels = {}
    if not isinstance(match_labels, Mapping):
        raise SelectorError(f"{field}.matchLabels must be an object")
    if "matchLabels" in raw and raw["matchLabels"] is not None and not match_labels:
        raise SelectorError(f"{field}.matchLabels: {EMPTY_MATCH_LABELS}")
    if len(match_labels) > syntax.MAX_MATCH_LABELS:
        raise SelectorError(f"{field}.matchLabels: Too many: {len(match_labels)}: must have "
                            f"at most {syntax.MAX_MATCH_LABELS} labels")
    for k, v in match_labels.items():
        _key(k, f"{field}.matchLabels")
        _value(v, f"{field}.matchLabels[{k}]")
        reqs.append(Requirement(k, "In", frozenset([v])))
    exprs = raw.get("matchExpressions")
    if exprs is None:
        exprs = []
    if not isinstance(exprs, list | tuple):
        raise SelectorError(f"{field}.matchExpressions must be a list")
    if len(exprs) > syntax.MAX_MATCH_EXPRESSIONS:
        raise SelectorError(f"{field}.matchExpressions: Too many: {len(exprs)}: must have at "
                            f"most {syntax.MAX_MATCH_EXPRESSIONS} items")
    for i, e in enumerate(exprs):
        where = f"{field}.matchExpressions[{i}]"
        if not isinstance(e, Mapping):
            raise SelectorError(f"{where} must be an object")
        extra = sorted(str(k) for k in e if k not in ("key", "operator", "values"))
        if extra:
            raise SelectorError(f"{where}.{extra[0]}: unknown field")
        key = _key(e.get("key"), f"{where}.key")
        op = e.get("operator")
        if op not in OPERATORS:
            raise SelectorError(f"{where}.operator {op!r} is not one of {', '.join(OPERATORS)}")
        values = e.get("values")
        if values is None:
            values = []
        if not isinstance(values, list | tuple):
            raise SelectorError(f"{where}.values must be a list of strings")
        if len(values) > syntax.MAX_EXPRESSION_VALUES:
            raise SelectorError(f"{where}.values: Too many: {len(values)}: must have at most "
                                f"{syntax.MAX_EXPRESSION_VALUES} items")
        for j, v in enumerate(values):
            _value(v, f"{where}.values[{j}]")
        if op in ("In", "NotIn") and not values:
            raise SelectorError(f"{where}: operator {op} needs at least one value")
        if op in ("Exists", "DoesNotExist") and values:
            raise SelectorError(f"{where}: operator {op} takes no values")
        reqs.append(Requirement(key, op, frozenset(values)))
    return LabelSelector(tuple(reqs))


def dropped_null_labels(applied: Any, live: Any, field: str) -> list[str]:
    """Label keys that were null in the manifest last applied with kubectl (`applied`, the
    selector in its kubectl.kubernetes.io/last-applied-configuration annotation) and are
    missing from the stored selector (`live`): kubectl apply dropped them before the
    server could refuse them, so the stored selector matches more than was written.
    Returns one message per key, naming the field."""
    if not isinstance(applied, Mapping) or not isinstance(applied.get("matchLabels"), Mapping):
        return []
    stored = live.get("matchLabels") if isinstance(live, Mapping) else None
    stored = stored if isinstance(stored, Mapping) else {}
    return [f"{field}.matchLabels[{k}]: null in the manifest last applied with kubectl, which "
            "dropped it, so the stored selector matches more than was written: give the label "
            "a value or remove it"
            for k, v in applied["matchLabels"].items() if v is None and k not in stored]
