"""The headroom test guest: a real Debian kernel under QEMU (TCG) running a command
from the checkout.

    ensure_kernel("6.1" | "6.12") -> Kernel     download + build once, cached in .cache/vm/
    run(kernel, argv, timeout, env=None, ...) -> Result(rc, stdout, stderr, duration)

The guest sees the host's / read-only (9p, under a tmpfs overlay), the checkout
read-write at its host path (9p), a fresh sparse ext4 disk at /mnt/scratch, cgroup2
at /sys/fs/cgroup with `memory` enabled for children, the zram module (swap is off
unless asked for) and HEADROOM_IN_GUEST=1. Kernels come from Debian's archive
(`apt-get download` through a private apt configuration under .cache/vm/apt, so the
machine's own apt sources stay untouched) and are never installed. docs/testing.md
explains the design and the measured costs.

Stdlib only. Importable by path; `python tests/vm/qemu_guest.py --help` is the CLI
behind scripts/vm-run.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import lzma
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # so that importing this file by path finds its siblings
    sys.path.insert(0, str(HERE))

from guest_image import (  # noqa: E402
    CpioEntry,
    cpio_newc,
    extract_vmlinux,
    strip_module_signature,
)

CHECKOUT = HERE.parents[1]
# Inside the checkout: the guest reaches run directories at the same path.
CACHE = Path(os.environ.get("HEADROOM_VM_CACHE") or CHECKOUT / ".cache" / "vm").resolve()
if not CACHE.is_relative_to(CHECKOUT):
    raise ImportError(f"HEADROOM_VM_CACHE={CACHE} must be inside the checkout {CHECKOUT}")
INIT_SCRIPT = HERE / "guest_init.sh"
BUSYBOX = Path("/bin/busybox")  # from busybox-static (scripts/ensure-env)
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
STARTED_MARK = b"headroom-guest: command starts"  # printed by guest_init.sh
# Bump when the layout of a built kernel directory changes, to force a rebuild.
BUILD_FORMAT = 1


@dataclass(frozen=True)
class KernelSpec:
    name: str
    suite: str  # where the linux-image-amd64 metapackage that names it lives
    package: re.Pattern[str]  # the versioned image package it depends on


KERNELS = {
    "6.1": KernelSpec("6.1", "bookworm", re.compile(r"linux-image-6\.1\.[0-9][^\s,]*-amd64")),
    "6.12": KernelSpec("6.12", "bookworm-backports",
                       re.compile(r"linux-image-6\.12\.[0-9][^\s,]*-amd64")),
}
# Loaded in the initramfs with their dependencies (modprobe --show-depends). Some
# are built into some kernels; modprobe then reports them as builtin.
GUEST_MODULES = ("virtio_pci", "virtio_blk", "virtio_console", "9pnet_virtio", "9p", "overlay",
                 "crc32c_generic", "ext4", "zram")


class GuestError(RuntimeError):
    """The guest could not be built, booted or did not finish."""


class KernelUnavailable(GuestError):
    """A kernel (or QEMU) cannot be had on this machine."""


class GuestTimeout(GuestError):
    def __init__(self, message: str, stdout: str, stderr: str) -> None:
        super().__init__(message)
        self.stdout = stdout
        self.stderr = stderr


@dataclass(frozen=True)
class Kernel:
    name: str  # "6.1" | "6.12"
    package: str  # e.g. linux-image-6.12.57+deb12-amd64
    version: str  # the Debian package version
    release: str  # uname -r
    vmlinux: Path
    initramfs: Path


@dataclass(frozen=True)
class Result:
    rc: int
    stdout: str
    stderr: str
    duration: float  # seconds, QEMU start to exit
    boot_seconds: float | None = None  # QEMU start to the command's start


# ---------------------------------------------------------------- kernel download

def apt_sources(files: Mapping[str, str]) -> list[tuple[str, str]]:
    """(URI, suite) of every binary `deb` source in apt source files (one-line
    `*.list` format and deb822 `*.sources`), keyed by file name."""
    found: list[tuple[str, str]] = []
    for name, text in files.items():
        if name.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = {}
                for line in stanza.splitlines():
                    if line[:1] not in ("#", " ", "\t", "") and ":" in line:
                        key, value = line.split(":", 1)
                        fields[key.strip().lower()] = value.strip()
                if "deb" in fields.get("types", "").split() and \
                        fields.get("enabled", "yes").lower() != "no":
                    found += [(u, s) for u in fields.get("uris", "").split()
                              for s in fields.get("suites", "").split()]
        else:
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
                if len(words) >= 3 and words[0] == "deb":
                    found.append((words[1], words[2]))
    return found


def pick_debian_archive(sources: Sequence[tuple[str, str]], suite: str = "bookworm"
                        ) -> str | None:
    """The URI of the machine's Debian archive source for `suite`: taken from its
    configuration, so that no mirror's address is written in this project."""
    for uri, src_suite in sources:
        if src_suite == suite:
            return uri
    return None


