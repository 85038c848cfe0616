"""Kubernetes quantities as integers: bytes, CPU cores, page alignment.

Parsing is delegated to ``kubernetes.utils.parse_quantity`` (the client's own
parser), so "3Gi", "500m", "1e3" and plain integers mean what they mean to
kubectl.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any


def _client_parser() -> Callable[[Any], Decimal]:
    """`kubernetes.utils.parse_quantity`, loaded without the `kubernetes` package.

    The package's __init__ imports the whole generated client: 0.8 s on a host and
    tens of seconds in the emulated test guest, for an agent in standalone mode that
    never talks to an API server. The parser's module needs only the standard
    library, so it is loaded from its file; where the package is already imported
    (the operator, the cluster-mode agent) its own module is used."""
    loaded = sys.modules.get("kubernetes.utils.quantity")
    if loaded is None:
        spec = importlib.util.find_spec("kubernetes")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("the kubernetes package is not installed")
        path = Path(next(iter(spec.submodule_search_locations)), "utils", "quantity.py")
        file_spec = importlib.util.spec_from_file_location("_headroom_k8s_quantity", path)
        if file_spec is None or file_spec.loader is None:
            raise ImportError(f"cannot load {path}")
        loaded = importlib.util.module_from_spec(file_spec)
        file_spec.loader.exec_module(loaded)
    parser: Callable[[Any], Decimal] = loaded.parse_quantity
    return parser


parse_quantity = _client_parser()

PAGE_SIZE = 4096


class QuantityError(ValueError):
    """A value that is not a Kubernetes quantity."""


def parse(value: Any) -> Decimal:
    """Any quantity (int, float, or string such as "3Gi") -> Decimal. Raises QuantityError."""
    if isinstance(value, bool) or value is None:
        raise QuantityError(f"not a quantity: {value!r}")
    try:
        return Decimal(parse_quantity(value))
    except (ValueError, TypeError, InvalidOperation) as e:
        raise QuantityError(f"not a quantity: {value!r}") from e


def parse_bytes(value: Any) -> int:
    """A memory quantity -> whole bytes (fractions rounded up, as Kubernetes does)."""
    return math.ceil(parse(value))


def parse_cpu(value: Any) -> float:
    """A CPU quantity ("500m", "2", 0.5) -> cores."""
    return float(parse(value))


def page_align_down(n: int) -> int:
    """Largest multiple of PAGE_SIZE <= n (memory.high is page granular)."""
    return n - n % PAGE_SIZE
