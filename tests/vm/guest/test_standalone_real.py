"""`headroom agent --standalone` end to end on a real kernel (issue 2 item 6f)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

MiB = 1 << 20
HEADROOM = [sys.executable, "-m", "headroom.cli"]


def _high_text(cg: Path) -> str:
    return (cg / "memory.high").read_text().strip()


def _wait_for(what: str, cond: Callable[[], bool], proc: subprocess.Popen[str],
              timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, f"the agent exited ({proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _config(path: Path, glob: str, step: str = "16Mi") -> Path:
    path.write_text(f"""\
rescanInterval: 0.2
summaryInterval: 0
cgroups:
- cgroup: "{glob}"
  memoryHigh: 64Mi
  reclaim: {{mode: Watermark, headroomPercent: 5, targetPercent: 10, stepBytes: {step}}}
""")
    return path


def _agent(cfg: Path, cgroup_root: Path) -> list[str]:
    return [*HEADROOM, "agent", "--standalone", "--config", str(cfg), "--cgroup-root",
            str(cgroup_root), "--metrics-port", "0", "--state-dir", str(cfg.parent / "state")]


def test_bad_config_exits_2_and_writes_nothing(make_cgroup, cgroup_root: Path,
                                               tmp_path: Path) -> None:
    cg = make_cgroup("sa-bad")
    cfg = _config(tmp_path / "bad.yaml", cg.name, step="12Q")
    proc = subprocess.run(_agent(cfg, cgroup_root), capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(cfg) in lines[0] and "cgroups[0]" in lines[0] and "stepBytes" in lines[0]
    assert _high_text(cg) == "max"


def test_standalone_agent_applies_rescans_and_restores(make_cgroup, cgroup_root: Path,
                                                       tmp_path: Path) -> None:
    first = make_cgroup("sa-x")
    cfg = _config(tmp_path / "headroom.yaml", "t*-sa-x*")   # make_cgroup names: t<N>-<name>
    agent = subprocess.Popen(_agent(cfg, cgroup_root), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        _wait_for("memory.high of the first cgroup", lambda: _high_text(first) == str(64 * MiB),
                  agent)
        second = make_cgroup("sa-x2")                 # appears later: picked up by a re-scan
        _wait_for("memory.high of the second cgroup",
                  lambda: _high_text(second) == str(64 * MiB), agent)
        second.rmdir()                                # vanishes: dropped, the agent lives on
        time.sleep(1.0)
        assert agent.poll() is None, agent.stderr.read() if agent.stderr else ""
        agent.send_signal(signal.SIGTERM)
        _, stderr = agent.communicate(timeout=120)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    assert agent.returncode == 0, stderr
    assert _high_text(first) == "max"                 # restored on SIGTERM
    logs = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    events = [e["msg"] for e in logs]
    assert "standalone_start" in events and "standalone_stop" in events
    assert not [e for e in logs if e["level"] == "error"], stderr
    taken = {e["key"] for e in logs if e["msg"] == "target_added"}
    assert {first.name, second.name} <= taken


def test_sigkilled_agent_never_loses_the_owners_value(make_cgroup, cgroup_root: Path,
                                                      tmp_path: Path) -> None:
    """Issue 13 item 6, as measured there: the owner set 300 MiB, the agent holds 64 MiB,
    is SIGKILLed three times and restarted, then stopped cleanly: 300 MiB is back."""
    cg = make_cgroup("sa-kill")
    (cg / "memory.high").write_text(f"{300 * MiB}\n")
    cfg = _config(tmp_path / "headroom.yaml", cg.name)
    log = tmp_path / "agent.log"
    for _ in range(3):
        with log.open("w") as logf:
            agent = subprocess.Popen(_agent(cfg, cgroup_root), stdout=subprocess.DEVNULL,
                                     stderr=logf, text=True)
            try:
                _wait_for("this run's takeover", lambda: '"target_added"' in log.read_text(),
                          agent)
            finally:
                agent.kill()
                agent.wait()
        assert _high_text(cg) == str(64 * MiB)      # nothing restored by a killed agent
    with log.open("w") as logf:
        agent = subprocess.Popen(_agent(cfg, cgroup_root), stdout=subprocess.DEVNULL,
                                 stderr=logf, text=True)
        try:   # memory.high is 64 MiB already: wait until this run has taken it over
            _wait_for("the last takeover", lambda: '"target_added"' in log.read_text(), agent)
            agent.send_signal(signal.SIGTERM)
            agent.wait(timeout=120)
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
    assert agent.returncode == 0, log.read_text()
    assert _high_text(cg) == str(300 * MiB), log.read_text()
