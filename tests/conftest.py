"""Fixtures every tier may use: the real control plane (tests/controlplane).

One control plane per pytest session, started on first use (a few seconds once built;
the build is in tests/controlplane/build.py, cached under .cache/controlplane). Tests
share it, so each works in namespaces and nodes of its own or empties what it used.

Opt-in (HEADROOM_CONTROLPLANE=1), not in the default suite: see docs/testing.md for
the measured build cost that keeps it out of CI's time limit.
"""

from __future__ import annotations

import os
import pathlib
import sys
from collections.abc import Iterator
from typing import Any

import pytest

CONTROLPLANE_DIR = pathlib.Path(__file__).parent / "controlplane"


def controlplane_enabled() -> bool:
    """Whether the tiers that need the real control plane are collected."""
    return os.environ.get("HEADROOM_CONTROLPLANE") == "1"


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if str(CONTROLPLANE_DIR) not in sys.path:
        sys.path.insert(0, str(CONTROLPLANE_DIR))
    from build import BuildFailed, build
    from controlplane import ControlPlane

    try:
        bin_dir = build()
    except BuildFailed as exc:
        # a failure, never a skip: a run that asked for the real server must not drop it
        pytest.fail(f"the control plane could not be built: {exc}")
    plane = ControlPlane(bin_dir, tmp_path_factory.mktemp("controlplane")).start()
    try:
        yield plane
    finally:
        plane.stop()
        for name in plane.procs:
            print(f"---- {name} log (tail) ----\n{plane.log(name)[-2000:]}")
