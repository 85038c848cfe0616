"""The operator's writes to the API (plans, policy statuses, Events) and its credentials.

Every request (the informers' reads too) goes through `api_request`: the
`kubernetes` client's ApiClient with an explicit Configuration (never the
module-global one, which reads $KUBECONFIG once at import), so its credential
handling (token refresh, client certificates, CA) applies, but with raw JSON in
and out: no generated API classes (constructing CoreV1Api alone costs seconds of
start-up) and no models (slow to decode at 10k pods). Writes run in threads so
the event loop stays free.
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


def api_request(api: kubernetes.client.ApiClient, method: str, path: str, *,
                query: list[tuple[str, Any]] | None = None, body: Any = None,
                content_type: str | None = None,
                timeout: float | tuple[float, float] | None = None) -> Any:
    """One request; the raw urllib3 response (not read yet: a watch streams it).
    Raises ApiException for any status outside 2xx."""
    headers = {"Accept": "application/json"}
    if content_type or body is not None:
        headers["Content-Type"] = content_type or "application/json"
    method, url, headers, data, post = api.param_serialize(
        method, path, query_params=query or [], header_params=headers, body=body,
        auth_settings=["BearerToken"])
    resp = api.call_api(method, url, header_params=headers, body=data, post_params=post,
                        _request_timeout=timeout)
    if not 200 <= resp.status <= 299:
        resp.read()
        raise ApiException.from_response(http_resp=resp, body=None, data=None)
    return resp.response


def collection_path(group: str, version: str, plural: str, namespace: str = "") -> str:
    prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
    return f"{prefix}/namespaces/{namespace}/{plural}" if namespace else f"{prefix}/{plural}"


class WriteConflict(Exception):
    """The object changed or vanished under us (409/404): recompute and retry."""


class KubeClient:
    def __init__(self, cfg: kubernetes.client.Configuration, concurrency: int = 8) -> None:
        cfg.connection_pool_maxsize = max(cfg.connection_pool_maxsize or 4, concurrency)
        self.api = kubernetes.client.ApiClient(cfg)
        self.limit = asyncio.Semaphore(concurrency)
        self.instance = socket.gethostname()

    async def _call(self, method: str, path: str, body: Any = None,
                    content_type: str | None = None) -> dict[str, Any]:
        async with self.limit:
            try:
                resp = await asyncio.to_thread(api_request, self.api, method, path, body=body,
                                               content_type=content_type, timeout=60)
            except ApiException as e:
                if e.status in (404, 409):
                    raise WriteConflict(f"{e.status} {e.reason}") from e
                raise
        data = resp.data
        return json.loads(data) if data else {}

    @staticmethod
    def _plan(node: str = "") -> str:
        path = collection_path(GROUP, VERSION, PLANS)
        return f"{path}/{node}" if node else path

    async def create_plan(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._call("POST", self._plan(), body)

    async def replace_plan_spec(self, node: str, spec: dict[str, Any]) -> dict[str, Any]:
        # One JSON patch that swaps the whole spec (a merge patch could not drop keys).
        return await self._call("PATCH", self._plan(node),
                                [{"op": "add", "path": "/spec", "value": spec}], JSON_PATCH)

    async def delete_plan(self, node: str) -> dict[str, Any]:
        return await self._call("DELETE", self._plan(node))

    async def patch_policy_status(self, ref: PolicyRef, status: dict[str, Any]
                                  ) -> dict[str, Any]:
        path = collection_path(GROUP, VERSION, PLURALS[ref.kind], ref.namespace)
        return await self._call("PATCH", f"{path}/{ref.name}/status",
                                [{"op": "add", "path": "/status", "value": status}],
                                JSON_PATCH)

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
        await self._call("POST", collection_path("", "v1", "events", namespace), body)
