"""Planning and running a sweep: which runs are new, finished or killed, and running them on a
local process pool or a Ray cluster, each as ``python -m sggraph COMMAND ... --out OUT/NAME``.

The sweep's status is written after each run to ``OUT/sweep.json`` and ``OUT/runs.csv``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..exceptions import ConfigError
from ..runtime.atomic import write_atomic
from ..runtime.dirlock import DirectoryLock
from ..runtime.progress import Progress
from ..runtime.threads import available_cpus
from .spec import RUN_FILE, SweepSpec, format_value

__all__ = ["SWEEP_LOCK", "RunPlan", "die_with_parent", "execute_run", "plan_runs", "run_sweep"]

#: The lock file of a sweep directory: one sweep at a time runs in it.
SWEEP_LOCK = "sweep.lock"


# ---------------------------------------------------------------------------------------------
# planning and running


@dataclass
class RunPlan:
    """What the sweep does with one cell: ``skip`` (finished), ``resume`` (killed) or ``new``."""

    name: str
    run_dir: Path
    argv: list[str]
    settings: dict[str, Any]
    grid: dict[str, Any]
    action: str

    def record(self, command: Sequence[str]) -> dict[str, Any]:
        """The content of the run's ``sweep_run.json``."""
        return {"name": self.name, "command": list(command), "settings": self.settings, "grid": self.grid}


def plan_runs(spec: SweepSpec, out: str | Path) -> list[RunPlan]:
    """The sweep's runs and what to do with each, checking earlier runs were made with the same settings.

    Raises
    ------
    ConfigError
        A run directory holds a run made with other settings.
    """
    out = Path(out).resolve()
    plans = []
    for cell in spec.cells():
        run_dir = out / cell.name
        settings = spec.run_settings(cell)
        previous = run_dir / RUN_FILE
        if previous.exists():
            try:
                old = json.loads(previous.read_text())
            except (OSError, ValueError):
                old = None
            old_cmp = None if old is None else {"command": old.get("command"), "settings": old.get("settings")}
            new_cmp = json.loads(json.dumps({"command": spec.command, "settings": settings}))
            if old_cmp != new_cmp:
                diff = _describe_difference(old_cmp, new_cmp)
                raise ConfigError(f"run directory {run_dir} holds a run made with other settings ({diff})",
                                  fix="give the sweep another --out, or delete that run directory to redo it")
        if (run_dir / "summary.json").exists():
            action = "skip"
        elif spec.resumable and (run_dir / "checkpoint.pt").exists():
            action = "resume"
        else:
            action = "new"
        argv = spec.argv(cell) + ["--out", str(run_dir)] + (["--resume"] if action == "resume" else [])
        plans.append(RunPlan(cell.name, run_dir, argv, settings, dict(cell.settings), action))
    return plans


def _describe_difference(old: dict | None, new: dict) -> str:
    if old is None:
        return f"its {RUN_FILE} is unreadable"
    if old.get("command") != new["command"]:
        return f"command {' '.join(old.get('command') or [])!r} → {' '.join(new['command'])!r}"
    a, b = old.get("settings") or {}, new["settings"]
    parts = [f"{k}: {a.get(k, '(default)')} → {b.get(k, '(default)')}" for k in sorted(set(a) | set(b))
             if a.get(k) != b.get(k)]
    return ", ".join(parts)


def die_with_parent(parent_pid: int | None = None) -> None:
    """Ask Linux to kill this process when its parent dies (a killed sweep takes its runs along).

    Does nothing where ``prctl`` is unavailable. If the parent is already gone, exits at once.
    """
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(137)


def _tail(path: Path, start: int, lines: int = 8, chars: int = 1500) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(start)
            text = fh.read().decode(errors="replace")
    except OSError:
        return ""
    text = "\n".join(ln for ln in text.replace("\r", "\n").splitlines() if ln.strip())
    return "\n".join(text.splitlines()[-lines:])[-chars:]


def execute_run(argv: Sequence[str], run_dir: str, env: Mapping[str, str] | None = None,
                cwd: str | None = None) -> dict[str, Any]:
    """Run ``python -m sggraph ARGV`` for one run directory; the same function runs in the local pool and in Ray.

    Appends the run's output to ``stdout.log`` / ``stderr.log`` in the run directory and
    kills the run if this process dies. The run itself locks its directory (``run.lock``),
    and the sweep holds its whole directory (``sweep.lock``), so no two processes write one run.

    Returns
    -------
    dict
        ``returncode``, ``seconds``, ``error`` (the last lines of stderr when it failed) and ``host``.
    """
    import socket

    path = Path(run_dir)
    t0 = time.perf_counter()
    try:
        path.mkdir(parents=True, exist_ok=True)
        return _execute(argv, path, env, cwd, t0)
    except OSError as exc:  # the run's logs cannot be written (a full disk, a quota): a located error, not a traceback
        where = exc.filename or path
        return {"returncode": None, "seconds": round(time.perf_counter() - t0, 2), "host": socket.gethostname(),
                "error": f"sggraph: error: {where}: cannot write the run's logs: {exc.strerror or exc}. "
                         "Fix: free disk space (or raise the quota) and run the sweep again; it resumes "
                         "where it stopped."}


