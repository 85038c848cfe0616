"""The object store and write semantics of the API-server emulator (no HTTP here).

One global resourceVersion counter (as etcd's revision), an event log that
watches resume from, and the server-side rules a client can observe: metadata
managed by the server, generation bumps on spec changes only, optimistic
concurrency (409), status subresources, CRD schemas (422), finalizers and
deletionTimestamp, namespace termination, ownerReference garbage collection,
server-side apply, and no-op writes that change nothing.

Thread-safe: every public method holds one lock, so tests may drive the store
directly from another thread while the HTTP layer serves it.
"""

from __future__ import annotations

import copy
import datetime
import re
import secrets
import string
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import kube_patches
import kube_schema
from kube_types import ResourceType, builtin_types, pod_qos_class, types_from_crd

NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
CRD_KEY = ("apiextensions.k8s.io", "customresourcedefinitions")
NS_KEY = ("", "namespaces")


class ApiError(Exception):
    """An error answered as a metav1.Status with this code and reason."""

    def __init__(self, code: int, reason: str, message: str,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                               "status": "Failure", "message": self.message,
                               "reason": self.reason, "code": self.code}
        if self.details:
            out["details"] = self.details
        return out


def _gr(rt: ResourceType) -> str:
    return f"{rt.plural}.{rt.group}" if rt.group else rt.plural


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{_gr(rt)} "{name}" not found',
                    {"name": name, "group": rt.group, "kind": rt.plural})


def conflict(rt: ResourceType, name: str) -> ApiError:
    return ApiError(409, "Conflict",
                    f'Operation cannot be fulfilled on {_gr(rt)} "{name}": the object has been '
                    f"modified; please apply your changes to the latest version and try again",
                    {"name": name, "group": rt.group, "kind": rt.plural})


def invalid(rt: ResourceType, name: str, errors: list[kube_schema.FieldError]) -> ApiError:
    what = f"{rt.kind}.{rt.group}" if rt.group else rt.kind
    text = "; ".join(e.message for e in errors)
    joined = f"[{text}]" if len(errors) > 1 else text
    return ApiError(422, "Invalid", f'{what} "{name}" is invalid: {joined}',
                    {"name": name, "group": rt.group, "kind": rt.kind,
                     "causes": [e.cause() for e in errors]})


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class WatchEvent:
    rv: int
    key: tuple[str, str]          # (group, plural)
    type: str                     # ADDED | MODIFIED | DELETED
    obj: dict[str, Any]
    old: dict[str, Any] | None    # previous state, so selector watches see objects leave


@dataclass(frozen=True)
class Write:
    """One mutating request as the store saw it (for write counting in tests/benchmarks)."""

    verb: str            # create | update | patch | apply | delete
    group: str
    plural: str
    namespace: str
    name: str
    subresource: str
    changed: bool        # False for no-op writes (nothing stored, no event)


def _strip_server_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without what changes on every write (to detect no-op writes)."""
    out = copy.copy(obj)
    out["metadata"] = {k: v for k, v in (obj.get("metadata") or {}).items()
                       if k not in ("resourceVersion", "managedFields")}
    return out


def _spec_part(obj: dict[str, Any]) -> dict[str, Any]:
    """What generation tracks: everything but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "kind", "apiVersion")}


