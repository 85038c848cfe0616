"""The API tier's `Cluster` interface over the real control plane (tests/controlplane):
kubectl as the cluster admin, reads through the API, plan writes counted by the
API server's own request metrics. One control plane serves the whole session, so
`reset()` removes what a test left (nodes, pods, policies, plans, labels)."""

from __future__ import annotations

import re
import subprocess
import urllib.parse
from typing import Any

import yaml
from api_helpers import CRDS, PLURALS, kubectl_binary, wait_for
from controlplane import ApiError, ControlPlane

GROUP = "/apis/headroom.dev/v1alpha1"
PATHS = {"nodes": "/api/v1/nodes", "pods": "/api/v1/namespaces/{ns}/pods",
         "namespaces": "/api/v1/namespaces", "events": "/api/v1/namespaces/{ns}/events",
         "memoryreclaimpolicies": GROUP + "/namespaces/{ns}/memoryreclaimpolicies",
         "clustermemoryreclaimpolicies": GROUP + "/clustermemoryreclaimpolicies",
         "nodereclaimplans": GROUP + "/nodereclaimplans"}
ALL = {"pods": "/api/v1/pods", "events": "/api/v1/events",
       "memoryreclaimpolicies": GROUP + "/memoryreclaimpolicies"}
VERBS = {"POST": "create", "PUT": "update", "APPLY": "apply"}   # the metric's verb label
METRIC = re.compile(r'^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$', re.M)


def _path(plural: str, namespace: str = "", name: str = "") -> str:
    base = PATHS[plural].format(ns=namespace or "default")
    return f"{base}/{name}" if name else base


class RealCluster:
    """What tests/api's tests use of `Cluster`, against the real API server."""

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp
        self.api = cp.admin
        self.kubeconfig = cp.kubeconfig
        self.url = cp.url
        cp.install_crds(CRDS)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True
                ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([kubectl_binary(), "--kubeconfig", str(self.kubeconfig), *args],
                              input=input, capture_output=True, text=True, timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
        return proc

    def apply(self, manifest: Any) -> subprocess.CompletedProcess[str]:
        docs = manifest if isinstance(manifest, list) else [manifest]
        for doc in docs:    # a Node's status is the kubelet's: the simulator writes it
            if doc["kind"] == "Node" and doc["metadata"]["name"] not in self.cp.nodes.names:
                self.cp.nodes.add(doc["metadata"]["name"], doc["metadata"].get("labels"))
        rest = [d for d in docs if d["kind"] != "Node"]
        if not rest:
            return subprocess.CompletedProcess([], 0, "", "")
        return self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(rest))

    def get(self, plural: str, name: str, namespace: str = "") -> dict[str, Any] | None:
        try:
            return self.api.get(_path(plural, namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def items(self, plural: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.api.get(ALL.get(plural) or _path(plural))["items"]
        return items

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        plural = PLURALS[obj["kind"]]
        if plural == "nodes":
            return self.cp.nodes.add(obj["metadata"]["name"], obj["metadata"].get("labels"))
        return self.api.post(_path(plural, obj["metadata"].get("namespace", "")), obj)

    def patch_status(self, plural: str, name: str, status: dict[str, Any],
                     namespace: str = "") -> dict[str, Any]:
        return self.api.merge_patch(_path(plural, namespace, name) + "/status",
                                    {"status": status})

    def expire_watches(self) -> None:
        """etcd compacted past every open watch's resourceVersion, then kube-apiserver
        restarted (its watch cache would otherwise still serve them): every watch
        resumes from a version that is gone, 410, and its client must list again."""
        for i in range(20):   # revisions no headroom watch sees (a kind nobody watches)
            self.api.post("/api/v1/namespaces/default/configmaps",
                          {"metadata": {"name": f"bump-{i}"}})
            self.api.delete(f"/api/v1/namespaces/default/configmaps/bump-{i}")
        self.cp.compact_etcd()
        self.cp.stop_apiserver()
        self.cp.start_apiserver()

    def plan_pods(self, node: str) -> dict[str, int] | None:
        plan = self.get("nodereclaimplans", node)
        if plan is None:
            return None
        return {p["name"]: p["memoryHigh"] for p in plan["spec"].get("pods") or ()}

    def write_counts(self) -> dict[tuple[str, str, str], int]:
        """(verb, plural, subresource) -> requests the API server answered, from its
        /metrics (apiserver_request_total), for headroom's kinds."""
        counts: dict[tuple[str, str, str], int] = {}
        for m in METRIC.finditer(self.api.request("GET", "/metrics")["raw"]):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group("labels")))
            if labels.get("group") != "headroom.dev" or labels.get("dry_run"):
                continue
            verb = VERBS.get(labels["verb"], labels["verb"].lower())
            key = (verb, labels["resource"], labels.get("subresource", ""))
            counts[key] = counts.get(key, 0) + int(float(m.group("value")))
        return counts

    def plan_writes(self) -> int:
        return sum(n for (verb, plural, sub), n in self.write_counts().items()
                   if plural == "nodereclaimplans" and not sub
                   and verb in ("create", "patch", "update", "delete"))

    def reset(self) -> None:
        """Remove what a test made, so that the next one starts from an empty cluster."""
        for plural in ("memoryreclaimpolicies", "clustermemoryreclaimpolicies"):
            for obj in self.items(plural):
                meta = obj["metadata"]
                self._delete(plural, meta["name"], meta.get("namespace", ""))
        for p in self.items("pods"):
            meta = p["metadata"]
            if meta["namespace"] == "default":
                self.api.delete(_path("pods", "default", meta["name"]),
                                {"gracePeriodSeconds": 0})
        for node in list(self.cp.nodes.names):
            if node.startswith("node-"):
                self.cp.nodes.delete(node)
        for plan in self.items("nodereclaimplans"):
            if plan["metadata"]["name"].startswith("node-"):
                self._delete("nodereclaimplans", plan["metadata"]["name"])
        self.api.delete("/api/v1/namespaces/default/events")
        labels = self.api.get("/api/v1/namespaces/default")["metadata"].get("labels") or {}
        extra = {k: None for k in labels if k != "kubernetes.io/metadata.name"}
        if extra:
            self.api.merge_patch("/api/v1/namespaces/default", {"metadata": {"labels": extra}})
        wait_for(lambda: not [p for p in self.items("pods")
                              if p["metadata"]["namespace"] == "default"]
                 and not [p for p in self.items("nodereclaimplans")
                          if p["metadata"]["name"].startswith("node-")],
                 what="an empty cluster for the next test")

    def _delete(self, plural: str, name: str, namespace: str = "") -> None:
        try:
            self.api.delete(_path(plural, namespace, name) + "?" + urllib.parse.urlencode(
                {"gracePeriodSeconds": 0}))
        except ApiError as exc:
            if exc.status != 404:
                raise
