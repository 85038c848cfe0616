"""The operator's reads: one list + watch per kind into a plain in-memory cache.

Why not kopf's indexes: until every indexed object is indexed, kopf parks each
object's worker on one shared condition that it notifies once per object, so
start-up wake-ups grow with objects² (54 s at 2,000 pods, docs/benchmarks.md).
Here each kind is listed once (paginated), then watched from the list's
resourceVersion; an event costs a dict update. An event that brings nothing newer
than the cached object (same or older resourceVersion) changes nothing and pokes
no one. A relist (410 Gone) replaces the cache and reports a change only when the
set of (object, resourceVersion) differs.

Each kind runs in its own thread with the `kubernetes` client's ApiClient (its
credentials handling: token refresh, client certificates, CA), decoding JSON
itself rather than into the client's models (much faster at 10k pods).
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from headroom.api import GROUP, VERSION
from headroom.controller.kubeclient import api_request, collection_path

log = logging.getLogger("headroom.operator.informer")

Key = tuple[str, str]          # (namespace or "", name)


@dataclass(frozen=True)
class Kind:
    name: str       # the cache's name (e.g. "pods")
    path: str       # the collection, all namespaces
    slim: Callable[[dict[str, Any]], dict[str, Any]] | None = None   # what is kept


def object_key(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return (meta.get("namespace") or "", meta.get("name") or "")


def resource_version(obj: Mapping[str, Any] | None) -> str:
    return str(((obj or {}).get("metadata") or {}).get("resourceVersion") or "")


def is_newer(new: str, old: str) -> bool:
    """Whether resourceVersion `new` may carry news over `old`. Numeric versions (what
    Kubernetes and the emulator use, though clients should not rely on it) compare as
    numbers; anything else is news whenever it differs."""
    if new.isdigit() and old.isdigit():
        return int(new) > int(old)
    return new != old


def slim_pod(pod: dict[str, Any]) -> dict[str, Any]:
    """The parts of a Pod that resolve() and the plans read (headroom.api.pod): a real
    pod is mostly managedFields, annotations, env, volumes and container statuses,
    which 10,000 cached pods need not keep. Tested against resolve() on full pods."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}

    def containers(key: str) -> list[dict[str, Any]]:
        return [{k: c[k] for k in ("name", "resources", "restartPolicy") if k in c}
                for c in spec.get(key) or ()]

    out_spec = {k: spec[k] for k in ("nodeName", "resources", "overhead") if k in spec}
    out_spec["containers"] = containers("containers")
    if spec.get("initContainers"):
        out_spec["initContainers"] = containers("initContainers")
    return {"metadata": {k: v for k, v in meta.items()
                         if k not in ("managedFields", "annotations", "ownerReferences")},
            "spec": out_spec,
            "status": {k: status[k] for k in ("phase", "qosClass") if k in status}}


