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
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from headroom.controller import main

    return main.run(args)
