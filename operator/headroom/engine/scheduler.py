"""When each cgroup is checked next: a min-heap of due times, one live entry per key."""

from __future__ import annotations

import heapq
import itertools


class DueQueue:
    """Re-scheduling a key supersedes its earlier entry (stale heap entries are skipped)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str]] = []
        self._live: dict[str, tuple[float, int]] = {}
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._live)

    def schedule(self, key: str, due: float) -> None:
        entry = (due, next(self._seq))
        self._live[key] = entry
        heapq.heappush(self._heap, (*entry, key))

    def schedule_earlier(self, key: str, due: float) -> None:
        """Move the key's check to `due` unless it is already due sooner."""
        live = self._live.get(key)
        if live is None or due < live[0]:
            self.schedule(key, due)

    def cancel(self, key: str) -> None:
        self._live.pop(key, None)

    def due_of(self, key: str) -> float | None:
        live = self._live.get(key)
        return None if live is None else live[0]

    def _drop_stale(self) -> None:
        while self._heap:
            due, seq, key = self._heap[0]
            if self._live.get(key) == (due, seq):
                return
            heapq.heappop(self._heap)

    def next_due(self) -> float | None:
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[tuple[str, float]]:
        """Keys due at or before `now`, earliest first, with their due times; unscheduled."""
        out = []
        while (due := self.next_due()) is not None and due <= now:
            _, _, key = heapq.heappop(self._heap)
            del self._live[key]
            out.append((key, due))
        return out
