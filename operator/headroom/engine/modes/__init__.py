"""Reclaim modes by name (base.Mode); each mode is one file here, registered on import."""

from headroom.engine.modes import off, pressure, watermark
from headroom.engine.modes.base import Check, Mode, get, names, register

__all__ = ["Check", "Mode", "get", "names", "off", "pressure", "register", "watermark"]
