"""Cluster mode on a real kernel and a real API server (issues 4 and 10): etcd and
kube-apiserver (built by tests/controlplane/build.py, static, run from the checkout),
`headroom operator` and `headroom agent` as processes inside the QEMU guest, over a
kubepods hierarchy of real cgroups (systemd driver layout). No controller-manager,
scheduler or kubelet: pods are created bound to the node.

Node + two Burstable pods (a page-cache streaming pod and an idle pod) -> their cgroups
made with the uids the API server assigned -> kubectl apply of a policy -> the pods' real
memory.high files hold the plan's values -> the streaming pod reads a file three times
its memory.high and stays (nearly) clear of memory.high, compared with the same stream
in a plain cgroup at the same memory.high without the agent -> the agent's status
(applied pods, bytes reclaimed) is on the plan -> kubectl delete of the policy puts
memory.high back to max.

Only loopback networking; everything the test starts is ended by PID at teardown.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import guest_support
import pytest
import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "controlplane"))
import build
from controlplane import ApiError, ControlPlane

pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[3]
CGROUP = guest_support.CGROUP_ROOT
SCRATCH = pathlib.Path("/mnt/scratch")
MI = 1 << 20
HIGH = 128 * MI              # the policy's memory.high
STREAM_BYTES = 3 * HIGH      # the streaming pod reads this much, once
NODE = "guest-node"
KUBEPODS = "kubepods.slice/kubepods-burstable.slice"
POLICY = {
    "apiVersion": "headroom.dev/v1alpha1", "kind": "MemoryReclaimPolicy",
    "metadata": {"name": "cache", "namespace": "default"},
    "spec": {"selector": {"matchLabels": {"tier": "cache"}},
             "memoryHigh": {"bytes": "128Mi"},
             "reclaim": {"mode": "Watermark", "nodeCpuBudget": "1"}},
}


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             detail: Callable[[], Any] = lambda: "") -> Any:
    """Poll until truthy; the timeout only guards against hangs (TCG is slow)."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} "
                                 f"{detail()}")
        time.sleep(0.2)
    return value


class Phases:
    """Progress lines with the guest time since the test began (TCG is slow: where it goes)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __call__(self, what: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f} s] {what}", flush=True)


def _pod(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": {"tier": "cache"}},
            "spec": {"nodeName": NODE, "containers": [{
                "name": "app", "image": "busybox",
                "resources": {"requests": {"memory": "64Mi"}, "limits": {"memory": "1Gi"}}}]}}


def kubepods_cgroup(rel: str, *, children: bool) -> pathlib.Path:
    """mkdir a cgroup below the root (its parent has +memory for children); `children`:
    +memory in its own subtree_control too, as systemd does for slices."""
    path = CGROUP / rel
    guest_support.require_cgroup2(path.parent)
    path.mkdir(exist_ok=True)
    if children:
        (path / "cgroup.subtree_control").write_text("+memory")
    return path


def read_keyed(path: pathlib.Path) -> dict[str, int]:
    return {k: int(v) for k, v in (line.split() for line in path.read_text().splitlines())}


def psi_some_us(cg: pathlib.Path) -> int:
    some = cg.joinpath("memory.pressure").read_text().splitlines()[0]
    return int(some.rsplit("total=", 1)[1])


def start_in(cg: pathlib.Path, *argv: str) -> subprocess.Popen[bytes]:
    """A process that joins cgroup `cg` before it execs argv (no Python start-up)."""
    script = 'echo $$ > "$0/cgroup.procs" && exec "$@"'
    return subprocess.Popen(["/bin/sh", "-c", script, str(cg), *argv],
                            stdout=subprocess.DEVNULL)


@dataclass
class StreamResult:
    high_events: int
    psi_some_seconds: float
    seconds: float


def stream(cg: pathlib.Path, file: pathlib.Path) -> StreamResult:
    """Read `file` once with cat inside `cg` (its pages not cached before), measured on
    `cg`, which holds the reader's cgroup (the pod level is hierarchical)."""
    drop_cache(file)
    high0, psi0, t0 = read_keyed(cg / "memory.events")["high"], psi_some_us(cg), time.monotonic()
    proc = start_in(cg / "app" if (cg / "app").is_dir() else cg, "cat", str(file))
    assert proc.wait(300) == 0
    return StreamResult(read_keyed(cg / "memory.events")["high"] - high0,
                        (psi_some_us(cg) - psi0) / 1e6, time.monotonic() - t0)