def _machine_apt_sources() -> list[tuple[str, str]]:
    etc = Path("/etc/apt")
    paths = [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*.list")),
             *sorted((etc / "sources.list.d").glob("*.sources"))]
    return apt_sources({str(p): p.read_text() for p in paths if p.is_file()})


def _natural_key(s: str) -> list[int | str]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def pick_kernel_package(apt_cache_show: str, pattern: re.Pattern[str]) -> str | None:
    """The newest versioned image package that a linux-image-amd64 record depends on."""
    names = {m.group(0) for line in apt_cache_show.splitlines() if line.startswith("Depends:")
             for m in pattern.finditer(line)}
    return max(names, key=_natural_key) if names else None


class _PrivateApt:
    """apt-get/apt-cache with their own sources, lists and cache under .cache/vm/apt."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for d in ("parts", "prefs", "lists/partial", "cache/archives/partial"):
            (root / d).mkdir(parents=True, exist_ok=True)

    def options(self) -> list[str]:
        r = self.root
        return ["-o", f"Dir::Etc::SourceList={r}/sources.list",
                "-o", f"Dir::Etc::SourceParts={r}/parts",
                "-o", f"Dir::Etc::PreferencesParts={r}/prefs",
                "-o", f"Dir::State::Lists={r}/lists",
                "-o", f"Dir::Cache={r}/cache",
                "-o", "APT::Sandbox::User=root",  # the files live in root's checkout
                "-o", "Debug::NoLocking=1"]  # private state: do not take dpkg's locks

    def call(self, tool: str, *args: str, cwd: Path | None = None) -> str:
        if shutil.which(tool) is None:
            raise KernelUnavailable(f"'{tool}' is missing: the test guest needs a Debian host")
        proc = subprocess.run([tool, *self.options(), *args], cwd=cwd, capture_output=True,
                              text=True, check=False)
        if proc.returncode != 0:
            raise KernelUnavailable(f"`{tool} {' '.join(args)}` failed "
                                    f"(exit {proc.returncode}):\n{proc.stderr.strip()}")
        return proc.stdout

    def configure(self) -> None:
        uri = os.environ.get("HEADROOM_DEBIAN_ARCHIVE") or pick_debian_archive(
            _machine_apt_sources())
        if not uri:
            raise KernelUnavailable(
                "no apt source for Debian bookworm is configured on this machine; set "
                "HEADROOM_DEBIAN_ARCHIVE to the URI of a Debian archive mirror")
        signed = f"[signed-by={DEBIAN_KEYRING}] " if DEBIAN_KEYRING.exists() else ""
        text = "".join(f"deb {signed}{uri} {suite} main\n"
                       for suite in ("bookworm", "bookworm-backports"))
        (self.root / "sources.list").write_text(text)


def _download_kernel(spec: KernelSpec, debs: Path) -> tuple[str, str, Path]:
    """Download the image package of `spec`: (package, version, .deb path)."""
    apt = _PrivateApt(CACHE / "apt")
    apt.configure()
    apt.call("apt-get", "-qq", "update")
    package = pick_kernel_package(apt.call("apt-cache", "show", "linux-image-amd64"),
                                  spec.package)
    if package is None:
        raise KernelUnavailable(f"Debian {spec.suite} has no linux-image-amd64 that depends on "
                                f"a {spec.package.pattern} package")
    version = ""
    for line in apt.call("apt-cache", "show", package).splitlines():
        if line.startswith("Version:"):
            version = line.split(":", 1)[1].strip()
            break
    debs.mkdir(parents=True, exist_ok=True)
    apt.call("apt-get", "-qq", "download", package, cwd=debs)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if not found:
        raise KernelUnavailable(f"apt-get download {package} left no .deb in {debs}")
    return package, version, found[-1]


# ---------------------------------------------------------------- kernel build

def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        raise KernelUnavailable(f"'{name}' is missing (run scripts/ensure-env)")
    return path


def _check(argv: Sequence[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise GuestError(f"`{shlex.join(argv)}` failed: {proc.stderr.strip()}")
    return proc.stdout


def parse_show_depends(text: str) -> list[str]:
    """The module files of `modprobe --show-depends` output, dependencies first."""
    return [line.split()[1] for line in text.splitlines() if line.startswith("insmod ")]


def _module_bytes(path: Path) -> bytes:
    """A module file, uncompressed (busybox insmod loads plain .ko files only)."""
    data = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(data)
    if path.suffix == ".zst":
        return _check_bytes([_tool("zstd"), "-d", "-c", "-q", str(path)])
    return data


def _check_bytes(argv: Sequence[str]) -> bytes:
    proc = subprocess.run(argv, capture_output=True, check=False)
    if proc.returncode != 0:
        raise GuestError(f"`{shlex.join(argv)}` failed: {proc.stderr.decode(errors='replace')}")
    return proc.stdout


def _build_kernel(spec: KernelSpec, kdir: Path) -> None:
    """Download the kernel of `spec`, extract vmlinux and the guest's modules into kdir."""
    debs = CACHE / "debs"
    package, version, deb = _download_kernel(spec, debs)
    work = Path(tempfile.mkdtemp(prefix=f"build-{spec.name}-", dir=CACHE))
    try:
        tree = work / "tree"
        _check(["dpkg-deb", "-x", str(deb), str(tree)])
        releases = [p.name for p in (tree / "lib/modules").iterdir()]
        if len(releases) != 1:
            raise GuestError(f"{deb.name}: expected one module tree, found {releases}")
        release = releases[0]
        # The package ships no modules.dep (its postinst makes it): make one here.
        _check([_tool("depmod"), "-b", str(tree), release])
        out = work / "out"
        (out / "modules").mkdir(parents=True)
        order: list[str] = []
        for module in GUEST_MODULES:
            text = _check([_tool("modprobe"), "-d", str(tree), "-S", release,
                           "--show-depends", module])
            for file in parse_show_depends(text):
                name = Path(file).name.split(".ko")[0] + ".ko"
                if name not in order:
                    order.append(name)
                    (out / "modules" / name).write_bytes(_module_bytes(Path(file)))
        (out / "modules" / "order").write_text("".join(f"{m}\n" for m in order))
        bzimage = (tree / "boot" / f"vmlinuz-{release}").read_bytes()
        (out / "vmlinux").write_bytes(extract_vmlinux(bzimage))
        meta = {"format": BUILD_FORMAT, "name": spec.name, "package": package,
                "version": version, "release": release}
        (out / "kernel.json").write_text(json.dumps(meta, indent=1) + "\n")
        if kdir.exists():
            shutil.rmtree(kdir)
        out.rename(kdir)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def initramfs_entries(modules_dir: Path, init_script: bytes, busybox: bytes) -> list[CpioEntry]:
    """The initramfs: busybox, /init and the modules in load order."""
    d, f, x = stat.S_IFDIR | 0o755, stat.S_IFREG | 0o644, stat.S_IFREG | 0o755
    entries = [CpioEntry(n, d) for n in ("bin", "dev", "proc", "sys", "modules", "newroot")]
    entries += [CpioEntry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
                CpioEntry("bin/busybox", x, busybox),
                CpioEntry("bin/sh", stat.S_IFLNK | 0o777, b"busybox"),
                CpioEntry("init", x, init_script)]
    order = (modules_dir / "order").read_text().split()
    entries.append(CpioEntry("modules/order", f, (modules_dir / "order").read_bytes()))
    entries += [CpioEntry(f"modules/{m}", f, strip_module_signature((modules_dir / m).read_bytes()))
                for m in order]
    return entries


