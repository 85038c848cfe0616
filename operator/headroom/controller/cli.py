"""Flags of `headroom operator`. Every flag can also be set by the environment variable
named in its help (cliflags)."""

from __future__ import annotations

import argparse
from typing import Any

from headroom.cliflags import add, add_logging_flags, non_negative, port


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "operator",
        help="run the operator (kopf): resolve policies onto NodeReclaimPlans",
        description="Resolves MemoryReclaimPolicies onto one NodeReclaimPlan per node. Every "
                    "flag can also be set by the environment variable named in its help.",
    )
    add(p, "--kubeconfig", env="HEADROOM_KUBECONFIG", default=None, metavar="FILE",
        help="kubeconfig file; unset: $KUBECONFIG, else in-cluster credentials")
    add(p, "--debounce", env="HEADROOM_DEBOUNCE_SECONDS", default=0.5, type=non_negative,
        metavar="SECONDS", help="seconds of quiet after an event before plans are recomputed")
    add(p, "--max-delay", env="HEADROOM_MAX_DELAY_SECONDS", default=5.0, type=non_negative,
        metavar="SECONDS", help="recompute at most this long after the first event of a burst")
    add(p, "--resync", env="HEADROOM_RESYNC_SECONDS", default=600.0, type=non_negative,
        metavar="SECONDS", help="between rounds that recompute everything from the caches "
                                "(the others recompute only what changed); 0: every round")
    add(p, "--health-port", env="HEADROOM_HEALTH_PORT", default=0, type=port, metavar="PORT",
        help="port of /healthz (the reconciler runs, no round is stuck) and /readyz (and "
             "the caches are listed, the first round is done); 0: none (the chart sets 8080)")
    add(p, "--metrics-port", env="HEADROOM_METRICS_PORT", default=0, type=port,
        metavar="PORT", help="port of /metrics; 0: none (the chart sets 9808)")
    add(p, "--http-address", env="HEADROOM_HTTP_ADDRESS", default="0.0.0.0", metavar="ADDR",
        help="address the health and metrics endpoints bind")
    add(p, "--agent-namespace", env="HEADROOM_AGENT_NAMESPACE", default=None,
        metavar="NAMESPACE",
        help="namespace of the agents' Leases, reported on /metrics as "
             "headroom_operator_agent_leases{state}; unset: not reported (the chart sets "
             "the release namespace)")
    add(p, "--liveness", env="HEADROOM_LIVENESS_ENDPOINT", default="", metavar="URL",
        help="kopf liveness endpoint, e.g. http://0.0.0.0:8080/healthz; empty: none")
    add_logging_flags(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from headroom.controller import main

    return main.run(args)
