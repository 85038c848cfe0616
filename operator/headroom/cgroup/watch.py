"""File descriptors the engine polls: PSI triggers and memory.events change notification.

Both are kernfs files that signal POLLPRI: a PSI trigger when the stall
threshold is crossed within its window, memory.events whenever one of its
counters changes. A PSI trigger lives as long as its fd stays open. A
memory.events fd re-arms only when it is read again, so `acknowledge()`
re-reads it (and returns the counters, saving a second open).
"""

from __future__ import annotations

import os
import pathlib
import select
from typing import Protocol

from headroom.cgroup.errors import from_oserror
from headroom.cgroup.parse import parse_flat_keyed


class Watch(Protocol):
    """Something the engine can register with epoll."""

    poll_events: int

    def fileno(self) -> int: ...

    def acknowledge(self) -> dict[str, int] | None: ...

    def close(self) -> None: ...


class PsiTrigger:
    """`some <stall_us> <window_us>` registered on a memory.pressure fd."""

    poll_events = select.EPOLLPRI

    def __init__(self, path: pathlib.Path, stall_us: int, window_us: int):
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            raise from_oserror(e, path, "open") from e
        # The trailing NUL is what the kernel's PSI documentation writes.
        trigger = f"some {stall_us} {window_us}"
        try:
            os.write(self._fd, trigger.encode() + b"\0")
        except OSError as e:
            os.close(self._fd)
            raise from_oserror(e, path, f"write PSI trigger {trigger!r}") from e

    def fileno(self) -> int:
        return self._fd

    def acknowledge(self) -> None:
        return None  # the kernel clears the trigger event when it reports it

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class EventsWatch:
    """An open memory.events fd; POLLPRI when a counter changes."""

    poll_events = select.EPOLLPRI

    def __init__(self, path: pathlib.Path):
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            raise from_oserror(e, path, "open") from e
        self.acknowledge()

    def fileno(self) -> int:
        return self._fd

    def acknowledge(self) -> dict[str, int]:
        try:
            os.lseek(self._fd, 0, os.SEEK_SET)
            chunks = []
            while chunk := os.read(self._fd, 65536):
                chunks.append(chunk)
            text = b"".join(chunks).decode()
        except OSError as e:
            raise from_oserror(e, self.path, "read") from e
        return parse_flat_keyed(text)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
