"""Host-side unit tests of the test guest's pure pieces (no QEMU, no download)."""

from __future__ import annotations

import gzip
import lzma
import re
import shutil
import struct
import subprocess
from pathlib import Path

import guest_image
import guest_support
import pytest
import qemu_guest

FAKE_ELF = guest_image.ELF_MAGIC + b"\x02\x01\x01" + bytes(200)


def fake_bzimage(payload: bytes, setup_sects: int = 3) -> bytes:
    """A minimal bzImage: setup sectors with the header fields, then payload + size."""
    setup = bytearray((setup_sects + 1) * 512)
    setup[0x1F1] = setup_sects
    setup[0x202:0x206] = b"HdrS"
    offset = 0x40  # the payload does not start right at the protected-mode code
    struct.pack_into("<II", setup, 0x248, offset, len(payload) + 4)
    trailer = struct.pack("<I", len(FAKE_ELF))
    return bytes(setup) + bytes(offset) + payload + trailer + bytes(100)


@pytest.mark.parametrize("compress", [gzip.compress, lzma.compress], ids=["gzip", "xz"])
def test_extract_vmlinux(compress) -> None:
    assert guest_image.extract_vmlinux(fake_bzimage(compress(FAKE_ELF))) == FAKE_ELF


@pytest.mark.skipif(shutil.which("zstd") is None, reason="needs the zstd program")
def test_extract_vmlinux_zstd_strips_the_size_trailer() -> None:
    payload = subprocess.run(["zstd", "-c", "-q"], input=FAKE_ELF, capture_output=True,
                             check=True).stdout
    assert guest_image.extract_vmlinux(fake_bzimage(payload)) == FAKE_ELF


def test_extract_vmlinux_rejects_other_files() -> None:
    with pytest.raises(guest_image.BzImageError, match="HdrS"):
        guest_image.extract_vmlinux(bytes(4096))
    with pytest.raises(guest_image.BzImageError, match="unknown payload"):
        guest_image.extract_vmlinux(fake_bzimage(b"BZh91AY&SY" + bytes(50)))
    with pytest.raises(guest_image.BzImageError, match="ELF"):
        guest_image.extract_vmlinux(fake_bzimage(gzip.compress(b"not an elf")))


def test_cpio_newc_layout() -> None:
    archive = guest_image.cpio_newc([guest_image.CpioEntry("init", 0o100755, b"#!/bin/sh\n"),
                                     guest_image.CpioEntry("dev/console", 0o20600,
                                                           rdev=(5, 1))])
    assert archive.startswith(b"070701")
    assert len(archive) % 4 == 0
    assert b"init\x00" in archive and b"#!/bin/sh\n" in archive
    assert archive.rstrip(b"\x00").endswith(b"TRAILER!!!")
    # The header of dev/console carries the device number 5:1 (rdevmajor, rdevminor).
    header_start = archive.index(b"dev/console") - 110
    fields = archive[header_start + 6:header_start + 110]
    assert (int(fields[72:80], 16), int(fields[80:88], 16)) == (5, 1)


@pytest.mark.skipif(shutil.which("cpio") is None, reason="needs the cpio program")
def test_cpio_newc_is_readable_by_cpio(tmp_path: Path) -> None:
    archive = guest_image.cpio_newc([guest_image.CpioEntry("bin", 0o40755),
                                     guest_image.CpioEntry("bin/hello", 0o100644, b"hi\n"),
                                     guest_image.CpioEntry("bin/sh", 0o120777, b"busybox")])
    listing = subprocess.run(["cpio", "-t", "--quiet"], input=archive, capture_output=True,
                             check=True).stdout.decode().split()
    assert listing == ["bin", "bin/hello", "bin/sh"]


def test_strip_module_signature() -> None:
    body = b"\x7fELF module body"
    signature = b"S" * 300
    info = bytes(8) + struct.pack(">I", len(signature))
    signed = body + signature + info + guest_image.MODULE_SIG_MAGIC
    assert guest_image.strip_module_signature(signed) == body
    assert guest_image.strip_module_signature(body) == body


