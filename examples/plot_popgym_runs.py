"""Aggregate POPGym run directories into Figure 3 / 7a: success rate along training, mean ± SEM across seeds.

Run:  python examples/plot_popgym_runs.py runs/popgym --env labyrinth_escape --out examples/results

Reads every run directory below RUNS (its config.json and metrics.csv, as written by
`sggraph train popgym`), groups runs by (model, method, lr), smooths each run's per-batch
success rate with a trailing mean over `--window` batches, and plots mean ± SEM across seeds.
Writes popgym_<env>.png and popgym_<env>.csv (every plotted number), popgym_<env>_lambda.png/.csv
(the sgprop runs' mean θ along training) and prints, per group,
the success rate of the last 30 batches and the area under the curve (mean over all
batches), each as mean ± SEM across seeds.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

LABELS = {("sparsenet", "sgprop"): "SparseNet (sgprop)", ("sparsenet", "backprop"): "SparseNet (backprop)",
          ("gru", "backprop"): "GRU", ("lstm", "backprop"): "LSTM"}


def sem(values) -> float:
    values = list(values)
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0


def trailing_mean(x: np.ndarray, window: int) -> np.ndarray:
    c = np.cumsum(np.insert(x, 0, 0.0))
    n = np.minimum(np.arange(1, len(x) + 1), window)
    return (c[1:] - c[np.arange(1, len(x) + 1) - n]) / n


def mean_band(curves: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and SEM across runs per batch, over the batches every run has."""
    stack = np.stack([c[:min(len(c) for c in curves)] for c in curves])
    err = stack.std(0, ddof=1) / math.sqrt(len(curves)) if len(curves) > 1 else np.zeros(stack.shape[1])
    return stack.mean(0), err


def write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", help="directory holding run directories (searched recursively)")
    parser.add_argument("--env", default="labyrinth_escape")
    parser.add_argument("--num-envs", type=int, default=20)
    parser.add_argument("--window", type=int, default=20, help="batches in the trailing mean")
    parser.add_argument("--lr", type=float, nargs="+", help="plot only these learning rates (all are printed)")
    parser.add_argument("--out", default="examples/results")
    args = parser.parse_args()
    groups: dict[tuple, list[tuple[int, np.ndarray]]] = defaultdict(list)
    lambdas: dict[float, list[np.ndarray]] = defaultdict(list)
    for cfg_path in sorted(Path(args.runs).rglob("config.json")):
        run = cfg_path.parent
        if not (run / "summary.json").exists():
            continue  # unfinished
        cfg = json.loads(cfg_path.read_text())
        if cfg.get("env") != args.env or cfg.get("num_envs") != args.num_envs:
            continue
        rows = list(csv.DictReader((run / "metrics.csv").open()))
        groups[(cfg["model"], cfg["method"], cfg["lr"])].append(
            (cfg["seed"], np.array([float(r["success_rate"]) for r in rows])))
        if rows and "lambda_mean" in rows[0]:
            lambdas[cfg["lr"]].append(np.array([float(r["lambda_mean"]) for r in rows]))
    if not groups:
        raise SystemExit(f"no finished {args.env} runs with {args.num_envs} envs below {args.runs}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def wanted(lr: float) -> bool:
        return args.lr is None or any(abs(lr - x) < 1e-12 for x in args.lr)

    fig, ax = plt.subplots(figsize=(5.8, 3.9))
    rows = []
    for key in sorted(groups, key=lambda k: (list(LABELS).index(k[:2]), k[2])):
        runs = groups[key]
        length = min(len(r) for _, r in runs)
        mean, err = mean_band([trailing_mean(r[:length], args.window) for _, r in runs])
        x = np.arange(1, length + 1) * args.num_envs
        label = f"{LABELS[key[:2]]}, lr {key[2]:g} ({len(runs)} seeds)"
        if wanted(key[2]):
            ax.plot(x, mean, label=label)
            ax.fill_between(x, mean - err, mean + err, alpha=0.2)
        for b in range(length):
            rows.append({"model": key[0], "method": key[1], "lr": key[2], "batch": b + 1, "episodes": int(x[b]),
                         "mean_success_rate": round(float(mean[b]), 6), "sem": round(float(err[b]), 6),
                         "seeds": len(runs)})
        ordered = sorted(runs, key=lambda run: run[0])
        last = [float(r[length - 30:length].mean()) for _, r in ordered]
        auc = [float(r[:length].mean()) for _, r in ordered]
        print(f"{LABELS[key[:2]]:22s} lr {key[2]:<7g} seeds {[s for s, _ in ordered]}  "
              f"last-30 success {statistics.mean(last):.3f} ± {sem(last):.3f}   "
              f"AUC {statistics.mean(auc):.3f} ± {sem(auc):.3f}   per seed {' '.join(f'{v:.3f}' for v in last)}")
    ax.set_xlabel("episodes")
    ax.set_ylabel(f"success rate (trailing mean of {args.window} batches)")
    ax.set_title(f"POPGym {args.env}, {args.num_envs} envs per update")
    ax.legend(fontsize=7)
    fig.tight_layout()
    stem = f"popgym_{args.env}"
    fig.savefig(out / f"{stem}.png", dpi=120)
    write_csv(out / f"{stem}.csv", rows)
    print(f"wrote {out / (stem + '.png')} and {out / (stem + '.csv')}")
    if lambdas:  # Figure 7c: the sgprop runs' mean θ along training
        fig, ax = plt.subplots(figsize=(5.8, 3.2))
        lam_rows = []
        for lr, curves in sorted(lambdas.items()):
            if not wanted(lr):
                continue
            mean, err = mean_band(curves)
            x = np.arange(1, len(mean) + 1) * args.num_envs
            ax.plot(x, mean, label=f"SparseNet (sgprop), lr {lr:g} ({len(curves)} seeds)")
            ax.fill_between(x, mean - err, mean + err, alpha=0.2)
            lam_rows += [{"lr": lr, "batch": b + 1, "episodes": int(x[b]), "mean_theta": round(float(mean[b]), 6),
                          "sem": round(float(err[b]), 6), "seeds": len(curves)} for b in range(len(mean))]
        ax.set_xlabel("episodes")
        ax.set_ylabel("mean base θ of the 128 neurons")
        ax.set_title(f"POPGym {args.env}: adaptive θ along training")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / f"{stem}_lambda.png", dpi=120)
        write_csv(out / f"{stem}_lambda.csv", lam_rows)
        print(f"wrote {out / (stem + '_lambda.png')} and {out / (stem + '_lambda.csv')}")


if __name__ == "__main__":
    main()
