"""Flags of `headroom operator`."""

from __future__ import annotations

import argparse
import os
from typing import Any


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "operator",
        help="run the operator (kopf): resolve policies onto NodeReclaimPlans",
    )
    p.add_argument("--log-level", default=os.environ.get("HEADROOM_LOG_LEVEL", "info"),
                   choices=["debug", "info", "warning", "error"])
    p.add_argument("--kubeconfig", default=os.environ.get("HEADROOM_KUBECONFIG"),
                   help="kubeconfig file (default: $KUBECONFIG, else in-cluster credentials)")
    p.add_argument("--debounce", type=float,
                   default=float(os.environ.get("HEADROOM_DEBOUNCE_SECONDS", "0.5")),
                   help="seconds of quiet after an event before plans are recomputed")
    p.add_argument("--max-delay", type=float,
                   default=float(os.environ.get("HEADROOM_MAX_DELAY_SECONDS", "5")),
                   help="recompute at most this long after the first event of a burst")
    p.add_argument("--liveness", default=os.environ.get("HEADROOM_LIVENESS_ENDPOINT", ""),
                   help="kopf liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from headroom.controller import main

    return main.run(args)
