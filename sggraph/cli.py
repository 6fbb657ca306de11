"""The ``sggraph`` command line.

Every command exits 0 on success and 2 on bad input, printing a one-paragraph
error (file, line, node, fix) on stderr and never a traceback.

Commands
--------
``sggraph check-conditions FILE.yaml [--json] [--node NAME]``
    The paper's conditions A.1–A.3 and (B), with witnesses and the regime.
``sggraph bench [--json]``
    Time a compiled SparseNet training step (backprop and sgprop).
``sggraph expert``, ``sggraph mse``, ``sggraph train mnist-bandit|popgym``, ``sggraph draw``
    The expert network of §5, the MSE profiler, the MNIST bandit, the POPGym labyrinths,
    graphviz drawings.
``sggraph demo``
    A miniature of the paper: the example graphs' conditions, expert ratios, short bandit and
    POPGym runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .exceptions import SggraphError

__all__ = ["build_parser", "main"]

#: The example graphs `sggraph demo` checks, shipped as package data (copies of examples/*.yaml).
DEMO_GRAPHS = "data/graphs"


def demo_graphs() -> list:
    """The packaged example graphs (``importlib.resources`` traversables), sorted by name."""
    from importlib.resources import files

    return sorted((p for p in files("sggraph").joinpath(DEMO_GRAPHS).iterdir() if p.name.endswith(".yaml")),
                  key=lambda p: p.name)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own exit code is already 2
        self.print_usage(sys.stderr)
        self.exit(2, f"sggraph: error: {message}\n")


def _cmd_check(args: argparse.Namespace) -> int:
    from .analysis import check_conditions, extended_ancestors, siblings
    from .graph import Graph

    g = Graph.from_yaml(args.file)
    report = check_conditions(g)
    data = report.to_dict()
    if args.node is not None:
        if args.node not in g.nx:
            from .exceptions import GraphError

            raise GraphError(f"no node named '{args.node}' in the graph", node=args.node, file=args.file,
                             fix="pass a node name from the file (neurons of arrays are name[i])")
        data["node"] = {"name": args.node, "siblings": sorted(siblings(g, args.node)),
                        "extended_ancestors": sorted(extended_ancestors(g, args.node))}
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return 0
    print(report)
    if args.node is not None:
        sib, an = data["node"]["siblings"], data["node"]["extended_ancestors"]
        print(f"  Node {args.node}:")
        print(f"    siblings (eq. 11)            : {', '.join(sib)}")
        print(f"    extended ancestors (eq. 12)  : {', '.join(an) if an else '(none: a source)'}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    """A miniature of the paper: conditions of the example graphs, the expert-network ratio
    table for small d, the MNIST bandit (SparseNet sgprop vs backprop vs MLP) and the POPGym
    escape maze (SparseNet sgprop / backprop, GRU, LSTM) briefly."""
    import statistics

    import yaml

    from .analysis import check_conditions
    from .graph import Graph

    for path in demo_graphs():
        print(f"$ sggraph check-conditions examples/{path.name}")
        print(check_conditions(Graph.from_dict(yaml.safe_load(path.read_text()), file=f"examples/{path.name}")))
        print()
    if args.conditions_only:
        return 0
    from .models.expert import sweep

    print("$ sggraph expert --d 4 6 8 --k 2 --n 1 --trials 20   (Theorem 5: ratio = 2^(d-k))")
    for row in sweep([4, 6, 8], [2], ["noisy", "activation", "partial"], [1], trials=20):
        print(f"  {row['case']:10s} d={row['d']} k={row['k']}  ratio {row['ratio']:7.2f}  "
              f"95% CI [{row['ci_low']:.2f}, {row['ci_high']:.2f}]  theory {row['theory']:.0f}")
    print()
    from .experiments.mnist_bandit import BanditConfig, run_bandit

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
        from .experiments.popgym import PopgymConfig, run_popgym

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


def _cmd_mse(args: argparse.Namespace) -> int:
    import torch

    from .compile import compile as compile_graph
    from .diagnostics import format_profile, profile
    from .exceptions import ConfigError
    from .graph import Graph

    for flag in ("n", "samples", "reference", "repeats"):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag} must be at least 1 (got {getattr(args, flag)})", fix=f"pass --{flag} 1 or more")
    if args.noise < 0:
        raise ConfigError(f"--noise must be non-negative (got {args.noise})", fix="pass a standard deviation >= 0")
    graph = Graph.from_yaml(args.file)
    torch.manual_seed(args.seed)
    net = compile_graph(graph, grouping="child").double()
    net.set_lambda(args.lam)
    sources = {name: (src.count, src.dim) for name, src in net.sources.items()}
    width = sum(d if c is None else c * d for c, d in sources.values())
    gen0 = torch.Generator().manual_seed(args.seed + 1)
    targets = {}
    with torch.no_grad():
        probe = net({k: torch.zeros((1, d) if c is None else (1, c, d), dtype=torch.float64)
                     for k, (c, d) in sources.items()})
    for name, out in probe.items():
        targets[name] = torch.randn(width, out[0].numel(), generator=gen0, dtype=torch.float64) / width ** 0.5

    def sampler(count: int, gen: torch.Generator):
        k = max(1, count // args.repeats)
        inputs = {name: torch.randn((k, d) if c is None else (k, c, d), generator=gen, dtype=torch.float64)
                  .repeat_interleave(args.repeats, 0)[:count] for name, (c, d) in sources.items()}
        flat = torch.cat([x.reshape(len(x), -1) for x in inputs.values()], dim=1)
        with torch.no_grad():
            out = net(inputs)
        feedback = {name: out[name] - (flat @ targets[name]).view_as(out[name])
                    + args.noise * torch.randn(out[name].shape, generator=gen, dtype=torch.float64) for name in out}
        groups = torch.arange(k).repeat_interleave(args.repeats)[:count]
        return inputs, feedback, groups

    gen = torch.Generator().manual_seed(args.seed + 2)
    opt = torch.optim.Adam(net.generator_parameters(), lr=args.generator_lr)
    for _ in range(args.fit_steps):  # fit the generators on their bootstrapped targets
        inputs, feedback, _ = sampler(64, gen)
        out = net(inputs)
        sum((out[k] * feedback[k]).sum() for k in feedback).backward()
        net.update_generators(opt)
    profiles = profile(net, sampler, n=args.n, reference_samples=args.reference, samples=args.samples,
                       seed=args.seed, jacobian_bound=args.jacobian_bound, epsilon=args.epsilon)
    if args.json:
        print(json.dumps({k: v.to_dict() for k, v in profiles.items()}, indent=2))
    else:
        print(f"graph '{graph.name}': n = {args.n}, λ = {args.lam} (per child), feedback noise σ = {args.noise}, "
              f"generators fitted for {args.fit_steps} steps")
        print(format_profile(profiles))
    return 0


def _config_from(args: argparse.Namespace, cls, skip=("out", "resume", "config", "run", "command", "experiment")):
    """A config dataclass from ``--config FILE.yaml`` overlaid with the flags given on the command line."""
    import dataclasses
    import difflib

    import yaml

    from .exceptions import ConfigError, SpecError
    from .spec import yaml_line_index

    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict = {}
    if args.config:
        try:
            text = Path(args.config).read_text()
            data = yaml.safe_load(text) or {}
            index = yaml_line_index(text)
        except OSError as exc:
            raise SpecError(f"cannot read the config: {exc.strerror}", file=args.config, fix="check the path") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise SpecError(f"YAML syntax error: {getattr(exc, 'problem', exc)}", file=args.config,
                            line=mark.line + 1 if mark else None, fix="check indentation and colons") from None
        if not isinstance(data, dict):
            raise SpecError("the config must be a mapping of setting: value", file=args.config, line=1,
                            fix="write one `setting: value` per line")
        for key, value in data.items():
            if key not in fields:
                guess = difflib.get_close_matches(str(key), list(fields), n=1)
                raise ConfigError(f"unknown setting '{key}'", file=args.config, line=index.get(f"$.{key}"),
                                  fix=(f"did you mean '{guess[0]}'? " if guess else "") +
                                  f"settings: {', '.join(fields)}")
            values[key] = value
    for name in fields:
        given = getattr(args, name, None)
        if given is not None:
            values[name] = given
    if "classes" in values:
        values["classes"] = tuple(int(c) for c in values["classes"])
    if "lam" in values:
        values["lam"] = str(values["lam"])
    return cls(**values)


def _experiments() -> dict:
    """``sggraph train`` experiments: name → (config class, run function, default run directory)."""
    from .experiments.mnist_bandit import BanditConfig, run_bandit
    from .experiments.popgym import PopgymConfig, run_popgym

    return {
        "mnist-bandit": (BanditConfig, run_bandit, lambda c: f"runs/mnist-bandit/{c.method}-seed{c.seed}",
                         "the MNIST contextual bandit (§6, App. H.3)"),
        "popgym": (PopgymConfig, run_popgym,
                   lambda c: f"runs/popgym/{c.env}-{c.model}{'-' + c.method if c.model == 'sparsenet' else ''}"
                             f"-seed{c.seed}",
                   "POPGym labyrinths: recurrent SparseNet (sgprop/backprop) vs GRU/LSTM (App. H.4)"),
    }


def _validate_train(args: argparse.Namespace) -> None:
    """The config checks of ``sggraph train EXPERIMENT`` without running it (the sweep uses them)."""
    cls = _experiments()[args.experiment][0]
    _config_from(args, cls).validate()


def _cmd_train(args: argparse.Namespace) -> int:
    from .experiments.progress import progress_printer

    cls, run, default_out, _ = _experiments()[args.experiment]
    cfg = _config_from(args, cls)
    out = args.out or default_out(cfg)
    summary = run(cfg, out, resume=args.resume, progress=progress_printer())
    print(json.dumps(summary, indent=2))
    print(f"run directory: {out}")
    return 0


def _add_train(sub) -> None:
    import dataclasses
    import typing

    p = sub.add_parser("train", help="train an experiment: mnist-bandit, popgym")
    which = p.add_subparsers(dest="experiment", required=True, parser_class=_Parser, metavar="EXPERIMENT")
    for name, (cls, _, default_out, about) in _experiments().items():
        e = which.add_parser(name, help=about, description=about)
        e.add_argument("--config", help="YAML file of settings (flags override it)")
        e.add_argument("--out", help="run directory (default under runs/)")
        e.add_argument("--resume", action="store_true", help="continue a killed run from its checkpoint")
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            flag = "--lambda" if f.name == "lam" else "--" + f.name.replace("_", "-")
            kind = hints[f.name]
            if f.name == "classes":
                e.add_argument(flag, dest=f.name, type=int, nargs="+", default=None, help="action classes")
            elif kind is bool:
                e.add_argument(flag, dest=f.name, type=lambda v: v.lower() in ("1", "true", "yes"), default=None,
                               help=f"true/false (default {f.default!r})")
            elif f.name == "lam":
                e.add_argument(flag, dest="lam", default=None, help="adaptive or a fixed λ in [0, 1]")
            else:
                base = {int: int, float: float, str: str}.get(kind, None)
                if base is None:  # optional types
                    args_ = [a for a in typing.get_args(kind) if a is not type(None)]
                    base = args_[0] if args_ else str
                e.add_argument(flag, dest=f.name, type=base, default=None, help=f"default {f.default!r}")
        e.set_defaults(run=_cmd_train, validate=_validate_train)


def _cmd_expert(args: argparse.Namespace) -> int:
    import csv
    import io

    from .atomic import write_atomic
    from .models.expert import sweep

    def progress(row: dict) -> None:
        if not args.json:
            print(f"{row['case']:10s} d={row['d']:2d} k={row['k']} n={row['n']}  "
                  f"ratio {row['ratio']:9.2f}  [{row['ci_low']:8.2f}, {row['ci_high']:8.2f}]  "
                  f"theory {row['theory']:6.0f}", flush=True)

    rows = sweep(args.d, args.k, args.case, args.n, trials=args.trials, m=args.m, seed=args.seed,
                 sigma=args.sigma, p=args.p, tau=args.tau, progress=progress)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        write_atomic(out / "summary.csv", buf.getvalue())
        write_atomic(out / "summary.json", json.dumps(rows, indent=2))
        for path in _plot_expert(rows, out):
            if not args.json:
                print(f"wrote {path}")
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


def _plot_expert(rows: list[dict], out: Path) -> list[Path]:
    """Figure 2(a)/4: the MSE ratio against d − k (log scale) with the theory line, one PNG per case."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for case in sorted({r["case"] for r in rows}):
        fig, ax = plt.subplots(figsize=(5, 3.6))
        sub = [r for r in rows if r["case"] == case]
        for n in sorted({r["n"] for r in sub}):
            pts = sorted((r["d"] - r["k"], r["ratio"], r["ci_low"], r["ci_high"]) for r in sub if r["n"] == n)
            x = [p[0] + 0.06 * (n - 2.5) for p in pts]
            y = [p[1] for p in pts]
            err = [[p[1] - p[2] for p in pts], [p[3] - p[1] for p in pts]]
            ax.errorbar(x, y, yerr=err, fmt="o", ms=3, capsize=2, label=f"n = {n}")
        gaps = sorted({r["d"] - r["k"] for r in sub})
        ax.plot(gaps, [2.0 ** g for g in gaps], "k--", label="theory $2^{d-k}$")
        ax.set_yscale("log", base=2)
        ax.set_xlabel("d − k")
        ax.set_ylabel("MSE ratio Δ² / Δ̃²")
        ax.set_title(f"expert network — {case} feedback")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"ratio_{case}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``sggraph`` command."""
    parser = _Parser(prog="sggraph", description="Synthetic-gradient propagation on layered computational graphs.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("check-conditions", help="check the paper's conditions A.1-A.3 and (B) for a YAML graph")
    p.add_argument("file", help="graph YAML file")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--node", help="also print this node's siblings and sibling-extended ancestors")
    p.set_defaults(run=_cmd_check)
    p = sub.add_parser("expert", help="the expert network of §5: backprop vs synthetic MSE ratio (Theorem 5)")
    p.add_argument("--d", type=int, nargs="+", default=list(range(4, 13)), help="target dimensions d")
    p.add_argument("--k", type=int, nargs="+", default=[2, 3, 4], help="coordinates per expert k")
    p.add_argument("--case", nargs="+", default=["noisy", "activation", "partial"],
                   help="feedback cases: noisy, activation, partial")
    p.add_argument("--n", type=int, nargs="+", default=[1, 2, 3, 4], help="samples per partition")
    p.add_argument("--trials", type=int, default=20, help="Monte Carlo trials per setting")
    p.add_argument("--m", type=int, default=5, help="number of experts")
    p.add_argument("--sigma", type=float, default=0.5, help="noise std (noisy case)")
    p.add_argument("--p", type=float, default=0.5, help="activation probability (activation case)")
    p.add_argument("--tau", type=float, default=0.5, help="std of the unobserved variable (partial case)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument("--out", help="write summary.csv, summary.json and ratio_<case>.png here")
    p.set_defaults(run=_cmd_expert)
    p = sub.add_parser("mse", help="profile gradient-estimator MSE per node (Lemma 1, λ*, Theorem 3)")
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
    p.set_defaults(run=_cmd_mse)
    _add_train(sub)
    from .viz import add_parser as add_draw

    add_draw(sub)
    from .figures import add_parser as add_plot
    from .sweep import add_parser as add_sweep

    add_sweep(sub)
    add_plot(sub)
    p = sub.add_parser("demo", help="a miniature of the paper (conditions, expert ratios, short bandit and POPGym runs)")
    p.add_argument("--steps", type=int, default=300, help="bandit training steps per run")
    p.add_argument("--out", default="runs/demo", help="where the bandit and POPGym runs are written")
    p.add_argument("--conditions-only", action="store_true", help="only the check-conditions part")
    p.add_argument("--popgym-batches", type=int, default=30, help="POPGym batches per model (0: skip)")
    p.set_defaults(run=_cmd_demo)
    try:
        from .bench import add_parser as add_bench
    except ImportError:  # torch layer unavailable
        pass
    else:
        add_bench(sub)
    return parser


def tune_allocator() -> bool:
    """Keep freed memory in glibc's heap instead of returning it to the OS after every tensor.

    Training allocates and frees many multi-megabyte tensors per step; with glibc's defaults
    each one may be a fresh ``mmap`` and cost page faults on every touch (measured here: a
    2.5 MB elementwise op at ~2 ms instead of ~0.05 ms). Raising the mmap and trim thresholds
    (``mallopt``) removes that. Only the ``sggraph`` command does this, never ``import sggraph``.
    Returns whether it applied (glibc only).
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024) == 1  # glibc caps it at 32 MB
        ok &= libc.mallopt(m_trim_threshold, 1024 * 1024 * 1024) == 1
        return bool(ok)
    except (OSError, AttributeError):
        return False


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sggraph`` console script; returns the exit code."""
    tune_allocator()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except SggraphError as err:
        print(f"sggraph: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sggraph: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `sggraph ... | head`: the reader left; stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
