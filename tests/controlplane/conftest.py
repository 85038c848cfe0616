"""The real-control-plane tier: etcd, kube-apiserver, kube-controller-manager and
kube-scheduler built from their Go modules (build.py), started on loopback per session.

Opt-in: HEADROOM_CONTROLPLANE=1 collects it (and builds the servers on first use); the
`control_plane` fixture is in tests/conftest.py, so the API tier can use it too. Why it
is not in the default suite: docs/testing.md (the measured cold build).
"""

from __future__ import annotations

import os
import pathlib
import sys

TESTS = pathlib.Path(__file__).resolve().parents[1]
for tier in ("chart", "unit"):
    if str(TESTS / tier) not in sys.path:
        sys.path.insert(1, str(TESTS / tier))

if os.environ.get("HEADROOM_CONTROLPLANE") != "1":   # tests/conftest.py: the same test
    collect_ignore_glob = ["test_*.py"]

