"""Progress of long-running commands: a tqdm bar on a terminal, plain lines otherwise.

Every long-running command (``train``, ``sweep``, ``expert``, ``mse``, ``demo``, ``bench``)
reports through :class:`Progress`: on a terminal a `tqdm <https://tqdm.github.io>`_ bar with
the rate, the elapsed time, the ETA and the live metrics as its postfix (``eval=0.812
λ̄=0.904 gen_loss=0.0113``); when the stream is not a terminal (a log file, a pipe, a sweep's
``stderr.log``) the same text as plain lines, one when the metrics change (``line=True``)
and at most one every ``interval`` seconds otherwise, and a last one when it closes. With
``quiet`` it prints nothing.

>>> import io
>>> buf = io.StringIO()
>>> with Progress(3, "demo", unit="step", stream=buf) as bar:
...     bar.update(1, line=True, eval=0.5)
...     bar.note("a message")
...     bar.update(2)
>>> lines = buf.getvalue().splitlines()
>>> lines[0].startswith("demo:  33%") and "eval=0.5" in lines[0], lines[1], lines[2].startswith("demo: 100%")
(True, 'a message', True)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from contextlib import nullcontext
from typing import IO, Any

__all__ = ["Progress", "format_metric"]


def format_metric(value: Any) -> str:
    """A metric as the postfix shows it: floats to 4 significant digits, the rest as ``str``.

    >>> format_metric(0.123456), format_metric(1234.5), format_metric(3), format_metric("x")
    ('0.1235', '1234', '3', 'x')
    """
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return str(value)


def _terminal_columns(stream: IO[str]) -> int:
    """The width of the terminal behind ``stream`` (0 when unknown)."""
    import os

    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 0


class _Discard:
    """A stream that drops what tqdm writes (plain-line mode formats the bar itself)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


class Progress:
    """One progress display.

    Parameters
    ----------
    total : int or None
        Units of work (None: unknown; no percentage or ETA).
    desc : str
        What is running, shown before the bar.
    unit : str
        The unit the rate counts (``step``, ``batch``, ``run``...).
    quiet : bool
        Print nothing at all.
    stream : file, optional
        Where to write (default the current ``sys.stderr``).
    initial : int
        Units already done (a resumed run).
    interval : float
        Seconds between plain lines when the stream is not a terminal.
    leave : bool
        Keep the finished bar on the terminal.
    """

    def __init__(self, total: int | None, desc: str, unit: str = "step", *, quiet: bool = False,
                 stream: IO[str] | None = None, initial: int = 0, interval: float = 30.0, leave: bool = True) -> None:
        from tqdm import tqdm

        self.stream = sys.stderr if stream is None else stream
        self.quiet = quiet
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty and isatty())
        self.interval = interval
        self._last_line = time.monotonic()
        self._line_at: int | None = None  # units done at the last plain line
        # a pseudo-terminal may report a 0 × 0 window, on which tqdm would draw nothing: assume 120 × 24
        sized = self.tty and _terminal_columns(self.stream) > 0
        self.bar = tqdm(total=total, desc=desc, unit=unit, initial=initial, leave=leave, dynamic_ncols=sized,
                        ncols=None if sized else 120, nrows=None if sized else 24,
                        file=self.stream if self.tty else _Discard(), disable=quiet, mininterval=0.5, smoothing=0.1)

    def update(self, n: int = 1, /, *, line: bool = False, **metrics: Any) -> None:
        """``n`` more units done; ``metrics`` replace the postfix; ``line`` forces a plain line."""
        if self.quiet:
            return
        if metrics:
            self.set_metrics(metrics)
        self.bar.update(n)
        if not self.tty and (line or time.monotonic() - self._last_line >= self.interval):
            self._line()

    def set_metrics(self, metrics: Mapping[str, Any]) -> None:
        """Replace the postfix (shown at the next refresh or line)."""
        if not self.quiet:
            self.bar.set_postfix({k: format_metric(v) for k, v in metrics.items()}, refresh=False)

    def note(self, text: str) -> None:
        """A message on the display's stream, on its own line (above the bar on a terminal)."""
        if self.quiet:
            return
        if self.tty:
            self.bar.write(text, file=self.stream)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def paused(self):
        """A context in which other output (e.g. ``print`` to stdout) may be written: a terminal's bars
        are cleared first and redrawn after it.

        >>> with Progress(2, "x", quiet=True).paused():
        ...     print("between bars")
        between bars
        """
        from tqdm import tqdm

        return tqdm.external_write_mode(file=self.stream) if self.tty and not self.quiet else nullcontext()

    def _line(self) -> None:
        self.stream.write(str(self.bar) + "\n")
        self.stream.flush()
        self._last_line = time.monotonic()
        self._line_at = self.bar.n

    def close(self) -> None:
        """Finish the display (a last plain line when the stream is not a terminal)."""
        if self.quiet or self.bar.disable:
            return
        if not self.tty and self._line_at != self.bar.n:
            self._line()
        self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Progress({self.bar.desc!r}, {self.bar.n}/{self.bar.total}, quiet={self.quiet})"
