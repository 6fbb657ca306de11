"""TensorBoard event files in run directories, read back with tensorboard's own event reader."""

from __future__ import annotations

import csv
import shutil

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sggraph.cli import main
from sggraph.experiments.mnist_bandit import BanditConfig, run_bandit


def _events(run) -> EventAccumulator:
    acc = EventAccumulator(str(run), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    return acc


def _steps(acc: EventAccumulator, tag: str, kind: str = "scalars") -> list[int]:
    events = acc.Scalars(tag) if kind == "scalars" else acc.Histograms(tag)
    return [e.step for e in events]


def test_a_five_step_bandit_run_writes_events_tensorboard_reads_back(tmp_path):
    cfg = BanditConfig(method="sgprop", steps=5, evaluations=2, eval_batch=100, width=8, layers=2, q=2, slots=2,
                       n_parents=2)
    run_bandit(cfg, tmp_path)
    acc = _events(tmp_path)
    tags = acc.Tags()
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    eval_steps = [int(r["step"]) for r in rows]
    assert eval_steps == [1, 5]
    # every column of metrics.csv but the axes, at its rows' steps
    for column in rows[0]:
        if column not in ("step", "samples"):
            assert column in tags["scalars"], column
    for column in ("eval_reward", "lambda_h1", "lambda_h2"):
        assert _steps(acc, column) == eval_steps
        assert [e.value for e in acc.Scalars(column)] == pytest.approx([float(r[column]) for r in rows], rel=1e-6)
    # the per-step training quantities, every step
    for tag in ("train_reward", "generator_loss", "grad_norm", "seconds_per_step"):
        assert _steps(acc, tag) == [1, 2, 3, 4, 5], tag
    assert all(e.value > 0 for e in acc.Scalars("grad_norm"))
    # per-neuron λ of each hidden layer as histograms at the evaluations
    assert {"lambda/h1", "lambda/h2"} <= set(tags["histograms"])
    hist = acc.Histograms("lambda/h1")
    assert _steps(acc, "lambda/h1", "histograms") == eval_steps
    assert hist[0].histogram_value.num == cfg.width and 0 <= hist[-1].histogram_value.min <= 1


def test_backprop_and_mlp_runs_log_no_lambda_or_generator(tmp_path):
    for method in ("backprop", "mlp"):
        run = tmp_path / method
        run_bandit(BanditConfig(method=method, steps=3, evaluations=2, eval_batch=100, width=8, layers=2, q=2,
                                slots=2, n_parents=2, mlp_width=16), run)
        tags = _events(run).Tags()
        assert {"eval_reward", "train_reward", "grad_norm", "seconds_per_step"} <= set(tags["scalars"])
        assert not any(t.startswith("lambda") or t == "generator_loss" for t in tags["scalars"] + tags["histograms"])


POPGYM = ["train", "popgym", "--num-envs", "3", "--neurons", "32", "--input-neurons", "4", "--checkpoint-every", "2",
          "--quiet"]


def test_popgym_run_events_and_a_resumed_run_writes_each_batch_once(tmp_path, capsys):
    run = tmp_path / "run"
    assert main([*POPGYM, "--batches", "3", "--out", str(run)]) == 0
    acc = _events(run)
    columns = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    for column in columns:
        if column not in ("batch", "episodes"):
            assert _steps(acc, column) == [1, 2, 3], column
    assert "generator_loss" in columns and "lambda_mean" in columns
    assert _steps(acc, "lambda/h", "histograms") == [1, 2, 3]
    # a run killed after batch 3's events but before its checkpoint: the checkpoint of batch 2 is the last
    killed = tmp_path / "killed"
    assert main([*POPGYM, "--batches", "2", "--out", str(killed)]) == 0
    saved = (killed / "checkpoint.pt").read_bytes()
    assert main([*POPGYM, "--batches", "3", "--out", str(killed), "--resume"]) == 0
    (killed / "checkpoint.pt").write_bytes(saved)
    (killed / "summary.json").unlink()
    assert main([*POPGYM, "--batches", "3", "--out", str(killed), "--resume"]) == 0  # batch 3 again
    assert len(list(killed.glob("events.out.tfevents.*"))) == 3
    again = _events(killed)
    for tag in ("success_rate", "loss", "lambda_mean"):
        assert _steps(again, tag) == [1, 2, 3], tag
        assert [e.value for e in again.Scalars(tag)] == [e.value for e in acc.Scalars(tag)], tag


def test_a_sweep_directory_is_one_tensorboard_logdir_with_a_run_per_directory(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    for seed in (0, 1):
        run_bandit(BanditConfig(method="sgprop", steps=2, evaluations=2, eval_batch=50, width=8, layers=1, q=2,
                                slots=2, n_parents=2, seed=seed), tmp_path / "sweep" / f"seed={seed}")
    shutil.copy(tmp_path / "sweep" / "seed=0" / "config.json", tmp_path / "sweep" / "not-a-run.json")
    mux = EventMultiplexer().AddRunsFromDirectory(str(tmp_path / "sweep"))
    mux.Reload()
    assert sorted(mux.Runs()) == ["seed=0", "seed=1"]
    assert all("eval_reward" in tags["scalars"] for tags in mux.Runs().values())
