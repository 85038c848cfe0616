"""Durable originals: the engine's journal of memory.high values found before its first
write, on a fake tree, with "crashes" simulated by dropping an engine without stop()."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from headroom.cgroup import Cgroup
from headroom.engine import ReclaimEngine, ReclaimSettings, Target, originals

MiB = 1 << 20


def engine(kernel, state: Path | None, **kw) -> ReclaimEngine:
    return ReclaimEngine(kernel, cpu_budget_cores=None, workers=0, clock=lambda: 0.0,
                         state_dir=state, **kw)


def target(kernel, rel: str, high: int | None = 128 * MiB, **kw) -> Target:
    return Target(key=rel, path=kernel.tree.path(rel), memory_high=high,
                  settings=ReclaimSettings(**kw))


def on_disk(state: Path) -> dict[str, originals.Saved]:
    return originals.read(state / originals.FILE)


def test_original_is_on_disk_before_the_first_write(fake_kernel, tmp_path, monkeypatch):
    fake_kernel.tree.add("a", high=300 * MiB)
    seen = []
    real = Cgroup.write_high

    def checking(self, value):
        seen.append((value, on_disk(tmp_path).get("a")))
        real(self, value)

    monkeypatch.setattr(Cgroup, "write_high", checking)
    e = engine(fake_kernel, tmp_path)
    e.set_targets([target(fake_kernel, "a")])
    path = str(fake_kernel.tree.path("a"))
    # the write of 128Mi found the original and 128Mi (as ours) already on disk
    assert seen == [(128 * MiB, originals.Saved(300 * MiB, path, (128 * MiB,)))]
    e.stop(restore=True)
    assert fake_kernel.tree.high("a") == str(300 * MiB)
    assert on_disk(tmp_path) == {}


def test_after_a_crash_the_saved_original_is_restored_not_our_value(fake_kernel, tmp_path):
    fake_kernel.tree.add("a", high=300 * MiB)
    first = engine(fake_kernel, tmp_path)
    first.set_targets([target(fake_kernel, "a")])
    assert fake_kernel.tree.high("a") == str(128 * MiB)
    del first                              # SIGKILL: no stop(), nothing restored
    for _ in range(3):                     # killed again and again after restarting
        again = engine(fake_kernel, tmp_path)
        again.set_targets([target(fake_kernel, "a")])
        assert again.snapshot()["a"].original_memory_high == 300 * MiB
        assert fake_kernel.tree.high("a") == str(128 * MiB)
    last = engine(fake_kernel, tmp_path)
    last.set_targets([target(fake_kernel, "a")])
    last.stop(restore=True)
    assert fake_kernel.tree.high("a") == str(300 * MiB)


def test_released_while_down_is_restored_on_the_next_start(fake_kernel, tmp_path):
    for rel in ("a", "b", "c"):
        fake_kernel.tree.add(rel, high=300 * MiB)
    first = engine(fake_kernel, tmp_path)
    first.set_targets([target(fake_kernel, r) for r in ("a", "b", "c")])
    del first                              # crash
    fake_kernel.tree.write("b", "memory.high", f"{200 * MiB}\n")   # its owner changed it
    fake_kernel.tree.remove("c")                                    # gone meanwhile
    second = engine(fake_kernel, tmp_path)
    second.set_targets([])                 # none of them is wanted any more
    assert fake_kernel.tree.high("a") == str(300 * MiB)             # ours: put back
    assert fake_kernel.tree.high("b") == str(200 * MiB)             # not ours: left alone
    assert on_disk(tmp_path) == {}


def test_a_crash_between_journal_and_write_is_harmless(fake_kernel, tmp_path, monkeypatch):
    """The journal says 'about to write 96Mi' but the write never happened: memory.high
    still holds the previous value of ours, which is restored all the same."""
    fake_kernel.tree.add("a", high=300 * MiB)
    first = engine(fake_kernel, tmp_path)
    first.set_targets([target(fake_kernel, "a")])

    def killed(self, value):
        raise SystemExit("SIGKILL")

    monkeypatch.setattr(Cgroup, "write_high", killed)
    with pytest.raises(SystemExit):
        first.set_targets([target(fake_kernel, "a", high=96 * MiB)])
    monkeypatch.undo()
    assert on_disk(tmp_path)["a"].ours == (128 * MiB, 96 * MiB)
    second = engine(fake_kernel, tmp_path)
    second.set_targets([])
    assert fake_kernel.tree.high("a") == str(300 * MiB)


def test_unwritable_state_dir_means_no_write(fake_kernel, tmp_path):
    fake_kernel.tree.add("a", high=300 * MiB)
    state = tmp_path / "state"
    state.write_text("a file where the directory should be")
    e = engine(fake_kernel, state)
    e.set_targets([target(fake_kernel, "a")])
    st = e.snapshot()["a"]
    assert (st.applied, st.reason) == (False, "Error")
    assert fake_kernel.tree.high("a") == str(300 * MiB)


def test_dry_run_neither_writes_nor_forgets_the_state(fake_kernel, tmp_path):
    fake_kernel.tree.add("a", high=300 * MiB)
    first = engine(fake_kernel, tmp_path)
    first.set_targets([target(fake_kernel, "a")])
    del first
    before = (tmp_path / originals.FILE).read_bytes()
    dry = engine(fake_kernel, tmp_path, dry_run=True)
    dry.set_targets([])
    dry.stop(restore=True)
    assert (tmp_path / originals.FILE).read_bytes() == before
    assert fake_kernel.tree.high("a") == str(128 * MiB)


def test_corrupt_journal_is_moved_aside(fake_kernel, tmp_path):
    (tmp_path / originals.FILE).write_text('{"version": 2, "originals": {"a"')   # torn
    fake_kernel.tree.add("a", high=300 * MiB)
    e = engine(fake_kernel, tmp_path)
    assert e.originals() == {}
    assert (tmp_path / (originals.FILE + ".corrupt")).exists()
    e.set_targets([target(fake_kernel, "a")])
    assert e.originals() == {"a": 300 * MiB}


def test_bad_entries_are_skipped_one_by_one(tmp_path):
    (tmp_path / originals.FILE).write_text(json.dumps({"version": 2, "originals": {
        "good": {"path": "/x", "original": None, "ours": [4096]},
        "float": {"path": "/y", "original": 1.5, "ours": []},
        "bool": {"path": "/z", "original": True},
        "odd": {"path": "/z", "original": 4097},
        "badours": {"path": "/z", "original": None, "ours": [2**64]},
        "list": [1, 2]}}))
    assert originals.read(tmp_path / originals.FILE) == {
        "good": originals.Saved(None, "/x", (4096,))}


def values(saved):
    return {k: v.original for k, v in saved.items()}


def test_bad_originals_are_dropped_one_by_one_and_the_file_kept(tmp_path: Path) -> None:
    good = {"u-max": None, "u-1g": 1 << 30, "u-zero": 0}
    bad = {"u-float": 1.9, "u-true": True, "u-neg": -1, "u-wrap": 2**64 + 8192,
           "u-big": 1e308, "u-str": "268435456", "u-odd": 4097, "u-list": [1]}
    (tmp_path / "originals.json").write_text(json.dumps(
        {"version": 1, "originals": {**good, **bad}}))
    counted: list[str] = []
    assert values(originals.read(tmp_path / originals.FILE, counted.append)) == good
    assert counted == ["originals.json"]
    kept = json.loads((tmp_path / "originals.json.corrupt").read_text())
    assert set(kept["originals"]) == set(good) | set(bad)     # for diagnosis
    assert values(originals.read(tmp_path / originals.FILE)) == good   # valid ones re-saved


@pytest.mark.parametrize("text", ['{"version": 1, "originals": [1]}',
                                  '{"version": 1, "originals": "x"}', "{{{"])
def test_originals_of_the_wrong_shape_are_set_aside(tmp_path: Path, text: str) -> None:
    (tmp_path / "originals.json").write_text(text)
    counted: list[str] = []
    assert originals.read(tmp_path / originals.FILE, counted.append) == {}
    assert counted == ["originals.json"]
    assert (tmp_path / "originals.json.corrupt").exists()



def test_journal_keeps_only_the_last_two_values_and_leaves_no_temp_files(tmp_path):
    j = originals.OriginalsJournal(tmp_path)
    j.record("k", originals.Saved(None, "/p"))
    for v in (1, 2, 3, 2):   # the last 2 is known already: no new write of the file
        j.add_ours("k", "/p", v * 4096)
    assert j.get("k") == originals.Saved(None, "/p", (2 * 4096, 3 * 4096))
    assert originals.OriginalsJournal(tmp_path).entries() == j.entries()
    assert os.listdir(tmp_path) == [originals.FILE]


def test_a_failed_first_takeover_keeps_the_saved_original(fake_kernel, tmp_path):
    """The cgroup is missing when the restarted agent first looks; it appears later
    (with the earlier run's value in it): the saved original still wins."""
    fake_kernel.tree.add("a", high=300 * MiB)
    first = engine(fake_kernel, tmp_path)
    first.set_targets([target(fake_kernel, "a")])
    del first                                     # crash, memory.high is 128Mi
    saved = (tmp_path / originals.FILE).read_bytes()
    fake_kernel.tree.path("a").rename(fake_kernel.tree.path("a-away"))
    second = engine(fake_kernel, tmp_path)
    second.set_targets([target(fake_kernel, "a")])
    assert second.snapshot()["a"].reason == "CgroupNotFound"
    assert (tmp_path / originals.FILE).read_bytes() == saved
    fake_kernel.tree.path("a-away").rename(fake_kernel.tree.path("a"))
    second.set_targets([target(fake_kernel, "a")])   # retried
    assert second.snapshot()["a"].original_memory_high == 300 * MiB
    second.stop(restore=True)
    assert fake_kernel.tree.high("a") == str(300 * MiB)