def _ensure_initramfs(kdir: Path) -> Path:
    if not BUSYBOX.exists():
        raise KernelUnavailable(f"{BUSYBOX} is missing: install busybox-static "
                                "(scripts/ensure-env)")
    # busybox applets as symlinks: installed by /init itself (`busybox --install`).
    init = b"#!/bin/sh\n/bin/busybox --install -s /bin\n" + INIT_SCRIPT.read_bytes()
    busybox = BUSYBOX.read_bytes()
    entries = initramfs_entries(kdir / "modules", init, busybox)
    digest = hashlib.sha256(b"".join(e.name.encode() + e.data for e in entries)).hexdigest()
    path = kdir / f"initramfs-{digest[:16]}.cpio"
    if not path.exists():
        for old in kdir.glob("initramfs-*.cpio"):
            old.unlink()
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(cpio_newc(entries))
        tmp.rename(path)
    return path


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock between processes building the same kernel."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def ensure_kernel(name: str) -> Kernel:
    """The kernel `name` ("6.1" or "6.12"), downloaded and built on first use."""
    if name not in KERNELS:
        raise ValueError(f"unknown kernel {name!r}; choose one of {', '.join(KERNELS)}")
    kdir = CACHE / "kernels" / name
    with _locked(CACHE / "kernels" / f"{name}.lock"):
        meta_file = kdir / "kernel.json"
        meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
        if meta.get("format") != BUILD_FORMAT or not (kdir / "vmlinux").exists():
            _build_kernel(KERNELS[name], kdir)
            meta = json.loads(meta_file.read_text())
        initramfs = _ensure_initramfs(kdir)
    return Kernel(name=name, package=meta["package"], version=meta["version"],
                  release=meta["release"], vmlinux=kdir / "vmlinux", initramfs=initramfs)


