"""The emulator over HTTP: discovery, lists, watches (resume and 410), kubectl, a subprocess."""

from __future__ import annotations

import http.client
import json
import pathlib
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import yaml
from api_helpers import CRDS, ROOT, Cluster, kubectl_binary, node, policy, wait_for
from emulator import write_kubeconfig

# the policy manifests (examples/ also holds a standalone agent config)
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.yaml") if "policy" in p.name)


def call(cluster: Cluster, method: str, path: str, body: Any = None,
         ctype: str = "application/json") -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(cluster.url + path, data=data, method=method,
                                 headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def watch_events(cluster: Cluster, path: str, until: int, timeout: int = 5) -> list[Any]:
    """Read a watch stream until `until` events or the server-side timeout."""
    host = urllib.parse.urlparse(cluster.url)
    conn = http.client.HTTPConnection(host.hostname, host.port, timeout=timeout + 5)
    sep = "&" if "?" in path else "?"
    conn.request("GET", f"{path}{sep}watch=true&timeoutSeconds={timeout}")
    resp = conn.getresponse()
    events = []
    while len(events) < until:
        line = resp.readline()
        if not line:
            break
        if line.strip():
            events.append(json.loads(line))
    conn.close()
    return events


def test_discovery_serves_core_v1_and_runtime_crds(cluster: Cluster) -> None:
    _, core = call(cluster, "GET", "/api/v1")
    assert core["groupVersion"] == "v1"
    assert {"pods", "pods/status", "nodes", "namespaces"} <= {r["name"]
                                                              for r in core["resources"]}
    _, groups = call(cluster, "GET", "/apis")
    assert "headroom.dev" in [g["name"] for g in groups["groups"]]
    _, hd = call(cluster, "GET", "/apis/headroom.dev/v1alpha1")
    kinds = {r["kind"] for r in hd["resources"]}
    assert kinds == {"MemoryReclaimPolicy", "ClusterMemoryReclaimPolicy", "NodeReclaimPlan"}


def test_crd_applied_at_run_time_is_served(cluster: Cluster) -> None:
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "widgets.example.com"},
           "spec": {"group": "example.com", "scope": "Namespaced",
                    "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                    "versions": [{"name": "v1", "served": True, "storage": True,
                                  "schema": {"openAPIV3Schema": {
                                      "type": "object", "properties": {"spec": {
                                          "type": "object", "properties": {
                                              "size": {"type": "integer", "minimum": 1}}}}}}}]}}
    assert call(cluster, "GET", "/apis/example.com/v1/widgets")[0] == 404
    assert call(cluster, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                crd)[0] == 201
    code, _ = call(cluster, "POST", "/apis/example.com/v1/namespaces/default/widgets",
                   {"apiVersion": "example.com/v1", "kind": "Widget",
                    "metadata": {"name": "w"}, "spec": {"size": 0}})
    assert code == 422
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump({
        "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
        "spec": {"size": 2}}))
    assert "w" in cluster.kubectl("get", "widgets").stdout


def test_list_reply_has_kind_and_resource_version(cluster: Cluster) -> None:
    cluster.create(node("n1"))
    code, body = call(cluster, "GET", "/api/v1/nodes?labelSelector=missing")
    assert code == 200 and body["kind"] == "NodeList" and body["apiVersion"] == "v1"
    assert body["items"] == [] and int(body["metadata"]["resourceVersion"]) > 0
    code, body = call(cluster, "GET", "/api/v1/nodes?fieldSelector=spec.nodeName%3Dx")
    assert code == 400


def test_json_patch_test_failure_is_422_over_http(cluster: Cluster) -> None:
    cluster.create(node("n1"))
    code, body = call(cluster, "PATCH", "/api/v1/nodes/n1",
                      [{"op": "test", "path": "/metadata/resourceVersion", "value": "1"}],
                      "application/json-patch+json")
    assert code == 422 and body["kind"] == "Status"


def test_watch_resumes_after_a_resource_version(cluster: Cluster) -> None:
    first = cluster.create(node("n1"))
    cluster.create(node("n2"))
    rv = first["metadata"]["resourceVersion"]
    events = watch_events(cluster, f"/api/v1/nodes?resourceVersion={rv}", until=1, timeout=2)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "n2")]
    events = watch_events(cluster, "/api/v1/nodes", until=2, timeout=2)
    assert sorted(e["object"]["metadata"]["name"] for e in events) == ["n1", "n2"]


