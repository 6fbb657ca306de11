"""The ``sggraph`` command line: check-conditions (text, --json, --node), demo, the console script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sggraph.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
EXPERT = str(EXAMPLES / "expert-net.yaml")


def test_check_conditions_text(capsys):
    assert main(["check-conditions", EXPERT]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert "Conditions of graph 'expert-net'" in out
    assert "A.1 stochastic terminal feedback : yes — e1, e2, e3, e4, e5" in out
    assert "A.3 sparse connectivity          : no" in out
    assert "Theorem 2" in out


def test_check_conditions_json(capsys):
    assert main(["check-conditions", "--json", EXPERT]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"A1", "A2", "A3", "A", "B", "regime"} <= set(data)
    assert data["A1"] == ["e1", "e2", "e3", "e4", "e5"]
    assert data["A2"] == [] and data["A3"] == []
    assert data["A"] is True and data["B"] == "holds"
    assert "Theorem 2" in data["regime"]
    assert "node" not in data


def test_check_conditions_json_dense(capsys):
    assert main(["check-conditions", str(EXAMPLES / "dense-deterministic.yaml"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["A1"], data["A2"], data["A3"], data["A"]) == ([], [], [], False)
    assert data["B"] == "not_guaranteed" and "Theorem 1" in data["regime"]


def test_node_json(capsys):
    assert main(["check-conditions", EXPERT, "--json", "--node", "e2"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["node"] == {"name": "e2", "siblings": ["e1", "e2", "e3", "e4", "e5"],
                            "extended_ancestors": ["e1", "e2", "e3", "e4", "e5", "x"]}
    assert data["B"] == "holds"


def test_node_text(capsys):
    assert main(["check-conditions", EXPERT, "--node", "x"]) == 0
    out = capsys.readouterr().out
    assert "Node x:" in out
    sib_line = next(line for line in out.splitlines() if "siblings" in line)
    an_line = next(line for line in out.splitlines() if "extended ancestors" in line)
    assert sib_line.rsplit(":", 1)[1].strip() == "x"
    assert an_line.rsplit(":", 1)[1].strip() == "x"
    assert main(["check-conditions", EXPERT, "--node", "e5"]) == 0
    out = capsys.readouterr().out
    an_line = next(line for line in out.splitlines() if "extended ancestors" in line)
    assert an_line.rsplit(":", 1)[1].strip() == "e1, e2, e3, e4, e5, x"


def test_node_source_and_neuron(capsys):
    assert main(["check-conditions", EXPERT, "--node", "z"]) == 0
    assert "(none: a source)" in capsys.readouterr().out
    sparse = str(EXAMPLES / "sparse-ff.yaml")
    assert main(["check-conditions", sparse, "--json", "--node", "h1[0]"]) == 0
    node = json.loads(capsys.readouterr().out)["node"]
    assert "h1[0]" in node["siblings"] and set(node["siblings"]) <= set(node["extended_ancestors"])
    assert all(n.startswith("h1[") for n in node["extended_ancestors"])


def test_unknown_node_is_exit_2(capsys):
    assert main(["check-conditions", EXPERT, "--node", "nope"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "nope" in err and "expert-net.yaml" in err and "Fix:" in err
    assert "Traceback" not in err


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["check-conditions"])
    assert info.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_demo(capsys, tmp_path):
    assert main(["demo", "--steps", "4", "--popgym-batches", "2", "--out", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "Theorem 5" in out and "mean final eval reward" in out and "POPGym labyrinth_escape" in out
    runs = [tmp_path / f"{method}-seed{seed}" for method in ("sgprop", "backprop", "mlp") for seed in (0, 1)]
    runs += [tmp_path / f"popgym-{name}" for name in ("sparsenet-sgprop", "sparsenet-backprop", "gru-backprop",
                                                       "lstm-backprop")]
    for run in runs:
        assert (run / "summary.json").exists()
        assert list(run.glob("events.out.tfevents.*")), run  # TensorBoard events in every run
        assert not (run / "checkpoint.pt").exists()  # the demo is never resumed: no resume checkpoints
    # progress inside every run, then the closing summary: one comparison figure and the disk used
    assert err.count("bandit sgprop seed 1: 100%") == 1 and "labyrinth_escape lstm seed 0: 100%" in err
    summary = out[out.index("Summary ("):]
    assert "comparison figure (methods side by side): " + str(tmp_path / "comparison.png") in summary
    assert (tmp_path / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    assert f"disk used by {tmp_path}/: " in summary and "MNIST bandit mlp" in summary and "POPGym LSTM" in summary
    files = sorted(EXAMPLES.glob("*.yaml"))
    assert len(files) >= 3
    for f in files:
        if f.stem.endswith("-cell"):  # a recurrent cell: the conditions of its unrolled graph
            assert f"$ sggraph check-conditions examples/{f.name} --unroll 80" in out
            name = f"{f.stem.removesuffix('-cell')}-unrolled-80"
        else:
            assert f"$ sggraph check-conditions examples/{f.name}" in out
            name = f.stem  # every example graph's `name:` is its file stem
        assert f"Conditions of graph '{name}'" in out
    assert out.count("Regime:") == len(files)


def _console_script() -> str:
    exe = Path(sys.executable).parent / "sggraph"
    if exe.exists():
        return str(exe)
    found = shutil.which("sggraph")
    if found is None:
        pytest.skip("the sggraph console script is not installed")
    return found


def test_console_script(tmp_path):
    exe = _console_script()
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: g\nnodes:\n  - {name: z, dim: 2}\n  - {name: y, dim: 1, parents: [zz]}\n")
    res = subprocess.run([exe, "check-conditions", str(bad)], check=False, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert "bad.yaml:4:" in res.stderr and "node 'y'" in res.stderr and "Fix:" in res.stderr
    assert "Traceback" not in res.stderr and res.stdout == ""
    res = subprocess.run([exe, "check-conditions", "--json", EXPERT], check=False, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["B"] == "holds"


def test_demo_graphs_are_package_data_and_match_the_examples():
    """`sggraph demo` reads its graphs from the installed package, never from examples/ beside it."""
    from importlib.resources import files

    import tomllib

    from sggraph.cli.demo import DEMO_GRAPHS, demo_graphs

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert f"{DEMO_GRAPHS}/*.yaml" in data["sggraph"]
    shipped = demo_graphs()
    assert [p.name for p in shipped] == [f.name for f in sorted(EXAMPLES.glob("*.yaml"))]
    for p in shipped:
        assert files("sggraph").joinpath(DEMO_GRAPHS, p.name).read_text() == (EXAMPLES / p.name).read_text()


def test_check_conditions_takes_several_files(capsys, tmp_path):
    files = sorted(str(f) for f in EXAMPLES.glob("*.yaml"))
    cells = [f for f in files if f.endswith("-cell.yaml")]
    assert cells and len(files) > len(cells) + 1
    assert main(["check-conditions", *files, "--unroll", "3"]) == 0  # --unroll applies to the cell files
    out = capsys.readouterr().out
    assert [ln[3:] for ln in out.splitlines() if ln.startswith("== ")] == files
    assert out.count("Regime:") == len(files)
    graphs = [f for f in files if f not in cells]
    assert main(["check-conditions", "--json", *graphs[:2]]) == 0
    data = json.loads(capsys.readouterr().out)
    assert list(data) == graphs[:2] and all("regime" in d for d in data.values())
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: g\nnodes:\n  - {name: z, dim: 2}\n  - {name: y, dim: 1, parents: [zz]}\n")
    assert main(["check-conditions", graphs[0], str(bad), cells[0], graphs[1]]) == 2  # all reported, then exit 2
    out, err = capsys.readouterr()
    assert out.count("Regime:") == 2 and "bad.yaml:4:" in err and "--unroll" in err and "Traceback" not in err
    assert main(["check-conditions", *graphs[:2], "--node", "x"]) == 2
    assert "--node names a node of one graph" in capsys.readouterr().err


def test_version(capsys):
    import torch

    import sggraph

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"sggraph {sggraph.__version__} (torch {torch.__version__}, Python 3.")
