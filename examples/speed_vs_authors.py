"""Our MNIST-bandit training step against the authors' own code, timed side by side as whole processes.

Four variants, each a whole training process in the paper's Table 1 configuration (residual
SparseNet of 5 arrays × 200 neurons, q = 10, 5 slots, 5 parents, batch 64, the 9 digits without 2,
p_flip 0.4, CPU):

* ``authors-backprop`` and ``authors-sgprop``: the authors' ``exp-mnist-bandit/main.py``, unmodified,
  run from the folder given on the command line with the arguments of their ``run_sweeps.sh``
  (``--residual --reuse_policy_batch_for_sg --no_update_shared_keys_in_sg_phase``, one generator step
  per policy step; sgprop with adaptive θ: θ₀ = 0.9, momentum 0.9). Their ``torchvision`` MNIST loader
  is replaced by one serving this project's 10,000 embedded digits (8,000 train / 2,000 test), so
  nothing is downloaded;
* ``ours-backprop`` and ``ours-sgprop``: ``python -m sggraph train mnist-bandit --method backprop|sgprop``
  with its defaults (sgprop: adaptive λ, generator-first order, as trained).

Every variant runs for ``S1`` and for ``S2`` steps; the time of one step is
``(wall(S2) − wall(S1)) / (S2 − S1)``, which removes what both lengths share: interpreter and torch
start-up, data loading, model construction and the 20 evaluations (both programs evaluate 20 times
for any length ≥ 20; ours is given ``--checkpoint-every S2``, so each of our runs saves one
checkpoint, at its end). The evaluations are of ``--eval-batch`` images, by default 64 instead of
the paper's 4,000: they cancel in the difference anyway, and 20 evaluations of 4,000 images take
longer than the training steps timed and would only add their noise. Both programs run with
``OMP_NUM_THREADS`` and ``torch.set_num_threads`` set to ``--threads``. Variants are interleaved
(ABCD ABCD …, the two lengths of a variant back to back, their order alternating between repeats)
and the medians over repeats are reported.

    python examples/speed_vs_authors.py PATH/TO/sgprop/exp-mnist-bandit --threads 2 \\
        --steps-short 20 --steps-long 220 --repeats 3 [--json]

On 2 CPUs that is about 2.5 minutes per repeat (the authors' sgprop pair alone about one); start-up
varies by ±0.5 s between processes, so ``S2 − S1`` should be a few hundred steps.

Before the first timed process, one untimed process imports what both programs import (so the
first is not the one that reads it from disk); the run folders go to ``/dev/shm`` where it exists
(our runs ``fsync`` their files). ``--methods backprop`` (or ``sgprop``) times one method's pair
only, for measurement windows too short for all four. With ``--json``, every run's wall and CPU
time are printed too.

``--authors-allocator ours`` runs the authors' processes with the glibc malloc thresholds that the
``sggraph`` command sets at its start (:func:`sggraph.cli.tune_allocator`): how much of the
difference is that setting rather than the code.

The authors' code is read from the path given and never copied into this project. Exit status 2:
the path is not the authors' ``exp-mnist-bandit`` folder (or another usage error).
``--combine A.json B.json …`` prints the table of several earlier ``--json`` outputs of the same
measurement (threads, lengths, evaluation size, allocator) taken together, for measurements split
over several windows.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

#: This checkout: its ``sggraph`` is the one timed (prepended to the children's ``PYTHONPATH``).
REPO_ROOT = Path(__file__).resolve().parent.parent
#: Files that make a folder the authors' ``exp-mnist-bandit``.
AUTHORS_FILES = ("main.py", "trainers.py", "models.py")
#: Evaluations per run: the authors' ``build_eval_steps(train_steps, num_evals=20)`` and our default.
EVALUATIONS = 20
#: The first argument that makes this script the authors' process instead of the measurement.
CHILD_FLAG = "--authors-child"
#: Table 1 / the authors' ``run_sweeps.sh``: SparseNet size and data.
CLASSES = ("0", "1", "3", "4", "5", "6", "7", "8", "9")
#: Policy learning rates of the authors' sweep (their BASE_SPARSE_*_LR); the same are our defaults.
POLICY_LR = {"backprop": "0.001", "sgprop": "0.005"}
METHODS = ("backprop", "sgprop")
#: What the two programs import (read from disk once, untimed, before the first timed process).
WARM_IMPORTS = ("import numpy, torch, tqdm, matplotlib.pyplot, torch.utils.tensorboard, sggraph.cli, "
                "sggraph.experiments.mnist_bandit, sggraph.envs.mnist")
CODES = ("authors", "ours")
#: glibc malloc settings of the authors' processes: theirs as shipped, or those the ``sggraph`` command sets.
ALLOCATORS = ("default", "ours")


class UsageError(Exception):
    """A command-line problem: the message is printed and the script exits with status 2."""


@dataclass(frozen=True)
class Variant:
    """One of the four timed programs."""

    code: str  #: "authors" or "ours"
    method: str  #: "backprop" or "sgprop" (adaptive λ / θ)

    @property
    def name(self) -> str:
        return f"{self.code}-{self.method}"


#: The measurement order within a repeat (ABCD).
VARIANTS = tuple(Variant(code, method) for code in CODES for method in METHODS)


@dataclass(frozen=True)
class SpeedConfig:
    """What to measure: where the authors' code is, at how many threads, which lengths, how often."""

    authors_dir: Path
    threads: int = 2
    steps_short: int = 20
    steps_long: int = 220
    repeats: int = 3
    eval_batch: int = 64  #: images per evaluation (both programs; cancels in the difference)
    methods: tuple[str, ...] = METHODS  #: which methods to time (authors' and ours for each)
    authors_allocator: str = "default"  #: "ours": the authors' processes get our glibc malloc settings too

    @property
    def variants(self) -> tuple[Variant, ...]:
        """The variants timed, in :data:`VARIANTS` order."""
        return tuple(v for v in VARIANTS if v.method in self.methods)

    def validate(self) -> None:
        """Raise :class:`UsageError` for a setting that cannot give a fair measurement."""
        check_authors_dir(self.authors_dir)
        if self.threads < 1:
            raise UsageError(f"--threads {self.threads}: need at least 1")
        if self.repeats < 1:
            raise UsageError(f"--repeats {self.repeats}: need at least 1")
        if self.eval_batch < 1:
            raise UsageError(f"--eval-batch {self.eval_batch}: need at least 1")
        if self.authors_allocator not in ALLOCATORS:
            raise UsageError(f"--authors-allocator {self.authors_allocator}: choose from {', '.join(ALLOCATORS)}")
        if not self.methods or not set(self.methods) <= set(METHODS):
            raise UsageError(f"--methods {' '.join(self.methods)}: choose from {', '.join(METHODS)}")
        check_lengths(self.steps_short, self.steps_long)


