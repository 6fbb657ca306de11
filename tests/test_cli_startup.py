"""The torch-free core's commands start without loading torch: building the parser (every command's flags) and
running ``check-conditions`` on a graph import neither torch nor matplotlib (loading torch alone took
1.5–2 s of every command's start)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "matplotlib", "tensorboard", "popgym", "gymnasium", "sggraph.draw", "sggraph.sweeps.figures")


def _loaded_after(code: str) -> dict[str, bool]:
    probe = f"import sys, json\n{code}\nprint(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True,
                          timeout=120)
    return json.loads(proc.stdout.splitlines()[-1])


def test_building_the_parser_loads_no_heavy_module():
    loaded = _loaded_after("from sggraph.cli import build_parser\nbuild_parser()")
    assert not any(loaded.values()), loaded


@pytest.mark.parametrize("argv", [["check-conditions", "examples/sparse-ff.yaml"],
                                  ["check-conditions", "examples/popgym-sparsenet-cell.yaml", "--unroll", "2",
                                   "--json"]])
def test_check_conditions_loads_no_heavy_module(argv):
    loaded = _loaded_after(f"from sggraph.cli import main\nassert main({argv!r}) == 0")
    assert not any(loaded.values()), loaded


def test_the_train_flags_still_validate_through_the_experiment():
    from sggraph.cli import main

    assert main(["train", "popgym", "--model", "gru", "--method", "sgprop", "--out", "/nonexistent/x"]) == 2
