"""Sharing the machine: ``sggraph bench --contention`` (its worker protocol and a brief run).
No timing assertions."""

from __future__ import annotations

import io
import json
import os

import pytest

from sggraph.cli import main
from sggraph.exceptions import ConfigError
from sggraph.experiments.contention import CONTENTION_VARIANTS, contention_worker, run_contention


def test_worker_protocol_ready_start_result_stop():
    read_fd, write_fd = os.pipe()
    os.write(write_fd, b"go\n")
    os.close(write_fd)  # after its result the worker sees the end of input and stops
    out, ticks = io.StringIO(), []
    with os.fdopen(read_fd) as stdin:
        contention_worker(stdin, out, steps=2, warmup=1, batch=2, tick=lambda: ticks.append(1))
    ready, result = out.getvalue().splitlines()
    assert ready == "ready"
    result = json.loads(result)
    assert set(result) == {f"{v}_ms" for v in CONTENTION_VARIANTS} | {"threads"}
    assert all(result[f"{v}_ms"] > 0 for v in CONTENTION_VARIANTS)
    assert sum(result["threads"].values()) == 2 * len(CONTENTION_VARIANTS)  # timed steps per thread count
    assert len(ticks) == 3  # once per round of the variants: one warm-up round, two timed


def test_contention_bench_runs_briefly(capsys):
    assert main(["bench", "--contention", "--settings", "1", "--steps", "1", "--batch", "4", "--json",
                 "--quiet"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"cpus", "loadavg", "steps", "settings"} and list(data["settings"]) == ["1"]
    row = data["settings"]["1"]
    assert row["alone"]["threads"] == row["busy"]["threads"] == {"1": len(CONTENTION_VARIANTS)}
    assert len(row["side_by_side"]) == 2
    for key in ("busy_over_alone", "side_by_side_over_alone"):
        assert set(row[key]) == set(CONTENTION_VARIANTS) and all(x > 0 for x in row[key].values())


def test_contention_bench_rejects_bad_settings(capsys):
    assert main(["bench", "--contention", "--threads", "2"]) == 2
    assert "takes no --threads" in capsys.readouterr().err
    assert main(["bench", "--contention", "--settings", "1,three"]) == 2
    assert "unknown contention settings ['three']" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--steps must be at least 1"):
        run_contention(steps=0)
