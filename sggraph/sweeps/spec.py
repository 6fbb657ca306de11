"""Sweep specs: one command over a grid of settings, validated against the command before any run.

A sweep spec is a YAML file::

    name: small                        # optional (default: the file's stem)
    command: train mnist-bandit        # any sggraph command that takes --out
    settings:                          # fixed settings, passed to every run
      steps: 600
    grid:                              # every combination becomes one run
      method: [sgprop, backprop]
      lr: [0.001, 0.005]
      seed: [0, 1]

A grid of more than :data:`LARGE_SWEEP` runs must say how many it makes (``runs: 1200``), so that
a grid grown by mistake is refused before anything is expanded or created; no sweep holds more
than :data:`MAX_RUNS`.

Settings are the command's own flags without the dashes (``n_parents`` or ``n-parents``
for ``--n-parents``); they are checked against the command's argument parser, so every
flag the command has — and nothing else — is a setting. In ``grid:`` every list is a list
of alternatives (a setting that itself takes a list, like ``classes``, gets a list of
lists). A grid entry whose value is a list of mappings is a *group*: its entries are
alternatives whose settings vary together, and each entry may itself hold lists (a small
grid of its own)::

    grid:
      variant:                         # the name of a group is free
        - {model: sparsenet, method: [sgprop, backprop]}
        - {model: gru, method: backprop}
      lr: [0.0005, 0.001]
      seed: [0, 1, 2]

Each run is ``python -m sggraph COMMAND --flags --out OUT/NAME`` in a run directory named
by its grid settings (``method=sgprop,lr=0.005,seed=0``), with the run's ``stdout.log``,
``stderr.log`` and ``sweep_run.json`` (its command and settings). A run is finished when
its ``summary.json`` exists; a run with a ``checkpoint.pt`` but no summary was killed and
is continued with ``--resume``. The sweep writes ``OUT/sweep.json`` and ``OUT/runs.csv``
(status, exit code, seconds and error of every run) after each run, and exits 1 if any
run failed — after finishing all the others.

Examples
--------
>>> from sggraph.cli import build_parser  # the command line hands its parser to the sweep
>>> parser = build_parser()
>>> spec = spec_from_dict({"command": "train mnist-bandit", "settings": {"steps": 10},
...                        "grid": {"method": ["sgprop", "backprop"], "seed": [0, 1]}}, parser=parser)
>>> [cell.name for cell in spec.cells()]
['method=sgprop,seed=0', 'method=sgprop,seed=1', 'method=backprop,seed=0', 'method=backprop,seed=1']
>>> spec.argv(spec.cells()[0])
['train', 'mnist-bandit', '--steps', '10', '--method', 'sgprop', '--seed', '0']
>>> spec_from_dict({"command": "train mnist-bandit", "grid": {"stpes": [1, 2]}}, parser=parser)
Traceback (most recent call last):
...
sggraph.exceptions.SpecError: unknown setting 'stpes' of `sggraph train mnist-bandit` in grid. Fix: did you mean 'steps'? ...
"""

from __future__ import annotations

import argparse
import difflib
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..exceptions import SpecError
from .commands import CommandParser
from .options import MANAGED, _aliases, _argv_for, _check_value, command_options, format_value, run_name

__all__ = [
    "GridCell",
    "SweepSpec",
    "command_options",
    "expand_grid",
    "format_value",
    "grid_size",
    "load_spec",
    "run_name",
    "spec_from_dict",
]

#: Top-level keys of a spec.
SPEC_KEYS = ("name", "command", "settings", "grid", "description", "runs")
#: The most runs one sweep may hold (a larger grid is refused before anything is expanded).
MAX_RUNS = 10_000
#: A grid of more runs than this must say how many it makes (``runs: N`` in the spec), so that a grid grown
#: by mistake (one list too many) is caught before it is expanded, planned and started.
LARGE_SWEEP = 500
#: Per-run files written by the sweep (the command writes the rest).
RUN_FILE = "sweep_run.json"


# ---------------------------------------------------------------------------------------------
# the command's settings, from its argument parser


