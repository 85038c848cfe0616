"""`headroom operator`: run the kopf operator, cluster-wide, as a single replica."""

from __future__ import annotations

import argparse
import asyncio
import threading

import kopf

from headroom import logs
from headroom.controller.handlers import OperatorOptions, build_registry


def options_from_args(args: argparse.Namespace) -> OperatorOptions:
    return OperatorOptions(kubeconfig=getattr(args, "kubeconfig", None),
                           debounce=getattr(args, "debounce", 0.5),
                           max_delay=getattr(args, "max_delay", 5.0))


async def operate(options: OperatorOptions, *, stop_flag: threading.Event | None = None,
                  ready_flag: threading.Event | None = None,
                  liveness_endpoint: str | None = None) -> None:
    """The operator as a coroutine (tests run it in a thread with a stop flag)."""
    registry, _ = build_registry(options)
    await kopf.operator(registry=registry, clusterwide=True, standalone=True,
                        stop_flag=stop_flag, ready_flag=ready_flag,
                        liveness_endpoint=liveness_endpoint)


def run(args: argparse.Namespace) -> int:
    logs.setup(args.log_level, fmt=getattr(args, "log_format", "json"))
    asyncio.run(operate(options_from_args(args),
                        liveness_endpoint=getattr(args, "liveness", None) or None))
    return 0
