"""Cluster-mode node agent: plan intake, pod cgroup discovery, status, events."""
