"""Pod uid + QoS class -> the pod-level cgroup directory, for both kubelet cgroup drivers
and any kubelet ``--cgroup-root``.

The kubelet names a pod's cgroup by a list of components: the components of its cgroup
root (``/`` by default: none; kind uses ``/kubelet``), then ``kubepods``, the QoS tier
(none for Guaranteed) and ``pod<uid>``. The drivers turn that list into a path:

* cgroupfs: the components joined by ``/``: ``kubepods/burstable/pod<uid>``,
  ``kubelet/kubepods/burstable/pod<uid>``;
* systemd: one slice per prefix of the list, named by that prefix with ``-`` in each
  component replaced by ``_`` and the components joined by ``-`` (systemd nests
  ``a-b.slice`` inside ``a.slice``): ``kubepods.slice/kubepods-burstable.slice/
  kubepods-burstable-pod<uid_>.slice``; under ``/kubelet``: ``kubelet.slice/
  kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/
  kubelet-kubepods-burstable-pod<uid_>.slice``; under ``/custom/path``:
  ``custom.slice/custom-path.slice/custom-path-kubepods.slice/...``.

Only pod-level directories ever leave this module: the root, the kubelet root's and the
kubepods parents are never handed to the engine. Nothing here opens a file; it only looks
at directory entries with ``lstat`` so that a symlink planted anywhere on the way cannot
lead a write out of the root.
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

# A component of an explicit kubelet cgroup root: a plain directory name.
_ROOT_COMPONENT_RE = re.compile(r"[A-Za-z0-9_.-]+")

# kubelet cgroup roots tried by `auto`: the kubelet default, then kind's.
AUTO_KUBELET_ROOTS = ("/", "/kubelet")


class Driver(enum.StrEnum):
    SYSTEMD = "systemd"
    CGROUPFS = "cgroupfs"


class PodCgroupError(ValueError):
    """The pod cannot be mapped to a cgroup safely; ``reason`` goes into the plan status."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Layout:
    """Where the kubelet puts pods: its cgroup driver and cgroup root (as components)."""

    driver: Driver
    kubelet_root: tuple[str, ...] = ()

    def path_of(self, names: tuple[str, ...]) -> PurePosixPath:
        """The directory of a kubelet cgroup name (root components included)."""
        if self.driver is Driver.CGROUPFS:
            return PurePosixPath(*names)
        escaped = [n.replace("-", "_") for n in names]
        return PurePosixPath(*("-".join(escaped[:i]) + ".slice"
                               for i in range(1, len(escaped) + 1)))

    def kubepods(self) -> PurePosixPath:
        return self.path_of((*self.kubelet_root, "kubepods"))

    def describe(self) -> str:
        return f"{self.driver} driver, kubelet cgroup root {root_text(self.kubelet_root)}"


def root_text(components: tuple[str, ...]) -> str:
    return "/" + "/".join(components)


def parse_kubelet_root(value: str) -> tuple[str, ...]:
    """A kubelet ``--cgroup-root`` (cgroupfs form, e.g. ``/``, ``/kubelet``,
    ``/custom/path``) as components. Raises ValueError on anything else."""
    if not value.startswith("/"):
        raise ValueError(f"kubelet cgroup root {value!r} must be 'auto' or start with '/'")
    parts = tuple(p for p in value.split("/") if p)
    for p in parts:
        if p in (".", "..") or not _ROOT_COMPONENT_RE.fullmatch(p):
            raise ValueError(f"kubelet cgroup root {value!r}: bad component {p!r}")
    return parts


def valid_uid(uid: str) -> bool:
    return bool(UID_RE.fullmatch(uid))


def relative_path(uid: str, qos_class: str, driver: Driver,
                  kubelet_root: tuple[str, ...] = ()) -> PurePosixPath:
    """The pod's cgroup directory relative to the root. Raises PodCgroupError on bad input."""
    if not valid_uid(uid):
        raise PodCgroupError("InvalidUid", f"pod uid {uid!r} is not a UUID")
    if qos_class not in QOS_CLASSES:
        raise PodCgroupError("InvalidQosClass", f"unknown QoS class {qos_class!r}")
    tier = () if qos_class == "Guaranteed" else (qos_class.lower(),)
    return Layout(driver, kubelet_root).path_of(
        (*kubelet_root, "kubepods", *tier, f"pod{uid}"))