def drop_cache(file: pathlib.Path) -> None:
    fd = os.open(file, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


class Processes:
    """etcd and kube-apiserver (the real ones, tests/controlplane, no controllers), the
    operator and the agent, each logging to a file; ended by PID."""

    def __init__(self, tmp: pathlib.Path) -> None:
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.kubectl_bin = shutil.which("kubectl") or pytest.skip("kubectl is not installed")
        if not build.enabled():
            pytest.skip("HEADROOM_CONTROLPLANE=0: no real control plane")
        bin_dir = build.bin_dir()
        assert build.is_built(bin_dir), \
            f"the control plane is not built in {bin_dir} (scripts/ensure-env builds it)"
        # generating the PKI and starting the servers take guest time: the fixture
        # starts them in `serve()`, beside the stream without the agent
        self.plane = ControlPlane(bin_dir, tmp / "controlplane")
        self.kubeconfig = self.plane.kubeconfig

    def serve(self) -> None:
        self.plane.start(timeout=600, controllers=False)

    def start(self, name: str, *argv: str) -> None:
        with (self.tmp / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "KUBECONFIG": str(self.kubeconfig)})

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def alive(self, name: str) -> bool:
        proc = self.procs[name]
        assert proc.poll() is None, f"{name} exited {proc.returncode}:\n{self.log(name)[-3000:]}"
        return True

    def kubectl(self, *args: str, input: str | None = None) -> str:
        proc = subprocess.run([self.kubectl_bin, "--kubeconfig", str(self.kubeconfig), *args],
                              input=input, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
        return proc.stdout

    def read(self, api_path: str) -> dict[str, Any] | None:
        """GET from the API server directly: a kubectl start costs seconds of TCG CPU,
        which a poll loop would take from the agent."""
        try:
            return self.plane.admin.get(api_path)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    def plan(self) -> dict[str, Any] | None:
        return self.read(f"/apis/headroom.dev/v1alpha1/nodereclaimplans/{NODE}")

    def stop_all(self) -> None:
        """One by one, the agent and the operator before the API server they report to."""
        for proc in reversed(self.procs.values()):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.plane.stop()


@pytest.fixture
def procs(tmp_path: pathlib.Path, cgroup_root: pathlib.Path) -> Iterator[Processes]:
    # the guest's loopback starts down; the servers and their clients need it
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    p = Processes(tmp_path)
    yield p
    p.stop_all()
    for name in p.procs:
        print(f"---- {name} log (tail) ----\n{p.log(name)[-3000:]}")
    for name in p.plane.procs:
        print(f"---- {name} log (tail) ----\n{p.plane.log(name)[-2000:]}")


@pytest.fixture
def stream_file(scratch_dir: pathlib.Path) -> pathlib.Path:
    """A file of STREAM_BYTES on the ext4 scratch disk (real data: disk reads)."""
    path = scratch_dir / "stream.bin"
    block = b"\xa5" * MI
    with path.open("wb") as fh:
        for _ in range(STREAM_BYTES // MI):
            fh.write(block)
    return path


@pytest.fixture
def kubepods(cgroup_root: pathlib.Path) -> Iterator[pathlib.Path]:
    """kubepods.slice, removed with everything in it (processes killed) at the end."""
    path = kubepods_cgroup("kubepods.slice", children=True)
    yield path
    guest_support.remove_cgroup(path)


def test_agent_cluster_mode_on_real_kubepods(
        kubepods: pathlib.Path, make_cgroup: Callable[[str], pathlib.Path],
        stream_file: pathlib.Path, procs: Processes) -> None:
    phase = Phases()
    # etcd and kube-apiserver start (minutes under TCG) while the stream runs without
    # the agent through a plain cgroup with the same memory.high (the kernel's own
    # reclaim does not depend on spare CPU); then the CRDs, the operator and the agent.
    serving: list[BaseException | None] = []

    def serve() -> None:
        try:
            procs.serve()
            procs.plane.install_crds(ROOT / "crds")
            serving.append(None)
        except BaseException as exc:   # re-raised in the test's thread
            serving.append(exc)
    server_thread = threading.Thread(target=serve, name="control-plane")
    server_thread.start()
    plain = make_cgroup("no-agent")
    (plain / "memory.high").write_text(str(HIGH))
    without = stream(plain, stream_file)
    phase(f"without agent: {without}")
    assert without.high_events > 0, "the stream never went over memory.high: no test"
    server_thread.join(900)
    assert serving, "the control plane did not start within 900 s"
    if serving[0] is not None:
        raise serving[0]
    phase("etcd and kube-apiserver up, CRDs established")
    procs.start("operator", "headroom", "operator", "--debounce", "0.2", "--max-delay", "2")
    procs.start("agent", "headroom", "agent", "--node-name", NODE, "--cgroup-root", str(CGROUP),
                "--state-dir", str(procs.tmp / "agent-state"), "--metrics-port", "0",
                "--status-interval", "1", "--heartbeat-interval", "3")

    # Node, pods and policy; then the pods' cgroups with the uids the API server assigned.
    # No controller-manager: the namespace's ServiceAccount, which pod admission wants,
    # is made here.
    procs.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}},
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": "default", "namespace": "default"}},
        _pod("stream-0"), _pod("idle-0"), POLICY]))
    phase("node, pods and policy applied")
    listed = procs.read("/api/v1/namespaces/default/pods") or {}
    pods = {p["metadata"]["name"]: p for p in listed["items"]}
    assert {p["status"]["qosClass"] for p in pods.values()} == {"Burstable"}
    kubepods_cgroup(KUBEPODS, children=True)
    pod_cg = {}
    for name, p in pods.items():
        uid = p["metadata"]["uid"].replace("-", "_")
        pod_cg[name] = kubepods_cgroup(f"{KUBEPODS}/kubepods-burstable-pod{uid}.slice",
                                       children=True)
        kubepods_cgroup(f"{pod_cg[name].relative_to(CGROUP)}/app", children=False)
    assert (pod_cg["stream-0"] / "memory.high").read_text().strip() == "max"
    start_in(pod_cg["idle-0"] / "app", "sleep", "3600")

    # the plan's values land in the real memory.high files of exactly the pod slices
    plan = wait_for(lambda: procs.alive("operator") and (p := procs.plan())
                    and len(p["spec"]["pods"]) == 2 and p, 240, "the plan with both pods")
    phase("plan written")
    planned = {e["name"]: e["memoryHigh"] for e in plan["spec"]["pods"]}
    assert planned == {"stream-0": HIGH, "idle-0": HIGH}
    for name, cg in pod_cg.items():
        wait_for(lambda cg=cg, name=name: procs.alive("agent") and (
            cg / "memory.high").read_text().strip() == str(planned[name]),
            240, f"memory.high of {name} written by the agent")
    for parent in ("kubepods.slice", KUBEPODS):
        assert (CGROUP / parent / "memory.high").read_text().strip() == "max"

    phase("memory.high applied")
    # With the agent: the streaming pod stays (nearly) clear of memory.high.
    with_agent = stream(pod_cg["stream-0"], stream_file)
    phase(f"with agent: {with_agent}")
    peak = int((pod_cg["stream-0"] / "memory.peak").read_text())
    print(f"stream pod memory.peak {peak / MI:.1f} MiB, memory.high {HIGH / MI:.0f} MiB")

    # status on the plan: both pods applied, bytes reclaimed for the streaming pod
    uid = pods["stream-0"]["metadata"]["uid"]
    excess = STREAM_BYTES - HIGH
    status = wait_for(lambda: (s := (procs.plan() or {}).get("status") or {})
                      and s.get("appliedPods") == 2 and any(
                          e["uid"] == uid and e.get("reclaimedBytes", 0) >= excess // 2
                          for e in s.get("pods", ())) and s,
                      60, "plan status: 2 pods applied, reclaim reported",
                      lambda: (procs.plan() or {}).get("status"))
    entry = next(e for e in status["pods"] if e["uid"] == uid)
    phase(f"plan status of stream-0: {entry}; capabilities {status.get('capabilities')}")
    assert entry["applied"] and entry["memoryHigh"] == HIGH
    # Near zero: under TCG on a loaded host the agent's threads can be starved for longer
    # than the 5% headroom lasts (seen: 0 to 37 of ~1,030, see the report).
    assert with_agent.high_events <= without.high_events // 20, (with_agent, without)
    assert status["capabilities"]["memoryReclaim"] is True

    # the policy goes: memory.high back to what the agent found (max)
    procs.kubectl("delete", "memoryreclaimpolicy", "cache")
    for name, cg in pod_cg.items():
        wait_for(lambda cg=cg: procs.alive("agent") and (
            cg / "memory.high").read_text().strip() == "max", 120,
            f"memory.high of {name} restored")
    phase("memory.high restored")
