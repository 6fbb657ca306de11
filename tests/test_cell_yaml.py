"""Recurrent cells in YAML: the format, the shipped POPGym cell, and the command line on cells.

Every bad cell file is checked twice, like bad graph files: through ``Cell.from_yaml`` (exception
class, line, node, fix) and through ``sggraph check-conditions`` in-process (exit code 2, one
paragraph on stderr naming ``file:line`` and the node, no traceback).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from yaml_cases import Case, assert_cli_paragraph, assert_located, write_case

import sggraph
from sggraph import Cell, Graph, GraphError, SpecError, unroll
from sggraph.cli import main
from sggraph.core.nodes import natural_key
from sggraph.models.recurrent_sparsenet import RecurrentSparseNetPolicy, recurrent_sparsenet_cell

ROOT = Path(__file__).resolve().parent.parent
POPGYM = str(ROOT / "examples" / "popgym-sparsenet-cell.yaml")
EXPERT = str(ROOT / "examples" / "expert-net.yaml")

SMALL = """\
name: rnn
inputs:
  - {name: obs, dim: 3}
pre:
  - {name: emb, dim: 4, parents: [obs], fn: tanh}
state:
  name: h
  count: 6
  dim: 2
  slots: 3
  parents: {fan_in: 2, seed: 4}
  input: {node: emb, neurons: 2}
post:
  - {name: act, dim: 3, parents: [h], fn: linear}
feedback:
  act: stochastic
