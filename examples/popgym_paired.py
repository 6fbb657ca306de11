"""Does synthetic-gradient propagation help most with few samples? The pre-registered paired test.

The paper (Figures 3 and 7) says sgprop helps the recurrent SparseNet most when each update sees
few episodes (20 parallel environments) and less with 40. The test, fixed before the decisive
runs (``examples/results/README.md``, "POPGym escape: the few-sample claim (pre-registered)"):
for every seed that has both SparseNet runs (sgprop and backprop, the same learning rate) at both
environment counts,

    d_n(seed) = AUC(sgprop) − AUC(backprop)        at n = 20 and n = 40
    DiD(seed) = d_20(seed) − d_40(seed)

with the project's one definition of a run's AUC and final value
(:func:`sggraph.sweeps.figures.auc_and_final`: the mean height of the success-rate curve over
episodes, trapezoid rule; the success rate of the last batch). The primary statistic is the mean
DiD of the AUC; the same for the final success rate is secondary. Each is reported with a
percentile bootstrap 95 % CI (10,000 resamples of seeds, each seed's four runs kept together,
RNG seed 0) and a t-interval (mean ± t₀.₉₇₅,ₙ₋₁ · SEM). Decision: "supported" if the bootstrap
CI of the AUC DiD excludes 0, "not supported" otherwise, once at least ``--min-seeds`` (16)
paired seeds are in; before that, "pending".

Each of the two study directories (``--small`` environments first) is read in two ways, both
giving the same numbers for a run:

- ``STUDY/auc_per_run.csv`` (written by ``sggraph plot``): the committed aggregates, for runs
  whose full records no longer exist (seeds 0–5 of the escape study);
- run records: ``STUDY/runs/*/`` (``examples/sync_runs.py``) and ``STUDY/*/`` (a sweep
  directory), each a finished run (``summary.json``) with ``config.json`` and ``metrics.csv``,
  whose AUC and final value are computed here from the curve.

A run found both ways must agree (to 1e-9) or the script stops and names it.

    python examples/popgym_paired.py examples/results/popgym-escape-20 examples/results/popgym-escape-40 \\
        --lr 0.001 --out examples/results/popgym_escape_paired.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import numpy as np

from sggraph.sweeps.figures import auc_and_final
from sggraph.sweeps.stats import bootstrap_ci, paired

METRICS = ("auc", "final")  # the primary statistic first
RESAMPLES, RNG_SEED = 10_000, 0
MIN_SEEDS = 16
TOLERANCE = 1e-9

Key = tuple[int, str, int]  # (num_envs, method, seed)


def _settings_from_name(name: str) -> dict[str, str]:
    """``model=sparsenet,method=sgprop,lr=0.001,seed=0`` -> its settings (strings)."""
    return dict(part.split("=", 1) for part in name.split(",") if "=" in part)


def _add(runs: dict, key: Key, values: dict[str, float], source: str) -> None:
    if key in runs:
        old = runs[key]
        if any(abs(old[m] - values[m]) > TOLERANCE for m in METRICS):
            raise SystemExit(f"{source}: num_envs={key[0]} {key[1]} seed {key[2]} gives auc={values['auc']!r}, "
                             f"final={values['final']!r}, but {old['source']} gave auc={old['auc']!r}, "
                             f"final={old['final']!r}; the two must be the same run")
        return
    runs[key] = {**values, "source": source}


def load_aggregate(study: Path, num_envs: int, lr: float, runs: dict) -> None:
    """Add the SparseNet runs at ``lr`` of ``study/auc_per_run.csv`` to ``runs``."""
    path = study / "auc_per_run.csv"
    if not path.is_file():
        return
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            s = _settings_from_name(row["run"])
            if s.get("model") != "sparsenet" or "method" not in s or not math.isclose(float(s.get("lr", "nan")), lr):
                continue
            _add(runs, (num_envs, s["method"], int(row["seed"])),
                 {"auc": float(row["auc"]), "final": float(row["final"])}, str(path))


def run_dirs(study: Path) -> list[Path]:
    """Finished run directories of a study: ``study/runs/*`` (committed records) and ``study/*`` (a sweep)."""
    found = []
    for parent in (study / "runs", study):
        if parent.is_dir():
            found += sorted(p for p in parent.iterdir()
                            if p.is_dir() and (p / "summary.json").is_file() and (p / "metrics.csv").is_file())
    return found


def load_records(study: Path, num_envs: int, lr: float, runs: dict) -> None:
    """Add the finished SparseNet runs at ``lr`` among ``study``'s run records to ``runs``."""
    for run in run_dirs(study):
        cfg = json.loads((run / "config.json").read_text())
        if cfg.get("model") != "sparsenet" or not math.isclose(float(cfg["lr"]), lr):
            continue
        if int(cfg["num_envs"]) != num_envs:
            raise SystemExit(f"{run}: num_envs is {cfg['num_envs']}, but this study was given as the "
                             f"{num_envs}-environment one; check the order of the two directories")
        with (run / "metrics.csv").open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        auc, final = auc_and_final([float(r["episodes"]) for r in rows], [float(r["success_rate"]) for r in rows])
        _add(runs, (num_envs, cfg["method"], int(cfg["seed"])), {"auc": auc, "final": final}, str(run))


def load_runs(small_study: Path, large_study: Path, lr: float, small: int = 20, large: int = 40) -> dict:
    """``{(num_envs, method, seed): {"auc", "final", "source"}}`` for the SparseNet runs at ``lr``."""
    runs: dict = {}
    for study, n in ((small_study, small), (large_study, large)):
        if not study.is_dir():
            raise SystemExit(f"no study directory {study}")
        load_records(study, n, lr, runs)
        load_aggregate(study, n, lr, runs)
    return runs


def paired_table(runs: dict, small: int, large: int) -> list[dict]:
    """One row per seed with all four runs, in seed order."""
    rows = []
    for s in sorted({seed for (_, _, seed) in runs}):
        keys = [(n, m, s) for n in (small, large) for m in ("sgprop", "backprop")]
        if not all(k in runs for k in keys):
            continue
        row: dict = {"seed": s}
        for metric in METRICS:
            for n in (small, large):
                row[f"{metric}_sgprop_{n}"] = runs[(n, "sgprop", s)][metric]
                row[f"{metric}_backprop_{n}"] = runs[(n, "backprop", s)][metric]
                row[f"{metric}_diff_{n}"] = row[f"{metric}_sgprop_{n}"] - row[f"{metric}_backprop_{n}"]
            row[f"{metric}_did"] = row[f"{metric}_diff_{small}"] - row[f"{metric}_diff_{large}"]
        row["source"] = "aggregate" if all(runs[k]["source"].endswith("auc_per_run.csv") for k in keys) else "record"
        rows.append(row)
    return rows


def seeds_needed(values: np.ndarray) -> float:
    """Seeds for 80 % power at two-sided 5 % if the observed mean and sd were the truth."""
    if len(values) < 2 or values.mean() == 0:
        return float("nan")
    return math.ceil(((1.96 + 0.84) * values.std(ddof=1) / abs(values.mean())) ** 2)


def summarize(rows: list[dict], small: int, large: int) -> list[dict]:
    """Mean, SEM, t-interval and bootstrap CI of each metric's differences at each size and of its DiD."""
    out = []
    for metric in METRICS:
        for name in (f"{metric}_diff_{small}", f"{metric}_diff_{large}", f"{metric}_did"):
            v = np.array([r[name] for r in rows], dtype=float)
            d = paired(v)
            lo, hi = bootstrap_ci(v, resamples=RESAMPLES, seed=RNG_SEED)
            out.append({"quantity": name, "seeds": d.n, "mean": d.mean, "sem": d.sem, "t_low": d.low,
                        "t_high": d.high, "boot_low": lo, "boot_high": hi, "seeds_for_80pct_power": seeds_needed(v)})
    return out


def decision(summary: list[dict], min_seeds: int = MIN_SEEDS) -> str:
    """The pre-registered decision on the AUC difference of differences."""
    did = next(s for s in summary if s["quantity"] == "auc_did")
    if did["seeds"] < min_seeds:
        return f"pending: {did['seeds']} paired seeds, the decision needs at least {min_seeds}"
    excluded = did["boot_low"] > 0 or did["boot_high"] < 0
    return ("supported" if excluded else "not supported") + (
        f" (AUC DiD {did['mean']:+.3f}, bootstrap 95 % CI [{did['boot_low']:+.3f}, {did['boot_high']:+.3f}], "
        f"n = {did['seeds']})")


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("small_study", type=Path, help="the study directory with --small environments")
    ap.add_argument("large_study", type=Path, help="the study directory with --large environments")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--small", type=int, default=20)
    ap.add_argument("--large", type=int, default=40)
    ap.add_argument("--min-seeds", type=int, default=MIN_SEEDS, help="paired seeds the decision needs")
    ap.add_argument("--out", type=Path, help="CSV of the per-seed table (and NAME_summary.csv beside it)")
    args = ap.parse_args(argv)
    runs = load_runs(args.small_study, args.large_study, args.lr, args.small, args.large)
    rows = paired_table(runs, args.small, args.large)
    if not rows:
        raise SystemExit("no seed has all four runs (sgprop/backprop at both environment counts) yet")
    summary = summarize(rows, args.small, args.large)
    for r in rows:
        print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))
    for s in summary:
        print(f"{s['quantity']:16s} seeds={s['seeds']}  mean {s['mean']:+.3f} ± {s['sem']:.3f}  "
              f"t-interval [{s['t_low']:+.3f}, {s['t_high']:+.3f}]  "
              f"bootstrap 95% CI [{s['boot_low']:+.3f}, {s['boot_high']:+.3f}]  "
              f"seeds for 80% power: {s['seeds_for_80pct_power']}")
    print("decision:", decision(summary, args.min_seeds))
    if args.out:
        summary_path = args.out.with_name(args.out.stem + "_summary.csv")
        _write(args.out, rows)
        _write(summary_path, summary)
        print(f"wrote {args.out} and {summary_path}")


if __name__ == "__main__":
    main()
