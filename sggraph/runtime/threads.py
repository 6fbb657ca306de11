"""How many intra-op threads a run uses: chosen from the CPUs this process may actually use, from
the size of the run's work and from the load other processes put on the machine, or given by
``--threads`` / ``OMP_NUM_THREADS``.

Every ``sggraph`` command that trains or times (``train``, ``demo``, ``bench``, and the runs a
``sweep`` starts) resolves its thread count the same way, in this order:

1. ``--threads N`` on the command line;
2. ``OMP_NUM_THREADS`` in the environment (``sggraph sweep`` sets it for each run it starts:
   ``--threads`` of the sweep, by default the available CPUs divided among its workers);
3. the default: the CPUs available to this process (:func:`available_cpus`: its CPU affinity,
   capped by a cgroup CPU quota) but no more threads than the work can keep busy
   (:func:`threads_for_work`); within that, while the run trains, the count that makes its steps
   fastest under the machine's load now (:class:`LoadAwareThreads`: :func:`configure_threads`
   sets it up, the training loops call :func:`follow_load` between steps).

Why the work size matters: PyTorch splits an elementwise operation into chunks of
:data:`GRAIN` elements, one per thread, so an operation on ``n`` elements uses at most
``⌈n / GRAIN⌉`` threads. Threads beyond that only add synchronisation, and every parallel
operation waits for its slowest thread, which on a shared machine may be descheduled: small
operations run faster and far more steadily on fewer threads.

Why the load matters: torch's OpenMP threads busy-wait between the many parallel operations of
a training step, which is what makes two threads fast on a quiet machine. When another busy
process shares the cores, a thread of ours is often descheduled while its sibling spins waiting
for it: measured on a 2-CPU machine (``sggraph bench --contention``, README "Sharing the
machine"), the bandit step at two threads took 2.8–4.9× its time alone beside one busy process
and 4.4–6.2× with two runs side by side, at one thread 1.0× either way. Sleeping instead of
spinning (``OMP_WAIT_POLICY=PASSIVE``) removed the slowdown but made the quiet machine's
two-thread step as slow as one thread (waking a thread costs more than the work it takes over).
So the default leaves OpenMP as it is and uses fewer threads while that is faster.

>>> threads_for_work(640_000, cpus=2), threads_for_work(15_000, cpus=16), threads_for_work(92_160, cpus=16)
(2, 1, 3)
"""

from __future__ import annotations

import math
import os
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from ..exceptions import ConfigError

__all__ = ["GRAIN", "LoadAwareThreads", "available_cpus", "busy_elsewhere", "cgroup_cpu_limit", "configure_threads",
           "follow_load", "resolve_threads", "running_elsewhere", "stop_following", "threads_for_work", "threads_policy",
           "use_threads"]

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


def _given_threads(flag: int | None, environ: dict) -> int | None:
    """``flag`` (``--threads``), else ``OMP_NUM_THREADS``, else None; validated."""
    if flag is not None:
        if flag < 1:
            raise ConfigError(f"--threads must be at least 1 (got {flag})", fix="pass --threads 1 or more")
        return flag
    given = environ.get("OMP_NUM_THREADS", "").strip()
    if not given:
        return None
    try:
        value = int(given)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"OMP_NUM_THREADS={given!r} is not a whole number of at least 1",
                          fix="unset OMP_NUM_THREADS or set it to e.g. 1, or pass --threads N")
    return value


def resolve_threads(flag: int | None, elements: int, environ: dict | None = None) -> int:
    """The thread count of a run: ``flag`` (``--threads``), else ``OMP_NUM_THREADS``, else
    :func:`threads_for_work` of ``elements`` (the most the load-aware default uses).

    Raises
    ------
    ConfigError
        ``flag`` or ``OMP_NUM_THREADS`` is not a whole number of at least 1.

    Examples
    --------
    >>> resolve_threads(3, 10), resolve_threads(None, 10, {"OMP_NUM_THREADS": "2"}), resolve_threads(None, 10, {})
    (3, 2, 1)
    """
    given = _given_threads(flag, os.environ if environ is None else environ)
    return threads_for_work(elements) if given is None else given


def use_threads(count: int) -> int:
    """Make torch use ``count`` intra-op threads from now on; returns ``count``."""
    import torch

    torch.set_num_threads(count)
    return count


# ----------------------------------------------------------------------------- the machine's load

_PROCS_RUNNING = re.compile(r"^procs_running\s+(\d+)", re.MULTILINE)


def _own_running_threads(tasks: Path) -> int:
    """This process's threads in state R (running or waiting for a CPU), from ``/proc/self/task``."""
    count = 0
    try:
        entries = list(os.scandir(tasks))
    except OSError:
        return 0
    for entry in entries:
        try:
            fields = Path(entry.path, "stat").read_text().rpartition(")")[2].split()
        except OSError:  # the thread ended meanwhile
            continue
        count += bool(fields) and fields[0] == "R"
    return count