def test_watch_from_a_too_old_resource_version_is_410(cluster: Cluster) -> None:
    old = cluster.create(node("n1"))["metadata"]["resourceVersion"]
    cluster.create(node("n2"))
    cluster.store.expire_history()
    events = watch_events(cluster, f"/api/v1/nodes?resourceVersion={old}", until=1)
    assert events[0]["type"] == "ERROR" and events[0]["object"]["code"] == 410


def test_tests_can_force_410_on_open_watches(cluster: Cluster) -> None:
    rv = cluster.create(node("n1"))["metadata"]["resourceVersion"]
    got: list[Any] = []
    reader = threading.Thread(target=lambda: got.extend(watch_events(
        cluster, f"/api/v1/nodes?resourceVersion={rv}", until=2, timeout=10)))
    reader.start()
    wait_for(lambda: any("watch" in str(r.url) for r in cluster.emu.handler._requests),
             what="the watch request")
    cluster.emu.expire_watches()
    reader.join(15)
    assert got and got[-1]["type"] == "ERROR" and got[-1]["object"]["code"] == 410


def test_watch_with_label_selector_sees_objects_leave(cluster: Cluster) -> None:
    body = node("n1")
    body["metadata"]["labels"] = {"pool": "a"}
    rv = cluster.create(body)["metadata"]["resourceVersion"]
    cluster.store.patch(cluster.rtype("nodes"), "", "n1", "merge",
                        {"metadata": {"labels": {"pool": "b"}}})
    events = watch_events(cluster, f"/api/v1/nodes?labelSelector=pool%3Da&resourceVersion={rv}",
                          until=1, timeout=2)
    assert [e["type"] for e in events] == ["DELETED"]


def test_kubectl_drives_the_emulator(cluster: Cluster, tmp_path: pathlib.Path) -> None:
    for example in EXAMPLES:
        cluster.kubectl("apply", "-f", str(example))
    out = cluster.kubectl("get", "memoryreclaimpolicies").stdout
    assert "NAME" in out and "web" in out and "MODE" in out
    web = yaml.safe_load(cluster.kubectl("get", "mrp", "web", "-o", "yaml").stdout)
    assert web["kind"] == "MemoryReclaimPolicy" and web["metadata"]["uid"]
    cluster.kubectl("label", "mrp", "web", "team=a")
    assert cluster.get("memoryreclaimpolicies", "web", "default")["metadata"]["labels"] == \
        {"team": "a"}
    # a second apply patches (merge patch for custom resources), no error
    cluster.kubectl("apply", "-f", str(EXAMPLES[0]))
    cluster.kubectl("apply", "--server-side", "-f", "-",
                    input=yaml.safe_dump(node("n9")))
    assert "n9" in cluster.kubectl("get", "nodes").stdout
    explained = cluster.kubectl("explain", "memoryreclaimpolicy.spec.memoryHigh").stdout
    assert "limitPercent" in explained
    cluster.kubectl("delete", "mrp", "web")
    assert cluster.get("memoryreclaimpolicies", "web", "default") is None


def test_kubectl_apply_of_invalid_policy_shows_the_reason(cluster: Cluster) -> None:
    bad = policy("bad", {"app": "x"}, {"bytes": "1Gi", "throttlingPercent": 50})
    proc = cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(bad), check=False)
    assert proc.returncode != 0
    assert "exactly one of" in proc.stderr
    typo = policy("typo", {"app": "x"}, {"bytes": "1Gi"}, priorty=1)
    proc = cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(typo), check=False)
    assert proc.returncode != 0 and "priorty" in proc.stderr


def test_standalone_process(tmp_path: pathlib.Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    proc = subprocess.Popen([sys.executable, str(pathlib.Path(__file__).parent / "emulator.py"),
                             "--kubeconfig", str(kubeconfig), "--crds", str(CRDS)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:")
        out = subprocess.run([kubectl_binary(), "--kubeconfig", str(kubeconfig), "get", "crds"],
                             capture_output=True, text=True, timeout=60)
        assert "nodereclaimplans.headroom.dev" in out.stdout
        url = line.split()[-1]
        req = urllib.request.Request(url + "/_emulator/expire-watches", method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert json.loads(resp.read()) == {"expired": True}
    finally:
        proc.terminate()
        proc.wait(10)
    write_kubeconfig(tmp_path / "unused", "http://127.0.0.1:1")   # the helper stays usable
