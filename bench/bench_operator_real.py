"""Operator benchmarks against the real control plane (not a test).

The same scenarios as bench/bench_operator.py (which runs them against the API-server
emulator), here against etcd + kube-apiserver + kube-controller-manager +
kube-scheduler built from source (tests/controlplane, cached under .cache/controlplane;
the first run on a machine builds it). `headroom operator` is a subprocess with its
default debounce, authenticated with a client certificate of its own, so the API
server's audit log (level Metadata) tells its requests from the benchmark's: every
table also gives the operator's requests by verb and resource.

* ``changes`` (default 2,000 pods on 50 nodes): per policy change applied with kubectl,
  the time from `kubectl apply` to every affected plan being written, and the writes it
  cost (the goal is one per affected node).
* ``startup`` (``--pods`` may repeat, e.g. 2000 and 10000; one node per 40 pods,
  ``--policies`` policies, default 10, each selecting 1/N of the pods;
  ``--pods-per-node`` 40): cold start
  (no plans: start -> every plan written), then a restart with the plans in place
  (start -> a pod relabelled right at process start has left its plan; plan writes
  beyond that change must be 0), then a change made right after.

Nodes are plain Node objects and pods carry a nodeName (no simulated kubelet, no
scheduling): the operator plans Pending pods as it plans Running ones.

    .venv/bin/python bench/bench_operator_real.py [--scenario changes|startup|all]
        [--pods 2000 [--pods 10000]] [--nodes 50] [--policies 10]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import IO, Any

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "controlplane"))

from build import build  # noqa: E402
from controlplane import ApiError, ControlPlane, cert_user, write_kubeconfig  # noqa: E402

MI = 1 << 20
PODS_PER_NODE = 40
BIN = pathlib.Path(sys.executable).parent
GROUP = "/apis/headroom.dev/v1alpha1"
OPERATOR_USER = "bench-operator"
AUDIT_POLICY = {"apiVersion": "audit.k8s.io/v1", "kind": "Policy",
                "rules": [{"level": "Metadata"}]}


class Bench:
    """One fresh control plane, the operator's identity and the audit log."""

    def __init__(self, tmp: pathlib.Path, name: str) -> None:
        root = tmp / name
        root.mkdir()
        (root / "audit-policy.yaml").write_text(yaml.safe_dump(AUDIT_POLICY))
        self.audit = root / "audit.log"
        self.cp = ControlPlane(build(), root, apiserver_args=(
            "--audit-policy-file", str(root / "audit-policy.yaml"),
            "--audit-log-path", str(self.audit), "--audit-log-maxsize", "0",
            "--audit-log-format", "json"))
        self.cp.start()
        self.cp.install_crds(ROOT / "crds")
        self.api = self.cp.admin
        cert = self.cp.client_cert("bench-operator", OPERATOR_USER, ("system:masters",))
        self.op_kubeconfig = write_kubeconfig(root / "operator.kubeconfig", self.cp.url,
                                              self.cp.pki.ca, cert_user(cert))
        self.log = root / "operator.log"
        self._audit_offset = 0
        self._counts: collections.Counter[tuple[str, str, str]] = collections.Counter()

    def close(self) -> None:
        self.cp.stop()

    def populate(self, pods: int, nodes: int, apps: int, policies: bool) -> None:
        for n in range(nodes):
            self.api.post("/api/v1/nodes", {"metadata": {"name": f"node-{n:03d}"}})

        def one(i: int) -> None:
            self.api.post("/api/v1/namespaces/default/pods", {
                "metadata": {"name": f"pod-{i:05d}",
                             "labels": {"app": f"app-{i % apps}", "bench": "yes"}},
                "spec": {"nodeName": f"node-{i % nodes:03d}", "containers": [
                    {"name": "c", "image": "x",
                     "resources": {"limits": {"memory": "1Gi"}}}]}})
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one, range(pods)))
        for a in range(apps if policies else 0):
            self.api.post(GROUP + "/namespaces/default/memoryreclaimpolicies", _policy(
                f"app-{a}", {"app": f"app-{a}"}, {"limitPercent": 50}))

    def plans(self) -> dict[str, dict[str, Any]]:
        items = self.api.get(GROUP + "/nodereclaimplans")["items"]
        return {p["metadata"]["name"]: p for p in items}

    def relabel(self, pod: str, app: str) -> None:
        self.api.merge_patch(f"/api/v1/namespaces/default/pods/{pod}",
                             {"metadata": {"labels": {"app": app}}})

    def operator_requests(self) -> collections.Counter[tuple[str, str, str]]:
        """(verb, resource, subresource) -> the operator's requests so far (audit log,
        read on from where the last call stopped)."""
        with self.audit.open("rb") as f:
            f.seek(self._audit_offset)
            data = f.read()
        end = data.rfind(b"\n") + 1          # a line being written is read next time
        self._audit_offset += end
        for line in data[:end].splitlines():
            ev = json.loads(line)
            if ev.get("stage") != "ResponseComplete" or \
                    ev.get("user", {}).get("username") != OPERATOR_USER:
                continue
            ref = ev.get("objectRef") or {}
            self._counts[(ev["verb"], ref.get("resource", ev.get("requestURI", "")),
                          ref.get("subresource", ""))] += 1
        return collections.Counter(self._counts)

    def plan_writes(self) -> int:
        return sum(n for (verb, res, sub), n in self.operator_requests().items()
                   if res == "nodereclaimplans" and not sub
                   and verb in ("create", "patch", "update", "delete"))

    def status_writes(self) -> int:
        return sum(n for (verb, res, sub), n in self.operator_requests().items()
                   if sub == "status" and verb in ("patch", "update"))

    def settle(self, quiet: float = 3.0) -> None:
        """Until the operator has sent nothing for `quiet` seconds (watches aside)."""
        last, since = self._writes(), time.monotonic()
        while time.monotonic() - since < quiet:
            time.sleep(0.5)
            now = self._writes()
            if now != last:
                last, since = now, time.monotonic()

    def _writes(self) -> int:
        return sum(n for (verb, _, _), n in self.operator_requests().items()
                   if verb not in ("get", "list", "watch"))

    @contextmanager
    def operator(self, log: IO[str]) -> Iterator[subprocess.Popen[bytes]]:
        env = {**os.environ, "KUBECONFIG": str(self.op_kubeconfig)}
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