def test_apt_sources_reads_both_formats() -> None:
    files = {
        "/etc/apt/sources.list": ("# deb http://old.example/debian bookworm main\n"
                                  "deb [arch=amd64 signed-by=/k.gpg] http://m.example/debian "
                                  "bookworm main contrib\n"
                                  "deb-src http://m.example/debian bookworm main\n"),
        "/etc/apt/sources.list.d/debian.sources": (
            "Types: deb\n# a comment\nURIs: http://d.example/debian\n"
            "Suites: bookworm bookworm-updates\nComponents: main\n\n"
            "Types: deb\nURIs: http://d.example/debian-security\nSuites: bookworm-security\n"
            "Components: main\n\n"
            "Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nEnabled: no\n"),
    }
    assert qemu_guest.apt_sources(files) == [
        ("http://m.example/debian", "bookworm"),
        ("http://d.example/debian", "bookworm"),
        ("http://d.example/debian", "bookworm-updates"),
        ("http://d.example/debian-security", "bookworm-security")]


def test_pick_debian_archive() -> None:
    sources = [("http://s.example/debian-security", "bookworm-security"),
               ("http://m.example/debian", "bookworm")]
    assert qemu_guest.pick_debian_archive(sources) == "http://m.example/debian"
    assert qemu_guest.pick_debian_archive([("http://m.example/debian", "trixie")]) is None


SHOW = """Package: linux-image-amd64
Version: 6.12.57-1~bpo12+1
Depends: linux-image-6.12.57+deb12-amd64 (= 6.12.57-1~bpo12+1)

Package: linux-image-amd64
Version: 6.1.158-1
Depends: linux-image-6.1.0-9-amd64 (= 6.1.158-1)

Package: linux-image-amd64
Version: 6.1.159-1
Depends: linux-image-6.1.0-10-amd64 (= 6.1.159-1)
"""


def test_pick_kernel_package() -> None:
    assert qemu_guest.pick_kernel_package(SHOW, qemu_guest.KERNELS["6.12"].package) \
        == "linux-image-6.12.57+deb12-amd64"
    # Natural order: ABI 10 is newer than ABI 9.
    assert qemu_guest.pick_kernel_package(SHOW, qemu_guest.KERNELS["6.1"].package) \
        == "linux-image-6.1.0-10-amd64"
    assert qemu_guest.pick_kernel_package("", qemu_guest.KERNELS["6.1"].package) is None


def test_parse_show_depends() -> None:
    text = ("builtin virtio\n"
            "insmod /x/lib/modules/6.1/kernel/fs/jbd2/jbd2.ko.xz \n"
            "insmod /x/lib/modules/6.1/kernel/fs/ext4/ext4.ko.xz  opt=1\n")
    assert qemu_guest.parse_show_depends(text) == [
        "/x/lib/modules/6.1/kernel/fs/jbd2/jbd2.ko.xz",
        "/x/lib/modules/6.1/kernel/fs/ext4/ext4.ko.xz"]


def test_command_script_quotes_and_cleans_the_environment() -> None:
    script = qemu_guest.command_script(["echo", "a b", "$HOME"], Path("/work/main"),
                                       {"HEADROOM_IN_GUEST": "1", "X": "it's"})
    assert script.splitlines() == [
        "cd /work/main || exit 125",
        "exec /usr/bin/env -i HEADROOM_IN_GUEST=1 'X=it'\"'\"'s' echo 'a b' '$HOME'"]
    with pytest.raises(ValueError):
        qemu_guest.command_script([], Path("/"), {})


def test_guest_env_and_path() -> None:
    env = qemu_guest.guest_env({"EXTRA": "1"})
    assert env["HEADROOM_IN_GUEST"] == "1" and env["EXTRA"] == "1"
    path = env["PATH"].split(":")
    assert not any("shims" in p for p in path)
    assert path[-1] == "/bin"


