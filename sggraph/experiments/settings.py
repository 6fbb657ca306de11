"""Validation shared by the experiment configs: types, finite numbers, ranges, seeds and sizes.

``sggraph train`` validates a config as soon as its flags and ``--config`` file are read,
before anything is written; a sweep runs the same validation on every run of its grid
before the first one starts.

>>> from dataclasses import dataclass
>>> @dataclass
... class Demo:
...     lr: float = 0.1
...     seed: int = 0
>>> check_types(Demo(lr=float("nan")))
Traceback (most recent call last):
...
sggraph.exceptions.ConfigError: lr = nan is not a finite number. Fix: set --lr to a number, e.g. 0.1.
>>> check_seed(Demo(seed=-1))
Traceback (most recent call last):
...
sggraph.exceptions.ConfigError: seed = -1 is outside 0..4294967295. Fix: use a seed in 0..4294967295.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from collections.abc import Iterable
from typing import Any

from ..exceptions import ConfigError

__all__ = ["MAX_RATE", "MAX_SEED", "MAX_SIZE", "MAX_STEPS", "check_between", "check_lambda_setting", "check_positive",
           "check_seed", "check_setting", "check_sizes", "check_types", "field_help", "flag"]

#: Largest seed (NumPy's and the environments' generators take 32-bit seeds).
MAX_SEED = 2**32 - 1
#: Largest network or batch size (neurons, widths, dimensions, slots, batch sizes).
MAX_SIZE = 2**20
#: Largest number of training steps, batches, evaluations or snapshots.
MAX_STEPS = 10**9
#: Largest learning rate (the optimizers compute in float32; far larger rates only diverge).
MAX_RATE = 1e30


def flag(name: str) -> str:
    """The command-line flag of a setting.

    >>> flag("eval_batch"), flag("lam")
    ('--eval-batch', '--lambda')
    """
    return "--lambda" if name == "lam" else "--" + name.replace("_", "-")


def _words(kind: Any) -> str:
    return {int: "an integer", float: "a number", str: "a word", bool: "true or false"}.get(kind, str(kind))


@functools.lru_cache(maxsize=None)
def _type_hints(cls: type) -> dict[str, Any]:
    """``typing.get_type_hints(cls)``, evaluated once per class (a sweep checks every setting of every run)."""
    return typing.get_type_hints(cls)


@functools.lru_cache(maxsize=None)
def field_help(cls: type) -> dict[str, str]:
    """Each setting's ``#:`` comment in the source of the config class ``cls`` (what ``--help`` says of it).

    >>> from sggraph.experiments.bandit_config import BanditConfig
    >>> field_help(BanditConfig)["method"]
    'sgprop | backprop | mlp'
    """
    import inspect
    import re

    source = inspect.getsource(cls)
    return {m[1]: m[2].strip() for m in re.finditer(r"^    (\w+): [^=\n]+=[^\n]*?#: (.+)$", source, re.M)}


def check_setting(cls: type, name: str, value: Any) -> None:
    """Raise :class:`~sggraph.ConfigError` unless ``value`` has the type of setting ``name`` of the config
    class ``cls`` (numbers finite; a whole number is a valid float).

    >>> from sggraph.experiments.mnist_bandit import BanditConfig
    >>> check_setting(BanditConfig, "steps", 10); check_setting(BanditConfig, "lr", 1)
    >>> check_setting(BanditConfig, "steps", "ten")
    Traceback (most recent call last):
    ...
    sggraph.exceptions.ConfigError: steps = 'ten' is not an integer. Fix: set --steps to an integer, e.g. 1500.
    """
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    kind = _type_hints(cls)[name]
    alternatives = typing.get_args(kind)
    if type(None) in alternatives:  # an optional setting
        if value is None:
            return
        kind = next(a for a in alternatives if a is not type(None))
    example = field.default if field.default is not dataclasses.MISSING and field.default is not None else None
    fix = f"set {flag(name)} to {_words(kind) if typing.get_origin(kind) is not tuple else 'a list of integers'}" \
          + (f", e.g. {_example(example)}" if example is not None else "")
    if typing.get_origin(kind) is tuple:
        ok = isinstance(value, (tuple, list)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        if not ok:
            raise ConfigError(f"{name} = {value!r} is not a list of integers", fix=fix)
        return
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} = {value!r} is not a number", fix=fix)
        if not math.isfinite(value):
            raise ConfigError(f"{name} = {value!r} is not a finite number", fix=fix)
        return
    ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
    if not ok:
        raise ConfigError(f"{name} = {value!r} is not {_words(kind)}", fix=fix)


def _example(value: Any) -> str:
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    return str(value).lower() if isinstance(value, bool) else str(value)


def check_types(cfg: Any) -> None:
    """Check every setting of a config dataclass with :func:`check_setting`."""
    for field in dataclasses.fields(cfg):
        check_setting(type(cfg), field.name, getattr(cfg, field.name))


def check_seed(cfg: Any, name: str = "seed") -> None:
    """Raise unless the seed is in ``0..MAX_SEED``."""
    value = getattr(cfg, name)
    if not 0 <= value <= MAX_SEED:
        raise ConfigError(f"{name} = {value} is outside 0..{MAX_SEED}", fix=f"use a seed in 0..{MAX_SEED}")


def check_sizes(cfg: Any, names: Iterable[str], *, largest: int = MAX_SIZE, smallest: int = 1) -> None:
    """Raise unless each integer setting in ``names`` (None skipped) is in ``smallest..largest``."""
    for name in names:
        value = getattr(cfg, name)
        if value is not None and value < smallest:
            raise ConfigError(f"{name} must be at least {smallest} (got {value})", fix=f"set {flag(name)} >= {smallest}")
        if value is not None and value > largest:
            raise ConfigError(f"{name} = {value:,} is larger than the limit {largest:,}",
                              fix=f"set {flag(name)} to at most {largest:,}")


def check_positive(cfg: Any, names: Iterable[str], *, zero: bool = False, largest: float | None = None) -> None:
    """Raise unless each number in ``names`` (None skipped) is positive (``zero``: or zero) and at most
    ``largest``."""
    for name in names:
        value = getattr(cfg, name)
        if value is None:
            continue
        if largest is not None and value > largest:
            raise ConfigError(f"{name} = {value:g} is larger than the limit {largest:g}",
                              fix=f"set {flag(name)} to at most {largest:g}")
        if value < 0 or (value == 0 and not zero):
            bound = ">= 0" if zero else "> 0"
            raise ConfigError(f"{name} = {value} must be {bound}", fix=f"set {flag(name)} {bound}, e.g. "
                              f"{_example(next(f for f in dataclasses.fields(cfg) if f.name == name).default)}")


def check_between(cfg: Any, names: Iterable[str], low: float = 0.0, high: float = 1.0) -> None:
    """Raise unless each number in ``names`` is in ``[low, high]``."""
    for name in names:
        value = getattr(cfg, name)
        if not low <= value <= high:
            raise ConfigError(f"{name} = {value} is outside [{low:g}, {high:g}]",
                              fix=f"set {flag(name)} in [{low:g}, {high:g}]")


def check_lambda_setting(lam: str, symbol: str = "λ") -> None:
    """Raise :class:`~sggraph.ConfigError` unless ``lam`` is ``"adaptive"`` or a number in ``[0, 1]``.

    >>> check_lambda_setting("0.5"); check_lambda_setting("adaptive")
    >>> check_lambda_setting("2")
    Traceback (most recent call last):
    ...
    sggraph.exceptions.ConfigError: --lambda 2.0 is outside [0, 1]. Fix: use a λ in [0, 1].
    """
    if lam == "adaptive":
        return
    try:
        value = float(lam)
    except ValueError:
        raise ConfigError(f"--lambda must be 'adaptive' or a number, got {lam!r}",
                          fix="pass --lambda adaptive or e.g. --lambda 0.9") from None
    if not 0 <= value <= 1 or math.isnan(value):
        raise ConfigError(f"--lambda {value} is outside [0, 1]", fix=f"use a {symbol} in [0, 1]")
