"""Logging for every headroom command: one JSON object per line on stderr (default), or
one readable line per event (`--log-format text`).

    log = logging.getLogger("headroom.engine")
    event(log, "reclaim_backoff", key="web", backoff_seconds=0.4)
    # json: {"time": "...", "level": "info", "logger": "headroom.engine",
    #        "msg": "reclaim_backoff", "key": "web", "backoff_seconds": 0.4}
    # text: 2026-01-01T00:00:00.000Z info headroom.engine: reclaim_backoff key=web ...

Records of libraries (kopf, the Kubernetes client) go through the same handler, their
message under "msg" too; kopf's object reference becomes "object": "namespace/name".
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any, TextIO

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("json", "text")
# Keys every JSON line has; a field of the same name is kept under "field.<name>".
_RESERVED = frozenset({"time", "level", "logger", "msg", "exception", "object"})


def _time(record: logging.LogRecord) -> str:
    return (datetime.datetime.fromtimestamp(record.created, datetime.UTC)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"))


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ref = getattr(record, "k8s_ref", None)   # kopf's per-object loggers set it
    if isinstance(ref, dict) and ref.get("name"):
        ns = ref.get("namespace")
        out["object"] = f"{ns}/{ref['name']}" if ns else str(ref["name"])
    for k, v in (getattr(record, "fields", None) or {}).items():
        out[f"field.{k}" if k in _RESERVED else k] = v
    return out


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": _time(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(_fields(record))
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = [_time(record), record.levelname.lower(), f"{record.name}:",
                 record.getMessage()]
        for k, v in _fields(record).items():
            text = v if isinstance(v, str) else json.dumps(v, default=str)
            parts.append(f"{k}={json.dumps(text) if ' ' in text or not text else text}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup(level: str = "info", stream: TextIO | None = None, fmt: str = "json") -> None:
    """Route all logging (ours and libraries') through one handler of format `fmt`."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format {fmt!r} is not one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())


def event(logger: logging.Logger, name: str, level: int = logging.INFO, *,
          exc_info: bool = False, **fields: Any) -> None:
    """Log one event: `name` is the message, `fields` become top-level JSON keys."""
    logger.log(level, name, extra={"fields": fields}, exc_info=exc_info)
