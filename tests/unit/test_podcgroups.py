"""Pod uid + QoS class -> pod cgroup directory, against fake trees of both drivers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from fake_kubepods import make_kubepods, make_pod
from headroom.agent.podcgroups import (
    Driver,
    PodCgroupError,
    detect_driver,
    make_resolver,
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
    assert detect_driver(tmp_path) is None
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
    assert detect_driver(root) is None
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
