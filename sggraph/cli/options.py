"""Flags shared by the commands that train or time (``train``, ``demo``, ``bench``)."""

from __future__ import annotations

import argparse

__all__ = ["add_run_flags"]


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """Add ``--threads`` and ``--quiet`` to a command's parser.

    >>> p = argparse.ArgumentParser(); add_run_flags(p)
    >>> p.parse_args(["--threads", "1", "--quiet"])
    Namespace(threads=1, quiet=True)
    """
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: OMP_NUM_THREADS if set, else up to the CPUs available "
                             "to this process that the work keeps busy, fewer while that is faster under the "
                             "machine's load); recorded in config.json")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or progress lines on stderr")