@dataclass(frozen=True)
class Run:
    """One finished process: which variant, which repeat, how many steps, its wall and CPU time in seconds.

    The CPU time (user + system, all its threads) is a diagnostic: when a repeat's wall time is far above
    the others' for about the same CPU time, the process waited (for the disk, or for CPUs that other
    processes held)."""

    variant: str
    repeat: int
    steps: int
    wall_s: float
    cpu_s: float = float("nan")


def check_authors_dir(path: Path) -> None:
    """Raise :class:`UsageError` unless ``path`` is a folder holding the authors' bandit files.

    >>> try:
    ...     check_authors_dir(Path("/nonexistent"))
    ... except UsageError as err:
    ...     print(err)
    /nonexistent is not a folder; give the authors' exp-mnist-bandit folder (from github.com/jackyzyb/sgprop)
    """
    hint = "give the authors' exp-mnist-bandit folder (from github.com/jackyzyb/sgprop)"
    if not path.is_dir():
        raise UsageError(f"{path} is not a folder; {hint}")
    missing = [name for name in AUTHORS_FILES if not (path / name).is_file()]
    if missing:
        raise UsageError(f"{path} has no {', '.join(missing)}; {hint}")


def evaluation_count(steps: int, evaluations: int = EVALUATIONS) -> int:
    """How many distinct steps the authors' (and our) evaluation schedule holds for a run of ``steps``.

    ``numpy.linspace(1, steps, evaluations, dtype=int)`` as a set: fewer than ``evaluations`` when
    ``steps < evaluations`` (repeated steps collapse).

    >>> evaluation_count(1500), evaluation_count(20), evaluation_count(10)
    (20, 20, 10)
    """
    import numpy as np

    return len({int(v) for v in np.linspace(1, steps, num=evaluations, dtype=int)})


