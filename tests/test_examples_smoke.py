"""Every entry point runs briefly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sggraph.experiments.bench import bandit_flops, bench_bandit

ROOT = Path(__file__).resolve().parent.parent


def test_train_custom_dag_example_runs():
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "train_custom_dag.py"), "--steps", "20"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "backprop: clean test MSE" in proc.stdout and "sgprop  : clean test MSE" in proc.stdout


def test_bench_section_runs_and_counts_flops():
    out = bench_bandit(steps=1, warmup=0, batch=8)
    for key in ("backprop", "sgprop", "sgprop_adaptive", "sgprop_adaptive_single_pass"):
        assert out[key + "_ms"] > 0 and out[key + "_gflops"] > 0
    assert out["adaptive_over_backprop"] == pytest.approx(out["sgprop_adaptive_ms"] / out["backprop_ms"], abs=2e-3)
    flops = bandit_flops(64)
    assert 0.9e9 < flops["backprop"] < 1.1e9  # ≈ 1 GFLOP per backprop step (the bandit's 200×5 SparseNet)
    # the generator-first step adds the feedback pass (input gradients), three generator passes, and λ's
    # two batch-mean bmm's (2 P per array): counted by hand for one array of the default sizes
    p, g = 2 * 64 * 200 * 50 * 55, 2 * 64 * 200 * 50 * 50
    head = 2 * 64 * 2000 * 10
    assert flops["backprop"] == 5 * p + head + (5 * p + head) + (4 * p + head)
    assert flops["sgprop_adaptive"] - flops["sgprop"] == 5 * 2 * p
    assert flops["sgprop"] - flops["backprop"] == 3 * 5 * g + 4 * p + head


def test_bench_cli_json_keys(monkeypatch, capsys):
    from sggraph.cli import main

    _small_bench(monkeypatch)
    assert main(["bench", "--json", "--steps", "1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["bandit"]) >= {"backprop_ms", "sgprop_ms", "backprop_gflops", "sgprop_gflops"}
    assert data["matmul_peak_gflops"] > 0
    assert set(data["recurrent"]) == {"backprop_ms", "sgprop_ms", "sgprop_over_backprop"}
    assert set(data["popgym"]) >= {"backprop_s", "sgprop_s", "gru_s", "lstm_s", "sgprop_rollout_s"}
    assert all(data["popgym"][k] > 0 for k in ("backprop_s", "sgprop_s", "gru_s"))
    assert {"mlp_module_ms", "mlp_traced_backprop_over_module", "cnn_traced_lambda1_over_module"} <= set(data["traced"])


def test_bandit_mechanism_example_runs(tmp_path):
    from sggraph.experiments.mnist_bandit import BanditConfig, run_bandit

    run = tmp_path / "run"
    run_bandit(BanditConfig(method="sgprop", steps=6, evaluations=2, eval_batch=50, width=8, layers=2, q=2, slots=2,
                            n_parents=2, snapshots=2, checkpoint_every=3), run)
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "bandit_mechanism.py"), str(run), "--out",
                           str(tmp_path / "fig"), "--n", "4", "--reference", "16", "--samples", "16"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    with (tmp_path / "fig" / "bandit_mechanism.csv").open() as fh:
        rows = list(__import__("csv").DictReader(fh))
    assert [(r["step"], r["layer"]) for r in rows] == [("0", "h1"), ("0", "h2"), ("6", "h1"), ("6", "h2")]
    for r in rows:
        assert float(r["delta2_backprop"]) > 0 and 0 <= float(r["lambda_star"]) <= 1
        assert abs(float(r["mixture_variance_term"]) + float(r["mixture_bias2"]) - float(r["delta2_mixture"])) < 1e-9
    assert (tmp_path / "fig" / "bandit_mechanism.png").stat().st_size > 0


def test_bandit_generalization_example_matches_the_runs_own_evaluation(tmp_path):
    """The script's held-out reward of a run's final checkpoint is the run's last evaluation when that
    evaluation covers the whole held-out set (so the script loads the final parameters, not fresh ones)."""
    import csv

    from sggraph.experiments.mnist_bandit import BanditConfig, run_bandit

    small = dict(steps=6, lr=0.02, evaluations=2, eval_size=300, eval_batch=300, width=8, layers=2, q=2, slots=2, n_parents=2)
    finals = {}
    for method, seed in (("sgprop", 0), ("backprop", 0), ("backprop", 1)):
        run = tmp_path / "sweep" / f"method={method},seed={seed}"
        finals[run.name] = run_bandit(BanditConfig(method=method, seed=seed, **small), run)["final_eval_reward"]
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "bandit_generalization.py"),
                           str(tmp_path / "sweep"), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    with (tmp_path / "out" / "generalization_per_run.csv").open() as fh:
        rows = {r["run"]: r for r in csv.DictReader(fh)}
    assert set(rows) == set(finals)
    for name, row in rows.items():
        assert float(row["held_out_reward"]) == pytest.approx(finals[name], abs=2e-6)
        assert int(row["n_held_out"]) == 300 and int(row["step"]) == 6
        assert float(row["gap"]) == pytest.approx(float(row["train_reward"]) - float(row["held_out_reward"]))
    with (tmp_path / "out" / "generalization.csv").open() as fh:
        summary = {r["method"]: r for r in csv.DictReader(fh)}
    assert set(summary) == {"sgprop λ=adaptive lr=0.02", "backprop lr=0.02"}
    backprop = [float(rows[f"method=backprop,seed={s}"]["train_reward"]) for s in (0, 1)]
    assert float(summary["backprop lr=0.02"]["train_reward_mean"]) == pytest.approx(sum(backprop) / 2)
    assert float(summary["backprop lr=0.02"]["train_reward_sem"]) == pytest.approx(abs(backprop[0] - backprop[1]) / 2)


def _small_bench(monkeypatch):
    """The bench's sections shrunk to a few tiny steps."""
    from sggraph.experiments import bench

    monkeypatch.setattr(bench, "bench_bandit", lambda steps, tick: bench_bandit(steps=1, warmup=0, batch=4, tick=tick))
    original = bench.bench_recurrent
    monkeypatch.setattr(bench, "bench_recurrent",
                        lambda tick: original(repeats=1, warmup=0, steps=3, sequences=2, tick=tick))
    popgym = bench.bench_popgym
    monkeypatch.setattr(bench, "bench_popgym", lambda tick: popgym(repeats=1, warmup=0, num_envs=2, tick=tick))
    traced = bench.bench_traced
    monkeypatch.setattr(bench, "bench_traced", lambda steps, tick: traced(steps=1, warmup=0, batch=4, tick=tick))
    return bench


