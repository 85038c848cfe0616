"""The operator's writes to the API (plans, policy statuses, Events) and its credentials.

kopf only reads (watches and indexes); writes go through the `kubernetes` client
with an explicit Configuration (never the module-global one, which reads
$KUBECONFIG once at import), run in threads so the event loop keeps serving
kopf's watch streams.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import socket
from typing import Any

import kopf
import kubernetes
from kubernetes.client.rest import ApiException

from headroom.api import GROUP, VERSION
from headroom.controller.resolve import CLUSTER_KIND, PolicyRef

PLANS = "nodereclaimplans"
PLURALS = {"MemoryReclaimPolicy": "memoryreclaimpolicies",
           CLUSTER_KIND: "clustermemoryreclaimpolicies"}
COMPONENT = "headroom-operator"
JSON_PATCH = "application/json-patch+json"


def load_configuration(kubeconfig: str | None) -> kubernetes.client.Configuration:
    """Credentials from `kubeconfig`, else $KUBECONFIG (read now, not at import), else
    the in-cluster service account, else ~/.kube/config."""
    cfg = kubernetes.client.Configuration()
    path = kubeconfig or os.environ.get("KUBECONFIG")
    if path:
        kubernetes.config.load_kube_config(config_file=path, client_configuration=cfg)
        return cfg
    try:
        kubernetes.config.load_incluster_config(client_configuration=cfg)
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(client_configuration=cfg)
    return cfg


def connection_info(cfg: kubernetes.client.Configuration) -> kopf.ConnectionInfo:
    """The same credentials for kopf's own client."""
    auth = (cfg.api_key or {}).get("authorization") or (cfg.api_key or {}).get("BearerToken")
    token = auth.split(" ", 1)[1] if auth and auth.lower().startswith("bearer ") else auth
    return kopf.ConnectionInfo(
        server=cfg.host, ca_path=cfg.ssl_ca_cert, insecure=not cfg.verify_ssl,
        username=cfg.username or None, password=cfg.password or None, token=token,
        certificate_path=cfg.cert_file, private_key_path=cfg.key_file)


class WriteConflict(Exception):
    """The object changed or vanished under us (409/404): recompute and retry."""


class KubeClient:
    def __init__(self, cfg: kubernetes.client.Configuration, concurrency: int = 8) -> None:
        cfg.connection_pool_maxsize = max(cfg.connection_pool_maxsize or 4, concurrency)
        self.api = kubernetes.client.ApiClient(cfg)
        self.custom = kubernetes.client.CustomObjectsApi(self.api)
        self.core = kubernetes.client.CoreV1Api(self.api)
        self.limit = asyncio.Semaphore(concurrency)
        self.instance = socket.gethostname()

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        async with self.limit:
            try:
                resp = await asyncio.to_thread(fn, *args, _preload_content=False, **kwargs)
            except ApiException as e:
                if e.status in (404, 409):
                    raise WriteConflict(f"{e.status} {e.reason}") from e
                raise
        data = resp.data
        return json.loads(data) if data else {}

    async def create_plan(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._call(self.custom.create_cluster_custom_object,
                                GROUP, VERSION, PLANS, body)

    async def replace_plan_spec(self, node: str, spec: dict[str, Any]) -> dict[str, Any]:
        # One JSON patch that swaps the whole spec (a merge patch could not drop keys).
        return await self._call(self.custom.patch_cluster_custom_object,
                                GROUP, VERSION, PLANS, node,
                                [{"op": "add", "path": "/spec", "value": spec}],
                                _content_type=JSON_PATCH)

    async def delete_plan(self, node: str) -> dict[str, Any]:
        return await self._call(self.custom.delete_cluster_custom_object,
                                GROUP, VERSION, PLANS, node)

    async def patch_policy_status(self, ref: PolicyRef, status: dict[str, Any]
                                  ) -> dict[str, Any]:
        patch = [{"op": "add", "path": "/status", "value": status}]
        if ref.namespace:
            return await self._call(self.custom.patch_namespaced_custom_object_status,
                                    GROUP, VERSION, ref.namespace, PLURALS[ref.kind],
                                    ref.name, patch, _content_type=JSON_PATCH)
        return await self._call(self.custom.patch_cluster_custom_object_status,
                                GROUP, VERSION, PLURALS[ref.kind], ref.name, patch,
                                _content_type=JSON_PATCH)

    async def post_event(self, obj: dict[str, Any], type_: str, reason: str,
                         message: str) -> None:
        meta = obj["metadata"]
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        namespace = meta.get("namespace") or "default"
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": namespace},
            "involvedObject": {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"),
                               "name": meta["name"], "namespace": meta.get("namespace"),
                               "uid": meta.get("uid"),
                               "resourceVersion": meta.get("resourceVersion")},
            "type": type_, "reason": reason, "message": message[:1000], "action": "Resolve",
            "source": {"component": COMPONENT}, "reportingComponent": COMPONENT,
            "reportingInstance": self.instance, "firstTimestamp": now, "lastTimestamp": now,
            "count": 1,
        }
        await self._call(self.core.create_namespaced_event, namespace, body)
