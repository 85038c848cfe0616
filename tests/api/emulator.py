"""A Kubernetes API-server emulator for tests, built on kmock.

kmock (by kopf's author) provides the HTTP server, the request log and a DSL for
test-specific reactions (`emu.handler['get /api/v1/pods'] << 500` overrides a
route); this module adds the semantics of a real API server on top: routing,
discovery, OpenAPI, watches that resume from a resourceVersion (410 Gone when too
old), Tables for kubectl, and the object store in kube_store.py. Why not kmock's
own KubernetesEmulator: see docs/operator.md ("The API-server emulator").

In process:   `with EmulatorThread() as emu: ...` (own thread and event loop, so a
              test may block on `kubectl` subprocesses); `emu.url`, `emu.store`.
Standalone:   `python tests/api/emulator.py --port N [--kubeconfig F] [--crds DIR] [--state F]`;
              `POST /_emulator/expire-watches` forces 410 Gone on every watch,
              `GET /_emulator/writes` answers the write counters.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import sys
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp.web
import attrs
import kmock
import yaml
from kmock._internal import rendering

sys.path.insert(0, str(pathlib.Path(__file__).parent))

import contextlib

import kube_discovery
from kube_selectors import SelectorError, compile_selectors
from kube_store import ApiError, Store, WatchEvent
from kube_types import ResourceType

PATCH_TYPES = {"application/json-patch+json": "json",
               "application/merge-patch+json": "merge",
               "application/strategic-merge-patch+json": "strategic",
               "application/apply-patch+yaml": "apply"}
BOOKMARK_INTERVAL = 2.0   # seconds of silence before a watch sends a BOOKMARK


@dataclass(frozen=True)
class Route:
    group: str
    version: str
    plural: str
    namespace: str
    name: str
    subresource: str


def parse_route(path: str) -> Route | None:
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 3 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 4 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = ""
    if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
        namespace, rest = rest[1], rest[2:]
    return Route(group, version, rest[0], namespace, rest[1] if len(rest) > 1 else "",
                 "/".join(rest[2:]))


def _json(payload: Any, status: int = 200) -> kmock.Response:
    return kmock.Response(status=status, payload=payload)


def _error(err: ApiError) -> kmock.Response:
    return _json(err.status(), err.code)


def _gone(message: str) -> dict[str, Any]:
    return {"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                        "status": "Failure", "message": message,
                                        "reason": "Expired", "code": 410}}


@attrs.define(kw_only=True)
class ApiServerEmulator(kmock.RawHandler):
    """kmock handler serving a Store with the API server's HTTP semantics."""

    store: Store = attrs.field(factory=Store)
    _changed: asyncio.Event = attrs.field(init=False, factory=asyncio.Event)
    _gone_epoch: int = attrs.field(init=False, default=0)
    _closing: bool = attrs.field(init=False, default=False)
    _loop: asyncio.AbstractEventLoop | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        self.fallback << self._serve
        self.store.listeners.append(self._notify)

    # ---- cross-thread notification of watches ------------------------------------------

    def _notify(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    def expire_watches(self) -> None:
        """Every open watch ends with a 410 Gone ERROR event; older versions are forgotten."""
        self.store.expire_history()
        self._gone_epoch += 1
        self._notify()

    def close_watches(self) -> None:
        self._closing = True
        self._notify()

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # kmock 0.8 crashes parsing some valid paths (e.g. /api/v1/namespaces): parse
        # without its Kubernetes interpretation then; our _serve does its own routing.
        self._loop = asyncio.get_running_loop()
        await raw_request.read()
        try:
            request = await rendering.Request._parse(raw_request, id=len(self._requests))
        except ValueError:
            request = rendering.Request(id=len(self._requests), raw_request=raw_request,
                                        url=raw_request.url, method=raw_request.method,
                                        params=dict(raw_request.query),
                                        headers=dict(raw_request.headers),
                                        body=await raw_request.read())
        self._requests.append(request)
        try:
            return await self._handle(request)
        except rendering.StreamingError as e:   # the stream had started: just end it
            raw = e.args[0]
            await raw.write_eof()
            return raw  # type: ignore[no-any-return]

    # ---- dispatch ------------------------------------------------------------------------

    async def _serve(self, request: kmock.Request) -> Any:
        raw = request._raw_request
        assert raw is not None
        path, method = raw.path, raw.method.upper()
        try:
            if path.startswith("/_emulator/"):
                return self._control(path, method)
            doc = self._discovery(path)
            if doc is not None:
                return _json(doc)
            route = parse_route(path)
            if route is None:
                raise ApiError(404, "NotFound", "the server could not find the requested "
                                                "resource")
            rt = self.store.type_for(route.group, route.version, route.plural)
            if route.subresource not in ("", "status") or \
                    (route.subresource == "status" and not rt.status_subresource):
                raise ApiError(404, "NotFound", "the server could not find the requested "
                                                "resource")
            return await self._serve_resource(raw, rt, route, method)
        except ApiError as e:
            return _error(e)
        except SelectorError as e:
            return _error(ApiError(400, "BadRequest", str(e)))

    def _control(self, path: str, method: str) -> kmock.Response:
        if path == "/_emulator/expire-watches" and method == "POST":
            self.expire_watches()
            return _json({"expired": True})
        if path == "/_emulator/writes":
            writes = [w.__dict__ for w in self.store.writes]
            return _json({"writes": writes})
        return _json({"error": "unknown control endpoint"}, 404)

    def _discovery(self, path: str) -> dict[str, Any] | None:
        types = list(self.store.types.values())
        parts = [p for p in path.split("/") if p]
        if path in ("/", ""):
            return {"paths": sorted(["/api", "/api/v1", "/apis", "/version", "/openapi/v3"])}
        if parts == ["version"]:
            return {"major": "1", "minor": "37", "gitVersion": "v1.37.0-headroom-emulator",
                    "platform": "linux/amd64"}
        if parts == ["api"]:
            return kube_discovery.api_versions()
        if parts == ["api", "v1"]:
            return kube_discovery.resource_list(types, "", "v1")
        if parts == ["apis"]:
            return kube_discovery.api_group_list(types)
        if len(parts) == 2 and parts[0] == "apis":
            group = kube_discovery.api_group(types, parts[1])
            if group is None:
                raise ApiError(404, "NotFound", "the server could not find the requested "
                                                "resource")
            return group
        if len(parts) == 3 and parts[0] == "apis":
            doc = kube_discovery.resource_list(types, parts[1], parts[2])
            if not doc["resources"]:
                raise ApiError(404, "NotFound", "the server could not find the requested "
                                                "resource")
            return doc
        if parts == ["openapi", "v3"]:
            return kube_discovery.openapi_root(types)
        if parts[:2] == ["openapi", "v3"]:
            rest = parts[2:]
            group, version = ("", rest[1]) if rest[:1] == ["api"] else (rest[1], rest[2])
            return kube_discovery.openapi_group_version(types, group, version)
        return None

    async def _serve_resource(self, raw: aiohttp.web.BaseRequest, rt: ResourceType,
                              route: Route, method: str) -> Any:
        q = raw.query
        store = self.store
        strict = q.get("fieldValidation")
        dry_run = q.get("dryRun") == "All"
        body = await raw.read()
        if method == "GET" and (q.get("watch") in ("true", "1")):
            match = compile_selectors(q.get("labelSelector"), _name_selector(
                q.get("fieldSelector"), route.name), rt.plural)
            since = q.get("resourceVersion")
            timeout = float(q.get("timeoutSeconds", 1800))
            stream = self._watch(rt, route.namespace, match, since, timeout,
                                 q.get("allowWatchBookmarks") == "true",
                                 q.get("sendInitialEvents") == "true")
            return kmock.Response(status=200, headers={"Content-Type": "application/json"},
                                  payload=stream)
        as_table = "as=Table" in raw.headers.get("Accept", "")
        if method == "GET" and route.name:
            obj = store.get(rt, route.namespace, route.name)
            return _json(kube_discovery.table(rt, [obj], store.rv) if as_table else obj)
        if method == "GET":
            match = compile_selectors(q.get("labelSelector"), q.get("fieldSelector"), rt.plural)
            if as_table:
                items, rv = store.list(rt, route.namespace or None, match)
                return _json(kube_discovery.table(rt, items, rv))
            return _json(_paginate(store, rt, route.namespace or None, match, q.get("limit"),
                                   q.get("continue")))
        if method == "POST" and not route.name:
            obj = store.create(rt, route.namespace, _load(body), dry_run=dry_run, strict=strict)
            return _json(obj, 201)
        if method == "PUT" and route.name:
            obj = store.update(rt, route.namespace, route.name, _load(body),
                               subresource=route.subresource, strict=strict, dry_run=dry_run)
            return _json(obj)
        if method == "PATCH" and route.name:
            ctype = raw.headers.get("Content-Type", "").split(";")[0].strip()
            if ctype not in PATCH_TYPES:
                raise ApiError(415, "UnsupportedMediaType", f"unsupported patch type {ctype}")
            patch_type = PATCH_TYPES[ctype]
            obj = store.patch(rt, route.namespace, route.name, patch_type,
                              _load(body, yaml_ok=patch_type == "apply"),
                              subresource=route.subresource,
                              field_manager=q.get("fieldManager"),
                              force=q.get("force") == "true", strict=strict, dry_run=dry_run)
            return _json(obj)
        if method == "DELETE" and route.name:
            options = _load(body) if body.strip() else {}
            if "propagationPolicy" in q:
                options["propagationPolicy"] = q["propagationPolicy"]
            if dry_run:
                options["dryRun"] = True
            return _json(store.delete(rt, route.namespace, route.name, options))
        if method == "DELETE":
            match = compile_selectors(q.get("labelSelector"), q.get("fieldSelector"), rt.plural)
            gone = store.delete_collection(rt, route.namespace or None, match)
            return _json({"kind": rt.list_kind, "apiVersion": rt.api_version,
                          "metadata": {}, "items": gone})
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported here")

    async def _watch(self, rt: ResourceType, namespace: str, match: Callable[[Any], bool],
                     since: str | None, timeout: float, bookmarks: bool,
                     initial_events: bool) -> AsyncIterator[Any]:
        store = self.store
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        epoch = self._gone_epoch
        yield b""       # send the headers now, as a real server does
        if since not in (None, "", "0"):
            try:
                cursor = int(since)   # type: ignore[arg-type]
            except ValueError:
                yield _gone(f"invalid resource version: {since}")
                return
            if cursor < store.compacted_rv:
                yield _gone(f"too old resource version: {cursor} ({store.compacted_rv})")
                return
        else:
            items, cursor = store.list(rt, namespace or None, match)
            for obj in items:
                yield {"type": "ADDED", "object": obj}
            if initial_events:
                yield {"type": "BOOKMARK", "object": _bookmark(rt, cursor, initial_end=True)}
        while not self._closing:
            wake = self._changed
            if self._gone_epoch != epoch or cursor < store.compacted_rv:
                yield _gone("too old resource version (expired by the test)")
                return
            for ev in store.events_after(cursor):
                out = _visible(ev, rt, namespace, match)
                if out is not None:
                    yield out
                cursor = ev.rv
            left = deadline - loop.time()
            if left <= 0:
                return
            try:
                await asyncio.wait_for(wake.wait(), min(left, BOOKMARK_INTERVAL))
            except TimeoutError:
                if bookmarks and self._gone_epoch == epoch:
                    cursor = max(cursor, min(store.rv, _last_rv(store, cursor)))
                    yield {"type": "BOOKMARK", "object": _bookmark(rt, cursor)}


def _last_rv(store: Store, cursor: int) -> int:
    """The newest rv a watch at `cursor` may claim in a bookmark (no unseen events below)."""
    pending = store.events_after(cursor)
    return pending[0].rv - 1 if pending else store.rv


def _bookmark(rt: ResourceType, rv: int, initial_end: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"resourceVersion": str(rv)}
    if initial_end:
        meta["annotations"] = {"k8s.io/initial-events-end": "true"}
    return {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta}


def _visible(ev: WatchEvent, rt: ResourceType, namespace: str,
             match: Callable[[Any], bool]) -> dict[str, Any] | None:
    """The event as this watch sees it: objects entering/leaving its selector are
    ADDED/DELETED, as with the real watch cache."""
    if ev.key != rt.key:
        return None
    if namespace and ev.obj["metadata"].get("namespace") != namespace:
        return None
    now = match(ev.obj)
    before = ev.old is not None and match(ev.old)
    obj = {**ev.obj, "apiVersion": rt.api_version, "kind": rt.kind}
    if ev.type == "ADDED":
        return {"type": "ADDED", "object": obj} if now else None
    if ev.type == "DELETED":
        return {"type": "DELETED", "object": obj} if now or before else None
    if now and before:
        return {"type": "MODIFIED", "object": obj}
    if now:
        return {"type": "ADDED", "object": obj}
    return {"type": "DELETED", "object": obj} if before else None


def _name_selector(field_selector: str | None, name: str) -> str | None:
    if not name:
        return field_selector
    by_name = f"metadata.name={name}"
    return f"{field_selector},{by_name}" if field_selector else by_name


def _paginate(store: Store, rt: ResourceType, namespace: str | None,
              match: Callable[[Any], bool], limit: str | None,
              token: str | None) -> dict[str, Any]:
    start = int(token.split(":")[0]) if token else 0
    size = int(limit) if limit and int(limit) > 0 else None
    items, rv, total = store.list_window(rt, namespace, match, start, size)
    list_rv = int(token.split(":")[1]) if token else rv
    end = start + len(items)
    meta: dict[str, Any] = {"resourceVersion": str(list_rv)}
    if end < total:
        meta["continue"] = f"{end}:{list_rv}"
        meta["remainingItemCount"] = total - end
    return {"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": meta,
            "items": items}


def _load(body: bytes, yaml_ok: bool = False) -> Any:
    try:
        return yaml.safe_load(body) if yaml_ok else json.loads(body or b"null")
    except (ValueError, yaml.YAMLError) as e:
        raise ApiError(400, "BadRequest", f"the body of the request could not be decoded: "
                                          f"{e}") from e


# ---- running it -------------------------------------------------------------------------

def write_kubeconfig(path: pathlib.Path, url: str) -> pathlib.Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
        "clusters": [{"name": "emulator", "cluster": {"server": url}}],
        "users": [{"name": "tester", "user": {"token": "emulator"}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "tester",
                                                      "namespace": "default"}}],
    }))
    return path


