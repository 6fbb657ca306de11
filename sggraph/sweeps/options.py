"""A command's settings as a sweep sees them: the options of its argument parser, values checked and
turned into arguments, and the names and run names the values give."""

from __future__ import annotations

import argparse
import difflib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..exceptions import SpecError
from .commands import CommandParser

__all__ = ["command_options", "format_value", "run_name"]

#: Flags the sweep itself passes to every run; a spec may not set them.
MANAGED = ("out", "resume", "overwrite", "help")
#: Commands that cannot be swept (they run sweeps or read them).
NOT_SWEEPABLE = ("sweep", "plot")


def _subparsers(parser: CommandParser) -> CommandParser | None:
    """The parser itself when it has subcommands (their names are ``parser.commands``), else None."""
    return parser if parser.commands else None


def _long_name(action: argparse.Action) -> str:
    longs = [s for s in action.option_strings if s.startswith("--")]
    return (longs[0] if longs else action.option_strings[0]).lstrip("-").replace("-", "_")


def command_options(words: Sequence[str], parser: CommandParser, *,
                    file: str | None = None, line: int | None = None) -> dict[str, argparse.Action]:
    """The settings (optional flags) of the ``sggraph`` command ``words``, by canonical name.

    The canonical name of a flag is its long option without dashes, ``-`` written ``_``
    (``--n-parents`` → ``n_parents``, ``--lambda`` → ``lambda``).

    Parameters
    ----------
    words : sequence of str
        The command, e.g. ``["train", "mnist-bandit"]`` or ``["expert"]``.
    parser : CommandParser
        The root parser of the ``sggraph`` command (the command line hands it over).
    file, line : optional
        Where the command was written, for errors.

    Raises
    ------
    SpecError
        Unknown or incomplete command, or one that cannot be swept.

    Examples
    --------
    >>> from sggraph.cli import build_parser
    >>> opts = command_options(["expert"], build_parser())
    >>> "trials" in opts and "out" in opts
    True
    >>> command_options(["exprt"], build_parser())
    Traceback (most recent call last):
    ...
    sggraph.exceptions.SpecError: unknown command 'exprt'. Fix: did you mean 'expert'? ...
    """
    if not words:
        raise SpecError("the spec names no command", file=file, line=line,
                        fix="write e.g. `command: train mnist-bandit`")
    if words[0] in NOT_SWEEPABLE:
        raise SpecError(f"`sggraph {words[0]}` cannot be swept", file=file, line=line,
                        fix="sweep a command that makes one run, e.g. `train mnist-bandit` or `expert`")
    path: list[str] = []
    positional = 0
    for word in words:
        if word.startswith("-"):
            raise SpecError(f"flag '{word}' in the command", file=file, line=line,
                            fix="write flags under `settings:` or `grid:` without the dashes")
        sub = _subparsers(parser)
        if sub is not None:
            if word not in sub.commands:
                guess = difflib.get_close_matches(word, list(sub.commands), n=1)
                where = f" of `sggraph {' '.join(path)}`" if path else ""
                raise SpecError(f"unknown command '{word}'{where}", file=file, line=line,
                                fix=(f"did you mean '{guess[0]}'? " if guess else "")
                                + f"commands: {', '.join(c for c in sub.commands if c not in NOT_SWEEPABLE)}")
            parser, positional = sub.commands[word], 0
            path.append(word)
            continue
        slots = [a for a in parser.options if not a.option_strings]
        if positional >= len(slots):
            raise SpecError(f"too many words in the command `{' '.join(words)}`", file=file, line=line,
                            fix=f"`sggraph {' '.join(path)}` takes no further positional arguments")
        slot = slots[positional]
        if slot.choices is not None and word not in slot.choices:
            raise SpecError(f"unknown {slot.dest} '{word}' of `sggraph {' '.join(path)}`", file=file, line=line,
                            fix=f"use one of: {', '.join(map(str, slot.choices))}")
        positional += 1
        path.append(word)
    sub = _subparsers(parser)
    if sub is not None:
        raise SpecError(f"incomplete command `{' '.join(words)}`", file=file, line=line,
                        fix=f"add one of: {', '.join(sub.commands)}")
    missing = [a.dest for a in [a for a in parser.options if not a.option_strings][positional:]
               if a.nargs not in ("?", "*")]
    if missing:
        raise SpecError(f"`sggraph {' '.join(words)}` needs the positional argument(s) {', '.join(missing)}",
                        file=file, line=line, fix="write them in the command, after its name")
    options = {_long_name(a): a for a in parser.options if a.option_strings}
    if "out" not in options:
        raise SpecError(f"`sggraph {' '.join(words)}` has no --out, so its runs cannot be kept apart",
                        file=file, line=line, fix="sweep a command that writes a run directory")
    return options


