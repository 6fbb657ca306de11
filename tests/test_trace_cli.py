"""``sggraph check-conditions FILE.py:NAME`` and ``sggraph draw FILE.py:NAME``: traced PyTorch models
on the command line, with the YAML path's exit codes (2 on bad input) and located errors."""

from __future__ import annotations

import json
import re
import textwrap

import pytest

from sggraph.cli import main

MODEL = textwrap.dedent('''
    import torch
    import torch.nn.functional as F
    from torch import nn

    import sggraph


    class Skip(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.block, self.out = nn.Linear(3, 4), nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            h = F.relu(self.fc1(x))
            return self.out(self.block(h) + h)


    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            h = self.fc(x)
            if h.sum() > 0:
                return h
            return -h


    def build():
        return Skip(), torch.randn(2, 3)


    def spec():
        return sggraph.TraceSpec(Skip(), torch.randn(2, 3), options={"feedback": {"out": "contextual"},
                                                                    "stochastic": ["block"]})


    def untraceable():
        return Branchy(), torch.randn(2, 3)


    def misnamed():
        return sggraph.TraceSpec(Skip(), torch.randn(2, 3), options={"nodes": ["fc1", "blok"]})


    def broken():
        return Skip(), torch.randn(2, 5)


    NOT_CALLABLE = 3
''')


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "model.py"
    path.write_text(MODEL)
    return path


def _line_of(path, text):
    return next(i for i, line in enumerate(path.read_text().splitlines(), start=1) if text in line)


def test_check_conditions_of_a_traced_model(model_file, capsys):
    assert main(["check-conditions", f"{model_file}:spec"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "Conditions of graph 'Skip'" in out
    assert "A.1 stochastic terminal feedback : yes — out" in out
    assert main(["check-conditions", "--json", "--node", "block", f"{model_file}:spec"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["A1"] == ["out"] and data["A2"] == ["block"]
    assert data["node"]["siblings"] == ["block", "fc1@1"]  # the skip connection's relay is block's sibling


def test_draw_a_traced_model(model_file, tmp_path, capsys):
    out = tmp_path / "skip.dot"
    assert main(["draw", f"{model_file}:build", "-o", str(out), "--node", "block"]) == 0
    source = out.read_text()
    edges = {line.split(" [")[0].strip() for line in source.splitlines() if " -> " in line and "legend" not in line}
    assert edges == {"x -> fc1", "fc1 -> block", 'fc1 -> "fc1@1"', "block -> out", '"fc1@1" -> out'}
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("command", [["check-conditions"], ["draw", "-o", "never.dot"]])
def test_an_untraceable_model_exits_2_naming_file_and_line(model_file, command, capsys, tmp_path):
    argv = [command[0], f"{model_file}:untraceable", *command[1:]]
    if command[0] == "draw":
        argv[-1] = str(tmp_path / "never.dot")
    assert main(argv) == 2
    err = capsys.readouterr().err
    line = _line_of(model_file, "if h.sum() > 0:")
    assert err.startswith(f"sggraph: error: {model_file}:{line}: ")
    assert "torch.fx cannot trace Branchy" in err and "Fix:" in err and "Traceback" not in err
    assert not (tmp_path / "never.dot").exists()


@pytest.mark.parametrize("target, message", [
    ("misnamed", "nodes entry 'blok' is not a submodule of Skip.*the closest are 'block'"),
    ("buidl", "the file defines no 'buidl'.*the closest are build"),
    ("NOT_CALLABLE", "'NOT_CALLABLE' is a int, not a callable"),
    ("broken", "failed on the example inputs"),
])
def test_bad_targets_exit_2_with_the_file(model_file, target, message, capsys):
    assert main(["check-conditions", f"{model_file}:{target}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"sggraph: error: {model_file}")
    assert re.search(message, err), err


def test_missing_and_failing_files_exit_2(tmp_path, capsys):
    assert main(["check-conditions", str(tmp_path / "nope.py") + ":build"]) == 2
    assert "no such model file" in capsys.readouterr().err
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\n\nraise RuntimeError('no data here')\n")
    assert main(["draw", f"{bad}:build", "-o", str(tmp_path / "x.dot")]) == 2
    assert f"{bad}:3: importing the file raised RuntimeError: no data here" in capsys.readouterr().err
    syntax = tmp_path / "syntax.py"
    syntax.write_text("def build(:\n    pass\n")
    assert main(["check-conditions", f"{syntax}:build"]) == 2
    assert f"{syntax}:1: the file is not valid Python" in capsys.readouterr().err
    assert main(["check-conditions", "--unroll", "3", f"{bad}:build"]) == 2
    assert "--unroll applies to recurrent cells" in capsys.readouterr().err


def test_dni_mnist_example_runs_every_method(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / "dni_mnist.py"
    spec = importlib.util.spec_from_file_location("dni_mnist_example", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    out = tmp_path / "dni.json"
    results = example.main(["--steps", "3", "--batch", "8", "--width", "16", "--out", str(out)])
    assert [r["method"] for r in results] == ["backprop", "dni", "cdni", "adaptive"]
    assert json.loads(out.read_text()) == results
    assert all(0 <= r["held_out_accuracy"] <= 1 and r["final_train_loss"] > 0 for r in results)
    assert results[1]["lambda"] == {"fc1": 0.0, "fc2": 0.0}
    assert all(0 <= v <= 1 for v in results[3]["lambda"].values()) and results[3]["lambda"] != {"fc1": 0.5, "fc2": 0.5}
    assert main(["check-conditions", "--json", f"{path}:build"]) == 0
