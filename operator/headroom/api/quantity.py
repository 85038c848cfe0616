"""Kubernetes quantities as integers: bytes, CPU cores, page alignment.

Parsing is delegated to ``kubernetes.utils.parse_quantity`` (the client's own
parser), so "3Gi", "500m", "1e3" and plain integers mean what they mean to
kubectl.
"""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation
from typing import Any

from kubernetes.utils import parse_quantity

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
