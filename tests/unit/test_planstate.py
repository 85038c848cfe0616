"""On-disk agent state: atomic writes, simulated restarts, damaged files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
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


def test_plan_survives_a_restart(tmp_path: Path) -> None:
    StateStore(tmp_path).save_plan(PLAN)
    again = StateStore(tmp_path)  # a new process reading the same directory
    plan = again.load_plan()
    assert plan == {
        "metadata": {"name": "node-1", "generation": 3, "resourceVersion": "42"},
        "spec": PLAN["spec"],
    }


def test_deleted_plan_is_saved_as_an_empty_plan(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save_plan(PLAN)
    store.save_plan(None)
    assert store.load_plan() == {"metadata": {}, "spec": {}}


def test_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    for _ in range(5):
        store.save_plan(PLAN)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]


def test_corrupt_file_is_moved_aside_and_ignored(tmp_path: Path) -> None:
    (tmp_path / "plan.json").write_text('{"version": 1, "plan": {"spec"')  # torn write
    store = StateStore(tmp_path)
    assert store.load_plan() is None
    assert (tmp_path / "plan.json.corrupt").exists()
    assert not (tmp_path / "plan.json").exists()


def test_unknown_format_version_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "plan.json").write_text(json.dumps({"version": 99, "plan": {"spec": {}}}))
    assert StateStore(tmp_path).load_plan() is None


# -- damaged or hostile files: set aside, never raised over (issue 13 item 3) -------------

def _store(tmp_path: Path) -> tuple[StateStore, list[str]]:
    counted: list[str] = []
    return StateStore(tmp_path, on_set_aside=counted.append), counted


@pytest.mark.parametrize("text", [
    "",                                              # empty (a tool truncated it)
    "\xff\xfe garbage",                              # not UTF-8
    '{"version": 1, "plan": {"spec"',                # torn
    "[" * 100_000,                                   # nesting beyond the parser
    '{"version": true, "plan": {"spec": {}}}',       # a bool is not the version
    '{"version": 1.0, "plan": {"spec": {}}}',
    '{"version": "1", "plan": {"spec": {}}}',
    '{"version": 2, "plan": {"spec": {}}}',          # a newer agent's, after a downgrade
    '[1, 2]',
    '{"version": 1}',                                # no plan
    '{"version": 1, "plan": null}',
    '{"version": 1, "plan": "x"}',
    '{"version": 1, "plan": {"spec": []}}',
    '{"version": 1, "plan": {"spec": {}, "metadata": 7}}',
], ids=lambda t: t[:24])
def test_bad_plan_file_is_set_aside_and_counted(tmp_path: Path, text: str) -> None:
    (tmp_path / "plan.json").write_bytes(text.encode("utf-8", "surrogateescape")
                                         if not text.startswith("\xff")
                                         else b"\xff\xfe garbage")
    store, counted = _store(tmp_path)
    assert store.load_plan() is None
    assert counted == ["plan.json"]
    assert (tmp_path / "plan.json.corrupt").exists()
    assert not (tmp_path / "plan.json").exists()
    assert store.load_plan() is None and counted == ["plan.json"]   # once, not every load


def test_unreadable_plan_path_is_set_aside(tmp_path: Path) -> None:
    (tmp_path / "plan.json").mkdir()                 # EISDIR on read
    store, counted = _store(tmp_path)
    assert store.load_plan() is None
    assert counted == ["plan.json"] and (tmp_path / "plan.json.corrupt").is_dir()
    store.save_plan(PLAN)                            # and the agent can save again
    assert store.load_plan() is not None
