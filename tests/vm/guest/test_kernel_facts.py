"""The kernel facts headroom relies on, checked on each real kernel in the guest."""

from __future__ import annotations

import errno
import os
import platform
import select
from pathlib import Path

import guest_support


def _write(path: Path, text: str) -> None:
    """One write(2) of text; OSError with the kernel's errno on refusal."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _errno_of_write(path: Path, text: str) -> int:
    try:
        _write(path, text)
    except OSError as e:
        return e.errno or 0
    return 0


def _kernel_series() -> str:
    """"6.1" or "6.12" (from uname -r, e.g. 6.12.57+deb12-amd64)."""
    return ".".join(platform.release().split(".")[:2])


def test_cgroup2_root_with_memory_for_children(cgroup_root: Path) -> None:
    assert guest_support.fs_magic(cgroup_root) == guest_support.CGROUP2_SUPER_MAGIC
    assert "memory" in (cgroup_root / "cgroup.controllers").read_text().split()
    assert "memory" in (cgroup_root / "cgroup.subtree_control").read_text().split()
    mounts = [line.split() for line in Path("/proc/self/mounts").read_text().splitlines()]
    options = next(m[3] for m in mounts if m[1] == str(cgroup_root))
    assert "memory_recursiveprot" in options.split(",")


def test_child_has_the_memory_files(make_cgroup) -> None:
    child = make_cgroup("files")
    for name in ("memory.current", "memory.high", "memory.max", "memory.stat",
                 "memory.events", "memory.pressure", "memory.reclaim"):
        assert (child / name).exists(), name
    events = dict(line.split() for line in (child / "memory.events").read_text().splitlines())
    assert events["high"] == "0"


def test_memory_high_reads_back_page_aligned(make_cgroup) -> None:
    child = make_cgroup("high")
    assert (child / "memory.high").read_text() == "max\n"
    _write(child / "memory.high", str(256 << 20))
    assert (child / "memory.high").read_text() == f"{256 << 20}\n"
    _write(child / "memory.high", "1000000")  # not a multiple of the page size
    assert (child / "memory.high").read_text() == f"{1000000 // 4096 * 4096}\n"
    _write(child / "memory.high", "max")
    assert (child / "memory.high").read_text() == "max\n"


def test_reclaim_on_an_empty_cgroup_is_eagain(make_cgroup) -> None:
    child = make_cgroup("empty")
    assert _errno_of_write(child / "memory.reclaim", str(1 << 20)) == errno.EAGAIN


def test_psi_trigger_registers_on_a_child(make_cgroup) -> None:
    child = make_cgroup("psi")
    fd = os.open(child / "memory.pressure", os.O_RDWR | os.O_NONBLOCK)
    try:
        os.write(fd, b"some 150000 1000000")
        poller = select.poll()
        poller.register(fd, select.POLLPRI)
        assert poller.poll(0) == []  # an idle cgroup has no pressure event
    finally:
        os.close(fd)


def test_swappiness_key_of_memory_reclaim(make_cgroup) -> None:
    """Accepted: the write gets as far as reclaiming (EAGAIN on an empty cgroup).
    Not accepted: EINVAL."""
    child = make_cgroup("swappiness")
    err = _errno_of_write(child / "memory.reclaim", f"{1 << 20} swappiness=60")
    accepted = err == errno.EAGAIN
    print(f"swappiness= key on {platform.release()}: {'accepted' if accepted else 'rejected'}")
    assert err in (errno.EAGAIN, errno.EINVAL), os.strerror(err)
    expected = {"6.1": False, "6.12": True}.get(_kernel_series())
    if expected is not None:
        assert accepted == expected


def test_ext4_scratch_disk_is_mounted(scratch_dir: Path) -> None:
    mounts = [line.split() for line in Path("/proc/self/mounts").read_text().splitlines()]
    assert [m[2] for m in mounts if m[1] == str(guest_support.SCRATCH)] == ["ext4"]
    st = os.statvfs(guest_support.SCRATCH)
    assert st.f_blocks * st.f_frsize >= 4 << 30
    f = scratch_dir / "probe"
    f.write_bytes(b"x" * 65536)
    assert f.stat().st_size == 65536


def test_no_swap_unless_asked() -> None:
    assert guest_support.swap_devices() == []


def test_zram_swap_can_be_enabled(zram_swap: int) -> None:
    assert guest_support.swap_devices() == ["/dev/zram0"]
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    swap_total = int(meminfo["SwapTotal"].split()[0]) * 1024
    assert zram_swap - (1 << 20) <= swap_total <= zram_swap  # less the swap header page
