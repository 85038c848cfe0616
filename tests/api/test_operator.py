"""The real operator (kopf) driven with kubectl as a user would, against the emulator and,
unless HEADROOM_CONTROLPLANE=0, the real control plane (tests/controlplane): there the
CRDs' schemas and CEL rules, watches, 410 after etcd compaction, the garbage collector
and the write counts (the API server's own request metrics) are the real server's."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
import yaml
from api_helpers import BACKENDS, Cluster, OperatorThread, backend, node, pod, policy, wait_for

MI = 1 << 20


@pytest.fixture(params=BACKENDS)
def cluster(request: pytest.FixtureRequest) -> Cluster:
    """Each test on each server (the `operator` fixtures follow this one)."""
    return backend(request)  # type: ignore[no-any-return]


def _status(cluster: Cluster, name: str, namespace: str = "default") -> dict[str, Any]:
    obj = cluster.get("memoryreclaimpolicies", name, namespace) or {}
    return obj.get("status") or {}


def _condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or () if c["type"] == type_), {})


def _setup(cluster: Cluster) -> None:
    cluster.apply([node("node-1"), node("node-2")])
    cluster.apply([pod("web-0", "node-1", {"app": "web"}),
                   pod("web-1", "node-2", {"app": "web"}, limit="2Gi"),
                   pod("db-0", "node-2", {"app": "db"})])


def test_policy_and_pods_give_plans_with_the_right_bytes(cluster: Cluster,
                                                         operator: OperatorThread) -> None:
    _setup(cluster)
    cluster.apply(policy("web", {"app": "web"}, {"limitPercent": 50}))
    wait_for(lambda: cluster.plan_pods("node-1") == {"web-0": 512 * MI}, what="node-1 plan")
    wait_for(lambda: cluster.plan_pods("node-2") == {"web-1": 1024 * MI}, what="node-2 plan")
    plan = cluster.get("nodereclaimplans", "node-1")
    assert plan is not None
    assert plan["metadata"]["ownerReferences"][0]["kind"] == "Node"
    entry = plan["spec"]["pods"][0]
    assert entry["policy"] == {"kind": "MemoryReclaimPolicy", "namespace": "default",
                               "name": "web"}
    status = wait_for(lambda: _status(cluster, "web").get("matchedPods") == 2
                      and _status(cluster, "web"), what="policy status")
    assert _condition(status, "Valid")["status"] == "True"
    assert status["observedGeneration"] == 1
    # the agent reports web-0 applied: the policy's status follows
    cluster.patch_status("nodereclaimplans", "node-1", {
        "pods": [{"uid": entry["uid"], "applied": True, "memoryHigh": 512 * MI,
                  "reclaimedBytes": 4096}]})
    status = wait_for(lambda: _status(cluster, "web").get("enforcedPods") == 1
                      and _status(cluster, "web"), what="enforced count")
    # bounded, no counters (bytes reclaimed are the operator's metric)
    assert "reclaimedBytes" not in status and status["nodeCount"] == 2
    assert {"node": "node-1", "pods": 1, "enforced": 1} in status["nodes"]
    for cond in status["conditions"]:      # the metav1.Condition shape, stored by the server
        assert {"type", "status", "reason", "message", "lastTransitionTime",
                "observedGeneration"} <= set(cond), cond


def test_plans_follow_policy_pod_and_namespace_changes(cluster: Cluster,
                                                       operator: OperatorThread) -> None:
    _setup(cluster)
    cluster.apply(policy("web", {"app": "web"}, {"limitPercent": 50}))
    wait_for(lambda: cluster.plan_pods("node-1") == {"web-0": 512 * MI}, what="first plan")
    cluster.apply(policy("web", {"app": "web"}, {"limitPercent": 25}))
    wait_for(lambda: cluster.plan_pods("node-1") == {"web-0": 256 * MI}, what="policy change")
    cluster.kubectl("label", "pod", "web-0", "app=other", "--overwrite")
    wait_for(lambda: cluster.plan_pods("node-1") == {}, what="pod left by label")
    cluster.kubectl("label", "pod", "web-0", "app=web", "--overwrite")
    wait_for(lambda: cluster.plan_pods("node-1") == {"web-0": 256 * MI}, what="pod back")
    # a cluster policy picks namespaces by label
    cluster.apply({"apiVersion": "headroom.dev/v1alpha1", "kind": "ClusterMemoryReclaimPolicy",
                   "metadata": {"name": "dbs"},
                   "spec": {"namespaceSelector": {"matchLabels": {"tier": "gold"}},
                            "selector": {"matchLabels": {"app": "db"}},
                            "memoryHigh": {"bytes": "300Mi"}}})
    cluster.kubectl("label", "namespace", "default", "tier=gold")
    wait_for(lambda: (cluster.plan_pods("node-2") or {}).get("db-0") == 300 * MI,
             what="namespace label")
    cluster.kubectl("label", "namespace", "default", "tier-")
    wait_for(lambda: "db-0" not in (cluster.plan_pods("node-2") or {}), what="label removed")


def test_deleting_policy_and_node(cluster: Cluster, operator: OperatorThread) -> None:
    _setup(cluster)
    cluster.apply(policy("web", {"app": "web"}, {"limitPercent": 50}))
    wait_for(lambda: cluster.plan_pods("node-2") == {"web-1": 1024 * MI}, what="plan")
    cluster.kubectl("delete", "memoryreclaimpolicy", "web")
    wait_for(lambda: cluster.plan_pods("node-1") == {} and cluster.plan_pods("node-2") == {},
             what="pods leave the plans")
    cluster.kubectl("delete", "node", "node-1")
    wait_for(lambda: cluster.plan_pods("node-1") is None, what="plan of the deleted node")
    assert cluster.plan_pods("node-2") == {}


def test_invalid_policies(cluster: Cluster, operator: OperatorThread) -> None:
    _setup(cluster)
    cluster.apply(policy("web", {"app": "web"}, {"limitPercent": 50}))
    wait_for(lambda: cluster.plan_pods("node-1") == {"web-0": 512 * MI}
             and cluster.plan_pods("node-2") == {"web-1": 1024 * MI}, what="both plans")
    writes = cluster.plan_writes()
    # what the schema can judge never reaches the operator
    proc = cluster.kubectl("apply", "-f", "-", check=False, input=yaml.safe_dump(
        policy("both", {"app": "web"}, {"bytes": "1Gi", "limitPercent": 10}, priority=9)))
    assert proc.returncode != 0 and "exactly one of" in proc.stderr
    # what only the operator can judge: Valid=False, an Event, no plan change
    # (the schema's CEL rule checks integers only; 512Ki is below the 1Mi minimum)
    cluster.apply(policy("bad", {"app": "web"}, {"bytes": "512Ki"}, priority=9))
    status = wait_for(lambda: _condition(_status(cluster, "bad"), "Valid").get("status")
                      == "False" and _status(cluster, "bad"), what="Valid=False")
    assert _condition(status, "Valid")["reason"] == "InvalidQuantity"
    events = wait_for(lambda: [e for e in cluster.items("events")
                               if e["involvedObject"]["name"] == "bad"], what="an Event")
    assert events[0]["type"] == "Warning"
    # an update that makes a valid policy invalid keeps its plan entries as they are
    cluster.apply(policy("web", {"app": "web"}, {"bytes": "100Ki"}))
    wait_for(lambda: _condition(_status(cluster, "web"), "Valid").get("status") == "False",
             what="web invalid")
    assert cluster.plan_pods("node-1") == {"web-0": 512 * MI}
    assert cluster.plan_writes() == writes


def test_conflicting_policies(cluster: Cluster, operator: OperatorThread) -> None:
    _setup(cluster)
    cluster.apply([policy("a", {"app": "web"}, {"bytes": "100Mi"}),
                   policy("b", {"app": "web"}, {"bytes": "200Mi"})])
    wait_for(lambda: _condition(_status(cluster, "a"), "Conflicts").get("status") == "True"
             and _condition(_status(cluster, "b"), "Conflicts").get("status") == "True",
             what="conflicts on both")
    plan = cluster.plan_pods("node-1")
    assert plan in ({"web-0": 100 * MI}, {"web-0": 200 * MI})
    # raising one's priority settles it
    cluster.apply(policy("b", {"app": "web"}, {"bytes": "200Mi"}, priority=5))
    wait_for(lambda: cluster.plan_pods("node-1") == {"web-0": 200 * MI}, what="b wins")
    wait_for(lambda: _condition(_status(cluster, "a"), "Conflicts").get("status") == "False",
             what="no conflict")


def test_410_gone_on_watches(cluster: Cluster, operator: OperatorThread) -> None:
    _setup(cluster)
    cluster.apply(policy("web", {"app": "web"}, {"limitPercent": 50}))
    wait_for(lambda: cluster.plan_pods("node-1") == {"web-0": 512 * MI}, what="plan")
    cluster.expire_watches()     # real server: etcd compacted, kube-apiserver restarted
    cluster.kubectl("label", "pod", "web-0", "app=none", "--overwrite")
    wait_for(lambda: cluster.plan_pods("node-1") == {}, what="change after 410")


def test_restart_rewrites_nothing_and_catches_up(cluster: Cluster) -> None:
    _setup(cluster)
    cluster.apply(policy("web", {"app": "web"}, {"limitPercent": 50}))
    op = OperatorThread(cluster.kubeconfig).start()
    wait_for(lambda: cluster.plan_pods("node-2") == {"web-1": 1024 * MI}, what="plan")
    wait_for(lambda: _status(cluster, "web").get("matchedPods") == 2, what="status")
    op.stop()
    writes = cluster.write_counts()
    op = OperatorThread(cluster.kubeconfig).start()
    try:
        # a change made after the restart is applied, so the operator has done its rounds
        cluster.apply(pod("web-2", "node-1", {"app": "web"}))
        wait_for(lambda: "web-2" in (cluster.plan_pods("node-1") or {}), what="new pod")
        after = cluster.write_counts()
        assert after.get(("patch", "nodereclaimplans", "")) == \
            writes.get(("patch", "nodereclaimplans", ""), 0) + 1   # only node-1's plan
        assert after.get(("create", "nodereclaimplans", ""), 0) == \
            writes.get(("create", "nodereclaimplans", ""), 0)
        op.stop()
        # changes while the operator is down are picked up when it comes back
        cluster.kubectl("delete", "pod", "web-2")
        op = OperatorThread(cluster.kubeconfig).start()
        wait_for(lambda: "web-2" not in (cluster.plan_pods("node-1") or {}), what="catch up")
    finally:
        op.stop()


def test_operator_as_a_subprocess(cluster: Cluster,
                                  operator_process: subprocess.Popen[str]) -> None:
    _setup(cluster)
    cluster.apply(policy("web", {"app": "web"}, {"throttlingPercent": 50}, priority=1))
    # web-0: request defaults to the limit (1Gi), so memory.high is the limit
    wait_for(lambda: cluster.plan_pods("node-1") == {"web-0": 1024 * MI}, timeout=60,
             what="plan from the subprocess operator")
    assert operator_process.poll() is None
    out = cluster.kubectl("get", "memoryreclaimpolicies").stdout
    assert "web" in out


HOSTILE = {   # issue 13: values that once froze every tenant's plan on a node
    "bytes-8ei": {"memoryHigh": {"bytes": "8Ei"}},
    "bytes-99999999999ei": {"memoryHigh": {"bytes": "99999999999Ei"}},
    "bytes-1e100": {"memoryHigh": {"bytes": "1e100"}},
    "step-1e100": {"memoryHigh": {"limitPercent": 50}, "reclaim": {"stepBytes": "1e100"}},
    "rate-8ei": {"memoryHigh": {"limitPercent": 50}, "reclaim": {"maxBytesPerSecond": "8Ei"}},
    "cpu-400-digits": {"memoryHigh": {"limitPercent": 50},
                       "reclaim": {"nodeCpuBudget": "9" * 400}},
    "cpu-million": {"memoryHigh": {"limitPercent": 50}, "reclaim": {"nodeCpuBudget": "1000000"}},
}


def _lenient(schema: Any) -> Any:
    """The policy schema without patterns, lengths and CEL rules: a server that lets the
    hostile values through (an old CRD), so that the operator alone must hold."""
    if isinstance(schema, dict):
        return {k: _lenient(v) for k, v in schema.items()
                if k not in ("pattern", "maxLength", "x-kubernetes-validations")}
    return schema


@pytest.mark.parametrize("cluster", ["emulator"], indirect=True)   # a lenient schema
def test_a_bystander_is_updated_and_restored_while_hostile_policies_exist(
        cluster: Cluster, operator: OperatorThread) -> None:
    rt = cluster.rtype("memoryreclaimpolicies")
    rt.schema = _lenient(rt.schema)
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tenant"}})
    cluster.apply([node("node-1"),
                   pod("web-0", "node-1", {"app": "web"}),
                   *(pod(f"victim-{i}", "node-1", {"app": "x"}, namespace="tenant")
                     for i in range(2))])
    for name, spec in HOSTILE.items():   # as JSON: YAML would read 1e100 as a number
        cluster.kubectl("apply", "-f", "-", input=json.dumps(
            {"apiVersion": "headroom.dev/v1alpha1", "kind": "MemoryReclaimPolicy",
             "metadata": {"name": name, "namespace": "tenant"},
             "spec": {"selector": {}, **spec}}))
    cluster.apply(policy("web", {"app": "web"}, {"limitPercent": 50}))
    wait_for(lambda: cluster.plan_pods("node-1") == {"web-0": 512 * MI}, what="bystander")
    for name in HOSTILE:
        st = wait_for(lambda n=name: _condition(_status(cluster, n, "tenant"), "Valid")
                      .get("status") == "False" and _status(cluster, n, "tenant"),
                      what=f"{name} Valid=False")
        assert _condition(st, "Valid")["reason"] == "InvalidQuantity"
    # updated while they exist ...
    cluster.apply(policy("web", {"app": "web"}, {"limitPercent": 25}))
    wait_for(lambda: cluster.plan_pods("node-1") == {"web-0": 256 * MI}, what="update")
    # ... and restored (out of the plan: the agent puts the original memory.high back)
    cluster.kubectl("delete", "memoryreclaimpolicy", "web")
    wait_for(lambda: cluster.plan_pods("node-1") == {}, what="restore")