def _meta(obj: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    return {k: meta[k] for k in keys if k in meta}


_ID = ("name", "namespace", "uid", "resourceVersion")


def slim_policy(obj: dict[str, Any]) -> dict[str, Any]:
    """A policy as resolution, its status and its Events read it (no managedFields, no
    annotations: kubectl's last-applied copy alone doubles a policy)."""
    out = {k: obj[k] for k in ("apiVersion", "kind", "spec", "status") if k in obj}
    out["metadata"] = _meta(obj, (*_ID, "generation"))
    return out


def slim_namespace(obj: dict[str, Any]) -> dict[str, Any]:
    """Name and labels (namespaceSelector reads them)."""
    return {"metadata": _meta(obj, (*_ID, "labels"))}


def slim_node(obj: dict[str, Any]) -> dict[str, Any]:
    """Name and uid (a plan's ownerReference): a Node's status (images, conditions)
    is most of its size and nothing here reads it."""
    return {"metadata": _meta(obj, _ID)}


_OUTCOME = ("uid", "applied", "memoryHigh", "reclaimedBytes")


def slim_plan(obj: dict[str, Any]) -> dict[str, Any]:
    """The spec (compared with what the operator decides) and, of the agent's status,
    what policy statuses aggregate (status.plan_outcomes)."""
    out: dict[str, Any] = {"metadata": _meta(obj, _ID)}
    if "spec" in obj:
        out["spec"] = obj["spec"]
    status = obj.get("status")
    if isinstance(status, Mapping):
        out["status"] = {"pods": [{k: e[k] for k in _OUTCOME if k in e}
                                  for e in status.get("pods") or () if isinstance(e, Mapping)]}
    return out


KINDS = (
    Kind("policies", collection_path(GROUP, VERSION, "memoryreclaimpolicies"), slim_policy),
    Kind("cluster_policies", collection_path(GROUP, VERSION, "clustermemoryreclaimpolicies"),
         slim_policy),
    Kind("pods", collection_path("", "v1", "pods"), slim_pod),
    Kind("namespaces", collection_path("", "v1", "namespaces"), slim_namespace),
    Kind("nodes", collection_path("", "v1", "nodes"), slim_node),
    Kind("plans", collection_path(GROUP, VERSION, "nodereclaimplans"), slim_plan),
)


class ObjectCache:
    """One kind's objects by (namespace, name). Stored objects are never mutated (an
    event replaces the whole object), so a snapshot may share them with readers."""

    def __init__(self, track: bool = False) -> None:
        self._lock = threading.Lock()
        self._objects: dict[Key, dict[str, Any]] = {}
        # keys changed since the last take_changes() (None: not tracked)
        self._changed: set[Key] | None = set() if track else None

    def __len__(self) -> int:
        return len(self._objects)

    def replace(self, items: Iterable[dict[str, Any]]) -> bool:
        """A full listing; True if anything differs from what was cached."""
        fresh = {object_key(o): o for o in items}
        with self._lock:
            old = self._objects
            if self._changed is None:
                changed = fresh.keys() != old.keys() or any(
                    resource_version(o) != resource_version(old[k]) for k, o in fresh.items())
            else:
                keys = {k for k, o in fresh.items()
                        if k not in old or resource_version(o) != resource_version(old[k])}
                keys |= old.keys() - fresh.keys()
                self._changed |= keys
                changed = bool(keys)
            self._objects = fresh
        return changed

    def apply(self, type_: str, obj: dict[str, Any]) -> bool:
        """A watch event (ADDED / MODIFIED / DELETED); True if the cache changed."""
        key = object_key(obj)
        with self._lock:
            old = self._objects.get(key)
            if type_ == "DELETED":
                changed = self._objects.pop(key, None) is not None
            elif old is not None and not is_newer(resource_version(obj), resource_version(old)):
                return False
            else:
                self._objects[key] = obj
                changed = True
            if changed and self._changed is not None:
                self._changed.add(key)
            return changed

    def take_changes(self) -> list[tuple[Key, dict[str, Any] | None]]:
        """(key, object now or None if gone) of every key changed since the last call
        (tracked caches only): what the reconciler's incremental rounds apply."""
        with self._lock:
            if not self._changed:
                return []
            keys, self._changed = self._changed, set()
            return [(k, self._objects.get(k)) for k in keys]

    def values(self) -> list[dict[str, Any]]:
        """The objects in a stable order (by namespace, then name)."""
        with self._lock:
            items = list(self._objects.items())
        items.sort(key=lambda kv: kv[0])
        return [obj for _, obj in items]


class Gone(Exception):
    """The watch's resourceVersion is too old: list again."""


def backoff_delay(attempt: int, base: float = 0.1, cap: float = 10.0) -> float:
    """Seconds before retry `attempt` (0-based): exponential, capped, jittered 50-100%."""
    return min(cap, base * 2 ** min(attempt, 20)) * (0.5 + 0.5 * random.random())


class Informer:
    """List + watch of one kind into an ObjectCache, in a daemon thread."""

    def __init__(self, api: Any, kind: Kind, cache: ObjectCache,
                 on_change: Callable[[], None], on_synced: Callable[[], None], *,
                 page_size: int = 500, watch_timeout: int = 300,
                 connect_timeout: float = 10.0) -> None:
        self.api = api                  # kubernetes.client.ApiClient
        self.kind = kind
        self.cache = cache
        self.on_change = on_change
        self.on_synced = on_synced
        self.page_size = page_size
        self.watch_timeout = watch_timeout
        self.connect_timeout = connect_timeout
        self.resource_version = ""
        self.synced = False
        self.lists = 0
        self._stopping = threading.Event()
        self._resp: Any = None
        self._thread = threading.Thread(target=self._run, name=f"watch-{kind.name}",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        resp = self._resp
        if resp is not None:     # unblock a read waiting for the next event
            with contextlib.suppress(Exception):
                resp.shutdown()
        self._thread.join(timeout)

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                if not self.resource_version:
                    self._list()
                self._watch()
                failures = 0
            except Gone:
                log.info("%s: resourceVersion %s expired; listing again", self.kind.name,
                         self.resource_version)
                self.resource_version = ""
            except Exception as e:
                if self._stopping.is_set():
                    return
                delay = backoff_delay(failures)
                failures += 1
                log.warning("%s: list/watch failed (%s); retrying in %.1f s", self.kind.name,
                            _describe(e), delay)
                if self._stopping.wait(delay):
                    return

    def _get(self, read_timeout: float, query: list[tuple[str, Any]]) -> Any:
        """The raw response (JSON decoded here, not into the client's models)."""
        return api_request(self.api, "GET", self.kind.path, query=query,
                           timeout=(self.connect_timeout, read_timeout))

    def _list(self) -> None:
        items: list[dict[str, Any]] = []
        token, rv = "", ""
        while True:
            try:
                query: list[tuple[str, Any]] = [("limit", self.page_size)]
                page = json.loads(self._get(120, query + ([("continue", token)] if token
                                                          else [])).data)
            except ApiException as e:
                if e.status == 410 and token:     # continue token expired: start over
                    items, token, rv = [], "", ""
                    continue
                raise
            meta = page.get("metadata") or {}
            rv = rv or str(meta.get("resourceVersion") or "")   # the list's snapshot
            slim, listed = self.kind.slim, page.get("items") or ()
            items.extend(map(slim, listed) if slim else listed)
            token = meta.get("continue") or ""
            if not token:
                break
        changed = self.cache.replace(items)
        self.resource_version = rv or "0"
        self.lists += 1
        if not self.synced:
            self.synced = True
            self.on_synced()
        if changed:
            self.on_change()

    def _watch(self) -> None:
        try:
            # read timeout beyond the server's own, so a dead connection is noticed
            resp = self._get(self.watch_timeout + 30, [
                ("watch", "true"), ("resourceVersion", self.resource_version),
                ("allowWatchBookmarks", "true"), ("timeoutSeconds", self.watch_timeout)])
        except ApiException as e:
            if e.status == 410:
                raise Gone() from e
            raise
        self._resp = resp
        try:
            for line in resp:
                if self._stopping.is_set():
                    return
                if line.strip():
                    self._handle(json.loads(line))
        finally:
            self._resp = None
            with contextlib.suppress(Exception):
                resp.release_conn()

    def _handle(self, ev: Mapping[str, Any]) -> None:
        type_, obj = ev.get("type"), ev.get("object") or {}
        if type_ == "ERROR":
            if obj.get("code") == 410:
                raise Gone()
            raise ApiException(status=obj.get("code") or 500,
                               reason=f"{obj.get('reason')}: {obj.get('message')}")
        kept = self.kind.slim(obj) if self.kind.slim else dict(obj)
        if type_ in ("ADDED", "MODIFIED", "DELETED") and self.cache.apply(type_, kept):
            self.on_change()
        rv = resource_version(obj)
        if rv:
            self.resource_version = rv


class Informers:
    """All kinds the operator reads; `synced` is set once each has listed once."""

    def __init__(self, api: Any, on_change: Callable[[], None],
                 on_synced: Callable[[], None], *, watch_timeout: int = 300,
                 page_size: int = 500, track: bool = False) -> None:
        self.caches = {k.name: ObjectCache(track) for k in KINDS}
        self._pending = len(KINDS)
        self._lock = threading.Lock()
        self._on_synced = on_synced
        self.started = time.monotonic()
        self.informers = [Informer(api, k, self.caches[k.name], on_change, self._one_synced,
                                   watch_timeout=watch_timeout, page_size=page_size)
                          for k in KINDS]

    def _one_synced(self) -> None:
        with self._lock:
            self._pending -= 1
            done = self._pending == 0
        if done:
            self._on_synced()

    def start(self) -> None:
        self.started = time.monotonic()
        for informer in self.informers:
            informer.start()

    def stop(self) -> None:
        for informer in self.informers:
            informer._stopping.set()
        for informer in self.informers:
            informer.stop()

    def objects(self) -> int:
        return sum(len(c) for c in self.caches.values())

    def take_changes(self) -> list[tuple[str, Key, dict[str, Any] | None]]:
        """(cache name, key, object or None) changed in any cache since the last call."""
        return [(name, key, obj) for name, cache in self.caches.items()
                for key, obj in cache.take_changes()]


def _describe(e: BaseException) -> str:
    if isinstance(e, ApiException):
        return f"HTTP {e.status} {e.reason}"
    return f"{type(e).__name__}: {str(e)[:300]}"
