"""sggraph.draw: drawings checked by parsing their DOT source, rendering with the real ``dot``."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import time
from pathlib import Path

import pytest
import torch

import sggraph
from sggraph import (
    Cell,
    ConfigError,
    Graph,
    GraphError,
    LambdaError,
    check_conditions,
    extended_ancestors,
    siblings,
)
from sggraph.cli.draw import add_parser
from sggraph.draw import HIGHLIGHT_COLORS, draw, lambda_color, render, style
from sggraph.draw import emit as draw_emit

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
HAVE_DOT = shutil.which("dot") is not None
# .ci/run installs graphviz and sets SGGRAPH_REQUIRE_DOT=1: there a missing `dot` fails these tests, never skips them
needs_dot = pytest.mark.skipif(not HAVE_DOT and not os.environ.get("SGGRAPH_REQUIRE_DOT"),
                               reason="graphviz `dot` is not installed")

# ------------------------------------------------------------------ DOT parsing
_ID = r'(?:"(?:[^"\\]|\\.)*"|[A-Za-z_][A-Za-z0-9_]*|-?(?:\.\d+|\d+(?:\.\d*)?))'
_EDGE = re.compile(rf"^({_ID}) -> ({_ID})(?: \[(.*)\])?$")
_NODE = re.compile(rf"^({_ID})(?: \[(.*)\])?$")
_SUB = re.compile(rf"^subgraph ({_ID}) \{{$")
_ATTR = re.compile(r'([A-Za-z_]+)=("(?:[^"\\]|\\.)*"|[^\s"\]]+)')


def _unq(token: str) -> str:
    if token.startswith('"'):
        return re.sub(r'\\(["\\])', r"\1", token[1:-1])
    return token


def _attrs(text: str | None) -> dict[str, str]:
    return {k: _unq(v) for k, v in _ATTR.findall(text or "")}


class Dot:
    """Nodes, edges and rank groups of a drawing (legend left out)."""

    def __init__(self, dg) -> None:
        self.source = dg.source
        self.nodes: dict[str, dict[str, str]] = {}
        self.edges: list[tuple[str, str, dict[str, str]]] = []
        self.ranks: dict[str, list[str]] = {}
        self.subgraphs: list[str] = []
        stack: list[str] = []
        for raw in self.source.splitlines():
            line = raw.strip()
            m = _SUB.match(line)
            if m:
                stack.append(_unq(m[1]))
                self.subgraphs.append(_unq(m[1]))
                continue
            if line == "}":
                if stack:
                    stack.pop()
                continue
            m = _EDGE.match(line)
            if m:
                a, b = _unq(m[1]), _unq(m[2])
                if not (a.startswith("__legend__") or b.startswith("__legend__")):
                    self.edges.append((a, b, _attrs(m[3])))
                continue
            m = _NODE.match(line)
            if m and m[1] not in ("graph", "node", "edge"):
                name = _unq(m[1])
                if name.startswith("__legend__"):
                    continue
                self.nodes[name] = _attrs(m[2])
                if stack and stack[-1].startswith("layer_"):
                    self.ranks.setdefault(stack[-1], []).append(name)

    def edge_set(self) -> set[tuple[str, str]]:
        return {(a, b) for a, b, _ in self.edges}

    def edge(self, a: str, b: str) -> dict[str, str]:
        found = [attrs for x, y, attrs in self.edges if (x, y) == (a, b)]
        assert len(found) == 1, (a, b, self.edge_set())
        return found[0]

    def label(self, name: str) -> str:
        return self.nodes[name].get("label", "").replace("\\n", "\n")

    def with_fill(self, color: str) -> set[str]:
        return {n for n, a in self.nodes.items() if a.get("fillcolor") == color}


# ---------------------------------------------------------------------- graphs
def small_graph() -> Graph:
    """Three layers, sparse in the middle, one stochastic node, two kinds of terminal feedback."""
    g = Graph("small")
    g.add_node("x1", 2)
    g.add_node("x2", 2)
    g.add_node("a", 3, ["x1"], fn="tanh")
    g.add_node("b", 3, ["x1", "x2"], fn="tanh", stochastic=True)
    g.add_node("c", 3, ["x2"], fn="tanh")
    g.add_node("y1", 1, ["a", "b"], fn="linear")
    g.add_node("y2", 1, ["c"], fn="linear")
    g.set_feedback("y1", "stochastic")
    g.set_feedback("y2", "contextual")
    return g


def small_cell() -> Cell:
    cell = Cell("rnn")
    cell.add_input("obs", 3)
    cell.add_node("emb", 4, ["obs"], fn="tanh")
    cell.set_state("h", count=5, dim=2, fan_in=2, slots=2, input="emb", input_neurons=2)
    cell.add_node("act", 3, ["h"], fn="linear")
    cell.set_feedback("act", "contextual")
    return cell


# ----------------------------------------------------------------- structure
def test_nodes_and_edges_of_a_small_graph():
    g = small_graph()
    d = Dot(draw(g))
    assert set(d.nodes) == set(g.nx.nodes)
    assert d.edge_set() == set(g.nx.edges)
    assert len(d.edges) == g.nx.number_of_edges()
    assert "rankdir=LR" in d.source
    assert "cluster_legend" in d.subgraphs


def test_layers_are_rank_same_groups():
    g = small_graph()
    dg = draw(g)
    d = Dot(dg)
    assert d.ranks == {f"layer_{i}": layer for i, layer in enumerate(g.layers)}
    for i in range(len(g.layers)):
        block = dg.source.split(f"subgraph layer_{i} {{", 1)[1].split("}", 1)[0]
        assert "rank=same" in block


def test_roles_and_condition_marks():
    g = small_graph()
    report = check_conditions(g)
    d = Dot(draw(g))
    assert {n for n, a in d.nodes.items() if a["shape"] == "cds"} == set(g.sources)
    assert {n for n, a in d.nodes.items() if a["shape"] == "octagon"} == set(g.terminals)
    assert {n for n, a in d.nodes.items() if a["shape"] == "ellipse"} == {"a", "b", "c"}
    assert {n for n, a in d.nodes.items() if a.get("peripheries") == "2"} == set(report.a2) == {"b"}
    assert {n for n, a in d.nodes.items() if "diagonals" in a.get("style", "")} == set(report.a3)
    assert {n for n, a in d.nodes.items() if a.get("color") == style.A1_COLOR} == set(report.a1) == {"y1", "y2"}
    assert "feedback: contextual (A.1)" in d.label("y2")
    assert "stochastic (A.2)" in d.label("b")
    legend = d.source.split("subgraph cluster_legend", 1)[1]
    for text in ("A.1", "A.2", "A.3", "source", "terminal", "node array"):
        assert text in legend


@pytest.mark.parametrize("name", ["x1", "a", "b", "y1", "y2"])
def test_node_highlights_exactly_its_siblings_and_extended_ancestors(name):
    g = small_graph()
    d = Dot(draw(g, node=name))
    sib, an = siblings(g, name), extended_ancestors(g, name)
    assert d.with_fill(HIGHLIGHT_COLORS["node"]) == {name}
    assert d.with_fill(HIGHLIGHT_COLORS["siblings"]) == set(sib) - {name}
    assert d.with_fill(HIGHLIGHT_COLORS["ancestors"]) == set(an) - set(sib)
    assert len(set(HIGHLIGHT_COLORS.values())) == 3
    assert f"siblings of {name}" in d.source  # legend updated


def test_node_highlight_in_expanded_arrays():
    g = Graph.from_yaml(str(EXAMPLES / "sparse-ff.yaml"))
    node = "h2[5]"  # beyond the first 2: drawn anyway
    d = Dot(draw(g, node=node, expand_arrays=2))
    drawn = {n for n in d.nodes if n in g.nx}
    sib, an = siblings(g, node), extended_ancestors(g, node)
    assert node in drawn
    kind = {n: a.get("fillcolor") for n, a in d.nodes.items() if n in drawn}
    assert {n for n in drawn if kind[n] == HIGHLIGHT_COLORS["node"]} == {node}
    assert {n for n in drawn if kind[n] == HIGHLIGHT_COLORS["siblings"]} == (set(sib) - {node}) & drawn
    assert {n for n in drawn if kind[n] == HIGHLIGHT_COLORS["ancestors"]} == (set(an) - set(sib)) & drawn
    # folded: the boxes say what they hold
    d = Dot(draw(g, node=node))
    assert d.nodes["h2"]["fillcolor"] == HIGHLIGHT_COLORS["node"]
    assert f"holds {node}" in d.label("h2")
    assert d.nodes["h1"]["fillcolor"] == HIGHLIGHT_COLORS["ancestors"]


def test_bad_node_and_options_raise():
    g = Graph.from_yaml(str(EXAMPLES / "sparse-ff.yaml"))
    with pytest.raises(GraphError, match="no node named 'nope'"):
        draw(g, node="nope")
    with pytest.raises(GraphError, match=r"h1\[0\]"):
        draw(g, node="h1")
    with pytest.raises(ConfigError, match="unroll applies to recurrent cells"):
        draw(g, unroll=3)
    with pytest.raises(ConfigError, match="expand_arrays"):
        draw(g, expand_arrays=-1)
    with pytest.raises(ConfigError, match="cannot draw"):
        draw(42)
    with pytest.raises(ConfigError, match="compiled graph"):
        draw(g, propagation=True)
    with pytest.raises(ConfigError, match="unroll=T"):
        draw(small_cell(), node="h")


# -------------------------------------------------------------------- arrays
def test_array_is_one_box_with_count_and_fan_in():
    g = Graph.from_yaml(str(EXAMPLES / "sparse-ff.yaml"))
    d = Dot(draw(g))
    assert set(d.nodes) == {"pixels", "h1", "h2"}
    assert d.nodes["h1"]["shape"] == "box3d"
    assert "count 8 × dim 4" in d.label("h1") and "fan_in 3" in d.label("h1")
    assert "count 16 × dim 1" in d.label("pixels")
    assert "residual" in d.label("h2")
    assert d.edge_set() == {("pixels", "h1"), ("h1", "h2")}
    assert d.edge("pixels", "h1")["label"] == "fan_in 3"
    assert d.edge("h1", "h2")["label"] == "fan_in 3 + residual"
    assert "sparse (A.3)" in d.label("h1")
    assert "feedback: contextual (A.1)" in d.label("h2")


def test_expanded_arrays_draw_n_neurons_and_a_placeholder():
    g = Graph.from_yaml(str(EXAMPLES / "sparse-ff.yaml"))
    n = 2
    d = Dot(draw(g, expand_arrays=n))
    for name, arr in g.arrays.items():
        for i in range(arr.count):
            assert (f"{name}[{i}]" in d.nodes) == (i < n)
        more = f"{name}[…]"
        assert d.nodes[more]["shape"] == "note"
        assert d.label(more).startswith(f"… ({arr.count - n} more)")
    drawn = {v for v in d.nodes if v in g.nx}
    real = {(p, v) for v in drawn for p in g.parents(v) if p in drawn}
    assert {(a, b) for a, b in d.edge_set() if a in drawn and b in drawn} == real
    assert d.ranks["layer_1"][:n] == ["h1[0]", "h1[1]"]


def test_a_neuron_named_twice_among_the_parents_is_one_edge():
    g = Graph("twice")
    g.add_array("x", 4, 1)
    g.add_array("h", 2, 3, parents="x", fan_in=2)
    g.add_node("y", 1, ["h", "h[1]"], fn="linear")  # h[1] is read through the array and by name
    assert g.parents("y") == ("h[0]", "h[1]", "h[1]")
    d = Dot(draw(g))
    assert d.edge("h", "y")["label"] == "all 2 neurons"
    assert d.edge("h", "y")["tooltip"].startswith("h → y (2 edges)")


# ------------------------------------------------------------------------ λ
def test_lambda_colours_from_a_compiled_graph():
    g = small_graph()
    net = sggraph.compile(g, grouping="child")
    net.set_lambda(1.0)
    net.set_lambda(0.0, node="y2")
    net.set_lambda(0.25, node="a")
    d = Dot(draw(net))
    one, zero = d.edge("a", "y1"), d.edge("c", "y2")
    assert one["color"] == lambda_color(1.0) == LAMBDA_HI
    assert zero["color"] == lambda_color(0.0) == LAMBDA_LO
    assert one["color"] != zero["color"]
    assert d.edge("x1", "a")["color"] == lambda_color(0.25)
    assert "λ=0.00" in zero["label"] and "λ = 0.0000" in zero["tooltip"]
    assert "edge colour: λ" in d.source  # the scale is in the legend


LAMBDA_LO, LAMBDA_HI = style.LAMBDA_COLORS


def test_lambda_scale_is_monotone_between_its_ends():
    reds = [int(lambda_color(x)[1:3], 16) for x in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert reds == sorted(reds, reverse=True)
    assert lambda_color(-1) == lambda_color(0) and lambda_color(2) == lambda_color(1)


def test_lambda_mapping_for_a_graph_and_its_errors():
    g = small_graph()
    d = Dot(draw(g, lambdas={("x1", "a"): 0.0, ("b", "y1"): 1.0}))
    assert d.edge("x1", "a")["color"] == lambda_color(0.0)
    assert d.edge("b", "y1")["color"] == lambda_color(1.0)
    assert "label" not in d.edge("x2", "c")  # not given: uncoloured
    with pytest.raises(LambdaError, match="outside"):
        draw(g, lambdas={("x1", "a"): 1.5})
    with pytest.raises(LambdaError, match="not in the graph"):
        draw(g, lambdas={("x1", "y1"): 0.5})


def test_array_edges_use_the_mean_lambda_over_the_table():
    g = Graph.from_yaml(str(EXAMPLES / "sparse-ff.yaml"))
    net = sggraph.compile(g, grouping="edge")
    table = torch.linspace(0, 1, 8 * 4).view(8, 4)  # fan_in 3 + residual column
    net.set_lambda(table, ("h1", "h2"))
    d = Dot(draw(net))
    mean = float(net.blocks["h2"].lam.mean())
    assert d.edge("h1", "h2")["color"] == lambda_color(mean)
    assert f"mean λ={mean:.2f}" in d.edge("h1", "h2")["label"]
    # expanded: a neuron edge carries its own entries of the table (table columns + residual column)
    d = Dot(draw(net, expand_arrays=8))
    lam, tbl = net.blocks["h2"].lam.double(), net.blocks["h2"].table
    for i in range(8):
        for j in set(tbl[i].tolist()) | {i}:
            cols = [c for c in range(3) if int(tbl[i, c]) == j] + ([3] if j == i else [])
            assert d.edge(f"h1[{j}]", f"h2[{i}]")["color"] == lambda_color(float(lam[i, cols].mean()))


# ------------------------------------------------------------------ propagation
def test_propagation_widths_colours_and_dashed_nodes():
    g = small_graph()
    torch.manual_seed(0)
    net = sggraph.compile(g, grouping="child")
    net.set_lambda(0.5, node="a")
    with pytest.raises(ConfigError, match="no node has received feedback"):
        draw(net, propagation=True)
    out = net({"x1": torch.randn(16, 2), "x2": torch.randn(16, 2)})
    (out["y1"] * torch.randn(16, 1)).sum().backward()  # y2 gets no feedback
    d = Dot(draw(net, propagation=True))
    assert "dashed" in d.nodes["y2"]["style"] and "dashed" in d.nodes["c"]["style"]
    assert "dashed" not in d.nodes["a"]["style"]
    assert "dashed" in d.edge("c", "y2")["style"]
    widths = {(a, b): float(attrs["penwidth"]) for a, b, attrs in d.edges if "dashed" not in attrs.get("style", "")}
    assert max(widths.values()) == pytest.approx(6.0)
    mags = {v: float(net.received(v).abs().mean()) for v in ("a", "b", "y1")}
    assert (widths[("x1", "a")] > widths[("x1", "b")]) == (mags["a"] > mags["b"])
    assert d.edge("x1", "a")["color"] == lambda_color(0.5)
    assert "synthetic 50%" in d.edge("x1", "a")["label"]
    assert d.edge("a", "y1")["color"] == lambda_color(1.0)


# -------------------------------------------------------------------- cells
def test_cell_drawn_folded():
    cell = small_cell()
    d = Dot(draw(cell))
    assert set(d.nodes) == {"obs", "emb", "h", "act"}
    assert d.nodes["h"]["shape"] == "box3d"
    assert "count 5 × dim 2" in d.label("h")
    assert d.edge("h", "h")["label"] == "t−1 → t, fan_in 2"
    assert d.edge_set() == {("obs", "emb"), ("emb", "h"), ("h", "h"), ("h", "act")}
    order = [next(n for n, ids in d.ranks.items() if v in ids) for v in ("obs", "emb", "h", "act")]
    assert [int(r.split("_")[1]) for r in order] == [0, 1, 2, 3]
    assert d.nodes["obs"]["shape"] == "cds" and d.nodes["act"]["shape"] == "octagon"
    assert "sparse (A.3)" in d.label("h")


def test_cell_drawn_unrolled():
    cell = small_cell()
    g = sggraph.unroll(cell, 3)
    d = Dot(draw(cell, unroll=3))
    assert {f"h@{t}:{i}" for t in range(4) for i in range(5)} <= set(d.nodes)
    assert set(d.nodes) == set(g.nx.nodes)
    assert d.edge_set() == set(g.nx.edges)
    assert d.ranks == {f"layer_{i}": layer for i, layer in enumerate(g.layers)}
    d = Dot(draw(cell, unroll=3, expand_arrays=2, node="h@2:4"))
    assert {"h@1:0", "h@1:1", "h@2:4"} <= set(d.nodes) and "h@1:2" not in d.nodes
    assert d.label("h@2:…").startswith("… (2 more)")
    assert d.with_fill(HIGHLIGHT_COLORS["node"]) == {"h@2:4"}
    d = Dot(draw(cell, unroll=2, expand_arrays=0))
    assert {"h@0", "h@1", "h@2"} <= set(d.nodes)
    assert d.edge("h@1", "h@2")["label"] == "t−1 → t, fan_in 2"


def test_compiled_cell_lambda_follows_the_temporal_schedule():
    cell = small_cell()
    cnet = sggraph.compile(cell, grouping="child")
    cnet.set_lambda(0.3, node="h")
    theta = cnet.schedule(3)
    d = Dot(draw(cnet, unroll=3))
    parent = f"h@2:{int(cnet.state.table[0, 0])}"
    assert d.edge(parent, "h@3:0")["color"] == lambda_color(float(theta[2, 0]))
    assert d.edge("emb@1", "h@1:0")["color"] == lambda_color(float(theta[0, 0]))
    d = Dot(draw(cnet))
    assert d.edge("h", "h")["color"] == lambda_color(float(cnet.state.lam[:, :2].double().mean()))
    out = cnet({"obs": torch.randn(3, 2, 3)})
    out["act"].sum().backward()
    d = Dot(draw(cnet, unroll=3, propagation=True))
    assert all("penwidth" in attrs for _, _, attrs in d.edges)
    d = Dot(draw(cnet, propagation=True))
    assert float(d.edge("h", "act")["penwidth"]) > 0 and "synthetic" in d.edge("h", "h")["label"]


def test_propagation_into_a_step_box_is_the_box_mean():
    """With one box per step, an edge into the state's box carries the mean |g̃| of the whole box
    (all its neurons), not of the neurons the edge reaches."""
    from sggraph.draw.sources import CellMagnitudes

    torch.manual_seed(0)
    cnet = sggraph.compile(small_cell(), grouping="child")
    cnet.set_lambda(0.5, node="h")
    cnet({"obs": torch.randn(3, 2, 3)})["act"].sum().backward()
    d = Dot(draw(cnet, unroll=3, expand_arrays=0, propagation=True))
    mags = CellMagnitudes(cnet)
    box, reached = mags.of("h@1"), sum(mags.of(f"h@1:{i}") for i in range(2)) / 2  # emb feeds neurons 0 and 1
    assert abs(box - reached) > 0.01
    assert f"mean |g̃| of the child = {box:.3g} " in d.edge("emb@1", "h@1")["tooltip"]


# ------------------------------------------------------------------- render
@needs_dot
def test_render_svg_png_and_pdf_with_dot(tmp_path):
    dg = draw(small_graph(), node="b")
    svg = render(dg, tmp_path / "g.svg")
    assert svg == tmp_path / "g.svg"
    head = svg.read_text()[:200].lstrip()
    assert head.startswith(("<?xml", "<svg"))
    png = render(dg, tmp_path / "sub" / "g.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert render(dg, tmp_path / "g.pdf").read_bytes()[:4] == b"%PDF"
    dot = render(dg, tmp_path / "g.dot")
    assert dot.read_text() == dg.source
    assert not list(tmp_path.glob(".*.tmp"))


def test_render_without_dot_writes_the_dot_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(draw_emit.shutil, "which", lambda name: None)
    dg = draw(small_graph())
    out = render(dg, tmp_path / "g.svg")
    assert out == tmp_path / "g.dot"
    assert out.read_text() == dg.source
    assert not (tmp_path / "g.svg").exists()
    err = capsys.readouterr().err
    assert f"dot -Tsvg {tmp_path / 'g.dot'} -o {tmp_path / 'g.svg'}" in err


def test_render_unknown_suffix_says_how_to_fix(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown suffix '\.jpeg'.*Fix: name the output file \.svg"):
        render(draw(small_graph()), tmp_path / "g.jpeg")


@needs_dot
def test_thousand_neuron_sparsenet_draws_and_renders_quickly(tmp_path):
    from sggraph.models.sparsenet import sparsenet_graph

    start = time.perf_counter()
    g = sparsenet_graph()  # 784 pixels, 5 x 200 neurons
    dg = draw(g)
    out = render(dg, tmp_path / "sparsenet.svg")
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0, elapsed
    assert out.read_text().lstrip().startswith(("<?xml", "<svg"))
    d = Dot(dg)
    assert set(d.nodes) == {"pixels", "h1", "h2", "h3", "h4", "h5", "logits"}
    assert d.edge("h5", "logits")["label"] == "all 200 neurons"


# ---------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sggraph")
    sub = p.add_subparsers()
    add_parser(sub)
    return p


def _run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    return args.run(args)


def test_cli_draw_writes_the_file(tmp_path, capsys):
    out = tmp_path / "expert.dot"
    assert _run(["draw", str(EXAMPLES / "expert-net.yaml"), "-o", str(out), "--node", "e1"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    d = Dot(type("D", (), {"source": out.read_text()})())
    assert d.with_fill(HIGHLIGHT_COLORS["node"]) == {"e1"}


@needs_dot
def test_cli_draw_svg_of_arrays(tmp_path):
    out = tmp_path / "sparse.svg"
    assert _run(["draw", str(EXAMPLES / "sparse-ff.yaml"), "-o", str(out), "--expand-arrays", "2"]) == 0
    assert "h1[…]" in out.read_text()


def test_cli_rejects_bad_input(tmp_path):
    yaml = str(EXAMPLES / "expert-net.yaml")
    with pytest.raises(ConfigError, match="unknown suffix"):
        _run(["draw", yaml, "-o", str(tmp_path / "x.gif")])
    assert not (tmp_path / "x.gif").exists()
    with pytest.raises(ConfigError, match="layered graph"):  # --unroll is for recurrent cell files
        _run(["draw", yaml, "-o", str(tmp_path / "x.svg"), "--unroll", "3"])
    assert not (tmp_path / "x.svg").exists()
    with pytest.raises(GraphError):
        _run(["draw", yaml, "-o", str(tmp_path / "x.dot"), "--node", "nope"])
    with pytest.raises(ConfigError, match="no checkpoint.pt"):
        _run(["draw", yaml, "-o", str(tmp_path / "x.dot"), "--lambda-from", str(tmp_path)])
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    with pytest.raises(ConfigError, match="cannot read the checkpoint"):
        _run(["draw", yaml, "-o", str(tmp_path / "x.dot"), "--lambda-from", str(bad)])
    torch.save({"model": {"layer.weight": torch.zeros(2)}}, tmp_path / "mlp.pt")
    with pytest.raises(ConfigError, match="no λ buffers"):
        _run(["draw", yaml, "-o", str(tmp_path / "x.dot"), "--lambda-from", str(tmp_path / "mlp.pt")])


def test_cli_lambda_from_a_run_directory(tmp_path, capsys):
    yaml = str(EXAMPLES / "regression-dag.yaml")
    net = sggraph.compile(Graph.from_yaml(yaml), grouping="child")
    net.set_lambda(0.0, node="h1")
    net.set_lambda(0.6, node="y")
    run = tmp_path / "run"
    run.mkdir()
    # the layout `sggraph train` writes: the model state dict under "model", next to optimizer state
    torch.save({"step": 3, "model": net.state_dict(), "rows": [{"step": 3, "reward": 0.5}],
                "torch_rng": torch.get_rng_state()}, run / "checkpoint.pt")
    out = tmp_path / "reg.dot"
    assert _run(["draw", yaml, "-o", str(out), "--lambda-from", str(run)]) == 0
    d = Dot(type("D", (), {"source": out.read_text()})())
    assert d.edge("x1", "h1")["color"] == lambda_color(0.0)
    assert d.edge("h2", "y")["color"] == lambda_color(0.6)
    assert d.edge("x2", "h2")["color"] == lambda_color(1.0)
    # a checkpoint of another graph is refused
    other = sggraph.compile(Graph.from_yaml(str(EXAMPLES / "expert-net.yaml")), grouping="child")
    torch.save({"model": other.state_dict()}, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="lacks"):
        _run(["draw", yaml, "-o", str(out), "--lambda-from", str(tmp_path / "other.pt")])


def test_cli_lambda_for_a_yaml_without_functions(tmp_path):
    yaml = tmp_path / "nofn.yaml"
    yaml.write_text("name: nofn\nnodes:\n  - {name: z, dim: 2}\n  - {name: y, dim: 1, parents: [z]}\n")
    g = Graph.from_yaml(str(yaml))
    net = sggraph.compile(g, {"y": torch.nn.Linear(2, 1)}, grouping="child")
    net.set_lambda(0.2)
    torch.save({"model": net.state_dict()}, tmp_path / "ck.pt")
    out = tmp_path / "nofn.dot"
    assert _run(["draw", str(yaml), "-o", str(out), "--lambda-from", str(tmp_path / "ck.pt")]) == 0
    assert lambda_color(0.2) in out.read_text()


def test_render_into_an_unwritable_place_is_a_config_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="cannot write the drawing"):
        render(draw(small_graph()), blocker / "g.dot")


def test_the_readme_command_draws_a_box_per_step(tmp_path, monkeypatch):
    """``sggraph draw examples/popgym-sparsenet-cell.yaml --unroll 3 -o cell.svg`` (the README's): the 128-neuron
    state is one box per step, h@0 … h@3, joined by one edge a step — not 128 neurons a step and 2,700 edges."""
    from sggraph.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["draw", str(EXAMPLES / "popgym-sparsenet-cell.yaml"), "--unroll", "3", "-o",
                 "cell.dot"]) == 0
    source = (tmp_path / "cell.dot").read_text()
    for t in range(4):
        assert f'"h@{t}"' in source or f"h@{t} " in source or f"\th@{t}" in source
    assert "h@1:0" not in source  # no single neuron drawn
    edges = [line for line in source.splitlines() if "->" in line and "__legend" not in line]
    assert len(edges) <= 20, len(edges)
    assert main(["draw", str(EXAMPLES / "popgym-sparsenet-cell.yaml"), "--unroll", "2",
                 "--expand-arrays", "3", "-o", "three.dot"]) == 0
    assert "h@1:2" in (tmp_path / "three.dot").read_text()  # asked for: the first 3 neurons a step
