"""The CRDs in crds/: well-formed, documented, CEL rules evaluated for real (cel-python),
examples/ valid against the schemas, and resolve() output valid against the plan schema.

`validate()` below applies a CRD's openAPIV3Schema the way the API server does for
what these CRDs use: JSON-schema keywords via `jsonschema` (unknown fields are
errors, as with kubectl's default strict field validation), then every
`x-kubernetes-validations` rule with `self` bound to the value at that node, typed
as Kubernetes types it (number -> double, int-or-string -> int or string).
"""

from __future__ import annotations

import copy
import pathlib
from collections.abc import Iterator
from typing import Any

import celpy
import jsonschema
import kubernetes_validate
import pytest
import yaml
from celpy import celtypes
from headroom.api.policy import parse_policy
from headroom.controller.resolve import resolve

ROOT = pathlib.Path(__file__).resolve().parents[2]
CRD_FILES = sorted((ROOT / "crds").glob("*.yaml"))
POLICY_KINDS = ("MemoryReclaimPolicy", "ClusterMemoryReclaimPolicy")


def load_crds() -> dict[str, dict[str, Any]]:
    out = {}
    for f in CRD_FILES:
        crd = yaml.safe_load(f.read_text())
        out[crd["spec"]["names"]["kind"]] = crd
    return out


CRDS = load_crds()


