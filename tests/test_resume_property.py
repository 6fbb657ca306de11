"""Resuming never changes a run's result: for any sequence of (length, interruption) segments, the final
records equal an uninterrupted run of the final length; a resume that would shorten a run is refused and
changes no file; ``seconds`` adds up the segments."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from interrupt import run_bandit_until

from sggraph.cli import main
from sggraph.exceptions import ConfigError
from sggraph.experiments.mnist_bandit import BanditConfig, run_bandit

TINY = dict(evaluations=3, eval_batch=40, width=6, layers=1, q=2, slots=2, n_parents=2, checkpoint_every=3)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny runs: thread start-up would dominate
    yield
    torch.set_num_threads(threads)


def _cfg(steps: int) -> BanditConfig:
    return BanditConfig(steps=steps, **TINY)


def _files(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


def _run(out: Path, steps: int, cut: int | None, resume: bool, monkeypatch) -> None:
    """Train ``steps`` into ``out``; with ``cut``, stop (as a Ctrl-C would) before the segment's step cut + 1."""
    run_bandit_until(_cfg(steps), out, cut, monkeypatch, resume=resume)


def _done(out: Path) -> int:
    return int(torch.load(out / "checkpoint.pt", weights_only=True)["step"]) if (out / "checkpoint.pt").exists() else 0


_WHOLE: dict[int, Path] = {}


def _whole(steps: int) -> Path:
    """An uninterrupted run of ``steps`` (made once per length)."""
    if steps not in _WHOLE:
        out = Path(tempfile.mkdtemp(prefix="whole")) / "run"
        run_bandit(_cfg(steps), out)
        _WHOLE[steps] = out
    return _WHOLE[steps]


def _records(out: Path) -> tuple[str, dict, dict]:
    summary = json.loads((out / "summary.json").read_text())
    summary.pop("seconds")
    return (out / "metrics.csv").read_text(), summary, json.loads((out / "config.json").read_text())


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(segments=st.lists(st.tuples(st.integers(1, 8), st.one_of(st.none(), st.integers(0, 7))), min_size=1,
                         max_size=3),
       final=st.integers(1, 8))
def test_resumed_runs_equal_the_uninterrupted_run(segments, final, monkeypatch):
    out = Path(tempfile.mkdtemp(prefix="resumed")) / "run"
    try:
        for length, cut in [*segments, (final, None)]:
            done = _done(out)
            if length < done:  # a shorter resume is refused and changes nothing
                before = _files(out)
                with pytest.raises(ConfigError, match="cannot shorten"):
                    run_bandit(_cfg(length), out, resume=True)
                assert _files(out) == before
                length = done if cut is None else length
                if cut is not None:
                    continue
            resume = done > 0
            prior = float(torch.load(out / "checkpoint.pt", weights_only=True).get("seconds", 0.0)) if resume else 0.0
            _run(out, length, cut, resume, monkeypatch)
            if cut is None:
                seconds = json.loads((out / "summary.json").read_text())["seconds"]
                assert seconds >= round(prior, 2) - 0.01  # the earlier segments' time is kept, not overwritten
        assert _records(out) == _records(_whole(max(final, _done(out))))
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)


def test_resume_adds_the_segments_seconds(tmp_path):
    out = tmp_path / "run"
    run_bandit(_cfg(6), out)
    first = torch.load(out / "checkpoint.pt", weights_only=True)["seconds"]  # the training's seconds so far
    second = run_bandit(_cfg(6), out, resume=True)["seconds"]  # nothing left to train: the time stays
    third = run_bandit(_cfg(9), out, resume=True)["seconds"]
    after = torch.load(out / "checkpoint.pt", weights_only=True)["seconds"]  # unrounded: the 3 steps' time added
    assert first > 0 and second >= round(first, 2) and after > first and third >= second


@pytest.mark.parametrize("experiment,base,flag,longer,shorter", [
    ("mnist-bandit", ["--evaluations", "2", "--eval-batch", "40", "--width", "6", "--layers", "1", "--q", "2",
                      "--slots", "2", "--n-parents", "2"], "--steps", "6", "3"),
    ("popgym", ["--model", "gru", "--num-envs", "2", "--hidden", "8", "--embed", "8"], "--batches", "2", "1"),
])
def test_a_shorter_resume_is_refused_and_changes_nothing(experiment, base, flag, longer, shorter, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", experiment, *base, flag, longer, "--out", str(out)]) == 0
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}
    capsys.readouterr()
    assert main(["train", experiment, *base, flag, shorter, "--out", str(out), "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"already done {longer}" in err and f"{flag} {longer} or more" in err and "Traceback" not in err
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()} == before
