"""Fixtures of the chart tier: a real helm binary."""

from __future__ import annotations

import platform
import shutil
from pathlib import Path

import pytest
from helm_fetch import HelmUnavailable, ensure_helm


@pytest.fixture(scope="session")
def helm() -> Path:
    try:
        return ensure_helm()
    except HelmUnavailable as e:
        # Only an unsupported platform may fall back to a helm on PATH; a failed
        # download is a failure: CI must never silently drop this tier.
        on_path = shutil.which("helm")
        if on_path and platform.machine() not in ("x86_64", "AMD64"):
            return Path(on_path)
        pytest.fail(f"no helm binary: {e}")
