"""``sggraph bench``: time compiled training steps."""

from __future__ import annotations

import argparse
import json
import sys

from ..exceptions import ConfigError
from ..experiments.contention_settings import CONTENTION_SETTINGS
from .options import add_run_flags

__all__ = ["add_parser"]

#: Timed steps per method when ``--steps`` is not given: the full bench, and each contention measurement.
DEFAULT_STEPS = {"bench": 30, "contention": 10}


#: Most timed steps per method (a bench of more is a training run; use ``sggraph train``).
MAX_BENCH_STEPS = 100_000


def check_bench_args(args: argparse.Namespace) -> None:
    """Raise :class:`~sggraph.ConfigError` on a flag the bench would fail on later (before any work).

    >>> check_bench_args(argparse.Namespace(steps=-1, batch=64, compile=None))
    Traceback (most recent call last):
    ...
    sggraph.exceptions.ConfigError: --steps -1 is outside 1..100000. Fix: pass --steps 1 or more (a median needs at least one timed step).
    """
    for flag, value, largest in (("steps", args.steps, MAX_BENCH_STEPS), ("batch", args.batch, 2**20)):
        if value is not None and not 1 <= value <= largest:
            raise ConfigError(f"--{flag} {value} is outside 1..{largest}",
                              fix=f"pass --{flag} 1 or more" + (" (a median needs at least one timed step)"
                                                               if flag == "steps" else ""))
    if args.compile is not None:
        from torch._dynamo import list_backends

        known = list_backends(exclude_tags=())
        if args.compile not in known:
            raise ConfigError(f"--compile {args.compile}: torch.compile has no such backend",
                              fix=f"use one of {', '.join(b for b in known if 'TESTING' not in b)}")


def _cmd_bench(args: argparse.Namespace) -> int:
    from ..experiments.bench import run_bench
    from ..experiments.contention import contention_worker
    from ..experiments.mnist_bandit import BanditConfig
    from ..runtime import threads

    check_bench_args(args)
    if args.contention:
        return _cmd_contention(args)
    threads.configure_threads(args.threads, BanditConfig(batch=args.batch).typical_op_elements())
    if args.contention_worker:  # between its steps it follows the load, as a training run does
        contention_worker(sys.stdin, sys.stdout, steps=args.steps or DEFAULT_STEPS["contention"], batch=args.batch,
                          tick=threads.follow_load)
        return 0
    threads.stop_following()  # the bench's own sections time the thread count chosen at the start
    result = run_bench(steps=args.steps or DEFAULT_STEPS["bench"], progress=not args.quiet,
                       compile_backend=args.compile)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"fp32 matmul peak: {result['matmul_peak_gflops']} GFLOP/s ({result['threads']} threads)")
    b = result["bandit"]
    print("bandit SparseNet step (5x200 neurons, q=10, 5 slots, 5 parents, batch 64):")
    labels = {"backprop": "backprop", "sgprop": "sgprop, λ = 0.9, generator-first",
              "sgprop_adaptive": "sgprop, adaptive λ (eq. 18), generator-first", "sgprop_adaptive_single_pass":
              "sgprop, adaptive λ, generator update after the one backward"}
    for m, label in labels.items():
        print(f"  {b[m + '_ms']:7.2f} ms/step  {b[m + '_gflop_per_step']:.3f} GFLOP  {b[m + '_gflops']:6.1f} GFLOP/s  "
              f"{label}")
    print(f"  adaptive / backprop: {b['adaptive_over_backprop']:.2f}× the time, "
          f"{b['adaptive_over_backprop_flops']:.2f}× the matmul FLOPs")
    r = result["recurrent"]
    print("recurrent SparseNet cell (128 neurons, q=6, 6 slots, 6 parents, 16 input neurons; T=80, 20 sequences):")
    print(f"  backprop: {r['backprop_ms']:7.1f} ms   sgprop: {r['sgprop_ms']:7.1f} ms   "
          f"ratio {r['sgprop_over_backprop']:.2f}")
    g = result["popgym"]
    print(f"POPGym batch (labyrinth_escape, {g['num_envs']} envs, rollout through the real envs + one update):")
    for key, label in (("backprop", "SparseNet backprop"), ("sgprop", "SparseNet sgprop"), ("gru", "GRU"),
                       ("lstm", "LSTM")):
        print(f"  {label:18s}: {g[key + '_s']:6.3f} s/batch  (rollout {g[key + '_rollout_s']:.3f} s)")
    print(f"  sgprop / backprop : {g['sgprop_over_backprop']:.2f}")
    if "compiled" in result:
        c = result["compiled"]
        print(f"bandit step, eager vs policy forward under torch.compile (backend {c['backend']}):")
        for m in [k[: -len("_eager_ms")] for k in c if k.endswith("_eager_ms")]:
            print(f"  {m:16s}: eager {c[m + '_eager_ms']:7.2f} ms  compiled {c[m + '_compiled_ms']:7.2f} ms  "
                  f"(compilation {c[m + '_compile_s']:.0f} s)")
    return 0


