"""The expert network of §5 through the engine (Theorem 5)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sggraph.cli import main
from sggraph.experiments.expert import paired_bootstrap_ratio, sweep
from sggraph.models.expert import (
    ExpertSimulator,
    engine_estimates,
    exact_gradient,
    make_problem,
    numpy_estimates,
    sample_feedback,
)


@pytest.mark.parametrize("case", ["noisy", "activation", "partial"])
@pytest.mark.parametrize("d,k,n", [(4, 2, 1), (6, 3, 3), (5, 5, 2)])
def test_engine_equals_numpy_tabular_estimator(case, d, k, n):
    rng = np.random.default_rng([d, k, n])
    prob = make_problem(d, k, 4, case, rng)
    ghat = sample_feedback(prob, n, rng)
    bp, sg = engine_estimates(prob, ghat)
    nbp, nsg = numpy_estimates(prob, ghat)
    np.testing.assert_allclose(bp, nbp, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(sg, nsg, rtol=1e-10, atol=1e-14)
    if k < d:
        assert not np.allclose(bp, sg)  # pooling really changes the estimate


def test_simulator_generators_hold_the_pooled_means():
    rng = np.random.default_rng(3)
    prob = make_problem(5, 2, 3, "noisy", rng)
    ghat = sample_feedback(prob, 2, rng)
    sim = ExpertSimulator(5, 2, 3)
    sim.estimates(prob, ghat)
    big_r = 2 ** 5
    for j, table in enumerate(sim.tables):
        # each of the 2^k keys pooled 2^(d-k) partitions × n samples of ĝ / (R n)
        assert table.counts.tolist() == [2 ** 3 * 2] * 4
        key = ((prob.states[:, prob.coords[j]] > 0) * [1, 2]).sum(1)
        for code in range(4):
            want = ghat[key == code, :, j].mean() / (big_r * 2)
            got = table.sums[table.keys.tolist().index(
                [1.0 if code & (1 << c) else -1.0 for c in range(2)])] / table.counts[0]
            assert float(got) == pytest.approx(want)


def test_backprop_is_unbiased_for_the_exact_gradient():
    rng = np.random.default_rng(0)
    prob = make_problem(4, 2, 3, "activation", rng)
    truth = exact_gradient(prob)
    mean = np.mean([numpy_estimates(prob, sample_feedback(prob, 1, rng))[0] for _ in range(3000)], axis=0)
    assert np.abs(mean - truth).max() < 0.05 * np.abs(truth).max()


@pytest.mark.parametrize("d,k", [(8, 2), (10, 3)])
def test_theorem5_ratio_within_bootstrap_ci(d, k):
    rows = sweep([d], [k], ["noisy", "activation", "partial"], [1], trials=20)
    for row in rows:
        assert row["ci_low"] <= 2 ** (d - k) <= row["ci_high"], row


def test_paired_bootstrap_ratio_matches_numpy():
    e1, e2 = np.array([4.0, 2.0, 6.0]), np.array([1.0, 1.0, 2.0])
    ratio, low, high = paired_bootstrap_ratio(e1, e2, np.random.default_rng(0), resamples=500)
    assert ratio == pytest.approx(3.0)
    assert low <= ratio <= high


def test_expert_cli_json_and_files(tmp_path, capsys):
    assert main(["expert", "--d", "4", "5", "--k", "2", "--case", "noisy", "--n", "1", "--trials", "3",
                 "--json", "--out", str(tmp_path)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["d"], r["k"]) for r in rows] == [(4, 2), (5, 2)]
    assert set(rows[0]) == {"case", "d", "k", "n", "mse_backprop", "mse_synthetic", "ratio", "ci_low", "ci_high",
                            "theory"}
    assert (tmp_path / "summary.csv").read_text().startswith("case,d,k,n,")
    assert json.loads((tmp_path / "summary.json").read_text()) == rows
    png = (tmp_path / "ratio_noisy.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv,needle", [
    (["--d", "3", "--k", "4"], "k=4 is larger than d=3"),
    (["--n", "0"], "n=0"),
    (["--case", "loud"], "unknown case 'loud'"),
])
def test_expert_cli_bad_input_exits_2(argv, needle, capsys):
    assert main(["expert", "--trials", "1", *argv]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Fix:" in err and "Traceback" not in err
