"""examples/authors_bandit_runs.py: the authors' arguments, the shared digits, the report's statistics."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from sggraph.sweeps.stats import t_quantile

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def abr():
    sys.path.insert(0, str(ROOT / "examples"))
    spec = importlib.util.spec_from_file_location("authors_bandit_runs", ROOT / "examples" / "authors_bandit_runs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["authors_bandit_runs"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("authors_bandit_runs", None)
    sys.path.remove(str(ROOT / "examples"))


def value(args, flag, n=1):
    i = args.index(flag)
    return args[i + 1:i + 1 + n]


def test_each_method_gets_run_sweeps_settings(abr, tmp_path):
    expected = {  # run_sweeps.sh run_one: (policy_model, method, theta_momentum, lr, residual flag, theta)
        "sparse_backprop": ("sparse", "backprop", "1.0", "0.001", "--residual", None),
        "sparse_sgprop_adaptive": ("sparse", "sgprop", "0.9", "0.005", "--residual", ["0.9"] * 5),
        "sparse_sgprop_fixed_theta": ("sparse", "sgprop", "1.0", "0.005", "--residual", ["0.9"] * 5),
        "mlp": ("mlp", "backprop", "1.0", "2e-5", "--no_residual", None),
    }
    assert set(abr.METHODS) == set(expected)
    for method, (model, algo, momentum, lr, residual, theta) in expected.items():
        args = abr.authors_args(method, 3, 1500, tmp_path)
        assert args.count("--method") == 1 and value(args, "--method") == [algo]
        assert value(args, "--policy_model") == [model] and value(args, "--theta_momentum") == [momentum]
        assert value(args, "--policy_lr") == [lr] and residual in args
        assert value(args, "--seed") == ["3"] and value(args, "--train_steps") == ["1500"]
        assert value(args, "--classes", 9) == ["0", "1", "3", "4", "5", "6", "7", "8", "9"]
        assert value(args, "--p_flip") == ["0.4"] and value(args, "--eval_batch_size") == ["4000"]
        assert value(args, "--sg_lr") == ["0.005"] and value(args, "--batch_size") == ["64"]
        assert (value(args, "--theta", 5) if theta else "--theta" not in args) == (theta or True)
        assert ("--mlp_width" in args) == (model == "mlp")


def test_the_authors_loader_serves_our_split(abr):
    """Their train/test sets are exactly our bandit's training and held-out digits."""
    import torch

    from sggraph.experiments.mnist_bandit import BanditConfig, bandit_env

    abr.serve_embedded_digits()
    try:
        from torchvision.datasets import MNIST

        train, test = MNIST(train=True), MNIST(train=False)
    finally:
        sys.modules.pop("torchvision", None)
        sys.modules.pop("torchvision.datasets", None)
    env = bandit_env(BanditConfig())
    standardise = lambda d: ((d.data.reshape(len(d.data), -1).float() / 255.0) - 0.1307) / 0.3081  # noqa: E731
    assert len(test.targets) == env.n_eval == 2000 and len(train.targets) == env.n_train
    assert torch.equal(standardise(test), env.eval_contexts) and torch.equal(standardise(train), env.train_contexts)
    classes = (0, 1, 3, 4, 5, 6, 7, 8, 9)
    assert [classes.index(int(c)) for c in test.targets] == env.eval_targets.tolist()


def test_welch_interval_against_a_direct_computation(abr):
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.6, 0.05, 5), rng.normal(0.5, 0.08, 5)
    diff, se, lo, hi = abr.welch(a, b)
    va, vb = np.var(a, ddof=1) / 5, np.var(b, ddof=1) / 5
    df = (va + vb) ** 2 / (va ** 2 / 4 + vb ** 2 / 4)
    assert diff == pytest.approx(a.mean() - b.mean()) and se == pytest.approx(math.sqrt(va + vb))
    assert 4 <= df < 8 and (hi - lo) / 2 == pytest.approx(t_quantile(0.975, df) * se)


def test_report_on_two_codes(abr, tmp_path):
    runs = tmp_path / "runs"
    finals = {"ours": [0.70, 0.74, 0.72], "authors": [0.60, 0.66, 0.63]}
    for code, values in finals.items():
        for seed, final in enumerate(values):
            run = runs / f"code={code},method=sparse_backprop,seed={seed}"
            run.mkdir(parents=True)
            (run / "metrics.csv").write_text(f"step,samples,eval_reward\n1,64,0.1\n100,6400,{final}\n")
            (run / "summary.json").write_text("{}")
    abr.main(["report", str(runs), "--out", str(tmp_path / "out")])
    rows = (tmp_path / "out" / "comparison.csv").read_text().splitlines()
    head, row = rows[0].split(","), dict(zip(rows[0].split(","), rows[1].split(",")))
    assert len(rows) == 2 and row["method"] == "sparse_backprop" and "auc_diff_hi" in head
    assert float(row["final_ours"]) == pytest.approx(0.72) and float(row["final_authors"]) == pytest.approx(0.63)
    assert float(row["final_diff"]) == pytest.approx(0.09)
    assert float(row["auc_ours"]) == pytest.approx((0.1 + 0.72) / 2)  # trapezoid over one interval
    assert (tmp_path / "out" / "curves.png").stat().st_size > 0
