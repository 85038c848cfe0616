"""Pure parsers of cgroup v2 file contents (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass


def parse_limit(text: str) -> int | None:
    """memory.high / memory.max: bytes, or None for "max" (no limit)."""
    value = text.strip()
    return None if value == "max" else int(value)


def parse_flat_keyed(text: str) -> dict[str, int]:
    """memory.stat / memory.events: "key value" lines -> {key: value}."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            out[parts[0]] = int(parts[1])
    return out


@dataclass(frozen=True)
class PressureLine:
    """One line of a PSI file: share of wall time stalled (percent) and the total (µs)."""

    avg10: float
    avg60: float
    avg300: float
    total_us: int


@dataclass(frozen=True)
class Pressure:
    some: PressureLine
    full: PressureLine | None


def _pressure_line(fields: list[str]) -> PressureLine:
    kv = dict(f.split("=", 1) for f in fields)
    return PressureLine(float(kv["avg10"]), float(kv["avg60"]), float(kv["avg300"]),
                        int(kv["total"]))


def parse_pressure(text: str) -> Pressure:
    """memory.pressure: "some avg10=.. avg60=.. avg300=.. total=.." and the same for "full"."""
    lines: dict[str, PressureLine] = {}
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] in ("some", "full"):
            lines[parts[0]] = _pressure_line(parts[1:])
    if "some" not in lines:
        raise ValueError("no 'some' line")
    return Pressure(lines["some"], lines.get("full"))