def check_lengths(steps_short: int, steps_long: int) -> None:
    """Raise :class:`UsageError` unless both lengths evaluate equally often and the long one is longer.

    >>> check_lengths(20, 80)
    >>> try:
    ...     check_lengths(10, 80)
    ... except UsageError as err:
    ...     print(err)  # doctest: +ELLIPSIS
    --steps-short 10 evaluates 10 times, --steps-long 80 20 times: both must be at least 20 so the evaluations ...
    """
    if steps_long <= steps_short:
        raise UsageError(f"--steps-long {steps_long} must be larger than --steps-short {steps_short}")
    short, long = evaluation_count(steps_short), evaluation_count(steps_long)
    if short != long:
        raise UsageError(f"--steps-short {steps_short} evaluates {short} times, --steps-long {steps_long} {long} "
                         f"times: both must be at least {EVALUATIONS} so the evaluations cancel in the difference")


def per_step_seconds(wall_short: float, wall_long: float, steps_short: int, steps_long: int) -> float:
    """The time of one training step from two whole-process wall times: ``(wall_long − wall_short) / (S2 − S1)``.

    >>> per_step_seconds(10.0, 16.0, 20, 80)
    0.1
    """
    if steps_long <= steps_short:
        raise ValueError(f"steps_long ({steps_long}) must exceed steps_short ({steps_short})")
    return (wall_long - wall_short) / (steps_long - steps_short)


def schedule(repeats: int, steps_short: int, steps_long: int,
             variants: Sequence[Variant] = VARIANTS) -> list[tuple[int, Variant, int]]:
    """The order of the processes: ``(repeat, variant, steps)``.

    Variants interleave (ABCD ABCD …); a variant's two lengths run back to back, the short one
    first in even repeats and last in odd ones, so a slow drift of the machine's speed does not
    push every difference the same way.

    >>> [(r, v.name, s) for r, v, s in schedule(2, 20, 80, VARIANTS[:2])]  # doctest: +NORMALIZE_WHITESPACE
    [(0, 'authors-backprop', 20), (0, 'authors-backprop', 80), (0, 'authors-sgprop', 20), (0, 'authors-sgprop', 80),
     (1, 'authors-backprop', 80), (1, 'authors-backprop', 20), (1, 'authors-sgprop', 80), (1, 'authors-sgprop', 20)]
    """
    order = []
    for repeat in range(repeats):
        lengths = (steps_short, steps_long) if repeat % 2 == 0 else (steps_long, steps_short)
        order += [(repeat, variant, steps) for variant in variants for steps in lengths]
    return order


def thread_env(threads: int, base: dict[str, str] | None = None) -> dict[str, str]:
    """The children's environment: ``base`` (default ``os.environ``) with the thread count set for OpenMP and
    MKL, and this checkout first on ``PYTHONPATH``.

    >>> env = thread_env(3, {"PYTHONPATH": "/elsewhere"})
    >>> env["OMP_NUM_THREADS"], env["MKL_NUM_THREADS"], env["PYTHONPATH"] == f"{REPO_ROOT}{os.pathsep}/elsewhere"
    ('3', '3', True)
    """
    env = dict(os.environ if base is None else base)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.pop("SGGRAPH_PARENT_PID", None)  # not a sweep's run
    return env


