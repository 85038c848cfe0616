"""The four PATCH flavours of the Kubernetes API, as pure functions over JSON values.

Part of the API-server emulator:

* JSON merge patch (RFC 7386), `application/merge-patch+json`;
* JSON patch (RFC 6902), `application/json-patch+json`, via the `jsonpatch` package;
  a failing `test` operation is a 422, as on a real server;
* strategic merge patch, `application/strategic-merge-patch+json`, for built-in
  kinds only (a real server answers 415 for custom resources); lists merge by the
  patch merge keys the Go types declare (given per resource kind), with the
  `$patch: delete|replace`, `$retainKeys`, `$deleteFromPrimitiveList/` and
  `$setElementOrder/` directives;
* server-side apply is built from these in kube_store (see there).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import jsonpatch
import jsonpointer

# A merge-key table: path of field names (list elements add no component) -> the
# list's merge key, or SET for lists of scalars merged as sets (e.g. finalizers).
SET = "<set>"
MergeKeys = Mapping[tuple[str, ...], str]


class PatchError(ValueError):
    """A patch that cannot be applied: the server answers `code`."""

    def __init__(self, message: str, code: int = 422) -> None:
        super().__init__(message)
        self.code = code


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: maps merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902. Malformed documents are 400; operations that do not apply are 422."""
    if not isinstance(operations, list):
        raise PatchError("json patch must be a list of operations", code=400)
    try:
        patch = jsonpatch.JsonPatch(operations)
        return patch.apply(copy.deepcopy(target))
    except jsonpatch.JsonPatchTestFailed as e:
        raise PatchError(f"the test operation failed: {e}") from e
    except (jsonpatch.JsonPatchConflict, jsonpointer.JsonPointerException) as e:
        raise PatchError(f"the json patch does not apply: {e}") from e
    except (jsonpatch.InvalidJsonPatch, TypeError, KeyError) as e:
        raise PatchError(f"invalid json patch: {e}", code=400) from e


def _merge_list(target: list[Any], patch: list[Any], key: str,
                path: tuple[str, ...], keys: MergeKeys) -> list[Any]:
    if key == SET:
        out = list(target)
        out.extend(v for v in patch if v not in out)
        return out
    if any(isinstance(e, dict) and e.get("$patch") == "replace" for e in patch):
        return [strategic_merge({}, e, path, keys) for e in patch
                if not (isinstance(e, dict) and e.get("$patch") == "replace")]
    out = [copy.deepcopy(e) for e in target]
    for element in patch:
        if not isinstance(element, dict) or key not in element:
            raise PatchError(f"list element of {'.'.join(path)} lacks merge key {key!r}")
        index = next((i for i, e in enumerate(out)
                      if isinstance(e, dict) and e.get(key) == element[key]), None)
        if element.get("$patch") == "delete":
            if index is not None:
                del out[index]
        elif index is None:
            out.append(strategic_merge({}, element, path, keys))
        else:
            out[index] = strategic_merge(out[index], element, path, keys)
    return out


def strategic_merge(target: Any, patch: Any, path: tuple[str, ...], keys: MergeKeys) -> Any:
    """Strategic merge of `patch` into `target` at `path` (use () for a whole object)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = dict(target) if isinstance(target, dict) else {}
    retain = patch.get("$retainKeys")
    for field, value in patch.items():
        if field in ("$patch", "$retainKeys") or field.startswith("$setElementOrder/"):
            continue
        if field.startswith("$deleteFromPrimitiveList/"):
            name = field.split("/", 1)[1]
            result[name] = [v for v in result.get(name) or [] if v not in value]
            continue
        sub = (*path, field)
        if value is None:
            result.pop(field, None)
        elif isinstance(value, list) and sub in keys and isinstance(result.get(field), list):
            result[field] = _merge_list(result[field], value, keys[sub], sub, keys)
        elif isinstance(value, list) and sub in keys:
            result[field] = _merge_list([], value, keys[sub], sub, keys)
        else:
            merged = strategic_merge(result.get(field), value, sub, keys)
            if merged is None:
                result.pop(field, None)
            else:
                result[field] = merged
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def removed_fields_patch(previous: Any, current: Any) -> Any:
    """A merge patch (nulls) deleting the map fields `previous` had and `current` lacks.

    Server-side apply removes the fields a manager stopped applying; lists are
    atomic here (they are replaced by the new apply anyway).
    """
    if not isinstance(previous, dict) or not isinstance(current, dict):
        return {}
    out: dict[str, Any] = {}
    for key, old in previous.items():
        if key not in current:
            out[key] = None
        else:
            sub = removed_fields_patch(old, current[key])
            if sub:
                out[key] = sub
    return out
