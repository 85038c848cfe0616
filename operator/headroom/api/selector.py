"""Label selectors (metav1.LabelSelector): compile once, match one object or select from an index.

Semantics as in Kubernetes: ``matchLabels`` and ``matchExpressions`` are ANDed;
``In``/``NotIn`` need a non-empty ``values``, ``Exists``/``DoesNotExist`` none;
``NotIn`` also matches objects without the key; an empty selector matches
everything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


class SelectorError(ValueError):
    """A selector Kubernetes would reject."""


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


def _string(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise SelectorError(f"{what} must be a non-empty string, got {value!r}")
    return value


def compile_selector(raw: Any, field: str = "selector") -> LabelSelector:
    """Validate and compile a raw selector dict. Raises SelectorError with the field path."""
    if raw is None:
        raise SelectorError(f"{field} is required ({{}} selects everything)")
    if not isinstance(raw, Mapping):
        raise SelectorError(f"{field} must be an object, got {type(raw).__name__}")
    reqs: list[Requirement] = []
    match_labels = raw.get("matchLabels") or {}
    if not isinstance(match_labels, Mapping):
        raise SelectorError(f"{field}.matchLabels must be an object")
    for k, v in match_labels.items():
        _string(k, f"{field}.matchLabels key")
        if not isinstance(v, str):
            raise SelectorError(f"{field}.matchLabels[{k}] must be a string, got {v!r}")
        reqs.append(Requirement(k, "In", frozenset([v])))
    exprs = raw.get("matchExpressions") or []
    if not isinstance(exprs, list | tuple):
        raise SelectorError(f"{field}.matchExpressions must be a list")
    for i, e in enumerate(exprs):
        where = f"{field}.matchExpressions[{i}]"
        if not isinstance(e, Mapping):
            raise SelectorError(f"{where} must be an object")
        key = _string(e.get("key"), f"{where}.key")
        op = e.get("operator")
        if op not in OPERATORS:
            raise SelectorError(f"{where}.operator {op!r} is not one of {', '.join(OPERATORS)}")
        values = e.get("values") or []
        if not isinstance(values, list | tuple) or not all(isinstance(v, str) for v in values):
            raise SelectorError(f"{where}.values must be a list of strings")
        if op in ("In", "NotIn") and not values:
            raise SelectorError(f"{where}: operator {op} needs at least one value")
        if op in ("Exists", "DoesNotExist") and values:
            raise SelectorError(f"{where}: operator {op} takes no values")
        reqs.append(Requirement(key, op, frozenset(values)))
    return LabelSelector(tuple(reqs))
