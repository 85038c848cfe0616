"""Raw file I/O on a cgroup tree and the safety checks that guard every write.

A root is accepted only when statfs says cgroup2fs with the memory controller
enabled, or when the caller explicitly allows a fake root (a temporary
directory in unit tests) -- and never a non-cgroup2 /sys/fs/cgroup, which on
the development machines is the host's own tmpfs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import pathlib

from headroom.cgroup.errors import CgroupError, UnsafePath, from_oserror

CGROUP2_SUPER_MAGIC = 0x63677270
ALLOW_FAKE_ENV = "HEADROOM_ALLOW_FAKE_CGROUP_ROOT"
HOST_CGROUP_MOUNT = pathlib.Path("/sys/fs/cgroup")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def fs_magic(path: str | os.PathLike[str]) -> int:
    """statfs(2) f_type of the file system holding `path` (os.statvfs does not expose it)."""
    buf = ctypes.create_string_buffer(512)  # larger than struct statfs on every Linux ABI
    if _libc.statfs(os.fsencode(path), buf) != 0:
        err = ctypes.get_errno()
        raise from_oserror(OSError(err, os.strerror(err)), path, "statfs")
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


def read_text(path: pathlib.Path) -> str:
    """Whole file; O_NOFOLLOW so a symlink can never redirect a read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise from_oserror(e, path, "open") from e
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks).decode()
    except OSError as e:
        raise from_oserror(e, path, "read") from e
    finally:
        os.close(fd)


class KeptOpen:
    """A cgroup file opened once and re-read with pread(2) at offset 0: kernfs regenerates
    the contents on every read from the start, so a check costs one system call, not
    open + read + read-to-EOF + close (and no path handling). For small files only
    (memory.current, memory.high, memory.events, memory.pressure).

    `follow_replacement` (fake trees): a plain file may have been deleted or replaced
    since it was opened, where a real cgroup file would answer ENODEV; then the path is
    opened again (ENOENT: CgroupGone), at the price of one fstat per read."""

    __slots__ = ("_fd", "follow", "path")

    def __init__(self, path: pathlib.Path, follow_replacement: bool = False):
        self.path = path
        self.follow = follow_replacement
        self._open()

    def _open(self) -> None:
        path = self.path
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            raise from_oserror(e, path, "open") from e

    def read(self, size: int = 4096) -> bytes:
        try:
            if self.follow and os.fstat(self._fd).st_nlink == 0:
                os.close(self._fd)
                self._fd = -1
                self._open()
            return os.pread(self._fd, size, 0)
        except OSError as e:
            raise from_oserror(e, self.path, "read") from e

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        if getattr(self, "_fd", -1) >= 0:
            self.close()


def write_text(path: pathlib.Path, data: str) -> None:
    """One write(2) of `data` (kernfs acts on each write call); O_NOFOLLOW, never O_CREAT.
    O_TRUNC is what a shell redirection does too: harmless on kernfs, exact on a fake tree."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise from_oserror(e, path, "open for writing") from e
    try:
        n = os.write(fd, data.encode())
        if n != len(data):
            raise CgroupError(path, f"short write of {data!r} ({n} bytes)")
    except OSError as e:
        raise from_oserror(e, path, f"write {data!r}") from e
    finally:
        os.close(fd)


def _allow_fake_from_env() -> bool:
    return os.environ.get(ALLOW_FAKE_ENV, "") in ("1", "true", "yes")


def check_root(path: pathlib.Path, allow_fake: bool) -> bool:
    """Validate a cgroup root; returns True when it is a fake (non-cgroup2fs) root."""
    if not path.is_dir():
        raise UnsafePath(path, "cgroup root is not a directory")
    if fs_magic(path) == CGROUP2_SUPER_MAGIC:
        controllers = read_text(path / "cgroup.controllers").split()
        if "memory" not in controllers:
            raise UnsafePath(path, "memory controller not available in cgroup.controllers")
        return False
    if path == HOST_CGROUP_MOUNT or HOST_CGROUP_MOUNT in path.parents:
        raise UnsafePath(path, "not a cgroup2 file system; refusing to touch the host path")
    if not (allow_fake or _allow_fake_from_env()):
        raise UnsafePath(path, f"not a cgroup2 file system (statfs magic is not "
                               f"{CGROUP2_SUPER_MAGIC:#x}); set {ALLOW_FAKE_ENV}=1 only for "
                               "a fake tree in tests")
    return True


def resolve_inside(root: pathlib.Path, path: str | os.PathLike[str]) -> pathlib.Path:
    """Absolute, symlink-free path of a cgroup dir that must lie inside `root` (or be it)."""
    candidate = pathlib.Path(path)
    if not candidate.is_absolute():
        candidate = root / candidate
    resolved = pathlib.Path(os.path.realpath(candidate))
    if resolved != root and root not in resolved.parents:
        raise UnsafePath(candidate, f"outside the cgroup root {root}")
    # Below the root nothing is followed: a directory swapped for a symlink after a
    # caller checked it (to a parent, or to another pod) must not redirect a write.
    lexical = pathlib.Path(os.path.normpath(candidate))
    if lexical != resolved and (lexical == root or root in lexical.parents):
        raise UnsafePath(candidate, "a symlink below the cgroup root; not followed")
    return resolved
