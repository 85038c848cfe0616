"""The real cgroup file layer, exercised on a tmp tree shaped like cgroup v2."""

import errno
import os
import select

import pytest
from headroom.cgroup import (
    Busy,
    CgroupError,
    CgroupGone,
    CgroupRoot,
    PartialReclaim,
    UnsafePath,
    UnsupportedKey,
    capabilities,
    fs,
)
from headroom.cgroup.errors import from_oserror
from headroom.cgroup.watch import EventsWatch, PsiTrigger


@pytest.fixture
def root(cgroup_tree):
    return CgroupRoot(cgroup_tree.root, allow_fake=True)


def test_readers(cgroup_tree, root):
    cgroup_tree.add("a/b", current=12345, high=1 << 30, max=None)
    cgroup_tree.set_events("a/b", high=7, oom=1)
    cgroup_tree.set_pressure("a/b", some_us=999, full_us=5)
    cg = root.cgroup("a/b")
    assert cg.rel == "a/b"
    assert cg.read_current() == 12345
    assert cg.read_high() == 1 << 30
    assert cg.read_max() is None
    assert cg.read_events()["high"] == 7 and cg.read_events()["oom"] == 1
    assert cg.read_events(local=True)["high"] == 0
    assert cg.read_stat()["file"] == 12345
    p = cg.read_pressure()
    assert p.some.total_us == 999 and p.full is not None and p.full.total_us == 5


def test_write_high_page_aligned_and_max(cgroup_tree, root):
    cgroup_tree.add("a")
    cg = root.cgroup("a")
    cg.write_high(fs.PAGE_SIZE * 10 + 123)
    assert cgroup_tree.high("a") == str(fs.PAGE_SIZE * 10)
    cg.write_high(None)
    assert cgroup_tree.high("a") == "max"


def test_reclaim_write_format(cgroup_tree, root):
    cgroup_tree.add("a")
    cg = root.cgroup("a")
    cg.reclaim(1 << 20)
    assert cgroup_tree.read("a", "memory.reclaim") == str(1 << 20)
    cg.reclaim(4096, swappiness=0)
    assert cgroup_tree.read("a", "memory.reclaim") == "4096 swappiness=0"
    with pytest.raises(ValueError):
        cg.reclaim(0)


def test_vanished_cgroup_is_cgroup_gone_naming_the_file(cgroup_tree, root):
    cgroup_tree.add("a")
    cg = root.cgroup("a")
    cgroup_tree.remove("a")
    with pytest.raises(CgroupGone, match=r"a/memory.current"):
        cg.read_current()
    with pytest.raises(CgroupGone, match=r"a/memory.reclaim"):
        cg.reclaim(4096)


def test_unparsable_file_is_cgroup_error(cgroup_tree, root):
    cgroup_tree.add("a")
    cgroup_tree.write("a", "memory.high", "lots\n")
    with pytest.raises(CgroupError, match=r"memory\.high"):
        root.cgroup("a").read_high()


@pytest.mark.parametrize(("code", "cls"), [
    (errno.ENOENT, CgroupGone), (errno.ENODEV, CgroupGone), (errno.EAGAIN, PartialReclaim),
    (errno.EINVAL, UnsupportedKey), (errno.EBUSY, Busy), (errno.EIO, CgroupError),
])
def test_errno_mapping(code, cls):
    err = from_oserror(OSError(code, os.strerror(code)), "/x/memory.reclaim", "write '1'")
    assert type(err) is cls
    assert err.errno == code and "/x/memory.reclaim" in str(err)


def test_never_writes_the_root(cgroup_tree, root):
    with pytest.raises(UnsafePath):
        root.cgroup(".").write_high(1 << 20)
    with pytest.raises(UnsafePath):
        root.cgroup(cgroup_tree.root).reclaim(4096)


