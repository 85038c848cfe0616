"""Pure byte-level pieces of the test guest's boot image.

* `extract_vmlinux`: the uncompressed ELF kernel out of a bzImage, so QEMU can boot
  it through PVH and skip the in-guest decompression (seconds under TCG).
* `cpio_newc`: an initramfs archive (the "newc" format the kernel unpacks), written
  here so the files are owned by root without fakeroot and the build needs no cpio.
"""

from __future__ import annotations

import lzma
import shutil
import struct
import subprocess
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

ELF_MAGIC = b"\x7fELF"
# x86 boot protocol (Documentation/arch/x86/boot.rst): offsets in the setup header.
_SETUP_SECTS = 0x1F1
_HEADER_MAGIC = 0x202  # b"HdrS"
_PAYLOAD_OFFSET = 0x248  # u32, relative to the protected-mode code
_PAYLOAD_LENGTH = 0x24C  # u32

_MAGICS = {
    b"\x1f\x8b": "gzip",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
}


class BzImageError(ValueError):
    """The file is not a bzImage this extractor understands."""


def bzimage_payload(image: bytes) -> tuple[str, bytes]:
    """The compression format and the compressed kernel inside a bzImage."""
    if len(image) < 0x250 or image[_HEADER_MAGIC:_HEADER_MAGIC + 4] != b"HdrS":
        raise BzImageError("no 'HdrS' boot header: not a bzImage")
    setup_sects = image[_SETUP_SECTS] or 4  # 0 means 4 (boot protocol)
    pm_start = (setup_sects + 1) * 512
    offset, length = struct.unpack_from("<II", image, _PAYLOAD_OFFSET)
    if length == 0 or pm_start + offset + length > len(image):
        raise BzImageError(f"payload {offset}+{length} is outside the {len(image)}-byte image")
    payload = image[pm_start + offset:pm_start + offset + length]
    for magic, fmt in _MAGICS.items():
        if payload.startswith(magic):
            return fmt, payload
    raise BzImageError(f"unknown payload compression (magic {payload[:6].hex()})")


def decompress(fmt: str, payload: bytes) -> bytes:
    """Decompress one kernel payload; trailing bytes (the size trailer) are ignored."""
    if fmt == "gzip":
        return zlib.decompressobj(wbits=31).decompress(payload)
    if fmt == "xz":
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)
    if fmt == "zstd":
        # Python 3.11 has no zstd module; the zstd CLI is installed by scripts/ensure-env.
        zstd = shutil.which("zstd")
        if zstd is None:
            raise BzImageError("the kernel is zstd-compressed and the 'zstd' program is missing")
        # The kernel build appends the 4-byte uncompressed size after the frame, which
        # the zstd CLI rejects as a second frame: strip it.
        proc = subprocess.run([zstd, "-d", "-c", "-q"], input=payload[:-4], capture_output=True,
                              check=False)
        if proc.returncode != 0:
            raise BzImageError(f"zstd failed: {proc.stderr.decode(errors='replace').strip()}")
        return proc.stdout
    raise BzImageError(f"unsupported compression {fmt!r}")


def extract_vmlinux(image: bytes) -> bytes:
    """The uncompressed ELF vmlinux inside a bzImage."""
    fmt, payload = bzimage_payload(image)
    out = decompress(fmt, payload)
    if not out.startswith(ELF_MAGIC):
        raise BzImageError(f"{fmt} payload did not decompress to an ELF file")
    return out


@dataclass(frozen=True)
class CpioEntry:
    name: str  # path inside the archive, without a leading slash
    mode: int  # full st_mode, including the file type bits
    data: bytes = b""  # file content, or the target of a symlink
    rdev: tuple[int, int] = (0, 0)  # major, minor of a device node


def _pad4(n: int) -> bytes:
    return b"\x00" * (-n % 4)


def cpio_newc(entries: Iterable[CpioEntry]) -> bytes:
    """A newc-format cpio archive of the entries, all owned by root, mtime 0."""
    out = bytearray()
    ino = 1
    for entry in [*entries, CpioEntry("TRAILER!!!", 0)]:
        name = entry.name.encode() + b"\x00"
        fields = (ino, entry.mode, 0, 0, 1, 0, len(entry.data), 0, 0, *entry.rdev, len(name), 0)
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        out += header + name + _pad4(len(header) + len(name))
        out += entry.data + _pad4(len(entry.data))
        ino += 1
    return bytes(out)


MODULE_SIG_MAGIC = b"~Module signature appended~\n"


def strip_module_signature(module: bytes) -> bytes:
    """A kernel module without its appended signature.

    Debian does not enforce module signatures; an unsigned module loads (tainting the
    kernel) and skips the signature check, which costs seconds in total under TCG.
    """
    if not module.endswith(MODULE_SIG_MAGIC):
        return module
    end = len(module) - len(MODULE_SIG_MAGIC)
    # struct module_signature: 8 bytes of fields, then the signature length (be32).
    (sig_len,) = struct.unpack_from(">I", module, end - 4)
    start = end - 12 - sig_len
    if start <= 0:
        raise ValueError("malformed module signature")
    return module[:start]
