"""Fixtures of the API-emulator tier: an emulator per test, the operator (thread or process)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from collections.abc import Iterator

import pytest
import yaml

sys.path.insert(0, str(pathlib.Path(__file__).parent))
# the fake cgroup trees of the unit tier (fake_cgroup_tree, fake_kubepods): modules with
# names of their own, never `conftest`, so both tiers can run in one session
sys.path.insert(1, str(pathlib.Path(__file__).parents[1] / "unit"))

from api_helpers import CRDS, VENV_BIN, Cluster, OperatorThread
from emulator import EmulatorThread, write_kubeconfig
from kube_store import Store


@pytest.fixture
def cluster(tmp_path: pathlib.Path) -> Iterator[Cluster]:
    store = Store()
    store.load(doc for f in sorted(CRDS.glob("*.yaml"))
               for doc in yaml.safe_load_all(f.read_text()) if doc)
    with EmulatorThread(store=store) as emu:
        yield Cluster(emu, write_kubeconfig(tmp_path / "kubeconfig", emu.url))


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
