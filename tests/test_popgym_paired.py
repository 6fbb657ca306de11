"""``examples/popgym_paired.py`` computes the pre-registered statistic, from aggregates and run records alike.

A tiny fixture: two study directories (20 and 40 environments); seeds 0–1 come as the committed
aggregate ``auc_per_run.csv`` (as seeds 0–5 of the escape study do), seeds 2–3 as run records under
``runs/`` (as the new seeds do). Each number is checked against a direct computation written here
(trapezoid over episodes / span; the last batch), not against the script's own helpers.
"""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
BATCHES = 12


@pytest.fixture(scope="module")
def paired_mod():
    spec = importlib.util.spec_from_file_location("popgym_paired", ROOT / "examples" / "popgym_paired.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _auc(episodes: np.ndarray, success: np.ndarray) -> float:
    area = sum((success[i] + success[i + 1]) / 2 * (episodes[i + 1] - episodes[i]) for i in range(len(success) - 1))
    return area / (episodes[-1] - episodes[0])


def _make_studies(root: Path) -> tuple[Path, Path, dict]:
    """Two studies with 4 seeds of SparseNet sgprop/backprop at lr 1e-3 and one GRU run each; the curves."""
    rng = np.random.default_rng(7)
    curves = {}
    studies = {}
    for n in (20, 40):
        study = root / f"escape-{n}"
        (study / "runs").mkdir(parents=True)
        aggregate = [["run", "panel", "method", "lr", "seed", "auc", "final"]]
        for method in ("sgprop", "backprop"):
            for seed in range(4):
                success = np.round(rng.uniform(0, 1, size=BATCHES) * n) / n
                episodes = np.arange(1, BATCHES + 1) * n
                curves[(n, method, seed)] = (episodes, success)
                name = f"model=sparsenet,method={method},lr=0.001,seed={seed}"
                if seed < 2:  # the committed aggregate only
                    aggregate.append([name, "", f"sparsenet {method}", "0.001", seed,
                                      _auc(episodes, success), success[-1]])
                else:  # a committed run record only
                    run = study / "runs" / name
                    run.mkdir()
                    (run / "config.json").write_text(json.dumps(
                        {"model": "sparsenet", "method": method, "lr": 0.001, "seed": seed, "num_envs": n}))
                    (run / "summary.json").write_text("{}")
                    with (run / "metrics.csv").open("w", newline="") as fh:
                        w = csv.writer(fh)
                        w.writerow(["batch", "episodes", "success_rate"])
                        w.writerows([[i + 1, e, v] for i, (e, v) in enumerate(zip(episodes, success))])
        aggregate.append(["model=gru,lr=0.001,seed=0", "", "gru", "0.001", 0, 0.9, 0.9])  # not a SparseNet: ignored
        aggregate.append(["model=sparsenet,method=sgprop,lr=0.002,seed=0", "", "sparsenet sgprop", "0.002", 0,
                          0.9, 0.9])  # another rate: ignored
        with (study / "auc_per_run.csv").open("w", newline="") as fh:
            csv.writer(fh).writerows(aggregate)
        studies[n] = study
    return studies[20], studies[40], curves


def test_paired_statistic_is_the_preregistered_one(paired_mod, tmp_path):
    small, large, curves = _make_studies(tmp_path)
    rows = paired_mod.paired_table(paired_mod.load_runs(small, large, 0.001), 20, 40)
    assert [r["seed"] for r in rows] == [0, 1, 2, 3]
    assert [r["source"] for r in rows] == ["aggregate", "aggregate", "record", "record"]

    def auc(n, m, s):
        return _auc(*curves[(n, m, s)])

    did = np.array([(auc(20, "sgprop", s) - auc(20, "backprop", s)) - (auc(40, "sgprop", s) - auc(40, "backprop", s))
                    for s in range(4)])
    np.testing.assert_allclose([r["auc_did"] for r in rows], did, rtol=0, atol=1e-12)
    final_did = [(curves[(20, "sgprop", s)][1][-1] - curves[(20, "backprop", s)][1][-1])
                 - (curves[(40, "sgprop", s)][1][-1] - curves[(40, "backprop", s)][1][-1]) for s in range(4)]
    np.testing.assert_allclose([r["final_did"] for r in rows], final_did, rtol=0, atol=1e-12)

    summary = {s["quantity"]: s for s in paired_mod.summarize(rows, 20, 40)}
    s = summary["auc_did"]
    sem = did.std(ddof=1) / 2.0
    assert s["seeds"] == 4 and s["mean"] == pytest.approx(did.mean(), abs=1e-12)
    assert s["sem"] == pytest.approx(sem, rel=1e-12)
    t975_df3 = 3.182446305284263  # Student t, 0.975 quantile, 3 degrees of freedom (tables)
    assert s["t_low"] == pytest.approx(did.mean() - t975_df3 * sem, rel=1e-9)
    assert s["t_high"] == pytest.approx(did.mean() + t975_df3 * sem, rel=1e-9)
    rng = np.random.default_rng(0)  # the pre-registered bootstrap: 10,000 resamples of seeds, RNG seed 0
    means = did[rng.integers(0, 4, size=(10_000, 4))].mean(axis=1)
    assert (s["boot_low"], s["boot_high"]) == (np.percentile(means, 2.5), np.percentile(means, 97.5))

    assert paired_mod.decision(list(summary.values())).startswith("pending: 4 paired seeds")
    verdict = paired_mod.decision(list(summary.values()), min_seeds=4)
    excluded = s["boot_low"] > 0 or s["boot_high"] < 0
    assert verdict.startswith("supported" if excluded else "not supported")


def test_decision_rule_reads_the_bootstrap_interval(paired_mod):
    def summary(lo, hi, n=20):
        return [{"quantity": "auc_did", "seeds": n, "mean": (lo + hi) / 2, "boot_low": lo, "boot_high": hi}]

    assert paired_mod.decision(summary(0.01, 0.2)).startswith("supported")
    assert paired_mod.decision(summary(-0.2, -0.01)).startswith("supported")
    assert paired_mod.decision(summary(-0.01, 0.2)).startswith("not supported")
    assert paired_mod.decision(summary(0.01, 0.2, n=15)).startswith("pending: 15 paired seeds")


def test_a_run_in_both_sources_must_agree(paired_mod, tmp_path):
    small, large, _ = _make_studies(tmp_path)
    with (small / "auc_per_run.csv").open("a", newline="") as fh:  # seed 2's record, with another AUC
        csv.writer(fh).writerow(["model=sparsenet,method=sgprop,lr=0.001,seed=2", "", "sparsenet sgprop", "0.001", 2,
                                 0.123, 1.0])
    with pytest.raises(SystemExit, match="must be the same run"):
        paired_mod.load_runs(small, large, 0.001)


def test_a_record_in_the_wrong_study_is_refused(paired_mod, tmp_path):
    small, large, _ = _make_studies(tmp_path)
    with pytest.raises(SystemExit, match="num_envs is 40, but this study was given as the 20-environment one"):
        paired_mod.load_runs(large, small, 0.001)


def test_committed_paired_csv_is_what_the_script_computes(paired_mod):
    """The committed ``popgym_escape_paired.csv`` equals a fresh run of the script on the committed studies, seed
    for seed (run records committed after the CSV was last regenerated add seeds; they do not change these)."""
    results = ROOT / "examples" / "results"
    rows = paired_mod.paired_table(paired_mod.load_runs(results / "popgym-escape-20", results / "popgym-escape-40",
                                                        0.001), 20, 40)
    with (results / "popgym_escape_paired.csv").open() as fh:
        committed = list(csv.DictReader(fh))
    seeds = [int(r["seed"]) for r in committed]
    assert set(seeds) <= {r["seed"] for r in rows} and len(seeds) >= 6
    rows = [r for r in rows if r["seed"] in seeds]
    assert seeds == [r["seed"] for r in rows]
    for got, row in zip(committed, rows):
        assert float(got["auc_did"]) == pytest.approx(row["auc_did"], abs=1e-12)
        assert float(got["final_did"]) == pytest.approx(row["final_did"], abs=1e-12)