# ---------------------------------------------------------------------------------------------
# the grid


@dataclass(frozen=True)
class _Axis:
    """One grid entry: a setting with alternatives, or a group of sub-grids."""

    key: str
    values: tuple[Any, ...] = ()  # alternatives of a setting axis
    entries: tuple[tuple[_Axis, ...], ...] = ()  # a group: each entry is a list of setting axes
    group: bool = False


def expand_grid(axes: Sequence[_Axis]) -> list[dict[str, Any]]:
    """Every combination of a grid, in order (the last axis varies fastest); duplicates removed.

    >>> g = [_Axis("a", (1, 2)), _Axis("v", entries=((_Axis("m", ("x",)),), (_Axis("m", ("y",)), _Axis("b", (0, 1)))),
    ...      group=True)]
    >>> expand_grid(g)
    [{'a': 1, 'm': 'x'}, {'a': 1, 'm': 'y', 'b': 0}, {'a': 1, 'm': 'y', 'b': 1}, {'a': 2, 'm': 'x'}, {'a': 2, 'm': 'y', 'b': 0}, {'a': 2, 'm': 'y', 'b': 1}]
    """
    def choices(axis: _Axis) -> list[dict[str, Any]]:
        if not axis.group:
            return [{axis.key: v} for v in axis.values]
        return [cell for entry in axis.entries for cell in expand_grid(entry)]

    cells, seen = [], set()
    for parts in itertools.product(*(choices(a) for a in axes)):
        cell: dict[str, Any] = {}
        for part in parts:
            cell.update(part)
        key = json.dumps(cell, sort_keys=True)
        if key not in seen:
            seen.add(key)
            cells.append(cell)
    return cells


def grid_size(axes: Sequence[_Axis]) -> int:
    """The number of combinations of a grid before duplicates are removed (computed, not expanded).

    >>> grid_size([_Axis("a", (1, 2, 3)), _Axis("v", entries=((_Axis("m", ("x",)),), (_Axis("b", (0, 1)),)),
    ...            group=True)])
    9
    """
    size = 1
    for axis in axes:
        size *= sum(grid_size(entry) for entry in axis.entries) if axis.group else len(axis.values)
    return size


@dataclass(frozen=True)
class GridCell:
    """One run of a sweep: its grid settings and its directory name."""

    name: str
    settings: dict[str, Any]


@dataclass
class SweepSpec:
    """A validated sweep spec (see the module docstring for the format).

    Attributes
    ----------
    name : str
    command : list of str
        e.g. ``["train", "mnist-bandit"]``.
    settings : dict
        Fixed settings (canonical names), passed to every run.
    axes : list
        The grid.
    options : dict
        The command's flags by canonical name.
    file : str or None
    """

    name: str
    command: list[str]
    settings: dict[str, Any]
    axes: list[_Axis]
    options: dict[str, argparse.Action] = field(repr=False)
    file: str | None = None

    def cells(self) -> list[GridCell]:
        """Every run of the grid, named by its grid settings."""
        cells = [GridCell(run_name(s), s) for s in expand_grid(self.axes)]
        names: dict[str, dict] = {}
        for cell in cells:
            if cell.name in names:
                raise SpecError(f"two runs get the same directory name '{cell.name}' ({names[cell.name]} and "
                                f"{cell.settings})", file=self.file,
                                fix="make the values differ after non-alphanumeric characters are replaced by _")
            names[cell.name] = cell.settings
        return cells

    def run_settings(self, cell: GridCell) -> dict[str, Any]:
        """The fixed settings overlaid with the cell's."""
        return {**self.settings, **cell.settings}

    def argv(self, cell: GridCell) -> list[str]:
        """The command line of a run (without ``--out`` and ``--resume``)."""
        argv = list(self.command)
        for name, value in self.run_settings(cell).items():
            argv += _argv_for(name, self.options[name], value)
        return argv

    @property
    def resumable(self) -> bool:
        """Whether the command takes ``--resume``."""
        return "resume" in self.options

    def __repr__(self) -> str:
        return (f"SweepSpec({self.name!r}, command={' '.join(self.command)!r}, "
                f"{len(self.settings)} fixed settings, {len(self.cells())} runs)")


