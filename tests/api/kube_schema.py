"""What the API server does with a CRD's structural schema: prune, default, validate, CEL.

Part of the API-server emulator. Order as in the apiextensions-apiserver:
unknown fields are pruned (reported as `unknown field "x"` for
`fieldValidation=Strict|Warn`), nulls in non-nullable fields are dropped,
defaults are applied, then OpenAPI value validations and the
`x-kubernetes-validations` CEL rules (evaluated with cel-python; `number` fields
are CEL doubles, as in Kubernetes) produce field errors in the server's wording.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import celpy
from celpy import celtypes

Schema = Mapping[str, Any]


@dataclass(frozen=True)
class FieldError:
    """One entry of a 422 Status' details.causes."""

    path: str
    kind: str        # FieldValueInvalid | FieldValueRequired | FieldValueNotSupported | ...
    message: str     # the whole "path: Invalid value: ...: why" text

    def cause(self) -> dict[str, str]:
        return {"reason": self.kind, "message": self.message, "field": self.path}


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return '"object"'
    if isinstance(value, list):
        return '"array"'
    return json.dumps(value)


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _preserves(schema: Schema) -> bool:
    return bool(schema.get("x-kubernetes-preserve-unknown-fields"))


def prune(value: Any, schema: Schema, path: str, unknown: list[str]) -> Any:
    """Drop fields the schema does not know (and nulls it does not allow); list what went."""
    if isinstance(value, dict) and (schema.get("type") == "object" or "properties" in schema):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        out = {}
        for key, sub in value.items():
            sub_schema = props.get(key)
            if sub_schema is None and isinstance(extra, dict):
                sub_schema = extra
            if sub_schema is None:
                if _preserves(schema) or extra is True:
                    out[key] = sub
                else:
                    unknown.append(_join(path, key))
                continue
            if sub is None and not sub_schema.get("nullable"):
                continue
            out[key] = prune(sub, sub_schema, _join(path, key), unknown)
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [prune(v, schema["items"], f"{path}[{i}]", unknown) for i, v in enumerate(value)]
    return value


def apply_defaults(value: Any, schema: Schema) -> Any:
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for key, sub_schema in props.items():
            if key not in value and "default" in sub_schema:
                value[key] = copy.deepcopy(sub_schema["default"])
            if key in value:
                value[key] = apply_defaults(value[key], sub_schema)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in value:
                if key not in props:
                    value[key] = apply_defaults(value[key], extra)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(v, schema["items"]) for v in value]
    return value


def _check_type(value: Any, schema: Schema, path: str) -> FieldError | None:
    want = schema.get("type")
    if schema.get("x-kubernetes-int-or-string"):
        ok = isinstance(value, (int, str)) and not isinstance(value, bool)
        want = "integer or string"
    elif want is None:
        return None
    else:
        got = _type_of(value)
        ok = got == want or (want == "number" and got == "integer")
    if ok:
        return None
    return FieldError(path, "FieldValueTypeInvalid",
                      f'{path}: Invalid value: "{_type_of(value)}": {path} in body must be '
                      f'of type {want}: "{_type_of(value)}"')


def _invalid(path: str, value: Any, why: str) -> FieldError:
    return FieldError(path, "FieldValueInvalid", f"{path}: Invalid value: {_shown(value)}: {why}")