def _aliases(options: Mapping[str, argparse.Action]) -> dict[str, str]:
    """Every spelling of a setting (``n-parents``, ``n_parents``, the dest) → its canonical name."""
    out: dict[str, str] = {}
    for name, action in options.items():
        for spelling in [name, action.dest, *(s.lstrip("-") for s in action.option_strings if s.startswith("--"))]:
            out.setdefault(spelling, name)
            out.setdefault(spelling.replace("-", "_"), name)
    return out


# ---------------------------------------------------------------------------------------------
# values


def format_value(value: Any) -> str:
    """A setting value as a command-line word (floats exactly, bools as true/false).

    >>> format_value(2e-05), format_value(0.005), format_value(True), format_value("gru")
    ('2e-05', '0.005', 'true', 'gru')
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _name_value(value: Any) -> str:
    text = "-".join(format_value(v) for v in value) if isinstance(value, list) else format_value(value)
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text)


def run_name(settings: Mapping[str, Any]) -> str:
    """A filesystem-safe run-directory name from a run's grid settings.

    >>> run_name({"method": "sgprop", "lr": 0.005, "seed": 0})
    'method=sgprop,lr=0.005,seed=0'
    >>> run_name({"classes": [0, 1, 3], "data_dir": "/tmp/x y"})
    'classes=0-1-3,data_dir=_tmp_x_y'
    """
    name = ",".join(f"{k}={_name_value(v)}" for k, v in settings.items()) or "default"
    if len(name) > 200:  # file names are limited to 255 bytes
        import hashlib

        name = name[:180] + "," + hashlib.sha1(name.encode()).hexdigest()[:12]
    return name


def _check_value(name: str, action: argparse.Action, value: Any, command: str, *,
                 file: str | None, line: int | None) -> Any:
    """Check a setting's value against its flag; returns it with numbers converted (``'2e-4'`` → 0.0002)."""
    def fail(message: str, fix: str) -> SpecError:
        return SpecError(f"setting '{name}' of `sggraph {command}`: {message}", file=file, line=line, fix=fix)

    if value is None:
        raise fail("no value (null)", "give a value, or leave the setting out to use the command's default")
    if isinstance(value, Mapping):
        raise fail(f"a mapping is not a value ({value!r})", "give a number, a word or a list")
    if action.nargs == 0:  # store_true / store_false
        if not isinstance(value, bool):
            raise fail(f"takes true or false, got {value!r}", f"write `{name}: true` or `{name}: false`")
        return value
    items = value if isinstance(value, list) else [value]
    if isinstance(value, list):
        if action.nargs in (None, "?"):
            raise fail(f"takes one value, got the list {value!r}",
                       "give one value (in `grid:`, a list means alternatives: one run each)")
        if not value and action.nargs == "+":
            raise fail("takes at least one value, got []", "give a non-empty list")
        if isinstance(action.nargs, int) and len(value) != action.nargs:
            raise fail(f"takes {action.nargs} values, got {len(value)}", f"give {action.nargs} values")
    converted = []
    for item in items:
        if isinstance(item, (list, Mapping)) or item is None:
            raise fail(f"{item!r} is not a value", "give numbers or words")
        word = format_value(item)
        if action.type is not None and callable(action.type):
            try:
                item_value = action.type(word)
            except (ValueError, TypeError, argparse.ArgumentTypeError):
                kind = {int: "an integer", float: "a number"}.get(action.type, "a valid value")
                raise fail(f"{word!r} is not {kind}", f"give {kind}") from None
        else:
            item_value = word
        if action.choices is not None and item_value not in action.choices:
            raise fail(f"{word!r} is not one of its choices", f"use one of: {', '.join(map(str, action.choices))}")
        if action.type in (int, float) and not isinstance(item, bool):
            converted.append(item_value)
        else:
            converted.append(item)
    return converted if isinstance(value, list) else converted[0]


def _argv_for(name: str, action: argparse.Action, value: Any) -> list[str]:
    flag = next((s for s in action.option_strings if s.startswith("--")), action.option_strings[0])
    if action.nargs == 0:
        on = bool(value) if action.const is not False else not value  # store_false: the flag turns it off
        return [flag] if on else []
    items = value if isinstance(value, list) else [value]
    return [flag, *(format_value(v) for v in items)]
