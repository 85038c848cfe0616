"""`headroom operator`: run the kopf operator, cluster-wide, as a single replica."""

from __future__ import annotations

import argparse
import asyncio
import threading
from typing import Any

import kopf

from headroom import health, logs
from headroom.controller.handlers import OperatorOptions, build_registry
from headroom.controller.metrics import OperatorMetrics, operator_checks


def watch_agent_leases(metrics: OperatorMetrics, options: OperatorOptions,
                       namespace: str | None) -> None:
    """Agent liveness from their Leases, read at scrape time (controller/agentleases.py)."""
    if not namespace:
        return
    import kubernetes

    from headroom.controller.agentleases import AgentLeaseCollector, list_leases_with
    from headroom.controller.kubeclient import load_configuration

    api = kubernetes.client.ApiClient(load_configuration(options.kubeconfig))
    metrics.registry.register(AgentLeaseCollector(list_leases_with(api, namespace)))


def options_from_args(args: argparse.Namespace) -> OperatorOptions:
    return OperatorOptions(kubeconfig=getattr(args, "kubeconfig", None),
                           debounce=getattr(args, "debounce", 0.5),
                           max_delay=getattr(args, "max_delay", 5.0),
                           resync=getattr(args, "resync", 600.0))


async def operate(options: OperatorOptions, *, stop_flag: threading.Event | None = None,
                  ready_flag: threading.Event | None = None,
                  liveness_endpoint: str | None = None, health_port: int = 0,
                  metrics_port: int = 0, http_address: str = "0.0.0.0",
                  servers: list[Any] | None = None, agent_namespace: str | None = None) -> None:
    """The operator as a coroutine (tests run it in a thread with a stop flag; they pass
    port -1 and a `servers` list to learn the bound ports)."""
    registry, state = build_registry(options)
    metrics = OperatorMetrics()
    metrics.watch(state)
    state.metrics = metrics
    watch_agent_leases(metrics, options, agent_namespace)
    started = [health.serve(health_port, http_address, operator_checks(state).routes()),
               health.serve(metrics_port, http_address, {"/metrics": metrics.route()})]
    if servers is not None:
        servers.extend(started)
    try:
        await kopf.operator(registry=registry, clusterwide=True, standalone=True,
                            stop_flag=stop_flag, ready_flag=ready_flag,
                            liveness_endpoint=liveness_endpoint)
    finally:
        for server in started:
            if server is not None:
                server.shutdown()
                server.server_close()


def run(args: argparse.Namespace) -> int:
    logs.setup(args.log_level, fmt=getattr(args, "log_format", "json"))
    asyncio.run(operate(options_from_args(args),
                        liveness_endpoint=getattr(args, "liveness", None) or None,
                        health_port=getattr(args, "health_port", 0),
                        metrics_port=getattr(args, "metrics_port", 0),
                        http_address=getattr(args, "http_address", "0.0.0.0"),
                        agent_namespace=getattr(args, "agent_namespace", None)))
    return 0
