"""``sggraph bench --contention``: the bandit step's time alone, beside one busy process and as two
runs side by side, at 1 thread, 2 threads and the default thread count (fresh worker processes).
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

import torch

from ..exceptions import ConfigError, SggraphError
from .bench import _bandit_step_timer
from .timing import median_ms as _median_ms
from .timing import nothing as _nothing
from .timing import run_rounds as _run_rounds

__all__ = ["CONTENTION_SETTINGS", "CONTENTION_VARIANTS", "contention_worker", "run_contention"]


CONTENTION_VARIANTS = ("backprop", "sgprop_adaptive")

#: The thread settings it compares: name → the worker's thread arguments ("default": none, as a run starts).
from .contention_settings import CONTENTION_SETTINGS  # noqa: E402  (torch-free: the command line names them)

#: The competing busy process: one CPU-bound Python loop.
BUSY_LOOP = "while True: pass"

#: Seconds to wait for a worker's next line before giving up on it.
WORKER_TIMEOUT = 900.0


def _say(stream: IO[str], line: str) -> None:
    stream.write(line + "\n")
    stream.flush()


def _stop_requested(stream: IO[str]) -> bool:
    """Whether ``stream`` has input or has closed (a worker's signal to stop)."""
    return bool(select.select([stream], [], [], 0)[0])


def contention_worker(stdin: IO[str], stdout: IO[str], steps: int = 10, warmup: int = 8, batch: int = 64,
                      seed: int = 0, tick: Callable[[], object] = _nothing) -> None:
    """One measurement process of :func:`run_contention` (``sggraph bench --contention-worker``).

    It warms up the :data:`CONTENTION_VARIANTS` bandit steps for ``warmup`` rounds, writes ``ready`` on
    ``stdout``, waits for a line on ``stdin`` (the start; end of input: stop), times ``steps``
    interleaved rounds and writes one JSON line (``{variant}_ms`` medians, and ``threads``: the timed
    steps per torch thread count), then keeps training, so that it still loads the machine while others
    finish, until ``stdin`` has input or closes. ``tick`` runs after every round of the variants, as a
    training loop calls :func:`~sggraph.runtime.threads.follow_load` between its steps (the CLI passes that).
    """
    timers = {v: _bandit_step_timer(v, batch, seed) for v in CONTENTION_VARIANTS}
    used: dict[str, int] = {}
    calls = [0]

    def after_step() -> None:  # count the thread count the step ran with; tick once per round
        used[str(torch.get_num_threads())] = used.get(str(torch.get_num_threads()), 0) + 1
        calls[0] += 1
        if calls[0] % len(timers) == 0:
            tick()

    _run_rounds(timers, warmup, after_step)
    _say(stdout, "ready")
    if not stdin.readline():
        return
    used.clear()
    medians = _median_ms(timers, steps, 0, after_step)
    result = {f"{v}_ms": round(ms, 2) for v, ms in medians.items()}
    _say(stdout, json.dumps({**result, "threads": dict(sorted(used.items()))}))
    while not _stop_requested(stdin):
        _run_rounds(timers, 1, after_step)


def _worker_env() -> dict[str, str]:
    """The environment of a worker: this one, with this sggraph first on the import path."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


def _start_worker(args: Sequence[str], steps: int, batch: int, stderr: IO) -> subprocess.Popen:
    command = [sys.executable, "-m", "sggraph", "bench", "--contention-worker", "--quiet", "--steps", str(steps),
               "--batch", str(batch), *args]
    return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True,
                            env=_worker_env())


def _read_line(proc: subprocess.Popen, stderr: IO) -> str:
    """The next line a worker writes; raises :class:`~sggraph.SggraphError` if it exits or stalls."""
    ready, _, _ = select.select([proc.stdout], [], [], WORKER_TIMEOUT)
    line = proc.stdout.readline() if ready else ""
    if line:
        return line.strip()
    proc.kill()
    stderr.seek(0)
    tail = stderr.read()[-2000:].strip()
    raise SggraphError(f"a contention-bench worker stopped answering (exit code {proc.wait()}): {tail or 'no output'}",
                       fix="run `sggraph bench --contention-worker` by hand to see the error")


def _measure(worker_args: Sequence[Sequence[str]], steps: int, batch: int, busy: bool = False) -> list[dict]:
    """Start one worker per entry of ``worker_args`` (its thread arguments) and, with ``busy``, a
    :data:`BUSY_LOOP` process; start their timing together; return each worker's result."""
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryFile("w+") as stderr:
        try:
            if busy:
                procs.append(subprocess.Popen([sys.executable, "-c", BUSY_LOOP]))
            workers = [_start_worker(args, steps, batch, stderr) for args in worker_args]
            procs += workers
            for w in workers:
                _read_line(w, stderr)  # "ready"
            for w in workers:
                _say(w.stdin, "go")
            results = [json.loads(_read_line(w, stderr)) for w in workers]
            for w in workers:
                w.stdin.close()  # stop
            for w in workers:
                w.wait(WORKER_TIMEOUT)
            return results
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()


def _ratios(results: Sequence[dict], alone: dict) -> dict[str, float]:
    """Per variant, the slowest of ``results`` over the time ``alone``."""
    return {v: round(max(r[f"{v}_ms"] for r in results) / alone[f"{v}_ms"], 2) for v in CONTENTION_VARIANTS}


def run_contention(steps: int = 10, settings: Sequence[str] = tuple(CONTENTION_SETTINGS), batch: int = 64,
                   progress: bool = False) -> dict:
    """The bandit step (:data:`CONTENTION_VARIANTS`) under each thread setting of :data:`CONTENTION_SETTINGS`
    named in ``settings``: alone, beside one busy process, and two runs side by side (both measured).

    Returns ``{"cpus", "loadavg", "steps", "settings": {name: {"alone", "busy", "side_by_side",
    "busy_over_alone", "side_by_side_over_alone"}}}``: ``alone`` and ``busy`` are one worker's result
    (``{variant}_ms`` medians over ``steps`` steps, ``threads``), ``side_by_side`` the two workers'
    results, and the ratios per variant (side by side: the slower run's).

    Raises
    ------
    ConfigError
        A name in ``settings`` is not one of :data:`CONTENTION_SETTINGS`, or ``steps`` is below 1.
    """
    from ..runtime.progress import Progress
    from ..runtime.threads import available_cpus

    unknown = [s for s in settings if s not in CONTENTION_SETTINGS]
    if unknown or not settings:
        raise ConfigError(f"unknown contention settings {unknown or list(settings)}",
                          fix=f"name some of {', '.join(CONTENTION_SETTINGS)}")
    if steps < 1:
        raise ConfigError(f"--steps must be at least 1 (got {steps})", fix="pass --steps 1 or more")
    out: dict = {"cpus": available_cpus(), "loadavg": [round(x, 2) for x in os.getloadavg()], "steps": steps,
                 "settings": {}}
    with Progress(3 * len(settings), "bench --contention", unit="case", quiet=not progress) as bar:
        for name in settings:
            args = CONTENTION_SETTINGS[name]
            row = {"alone": _measure([args], steps, batch)[0]}
            bar.update()
            row["busy"] = _measure([args], steps, batch, busy=True)[0]
            bar.update()
            row["side_by_side"] = _measure([args, args], steps, batch)
            bar.update()
            row["busy_over_alone"] = _ratios([row["busy"]], row["alone"])
            row["side_by_side_over_alone"] = _ratios(row["side_by_side"], row["alone"])
            out["settings"][name] = row
    return out
