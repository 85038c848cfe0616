"""headroom: memory.high plus asynchronous background reclaim for Kubernetes pods."""

__version__ = "0.1.0"
