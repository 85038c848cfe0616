"""Pressure mode's working-set estimate: decisions.settled_usage, the engine's
TargetStats.working_set_bytes, the plan status and the metric."""

from __future__ import annotations

import itertools
import random

import pytest
from headroom.engine import decisions as d
from headroom.engine.metrics import AgentMetrics, TargetSample
from headroom.engine.targets import TargetStats
from headroom.nodeagent.status import PodEntry, binary_quantity, build_status, significant_part
from test_engine import Sim

MiB = 1 << 20


@pytest.fixture
def sim(fake_kernel):
    s = Sim(fake_kernel)
    yield s
    s.engine.stop(restore=False)


@pytest.mark.parametrize("seed", range(50))
def test_settled_usage_is_the_minimum_of_the_window(seed):
    rnd = random.Random(seed)
    seconds = rnd.uniform(1, 30)
    steps = [(rnd.uniform(0, 5), rnd.randrange(1 << 30)) for _ in range(rnd.randrange(60))]
    window: tuple[tuple[float, int], ...] = ()
    seen: list[tuple[float, int]] = []
    now = 0.0
    for dt, usage in steps:
        now += dt
        seen.append((now, usage))
        window = d.settled_usage(window, now, usage, seconds)
        expected = min(u for t, u in seen if t > now - seconds or t == now)
        assert window[0][1] == expected
        assert all(a[1] < b[1] for a, b in itertools.pairwise(window))


def test_engine_reports_the_trough_once_a_window_has_passed(sim, fake_kernel):
    tree = fake_kernel.tree
    tree.add("p", current=100 * MiB)
    sim.engine.set_targets([sim.target("p", high=None, mode="Pressure",
                                       pressure_target_percent=1.0)])
    sim.run(30.0)
    assert sim.stats("p").working_set_bytes is None   # not one window of probing yet
    sim.run(40.0)
    low = sim.stats("p").working_set_bytes
    # the trough of the probing so far (the last probe's bytes are not sampled yet)
    assert low is not None and tree.current("p") <= low <= tree.current("p") * 1.02
    assert low < 80 * MiB
    # the working set grows (usage rises under pressure): the estimate follows a
    # window later, not at once
    tree.write("p", "memory.current", f"{150 * MiB}\n")
    for _ in range(35):
        tree.set_pressure("p", tree.some_us("p") + 200_000)
        sim.run(2.0)
    assert sim.stats("p").working_set_bytes == 150 * MiB


def test_watermark_mode_reports_no_estimate(sim, fake_kernel):
    fake_kernel.tree.add("a", current=100 * MiB)
    sim.engine.set_targets([sim.target("a")])
    sim.run(70.0, dt=0.5)
    assert sim.stats("a").working_set_bytes is None


def test_status_and_metric_carry_the_estimate():
    pods = [PodEntry("u1", "ns", "a"), PodEntry("u2", "ns", "b"), PodEntry("u3", "ns", "c")]
    snap = {"u1": TargetStats(applied=True, reason="Applied", working_set_bytes=100 * MiB),
            "u2": TargetStats(applied=True, reason="Applied", working_set_bytes=37 * MiB),
            "u3": TargetStats(applied=True, reason="Applied")}
    status = build_status(generation=1, pods=pods, snapshot=snap, problems={},
                          capabilities={}, driver=None, agent_version="t")
    by_uid = {p["uid"]: p for p in status["pods"]}
    assert by_uid["u1"]["workingSetBytes"] == 100 * MiB
    assert "workingSetBytes" not in by_uid["u3"]
    assert status["workingSet"] == "137Mi"
    # it moves all the time: never a reason to write the status by itself
    moved = dict(snap, u1=TargetStats(applied=True, reason="Applied",
                                      working_set_bytes=90 * MiB))
    again = build_status(generation=1, pods=pods, snapshot=moved, problems={},
                         capabilities={}, driver=None, agent_version="t")
    assert significant_part(again) == significant_part(status)
    m = AgentMetrics()
    m.watch(lambda: [TargetSample(k, {"namespace": "ns"}, s) for k, s in snap.items()])
    series = {ln.split("{")[1].split("}")[0]: float(ln.rsplit(" ", 1)[1])
              for ln in m.text().splitlines() if ln.startswith("headroom_working_set_bytes{")}
    assert series == {'namespace="ns",pod="",uid="u1"': 100 * MiB,
                      'namespace="ns",pod="",uid="u2"': 37 * MiB}


def test_binary_quantity():
    assert binary_quantity(137 * MiB) == "137Mi"
    assert binary_quantity(3 * (1 << 30) // 2) == "1.5Gi"
    assert binary_quantity(512) == "512"
