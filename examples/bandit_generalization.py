"""Does the small embedded MNIST set matter? Training vs held-out reward of finished bandit runs.

The bandit trains on about 7,000 embedded digits (the classes kept, less the 2,000 held out), so
1,500 steps × 64 draws pass over each training digit about 14 times; on full MNIST (≈ 54,000
training digits of the nine classes) the same run sees each digit about 1.8 times. A policy that
memorises its training digits scores higher on them than on held-out ones, and a method that
memorises more is the one the small set favours least on the evaluation reward. This script
measures that gap: for every finished run of a sweep directory it loads the final
``checkpoint.pt`` and computes the noiseless expected reward ``mean π(label | x)`` on all of the
run's training digits and on all of its held-out digits.

    python examples/bandit_generalization.py ~/sggraph-runs/bandit-fig5 --out examples/results/bandit-fig5

Writes ``generalization_per_run.csv`` (one row per run) and ``generalization.csv`` (per method:
mean ± SEM over seeds of the training reward, the held-out reward and their difference).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import torch

from sggraph.experiments.checkpoint_state import load_model_state, unused_parameters
from sggraph.experiments.mnist_bandit import BanditConfig, bandit_env, build_policy, expected_reward, load_run_config
from sggraph.sweeps.figures import mean_sem


def method_label(cfg: BanditConfig) -> str:
    """``sgprop λ=adaptive``, ``sgprop λ=0.9``, ``backprop`` or ``mlp``, with a non-default rate."""
    label = cfg.method + (f" λ={cfg.lam}" if cfg.method == "sgprop" else "")
    return label + (f" lr={cfg.lr}" if cfg.lr is not None else "")


def measure_run(run: Path) -> dict:
    """Training and held-out expected reward of a finished run's final parameters."""
    cfg = load_run_config(run)
    env = bandit_env(cfg)
    torch.manual_seed(cfg.seed)
    model, policy, net, _, _ = build_policy(cfg, env.n_actions)
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    load_model_state(model, state["model"], unused_parameters(net))
    train = expected_reward(policy, env.train_contexts, env.train_targets)
    held_out = expected_reward(policy, env.eval_contexts, env.eval_targets)
    return {"run": run.name, "method": method_label(cfg), "seed": cfg.seed, "step": int(state["step"]),
            "n_train": env.n_train, "n_held_out": env.n_eval,
            "passes_over_train": cfg.steps * cfg.batch / env.n_train,
            "train_reward": train, "held_out_reward": held_out, "gap": train - held_out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("sweep", type=Path, help="a sweep directory of mnist-bandit runs")
    ap.add_argument("--out", type=Path, required=True, help="folder for the two CSV files")
    args = ap.parse_args()
    runs = sorted(p.parent for p in args.sweep.glob("*/summary.json") if (p.parent / "checkpoint.pt").exists())
    if not runs:
        raise SystemExit(f"no finished run (summary.json and checkpoint.pt) under {args.sweep}")
    torch.set_num_threads(1)
    rows = []
    for run in runs:
        row = measure_run(run)
        rows.append(row)
        print(f"{row['run']}: train {row['train_reward']:.3f}  held-out {row['held_out_reward']:.3f}  "
              f"gap {row['gap']:+.3f}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "generalization_per_run.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    summary = []
    for method in sorted({r["method"] for r in rows}):
        mine = [r for r in rows if r["method"] == method]
        entry = {"method": method, "n_seeds": len(mine)}
        for key in ("train_reward", "held_out_reward", "gap"):
            entry[f"{key}_mean"], entry[f"{key}_sem"] = mean_sem([r[key] for r in mine])
        summary.append(entry)
    with (args.out / "generalization.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(summary[0]))
        w.writeheader()
        w.writerows(summary)
    for e in summary:
        print(f"{e['method']:<22} n={e['n_seeds']}  train {e['train_reward_mean']:.3f} ± {e['train_reward_sem']:.3f}"
              f"  held-out {e['held_out_reward_mean']:.3f} ± {e['held_out_reward_sem']:.3f}"
              f"  gap {e['gap_mean']:+.3f} ± {e['gap_sem']:.3f}")
    print(f"wrote {args.out / 'generalization_per_run.csv'} and {args.out / 'generalization.csv'}")


if __name__ == "__main__":
    main()
