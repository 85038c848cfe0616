"""`headroom operator`: run the kopf operator, cluster-wide, as a single replica."""

from __future__ import annotations

import argparse
import asyncio
import logging
import threading

import kopf

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
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(operate(options_from_args(args),
                        liveness_endpoint=getattr(args, "liveness", None) or None))
    return 0
