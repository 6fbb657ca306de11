"""Run directories: ``config.json``, ``metrics.csv``, ``summary.json``, plots and a checkpoint.

Every write is atomic (a temporary file renamed over the target), so a killed run leaves
either the old or the new file, never half of one. A run checkpoints its whole state
(model, optimizers, random generators, metrics so far) and ``--resume`` continues from the
last checkpoint without losing or repeating steps.

A run claims its directory with :func:`open_run`, which never loses data: it takes the
directory's lock (``run.lock``; a second run into the same directory is refused), and it
refuses a directory that holds a finished run, a killed run's checkpoint, or anything that
is not this run's, unless ``overwrite`` (``--overwrite``) or ``resume`` (``--resume``) says
what to do with it. ``summary.json``, the mark of a finished run, is written last.

>>> import tempfile, pathlib
>>> d = RunDir(pathlib.Path(tempfile.mkdtemp()) / "run")
>>> _ = d.write_json("config.json", {"seed": 0})
>>> _ = d.write_metrics([{"step": 1, "reward": 0.5}])
>>> d.read_json("config.json"), (d.path / "metrics.csv").read_text().splitlines()
({'seed': 0}, ['step,reward', '1,0.5'])
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from ..exceptions import ConfigError, DataError
from ..runtime.atomic import atomic_path, write_atomic
from ..runtime.dirlock import DirectoryLock

__all__ = ["BOOKKEEPING_FILES", "LOCK_FILE", "RECORDED_ONLY", "RUN_FILES", "RunDir", "open_run"]

#: ``config.json`` entries that record how a run ran (not what it computes): a resumed run may differ in them.
RECORDED_ONLY = ("threads", "threads_policy")
#: The lock file of a run directory.
LOCK_FILE = "run.lock"
#: Files a run writes (glob patterns); ``--overwrite`` removes these, summary.json first.
RUN_FILES = ("summary.json", "checkpoint.pt", "snapshot-step*.pt", "metrics.csv", "learning_curve.png", "config.json",
             "events.out.tfevents.*")
#: Files that do not make a directory hold a run: the lock and a sweep's records of the run it starts there.
BOOKKEEPING_FILES = (LOCK_FILE, "sweep_run.json", "stdout.log", "stderr.log")


class RunDir:
    """A run's directory.

    Parameters
    ----------
    path : str or Path
        Created if missing.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def _atomic(self, name: str, data: bytes) -> Path:
        return write_atomic(self.path / name, data, sync=True)

    def write_json(self, name: str, data: Any) -> Path:
        return self._atomic(name, (json.dumps(data, indent=2) + "\n").encode())

    def read_json(self, name: str) -> Any:
        return json.loads((self.path / name).read_text())

    def write_metrics(self, rows: Sequence[dict], name: str = "metrics.csv") -> Path:
        buf = io.StringIO()
        if rows:
            fields = list(rows[0])
            for row in rows[1:]:
                fields += [k for k in row if k not in fields]
            writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        return self._atomic(name, buf.getvalue().encode())

    def save_checkpoint(self, state: dict, name: str = "checkpoint.pt") -> Path:
        buf = io.BytesIO()
        torch.save(state, buf)
        return self._atomic(name, buf.getvalue())

    def load_checkpoint(self, name: str = "checkpoint.pt", keys: Sequence[str] = ()) -> dict:
        """The checkpoint's state (tensors, numbers and containers only: nothing in it runs as code).

        Raises :class:`~sggraph.DataError` when it is missing, truncated, not a checkpoint or lacks ``keys``.
        """
        path = self.path / name
        if not path.exists():
            raise ConfigError(f"no checkpoint in {self.path}", file=str(path),
                              fix="start the run without --resume, or point --out at the killed run's directory")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch.load raises many kinds on a damaged file
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise DataError(f"the checkpoint cannot be read (truncated, empty or not a checkpoint): {first}",
                            file=str(path), fix="start the run again with --overwrite; the damaged checkpoint "
                                                "cannot be resumed") from None
        missing = [k for k in keys if not isinstance(state, dict) or k not in state]
        if missing:
            raise DataError(f"the checkpoint lacks {', '.join(missing)}", file=str(path),
                            fix="resume only from a checkpoint.pt written by the same `sggraph train` experiment")
        return state

    @contextlib.contextmanager
    def restoring(self, name: str = "checkpoint.pt") -> Iterator[None]:
        """Turn an error while loading a checkpoint's state into the model into a :class:`~sggraph.DataError`."""
        try:
            yield
        except (KeyError, RuntimeError, ValueError, TypeError, IndexError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise DataError(f"the checkpoint does not fit this run's model and optimizers: {first}",
                            file=str(self.path / name), fix="resume with the settings of the run that wrote it, or "
                                                            "start again with --overwrite") from None

    def has_checkpoint(self, name: str = "checkpoint.pt") -> bool:
        return (self.path / name).exists()

    def check_resume(self, config: dict, growable: str) -> None:
        """Raise unless the run has a checkpoint and its ``config.json`` equals ``config`` in every
        setting but ``growable`` (the length setting a resumed run may extend) and :data:`RECORDED_ONLY`."""
        if not self.has_checkpoint():
            raise ConfigError(f"nothing to resume in {self.path}", file=str(self.path),
                              fix="run without --resume first")
        saved = self.saved_config()
        if saved is None:
            raise DataError("config.json is missing or unreadable, so the run cannot be checked before resuming",
                            file=str(self.path / "config.json"), fix="start the run again with --overwrite")
        free = {growable, *RECORDED_ONLY}
        saved = {k: v for k, v in saved.items() if k not in free}
        mine = {k: v for k, v in json.loads(json.dumps(config)).items() if k not in free}
        if saved != mine:
            changed = sorted(k for k in saved.keys() | mine.keys() if saved.get(k) != mine.get(k))
            raise ConfigError(f"--resume with settings that differ from the run's config.json ({', '.join(changed)})",
                              file=str(self.path), fix=f"resume with the same settings (only {growable} may grow)")

    def check_length(self, done: int, length: int, growable: str, unit: str) -> None:
        """Raise unless a resumed run's ``length`` (its ``growable`` setting) reaches the ``done`` units
        its checkpoint holds: a resume never shortens a run (its records would then mix two lengths).

        >>> import tempfile
        >>> RunDir(tempfile.mkdtemp()).check_length(300, 100, "steps", "step")
        Traceback (most recent call last):
        ...
        sggraph.exceptions.ConfigError: ...: --resume with steps = 100, but the run has already done 300 steps...
        """
        if length < done:
            raise ConfigError(f"--resume with {growable} = {length}, but the run has already done {done} {unit}s "
                              f"(a resume continues a run; it cannot shorten it)", file=str(self.path),
                              fix=f"resume with --{growable} {done} or more, or start the shorter run in another "
                                  f"--out")

    def saved_config(self) -> dict | None:
        """The directory's ``config.json``, or None when it is missing or not a JSON mapping."""
        try:
            saved = self.read_json("config.json")
        except (OSError, ValueError):
            return None
        return saved if isinstance(saved, dict) else None

    def same_run(self, config: dict, growable: str) -> bool:
        """Whether the directory's ``config.json`` equals ``config`` in every setting but ``growable``
        and :data:`RECORDED_ONLY`."""
        saved = self.saved_config()
        if saved is None:
            return False
        mine = json.loads(json.dumps(config))
        free = {growable, *RECORDED_ONLY}
        return {k: v for k, v in saved.items() if k not in free} == {k: v for k, v in mine.items() if k not in free}

    def save_figure(self, fig, name: str, dpi: int = 110) -> Path:
        """Save a matplotlib figure atomically and close it."""
        import matplotlib.pyplot as plt

        target = self.path / name
        with atomic_path(target) as tmp:
            fig.savefig(tmp, dpi=dpi)
        plt.close(fig)
        return target

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"


def _run_files(path: Path) -> list[Path]:
    """The files of a previous run in ``path`` (:data:`RUN_FILES`), summary.json first."""
    found: list[Path] = []
    for pattern in RUN_FILES:
        found += sorted(p for p in path.glob(pattern) if p not in found)
    return found


def _foreign(path: Path) -> list[str]:
    """Names in ``path`` that are neither a run's files nor bookkeeping nor an unfinished atomic write."""
    ours = {p.name for p in _run_files(path)} | set(BOOKKEEPING_FILES)
    return sorted(p.name for p in path.iterdir() if p.name not in ours and not (p.name.startswith(".")
                                                                                 and ".tmp" in p.name))


def _written_by_a_run(rd: RunDir) -> bool:
    """Whether the directory's ``config.json`` is a run's record (every run writes it first, with its seed and
    the torch threads it ran with): only then are the files named like a run's that run's own."""
    saved = rd.saved_config()
    return saved is not None and {"seed", "threads"} <= saved.keys()


def _check_claim(rd: RunDir, config: dict, growable: str, resume: bool, overwrite: bool) -> None:
    """Raise unless the run may write into ``rd``; with ``overwrite``, remove the previous run's files."""
    if resume:
        rd.check_resume(config, growable)
        return
    previous, foreign = _run_files(rd.path), _foreign(rd.path)
    if not previous and not foreign:
        return
    finished, checkpoint = (rd.path / "summary.json").exists(), rd.has_checkpoint()
    if not overwrite:
        if finished:
            problem = "holds a finished run (summary.json)"
            fix = f"choose another --out, continue it to more {growable} with --resume, or replace it with --overwrite"
        elif checkpoint and rd.same_run(config, growable):
            problem = "holds a killed run of these settings with a checkpoint"
            fix = "continue it with --resume, or start it over with --overwrite"
        elif foreign or not rd.same_run(config, growable):
            names = [*foreign, *(p.name for p in previous)]
            shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
            problem = f"is not empty and does not hold an unfinished run of these settings ({shown})"
            fix = "choose another --out (an empty or new directory), or replace its run files with --overwrite"
        else:
            return  # the same run, killed before its first checkpoint: start it again
        raise ConfigError(f"the run directory {problem}", file=str(rd.path), fix=fix)
    if previous and not _written_by_a_run(rd):
        shown = ", ".join(p.name for p in previous[:8])
        raise ConfigError(f"--overwrite would delete {shown}, but no sggraph run wrote them (config.json is missing or "
                          "is not a run's record: it lacks seed and threads); --overwrite replaces only a previous "
                          "run's files", file=str(rd.path),
                          fix="choose another --out (an empty or new directory), or move these files away first")
    for path in previous:  # summary.json first: a run half-removed no longer looks finished
        path.unlink()


@contextlib.contextmanager
def open_run(out: str | Path, config: dict, *, growable: str, resume: bool = False,
             overwrite: bool = False) -> Iterator[RunDir]:
    """Claim a run directory for one run: create it if needed, lock it, check it may be written; release on exit.

    Parameters
    ----------
    out : path
        The run directory.
    config : dict
        The run's settings (what ``config.json`` will hold).
    growable : str
        The length setting a resumed run may extend (``steps``, ``batches``).
    resume : bool
        Continue the killed (or finished) run in ``out`` from its checkpoint; the directory must exist.
    overwrite : bool
        Replace the run files of whatever run ``out`` holds (other files are left alone).

    Raises
    ------
    ConfigError
        ``out`` is in use by another process, holds a finished run, a killed run's checkpoint or other files
        (without ``overwrite``), or has nothing to resume; nothing is written or created then.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "run"
    >>> with open_run(out, {"seed": 0}, growable="steps") as rd:
    ...     _ = rd.write_json("summary.json", {"done": True})
    >>> with open_run(out, {"seed": 0}, growable="steps") as rd:
    ...     pass
    Traceback (most recent call last):
    ...
    sggraph.exceptions.ConfigError: ...: the run directory holds a finished run (summary.json). Fix: ...
    """
    path = Path(out)
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite contradict each other", fix="give one of them")
    if path.exists() and not path.is_dir():
        raise ConfigError("the run directory is a file", file=str(path), fix="choose a directory for --out")
    if resume and not path.is_dir():
        raise ConfigError("nothing to resume: the run directory does not exist", file=str(path),
                          fix="point --out at the killed run's directory, or run without --resume first")
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the run directory: {exc.strerror or exc}", file=str(path),
                          fix="choose an --out in a directory you can write to") from None
    lock = DirectoryLock(path, LOCK_FILE, "run directory")
    try:
        lock.acquire()
        try:
            rd = RunDir(path)
            _check_claim(rd, config, growable, resume, overwrite)
            yield rd
        finally:
            lock.release()
    except BaseException:
        if created:  # leave no empty directory behind
            with contextlib.suppress(OSError):
                path.rmdir()
        raise
