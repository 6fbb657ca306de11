"""Aggregate MNIST-bandit run directories into Figure 5: mean ± SEM across seeds per method.

Run:  python examples/plot_bandit_runs.py runs/paper --out examples/results

Expects run directories named METHOD-seedS (as written by
`sggraph train mnist-bandit --method METHOD --seed S --out runs/paper/METHOD-seedS`).
Writes mnist_bandit.png and mnist_bandit.csv (every plotted number) and prints the final
evaluation reward per method as mean ± SEM.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

LABELS = {"sgprop": "SparseNet (sgprop)", "backprop": "SparseNet (backprop)", "mlp": "MLP (backprop)"}


def sem(values: list[float]) -> float:
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", help="directory holding METHOD-seedS run directories")
    parser.add_argument("--out", default="examples/results")
    args = parser.parse_args()
    curves: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    samples: dict[int, int] = {}
    seeds: dict[str, list[int]] = defaultdict(list)
    for run in sorted(Path(args.runs).iterdir()):
        metrics = run / "metrics.csv"
        if not run.is_dir() or not metrics.exists() or "-seed" not in run.name:
            continue
        method, seed = run.name.rsplit("-seed", 1)
        seeds[method].append(int(seed))
        for row in csv.DictReader(metrics.open()):
            step = int(row["step"])
            curves[method][step].append(float(row["eval_reward"]))
            samples[step] = int(row["samples"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    rows = []
    for method in [m for m in LABELS if m in curves]:
        steps = sorted(curves[method])
        mean = [statistics.mean(curves[method][s]) for s in steps]
        err = [sem(curves[method][s]) for s in steps]
        xs = [samples[s] for s in steps]
        ax.plot(xs, mean, label=f"{LABELS[method]} ({len(seeds[method])} seeds)")
        ax.fill_between(xs, [m - e for m, e in zip(mean, err)], [m + e for m, e in zip(mean, err)], alpha=0.25)
        for s, x, m, e in zip(steps, xs, mean, err):
            rows.append({"method": method, "step": s, "samples": x, "mean_eval_reward": round(m, 6),
                         "sem": round(e, 6), "seeds": len(curves[method][s])})
        final = curves[method][steps[-1]]
        print(f"{LABELS[method]:22s} final eval reward {statistics.mean(final):.4f} ± {sem(final):.4f} (SEM, "
              f"seeds {sorted(seeds[method])})")
    ax.set_xlabel("training samples")
    ax.set_ylabel("evaluation reward")
    ax.set_title("MNIST contextual bandit, p_flip = 0.4")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "mnist_bandit.png", dpi=120)
    with (out / "mnist_bandit.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {out / 'mnist_bandit.png'} and {out / 'mnist_bandit.csv'}")


if __name__ == "__main__":
    main()
