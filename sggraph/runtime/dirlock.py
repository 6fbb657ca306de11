"""An exclusive lock on a directory (a run directory, a sweep directory), held by one process at a time.

The lock is a small file in the directory (``run.lock``, ``sweep.lock``) that names its
holder: process id, host, the process's start time and the command. A second process
that wants the directory is refused with an error naming the holder. A lock left behind
by a process that died (killed, crashed, power loss) is *stale*: its process id is no
longer running (or is running a different program, checked by the process's start time),
so the next process takes the lock over without help. Checking and taking the lock is one
step (serialised by ``flock`` on the lock file), so two processes never both hold it.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> with DirectoryLock(d, "run.lock", "run directory") as lock:
...     (d / "run.lock").exists(), lock.holder()["pid"] == os.getpid()
(True, True)
>>> (d / "run.lock").exists()
False
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from ..exceptions import ConfigError

__all__ = ["DirectoryLock", "process_alive"]


def _start_ticks(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), or None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # the command name may hold spaces and parentheses
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def process_alive(pid: int, started: int | None = None) -> bool:
    """Whether process ``pid`` is running on this host (and, when ``started`` is given, is the same process
    that started then, not a later one that reuses the id).

    >>> process_alive(os.getpid()), process_alive(os.getpid(), started=-1)
    (True, False)
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        pass
    except OSError:
        return False
    if started is not None:
        now = _start_ticks(pid)
        if now is not None and now != started:
            return False
    return True


class DirectoryLock:
    """An exclusive, stale-detecting lock on ``directory`` (see the module docstring).

    Parameters
    ----------
    directory : path
        An existing directory.
    name : str
        The lock file's name inside it.
    what : str
        What the directory is, for messages ("run directory", "sweep directory").
    """

    def __init__(self, directory: str | os.PathLike, name: str = "run.lock", what: str = "directory") -> None:
        self.directory = Path(directory)
        self.path = self.directory / name
        self.what = what
        self.held = False

    def _record(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "host": socket.gethostname(), "started": _start_ticks(os.getpid()),
                "since": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": " ".join(sys.argv)[:300]}

    def holder(self) -> dict[str, Any] | None:
        """The record of the process named in the lock file, or None when there is none (or it is unreadable)."""
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
        try:
            record = json.loads(text)
        except ValueError:
            return None
        return record if isinstance(record, dict) and isinstance(record.get("pid"), int) else None

    def live_holder(self) -> dict[str, Any] | None:
        """The record of the process holding the lock when that process is alive (or on another host), else None."""
        record = self.holder()
        return record if self._live(record) else None

    def _live(self, record: dict[str, Any] | None) -> bool:
        if record is None:
            return False
        if record.get("host") != socket.gethostname():
            return True  # another machine's process: it cannot be checked from here, so it is respected
        started = record.get("started")
        return process_alive(record["pid"], started if isinstance(started, int) else None)

    @contextlib.contextmanager
    def _serialised(self):
        """The lock file open and ``flock``-ed (a few microseconds), the same file as on disk."""
        for _ in range(100):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise ConfigError(f"cannot create the lock file in the {self.what}: {exc.strerror or exc}",
                                  file=str(self.directory),
                                  fix="choose a directory you can write to, or change its permissions") from None
            try:
                if self._flock(fd) and os.path.exists(self.path) and \
                        os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    try:
                        yield fd
                    finally:
                        self._unflock(fd)
                    return
            finally:
                os.close(fd)
            time.sleep(0.02)
        raise self._in_use(self.holder())

    @staticmethod
    def _flock(fd: int) -> bool:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: the process-id check alone
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        except OSError as exc:  # a filesystem without flock (some network mounts): the process-id check alone
            return exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)

    @staticmethod
    def _unflock(fd: int) -> None:
        with contextlib.suppress(ImportError, OSError):
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_UN)

    def _in_use(self, record: dict[str, Any] | None) -> ConfigError:
        if record is None:
            who = "another process (it holds the lock file open)"
        else:
            where = "" if record.get("host") == socket.gethostname() else f" on host {record.get('host')}"
            command = f" ({record['command']})" if record.get("command") else ""
            who = f"process {record['pid']}{where} since {record.get('since', '?')}{command}"
        return ConfigError(f"the {self.what} is in use by {who}", file=str(self.directory),
                           fix=f"wait for that process to finish or stop it, or use another directory; if no such "
                               f"process runs any more, delete {self.path}")

    def acquire(self) -> DirectoryLock:
        """Take the lock, or raise :class:`~sggraph.ConfigError` naming the live holder."""
        with self._serialised() as fd:
            record = self.holder()
            if self._live(record):
                raise self._in_use(record)
            data = (json.dumps(self._record()) + "\n").encode("utf-8")
            try:
                os.ftruncate(fd, 0)
                if os.pwrite(fd, data, 0) != len(data):  # a short write: the disk (or a limit) took no more
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
                os.fsync(fd)
            except OSError as exc:  # a full disk: leave no empty lock file behind (its holder was dead anyway)
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
                raise ConfigError(f"cannot write the lock file of the {self.what}: {exc.strerror or exc}",
                                  file=str(self.path),
                                  fix="free disk space (or raise the quota) and run the command again") from None
        self.held = True
        return self

    def release(self) -> None:
        """Give the lock up (removing the lock file when it is still this process's)."""
        if not self.held:
            return
        self.held = False
        with contextlib.suppress(ConfigError, OSError), self._serialised():
            record = self.holder()
            if record is not None and record.get("pid") == os.getpid() and \
                    record.get("host") == socket.gethostname():
                os.unlink(self.path)

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"DirectoryLock({str(self.path)!r}, held={self.held})"