def test_paths_outside_root_refused(cgroup_tree, root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    with pytest.raises(UnsafePath):
        root.cgroup("../outside")
    with pytest.raises(UnsafePath):
        root.cgroup(outside)
    (cgroup_tree.root / "link").symlink_to(outside)
    with pytest.raises(UnsafePath):
        root.cgroup("link")


def test_symlinked_file_not_followed(cgroup_tree, root, tmp_path):
    cgroup_tree.add("a")
    victim = tmp_path / "victim"
    victim.write_text("keep")
    os.unlink(cgroup_tree.path("a") / "memory.high")
    os.symlink(victim, cgroup_tree.path("a") / "memory.high")
    with pytest.raises(CgroupError):
        root.cgroup("a").write_high(4096)
    assert victim.read_text() == "keep"


def test_glob_excludes_root_files_and_symlinks(cgroup_tree, root, tmp_path):
    cgroup_tree.add("pods/p1")
    cgroup_tree.add("pods/p2")
    (tmp_path / "elsewhere").mkdir()
    (cgroup_tree.root / "pods" / "p3").symlink_to(tmp_path / "elsewhere")
    assert [c.rel for c in root.glob("pods/*")] == ["pods/p1", "pods/p2"]
    assert [c.rel for c in root.glob("*")] == ["pods"]
    with pytest.raises(UnsafePath):
        root.glob("../*")
    with pytest.raises(UnsafePath):
        root.glob("/etc/*")


class TestRootSafety:
    def test_plain_dir_refused_without_permission(self, cgroup_tree, monkeypatch):
        monkeypatch.delenv(fs.ALLOW_FAKE_ENV, raising=False)
        with pytest.raises(UnsafePath, match="not a cgroup2"):
            CgroupRoot(cgroup_tree.root)

    def test_env_allows_fake(self, cgroup_tree, monkeypatch):
        monkeypatch.setenv(fs.ALLOW_FAKE_ENV, "1")
        assert CgroupRoot(cgroup_tree.root).fake

    def test_host_mount_refused_even_if_allowed(self, cgroup_tree, monkeypatch):
        monkeypatch.setattr(fs, "HOST_CGROUP_MOUNT", cgroup_tree.root)
        with pytest.raises(UnsafePath, match="host path"):
            CgroupRoot(cgroup_tree.root, allow_fake=True)

    def test_real_host_mount_refused_when_not_cgroup2(self):
        if not os.path.isdir("/sys/fs/cgroup"):
            pytest.skip("no /sys/fs/cgroup")
        if fs.fs_magic("/sys/fs/cgroup") == fs.CGROUP2_SUPER_MAGIC:
            pytest.skip("this machine has a real cgroup2 mount")
        with pytest.raises(UnsafePath):
            CgroupRoot("/sys/fs/cgroup", allow_fake=True)

    def test_cgroup2_needs_memory_controller(self, cgroup_tree, monkeypatch):
        monkeypatch.setattr(fs, "fs_magic", lambda p: fs.CGROUP2_SUPER_MAGIC)
        (cgroup_tree.root / "cgroup.controllers").write_text("cpu io pids\n")
        with pytest.raises(UnsafePath, match="memory controller"):
            CgroupRoot(cgroup_tree.root)
        (cgroup_tree.root / "cgroup.controllers").write_text("cpu memory pids\n")
        assert not CgroupRoot(cgroup_tree.root).fake

    def test_statfs_magic_of_tmp_is_not_cgroup2(self, tmp_path):
        assert fs.fs_magic(tmp_path) != fs.CGROUP2_SUPER_MAGIC


class TestWatches:
    def test_psi_trigger_writes_trigger_with_nul(self, cgroup_tree):
        cgroup_tree.add("a")
        path = cgroup_tree.path("a") / "memory.pressure"
        path.write_text("")
        t = PsiTrigger(path, 20000, 1000000)
        try:
            assert path.read_bytes() == b"some 20000 1000000\0"
            assert t.poll_events == select.EPOLLPRI and t.fileno() >= 0
        finally:
            t.close()

    def test_events_watch_acknowledge_rereads(self, cgroup_tree):
        cgroup_tree.add("a")
        w = EventsWatch(cgroup_tree.path("a") / "memory.events")
        try:
            cgroup_tree.set_events("a", high=3)
            assert w.acknowledge()["high"] == 3
        finally:
            w.close()

    def test_fake_root_refuses_watches(self, cgroup_tree, root):
        cgroup_tree.add("a")
        with pytest.raises(UnsupportedKey):
            root.cgroup("a").psi_trigger(20000, 1000000)
        with pytest.raises(UnsupportedKey):
            root.cgroup("a").events_watch()


class TestCapabilities:
    def test_probe_on_fake_kernel(self, fake_kernel):
        fake_kernel.tree.add("a", current=1 << 20)
        caps = capabilities.probe(fake_kernel.cgroup("a"), write=True)
        assert caps.memory_reclaim and caps.swappiness_key and caps.psi

    def test_swappiness_rejected(self, fake_kernel):
        fake_kernel.tree.add("a", current=1 << 20)
        fake_kernel.swappiness_supported = False
        assert capabilities.probe_swappiness_key(fake_kernel.cgroup("a")) is False

    def test_swappiness_accepted_when_nothing_reclaimable(self, fake_kernel):
        fake_kernel.tree.add("a", current=0)
        assert capabilities.probe_swappiness_key(fake_kernel.cgroup("a")) is True

    def test_no_memory_reclaim_file(self, cgroup_tree, root):
        cgroup_tree.add("a", reclaim_file=False)
        caps = capabilities.probe(root.cgroup("a"), write=True)
        assert caps.memory_reclaim is False and caps.swappiness_key is False
        assert caps.psi is False  # plain files cannot carry PSI triggers

    @pytest.mark.parametrize("text,classic", [("0x0007\n", False), ("0x0001", False),
                                              ("0x0000\n", True), ("0x0006", True),
                                              ("garbage", True), (None, True)])
    def test_classic_lru_switch(self, tmp_path, text, classic):
        switch = tmp_path / "enabled"
        if text is not None:
            switch.write_text(text)
        assert capabilities.classic_lru_switch(switch) is classic

    def test_dry_probe_writes_nothing(self, cgroup_tree, root):
        cgroup_tree.add("a")
        before = cgroup_tree.contents()
        caps = capabilities.probe(root.cgroup("a"), write=False)
        assert caps.memory_reclaim is True and caps.swappiness_key is None and caps.psi is None
        assert caps.classic_lru is True   # a fake tree: classic, whatever this host runs
        assert cgroup_tree.contents() == before