def running_elsewhere(stat: str | Path = "/proc/stat", tasks: str | Path = "/proc/self/task") -> int | None:
    """Threads on this machine running or waiting for a CPU now that are not this process's:
    ``procs_running`` of ``/proc/stat`` minus this process's threads in state R; None where
    ``/proc`` cannot be read (not Linux).

    >>> running_elsewhere(stat="/no/such/file") is None
    True
    """
    try:
        found = _PROCS_RUNNING.search(Path(stat).read_text())
    except OSError:
        return None
    if found is None:
        return None
    return max(0, int(found.group(1)) - _own_running_threads(Path(tasks)))


def busy_elsewhere(cpus: int | None = None, total: int | None = None,
                   running: Callable[[], int | None] = running_elsewhere) -> float | None:
    """The CPUs (of the ``cpus`` this process may use) that other processes keep busy now:
    :func:`running_elsewhere` scaled by ``cpus / total`` (``total``: the machine's CPUs), so that
    the load of a large machine of which this process may use a few counts in proportion.

    >>> busy_elsewhere(cpus=2, total=2, running=lambda: 1), busy_elsewhere(cpus=4, total=16, running=lambda: 8)
    (1.0, 2.0)
    """
    found = running()
    if found is None:
        return None
    cpus = available_cpus() if cpus is None else cpus
    total = max(cpus, os.cpu_count() or cpus) if total is None else total
    return found * cpus / total