def test_bench_compiled_section_times_eager_and_compiled(monkeypatch, capsys):
    """``sggraph bench --json --compile aot_eager``: the compiled section's keys, from real compiled steps.

    aot_eager (Dynamo + AOTAutograd, no code generation) and the backprop step alone keep the test
    short; the default backend, inductor, generates C++ and takes about a minute per method here.
    """
    from sggraph.cli import main

    bench = _small_bench(monkeypatch)
    compiled = bench.bench_bandit_compiled
    seen = {}

    def small(backend, tick):
        seen["backend"] = backend
        return compiled(steps=1, warmup=0, batch=4, backend=backend, variants=("backprop",), tick=tick)

    monkeypatch.setattr(bench, "bench_bandit_compiled", small)
    assert main(["bench", "--json", "--steps", "1", "--compile", "aot_eager"]) == 0
    data = json.loads(capsys.readouterr().out)["compiled"]
    assert seen["backend"] == data["backend"] == "aot_eager"
    assert data["backprop_eager_ms"] > 0 and data["backprop_compiled_ms"] > 0 and data["backprop_compile_s"] >= 0


def test_bench_table_prints_the_compiled_section(monkeypatch, capsys):
    from sggraph.cli import main

    bench = _small_bench(monkeypatch)
    fixed = {"backend": "inductor", "backprop_eager_ms": 50.0, "backprop_compiled_ms": 31.5, "backprop_compile_s": 46.0,
             "sgprop_adaptive_eager_ms": 130.0, "sgprop_adaptive_compiled_ms": 128.0, "sgprop_adaptive_compile_s": 49.0}
    monkeypatch.setattr(bench, "bench_bandit_compiled", lambda backend, tick: dict(fixed, backend=backend))
    assert main(["bench", "--steps", "1", "--compile"]) == 0
    table = capsys.readouterr().out
    assert "under torch.compile (backend inductor)" in table
    assert "backprop" in table and "compiled   31.50 ms" in table and "(compilation 46 s)" in table
    assert "sgprop_adaptive" in table and "compiled  128.00 ms" in table


def test_bench_progress_total_counts_every_tick(monkeypatch):
    """``run_bench``'s progress total is the number of ticks its sections make, at their default warm-up,
    repeat and variant counts (each section run for real, every step replaced by a 1 ms sleep)."""
    import time

    from sggraph.experiments import bench, popgym
    from sggraph.runtime import progress

    def timer(*args, **kwargs):
        return lambda: time.sleep(1e-3)  # long enough for every median to round above 0

    def train_batch(*args, **kwargs):
        time.sleep(1e-3)
        return {"rollout_seconds": 1e-3}

    monkeypatch.setattr(bench, "_bandit_step_timer", timer)
    monkeypatch.setattr(bench, "_recurrent_step_timer", timer)
    monkeypatch.setattr(popgym, "train_batch", train_batch)
    bars = []

    class Counting(progress.Progress):
        def __init__(self, total, *args, **kwargs):
            super().__init__(total, *args, **kwargs)
            self.total, self.ticks = total, 0
            bars.append(self)

        def update(self, n=1, /, **kwargs):
            self.ticks += n
            super().update(n, **kwargs)

    monkeypatch.setattr(progress, "Progress", Counting)
    for steps, backend in ((1, None), (3, "aot_eager")):
        result = bench.run_bench(steps=steps, compile_backend=backend)
        assert ("compiled" in result) == (backend is not None)
        bar = bars.pop()
        assert bar.ticks == bar.total
