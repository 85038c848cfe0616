"""The only code that reads or writes cgroup v2 files.

    root = CgroupRoot("/sys/fs/cgroup")          # verifies cgroup2fs + memory controller
    cg = root.cgroup("workload.slice/app.service")
    cg.read_current(); cg.write_high(256 << 20); cg.reclaim(16 << 20, swappiness=60)
"""

from headroom.cgroup.capabilities import Capabilities, probe
from headroom.cgroup.cgroup import Cgroup, CgroupRoot
from headroom.cgroup.errors import (
    Busy,
    CgroupError,
    CgroupGone,
    PartialReclaim,
    UnsafePath,
    UnsupportedKey,
)
from headroom.cgroup.fs import ALLOW_FAKE_ENV, CGROUP2_SUPER_MAGIC, PAGE_SIZE
from headroom.cgroup.parse import Pressure, PressureLine
from headroom.cgroup.watch import EventsWatch, PsiTrigger, Watch

__all__ = [
    "ALLOW_FAKE_ENV",
    "CGROUP2_SUPER_MAGIC",
    "PAGE_SIZE",
    "Busy",
    "Capabilities",
    "Cgroup",
    "CgroupError",
    "CgroupGone",
    "CgroupRoot",
    "EventsWatch",
    "PartialReclaim",
    "Pressure",
    "PressureLine",
    "PsiTrigger",
    "UnsafePath",
    "UnsupportedKey",
    "Watch",
    "probe",
]
