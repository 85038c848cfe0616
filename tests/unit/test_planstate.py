"""On-disk agent state: atomic writes, simulated restarts, damaged files."""

from __future__ import annotations

import json
from pathlib import Path

from headroom.nodeagent.planstate import StateStore

PLAN = {
    "apiVersion": "headroom.dev/v1alpha1",
    "kind": "NodeReclaimPlan",
    "metadata": {"name": "node-1", "generation": 3, "resourceVersion": "42", "uid": "x",
                 "managedFields": [{"big": "thing"}]},
    "spec": {"nodeName": "node-1", "pods": [{"uid": "u1", "memoryHigh": 4096}]},
    "status": {"heartbeat": "then"},
}


def test_fresh_directory_has_no_state(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    assert store.load_plan() is None
    assert store.load_originals() == {}


def test_plan_and_originals_survive_a_restart(tmp_path: Path) -> None:
    StateStore(tmp_path).save_plan(PLAN)
    StateStore(tmp_path).save_originals({"u1": None, "u2": 1 << 30})
    again = StateStore(tmp_path)  # a new process reading the same directory
    plan = again.load_plan()
    assert plan == {
        "metadata": {"name": "node-1", "generation": 3, "resourceVersion": "42"},
        "spec": PLAN["spec"],
    }
    assert again.load_originals() == {"u1": None, "u2": 1 << 30}


def test_deleted_plan_is_saved_as_an_empty_plan(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save_plan(PLAN)
    store.save_plan(None)
    assert store.load_plan() == {"metadata": {}, "spec": {}}


def test_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    for i in range(5):
        store.save_originals({"u": i})
        store.save_plan(PLAN)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["originals.json", "plan.json"]


def test_corrupt_file_is_moved_aside_and_ignored(tmp_path: Path) -> None:
    (tmp_path / "plan.json").write_text('{"version": 1, "plan": {"spec"')  # torn write
    store = StateStore(tmp_path)
    assert store.load_plan() is None
    assert (tmp_path / "plan.json.corrupt").exists()
    assert not (tmp_path / "plan.json").exists()


def test_unknown_format_version_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "originals.json").write_text(json.dumps({"version": 99, "originals": {"u": 1}}))
    assert StateStore(tmp_path).load_originals() == {}