"""


# ------------------------------------------------------------------------------------------ the format
def test_small_cell_loads_with_every_declaration(tmp_path):
    path = tmp_path / "rnn.yaml"
    path.write_text(SMALL)
    cell = Cell.from_yaml(str(path))
    assert cell.inputs == {"obs": 3}
    assert cell.stages() == {"emb": "pre", "act": "post"}
    st = cell.state
    assert (st.name, st.count, st.dim, st.slots, st.fan_in, st.seed) == ("h", 6, 2, 3, 2, 4)
    assert (st.input, st.input_neurons, st.self_parents, st.table) == ("emb", 2, False, None)
    assert cell.feedback == {"act": "stochastic"}
    assert cell.where("emb") == (str(path), 5) and cell.where("h@3:1") == (str(path), 6)
    built = Cell("rnn")
    built.add_input("obs", 3)
    built.add_node("emb", 4, ["obs"], fn="tanh")
    built.set_state("h", count=6, dim=2, fan_in=2, slots=3, seed=4, input="emb", input_neurons=2)
    built.add_node("act", 3, ["h"], fn="linear")
    built.set_feedback("act", "stochastic")
    assert cell == built
    built.set_feedback("act", "contextual")
    assert cell != built


def _variants() -> list[Cell]:
    plain = Cell("plain")
    plain.add_input("x", 2)
    plain.set_state("s", count=4, dim=1, fan_in=3, input="x", input_neurons=4, stochastic=True)
    plain.add_node("y", 2, ["s[0]", "s[3]"], stochastic=True)
    explicit = Cell("table")
    explicit.add_input("x", 2)
    explicit.add_input("c", 1)
    explicit.add_node("e", 3, ["x", "c"], fn="identity")
    explicit.set_state("s", count=3, dim=2, table=[[0, 1], [2, 1], [0, 2]], self_parents=True, seed=9, slots=2,
                       input="e", input_neurons=1, scale_dim=7)
    explicit.add_node("p", 2, ["s"], fn="tanh")
    explicit.add_node("q", 1, ["p"], fn="dot")
    explicit.set_feedback("q", "contextual")
    return [plain, explicit, recurrent_sparsenet_cell(56, 4), recurrent_sparsenet_cell(7, 3, 10, 2, 2, 3, 4, 5, 1,
                                                                                       False, "wired")]


@pytest.mark.parametrize("index", range(4))
def test_dict_and_yaml_round_trip(index, tmp_path):
    cell = _variants()[index]
    assert Cell.from_dict(cell.to_dict()) == cell
    path = tmp_path / "cell.yaml"
    path.write_text(cell.to_yaml())
    again = Cell.from_yaml(str(path))
    assert again == cell
    assert unroll(again, 3) == unroll(cell, 3)


def test_to_dict_omits_defaults():
    d = _variants()[0].to_dict()
    assert d["state"] == {"name": "s", "count": 4, "dim": 1, "parents": {"fan_in": 3, "seed": 0},
                          "input": {"node": "x", "neurons": 4}, "stochastic": True}
    assert "pre" not in d and "feedback" not in d
    assert d["post"] == [{"name": "y", "dim": 2, "parents": ["s[0]", "s[3]"], "stochastic": True}]


def test_stochastic_flags_reach_the_unrolled_graph_and_the_conditions():
    cell = _variants()[0]
    g = unroll(cell, 2)
    assert g.nx.nodes["s@2:1"]["stochastic"] and g.nx.nodes["y@1"]["stochastic"]
    assert not g.nx.nodes["s@0:1"]["stochastic"]  # the zero initial state
    report = sggraph.check_conditions(g)
    assert "s@1:0" in report.a2 and "y@2" in report.a2


def test_graph_and_cell_loaders_refuse_each_others_files(tmp_path):
    with pytest.raises(SpecError) as info:
        Graph.from_yaml(POPGYM)
    assert info.value.line == 14 and "Cell.from_yaml" in info.value.fix and "--unroll" in info.value.fix
    with pytest.raises(SpecError) as info:
        Cell.from_yaml(EXPERT)
    assert info.value.line == 4 and "Graph.from_yaml" in info.value.fix


# ------------------------------------------------------------------------------- the POPGym cell
@pytest.mark.parametrize("text", ["?\n", "1: x\n", "inputs: {obs: 3}\n3: y\n"])
def test_non_text_keys_in_a_cell_file_are_a_located_error(tmp_path, text):
    """A key that is not a name (found by the fuzz test: ``?`` alone is the key None) is a SpecError."""
    path = tmp_path / "cell.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match="is not a name") as err:
        Cell.from_yaml(path)
    assert err.value.file == str(path)


def test_popgym_cell_yaml_is_the_python_builders_cell():
    cell = Cell.from_yaml(POPGYM)
    built = recurrent_sparsenet_cell(56, 4)
    assert cell == built
    assert unroll(cell, 5) == unroll(built, 5)
    assert cell.state.parent_table().tolist() == built.state.parent_table().tolist()


def _shapes(params) -> list[tuple[str, tuple[int, ...]]]:
    return [(name, tuple(p.shape)) for name, p in params]


def test_popgym_cell_yaml_compiles_to_the_experiments_parameter_shapes():
    cell = Cell.from_yaml(POPGYM)
    torch.manual_seed(0)
    net = sggraph.compile(cell, grouping="child")
    policy = RecurrentSparseNetPolicy(56, 4, seed=0)
    assert _shapes(net.named_parameters()) == _shapes(policy.net.named_parameters())
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in policy.net.parameters())
    assert torch.equal(net.state.table, policy.net.state.table)
    torch.testing.assert_close(net.state.function.scale, policy.net.state.function.scale)  # scale_dim 164
    assert type(net.pre["emb"].function) is type(policy.net.pre["emb"].function)
    assert type(net.post["act"].function) is type(policy.net.post["act"].function)
    out = net({"obs": torch.zeros(3, 2, 56)})["act"]
    assert out.shape == (3, 2, 4)


def test_check_conditions_on_the_popgym_cell_at_80_steps_is_fast(capsys):
    # CPU time: the machine running the suite may be shared, and waiting for a core is not our work
    wall, cpu = time.perf_counter(), time.process_time()
    assert main(["check-conditions", POPGYM, "--unroll", "80", "--json"]) == 0
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    data = json.loads(capsys.readouterr().out)
    assert len(data["A1"]) == 80 and data["A"] is True and data["B"] == "not_guaranteed"
    assert cpu < 5.0, (cpu, wall)


def test_draw_cell_unrolled_and_folded(tmp_path, capsys):
    unrolled = tmp_path / "cell.dot"
    assert main(["draw", POPGYM, "--unroll", "3", "-o", str(unrolled)]) == 0
    text = unrolled.read_text()  # a 128-neuron state: one box per step by default
    assert '"h@3"' in text and '"h@3:0"' not in text and '"act@3"' in text and "h@4" not in text
    neurons = tmp_path / "neurons.dot"
    assert main(["draw", POPGYM, "--unroll", "3", "--expand-arrays", "2", "-o", str(neurons)]) == 0
    text = neurons.read_text()
    assert '"h@3:0"' in text and '"h@3:1"' in text and '"h@3:2"' not in text
    folded = tmp_path / "folded.dot"
    assert main(["draw", POPGYM, "-o", str(folded)]) == 0
    text = folded.read_text()
    assert "recurrent cell, one step" in text and "t−1 → t, fan_in 6" in text and "@" not in text.split("Legend")[0]
    boxes = tmp_path / "boxes.dot"
    assert main(["draw", POPGYM, "--unroll", "2", "--expand-arrays", "0", "--node", "h@2:3", "-o", str(boxes)]) == 0
    assert '"h@2"' in boxes.read_text() and "h@2:3" in boxes.read_text()
    capsys.readouterr()


def test_draw_cell_with_the_lambda_of_a_popgym_checkpoint(tmp_path, capsys):
    policy = RecurrentSparseNetPolicy(56, 4, seed=0)
    policy.net.set_lambda(torch.full((128,), 0.25), node="h")
    torch.save({"batch": 1, "policy": policy.state_dict()}, tmp_path / "checkpoint.pt")
    out = tmp_path / "lam.dot"
    assert main(["draw", POPGYM, "--lambda-from", str(tmp_path), "-o", str(out)]) == 0
    text = out.read_text()
    assert "mean λ=0.25" in text and "mean λ=1.00" not in text.split("h -> h")[1].split("\n")[0]
    capsys.readouterr()


@pytest.mark.parametrize("argv, words", [
    (["check-conditions", POPGYM], ("recurrent cell", "--unroll")),
    (["check-conditions", EXPERT, "--unroll", "3"], ("layered graph", "drop --unroll")),
    (["check-conditions", POPGYM, "--unroll", "0"], ("at least 1",)),
    (["check-conditions", POPGYM, "--unroll", "2", "--node", "h@3:0"], ("no node named", "state@t:i")),
    (["draw", EXPERT, "--unroll", "2", "-o", "x.svg"], ("layered graph",)),
    (["draw", POPGYM, "--node", "h@1:0", "-o", "x.svg"], ("--node", "--unroll")),
    (["mse", POPGYM], ("recurrent cell", "check-conditions")),
])
def test_cli_mismatch_of_file_and_unroll_is_a_clear_error(argv, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err and "Fix:" in err and err.count("\n") == 1
    for word in words:
        assert word in err, (word, err)
    assert not (tmp_path / "x.svg").exists()


def test_check_conditions_node_lists_are_sorted_naturally(capsys, tmp_path):
    assert main(["check-conditions", POPGYM, "--unroll", "2", "--json", "--node", "h@2:5"]) == 0
    node = json.loads(capsys.readouterr().out)["node"]
    for names in (node["siblings"], node["extended_ancestors"]):
        assert names == sorted(names, key=natural_key)
    assert node["extended_ancestors"].index("h@1:2") < node["extended_ancestors"].index("h@1:10")
    path = tmp_path / "wide.yaml"
    path.write_text("name: wide\narrays:\n  - {name: x, count: 12, dim: 1}\n"
                    "  - {name: h1, count: 12, dim: 2, parents: {array: x, fan_in: 12}}\n")
    assert main(["check-conditions", str(path), "--json", "--node", "h1[0]"]) == 0
    node = json.loads(capsys.readouterr().out)["node"]
    assert node["siblings"] == [f"h1[{i}]" for i in range(12)]
    assert main(["check-conditions", str(path), "--node", "h1[0]"]) == 0
    assert "h1[0], h1[1], h1[2], h1[3]" in capsys.readouterr().out


# ----------------------------------------------------------------------------- bad cell files
def _cell(state: str = "  name: h\n  count: 6\n  dim: 2\n  parents: {fan_in: 2}\n  input: {node: obs, neurons: 2}\n",
          post: str = "  - {name: act, dim: 3, parents: [h], fn: linear}\n", pre: str = "",
          inputs: str = "  - {name: obs, dim: 3}\n") -> str:
    return (f"name: bad\ninputs:\n{inputs}" + (f"pre:\n{pre}" if pre else "") + f"state:\n{state}post:\n{post}")


CASES = [
    Case("unknown-top-level-key", "name: bad\ninput:\n  - {name: obs, dim: 3}\n" + _cell().split("\n", 3)[3],
         SpecError, 2, None, ("input", "did you mean 'inputs'")),
    Case("unknown-node-key", _cell(post="  - {name: act, dim: 3, parnts: [h], fn: linear}\n"), SpecError, 11, "act",
         ("parnts", "did you mean 'parents'")),
    Case("unknown-state-key", _cell(state="  name: h\n  count: 6\n  dim: 2\n  fanin: 2\n"), SpecError, 8, "h",
         ("fanin", "Allowed keys: name, count, dim, slots, parents, input")),
    Case("unknown-state-parents-key",
         _cell(state="  name: h\n  count: 6\n  dim: 2\n  parents: {fan_in: 2, self_parent: true}\n"),
         SpecError, 8, "h", ("self_parent", "did you mean 'self_parents'")),
    Case("state-reads-a-missing-input", _cell(state="  name: h\n  count: 6\n  dim: 2\n  parents: {fan_in: 2}\n"
                                                    "  input: {node: embb, neurons: 2}\n"),
         GraphError, 4, "h", ("unknown input 'embb'", "known: obs")),
    Case("fan-in-at-count-without-self-parents",
         _cell(state="  name: h\n  count: 6\n  dim: 2\n  parents: {fan_in: 6}\n"), GraphError, 4, "h",
         ("fan_in=6 must be below count=6", "self_parents")),
    Case("negative-state-dim", _cell(state="  name: h\n  count: 6\n  dim: -2\n  parents: {fan_in: 2}\n"),
         GraphError, 4, "h", ("dim must be positive, got -2",)),
    Case("negative-input-dim", _cell(inputs="  - {name: obs, dim: -3}\n"), GraphError, 3, "obs",
         ("dim must be positive",)),
    Case("zero-node-dim", _cell(post="  - {name: act, dim: 0, parents: [h], fn: linear}\n"), GraphError, 11, "act",
         ("dim must be positive",)),
    Case("post-node-reads-a-missing-node", _cell(post="  - {name: act, dim: 3, parents: [h, ctx], fn: linear}\n"),
         GraphError, 11, "act", ("unknown parent 'ctx'",)),
    Case("post-node-reads-a-missing-neuron", _cell(post="  - {name: act, dim: 3, parents: ['h[6]'], fn: linear}\n"),
         GraphError, 11, "act", ("not a neuron of the state", "0..5")),
    Case("pre-node-reads-the-state", _cell(pre="  - {name: e, dim: 2, parents: [h]}\n"), GraphError, 5, "e",
         ("declared under `pre:`", "move it under `post:`")),
    Case("post-node-reads-no-state", _cell(post="  - {name: act, dim: 3, parents: [obs], fn: linear}\n"),
         GraphError, 11, "act", ("does not read the state", "move it under `pre:`")),
    Case("missing-state", "name: bad\ninputs:\n  - {name: obs, dim: 3}\npost:\n  - {name: y, dim: 1, parents: [obs]}\n",
         SpecError, 1, None, ("missing required key 'state'",)),
    Case("state-without-parents", _cell(state="  name: h\n  count: 6\n  dim: 2\n"), GraphError, 4, "h",
         ("needs `parents:`",)),
    Case("table-out-of-range", _cell(state="  name: h\n  count: 3\n  dim: 2\n  parents: {table: [[1], [2], [3]]}\n"),
         GraphError, 4, "h", ("out of range", "0..2")),
    Case("table-reads-itself", _cell(state="  name: h\n  count: 3\n  dim: 2\n  parents: {table: [[1], [1], [0]]}\n"),
         GraphError, 4, "h", ("neuron 1 reads its own previous state", "self_parents: true")),
    Case("wrong-type", _cell(state="  name: h\n  count: '6'\n  dim: 2\n  parents: {fan_in: 2}\n"), SpecError, 6, "h",
         ("invalid value for 'count'", "expected int")),
    Case("feedback-on-a-missing-node", _cell() + "feedback:\n  ac: stochastic\n", GraphError, 13, "ac",
         ("unknown node", "post:")),
    Case("feedback-on-a-pre-node", _cell(pre="  - {name: e, dim: 2, parents: [obs]}\n",
                                        state="  name: h\n  count: 6\n  dim: 2\n  parents: {fan_in: 2}\n"
                                              "  input: {node: e, neurons: 1}\n") + "feedback:\n  e: stochastic\n",
         GraphError, 5, "e", ("feedback is declared on a pre node",)),
    Case("no-inputs", _cell(inputs="  []\n").replace("inputs:\n  []", "inputs: []"), GraphError, 2, "bad",
         ("at least one input",)),
    Case("empty-file", "", SpecError, 1, None, ("empty",)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_cell_from_yaml_error_is_located(case, tmp_path):
    path = write_case(tmp_path, case)
    with pytest.raises(case.exc) as info:
        Cell.from_yaml(str(path))
    err = info.value
    assert_located(err, case)
    assert err.file == str(path)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_cli_reports_cell_errors_without_traceback(case, tmp_path, capsys):
    path = write_case(tmp_path, case)
    assert main(["check-conditions", str(path), "--unroll", "4"]) == 2
    out, err = capsys.readouterr()
    assert_cli_paragraph(out, err, case)
    assert err.startswith(f"sggraph: error: {path}:{case.line}: ")


def test_levels_within_a_step_are_checked(tmp_path):
    path = tmp_path / "skip.yaml"
    path.write_text(_cell(pre="  - {name: e, dim: 2, parents: [obs]}\n  - {name: f, dim: 2, parents: [e, obs]}\n",
                          state="  name: h\n  count: 6\n  dim: 2\n  parents: {fan_in: 2}\n"
                                "  input: {node: f, neurons: 1}\n"))
    with pytest.raises(GraphError) as info:
        Cell.from_yaml(str(path))
    assert info.value.node == "f" and info.value.line == 6 and "identity" in info.value.fix


def test_compile_a_yaml_cell_and_train_one_step(tmp_path):
    path = tmp_path / "rnn.yaml"
    path.write_text(SMALL)
    torch.manual_seed(0)
    net = sggraph.compile(Cell.from_yaml(str(path)), grouping="child")
    net.set_lambda(0.5, node="h")
    out = net({"obs": torch.randn(4, 5, 3)})["act"]
    (out * torch.randn(4, 5, 3)).sum().backward()
    assert all(p.grad is not None for p in net.model_parameters())
    assert net.adapt_lambda(momentum=0.5)["h"].shape == (6,)


def test_the_python_builder_checks_what_the_yaml_loader_checks():
    cell = Cell("c")
    with pytest.raises(GraphError, match="dim must be positive"):
        cell.add_input("x", 0)
    cell.add_input("x", 2)
    with pytest.raises(GraphError, match="count must be positive"):
        cell.set_state("h", count=-1, dim=2, fan_in=1)
    with pytest.raises(GraphError, match="fan_in"):
        cell.set_state("h", count=4, dim=2)
    with pytest.raises(GraphError, match="scale_dim"):
        cell.set_state("h", count=4, dim=2, fan_in=2, scale_dim=0)
    with pytest.raises(GraphError, match="needs parents"):
        cell.add_node("y", 1, [])


def test_folded_drawing_marks_stochastic_nodes_and_state():
    from sggraph.draw import draw

    def marked(c: Cell) -> set[str]:
        lines = [ln.strip() for ln in draw(c).source.splitlines() if "stochastic (A.2)" in ln and " -> " not in ln]
        return {ln.split(" [", 1)[0] for ln in lines if not ln.startswith("__legend__")}

    cell = _variants()[0]  # stochastic state s and post node y
    assert marked(cell) == {"s", "y"}
    plain = Cell.from_dict({**cell.to_dict(), "state": {**cell.to_dict()["state"], "stochastic": False}})
    assert marked(plain) == {"y"}