def test_qemu_argv_shares_root_read_only_and_checkout_read_write(tmp_path: Path) -> None:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("needs qemu-system-x86_64 on PATH")
    k = qemu_guest.Kernel("6.1", "p", "v", "r", tmp_path / "vmlinux", tmp_path / "initrd")
    argv = qemu_guest.qemu_argv(k, tmp_path, memory_mb=512, cpus=1, zram_mb=0)
    fsdevs = [argv[i + 1] for i, a in enumerate(argv) if a == "-fsdev"]
    assert any(f.startswith("local,id=hostroot,path=/,readonly=on") for f in fsdevs)
    assert any(f"path={qemu_guest.CHECKOUT}," in f and "readonly" not in f for f in fsdevs)
    append = argv[argv.index("-append") + 1]
    assert f"hr.run={tmp_path}" in append and "hr.zram_mb=0" in append
    assert "-no-reboot" in argv


def test_ensure_kernel_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match=r"6\.1, 6\.12"):
        qemu_guest.ensure_kernel("5.10")


def test_guest_problem_checks_the_environment_first(tmp_path: Path) -> None:
    assert "HEADROOM_IN_GUEST" in (guest_support.guest_problem({}, tmp_path) or "")
    problem = guest_support.guest_problem({"HEADROOM_IN_GUEST": "1"}, tmp_path)
    assert problem and "not on a cgroup2 filesystem" in problem


def test_join_cgroup_refuses_a_directory_that_is_not_cgroup2(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("memory\n")
    with pytest.raises(guest_support.NotACgroup):
        guest_support.join_cgroup(tmp_path)
    assert not (tmp_path / "cgroup.procs").exists()


@pytest.mark.parametrize(("text", "size"), [("4096", 4096), ("64K", 64 << 10), ("512M", 512 << 20),
                                            ("1G", 1 << 30), ("1GiB", 1 << 30), ("2g", 2 << 30)])
def test_parse_size(text: str, size: int) -> None:
    assert guest_support.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "M", "1.5G", "-1M", "12X"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        guest_support.parse_size(text)


def test_latency_summary() -> None:
    s = guest_support.latency_summary([i * 1000 for i in range(100, 0, -1)])
    assert s == {"ops": 100, "p50_us": 50.0, "p99_us": 99.0, "max_us": 100.0, "mean_us": 50.5}
    assert guest_support.latency_summary([])["ops"] == 0


def test_junit_counts() -> None:
    xml = ('<testsuites><testsuite tests="5" failures="1" errors="0" skipped="2"/>'
           '<testsuite tests="1" failures="0" errors="1" skipped="0"/></testsuites>')
    assert qemu_guest.junit_counts(xml) == {"tests": 6, "failures": 1, "errors": 1, "skipped": 2}


def test_junit_failures_name_each_failed_case_with_its_message() -> None:
    xml = ('<testsuite><testcase classname="a" name="ok"/>'
           '<testcase classname="a" name="bad"><failure message="assert 1 == 0">tb</failure>'
           '</testcase><testcase classname="b" name="err"><error message="boom"/></testcase>'
           '<testcase classname="c" name="skip"><skipped/></testcase></testsuite>')
    text = qemu_guest.junit_failures(xml, limit=13)
    assert text.split("\n\n") == ["a::bad: assert 1 == 0", "b::err: boom"]
    assert qemu_guest.junit_failures('<testsuite><testcase classname="a" name="ok"/>'
                                     '</testsuite>') == ""


def test_workloads_are_stdlib_only() -> None:
    allowed = {"argparse", "json", "mmap", "os", "sys", "time", "pathlib", "__future__",
               "guest_support"}
    for script in (qemu_guest.HERE / "workloads").glob("*.py"):
        imported = set(re.findall(r"^(?:from|import) (\w+)", script.read_text(), re.M))
        assert imported <= allowed, (script.name, imported - allowed)
