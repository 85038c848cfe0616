"""Property tests of the agent's intake (issue 13 item 4, agent side), with Hypothesis:
random plan entries and random state files through parse -> targets -> the engine on a
fake cgroup tree. Asserted for every generated case:

* nothing raises (a plan or a state file is never a reason for the agent to exit);
* every memory.high the engine writes is page aligned, within [1 MiB, 2^63), and is
  the value a contract-valid entry asked for (or the original put back); every
  memory.reclaim write is a positive amount below 2^63;
* an entry valid under the plan contract is never refused (it is applied).

CI runs a few hundred cases; HEADROOM_PROPERTY_EXAMPLES=N runs N per test (docs/testing.md).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from fake_cgroup_tree import FakeTree
from fake_kubepods import make_kubepods, make_pod, pod_rel
from headroom.api.plan import INT64_MAX, MIN_MEMORY_HIGH, PAGE_SIZE, validate_entry
from headroom.cgroup import CgroupRoot
from headroom.engine.engine import ReclaimEngine
from headroom.nodeagent.agent import ClusterAgent, parse_plan
from headroom.nodeagent.planstate import StateStore
from headroom.nodeagent.podcgroups import Driver, make_resolver
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("HEADROOM_PROPERTY_EXAMPLES", "40"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get(
    "HEADROOM_PROPERTY_EXAMPLES"), suppress_health_check=list(HealthCheck))
UIDS = [f"aaaaaaaa-0000-4000-8000-00000000000{i}" for i in range(4)]
D = Driver.CGROUPFS
MiB = 1 << 20

junk = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(),
                                                         max_size=2))
good_bytes = st.integers(min_value=1, max_value=(INT64_MAX // PAGE_SIZE)).map(
    lambda n: n * PAGE_SIZE)
near = st.one_of(good_bytes, st.sampled_from([MIN_MEMORY_HIGH, 256 * MiB, 2**63 - PAGE_SIZE,
                                              2**63, 2**64 + 8192, MIN_MEMORY_HIGH - PAGE_SIZE,
                                              256 * MiB + 1, 0, -4096]))
percent = st.one_of(st.floats(min_value=0.001, max_value=99.9), st.integers(1, 99))


def field(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly plausible values, sometimes anything at all."""
    return st.one_of(good, good, good, junk)


reclaim = st.fixed_dictionaries({"mode": field(st.sampled_from(["Watermark", "Pressure", "Off"]))},
                                optional={"headroomPercent": field(percent),
                                          "targetPercent": field(percent),
                                          "stepBytes": field(near),
                                          "maxBytesPerSecond": field(near),
                                          "swappiness": field(st.integers(-5, 205)),
                                          "pressureTargetBasisPoints": field(percent),
                                          "unknownKnob": junk})
entry = st.fixed_dictionaries(
    {"uid": field(st.sampled_from(UIDS)), "namespace": field(st.just("shop")),
     "name": field(st.just("web")),
     "qosClass": field(st.sampled_from(["Guaranteed", "Burstable", "BestEffort"])),
     "memoryHigh": field(near),
     "policy": field(st.just({"kind": "MemoryReclaimPolicy", "name": "p"})),
     "reclaim": field(reclaim)},
    optional={"dryRun": field(st.booleans()), "extra": junk})
plan_obj = st.fixed_dictionaries(
    {"metadata": field(st.just({"name": "node-1", "uid": "u", "generation": 1})),
     "spec": field(st.fixed_dictionaries(
         {"nodeName": st.just("node-1"), "pods": field(st.lists(field(entry), max_size=5))},
         optional={"nodeCpuBudget": field(st.integers(1, 64000).map(lambda m: f"{m}m"))}))})


