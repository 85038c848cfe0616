"""Wake-up plumbing of the engine's scheduler thread: one epoll over every PSI trigger and
memory.events fd (the fd registry: fd -> engine key), plus a self-pipe so that another
thread (set_targets, a finished write, stop) can end a wait at once."""

from __future__ import annotations

import contextlib
import os
import resource
import select
import threading
from collections.abc import Iterable

from headroom.cgroup import Watch


class Wakeups:
    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._lock = threading.Lock()
        self._by_fd: dict[int, tuple[str, Watch]] = {}
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._epoll.register(self._wake_r, select.EPOLLIN)
        _raise_fd_limit()

    def add(self, key: str, watches: Iterable[Watch]) -> None:
        with self._lock:
            for w in watches:
                self._by_fd[w.fileno()] = (key, w)
                self._epoll.register(w.fileno(), w.poll_events)

    def remove(self, watches: Iterable[Watch]) -> None:
        """Unregister and close."""
        with self._lock:
            for w in watches:
                fd = w.fileno()
                if self._by_fd.pop(fd, None) is not None:
                    with contextlib.suppress(OSError, ValueError):
                        self._epoll.unregister(fd)
        close_all(watches)

    def wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def poll(self, timeout: float) -> list[tuple[str, Watch]]:
        """Wait up to `timeout` s; the (key, watch) pairs that fired (the self-pipe is
        drained, not returned)."""
        try:
            ready = self._epoll.poll(max(timeout, 0.0))
        except InterruptedError:
            return []
        out = []
        for fd, _ in ready:
            if fd == self._wake_r:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
                continue
            with self._lock:
                entry = self._by_fd.get(fd)
            if entry is not None:
                out.append(entry)
        return out

    def close(self) -> None:
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._epoll.close()


def close_all(watches: Iterable[Watch]) -> None:
    for w in list(watches):
        with contextlib.suppress(OSError):
            w.close()


def _raise_fd_limit() -> None:
    """Two fds per cgroup (PSI trigger, memory.events): lift the soft limit to the hard one."""
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
