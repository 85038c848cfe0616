"""Flags of `headroom agent`, shared by standalone and cluster mode.

Every flag can also come from an environment variable (named in its help), so
that the DaemonSet can configure the agent without a long argument list.
"""

from __future__ import annotations

import argparse
import os
from typing import Any


def _env(name: str, default: Any) -> Any:
    return os.environ.get(name, default)


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "agent",
        help="run the node agent (cluster mode, or --standalone from a YAML file)",
        description="Applies memory.high and runs the background reclaim engine.",
    )
    p.add_argument("--standalone", action="store_true",
                   help="run without Kubernetes, from --config")
    p.add_argument("--config", metavar="FILE",
                   help="standalone mode: YAML file naming cgroup globs and their settings")
    p.add_argument("--cgroup-root", default=_env("HEADROOM_CGROUP_ROOT", "/sys/fs/cgroup"),
                   help="cgroup v2 mount point (env HEADROOM_CGROUP_ROOT, default %(default)s)")
    p.add_argument("--node-name", default=_env("NODE_NAME", None),
                   help="cluster mode: this node's name, from the downward API (env NODE_NAME)")
    p.add_argument("--state-dir", default=_env("HEADROOM_STATE_DIR", "/var/lib/headroom"),
                   help="cluster mode: where the last plan and found memory.high values are "
                        "kept (env HEADROOM_STATE_DIR, default %(default)s)")
    p.add_argument("--cgroup-driver", choices=["auto", "systemd", "cgroupfs"],
                   default=_env("HEADROOM_CGROUP_DRIVER", "auto"),
                   help="kubelet cgroup driver (env HEADROOM_CGROUP_DRIVER, default %(default)s)")
    p.add_argument("--kubelet-cgroup-root", metavar="PATH",
                   default=_env("HEADROOM_KUBELET_CGROUP_ROOT", "auto"),
                   help="cluster mode: the kubelet's --cgroup-root (cgroupRoot), e.g. / or "
                        "/kubelet (kind); auto looks for both "
                        "(env HEADROOM_KUBELET_CGROUP_ROOT, default %(default)s)")
    p.add_argument("--metrics-port", type=int, default=int(_env("HEADROOM_METRICS_PORT", 9808)),
                   help="Prometheus metrics port, 0 to disable "
                        "(env HEADROOM_METRICS_PORT, default %(default)s)")
    p.add_argument("--metrics-address", default=_env("HEADROOM_METRICS_ADDRESS", "0.0.0.0"),
                   help="address the metrics server binds (env HEADROOM_METRICS_ADDRESS)")
    p.add_argument("--status-interval", type=float,
                   default=float(_env("HEADROOM_STATUS_INTERVAL", 30)),
                   help="cluster mode: minimum seconds between plan status writes "
                        "(env HEADROOM_STATUS_INTERVAL, default %(default)s)")
    p.add_argument("--heartbeat-interval", type=float,
                   default=float(_env("HEADROOM_HEARTBEAT_INTERVAL", 300)),
                   help="cluster mode: seconds between status writes when nothing but "
                        "counters changed, less up to 20%% jitter "
                        "(env HEADROOM_HEARTBEAT_INTERVAL, default %(default)s)")
    p.add_argument("--cpu-budget", type=float, default=float(_env("HEADROOM_CPU_BUDGET", 0.5)),
                   help="node-wide CPU the reclaim engine may spend, in cores, unless the "
                        "plan sets one (env HEADROOM_CPU_BUDGET, default %(default)s)")
    p.add_argument("--dry-run", action="store_true",
                   default=_env("HEADROOM_DRY_RUN", "") in ("1", "true", "yes"),
                   help="report what would be written, write nothing (env HEADROOM_DRY_RUN)")
    p.add_argument("--log-level", default=_env("HEADROOM_LOG_LEVEL", "info"),
                   choices=["debug", "info", "warning", "error"],
                   help="log level (env HEADROOM_LOG_LEVEL, default %(default)s)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    if args.standalone:
        from headroom.standalone import run as standalone

        return standalone.run(args)
    from headroom.nodeagent import agent as cluster

    return cluster.run(args)
