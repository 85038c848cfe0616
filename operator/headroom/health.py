"""A small HTTP endpoint for probes (and the operator's metrics): /healthz, /readyz, ...

    checks = Checks()
    checks.add("healthz", "engine loop", lambda: (age < 10, f"turned {age:.1f} s ago"))
    server = serve(9809, "0.0.0.0", checks.routes())

Each route answers 200 when all its checks pass, else 503, with one line per check
(`ok engine loop: turned 0.4 s ago`), the form Kubernetes' own /healthz?verbose uses.
A check that raises counts as failed. Runs in a daemon thread; stdlib only, so the
agent does not pay for a web framework.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# A route: () -> (HTTP status, body, content type).
Route = Callable[[], tuple[int, bytes, str]]
# A check: () -> (passed, detail).
Check = Callable[[], tuple[bool, str]]


class Checks:
    def __init__(self) -> None:
        self._checks: dict[str, list[tuple[str, Check]]] = {}

    def add(self, route: str, name: str, check: Check) -> None:
        self._checks.setdefault(route, []).append((name, check))

    def run(self, route: str) -> tuple[bool, list[str]]:
        ok, lines = True, []
        for name, check in self._checks.get(route, []):
            try:
                passed, detail = check()
            except Exception as e:   # a broken check is a failed check, not a dead server
                passed, detail = False, f"check raised {e!r}"
            ok = ok and passed
            lines.append(f"{'ok' if passed else 'failed'} {name}: {detail}")
        return ok, lines

    def route(self, route: str) -> Route:
        def answer() -> tuple[int, bytes, str]:
            ok, lines = self.run(route)
            body = "\n".join([*lines, "healthy" if ok else "unhealthy"]) + "\n"
            return (200 if ok else 503), body.encode(), "text/plain; charset=utf-8"
        return answer

    def routes(self) -> dict[str, Route]:
        return {f"/{name}": self.route(name) for name in ("healthz", "readyz")}


class _Handler(BaseHTTPRequestHandler):
    routes: Mapping[str, Route] = {}

    def do_GET(self) -> None:
        route = self.routes.get(self.path.split("?", 1)[0])
        if route is None:
            status, body, ctype = 404, b"not found\n", "text/plain; charset=utf-8"
        else:
            try:
                status, body, ctype = route()
            except Exception as e:
                status, body, ctype = 500, f"{e!r}\n".encode(), "text/plain; charset=utf-8"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass   # probes every few seconds would drown the logs


def serve(port: int, address: str, routes: Mapping[str, Route]) -> ThreadingHTTPServer | None:
    """Serve `routes` in a daemon thread; port 0 disables (returns None), -1 picks a free
    port (``server.server_port``). Stop with ``server.shutdown()``."""
    if not port:
        return None
    handler = type("Handler", (_Handler,), {"routes": dict(routes)})
    server = ThreadingHTTPServer((address, max(port, 0)), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="headroom-http", daemon=True).start()
    return server
