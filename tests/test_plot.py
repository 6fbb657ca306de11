"""`sggraph plot` on synthetic sweep directories: every figure and CSV, numbers checked against numpy."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from sggraph.cli import main
from sggraph.exceptions import ConfigError
from sggraph.sweeps import run_name
from sggraph.sweeps.figures import curve_auc, plot_sweep

SEEDS = (0, 1, 2)
X = np.array([64.0, 128.0, 256.0, 512.0])  # uneven spacing: the AUC must use the trapezoid rule


def _make_run(root: Path, settings: dict, columns: dict[str, np.ndarray], *, x_col: str = "samples",
              finished: bool = True, record: bool = True) -> Path:
    path = root / run_name(settings)
    path.mkdir(parents=True)
    if record:
        (path / "sweep_run.json").write_text(json.dumps({"name": path.name, "grid": settings}))
    names = [x_col, *columns]
    with open(path / "metrics.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(names)
        for i, xv in enumerate(X):
            w.writerow([int(xv), *(repr(float(columns[c][i])) for c in columns)])
    if finished:
        (path / "summary.json").write_text("{}")
    return path


def _read(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _auc(y: np.ndarray) -> float:
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(X)) / (X[-1] - X[0]))


def _sem(a: np.ndarray, axis: int = 0) -> np.ndarray:
    return np.std(a, axis=axis, ddof=1) / np.sqrt(a.shape[axis])


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


@pytest.fixture
def main_sweep(tmp_path):
    """method × lr × seed, with λ per layer for sgprop; y and λ random."""
    rng = np.random.default_rng(0)
    data = {}
    for method in ("sgprop", "backprop"):
        for lr in (0.001, 0.005, 0.02):
            for seed in SEEDS:
                y = rng.uniform(0, 1, len(X))
                cols = {"eval_reward": y, "train_reward": rng.uniform(0, 1, len(X))}
                if method == "sgprop":
                    cols |= {"lambda_h1": rng.uniform(0, 1, len(X)), "lambda_h2": rng.uniform(0, 1, len(X))}
                _make_run(tmp_path / "sweep", {"method": method, "lr": lr, "seed": seed}, cols)
                data[method, lr, seed] = cols
    # an unfinished run is left out
    _make_run(tmp_path / "sweep", {"method": "sgprop", "lr": 0.001, "seed": 9},
              {"eval_reward": np.full(len(X), 100.0)}, finished=False)
    return tmp_path / "sweep", data


def test_plot_main_sweep_numbers_match_numpy(main_sweep, tmp_path, capsys):
    root, data = main_sweep
    out = tmp_path / "figs"
    assert main(["plot", str(root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "18 finished runs (1 unfinished left out" in printed
    for name in ("learning_curves", "lr_sensitivity", "lambda"):
        assert _is_png(out / f"{name}.png") and (out / f"{name}.csv").exists()
    assert not list(out.glob("ablation_*"))

    per_run = _read(out / "auc_per_run.csv")
    assert len(per_run) == 18
    for row in per_run:
        y = data[row["method"], float(row["lr"]), int(row["seed"])]["eval_reward"]
        assert float(row["auc"]) == pytest.approx(_auc(y), rel=1e-12)
        assert float(row["auc"]) == pytest.approx(curve_auc(X, y), rel=1e-12)
        assert float(row["final"]) == y[-1]

    best = {}
    sens = _read(out / "lr_sensitivity.csv")
    assert len(sens) == 6
    for method in ("sgprop", "backprop"):
        rows = [r for r in sens if r["method"] == method]
        assert [float(r["lr"]) for r in rows] == [0.001, 0.005, 0.02]
        means = []
        for r in rows:
            aucs = np.array([_auc(data[method, float(r["lr"]), s]["eval_reward"]) for s in SEEDS])
            assert float(r["auc_mean"]) == pytest.approx(aucs.mean(), rel=1e-12)
            assert float(r["auc_sem"]) == pytest.approx(_sem(aucs), rel=1e-12)
            assert int(r["n_seeds"]) == 3
            means.append(aucs.mean())
        best[method] = [0.001, 0.005, 0.02][int(np.argmax(means))]
        assert [r["best"] for r in rows] == [str(lr == best[method]) for lr in (0.001, 0.005, 0.02)]

    curves = _read(out / "learning_curves.csv")
    assert len(curves) == 2 * len(X)
    for method in ("sgprop", "backprop"):
        rows = [r for r in curves if r["method"] == method]
        assert {float(r["lr"]) for r in rows} == {best[method]}
        ys = np.array([data[method, best[method], s]["eval_reward"] for s in SEEDS])
        np.testing.assert_allclose([float(r["samples"]) for r in rows], X)
        np.testing.assert_allclose([float(r["mean"]) for r in rows], ys.mean(0), rtol=1e-12)
        np.testing.assert_allclose([float(r["sem"]) for r in rows], _sem(ys), rtol=1e-12)

    lam = _read(out / "lambda.csv")
    assert {r["method"] for r in lam} == {"sgprop"}
    for col in ("lambda_h1", "lambda_h2"):
        rows = [r for r in lam if r["column"] == col]
        vals = np.array([data["sgprop", best["sgprop"], s][col] for s in SEEDS])
        np.testing.assert_allclose([float(r["mean"]) for r in rows], vals.mean(0), rtol=1e-12)
        np.testing.assert_allclose([float(r["sem"]) for r in rows], _sem(vals), rtol=1e-12)


def test_plot_ablations_and_panels(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "abl"
    data = {}
    cells = [{"p_flip": p, "n_parents": 5} for p in (0.0, 0.2, 0.4)] + \
            [{"p_flip": 0.4, "n_parents": n} for n in (2, 10)]
    for cell in cells:
        for method in ("sgprop", "backprop"):
            for seed in SEEDS:
                y = rng.uniform(0, 1, len(X))
                _make_run(root, {**cell, "method": method, "seed": seed}, {"eval_reward": y})
                data[cell["p_flip"], cell["n_parents"], method, seed] = y
    # Figure 5(b)-style: a fixed-λ variant at the base cell only
    for seed in SEEDS:
        y = rng.uniform(0, 1, len(X))
        _make_run(root, {"p_flip": 0.4, "n_parents": 5, "method": "sgprop", "lambda": 0.5, "seed": seed},
                  {"eval_reward": y})
        data[0.4, 5, "sgprop lambda=0.5", seed] = y
    written = plot_sweep(root)
    out = root / "figures"
    assert {"learning_curves.png", "ablation_p_flip.png", "ablation_n_parents.png"} <= set(written)
    assert "lr_sensitivity.png" not in written and "lambda.png" not in written
    for name in ("ablation_p_flip", "ablation_n_parents", "learning_curves"):
        assert _is_png(out / f"{name}.png")

    def check(rows, key, values, fixed):
        for method in ("sgprop", "backprop"):
            mine = [r for r in rows if r["method"] == method]
            assert [float(r[key]) for r in mine] == list(values)
            for r, v in zip(mine, values):
                p, n = (v, fixed) if key == "p_flip" else (fixed, v)
                ys = np.array([data[p, n, method, s] for s in SEEDS])
                aucs = np.array([_auc(y) for y in ys])
                assert float(r["auc_mean"]) == pytest.approx(aucs.mean(), rel=1e-12)
                assert float(r["auc_sem"]) == pytest.approx(_sem(aucs), rel=1e-12)
                assert float(r["final_mean"]) == pytest.approx(ys[:, -1].mean(), rel=1e-12)
                assert float(r["final_sem"]) == pytest.approx(_sem(ys[:, -1]), rel=1e-12)

    p_rows = _read(out / "ablation_p_flip.csv")
    assert {r["slice"] for r in p_rows} == {"n_parents=5"}  # the other n_parents have one p_flip each
    assert {r["method"] for r in p_rows} == {"sgprop", "backprop"}  # the fixed-λ variant has one point
    check(p_rows, "p_flip", (0.0, 0.2, 0.4), 5)
    n_rows = _read(out / "ablation_n_parents.csv")
    assert {r["slice"] for r in n_rows} == {"p_flip=0.4"}
    check(n_rows, "n_parents", (2, 5, 10), 0.4)

    curves = _read(out / "learning_curves.csv")
    assert len({r["panel"] for r in curves}) == 5  # one panel per (p_flip, n_parents)
    base = [r for r in curves if r["panel"] == "p_flip=0.4, n_parents=5"]
    assert {r["method"] for r in base} == {"sgprop", "backprop", "sgprop lambda=0.5"}
    fixed = [r for r in base if r["method"] == "sgprop lambda=0.5"]
    ys = np.array([data[0.4, 5, "sgprop lambda=0.5", s] for s in SEEDS])
    np.testing.assert_allclose([float(r["mean"]) for r in fixed], ys.mean(0), rtol=1e-12)


def test_plot_panels_without_a_method_and_ablations_without_a_slice(tmp_path):
    """A method missing from a panel has no learning-rate curve there; settings that vary only
    together (never one with the other fixed) make panels but no ablation figure."""
    rng = np.random.default_rng(3)
    root = tmp_path / "apart"
    cells = [({"p_flip": 0.0, "n_parents": 2}, ("sgprop", "backprop")), ({"p_flip": 0.2, "n_parents": 5}, ("sgprop",))]
    for cell, methods in cells:
        for method in methods:
            for lr in (0.001, 0.01):
                for seed in (0, 1):
                    _make_run(root, {**cell, "method": method, "lr": lr, "seed": seed},
                              {"eval_reward": rng.uniform(0, 1, len(X))})
    written = plot_sweep(root)
    assert set(written) == {"auc_per_run.csv", "learning_curves.png", "learning_curves.csv", "lr_sensitivity.png",
                            "lr_sensitivity.csv"}
    sens = _read(root / "figures" / "lr_sensitivity.csv")
    assert [(r["panel"], r["method"], r["lr"]) for r in sens] == [
        ("p_flip=0.0, n_parents=2", "backprop", "0.001"), ("p_flip=0.0, n_parents=2", "backprop", "0.01"),
        ("p_flip=0.0, n_parents=2", "sgprop", "0.001"), ("p_flip=0.0, n_parents=2", "sgprop", "0.01"),
        ("p_flip=0.2, n_parents=5", "sgprop", "0.001"), ("p_flip=0.2, n_parents=5", "sgprop", "0.01")]
    curves = _read(root / "figures" / "learning_curves.csv")
    assert [(r["panel"], r["method"]) for r in curves[::len(X)]] == [
        ("p_flip=0.0, n_parents=2", "backprop"), ("p_flip=0.0, n_parents=2", "sgprop"),
        ("p_flip=0.2, n_parents=5", "sgprop")]


def test_plot_popgym_columns_and_names_without_records(tmp_path):
    """success_rate over episodes, λ mean, model/method variants; settings read from directory names."""
    rng = np.random.default_rng(2)
    root = tmp_path / "pop"
    data = {}
    for variant in ({"model": "sparsenet", "method": "sgprop"}, {"model": "gru"}):
        for lr in (0.0005, 0.002):
            for seed in (0, 1):
                cols = {"success_rate": rng.uniform(0, 1, len(X)), "loss": rng.normal(size=len(X))}
                if variant.get("method") == "sgprop":
                    cols["lambda_mean"] = rng.uniform(0.5, 1, len(X))
                _make_run(root, {**variant, "lr": lr, "seed": seed}, cols, x_col="episodes", record=False)
                data[variant["model"], lr, seed] = cols
    out = tmp_path / "f"
    written = plot_sweep(root, out)
    assert {"learning_curves.png", "lr_sensitivity.png", "lambda.png"} <= set(written)
    curves = _read(out / "learning_curves.csv")
    assert set(curves[0]) >= {"episodes", "mean", "sem"}
    assert {r["method"] for r in curves} == {"sparsenet sgprop", "gru"}
    sens = _read(out / "lr_sensitivity.csv")
    for r in sens:
        model = "gru" if r["method"] == "gru" else "sparsenet"
        aucs = np.array([_auc(data[model, float(r["lr"]), s]["success_rate"]) for s in (0, 1)])
        assert float(r["auc_mean"]) == pytest.approx(aucs.mean(), rel=1e-12)
        assert float(r["auc_sem"]) == pytest.approx(_sem(aucs), rel=1e-12)
    lam = _read(out / "lambda.csv")
    assert {(r["method"], r["column"]) for r in lam} == {("sparsenet sgprop", "lambda_mean")}


def test_plot_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no finished run"):
        plot_sweep(tmp_path / "empty")
    assert main(["plot", str(tmp_path / "missing")]) == 2
    assert "no sweep directory" in capsys.readouterr().err
    _make_run(tmp_path / "s", {"seed": 0}, {"eval_reward": np.ones(len(X))})
    assert main(["plot", str(tmp_path / "s"), "--y", "reward"]) == 2
    err = capsys.readouterr().err
    assert "column 'reward'" in err and "eval_reward" in err and "Traceback" not in err
