"""How many intra-op threads a run uses: chosen from the CPUs this process may actually use and
from the size of the run's work, or given by ``--threads`` / ``OMP_NUM_THREADS``.

Every ``sggraph`` command that trains or times (``train``, ``demo``, ``bench``, and the runs a
``sweep`` starts) resolves its thread count the same way, in this order:

1. ``--threads N`` on the command line;
2. ``OMP_NUM_THREADS`` in the environment (``sggraph sweep`` sets it for each run it starts:
   ``--threads`` of the sweep, by default the available CPUs divided among its workers);
3. the default: the CPUs available to this process (:func:`available_cpus`: its CPU affinity,
   capped by a cgroup CPU quota) but no more threads than the work can keep busy
   (:func:`threads_for_work`).

Why the work size matters: PyTorch splits an elementwise operation into chunks of
:data:`GRAIN` elements, one per thread, so an operation on ``n`` elements uses at most
``⌈n / GRAIN⌉`` threads. Threads beyond that only add synchronisation, and every parallel
operation waits for its slowest thread, which on a shared machine may be descheduled: small
operations run faster and far more steadily on fewer threads.

>>> threads_for_work(640_000, cpus=2), threads_for_work(15_000, cpus=16), threads_for_work(92_160, cpus=16)
(2, 1, 3)
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from .exceptions import ConfigError

__all__ = ["GRAIN", "available_cpus", "cgroup_cpu_limit", "resolve_threads", "threads_for_work", "use_threads"]

#: Elements per thread of PyTorch's parallel elementwise kernels (``at::internal::GRAIN_SIZE``).
GRAIN = 32768


def cgroup_cpu_limit(root: str | Path = "/sys/fs/cgroup", self_cgroup: str | Path = "/proc/self/cgroup"
                     ) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (e.g. ``1.5``), or None without one.

    Reads cgroup v2's ``cpu.max`` (``"QUOTA PERIOD"`` or ``"max PERIOD"``) and cgroup v1's
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (quota ``-1``: none), in the process's own
    cgroup (from ``self_cgroup``) and at the hierarchy's root; the smallest quota found wins.

    Examples
    --------
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp()); _ = (root / "cpu.max").write_text("150000 100000\\n")
    >>> cgroup_cpu_limit(root, self_cgroup=root / "missing")
    1.5
    >>> _ = (root / "cpu.max").write_text("max 100000\\n"); cgroup_cpu_limit(root, root / "missing") is None
    True
    """
    root = Path(root)
    own: list[Path] = [Path(".")]
    try:
        for line in Path(self_cgroup).read_text().splitlines():
            hierarchy, _, path = line.partition(":")[2].partition(":")
            if hierarchy in ("", "cpu", "cpu,cpuacct", "cpuacct,cpu") and path.strip("/"):
                own.append(Path(path.strip("/")))
    except OSError:
        pass
    limits = []
    for rel in own:
        limits += [_v2_limit(root / rel / "cpu.max"), _v1_limit(root / "cpu" / rel),
                   _v1_limit(root / "cpu,cpuacct" / rel)]
    found = [x for x in limits if x is not None]
    return min(found) if found else None


def _v2_limit(path: Path) -> float | None:
    try:
        quota, period = path.read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError, ZeroDivisionError):
        return None


def _v1_limit(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError, ZeroDivisionError):
        return None


def available_cpus() -> int:
    """The CPUs this process may use: its CPU affinity (``os.sched_getaffinity``, else
    ``os.cpu_count()``), capped by a cgroup CPU quota rounded up; at least 1.

    >>> 1 <= available_cpus() <= (os.cpu_count() or 1)
    True
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_limit()
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


def threads_for_work(elements: int, cpus: int | None = None) -> int:
    """Threads for work whose typical operation has ``elements`` elements: ``⌈elements / GRAIN⌉``,
    at most ``cpus`` (default :func:`available_cpus`), at least 1."""
    cpus = available_cpus() if cpus is None else cpus
    return max(1, min(cpus, math.ceil(max(elements, 1) / GRAIN)))


def resolve_threads(flag: int | None, elements: int, environ: dict | None = None) -> int:
    """The thread count of a run: ``flag`` (``--threads``), else ``OMP_NUM_THREADS``, else
    :func:`threads_for_work` of ``elements``.

    Raises
    ------
    ConfigError
        ``flag`` or ``OMP_NUM_THREADS`` is not a whole number of at least 1.

    Examples
    --------
    >>> resolve_threads(3, 10), resolve_threads(None, 10, {"OMP_NUM_THREADS": "2"}), resolve_threads(None, 10, {})
    (3, 2, 1)
    """
    environ = os.environ if environ is None else environ
    if flag is not None:
        if flag < 1:
            raise ConfigError(f"--threads must be at least 1 (got {flag})", fix="pass --threads 1 or more")
        return flag
    given = environ.get("OMP_NUM_THREADS", "").strip()
    if given:
        try:
            value = int(given)
        except ValueError:
            value = 0
        if value < 1:
            raise ConfigError(f"OMP_NUM_THREADS={given!r} is not a whole number of at least 1",
                              fix="unset OMP_NUM_THREADS or set it to e.g. 1, or pass --threads N")
        return value
    return threads_for_work(elements)


def use_threads(count: int) -> int:
    """Make torch use ``count`` intra-op threads from now on; returns ``count``."""
    import torch

    torch.set_num_threads(count)
    return count
