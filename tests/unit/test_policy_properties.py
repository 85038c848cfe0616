"""Property tests (Hypothesis): random policy documents through parse -> resolve -> the plan
contract. Nothing outside the plan's bounds reaches a plan, a document built from valid
values is never refused, and the parsers raise nothing but their typed errors.

CI runs 100 examples per property (a few seconds). HEADROOM_PROPERTY_EXAMPLES=N
runs N per property (docs/testing.md, "Property tests").
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from headroom.api import plan, syntax
from headroom.api.policy import PolicyError, parse_policy
from headroom.api.selector import SelectorError, compile_selector
from headroom.controller.resolve import resolve
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("HEADROOM_PROPERTY_EXAMPLES", "100"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 100,
                    suppress_health_check=[HealthCheck.too_slow])

# ---- valid values ----------------------------------------------------------------------

_alnum = st.sampled_from("abcxyzABC019")
_name_mid = st.text(alphabet="abc019-_.", max_size=10)
label_name = st.builds(lambda a, m, b: a + m + b, _alnum, _name_mid, _alnum) | _alnum
dns_label = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,8}[a-z0-9])?\Z")
prefix = st.lists(dns_label, min_size=1, max_size=3).map(".".join)
label_key = label_name | st.builds(lambda p, n: f"{p}/{n}", prefix, label_name)
label_value = st.just("") | label_name
_units = [("", 18), ("k", 15), ("Ki", 15), ("M", 12), ("Mi", 12), ("G", 9), ("Gi", 9),
          ("T", 6), ("Ti", 6), ("P", 3), ("Pi", 3)]


@st.composite
def byte_quantity(draw: Any, minimum: int) -> Any:
    """A quantity string or integer that the CRD and the parser accept, >= minimum."""
    if draw(st.booleans()):
        return draw(st.integers(minimum, plan.MAX_BYTES))
    unit, digits = draw(st.sampled_from(_units))
    scale = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15}
    scale |= {u + "i": 1024 ** (i + 1) for i, u in enumerate("KMGTP")}
    lowest = -(-minimum // scale[unit])
    n = draw(st.integers(lowest, 10**digits - 1))
    return f"{n}{unit}"


cpu_quantity = (st.integers(1, plan.MAX_CPU_BUDGET_CORES)
                | st.integers(1, 1024000).map(lambda m: f"{m}m")
                | st.integers(1, 1024000).map(lambda m: f"{m // 1000}.{m % 1000:03d}"))


@st.composite
def selector(draw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if draw(st.booleans()):
        out["matchLabels"] = draw(st.dictionaries(label_key, label_value, min_size=1,
                                                  max_size=4))
    if draw(st.booleans()):
        exprs = []
        for _ in range(draw(st.integers(0, 3))):
            op = draw(st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist"]))
            e: dict[str, Any] = {"key": draw(label_key), "operator": op}
            if op in ("In", "NotIn"):
                e["values"] = draw(st.lists(label_value, min_size=1, max_size=3))
            exprs.append(e)
        out["matchExpressions"] = exprs
    return out


@st.composite
def valid_spec(draw: Any) -> dict[str, Any]:
    form = draw(st.sampled_from(["bytes", "limitPercent", "throttlingPercent"]))
    memory_high: dict[str, Any] = {
        "bytes": lambda: draw(byte_quantity(plan.MIN_MEMORY_HIGH)),
        "limitPercent": lambda: draw(st.integers(1, 100)),
        "throttlingPercent": lambda: draw(st.integers(1, 100)),
    }[form]()
    memory_high = {form: memory_high}
    reclaim: dict[str, Any] = {}
    headroom = draw(st.integers(1, 40))
    target = draw(st.integers(headroom + 1, 99))
    if draw(st.booleans()):
        reclaim |= {"headroomPercent": headroom, "targetPercent": target}
    if draw(st.booleans()):
        reclaim["stepBytes"] = draw(byte_quantity(plan.PAGE_SIZE))
    if draw(st.booleans()):
        reclaim["maxBytesPerSecond"] = draw(byte_quantity(plan.PAGE_SIZE))
    if draw(st.booleans()):
        reclaim["nodeCpuBudget"] = draw(cpu_quantity)
    if draw(st.booleans()):
        reclaim["swappiness"] = draw(st.integers(0, 200))
    if draw(st.booleans()):
        reclaim["pressureTargetBasisPoints"] = draw(st.integers(1, 9999))
    if draw(st.booleans()):
        reclaim["mode"] = draw(st.sampled_from(["Watermark", "Pressure", "Off"]))
    return {"selector": draw(selector()), "memoryHigh": memory_high, "reclaim": reclaim,
            "priority": draw(st.integers(-(2**31), 2**31 - 1))}


# ---- anything at all -------------------------------------------------------------------

junk_scalar = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
               | st.floats(allow_nan=True, allow_infinity=True)
               | st.text(max_size=12)
               | st.sampled_from(["8Ei", "99999999999Ei", "1e100", "9" * 400, "1000000",
                                  "0", "-1", "1.5", "0.0005", "512Mi", "a/b/c", " namespace"]))
junk = st.recursive(junk_scalar, lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=8) | st.sampled_from(
                        ["matchLabels", "matchExpressions", "key", "operator", "values",
                         "bytes", "stepBytes", "nodeCpuBudget"]), inner, max_size=3),
                    max_leaves=12)


@st.composite
def mutated_spec(draw: Any) -> dict[str, Any]:
    """A valid spec with one field replaced by anything."""
    spec = draw(valid_spec())
    where = draw(st.sampled_from(["selector", "memoryHigh.bytes", "reclaim.stepBytes",
                                  "reclaim.maxBytesPerSecond", "reclaim.nodeCpuBudget",
                                  "reclaim.swappiness", "reclaim.headroomPercent",
                                  "reclaim.pressureTargetBasisPoints", "priority", "dryRun",
                                  "selector.matchLabels", "selector.matchExpressions"]))
    parent, _, key = where.rpartition(".")
    target = spec if not parent else spec.setdefault(parent, {})
    if parent == "memoryHigh":
        spec["memoryHigh"] = {}
        target = spec["memoryHigh"]
    target[key] = draw(junk)
    return spec


def _policy(spec: dict[str, Any], ns: str = "default") -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": ns, "generation": 1}, "spec": spec}


PODS = [{"metadata": {"name": f"pod-{i}", "namespace": "default", "uid": f"uid-{i}",
                      "labels": labels},
         "spec": {"nodeName": "n1", "containers": [{"name": "c", "resources": {
             "requests": {"memory": "256Mi"}, "limits": {"memory": lim}}}]},
         "status": {"phase": "Running"}}
        for i, (labels, lim) in enumerate([({}, "1Gi"), ({"app": "web"}, "8Gi"),
                                           ({"a": "x", "b/c": ""}, "2Gi")])]
NODES = [{"metadata": {"name": "n1", "uid": "u"}}]
NAMESPACES = [{"metadata": {"name": "default"}}]


def _plans_within_bounds(spec: dict[str, Any]) -> None:
    res = resolve([_policy(spec), _policy({"selector": {}, "memoryHigh": {"limitPercent": 50}},
                                          ns="other")],
                  [], PODS, NAMESPACES, nodes=NODES)
    for node_spec in res.plans.values():
        check = plan.validate_spec(node_spec)
        assert check.invalid == () and check.problems == (), (spec, check)


@SETTINGS
@given(valid_spec())
def test_a_valid_document_is_never_refused_and_plans_stay_in_bounds(spec: dict[str, Any]
                                                                    ) -> None:
    parse_policy(_policy(spec), "MemoryReclaimPolicy")
    _plans_within_bounds(spec)


@SETTINGS
@given(mutated_spec())
def test_nothing_out_of_bounds_reaches_a_plan(spec: dict[str, Any]) -> None:
    with contextlib.suppress(PolicyError):      # the only error the parser may raise
        parse_policy(_policy(spec), "MemoryReclaimPolicy")
    _plans_within_bounds(spec)


@SETTINGS
@given(junk)
def test_the_selector_parser_raises_only_its_error(raw: Any) -> None:
    try:
        compiled = compile_selector(raw, "spec.selector")
    except SelectorError as e:
        assert str(e).startswith("spec.selector")
        return
    for r in compiled.requirements:
        assert syntax.is_label_key(r.key)
        assert all(syntax.is_label_value(v) for v in r.values)


@SETTINGS
@given(junk)
def test_the_plan_contract_never_raises(raw: Any) -> None:
    entry, problems = plan.validate_entry(raw)
    assert (entry is None) == bool(problems)
    plan.validate_spec({"pods": [raw]})
