"""The real-kernel tier: one QEMU guest boot per kernel runs `pytest tests/vm/guest`.

Fails with the inner session's output when it fails or collects nothing. When QEMU
or a kernel cannot be had, it fails under CI (CI=true) and skips elsewhere.
HEADROOM_VM_TIMEOUT overrides the per-kernel timeout (seconds); HEADROOM_VM_PYTEST_ARGS
adds arguments to the inner pytest (e.g. "-k swappiness").
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

import pytest
import qemu_guest

IN_CI = os.environ.get("CI", "").lower() == "true"
TIMEOUT = float(os.environ.get("HEADROOM_VM_TIMEOUT", "2400"))  # a hang guard only
LOG_DIR = Path(__file__).resolve().parents[2] / "out"  # tests/vm/conftest.py reads it back

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("HEADROOM_IN_GUEST") == "1",
                       reason="already inside the test guest"),
]


def _unavailable(message: str) -> None:
    if IN_CI:
        pytest.fail(f"the real-kernel tier cannot run under CI: {message}", pytrace=False)
    pytest.skip(f"real-kernel tier skipped: {message}")


NEWEST_KERNEL = max(qemu_guest.KERNELS, key=lambda k: tuple(map(int, k.split("."))))
# Guest tests of what the kernel does not change, run on the newest kernel only: the
# kubepods test adds the real API server to cluster mode, which every kernel's session
# runs on its kubepods tree in test_cluster_agent_survives_sigkills (3.5 of 6.1's 20 min).
NEWEST_KERNEL_ONLY = ("tests/vm/guest/test_kubepods_cluster.py",)


def inner_pytest_argv(junit: Path, kernel: str) -> list[str]:
    # No third-party plugins in the guest: each import costs ~0.1 s under TCG and kmock's
    # pulls in an HTTP stack. Guest tests that need one can add "-p NAME" here.
    ignored = [] if kernel == NEWEST_KERNEL else [f"--ignore={t}" for t in NEWEST_KERNEL_ONLY]
    return [str(qemu_guest.CHECKOUT / ".venv" / "bin" / "python"), "-m", "pytest",
            "tests/vm/guest", *ignored, "-p", "no:cacheprovider", "-W",
            "ignore::pytest.PytestConfigWarning", "-rA", f"--junitxml={junit}",
            *shlex.split(os.environ.get("HEADROOM_VM_PYTEST_ARGS", ""))]


def guest_env() -> dict[str, str]:
    """The guest tests' own knobs (HEADROOM_CRASH_KILLS, _SEED, HEADROOM_CONTROLPLANE),
    passed on from here."""
    return {k: v for k, v in os.environ.items()
            if k.startswith("HEADROOM_CRASH_") or k == "HEADROOM_CONTROLPLANE"}


def ensure_control_plane() -> None:
    """The kubepods guest test runs the real etcd and kube-apiserver from the checkout's
    cache: build them here (once per machine), where Go is."""
    sys.path.insert(0, str(qemu_guest.CHECKOUT / "tests" / "controlplane"))
    import build

    if build.enabled():
        try:
            build.build()
        except build.BuildFailed as exc:
            pytest.fail(f"the control plane could not be built: {exc}", pytrace=False)


@pytest.mark.parametrize("kernel", sorted(qemu_guest.KERNELS))
def test_guest_session(kernel: str) -> None:
    if shutil.which("qemu-system-x86_64") is None:
        _unavailable("qemu-system-x86_64 is not installed (scripts/ensure-env installs it)")
    try:
        qemu_guest.ensure_kernel(kernel)
    except qemu_guest.KernelUnavailable as e:
        _unavailable(f"kernel {kernel}: {e}")
    ensure_control_plane()
    with qemu_guest.shared_tmpdir() as shared:
        junit = shared / "junit.xml"
        try:
            result = qemu_guest.run(kernel, inner_pytest_argv(junit, kernel), TIMEOUT,
                                    {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", **guest_env()})
        except qemu_guest.GuestTimeout as e:
            pytest.fail(f"{e}\n--- stdout:\n{e.stdout[-20000:]}\n--- stderr:\n"
                        f"{e.stderr[-5000:]}", pytrace=False)
        output = f"--- guest stdout:\n{result.stdout[-20000:]}\n--- guest stderr:\n" \
                 f"{result.stderr[-5000:]}"
        header = (f"kernel {kernel}: guest session took {result.duration:.1f} s "
                  f"(boot {result.boot_seconds or 0:.1f} s)")
        print(f"{header}\n{output}")
        # Kept for people and CI logs: the guest tests print their measured numbers.
        LOG_DIR.mkdir(exist_ok=True)
        (LOG_DIR / f"vm-{kernel}.log").write_text(
            f"{header}\n--- guest stdout:\n{result.stdout}\n--- guest stderr:\n{result.stderr}")
        assert junit.exists(), f"the guest session wrote no junit file\n{output}"
        counts = qemu_guest.junit_counts(junit.read_text())
        failures = qemu_guest.junit_failures(junit.read_text())
    # The failures' own messages last: a CI log may keep only the tail of a long report.
    output = f"{output}\n--- failed in the guest:\n{failures}" if failures else output
    assert result.rc == 0, f"guest pytest on {kernel} exited {result.rc}\n{output}"
    assert counts["failures"] == counts["errors"] == 0, output
    ran = counts["tests"] - counts["skipped"]
    assert ran > 0, f"the guest session on {kernel} ran no test ({counts})\n{output}"
