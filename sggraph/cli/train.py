"""``sggraph train EXPERIMENT``: one training run of an experiment, its config from flags and YAML."""

from __future__ import annotations

import argparse
import json

from .options import add_run_flags

__all__ = ["add_parser"]


def _config_from(args: argparse.Namespace, cls, skip=("out", "resume", "config", "run", "command", "experiment")):
    """A config dataclass from ``--config FILE.yaml`` overlaid with the flags given on the command line."""
    import dataclasses
    import difflib

    from ..core.safe_yaml import read_yaml
    from ..exceptions import ConfigError, SpecError
    from ..experiments.settings import check_setting

    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict = {}
    index: dict = {}
    if args.config:
        doc = read_yaml(args.config, what="config")
        data, index = {} if doc.data is None else doc.data, dict(doc.lines)
        if not isinstance(data, dict):
            raise SpecError("the config must be a mapping of setting: value", file=args.config, line=1,
                            fix="write one `setting: value` per line")
        for key, value in data.items():
            if key not in fields:
                guess = difflib.get_close_matches(str(key), list(fields), n=1)
                raise ConfigError(f"unknown setting '{key}'", file=args.config, line=index.get(f"$.{key}"),
                                  fix=(f"did you mean '{guess[0]}'? " if guess else "") +
                                  f"settings: {', '.join(fields)}")
            if key == "lam" and isinstance(value, (int, float)) and not isinstance(value, bool):
                value = str(value)  # `lam: 0.9` in YAML is a number; the setting is text (or "adaptive")
            values[key] = tuple(value) if key == "classes" and isinstance(value, list) else value
    from_file = [k for k in values if getattr(args, k, None) is None]
    for name in fields:
        given = getattr(args, name, None)
        if given is not None:
            values[name] = tuple(given) if name == "classes" else given
    cfg = cls(**values)
    for key in from_file:  # the file's values, located at their line (flags are typed by the parser)
        try:
            check_setting(cls, key, getattr(cfg, key))
        except ConfigError as err:
            raise err.located(args.config, index.get(f"$.{key}")) from None
    return cfg



def _experiments() -> dict:
    """``sggraph train`` experiments: name → (config class, run function, default run directory). The config
    classes are torch-free; a run function loads its experiment (and torch) when it is called."""
    from ..experiments.bandit_config import BanditConfig
    from ..experiments.popgym_config import PopgymConfig

    def run_bandit(*args, **kwargs):
        from ..experiments.mnist_bandit import run_bandit

        return run_bandit(*args, **kwargs)

    def run_popgym(*args, **kwargs):
        from ..experiments.popgym import run_popgym

        return run_popgym(*args, **kwargs)

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
    from ..runtime.threads import configure_threads

    cls, run, default_out, _ = _experiments()[args.experiment]
    cfg = _config_from(args, cls)
    cfg.validate()  # every setting checked before anything is created or written
    configure_threads(args.threads, cfg.typical_op_elements())
    out = args.out or default_out(cfg)
    summary = run(cfg, out, resume=args.resume, progress=not args.quiet, overwrite=args.overwrite)
    print(json.dumps(summary, indent=2))
    print(f"run directory: {out}")
    return 0



def add_parser(sub) -> None:
    import dataclasses
    import typing

    from ..experiments.settings import field_help

    p = sub.add_parser("train", help="train an experiment: mnist-bandit, popgym",
                       description="Train one run of an experiment into a run directory (config.json, metrics.csv, summary.json, learning_curve.png, checkpoint.pt); settings from --config FILE.yaml, overridden by flags. --resume continues a killed run; only its length may grow.")
    which = p.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT")
    for name, (cls, _, _default_out, about) in _experiments().items():
        e = which.add_parser(name, help=about, description=about)
        e.add_argument("--config", help="YAML file of settings (flags override it)")
        e.add_argument("--out", help="run directory (default under runs/)")
        e.add_argument("--resume", action="store_true",
                       help="continue the killed (or finished) run in --out from its checkpoint; only its length "
                            "may grow")
        e.add_argument("--overwrite", action="store_true",
                       help="replace the run files in a non-empty --out (without it, a finished, killed or foreign "
                            "run there is refused)")
        add_run_flags(e)
        hints = typing.get_type_hints(cls)
        about = field_help(cls)
        for f in dataclasses.fields(cls):
            flag = "--lambda" if f.name == "lam" else "--" + f.name.replace("_", "-")
            kind = hints[f.name]
            default = " ".join(map(str, f.default)) if isinstance(f.default, tuple) else \
                str(f.default).lower() if isinstance(f.default, bool) else f.default
            text = f"{about[f.name]} (default {default})" if f.name in about else f"default {default}"
            if f.name == "classes":
                e.add_argument(flag, dest=f.name, type=int, nargs="+", default=None, metavar="DIGIT", help=text)
            elif kind is bool:
                e.add_argument(flag, dest=f.name, type=lambda v: v.lower() in ("1", "true", "yes"), default=None,
                               metavar="true|false", help=text)
            elif f.name == "lam":
                e.add_argument(flag, dest="lam", default=None, metavar="adaptive|λ", help=text)
            else:
                base = {int: int, float: float, str: str}.get(kind)
                if base is None:  # optional types
                    args_ = [a for a in typing.get_args(kind) if a is not type(None)]
                    base = args_[0] if args_ else str
                e.add_argument(flag, dest=f.name, type=base, default=None, help=text)
        e.set_defaults(run=_cmd_train, validate=_validate_train)
