"""A key written twice in one YAML mapping is an error naming both lines, in every YAML sggraph reads
(graphs, cells, sweep specs, ``train --config`` files), never a silent last-one-wins."""

from __future__ import annotations

import pytest

from sggraph.cli import main
from sggraph.core.safe_yaml import parse_yaml
from sggraph.exceptions import SpecError

GRAPH = """name: g
nodes:
  - {name: z, dim: 2}
  - {name: y, dim: 1, parents: [z],
     dim: 5}
"""
FEEDBACK = """name: g
nodes:
  - {name: z, dim: 2}
  - {name: y, dim: 1, parents: [z]}
feedback:
  y: stochastic
feedback:
  y: deterministic
"""
CELL = """name: c
inputs:
  - {name: obs, dim: 3}
state:
  name: h
  count: 4
  dim: 2
  slots: 2
  count: 8
  parents: {fan_in: 2, seed: 0}
  input: {node: obs, neurons: 2}
post:
  - {name: act, dim: 2, parents: [h]}
"""
SWEEP = """name: s
command: train mnist-bandit
settings: {steps: 2}
grid:
  seed: [0, 1]
grid:
  method: [sgprop, backprop]
"""
CONFIG = "method: sgprop\nsteps: 5\nseed: 1\nsteps: 50\n"


@pytest.mark.parametrize("text,key,first,again", [
    (GRAPH, "dim", 4, 5), (FEEDBACK, "feedback", 5, 7), (CELL, "count", 6, 9), (SWEEP, "grid", 4, 6),
    (CONFIG, "steps", 2, 4), ("a: {x: 1, x: 2}\n", "x", 1, 1),
    ("base: &b {a: 1}\nm:\n  <<: *b\n  c: 3\n  c: 4\n", "c", 4, 5),  # through PyYAML's composer (a merge key)
])
def test_a_duplicate_key_names_both_lines(text, key, first, again):
    with pytest.raises(SpecError) as err:
        parse_yaml(text, file="f.yaml")
    message = str(err.value)
    assert f"f.yaml:{again}:" in message and f"'{key}' appears twice" in message
    assert f"on line {first} and on line {again}" in message


def test_a_merge_key_may_be_overridden_and_equal_values_in_different_mappings_are_fine():
    doc = parse_yaml("base: &b {a: 1}\nm:\n  <<: *b\n  a: 2\nn: {a: 1}\n")
    assert doc.data == {"base": {"a": 1}, "m": {"a": 2}, "n": {"a": 1}}


@pytest.mark.parametrize("command,text", [
    (["check-conditions"], GRAPH), (["check-conditions"], FEEDBACK), (["check-conditions", "--unroll", "2"], CELL),
    (["sweep", "--dry-run"], SWEEP), (["train", "mnist-bandit", "--config"], CONFIG),
])
def test_every_command_refuses_a_duplicate_key_with_exit_2(command, text, tmp_path, capsys):
    path = tmp_path / "file.yaml"
    path.write_text(text)
    argv = [*command, str(path)]
    if command[0] == "train":
        argv += ["--out", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "appears twice" in err and "Traceback" not in err and str(path) in err
    assert not (tmp_path / "run").exists()
