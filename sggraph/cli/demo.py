"""``sggraph demo``: a miniature of the paper."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser"]


#: The example graphs `sggraph demo` checks, shipped as package data (copies of examples/*.yaml).
DEMO_GRAPHS = "data/graphs"


def demo_graphs() -> list:
    """The packaged example graphs (``importlib.resources`` traversables), sorted by name."""
    from importlib.resources import files

    return sorted((p for p in files("sggraph").joinpath(DEMO_GRAPHS).iterdir() if p.name.endswith(".yaml")),
                  key=lambda p: p.name)


def _cmd_demo(args: argparse.Namespace) -> int:
    """A miniature of the paper: conditions of the example graphs, the expert-network ratio
    table for small d, the MNIST bandit (SparseNet sgprop vs backprop vs MLP) and the POPGym
    escape maze (SparseNet sgprop / backprop, GRU, LSTM) briefly."""
    import statistics

    from ..core.analysis import check_conditions
    from ..core.graph import Graph
    from ..core.safe_yaml import read_yaml

    for path in demo_graphs():
        print(f"$ sggraph check-conditions examples/{path.name}")
        print(check_conditions(Graph.from_dict(read_yaml(path).data, file=f"examples/{path.name}")))
        print()
    if args.conditions_only:
        return 0
    from ..experiments.expert import sweep

    print("$ sggraph expert --d 4 6 8 --k 2 --n 1 --trials 20   (Theorem 5: ratio = 2^(d-k))")
    for row in sweep([4, 6, 8], [2], ["noisy", "activation", "partial"], [1], trials=20):
        print(f"  {row['case']:10s} d={row['d']} k={row['k']}  ratio {row['ratio']:7.2f}  "
              f"95% CI [{row['ci_low']:.2f}, {row['ci_high']:.2f}]  theory {row['theory']:.0f}")
    print()
    from ..experiments.mnist_bandit import BanditConfig, run_bandit

    out = Path(args.out)
    print(f"MNIST bandit, {args.steps} steps, seeds 0-1, p_flip 0.4 (run directories under {out}/):")
    finals: dict[str, list[float]] = {}
    for method in ("sgprop", "backprop", "mlp"):
        for seed in (0, 1):
            cfg = BanditConfig(method=method, seed=seed, steps=args.steps, evaluations=5, eval_batch=1000)
            summary = run_bandit(cfg, out / f"{method}-seed{seed}")
            finals.setdefault(method, []).append(summary["final_eval_reward"])
            print(f"  {method:8s} seed {seed}: final eval reward {summary['final_eval_reward']:.4f} "
                  f"({summary['seconds']:.0f}s)  {out / f'{method}-seed{seed}' / 'learning_curve.png'}")
    print()
    print(f"  {'method':8s}  mean final eval reward (2 seeds)")
    for method, values in finals.items():
        print(f"  {method:8s}  {statistics.mean(values):.4f}")
    if args.popgym_batches > 0:
        from ..experiments.popgym import PopgymConfig, run_popgym

        print()
        print(f"POPGym labyrinth_escape, {args.popgym_batches} batches of 8 episodes, seed 0 "
              f"(run directories under {out}/popgym-*; the README's runs use 300 batches of 20):")
        for model, method in (("sparsenet", "sgprop"), ("sparsenet", "backprop"), ("gru", "backprop"),
                              ("lstm", "backprop")):
            cfg = PopgymConfig(model=model, method=method, num_envs=8, batches=args.popgym_batches)
            run = out / f"popgym-{model}-{method}"
            summary = run_popgym(cfg, run)
            print(f"  {model:9s} {method:8s}: mean success rate {summary['auc_success_rate']:.3f} "
                  f"({summary['seconds']:.0f}s)  {run / 'learning_curve.png'}")
    return 0



def add_parser(sub) -> None:
    """Add ``sggraph demo`` to the subcommands ``sub``."""
    p = sub.add_parser("demo", help="a miniature of the paper (conditions, expert ratios, short bandit and POPGym runs)")
    p.add_argument("--steps", type=int, default=300, help="bandit training steps per run")
    p.add_argument("--out", default="runs/demo", help="where the bandit and POPGym runs are written")
    p.add_argument("--conditions-only", action="store_true", help="only the check-conditions part")
    p.add_argument("--popgym-batches", type=int, default=30, help="POPGym batches per model (0: skip)")
    p.set_defaults(run=_cmd_demo)