class EmulatorThread:
    """The emulator on a loopback port, served from its own thread and event loop."""

    def __init__(self, port: int = 0, store: Store | None = None) -> None:
        self.store = store or Store()
        self.port = port
        self.handler: ApiServerEmulator | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="api-emulator", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> EmulatorThread:
        self._thread.start()
        if not self._ready.wait(20):
            raise RuntimeError("the API emulator did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(20)

    def expire_watches(self) -> None:
        assert self._loop is not None and self.handler is not None
        self._loop.call_soon_threadsafe(self.handler.expire_watches)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.handler = ApiServerEmulator(store=self.store)
        self.handler._loop = self._loop
        async with self.handler, kmock.Server(self.handler, host="127.0.0.1",
                                              port=self.port or None) as server:
            self.port = server.port
            self._ready.set()
            await self._stop.wait()
            self.handler.close_watches()
            await asyncio.sleep(0.05)


def persist_to(store: Store, path: pathlib.Path) -> None:
    """Write the store to `path` after every change (atomically: temp file + rename), so
    that the emulator can be killed and restarted on the same state. Cost grows with
    the store: meant for small test clusters."""
    tmp = path.with_name(path.name + ".tmp")

    def save() -> None:
        tmp.write_text(json.dumps(store.dump()))
        os.replace(tmp, path)

    with store.lock:
        save()
        store.listeners.append(save)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--kubeconfig", type=pathlib.Path,
                        help="write a kubeconfig pointing at the emulator here")
    parser.add_argument("--crds", type=pathlib.Path, action="append", default=[],
                        help="YAML file or directory of manifests to load at start")
    parser.add_argument("--state", type=pathlib.Path,
                        help="keep the objects in this file across restarts (written on "
                             "every change; when it exists, --crds is not loaded again)")
    args = parser.parse_args(argv)
    store = Store()
    if args.state and args.state.exists():
        store.restore(json.loads(args.state.read_text()))
    else:
        for src in args.crds:
            files = sorted(src.glob("*.yaml")) if src.is_dir() else [src]
            store.load(doc for f in files for doc in yaml.safe_load_all(f.read_text()) if doc)
    if args.state:
        persist_to(store, args.state)
    emu = EmulatorThread(args.port, store)
    with emu:
        if args.kubeconfig:
            write_kubeconfig(args.kubeconfig, emu.url)
        print(f"listening on {emu.url}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
