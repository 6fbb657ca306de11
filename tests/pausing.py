"""Killing a child training process at a step it announces (see ``tests/pause_at_step/sitecustomize.py``):
deterministic, where polling the run directory raced the child."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

PAUSE_DIR = Path(__file__).resolve().parent / "pause_at_step"


def pausing_env(at_step: int, announce: Path) -> dict[str, str]:
    """The environment of a child whose bandit run stops before its step ``at_step`` and writes ``announce``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PAUSE_DIR), env.get("PYTHONPATH")]))
    env["SGGRAPH_PAUSE_AT"], env["SGGRAPH_PAUSE_FILE"] = str(at_step), str(announce)
    return env


def kill_when_announced(proc: subprocess.Popen, announce: Path, timeout: float = 300) -> None:
    """Wait for the child's announcement (it then waits, blocked), and SIGKILL ``proc``."""
    deadline = time.monotonic() + timeout
    while not announce.exists():
        assert proc.poll() is None, "the child ended before it reached the step"
        assert time.monotonic() < deadline, "the child never reached the step"
        time.sleep(0.05)  # the child waits at the step: how long this takes changes nothing
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
