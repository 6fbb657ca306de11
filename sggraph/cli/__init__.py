"""The ``sggraph`` command line: one module per command; the parser is assembled here, once.

Every command exits 0 on success and 2 on bad input, printing a one-paragraph
error (file, line, node, fix) on stderr and never a traceback.

Commands
--------
``sggraph check-conditions FILE.yaml [FILE.yaml ...] [--json] [--node NAME] [--unroll T]``
    The paper's conditions A.1–A.3 and (B), with witnesses and the regime; a recurrent cell
    file is checked as the graph of ``--unroll T`` steps (``draw`` takes it too).
``sggraph expert``, ``sggraph mse``, ``sggraph train mnist-bandit|popgym``, ``sggraph draw``
    The expert network of §5, the MSE profiler, the MNIST bandit, the POPGym labyrinths,
    graphviz drawings.
``sggraph sweep``, ``sggraph plot``
    A command over a grid of settings (the sweep receives this parser), and its figures.
``sggraph demo``, ``sggraph bench``
    A miniature of the paper; timings of compiled training steps.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ..exceptions import SggraphError
from ..runtime.threads import stop_following
from ..sweeps.commands import CommandParser
from . import bench, check, demo, draw, expert, mse, plot, sweep, train

__all__ = ["build_parser", "main", "version_line"]

#: The commands in the order of ``sggraph --help``.
COMMANDS = (check, expert, mse, train, draw, sweep, plot, demo, bench)


def build_parser() -> CommandParser:
    """The argument parser of the ``sggraph`` command (every command's module adds its own)."""
    parser = CommandParser(prog="sggraph", description="Synthetic-gradient propagation on layered computational graphs.")
    parser.add_argument("--version", action="version", version=version_line())
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    parser.set_defaults(root_parser=parser)  # handed to commands that read other commands (sweep)
    return parser


def version_line() -> str:
    """What ``sggraph --version`` prints: sggraph's version, and torch's and Python's.

    >>> version_line().startswith("sggraph ")
    True
    """
    import platform
    from importlib import metadata

    from .. import __version__

    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "not installed"
    return f"sggraph {__version__} (torch {torch_version}, Python {platform.python_version()})"


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
    threads = _torch_threads()
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
    except OSError as err:  # the system refused a read or write sggraph did not foresee (a full disk, a quota)
        print(f"sggraph: error: {_os_error(err)}", file=sys.stderr)
        return 2
    finally:  # a command may set torch's thread count (--threads); leave the calling process as it was
        stop_following()
        if threads is not None:
            _torch_threads(threads)


def _os_error(err: OSError) -> str:
    """An operating-system error as one located paragraph (the file, what failed, the fix).

    >>> _os_error(OSError(28, "No space left on device", "/runs/a/metrics.csv"))
    '/runs/a/metrics.csv: No space left on device. Fix: free disk space (or raise the quota) and run the command again.'
    """
    import errno

    where = f"{err.filename}: " if err.filename else ""
    full = err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    fix = "free disk space (or raise the quota) and run the command again" if full else \
        "check the path, its permissions and the free disk space"
    return f"{where}{err.strerror or err}. Fix: {fix}."


def _torch_threads(restore: int | None = None) -> int | None:
    """torch's intra-op thread count, or None before torch is imported; ``restore`` sets it back."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    if restore is not None:
        torch.set_num_threads(restore)
    return torch.get_num_threads()



if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
