"""Label and field selectors in their query-string form (`?labelSelector=`, `?fieldSelector=`).

Part of the API-server emulator. Grammar and semantics as in
k8s.io/apimachinery/pkg/labels and .../fields: requirements are ANDed, `!=` and
`notin` also match objects without the key, field selectors support only the
fields a real API server indexes for each kind (others are a 400 error).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


class SelectorError(ValueError):
    """A selector the real API server would answer with 400 BadRequest."""


@dataclass(frozen=True)
class LabelRequirement:
    key: str
    op: str                 # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!":
            return self.key not in labels
        if self.op in ("=", "in"):
            return self.key in labels and labels[self.key] in self.values
        return labels.get(self.key) not in self.values   # "!=" and "notin"


_SET_RE = re.compile(r"^\s*(!?)\s*([A-Za-z0-9./_-]+)\s*(?:(notin|in)\s*\(([^)]*)\))?\s*$")
_EQ_RE = re.compile(r"^\s*([A-Za-z0-9./_-]+)\s*(==|=|!=)\s*([A-Za-z0-9._-]*)\s*$")


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside a `( ... )` value set."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p for p in parts if p.strip()]


def parse_label_selector(text: str | None) -> list[LabelRequirement]:
    if not text:
        return []
    reqs: list[LabelRequirement] = []
    for part in _split_top_level(text):
        m = _EQ_RE.match(part)
        if m:
            op = "=" if m.group(2) in ("=", "==") else "!="
            reqs.append(LabelRequirement(m.group(1), op, (m.group(3),)))
            continue
        m = _SET_RE.match(part)
        if not m or (m.group(1) and m.group(3)):
            raise SelectorError(f"unable to parse requirement: {part.strip()!r}")
        bang, key, setop, values = m.groups()
        if setop:
            vals = tuple(v.strip() for v in values.split(",") if v.strip())
            reqs.append(LabelRequirement(key, setop, vals))
        else:
            reqs.append(LabelRequirement(key, "!" if bang else "exists"))
    return reqs


def labels_match(reqs: list[LabelRequirement], obj: Mapping[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(r.matches(labels) for r in reqs)


def _dig(obj: Mapping[str, Any], dotted: str) -> str:
    cur: Any = obj
    for key in dotted.split("."):
        cur = cur.get(key) if isinstance(cur, Mapping) else None
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


# Fields the real API server accepts in fieldSelector, per resource (plural).
# metadata.name / metadata.namespace work for every resource.
SELECTABLE_FIELDS: dict[str, tuple[str, ...]] = {
    "pods": ("spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
             "spec.serviceAccountName", "spec.hostNetwork", "status.phase", "status.podIP",
             "status.nominatedNodeName"),
    "nodes": ("spec.unschedulable",),
    "namespaces": ("status.phase",),
    "events": ("involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
               "involvedObject.uid", "involvedObject.apiVersion",
               "involvedObject.resourceVersion", "involvedObject.fieldPath", "reason",
               "reportingComponent", "source", "type"),
}


@dataclass(frozen=True)
class FieldRequirement:
    field: str
    equal: bool
    value: str

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return (_dig(obj, self.field) == self.value) == self.equal


def parse_field_selector(text: str | None, plural: str) -> list[FieldRequirement]:
    if not text:
        return []
    allowed = ("metadata.name", "metadata.namespace", *SELECTABLE_FIELDS.get(plural, ()))
    reqs = []
    for part in text.split(","):
        if not part.strip():
            continue
        m = re.match(r"^\s*([A-Za-z0-9.]+)\s*(==|=|!=)\s*(.*?)\s*$", part)
        if not m:
            raise SelectorError(f"invalid selector: {part!r}; can't understand {part!r}")
        field, op, value = m.groups()
        if field not in allowed:
            raise SelectorError(f'field label not supported: {field}')
        reqs.append(FieldRequirement(field, op != "!=", value))
    return reqs


def fields_match(reqs: list[FieldRequirement], obj: Mapping[str, Any]) -> bool:
    return all(r.matches(obj) for r in reqs)


Matcher = Callable[[Mapping[str, Any]], bool]


def compile_selectors(label_selector: str | None, field_selector: str | None,
                      plural: str) -> Matcher:
    """One predicate for both selectors; raises SelectorError like the server's 400."""
    lreqs = parse_label_selector(label_selector)
    freqs = parse_field_selector(field_selector, plural)
    return lambda obj: labels_match(lreqs, obj) and fields_match(freqs, obj)