def _execute(argv: Sequence[str], path: Path, env: Mapping[str, str] | None, cwd: str | None,
             t0: float) -> dict[str, Any]:
    """:func:`execute_run` in its existing run directory ``path`` (an OSError: the logs cannot be written)."""
    import socket
    import subprocess

    child_env = dict(os.environ)
    child_env.update(env or {})
    child_env["SGGRAPH_PARENT_PID"] = str(os.getpid())
    stderr_path = path / "stderr.log"
    start = stderr_path.stat().st_size if stderr_path.exists() else 0
    header = f"=== sggraph sweep {time.strftime('%Y-%m-%d %H:%M:%S')}: sggraph {' '.join(argv)}\n"
    with open(path / "stdout.log", "a") as out, open(stderr_path, "a") as err:
        out.write(header)
        out.flush()
        err.write(header)
        err.flush()
        start += len(header.encode())
        proc = subprocess.run([sys.executable, "-m", "sggraph", *argv], check=False, stdout=out, stderr=err,
                              stdin=subprocess.DEVNULL, env=child_env,
                              cwd=cwd if cwd and os.path.isdir(cwd) else None)
    error = ""
    if proc.returncode != 0:
        error = _tail(stderr_path, start) or f"exit code {proc.returncode} and nothing on stderr"
    elif not (path / "summary.json").exists():
        error = "the command exited 0 but wrote no summary.json"
    return {"returncode": proc.returncode, "seconds": round(time.perf_counter() - t0, 2),
            "host": socket.gethostname(), "error": error}


def _pool_init(parent_pid: int) -> None:
    die_with_parent(parent_pid)


def _run_local(plans: Sequence[RunPlan], workers: int, env: Mapping[str, str],
               done: Callable[[RunPlan, dict], None]) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    ctx = multiprocessing.get_context("spawn")  # the sweep process has torch loaded: never fork it
    cwd = os.getcwd()
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_pool_init,
                             initargs=(os.getpid(),)) as pool:
        futures = {pool.submit(execute_run, p.argv, str(p.run_dir), dict(env), cwd): p for p in plans}
        try:
            for future in as_completed(futures):
                plan = futures[future]
                try:
                    result = future.result()
                except Exception as exc:  # noqa: BLE001 - a pool worker died: report it as this run's failure
                    result = {"returncode": None, "seconds": None, "error": f"{type(exc).__name__}: {exc}"}
                done(plan, result)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _import_ray(address: str | None):
    if not address:  # a Ray of our own: listen on the loopback interface only
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise ConfigError("--backend ray needs the `ray` package, which is not installed",
                          fix='install it with `pip install -e ".[ray]"` (or `pip install "ray>=2.9"`)') from None
    return ray


def _run_ray(plans: Sequence[RunPlan], workers: int, threads: int, address: str | None,
             env: Mapping[str, str], done: Callable[[RunPlan, dict], None]) -> None:
    import logging

    ray = _import_ray(address)
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING,
                              "log_to_driver": False}
    if address:
        kwargs["address"] = address
    else:
        kwargs["num_cpus"] = workers * threads
    try:
        ray.init(**kwargs)
    except Exception as exc:  # noqa: BLE001 - Ray raises many kinds here (connection, address, version)
        raise ConfigError(f"cannot start or reach Ray{f' at {address}' if address else ''}: {exc}",
                          fix="check --address (e.g. ray://HOST:10001 or HOST:6379) and that the cluster is up") \
            from None
    try:
        task = ray.remote(num_cpus=threads, max_retries=0)(execute_run)
        cwd = os.getcwd()
        refs = {task.remote(p.argv, str(p.run_dir), dict(env), cwd): p for p in plans}
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                try:
                    result = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - the task or its worker died: report it as this run's failure
                    result = {"returncode": None, "seconds": None, "error": f"{type(exc).__name__}: {exc}"}
                done(refs[ref], result)
    finally:
        ray.shutdown()


def _write_status(out: Path, meta: dict, records: Sequence[dict]) -> None:
    write_atomic(out / "sweep.json", json.dumps({**meta, "runs": list(records)}, indent=2) + "\n")
    keys: list[str] = []
    for r in records:
        keys += [k for k in r["settings"] if k not in keys]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["name", "status", "action", "returncode", "seconds", "error", *keys])
    for r in records:
        writer.writerow([r["name"], r["status"], r["action"], r["returncode"], r["seconds"],
                         (r["error"] or "").replace("\n", " | "),
                         *(format_value(r["settings"][k]) if k in r["settings"] else "" for k in keys)])
    write_atomic(out / "runs.csv", buf.getvalue())


