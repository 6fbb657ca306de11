"""Thread counts: the CPUs available (affinity, cgroup quota), the work-size default, --threads and
OMP_NUM_THREADS, the count recorded in config.json, and the load-aware default (fake clock and load)."""

from __future__ import annotations

import json
import os

import pytest
import torch

from sggraph.cli import main
from sggraph.exceptions import ConfigError
from sggraph.runtime import threads as threads_module
from sggraph.runtime.threads import (
    GRAIN,
    LoadAwareThreads,
    available_cpus,
    busy_elsewhere,
    cgroup_cpu_limit,
    configure_threads,
    follow_load,
    resolve_threads,
    running_elsewhere,
    threads_for_work,
    threads_policy,
)


def test_cgroup_v2_quota_of_the_process_own_cgroup(tmp_path):
    (tmp_path / "cgroup").write_text("0::/jobs/run7\n")
    (tmp_path / "root" / "jobs" / "run7").mkdir(parents=True)
    (tmp_path / "root" / "cpu.max").write_text("max 100000\n")
    (tmp_path / "root" / "jobs" / "run7" / "cpu.max").write_text("250000 100000\n")
    assert cgroup_cpu_limit(tmp_path / "root", tmp_path / "cgroup") == 2.5


def test_cgroup_v1_quota_and_no_quota(tmp_path):
    (tmp_path / "cgroup").write_text("4:memory:/x\n3:cpu,cpuacct:/\n")
    v1 = tmp_path / "root" / "cpu"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path / "root", tmp_path / "cgroup") is None
    (v1 / "cpu.cfs_quota_us").write_text("50000\n")
    assert cgroup_cpu_limit(tmp_path / "root", tmp_path / "cgroup") == 0.5
    assert cgroup_cpu_limit(tmp_path / "nothing", tmp_path / "nothing") is None


def test_available_cpus_respects_the_affinity():
    assert 1 <= available_cpus() <= len(os.sched_getaffinity(0))


def test_work_size_caps_the_threads():
    assert threads_for_work(1, cpus=8) == 1
    assert threads_for_work(GRAIN, cpus=8) == 1
    assert threads_for_work(GRAIN + 1, cpus=8) == 2
    assert threads_for_work(100 * GRAIN, cpus=8) == 8
    assert threads_for_work(100 * GRAIN, cpus=1) == 1


def test_flag_then_environment_then_default():
    assert resolve_threads(2, 1, {"OMP_NUM_THREADS": "5"}) == 2
    assert resolve_threads(None, 1, {"OMP_NUM_THREADS": "5"}) == 5
    assert resolve_threads(None, 1, {}) == 1
    with pytest.raises(ConfigError, match="--threads must be at least 1"):
        resolve_threads(0, 1, {})
    with pytest.raises(ConfigError, match="OMP_NUM_THREADS='two'"):
        resolve_threads(None, 1, {"OMP_NUM_THREADS": "two"})


ARGS = ["train", "mnist-bandit", "--steps", "4", "--evaluations", "2", "--eval-batch", "50", "--width", "8",
        "--layers", "1", "--q", "2", "--slots", "2", "--n-parents", "2", "--checkpoint-every", "2", "--quiet"]


def test_threads_are_recorded_applied_and_may_change_on_resume(tmp_path, capsys, monkeypatch):
    before = torch.get_num_threads()
    run = tmp_path / "run"
    assert main([*ARGS, "--threads", "1", "--out", str(run)]) == 0
    assert json.loads((run / "config.json").read_text())["threads"] == 1
    assert torch.get_num_threads() == before  # the command leaves the calling process as it found it
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # as `sggraph sweep` sets it for its runs
    assert main([*ARGS, "--steps", "6", "--out", str(run), "--resume"]) == 0
    assert json.loads((run / "config.json").read_text())["threads"] == 2
    assert json.loads((run / "summary.json").read_text())["steps"] == 6  # the run was continued to 6 steps
    assert main([*ARGS, "--threads", "0", "--out", str(tmp_path / "bad")]) == 2
    assert "--threads must be at least 1" in capsys.readouterr().err


