"""A large sweep must say how many runs it makes; validating it checks each setting's type once per class,
not once per setting per run."""

from __future__ import annotations

import pytest

from sggraph.cli import main
from sggraph.experiments import settings

GRID = """command: train mnist-bandit
settings: {steps: 6}
grid:
  seed: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
  lr: [0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.007, 0.008, 0.009, 0.01]
  lam_init: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
"""


def test_a_large_grid_that_does_not_say_its_size_is_refused(tmp_path, capsys):
    spec = tmp_path / "big.yaml"
    spec.write_text(GRID)
    assert main(["sweep", str(spec), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{spec}:3:" in err and "the grid makes 600 runs; a sweep of more than 500 runs must say so" in err
    assert "add `runs: 600`" in err and not (tmp_path / "out").exists()


def test_a_declared_size_must_be_the_grids(tmp_path, capsys):
    spec = tmp_path / "big.yaml"
    spec.write_text(GRID + "runs: 60\n")
    assert main(["sweep", str(spec), "--dry-run"]) == 2
    assert f"{spec}:7: `runs: 60` but the grid makes 600 runs" in capsys.readouterr().err


def test_a_declared_large_sweep_is_validated_with_one_type_lookup_per_class(tmp_path, capsys):
    spec = tmp_path / "big.yaml"
    spec.write_text(GRID + "runs: 600\n")
    settings._type_hints.cache_clear()
    assert main(["sweep", str(spec), "--dry-run", "--out", str(tmp_path / "out")]) == 0
    info = settings._type_hints.cache_info()
    assert info.misses == 1 and info.hits >= 600  # BanditConfig's hints evaluated once for 600 runs
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("600 runs — 600 to start, 0 to resume, 0 finished before") and len(out) == 601
    assert not (tmp_path / "out").exists()  # a dry run creates nothing


@pytest.mark.parametrize("runs", ["true", "'600'"])
def test_runs_must_be_an_integer(runs, tmp_path, capsys):
    spec = tmp_path / "big.yaml"
    spec.write_text(GRID + f"runs: {runs}\n")
    assert main(["sweep", str(spec), "--dry-run"]) == 2
    assert "but the grid makes 600 runs" in capsys.readouterr().err
