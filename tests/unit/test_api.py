"""headroom.api: quantities, label selectors, pod memory / QoS / activity, policy parsing."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from headroom.api.pod import PodMemory, is_active, pod_memory, qos_class
from headroom.api.policy import (
    DEFAULT_STEP_BYTES,
    MIN_MEMORY_HIGH,
    MemoryHigh,
    PolicyError,
    PolicyRef,
    parse_policy,
)
from headroom.api.quantity import QuantityError, page_align_down, parse_bytes, parse_cpu
from headroom.api.selector import LabelIndex, SelectorError, compile_selector

GI = 1 << 30
MI = 1 << 20

# ---- quantities ----------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), [
    ("3Gi", 3 * GI), ("512Mi", 512 * MI), ("1G", 10**9), ("1e3", 1000), (4096, 4096),
    ("0.5Ki", 512), ("1.5", 2),
])
def test_parse_bytes(raw: Any, expected: int) -> None:
    assert parse_bytes(raw) == expected


@pytest.mark.parametrize("raw", ["3GB", "", "Gi", None, True, "1Mi ", [1]])
def test_parse_bytes_rejects(raw: Any) -> None:
    with pytest.raises(QuantityError):
        parse_bytes(raw)


def test_parse_cpu_and_page_align() -> None:
    assert parse_cpu("500m") == 0.5
    assert parse_cpu(2) == 2.0
    assert page_align_down(4096 * 3 + 4095) == 4096 * 3
    assert page_align_down(4095) == 0

# ---- selectors ----------------------------------------------------------------------------


LABELS = [{"app": "web", "tier": "front"}, {"app": "db"}, {"tier": "front"}, {}]


@pytest.mark.parametrize(("selector", "expected"), [
    ({}, {0, 1, 2, 3}),
    ({"matchLabels": {"app": "web"}}, {0}),
    ({"matchLabels": {"app": "web", "tier": "back"}}, set()),
    ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "db"]}]}, {0, 1}),
    ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}, {1, 2, 3}),
    ({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, {0, 2}),
    ({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}, {2, 3}),
    ({"matchLabels": {"tier": "front"},
      "matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}, {2}),
])
def test_selector_select_and_match_agree(selector: dict[str, Any], expected: set[int]) -> None:
    sel = compile_selector(selector)
    assert sel.select(LabelIndex(LABELS)) == expected
    assert {i for i, lab in enumerate(LABELS) if sel.matches(lab)} == expected


@pytest.mark.parametrize("selector", [
    None, [], {"matchLabels": ["a"]}, {"matchLabels": {"a": 1}},
    {"matchExpressions": [{"key": "a", "operator": "Has"}]},
    {"matchExpressions": [{"key": "a", "operator": "In"}]},
    {"matchExpressions": [{"key": "a", "operator": "NotIn", "values": []}]},
    {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
    {"matchExpressions": [{"operator": "Exists"}]},
    {"matchExpressions": [{"key": "a", "operator": "In", "values": [1]}]},
])
def test_selector_rejects(selector: Any) -> None:
    with pytest.raises(SelectorError):
        compile_selector(selector)

# ---- pods ---------------------------------------------------------------------------------


def ctr(req: str | None = None, lim: str | None = None, cpu: str | None = None,
        restart: str | None = None) -> dict[str, Any]:
    res: dict[str, Any] = {}
    if req:
        res.setdefault("requests", {})["memory"] = req
    if lim:
        res.setdefault("limits", {})["memory"] = lim
    if cpu:
        res.setdefault("requests", {})["cpu"] = cpu
        res.setdefault("limits", {})["cpu"] = cpu
    c: dict[str, Any] = {"name": "c", "resources": res}
    if restart:
        c["restartPolicy"] = restart
    return c


def pod(containers: list[dict[str, Any]], init: list[dict[str, Any]] | None = None,
        **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p"},
            "spec": {"containers": containers, "initContainers": init or [], **spec}}


def test_memory_sums_app_containers() -> None:
    assert pod_memory(pod([ctr("1Gi", "2Gi"), ctr("1Gi", "3Gi")])) == PodMemory(2 * GI, 5 * GI)


def test_request_defaults_to_limit() -> None:
    assert pod_memory(pod([ctr(lim="2Gi")])) == PodMemory(2 * GI, 2 * GI)


def test_no_limit_when_any_container_lacks_one() -> None:
    assert pod_memory(pod([ctr("1Gi", "2Gi"), ctr("1Gi")])).limit is None
    assert pod_memory(pod([ctr("1Gi", "2Gi")], init=[ctr("1Gi")])).limit is None
    assert pod_memory(pod([ctr()])) == PodMemory(0, None)


def test_largest_init_container_wins_when_bigger_than_app_sum() -> None:
    p = pod([ctr("1Gi", "1Gi")], init=[ctr("3Gi", "4Gi"), ctr("2Gi", "2Gi")])
    assert pod_memory(p) == PodMemory(3 * GI, 4 * GI)


def test_sidecars_add_to_app_and_to_later_init_containers() -> None:
    # sidecar 1Gi, then a regular init 3Gi (runs next to the sidecar: 4Gi), app 2Gi (+1Gi)
    p = pod([ctr("2Gi", "2Gi")], init=[ctr("1Gi", "1Gi", restart="Always"), ctr("3Gi", "3Gi")])
    assert pod_memory(p) == PodMemory(4 * GI, 4 * GI)
    # a regular init container *before* the sidecar does not run next to it
    p = pod([ctr("2Gi", "2Gi")], init=[ctr("3Gi", "3Gi"), ctr("1Gi", "1Gi", restart="Always")])
    assert pod_memory(p) == PodMemory(3 * GI, 3 * GI)
    # small init containers: app + sidecars
    p = pod([ctr("2Gi", "2Gi")], init=[ctr("1Gi", "1Gi", restart="Always"), ctr("1Mi", "1Mi")])
    assert pod_memory(p) == PodMemory(3 * GI, 3 * GI)


def test_pod_level_resources_and_overhead() -> None:
    p = pod([ctr("1Gi", "2Gi")], resources={"limits": {"memory": "8Gi"},
                                             "requests": {"memory": "4Gi"}})
    assert pod_memory(p) == PodMemory(4 * GI, 8 * GI)
    # pod-level limit, containers without: pod has a limit
    p = pod([ctr(), ctr()], resources={"limits": {"memory": "8Gi"}})
    assert pod_memory(p) == PodMemory(8 * GI, 8 * GI)
    p = pod([ctr("1Gi", "2Gi")], overhead={"memory": "100Mi"})
    assert pod_memory(p) == PodMemory(GI + 100 * MI, 2 * GI + 100 * MI)


@pytest.mark.parametrize(("p", "expected"), [
    (pod([ctr()]), "BestEffort"),
    (pod([ctr("1Gi", "1Gi", cpu="1")]), "Guaranteed"),
    (pod([ctr(lim="1Gi", cpu="1")]), "Guaranteed"),
    (pod([ctr("1Gi", "2Gi", cpu="1")]), "Burstable"),
    (pod([ctr("1Gi", "1Gi")]), "Burstable"),       # no CPU limit
    (pod([ctr("1Gi", "1Gi", cpu="1"), ctr()]), "Burstable"),
    (pod([ctr("1Gi", "1Gi", cpu="1")], init=[ctr("1Gi")]), "Burstable"),
    (pod([ctr()], resources={"limits": {"memory": "1Gi", "cpu": "1"}}), "Guaranteed"),
])
def test_qos_class_computed(p: dict[str, Any], expected: str) -> None:
    assert qos_class(p) == expected


def test_qos_class_from_status_wins() -> None:
    p = pod([ctr()])
    p["status"] = {"qosClass": "Guaranteed"}
    assert qos_class(p) == "Guaranteed"


@pytest.mark.parametrize(("patch", "active"), [
    ({}, True),
    ({"status": {"phase": "Pending"}}, True),
    ({"status": {"phase": "Succeeded"}}, False),
    ({"status": {"phase": "Failed"}}, False),
    ({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}, False),
    ({"spec": {"nodeName": ""}}, False),
])
def test_is_active(patch: dict[str, Any], active: bool) -> None:
    p: dict[str, Any] = {"metadata": {}, "spec": {"nodeName": "n"}, "status": {"phase": "Running"}}
    for k, v in patch.items():
        p[k] = {**p[k], **v}
    assert is_active(p) is active

# ---- policies -----------------------------------------------------------------------------


def raw_policy(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"selector": {}, "memoryHigh": {"limitPercent": 90}}
    base.update(spec)
    return {"metadata": {"name": "p", "namespace": "ns", "generation": 3}, "spec": base}


def test_parse_policy_defaults() -> None:
    p = parse_policy(raw_policy(), "MemoryReclaimPolicy")
    assert p.ref == PolicyRef("MemoryReclaimPolicy", "ns", "p")
    assert p.generation == 3 and p.priority == 0 and not p.dry_run
    assert p.memory_high == MemoryHigh(limit_percent=90)
    assert p.reclaim.to_plan() == {
        "mode": "Watermark", "headroomPercent": 5, "targetPercent": 10,
        "stepBytes": DEFAULT_STEP_BYTES, "maxBytesPerSecond": 512 * MI,
        "pressureTargetBasisPoints": 10, "livelockGuard": True}
    assert p.reclaim.node_cpu_budget is None


def test_parse_cluster_policy_ignores_namespace_and_needs_namespace_selector() -> None:
    obj = raw_policy(namespaceSelector={"matchLabels": {"a": "b"}})
    p = parse_policy(obj, "ClusterMemoryReclaimPolicy")
    assert p.ref == PolicyRef("ClusterMemoryReclaimPolicy", "", "p") and p.is_cluster
    assert p.ref.to_dict() == {"kind": "ClusterMemoryReclaimPolicy", "name": "p"}
    with pytest.raises(PolicyError) as e:
        parse_policy(raw_policy(), "ClusterMemoryReclaimPolicy")
    assert e.value.reason == "InvalidSelector" and "namespaceSelector" in e.value.message


@pytest.mark.parametrize(("spec", "reason", "text"), [
    ({"selector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}},
     "InvalidSelector", "operator"),
    ({"memoryHigh": {"bytes": "3GB"}}, "InvalidQuantity", "memoryHigh.bytes"),
    ({"memoryHigh": {"bytes": "512Ki"}}, "InvalidQuantity", "between 1048576"),
    ({"memoryHigh": {"bytes": "1Gi", "throttlingPercent": 50}}, "InvalidSpec", "exactly one"),
    ({"reclaim": {"mode": False}}, "InvalidSpec", '"Off" in quotes'),
    ({"reclaim": {"stepBytes": "1Ki"}}, "InvalidQuantity", "stepBytes"),
    ({"reclaim": {"nodeCpuBudget": "0"}}, "InvalidQuantity", "nodeCpuBudget"),
    ({"reclaim": {"swappiness": 60.5}}, "InvalidSpec", "integer"),
    ({"memoryHigh": {"limitPercent": 90.5}}, "InvalidSpec", "must be an integer"),
    ({"memoryHigh": {"throttlingPercent": 0.9}}, "InvalidSpec", "must be an integer"),
    ({"memoryHigh": {"throttlingFactor": 0.9}}, "InvalidSpec", "exactly one"),
    ({"reclaim": {"headroomPercent": 2.5}}, "InvalidSpec", "must be an integer"),
    ({"reclaim": {"pressureTargetBasisPoints": 0}}, "InvalidSpec", "pressureTargetBasisPoints"),
    ({"reclaim": {"headroomPercent": 20, "targetPercent": 15}}, "InvalidSpec", "headroomPercent"),
    ({"priority": True}, "InvalidSpec", "priority"),
    ({"dryRun": "yes"}, "InvalidSpec", "dryRun"),
])
def test_parse_policy_errors(spec: dict[str, Any], reason: str, text: str) -> None:
    with pytest.raises(PolicyError) as e:
        parse_policy(raw_policy(**spec), "MemoryReclaimPolicy")
    assert e.value.reason == reason and text in e.value.message


def test_memory_high_forms() -> None:
    mem = PodMemory(request=GI, limit=2 * GI)
    assert MemoryHigh(bytes=3 * GI).for_pod(mem) == (2 * GI, "", "")        # capped at limit
    assert MemoryHigh(bytes=3 * GI).for_pod(PodMemory(0, None)) == (3 * GI, "", "")
    assert MemoryHigh(limit_percent=50).for_pod(mem) == (GI, "", "")
    # kubelet: request + p/100 * (limit - request), rounded down to a page
    high, _, _ = MemoryHigh(throttling_percent=90).for_pod(mem)
    assert high == page_align_down(GI + 9 * GI // 10) and high % 4096 == 0
    assert MemoryHigh(limit_percent=33).for_pod(mem)[0] % 4096 == 0
    for mh in (MemoryHigh(limit_percent=90), MemoryHigh(throttling_percent=50)):
        assert mh.for_pod(PodMemory(GI, None))[1] == "NoMemoryLimit"
    assert MemoryHigh(limit_percent=1).for_pod(PodMemory(0, 10 * MI))[1] == "BelowMinimum"
    assert MIN_MEMORY_HIGH == MI


def test_quantity_parser_is_the_clients_and_standalone_skips_the_client_import():
    # The parser is loaded from the client's own file (no kubernetes import at start-up
    # of a standalone agent); it must agree with kubernetes.utils.parse_quantity.
    script = (
        "import sys\n"
        "import headroom.standalone.run\n"
        "assert not [m for m in sys.modules if m.startswith('kubernetes')], 'client imported'\n"
        "from headroom.api.quantity import parse_quantity as ours\n"
        "from kubernetes.utils import parse_quantity as theirs\n"
        "for q in ['3Gi', '500m', '1e3', '0.5', 12, '1.5Ki', '2M']:\n"
        "    assert ours(q) == theirs(q), q\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
