"""A one-line progress display for training runs (shared by every experiment).

>>> import io
>>> buf = io.StringIO()
>>> show = progress_printer(buf)
>>> show("step 1/2"); show("step 2/2")
>>> buf.getvalue().splitlines()
['step 1/2', 'step 2/2']
"""

from __future__ import annotations

import sys
from collections.abc import Callable

__all__ = ["progress_printer"]


def progress_printer(stream=None) -> Callable[[str], None]:
    """A one-line progress display on ``stream`` (default: the current ``sys.stderr``; carriage
    return on a terminal, lines otherwise)."""
    stream = sys.stderr if stream is None else stream
    tty = stream.isatty()

    def show(text: str) -> None:
        stream.write(("\r" + text + " " * 8) if tty else text + "\n")
        stream.flush()

    return show
