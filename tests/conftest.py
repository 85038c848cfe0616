"""Fixtures every tier may use: the real control plane (tests/controlplane).

One control plane per pytest session, started on first use (a few seconds once built;
the build is tests/controlplane/build.py, cached under .cache/controlplane, run by
scripts/ensure-env). Tests share it, so each works in namespaces and nodes of its own
or empties what it used. In the default suite; HEADROOM_CONTROLPLANE=0 leaves out the
tests that need it.

It is stopped right after the last test that uses it, not at the end of the session:
the QEMU guest tier (tests/vm) runs later and its comparisons depend on the host's CPU
being free, so no API server may idle beside it.
"""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Generator, Iterator
from typing import Any

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent / "controlplane"))

from build import enabled as controlplane_enabled  # noqa: F401 (re-exported for tiers)

_last_user: list[str] = []          # node id of the last test that needs the plane
_running: list[Any] = []            # the session's plane while it runs


@pytest.hookimpl(trylast=True)      # after -k/-m deselection: the tests that will run
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    users = [i.nodeid for i in items if "control_plane" in getattr(i, "fixturenames", ())
             or i.get_closest_marker("controlplane")]     # asks for it at run time
    _last_user[:] = users[-1:]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    yield
    if _running and _last_user and item.nodeid == _last_user[0]:
        _running.pop().stop()       # the session fixture's own stop finds it stopped


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from build import BuildFailed, build
    from controlplane import ControlPlane

    try:
        bin_dir = build()
    except BuildFailed as exc:
        # a failure, never a skip: the real-server tests must not silently drop out
        pytest.fail(f"the control plane could not be built: {exc}")
    plane = ControlPlane(bin_dir, tmp_path_factory.mktemp("controlplane")).start()
    _running[:] = [plane]
    try:
        yield plane
    finally:
        _running.clear()
        plane.stop()
        for name in plane.procs:
            print(f"---- {name} log (tail) ----\n{plane.log(name)[-2000:]}")
