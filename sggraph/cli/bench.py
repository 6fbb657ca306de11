"""``sggraph bench``: time compiled training steps."""

from __future__ import annotations

import argparse
import json

from ..experiments.bench import run_bench
from .options import add_run_flags

__all__ = ["add_parser"]

def _cmd_bench(args: argparse.Namespace) -> int:
    from .. import threads
    from ..experiments.mnist_bandit import BanditConfig

    threads.use_threads(threads.resolve_threads(args.threads, BanditConfig().typical_op_elements()))
    result = run_bench(steps=args.steps, progress=not args.quiet, compile_backend=args.compile)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"fp32 matmul peak: {result['matmul_peak_gflops']} GFLOP/s ({result['threads']} threads)")
    b = result["bandit"]
    print("bandit SparseNet step (5x200 neurons, q=10, 5 slots, 5 parents, batch 64):")
    for m in ("backprop", "sgprop"):
        print(f"  {m:16s}: {b[m + '_ms']:7.2f} ms/step  {b[m + '_gflop_per_step']:.3f} GFLOP  "
              f"{b[m + '_gflops']:6.1f} GFLOP/s")
    print(f"  {'sgprop_adaptive':16s}: {b['sgprop_adaptive_ms']:7.2f} ms/step  (sgprop + adaptive λ, eq. 18)")
    print(f"  {'  single pass':16s}: {b['sgprop_adaptive_single_pass_ms']:7.2f} ms/step  (generator update after "
          "the one backward)")
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


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="time compiled training steps (ms/step, FLOPs, GFLOP/s)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--steps", type=int, default=30, help="timed steps per method (median reported)")
    p.add_argument("--compile", nargs="?", const="inductor", default=None, metavar="BACKEND",
                   help="also time the bandit step with the policy under torch.compile (default backend: "
                        "inductor; its compilation takes about a minute per method)")
    add_run_flags(p)
    p.set_defaults(run=_cmd_bench)
