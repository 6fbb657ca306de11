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
import sys
from typing import Any

__all__ = ["CommandParser"]


class CommandParser(argparse.ArgumentParser):
    """An argument parser that records its arguments and subcommands; errors exit 2 with one line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.options: list[argparse.Action] = []
        self.commands: dict[str, CommandParser] = {}
        super().__init__(*args, **kwargs)

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