class LoadAwareThreads:
    """Intra-op threads that follow the machine's load: at most ``most``, at least 1, and whichever
    count makes the training steps fastest now.

    It starts from the CPUs other processes leave free (:meth:`start`: the mean of a few samples
    of :func:`busy_elsewhere`). The training loop then calls :meth:`step` between two steps; it
    times the steps and now and then runs a *probe*: ``probe_steps`` steps at a neighbouring count
    (half, or 2 from 1), kept if their median is faster than the steps before, abandoned at the
    first probe step ``slowdown`` times slower. A probe starts

    * after the first ``probe_steps`` steps (to check the start's choice), then on a schedule:
      ``period`` seconds later, doubling after every abandoned probe up to ``longest``;
    * when the steps become ``slowdown`` times slower than after the last decision (another job
      started): a probe of fewer threads;
    * when :func:`busy_elsewhere` (sampled at most once a second) shows a free CPU: more threads.

    Counting the runnable tasks alone would misjudge jobs of lower priority; the timing decides.

    Parameters
    ----------
    most : int
        The most threads (the work-size default, :func:`threads_for_work`).
    cpus : int, optional
        The CPUs this process may use (default :func:`available_cpus`).
    period, longest : float
        Seconds to the next scheduled probe after a kept one, and at most after abandoned ones.
    probe_steps : int
        Steps per probe, and the steps whose median it is compared with.
    slowdown : float
        How many times slower counts as slower (median steps, or one probe step).
    sample : callable
        The CPUs busy elsewhere now, or None when unknown (default :func:`busy_elsewhere`).
    clock : callable
        Seconds, monotonic.

    Examples
    --------
    Two CPUs, one busy elsewhere: it starts at 1 thread, keeps 1 while 2 are slower, and takes 2
    once the other job has ended.

    >>> now, busy = [0.0], 1.0
    >>> t = LoadAwareThreads(2, cpus=2, sample=lambda: busy, clock=lambda: now[0], probe_steps=2)
    >>> t.start(samples=1, gap=0)
    1
    >>> def run(steps, seconds):  # each step takes seconds[thread count]; what step() returns before each
    ...     out = []
    ...     for _ in range(steps):
    ...         out.append(t.step()); now[0] += seconds[t.threads]
    ...     return out
    >>> run(6, {1: 0.1, 2: 0.3})  # the first check: one step at 2 threads, 3x slower, so back to 1
    [None, None, 2, 1, None, None]
    >>> busy = 0.0; [n for n in run(13, {1: 0.1, 2: 0.05}) if n], t.threads  # a free CPU: a probe, kept
    ([2], 2)
    """

    def __init__(self, most: int, cpus: int | None = None, period: float = 30.0, longest: float = 600.0,
                 probe_steps: int = 3, slowdown: float = 1.5, sample: Callable[[], float | None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.most = max(1, most)
        self.cpus = available_cpus() if cpus is None else cpus
        self.period, self.longest = period, longest
        self.probe_steps, self.slowdown = max(1, probe_steps), slowdown
        self._sample = sample or (lambda: busy_elsewhere(self.cpus))
        self._clock = clock
        self.threads = self.most
        self._last: float | None = None  # when step() was last called
        self._recent: list[float] = []  # the latest step seconds at self.threads
        self._baseline: float | None = None  # the median step after the last decision
        self._probe: tuple[int, float, list[float]] | None = None  # (count before, its median, probe seconds)
        self._wait = period  # seconds from an abandoned probe to the next scheduled one
        self._next_probe = 0.0  # the first probe checks the start's choice
        self._next_look = 0.0  # the next sample of busy_elsewhere

    def choose(self, busy: float) -> int:
        """The threads when ``busy`` CPUs are busy elsewhere: the free CPUs (rounded), within 1..``most``.

        >>> [LoadAwareThreads(2, cpus=2).choose(b) for b in (0.0, 0.4, 0.6, 1.0, 3.0)]
        [2, 2, 1, 1, 1]
        """
        return max(1, min(self.most, self.cpus - math.floor(busy + 0.5)))

    def start(self, samples: int = 5, gap: float = 0.01) -> int:
        """The thread count to start with, from ``samples`` samples ``gap`` seconds apart."""
        found = []
        for i in range(samples):
            if i:
                time.sleep(gap)
            value = self._sample()
            if value is not None:
                found.append(value)
        if found:
            self.threads = self.choose(sum(found) / len(found))
        return self.threads

    def neighbour(self, fewer: bool | None = None) -> int:
        """The count a probe tries: half (``fewer``), or double (capped at ``most``); by default half,
        or 2 from 1.

        >>> t = LoadAwareThreads(8, cpus=8); [(t.__setattr__("threads", n), t.neighbour())[1] for n in (8, 4, 1)]
        [4, 2, 2]
        """
        if fewer is None:
            fewer = self.threads > 1
        return max(1, self.threads // 2) if fewer else min(self.most, self.threads * 2)

    def step(self) -> int | None:
        """Between two training steps: time the last one; returns the count to use from now on when it
        changes (a probe starts or ends), else None."""
        now = self._clock()
        seconds, self._last = (None if self._last is None else now - self._last), now
        if seconds is None or self.most == 1:
            return None
        if self._probe is not None:
            return self._probe_step(seconds, now)
        self._recent = [*self._recent, seconds][-self.probe_steps:]
        if len(self._recent) < self.probe_steps:
            return None
        median = statistics.median(self._recent)
        if self._baseline is None:
            self._baseline = median
        target = self._probe_target(median, now)
        if target is None or target == self.threads:
            return None
        self._probe, self.threads = (self.threads, median, []), target
        return target

    def _probe_target(self, median: float, now: float) -> int | None:
        """The count to probe now, if any (see the class)."""
        if median > self.slowdown * self._baseline:
            self._baseline = median  # the new normal, whatever the probe finds
            return self.neighbour(fewer=True)
        if now >= self._next_probe:
            return self.neighbour()
        if self.threads < self.most and now >= self._next_look:
            self._next_look = now + 1.0
            busy = self._sample()
            if busy is not None and self.choose(busy) > self.threads:
                return self.neighbour(fewer=False)
        return None

    def _probe_step(self, seconds: float, now: float) -> int | None:
        before, before_median, times = self._probe
        times.append(seconds)
        slower = seconds > self.slowdown * before_median
        if not slower and len(times) < self.probe_steps:
            return None
        kept = not slower and statistics.median(times) < before_median
        self._wait = self.period if kept else min(2 * self._wait, self.longest)
        self._probe, self._recent, self._next_probe = None, [], now + self._wait
        if kept:
            self._baseline = statistics.median(times)
            return None
        self._baseline, self.threads = before_median, before
        return before


#: The load-aware thread count of the run in progress (:func:`configure_threads`), if any.
_following: LoadAwareThreads | None = None


def configure_threads(flag: int | None, elements: int, environ: dict | None = None) -> int:
    """Set torch's threads for a run and return the count: a given count (``--threads``,
    ``OMP_NUM_THREADS``) as it is; otherwise :func:`threads_for_work` of ``elements`` at most, and,
    when that is more than 1, fewer while other processes keep CPUs busy (:class:`LoadAwareThreads`,
    followed by :func:`follow_load`).

    Raises
    ------
    ConfigError
        ``flag`` or ``OMP_NUM_THREADS`` is not a whole number of at least 1.
    """
    global _following
    environ = os.environ if environ is None else environ
    given = _given_threads(flag, environ)
    _following = None
    if given is not None:
        return use_threads(given)
    most = threads_for_work(elements)
    if most > 1:
        _following = LoadAwareThreads(most)
        return use_threads(_following.start())
    return use_threads(most)


def follow_load() -> int | None:
    """Between two training steps: adapt torch's threads to the load when the run's count is the
    load-aware default (:func:`configure_threads`); returns the new count when it changed, else None."""
    if _following is None:
        return None
    changed = _following.step()
    if changed is not None:
        use_threads(changed)
    return changed


def stop_following() -> None:
    """End the load-aware thread count of :func:`configure_threads` (the thread count stays)."""
    global _following
    _following = None


def threads_policy() -> str:
    """How the run's thread count is chosen, for ``config.json``: ``"fixed"`` or ``"load-aware, at most N"``.

    >>> stop_following(); threads_policy()
    'fixed'
    """
    return "fixed" if _following is None else f"load-aware, at most {_following.most}"