def authors_main_args(method: str, steps: int, results_dir: Path, eval_batch: int = 4000) -> list[str]:
    """The arguments of the authors' ``main.py`` for one run: their ``run_sweeps.sh`` ``run_one`` for the
    ``sparse_backprop`` / ``sparse_sgprop_adaptive`` variant at the base settings, on the CPU."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}")
    args = ["--policy_model", "sparse", "--method", method, "--seed", "0", "--device", "cpu",
            "--results_dir", str(results_dir), "--classes", *CLASSES, "--p_flip", "0.4", "--n_dim", "10",
            "--num_layers", "5", "--width", "200", "--num_slots", "5", "--num_parents", "5",
            "--train_steps", str(steps), "--sg_steps_per_policy_step", "1", "--batch_size", "64",
            "--eval_batch_size", str(eval_batch), "--policy_lr", POLICY_LR[method], "--sg_lr", "0.005",
            "--policy_weight_decay", "0.0", "--sg_weight_decay", "0.0", "--residual",
            "--reuse_policy_batch_for_sg", "--no_update_shared_keys_in_sg_phase"]
    if method == "sgprop":  # sparse_sgprop_adaptive
        args += ["--theta_momentum", "0.9", "--theta", *["0.9"] * 5]
    else:
        args += ["--theta_momentum", "1.0"]
    return args


def command(variant: Variant, cfg: SpeedConfig, steps: int, work_dir: Path) -> list[str]:
    """The command line of one timed process (``work_dir``: a fresh folder for its outputs)."""
    if variant.code == "authors":
        return [sys.executable, str(Path(__file__).resolve()), CHILD_FLAG, str(cfg.authors_dir.resolve()),
                str(cfg.threads), cfg.authors_allocator, "--",
                *authors_main_args(variant.method, steps, work_dir, cfg.eval_batch)]
    return [sys.executable, "-m", "sggraph", "train", "mnist-bandit", "--method", variant.method,
            "--steps", str(steps), "--seed", "0", "--threads", str(cfg.threads), "--eval-batch", str(cfg.eval_batch),
            "--quiet", "--checkpoint-every", str(cfg.steps_long), "--out", str(work_dir / "run")]


def time_process(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Run ``cmd`` to its end: its wall time and its CPU time (user + system), in seconds. A failing process
    raises :class:`RuntimeError` with the end of its stderr."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, stderr = proc.communicate()
    finally:  # interrupted or terminated (SIGTERM, see main): leave no timed process behind
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} … exited with {proc.returncode}:\n{stderr[-3000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def work_base() -> str | None:
    """Where the processes write their run folders: ``/dev/shm`` when it is a writable folder (our runs
    ``fsync`` their checkpoint and summary, and on a busy disk that fixed cost varies by seconds), else the
    system's temporary folder (None)."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def warm_up(env: dict[str, str]) -> None:
    """Import, untimed, what both programs import, so the first timed process does not read it from disk."""
    subprocess.run([sys.executable, "-c", WARM_IMPORTS], env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def measure(cfg: SpeedConfig, log=None) -> list[Run]:
    """Every process of :func:`schedule`, timed; ``log(str)`` hears of each one."""
    env = thread_env(cfg.threads)
    warm_up(env)
    runs = []
    for repeat, variant, steps in schedule(cfg.repeats, cfg.steps_short, cfg.steps_long, cfg.variants):
        with tempfile.TemporaryDirectory(prefix="speed-vs-authors-", dir=work_base()) as tmp:
            wall, cpu = time_process(command(variant, cfg, steps, Path(tmp)), env, Path(tmp))
        runs.append(Run(variant.name, repeat, steps, round(wall, 4), round(cpu, 3)))
        if log is not None:
            log(f"repeat {repeat + 1}/{cfg.repeats}  {variant.name:<17} {steps:>5} steps  {wall:7.2f} s  "
                f"(CPU {cpu:7.2f} s)")
    return runs


def per_step_by_repeat(runs: Sequence[Run], steps_short: int, steps_long: int) -> dict[str, list[float]]:
    """Per variant, the seconds per step of each repeat that ran both lengths (repeats in order).

    >>> runs = [Run("a", 0, 20, 5.0), Run("a", 0, 80, 11.0), Run("a", 1, 80, 12.0), Run("a", 1, 20, 6.0)]
    >>> per_step_by_repeat(runs, 20, 80)
    {'a': [0.1, 0.1]}
    """
    walls: dict[tuple[str, int], dict[int, float]] = {}
    for run in runs:
        walls.setdefault((run.variant, run.repeat), {})[run.steps] = run.wall_s
    out: dict[str, list[float]] = {}
    for (variant, _), by_steps in sorted(walls.items()):
        if steps_short in by_steps and steps_long in by_steps:
            out.setdefault(variant, []).append(
                per_step_seconds(by_steps[steps_short], by_steps[steps_long], steps_short, steps_long))
    return out


def summarise(runs: Sequence[Run], steps_short: int, steps_long: int) -> dict[str, dict[str, float]]:
    """Per method: the authors' and our median milliseconds per step, the ratio of the medians
    (authors / ours, > 1: ours is faster) and the range of the per-repeat ratios.

    >>> walls = [("authors", 20, 4.0), ("authors", 80, 34.0), ("ours", 20, 3.0), ("ours", 80, 13.0)]
    >>> runs = [Run(f"{code}-sgprop", 0, steps, wall) for code, steps, wall in walls]
    >>> summarise(runs, 20, 80)["sgprop"]
    {'authors_ms': 500.0, 'ours_ms': 166.667, 'ratio': 3.0, 'ratio_min': 3.0, 'ratio_max': 3.0, 'repeats': 1}
    """
    per_step = per_step_by_repeat(runs, steps_short, steps_long)
    out = {}
    for method in METHODS:
        authors, ours = per_step.get(f"authors-{method}", []), per_step.get(f"ours-{method}", [])
        if not authors or not ours:
            continue
        ratios = [a / o for a, o in zip(authors, ours)]
        out[method] = {"authors_ms": round(1000 * statistics.median(authors), 3),
                       "ours_ms": round(1000 * statistics.median(ours), 3),
                       "ratio": round(statistics.median(authors) / statistics.median(ours), 3),
                       "ratio_min": round(min(ratios), 3), "ratio_max": round(max(ratios), 3),
                       "repeats": min(len(authors), len(ours))}
    return out


def table(summary: dict[str, dict[str, float]], threads: int, steps_short: int, steps_long: int) -> str:
    """The summary as a Markdown table.

    >>> print(table({"backprop": {"authors_ms": 190.0, "ours_ms": 95.0, "ratio": 2.0, "ratio_min": 1.9,
    ...                           "ratio_max": 2.1, "repeats": 3}}, 2, 20, 80))
    MNIST bandit, ms per training step at 2 threads: medians over repeats of (wall(80) − wall(20)) / 60
    | method | authors | ours | authors / ours | per-repeat ratios | repeats |
    |---|---|---|---|---|---|
    | backprop | 190.0 ms | 95.0 ms | 2.00× | 1.90–2.10× | 3 |
    """
    difference = f"(wall({steps_long}) − wall({steps_short})) / {steps_long - steps_short}"
    lines = [f"MNIST bandit, ms per training step at {threads} thread{'s' * (threads != 1)}: medians over repeats "
             f"of {difference}",
             "| method | authors | ours | authors / ours | per-repeat ratios | repeats |", "|---|---|---|---|---|---|"]
    for method, row in summary.items():
        lines.append(f"| {method} | {row['authors_ms']:.1f} ms | {row['ours_ms']:.1f} ms | {row['ratio']:.2f}× | "
                     f"{row['ratio_min']:.2f}–{row['ratio_max']:.2f}× | {row['repeats']} |")
    if any(row["authors_ms"] <= 0 or row["ours_ms"] <= 0 for row in summary.values()):
        lines.append(f"(a step time ≤ 0: {steps_long - steps_short} extra steps are fewer than the start-up noise "
                     f"needs; use a larger --steps-long)")
    return "\n".join(lines)


def combine(documents: Sequence[dict]) -> dict:
    """Several ``--json`` outputs as one: their runs together (repeats renumbered), summarised again.

    Raises :class:`UsageError` when they differ in what was measured (threads, lengths, evaluation
    size, the authors' allocator).
    """
    if not documents:
        raise UsageError("--combine needs at least one JSON file")
    def measured(doc: dict) -> dict:  # (outputs older than --authors-allocator ran the default)
        return {"threads": doc["threads"], "steps_short": doc["steps_short"], "steps_long": doc["steps_long"],
                "eval_batch": doc.get("eval_batch"), "authors_allocator": doc.get("authors_allocator", "default")}

    first = measured(documents[0])
    runs: list[Run] = []
    for doc in documents:
        if measured(doc) != first:
            raise UsageError(f"--combine: {measured(doc)} differs from {first}")
        offset = 1 + max((r.repeat for r in runs), default=-1)
        runs += [Run(r["variant"], offset + r["repeat"], r["steps"], r["wall_s"], r.get("cpu_s", float("nan")))
                 for r in doc["runs"]]
    dates = sorted({doc.get("date") for doc in documents if doc.get("date")})
    return report(runs, **first, dates=dates, commits=[doc.get("commit") for doc in documents])


def read_documents(paths: Sequence[Path]) -> list[dict]:
    """The ``--json`` outputs at ``paths``; :class:`UsageError` for an unreadable or malformed one."""
    docs = []
    for path in paths:
        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:
            raise UsageError(f"--combine {path}: {err}") from None
        if not isinstance(doc, dict) or not {"threads", "steps_short", "steps_long", "runs"} <= set(doc):
            raise UsageError(f"--combine {path}: not a --json output of this script")
        docs.append(doc)
    return docs


def report(runs: Sequence[Run], threads: int, steps_short: int, steps_long: int, **extra) -> dict:
    """The JSON document of a measurement: settings, the summary and every run."""
    return {"threads": threads, "steps_short": steps_short, "steps_long": steps_long,
            "summary": summarise(runs, steps_short, steps_long), "runs": [asdict(r) for r in runs], **extra}


def _commit() -> str | None:
    proc = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True)
    return proc.stdout.strip() or None


