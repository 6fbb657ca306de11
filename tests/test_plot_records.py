"""`sggraph plot` regenerates a study's CSVs and figures from committed run records alone.

The fixture is two real committed records (the first 15 batches of the POPGym escape pair at
seed 6, 20 environments) laid out as ``examples/sync_runs.py`` commits them:
``NAME/{config.json, metrics.csv, summary.json, sweep_run.json}``, no checkpoint, no events.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sggraph.sweeps.records import auc_and_final

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "two-runs"


def test_plot_from_records_alone(tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(FIXTURE, runs)
    assert not list(runs.rglob("checkpoint.pt")) and not list(runs.rglob("events.*"))
    out = tmp_path / "figures"
    done = subprocess.run([sys.executable, "-m", "sggraph", "plot", str(runs), "--out", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with open(out / "auc_per_run.csv", newline="") as fh:
        rows = {r["run"]: r for r in csv.DictReader(fh)}
    assert set(rows) == {p.name for p in FIXTURE.iterdir()}
    for name, row in rows.items():  # the AUC and final of each record, computed here from its metrics.csv
        with open(FIXTURE / name / "metrics.csv", newline="") as fh:
            metrics = list(csv.DictReader(fh))
        auc, final = auc_and_final([float(m["episodes"]) for m in metrics], [float(m["success_rate"]) for m in metrics])
        assert float(row["auc"]) == pytest.approx(auc, abs=1e-12) and float(row["final"]) == final
    assert {"sgprop", "backprop"} <= {row["method"] for row in rows.values()}
    for figure in ("learning_curves.png", "learning_curves.csv", "lambda.png"):
        assert (out / figure).stat().st_size > 0
