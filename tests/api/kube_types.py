"""Resource types the API-server emulator serves: built-in kinds and CRD-defined ones.

A ResourceType carries what discovery, storage and patching need: scope,
names, whether `/status` is a separate subresource, the CRD's schema and
printer columns, and (built-ins only) the patch merge keys of the Go types,
which strategic merge patch needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kube_patches import SET, MergeKeys

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    status_subresource: bool = False
    schema: dict[str, Any] | None = None          # CRD openAPIV3Schema
    merge_keys: MergeKeys | None = None           # None: no strategic merge patch (CRs)
    printer_columns: list[dict[str, Any]] = field(default_factory=list)
    crd_name: str | None = None                   # the CRD that defines it

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        """Storage key: versions of one group/resource share their objects."""
        return (self.group, self.plural)

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"


_META_KEYS: dict[tuple[str, ...], str] = {
    ("metadata", "finalizers"): SET,
    ("metadata", "ownerReferences"): "uid",
}
_CONTAINER_KEYS = {"env": "name", "ports": "containerPort", "volumeMounts": "mountPath",
                   "volumeDevices": "devicePath"}


def _pod_spec_keys(prefix: tuple[str, ...]) -> dict[tuple[str, ...], str]:
    out: dict[tuple[str, ...], str] = {(*prefix, "volumes"): "name",
                                       (*prefix, "imagePullSecrets"): "name"}
    for containers in ("containers", "initContainers", "ephemeralContainers"):
        out[(*prefix, containers)] = "name"
        for sub, key in _CONTAINER_KEYS.items():
            out[(*prefix, containers, sub)] = key
    return out


POD_MERGE_KEYS: MergeKeys = {
    **_META_KEYS, **_pod_spec_keys(("spec",)),
    ("status", "conditions"): "type",
    ("status", "containerStatuses"): "name",
    ("status", "initContainerStatuses"): "name",
    ("status", "podIPs"): "ip",
}
NODE_MERGE_KEYS: MergeKeys = {
    **_META_KEYS, ("spec", "taints"): "key", ("status", "conditions"): "type",
    ("status", "addresses"): "type", ("spec", "podCIDRs"): SET,
}


def builtin_types() -> list[ResourceType]:
    meta_only: MergeKeys = dict(_META_KEYS)
    return [
        ResourceType("", "v1", "namespaces", "Namespace", False, "namespace", ("ns",),
                     status_subresource=True, merge_keys=meta_only),
        ResourceType("", "v1", "nodes", "Node", False, "node", ("no",),
                     status_subresource=True, merge_keys=NODE_MERGE_KEYS),
        ResourceType("", "v1", "pods", "Pod", True, "pod", ("po",), ("all",),
                     status_subresource=True, merge_keys=POD_MERGE_KEYS),
        ResourceType("", "v1", "events", "Event", True, "event", ("ev",),
                     merge_keys=meta_only),
        ResourceType("", "v1", "configmaps", "ConfigMap", True, "configmap", ("cm",),
                     merge_keys=meta_only),
        ResourceType("", "v1", "serviceaccounts", "ServiceAccount", True, "serviceaccount",
                     ("sa",), merge_keys=meta_only),
        ResourceType("events.k8s.io", "v1", "events", "Event", True, "event", ("ev",),
                     merge_keys=meta_only),
        ResourceType("coordination.k8s.io", "v1", "leases", "Lease", True, "lease",
                     merge_keys=meta_only),
        ResourceType("apiextensions.k8s.io", "v1", "customresourcedefinitions",
                     "CustomResourceDefinition", False, "customresourcedefinition",
                     ("crd", "crds"), status_subresource=True, merge_keys=meta_only),
    ]


def types_from_crd(crd: dict[str, Any]) -> list[ResourceType]:
    """One ResourceType per served version of a CustomResourceDefinition."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    out = []
    for ver in spec.get("versions") or ():
        if not ver.get("served", True):
            continue
        out.append(ResourceType(
            group=spec["group"], version=ver["name"], plural=names["plural"],
            kind=names["kind"], namespaced=spec.get("scope") == "Namespaced",
            singular=names.get("singular") or names["kind"].lower(),
            short_names=tuple(names.get("shortNames") or ()),
            categories=tuple(names.get("categories") or ()),
            status_subresource="status" in (ver.get("subresources") or {}),
            schema=(ver.get("schema") or {}).get("openAPIV3Schema"),
            printer_columns=list(ver.get("additionalPrinterColumns") or ()),
            crd_name=crd["metadata"]["name"],
        ))
    return out


def _memory_and_cpu(container: dict[str, Any], kind: str) -> dict[str, Any]:
    return ((container.get("resources") or {}).get(kind) or {})


def pod_qos_class(pod: dict[str, Any]) -> str:
    """QoS class the API server stores in status.qosClass (as pkg/apis/core/helper/qos)."""
    containers = [*((pod.get("spec") or {}).get("containers") or ()),
                  *((pod.get("spec") or {}).get("initContainers") or ())]
    any_set = False
    guaranteed = True
    for c in containers:
        limits = _memory_and_cpu(c, "limits")
        requests = {**limits, **_memory_and_cpu(c, "requests")}   # requests default to limits
        if limits or requests:
            any_set = True
        for res in ("cpu", "memory"):
            if res not in limits or str(requests.get(res)) != str(limits[res]):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"
