"""Run directories that cannot lose data: no silent overwrite, one process per directory (stale locks
taken over), a failing --resume changes nothing, every numeric flag checked before anything is
written, and a diverging run stops with a resumable checkpoint of its last good step."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sggraph.cli import main
from sggraph.experiments import mnist_bandit
from sggraph.experiments.divergence import Diverged, check_step, keep_last_good
from sggraph.experiments.mnist_bandit import BanditConfig, run_bandit
from sggraph.experiments.rundir import RunDir
from sggraph.runtime.dirlock import DirectoryLock, process_alive

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--steps", "6", "--evaluations", "2", "--eval-batch", "100", "--width", "8", "--layers", "1", "--q", "2",
        "--slots", "2", "--n-parents", "2"]
POPGYM = ["--model", "gru", "--num-envs", "2", "--hidden", "8", "--embed", "8", "--batches", "1"]


def _bandit(out: Path, *extra: str) -> int:
    return main(["train", "mnist-bandit", *TINY, "--out", str(out), *extra])


def _snapshot(path: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``path`` with its bytes and modification time."""
    return {str(p.relative_to(path)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(path.rglob("*"))
            if p.is_file()}


def _holder(directory: Path, name: str = "run.lock") -> subprocess.Popen:
    """A separate process that takes the directory's lock and keeps it until killed."""
    code = ("import sys, time; from sggraph.runtime.dirlock import DirectoryLock; "
            f"DirectoryLock({str(directory)!r}, {name!r}).acquire(); print('held', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


# ------------------------------------------------------------------------------ no silent overwrite
def test_a_finished_run_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    assert _bandit(out) == 0
    before = _snapshot(out)
    capsys.readouterr()
    assert _bandit(out, "--method", "backprop", "--seed", "1") == 2
    err = capsys.readouterr().err
    assert "holds a finished run (summary.json)" in err and "--overwrite" in err and "Traceback" not in err
    assert _snapshot(out) == before
    assert _bandit(out) == 2  # the very same settings too: a finished run is not redone silently
    assert _snapshot(out) == before


def test_a_users_own_files_are_not_overwritten(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.json").write_text('{"my": "experiment"}\n')
    (out / "metrics.csv").write_text("epoch,loss\n1,0.5\n")
    (out / "notes.txt").write_text("keep me\n")
    before = _snapshot(out)
    assert _bandit(out) == 2
    err = capsys.readouterr().err
    assert "is not empty and does not hold an unfinished run of these settings" in err and "notes.txt" in err
    assert "config.json" in err and "metrics.csv" in err  # the refusal names every file in the way
    assert _snapshot(out) == before
    assert _bandit(out, "--overwrite") == 2  # --overwrite replaces a run's files, never the user's own
    err = capsys.readouterr().err
    assert "no sggraph run wrote them" in err and "config.json" in err and "Traceback" not in err
    assert _snapshot(out) == before


def test_overwrite_replaces_the_run_files_and_keeps_other_files(tmp_path):
    out = tmp_path / "run"
    assert _bandit(out, "--snapshots", "2") == 0
    assert (out / "snapshot-step6.pt").exists()
    (out / "notes.txt").write_text("keep me\n")
    assert _bandit(out, "--seed", "1", "--overwrite") == 0
    assert json.loads((out / "config.json").read_text())["seed"] == 1
    assert json.loads((out / "summary.json").read_text())["seed"] == 1
    assert not (out / "snapshot-step6.pt").exists()  # the replaced run's files are gone, not mixed in
    assert (out / "notes.txt").read_text() == "keep me\n"


def test_resume_and_overwrite_together_are_refused(tmp_path, capsys):
    assert _bandit(tmp_path / "run", "--resume", "--overwrite") == 2
    assert "contradict" in capsys.readouterr().err


def test_a_killed_run_is_continued_with_resume_not_restarted(tmp_path, capsys):
    out = tmp_path / "run"
    assert _bandit(out, "--checkpoint-every", "3") == 0
    (out / "summary.json").unlink()  # what a run killed after its last checkpoint leaves
    before = _snapshot(out)
    assert _bandit(out, "--checkpoint-every", "3") == 2
    assert "continue it with --resume" in capsys.readouterr().err
    assert _snapshot(out) == before
    assert _bandit(out, "--checkpoint-every", "3", "--resume") == 0


def test_a_run_killed_before_its_first_checkpoint_starts_again(tmp_path):
    out = tmp_path / "run"
    assert _bandit(out) == 0
    for name in ("summary.json", "checkpoint.pt", "metrics.csv", "learning_curve.png"):
        (out / name).unlink()  # only config.json was written before the kill
    assert _bandit(out) == 0 and (out / "summary.json").exists()


# ------------------------------------------------------------------------------ one process per directory
def test_a_second_run_into_a_busy_directory_is_refused_and_a_dead_holders_lock_is_taken_over(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    holder = _holder(out)
    try:
        assert _bandit(out) == 2
        err = capsys.readouterr().err
        assert f"the run directory is in use by process {holder.pid}" in err and "Traceback" not in err
        assert sorted(p.name for p in out.iterdir()) == ["run.lock"]
    finally:
        _kill(holder)
    stale = DirectoryLock(out, "run.lock").holder()
    assert stale is not None and stale["pid"] == holder.pid and not process_alive(holder.pid, stale["started"])
    assert _bandit(out) == 0  # the killed holder's lock is stale: taken over without help
    assert not (out / "run.lock").exists()


def test_two_concurrent_trainings_into_one_directory_never_both_write(tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "sggraph", "train", "mnist-bandit", *TINY, "--out", str(out)]
    # the first run is killed below; its step count only has to outlast the second's start-up on a loaded machine
    first = subprocess.Popen([*args[:-2], "--steps", "1000000", "--out", str(out)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (out / "config.json").exists():
            time.sleep(0.05)
        assert DirectoryLock(out, "run.lock").live_holder() is not None, "the first run is not running"
        second = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
        assert second.returncode == 2 and "in use by process" in second.stderr
    finally:
        _kill(first)
    assert json.loads((out / "config.json").read_text())["steps"] == 1000000  # only the first run wrote here


def test_a_stale_lock_file_from_a_dead_process_or_an_old_version_is_taken_over(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    (out / "run.lock").write_text(json.dumps({"pid": int(dead.stdout), "host": os.uname().nodename,
                                              "started": None, "since": "2020-01-01T00:00:00"}))
    assert _bandit(out) == 0
    (out / "run.lock").write_text("")  # an empty lock file (an older sweep left these)
    assert _bandit(tmp_path / "run", "--overwrite") == 0


# ------------------------------------------------------------------------------ a failing resume changes nothing
def test_resume_on_a_new_path_creates_nothing(tmp_path, capsys):
    out = tmp_path / "new" / "run"
    assert _bandit(out, "--resume") == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage", "not-a-state"])
def test_resume_from_a_damaged_checkpoint_changes_nothing(damage, tmp_path, capsys):
    out = tmp_path / "run"
    assert _bandit(out) == 0
    ckpt = out / "checkpoint.pt"
    raw = ckpt.read_bytes()
    if damage == "truncated":
        ckpt.write_bytes(raw[: len(raw) // 2])
    elif damage == "empty":
        ckpt.write_bytes(b"")
    elif damage == "garbage":
        ckpt.write_bytes(os.urandom(4096))
    else:
        torch.save({"step": 3, "model": {"nonsense": torch.zeros(2)}}, ckpt)
    before = _snapshot(out)
    capsys.readouterr()
    assert main(["train", "mnist-bandit", *TINY[2:], "--steps", "12", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "checkpoint" in err and "Traceback" not in err and err.count("\n") == 1
    assert _snapshot(out) == before  # config.json included: nothing rewritten before the failure


# ------------------------------------------------------------------------------ numeric flags
@pytest.mark.parametrize("experiment,base", [("mnist-bandit", TINY), ("popgym", POPGYM)])
@pytest.mark.parametrize("flag,value,needle", [
    ("--lr", "nan", "lr = nan is not a finite number"),
    ("--lr", "inf", "lr = inf is not a finite number"),
    ("--lr", "-1", "lr = -1.0 must be > 0"),
    ("--lr", "0", "lr = 0.0 must be > 0"),
    ("--seed", str(2**64), "is outside 0..4294967295"),
    ("--seed", "-1", "seed = -1 is outside"),
    ("--generator-lr", "nan", "generator_lr = nan is not a finite number"),
])
def test_numeric_flags_are_checked_before_anything_is_written(experiment, base, flag, value, needle, tmp_path,
                                                               capsys):
    out = tmp_path / "parent" / "run"
    assert main(["train", experiment, *base, flag, value, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert not (tmp_path / "parent").exists()


@pytest.mark.parametrize("experiment,flag", [("mnist-bandit", "--width"), ("mnist-bandit", "--batch"),
                                             ("popgym", "--neurons"), ("popgym", "--hidden")])
def test_sizes_are_bounded(experiment, flag, tmp_path, capsys):
    base = TINY if experiment == "mnist-bandit" else POPGYM
    assert main(["train", experiment, *base, flag, "100000000000", "--out", str(tmp_path / "r")]) == 2
    assert "is larger than the limit" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_sweeps_check_the_same_way(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text("command: train mnist-bandit\nsettings: {steps: 2}\ngrid:\n  lr: [0.001, .nan]\n")
    assert main(["sweep", str(spec), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{spec}:4:" in err and "not a finite number" in err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------ divergence
def test_a_diverging_run_stops_naming_the_batch_and_keeps_the_last_good_one(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "popgym", *POPGYM, "--batches", "3", "--lr", "1e30", "--out", str(out)]
    assert main(args) == 2  # the weights overflow the logits in the second batch
    err = capsys.readouterr().err
    assert "training diverged at batch 2" in err and "--lr, now 1e+30" in err and "Traceback" not in err
    assert "checkpoint.pt holds batch 1, the last good one" in err
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["batch"] == 1 and len(state["rows"]) == 1
    assert all(torch.isfinite(v).all() for v in state["policy"].values())
    assert not (out / "summary.json").exists()
    assert main([*args, "--resume"]) == 2  # the checkpoint resumes (and meets the same divergence)
    assert "training diverged at batch 2" in capsys.readouterr().err


def test_a_learning_rate_beyond_float32_is_refused(tmp_path, capsys):
    assert _bandit(tmp_path / "run", "--lr", "1e300") == 2
    assert "lr = 1e+300 is larger than the limit 1e+30" in capsys.readouterr().err


def test_a_step_that_makes_parameters_non_finite_is_caught():
    check_step(3, [torch.ones(4), torch.zeros(2)], loss=0.5)
    with pytest.raises(Diverged, match="step 3: the update made parameters NaN or infinite"):
        check_step(3, [torch.ones(4), torch.tensor([1.0, float("inf")])])
    with pytest.raises(Diverged, match="the loss is nan"):
        check_step(4, [torch.ones(1)], loss=float("nan"))


def test_the_last_good_checkpoint_is_exactly_the_uninterrupted_runs(tmp_path):
    """Replaying from the last checkpoint to the step before the divergence gives the state an uninterrupted
    run has there, bit for bit."""
    small = {"steps": 6, "evaluations": 6, "eval_batch": 100, "width": 8, "layers": 2, "q": 2, "slots": 2,
             "n_parents": 2}
    run_bandit(BanditConfig(**small), tmp_path / "whole")  # its checkpoint.pt holds step 6
    cut = tmp_path / "cut"
    run_bandit(BanditConfig(**{**small, "steps": 2, "evaluations": 2}), cut)  # its checkpoint.pt holds step 2
    cfg = BanditConfig(**{**small, "steps": 9, "evaluations": 9})  # evaluated at every step, like the others
    config = {**dataclasses.asdict(cfg), "threads": torch.get_num_threads()}
    first, kept = keep_last_good(
        RunDir(cut), Diverged(7, "a test divergence at step 7"),
        lambda again, stop: mnist_bandit._train(cfg, config, RunDir(cut), again, False, True, stop))
    assert kept == 6 and first.step == 7
    mine, whole = (torch.load(p / "checkpoint.pt", weights_only=True) for p in (cut, tmp_path / "whole"))
    assert mine["step"] == whole["step"] == 6 and mine["rows"] == whole["rows"]
    for key, value in whole["model"].items():
        assert torch.equal(mine["model"][key], value), key
    assert torch.equal(mine["data_gen"], whole["data_gen"]) and torch.equal(mine["torch_rng"], whole["torch_rng"])


# ------------------------------------------------------------------------------ finished is written last
@pytest.mark.parametrize("experiment,base", [("mnist-bandit", TINY), ("popgym", POPGYM)])
def test_summary_is_written_after_the_figure(experiment, base, tmp_path):
    out = tmp_path / "run"
    assert main(["train", experiment, *base, "--out", str(out)]) == 0
    assert (out / "summary.json").stat().st_mtime_ns >= (out / "learning_curve.png").stat().st_mtime_ns
    assert (out / "summary.json").stat().st_mtime_ns >= (out / "checkpoint.pt").stat().st_mtime_ns


# ------------------------------------------------------------------------------ one sweep per directory
def test_a_sweep_directory_is_locked_as_a_whole(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text("command: train mnist-bandit\nsettings: {steps: 2, evaluations: 1, eval_batch: 50, width: 8, "
                    "layers: 1, q: 2, slots: 2, n_parents: 2}\ngrid: {seed: [0, 1]}\n")
    out = tmp_path / "out"
    out.mkdir()
    holder = _holder(out, "sweep.lock")
    try:
        assert main(["sweep", str(spec), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"the sweep directory is in use by process {holder.pid}" in err
        assert sorted(p.name for p in out.iterdir()) == ["sweep.lock"]  # nothing planned, nothing written
    finally:
        _kill(holder)
    assert main(["sweep", str(spec), "--workers", "1", "--out", str(out)]) == 0  # the stale lock is taken over
    assert not (out / "sweep.lock").exists()
    assert sorted(p.name for p in out.iterdir()) == ["runs.csv", "seed=0", "seed=1", "spec.yaml", "sweep.json"]


def test_a_divergence_noticed_late_is_traced_back_to_the_step_that_caused_it(tmp_path):
    rd = RunDir(tmp_path / "run")
    rd.save_checkpoint({"step": 2})
    replays = []

    def replay(resume: bool, stop: int) -> None:  # a run whose parameters went bad in step 4
        replays.append((resume, stop))
        if stop >= 4:
            raise Diverged(4, "the update made parameters NaN or infinite")
        rd.save_checkpoint({"step": stop})

    first, kept = keep_last_good(rd, Diverged(9, "the policy's outputs are NaN"), replay)
    assert (first.step, kept) == (4, 3) and "parameters" in first.reason
    assert replays == [(True, 8), (True, 3)]
    assert rd.load_checkpoint()["step"] == 3
