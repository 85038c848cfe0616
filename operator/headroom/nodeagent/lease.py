"""The agent's Lease (coordination.k8s.io/v1): its liveness, as Kubernetes tells node
liveness (kubelet's node Lease in kube-node-lease).

One Lease per agent, ``headroom-agent-<node>`` in the agent's namespace, renewed every
``renew_seconds`` (10 s) with ``leaseDurationSeconds`` 40: a Lease whose renewTime is
older than its duration belongs to a dead or cut-off agent. ``kubectl get leases -n
<namespace>`` shows holder and renew time; the operator reads the same Leases and
reports expired ones (``headroom_operator_agents{state}``, docs/operations.md).

The renewal runs in its own thread so that a slow API server delays nothing else, and
it never raises: an API error is logged once per change of kind, counted, and retried at
the next renewal.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from headroom.logs import event

log = logging.getLogger("headroom.agent")

LEASE_PREFIX = "headroom-agent-"
LEASE_DURATION_SECONDS = 40
RENEW_SECONDS = 10.0
MAX_NAME = 253
NODE_LABEL = "headroom.dev/node"
COMPONENT_LABELS = {"app.kubernetes.io/name": "headroom",
                    "app.kubernetes.io/component": "agent"}


def lease_name(node: str) -> str:
    """``headroom-agent-<node>``; a node name too long for that is shortened with a hash."""
    name = LEASE_PREFIX + node
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(node.encode()).hexdigest()[:10]
    return name[:MAX_NAME - 11].rstrip("-.") + "-" + digest


def micro_time(ts: float) -> str:
    """A Kubernetes MicroTime (RFC 3339 with microseconds, UTC)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_micro_time(text: Any) -> float | None:
    """RFC 3339 ("...Z", "+00:00", with or without fractions) -> Unix time, else None."""
    if not isinstance(text, str):
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def lease_body(node: str, holder: str, now: float, acquired: str | None = None,
               duration: int = LEASE_DURATION_SECONDS) -> dict[str, Any]:
    labels = dict(COMPONENT_LABELS)
    if len(node) <= 63:
        labels[NODE_LABEL] = node
    return {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": lease_name(node), "labels": labels},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration,
                 "acquireTime": acquired or micro_time(now), "renewTime": micro_time(now)},
    }


def expired(lease: Any, now: float) -> bool:
    """Whether a Lease object (a dict) has not been renewed within its duration."""
    spec = (lease or {}).get("spec") or {}
    renewed = parse_micro_time(spec.get("renewTime"))
    duration = spec.get("leaseDurationSeconds")
    if renewed is None or not isinstance(duration, int) or isinstance(duration, bool):
        return True
    return now - renewed > duration


class LeaseKeeper:
    """Creates the agent's Lease and renews it. ``api``: a kubernetes CoordinationV1Api
    (or a test double with the same three methods)."""

    def __init__(self, api: Any, namespace: str, node: str, holder: str, *,
                 renew_seconds: float = RENEW_SECONDS,
                 duration: int = LEASE_DURATION_SECONDS,
                 wall: Callable[[], float] | None = None,
                 on_result: Callable[[str], None] | None = None) -> None:
        import time
        self.api, self.namespace, self.node, self.holder = api, namespace, node, holder
        self.name = lease_name(node)
        self.renew_seconds = renew_seconds
        self.duration = duration
        self.wall = wall or time.time
        self.on_result = on_result
        self.last_ok: float | None = None
        self._last_problem = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def renew(self) -> bool:
        """One create-or-renew; True when the Lease now carries a fresh renewTime."""
        now = self.wall()
        try:
            try:
                current = self.api.read_namespaced_lease(self.name, self.namespace,
                                                         _request_timeout=5)
            except Exception as e:
                if getattr(e, "status", None) != 404:
                    raise
                self.api.create_namespaced_lease(
                    self.namespace, lease_body(self.node, self.holder, now,
                                               duration=self.duration), _request_timeout=5)
            else:
                body = _as_dict(self.api, current)
                spec = body.get("spec") or {}
                acquired = spec.get("acquireTime") if spec.get("holderIdentity") == \
                    self.holder else None
                new = lease_body(self.node, self.holder, now, acquired, self.duration)
                new["metadata"]["resourceVersion"] = \
                    (body.get("metadata") or {}).get("resourceVersion")
                self.api.replace_namespaced_lease(self.name, self.namespace, new,
                                                  _request_timeout=5)
        except Exception as e:
            status = getattr(e, "status", None)
            problem = f"HTTP {status}" if status else type(e).__name__
            if problem != self._last_problem:
                event(log, "lease_renew_failed", logging.WARNING, lease=self.name,
                      namespace=self.namespace, error=problem)
                self._last_problem = problem
            self._result("error")
            return False
        if self._last_problem:
            event(log, "lease_renewed", lease=self.name, namespace=self.namespace)
        self._last_problem = ""
        self.last_ok = now
        self._result("ok")
        return True

    def _result(self, result: str) -> None:
        if self.on_result is not None:
            self.on_result(result)

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.is_set():
                self.renew()
                self._stop.wait(self.renew_seconds)
        self._thread = threading.Thread(target=loop, name="lease", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=6)


def _as_dict(api: Any, obj: Any) -> dict[str, Any]:
    """A client model (V1Lease) or a dict -> a dict in the API's JSON field names."""
    if isinstance(obj, dict):
        return obj
    client = getattr(api, "api_client", None)
    if client is not None:
        return client.sanitize_for_serialization(obj)
    return obj.to_dict()
