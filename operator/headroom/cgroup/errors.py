"""Typed errors of the cgroup layer. Every message names the file involved."""

from __future__ import annotations

import errno
import os


class CgroupError(Exception):
    """Any failure reading or writing a cgroup file."""

    def __init__(self, path: str | os.PathLike[str], message: str, err: int | None = None):
        self.path = os.fspath(path)
        self.errno = err
        super().__init__(f"{self.path}: {message}")


class CgroupGone(CgroupError):
    """The cgroup (or the file) no longer exists: ENOENT / ENODEV."""


class PartialReclaim(CgroupError):
    """memory.reclaim freed less than asked (EAGAIN): nothing (more) was reclaimable."""


class UnsupportedKey(CgroupError):
    """The kernel rejected the write as invalid (EINVAL), e.g. an unknown `swappiness=` key."""


class Busy(CgroupError):
    """The kernel answered EBUSY."""


class UnsafePath(CgroupError):
    """A root that is not a real cgroup2 mount, or a path outside the root: refused, not touched."""


_BY_ERRNO: dict[int, type[CgroupError]] = {
    errno.ENOENT: CgroupGone,
    errno.ENODEV: CgroupGone,
    errno.EAGAIN: PartialReclaim,
    errno.EINVAL: UnsupportedKey,
    errno.EBUSY: Busy,
}


def from_oserror(exc: OSError, path: str | os.PathLike[str], action: str) -> CgroupError:
    """Map an OSError to the typed error for `action` ("read", "write '...'") on `path`."""
    code = exc.errno or 0
    name = errno.errorcode.get(code, str(code))
    cls = _BY_ERRNO.get(code, CgroupError)
    return cls(path, f"{action} failed: {exc.strerror or exc} ({name})", code)
