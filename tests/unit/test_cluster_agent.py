"""Cluster mode against fake kubepods trees of both drivers, with the real engine driven
by a fake clock: plan -> memory.high, retries, restore, restarts, dry run, drift, status
and events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fake_kubepods import DEFAULT_ROOT, KIND_ROOT, make_kubepods, make_pod, parents, pod_rel
from headroom.engine import ReclaimEngine, originals
from headroom.engine.metrics import AgentMetrics
from headroom.nodeagent.agent import ClusterAgent, parse_plan
from headroom.nodeagent.events import EventRecorder
from headroom.nodeagent.planstate import StateStore
from headroom.nodeagent.podcgroups import Driver, make_resolver
from headroom.nodeagent.status import StatusSchedule

A = "aaaaaaaa-0000-4000-8000-000000000001"
B = "bbbbbbbb-0000-4000-8000-000000000002"
C = "cccccccc-0000-4000-8000-000000000003"
MiB = 1 << 20

if TYPE_CHECKING:   # fixtures of tests/unit/conftest.py (not importable by name)
    from conftest import FakeKernel, FakeTree


def pod(uid: str, qos: str = "Burstable", high: int = 256 * MiB, **extra: Any) -> dict:
    return {"uid": uid, "namespace": "shop", "name": f"web-{uid[0]}", "qosClass": qos,
            "memoryHigh": high, "policy": {"kind": "MemoryReclaimPolicy", "name": "web"},
            "reclaim": {"mode": "Watermark", "headroomPercent": 5, "targetPercent": 10,
                        "stepBytes": 16 * MiB, "maxBytesPerSecond": 512 * MiB}, **extra}


def plan(*pods: dict, generation: int = 1, budget: Any = None) -> dict:
    spec: dict[str, Any] = {"nodeName": "node-1", "pods": list(pods)}
    if budget is not None:
        spec["nodeCpuBudget"] = budget
    return {"metadata": {"name": "node-1", "uid": "plan-uid", "generation": generation},
            "spec": spec}


def saved_originals(state: Path) -> dict[str, int | None]:
    """What the engine keeps on disk, as the next agent process will read it."""
    return {k: v.original for k, v in originals.read(state / originals.FILE).items()}


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Harness:
    """One agent 'process': engine + ClusterAgent over a tree and a state dir."""

    def __init__(self, kernel: FakeKernel, state: Path, *, dry_run: bool = False,
                 driver: str = "auto") -> None:
        self.clock = Clock()
        self.statuses: list[dict] = []
        self.events: list[dict] = []
        self.metrics = AgentMetrics()
        # as run() wires it: a state file set aside (by the engine or the store) is counted
        self.engine = ReclaimEngine(kernel, cpu_budget_cores=0.5, dry_run=dry_run, workers=0,
                                    clock=self.clock, state_dir=state,
                                    on_state_set_aside=self.count_set_aside)
        self.agent = ClusterAgent(
            engine=self.engine, root=kernel, resolver=make_resolver(kernel.path, driver),
            store=StateStore(state), node="node-1", default_cpu_budget=0.5, dry_run=dry_run,
            write_status=self.statuses.append,
            events=EventRecorder(lambda ns, body: self.events.append(body), "node-1",
                                 clock=self.clock),
            metrics=self.metrics,
            schedule=StatusSchedule(30, 300, rand=lambda: 0.0), clock=self.clock)

    def count_set_aside(self, name: str) -> None:
        self.metrics.state_files_set_aside.labels(file=name).inc()

    def advance(self, seconds: float) -> None:
        """Time passes: the engine runs its due checks, then the agent ticks."""
        self.clock.t += seconds
        self.engine.tick(self.clock.t)
        self.agent.tick()

    def pod_status(self, uid: str) -> dict:
        return next(p for p in self.agent.status()["pods"] if p["uid"] == uid)


@pytest.fixture(params=list(Driver))
def driver(request: pytest.FixtureRequest) -> Driver:
    return request.param


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.mark.parametrize("kubelet_root", [DEFAULT_ROOT, KIND_ROOT], ids=["root", "kind"])
def test_plan_sets_memory_high_in_pod_dirs_only(fake_kernel: FakeKernel, cgroup_tree: FakeTree,
                                                 driver: Driver, state: Path,
                                                 kubelet_root: tuple[str, ...]) -> None:
    make_kubepods(cgroup_tree, driver, kubelet_root)
    for uid, qos in ((A, "Burstable"), (B, "Guaranteed"), (C, "BestEffort")):
        make_pod(cgroup_tree, driver, uid, qos, current=100 * MiB, kubelet_root=kubelet_root)
    h = Harness(fake_kernel, state)   # driver and kubelet cgroup root auto-detected
    h.agent.start()
    h.agent.set_plan(plan(pod(A), pod(B, "Guaranteed", 512 * MiB), pod(C, "BestEffort")))
    assert cgroup_tree.high(pod_rel(driver, A, "Burstable", kubelet_root)) == str(256 * MiB)
    assert cgroup_tree.high(pod_rel(driver, B, "Guaranteed", kubelet_root)) == str(512 * MiB)
    assert cgroup_tree.high(pod_rel(driver, C, "BestEffort", kubelet_root)) == str(256 * MiB)
    for parent in parents(driver, kubelet_root):
        assert cgroup_tree.high(parent) == "max"
    assert (cgroup_tree.root / "memory.high").exists() is False
    status = h.agent.status()
    assert status["cgroupDriver"] == driver.value
    assert (status["plannedPods"], status["appliedPods"]) == (3, 3)
    assert {p["reason"] for p in status["pods"]} == {"Applied"}
    assert saved_originals(state) == {A: None, B: None, C: None}


def test_missing_cgroup_is_reported_then_applied_when_it_appears(
        fake_kernel: FakeKernel, cgroup_tree: FakeTree, state: Path) -> None:
    make_kubepods(cgroup_tree, Driver.SYSTEMD)
    h = Harness(fake_kernel, state)
    h.agent.start()
    h.agent.set_plan(plan(pod(A)))
    assert h.pod_status(A)["reason"] == "CgroupNotFound"
    assert h.pod_status(A)["applied"] is False
    make_pod(cgroup_tree, Driver.SYSTEMD, A, "Burstable")   # the pod starts
    h.advance(5)
    assert h.pod_status(A)["reason"] == "Applied"
    assert cgroup_tree.high(pod_rel(Driver.SYSTEMD, A, "Burstable")) == str(256 * MiB)


def test_pod_that_vanishes_is_reported_not_fatal(fake_kernel: FakeKernel, cgroup_tree: FakeTree,
                                                  state: Path) -> None:
    make_kubepods(cgroup_tree, Driver.CGROUPFS)
    make_pod(cgroup_tree, Driver.CGROUPFS, A, "Burstable")
    make_pod(cgroup_tree, Driver.CGROUPFS, B, "Burstable")
    h = Harness(fake_kernel, state)
    h.agent.set_plan(plan(pod(A), pod(B)))
    cgroup_tree.remove(pod_rel(Driver.CGROUPFS, A, "Burstable"))
    h.advance(5)
    assert h.pod_status(A)["reason"] == "CgroupNotFound"
    assert h.pod_status(B)["reason"] == "Applied"


def test_invalid_entries_spoil_only_themselves(fake_kernel: FakeKernel, cgroup_tree: FakeTree,
                                               state: Path) -> None:
    make_kubepods(cgroup_tree, Driver.CGROUPFS)
    make_pod(cgroup_tree, Driver.CGROUPFS, A, "Burstable")
    bad_uid = pod("../../../etc")
    bad_spec = pod(B, reclaim={"mode": "Watermark", "headroomPercent": 50,
                               "targetPercent": 10})
    h = Harness(fake_kernel, state)
    h.agent.set_plan(plan(pod(A), bad_uid, bad_spec))
    reasons = {p["uid"]: p["reason"] for p in h.agent.status()["pods"]}
    assert reasons == {A: "Applied", "../../../etc": "InvalidUid", B: "InvalidSpec"}


def test_pod_leaving_the_plan_gets_its_original_back(fake_kernel: FakeKernel,
                                                    cgroup_tree: FakeTree, state: Path) -> None:
    make_kubepods(cgroup_tree, Driver.SYSTEMD)
    make_pod(cgroup_tree, Driver.SYSTEMD, A, "Burstable", high=1 << 30)
    make_pod(cgroup_tree, Driver.SYSTEMD, B, "Burstable")
    h = Harness(fake_kernel, state)
    h.agent.set_plan(plan(pod(A), pod(B)))
    assert cgroup_tree.high(pod_rel(Driver.SYSTEMD, A, "Burstable")) == str(256 * MiB)
    h.agent.set_plan(plan(pod(B), generation=2))
    assert cgroup_tree.high(pod_rel(Driver.SYSTEMD, A, "Burstable")) == str(1 << 30)
    assert saved_originals(state) == {B: None}
    h.agent.set_plan(None)   # plan deleted: everything back
    assert cgroup_tree.high(pod_rel(Driver.SYSTEMD, B, "Burstable")) == "max"
    assert saved_originals(state) == {}


def test_restart_without_api_enforces_saved_plan_and_reconciles_later(
        fake_kernel: FakeKernel, cgroup_tree: FakeTree, state: Path) -> None:
    make_kubepods(cgroup_tree, Driver.CGROUPFS)
    make_pod(cgroup_tree, Driver.CGROUPFS, A, "Burstable", high=2 << 30)
    make_pod(cgroup_tree, Driver.CGROUPFS, B, "Burstable")
    first = Harness(fake_kernel, state)
    first.agent.start()
    first.agent.set_plan(plan(pod(A), pod(B)))
    # the agent crashes (no shutdown); meanwhile the kubelet resets B's memory.high
    cgroup_tree.write(pod_rel(Driver.CGROUPFS, B, "Burstable"), "memory.high", "max\n")
    second = Harness(fake_kernel, state)
    second.agent.start()   # the API server is unreachable: only the state dir
    assert cgroup_tree.high(pod_rel(Driver.CGROUPFS, B, "Burstable")) == str(256 * MiB)
    assert second.pod_status(A)["reason"] == "Applied"
    # the API answers: A left the plan while the agent was down, C is new
    make_pod(cgroup_tree, Driver.CGROUPFS, C, "Burstable")
    second.agent.set_plan(plan(pod(B), pod(C), generation=2))
    # A gets the value found by the *first* run, not the agent's own 256Mi
    assert cgroup_tree.high(pod_rel(Driver.CGROUPFS, A, "Burstable")) == str(2 << 30)
    assert cgroup_tree.high(pod_rel(Driver.CGROUPFS, C, "Burstable")) == str(256 * MiB)
    assert saved_originals(state) == {B: None, C: None}


def test_clean_shutdown_restores_everything(fake_kernel: FakeKernel, cgroup_tree: FakeTree,
                                            state: Path) -> None:
    make_kubepods(cgroup_tree, Driver.SYSTEMD)
    make_pod(cgroup_tree, Driver.SYSTEMD, A, "Guaranteed", high=3 << 30)
    h = Harness(fake_kernel, state)
    h.agent.set_plan(plan(pod(A, "Guaranteed")))
    h.agent.shutdown(restore=True)
    assert cgroup_tree.high(pod_rel(Driver.SYSTEMD, A, "Guaranteed")) == str(3 << 30)
    assert saved_originals(state) == {}
    assert StateStore(state).load_plan() is not None   # the next start re-applies it


def test_dry_run_writes_nothing_and_reports(fake_kernel: FakeKernel, cgroup_tree: FakeTree,
                                            state: Path) -> None:
    make_kubepods(cgroup_tree, Driver.SYSTEMD)
    make_pod(cgroup_tree, Driver.SYSTEMD, A, "Burstable", current=300 * MiB)
    before = cgroup_tree.contents()
    h = Harness(fake_kernel, state, dry_run=True)
    h.agent.start()
    h.agent.set_plan(plan(pod(A)))
    for _ in range(3):
        h.advance(5)
    h.agent.shutdown()
    assert cgroup_tree.contents() == before
    assert fake_kernel.reclaim_calls == []
    assert h.statuses[0]["pods"][0]["reason"] == "DryRun"


def test_pod_above_its_new_memory_high_is_lowering_then_applied(
        fake_kernel: FakeKernel, cgroup_tree: FakeTree, state: Path) -> None:
    make_kubepods(cgroup_tree, Driver.SYSTEMD, KIND_ROOT)
    make_pod(cgroup_tree, Driver.SYSTEMD, A, "Burstable", current=300 * MiB,
             kubelet_root=KIND_ROOT)
    rel = pod_rel(Driver.SYSTEMD, A, "Burstable", KIND_ROOT)
    h = Harness(fake_kernel, state)
    h.agent.start()
    h.agent.set_plan(plan(pod(A)))
    # not written while usage is above the watermark: the engine reclaims first
    assert cgroup_tree.high(rel) == "max"
    st = h.pod_status(A)
    assert (st["applied"], st["reason"], st["memoryHigh"]) == (False, "Lowering", 256 * MiB)
    assert saved_originals(state) == {A: None}   # saved before any write
    for _ in range(100):
        h.advance(0.02)
    assert cgroup_tree.high(rel) == str(256 * MiB)
    assert cgroup_tree.current(rel) <= 256 * MiB * 95 // 100
    assert (h.pod_status(A)["applied"], h.pod_status(A)["reason"]) == (True, "Applied")


def test_per_pod_dry_run(fake_kernel: FakeKernel, cgroup_tree: FakeTree, state: Path) -> None:
    make_kubepods(cgroup_tree, Driver.CGROUPFS)
    make_pod(cgroup_tree, Driver.CGROUPFS, A, "Burstable")
    make_pod(cgroup_tree, Driver.CGROUPFS, B, "Burstable")
    h = Harness(fake_kernel, state)
    h.agent.set_plan(plan(pod(A, dryRun=True), pod(B)))
    assert cgroup_tree.high(pod_rel(Driver.CGROUPFS, A, "Burstable")) == "max"
    assert cgroup_tree.high(pod_rel(Driver.CGROUPFS, B, "Burstable")) == str(256 * MiB)
    assert h.pod_status(A)["reason"] == "DryRun"


def test_drift_is_put_back_and_reported(fake_kernel: FakeKernel, cgroup_tree: FakeTree,
                                        state: Path) -> None:
    make_kubepods(cgroup_tree, Driver.SYSTEMD)
    make_pod(cgroup_tree, Driver.SYSTEMD, A, "Burstable")
    h = Harness(fake_kernel, state)
    h.agent.set_plan(plan(pod(A)))
    h.advance(1)
    rel = pod_rel(Driver.SYSTEMD, A, "Burstable")
    cgroup_tree.write(rel, "memory.high", "max\n")   # the kubelet, or a person
    h.advance(10)
    assert cgroup_tree.high(rel) == str(256 * MiB)
    assert h.pod_status(A)["driftCorrections"] == 1
    assert [e["reason"] for e in h.events] == ["MemoryHighDrift"]
    assert "headroom_memory_high_drift_corrections_total" in h.metrics.text()


def test_stall_despite_agent_becomes_an_event_and_status(fake_kernel: FakeKernel,
                                                        cgroup_tree: FakeTree,
                                                        state: Path) -> None:
    make_kubepods(cgroup_tree, Driver.CGROUPFS)
    make_pod(cgroup_tree, Driver.CGROUPFS, A, "Burstable", current=100 * MiB)
    h = Harness(fake_kernel, state)
    h.agent.set_plan(plan(pod(A)))
    h.advance(1)
    rel = pod_rel(Driver.CGROUPFS, A, "Burstable")
    fake_kernel.floor[rel] = 300 * MiB          # nothing reclaimable: the pod hits the limit
    fake_kernel.grow(rel, 200 * MiB)
    h.advance(10)
    assert h.pod_status(A)["highEvents"] == 1
    # stuck at memory.high with nothing reclaimable: the livelock guard relieved it
    assert [e["reason"] for e in h.events] == ["MemoryHighReached", "Unreclaimable"]
    assert h.events[0]["involvedObject"]["uid"] == A
    st = h.pod_status(A)
    assert (st["applied"], st["reason"]) == (False, "Unreclaimable")
    assert st["relievedMemoryHigh"] > st["memoryHigh"] == 256 * MiB
    assert "memory.high raised to" in h.events[1]["message"]
    assert 'headroom_livelock_relief_raises_total{namespace="shop"' in h.metrics.text()


def test_livelock_guard_off_in_the_plan_leaves_the_pod_at_memory_high(
        fake_kernel: FakeKernel, cgroup_tree: FakeTree, state: Path) -> None:
    make_kubepods(cgroup_tree, Driver.CGROUPFS)
    make_pod(cgroup_tree, Driver.CGROUPFS, A, "Burstable", current=100 * MiB)
    h = Harness(fake_kernel, state)
    entry = pod(A)
    entry["reclaim"]["livelockGuard"] = False
    h.agent.set_plan(plan(entry))
    h.advance(1)
    rel = pod_rel(Driver.CGROUPFS, A, "Burstable")
    fake_kernel.floor[rel] = 300 * MiB
    fake_kernel.grow(rel, 200 * MiB)
    h.advance(10)
    assert [e["reason"] for e in h.events] == ["MemoryHighReached"]
    assert h.pod_status(A)["reason"] == "Applied"
    assert cgroup_tree.high(rel) == str(256 * MiB)


def test_status_writes_are_bounded(fake_kernel: FakeKernel, cgroup_tree: FakeTree,
                                   state: Path) -> None:
    make_kubepods(cgroup_tree, Driver.CGROUPFS)
    make_pod(cgroup_tree, Driver.CGROUPFS, A, "Burstable")
    h = Harness(fake_kernel, state)
    h.agent.set_plan(plan(pod(A)))
    for _ in range(120):               # 10 simulated minutes, a tick every 5 s
        fake_kernel.grow(pod_rel(Driver.CGROUPFS, A, "Burstable"), MiB)
        h.advance(5)
    # first write, then heartbeats every 300 s: 3 writes, far below one per tick
    assert 2 <= len(h.statuses) <= 4
    s = h.statuses[-1]
    assert s["observedGeneration"] == 1 and s["heartbeat"].endswith("Z")
    assert s["capabilities"]["memoryReclaim"] is True


def test_no_status_without_a_plan_object(fake_kernel: FakeKernel, state: Path) -> None:
    h = Harness(fake_kernel, state)
    h.agent.set_plan(None)
    h.advance(5)
    assert h.statuses == []


def test_plan_cpu_budget_goes_to_the_engine(fake_kernel: FakeKernel, state: Path) -> None:
    h = Harness(fake_kernel, state)
    budgets: list[float | None] = []
    h.engine.set_cpu_budget = budgets.append   # type: ignore[method-assign]
    h.agent.set_plan(plan(budget="250m"))
    h.agent.set_plan(plan(generation=2))
    assert budgets == [0.25, 0.5]


def test_parse_plan_maps_reclaim_settings() -> None:
    p = parse_plan(plan(pod(A, reclaim={"mode": "Pressure", "headroomPercent": 2,
                                        "targetPercent": 4, "stepBytes": 4096,
                                        "maxBytesPerSecond": 8192, "swappiness": 10,
                                        "pressureTargetBasisPoints": 50})))
    s = p.pods[0].settings
    assert (s.mode, s.headroom_percent, s.target_percent, s.step_bytes,
            s.max_bytes_per_second, s.swappiness, s.pressure_target_percent) == (
        "Pressure", 2.0, 4.0, 4096, 8192, 10, 0.5)


def test_engine_failures_are_retried_at_a_bounded_rate(fake_kernel: FakeKernel,
                                                       cgroup_tree: FakeTree,
                                                       state: Path) -> None:
    make_kubepods(cgroup_tree, Driver.CGROUPFS)
    path = make_pod(cgroup_tree, Driver.CGROUPFS, A, "Burstable")
    (path / "memory.high").unlink()
    (path / "memory.high").mkdir()          # unusable: the engine reports Error
    h = Harness(fake_kernel, state)
    calls = []
    real = h.engine.set_targets
    h.engine.set_targets = lambda t: (calls.append(len(t)), real(t))  # type: ignore[method-assign]
    h.agent.set_plan(plan(pod(A)))
    assert h.pod_status(A)["reason"] == "Error"
    for _ in range(5):
        h.advance(2)                         # ticks within the retry interval
    assert len(calls) == 1                   # no retry yet
    (path / "memory.high").rmdir()
    (path / "memory.high").write_text("max\n")
    h.advance(30)
    assert len(calls) == 2
    assert h.pod_status(A)["reason"] == "Applied"


# -- the agent defends itself (issue 13 item 3) ----------------------------------------

ISSUE_VALUES = [
    ("memoryHigh", 1.9), ("memoryHigh", True), ("memoryHigh", 2**64 + 8192),
    ("memoryHigh", -1), ("memoryHigh", 1e308), ("memoryHigh", float("inf")),
    ("memoryHigh", "268435456"), ("memoryHigh", 256 * MiB + 1), ("memoryHigh", 0),
    ("memoryHigh", None), ("reclaim.stepBytes", float("inf")),
    ("reclaim.stepBytes", 16 * MiB + 0.5), ("reclaim.maxBytesPerSecond", 2**63),
    ("reclaim.pressureTargetBasisPoints", 1e6), ("reclaim.swappiness", 201),
    ("reclaim.headroomPercent", True), ("reclaim.mode", 1), ("qosClass", "Gold"),
    ("dryRun", "false"), ("uid", 7), ("reclaim", "x"),
]


def _with(entry: dict, path: str, value: Any) -> dict:
    out = {**entry, "reclaim": dict(entry["reclaim"])}
    parent, _, key = path.rpartition(".")
    (out[parent] if parent else out)[key] = value
    return out


@pytest.mark.parametrize(("field", "value"), ISSUE_VALUES,
                         ids=[f"{f}={v!r}"[:40] for f, v in ISSUE_VALUES])
def test_bad_value_refuses_its_entry_only_and_is_never_written(
        fake_kernel: FakeKernel, cgroup_tree: FakeTree, state: Path, field: str,
        value: Any) -> None:
    make_kubepods(cgroup_tree, Driver.CGROUPFS)
    make_pod(cgroup_tree, Driver.CGROUPFS, A, "Burstable")
    make_pod(cgroup_tree, Driver.CGROUPFS, B, "Burstable", high=300 * MiB)
    h = Harness(fake_kernel, state)
    h.agent.set_plan(plan(pod(A), _with(pod(B), field, value)))
    assert cgroup_tree.high(pod_rel(Driver.CGROUPFS, A, "Burstable")) == str(256 * MiB)
    assert cgroup_tree.high(pod_rel(Driver.CGROUPFS, B, "Burstable")) == str(300 * MiB)
    assert fake_kernel.reclaim_calls == [] or all(
        "pod" + B not in str(c) for c in fake_kernel.reclaim_calls)
    shown = B if field != "uid" else "<entry 1>"
    st = next(p for p in h.agent.status()["pods"] if p["uid"] == shown)
    assert (st["applied"], st["reason"]) == (False, "InvalidSpec")
    assert field.split(".")[-1] in st["lastError"]


@pytest.mark.parametrize("budget", [-1, 0, "0m", "-1m", 1e308, float("inf"), True, "2",
                                    0.25, "0.5", "1024001m", "500M", 10**6])
def test_bad_cpu_budget_falls_back_to_the_default(fake_kernel: FakeKernel, state: Path,
                                                  budget: Any) -> None:
    h = Harness(fake_kernel, state)
    budgets: list[float | None] = []
    h.engine.set_cpu_budget = budgets.append   # type: ignore[method-assign]
    h.agent.set_plan(plan(budget=budget))
    assert budgets == [0.5]


@pytest.mark.parametrize("obj", [
    {"metadata": [], "spec": {"pods": [1]}}, {"metadata": {"name": "n"}, "spec": []},
    {"metadata": {"name": "n"}, "spec": {"pods": {"uid": A}}},
    {"metadata": {"name": "n", "generation": "x"}, "spec": {"pods": ["x", None, [], 1.5]}},
], ids=["meta-list", "spec-list", "pods-map", "junk-entries"])
def test_malformed_plan_objects_never_raise(fake_kernel: FakeKernel, state: Path,
                                            obj: dict) -> None:
    h = Harness(fake_kernel, state)
    h.agent.set_plan(obj)
    h.advance(5)
    assert h.agent.plan.pods == ()


def test_unknown_fields_are_ignored_not_fatal(fake_kernel: FakeKernel, cgroup_tree: FakeTree,
                                              state: Path) -> None:
    """A newer operator's field (agents upgrade after it) does not spoil the entry."""
    make_kubepods(cgroup_tree, Driver.CGROUPFS)
    make_pod(cgroup_tree, Driver.CGROUPFS, A, "Burstable")
    entry = pod(A, futureField=1)
    entry["reclaim"]["futureKnob"] = 3
    h = Harness(fake_kernel, state)
    h.agent.set_plan(plan(entry))
    assert h.pod_status(A)["reason"] == "Applied"


