"""Documents the API-server emulator serves about itself: discovery, OpenAPI v3, Tables.

* discovery (`/api`, `/api/v1`, `/apis`, `/apis/<group>[/<version>]`): the legacy,
  non-aggregated form, which kubectl and kopf fall back to;
* OpenAPI v3 (`/openapi/v3` and one document per group-version): each resource's
  schema with `x-kubernetes-group-version-kind` (what `kubectl explain` reads; CRD
  schemas as written, built-in kinds as open objects) and, per write operation,
  the `fieldValidation` query parameter (kubectl checks for it before it asks for
  server-side field validation);
* `meta.k8s.io/v1` Table (what `kubectl get` asks for): built-in columns for a few
  kinds, a CRD's additionalPrinterColumns evaluated with a small JSONPath subset.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Iterable
from typing import Any

from kube_types import ALL_VERBS, ResourceType


def _resource_entries(types: Iterable[ResourceType]) -> list[dict[str, Any]]:
    out = []
    for rt in sorted(types, key=lambda t: t.plural):
        out.append({"name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced,
                    "kind": rt.kind, "verbs": list(ALL_VERBS),
                    "shortNames": list(rt.short_names), "categories": list(rt.categories)})
        if rt.status_subresource:
            out.append({"name": f"{rt.plural}/status", "singularName": "",
                        "namespaced": rt.namespaced, "kind": rt.kind,
                        "verbs": ["get", "patch", "update"]})
    return out


def api_versions() -> dict[str, Any]:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                            "serverAddress": "127.0.0.1"}]}


def resource_list(types: Iterable[ResourceType], group: str, version: str) -> dict[str, Any]:
    return {"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": _resource_entries(t for t in types
                                           if t.group == group and t.version == version)}


def _group_doc(name: str, versions: list[str]) -> dict[str, Any]:
    gvs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": gvs, "preferredVersion": gvs[0]}


def group_versions(types: Iterable[ResourceType]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for rt in types:
        if rt.group and rt.version not in out.setdefault(rt.group, []):
            out[rt.group].append(rt.version)
    return {g: sorted(v, reverse=True) for g, v in sorted(out.items())}


def api_group_list(types: Iterable[ResourceType]) -> dict[str, Any]:
    return {"kind": "APIGroupList", "apiVersion": "v1",
            "groups": [_group_doc(g, v) for g, v in group_versions(types).items()]}


def api_group(types: Iterable[ResourceType], group: str) -> dict[str, Any] | None:
    versions = group_versions(types).get(group)
    if not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group_doc(group, versions)}


# ---- OpenAPI v3 -----------------------------------------------------------------------

def _schema_name(rt: ResourceType) -> str:
    group = ".".join(reversed(rt.group.split("."))) if rt.group else "io.k8s.api.core"
    return f"{group}.{rt.version}.{rt.kind}"


def openapi_root(types: Iterable[ResourceType]) -> dict[str, Any]:
    paths = {"api/v1": {"serverRelativeURL": "/openapi/v3/api/v1"}}
    for group, versions in group_versions(types).items():
        for v in versions:
            paths[f"apis/{group}/{v}"] = {"serverRelativeURL": f"/openapi/v3/apis/{group}/{v}"}
    return {"paths": paths}


def openapi_group_version(types: Iterable[ResourceType], group: str,
                          version: str) -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
    field_validation = {"name": "fieldValidation", "in": "query", "schema": {"type": "string"},
                        "description": "Ignore, Warn or Strict"}
    for rt in types:
        if rt.group != group or rt.version != version:
            continue
        gvk = [{"group": rt.group, "version": rt.version, "kind": rt.kind}]
        schema = dict(rt.schema or {"type": "object", "description": f"{rt.kind} (built-in)",
                                    "x-kubernetes-preserve-unknown-fields": True})
        props = dict(schema.get("properties") or {})
        props.setdefault("apiVersion", {"type": "string", "description": "APIVersion "
                                        "defines the versioned schema of this object."})
        props.setdefault("kind", {"type": "string", "description": "Kind is a string value "
                                  "representing the REST resource this object represents."})
        props.setdefault("metadata", {"type": "object", "description": "Standard object's "
                                      "metadata."})
        schema["properties"] = props
        schema["x-kubernetes-group-version-kind"] = gvk
        schemas[_schema_name(rt)] = schema
        ref = {"$ref": f"#/components/schemas/{_schema_name(rt)}"}
        body = {"content": {"application/json": {"schema": ref}}}
        op = {"x-kubernetes-group-version-kind": gvk[0], "parameters": [field_validation],
              "requestBody": body, "responses": {"200": body}}
        scope = f"{prefix}/namespaces/{{namespace}}/{rt.plural}" if rt.namespaced \
            else f"{prefix}/{rt.plural}"
        paths[scope] = {"post": op, "get": {**op, "parameters": []}}
        paths[f"{scope}/{{name}}"] = {"put": op, "patch": op,
                                      "get": {**op, "parameters": []}}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes (headroom API emulator)",
                                         "version": "v1.37.0"},
            "paths": paths, "components": {"schemas": schemas}}


# ---- Tables ---------------------------------------------------------------------------

def human_age(timestamp: str | None, now: datetime.datetime | None = None) -> str:
    if not timestamp:
        return "<unknown>"
    then = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    secs = int(((now or datetime.datetime.now(datetime.UTC)) - then).total_seconds())
    secs = max(secs, 0)
    if secs < 120:
        return f"{secs}s"
    mins = secs // 60
    if mins < 10:
        return f"{mins}m{secs % 60}s" if secs % 60 else f"{mins}m"
    if mins < 180:
        return f"{mins}m"
    hours = mins // 60
    if hours < 48:
        return f"{hours}h"
    return f"{hours // 24}d"


_STEP = re.compile(r'\.([A-Za-z0-9_-]+)|\[(\d+)\]|\[\?\(@\.([A-Za-z0-9_.-]+)\s*==\s*'
                   r'["\']([^"\']*)["\']\)\]')


def jsonpath(obj: Any, path: str) -> Any:
    """The JSONPath subset printer columns use: .a.b, [n], [?(@.k=="v")]."""
    values = [obj]
    for m in _STEP.finditer(path):
        key, index, fkey, fval = m.groups()
        nxt = []
        for v in values:
            if key is not None and isinstance(v, dict) and key in v:
                nxt.append(v[key])
            elif index is not None and isinstance(v, list) and int(index) < len(v):
                nxt.append(v[int(index)])
            elif fkey is not None and isinstance(v, list):
                nxt += [e for e in v
                        if isinstance(e, dict) and str(jsonpath(e, "." + fkey)) == fval]
        values = nxt
    return values[0] if len(values) == 1 else (values or None)


def _cell(value: Any, type_: str) -> Any:
    if value is None:
        return None
    if type_ == "date":
        return human_age(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return value


def _conditions(obj: dict[str, Any]) -> dict[str, str]:
    return {c.get("type"): c.get("status") for c in (obj.get("status") or {}).get("conditions")
            or ()}


def _builtin_columns(rt: ResourceType) -> list[tuple[str, str, Any]]:
    """(column, type, function of the object) per built-in kind."""
    def age(o: dict[str, Any]) -> str:
        return human_age(o["metadata"].get("creationTimestamp"))
    if rt.kind == "Pod":
        def ready(o: dict[str, Any]) -> str:
            cs = (o.get("status") or {}).get("containerStatuses") or ()
            total = len((o.get("spec") or {}).get("containers") or ())
            return f"{sum(1 for c in cs if c.get('ready'))}/{total}"
        return [("Ready", "string", ready),
                ("Status", "string", lambda o: (o.get("status") or {}).get("phase", "")),
                ("Restarts", "string", lambda o: "0"), ("Age", "string", age),
                ("Node", "string", lambda o: (o.get("spec") or {}).get("nodeName", "<none>"))]
    if rt.kind == "Node":
        return [("Status", "string",
                 lambda o: "Ready" if _conditions(o).get("Ready") == "True" else "NotReady"),
                ("Roles", "string", lambda o: "<none>"), ("Age", "string", age),
                ("Version", "string",
                 lambda o: ((o.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion",
                                                                                  ""))]
    if rt.kind == "Namespace":
        return [("Status", "string", lambda o: (o.get("status") or {}).get("phase", "")),
                ("Age", "string", age)]
    if rt.kind == "Event":
        return [("Type", "string", lambda o: o.get("type", "")),
                ("Reason", "string", lambda o: o.get("reason", "")),
                ("Object", "string", lambda o: "{}/{}".format(
                    (o.get("involvedObject") or {}).get("kind", "").lower(),
                    (o.get("involvedObject") or {}).get("name", ""))),
                ("Message", "string", lambda o: o.get("message", ""))]
    return [("Age", "string", age)]


def table(rt: ResourceType, items: list[dict[str, Any]], resource_version: int) -> dict[str, Any]:
    if rt.printer_columns:
        columns = [(c["name"], c.get("type", "string"), c.get("priority", 0),
                    lambda o, c=c: _cell(jsonpath(o, c["jsonPath"]), c.get("type", "string")))
                   for c in rt.printer_columns]
    else:
        columns = [(n, t, int(n == "Node"), f) for n, t, f in _builtin_columns(rt)]
    defs = [{"name": "Name", "type": "string", "format": "name", "priority": 0,
             "description": "Name must be unique within a namespace."}]
    defs += [{"name": n, "type": "string" if t == "date" else t, "format": "", "priority": p,
              "description": n} for n, t, p, _ in columns]
    rows = [{"cells": [o["metadata"]["name"], *(f(o) for _, _, _, f in columns)], "object": o}
            for o in items]
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": str(resource_version)},
            "columnDefinitions": defs, "rows": rows}
