"""A fork server for `headroom agent`: started once (subprocess, fds closed), it imports
the agent and then forks one child per start request, so that a restart in the QEMU
guest costs no interpreter start-up and no imports (a minute of TCG for the cluster
agent's imports). It is single-threaded by construction -- it never starts a thread --
and checks that before every fork (a fork from a threaded process can leave a child
stuck on a lock another thread held); the test process (pytest) never forks.

Protocol: one JSON object per line on stdin, one JSON reply per line on stdout.

    {"op": "start", "argv": [...], "log": PATH, "env": {...}}  -> {"pid": N}
    {"op": "poll", "pid": N}                                   -> {"exit": CODE|null}
    {"op": "kill", "pid": N}                                   -> {"exit": CODE}
    {"op": "term", "pid": N, "timeout": S}                     -> {"exit": CODE|null}

`exit` is os.waitstatus_to_exitcode (-9: SIGKILL); null: still running. The server
reaps its own children (only it can). A child's stdout and stderr go to its log, stdin
is /dev/null, every other descriptor is closed; SIGUSR1 makes it write every thread's
Python stack into its log (faulthandler), which the test asks for when a child writes
no log line; the child dies with the server (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import faulthandler
import json
import os
import signal
import sys
import threading
import time
from typing import Any

PR_SET_PDEATHSIG = 1


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _child(argv: list[str], log: str, env: dict[str, str]) -> None:
    """In the forked child: never returns."""
    rc = 70
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.closerange(3, 1 << 16)        # the server's pipes and the rest
        sys.stdin = open(0, closefd=False)   # noqa: SIM115
        sys.stdout = open(1, "w", buffering=1, closefd=False)   # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)   # noqa: SIM115
        faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGPIPE):
            signal.signal(s, signal.SIG_DFL)
        os.environ.update(env)
        print(f"forkserver child {os.getpid()}: threads={_threads()}", flush=True)
        from headroom.cli import main

        rc = main(argv)
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 70
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        os._exit(rc if isinstance(rc, int) else 70)


def _reap(pid: int, block: bool) -> int | None:
    done, status = os.waitpid(pid, 0 if block else os.WNOHANG)
    return os.waitstatus_to_exitcode(status) if done else None


def handle(req: dict[str, Any]) -> dict[str, Any]:
    op = req["op"]
    if op == "start":
        threads = _threads()
        if threads != 1 or threading.active_count() != 1:
            return {"error": f"the fork server has {threads} threads: refusing to fork"}
        pid = os.fork()
        if pid == 0:
            _child(req["argv"], req["log"], req.get("env") or {})
        return {"pid": pid}
    pid = int(req["pid"])
    try:
        if op == "poll":
            return {"exit": _reap(pid, block=False)}
        if op == "kill":
            os.kill(pid, signal.SIGKILL)
            return {"exit": _reap(pid, block=True)}
        if op == "term":
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + float(req.get("timeout", 60))
            while time.monotonic() < deadline:
                code = _reap(pid, block=False)
                if code is not None:
                    return {"exit": code}
                time.sleep(0.05)
            return {"exit": None}
    except ChildProcessError:
        return {"error": f"{pid} is not a child of the fork server"}
    return {"error": f"unknown op {op!r}"}


def main() -> int:
    # Everything an agent start imports, here and once.
    import headroom.cli
    import headroom.controller.cli
    import headroom.nodeagent.agent
    import headroom.standalone.run  # noqa: F401
    import kubernetes.client
    import kubernetes.config

    # kubernetes.client imports its API classes on first use (module __getattr__), and
    # CoreV1Api is a huge pydantic module: 11 s on a loaded host, many minutes under
    # TCG. Unresolved here, every forked agent imported them anew and wrote no log line
    # for that long (the "hang" of earlier runs, seen with faulthandler).
    for name in ("ApiClient", "Configuration", "CoreV1Api", "CustomObjectsApi"):
        getattr(kubernetes.client, name)

    out = sys.stdout
    out.write(json.dumps({"ready": os.getpid(), "threads": _threads()}) + "\n")
    out.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            reply = handle(json.loads(line))
        except Exception as e:   # a bad request must not end the server
            reply = {"error": repr(e)}
        out.write(json.dumps(reply) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
