"""The argument parser the sweep reads a command's settings from.

:class:`CommandParser` is an ``argparse.ArgumentParser`` that keeps, as public attributes,
what the sweep needs: :attr:`~CommandParser.options` (every argument added, in order) and
:attr:`~CommandParser.commands` (its subcommands by name). The command line builds its
parser from it once and hands that parser to the sweep.

>>> p = CommandParser(prog="x"); sub = p.add_subparsers(dest="command")
>>> run = sub.add_parser("run"); _ = run.add_argument("--steps", type=int)
>>> sorted(p.commands), [a.dest for a in p.commands["run"].options]
(['run'], ['help', 'steps'])
"""

from __future__ import annotations

import argparse
import difflib
import sys
from typing import Any

__all__ = ["CommandParser"]


class CommandParser(argparse.ArgumentParser):
    """An argument parser that records its arguments and subcommands; errors exit 2 with one line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.options: list[argparse.Action] = []
        self.commands: dict[str, CommandParser] = {}
        kwargs.setdefault("allow_abbrev", False)  # --unrol is not --unroll: a misspelt flag is an error
        super().__init__(*args, **kwargs)

    def parse_args(self, args: Any = None, namespace: Any = None) -> argparse.Namespace:  # type: ignore[override]
        """Parse; an unknown flag is reported by the (sub)command that was chosen, with its usage and the
        closest flag it has."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            chosen = self.chosen(parsed)
            hint = ""
            flags = [s for a in chosen.options for s in a.option_strings]
            for extra in extras:
                if extra.startswith("-"):
                    close = difflib.get_close_matches(extra.split("=")[0], flags, n=1)
                    if close:
                        hint = f" (did you mean {close[0]}?)"
                        break
            chosen.error(f"unrecognized arguments: {' '.join(extras)}{hint}")
        return parsed

    def chosen(self, parsed: argparse.Namespace) -> CommandParser:
        """The innermost subcommand parser that ``parsed`` selected (this parser when none)."""
        parser = self
        while True:
            action = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
            name = getattr(parsed, action.dest, None) if action is not None else None
            if action is None or name not in action.choices:
                return parser
            parser = action.choices[name]

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        self.options.append(action)
        return action

    def add_subparsers(self, **kwargs: Any):  # noqa: ANN201 - argparse's own return type is private
        kwargs.setdefault("parser_class", CommandParser)
        action = super().add_subparsers(**kwargs)
        self.commands = action.choices  # filled by add_parser
        return action

    def error(self, message: str) -> None:  # argparse's own exit code is already 2
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog.split()[0]}: error: {message}\n")
