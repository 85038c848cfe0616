"""headroom.api.plan: the typed plan entry, its bounds, and the CRD that carries them."""

from __future__ import annotations

import copy
import math
import pathlib
import subprocess
import sys
from typing import Any

import pytest
import yaml
from headroom.api import plan
from headroom.api.plan import (
    MAX_BYTES,
    MIN_MEMORY_HIGH,
    PlanEntry,
    validate_cpu_budget,
    validate_entry,
    validate_spec,
)
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = pathlib.Path(__file__).resolve().parents[2]
MI = 1 << 20


def entry(**over: Any) -> dict[str, Any]:
    e: dict[str, Any] = {
        "uid": "u1", "namespace": "default", "name": "web-0", "qosClass": "Burstable",
        "memoryHigh": 512 * MI, "dryRun": False,
        "policy": {"kind": "MemoryReclaimPolicy", "namespace": "default", "name": "web"},
        "reclaim": {"mode": "Watermark", "headroomPercent": 5, "targetPercent": 10,
                    "stepBytes": 16 * MI, "maxBytesPerSecond": 512 * MI,
                    "pressureTargetBasisPoints": 10},
    }
    for key, value in over.items():
        parent, _, leaf = key.rpartition("__")
        target = e[parent] if parent else e
        if value is DELETE:
            del target[leaf]
        else:
            target[leaf] = value
    return e


DELETE = object()


def test_a_valid_entry_becomes_a_typed_entry() -> None:
    got, problems = validate_entry(entry())
    assert problems == ()
    assert isinstance(got, PlanEntry)
    assert got.memory_high == 512 * MI and got.qos_class == "Burstable"
    assert got.policy == plan.PlanPolicyRef("MemoryReclaimPolicy", "web", "default")
    assert got.reclaim.step_bytes == 16 * MI and got.reclaim.swappiness is None


def test_optional_reclaim_fields_take_the_defaults() -> None:
    got, problems = validate_entry(entry(reclaim={"mode": "Off"}, dryRun=DELETE))
    assert problems == () and got is not None
    assert got.reclaim == plan.PlanReclaim(mode="Off") and got.dry_run is False


