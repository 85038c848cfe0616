"""A real Kubernetes control plane on loopback: etcd, kube-apiserver,
kube-controller-manager and kube-scheduler (built by build.py), plus simulated nodes.

* Authentication is real: client certificates from one CA (certs.py) and
  ServiceAccount tokens signed with the session's key (--service-account-*).
* --authorization-mode=Node,RBAC, the default admission chain (which includes
  ValidatingAdmissionPolicy and ServiceAccount).
* No kubelet: `NodeSimulator` creates Node objects with capacity and a Ready
  condition, and plays the kubelet's part in a pod's life (status Running/Ready
  once the scheduler has bound it, the final delete of a terminating pod). The
  controller-manager runs without the node-lifecycle controller, so nodes without
  heartbeats are not tainted and their pods not evicted.
* Every server listens on 127.0.0.1 on a free port; the controller-manager and
  the scheduler serve nothing (--secure-port=0). `stop()` ends each by its PID.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import yaml
from certs import PKI, KeyPair

ISSUER = "https://kubernetes.default.svc.cluster.local"
# What the tests need of the controller-manager; the rest only costs CPU here.
CONTROLLERS = ",".join([
    "serviceaccount-controller", "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller", "namespace-controller",
    "garbage-collector-controller", "pod-garbage-collector-controller",
    "daemonset-controller", "deployment-controller", "replicaset-controller",
    "clusterrole-aggregation-controller", "validatingadmissionpolicy-status-controller",
])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ApiError(Exception):
    def __init__(self, status: int, body: dict[str, Any] | str) -> None:
        self.status, self.body = status, body
        message = body.get("message") if isinstance(body, dict) else body
        super().__init__(f"HTTP {status}: {message}")


class Client:
    """A minimal JSON client of the API server, as one user (cert or token)."""

    def __init__(self, url: str, ca: Path, cert: KeyPair | None = None,
                 token: str | None = None) -> None:
        self.url, self.token = url, token
        self.ctx = ssl.create_default_context(cafile=str(ca))
        if cert is not None:
            self.ctx.load_cert_chain(str(cert.cert), str(cert.key))

    def request(self, method: str, path: str, body: Any = None,
                content_type: str = "application/json", timeout: float = 30
                ) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(req, context=self.ctx, timeout=timeout) as resp:
                    raw = resp.read()
                break
            except urllib.error.HTTPError as err:
                # 429 while a restarted API server (re)initializes a resource's storage
                if err.code == 429 and time.monotonic() < deadline:
                    time.sleep(0.5)
                    continue
                self._raise(err)
        return json.loads(raw) if raw.strip().startswith(b"{") else {"raw": raw.decode()}

    @staticmethod
    def _raise(err: urllib.error.HTTPError) -> NoReturn:
        raw = err.read()
        try:
            parsed: dict[str, Any] | str = json.loads(raw)
        except ValueError:
            parsed = raw.decode(errors="replace")
        raise ApiError(err.code, parsed) from None

    def get(self, path: str) -> dict[str, Any]:
        return self.request("GET", path)

    def post(self, path: str, body: Any) -> dict[str, Any]:
        return self.request("POST", path, body)

    def merge_patch(self, path: str, body: Any) -> dict[str, Any]:
        return self.request("PATCH", path, body, "application/merge-patch+json")

    def delete(self, path: str, body: Any = None) -> dict[str, Any]:
        return self.request("DELETE", path, body)


def write_kubeconfig(path: Path, url: str, ca: Path, user: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {
            "server": url, "certificate-authority-data":
                base64.b64encode(ca.read_bytes()).decode()}}],
        "users": [{"name": "test", "user": user}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
    }))
    path.chmod(0o600)
    return path


def cert_user(pair: KeyPair) -> dict[str, Any]:
    return {"client-certificate-data": base64.b64encode(pair.cert.read_bytes()).decode(),
            "client-key-data": base64.b64encode(pair.key.read_bytes()).decode()}


def wait_until(predicate: Callable[[], Any], timeout: float, what: str,
               interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (OSError, ApiError) as exc:   # not up yet
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what} (last error: {last})")


class ControlPlane:
    """Start with `start()`, end with `stop()`; files (logs, PKI, data) under `root`."""

    def __init__(self, bin_dir: Path, root: Path, apiserver_args: tuple[str, ...] = ()
                 ) -> None:
        self.bin_dir, self.root = bin_dir, root
        self.apiserver_args = apiserver_args      # extra flags (the benchmark's audit log)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.etcd_port = free_port()
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.etcd_url = f"http://127.0.0.1:{self.etcd_port}"
        self.pki = PKI(root / "pki")
        self.admin_cert = self.pki.client("admin", "headroom-test-admin", ("system:masters",))
        self.admin = Client(self.url, self.pki.ca, cert=self.admin_cert)
        self.kubeconfig = write_kubeconfig(root / "admin.kubeconfig", self.url, self.pki.ca,
                                           cert_user(self.admin_cert))
        self.nodes = NodeSimulator(self.admin)

    # -- processes -----------------------------------------------------------------
    def _spawn(self, name: str, args: list[str]) -> None:
        log = (self.root / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen([str(self.bin_dir / name), *args], stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            cwd=self.root)
        log.close()

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _alive(self, name: str) -> bool:
        proc = self.procs[name]
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log(name)[-4000:]}")
        return True

    def start(self, timeout: float = 120, controllers: bool = True) -> ControlPlane:
        """`controllers=False`: etcd and kube-apiserver only (no controller-manager,
        scheduler or node simulator), for the QEMU guest, where every server costs
        emulated CPU: pods are created bound, and ServiceAccounts by hand."""
        try:
            self._start(timeout, controllers)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout: float, controllers: bool) -> None:
        peer = free_port()
        self._spawn("etcd", [
            "--name", "test", "--data-dir", str(self.root / "etcd"),
            "--listen-client-urls", self.etcd_url, "--advertise-client-urls", self.etcd_url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"test=http://127.0.0.1:{peer}",
            "--unsafe-no-fsync",                      # test data; spares the shared disk
            "--log-level", "warn"])
        wait_until(lambda: self._alive("etcd") and self._etcd_healthy(), timeout, "etcd")
        self.serving = self.pki.server("apiserver")
        self.start_apiserver(timeout)
        if not controllers:
            return
        kcm = self.pki.client("kube-controller-manager", "system:kube-controller-manager")
        sched = self.pki.client("kube-scheduler", "system:kube-scheduler")
        kcm_config = write_kubeconfig(self.root / "kcm.kubeconfig", self.url, self.pki.ca,
                                      cert_user(kcm))
        sched_config = write_kubeconfig(self.root / "scheduler.kubeconfig", self.url,
                                        self.pki.ca, cert_user(sched))
        self._spawn("kube-controller-manager", [
            "--kubeconfig", str(kcm_config), "--secure-port", "0", "--leader-elect=false",
            "--use-service-account-credentials",      # each controller as its own SA (RBAC)
            "--service-account-private-key-file", str(self.pki.sa_key),
            "--root-ca-file", str(self.pki.ca), "--controllers", CONTROLLERS,
            "--concurrent-gc-syncs", "5", "--v", "1"])
        self._spawn("kube-scheduler", [
            # with --leader-elect=false, 1.37's scheduler returns at once ("finished
            # without leader elect"); a lease in kube-system costs nothing here
            # without a lease renewed for an hour, an API server restarted by a test (410,
            # outage) outlives the 10 s renew deadline and the scheduler exits
            "--leader-elect-lease-duration", "3600s", "--leader-elect-renew-deadline",
            "3000s", "--leader-elect-retry-period", "2s",
            "--kubeconfig", str(sched_config), "--secure-port", "0", "--v", "1"])
        # the controller-manager works: it has given the default namespace its ServiceAccount
        wait_until(lambda: self._alive("kube-controller-manager") and self._alive(
            "kube-scheduler") and self.admin.get(
                "/api/v1/namespaces/default/serviceaccounts/default"), timeout,
            "the default ServiceAccount (controller-manager running)")
        self.nodes.start()

    def start_apiserver(self, timeout: float = 120) -> None:
        """(Re)start kube-apiserver on its port, on the state etcd holds."""
        self._spawn("kube-apiserver", [
            "--etcd-servers", self.etcd_url,
            "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
            "--secure-port", str(self.port),
            "--tls-cert-file", str(self.serving.cert),
            "--tls-private-key-file", str(self.serving.key),
            "--client-ca-file", str(self.pki.ca),
            "--service-account-issuer", ISSUER,
            "--service-account-key-file", str(self.pki.sa_pub),
            "--service-account-signing-key-file", str(self.pki.sa_key),
            "--authorization-mode", "Node,RBAC",
            "--service-cluster-ip-range", "10.0.0.0/24",
            # a loopback address may not be an Endpoints address: no kubernetes endpoint
            "--endpoint-reconciler-type", "none",
            "--cert-dir", str(self.root / "apiserver-certs"),
            "--profiling=false", "--v", "1", *self.apiserver_args])
        wait_until(lambda: self._alive("kube-apiserver")
                   and self.admin.request("GET", "/readyz", timeout=5), timeout,
                   "kube-apiserver /readyz")

    def stop_apiserver(self, kill: bool = False) -> None:
        """An outage: the API server goes (SIGKILL: without a goodbye), etcd stays."""
        proc = self.procs["kube-apiserver"]
        os.kill(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:     # graceful shutdown waits for long watches
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()

    def compact_etcd(self) -> int:
        """Compact etcd at its current revision (its JSON gateway, as `etcdctl compact`
        does over gRPC): every resourceVersion before it is gone for good."""
        def call(path: str, body: dict[str, Any]) -> dict[str, Any]:
            req = urllib.request.Request(self.etcd_url + path, json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as resp:
                return dict(json.loads(resp.read()))
        revision = int(call("/v3/kv/range", {"key": base64.b64encode(b"/").decode()})
                       ["header"]["revision"])
        call("/v3/kv/compaction", {"revision": revision, "physical": True})
        return revision

    def _etcd_healthy(self) -> bool:
        with urllib.request.urlopen(self.etcd_url + "/health", timeout=2) as resp:
            return bool(json.loads(resp.read()).get("health") == "true")

    def stop(self) -> None:
        self.nodes.stop()
        # reverse start order: clients of the API server first, etcd last
        for name in ("kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()

    # -- what tests use ------------------------------------------------------------
    def kubeconfig_for(self, name: str, user: dict[str, Any]) -> Path:
        return write_kubeconfig(self.root / f"{name}.kubeconfig", self.url, self.pki.ca, user)

    def client_cert(self, stem: str, user: str, groups: tuple[str, ...] = ()) -> KeyPair:
        return self.pki.client(stem, user, groups)

    def token(self, namespace: str, service_account: str, pod: dict[str, Any] | None = None,
              seconds: int = 3600) -> str:
        """A TokenRequest token of the ServiceAccount; bound to `pod` if given (then the
        token carries the pod's node name, as the kubelet's projected tokens do)."""
        spec: dict[str, Any] = {"audiences": [ISSUER], "expirationSeconds": seconds}
        if pod is not None:
            spec["boundObjectRef"] = {"apiVersion": "v1", "kind": "Pod",
                                      "name": pod["metadata"]["name"],
                                      "uid": pod["metadata"]["uid"]}
        resp = self.admin.post(f"/api/v1/namespaces/{namespace}/serviceaccounts/"
                               f"{service_account}/token",
                               {"apiVersion": "authentication.k8s.io/v1",
                                "kind": "TokenRequest", "spec": spec})
        return str(resp["status"]["token"])

    def as_token(self, token: str) -> Client:
        return Client(self.url, self.pki.ca, token=token)

    def namespace(self, name: str) -> str:
        """A new namespace, once the controller-manager has given it its default SA."""
        self.admin.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                               "metadata": {"name": name}})
        wait_until(lambda: self.admin.get(f"/api/v1/namespaces/{name}/serviceaccounts/default"),
                   30, f"the default ServiceAccount of {name}")
        return name

    def remove_crds(self, crds: Path) -> None:
        """Delete the CRDs of `crds`/*.yaml (and so every object of theirs), wait until
        they are gone: for a test that installs them another way (helm)."""
        base = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
        names = [doc["metadata"]["name"] for f in sorted(crds.glob("*.yaml"))
                 for doc in yaml.safe_load_all(f.read_text()) if doc]
        for name in names:
            try:
                self.admin.delete(base + name)
            except ApiError as exc:
                if exc.status != 404:
                    raise

        def gone(name: str) -> bool:
            try:
                self.admin.get(base + name)
            except ApiError as exc:
                if exc.status == 404:
                    return True
                raise
            return False
        wait_until(lambda: all(gone(n) for n in names), 120, "the CRDs deleted")

    def install_crds(self, crds: Path) -> None:
        """Create (or keep) the CRDs in `crds`/*.yaml and wait until each is served."""
        names = []
        for f in sorted(crds.glob("*.yaml")):
            for doc in yaml.safe_load_all(f.read_text()):
                if not doc:
                    continue
                names.append(doc["metadata"]["name"])
                try:
                    self.admin.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                                    doc)
                except ApiError as exc:
                    if exc.status != 409:
                        raise
        for name in names:
            wait_until(lambda n=name: any(
                c["type"] == "Established" and c["status"] == "True"
                for c in (self.admin.get("/apis/apiextensions.k8s.io/v1/"
                                         f"customresourcedefinitions/{n}").get("status")
                          or {}).get("conditions") or ()), 60, f"CRD {name} established")


class NodeSimulator:
    """Nodes without a kubelet: the Node objects, and the kubelet's part in the life
    of each pod bound to one of them (Running and Ready; deleted when terminating)."""

    def __init__(self, admin: Client, interval: float = 0.25) -> None:
        self.admin, self.interval = admin, interval
        self.names: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []

    def add(self, name: str, labels: dict[str, str] | None = None,
            memory: str = "32Gi", cpu: str = "8") -> dict[str, Any]:
        node = self.admin.post("/api/v1/nodes", {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {
                "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64", "headroom.test/simulated": "true",
                **(labels or {})}}})
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        resources = {"cpu": cpu, "memory": memory, "pods": "110"}
        self.names.add(name)
        # the TaintNodesByCondition admission plugin created it not-ready:NoSchedule; the
        # node-lifecycle controller (not run) would lift that once Ready: do it here
        self.admin.merge_patch(f"/api/v1/nodes/{name}", {"spec": {"taints": None}})
        return self.admin.merge_patch(f"/api/v1/nodes/{name}/status", {"status": {
            "capacity": resources, "allocatable": resources,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "simulated", "lastHeartbeatTime": now,
                            "lastTransitionTime": now}],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                          {"type": "Hostname", "address": name}],
            "nodeInfo": {"kubeletVersion": "v1.37.2-simulated", "operatingSystem": "linux",
                         "architecture": "amd64", "containerRuntimeVersion": "none://0",
                         "kernelVersion": "", "osImage": "", "kubeProxyVersion": "",
                         "machineID": "", "systemUUID": "", "bootID": ""}}}) or node

    def delete(self, name: str) -> None:
        self.names.discard(name)
        try:
            self.admin.delete(f"/api/v1/nodes/{name}")
        except ApiError as exc:
            if exc.status != 404:
                raise

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="node-simulator", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sync()
            except (OSError, ApiError) as exc:       # the API server may be restarting
                self.errors.append(str(exc))

    def sync(self) -> None:
        if not self.names:
            return
        pods = self.admin.get("/api/v1/pods?fieldSelector=" +
                              urllib.parse.quote("spec.nodeName!="))["items"]
        for pod in pods:
            if pod["spec"].get("nodeName") not in self.names:
                continue
            meta = pod["metadata"]
            path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
            try:
                if meta.get("deletionTimestamp"):
                    self.admin.delete(path, {"gracePeriodSeconds": 0,
                                             "preconditions": {"uid": meta["uid"]}})
                elif (pod.get("status") or {}).get("phase") != "Running":
                    self.admin.merge_patch(path + "/status", {"status": running_status(pod)})
            except ApiError as exc:
                if exc.status not in (404, 409):      # gone or changed meanwhile: next round
                    raise


def running_status(pod: dict[str, Any]) -> dict[str, Any]:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    conditions = [{"type": t, "status": "True", "lastTransitionTime": now}
                  for t in ("PodReadyToStartContainers", "Initialized", "ContainersReady",
                            "Ready", "PodScheduled")]
    return {"phase": "Running", "conditions": conditions, "hostIP": "127.0.0.1",
            "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}], "startTime": now,
            "containerStatuses": [
                {"name": c["name"], "image": c.get("image", ""), "imageID": "",
                 "ready": True, "started": True, "restartCount": 0,
                 "containerID": f"simulated://{pod['metadata']['uid']}-{c['name']}",
                 "state": {"running": {"startedAt": now}}}
                for c in pod["spec"]["containers"]]}