def _canonical(key: Any, aliases: Mapping[str, str], command: str, where: str, *,
               file: str | None, line: int | None) -> str:
    key = str(key)
    if key in MANAGED or aliases.get(key) in MANAGED:
        raise SpecError(f"setting '{key}' in {where} is managed by the sweep", file=file, line=line,
                        fix="leave it out: every run gets --out OUT/NAME, and --resume when it was killed; "
                            "a finished run is redone by deleting its directory")
    if key not in aliases:
        names = sorted(n for n in set(aliases.values()) if n not in MANAGED)
        guess = difflib.get_close_matches(key.replace("-", "_"), names, n=1)
        raise SpecError(f"unknown setting '{key}' of `sggraph {command}` in {where}", file=file, line=line,
                        fix=(f"did you mean '{guess[0]}'? " if guess else "") + f"settings: {', '.join(names)}")
    return aliases[key]


def spec_from_dict(data: Any, *, file: str | None = None, lines: Mapping[str, int] | None = None,
                   parser: CommandParser) -> SweepSpec:
    """Validate a spec given as a mapping (``lines``: document path → line, for errors).

    Raises
    ------
    SpecError
        Unknown key, command or setting; empty grid; a value the command would reject.
    """
    where = _Where(file, lines or {})
    _check_keys(data, where)
    words = _command_words(data.get("command"), where)
    options = command_options(words, parser, file=file, line=where.at("$.command"))
    reader = _SettingsReader(" ".join(words), options, _aliases(options), where)
    reader.read_fixed(data.get("settings") or {})
    axes = [reader.grid_axis(key, values) for key, values in _grid_mapping(data.get("grid"), where).items()]
    name = _sweep_name(data.get("name"), where)
    size = grid_size(axes)
    _check_size(size, data.get("runs"), where)
    spec = SweepSpec(name=name, command=words, settings=reader.fixed, axes=axes, options=options, file=file)
    for cell in spec.cells():  # duplicate names are spec errors; every run's config is validated up front
        _validate_run(spec, cell, parser, reader.value_lines, where.at("$.grid"))
    return spec


@dataclass(frozen=True)
class _Where:
    """Where a spec was written: its file and the line of each document path, for errors."""

    file: str | None
    lines: Mapping[str, int]

    def at(self, path: str) -> int | None:
        """The line of the document path ``path`` (``$.grid.seed``), if known."""
        from ..core.spec import line_for

        return line_for(self.lines, path)


def _check_size(size: int, declared: Any, where: _Where) -> None:
    """The grid's ``size`` is at most :data:`MAX_RUNS`, and equals ``runs:`` when the spec declares it (which it
    must above :data:`LARGE_SWEEP` runs)."""
    if size > MAX_RUNS:
        raise SpecError(f"the grid makes {size:,} runs, more than the {MAX_RUNS:,} a sweep may hold", file=where.file,
                        line=where.at("$.grid"), fix="split it into several sweeps, or vary fewer settings at once")
    if declared is None:
        if size > LARGE_SWEEP:
            raise SpecError(f"the grid makes {size:,} runs; a sweep of more than {LARGE_SWEEP} runs must say so",
                            file=where.file, line=where.at("$.grid"),
                            fix=f"add `runs: {size}` to the spec if you mean it, or vary fewer settings at once")
        return
    if isinstance(declared, bool) or not isinstance(declared, int) or declared != size:
        raise SpecError(f"`runs: {declared}` but the grid makes {size:,} runs", file=where.file,
                        line=where.at("$.runs"), fix=f"write `runs: {size}`, or change the grid to make {declared}")