def run_sweep(spec: SweepSpec, out: str | Path, *, backend: str = "local", workers: int | None = None,
              address: str | None = None, threads: int | None = None,
              log: Callable[[str], None] = print, progress: bool = False) -> list[dict]:
    """Run every unfinished run of a sweep; returns one record per run (``status``: finished or failed).

    Parameters
    ----------
    spec : SweepSpec
    out : path
        The sweep directory (run directories, ``sweep.json``, ``runs.csv``, a copy of the spec).
    backend : {"local", "ray"}
    workers : int, optional
        Runs at once (local, and a local Ray's CPUs); default the CPUs available to this process
        (:func:`sggraph.runtime.threads.available_cpus`: affinity and cgroup quota).
    address : str, optional
        A Ray cluster to submit to (default: start a local Ray).
    threads : int, optional
        Torch threads per run (``OMP_NUM_THREADS``, which each run's ``--threads`` default follows);
        default ``available CPUs // workers`` (at least 1), or 1 on a Ray cluster. Each Ray task asks
        for this many CPUs.
    log : callable
        Progress lines.
    progress : bool
        A progress bar over the runs on stderr (:class:`~sggraph.runtime.progress.Progress`).
    """
    if backend not in ("local", "ray"):
        raise ConfigError(f"unknown backend '{backend}'", fix="use --backend local or --backend ray")
    cores = available_cpus()
    workers = workers or cores
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1 (got {workers})", fix="pass --workers 1 or more")
    if threads is None:
        threads = 1 if (backend == "ray" and address) else max(1, cores // workers)
    if threads < 1:
        raise ConfigError(f"--threads must be at least 1 (got {threads})", fix="pass --threads 1 or more")
    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise ConfigError("the sweep directory is a file", file=str(out), fix="choose a directory for --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the sweep directory: {exc.strerror or exc}", file=str(out),
                          fix="choose an --out in a directory you can write to") from None
    with DirectoryLock(out, SWEEP_LOCK, "sweep directory"):  # one sweep at a time in a directory
        return _run_locked(spec, out, backend, workers, address, threads, log, progress)


def _run_locked(spec: SweepSpec, out: Path, backend: str, workers: int, address: str | None, threads: int,
                log: Callable[[str], None], progress: bool) -> list[dict]:
    plans = plan_runs(spec, out)
    if spec.file:
        write_atomic(out / "spec.yaml", Path(spec.file).read_text())
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    records = {p.name: {"name": p.name, "settings": p.grid, "action": p.action,
                        "status": "finished" if p.action == "skip" else "pending",
                        "returncode": None, "seconds": None, "error": ""} for p in plans}
    order = [p.name for p in plans]
    meta = {"name": spec.name, "command": spec.command, "spec": spec.file, "backend": backend,
            "address": address, "workers": workers, "threads": threads,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "finished": None, "seconds": None}
    todo = [p for p in plans if p.action != "skip"]
    for plan in todo:
        plan.run_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(plan.run_dir / RUN_FILE, json.dumps(plan.record(spec.command), indent=2) + "\n")
    skipped = len(plans) - len(todo)
    resumed = sum(p.action == "resume" for p in todo)
    bar = Progress(len(todo), f"sweep {spec.name}", unit="run", quiet=not progress)

    def say(text: str) -> None:
        with bar.paused():
            log(text)

    say(f"sweep '{spec.name}': {len(plans)} runs in {out} — {skipped} finished before, {resumed} to resume, "
        f"{len(todo) - resumed} to start; backend {backend}"
        f"{f' at {address}' if address else ''}, {workers} workers × {threads} threads")
    _write_status(out, meta, [records[n] for n in order])
    t0 = time.perf_counter()
    count = [0]

    def done(plan: RunPlan, result: dict) -> None:
        rec = records[plan.name]
        rec.update(returncode=result.get("returncode"), seconds=result.get("seconds"),
                   error=result.get("error") or "", host=result.get("host"))
        rec["status"] = "failed" if rec["error"] else "finished"
        count[0] += 1
        what = "resumed and finished" if plan.action == "resume" else "finished"
        if rec["status"] == "failed":
            last = rec["error"].splitlines()[-1] if rec["error"] else ""
            say(f"[{count[0]}/{len(todo)}] FAILED {plan.name} (exit {rec['returncode']}): {last}")
        else:
            say(f"[{count[0]}/{len(todo)}] {what} {plan.name} ({rec['seconds']:.1f} s)")
        _write_status(out, meta, [records[n] for n in order])
        failures = sum(records[p.name]["status"] == "failed" for p in todo)
        bar.update(1, line=True, finished=count[0] - failures, failed=failures)

    try:
        if todo:
            if backend == "local":
                _run_local(todo, workers, env, done)
            else:
                _run_ray(todo, workers, threads, address, env, done)
    finally:
        bar.close()
        meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        meta["seconds"] = round(time.perf_counter() - t0, 2)
        _write_status(out, meta, [records[n] for n in order])
    result = [records[n] for n in order]
    failed = [r for r in result if r["status"] != "finished"]
    log(f"sweep '{spec.name}': {len(result) - len(failed)} of {len(result)} runs finished "
        f"({skipped} skipped as finished before), {len(failed)} failed, {meta['seconds']:.1f} s")
    for r in failed:
        log(f"  FAILED {r['name']} (exit {r['returncode']}), log {out / r['name'] / 'stderr.log'}:")
        for line in (r["error"] or "(no error text)").splitlines():
            log(f"      {line}")
    return result