class Store:
    def __init__(self, history_limit: int = 200_000) -> None:
        self.lock = threading.RLock()
        self.types: dict[tuple[str, str, str], ResourceType] = {}
        self.objects: dict[tuple[str, str], dict[tuple[str, str], dict[str, Any]]] = {}
        self.uids: dict[str, tuple[tuple[str, str], str, str]] = {}
        self.rv = 0
        self.log: list[WatchEvent] = []
        self.compacted_rv = 0          # a watch from an older resourceVersion gets 410 Gone
        self.history_limit = history_limit
        self.writes: list[Write] = []
        self.applied: dict[tuple[str, str], Any] = {}   # (uid, manager) -> last applied config
        self.listeners: list[Callable[[], None]] = []   # called after every change
        for rt in builtin_types():
            self._register(rt)
        for ns in ("default", "kube-system", "kube-public"):
            self.create(self.type_for("", "v1", "namespaces"), "", {"metadata": {"name": ns}})
        self.writes.clear()

    # ---- resource types ---------------------------------------------------------------

    def _register(self, rt: ResourceType) -> None:
        self.types[(rt.group, rt.version, rt.plural)] = rt
        self.objects.setdefault(rt.key, {})

    def type_for(self, group: str, version: str, plural: str) -> ResourceType:
        rt = self.types.get((group, version, plural))
        if rt is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return rt

    def find_type(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self.types.get((group, version, plural))

    def _sync_crd_types(self, crd: dict[str, Any], removed: bool) -> None:
        for key, rt in list(self.types.items()):
            if rt.crd_name == crd["metadata"]["name"]:
                del self.types[key]
        if not removed:
            for rt in types_from_crd(crd):
                self._register(rt)
        else:
            spec = crd.get("spec") or {}
            names = spec.get("names") or {}
            for (ns, name), obj in list(self.objects.get((spec.get("group", ""),
                                                           names.get("plural", "")), {}).items()):
                self._remove(((spec.get("group", ""), names.get("plural", ""))), ns, name, obj)

    # ---- reads ------------------------------------------------------------------------

    def get(self, rt: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        with self.lock:
            obj = self.objects[rt.key].get((namespace if rt.namespaced else "", name))
            if obj is None:
                raise not_found(rt, name)
            return self._present(rt, obj)

    def list(self, rt: ResourceType, namespace: str | None,
             match: Callable[[dict[str, Any]], bool] = lambda o: True
             ) -> tuple[list[dict[str, Any]], int]:
        items, rv, _ = self.list_window(rt, namespace, match)
        return items, rv

    def list_window(self, rt: ResourceType, namespace: str | None,
                    match: Callable[[dict[str, Any]], bool] = lambda o: True,
                    start: int = 0, limit: int | None = None
                    ) -> tuple[list[dict[str, Any]], int, int]:
        """Items [start, start + limit) of the sorted list, the revision, and the number
        of all matching items (only the window is copied: paginated lists of 10k pods)."""
        with self.lock:
            matching = [o for (ns, _), o in sorted(self.objects[rt.key].items())
                        if (not namespace or ns == namespace) and match(o)]
            end = len(matching) if limit is None else start + limit
            return [self._present(rt, o) for o in matching[start:end]], self.rv, len(matching)

    def _present(self, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(obj)
        out["apiVersion"] = rt.api_version
        out["kind"] = rt.kind
        return out

    def events_after(self, rv: int) -> list[WatchEvent]:
        """Events newer than rv (the log is ordered by rv)."""
        with self.lock:
            lo, hi = 0, len(self.log)
            while lo < hi:
                mid = (lo + hi) // 2
                if self.log[mid].rv <= rv:
                    lo = mid + 1
                else:
                    hi = mid
            return self.log[lo:]

    def expire_history(self) -> None:
        """Forget all history: a watch resuming from any earlier resourceVersion gets 410."""
        with self.lock:
            self.compacted_rv = self.rv
            self.log.clear()

    def write_counts(self, *, changed_only: bool = False) -> Counter[tuple[str, str, str]]:
        """(verb, plural, subresource) -> number of writes."""
        with self.lock:
            return Counter((w.verb, w.plural, w.subresource) for w in self.writes
                           if w.changed or not changed_only)

    # ---- the write path ---------------------------------------------------------------

    def _next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def _emit(self, rt: ResourceType, type_: str, obj: dict[str, Any],
              old: dict[str, Any] | None) -> None:
        self.log.append(WatchEvent(self.rv, rt.key, type_, copy.deepcopy(obj),
                                   copy.deepcopy(old) if old is not None else None))
        if len(self.log) > self.history_limit:
            cut = len(self.log) // 2
            self.compacted_rv = self.log[cut - 1].rv
            del self.log[:cut]
        for listener in self.listeners:
            listener()

    def _record(self, verb: str, rt: ResourceType, ns: str, name: str, sub: str,
                changed: bool) -> None:
        self.writes.append(Write(verb, rt.group, rt.plural, ns, name, sub, changed))

    def _check_body_identity(self, rt: ResourceType, body: Any) -> None:
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body of the request was not a JSON object")
        kind, api_version = body.get("kind"), body.get("apiVersion")
        if (kind and kind != rt.kind) or (api_version and api_version != rt.api_version):
            raise ApiError(400, "BadRequest",
                           f"the API version in the data ({api_version}) does not match the "
                           f"expected API version ({rt.api_version}) or kind {kind} != {rt.kind}")

    def _validate_custom(self, rt: ResourceType, obj: dict[str, Any],
                         old: dict[str, Any] | None, strict: str | None) -> dict[str, Any]:
        """Prune, default and validate a custom resource by its CRD schema."""
        if rt.schema is None:
            return obj
        body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
        unknown: list[str] = []
        body = kube_schema.prune(body, rt.schema, "", unknown)
        if unknown and strict == "Strict":
            raise ApiError(400, "BadRequest", "strict decoding error: " + ", ".join(
                f'unknown field "{u}"' for u in unknown))
        body = kube_schema.apply_defaults(body, rt.schema)
        old_body = None if old is None else {k: v for k, v in old.items()
                                             if k not in ("apiVersion", "kind", "metadata")}
        errors = kube_schema.validate(body, rt.schema, "", old_body)
        if errors:
            raise invalid(rt, obj["metadata"].get("name", ""), errors)
        return {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"),
                "metadata": obj["metadata"], **body}

    def _namespace_usable(self, rt: ResourceType, ns: str) -> None:
        if not rt.namespaced:
            return
        if not ns:
            raise ApiError(400, "BadRequest", "the namespace of the object is not set")
        nsobj = self.objects[NS_KEY].get(("", ns))
        if nsobj is None:
            raise ApiError(404, "NotFound", f'namespaces "{ns}" not found',
                           {"name": ns, "kind": "namespaces"})
        if (nsobj.get("metadata") or {}).get("deletionTimestamp"):
            raise ApiError(403, "Forbidden", f"unable to create new content in namespace {ns} "
                                             f"because it is being terminated")

    def create(self, rt: ResourceType, namespace: str, body: Any, *, dry_run: bool = False,
               strict: str | None = None, verb: str = "create") -> dict[str, Any]:
        with self.lock:
            self._check_body_identity(rt, body)
            obj = copy.deepcopy(body)
            meta = obj.setdefault("metadata", {})
            if rt.namespaced:
                if meta.get("namespace") and namespace and meta["namespace"] != namespace:
                    raise ApiError(400, "BadRequest", "the namespace of the provided object "
                                   "does not match the namespace sent on the request")
                namespace = namespace or meta.get("namespace", "")
                meta["namespace"] = namespace
            else:
                namespace = ""
                meta.pop("namespace", None)
            if not meta.get("name") and meta.get("generateName"):
                suffix = "".join(secrets.choice(string.ascii_lowercase + "0123456789")
                                 for _ in range(5))
                meta["name"] = meta["generateName"] + suffix
            name = meta.get("name", "")
            if not name:
                raise invalid(rt, "", [kube_schema.FieldError(
                    "metadata.name", "FieldValueRequired",
                    "metadata.name: Required value: name or generateName is required")])
            if not NAME_RE.match(name) or len(name) > 253:
                raise invalid(rt, name, [kube_schema.FieldError(
                    "metadata.name", "FieldValueInvalid",
                    f'metadata.name: Invalid value: "{name}": a lowercase RFC 1123 subdomain '
                    f"must consist of lower case alphanumeric characters, '-' or '.'")])
            self._namespace_usable(rt, namespace)
            if (namespace, name) in self.objects[rt.key]:
                raise ApiError(409, "AlreadyExists", f'{_gr(rt)} "{name}" already exists',
                               {"name": name, "group": rt.group, "kind": rt.plural})
            for key in ("resourceVersion", "uid", "deletionTimestamp", "creationTimestamp",
                        "deletionGracePeriodSeconds", "generation", "managedFields",
                        "selfLink"):
                meta.pop(key, None)
            self._prepare_create(rt, obj)
            obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
            obj = self._validate_custom(rt, obj, None, strict)
            meta = obj["metadata"]
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_iso()
            meta["generation"] = 1
            if dry_run:
                meta["resourceVersion"] = str(self.rv)
                return self._present(rt, obj)
            meta["resourceVersion"] = str(self._next_rv())
            self.objects[rt.key][(namespace, name)] = obj
            self.uids[meta["uid"]] = (rt.key, namespace, name)
            if rt.key == CRD_KEY:
                self._sync_crd_types(obj, removed=False)
            self._record(verb, rt, namespace, name, "", True)
            self._emit(rt, "ADDED", obj, None)
            return self._present(rt, obj)

    def _prepare_create(self, rt: ResourceType, obj: dict[str, Any]) -> None:
        """Per-kind strategy on create (what the real registry's PrepareForCreate does)."""
        if rt.status_subresource and rt.schema is not None:
            obj.pop("status", None)
        if rt.key == ("", "pods"):
            obj["status"] = {"phase": "Pending", "qosClass": pod_qos_class(obj)}
        elif rt.key == NS_KEY:
            obj["spec"] = {"finalizers": ["kubernetes"]}
            obj["status"] = {"phase": "Active"}
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = \
                obj["metadata"]["name"]
        elif rt.key == CRD_KEY:
            names = (obj.get("spec") or {}).get("names") or {}
            obj["status"] = {
                "acceptedNames": names, "storedVersions": [
                    v["name"] for v in (obj.get("spec") or {}).get("versions") or ()
                    if v.get("storage")],
                "conditions": [
                    {"type": t, "status": "True", "reason": r, "message": "",
                     "lastTransitionTime": now_iso()}
                    for t, r in (("NamesAccepted", "NoConflicts"),
                                 ("Established", "InitialNamesAccepted"))]}

    def _existing(self, rt: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        obj = self.objects[rt.key].get((namespace if rt.namespaced else "", name))
        if obj is None:
            raise not_found(rt, name)
        return obj

    def update(self, rt: ResourceType, namespace: str, name: str, body: Any, *,
               subresource: str = "", strict: str | None = None, verb: str = "update",
               dry_run: bool = False) -> dict[str, Any]:
        """PUT semantics (PATCH and apply end here too, with the patched object as body)."""
        with self.lock:
            self._check_body_identity(rt, body)
            namespace = namespace if rt.namespaced else ""
            old = self._existing(rt, namespace, name)
            meta_in = body.get("metadata") or {}
            if meta_in.get("name", name) != name:
                raise ApiError(400, "BadRequest", "the name of the object "
                               f"({meta_in.get('name')}) does not match the name on the URL "
                               f"({name})")
            want_rv = meta_in.get("resourceVersion")
            if want_rv and want_rv != old["metadata"]["resourceVersion"]:
                raise conflict(rt, name)
            new = self._merge_update(rt, old, body, subresource)
            new = self._validate_custom(rt, new, old, strict)
            if new["metadata"].get("deletionTimestamp") and \
                    set(new["metadata"].get("finalizers") or ()) - \
                    set(old["metadata"].get("finalizers") or ()):
                raise invalid(rt, name, [kube_schema.FieldError(
                    "metadata.finalizers", "FieldValueForbidden",
                    "metadata.finalizers: Forbidden: no new finalizers can be added if the "
                    "object is being deleted")])
            if _strip_server_fields(new) == _strip_server_fields(old):
                self._record(verb, rt, namespace, name, subresource, False)
                return self._present(rt, old)       # a no-op write changes nothing
            if dry_run:
                return self._present(rt, new)
            if _spec_part(new) != _spec_part(old):
                new["metadata"]["generation"] = int(old["metadata"].get("generation", 1)) + 1
            new["metadata"]["resourceVersion"] = str(self._next_rv())
            self.objects[rt.key][(namespace, name)] = new
            self._record(verb, rt, namespace, name, subresource, True)
            if rt.key == CRD_KEY:
                self._sync_crd_types(new, removed=False)
            if new["metadata"].get("deletionTimestamp") and not self._blocking_finalizers(rt, new):
                self._remove(rt.key, namespace, name, new, emitted_old=old)
                self._after_removal()
                return self._present(rt, new)
            self._emit(rt, "MODIFIED", new, old)
            return self._present(rt, new)

    def _merge_update(self, rt: ResourceType, old: dict[str, Any], body: dict[str, Any],
                      subresource: str) -> dict[str, Any]:
        """The stored object after a PUT of `body`, keeping what the client may not change."""
        if subresource == "status":
            new = copy.deepcopy(old)
            new["status"] = copy.deepcopy(body.get("status") or {})
            return new
        new = copy.deepcopy(body)
        meta = new.setdefault("metadata", {})
        for key in ("uid", "creationTimestamp", "deletionTimestamp", "generation",
                    "deletionGracePeriodSeconds", "namespace", "name"):
            if key in old["metadata"]:
                meta[key] = old["metadata"][key]
            else:
                meta.pop(key, None)
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        if rt.status_subresource:
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        if rt.key == NS_KEY:
            new["spec"] = copy.deepcopy(old.get("spec") or {})
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
        new["apiVersion"], new["kind"] = rt.api_version, rt.kind
        return new

    def patch(self, rt: ResourceType, namespace: str, name: str, patch_type: str, patch: Any,
              *, subresource: str = "", field_manager: str | None = None, force: bool = False,
              strict: str | None = None, dry_run: bool = False) -> dict[str, Any]:
        with self.lock:
            namespace = namespace if rt.namespaced else ""
            if patch_type == "apply":
                return self._apply(rt, namespace, name, patch, subresource, field_manager,
                                   strict, dry_run)
            old = self._present(rt, self._existing(rt, namespace, name))
            try:
                if patch_type == "json":
                    new = kube_patches.json_patch(old, patch)
                elif patch_type == "merge":
                    new = kube_patches.merge_patch(old, patch)
                elif patch_type == "strategic":
                    if rt.merge_keys is None:
                        raise ApiError(415, "UnsupportedMediaType",
                                       "the body of the request was in an unknown format - "
                                       "accepted media types include: application/json-patch"
                                       "+json, application/merge-patch+json, application/"
                                       "apply-patch+yaml")
                    new = kube_patches.strategic_merge(old, patch, (), rt.merge_keys)
                else:
                    raise ApiError(415, "UnsupportedMediaType", f"unknown patch type {patch_type}")
            except kube_patches.PatchError as e:
                raise ApiError(e.code, "Invalid" if e.code == 422 else "BadRequest",
                               str(e)) from e
            if not isinstance(new, dict):
                raise ApiError(422, "Invalid", "the patch did not produce an object")
            want_rv = (new.get("metadata") or {}).get("resourceVersion")
            if want_rv and want_rv != old["metadata"]["resourceVersion"]:
                raise conflict(rt, name)   # the patch carried a resourceVersion precondition
            return self.update(rt, namespace, name, new, subresource=subresource, strict=strict,
                               verb="patch", dry_run=dry_run)

    def _apply(self, rt: ResourceType, namespace: str, name: str, config: Any, subresource: str,
               field_manager: str | None, strict: str | None, dry_run: bool) -> dict[str, Any]:
        """Server-side apply, simplified: create when absent; else merge the configuration
        (strategic for built-ins) and drop map fields this manager applied before but no
        longer does. Field ownership conflicts between managers are not modelled."""
        if not field_manager:
            raise ApiError(400, "BadRequest", "PATCH, application/apply-patch+yaml requires "
                                              "fieldManager to be set")
        self._check_body_identity(rt, config)
        if not config.get("kind") or not config.get("apiVersion"):
            raise ApiError(400, "BadRequest", "apply configuration needs apiVersion and kind")
        existing = self.objects[rt.key].get((namespace, name))
        if existing is None:
            if subresource:
                raise not_found(rt, name)
            obj = self.create(rt, namespace, config, dry_run=dry_run, strict=strict,
                              verb="apply")
            if not dry_run:
                self.applied[(obj["metadata"]["uid"], field_manager)] = copy.deepcopy(config)
            return obj
        old = self._present(rt, existing)
        uid = old["metadata"]["uid"]
        previous = self.applied.get((uid, field_manager), {})
        removal = kube_patches.removed_fields_patch(
            {k: v for k, v in previous.items() if k not in ("apiVersion", "kind")},
            {k: v for k, v in config.items() if k not in ("apiVersion", "kind")})
        base = kube_patches.merge_patch(old, removal) if removal else old
        if rt.merge_keys is not None:
            new = kube_patches.strategic_merge(base, config, (), rt.merge_keys)
        else:
            new = kube_patches.merge_patch(base, config)
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        result = self.update(rt, namespace, name, new, subresource=subresource, strict=strict,
                             verb="apply", dry_run=dry_run)
        if not dry_run:
            self.applied[(uid, field_manager)] = copy.deepcopy(config)
        return result

    # ---- deletion -----------------------------------------------------------------------

    def _blocking_finalizers(self, rt: ResourceType, obj: dict[str, Any]) -> list[str]:
        fins = list(obj["metadata"].get("finalizers") or ())
        if rt.key == NS_KEY:
            fins += (obj.get("spec") or {}).get("finalizers") or []
        return fins

    def delete(self, rt: ResourceType, namespace: str, name: str,
               options: dict[str, Any] | None = None) -> dict[str, Any]:
        with self.lock:
            namespace = namespace if rt.namespaced else ""
            obj = self._existing(rt, namespace, name)
            pre = (options or {}).get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != obj["metadata"]["uid"]:
                raise ApiError(409, "Conflict", f"Precondition failed: UID in precondition: "
                               f"{pre['uid']}, UID in object meta: {obj['metadata']['uid']}")
            if pre.get("resourceVersion") and \
                    pre["resourceVersion"] != obj["metadata"]["resourceVersion"]:
                raise conflict(rt, name)
            if (options or {}).get("dryRun"):
                return self._present(rt, obj)
            if (options or {}).get("propagationPolicy") == "Orphan":
                self._orphan_dependents(obj["metadata"]["uid"])
            if rt.key == NS_KEY:
                return self._delete_namespace(rt, obj)
            if self._blocking_finalizers(rt, obj):
                if obj["metadata"].get("deletionTimestamp"):
                    self._record("delete", rt, namespace, name, "", False)
                    return self._present(rt, obj)
                old = copy.deepcopy(obj)
                obj["metadata"]["deletionTimestamp"] = now_iso()
                obj["metadata"]["deletionGracePeriodSeconds"] = 0
                obj["metadata"]["resourceVersion"] = str(self._next_rv())
                self._record("delete", rt, namespace, name, "", True)
                self._emit(rt, "MODIFIED", obj, old)
                return self._present(rt, obj)
            self._record("delete", rt, namespace, name, "", True)
            self._remove(rt.key, namespace, name, obj)
            self._after_removal()
            return self._present(rt, obj)

    def _delete_namespace(self, rt: ResourceType, ns_obj: dict[str, Any]) -> dict[str, Any]:
        """Namespace deletion: Terminating, its content deleted, gone once empty."""
        name = ns_obj["metadata"]["name"]
        if not ns_obj["metadata"].get("deletionTimestamp"):
            old = copy.deepcopy(ns_obj)
            ns_obj["metadata"]["deletionTimestamp"] = now_iso()
            ns_obj["status"] = {"phase": "Terminating"}
            ns_obj["metadata"]["resourceVersion"] = str(self._next_rv())
            self._record("delete", rt, "", name, "", True)
            self._emit(rt, "MODIFIED", ns_obj, old)
        for key, objs in self.objects.items():
            for (ns, obj_name) in [k for k in objs if k[0] == name]:
                content_rt = self._any_type(key)
                if content_rt is not None and (ns, obj_name) in objs:
                    self.delete(content_rt, ns, obj_name)
        self._finish_namespaces()
        return self._present(rt, ns_obj)

    def _finish_namespaces(self) -> None:
        """Remove terminating namespaces that have become empty (the namespace controller)."""
        for (_, name), ns_obj in list(self.objects[NS_KEY].items()):
            if not ns_obj["metadata"].get("deletionTimestamp"):
                continue
            if any(k[0] == name for key, objs in self.objects.items() for k in objs
                   if key != NS_KEY):
                continue
            ns_obj["spec"] = {"finalizers": []}
            if not ns_obj["metadata"].get("finalizers"):
                self._remove(NS_KEY, "", name, ns_obj)

    def _any_type(self, key: tuple[str, str]) -> ResourceType | None:
        return next((rt for rt in self.types.values() if rt.key == key), None)

    def _remove(self, key: tuple[str, str], namespace: str, name: str, obj: dict[str, Any],
                emitted_old: dict[str, Any] | None = None) -> None:
        rt = self._any_type(key)
        self.objects[key].pop((namespace, name), None)
        self.uids.pop(obj["metadata"].get("uid", ""), None)
        gone = copy.deepcopy(obj)
        gone["metadata"]["resourceVersion"] = str(self._next_rv())
        if key == CRD_KEY:
            self._sync_crd_types(obj, removed=True)
        if rt is not None:
            self._emit(rt, "DELETED", gone, emitted_old or obj)

    def _orphan_dependents(self, owner_uid: str) -> None:
        for key, objs in self.objects.items():
            rt = self._any_type(key)
            for (ns, name), obj in list(objs.items()):
                refs = obj["metadata"].get("ownerReferences") or []
                if rt is not None and any(r.get("uid") == owner_uid for r in refs):
                    self.update(rt, ns, name, {**obj, "metadata": {
                        **obj["metadata"],
                        "ownerReferences": [r for r in refs if r.get("uid") != owner_uid]}})

    def _after_removal(self) -> None:
        """Garbage collection: delete objects whose owners are all gone, until none is left;
        then let terminating namespaces finish."""
        while True:
            orphans = [(key, ns, name) for key, objs in self.objects.items()
                       for (ns, name), obj in objs.items()
                       if (refs := obj["metadata"].get("ownerReferences"))
                       and not obj["metadata"].get("deletionTimestamp")
                       and all(r.get("uid") not in self.uids for r in refs)]
            if not orphans:
                break
            for key, ns, name in orphans:
                rt = self._any_type(key)
                if rt is not None and (ns, name) in self.objects[key]:
                    self.delete(rt, ns, name)
        self._finish_namespaces()

    def delete_collection(self, rt: ResourceType, namespace: str | None,
                          match: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        with self.lock:
            items, _ = self.list(rt, namespace, match)
            return [self.delete(rt, o["metadata"].get("namespace", ""), o["metadata"]["name"])
                    for o in items]

    # ---- persistence (an emulator restarted on the same state, as etcd survives the
    # ---- API server) ----------------------------------------------------------------

    def dump(self) -> dict[str, Any]:
        """Every stored object and the revision counter, as JSON-ready data."""
        with self.lock:
            objects = [[group, plural, obj] for (group, plural), objs in self.objects.items()
                       for obj in objs.values()]
            objects.sort(key=lambda o: (o[0], o[1]) != CRD_KEY)   # CRDs first
            return {"resourceVersion": self.rv, "objects": objects,
                    "applied": [[uid, manager, cfg]
                                for (uid, manager), cfg in self.applied.items()]}

    def restore(self, state: dict[str, Any]) -> None:
        """Replace everything with a dump. No watch history survives: a client resuming
        from an older resourceVersion gets 410 Gone and lists again, as with a real API
        server whose watch cache starts afresh."""
        with self.lock:
            for key in self.objects:
                self.objects[key] = {}
            self.uids.clear()
            for group, plural, obj in state["objects"]:
                key = (group, plural)
                meta = obj["metadata"]
                ns = meta.get("namespace") or ""
                if key == CRD_KEY:
                    self._sync_crd_types(obj, removed=False)
                self.objects.setdefault(key, {})[(ns, meta["name"])] = obj
                self.uids[meta["uid"]] = (key, ns, meta["name"])
            self.applied = {(uid, manager): cfg for uid, manager, cfg in state["applied"]}
            self.rv = self.compacted_rv = int(state["resourceVersion"])
            self.log.clear()

    def load(self, objects: Iterable[dict[str, Any]]) -> None:
        """Create objects given as manifests (for fixtures); CRDs first."""
        objs = sorted(objects, key=lambda o: o.get("kind") != "CustomResourceDefinition")
        for obj in objs:
            group, _, version = obj["apiVersion"].rpartition("/")
            rt = next(t for t in self.types.values()
                      if t.group == group and t.version == version and t.kind == obj["kind"])
            self.create(rt, (obj.get("metadata") or {}).get("namespace", "default")
                        if rt.namespaced else "", obj)