# ---------------------------------------------------------------- running the guest

def guest_path() -> str:
    """PATH inside the guest: the venv, the resolved interpreter (never pyenv shims:
    they cost seconds per start under TCG), then the system."""
    venv = CHECKOUT / ".venv" / "bin"
    python = venv / "python"
    interpreter = Path(os.path.realpath(python if python.exists() else sys.executable)).parent
    dirs = [str(venv)] if venv.is_dir() else []
    dirs += [str(interpreter), "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin",
             "/sbin", "/bin"]
    return ":".join(dict.fromkeys(dirs))


def command_script(argv: Sequence[str], cwd: Path, env: Mapping[str, str]) -> str:
    """The shell script the guest runs: a clean environment, cwd, then argv."""
    if not argv:
        raise ValueError("empty command")
    assigns = " ".join(shlex.quote(f"{k}={v}") for k, v in env.items())
    return (f"cd {shlex.quote(str(cwd))} || exit 125\n"
            f"exec /usr/bin/env -i {assigns} {shlex.join(argv)}\n")


def guest_env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = {"HEADROOM_IN_GUEST": "1", "HOME": "/root", "PATH": guest_path(),
           "LANG": "C.UTF-8", "TERM": "dumb", "PYTHONUNBUFFERED": "1"}
    env.update(extra or {})
    return env


def make_scratch_disk(path: Path, size_gb: int) -> None:
    """A sparse ext4 image: lazy inode tables (the guest mounts it noinit_itable)."""
    with path.open("wb") as fh:
        fh.truncate(size_gb << 30)
    _check([_tool("mkfs.ext4"), "-q", "-F", "-m", "0", "-L", "scratch",
            "-E", "lazy_itable_init=1,lazy_journal_init=1", str(path)])


