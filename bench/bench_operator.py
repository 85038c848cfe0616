"""End-to-end operator benchmark against the API-server emulator (not a test).

2,000 pods on 50 nodes; `headroom operator` runs as a subprocess, policies are
applied with kubectl. Measures, per policy change, the time from `kubectl apply`
to every affected plan being written, and the API writes it cost (the goal is
one write per affected node). Prints a Markdown table.

    .venv/bin/python bench/bench_operator.py [--pods 2000] [--nodes 50]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "api"))

from emulator import EmulatorThread, write_kubeconfig  # noqa: E402
from kube_store import Store  # noqa: E402

MI = 1 << 20
APPS = 10


def _wait(predicate: Callable[[], bool], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not reached")
        time.sleep(0.05)   # the emulator shares this process: poll gently


def _populate(store: Store, pods: int, nodes: int) -> None:
    store.load(doc for f in sorted((ROOT / "crds").glob("*.yaml"))
               for doc in yaml.safe_load_all(f.read_text()) if doc)
    rt = {t.plural: t for t in store.types.values()}
    for n in range(nodes):
        store.create(rt["nodes"], "", {"metadata": {"name": f"node-{n:03d}"}})
    for i in range(pods):
        store.create(rt["pods"], "default", {
            "metadata": {"name": f"pod-{i:05d}", "labels": {"app": f"app-{i % APPS}",
                                                            "bench": "yes"}},
            "spec": {"nodeName": f"node-{i % nodes:03d}", "containers": [
                {"name": "c", "image": "x", "resources": {"limits": {"memory": "1Gi"}}}]}})


def _plans(store: Store) -> dict[str, dict[str, Any]]:
    rt = next(t for t in store.types.values() if t.plural == "nodereclaimplans")
    return {p["metadata"]["name"]: p for p in store.list(rt, None)[0]}


def _plan_writes(store: Store) -> int:
    return sum(1 for w in store.writes if w.plural == "nodereclaimplans")


def _status_writes(store: Store) -> int:
    return sum(1 for w in store.writes if w.subresource == "status")


def _settle(store: Store, quiet: float = 2.0) -> None:
    """Wait until nothing has been written for `quiet` seconds."""
    last, since = len(store.writes), time.monotonic()
    while time.monotonic() - since < quiet:
        time.sleep(0.1)
        if len(store.writes) != last:
            last, since = len(store.writes), time.monotonic()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=2000)
    parser.add_argument("--nodes", type=int, default=50)
    args = parser.parse_args()
    store = Store()
    _populate(store, args.pods, args.nodes)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="bench-operator-"))
    print(f"operator log: {tmp / 'operator.log'}", file=sys.stderr)
    kubectl = str(pathlib.Path(sys.executable).parent / "kubectl")
    rows = []
    with EmulatorThread(store=store) as emu:
        kubeconfig = write_kubeconfig(tmp / "kubeconfig", emu.url)
        env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        log = (tmp / "operator.log").open("w")
        op = subprocess.Popen([str(pathlib.Path(sys.executable).parent / "headroom"),
                               "operator"], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            start = time.monotonic()
            _wait(lambda: len(_plans(store)) == args.nodes)
            startup = time.monotonic() - start
            _settle(store)

            def change(label: str, selector: dict[str, str], high: dict[str, Any],
                       expect: Callable[[dict[str, Any]], bool], name: str = "bench") -> None:
                plan_w, status_w = _plan_writes(store), _status_writes(store)
                before = {n: p["spec"] for n, p in _plans(store).items()}
                manifest = {"apiVersion": "headroom.dev/v1alpha1",
                            "kind": "MemoryReclaimPolicy",
                            "metadata": {"name": name, "namespace": "default"},
                            "spec": {"selector": {"matchLabels": selector},
                                     "memoryHigh": high}}
                t0 = time.monotonic()
                subprocess.run([kubectl, "--kubeconfig", str(kubeconfig), "apply", "-f", "-"],
                               input=yaml.safe_dump(manifest), text=True, check=True,
                               capture_output=True)
                _wait(lambda: all(expect(p) for p in _plans(store).values()))
                elapsed = time.monotonic() - t0
                _settle(store)
                after = _plans(store)
                affected = sum(1 for n, p in after.items() if p["spec"] != before.get(n))
                rows.append((label, affected, elapsed, _plan_writes(store) - plan_w,
                             _status_writes(store) - status_w))

            def bytes_of(plan: dict[str, Any], app: str | None = None) -> set[int]:
                return {e["memoryHigh"] for e in plan["spec"]["pods"]
                        if app is None or e["name"] in names_of(app)}

            def names_of(app: str) -> set[str]:
                return {f"pod-{i:05d}" for i in range(args.pods) if f"app-{i % APPS}" == app}

            change("new policy, all pods (limitPercent 50)", {"bench": "yes"},
                   {"limitPercent": 50},
                   lambda p: len(p["spec"]["pods"]) == args.pods // args.nodes
                   and bytes_of(p) == {512 * MI})
            change("same policy, limitPercent 50 -> 25", {"bench": "yes"},
                   {"limitPercent": 25}, lambda p: bytes_of(p) == {256 * MI})
            change("second policy, 1 app in 10 (bytes 300Mi, priority 0)", {"app": "app-3"},
                   {"bytes": "300Mi"},
                   lambda p: bytes_of(p, "app-3") <= {300 * MI}, name="app3")
            plan_w = _plan_writes(store)
            op.terminate()
            op.wait(30)
            op = subprocess.Popen([str(pathlib.Path(sys.executable).parent / "headroom"),
                                   "operator"], env=env, stdout=log, stderr=subprocess.STDOUT)
            time.sleep(5)
            _settle(store)
            restart_writes = _plan_writes(store) - plan_w
        finally:
            op.terminate()
            op.wait(30)
            log.close()
    print(f"{args.pods} pods on {args.nodes} nodes; operator start-up to {args.nodes} "
          f"plans: {startup:.2f} s; plan writes after a restart with no change: "
          f"{restart_writes}\n")
    print("| change | nodes whose plan changed | kubectl apply -> all plans written (s) "
          "| plan writes | policy status writes |")
    print("|---|---|---|---|---|")
    for label, affected, elapsed, pw, sw in rows:
        print(f"| {label} | {affected} | {elapsed:.2f} | {pw} | {sw} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