def _policy(name: str, selector: dict[str, str], high: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "headroom.dev/v1alpha1", "kind": "MemoryReclaimPolicy",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"selector": {"matchLabels": selector}, "memoryHigh": high}}


def _wait(predicate: Callable[[], bool], timeout: float = 1800, poll: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except (OSError, ApiError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not reached")
        time.sleep(poll)


def _requests_line(before: collections.Counter[tuple[str, str, str]],
                   after: collections.Counter[tuple[str, str, str]]) -> str:
    diff = {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)}
    return ", ".join(f"{verb} {res}{'/' + sub if sub else ''} {n}"
                     for (verb, res, sub), n in sorted(diff.items()))


# ---- scenario: start-up ------------------------------------------------------------------

def bench_startup(pods: int, apps: int, tmp: pathlib.Path, timeout: float,
                  per_node: int = PODS_PER_NODE) -> dict[str, Any]:
    nodes = max(1, pods // per_node)
    b = Bench(tmp, f"startup-{pods}-{apps}")
    out: dict[str, Any] = {"pods": pods, "nodes": nodes, "policies": apps}
    try:
        t = time.monotonic()
        b.populate(pods, nodes, apps, policies=True)
        out["populate"] = time.monotonic() - t
        per_node = pods // nodes
        with b.log.open("w") as log:
            with b.operator(log):
                t0 = time.monotonic()
                _wait(lambda: sorted(len(p["spec"].get("pods") or ())
                                     for p in b.plans().values()) == [per_node] * nodes,
                      timeout)
                out["cold"] = time.monotonic() - t0
                b.settle()
            cold = b.operator_requests()
            out["cold_requests"] = _requests_line(collections.Counter(), cold)
            plan_w, status_w = b.plan_writes(), b.status_writes()
            with b.operator(log):
                t0 = time.monotonic()
                b.relabel("pod-00000", "none")
                _wait(lambda: "pod-00000" not in {
                    e["name"] for e in b.plans()["node-000"]["spec"]["pods"]}, poll=0.1)
                out["first_round"] = time.monotonic() - t0
                t1 = time.monotonic()
                b.relabel("pod-00001", "none")
                _wait(lambda: "pod-00001" not in {
                    e["name"] for e in b.plans()["node-001"]["spec"]["pods"]}, poll=0.1)
                out["change_latency"] = time.monotonic() - t1
                out["ready"] = out["first_round"] + out["change_latency"]
                b.settle()
            out["warm_plan_writes"] = b.plan_writes() - plan_w
            out["warm_status_writes"] = b.status_writes() - status_w
            out["warm_requests"] = _requests_line(cold, b.operator_requests())
    finally:
        b.close()
    return out


def print_startup(rows: list[dict[str, Any]]) -> None:
    print("Wall clock from process start (interpreter start and imports included).\n")
    print("| pods | nodes | policies | cold start -> all plans written (s) "
          "| restart -> first round done (s) | restart -> ready for changes (s) "
          "| plan writes at restart (2 changes) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['pods']} | {r['nodes']} | {r['policies']} | {r['cold']:.2f} "
              f"| {r['first_round']:.2f} | {r['ready']:.2f} | {r['warm_plan_writes']} |")
    print("\nThe operator's requests (audit log):\n")
    for r in rows:
        print(f"* {r['pods']} pods, {r['policies']} policies, cold start: "
              f"{r['cold_requests']}")
        print(f"* {r['pods']} pods, {r['policies']} policies, restart + 2 changes: "
              f"{r['warm_requests']}")


# ---- scenario: policy changes ------------------------------------------------------------

def bench_changes(pods: int, nodes: int, tmp: pathlib.Path) -> None:
    apps = 10
    b = Bench(tmp, f"changes-{pods}")
    kubectl = str(BIN / "kubectl")
    rows = []
    try:
        b.populate(pods, nodes, apps, policies=False)
        with b.log.open("w") as log:
            with b.operator(log):
                start = time.monotonic()
                _wait(lambda: len(b.plans()) == nodes)
                startup = time.monotonic() - start
                b.settle()

                def change(label: str, selector: dict[str, str], high: dict[str, Any],
                           expect: Callable[[dict[str, Any]], bool],
                           name: str = "bench") -> None:
                    before_req = b.operator_requests()
                    plan_w, status_w = b.plan_writes(), b.status_writes()
                    before = {n: json.dumps(p["spec"]) for n, p in b.plans().items()}
                    t0 = time.monotonic()
                    subprocess.run([kubectl, "--kubeconfig", str(b.cp.kubeconfig), "apply",
                                    "-f", "-"], input=yaml.safe_dump(_policy(
                                        name, selector, high)), text=True, check=True,
                                   capture_output=True)
                    _wait(lambda: all(expect(p) for p in b.plans().values()), poll=0.2)
                    elapsed = time.monotonic() - t0
                    b.settle()
                    after = b.plans()
                    affected = sum(1 for n, p in after.items()
                                   if json.dumps(p["spec"]) != before.get(n))
                    rows.append((label, affected, elapsed, b.plan_writes() - plan_w,
                                 b.status_writes() - status_w,
                                 _requests_line(before_req, b.operator_requests())))

                names_of = {f"app-{a}": {f"pod-{i:05d}" for i in range(a, pods, apps)}
                            for a in range(apps)}

                def bytes_of(plan: dict[str, Any], app: str | None = None) -> set[int]:
                    return {e["memoryHigh"] for e in plan["spec"].get("pods") or ()
                            if app is None or e["name"] in names_of[app]}

                change("new policy, all pods (limitPercent 50)", {"bench": "yes"},
                       {"limitPercent": 50},
                       lambda p: len(p["spec"].get("pods") or ()) == pods // nodes
                       and bytes_of(p) == {512 * MI})
                change("same policy, limitPercent 50 -> 25", {"bench": "yes"},
                       {"limitPercent": 25}, lambda p: bytes_of(p) == {256 * MI})
                change("second policy, 1 app in 10 (bytes 300Mi, priority 0)",
                       {"app": "app-3"}, {"bytes": "300Mi"},
                       lambda p: bytes_of(p, "app-3") <= {300 * MI}, name="app3")
                plan_w = b.plan_writes()
            with b.operator(log):
                time.sleep(5)
                b.settle()
                restart_writes = b.plan_writes() - plan_w
    finally:
        b.close()
    print(f"{pods} pods on {nodes} nodes; operator start-up to {nodes} "
          f"plans: {startup:.2f} s; plan writes after a restart with no change: "
          f"{restart_writes}\n")
    print("| change | nodes whose plan changed | kubectl apply -> all plans written (s) "
          "| plan writes | policy status writes |")
    print("|---|---|---|---|---|")
    for label, affected, elapsed, pw, sw, _ in rows:
        print(f"| {label} | {affected} | {elapsed:.2f} | {pw} | {sw} |")
    print("\nThe operator's requests per change (audit log):\n")
    for label, *_, req in rows:
        print(f"* {label}: {req}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=["changes", "startup", "all"], default="changes")
    parser.add_argument("--pods", type=int, action="append",
                        help="pods (startup: may repeat; default 2000, and 10000 for startup)")
    parser.add_argument("--nodes", type=int, default=50, help="nodes (changes scenario)")
    parser.add_argument("--policies", type=int, default=10, help="policies (startup)")
    parser.add_argument("--pods-per-node", type=int, default=PODS_PER_NODE,
                        help="startup: pods per node (nodes = pods / this)")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="startup: give up on a cold start after this many seconds")
    args = parser.parse_args()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="bench-operator-real-"))
    print(f"logs: {tmp}", file=sys.stderr)
    if args.scenario in ("changes", "all"):
        bench_changes((args.pods or [2000])[0], args.nodes, tmp)
        print()
    if args.scenario in ("startup", "all"):
        rows = []
        for pods in args.pods or [2000, 10000]:
            rows.append(bench_startup(pods, args.policies, tmp, args.timeout,
                                      args.pods_per_node))
            print(f"done: {rows[-1]}", file=sys.stderr)
        print_startup(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