class Recording(CgroupRoot):
    """A fake root that records every write the engine makes through the cgroup layer."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, allow_fake=True)
        self.writes: list[tuple[str, str]] = []

    def _make(self, path: Path) -> Any:
        cg = super()._make(path)
        real = cg._write

        def write(name: str, data: str, cg: Any = cg, real: Any = real) -> None:
            self.writes.append((f"{cg.rel}/{name}", data))
            real(name, data)
        cg._write = write
        return cg


def _world(tmp: Path) -> tuple[FakeTree, Recording, ClusterAgent]:
    tree = FakeTree(tmp / "cg")
    make_kubepods(tree, D)
    # each uid's cgroup under one class (UIDS[3]: none, a pod not started yet), UIDS[0]
    # under a second one too (AmbiguousCgroup)
    for uid, qos in zip(UIDS[:3], ("Guaranteed", "Burstable", "BestEffort"), strict=True):
        make_pod(tree, D, uid, qos, current=50 * MiB, high=700 * MiB)
    make_pod(tree, D, UIDS[0], "Burstable", current=50 * MiB, high=700 * MiB)
    root = Recording(tree.root)
    engine = ReclaimEngine(root, cpu_budget_cores=0.5, workers=0, clock=lambda: 1000.0)
    agent = ClusterAgent(engine=engine, root=root, resolver=make_resolver(root.path, "cgroupfs"),
                         store=StateStore(tmp / "state"), node="node-1", default_cpu_budget=0.5)
    return tree, root, agent


def _check_writes(root: Recording, asked: set[int]) -> None:
    for path, data in root.writes:
        assert path.startswith("kubepods/") and "/pod" in path, path
        name = path.rsplit("/", 1)[1]
        if name == "memory.high":
            if data == "max":
                continue
            v = int(data)
            assert v % PAGE_SIZE == 0 and MIN_MEMORY_HIGH <= v < 2**63, data
            assert v in asked or v == 700 * MiB, (data, asked)
        elif name == "memory.reclaim":
            n = int(data.split()[0])
            assert 0 < n < 2**63, data


def _valid(raw: Any) -> bool:
    return validate_entry(raw)[0] is not None


@SETTINGS
@given(obj=plan_obj)
def test_random_plans_never_raise_and_never_write_out_of_bounds(tmp_path_factory: Any,
                                                                 obj: Any) -> None:
    tree, root, agent = _world(tmp_path_factory.mktemp("p"))
    agent.set_plan(obj)
    agent.tick()
    plan = parse_plan(obj)
    asked = {p.memory_high for p in plan.pods}
    _check_writes(root, asked)
    # a contract-valid entry (first of its uid) is never refused
    pods = (obj.get("spec") or {}).get("pods") if isinstance(obj.get("spec"), dict) else None
    seen: set[str] = set()
    for raw in pods if isinstance(pods, list) else []:
        if isinstance(raw, dict) and _valid(raw) and raw["uid"] not in seen:
            seen.add(raw["uid"])
            assert raw["uid"] in {p.uid for p in plan.pods}, raw
    for p in plan.pods:
        assert isinstance(p.memory_high, int) and not isinstance(p.memory_high, bool)
        s = p.settings
        assert math.isfinite(s.pressure_target_percent) and 0 < s.pressure_target_percent < 100
        assert PAGE_SIZE <= s.step_bytes < 2**63 and PAGE_SIZE <= s.max_bytes_per_second < 2**63
    agent.shutdown(restore=True)
    for uid in {p.uid for p in plan.pods}:
        for qos in ("Guaranteed", "Burstable", "BestEffort"):
            rel = pod_rel(D, uid, qos)
            if (tree.root / rel).is_dir():
                assert tree.high(rel) == str(700 * MiB)


state_doc = st.one_of(
    junk, st.fixed_dictionaries({"version": field(st.just(1)), "plan": field(plan_obj)}),
    st.fixed_dictionaries({"version": field(st.just(1)), "originals": field(
        st.dictionaries(st.sampled_from(UIDS), field(st.one_of(st.none(), good_bytes)),
                        max_size=4))}))


@SETTINGS
@given(plan_doc=state_doc, originals_doc=state_doc, raw_bytes=st.binary(max_size=40),
       use_bytes=st.booleans())
def test_random_state_files_never_stop_the_agent(tmp_path_factory: Any, plan_doc: Any,
                                                 originals_doc: Any, raw_bytes: bytes,
                                                 use_bytes: bool) -> None:
    tmp = tmp_path_factory.mktemp("s")
    _, root, agent = _world(tmp)
    state = tmp / "state"
    state.mkdir()
    (state / "plan.json").write_bytes(raw_bytes if use_bytes else
                                      json.dumps(plan_doc).encode())
    (state / "originals.json").write_text(json.dumps(originals_doc))
    agent.start()                                   # never raises
    agent.tick()
    asked = {p.memory_high for p in agent.plan.pods}
    _check_writes(root, asked)
    agent.set_plan(None)                            # the API answers: nothing planned
    agent.shutdown(restore=True)