def test_default_threads_follow_the_work_size(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    run = tmp_path / "run"
    assert main([*ARGS, "--out", str(run)]) == 0  # 64 × 8 × 2 × 2 elements: far below one grain
    assert json.loads((run / "config.json").read_text())["threads"] == 1


# ----------------------------------------------------------------------------- the load-aware default

def _fake_proc(tmp_path, running: int, states: list[str]):
    tmp_path.mkdir(parents=True, exist_ok=True)
    stat = tmp_path / "stat"
    stat.write_text(f"cpu  1 2 3 4\nintr 5 6 7\nprocs_running {running}\nprocs_blocked 0\n")
    tasks = tmp_path / "task"
    for i, state in enumerate(states):
        (tasks / str(100 + i)).mkdir(parents=True)
        (tasks / str(100 + i) / "stat").write_text(f"{100 + i} (py thon) {state} 1 2 3\n")  # a name with a space
    return stat, tasks


def test_running_elsewhere_subtracts_this_process_running_threads(tmp_path):
    stat, tasks = _fake_proc(tmp_path, running=5, states=["R", "S", "R"])
    assert running_elsewhere(stat, tasks) == 3
    stat, tasks = _fake_proc(tmp_path / "b", running=1, states=["R", "R"])
    assert running_elsewhere(stat, tasks) == 0  # never below zero (the counts are read at two moments)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "stat").write_text("cpu 1 2\n")
    assert running_elsewhere(tmp_path / "c" / "stat", tasks) is None
    assert running_elsewhere(tmp_path / "missing", tasks) is None
    assert running_elsewhere(stat, tmp_path / "no-tasks") == 1  # no task list: nothing subtracted


def test_busy_elsewhere_scales_to_the_cpus_this_process_may_use():
    assert busy_elsewhere(cpus=2, total=2, running=lambda: 3) == 3
    assert busy_elsewhere(cpus=2, total=8, running=lambda: 4) == 1
    assert busy_elsewhere(cpus=2, total=2, running=lambda: None) is None
    here = busy_elsewhere()  # this machine's /proc (Linux: always readable)
    assert here is not None and here >= 0


class _Machine:
    """A fake clock and load for LoadAwareThreads: each step takes ``seconds[thread count]``."""

    def __init__(self, busy: float | None = 0.0):
        self.now, self.busy = 0.0, busy

    def governor(self, most: int = 2, cpus: int = 2, **kw) -> LoadAwareThreads:
        return LoadAwareThreads(most, cpus=cpus, sample=lambda: self.busy, clock=lambda: self.now, **kw)

    def run(self, gov: LoadAwareThreads, steps: int, seconds: dict[int, float]) -> list[int]:
        """The thread count of each step."""
        used = []
        for _ in range(steps):
            gov.step()
            used.append(gov.threads)
            self.now += seconds[gov.threads]
        return used


def test_alone_it_keeps_every_thread_and_probes_fewer_ever_more_rarely():
    m = _Machine(busy=0.0)
    gov = m.governor(period=30, longest=120)
    assert gov.start(samples=2, gap=0) == 2
    fast = {2: 0.05, 1: 0.09}
    used = m.run(gov, 4000, fast)  # 200 s
    probes = [i for i in range(1, len(used)) if used[i] == 1 and used[i - 1] == 2]
    assert used[-1] == 2 and used.count(1) == len(probes)  # each probe abandoned after its first step
    gaps = [round((b - a) * 0.05) for a, b in zip(probes, probes[1:])]
    assert gaps[:2] == [60, 120] and all(g <= 121 for g in gaps)  # 30 s, then doubling up to `longest`


def test_a_competing_job_makes_it_fall_back_to_fewer_threads_and_back_when_it_ends():
    m = _Machine(busy=0.0)
    gov = m.governor()
    gov.start(samples=1, gap=0)
    m.run(gov, 40, {2: 0.05, 1: 0.09})
    m.busy = 1.0  # another job starts: two threads are now 5x slower, one thread barely slower
    used = m.run(gov, 40, {2: 0.25, 1: 0.09})
    assert used[-30:] == [1] * 30 and used.count(2) <= 6  # the slowdown started a probe of 1 thread, kept
    m.busy = 0.0  # it ends: a free CPU is seen within a second, a probe of 2 threads is kept
    used = m.run(gov, 40, {2: 0.05, 1: 0.09})
    assert used[-20:] == [2] * 20


def test_a_load_it_cannot_see_is_still_handled_by_timing():
    m = _Machine(busy=1.0)  # runnable elsewhere, but (lower priority) it takes no time from us
    gov = m.governor()
    assert gov.start(samples=1, gap=0) == 1
    used = m.run(gov, 20, {2: 0.05, 1: 0.09})
    assert used[-10:] == [2] * 10  # the first check tried 2 threads and kept them


def test_unknown_load_or_one_thread_at_most():
    m = _Machine(busy=None)
    gov = m.governor(most=4, cpus=4)
    assert gov.start(samples=1, gap=0) == 4
    gov = m.governor(most=1, cpus=4)
    assert gov.start(samples=1, gap=0) == 1 and set(m.run(gov, 50, {1: 0.1})) == {1}


@pytest.fixture
def torch_threads_restored():
    before = torch.get_num_threads()
    yield
    threads_module.stop_following()
    torch.set_num_threads(before)


def test_configure_threads_fixed_or_load_aware(monkeypatch, torch_threads_restored):
    monkeypatch.setattr(threads_module, "available_cpus", lambda: 4)
    assert configure_threads(3, 10**7, {}) == 3 and torch.get_num_threads() == 3 and threads_policy() == "fixed"
    assert configure_threads(None, 10**7, {"OMP_NUM_THREADS": "2"}) == 2 and threads_policy() == "fixed"
    assert configure_threads(None, 100, {}) == 1 and threads_policy() == "fixed"  # work for one thread
    count = configure_threads(None, 10**7, {})
    assert 1 <= count <= 4 and torch.get_num_threads() == count
    assert threads_policy() == "load-aware, at most 4"
    m = _Machine(busy=0.0)
    monkeypatch.setattr(threads_module, "_following", m.governor(most=4, cpus=4, probe_steps=1))
    changes = []
    for _ in range(3):
        changes.append(follow_load())
        m.now += 0.1
    assert changes == [None, 2, 4] and torch.get_num_threads() == 4  # a probe at 2, no faster: back to 4
    threads_module.stop_following()
    assert follow_load() is None and threads_policy() == "fixed"


def test_a_training_run_records_its_thread_policy_and_the_command_ends_it(tmp_path, monkeypatch,
                                                                             torch_threads_restored):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads_module, "available_cpus", lambda: 2)
    wide = [*ARGS, "--width", "128", "--q", "4"]  # the later flags win
    assert main([*wide, "--out", str(tmp_path / "a")]) == 0  # 64 × 128 × 2 × 4 elements: two grains
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["threads_policy"] == "load-aware, at most 2" and config["threads"] in (1, 2)
    assert threads_module._following is None
    assert main([*wide, "--threads", "1", "--out", str(tmp_path / "b")]) == 0
    assert json.loads((tmp_path / "b" / "config.json").read_text())["threads_policy"] == "fixed"
