"""The parent tables of a recurrent state array: which neurons of step t−1 each neuron of step t reads.

:func:`recurrent_table` draws one at random (seeded), :func:`state_table` checks one given explicitly.

>>> recurrent_table(4, 2, seed=0).shape
(4, 2)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..exceptions import GraphError

__all__ = ["recurrent_table", "state_table"]


def recurrent_table(count: int, fan_in: int, seed: int, self_parents: bool = False) -> np.ndarray:
    """``[count, fan_in]`` distinct random parents per neuron (a uniform random subset in random order).

    ``self_parents=False`` (default): never the neuron itself. ``True``: drawn from all ``count``
    neurons, so a neuron may read its own previous state — the authors' POPGym code
    (``randperm(width)[:n_parents]`` per neuron).

    >>> t = recurrent_table(6, 3, 0)
    >>> t.shape, bool((t != np.arange(6)[:, None]).all())
    ((6, 3), True)
    >>> bool((recurrent_table(6, 6, 0, self_parents=True) == np.arange(6)[:, None]).any(1).all())
    True
    """
    rng = np.random.default_rng(seed)
    keys = rng.random((count, count))
    if not self_parents:
        np.fill_diagonal(keys, np.inf)
    return np.argsort(keys, axis=1)[:, :fan_in].astype(np.int64)


def state_table(name: str, table: Sequence[Sequence[int]], count: int, fan_in: int | None,
                self_parents: bool) -> tuple[tuple[int, ...], ...]:
    """The checked explicit parent table of a state (rows: neurons; entries: previous-step neurons)."""
    try:
        tbl = tuple(tuple(int(i) for i in row) for row in table)
    except (TypeError, ValueError):
        raise GraphError("table must be a list of rows of neuron indices", node=name,
                         fix="give one row of integers per neuron") from None
    if len(tbl) != count or not tbl or len({len(r) for r in tbl}) != 1 or not tbl[0]:
        raise GraphError(f"table must have shape [count={count}, fan_in] with fan_in >= 1", node=name,
                         fix="give one row per neuron, all rows of the same non-zero length")
    if fan_in is not None and len(tbl[0]) != fan_in:
        raise GraphError(f"fan_in={fan_in} disagrees with the table's {len(tbl[0])} columns", node=name,
                         fix="drop fan_in or make it match the table")
    flat = [i for r in tbl for i in r]
    if min(flat) < 0 or max(flat) >= count:
        raise GraphError(f"table index out of range (the state has {count} neurons)", node=name,
                         fix=f"use indices in 0..{count - 1}")
    for i, row in enumerate(tbl):
        if len(set(row)) != len(row):
            raise GraphError(f"row {i} of the table lists the same parent twice", node=name,
                             fix="list each parent once per row")
        if not self_parents and i in row:
            raise GraphError(f"neuron {i} reads its own previous state, and self_parents is false", node=name,
                             fix=f"set self_parents: true, or remove {i} from row {i}")
    return tbl