@pytest.mark.parametrize("bad", ["x", {"uid": A[:-1] + "9", "stepBytes": "inf"},
                                 "INFINITY"], ids=["string", "junk", "inf-step"])
def test_saved_plan_with_a_malformed_entry_starts_and_enforces_the_rest(
        fake_kernel: FakeKernel, cgroup_tree: FakeTree, state: Path, bad: Any) -> None:
    make_kubepods(cgroup_tree, Driver.CGROUPFS)
    make_pod(cgroup_tree, Driver.CGROUPFS, A, "Burstable")
    if bad == "INFINITY":   # what json.dumps writes for float("inf"): valid to json.loads
        bad = pod(B, reclaim={"mode": "Watermark", "stepBytes": float("inf")})
    state.mkdir()
    (state / "plan.json").write_text(json.dumps(
        {"version": 1, "plan": {"metadata": {"name": "node-1"},
                                "spec": {"nodeName": "node-1", "pods": [bad, pod(A)]}}}))
    h = Harness(fake_kernel, state)
    h.agent.start()                                  # used to raise: a crash loop
    assert cgroup_tree.high(pod_rel(Driver.CGROUPFS, A, "Burstable")) == str(256 * MiB)
    assert [p.uid for p in h.agent.plan.pods] == [A]
    assert set(h.agent.plan.invalid) and all(
        p.reason == "InvalidSpec" for p in h.agent.plan.invalid.values())


