"""Host side of the real-kernel tier: after the run, show what the guests measured."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

LOG_DIR = Path(__file__).resolve().parents[2] / "out"
_STARTED = time.time()
# Lines the guest tests print with their numbers, and the inner session's result line.
_INTERESTING = re.compile(r"(kernel alone|with agent|without agent|guest session took"
                          r"|^=+ .*(passed|failed).* =+$)")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    logs = sorted(p for p in LOG_DIR.glob("vm-*.log") if p.stat().st_mtime >= _STARTED)
    if not logs:
        return
    terminalreporter.section("real-kernel guest sessions (full logs in out/vm-*.log)")
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            if _INTERESTING.search(line):
                terminalreporter.write_line(line.strip()[:400])
