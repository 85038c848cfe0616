"""Build the control plane's executables from source, once per content (idempotent).

tests/controlplane/go/ is a Go module that compiles kube-apiserver,
kube-controller-manager, kube-scheduler and etcd (k8s.io/kubernetes and
go.etcd.io/etcd/server/v3 from the Go module proxy) into ONE multi-call binary; it
is hard-linked under those four names and dispatches on argv[0]. The result lives
in .cache/controlplane/<hash of go.mod, go.sum, *.go>/, so only the first run on a
machine pays for the build, and anyone can run the servers by hand:

    .venv/bin/python tests/controlplane/build.py     # prints the directory
    .cache/controlplane/<hash>/kube-apiserver --version

The build runs under `nice -n 19` (the machines are shared) with -trimpath and
-ldflags=-s -w (no symbol tables: about a third smaller, nothing here debugs them).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULE = Path(__file__).resolve().parent / "go"
CACHE = ROOT / ".cache" / "controlplane"
NAMES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
MULTICALL = "controlplane"
# static (CGO_ENABLED=0): the same files also run inside the QEMU test guest
# The version the servers report (/version, helm's kubeVersion checks): as a module
# dependency nothing stamps it, so the link does, as Kubernetes' own build does.
KUBE_VERSION = "v1.37.2"
_STAMP = " ".join(f"-X {pkg}.{var}={val}"
                  for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
                  for var, val in (("gitVersion", KUBE_VERSION), ("gitMajor", "1"),
                                   ("gitMinor", "37"), ("gitTreeState", "clean")))
GO_FLAGS = ("-trimpath", f"-ldflags=-s -w {_STAMP}")


def enabled() -> bool:
    """Whether the tests that need the real control plane are collected: by default
    yes (CI included); HEADROOM_CONTROLPLANE=0 leaves them out (no Go at hand)."""
    return os.environ.get("HEADROOM_CONTROLPLANE", "1") != "0"


class BuildFailed(RuntimeError):
    """go build failed or Go is missing; the message holds go's output."""


def content_hash() -> str:
    digest = hashlib.sha256(" ".join(GO_FLAGS).encode())
    for path in sorted([MODULE / "go.mod", MODULE / "go.sum", *MODULE.glob("*.go")]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def bin_dir() -> Path:
    return CACHE / content_hash()


def go_binary() -> str:
    for cand in (shutil.which("go"), "/usr/local/go/bin/go", "/usr/lib/go/bin/go"):
        if cand and Path(cand).exists():
            return cand
    raise BuildFailed("no `go` on PATH nor in /usr/local/go/bin: install Go >= 1.26")


def is_built(dest: Path) -> bool:
    return all((dest / n).is_file() and os.access(dest / n, os.X_OK) for n in NAMES)


def build(log: bool = True) -> Path:
    """The directory holding the four executables, building them if needed."""
    dest = bin_dir()
    if is_built(dest):
        return dest
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)     # a concurrent run waits, then reuses
        if is_built(dest):
            return dest
        tmp = CACHE / f".build-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        cmd = ["nice", "-n", "19", go_binary(), "build", *GO_FLAGS,
               "-o", str(tmp / MULTICALL), "."]
        env = {**os.environ, "CGO_ENABLED": "0"}
        if log:
            print(f"controlplane: building {', '.join(NAMES)} (first run only; "
                  "several minutes on 2 cores)", file=sys.stderr, flush=True)
        start = time.monotonic()
        proc = subprocess.run(cmd, cwd=MODULE, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise BuildFailed(f"{' '.join(cmd)} (in {MODULE}) failed:\n{proc.stderr[-6000:]}")
        for name in NAMES:
            os.link(tmp / MULTICALL, tmp / name)
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)                     # atomic: others see all of it or none
        if log:
            size = (dest / MULTICALL).stat().st_size
            print(f"controlplane: built in {time.monotonic() - start:.0f} s, "
                  f"{size / 1e6:.0f} MB, in {dest}", file=sys.stderr, flush=True)
        for old in CACHE.iterdir():           # earlier contents' builds are dead weight
            if old.is_dir() and old != dest and not old.name.startswith("."):
                shutil.rmtree(old, ignore_errors=True)
    return dest


if __name__ == "__main__":
    try:
        print(build())
    except BuildFailed as exc:
        sys.exit(f"controlplane: {exc}")
