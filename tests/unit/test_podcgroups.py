"""Pod uid + QoS class -> pod cgroup directory, against fake trees of both drivers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from fake_kubepods import KIND_ROOT, make_kubepods, make_pod, parents, pod_rel
from headroom.nodeagent.podcgroups import (
    Driver,
    Layout,
    PodCgroupError,
    candidate_layouts,
    detect_layout,
    make_resolver,
    parse_kubelet_root,
    relative_path,
    valid_uid,
)

if TYPE_CHECKING:   # fixtures of tests/unit/conftest.py (not importable by name)
    from conftest import FakeTree

UID = "6d7c2f0e-1a2b-4c3d-8e9f-0123456789ab"


@pytest.mark.parametrize(
    ("qos", "driver", "expected"),
    [
        ("Burstable", Driver.SYSTEMD,
         "kubepods.slice/kubepods-burstable.slice/"
         "kubepods-burstable-pod6d7c2f0e_1a2b_4c3d_8e9f_0123456789ab.slice"),
        ("BestEffort", Driver.SYSTEMD,
         "kubepods.slice/kubepods-besteffort.slice/"
         "kubepods-besteffort-pod6d7c2f0e_1a2b_4c3d_8e9f_0123456789ab.slice"),
        ("Guaranteed", Driver.SYSTEMD,
         "kubepods.slice/kubepods-pod6d7c2f0e_1a2b_4c3d_8e9f_0123456789ab.slice"),
        ("Burstable", Driver.CGROUPFS, f"kubepods/burstable/pod{UID}"),
        ("BestEffort", Driver.CGROUPFS, f"kubepods/besteffort/pod{UID}"),
        ("Guaranteed", Driver.CGROUPFS, f"kubepods/pod{UID}"),
    ],
)
def test_relative_paths_of_both_drivers(qos: str, driver: Driver, expected: str) -> None:
    assert str(relative_path(UID, qos, driver)) == expected


@pytest.mark.parametrize(
    "uid",
    ["", "../../etc", UID.upper(), UID + "/..", UID[:-1], "x" * 36,
     "6d7c2f0e-1a2b-4c3d-8e9f-0123456789ab\n", "6d7c2f0e_1a2b_4c3d_8e9f_0123456789ab"],
)
def test_rejects_anything_but_a_uuid(uid: str) -> None:
    assert not valid_uid(uid)
    with pytest.raises(PodCgroupError) as e:
        relative_path(uid, "Burstable", Driver.CGROUPFS)
    assert e.value.reason == "InvalidUid"


def test_rejects_unknown_qos_class() -> None:
    with pytest.raises(PodCgroupError) as e:
        relative_path(UID, "burstable", Driver.SYSTEMD)
    assert e.value.reason == "InvalidQosClass"


@pytest.mark.parametrize("driver", list(Driver))
@pytest.mark.parametrize("qos", ["Guaranteed", "Burstable", "BestEffort"])
def test_auto_detection_finds_pods(cgroup_tree: FakeTree, driver: Driver, qos: str) -> None:
    make_kubepods(cgroup_tree, driver)
    pod = make_pod(cgroup_tree, driver, UID, qos)
    resolver = make_resolver(cgroup_tree.root, "auto")
    assert resolver.current_driver() is driver
    assert resolver.find(UID, qos) == pod


def test_no_kubepods_yet_is_cgroup_not_found(tmp_path: Path) -> None:
    assert detect_layout(tmp_path, candidate_layouts(None, None)) is None
    with pytest.raises(PodCgroupError) as e:
        make_resolver(tmp_path).find(UID, "Burstable")
    assert e.value.reason == "CgroupNotFound"


def test_bad_uid_reported_even_without_kubepods(tmp_path: Path) -> None:
    with pytest.raises(PodCgroupError) as e:
        make_resolver(tmp_path).find("../x", "Burstable")
    assert e.value.reason == "InvalidUid"


def test_missing_pod_is_cgroup_not_found_then_found_once_created(cgroup_tree: FakeTree) -> None:
    make_kubepods(cgroup_tree, Driver.CGROUPFS)
    resolver = make_resolver(cgroup_tree.root)
    with pytest.raises(PodCgroupError) as e:
        resolver.find(UID, "BestEffort")
    assert e.value.reason == "CgroupNotFound"
    make_pod(cgroup_tree, Driver.CGROUPFS, UID, "BestEffort")
    assert resolver.find(UID, "BestEffort").name == f"pod{UID}"


def test_explicit_driver_does_not_look_at_the_other_layout(cgroup_tree: FakeTree) -> None:
    make_kubepods(cgroup_tree, Driver.CGROUPFS)
    make_pod(cgroup_tree, Driver.CGROUPFS, UID, "Burstable")
    with pytest.raises(PodCgroupError) as e:
        make_resolver(cgroup_tree.root, "systemd").find(UID, "Burstable")
    assert e.value.reason == "CgroupNotFound"


def test_symlinked_pod_dir_is_refused(tmp_path: Path, cgroup_tree: FakeTree) -> None:
    root = cgroup_tree.root
    make_kubepods(cgroup_tree, Driver.CGROUPFS)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    os.symlink(outside, root / "kubepods" / "burstable" / f"pod{UID}")
    with pytest.raises(PodCgroupError) as e:
        make_resolver(root).find(UID, "Burstable")
    assert e.value.reason == "UnsafePath"


def test_symlinked_parent_is_refused(tmp_path: Path, cgroup_tree: FakeTree) -> None:
    root = tmp_path / "root"
    root.mkdir()
    elsewhere = type(cgroup_tree)(tmp_path / "elsewhere")
    make_kubepods(elsewhere, Driver.SYSTEMD)
    make_pod(elsewhere, Driver.SYSTEMD, UID, "Guaranteed")
    os.symlink(elsewhere.root / "kubepods.slice", root / "kubepods.slice")
    # a symlinked kubepods does not count as a driver's hierarchy ...
    assert detect_layout(root, candidate_layouts(None, None)) is None
    # ... nor is it followed when the driver is given.
    with pytest.raises(PodCgroupError) as e:
        make_resolver(root, "systemd").find(UID, "Guaranteed")
    assert e.value.reason == "UnsafePath"


def test_file_in_place_of_directory_is_refused(cgroup_tree: FakeTree) -> None:
    make_kubepods(cgroup_tree, Driver.CGROUPFS)
    (cgroup_tree.root / "kubepods" / f"pod{UID}").write_text("")
    with pytest.raises(PodCgroupError) as e:
        make_resolver(cgroup_tree.root).find(UID, "Guaranteed")
    assert e.value.reason == "UnsafePath"


def test_only_pod_level_dirs_are_returned(cgroup_tree: FakeTree) -> None:
    make_kubepods(cgroup_tree, Driver.SYSTEMD)
    make_pod(cgroup_tree, Driver.SYSTEMD, UID, "Burstable")
    found = make_resolver(cgroup_tree.root).find(UID, "Burstable")
    assert found != cgroup_tree.root
    assert found.name.startswith("kubepods-burstable-pod")
    assert found.parent.name == "kubepods-burstable.slice"


# ---- kubelet --cgroup-root ----------------------------------------------------------

UID_ = UID.replace("-", "_")


@pytest.mark.parametrize(
    ("qos", "driver", "root", "expected"),
    [
        ("Burstable", Driver.SYSTEMD, "/kubelet",
         "kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/"
         f"kubelet-kubepods-burstable-pod{UID_}.slice"),
        ("BestEffort", Driver.SYSTEMD, "/kubelet",
         "kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
         f"kubelet-kubepods-besteffort-pod{UID_}.slice"),
        ("Guaranteed", Driver.SYSTEMD, "/kubelet",
         f"kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{UID_}.slice"),
        ("Burstable", Driver.CGROUPFS, "/kubelet", f"kubelet/kubepods/burstable/pod{UID}"),
        ("Guaranteed", Driver.CGROUPFS, "/kubelet", f"kubelet/kubepods/pod{UID}"),
        # several components: one slice per prefix; '-' inside a component becomes '_'
        ("Burstable", Driver.SYSTEMD, "/custom/my-path",
         "custom.slice/custom-my_path.slice/custom-my_path-kubepods.slice/"
         "custom-my_path-kubepods-burstable.slice/"
         f"custom-my_path-kubepods-burstable-pod{UID_}.slice"),
        ("Burstable", Driver.CGROUPFS, "/custom/my-path/",
         f"custom/my-path/kubepods/burstable/pod{UID}"),
        # the default root, spelled out, is no prefix at all
        ("Burstable", Driver.SYSTEMD, "/",
         f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice"),
    ],
)
def test_relative_paths_under_a_kubelet_cgroup_root(qos: str, driver: Driver, root: str,
                                                    expected: str) -> None:
    assert str(relative_path(UID, qos, driver, parse_kubelet_root(root))) == expected


@pytest.mark.parametrize("value", ["kubelet", "/a/../b", "/a/./b", "/a b", "/a\n", "auto/x",
                                   "/kube*"])
def test_bad_kubelet_cgroup_root_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="kubelet cgroup root"):
        make_resolver("/tmp", "auto", value)


@pytest.mark.parametrize("driver", list(Driver))
@pytest.mark.parametrize("qos", ["Guaranteed", "Burstable", "BestEffort"])
@pytest.mark.parametrize("configured", ["auto", "/kubelet"])
def test_finds_pods_under_kinds_kubelet_root(cgroup_tree: FakeTree, driver: Driver, qos: str,
                                             configured: str) -> None:
    make_kubepods(cgroup_tree, driver, KIND_ROOT)
    pod = make_pod(cgroup_tree, driver, UID, qos, kubelet_root=KIND_ROOT)
    resolver = make_resolver(cgroup_tree.root, "auto", configured)
    assert resolver.current_layout() == Layout(driver, KIND_ROOT)
    assert resolver.current_driver() is driver
    assert resolver.find(UID, qos) == pod
    # only the pod-level directory: never the kubelet root's or the kubepods parents
    assert str(pod.relative_to(cgroup_tree.root)) not in parents(driver, KIND_ROOT)


@pytest.mark.parametrize("driver", list(Driver))
def test_explicit_custom_root_is_honoured(cgroup_tree: FakeTree, driver: Driver) -> None:
    custom = ("custom", "my-path")
    make_kubepods(cgroup_tree, driver, custom)
    pod = make_pod(cgroup_tree, driver, UID, "Burstable", kubelet_root=custom)
    # auto does not look there ...
    with pytest.raises(PodCgroupError) as e:
        make_resolver(cgroup_tree.root, str(driver), "auto").find(UID, "Burstable")
    assert e.value.reason == "CgroupNotFound" and "looked for" in str(e.value)
    # ... the explicit root does, with the driver given or detected
    for d in (str(driver), "auto"):
        assert make_resolver(cgroup_tree.root, d, "/custom/my-path").find(UID, "Burstable") == pod


def test_explicit_root_does_not_look_at_the_default_layout(cgroup_tree: FakeTree) -> None:
    make_kubepods(cgroup_tree, Driver.SYSTEMD)
    make_pod(cgroup_tree, Driver.SYSTEMD, UID, "Burstable")
    resolver = make_resolver(cgroup_tree.root, "auto", "/kubelet")
    assert resolver.current_layout() is None
    with pytest.raises(PodCgroupError) as e:
        resolver.find(UID, "Burstable")
    assert e.value.reason == "CgroupNotFound"
    assert "kubelet.slice/kubelet-kubepods.slice" in str(e.value)


def test_default_root_wins_when_both_exist(cgroup_tree: FakeTree) -> None:
    make_kubepods(cgroup_tree, Driver.CGROUPFS, KIND_ROOT)
    make_kubepods(cgroup_tree, Driver.CGROUPFS)
    assert make_resolver(cgroup_tree.root).current_layout() == Layout(Driver.CGROUPFS, ())


@pytest.mark.parametrize("driver", list(Driver))
def test_symlinked_kubelet_root_is_refused(tmp_path: Path, cgroup_tree: FakeTree,
                                           driver: Driver) -> None:
    """A symlink in place of kubelet.slice / kubelet: not detected, never followed."""
    elsewhere = type(cgroup_tree)(tmp_path / "elsewhere")
    make_kubepods(elsewhere, driver, KIND_ROOT)
    make_pod(elsewhere, driver, UID, "Burstable", kubelet_root=KIND_ROOT)
    top = parents(driver, KIND_ROOT)[0]
    os.symlink(elsewhere.root / top, cgroup_tree.root / top)
    assert make_resolver(cgroup_tree.root).current_layout() is None
    with pytest.raises(PodCgroupError) as e:
        make_resolver(cgroup_tree.root, str(driver), "/kubelet").find(UID, "Burstable")
    assert e.value.reason == "UnsafePath"


@pytest.mark.parametrize("driver", list(Driver))
def test_symlinked_pod_dir_under_kind_root_is_refused(tmp_path: Path, cgroup_tree: FakeTree,
                                                      driver: Driver) -> None:
    make_kubepods(cgroup_tree, driver, KIND_ROOT)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, cgroup_tree.root / pod_rel(driver, UID, "Burstable", KIND_ROOT))
    with pytest.raises(PodCgroupError) as e:
        make_resolver(cgroup_tree.root).find(UID, "Burstable")
    assert e.value.reason == "UnsafePath"