def _scalar_checks(value: Any, schema: Schema, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(json.dumps(v) for v in schema["enum"])
        errs.append(FieldError(path, "FieldValueNotSupported",
                               f"{path}: Unsupported value: {json.dumps(value)}: "
                               f"supported values: {allowed}"))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        lo, hi = schema.get("minimum"), schema.get("maximum")
        if lo is not None and (value <= lo if schema.get("exclusiveMinimum") else value < lo):
            rel = "greater than" if schema.get("exclusiveMinimum") else "greater than or equal to"
            errs.append(_invalid(path, value, f"{path} in body should be {rel} {lo}"))
        if hi is not None and (value >= hi if schema.get("exclusiveMaximum") else value > hi):
            rel = "less than" if schema.get("exclusiveMaximum") else "less than or equal to"
            errs.append(_invalid(path, value, f"{path} in body should be {rel} {hi}"))
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            errs.append(_invalid(path, value, f"{path} in body should be at least "
                                              f"{schema['minLength']} chars long"))
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errs.append(FieldError(path, "FieldValueTooLong",
                                   f"{path}: Too long: may not be more than "
                                   f"{schema['maxLength']} bytes"))
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errs.append(_invalid(path, value, f"{path} in body should match "
                                              f"'{schema['pattern']}'"))
    return errs


def _collection_checks(value: Any, schema: Schema, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            errs.append(_invalid(path, value, f"{path} in body should have at least "
                                              f"{schema['minItems']} items"))
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errs.append(FieldError(path, "FieldValueTooMany",
                                   f"{path}: Too many: {len(value)}: must have at most "
                                   f"{schema['maxItems']} items"))
    if isinstance(value, dict):
        if "minProperties" in schema and len(value) < schema["minProperties"]:
            errs.append(_invalid(path, value, f"{path} in body should have at least "
                                              f"{schema['minProperties']} properties"))
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            errs.append(_invalid(path, value, f"{path} in body should have at most "
                                              f"{schema['maxProperties']} properties"))
        for key in schema.get("required") or ():
            if key not in value:
                sub = _join(path, key)
                errs.append(FieldError(sub, "FieldValueRequired", f"{sub}: Required value"))
    return errs


def _combinator_checks(value: Any, schema: Schema, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    for sub in schema.get("allOf") or ():
        errs += validate(value, sub, path, None)
    if "anyOf" in schema and all(validate(value, s, path, None) for s in schema["anyOf"]):
        errs.append(_invalid(path, value, f"{path} in body must match at least one schema "
                                          f"(anyOf)"))
    if "oneOf" in schema:
        passing = sum(not validate(value, s, path, None) for s in schema["oneOf"])
        if passing != 1:
            errs.append(_invalid(path, value, f"{path} in body must match exactly one "
                                              f"schema (oneOf)"))
    if "not" in schema and not validate(value, schema["not"], path, None):
        errs.append(_invalid(path, value, f"{path} in body should not match the schema (not)"))
    return errs


def validate(value: Any, schema: Schema, path: str, old: Any) -> list[FieldError]:
    """All field errors of `value` against `schema` (old: previous value, for oldSelf rules)."""
    if value is None:
        return []
    type_error = _check_type(value, schema, path)
    if type_error:
        return [type_error]
    errs = _scalar_checks(value, schema, path) + _collection_checks(value, schema, path)
    errs += _combinator_checks(value, schema, path)
    props = schema.get("properties") or {}
    extra = schema.get("additionalProperties")
    if isinstance(value, dict):
        old_map = old if isinstance(old, dict) else {}
        for key, sub in value.items():
            sub_schema = props.get(key, extra if isinstance(extra, dict) else None)
            if sub_schema is not None:
                errs += validate(sub, sub_schema, _join(path, key), old_map.get(key))
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, sub in enumerate(value):
            errs += validate(sub, schema["items"], f"{path}[{i}]", None)
    if not errs:
        errs += cel_checks(value, schema, path, old)
    return errs


# ---- CEL (x-kubernetes-validations) ----------------------------------------------------

def to_cel(value: Any, schema: Schema | None) -> Any:
    """JSON -> CEL values, typed by the schema as Kubernetes does (number is always double)."""
    schema = schema or {}
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        return celtypes.MapType({
            celtypes.StringType(k): to_cel(v, props.get(k, extra if isinstance(extra, dict)
                                                          else None))
            for k, v in value.items()})
    if isinstance(value, list):
        return celtypes.ListType([to_cel(v, schema.get("items")) for v in value])
    if schema.get("type") == "number" and isinstance(value, (int, float)) \
            and not isinstance(value, bool):
        return celtypes.DoubleType(float(value))
    return celpy.json_to_cel(value)


@lru_cache(maxsize=512)
def _program(rule: str) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(rule))


def cel_checks(value: Any, schema: Schema, path: str, old: Any) -> list[FieldError]:
    errs: list[FieldError] = []
    for rule in schema.get("x-kubernetes-validations") or ():
        text = rule["rule"]
        uses_old = "oldSelf" in text
        if uses_old and old is None and not rule.get("optionalOldSelf"):
            continue   # transition rules only run on updates
        activation = {"self": to_cel(value, schema)}
        if uses_old:
            activation["oldSelf"] = to_cel(old, schema) if old is not None else None
        try:
            ok = _program(text).evaluate(activation)
        except Exception as e:  # CEL compile or runtime error
            errs.append(FieldError(path, "FieldValueInvalid",
                                   f"{path or '<root>'}: Invalid value: {_shown(value)}: "
                                   f"rule {text!r} could not be evaluated: {e}"))
            continue
        if ok is not True and ok != celtypes.BoolType(True):
            field = path + rule.get("fieldPath", "") if rule.get("fieldPath") else path
            why = rule.get("message") or f"failed rule: {text}"
            errs.append(FieldError(field, rule.get("reason", "FieldValueInvalid"),
                                   f"{field or '<root>'}: Invalid value: {_shown(value)}: {why}"))
    return errs