def test_corrupt_saved_state_is_set_aside_counted_and_the_api_plan_wins(
        fake_kernel: FakeKernel, cgroup_tree: FakeTree, state: Path) -> None:
    make_kubepods(cgroup_tree, Driver.CGROUPFS)
    make_pod(cgroup_tree, Driver.CGROUPFS, A, "Burstable")
    state.mkdir()
    (state / "plan.json").write_text("{not json")
    (state / "originals.json").write_text(json.dumps({"version": 1, "originals": {A: 1.5}}))
    h = Harness(fake_kernel, state)
    h.agent.store.on_set_aside = (
        lambda f: h.metrics.state_files_set_aside.labels(file=f).inc())
    h.agent.start()
    assert h.agent.plan.pods == ()
    text = h.metrics.text()
    assert 'headroom_state_files_set_aside_total{file="plan.json"} 1.0' in text
    assert 'headroom_state_files_set_aside_total{file="originals.json"} 1.0' in text
    assert (state / "plan.json.corrupt").exists() and (state / "originals.json.corrupt").exists()
    h.agent.set_plan(plan(pod(A)))                   # the API server answers
    assert cgroup_tree.high(pod_rel(Driver.CGROUPFS, A, "Burstable")) == str(256 * MiB)
    assert saved_originals(state) == {A: None}