def qemu_argv(kernel: Kernel, run_dir: Path, *, memory_mb: int, cpus: int, zram_mb: int
              ) -> list[str]:
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        raise KernelUnavailable("qemu-system-x86_64 is missing (run scripts/ensure-env)")
    for p in (CHECKOUT, run_dir):
        if re.search(r"[\s,]", str(p)):
            raise GuestError(f"the guest cannot handle spaces or commas in the path {p}")
    # Boot-time savers under TCG: a fixed lpj skips the delay-loop calibration of each
    # CPU, rodata=off the W+X page-table walk; mitigations cost on every syscall.
    append = ["console=ttyS0", "quiet", "loglevel=3", "panic=-1", "mitigations=off",
              "lpj=10000000", "rodata=off", "rdinit=/init", f"hr.checkout={CHECKOUT}",
              f"hr.run={run_dir}", f"hr.zram_mb={zram_mb}",
              *os.environ.get("HEADROOM_VM_APPEND", "").split()]  # for debugging boots
    return [
        qemu, "-accel", "tcg,thread=multi", "-M", "q35", "-cpu", "max",
        "-smp", str(cpus), "-m", str(memory_mb),
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-kernel", str(kernel.vmlinux), "-initrd", str(kernel.initramfs),
        "-append", " ".join(append),
        "-chardev", f"file,id=console,path={run_dir}/console.log", "-serial", "chardev:console",
        "-device", "virtio-serial-pci",
        "-chardev", f"file,id=out,path={run_dir}/stdout",
        "-device", "virtserialport,chardev=out,name=headroom.stdout",
        "-chardev", f"file,id=err,path={run_dir}/stderr",
        "-device", "virtserialport,chardev=err,name=headroom.stderr",
        "-fsdev", "local,id=hostroot,path=/,readonly=on,security_model=none,multidevs=remap",
        "-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot",
        "-fsdev", f"local,id=checkout,path={CHECKOUT},security_model=none,multidevs=remap",
        "-device", "virtio-9p-pci,fsdev=checkout,mount_tag=checkout",
        "-drive", f"file={run_dir}/scratch.img,format=raw,if=virtio,cache=unsafe",
    ]


class _Tail:
    """Forwards what QEMU appends to a file to a stream, while the guest runs."""

    def __init__(self, path: Path, sink: BinaryIO) -> None:
        self.path, self.sink, self.pos = path, sink, 0

    def pump(self) -> None:
        with contextlib.suppress(FileNotFoundError), self.path.open("rb") as fh:
            fh.seek(self.pos)
            data = fh.read()
            if data:
                self.pos += len(data)
                self.sink.write(data)
                self.sink.flush()


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _remove_stale(parent: Path, max_age: float = 86400) -> None:
    """Remove run directories left behind by killed processes (their sparse disk
    images cost little, but they add up)."""
    parent.mkdir(parents=True, exist_ok=True)
    for d in parent.iterdir():
        with contextlib.suppress(OSError):
            if time.time() - d.stat().st_mtime > max_age:
                shutil.rmtree(d, ignore_errors=True)