def _walk(root: Path, rel: PurePosixPath) -> tuple[Path, str | None, str | None]:
    """Check each component of rel below root with lstat: (path reached, reason, message);
    reason None when every component is a real directory (not a symlink)."""
    path = root
    for part in rel.parts:
        path = path / part
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return path, "CgroupNotFound", f"{path} does not exist"
        except OSError as e:
            return path, "CgroupNotFound", f"{path}: {e.strerror}"
        if stat.S_ISLNK(mode):
            return path, "UnsafePath", f"{path} is a symlink; not followed"
        if not stat.S_ISDIR(mode):
            return path, "UnsafePath", f"{path} is not a directory"
    return path, None, None


def candidate_layouts(driver: Driver | None,
                      kubelet_root: tuple[str, ...] | None) -> list[Layout]:
    """Layouts to look for, in order of preference (None: auto)."""
    drivers = [driver] if driver else [Driver.SYSTEMD, Driver.CGROUPFS]
    roots = ([kubelet_root] if kubelet_root is not None
             else [parse_kubelet_root(r) for r in AUTO_KUBELET_ROOTS])
    return [Layout(d, r) for r in roots for d in drivers]


def detect_layout(root: Path, candidates: list[Layout]) -> Layout | None:
    """The first candidate whose kubepods directory exists under root (reached without a
    symlink); None while none exists.

    Should several exist (a node that switched drivers or roots), the kubelet defaults
    win (systemd, root ``/``): pods missing there are reported as CgroupNotFound, not
    guessed.
    """
    for layout in candidates:
        if _walk(root, layout.kubepods())[1] is None:
            return layout
    return None


@dataclass(frozen=True)
class PodCgroupResolver:
    """Finds pod cgroup directories under one root; driver and kubelet cgroup root fixed
    or auto-detected (on each call, until something exists)."""

    root: Path
    driver: Driver | None = None                  # None: detect
    kubelet_root: tuple[str, ...] | None = None   # None: detect among AUTO_KUBELET_ROOTS

    def current_layout(self) -> Layout | None:
        if self.driver is not None and self.kubelet_root is not None:
            return Layout(self.driver, self.kubelet_root)
        return detect_layout(self.root, candidate_layouts(self.driver, self.kubelet_root))

    def current_driver(self) -> Driver | None:
        if self.driver is not None:
            return self.driver
        layout = self.current_layout()
        return layout.driver if layout else None

    def find(self, uid: str, qos_class: str) -> Path:
        """The pod's cgroup directory, or PodCgroupError with reason CgroupNotFound,
        InvalidUid, InvalidQosClass or UnsafePath."""
        # Validate input first so that a bad uid is reported as such, not as missing.
        relative_path(uid, qos_class, Driver.CGROUPFS)
        layout = self.current_layout()
        if layout is None:
            candidates = candidate_layouts(self.driver, self.kubelet_root)
            for c in candidates:   # a symlink in the way is worth saying as such
                _, reason, message = _walk(self.root, c.kubepods())
                if reason == "UnsafePath":
                    raise PodCgroupError(reason, f"{message} ({c.describe()})")
            looked = ", ".join(str(c.kubepods()) for c in candidates)
            raise PodCgroupError("CgroupNotFound",
                                 f"no kubepods hierarchy under {self.root} (looked for {looked})")
        rel = relative_path(uid, qos_class, layout.driver, layout.kubelet_root)
        path, reason, message = _walk(self.root, rel)
        if reason is not None:
            raise PodCgroupError(reason, f"{message} ({layout.describe()})")
        # A pod's QoS class never changes: the same uid under another class means the
        # tree is not what the kubelet made. Which one is the pod's is a guess: neither
        # is written.
        others = [q for q in QOS_CLASSES if q != qos_class and os.path.lexists(
            self.root / relative_path(uid, q, layout.driver, layout.kubelet_root))]
        if others:
            raise PodCgroupError("AmbiguousCgroup",
                                 f"pod {uid} has a cgroup under {qos_class} ({path}) and "
                                 f"under {', '.join(others)} too; neither is written "
                                 f"({layout.describe()})")
        # Defence in depth: the lexical path must stay under root (it does by construction).
        if os.path.commonpath([self.root, path]) != str(self.root) or path == self.root:
            raise PodCgroupError("UnsafePath", f"{path} is outside {self.root}")
        return path


def make_resolver(root: str | Path, driver: str = "auto",
                  kubelet_root: str = "auto") -> PodCgroupResolver:
    """From the CLI's --cgroup-root, --cgroup-driver (auto|systemd|cgroupfs) and
    --kubelet-cgroup-root (auto or a path). Raises ValueError on a bad kubelet root."""
    # abspath, not resolve(): the root itself may legitimately be a mount reached by a link,
    # but nothing below it is followed.
    root_path = Path(os.path.abspath(root))
    return PodCgroupResolver(
        root_path,
        None if driver == "auto" else Driver(driver),
        None if kubelet_root == "auto" else parse_kubelet_root(kubelet_root),
    )