def _check_keys(data: Any, where: _Where) -> None:
    """The spec is a mapping of known top-level keys."""
    if not isinstance(data, Mapping):
        raise SpecError("a sweep spec must be a mapping with `command:` and `grid:`", file=where.file, line=1,
                        fix="see examples/sweeps/small.yaml")
    for key in data:
        if key not in SPEC_KEYS:
            guess = difflib.get_close_matches(str(key), SPEC_KEYS, n=1)
            raise SpecError(f"unknown key '{key}' in the sweep spec", file=where.file, line=where.at(f"$.{key}"),
                            fix=(f"did you mean '{guess[0]}'? " if guess else "") + f"keys: {', '.join(SPEC_KEYS)}")


def _command_words(command: Any, where: _Where) -> list[str]:
    """The words of ``command:``, which must be non-blank text."""
    if not isinstance(command, str) or not command.strip():
        raise SpecError("the spec needs `command:`, a sggraph command as text", file=where.file,
                        line=where.at("$.command") or 1, fix="write e.g. `command: train mnist-bandit`")
    return command.split()


def _grid_mapping(grid: Any, where: _Where) -> Mapping:
    """``grid:``, which must be a non-empty mapping."""
    if grid is None or (isinstance(grid, (Mapping, list)) and not grid):
        raise SpecError("the grid is empty", file=where.file, line=where.at("$.grid") or 1,
                        fix="add `grid:` with at least one setting and its values, e.g. `seed: [0, 1]`")
    if not isinstance(grid, Mapping):
        raise SpecError("`grid:` must be a mapping of setting: [values]", file=where.file, line=where.at("$.grid"),
                        fix="write e.g. `grid: {seed: [0, 1, 2]}`")
    return grid


def _sweep_name(name: Any, where: _Where) -> str:
    """``name:``, by default the file's stem (``sweep`` without a file); a plain word."""
    if name is None:
        name = Path(where.file).stem if where.file else "sweep"
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9._+-]+", name):
        raise SpecError(f"sweep name {name!r} is not a plain word", file=where.file, line=where.at("$.name"),
                        fix="use letters, digits and . _ + - only")
    return name


@dataclass
class _SettingsReader:
    """Reads the settings of one command from a spec: canonical names and checked values.

    Attributes
    ----------
    fixed : dict
        The fixed settings (``settings:``), by canonical name.
    used : dict
        Each setting the grid varies → where (``grid 'seed'``, ``group 'variant'``).
    value_lines : dict
        (setting, formatted value) → the line of that value in the grid.
    """

    command: str
    options: dict[str, argparse.Action]
    aliases: dict[str, str]
    where: _Where
    fixed: dict[str, Any] = field(default_factory=dict)
    used: dict[str, str] = field(default_factory=dict)
    value_lines: dict[tuple[str, str], int | None] = field(default_factory=dict)

    def _name(self, key: Any, place: str, line: int | None) -> str:
        """The canonical name of the setting ``key`` written in ``place`` (see :func:`_canonical`)."""
        return _canonical(key, self.aliases, self.command, place, file=self.where.file, line=line)

    def _check(self, name: str, value: Any, line: int | None) -> Any:
        """``value`` checked against the flag of setting ``name`` (see :func:`_check_value`)."""
        return _check_value(name, self.options[name], value, self.command, file=self.where.file, line=line)

    def read_fixed(self, settings: Any) -> None:
        """Read ``settings:`` (a mapping of setting: value) into :attr:`fixed`."""
        if not isinstance(settings, Mapping):
            raise SpecError("`settings:` must be a mapping of setting: value", file=self.where.file,
                            line=self.where.at("$.settings"),
                            fix="write one `setting: value` per line under `settings:`")
        for key, value in settings.items():
            line = self.where.at(f"$.settings.{key}")
            name = self._name(key, "settings", line)
            if name in self.fixed:
                raise SpecError(f"setting '{name}' given twice in settings", file=self.where.file, line=line,
                                fix="keep one")
            self.fixed[name] = self._check(name, value, line)

    def grid_axis(self, key: Any, values: Any) -> _Axis:
        """The axis of the grid entry ``key: values``: a group when ``values`` lists mappings."""
        path = f"$.grid.{key}"
        if isinstance(values, list) and values and any(isinstance(v, Mapping) for v in values):
            return self._group_axis(key, values, path)
        return self._setting_axis(key, values, path, "grid", f"grid '{key}'")

    def _group_axis(self, key: Any, values: list, path: str) -> _Axis:
        """A group: each entry a mapping of settings varied together (each may hold lists)."""
        if not all(isinstance(v, Mapping) for v in values):
            raise SpecError(f"grid group '{key}' mixes mappings and values", file=self.where.file,
                            line=self.where.at(path),
                            fix="make every entry of a group a mapping of settings, e.g. `- {method: sgprop}`")
        entries = []
        for i, entry in enumerate(values):
            entries.append(tuple(self._setting_axis(k, v, f"{path}[{i}].{k}", f"grid group '{key}'", f"group '{key}'")
                                 for k, v in entry.items()))
        return _Axis(str(key), entries=tuple(entries), group=True)

    def _setting_axis(self, key: Any, values: Any, path: str, place: str, owner: str) -> _Axis:
        """One setting's alternatives (a single value is one alternative), each checked."""
        line = self.where.at(path)
        name = self._name(key, place, line)
        if name in self.fixed:
            raise SpecError(f"setting '{name}' is both fixed (settings) and varied (grid)", file=self.where.file,
                            line=line, fix="keep it in one place")
        if name in self.used and self.used[name] != owner:
            raise SpecError(f"setting '{name}' is varied in two places of the grid ({self.used[name]} and {owner})",
                            file=self.where.file, line=line, fix="vary each setting in one grid entry")
        self.used[name] = owner
        alternatives = values if isinstance(values, list) else [values]
        if not alternatives:
            raise SpecError(f"grid setting '{name}' has no values", file=self.where.file, line=line,
                            fix=f"give at least one value, e.g. `{name}: [...]`, or remove it")
        checked = tuple(self._check(name, v, line) for v in alternatives)
        for i, v in enumerate(checked):
            value_line = self.where.at(f"{path}[{i}]") if isinstance(values, list) else line
            self.value_lines.setdefault((name, format_value(v)), value_line)
        return _Axis(name, checked)


