"""Structured logging: one JSON object per line on stderr, for every headroom command.

    log = logging.getLogger("headroom.engine")
    event(log, "reclaim_backoff", key="web", backoff_seconds=0.4)
    # {"time": "...", "level": "info", "logger": "headroom.engine",
    #  "event": "reclaim_backoff", "key": "web", "backoff_seconds": 0.4}
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any, TextIO


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC)
                    .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        doc.update(getattr(record, "fields", {}))
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def setup(level: str = "info", stream: TextIO | None = None) -> None:
    """Route all logging (ours and libraries') through one JSON handler."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())


def event(logger: logging.Logger, name: str, level: int = logging.INFO, *,
          exc_info: bool = False, **fields: Any) -> None:
    """Log one event with its fields as top-level JSON keys."""
    logger.log(level, name, extra={"fields": fields}, exc_info=exc_info)
