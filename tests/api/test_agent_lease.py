"""Agent liveness by Lease (issue 12, item 3): the agent's LeaseKeeper creates and renews
its Lease through the real kubernetes client against the API-server emulator, and the
operator's collector tells live from expired agents."""

from __future__ import annotations

import kubernetes
from api_helpers import Cluster
from headroom.controller.agentleases import AgentLeaseCollector, list_leases_with
from headroom.controller.kubeclient import load_configuration
from headroom.nodeagent.lease import LeaseKeeper, lease_name, parse_micro_time
from prometheus_client import CollectorRegistry, generate_latest

NS = "default"


def test_agent_lease_is_created_renewed_and_expired_leases_are_reported(
        cluster: Cluster) -> None:
    api = kubernetes.client.ApiClient(load_configuration(str(cluster.kubeconfig)))
    clock = {"now": 1_800_000_000.0}
    results: list[str] = []
    keeper = LeaseKeeper(kubernetes.client.CoordinationV1Api(api), NS, "node-1", "agent-x",
                         wall=lambda: clock["now"], on_result=results.append)
    assert keeper.renew()                                        # created
    first = cluster.get("leases", lease_name("node-1"), NS)
    assert first is not None
    spec = first["spec"]
    assert spec["holderIdentity"] == "agent-x" and spec["leaseDurationSeconds"] == 40
    assert parse_micro_time(spec["renewTime"]) == clock["now"]
    assert first["metadata"]["labels"]["headroom.dev/node"] == "node-1"
    clock["now"] += 10
    assert keeper.renew()                                        # renewed in place
    again = cluster.get("leases", lease_name("node-1"), NS)
    assert again is not None
    assert parse_micro_time(again["spec"]["renewTime"]) == clock["now"]
    assert again["spec"]["acquireTime"] == spec["acquireTime"]
    assert results == ["ok", "ok"]
    # a second agent that stopped renewing 60 s ago
    dead = LeaseKeeper(kubernetes.client.CoordinationV1Api(api), NS, "node-2", "agent-y",
                       wall=lambda: clock["now"] - 60)
    assert dead.renew()
    registry = CollectorRegistry()
    registry.register(AgentLeaseCollector(list_leases_with(api, NS),
                                          wall=lambda: clock["now"] + 5))
    text = generate_latest(registry).decode()
    assert 'headroom_operator_agent_leases{state="live"} 1.0' in text
    assert 'headroom_operator_agent_leases{state="expired"} 1.0' in text
    assert 'headroom_operator_agent_lease_expired{node="node-2"} 1.0' in text
    assert "headroom_operator_agent_leases_listed 1.0" in text


def test_lease_renewal_failure_is_counted_not_raised(cluster: Cluster) -> None:
    api = kubernetes.client.ApiClient(load_configuration(str(cluster.kubeconfig)))
    results: list[str] = []
    keeper = LeaseKeeper(kubernetes.client.CoordinationV1Api(api), "no-such-namespace",
                         "node-1", "agent-x", on_result=results.append)
    ok = keeper.renew()
    registry = CollectorRegistry()
    registry.register(AgentLeaseCollector(lambda: (_ for _ in ()).throw(OSError("down"))))
    assert "headroom_operator_agent_leases_listed 0.0" in generate_latest(registry).decode()
    assert ok is (results == ["ok"])      # the emulator may or may not check namespaces