def test_saved_plan_that_fails_to_apply_is_set_aside_not_raised(
        fake_kernel: FakeKernel, cgroup_tree: FakeTree, state: Path) -> None:
    StateStore(state).save_plan(plan(pod(A)))
    h = Harness(fake_kernel, state)

    def boom(targets: Any) -> None:
        raise RuntimeError("a bug")

    h.engine.set_targets = boom   # type: ignore[method-assign]
    make_kubepods(cgroup_tree, Driver.CGROUPFS)
    make_pod(cgroup_tree, Driver.CGROUPFS, A, "Burstable")
    h.agent.start()
    assert (state / "plan.json.corrupt").exists()
    assert h.agent.plan.pods == ()


def test_sigterm_during_start_up_still_restores(fake_kernel: FakeKernel, cgroup_tree: FakeTree,
                                                state: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The crash test's finding: a SIGTERM while `headroom agent` starts (before its main
    loop; seconds of imports) met the default action, and the values of the run before
    stayed. Now the handler is the first thing installed and the stop restores them."""
    import os
    import signal

    from headroom.cli import main
    from headroom.nodeagent import agent as agent_mod

    make_kubepods(cgroup_tree, Driver.CGROUPFS)
    make_pod(cgroup_tree, Driver.CGROUPFS, A, "Burstable", high=300 * MiB)
    first = Harness(fake_kernel, state)
    first.agent.set_plan(plan(pod(A)))               # then SIGKILLed: no shutdown
    assert cgroup_tree.high(pod_rel(Driver.CGROUPFS, A, "Burstable")) == str(256 * MiB)
    real = agent_mod.make_resolver

    def resolver_then_sigterm(*args: Any) -> Any:    # the signal lands mid start-up
        # (the default action would end this test process: check before sending)
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, previous)
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args)

    monkeypatch.setattr(agent_mod, "make_resolver", resolver_then_sigterm)
    monkeypatch.setenv("HEADROOM_ALLOW_FAKE_CGROUP_ROOT", "1")
    kubeconfig = tmp_path / "kubeconfig"             # nothing listens there
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters: [{name: c, cluster: "
        "{server: 'http://127.0.0.1:9'}}]\nusers: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n")
    previous = signal.getsignal(signal.SIGTERM)
    try:
        rc = main(["agent", "--node-name", "node-1", "--cgroup-root", str(cgroup_tree.root),
                   "--state-dir", str(state), "--metrics-port", "0", "--cgroup-driver",
                   "cgroupfs", "--kubelet-cgroup-root", "/", "--kubeconfig", str(kubeconfig)])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert rc == 0
    assert cgroup_tree.high(pod_rel(Driver.CGROUPFS, A, "Burstable")) == str(300 * MiB)
    assert saved_originals(state) == {}
