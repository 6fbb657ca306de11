"""Atomic file writes: a reader sees the old file or the whole new one, never a partial file.

Every writer of run directories, sweeps, figures and drawings goes through here.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> write_atomic(d / "a.txt", "hi").read_text(), sorted(p.name for p in d.iterdir())
('hi', ['a.txt'])
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

from ..exceptions import ConfigError

__all__ = ["atomic_path", "write_atomic"]


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a hidden temporary path next to ``path`` (same suffix, so format-by-suffix writers work);
    on success it replaces ``path``, on failure it is removed.

    Raises :class:`~sggraph.ConfigError` naming ``path`` (not the temporary file) when its directory is
    missing or not writable, or when writing fails (a full disk, a quota): ``path`` is then left as it was.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.stem}.{os.getpid()}.tmp{target.suffix}")
    try:
        with open(tmp, "wb"):  # the directory must take a new file; say so about the target, not the temp file
            pass
    except OSError as exc:
        raise _unwritable(target, exc) from None
    try:
        yield tmp
        os.replace(tmp, target)
    except OSError as exc:  # the disk filled up (or a quota, a file-size limit) while writing: the old file stays
        raise _unwritable(target, exc) from None
    finally:
        if tmp.exists():
            with contextlib.suppress(OSError):
                tmp.unlink()


def _unwritable(target: Path, exc: OSError) -> ConfigError:
    folder = target.parent
    if not folder.is_dir():
        return ConfigError(f"cannot write {target.name}: the directory {folder} does not exist", file=str(target),
                           fix=f"create the directory first (mkdir -p {folder}) or write to an existing one")
    if isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return ConfigError(f"cannot write {target.name}: the directory {folder} is not writable "
                           f"({exc.strerror or exc})", file=str(target),
                           fix="write to a directory you may write to, or change this directory's permissions")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return ConfigError(f"cannot write {target.name}: {exc.strerror or exc} (the previous {target.name}, if "
                           "any, is unchanged)", file=str(target),
                           fix="free disk space (or raise the quota / file-size limit) and run the command again; "
                               "a training run continues from its last checkpoint with --resume")
    return ConfigError(f"cannot write {target.name}: {exc.strerror or exc}", file=str(target),
                       fix="check the path and the free disk space")


def write_atomic(path: str | Path, data: bytes | str, *, sync: bool = False) -> Path:
    """Write ``data`` (text is UTF-8 encoded) to ``path`` atomically; ``sync`` flushes it to disk first."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(raw)
        if sync:
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)