def run(kernel: str, argv: Sequence[str], timeout: float = 600, env: Mapping[str, str] | None
        = None, *, memory_mb: int = 2048, cpus: int | None = None, disk_gb: int = 8,
        zram_mb: int = 0, stream: bool = False) -> Result:
    """Boot the guest on `kernel`, run argv in the checkout, return its result.

    zram_mb > 0 turns on a zram swap device of that size before the command runs.
    stream=True copies the command's output to this process's stdout/stderr live.
    Raises KernelUnavailable, GuestTimeout (QEMU killed after `timeout` seconds)
    or GuestError (the guest died without an exit status).
    """
    k = ensure_kernel(kernel)
    cpus = cpus or min(2, os.cpu_count() or 1)
    _remove_stale(CACHE / "runs")
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=CACHE / "runs"))
    try:
        (run_dir / "command.sh").write_text(command_script(argv, CHECKOUT, guest_env(env)))
        make_scratch_disk(run_dir / "scratch.img", disk_gb)
        cmd = qemu_argv(k, run_dir, memory_mb=memory_mb, cpus=cpus, zram_mb=zram_mb)
        tails = [_Tail(run_dir / "stdout", sys.stdout.buffer),
                 _Tail(run_dir / "stderr", sys.stderr.buffer)] if stream else []
        console = run_dir / "console.log"
        boot_seconds = None
        start = time.monotonic()
        with (run_dir / "qemu.log").open("wb") as qlog:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=qlog, stderr=qlog)
            try:
                while proc.poll() is None:
                    if time.monotonic() - start > timeout:
                        proc.kill()
                        proc.wait()
                        raise GuestTimeout(
                            f"the guest ({kernel}) did not finish {shlex.join(argv)} within "
                            f"{timeout:.0f} s; QEMU was killed",
                            _read(run_dir / "stdout"), _read(run_dir / "stderr"))
                    for t in tails:
                        t.pump()
                    if boot_seconds is None and STARTED_MARK in _read(console).encode():
                        boot_seconds = time.monotonic() - start
                    time.sleep(0.05)
            finally:
                if proc.poll() is None:  # interrupted: never leave our QEMU behind
                    proc.kill()
                    proc.wait()
        duration = time.monotonic() - start
        for t in tails:
            t.pump()
        status = _read(run_dir / "status").strip()
        if not status.isdigit():
            raise GuestError(
                f"the guest ({kernel}) exited without an exit status (QEMU exit "
                f"{proc.returncode}).\n--- console:\n{_tail(_read(run_dir / 'console.log'))}"
                f"\n--- qemu:\n{_tail(_read(run_dir / 'qemu.log'))}"
                f"\n--- stderr:\n{_tail(_read(run_dir / 'stderr'))}")
        return Result(int(status), _read(run_dir / "stdout"), _read(run_dir / "stderr"),
                      duration, boot_seconds)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


@contextlib.contextmanager
def shared_tmpdir() -> Iterator[Path]:
    """A temporary directory in the checkout: the guest sees it at the same path and can
    write results (e.g. a junit XML file) there for the host to read."""
    base = CACHE / "shared"
    _remove_stale(base)
    path = Path(tempfile.mkdtemp(dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def junit_counts(xml_text: str) -> dict[str, int]:
    """tests/failures/errors/skipped summed over the test suites of a junit file."""
    root = ET.fromstring(xml_text)
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    return {k: sum(int(s.get(k, "0")) for s in suites)
            for k in ("tests", "failures", "errors", "skipped")}


def junit_failures(xml_text: str, limit: int = 1500) -> str:
    """The failed and errored test cases of a junit file, each with the head of its
    message: put first in a failure report, so that a truncated log still says why."""
    parts = []
    for case in ET.fromstring(xml_text).iter("testcase"):
        for bad in (*case.findall("failure"), *case.findall("error")):
            text = (bad.get("message") or "") + "\n" + (bad.text or "")
            parts.append(f"{case.get('classname')}::{case.get('name')}: {text.strip()[:limit]}")
    return "\n\n".join(parts)


def main(args: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vm-run", description="Run a command from the checkout in the QEMU test guest.")
    parser.add_argument("--kernel", choices=sorted(KERNELS), default="6.12")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds (default 1800)")
    parser.add_argument("--memory", type=int, default=2048, help="guest RAM in MiB")
    parser.add_argument("--cpus", type=int, default=None, help="guest CPUs (default 2)")
    parser.add_argument("--zram", type=int, default=0, metavar="MIB",
                        help="enable a zram swap device of this size")
    parser.add_argument("--env", action="append", default=[], metavar="K=V")
    parser.add_argument("command", nargs="+", help="the command (after --)")
    ns = parser.parse_args(args)
    env = dict(e.split("=", 1) for e in ns.env)
    try:
        result = run(ns.kernel, ns.command, ns.timeout, env, memory_mb=ns.memory,
                     cpus=ns.cpus, zram_mb=ns.zram, stream=True)
    except GuestTimeout as e:
        print(f"vm-run: {e}", file=sys.stderr)
        return 124
    except GuestError as e:
        print(f"vm-run: {e}", file=sys.stderr)
        return 125
    print(f"vm-run: exit {result.rc} after {result.duration:.1f} s on kernel {ns.kernel}",
          file=sys.stderr)
    return result.rc


if __name__ == "__main__":
    sys.exit(main())
