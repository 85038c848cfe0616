"""Fixtures of the API tier: an emulator per test (`cluster`), the real control plane
(`real_cluster`: tests/controlplane, shared by the session and emptied around each
test), and the operator (thread or process) on whichever `cluster` a module uses.

Modules whose tests hold on both servers (test_operator.py, test_e2e_operator_agent.py)
override `cluster` with one parametrized over api_helpers.BACKENDS: the emulator always,
the real control plane too unless HEADROOM_CONTROLPLANE=0 (tests/conftest.py).
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(pathlib.Path(__file__).parent))
# the fake cgroup trees of the unit tier (fake_cgroup_tree, fake_kubepods): modules with
# names of their own, never `conftest`, so both tiers can run in one session
sys.path.insert(1, str(pathlib.Path(__file__).parents[1] / "unit"))
sys.path.insert(2, str(pathlib.Path(__file__).parents[1] / "controlplane"))

from api_helpers import CRDS, VENV_BIN, Cluster, OperatorThread
from emulator import EmulatorThread, write_kubeconfig
from kube_store import Store


@pytest.fixture
def emulator_cluster(tmp_path: pathlib.Path) -> Iterator[Cluster]:
    store = Store()
    store.load(doc for f in sorted(CRDS.glob("*.yaml"))
               for doc in yaml.safe_load_all(f.read_text()) if doc)
    with EmulatorThread(store=store) as emu:
        yield Cluster(emu, write_kubeconfig(tmp_path / "kubeconfig", emu.url))


@pytest.fixture
def real_cluster(control_plane: Any) -> Iterator[Any]:
    from real_cluster import RealCluster

    real = RealCluster(control_plane)
    real.reset()
    yield real
    real.reset()


@pytest.fixture
def cluster(emulator_cluster: Cluster) -> Cluster:
    return emulator_cluster


@pytest.fixture
def operator(cluster: Cluster) -> Iterator[OperatorThread]:
    op = OperatorThread(cluster.kubeconfig).start()
    yield op
    op.stop()


@pytest.fixture
def operator_process(cluster: Cluster, tmp_path: pathlib.Path) -> Iterator[subprocess.Popen[str]]:
    """`headroom operator` as a subprocess; KUBECONFIG is set before it imports anything."""
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig),
           "HEADROOM_DEBOUNCE_SECONDS": "0.1", "HEADROOM_MAX_DELAY_SECONDS": "1"}
    log = (tmp_path / "operator.log").open("w")
    proc = subprocess.Popen([str(VENV_BIN / "headroom"), "operator", "--log-level", "debug"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    yield proc
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()
