"""Atomic file writes: a reader sees the old file or the whole new one, never a partial file.

Every writer of run directories, sweeps, figures and drawings goes through here.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> write_atomic(d / "a.txt", "hi").read_text(), sorted(p.name for p in d.iterdir())
('hi', ['a.txt'])
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "write_atomic"]


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a hidden temporary path next to ``path`` (same suffix, so format-by-suffix writers work);
    on success it replaces ``path``, on failure it is removed."""
    target = Path(path)
    tmp = target.with_name(f".{target.stem}.tmp{target.suffix}")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_atomic(path: str | Path, data: bytes | str, *, sync: bool = False) -> Path:
    """Write ``data`` (text is UTF-8 encoded) to ``path`` atomically; ``sync`` flushes it to disk first."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(raw)
        if sync:
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)
