"""headroom's operator and agents as local processes against the real control plane,
each with the credentials its pod would have: a TokenRequest token of its
ServiceAccount bound to its pod (so an agent's token names its node, as the
kubelet's projected token does)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from controlplane import ControlPlane

VENV_BIN = Path(sys.executable).parent


def pod_kubeconfig(cp: ControlPlane, pod: dict[str, Any], name: str) -> Path:
    """A kubeconfig holding the token the kubelet would mount into `pod`."""
    meta = pod["metadata"]
    token = cp.token(meta["namespace"], pod["spec"]["serviceAccountName"], pod=pod)
    return cp.kubeconfig_for(name, {"token": token})


class Processes:
    """Local processes of one test, each logging to `<dir>/<name>.log`; `stop_all`
    ends them by PID (SIGTERM, then SIGKILL after 20 s)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, cmd: list[str], kubeconfig: Path, **env: str
              ) -> subprocess.Popen[bytes]:
        log = (self.dir / f"{name}.log").open("ab")
        full_env = {**os.environ, "KUBECONFIG": str(kubeconfig), **env}
        full_env.pop("KUBERNETES_SERVICE_HOST", None)     # never the in-cluster config
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=full_env, cwd=self.dir)
        log.close()
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        path = self.dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, name: str) -> int:
        proc = self.procs[name]
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        return proc.returncode

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)

    def operator(self, kubeconfig: Path, *args: str, name: str = "operator"
                 ) -> subprocess.Popen[bytes]:
        return self.start(name, [str(VENV_BIN / "headroom"), "operator", "--debounce", "0.1",
                                 "--max-delay", "1", *args], kubeconfig)

    def agent(self, kubeconfig: Path, node: str, cgroup_root: Path, *args: str
              ) -> subprocess.Popen[bytes]:
        return self.start(f"agent-{node}", [
            str(VENV_BIN / "headroom"), "agent", "--node-name", node,
            "--cgroup-root", str(cgroup_root), "--state-dir", str(self.dir / f"state-{node}"),
            "--metrics-port", "0", "--status-interval", "0.5", *args], kubeconfig,
            HEADROOM_ALLOW_FAKE_CGROUP_ROOT="1")