# (field override, path of the problem, words of the message)
BAD = {
    # the agent-side inputs of issue 13, item 4
    "memory-high-float": ({"memoryHigh": 1.9}, "memoryHigh", "must be an integer"),
    "memory-high-bool": ({"memoryHigh": True}, "memoryHigh", "must be an integer"),
    "memory-high-2^64": ({"memoryHigh": 2**64 + 8192}, "memoryHigh", "between"),
    "memory-high-2^63": ({"memoryHigh": 2**63}, "memoryHigh", "between"),
    "memory-high-string": ({"memoryHigh": "1Gi"}, "memoryHigh", "must be an integer"),
    "memory-high-unaligned": ({"memoryHigh": MI + 1}, "memoryHigh", "multiple of 4096"),
    "memory-high-zero": ({"memoryHigh": 0}, "memoryHigh", "between"),
    "memory-high-small": ({"memoryHigh": 4096}, "memoryHigh", "between"),
    "step-inf": ({"reclaim__stepBytes": math.inf}, "reclaim.stepBytes", "integer"),
    "step-huge": ({"reclaim__stepBytes": 2**70}, "reclaim.stepBytes", "between"),
    "rate-negative": ({"reclaim__maxBytesPerSecond": -4096}, "reclaim.maxBytesPerSecond",
                      "between"),
    "pressure-1e6": ({"reclaim__pressureTargetBasisPoints": 10**6},
                     "reclaim.pressureTargetBasisPoints", "between 1 and 9999"),
    "pressure-nan": ({"reclaim__pressureTargetBasisPoints": math.nan},
                     "reclaim.pressureTargetBasisPoints", "must be an integer"),
    "pressure-float": ({"reclaim__pressureTargetBasisPoints": 0.1},
                       "reclaim.pressureTargetBasisPoints", "must be an integer"),
    "headroom-string": ({"reclaim__headroomPercent": "5"}, "reclaim.headroomPercent",
                        "must be an integer"),
    "headroom-float": ({"reclaim__headroomPercent": 5.0}, "reclaim.headroomPercent",
                       "must be an integer"),
    "target-100": ({"reclaim__targetPercent": 100}, "reclaim.targetPercent", "between 1 and 99"),
    "headroom-above-target": ({"reclaim__headroomPercent": 20}, "reclaim.targetPercent",
                              "below targetPercent"),
    "swappiness-201": ({"reclaim__swappiness": 201}, "reclaim.swappiness", "between 0 and 200"),
    "swappiness-float": ({"reclaim__swappiness": 60.0}, "reclaim.swappiness", "integer"),
    "mode-bool": ({"reclaim__mode": False}, "reclaim.mode", "must be a string"),
    "mode-missing": ({"reclaim__mode": DELETE}, "reclaim.mode", "required"),
    "qos-unknown": ({"qosClass": "Gold"}, "qosClass", "one of"),
    "uid-missing": ({"uid": DELETE}, "uid", "required"),
    "uid-int": ({"uid": 7}, "uid", "must be a string"),
    "uid-empty": ({"uid": ""}, "uid", "characters long"),
    "namespace-long": ({"namespace": "n" * 64}, "namespace", "characters long"),
    "dry-run-string": ({"dryRun": "false"}, "dryRun", "boolean"),
    "policy-not-object": ({"policy": "web"}, "policy", "must be an object"),
    "policy-kind": ({"policy__kind": "Policy"}, "policy.kind", "one of"),
    "reclaim-missing": ({"reclaim": DELETE}, "reclaim", "required"),
    "unknown-field": ({"memoryMax": 1}, "memoryMax", "unknown field"),
    "unknown-reclaim-field": ({"reclaim__stepSize": 4096}, "reclaim.stepSize", "unknown"),
    "old-percent-field": ({"reclaim__pressureTargetPercent": 0.1},
                          "reclaim.pressureTargetPercent", "unknown"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_entries_are_refused_with_the_field_path(name: str) -> None:
    over, path, words = BAD[name]
    got, problems = validate_entry(entry(**over))
    assert got is None
    assert [p.path for p in problems] == [path], problems
    assert words in problems[0].message, problems[0]


@pytest.mark.parametrize("raw", ["x", None, 3, [], ["uid"]])
def test_an_entry_that_is_not_an_object(raw: Any) -> None:
    got, problems = validate_entry(raw)
    assert got is None and problems[0].path == "" and "object" in problems[0].message


def test_largest_and_smallest_values_pass() -> None:
    got, problems = validate_entry(entry(memoryHigh=MAX_BYTES, reclaim__stepBytes=4096,
                                         reclaim__maxBytesPerSecond=MAX_BYTES))
    assert problems == () and got is not None
    assert validate_entry(entry(memoryHigh=MIN_MEMORY_HIGH))[1] == ()
    assert MAX_BYTES < 2**63 and MAX_BYTES % 4096 == 0 and MAX_BYTES + 4096 >= 2**63


@pytest.mark.parametrize(("raw", "cores"), [
    (None, None), ("500m", 0.5), ("1024000m", 1024.0), ("1m", 0.001), ("2000m", 2.0),
    (-1, False), ("0m", False), ("1024001m", False), ("0500m", False), ("0.5", False),
    ("1", False), (0.5, False), (1, False), (True, False), ("500M", False), (math.inf, False),
])
def test_cpu_budget(raw: Any, cores: Any) -> None:
    value, problems = validate_cpu_budget(raw)
    assert (problems == ()) is (cores is not False)
    if cores is False:
        assert value is None and problems[0].path == "nodeCpuBudget"
    else:
        assert value == cores


@pytest.mark.parametrize(("cores", "text"), [(0.5, "500m"), (0.25, "250m"), (2, "2000m"),
                                              (0.0004, "1m"), (5000, "1024000m")])
def test_millicores_is_what_the_operator_writes(cores: float, text: str) -> None:
    assert plan.millicores(cores) == text and validate_cpu_budget(text)[1] == ()


def test_defaults_of_the_contract_are_the_typed_defaults() -> None:
    """The CRD's `default:` values (ENTRY_DEFAULTS) and PlanReclaim's agree."""
    got = plan.PlanReclaim()
    for path, value in plan.ENTRY_DEFAULTS.items():
        if path.startswith("reclaim."):
            attr = plan._RECLAIM_ATTRS[path.removeprefix("reclaim.")]
            assert getattr(got, attr) == value, path
    assert got.pressure_target_percent == 0.1


def test_a_bad_entry_spoils_only_itself() -> None:
    spec = {"nodeName": "n", "nodeCpuBudget": "2000m",
            "pods": [entry(), "x", entry(uid="u2", reclaim__stepBytes=math.inf), entry(),
                     entry(uid="u3")]}
    check = validate_spec(spec)
    assert [i for i, _ in check.entries] == [0, 4]
    assert [i for i, _ in check.invalid] == [1, 2, 3]
    assert "duplicate uid" in check.invalid[2][1][0].message
    assert check.cpu_budget_cores == 2.0 and check.problems == ()
    bad = validate_spec({"pods": "all", "nodeCpuBudget": -1})
    assert [p.path for p in bad.problems] == ["nodeCpuBudget", "pods"]
    assert validate_spec("x").problems[0].path == "spec"


def test_validation_does_not_change_its_input() -> None:
    raw = entry()
    before = copy.deepcopy(raw)
    validate_entry(raw)
    assert raw == before


# ---- the settings cache: checked once per distinct value, same answers -------------------

def _fresh() -> None:
    plan._SETTINGS.clear()


@pytest.mark.parametrize("over", [
    {"reclaim__headroomPercent": True},        # == 1, but not an integer
    {"reclaim__livelockGuard": 1},             # == True, but not a boolean
    {"dryRun": 0},                             # == False
    {"reclaim__targetPercent": 10.0},          # == 10, a float
    {"reclaim__headroomPercent": 10},          # not below targetPercent
    {"reclaim__mode": "Sometimes"},
    {"policy__kind": "Policy"},
    {"policy__extra": "x"},
    {"memoryHigh": 512 * MI + 1},              # per pod: not cached with the settings
    {"uid": ""},
    {"qosClass": "Gold"},
    {"extra": 1},
    {"memoryHigh": DELETE},
])
def test_a_cached_valid_setting_accepts_nothing_the_full_check_refuses(over: Any) -> None:
    """What compares equal to valid settings (True == 1, 10.0 == 10) and per-pod fields
    next to cached settings are still checked: same problems as without the cache."""
    _fresh()
    assert validate_entry(entry())[1] == ()
    assert validate_entry(entry(reclaim__headroomPercent=1, reclaim__livelockGuard=True,
                                dryRun=False))[1] == ()
    bad = entry(**over)
    got = validate_entry(bad)
    assert got == plan._validate_full(bad) and got[0] is None
    assert plan.entry_problems(bad) == got[1] != ()


def test_a_policy_whose_settings_change_is_checked_again() -> None:
    _fresh()
    e = entry()
    assert plan.entry_problems(e) == () and len(plan._SETTINGS) == 1
    e["reclaim"]["targetPercent"] = 3       # changed in place: a new value, a new check
    assert [p.path for p in plan.entry_problems(e)] == ["reclaim.targetPercent"]
    e["reclaim"]["targetPercent"] = 20
    got, problems = validate_entry(e)
    assert problems == () and got is not None and got.reclaim.target_percent == 20
    assert len(plan._SETTINGS) == 2


def test_cached_entries_are_the_full_checks_entries() -> None:
    _fresh()
    first = validate_entry(entry(uid="a", dryRun=DELETE, reclaim={"mode": "Off"}))
    again = validate_entry(entry(uid="b", name="web-1", dryRun=DELETE,
                                 reclaim={"mode": "Off"}))
    assert len(plan._SETTINGS) == 1
    assert again == plan._validate_full(entry(uid="b", name="web-1", dryRun=DELETE,
                                              reclaim={"mode": "Off"}))
    assert again[0] is not None and first[0] is not None
    assert again[0].reclaim is first[0].reclaim and again[0].dry_run is False


_FIELDS = ["uid", "name", "qosClass", "memoryHigh", "dryRun", "extra", "policy__kind",
           "policy__namespace", "policy__name", "reclaim__mode", "reclaim__headroomPercent",
           "reclaim__targetPercent", "reclaim__stepBytes", "reclaim__livelockGuard",
           "reclaim__swappiness", "reclaim__extra"]
_VALUES = [DELETE, True, False, 0, 1, 5, 10, 10.0, 4096, 16 * MI, 512 * MI, "x", "Off",
           "Burstable", "MemoryReclaimPolicy", "", None, [1], {"a": 1}]


def _present(path: str) -> bool:
    parent, _, leaf = path.rpartition("__")
    base = entry()
    return leaf in (base[parent] if parent else base)


@given(st.lists(st.lists(st.tuples(st.sampled_from(_FIELDS), st.sampled_from(_VALUES)),
                         max_size=3), min_size=1, max_size=8))
@settings(max_examples=300, deadline=None)
def test_the_cache_never_changes_an_answer(entries: list[list[tuple[str, Any]]]) -> None:
    """Random entries near valid ones, one after the other (warming the cache with
    whatever settings they carry): each gets exactly the full check's answer."""
    _fresh()
    for over in entries:
        raw = entry(**{k: v for k, v in over if v is not DELETE or _present(k)})
        assert validate_entry(raw) == plan._validate_full(raw), over
        assert plan.entry_problems(raw) == plan._validate_full(raw)[1], over


def test_the_cache_is_bounded() -> None:
    _fresh()
    for i in range(plan._SETTINGS_MAX + 10):
        assert plan.entry_problems(entry(policy__name=f"p{i}")) == ()
    assert len(plan._SETTINGS) <= plan._SETTINGS_MAX


# ---- one source: the CRD carries the module's bounds ------------------------------------

def _plan_spec_schema() -> dict[str, Any]:
    crd = yaml.safe_load((ROOT / "crds" / "nodereclaimplans.yaml").read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


def _at(schema: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    for part in path:
        schema = schema["items"] if part == "[]" else schema["properties"][part]
    return schema


def test_the_plan_crd_carries_every_bound_of_the_module() -> None:
    spec = _plan_spec_schema()
    for path, keywords in plan.crd_bounds().items():
        node = _at(spec, path)
        for key, value in keywords.items():
            assert node.get(key) == value, (path, key)
    for path, rules in plan.crd_rules().items():
        assert _at(spec, path)["x-kubernetes-validations"] == rules, path
    items = _at(spec, ("pods", "[]"))
    assert set(items["required"]) == {p for p in plan.REQUIRED_ENTRY_FIELDS if "." not in p}
    assert set(items["properties"]) == {p.split(".")[0] for p in plan.ENTRY_BOUNDS}


def test_crd_bounds_script_finds_no_drift() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "crd-bounds"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