# ----------------------------------------------------------------------------- the authors' process


def install_embedded_mnist(classes: Sequence[str] | None = None) -> None:
    """Make ``torchvision.datasets.MNIST`` serve this project's embedded digits (no network, no torchvision):
    the first 8,000 as the training set, the last 2,000 as the test set, as ``uint8 [N, 28, 28]`` tensors.
    With ``classes``, only those digits are kept first (file order), so the split is ``MnistBandit``'s:
    the last 2,000 of them held out."""
    import types

    import numpy as np
    import torch

    from sggraph.envs.mnist import load_mnist

    images, labels = load_mnist(None)
    images = torch.as_tensor(np.asarray(images)).reshape(-1, 28, 28)
    labels = torch.as_tensor(np.asarray(labels)).long()
    if classes is not None:
        keep = torch.isin(labels, torch.tensor([int(c) for c in classes]))
        images, labels = images[keep], labels[keep]
    n_train = len(labels) - 2000

    class EmbeddedMNIST:
        def __init__(self, root=None, train=True, download=False, **_):
            part = slice(0, n_train) if train else slice(n_train, len(labels))
            self.data, self.targets = images[part], labels[part]

    package = types.ModuleType("torchvision")
    package.datasets = types.ModuleType("torchvision.datasets")
    package.datasets.MNIST = EmbeddedMNIST
    sys.modules["torchvision"], sys.modules["torchvision.datasets"] = package, package.datasets


