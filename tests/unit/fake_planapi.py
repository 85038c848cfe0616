"""A tiny in-process HTTP server that speaks just enough of the Kubernetes API for the
agent: list/watch of NodeReclaimPlans (field selector, resourceVersion, 410 Gone,
bookmarks), merge-patch of their status, and creation of core/v1 Events. Loopback only."""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from kubernetes import client

PLANS = "/apis/headroom.dev/v1alpha1/nodereclaimplans"


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


class FakePlanAPI:
    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.rv = 100
        self.plans: dict[str, dict[str, Any]] = {}
        self.log: list[tuple[int, str, dict[str, Any]]] = []   # (rv, type, object)
        self.oldest_rv = 0        # watches from before this get 410 Gone
        self.requests: list[tuple[str, str]] = []   # (method, path?query)
        self.status_patches: list[tuple[str, dict[str, Any]]] = []
        self.events: list[dict[str, Any]] = []
        self.fail_with: int | None = None   # answer every request with this HTTP status
        self.max_watch_seconds = 0.5        # end watch streams early to keep tests quick
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # -- test controls ----------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FakePlanAPI:
        self.thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def custom_objects_api(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api_client())

    def api_client(self) -> client.ApiClient:
        cfg = client.Configuration(host=self.url)
        return client.ApiClient(cfg)

    def _record(self, kind: str, obj: dict[str, Any]) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.log.append((self.rv, kind, copy.deepcopy(obj)))
        self.lock.notify_all()

    def put_plan(self, name: str, spec: dict[str, Any]) -> None:
        with self.lock:
            plan = self.plans.get(name)
            if plan is None:
                plan = {"apiVersion": "headroom.dev/v1alpha1", "kind": "NodeReclaimPlan",
                        "metadata": {"name": name, "uid": f"uid-{name}-{self.rv}",
                                     "generation": 0}}
                self.plans[name] = plan
                kind = "ADDED"
            else:
                kind = "MODIFIED"
            plan["spec"] = copy.deepcopy(spec)
            plan["metadata"]["generation"] += 1
            self._record(kind, plan)

    def delete_plan(self, name: str) -> None:
        with self.lock:
            plan = self.plans.pop(name)
            self._record("DELETED", plan)

    def compact(self) -> None:
        """Forget the event history: watches from an older version now get 410."""
        with self.lock:
            self.oldest_rv = self.rv + 1
            self.log.clear()

    def bookmark(self) -> None:
        with self.lock:
            self.rv += 1
            self.log.append((self.rv, "BOOKMARK",
                             {"kind": "NodeReclaimPlan",
                              "metadata": {"resourceVersion": str(self.rv)}}))
            self.lock.notify_all()

    # -- HTTP -------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _status(self, code: int, reason: str) -> None:
                self._send(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                  "code": code, "reason": reason, "message": reason})

            def _body(self) -> dict[str, Any]:
                n = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(n) or b"{}")

            def do_GET(self) -> None:
                url = urlparse(self.path)
                api.requests.append(("GET", self.path))
                if api.fail_with:
                    return self._status(api.fail_with, "Unavailable")
                if url.path != PLANS:
                    return self._status(404, "NotFound")
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                name = q.get("fieldSelector", "").removeprefix("metadata.name=") or None
                if q.get("watch") == "true":
                    return self._watch(int(q.get("resourceVersion") or 0), name)
                with api.lock:
                    items = [copy.deepcopy(p) for n, p in api.plans.items()
                             if name is None or n == name]
                    self._send(200, {"kind": "NodeReclaimPlanList", "items": items,
                                     "metadata": {"resourceVersion": str(api.rv)}})

            def _watch(self, since: int, name: str | None) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                deadline = time.monotonic() + api.max_watch_seconds
                with api.lock:
                    if since < api.oldest_rv:
                        self._chunk({"type": "ERROR", "object": {
                            "kind": "Status", "code": 410, "reason": "Expired",
                            "message": "too old resource version"}})
                        return self._chunk(None)
                    while time.monotonic() < deadline and not api.fail_with:
                        for rv, kind, obj in api.log:
                            if rv > since and (kind == "BOOKMARK" or name is None
                                               or obj["metadata"]["name"] == name):
                                self._chunk({"type": kind, "object": obj})
                        since = api.rv
                        api.lock.wait(max(0.0, deadline - time.monotonic()))
                self._chunk(None)

            def _chunk(self, event: dict[str, Any] | None) -> None:
                data = b"" if event is None else json.dumps(event).encode() + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

            def do_PATCH(self) -> None:
                url = urlparse(self.path)
                api.requests.append(("PATCH", self.path))
                body = self._body()
                if api.fail_with:
                    return self._status(api.fail_with, "Unavailable")
                prefix = PLANS + "/"
                if not (url.path.startswith(prefix) and url.path.endswith("/status")):
                    return self._status(404, "NotFound")
                name = url.path[len(prefix):-len("/status")]
                with api.lock:
                    plan = api.plans.get(name)
                    if plan is None:
                        return self._status(404, "NotFound")
                    api.status_patches.append((name, body))
                    plan["status"] = {**(plan.get("status") or {}), **body.get("status", {})}
                    api._record("MODIFIED", plan)
                    self._send(200, copy.deepcopy(plan))

            def do_POST(self) -> None:
                url = urlparse(self.path)
                api.requests.append(("POST", self.path))
                body = self._body()
                if api.fail_with:
                    return self._status(api.fail_with, "Unavailable")
                if not url.path.endswith("/events"):
                    return self._status(404, "NotFound")
                with api.lock:
                    api.events.append(body)
                self._send(201, body)

        return Handler
