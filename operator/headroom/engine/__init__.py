"""The reclaim engine: per-cgroup memory.high ownership and background reclaim (no Kubernetes)."""
