"""The thread settings ``sggraph bench --contention`` compares (torch-free, so the command line can name them
without loading torch).

>>> sorted(CONTENTION_SETTINGS)
['1', '2', 'default']
"""

from __future__ import annotations

__all__ = ["CONTENTION_SETTINGS"]

#: The thread settings it compares: name → the worker's thread arguments ("default": none, as a run starts).
CONTENTION_SETTINGS = {"1": ("--threads", "1"), "2": ("--threads", "2"), "default": ()}
