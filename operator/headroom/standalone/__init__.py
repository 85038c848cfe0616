"""Standalone mode: the engine driven by a local YAML file of cgroup globs (no Kubernetes)."""