def _validate_run(spec: SweepSpec, cell: GridCell, parser: CommandParser,
                  value_lines: Mapping[tuple[str, str], int | None], grid_line: int | None) -> None:
    """Run the command's own config validation (its ``validate`` default, when it has one) on a run's
    settings; a rejected value is a :class:`SpecError` at the line of the grid value that caused it."""
    from ..exceptions import SggraphError

    argv = spec.argv(cell) + ["--out", "sweep-check"]
    try:
        args = parser.parse_args(argv)
    except SystemExit:  # values were checked one by one already; a combination argparse rejects
        raise SpecError(f"the command line of run '{cell.name}' is rejected: sggraph {' '.join(argv[:-2])}",
                        file=spec.file, line=grid_line, fix="run it by hand to see argparse's message") from None
    validate = getattr(args, "validate", None)
    if validate is None:
        return
    try:
        validate(args)
    except SggraphError as err:
        line = grid_line
        named = sorted(((format_value(v), n) for n, v in cell.settings.items()), key=lambda t: -len(t[0]))
        for text, name in named:  # the grid value the message quotes (longest first: '1.5' before '1')
            if text and re.search(rf"(?<![\w.]){re.escape(text)}(?![\w.])", err.message):
                line = value_lines.get((name, text), grid_line)
                break
        raise SpecError(f"run '{cell.name}' would be rejected by `sggraph {' '.join(spec.command)}`: "
                        f"{err.message.rstrip('.')}", file=spec.file, line=line,
                        fix=err.fix or "change the value in the spec") from None


def load_spec(path: str | Path, parser: CommandParser) -> SweepSpec:
    """Read (with :func:`~sggraph.core.safe_yaml.read_yaml`) and validate a sweep spec YAML file; errors name
    the file and line."""
    from ..core.safe_yaml import read_yaml

    doc = read_yaml(path, what="sweep spec")
    return spec_from_dict(doc.data, file=str(path), lines=doc.lines, parser=parser)
