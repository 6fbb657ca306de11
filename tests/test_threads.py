"""Thread counts: the CPUs available (affinity, cgroup quota), the work-size default, --threads and
OMP_NUM_THREADS, and the count recorded in config.json."""

from __future__ import annotations

import json
import os

import pytest
import torch

from sggraph.cli import main
from sggraph.exceptions import ConfigError
from sggraph.threads import GRAIN, available_cpus, cgroup_cpu_limit, resolve_threads, threads_for_work


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
    assert json.loads((run / "summary.json").read_text())["resumed_from"] == 4
    assert main([*ARGS, "--threads", "0", "--out", str(tmp_path / "bad")]) == 2
    assert "--threads must be at least 1" in capsys.readouterr().err


def test_default_threads_follow_the_work_size(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    run = tmp_path / "run"
    assert main([*ARGS, "--out", str(run)]) == 0  # 64 × 8 × 2 × 2 elements: far below one grain
    assert json.loads((run / "config.json").read_text())["threads"] == 1
