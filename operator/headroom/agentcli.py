"""Flags of `headroom agent`, shared by standalone and cluster mode.

Every flag can also come from an environment variable (named in its help, with the
default), so that the DaemonSet can configure the agent without a long argument list.
"""

from __future__ import annotations

import argparse
from typing import Any

from headroom.cliflags import add, add_logging_flags, boolean, non_negative, port

CLUSTER_STATE_DIR = "/var/lib/headroom"
STANDALONE_STATE_DIR = "/var/lib/headroom/standalone"


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "agent",
        help="run the node agent (cluster mode, or --standalone from a YAML file)",
        description="Applies memory.high and runs the background reclaim engine. Every flag "
                    "can also be set by the environment variable named in its help.",
    )
    add(p, "--standalone", env="HEADROOM_STANDALONE", default=False, type=boolean,
        help="run without Kubernetes, from --config")
    add(p, "--config", env="HEADROOM_CONFIG", default=None, metavar="FILE",
        help="standalone mode: YAML file naming cgroup globs and their settings")
    add(p, "--cgroup-root", env="HEADROOM_CGROUP_ROOT", default="/sys/fs/cgroup", metavar="DIR",
        help="cgroup v2 mount point")
    add(p, "--node-name", env="NODE_NAME", default=None, metavar="NAME",
        help="cluster mode: this node's name, from the downward API")
    add(p, "--kubeconfig", env="HEADROOM_KUBECONFIG", default=None, metavar="FILE",
        help="cluster mode: kubeconfig file; unset: in-cluster credentials, else $KUBECONFIG "
             "or ~/.kube/config")
    add(p, "--state-dir", env="HEADROOM_STATE_DIR", default=None, metavar="DIR",
        help="where the original memory.high values (both modes) and the last plan (cluster "
             "mode) are kept, on disk before the first write to a cgroup; unset: "
             f"{CLUSTER_STATE_DIR}, standalone {STANDALONE_STATE_DIR}")
    add(p, "--cgroup-driver", env="HEADROOM_CGROUP_DRIVER", default="auto",
        choices=["auto", "systemd", "cgroupfs"], lower=True, help="kubelet cgroup driver")
    add(p, "--kubelet-cgroup-root", env="HEADROOM_KUBELET_CGROUP_ROOT", default="auto",
        metavar="PATH",
        help="cluster mode: the kubelet's --cgroup-root (cgroupRoot), e.g. / or /kubelet "
             "(kind); auto looks for both")
    add(p, "--metrics-port", env="HEADROOM_METRICS_PORT", default=9808, type=port,
        metavar="PORT", help="port of /metrics, 0 to disable")
    add(p, "--metrics-address", env="HEADROOM_METRICS_ADDRESS", default="0.0.0.0",
        metavar="ADDR", help="address the metrics server binds")
    add(p, "--health-port", env="HEADROOM_HEALTH_PORT", default=0, type=port,
        metavar="PORT", help="cluster mode: port of /healthz (the engine and main loops turn) "
                             "and /readyz (and a plan is known); 0: none (the chart sets 9809)")
    add(p, "--health-address", env="HEADROOM_HEALTH_ADDRESS", default="0.0.0.0",
        metavar="ADDR", help="address the health endpoint binds")
    add(p, "--status-interval", env="HEADROOM_STATUS_INTERVAL", default=30.0, type=non_negative,
        metavar="SECONDS", help="cluster mode: minimum seconds between plan status writes")
    add(p, "--heartbeat-interval", env="HEADROOM_HEARTBEAT_INTERVAL", default=300.0,
        type=non_negative, metavar="SECONDS",
        help="cluster mode: seconds between status writes when nothing but counters changed, "
             "less up to 20% jitter")
    add(p, "--pod-name", env="POD_NAME", default=None, metavar="NAME",
        help="cluster mode: this agent's pod name, the holder of its Lease (from the "
             "downward API); unset: the host name")
    add(p, "--lease-namespace", env="HEADROOM_LEASE_NAMESPACE", default=None,
        metavar="NAMESPACE",
        help="cluster mode: namespace of this agent's Lease (headroom-agent-<node>, renewed "
             "every 10 s, 40 s duration: its liveness); unset: no Lease (the chart sets the "
             "release namespace)")
    add(p, "--cpu-budget", env="HEADROOM_CPU_BUDGET", default=0.5, type=non_negative,
        metavar="CORES",
        help="node-wide CPU the reclaim engine may spend, in cores, unless the plan sets one")
    add(p, "--restore-all", env="HEADROOM_RESTORE_ALL", default=False, type=boolean,
        help="one-shot, while no agent runs (e.g. after uninstalling one that crashed): put "
             "back every original memory.high saved in the state dir where memory.high still "
             "holds the agent's value, empty the file, exit (1 if a restore failed)")
    add(p, "--dry-run", env="HEADROOM_DRY_RUN", default=False, type=boolean,
        help="report what would be written, write nothing")
    add_logging_flags(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    if getattr(args, "restore_all", False):
        return restore_all(args)
    if args.standalone:
        from headroom.standalone import run as standalone

        return standalone.run(args)
    from headroom.nodeagent import agent as cluster

    return cluster.run(args)


def restore_all(args: argparse.Namespace) -> int:
    """`headroom agent --restore-all`: the saved originals back, without an engine."""
    import json
    import sys

    from headroom.cgroup import CgroupError, CgroupRoot
    from headroom.engine.memoryhigh import restore_saved

    state_dir = args.state_dir or (STANDALONE_STATE_DIR if args.standalone
                                   else CLUSTER_STATE_DIR)
    try:
        root = CgroupRoot(args.cgroup_root)
    except CgroupError as e:
        print(f"headroom: {e}", file=sys.stderr)
        return 2
    results = restore_saved(root, state_dir, dry_run=args.dry_run)
    for key, outcome in results:
        print(json.dumps({"key": key, "outcome": outcome}))
    return 1 if any(outcome == "failed" for _, outcome in results) else 0
