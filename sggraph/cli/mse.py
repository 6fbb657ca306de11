"""``sggraph mse``: the gradient-estimator MSE profiler on a YAML graph."""

from __future__ import annotations

import argparse
import json

__all__ = ["add_parser"]


def _cmd_mse(args: argparse.Namespace) -> int:
    from ..core.unroll import Cell
    from ..engine import format_profile
    from ..exceptions import ConfigError
    from ..experiments.mse import profile_yaml
    from .model_files import load_model

    model = load_model(args.file, None)
    if isinstance(model, Cell):
        raise ConfigError("`sggraph mse` profiles layered graphs whose nodes use built-in functions, and this file "
                          "declares a recurrent cell (its state neurons share their weights across steps, which the "
                          "per-node profiler does not model)", file=args.file,
                          line=model.where(model.state.name)[1] if model.state is not None else 1,
                          fix=f"inspect the cell with `sggraph check-conditions {args.file} --unroll T` and "
                              f"`sggraph draw {args.file} --unroll T -o OUT.svg`; profile a layered graph with mse")

    graph, profiles = profile_yaml(args.file, n=args.n, noise=args.noise, lam=args.lam, samples=args.samples,
                                   reference=args.reference, repeats=args.repeats, fit_steps=args.fit_steps,
                                   generator_lr=args.generator_lr, jacobian_bound=args.jacobian_bound,
                                   epsilon=args.epsilon, seed=args.seed, progress=not args.quiet)
    if args.json:
        print(json.dumps({k: v.to_dict() for k, v in profiles.items()}, indent=2))
    else:
        print(f"graph '{graph.name}': n = {args.n}, λ = {args.lam} (per child), feedback noise σ = {args.noise}, "
              f"generators fitted for {args.fit_steps} steps")
        print(format_profile(profiles))
    return 0



def add_parser(sub) -> None:
    """Add ``sggraph mse`` to the subcommands ``sub``."""
    p = sub.add_parser("mse", help="profile gradient-estimator MSE per node (Lemma 1, λ*, Theorem 3)",
                       description="Profile a YAML graph's gradient estimators per node: a random linear teacher with noisy feedback (A.1), generators fitted on their bootstrapped targets, then Δ² of backprop and of the synthetic mixture at n samples (eq. 7), its parts ρ², ν², b² (Lemma 1), the optimal λ* (eq. 18) and the Theorem-3 check.")
    p.add_argument("file", help="graph YAML file whose nodes use built-in functions")
    p.add_argument("--n", type=int, default=1, help="samples per gradient estimate")
    p.add_argument("--noise", type=float, default=1.0, help="std of the feedback noise (A.1)")
    p.add_argument("--lambda", dest="lam", type=float, default=0.5, help="mixing weight of the profiled mixture")
    p.add_argument("--samples", type=int, default=2048, help="samples for the variance terms")
    p.add_argument("--reference", type=int, default=4096, help="samples for E g and the paired bias terms")
    p.add_argument("--repeats", type=int, default=4, help="each context repeated this often (for ρ², ν²)")
    p.add_argument("--fit-steps", type=int, default=200, help="generator fitting steps before profiling")
    p.add_argument("--generator-lr", type=float, default=1e-2)
    p.add_argument("--jacobian-bound", type=float, help="J for the eq. 19 check")
    p.add_argument("--epsilon", type=float, help="ε + ε′ for the eq. 19 check")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bar or progress lines on stderr")
    p.set_defaults(run=_cmd_mse)
