"""The health endpoint (headroom.health) and the agent's /healthz and /readyz checks."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from headroom import health
from headroom.nodeagent.agent import health_checks


class FakeEngine:
    def __init__(self, age: float | None) -> None:
        self.age = age

    def loop_age(self) -> float | None:
        return self.age


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture
def served() -> Iterator[Any]:
    servers: list[Any] = []

    def start(routes: dict[str, health.Route]) -> int:
        server = health.serve(-1, "127.0.0.1", routes)
        assert server is not None
        servers.append(server)
        return int(server.server_port)
    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def test_port_zero_disables() -> None:
    assert health.serve(0, "127.0.0.1", {}) is None


def test_agent_checks_over_http(served: Any) -> None:
    engine = FakeEngine(0.5)
    loop: dict[str, Any] = {"at": time.monotonic(), "plan_known": False}
    port = served(health_checks(engine, loop, stale=10).routes())
    status, body = get(port, "/healthz")
    assert status == 200 and "ok engine loop: turned 0.5 s ago" in body
    status, body = get(port, "/readyz")
    assert status == 503 and "failed plan: waiting" in body
    loop["plan_known"] = True
    assert get(port, "/readyz")[0] == 200
    engine.age = 30.0                              # the engine's loop stopped turning
    status, body = get(port, "/healthz?verbose")
    assert status == 503 and "failed engine loop: turned 30.0 s ago" in body
    assert get(port, "/readyz")[0] == 503
    engine.age = None                              # engine thread gone
    assert "failed engine loop: not running" in get(port, "/healthz")[1]
    engine.age = 0.1
    loop["at"] = time.monotonic() - 60             # the main loop is stuck
    status, body = get(port, "/healthz")
    assert status == 503 and "failed main loop" in body
    assert get(port, "/metrics")[0] == 404


def test_a_check_that_raises_fails_its_route(served: Any) -> None:
    checks = health.Checks()
    checks.add("healthz", "ok one", lambda: (True, "fine"))

    def broken() -> tuple[bool, str]:
        raise RuntimeError("boom")
    checks.add("healthz", "broken", broken)
    port = served(checks.routes())
    status, body = get(port, "/healthz")
    assert status == 503 and "ok ok one: fine" in body and "failed broken: check raised" in body


def test_engine_loop_age_follows_the_real_engine(fake_kernel: Any) -> None:
    from headroom.engine.engine import ReclaimEngine

    engine = ReclaimEngine(fake_kernel, cpu_budget_cores=0.5)
    assert engine.loop_age() is None
    engine.start()
    try:
        time.sleep(0.2)
        age = engine.loop_age()
        assert age is not None and age < 5
    finally:
        engine.stop()
    assert engine.loop_age() is None
