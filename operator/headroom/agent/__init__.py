"""Node agent: reclaim engine, standalone mode, plan intake, pod cgroup discovery, metrics."""