def run_authors_child(argv: Sequence[str]) -> int:
    """``CHILD_FLAG AUTHORS_DIR THREADS ALLOCATOR -- MAIN_ARGS…``: run the authors' ``main.py`` as ``__main__``
    with ``MAIN_ARGS`` at ``THREADS`` torch threads, on the embedded digits; ``ALLOCATOR`` ``ours``: with the
    glibc settings the ``sggraph`` command makes (:func:`sggraph.cli.tune_allocator`), ``default``: without."""
    import runpy

    import torch

    authors_dir, threads, allocator, separator, *main_args = argv
    if separator != "--" or allocator not in ALLOCATORS:
        raise UsageError(f"{CHILD_FLAG} AUTHORS_DIR THREADS {{{','.join(ALLOCATORS)}}} -- MAIN_ARGS…")
    if allocator == "ours":
        from sggraph.cli import tune_allocator

        tune_allocator()
    torch.set_num_threads(int(threads))
    install_embedded_mnist()
    sys.path.insert(0, authors_dir)  # their main imports `models` and `trainers` from its folder
    sys.argv = [str(Path(authors_dir) / "main.py"), *main_args]
    runpy.run_path(sys.argv[0], run_name="__main__")
    return 0


# ----------------------------------------------------------------------------- command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("authors_dir", nargs="?", type=Path, metavar="AUTHORS_EXP_MNIST_BANDIT_DIR",
                    help="the authors' exp-mnist-bandit folder (their code is run from there, never copied)")
    ap.add_argument("--threads", type=int, default=2, help="torch / OpenMP threads of every process (default 2)")
    ap.add_argument("--steps-short", type=int, default=20, help="S1, at least 20 (default 20)")
    ap.add_argument("--steps-long", type=int, default=220, help="S2 > S1 (default 220)")
    ap.add_argument("--repeats", type=int, default=3, help="ABCD rounds; medians over them (default 3)")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), metavar="METHOD",
                    help="time only these methods: backprop, sgprop (default both)")
    ap.add_argument("--authors-allocator", choices=ALLOCATORS, default="default",
                    help="'ours': run the authors' code with the glibc malloc thresholds the sggraph command sets "
                         "(sggraph.cli.tune_allocator) too; default: as they ship it")
    ap.add_argument("--eval-batch", type=int, default=64,
                    help="images per evaluation in both programs (default 64; the paper's 4000 only adds noise)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON (with every run's wall time)")
    ap.add_argument("--combine", nargs="+", type=Path, metavar="JSON",
                    help="no measurement: the table of earlier --json outputs taken together")
    return ap.parse_args(argv)


