"""Hostile cgroup trees under cluster mode (issue 13 item 5), on a fake kubepods tree:
symlinked pod dirs, a pod dir replaced by a file, a uid under two QoS classes, a cgroup
removed or swapped for a symlink between the agent's check and the engine's write, a
memory.high that cannot be written. In every case nothing outside a pod cgroup is
written (the whole tree and a directory outside it are compared byte for byte and by
mtime) and the pod ends with a clear reason in the plan status.

On a real kernel cgroupfs refuses symlinks and regular files (tests/vm/guest/
test_hostile_trees_real.py checks that): those cases can only come from an odd
--cgroup-root, which is why the fake tree is where they are tried."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fake_kubepods import make_kubepods, make_pod, pod_rel
from headroom.nodeagent.podcgroups import Driver
from test_cluster_agent import A, B, Harness, MiB, plan, pod

if TYPE_CHECKING:
    from conftest import FakeKernel, FakeTree

D = Driver.SYSTEMD


def _snapshot(tree: FakeTree, outside: Path, skip: tuple[str, ...]) -> dict[str, Any]:
    """Every file of the tree (but the `skip` pod dirs) and of `outside`."""
    skip = (*skip, pod_rel(D, A, "Burstable"))   # A's own dir (or the link in its place)
    out = {k: v for k, v in tree.contents().items() if not k.startswith(skip)}
    out.update({f"outside/{p.name}": (p.read_bytes(), p.stat().st_mtime_ns)
                for p in sorted(outside.rglob("*")) if p.is_file() and not p.is_symlink()})
    return out


@pytest.fixture
def world(fake_kernel: FakeKernel, cgroup_tree: FakeTree, tmp_path: Path
          ) -> tuple[Harness, FakeTree, Path]:
    make_kubepods(cgroup_tree, D)
    make_pod(cgroup_tree, D, B, "Burstable", high=300 * MiB)    # the bystander
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "memory.high").write_text("max\n")
    return Harness(fake_kernel, tmp_path / "state"), cgroup_tree, outside


def _check(h: Harness, tree: FakeTree, before: dict[str, Any], outside: Path,
           reason: str, words: tuple[str, ...] = ()) -> None:
    st = h.pod_status(A)
    assert (st["applied"], st["reason"]) == (False, reason), st
    for w in words:
        assert w in st["lastError"], st
    assert h.pod_status(B)["reason"] == "Applied"
    assert tree.high(pod_rel(D, B, "Burstable")) == str(256 * MiB)
    assert _snapshot(tree, outside, (pod_rel(D, B, "Burstable"),)) == before


def test_symlinked_pod_dir_to_a_parent_or_another_pod(world: tuple[Harness, FakeTree, Path]
                                                      ) -> None:
    h, tree, outside = world
    link = tree.root / pod_rel(D, A, "Burstable")
    for target in (tree.root / "kubepods.slice", tree.root / pod_rel(D, B, "Burstable"),
                   outside):
        if link.is_symlink():
            link.unlink()
        os.symlink(target, link)
        before = _snapshot(tree, outside, (pod_rel(D, B, "Burstable"),))
        h.agent.set_plan(plan(pod(A, high=64 * MiB), pod(B)))
        h.advance(5)
        _check(h, tree, before, outside, "UnsafePath", ("symlink",))


def test_pod_dir_replaced_by_a_file(world: tuple[Harness, FakeTree, Path]) -> None:
    h, tree, outside = world
    (tree.root / pod_rel(D, A, "Burstable")).write_text("not a cgroup\n")
    before = _snapshot(tree, outside, (pod_rel(D, B, "Burstable"),))
    h.agent.set_plan(plan(pod(A), pod(B)))
    h.advance(5)
    _check(h, tree, before, outside, "UnsafePath", ("not a directory",))


def test_pod_dir_replaced_by_a_file_after_takeover(world: tuple[Harness, FakeTree, Path]
                                                   ) -> None:
    h, tree, outside = world
    rel = pod_rel(D, A, "Burstable")
    make_pod(tree, D, A, "Burstable")
    h.agent.set_plan(plan(pod(A), pod(B)))
    assert h.pod_status(A)["reason"] == "Applied"
    tree.remove(rel)
    (tree.root / rel).write_text("x")
    before = _snapshot(tree, outside, (pod_rel(D, B, "Burstable"), rel))
    h.advance(5)
    h.advance(40)                                    # past the engine's retry interval
    st = h.pod_status(A)
    assert st["applied"] is False and st["reason"] in ("UnsafePath", "CgroupNotFound"), st
    assert (tree.root / rel).read_text() == "x"
    assert _snapshot(tree, outside, (pod_rel(D, B, "Burstable"), rel)) == before


def test_uid_under_two_qos_classes_is_written_nowhere(world: tuple[Harness, FakeTree, Path]
                                                      ) -> None:
    h, tree, outside = world
    make_pod(tree, D, A, "Burstable", high=400 * MiB)
    make_pod(tree, D, A, "BestEffort", high=500 * MiB)
    before = _snapshot(tree, outside, (pod_rel(D, B, "Burstable"),))
    h.agent.set_plan(plan(pod(A), pod(B)))
    h.advance(5)
    _check(h, tree, before, outside, "AmbiguousCgroup", ("BestEffort",))
    assert tree.high(pod_rel(D, A, "Burstable")) == str(400 * MiB)


def test_uid_appearing_under_a_second_class_after_takeover_is_released(
        world: tuple[Harness, FakeTree, Path]) -> None:
    h, tree, _ = world
    make_pod(tree, D, A, "Burstable", high=400 * MiB)
    h.agent.set_plan(plan(pod(A), pod(B)))
    assert tree.high(pod_rel(D, A, "Burstable")) == str(256 * MiB)
    make_pod(tree, D, A, "Guaranteed")
    h.advance(5)
    assert h.pod_status(A)["reason"] == "AmbiguousCgroup"
    assert tree.high(pod_rel(D, A, "Burstable")) == str(400 * MiB)   # given back
    assert tree.high(pod_rel(D, A, "Guaranteed")) == "max"


def test_cgroup_removed_between_check_and_write(world: tuple[Harness, FakeTree, Path]
                                                ) -> None:
    h, tree, outside = world
    rel = pod_rel(D, A, "Burstable")
    make_pod(tree, D, A, "Burstable")
    real_find = h.agent.resolver.find

    class Racing:
        def find(self, uid: str, qos: str) -> Path:
            path = real_find(uid, qos)
            if uid == A and path.exists():
                tree.remove(rel)                       # the pod ends right after the check
            return path

        def current_driver(self) -> Any:
            return D

    h.agent.resolver = Racing()   # type: ignore[assignment]
    before = _snapshot(tree, outside, (pod_rel(D, B, "Burstable"),))
    h.agent.set_plan(plan(pod(A), pod(B)))
    h.advance(5)
    _check(h, tree, before, outside, "CgroupNotFound")
    assert not (tree.root / rel).exists()             # nothing was created


def test_cgroup_swapped_for_a_symlink_between_check_and_write(
        world: tuple[Harness, FakeTree, Path]) -> None:
    h, tree, outside = world
    rel = pod_rel(D, A, "Burstable")
    make_pod(tree, D, A, "Burstable")
    real_find = h.agent.resolver.find
    target = tree.root / "kubepods.slice"

    class Racing:
        def find(self, uid: str, qos: str) -> Path:
            path = real_find(uid, qos)
            if uid == A and not path.is_symlink():
                tree.remove(rel)
                os.symlink(target, path)               # swapped after the lstat walk
            return path

        def current_driver(self) -> Any:
            return D

    h.agent.resolver = Racing()   # type: ignore[assignment]
    before = _snapshot(tree, outside, (pod_rel(D, B, "Burstable"),))
    h.agent.set_plan(plan(pod(A, high=64 * MiB), pod(B)))
    h.advance(5)
    st = h.pod_status(A)
    assert st["applied"] is False and "symlink" in st["lastError"], st
    assert tree.high("kubepods.slice") == "max"
    assert _snapshot(tree, outside, (pod_rel(D, B, "Burstable"),)) == before


@pytest.mark.parametrize("how", ["directory", "symlink", "missing"])
def test_memory_high_that_cannot_be_written(world: tuple[Harness, FakeTree, Path],
                                            how: str) -> None:
    h, tree, outside = world
    path = make_pod(tree, D, A, "Burstable")
    (path / "memory.high").unlink()
    if how == "directory":
        (path / "memory.high").mkdir()
    elif how == "symlink":                             # a write must not follow it
        os.symlink(outside / "memory.high", path / "memory.high")
    before = _snapshot(tree, outside, (pod_rel(D, B, "Burstable"), pod_rel(D, A, "Burstable")))
    h.agent.set_plan(plan(pod(A), pod(B)))
    h.advance(5)
    st = h.pod_status(A)
    assert st["applied"] is False and st["reason"] in ("Error", "CgroupNotFound"), st
    assert "memory.high" in st["lastError"], st
    assert (outside / "memory.high").read_text() == "max\n"
    assert _snapshot(tree, outside, (pod_rel(D, B, "Burstable"),
                                     pod_rel(D, A, "Burstable"))) == before
