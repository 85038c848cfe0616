"""The real-control-plane tier: etcd, kube-apiserver, kube-controller-manager and
kube-scheduler built from their Go modules (build.py), started on loopback per session.

In the default suite (HEADROOM_CONTROLPLANE=0 leaves it out); scripts/ensure-env
builds the servers, or the first test that needs them does. The `control_plane`
fixture is in tests/conftest.py, so the API tier can use it too.
"""

from __future__ import annotations

import pathlib
import sys

from build import enabled

TESTS = pathlib.Path(__file__).resolve().parents[1]
for tier in ("chart", "unit"):
    if str(TESTS / tier) not in sys.path:
        sys.path.insert(1, str(TESTS / tier))

if not enabled():
    collect_ignore_glob = ["test_*.py"]