def _terminated(signum, frame):
    raise SystemExit(128 + signum)  # unwinds through time_process, which kills the running child


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == [CHILD_FLAG]:
            return run_authors_child(argv[1:])
        args = parse_args(argv)
        if args.combine:
            doc = combine(read_documents(args.combine))
        else:
            if args.authors_dir is None:
                raise UsageError("give the authors' exp-mnist-bandit folder (or --combine JSON…)")
            cfg = SpeedConfig(args.authors_dir, args.threads, args.steps_short, args.steps_long, args.repeats,
                              args.eval_batch, tuple(args.methods), args.authors_allocator)
            cfg.validate()
            signal.signal(signal.SIGTERM, _terminated)
            runs = measure(cfg, lambda line: print(line, file=sys.stderr, flush=True))
            doc = report(runs, cfg.threads, cfg.steps_short, cfg.steps_long, repeats=cfg.repeats, commit=_commit(),
                         eval_batch=cfg.eval_batch, methods=list(cfg.methods),
                         authors_allocator=cfg.authors_allocator,
                         date=time.strftime("%Y-%m-%d"), authors_dir=str(cfg.authors_dir.resolve()))
    except UsageError as err:
        print(f"speed_vs_authors: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:  # a timed process failed
        print(f"speed_vs_authors: {err}", file=sys.stderr)
        return 1
    print(json.dumps(doc, indent=2) if args.json else table(doc["summary"], doc["threads"], doc["steps_short"],
                                                            doc["steps_long"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
