"""The operator's view of agent liveness: the agents' Leases (nodeagent/lease.py).

At each scrape of the operator's /metrics, one LIST of the Leases labelled
``app.kubernetes.io/component=agent`` in the agents' namespace (``--agent-namespace``,
the chart sets the release namespace) gives

* ``headroom_operator_agent_leases{state="live"|"expired"}``: how many agents renewed their
  Lease within its duration (40 s) and how many did not;
* ``headroom_operator_agent_lease_expired{node}``: 1 per node whose agent's Lease expired (only
  those: the series count is the number of dead agents, not of nodes);
* ``headroom_operator_agent_leases_listed``: 1 when the LIST answered, 0 when it failed (then the
  two above are absent rather than wrong).

A scrape costs one LIST in one namespace (a few hundred bytes per node); nothing is
cached between scrapes, so what the metrics say is never older than the scrape.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from headroom.nodeagent.lease import NODE_LABEL, expired

SELECTOR = "app.kubernetes.io/name=headroom,app.kubernetes.io/component=agent"


def lease_states(leases: list[dict[str, Any]], now: float) -> tuple[int, list[str]]:
    """(live count, sorted nodes of the expired Leases)."""
    live, dead = 0, []
    for lease in leases:
        if expired(lease, now):
            labels = (lease.get("metadata") or {}).get("labels") or {}
            dead.append(str(labels.get(NODE_LABEL) or
                            (lease.get("metadata") or {}).get("name", "")))
        else:
            live += 1
    return live, sorted(dead)


def list_leases_with(api_client: Any, namespace: str) -> Callable[[], list[dict[str, Any]]]:
    """A function listing the agents' Leases through a (synchronous) kubernetes ApiClient."""
    from headroom.controller.kubeclient import api_request

    def list_leases() -> list[dict[str, Any]]:
        resp = api_request(api_client, "GET",
                           f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases",
                           query=[("labelSelector", SELECTOR)], timeout=5)
        return list(json.loads(resp.data).get("items") or [])
    return list_leases


class AgentLeaseCollector(Collector):
    def __init__(self, list_leases: Callable[[], list[dict[str, Any]]],
                 wall: Callable[[], float] = time.time) -> None:
        self.list_leases = list_leases
        self.wall = wall

    def collect(self) -> Iterator[Metric]:
        listed = GaugeMetricFamily("headroom_operator_agent_leases_listed",
                                   "1 when the agents' Leases could be listed, else 0.")
        try:
            leases = self.list_leases()
        except Exception:   # API away: say so, do not fail the scrape
            listed.add_metric([], 0.0)
            yield listed
            return
        listed.add_metric([], 1.0)
        yield listed
        live, dead = lease_states(leases, self.wall())
        states = GaugeMetricFamily("headroom_operator_agent_leases",
                                   "Agents by Lease state: live (renewed within its "
                                   "duration) or expired.", labels=["state"])
        states.add_metric(["live"], float(live))
        states.add_metric(["expired"], float(len(dead)))
        yield states
        gone = GaugeMetricFamily("headroom_operator_agent_lease_expired",
                                 "1 for each node whose agent's Lease expired.",
                                 labels=["node"])
        for node in dead:
            gone.add_metric([node], 1.0)
        yield gone
