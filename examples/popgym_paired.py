"""Does synthetic-gradient propagation help most with few samples? A paired test of the POPGym claim.

The paper (Figures 3 and 7) says sgprop helps the recurrent SparseNet most when each update sees
few episodes (20 parallel environments) and less with 40. For every seed that has both SparseNet
runs (sgprop and backprop, the same learning rate) at both environment counts, this computes

    d_n(seed) = metric(sgprop) − metric(backprop)        at n = 20 and n = 40
    DiD(seed) = d_20(seed) − d_40(seed)

for two metrics: the final success rate (mean of the last 30 batches) and the AUC (mean success
rate over all batches). It reports the means, a percentile bootstrap 95 % CI over seeds (10,000
resamples, seeds resampled as units, so each seed's four runs stay together), and how many seeds
a two-sided test at 5 % would need for 80 % power if the observed mean and spread were the truth
(n = ((1.96 + 0.84) · sd / |mean|)²).

    python examples/popgym_paired.py ~/sggraph-runs/popgym-escape-20 ~/sggraph-runs/popgym-escape-40 \\
        --lr 0.001 --out examples/results/popgym_escape_paired.csv

A run is read from its ``config.json`` (model, method, lr, seed, num_envs) and ``metrics.csv``
(``success_rate`` per batch); only finished runs (with ``summary.json``) count.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import numpy as np

LAST = 30  # batches in the "final" success rate


def load_runs(sweep_dirs: list[Path], lr: float) -> dict[tuple[int, str, int], dict[str, float]]:
    """``{(num_envs, method, seed): {"final": ..., "auc": ...}}`` for finished SparseNet runs at ``lr``."""
    runs = {}
    for sweep in sweep_dirs:
        for run in sorted(p for p in sweep.iterdir() if (p / "summary.json").exists()):
            cfg = json.loads((run / "config.json").read_text())
            if cfg.get("model") != "sparsenet" or not math.isclose(float(cfg["lr"]), lr):
                continue
            with (run / "metrics.csv").open() as fh:
                success = np.array([float(r["success_rate"]) for r in csv.DictReader(fh)])
            runs[(int(cfg["num_envs"]), cfg["method"], int(cfg["seed"]))] = {
                "final": float(success[-LAST:].mean()), "auc": float(success.mean())}
    return runs


def paired_table(runs: dict, small: int, large: int) -> list[dict]:
    """One row per seed with all four runs."""
    seeds = sorted({s for (_, _, s) in runs})
    rows = []
    for s in seeds:
        keys = [(n, m, s) for n in (small, large) for m in ("sgprop", "backprop")]
        if not all(k in runs for k in keys):
            continue
        row = {"seed": s}
        for metric in ("final", "auc"):
            for n in (small, large):
                row[f"{metric}_sgprop_{n}"] = runs[(n, "sgprop", s)][metric]
                row[f"{metric}_backprop_{n}"] = runs[(n, "backprop", s)][metric]
                row[f"{metric}_diff_{n}"] = row[f"{metric}_sgprop_{n}"] - row[f"{metric}_backprop_{n}"]
            row[f"{metric}_did"] = row[f"{metric}_diff_{small}"] - row[f"{metric}_diff_{large}"]
        rows.append(row)
    return rows


def bootstrap_ci(values: np.ndarray, resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile 95 % CI of the mean (resampling the values as units)."""
    if len(values) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def seeds_needed(values: np.ndarray) -> float:
    """Seeds for 80 % power at two-sided 5 % if the observed mean and sd were the truth."""
    if len(values) < 2 or values.mean() == 0:
        return float("nan")
    sd = values.std(ddof=1)
    return math.ceil(((1.96 + 0.84) * sd / abs(values.mean())) ** 2)


def summarize(rows: list[dict], small: int, large: int) -> list[dict]:
    out = []
    for metric in ("final", "auc"):
        for name in (f"{metric}_diff_{small}", f"{metric}_diff_{large}", f"{metric}_did"):
            v = np.array([r[name] for r in rows])
            lo, hi = bootstrap_ci(v)
            out.append({"quantity": name, "seeds": len(v), "mean": float(v.mean()) if len(v) else float("nan"),
                        "sem": float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan"),
                        "ci_low": lo, "ci_high": hi, "seeds_for_80pct_power": seeds_needed(v)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("sweeps", type=Path, nargs="+", help="sweep (or run) directories holding the runs")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--small", type=int, default=20)
    ap.add_argument("--large", type=int, default=40)
    ap.add_argument("--out", type=Path, help="CSV of the per-seed table and the summary")
    args = ap.parse_args()
    rows = paired_table(load_runs(args.sweeps, args.lr), args.small, args.large)
    if not rows:
        raise SystemExit("no seed has all four runs (sgprop/backprop at both environment counts) yet")
    summary = summarize(rows, args.small, args.large)
    for r in rows:
        print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))
    for s in summary:
        print(f"{s['quantity']:16s} seeds={s['seeds']}  mean {s['mean']:+.3f} ± {s['sem']:.3f}  "
              f"95% CI [{s['ci_low']:+.3f}, {s['ci_high']:+.3f}]  seeds for 80% power: {s['seeds_for_80pct_power']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        with args.out.with_name(args.out.stem + "_summary.csv").open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(summary[0]))
            w.writeheader()
            w.writerows(summary)
        print(f"wrote {args.out} and {args.out.with_name(args.out.stem + '_summary.csv')}")


if __name__ == "__main__":
    main()
