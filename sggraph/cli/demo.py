"""``sggraph demo``: a miniature of the paper."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_run_flags

__all__ = ["add_parser"]


#: The example graphs `sggraph demo` checks, shipped as package data (copies of examples/*.yaml).
DEMO_GRAPHS = "data/graphs"
#: Steps a recurrent cell among them is unrolled for (the POPGym escape episode length).
DEMO_UNROLL = 80


def demo_graphs() -> list:
    """The packaged example graphs (``importlib.resources`` traversables), sorted by name."""
    from importlib.resources import files

    return sorted((p for p in files("sggraph").joinpath(DEMO_GRAPHS).iterdir() if p.name.endswith(".yaml")),
                  key=lambda p: p.name)


def _cmd_demo(args: argparse.Namespace) -> int:
    """A miniature of the paper: conditions of the example graphs, the expert-network ratio
    table for small d, the MNIST bandit (SparseNet sgprop vs backprop vs MLP) and the POPGym
    escape maze (SparseNet sgprop / backprop, GRU, LSTM) briefly; then a summary with one
    comparison figure and the disk the runs use."""
    import time

    from ..core.analysis import check_conditions
    from ..core.cell_spec import is_cell_document
    from ..core.graph import Graph
    from ..core.safe_yaml import read_yaml
    from ..core.unroll import Cell, unroll

    t0 = time.perf_counter()
    for path in demo_graphs():
        data, file = read_yaml(path).data, f"examples/{path.name}"
        if is_cell_document(data):
            print(f"$ sggraph check-conditions {file} --unroll {DEMO_UNROLL}")
            print(check_conditions(unroll(Cell.from_dict(data, file=file), DEMO_UNROLL)))
        else:
            print(f"$ sggraph check-conditions {file}")
            print(check_conditions(Graph.from_dict(data, file=file)))
        print()
    if args.conditions_only:
        return 0
    _expert_table(args)
    out = Path(args.out)
    bandit = _bandit_runs(args, out)
    popgym = _popgym_runs(args, out) if args.popgym_batches > 0 else {}
    _summary(out, bandit, popgym, time.perf_counter() - t0)
    return 0


def _expert_table(args: argparse.Namespace) -> None:
    from ..experiments.expert import sweep
    from ..runtime.progress import Progress

    print("$ sggraph expert --d 4 6 8 --k 2 --n 1 --trials 20   (Theorem 5: ratio = 2^(d-k))")
    cases = ["noisy", "activation", "partial"]
    with Progress(3 * len(cases), "expert network", unit="setting", quiet=args.quiet, leave=False) as bar:
        rows = sweep([4, 6, 8], [2], cases, [1], trials=20, progress=lambda row: bar.update(1))
    for row in rows:
        print(f"  {row['case']:10s} d={row['d']} k={row['k']}  ratio {row['ratio']:7.2f}  "
              f"95% CI [{row['ci_low']:.2f}, {row['ci_high']:.2f}]  theory {row['theory']:.0f}")
    print()


def _bandit_runs(args: argparse.Namespace, out: Path) -> dict[str, list[Path]]:
    """The MNIST bandit runs (2 seeds per method); method → run directories."""
    from ..experiments.mnist_bandit import BanditConfig, run_bandit
    from ..runtime.threads import configure_threads

    print(f"MNIST bandit, {args.steps} steps, seeds 0-1, p_flip 0.4 (run directories under {out}/):", flush=True)
    runs: dict[str, list[Path]] = {}
    finals: dict[str, list[float]] = {}
    for method in ("sgprop", "backprop", "mlp"):
        for seed in (0, 1):
            cfg = BanditConfig(method=method, seed=seed, steps=args.steps, evaluations=5, eval_batch=1000)
            configure_threads(args.threads, cfg.typical_op_elements())
            run = out / f"{method}-seed{seed}"
            summary = run_bandit(cfg, run, progress=not args.quiet, checkpoints=False, overwrite=True)
            runs.setdefault(method, []).append(run)
            finals.setdefault(method, []).append(summary["final_eval_reward"])
            print(f"  {method:8s} seed {seed}: final eval reward {summary['final_eval_reward']:.4f} "
                  f"({summary['seconds']:.0f}s)  {run / 'learning_curve.png'}", flush=True)
    print()
    print(f"  {'method':8s}  mean final eval reward (2 seeds)")
    for method, values in finals.items():
        print(f"  {method:8s}  {sum(values) / len(values):.4f}")
    return runs


def _popgym_runs(args: argparse.Namespace, out: Path) -> dict[str, Path]:
    """The POPGym runs, one per model; label → run directory."""
    from ..experiments.popgym import PopgymConfig, run_popgym
    from ..runtime.threads import configure_threads

    print()
    print(f"POPGym labyrinth_escape, {args.popgym_batches} batches of 8 episodes, seed 0 "
          f"(run directories under {out}/popgym-*; the README's runs use 300 batches of 20):", flush=True)
    runs = {}
    for model, method in (("sparsenet", "sgprop"), ("sparsenet", "backprop"), ("gru", "backprop"),
                          ("lstm", "backprop")):
        cfg = PopgymConfig(model=model, method=method, num_envs=8, batches=args.popgym_batches)
        configure_threads(args.threads, cfg.typical_op_elements())
        run = out / f"popgym-{model}-{method}"
        summary = run_popgym(cfg, run, progress=not args.quiet, checkpoints=False, overwrite=True)
        runs[f"SparseNet {method}" if model == "sparsenet" else model.upper()] = run
        print(f"  {model:9s} {method:8s}: mean success rate {summary['auc_success_rate']:.3f} "
              f"({summary['seconds']:.0f}s)  {run / 'learning_curve.png'}", flush=True)
    return runs


def _summary(out: Path, bandit: dict[str, list[Path]], popgym: dict[str, Path], seconds: float) -> None:
    import json

    from ..experiments.demo import comparison_figure, disk_usage, format_bytes

    figure = comparison_figure(out, bandit, popgym)
    print()
    print(f"Summary ({seconds / 60:.1f} min):")
    for method, runs in bandit.items():
        finals = [json.loads((r / "summary.json").read_text())["final_eval_reward"] for r in runs]
        print(f"  MNIST bandit {method:8s}: final eval reward {sum(finals) / len(finals):.4f} "
              f"(mean of {len(runs)} seeds)")
    for label, run in popgym.items():
        rate = json.loads((run / "summary.json").read_text())["auc_success_rate"]
        print(f"  POPGym {label:18s}: mean success rate {rate:.3f}")
    print(f"  comparison figure (methods side by side): {figure}")
    print(f"  disk used by {out}/: {format_bytes(disk_usage(out))} (metrics, plots, TensorBoard events; the "
          f"demo keeps no resume checkpoints)")
    print(f"  TensorBoard: tensorboard --logdir {out}")


def add_parser(sub) -> None:
    """Add ``sggraph demo`` to the subcommands ``sub``."""
    p = sub.add_parser("demo", help="a miniature of the paper (conditions, expert ratios, short bandit and POPGym runs)",
                       description="A miniature of the paper in a few minutes: the conditions of the example graphs, "
                                   "the expert network's MSE ratios against Theorem 5, short MNIST-bandit runs "
                                   "(sgprop, backprop) and short POPGym runs, with their learning curves under --out.")
    p.add_argument("--steps", type=int, default=300, help="bandit training steps per run")
    p.add_argument("--out", default="runs/demo", help="where the bandit and POPGym runs are written")
    p.add_argument("--conditions-only", action="store_true", help="only the check-conditions part")
    p.add_argument("--popgym-batches", type=int, default=30, help="POPGym batches per model (0: skip)")
    add_run_flags(p)
    p.set_defaults(run=_cmd_demo)
