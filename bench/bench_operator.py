"""End-to-end operator benchmarks against the API-server emulator (not a test).

`headroom operator` runs as a subprocess against the emulator (same process as this
script). Two scenarios, each printing a Markdown table:

* ``changes`` (default 2,000 pods on 50 nodes): per policy change applied with
  kubectl, the time from `kubectl apply` to every affected plan being written, and
  the API writes it cost (the goal is one write per affected node).
* ``startup`` (``--pods`` may be given several times, e.g. 2000 and 10000; one node
  per 40 pods, one policy per app): a cold start (no plans yet: start -> every plan
  written), then a restart with the plans in place (start -> first round done, seen
  as a pod relabelled right at process start reaching its plan; plan writes beyond
  that one change must be 0), then the latency of a change made right after that
  round (start -> ready for changes = first round + that latency).

    .venv/bin/python bench/bench_operator.py [--scenario changes|startup|all]
        [--pods 2000 [--pods 10000]] [--nodes 50]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "api"))

from emulator import EmulatorThread, write_kubeconfig  # noqa: E402
from kube_store import Store  # noqa: E402

MI = 1 << 20
APPS = 10
PODS_PER_NODE = 40
BIN = pathlib.Path(sys.executable).parent


def _wait(predicate: Callable[[], bool], timeout: float = 1800) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not reached")
        time.sleep(0.05)   # the emulator shares this process: poll gently


def _rt(store: Store, plural: str) -> Any:
    return next(t for t in store.types.values() if t.plural == plural)


def _populate(store: Store, pods: int, nodes: int, policies: bool = False) -> None:
    store.load(doc for f in sorted((ROOT / "crds").glob("*.yaml"))
               for doc in yaml.safe_load_all(f.read_text()) if doc)
    for n in range(nodes):
        store.create(_rt(store, "nodes"), "", {"metadata": {"name": f"node-{n:03d}"}})
    for i in range(pods):
        store.create(_rt(store, "pods"), "default", {
            "metadata": {"name": f"pod-{i:05d}", "labels": {"app": f"app-{i % APPS}",
                                                            "bench": "yes"}},
            "spec": {"nodeName": f"node-{i % nodes:03d}", "containers": [
                {"name": "c", "image": "x", "resources": {"limits": {"memory": "1Gi"}}}]}})
    for a in range(APPS if policies else 0):
        store.create(_rt(store, "memoryreclaimpolicies"), "default", _policy(
            f"app-{a}", {"app": f"app-{a}"}, {"limitPercent": 50}))


def _policy(name: str, selector: dict[str, str], high: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "headroom.dev/v1alpha1", "kind": "MemoryReclaimPolicy",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"selector": {"matchLabels": selector}, "memoryHigh": high}}


def _plans(store: Store) -> dict[str, dict[str, Any]]:
    """The stored plans themselves, not copies (polled: copying would starve the
    emulator); read only. Writes replace stored objects rather than changing them."""
    with store.lock:
        return {p["metadata"]["name"]: p
                for p in store.objects[_rt(store, "nodereclaimplans").key].values()}


def _plan_sizes(store: Store) -> list[int]:
    """Pods per plan, read without copying (polled: must not starve the emulator)."""
    with store.lock:
        return [len(p["spec"].get("pods") or ())
                for p in store.objects[_rt(store, "nodereclaimplans").key].values()]


def _plan_pods(store: Store, node: str) -> set[str] | None:
    with store.lock:
        plan = store.objects[_rt(store, "nodereclaimplans").key].get(("", node))
        return None if plan is None else {e["name"] for e in plan["spec"].get("pods") or ()}


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


def _relabel(store: Store, pod: str, app: str) -> None:
    store.patch(_rt(store, "pods"), "default", pod, "merge",
                {"metadata": {"labels": {"app": app}}})


@contextmanager
def _operator(kubeconfig: pathlib.Path, log: IO[str]) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    proc = subprocess.Popen([str(BIN / "headroom"), "operator"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _operator_clock(log_path: pathlib.Path, offset: int) -> tuple[float | None, float | None]:
    """(caches synced, first round done) in seconds after the operator's own start
    (operate(), i.e. after interpreter start and imports), from its log; None where it
    does not log them (the kopf-index operator did not)."""
    synced: tuple[datetime.datetime, float] | None = None
    first: datetime.datetime | None = None
    for line in log_path.read_text()[offset:].splitlines():
        try:
            doc = json.loads(line)   # headroom's JSON log lines (headroom.logs)
        except ValueError:
            continue
        if not isinstance(doc, dict) or doc.get("logger") != "headroom.operator":
            continue
        msg = str(doc.get("msg", ""))
        stamp = datetime.datetime.fromisoformat(str(doc["time"]).replace("Z", "+00:00"))
        m = re.match(r"caches synced: .* in ([0-9.]+) s after start", msg)
        if m and synced is None:
            synced = (stamp, float(m.group(1)))
        elif msg.startswith("round 1: ") and first is None:
            first = stamp
    if synced is None:
        return None, None
    if first is None:
        return synced[1], None
    return synced[1], synced[1] + (first - synced[0]).total_seconds()


# ---- scenario: start-up ------------------------------------------------------------------

def bench_startup(pods: int, tmp: pathlib.Path, timeout: float) -> dict[str, Any]:
    nodes = max(1, pods // PODS_PER_NODE)
    store = Store()
    _populate(store, pods, nodes, policies=True)
    log_path = tmp / f"operator-startup-{pods}.log"
    out: dict[str, Any] = {"pods": pods, "nodes": nodes, "timeout": timeout}
    with EmulatorThread(store=store) as emu, log_path.open("w") as log:
        kubeconfig = write_kubeconfig(tmp / "kubeconfig", emu.url)
        per_node = pods // nodes
        # cold: no plans yet; the first round writes one per node
        with _operator(kubeconfig, log):
            t0 = time.monotonic()
            try:
                _wait(lambda: _plan_sizes(store) == [per_node] * nodes, timeout)
            except TimeoutError:
                out["cold"] = None     # gave up: no restart measured
                return out
            out["cold"] = time.monotonic() - t0
            _settle(store)
        # warm: plans in place; a pod relabelled right at start must reach its plan
        plan_w, status_w = _plan_writes(store), _status_writes(store)
        offset = log_path.stat().st_size
        with _operator(kubeconfig, log):
            t0 = time.monotonic()
            _relabel(store, "pod-00000", "none")
            _wait(lambda: "pod-00000" not in (_plan_pods(store, "node-000") or ()))
            out["first_round"] = time.monotonic() - t0
            t1 = time.monotonic()
            _relabel(store, "pod-00001", "none")
            _wait(lambda: "pod-00001" not in (_plan_pods(store, "node-001") or ()))
            out["change_latency"] = time.monotonic() - t1
            out["ready"] = out["first_round"] + out["change_latency"]
            _settle(store)
            out["warm_plan_writes"] = _plan_writes(store) - plan_w
            out["warm_status_writes"] = _status_writes(store) - status_w
            log.flush()
            out["synced"], out["own_first_round"] = _operator_clock(log_path, offset)
    return out


def print_startup(rows: list[dict[str, Any]]) -> None:
    print("Wall clock from process start (interpreter start and imports included); "
          "in brackets the operator's own clock from operate() (its log).\n")
    print("| pods | nodes | cold start -> all plans written (s) | restart -> caches synced (s) "
          "| restart -> first round done (s) | restart -> ready for changes (s) "
          "| plan writes at restart (2 changes) |")
    print("|---|---|---|---|---|---|---|")

    def own(value: float | None) -> str:
        return "" if value is None else f" [{value:.2f}]"

    for r in rows:
        if r["cold"] is None:
            print(f"| {r['pods']} | {r['nodes']} | > {r['timeout']:.0f} (gave up) "
                  "| - | - | - | - |")
            continue
        print(f"| {r['pods']} | {r['nodes']} | {r['cold']:.2f} | {own(r['synced']) or '-'} "
              f"| {r['first_round']:.2f}{own(r['own_first_round'])} | {r['ready']:.2f} "
              f"| {r['warm_plan_writes']} |")


# ---- scenario: policy changes ------------------------------------------------------------

def bench_changes(pods: int, nodes: int, tmp: pathlib.Path) -> None:
    store = Store()
    _populate(store, pods, nodes)
    kubectl = str(BIN / "kubectl")
    rows = []
    with EmulatorThread(store=store) as emu, (tmp / "operator.log").open("w") as log:
        kubeconfig = write_kubeconfig(tmp / "kubeconfig", emu.url)
        with _operator(kubeconfig, log):
            start = time.monotonic()
            _wait(lambda: len(_plan_sizes(store)) == nodes)
            startup = time.monotonic() - start
            _settle(store)

            def change(label: str, selector: dict[str, str], high: dict[str, Any],
                       expect: Callable[[dict[str, Any]], bool], name: str = "bench") -> None:
                plan_w, status_w = _plan_writes(store), _status_writes(store)
                before = {n: json.dumps(p["spec"]) for n, p in _plans(store).items()}
                t0 = time.monotonic()
                subprocess.run([kubectl, "--kubeconfig", str(kubeconfig), "apply", "-f", "-"],
                               input=yaml.safe_dump(_policy(name, selector, high)), text=True,
                               check=True, capture_output=True)
                _wait(lambda: all(expect(p) for p in _plans(store).values()))
                elapsed = time.monotonic() - t0
                _settle(store)
                after = _plans(store)
                affected = sum(1 for n, p in after.items()
                               if json.dumps(p["spec"]) != before.get(n))
                rows.append((label, affected, elapsed, _plan_writes(store) - plan_w,
                             _status_writes(store) - status_w))

            names_of = {f"app-{a}": {f"pod-{i:05d}" for i in range(a, pods, APPS)}
                        for a in range(APPS)}

            def bytes_of(plan: dict[str, Any], app: str | None = None) -> set[int]:
                return {e["memoryHigh"] for e in plan["spec"]["pods"]
                        if app is None or e["name"] in names_of[app]}

            change("new policy, all pods (limitPercent 50)", {"bench": "yes"},
                   {"limitPercent": 50},
                   lambda p: len(p["spec"]["pods"]) == pods // nodes
                   and bytes_of(p) == {512 * MI})
            change("same policy, limitPercent 50 -> 25", {"bench": "yes"},
                   {"limitPercent": 25}, lambda p: bytes_of(p) == {256 * MI})
            change("second policy, 1 app in 10 (bytes 300Mi, priority 0)", {"app": "app-3"},
                   {"bytes": "300Mi"},
                   lambda p: bytes_of(p, "app-3") <= {300 * MI}, name="app3")
            plan_w = _plan_writes(store)
        with _operator(kubeconfig, log):
            time.sleep(5)
            _settle(store)
            restart_writes = _plan_writes(store) - plan_w
    print(f"{pods} pods on {nodes} nodes; operator start-up to {nodes} "
          f"plans: {startup:.2f} s; plan writes after a restart with no change: "
          f"{restart_writes}\n")
    print("| change | nodes whose plan changed | kubectl apply -> all plans written (s) "
          "| plan writes | policy status writes |")
    print("|---|---|---|---|---|")
    for label, affected, elapsed, pw, sw in rows:
        print(f"| {label} | {affected} | {elapsed:.2f} | {pw} | {sw} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=["changes", "startup", "all"], default="changes")
    parser.add_argument("--pods", type=int, action="append",
                        help="pods (startup: may repeat; default 2000, and 10000 for startup)")
    parser.add_argument("--nodes", type=int, default=50, help="nodes (changes scenario)")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="startup: give up on a cold start after this many seconds")
    args = parser.parse_args()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="bench-operator-"))
    print(f"operator logs: {tmp}", file=sys.stderr)
    if args.scenario in ("changes", "all"):
        bench_changes((args.pods or [2000])[0], args.nodes, tmp)
        print()
    if args.scenario in ("startup", "all"):
        rows = []
        for pods in args.pods or [2000, 10000]:
            rows.append(bench_startup(pods, tmp, args.timeout))
            print(f"done: {rows[-1]}", file=sys.stderr)
        print_startup(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
