"""Pod uid + QoS class -> the pod-level cgroup directory, for both kubelet cgroup drivers.

Layouts (relative to the cgroup root):

* systemd:  ``kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice``,
  ``kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid_>.slice``,
  Guaranteed ``kubepods.slice/kubepods-pod<uid_>.slice`` (uid with ``-`` replaced by ``_``);
* cgroupfs: ``kubepods/burstable/pod<uid>``, ``kubepods/besteffort/pod<uid>``,
  Guaranteed ``kubepods/pod<uid>``.

Only pod-level directories ever leave this module: the root and the kubepods parents are
never handed to the engine. Nothing here opens a file; it only looks at directory entries
with ``lstat`` so that a symlink planted anywhere on the way cannot lead a write out of
the root.
"""

from __future__ import annotations

import enum
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

# Lower-case canonical form, as the API server hands out pod uids.
UID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

QOS_CLASSES = ("Guaranteed", "Burstable", "BestEffort")


class Driver(enum.StrEnum):
    SYSTEMD = "systemd"
    CGROUPFS = "cgroupfs"


# The top-level directory each driver creates under the cgroup root.
_KUBEPODS = {Driver.SYSTEMD: "kubepods.slice", Driver.CGROUPFS: "kubepods"}


class PodCgroupError(ValueError):
    """The pod cannot be mapped to a cgroup safely; ``reason`` goes into the plan status."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def valid_uid(uid: str) -> bool:
    return bool(UID_RE.fullmatch(uid))


def relative_path(uid: str, qos_class: str, driver: Driver) -> PurePosixPath:
    """The pod's cgroup directory relative to the root. Raises PodCgroupError on bad input."""
    if not valid_uid(uid):
        raise PodCgroupError("InvalidUid", f"pod uid {uid!r} is not a UUID")
    if qos_class not in QOS_CLASSES:
        raise PodCgroupError("InvalidQosClass", f"unknown QoS class {qos_class!r}")
    if driver is Driver.SYSTEMD:
        uid_ = uid.replace("-", "_")
        if qos_class == "Guaranteed":
            return PurePosixPath("kubepods.slice", f"kubepods-pod{uid_}.slice")
        tier = qos_class.lower()
        return PurePosixPath(
            "kubepods.slice", f"kubepods-{tier}.slice", f"kubepods-{tier}-pod{uid_}.slice"
        )
    if qos_class == "Guaranteed":
        return PurePosixPath("kubepods", f"pod{uid}")
    return PurePosixPath("kubepods", qos_class.lower(), f"pod{uid}")


def _is_real_dir(path: Path) -> bool:
    """A directory that is not a symlink (lstat: the link itself is never followed)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def detect_driver(root: Path) -> Driver | None:
    """The driver whose kubepods directory exists under root; None while neither exists.

    Should both exist (a node that switched drivers), systemd wins: it is the default of
    current kubelets, and pods missing there are reported as CgroupNotFound, not guessed.
    """
    for driver in (Driver.SYSTEMD, Driver.CGROUPFS):
        if _is_real_dir(root / _KUBEPODS[driver]):
            return driver
    return None


@dataclass(frozen=True)
class PodCgroupResolver:
    """Finds pod cgroup directories under one root, with the driver fixed or auto-detected."""

    root: Path
    driver: Driver | None = None   # None: detect on each call until something exists

    def current_driver(self) -> Driver | None:
        return self.driver or detect_driver(self.root)

    def find(self, uid: str, qos_class: str) -> Path:
        """The pod's cgroup directory, or PodCgroupError with reason CgroupNotFound,
        InvalidUid, InvalidQosClass or UnsafePath."""
        driver = self.current_driver()
        if driver is None:
            # Validate input first so that a bad uid is reported as such, not as missing.
            relative_path(uid, qos_class, Driver.SYSTEMD)
            raise PodCgroupError("CgroupNotFound", f"no kubepods hierarchy under {self.root}")
        rel = relative_path(uid, qos_class, driver)
        path = self.root
        for part in rel.parts:
            path = path / part
            try:
                mode = os.lstat(path).st_mode
            except FileNotFoundError:
                raise PodCgroupError(
                    "CgroupNotFound", f"{path} does not exist ({driver} driver)"
                ) from None
            except OSError as e:
                raise PodCgroupError("CgroupNotFound", f"{path}: {e.strerror}") from None
            if stat.S_ISLNK(mode):
                raise PodCgroupError("UnsafePath", f"{path} is a symlink; not followed")
            if not stat.S_ISDIR(mode):
                raise PodCgroupError("UnsafePath", f"{path} is not a directory")
        # Defence in depth: the lexical path must stay under root (it does by construction).
        if os.path.commonpath([self.root, path]) != str(self.root) or path == self.root:
            raise PodCgroupError("UnsafePath", f"{path} is outside {self.root}")
        return path


def make_resolver(root: str | Path, driver: str = "auto") -> PodCgroupResolver:
    """From the CLI's --cgroup-root and --cgroup-driver (auto|systemd|cgroupfs)."""
    # abspath, not resolve(): the root itself may legitimately be a mount reached by a link,
    # but nothing below it is followed.
    root_path = Path(os.path.abspath(root))
    return PodCgroupResolver(root_path, None if driver == "auto" else Driver(driver))
