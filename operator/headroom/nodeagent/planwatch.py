"""Watches this node's NodeReclaimPlan, and nothing else, in a background thread.

List with ``fieldSelector=metadata.name=<node>`` to learn the plan and the collection's
resourceVersion, then watch from that version; every event, including BOOKMARKs, moves the
version on. A watch that ends (server timeout) is resumed from the last version; ``410
Gone`` (the version is too old) means list again; any other failure (API server away,
connection reset) is retried with jittered exponential back-off, during which the agent
keeps enforcing the plan it has.

The callback receives the plan object (a dict) or None when there is none, and only when
the plan's identity (uid) or spec changed: the agent's own status writes come back as
MODIFIED events and are not passed on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

from headroom.logs import event

GROUP = "headroom.dev"
VERSION = "v1alpha1"
PLURAL = "nodereclaimplans"

log = logging.getLogger("headroom.planwatch")

PlanCallback = Callable[[dict[str, Any] | None], None]


def backoff_delay(attempt: int, base: float = 0.5, cap: float = 30.0,
                  rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based): exponential, capped,
    jittered into [50%, 100%] so that agents of a whole cluster don't reconnect in step."""
    ceiling = min(cap, base * (2 ** min(attempt, 30)))
    return ceiling * (0.5 + 0.5 * rand())


def plan_identity(plan: Mapping[str, Any] | None) -> str:
    """What decides whether a plan event is news to the agent: uid and spec."""
    if not isinstance(plan, Mapping):
        return ""
    meta = plan.get("metadata")
    uid = meta.get("uid", "") if isinstance(meta, Mapping) else ""
    # default=repr: whatever a plan holds (it is not trusted), this never raises
    return f"{uid}:{json.dumps(plan.get('spec') or {}, sort_keys=True, default=repr)}"


class GoneError(Exception):
    """The watch's resourceVersion expired: list again."""


class PlanWatcher:
    def __init__(
        self,
        api: Any,                     # kubernetes.client.CustomObjectsApi (or a fake)
        node_name: str,
        on_plan: PlanCallback,
        *,
        watch_timeout_seconds: int = 300,
        connect_timeout_seconds: float = 10.0,
        backoff: Callable[[int], float] = backoff_delay,
    ) -> None:
        self.api = api
        self.node_name = node_name
        self.on_plan = on_plan
        self.watch_timeout = watch_timeout_seconds
        self.connect_timeout = connect_timeout_seconds
        self.backoff = backoff
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._resp: Any = None
        self.resource_version: str | None = None
        self._delivered: str | None = None  # plan_identity of the last plan handed over
        # Read by the agent for logs and status (written only by the watch thread).
        self.connected = False
        self.failures = 0          # consecutive failed attempts
        self.relists = 0
        self.last_error = ""

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="plan-watch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        resp = self._resp
        if resp is not None:
            # Unblocks a read waiting for the next event; failing means already closed.
            with contextlib.suppress(Exception):
                resp.shutdown()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                if self.resource_version is None:
                    self._list()
                self._watch_once()
                self.failures = 0
            except GoneError:
                event(log, "plan_watch_relist", resource_version=self.resource_version)
                self.resource_version = None
            except Exception as e:
                if self._stopping.is_set():
                    break
                self.connected = False
                self.last_error = _describe(e)
                delay = self.backoff(self.failures)
                self.failures += 1
                event(log, "plan_watch_failed", logging.WARNING, error=self.last_error,
                      attempt=self.failures, retry_in_seconds=round(delay, 2))
                if self._stopping.wait(delay):
                    break

    # -- one list, one watch ---------------------------------------------------------

    def _selector(self) -> str:
        return f"metadata.name={self.node_name}"

    def _list(self) -> None:
        result = self.api.list_cluster_custom_object(
            GROUP, VERSION, PLURAL, field_selector=self._selector(),
            _request_timeout=(self.connect_timeout, 60),
        )
        self.relists += 1
        self._mark_connected()
        items = [i for i in result.get("items") or []
                 if (i.get("metadata") or {}).get("name") == self.node_name]
        self._deliver(items[0] if items else None)
        self.resource_version = (result.get("metadata") or {}).get("resourceVersion") or "0"

    def _watch_once(self) -> None:
        """Follows one watch request until the server ends it or the agent stops."""
        try:
            resp = self.api.list_cluster_custom_object(
                GROUP, VERSION, PLURAL, field_selector=self._selector(), watch=True,
                resource_version=self.resource_version, allow_watch_bookmarks=True,
                timeout_seconds=self.watch_timeout, _preload_content=False,
                # read timeout beyond the server's own, so a dead connection is noticed
                _request_timeout=(self.connect_timeout, self.watch_timeout + 30),
            )
        except ApiException as e:
            if e.status == 410:
                raise GoneError() from e
            raise
        self._resp = resp
        self._mark_connected()
        try:
            for ev in _events(resp):
                if self._stopping.is_set():
                    return
                self._handle(ev)
        finally:
            self._resp = None
            resp.close()
            if hasattr(resp, "release_conn"):
                resp.release_conn()

    def _mark_connected(self) -> None:
        if not self.connected:
            event(log, "plan_watch_connected", node=self.node_name,
                  resource_version=self.resource_version, after_failures=self.failures)
        self.connected = True

    def _handle(self, ev: Mapping[str, Any]) -> None:
        kind = ev.get("type")
        obj = ev.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise GoneError()
            raise ApiException(status=obj.get("code") or 500,
                               reason=f"{obj.get('reason')}: {obj.get('message')}")
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if kind == "BOOKMARK":
            if rv:
                self.resource_version = rv
            return
        if (obj.get("metadata") or {}).get("name") != self.node_name:
            return  # a server that ignores the field selector
        if kind in ("ADDED", "MODIFIED"):
            self._deliver(dict(obj))
        elif kind == "DELETED":
            self._deliver(None)
        if rv:
            self.resource_version = rv

    def _deliver(self, plan: dict[str, Any] | None) -> None:
        ident = plan_identity(plan)
        if ident == self._delivered:
            return
        self._delivered = ident
        self.on_plan(plan)


def _events(resp: Any) -> Iterator[dict[str, Any]]:
    """One JSON watch event per line of the streamed response."""
    for raw in resp:
        line = raw.strip()
        if not line:
            continue
        try:
            yield json.loads(line)
        except ValueError:
            event(log, "plan_watch_bad_line", logging.WARNING, line=line[:200])


def _describe(e: BaseException) -> str:
    if isinstance(e, ApiException):
        return f"HTTP {e.status} {e.reason}"
    return f"{type(e).__name__}: {e}"

