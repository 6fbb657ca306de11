"""Every bad YAML file gets one error naming the file, the line, the node and a fix.

Each case is checked twice: through ``Graph.from_yaml`` (exception class and fields) and
through ``sggraph check-conditions`` in-process (exit code 2, ``file:line`` on stderr, no
traceback).
"""

from __future__ import annotations

import pytest
from yaml_cases import Case, assert_cli_paragraph, assert_located, write_case

from sggraph import Graph, GraphError, SpecError
from sggraph.cli import main

CASES = [
    Case("yaml-syntax", """\
name: g
nodes:
  - {name: z, dim: 2}
  - {name: y, dim: 1, parents: [z}
""", SpecError, 4, None, ("YAML syntax",)),
    Case("yaml-bad-indent", """\
name: g
nodes:
  - name: z
    dim: 2
   - name: y
""", SpecError, 5, None, ("YAML syntax",)),
    Case("unknown-key-typo", """\
name: g
nodes:
  - {name: z, dim: 2}
  - {name: y, dimm: 1, parents: [z]}
""", SpecError, 4, "y", ("dimm", "did you mean 'dim'")),
    Case("unknown-key-block-style", """\
name: g
nodes:
  - name: z
    dim: 2
  - name: y
    dim: 1
    parnets: [z]
""", SpecError, 7, "y", ("parnets", "did you mean 'parents'")),
    Case("unknown-key-in-array-parents", """\
name: g
arrays:
  - {name: pixels, count: 4, dim: 1}
  - name: h
    count: 3
    dim: 2
    parents: {array: pixels,
              fanin: 2}
""", SpecError, 8, "h", ("fanin", "did you mean 'fan_in'", "table")),
    Case("unknown-top-level-key", """\
name: g
node:
  - {name: z, dim: 2}
""", SpecError, 2, None, ("did you mean 'nodes'",)),
    Case("missing-dim", """\
name: g
nodes:
  - {name: z, dim: 2}
  - {name: y, parents: [z]}
""", SpecError, 4, "y", ("dim",)),
    Case("missing-array-count", """\
name: g
arrays:
  - {name: pixels, dim: 1}
""", SpecError, 3, "pixels", ("count",)),
    Case("zero-dim", """\
name: g
nodes:
  - {name: z, dim: 2}
  - {name: y, dim: 0, parents: [z]}
""", GraphError, 4, "y", ("positive",)),
    Case("negative-dim", """\
name: g
nodes:
  - name: z
    dim: 2
  - name: y
    dim: -3
    parents: [z]
""", GraphError, 5, "y", ("positive",)),
    Case("string-dim", """\
name: g
nodes:
  - {name: z, dim: "8"}
""", SpecError, 3, "z", ("dim",)),
    Case("negative-array-count", """\
name: g
arrays:
  - {name: pixels, count: -1, dim: 1}
""", GraphError, 3, "pixels", ("count",)),
    Case("unknown-parent", """\
name: g
nodes:
  - {name: z, dim: 2}
  - {name: y, dim: 1, parents: [zz]}
""", GraphError, 4, "y", ("unknown parent 'zz'",)),
    Case("parents-not-a-list", """\
name: g
nodes:
  - {name: h1, dim: 2}
  - {name: y, dim: 1, parents: h1}
""", SpecError, 4, "y", ("parents",)),
    Case("duplicate-name", """\
name: g
nodes:
  - {name: z, dim: 2}
  - {name: y, dim: 1, parents: [z]}
  - {name: y, dim: 1, parents: [z]}
""", GraphError, 5, "y", ("duplicate",)),
    Case("duplicate-node-and-array", """\
name: g
nodes:
  - {name: z, dim: 2}
arrays:
  - {name: z, count: 2, dim: 1}
""", GraphError, 5, "z", ("duplicate",)),
    Case("wrong-layer", """\
name: g
nodes:
  - {name: z, dim: 2}
  - {name: h, dim: 2, parents: [z]}
  - {name: y, dim: 1, parents: [h, z]}
""", GraphError, 5, "y", ("layer", "relay")),
    Case("source-layer-gap", """\
name: g
nodes:
  - {name: z, dim: 2}
  - {name: y, dim: 1, parents: [z]}
  - {name: e, dim: 1, layer: 3}
""", GraphError, 5, "e", ("layer 2 is empty", "consecutive")),
    Case("input-array-layer-gap", """\
name: g
nodes:
  - {name: z, dim: 2}
arrays:
  - {name: late, count: 2, dim: 1, layer: 2}
""", GraphError, 5, "late", ("layer 1 is empty", "declared in layer 2")),
    Case("fan-in-too-large", """\
name: g
arrays:
  - {name: pixels, count: 4, dim: 1}
  - {name: h, count: 3, dim: 2, parents: {array: pixels, fan_in: 5}}
""", GraphError, 4, "h", ("fan_in=5",)),
    Case("unknown-parent-array", """\
name: g
arrays:
  - {name: pixels, count: 4, dim: 1}
  - {name: h, count: 3, dim: 2, parents: {array: pixel, fan_in: 2}}
""", GraphError, 4, "h", ("pixel",)),
    Case("table-out-of-range", """\
name: g
arrays:
  - {name: pixels, count: 2, dim: 1}
  - {name: h, count: 2, dim: 1, parents: {array: pixels, table: [[0], [2]]}}
""", GraphError, 4, "h", ("table",)),
    Case("feedback-on-non-terminal", """\
name: g
nodes:
  - {name: z, dim: 2}
  - {name: h, dim: 2, parents: [z]}
  - {name: y, dim: 1, parents: [h]}
feedback:
  y: stochastic
  h: contextual
""", GraphError, 8, "h", ("non-terminal", "terminal")),
    Case("feedback-on-source", """\
name: g
nodes:
  - {name: z, dim: 2}
  - {name: y, dim: 1, parents: [z]}
feedback:
  z: stochastic
""", GraphError, 6, "z", ("source",)),
    Case("feedback-unknown-kind", """\
name: g
nodes:
  - {name: z, dim: 2}
  - {name: y, dim: 1, parents: [z]}
feedback:
  y: noisy
""", GraphError, 6, "y", ("noisy", "contextual")),
    Case("feedback-unknown-node", """\
name: g
nodes:
  - {name: z, dim: 2}
  - {name: y, dim: 1, parents: [z]}
feedback:
  yy: stochastic
""", GraphError, 6, "yy", ("unknown node",)),
    Case("empty-node-list", """\
name: g
nodes: []
""", GraphError, 1, None, ("empty",)),
    Case("name-only", "name: g\n", GraphError, 1, None, ("empty",)),
    Case("empty-file", "", SpecError, 1, None, ("empty",)),
    Case("comments-only", "# nothing here\n", SpecError, 1, None, ("empty",)),
    Case("not-a-mapping", "- a\n- b\n", SpecError, 1, None, ("mapping",)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_from_yaml_error_is_located(case, tmp_path):
    path = write_case(tmp_path, case)
    with pytest.raises(case.exc) as info:
        Graph.from_yaml(str(path))
    err = info.value
    assert_located(err, case)
    assert err.file is not None and err.file.endswith(path.name)
    assert str(err).startswith(f"{path}:{case.line}: ")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_cli_reports_error_without_traceback(case, tmp_path, capsys):
    path = write_case(tmp_path, case)
    assert main(["check-conditions", str(path)]) == 2
    out, err = capsys.readouterr()
    assert_cli_paragraph(out, err, case)
    assert f"{path.name}:{case.line}:" in err


def test_cycle_names_a_node_on_the_cycle(tmp_path):
    path = tmp_path / "cycle.yaml"
    path.write_text("""\
name: g
nodes:
  - {name: z, dim: 2}
  - {name: a, dim: 1, parents: [z, b]}
  - {name: b, dim: 1, parents: [a]}
""")
    with pytest.raises(GraphError) as info:
        Graph.from_yaml(str(path))
    err = info.value
    assert err.node in ("a", "b")
    assert err.line == {"a": 4, "b": 5}[err.node]
    assert err.file.endswith("cycle.yaml") and "cycle" in err.message and err.fix
    assert "a -> b" in err.message or "b -> a" in err.message
    assert main(["check-conditions", str(path)]) == 2


def test_missing_file(tmp_path, capsys):
    path = tmp_path / "absent.yaml"
    with pytest.raises(SpecError) as info:
        Graph.from_yaml(str(path))
    assert info.value.file.endswith("absent.yaml") and info.value.fix
    assert main(["check-conditions", str(path)]) == 2
    err = capsys.readouterr().err
    assert "absent.yaml" in err and "Traceback" not in err


def test_from_dict_errors_without_a_file():
    with pytest.raises(SpecError) as info:
        Graph.from_dict({"nodes": [{"name": "z", "dim": 2, "stochastc": True}]})
    assert info.value.node == "z" and "stochastic" in info.value.fix and info.value.file is None
    with pytest.raises(SpecError):
        Graph.from_dict(["not", "a", "mapping"])
    with pytest.raises(GraphError) as info:
        Graph.from_dict({"nodes": [{"name": "y", "dim": 1, "parents": ["q"]}]})
    assert info.value.node == "y"
