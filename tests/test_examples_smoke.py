"""Every entry point runs briefly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sggraph.experiments.bench import bandit_flops, bench_bandit

ROOT = Path(__file__).resolve().parent.parent


def test_train_custom_dag_example_runs():
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "train_custom_dag.py"), "--steps", "20"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "backprop: clean test MSE" in proc.stdout and "sgprop  : clean test MSE" in proc.stdout


def test_bench_section_runs_and_counts_flops():
    out = bench_bandit(steps=1, warmup=0, batch=8)
    for key in ("backprop_ms", "sgprop_ms", "backprop_gflops", "sgprop_gflops", "sgprop_adaptive_ms"):
        assert out[key] > 0
    flops = bandit_flops(64)
    assert 0.9e9 < flops["backprop"] < 1.3e9  # ≈ 1.1 GFLOP per backprop step (the bandit's 200×5 SparseNet)
    assert flops["sgprop"] > flops["backprop"]


def test_bench_cli_json_keys(monkeypatch, capsys):
    from sggraph.cli import main
    from sggraph.experiments import bench

    monkeypatch.setattr(bench, "bench_bandit", lambda steps: bench_bandit(steps=1, warmup=0, batch=4))
    original = bench.bench_recurrent
    monkeypatch.setattr(bench, "bench_recurrent", lambda: original(repeats=1, warmup=0, steps=3, sequences=2))
    popgym = bench.bench_popgym
    monkeypatch.setattr(bench, "bench_popgym", lambda: popgym(repeats=1, warmup=0, num_envs=2))
    assert main(["bench", "--json", "--steps", "1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["bandit"]) >= {"backprop_ms", "sgprop_ms", "backprop_gflops", "sgprop_gflops"}
    assert data["matmul_peak_gflops"] > 0
    assert set(data["recurrent"]) == {"backprop_ms", "sgprop_ms", "sgprop_over_backprop"}
    assert set(data["popgym"]) >= {"backprop_s", "sgprop_s", "gru_s", "lstm_s", "sgprop_rollout_s"}
    assert all(data["popgym"][k] > 0 for k in ("backprop_s", "sgprop_s", "gru_s"))
