"""Standalone mode: config validation, glob scanning, and the CLI end to end (subprocess)."""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from headroom.cgroup import ALLOW_FAKE_ENV, CgroupRoot
from headroom.standalone import config as standalone_config
from headroom.standalone import run as standalone
from prometheus_client.parser import text_string_to_metric_families

MiB = 1 << 20

GOOD = """
nodeCpuBudget: 250m
rescanInterval: 0.2
summaryInterval: 0
cgroups:
- cgroup: "app.slice/*.service"
  memoryHigh: 256Mi
  reclaim:
    mode: Watermark
    headroomPercent: 4
    targetPercent: 8
    stepBytes: 8Mi
    maxBytesPerSecond: 64Mi
    swappiness: 30
- cgroup: "batch/*"
  memoryHigh: "50%"
  dryRun: true
  reclaim: {mode: Pressure, pressureTargetBasisPoints: 50}
"""


def args_for(config, root, dry_run=False, state_dir=None):
    return argparse.Namespace(config=str(config), cgroup_root=str(root), dry_run=dry_run,
                              cpu_budget=0.5, log_level="warning", metrics_port=0,
                              metrics_address="127.0.0.1",
                              state_dir=str(state_dir or pathlib.Path(config).parent / "state"))


def test_good_config_parses(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(GOOD)
    cfg = standalone_config.load(p)
    assert cfg.cpu_budget == 0.25 and cfg.rescan_interval == 0.2 and cfg.summary_interval == 0
    a, b = cfg.entries
    assert a.glob == "app.slice/*.service" and a.memory_high == 256 * MiB
    s = a.settings
    assert (s.mode, s.headroom_percent, s.target_percent, s.step_bytes, s.max_bytes_per_second,
            s.swappiness) == ("Watermark", 4, 8, 8 * MiB, 64 * MiB, 30)
    assert b.memory_high is None and b.memory_high_percent == 50 and b.dry_run
    assert b.settings.mode == "Pressure" and b.settings.pressure_target_percent == 0.5
    assert b.resolve_high(1000 * MiB) == (500 * MiB, "")
    assert b.resolve_high(None)[0] is None


BAD = [
    # (yaml text, words the one-line message must contain)
    ("cgroups: [a, b", ["yaml", "line"]),
    ("- just a list", ["top level"]),
    ("cgroups: []", ["cgroups", "non-empty"]),
    ("cgroup: x\n", ["cgroup", "unknown field"]),
    ("nodeCpuBudget: lots\ncgroups: [{cgroup: a}]", ["nodeCpuBudget", "lots"]),
    ("rescanInterval: -1\ncgroups: [{cgroup: a}]", ["rescanInterval"]),
    ("cgroups: [{memoryHigh: 1Gi}]", ["cgroups[0]", "cgroup", "required"]),
    ("cgroups: [{cgroup: a}, {cgroup: /etc}]", ["cgroups[1]", "'/etc'", "cgroup"]),
    ("cgroups: [{cgroup: '../x/*'}]", ["cgroups[0]", "'../x/*'", "cgroup"]),
    ("cgroups: [{cgroup: a, memoryHigh: lots}]", ["cgroups[0]", "'a'", "memoryHigh", "lots"]),
    ("cgroups: [{cgroup: a, memoryHigh: '150%'}]", ["memoryHigh", "150%"]),
    # whole percent only, as the CRD's limitPercent
    ("cgroups: [{cgroup: a, memoryHigh: '90.5%'}]", ["memoryHigh", "whole", "90.5%"]),
    ("cgroups: [{cgroup: a, memoryHigh: '0%'}]", ["memoryHigh", "[1, 100]"]),
    ("cgroups: [{cgroup: a, memoryHigh: '-5%'}]", ["memoryHigh", "whole"]),
    ("cgroups: [{cgroup: a, memoryHigh: 1Ki}]", ["memoryHigh", "at least"]),
    ("cgroups: [{cgroup: a, memroyHigh: 1Gi}]", ["cgroups[0]", "entry.memroyHigh", "unknown"]),
    ("cgroups: [{cgroup: a, dryRun: maybe}]", ["dryRun"]),
    ("cgroups: [{cgroup: a, reclaim: {mode: Bogus}}]", ["reclaim.mode", "Watermark"]),
    ("cgroups: [{cgroup: a, reclaim: {mode: Off}}]", ["reclaim.mode", "quotes"]),
    ("cgroups: [{cgroup: a}, {cgroup: 'b/*', reclaim: {headroomPercent: 20}}]",
     ["cgroups[1]", "'b/*'", "reclaim", "headroomPercent"]),
    ("cgroups: [{cgroup: a, reclaim: {stepsize: 1Mi}}]", ["reclaim.stepsize", "unknown"]),
    ("cgroups: [{cgroup: a, reclaim: {stepBytes: 12Q}}]", ["reclaim.stepBytes", "12Q"]),
    ("cgroups: [{cgroup: a, reclaim: {swappiness: 300}}]", ["reclaim.swappiness"]),
    # issue 13's values: refused up front, never coerced
    ("cgroups: [{cgroup: a, memoryHigh: 1.9}]", ["cgroups[0]", "memoryHigh"]),
    ("cgroups: [{cgroup: a, memoryHigh: true}]", ["cgroups[0]", "memoryHigh"]),
    ("cgroups: [{cgroup: a, memoryHigh: 18446744073709559808}]", ["memoryHigh"]),  # 2^64+8192
    ("cgroups: [{cgroup: a, memoryHigh: -1}]", ["memoryHigh"]),
    ("cgroups: [{cgroup: a, memoryHigh: 1e308}]", ["memoryHigh"]),
    ("cgroups: [{cgroup: a, memoryHigh: .inf}]", ["memoryHigh"]),
    ("cgroups: [{cgroup: a, memoryHigh: Infinity}]", ["memoryHigh"]),
    ("cgroups: [{cgroup: a, memoryHigh: 8Ei}]", ["memoryHigh"]),
    ("cgroups: [{cgroup: a, memoryHigh: '1e-300%'}]", ["memoryHigh"]),
    ("cgroups: [{cgroup: a, memoryHigh: 'nan%'}]", ["memoryHigh"]),
    ("nodeCpuBudget: -1\ncgroups: [{cgroup: a}]", ["nodeCpuBudget"]),
    ("nodeCpuBudget: 1e308\ncgroups: [{cgroup: a}]", ["nodeCpuBudget"]),
    ("nodeCpuBudget: .inf\ncgroups: [{cgroup: a}]", ["nodeCpuBudget"]),
    ("nodeCpuBudget: true\ncgroups: [{cgroup: a}]", ["nodeCpuBudget"]),
    ("rescanInterval: .nan\ncgroups: [{cgroup: a}]", ["rescanInterval"]),
    ("rescanInterval: 1e308\ncgroups: [{cgroup: a}]", ["rescanInterval"]),
    ("cgroups: [{cgroup: a, reclaim: {pressureTargetBasisPoints: 1000000}}]",
     ["reclaim.pressureTargetBasisPoints"]),
    ("cgroups: [{cgroup: a, reclaim: {pressureTargetBasisPoints: .nan}}]",
     ["reclaim.pressureTargetBasisPoints"]),
    ("cgroups: [{cgroup: a, reclaim: {stepBytes: 1.9}}]", ["reclaim.stepBytes"]),
    ("cgroups: [{cgroup: a, reclaim: {stepBytes: true}}]", ["reclaim.stepBytes"]),
    ("cgroups: [{cgroup: a, reclaim: {stepBytes: Infinity}}]", ["reclaim.stepBytes"]),
    ("cgroups: [{cgroup: a, reclaim: {maxBytesPerSecond: 18446744073709559808}}]",
     ["reclaim.maxBytesPerSecond"]),
    ("cgroups: [{cgroup: a, reclaim: {swappiness: 1.5}}]", ["reclaim.swappiness"]),
    ("cgroups: [{cgroup: a, reclaim: {swappiness: true}}]", ["reclaim.swappiness"]),
    ("cgroups: [{cgroup: a, reclaim: {headroomPercent: true}}]", ["reclaim.headroomPercent"]),
    ("cgroups: [{cgroup: a, dryRun: 1}]", ["dryRun"]),
]


@pytest.mark.parametrize(("text", "words"), BAD)
def test_bad_config_exit_2_one_message_nothing_written(text, words, tmp_path, cgroup_tree,
                                                       capsys, monkeypatch):
    monkeypatch.setenv(ALLOW_FAKE_ENV, "1")
    cgroup_tree.add("a", current=250 * MiB)
    cgroup_tree.add("b/c", current=250 * MiB)
    before = cgroup_tree.contents()
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    assert standalone.run(args_for(p, cgroup_tree.root)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(p) in err
    for w in words:
        assert w in err
    assert cgroup_tree.contents() == before


def test_missing_config_file(tmp_path, cgroup_tree, capsys, monkeypatch):
    monkeypatch.setenv(ALLOW_FAKE_ENV, "1")
    assert standalone.run(args_for(tmp_path / "nope.yaml", cgroup_tree.root)) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_unsafe_root_exit_2(tmp_path, cgroup_tree, capsys, monkeypatch):
    monkeypatch.delenv(ALLOW_FAKE_ENV, raising=False)
    p = tmp_path / "c.yaml"
    p.write_text(GOOD)
    before = cgroup_tree.contents()
    assert standalone.run(args_for(p, cgroup_tree.root)) == 2
    assert "not a cgroup2" in capsys.readouterr().err
    assert cgroup_tree.contents() == before


def test_scan_globs_first_entry_wins_percent_and_skips(tmp_path, cgroup_tree):
    cgroup_tree.add("app.slice/a.service")
    cgroup_tree.add("app.slice/b.service")
    cgroup_tree.add("app.slice/other.scope")
    cgroup_tree.add("batch/j1", max=1000 * MiB)
    cgroup_tree.add("batch/j2")  # memory.max "max": 50% cannot be resolved
    p = tmp_path / "c.yaml"
    p.write_text(GOOD + '- cgroup: "app.slice/*"\n  memoryHigh: 1Gi\n')
    cfg = standalone_config.load(p)
    root = CgroupRoot(cgroup_tree.root, allow_fake=True)
    warned: set[str] = set()
    targets = {t.key: t for t in standalone.scan(root, cfg, warned)}
    assert sorted(targets) == ["app.slice/a.service", "app.slice/b.service",
                               "app.slice/other.scope", "batch/j1"]
    assert targets["app.slice/a.service"].memory_high == 256 * MiB  # first entry wins
    assert targets["app.slice/other.scope"].memory_high == 1 << 30
    assert targets["batch/j1"].memory_high == 500 * MiB and targets["batch/j1"].dry_run
    assert warned == {"batch/j2"}
    cgroup_tree.remove("app.slice/b.service")
    cgroup_tree.add("app.slice/c.service")
    keys = {t.key for t in standalone.scan(root, cfg, warned)}
    assert "app.slice/b.service" not in keys and "app.slice/c.service" in keys


def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, str], float]:
    """{(sample name, target label): value} from the agent's /metrics, {} if unreachable."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return {}
    return {(s.name, s.labels.get("uid", "")): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def start_agent(config, root, *extra, stderr=subprocess.PIPE):
    env = dict(os.environ, **{ALLOW_FAKE_ENV: "1"})
    return subprocess.Popen(
        [sys.executable, "-m", "headroom.cli", "agent", "--standalone", "--config", str(config),
         "--cgroup-root", str(root), "--metrics-address", "127.0.0.1",
         "--state-dir", str(pathlib.Path(config).parent / "state"), *extra],
        env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_applies_rescans_and_restores_on_signal(sig, tmp_path, cgroup_tree):
    cgroup_tree.add("app.slice/a.service", current=10 * MiB)
    cgroup_tree.add("app.slice/b.service", current=10 * MiB)
    cgroup_tree.write("app.slice/b.service", "memory.high", f"{512 * MiB}\n")
    p = tmp_path / "c.yaml"
    p.write_text(GOOD)
    port = free_port()
    proc = start_agent(p, cgroup_tree.root, "--metrics-port", str(port))
    try:
        applied = str(256 * MiB)
        assert wait_for(lambda: cgroup_tree.high("app.slice/a.service") == applied
                        and cgroup_tree.high("app.slice/b.service") == applied)
        # the same Prometheus series as cluster mode, the cgroup path as target label
        assert wait_for(lambda: scrape(port).get(
            ("headroom_memory_high_bytes", "app.slice/a.service")) == 256 * MiB)
        cgroup_tree.add("app.slice/new.service", current=10 * MiB)  # picked up by a rescan
        assert wait_for(lambda: cgroup_tree.high("app.slice/new.service") == applied)
        cgroup_tree.remove("app.slice/new.service")  # vanishes while managed
        time.sleep(0.5)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert cgroup_tree.high("app.slice/a.service") == "max"
    assert cgroup_tree.high("app.slice/b.service") == str(512 * MiB)
    assert "Traceback" not in err and '"msg": "standalone_stop"' in err


def test_cli_dry_run_writes_nothing(tmp_path, cgroup_tree):
    cgroup_tree.add("app.slice/a.service", current=250 * MiB)
    cgroup_tree.add("batch/j1", current=900 * MiB, max=1000 * MiB)
    before = cgroup_tree.contents()
    p = tmp_path / "c.yaml"
    p.write_text(GOOD)
    log = tmp_path / "agent.log"
    with log.open("w") as logf:
        proc = start_agent(p, cgroup_tree.root, "--dry-run", "--metrics-port", "0",
                           stderr=logf)
        try:
            assert wait_for(lambda: '"msg": "dry_run_reclaim"' in log.read_text())
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, log.read_text()
    assert cgroup_tree.contents() == before


def test_shipped_example_is_valid():
    example = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "standalone",
                           "headroom.yaml")
    cfg = standalone_config.load(example)
    assert [e.glob for e in cfg.entries] == ["workload.slice/*.service", "batch.slice/*",
                                             "system.slice/*.service"]
    assert cfg.cpu_budget == 0.5


def test_cli_sigkilled_three_times_still_restores_the_owners_value(tmp_path, cgroup_tree):
    """Issue 13 item 6 on the fake tree: the owner's 300Mi survives SIGKILLs of the agent
    holding 256Mi; only the clean stop puts it back."""
    cgroup_tree.add("app.slice/a.service", current=10 * MiB)
    cgroup_tree.write("app.slice/a.service", "memory.high", f"{300 * MiB}\n")
    p = tmp_path / "c.yaml"
    p.write_text(GOOD)
    applied = str(256 * MiB)
    for _ in range(3):
        proc = start_agent(p, cgroup_tree.root, "--metrics-port", "0",
                           stderr=subprocess.DEVNULL)
        try:
            assert wait_for(lambda: cgroup_tree.high("app.slice/a.service") == applied)
        finally:
            proc.kill()
            proc.wait()
        assert cgroup_tree.high("app.slice/a.service") == applied   # nothing restored
    log = tmp_path / "agent.log"
    with log.open("w") as logf:
        proc = start_agent(p, cgroup_tree.root, "--metrics-port", "0", stderr=logf)
        try:   # memory.high is 256Mi already: wait until this run has taken it over
            assert wait_for(lambda: '"msg": "target_added"' in log.read_text())
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, log.read_text()
    assert cgroup_tree.high("app.slice/a.service") == str(300 * MiB)


def test_unusable_state_dir_exits_2_and_writes_nothing(tmp_path, cgroup_tree, capsys,
                                                      monkeypatch):
    monkeypatch.setenv(ALLOW_FAKE_ENV, "1")
    cgroup_tree.add("app.slice/a.service", current=10 * MiB)
    before = cgroup_tree.contents()
    p = tmp_path / "c.yaml"
    p.write_text(GOOD)
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert standalone.run(args_for(p, cgroup_tree.root, state_dir=blocker / "state")) == 2
    assert "state dir" in capsys.readouterr().err
    assert cgroup_tree.contents() == before


def test_restore_all_after_a_crash_puts_the_owners_values_back(tmp_path, cgroup_tree):
    """An agent SIGKILLed and never restarted: `--restore-all` puts back what it had
    saved, leaves values someone else set since, and empties the state."""
    for name in ("a", "b"):
        cgroup_tree.add(f"app.slice/{name}.service", current=10 * MiB)
        cgroup_tree.write(f"app.slice/{name}.service", "memory.high", f"{300 * MiB}\n")
    p = tmp_path / "c.yaml"
    p.write_text(GOOD)
    proc = start_agent(p, cgroup_tree.root, "--metrics-port", "0", stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: all(cgroup_tree.high(f"app.slice/{n}.service")
                                    == str(256 * MiB) for n in ("a", "b")))
    finally:
        proc.kill()
        proc.wait()
    cgroup_tree.write("app.slice/b.service", "memory.high", f"{200 * MiB}\n")   # its owner
    env = dict(os.environ, **{ALLOW_FAKE_ENV: "1"})
    state = tmp_path / "state"
    cmd = [sys.executable, "-m", "headroom.cli", "agent", "--restore-all", "--cgroup-root",
           str(cgroup_tree.root), "--state-dir", str(state)]
    dry = subprocess.run([*cmd, "--dry-run"], env=env, capture_output=True, text=True,
                         timeout=60, check=False)
    assert dry.returncode == 0, dry.stderr
    assert '"outcome": "would restore"' in dry.stdout
    assert cgroup_tree.high("app.slice/a.service") == str(256 * MiB)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert cgroup_tree.high("app.slice/a.service") == str(300 * MiB)
    assert cgroup_tree.high("app.slice/b.service") == str(200 * MiB)
    outcomes = sorted(json.loads(ln)["outcome"] for ln in done.stdout.splitlines())
    assert outcomes == ["not ours", "restored"]
    assert json.loads((state / "originals.json").read_text())["originals"] == {}


def test_sigterm_during_start_up_still_restores(tmp_path, cgroup_tree, monkeypatch):
    """A SIGTERM before the main loop (after the handler is set, the first thing run()
    does) ends in the clean stop: one scan takes the cgroups over, then all is restored."""
    from headroom.cli import main
    from headroom.standalone import run as run_mod

    cgroup_tree.add("app.slice/a.service", current=10 * MiB)
    cgroup_tree.write("app.slice/a.service", "memory.high", f"{300 * MiB}\n")
    p = tmp_path / "c.yaml"
    p.write_text(GOOD)
    proc = start_agent(p, cgroup_tree.root, "--metrics-port", "0", stderr=subprocess.DEVNULL)
    try:   # an earlier run, SIGKILLed while holding 256Mi
        assert wait_for(lambda: cgroup_tree.high("app.slice/a.service") == str(256 * MiB))
    finally:
        proc.kill()
        proc.wait()
    real_load = run_mod.load

    def load_then_sigterm(path):
        # (the default action would end this test process: check before sending)
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, previous)
        os.kill(os.getpid(), signal.SIGTERM)
        return real_load(path)

    previous = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(run_mod, "load", load_then_sigterm)
    monkeypatch.setenv(ALLOW_FAKE_ENV, "1")
    rc = main(["agent", "--standalone", "--config", str(p), "--cgroup-root",
               str(cgroup_tree.root), "--state-dir", str(tmp_path / "state"),
               "--metrics-port", "0"])
    assert signal.getsignal(signal.SIGTERM) == previous   # handed back
    assert rc == 0
    assert cgroup_tree.high("app.slice/a.service") == str(300 * MiB)