def schema_of(kind: str) -> dict[str, Any]:
    return CRDS[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


# ---- JSON schema + CEL evaluation -------------------------------------------------------

def to_json_schema(schema: dict[str, Any], is_metadata: bool = False) -> dict[str, Any]:
    """k8s structural schema -> JSON schema: drop x-kubernetes-*, forbid unknown fields."""
    out = {k: v for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    # OpenAPI v3.0's boolean exclusiveMinimum/Maximum -> draft 7's numeric form
    for edge in ("Minimum", "Maximum"):
        if out.pop(f"exclusive{edge}", False) is True:
            out[f"exclusive{edge}"] = out.pop(edge.lower())
    if "properties" in out:
        out["properties"] = {k: to_json_schema(v, k == "metadata")
                             for k, v in out["properties"].items()}
        out.setdefault("additionalProperties", False)
    if isinstance(out.get("items"), dict):
        out["items"] = to_json_schema(out["items"])
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = to_json_schema(out["additionalProperties"])
    return out


def to_cel(value: Any, schema: dict[str, Any]) -> Any:
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        return celtypes.MapType({
            celtypes.StringType(k): to_cel(v, props.get(k) or (extra if isinstance(extra, dict)
                                                              else {}))
            for k, v in value.items()})
    if isinstance(value, list):
        return celtypes.ListType([to_cel(v, schema.get("items") or {}) for v in value])
    if isinstance(value, str):
        return celtypes.StringType(value)
    if schema.get("type") == "number":
        return celtypes.DoubleType(float(value))
    if isinstance(value, int):
        return celtypes.IntType(value)
    return celtypes.DoubleType(value)


CEL_ENV = celpy.Environment()
_PROGRAMS: dict[str, Any] = {}


def cel_program(rule: str) -> Any:
    if rule not in _PROGRAMS:
        _PROGRAMS[rule] = CEL_ENV.program(CEL_ENV.compile(rule))
    return _PROGRAMS[rule]


def cel_errors(value: Any, schema: dict[str, Any]) -> list[str]:
    """Messages of the CEL rules that fail, walking the value along the schema."""
    errors = []
    for v in schema.get("x-kubernetes-validations") or []:
        result = cel_program(v["rule"]).evaluate({"self": to_cel(value, schema)})
        if result is not True and result != celtypes.BoolType(True):
            errors.append(v.get("message") or v["rule"])
    if isinstance(value, dict):
        for k, sub in value.items():
            sub_schema = (schema.get("properties") or {}).get(k)
            if sub_schema is None and isinstance(schema.get("additionalProperties"), dict):
                sub_schema = schema["additionalProperties"]
            if sub_schema is not None:
                errors += cel_errors(sub, sub_schema)
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            errors += cel_errors(item, schema["items"])
    return errors


def validate(obj: dict[str, Any]) -> list[str]:
    """Every reason the API server would reject obj (schema errors, then CEL messages)."""
    schema = schema_of(obj["kind"])
    validator = jsonschema.Draft7Validator(to_json_schema(schema))
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
              for e in validator.iter_errors(obj)]
    return errors or cel_errors(obj, schema)


# ---- the CRDs themselves ----------------------------------------------------------------

def test_three_crds_with_short_names_and_categories() -> None:
    assert set(CRDS) == {"MemoryReclaimPolicy", "ClusterMemoryReclaimPolicy", "NodeReclaimPlan"}
    names = {k: c["spec"]["names"] for k, c in CRDS.items()}
    assert names["MemoryReclaimPolicy"]["shortNames"] == ["mrp"]
    assert names["ClusterMemoryReclaimPolicy"]["shortNames"] == ["cmrp"]
    assert names["NodeReclaimPlan"]["shortNames"] == ["nrp"]
    assert all(n["categories"] == ["headroom"] for n in names.values())
    assert CRDS["MemoryReclaimPolicy"]["spec"]["scope"] == "Namespaced"
    assert CRDS["NodeReclaimPlan"]["spec"]["scope"] == "Cluster"
    assert CRDS["ClusterMemoryReclaimPolicy"]["spec"]["scope"] == "Cluster"
    for crd in CRDS.values():
        assert crd["spec"]["group"] == "headroom.dev"
        assert crd["metadata"]["name"] == f"{crd['spec']['names']['plural']}.headroom.dev"
        (version,) = crd["spec"]["versions"]
        assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
        assert version["subresources"] == {"status": {}}


@pytest.mark.parametrize("path", CRD_FILES, ids=lambda p: p.name)
def test_crd_is_a_valid_apiextensions_object(path: pathlib.Path) -> None:
    kubernetes_validate.validate(yaml.safe_load(path.read_text()), "1.30", strict=True)


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_every_field_has_a_description(kind: str) -> None:
    # Named fields and objects; scalar list items / map values are described by their parent.
    missing = [p or "<root>" for p, s in walk(schema_of(kind))
               if p != ".metadata" and not s.get("description")
               and (s.get("type") == "object" or not p.endswith(("[]", "{}")))]
    assert missing == []


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_schema_is_structural(kind: str) -> None:
    for path, s in walk(schema_of(kind)):
        if s.get("x-kubernetes-int-or-string"):
            assert s["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
            assert "type" not in s, path
        else:
            assert s.get("type") in {"object", "array", "string", "integer", "number",
                                     "boolean"}, path
        if s.get("type") == "array":
            assert "items" in s, path


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_every_cel_rule_compiles(kind: str) -> None:
    rules = [v["rule"] for _, s in walk(schema_of(kind))
             for v in s.get("x-kubernetes-validations") or []]
    for rule in rules:
        cel_program(rule)
    if kind != "NodeReclaimPlan":
        assert len(rules) >= 8


def test_cluster_policy_is_the_namespaced_policy_plus_namespace_selector() -> None:
    ns = copy.deepcopy(schema_of("MemoryReclaimPolicy"))
    cl = copy.deepcopy(schema_of("ClusterMemoryReclaimPolicy"))
    cl_spec, ns_spec = cl["properties"]["spec"], ns["properties"]["spec"]
    ns_sel = cl_spec["properties"].pop("namespaceSelector")
    assert cl_spec.pop("required") == ["namespaceSelector", *ns_spec.pop("required")]
    for d in (ns, cl, ns_spec, cl_spec, ns_spec["properties"]["selector"],
              cl_spec["properties"]["selector"]):
        d.pop("description")
    assert cl == ns
    # Same selector schema apart from the wording.
    sel = ns_spec["properties"]["selector"]
    ns_sel.pop("description")
    ns_sel["properties"]["matchLabels"].pop("description")
    sel["properties"]["matchLabels"].pop("description")
    assert ns_sel == sel
    a, b = (CRDS[k]["spec"]["versions"][0]["additionalPrinterColumns"] for k in POLICY_KINDS)
    assert a == b


def test_printer_columns() -> None:
    def cols(kind: str) -> dict[str, str]:
        version = CRDS[kind]["spec"]["versions"][0]
        return {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}

    policy = cols("MemoryReclaimPolicy")
    assert policy["Matched"] == ".status.matchedPods"
    assert policy["Enforced"] == ".status.enforcedPods"
    assert policy["Mode"] == ".spec.reclaim.mode"
    assert policy["Ready"] == '.status.conditions[?(@.type=="Ready")].status'
    assert policy["Age"] == ".metadata.creationTimestamp"
    plan = cols("NodeReclaimPlan")
    assert {"Pods", "Applied", "Heartbeat", "Age"} <= set(plan)
    # Every column points at a field the schema has.
    for kind in CRDS:
        props = {p for p, _ in walk(schema_of(kind))}
        for path in cols(kind).values():
            field = path.split("[")[0]
            assert field in props or field.startswith(".metadata"), (kind, path)


# ---- policies: valid and invalid objects ------------------------------------------------

def policy(kind: str = "MemoryReclaimPolicy", **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"selector": {"matchLabels": {"app": "web"}},
                            "memoryHigh": {"limitPercent": 90}}
    if kind == "ClusterMemoryReclaimPolicy":
        base["namespaceSelector"] = {}
    base.update(spec)
    meta = {"name": "p"} if kind != "MemoryReclaimPolicy" else {"name": "p", "namespace": "d"}
    return {"apiVersion": "headroom.dev/v1alpha1", "kind": kind, "metadata": meta, "spec": base}


VALID_SPECS = {
    "bytes-string": {"memoryHigh": {"bytes": "3Gi"}},
    "bytes-int": {"memoryHigh": {"bytes": 1 << 30}},
    "bytes-decimal": {"memoryHigh": {"bytes": "1.5G"}},
    "bytes-exponent": {"memoryHigh": {"bytes": "2e9"}},
    "throttling": {"memoryHigh": {"throttlingPercent": 90}},
    "throttling-one": {"memoryHigh": {"throttlingPercent": 100}},
    "limit-100": {"memoryHigh": {"limitPercent": 100}},
    "full-reclaim": {"reclaim": {"mode": "Pressure", "headroomPercent": 2, "targetPercent": 7,
                                 "stepBytes": "4Ki", "maxBytesPerSecond": 4096,
                                 "nodeCpuBudget": "250m", "swappiness": 200,
                                 "pressureTargetBasisPoints": 50}},
    "headroom-only": {"reclaim": {"headroomPercent": 9}},
    "target-only": {"reclaim": {"targetPercent": 50}},
    "off": {"reclaim": {"mode": "Off"}, "dryRun": True, "priority": -5},
    "selector-all": {"selector": {}},
    "selector-exprs": {"selector": {"matchExpressions": [
        {"key": "a", "operator": "In", "values": ["x"]},
        {"key": "b", "operator": "NotIn", "values": ["y", "z"]},
        {"key": "c", "operator": "Exists"},
        {"key": "d", "operator": "DoesNotExist", "values": []}]}},
}


@pytest.mark.parametrize("kind", POLICY_KINDS)
@pytest.mark.parametrize("name", sorted(VALID_SPECS))
def test_valid_policies_pass_schema_cel_and_operator(kind: str, name: str) -> None:
    obj = policy(kind, **VALID_SPECS[name])
    assert validate(obj) == []
    parse_policy(obj, kind)


# (spec override, expected substring of the first error)
INVALID_SPECS = {
    "two-forms": ({"memoryHigh": {"bytes": "1Gi", "limitPercent": 50}}, "exactly one"),
    "no-form": ({"memoryHigh": {}}, "exactly one"),
    "no-memory-high": ({"memoryHigh": None}, "None is not of type"),
    "limit-0": ({"memoryHigh": {"limitPercent": 0}}, "less than the minimum"),
    "limit-101": ({"memoryHigh": {"limitPercent": 101}}, "greater than the maximum"),
    "throttling-0": ({"memoryHigh": {"throttlingPercent": 0}}, "less than the minimum"),
    "throttling-150": ({"memoryHigh": {"throttlingPercent": 150}}, "greater than the maximum"),
    "throttling-float": ({"memoryHigh": {"throttlingPercent": 0.9}}, "is not of type 'integer'"),
    "limit-float": ({"memoryHigh": {"limitPercent": 90.5}}, "is not of type 'integer'"),
    "headroom-float": ({"reclaim": {"headroomPercent": 2.5}}, "is not of type 'integer'"),
    "old-throttling-factor": ({"memoryHigh": {"throttlingFactor": 0.9}}, "Additional prop"),
    "old-step-size": ({"reclaim": {"stepSize": "16Mi"}}, "Additional prop"),
    "bytes-negative": ({"memoryHigh": {"bytes": "-1Gi"}}, "does not match"),
    "bytes-zero": ({"memoryHigh": {"bytes": "0Gi"}}, "must not be zero"),
    "bytes-int-small": ({"memoryHigh": {"bytes": 4096}}, "between 1048576"),
    "bytes-bad-unit": ({"memoryHigh": {"bytes": "3GB"}}, "does not match"),
    "bytes-milli": ({"memoryHigh": {"bytes": "3000m"}}, "does not match"),
    "headroom-eq-target": ({"reclaim": {"headroomPercent": 10, "targetPercent": 10}},
                           "headroomPercent must be below targetPercent"),
    "headroom-above-default-target": ({"reclaim": {"headroomPercent": 12}},
                                      "headroomPercent must be below targetPercent"),
    "target-below-default-headroom": ({"reclaim": {"targetPercent": 4}},
                                      "headroomPercent must be below targetPercent"),
    "headroom-0": ({"reclaim": {"headroomPercent": 0}}, "less than the minimum"),
    "target-100": ({"reclaim": {"targetPercent": 100}}, "greater than the maximum"),
    "step-small": ({"reclaim": {"stepBytes": 100}}, "stepBytes must be between 4096"),
    "step-zero-string": ({"reclaim": {"stepBytes": "0"}}, "must not be zero"),
    "rate-small": ({"reclaim": {"maxBytesPerSecond": 1}}, "between 4096"),
    "cpu-zero": ({"reclaim": {"nodeCpuBudget": "0m"}}, "does not match"),
    "cpu-float": ({"reclaim": {"nodeCpuBudget": 0.5}}, "is not valid under any"),  # use "500m"
    "swappiness-201": ({"reclaim": {"swappiness": 201}}, "greater than the maximum"),
    "swappiness-negative": ({"reclaim": {"swappiness": -1}}, "less than the minimum"),
    "pressure-0": ({"reclaim": {"pressureTargetBasisPoints": 0}}, "less than the minimum"),
    "pressure-float": ({"reclaim": {"pressureTargetBasisPoints": 0.5}}, "not of type 'integer'"),
    "mode-unknown": ({"reclaim": {"mode": "Fast"}}, "is not one of"),
    "mode-unquoted-off": ({"reclaim": {"mode": False}}, "is not of type 'string'"),
    "in-without-values": ({"selector": {"matchExpressions": [{"key": "a", "operator": "In"}]}},
                          "need values"),
    "exists-with-values": ({"selector": {"matchExpressions": [
        {"key": "a", "operator": "Exists", "values": ["x"]}]}}, "take none"),
    "bad-operator": ({"selector": {"matchExpressions": [{"key": "a", "operator": "Has"}]}},
                     "is not one of"),
    "unknown-field": ({"memoryHigh": {"limitPercent": 5, "percent": 5}}, "Additional prop"),
    "priority-string": ({"priority": "high"}, "is not of type"),
    # issue 13: quantities past what a plan and the kernel hold
    "bytes-8Ei": ({"memoryHigh": {"bytes": "8Ei"}}, "does not match"),
    "bytes-99999999999Ei": ({"memoryHigh": {"bytes": "99999999999Ei"}}, "does not match"),
    "bytes-1e100": ({"memoryHigh": {"bytes": "1e100"}}, "does not match"),
    "bytes-int-2^63": ({"memoryHigh": {"bytes": 2**63 - 1}}, "between 1048576"),
    "step-1e100": ({"reclaim": {"stepBytes": "1e100"}}, "does not match"),
    "rate-8Ei": ({"reclaim": {"maxBytesPerSecond": "8Ei"}}, "does not match"),
    "cpu-400-digits": ({"reclaim": {"nodeCpuBudget": "9" * 400}}, "nodeCpuBudget"),
    "cpu-million": ({"reclaim": {"nodeCpuBudget": "1000000"}}, "does not match"),
    "cpu-1025": ({"reclaim": {"nodeCpuBudget": 1025}}, "between 1m and 1024"),
    "cpu-4-decimals": ({"reclaim": {"nodeCpuBudget": "0.0005"}}, "does not match"),
    "cpu-zero-decimal": ({"reclaim": {"nodeCpuBudget": "0.000"}}, "between 1m and 1024"),
    # issue 13: selectors Kubernetes itself would reject
    "key-64": ({"selector": {"matchLabels": {"a" * 64: "x"}}}, "label keys must be"),
    "key-two-slashes": ({"selector": {"matchLabels": {"a/b/c": "x"}}}, "label keys must be"),
    "key-bad-prefix": ({"selector": {"matchLabels": {"Example.COM/app": "x"}}},
                       "label keys must be"),
    "key-prefix-254": ({"selector": {"matchLabels": {"a" * 254 + "/app": "x"}}},
                       "label keys must be"),
    "key-namespace-pseudo": ({"selector": {"matchLabels": {" namespace": "x"}}},
                             "label keys must be"),
    "value-64": ({"selector": {"matchLabels": {"app": "v" * 64}}}, "is too long"),
    "value-space": ({"selector": {"matchLabels": {"app": "a b"}}}, "label values must be"),
    "value-non-ascii": ({"selector": {"matchLabels": {"app": "café"}}},
                        "label values must be"),
    "value-null": ({"selector": {"matchLabels": {"app": None}}}, "is not of type"),
    # kubectl apply (client side) drops a null label value: {app: null} arrives as {}
    "labels-empty": ({"selector": {"matchLabels": {}}}, "must not be empty"),
    "expr-key-bad": ({"selector": {"matchExpressions": [
        {"key": "a/b/c", "operator": "Exists"}]}}, "key must be a qualified name"),
    "expr-value-bad": ({"selector": {"matchExpressions": [
        {"key": "app", "operator": "In", "values": ["-x"]}]}}, "values must be"),
    "too-many-labels": ({"selector": {"matchLabels": {f"k{i}": "v" for i in range(65)}}},
                        "has too many properties"),
}

# Unambiguous to the operator, so it does not second-guess the server here (the server
# prunes unknown fields when validation is not strict).
SERVER_ONLY = {"unknown-field", "old-step-size"}


@pytest.mark.parametrize("kind", POLICY_KINDS)
@pytest.mark.parametrize("name", sorted(INVALID_SPECS))
def test_invalid_policies_are_rejected_by_schema_or_cel_and_by_the_operator(
        kind: str, name: str) -> None:
    spec, expected = INVALID_SPECS[name]
    obj = policy(kind, **spec)
    errors = validate(obj)
    assert errors and expected in errors[0], errors
    if name in SERVER_ONLY:
        return
    # The operator does not trust the server: it rejects the same objects.
    with pytest.raises(ValueError):
        parse_policy(obj, kind)


def test_cluster_policy_requires_namespace_selector() -> None:
    obj = policy("ClusterMemoryReclaimPolicy")
    del obj["spec"]["namespaceSelector"]
    assert "'namespaceSelector' is a required property" in validate(obj)[0]
    bad = policy("ClusterMemoryReclaimPolicy",
                 namespaceSelector={"matchExpressions": [{"key": "x", "operator": "NotIn"}]})
    assert validate(bad) == ["operators In and NotIn need values; Exists and DoesNotExist "
                             "take none"]


# ---- examples and plans -----------------------------------------------------------------

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def test_there_are_examples_of_both_policy_kinds() -> None:
    kinds = {d["kind"] for p in EXAMPLES for d in yaml.safe_load_all(p.read_text()) if d}
    assert set(POLICY_KINDS) <= kinds


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_apply_as_they_are(path: pathlib.Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        if not doc:
            continue
        assert doc["apiVersion"] == "headroom.dev/v1alpha1"
        assert validate(doc) == []
        parse_policy(doc, doc["kind"])


def test_resolved_plans_are_valid_node_reclaim_plans() -> None:
    examples = [d for p in EXAMPLES for d in yaml.safe_load_all(p.read_text()) if d]
    pods = []
    for i, labels in enumerate([{"app": "web"}, {"tier": "cache"}, {"app": "batch"}, {}]):
        pods.append({
            "metadata": {"name": f"p{i}", "namespace": "default", "uid": f"u{i}",
                         "labels": labels},
            "spec": {"nodeName": f"n{i % 2}", "containers": [{"resources": {
                "requests": {"memory": "1Gi"}, "limits": {"memory": "4Gi"}}}]},
        })
    ns = [{"metadata": {"name": "default", "labels": {"headroom.dev/enabled": "true"}}}]
    res = resolve([d for d in examples if d["kind"] == "MemoryReclaimPolicy"],
                  [d for d in examples if d["kind"] == "ClusterMemoryReclaimPolicy"], pods, ns)
    assert sum(len(p["pods"]) for p in res.plans.values()) == 4
    for node, spec in res.plans.items():
        plan = {"apiVersion": "headroom.dev/v1alpha1", "kind": "NodeReclaimPlan",
                "metadata": {"name": node}, "spec": spec}
        assert validate(plan) == []


def test_a_null_label_dropped_by_kubectl_apply_is_refused_by_the_operator() -> None:
    """`kubectl apply` of matchLabels {app: null, tier: web} sends {tier: web} (it drops
    nulls client side, so the CRD never sees one); the manifest it keeps in the
    last-applied annotation still has the null, and the operator refuses the policy."""
    import json

    from headroom.api.policy import LAST_APPLIED, PolicyError

    for kind in POLICY_KINDS:
        written = policy(kind, selector={"matchLabels": {"app": None, "tier": "web"}})
        stored = policy(kind, selector={"matchLabels": {"tier": "web"}})
        assert validate(stored) == []
        stored["metadata"]["annotations"] = {LAST_APPLIED: json.dumps(written)}
        with pytest.raises(PolicyError, match=r"spec.selector.matchLabels\[app\]: null in the "
                                              "manifest last applied with kubectl"):
            parse_policy(stored, kind)
        # a later fix (kubectl edit gave the label a value) is not held against it
        fixed = policy(kind, selector={"matchLabels": {"app": "api", "tier": "web"}})
        fixed["metadata"]["annotations"] = {LAST_APPLIED: json.dumps(written)}
        parse_policy(fixed, kind)
        # a broken annotation is not the policy's fault
        stored["metadata"]["annotations"] = {LAST_APPLIED: "{not json"}
        parse_policy(stored, kind)
    cluster = policy("ClusterMemoryReclaimPolicy",
                     namespaceSelector={"matchLabels": {"team": "a"}})
    written = json.loads(json.dumps(cluster))
    written["spec"]["namespaceSelector"]["matchLabels"]["env"] = None
    cluster["metadata"]["annotations"] = {LAST_APPLIED: json.dumps(written)}
    with pytest.raises(PolicyError, match=r"spec.namespaceSelector.matchLabels\[env\]"):
        parse_policy(cluster, "ClusterMemoryReclaimPolicy")