def _cmd_contention(args: argparse.Namespace) -> int:
    """``sggraph bench --contention``: the bandit step alone, beside a busy process, and two side by side."""
    from ..experiments.contention import run_contention

    if args.threads is not None:
        raise ConfigError("--contention compares thread settings itself; it takes no --threads",
                          fix="drop --threads, or choose the settings with --settings 1,2,default")
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    result = run_contention(steps=args.steps or DEFAULT_STEPS["contention"], settings=settings, batch=args.batch,
                            progress=not args.quiet)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"bandit step sharing the machine: median ms over {result['steps']} steps; {result['cpus']} CPUs "
          f"available; load average before {result['loadavg'][0]}; [torch threads the steps ran with]")
    print(f"{'setting':8s} {'method':16s} {'alone':>14s} {'+ one busy process':>26s} {'two runs side by side':>34s}")
    for name, row in result["settings"].items():
        pair = row["side_by_side"]
        for v in ("backprop", "sgprop_adaptive"):
            alone = f"{row['alone'][v + '_ms']:.1f} [{_threads_label(row['alone'])}]"
            busy = f"{row['busy'][v + '_ms']:.1f} [{_threads_label(row['busy'])}] {row['busy_over_alone'][v]:.2f}x"
            both = (f"{pair[0][v + '_ms']:.1f}/{pair[1][v + '_ms']:.1f} "
                    f"[{_threads_label(pair[0])}/{_threads_label(pair[1])}] {row['side_by_side_over_alone'][v]:.2f}x")
            print(f"{name:8s} {v:16s} {alone:>14s} {busy:>26s} {both:>34s}")
    return 0


def _threads_label(measurement: dict) -> str:
    """The thread counts a measurement's steps ran with: ``2``, or ``1:7,2:3`` (count: steps) when they changed.

    >>> _threads_label({"threads": {"2": 20}}), _threads_label({"threads": {"1": 14, "2": 6}})
    ('2', '1:14,2:6')
    """
    used = measurement["threads"]
    return next(iter(used)) if len(used) == 1 else ",".join(f"{k}:{n}" for k, n in used.items())


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="time compiled training steps (ms/step, FLOPs, GFLOP/s)",
                       description="Time the compiled training steps of the paper's models on this machine: the MNIST-bandit SparseNet step (backprop, sgprop, adaptive λ), the recurrent cell and a POPGym batch, with FLOPs and achieved GFLOP/s against the measured matmul peak; --contention compares thread settings under load.")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--steps", type=int, default=None,
                   help=f"timed steps per method, median reported (default {DEFAULT_STEPS['bench']}; with "
                        f"--contention {DEFAULT_STEPS['contention']} per measurement)")
    p.add_argument("--contention", action="store_true",
                   help="time the bandit step alone, beside one busy process, and two runs side by side, at each "
                        "thread setting of --settings (fresh processes; a few minutes)")
    p.add_argument("--settings", default=",".join(CONTENTION_SETTINGS),
                   help="with --contention: the thread settings to compare, of "
                        f"{','.join(CONTENTION_SETTINGS)} (default: all)")
    p.add_argument("--batch", type=int, default=64, help=argparse.SUPPRESS)  # smaller for the smoke tests
    p.add_argument("--contention-worker", action="store_true", help=argparse.SUPPRESS)  # one measurement process
    p.add_argument("--compile", nargs="?", const="inductor", default=None, metavar="BACKEND",
                   help="also time the bandit step with the policy under torch.compile (default backend: "
                        "inductor; its compilation takes about a minute per method)")
    add_run_flags(p)
    p.set_defaults(run=_cmd_bench)
