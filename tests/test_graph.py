"""The torch-free Graph: layers, parents, children, arrays, round trips, relays."""

from __future__ import annotations

import random

import numpy as np
import pytest

from sggraph import Graph, GraphError, check_conditions
from sggraph.core.graph import NodeArray


def small() -> Graph:
    g = Graph("small")
    g.add_node("z2", 2)
    g.add_node("z1", 3)
    g.add_node("e", 1, layer=1)
    g.add_node("h", 4, ["z1", "z2"], fn="tanh")
    g.add_node("k", 4, ["z2"], stochastic=True)
    g.add_node("y", 1, ["k", "e", "h"], fn="linear")
    g.set_feedback("y", "stochastic")
    return g


# --------------------------------------------------------------------------- structure
def test_layers_parents_children():
    g = small()
    assert g.layers == [["z2", "z1"], ["e", "h", "k"], ["y"]]
    assert [g.layer_of(v) for v in ("z1", "z2", "e", "h", "k", "y")] == [0, 0, 1, 1, 1, 2]
    assert g.parents("y") == ("k", "e", "h")  # declared order, not sorted
    assert g.parents("h") == ("z1", "z2")
    assert g.parents("z1") == ()
    assert g.children("z2") == ("h", "k")
    assert g.children("y") == ()
    assert g.sources == ["z2", "z1", "e"]
    assert g.terminals == ["y"]
    assert g.block_layers() == {"z2": 0, "z1": 0, "e": 1, "h": 1, "k": 1, "y": 2}
    assert len(g) == 6 and "h" in g and "nope" not in g
    assert g.node("k").stochastic and g.node("h").fn == "tanh" and g.node("y").dim == 1
    assert g.feedback("y") == "stochastic" and g.feedback("h") == "deterministic"
    assert g.nx.number_of_edges() == 6


def test_parents_may_be_declared_after_children():
    g = Graph()
    g.add_node("y", 1, ["h"])
    g.add_node("h", 1, ["z"])
    g.add_node("z", 1)
    assert g.layers == [["z"], ["h"], ["y"]]


def test_mutation_invalidates_cached_structure():
    g = Graph()
    g.add_node("z", 1)
    g.add_node("y", 1, ["z"])
    assert g.layers == [["z"], ["y"]]
    g.add_node("w", 1, ["y"])
    assert g.layers == [["z"], ["y"], ["w"]]
    assert g.children("y") == ("w",)


def test_unknown_names_raise_graph_error():
    g = small()
    for call in (lambda: g.parents("nope"), lambda: g.children("nope"), lambda: g.node("nope")):
        with pytest.raises(GraphError) as info:
            call()
        assert info.value.node == "nope" and info.value.fix


@pytest.mark.parametrize("build, fragment", [
    (lambda g: g.add_node("z", 1), "duplicate"),
    (lambda g: g.add_node("q", 0), "positive"),
    (lambda g: g.add_node("q", -2), "positive"),
    (lambda g: g.add_node("q", 2.5), "integer"),
    (lambda g: g.add_node("q", True), "integer"),
    (lambda g: g.add_node("q", 1, ["z", "z"]), "twice"),
    (lambda g: g.add_node("q", 1, ["z"], fn="relu6"), "fn"),
    (lambda g: g.add_node("q", 1, ["z"], layer=2), "layer"),
    (lambda g: g.add_node("q[1]", 1), "bracket"),
    (lambda g: g.add_array("z", 2, 1), "duplicate"),
    (lambda g: g.add_array("a", 0, 1), "count"),
    (lambda g: g.add_array("a", 2, 1, fan_in=1), "parent"),
    (lambda g: g.set_feedback("z", "noisy"), "feedback kind"),
    (lambda g: g.set_feedback("nope", "stochastic"), "unknown node"),
])
def test_builder_errors(build, fragment):
    g = Graph()
    g.add_node("z", 1)
    with pytest.raises(GraphError) as info:
        build(g)
    assert fragment in str(info.value)
    assert info.value.fix


@pytest.mark.parametrize("build, fragment", [
    (lambda g: g.add_node("y", 1, ["nope"]), "unknown parent 'nope'"),
    (lambda g: (g.add_node("a", 1, ["b"]), g.add_node("b", 1, ["a"])), "cycle"),
    (lambda g: (g.add_node("h", 1, ["z"]), g.add_node("y", 1, ["h", "z"])), "different layers"),
    (lambda g: g.add_node("y", 1, ["x[9]"]), "out of range"),
    (lambda g: g.add_array("h", 3, 1, parents="x", fan_in=5), "fan_in=5"),
    (lambda g: g.add_array("h", 3, 1, parents="nope", fan_in=1), "parent array 'nope'"),
    (lambda g: g.add_array("h", 2, 1, parents="x", table=[[0], [4]]), "out of range"),
    (lambda g: g.add_array("h", 2, 2, parents="x", residual=True), "residual"),
    (lambda g: (g.add_node("y", 1, ["z"]), g.add_node("w", 1, ["y"]), g.set_feedback("y", "stochastic")),
     "non-terminal"),
    (lambda g: g.set_feedback("z", "stochastic"), "source"),
])
def test_lint_errors_name_the_node(build, fragment):
    g = Graph()
    g.add_node("z", 1)
    g.add_array("x", 4, 1)
    build(g)
    with pytest.raises(GraphError) as info:
        g.lint()
    assert fragment in str(info.value)
    assert info.value.node is not None and info.value.fix


def test_empty_graph_is_an_error():
    with pytest.raises(GraphError) as info:
        Graph("void").lint()
    assert "empty" in str(info.value) and info.value.fix


# --------------------------------------------------------------------------- arrays
def test_array_expansion():
    g = Graph()
    g.add_array("x", 6, 1)
    g.add_array("h", 4, 2, parents="x", fan_in=3, seed=7)
    assert g.layers == [[f"x[{i}]" for i in range(6)], [f"h[{i}]" for i in range(4)]]
    assert len(g) == 10
    table = g.array_table("h")
    assert table.shape == (4, 3) and table.dtype == np.int64
    assert table.min() >= 0 and table.max() < 6
    assert all(len(set(row)) == 3 for row in table.tolist())
    for i in range(4):
        assert g.parents(f"h[{i}]") == tuple(f"x[{j}]" for j in table[i])
        assert g.nx.nodes[f"h[{i}]"]["dim"] == 2
        assert g.nx.nodes[f"h[{i}]"]["array"] == "h" and g.nx.nodes[f"h[{i}]"]["index"] == i
    children = set()
    for i in range(6):
        children |= set(g.children(f"x[{i}]"))
    assert children == {f"h[{i}]" for i in range(4)}
    assert g.block_layers() == {"x": 0, "h": 1}
    assert g.sources == [f"x[{i}]" for i in range(6)] and g.terminals == [f"h[{i}]" for i in range(4)]


def test_same_seed_same_table_and_seeds_differ():
    def table(seed: int) -> np.ndarray:
        g = Graph()
        g.add_array("x", 20, 1)
        g.add_array("h", 15, 1, parents="x", fan_in=4, seed=seed)
        return g.array_table("h")

    np.testing.assert_array_equal(table(3), table(3))
    np.testing.assert_array_equal(table(3), NodeArray("h", 15, 1, "x", 4, 3).parent_table(20))
    assert any(not np.array_equal(table(0), table(s)) for s in range(1, 4))


def test_explicit_table_and_residual():
    g = Graph()
    g.add_array("x", 4, 2)
    g.add_array("h", 4, 2, parents="x", table=[[1, 2], [0, 1], [3, 0], [2, 3]], residual=True)
    # the residual parent (same index) is added unless the table already lists it
    assert g.parents("h[0]") == ("x[1]", "x[2]", "x[0]")
    assert g.parents("h[1]") == ("x[0]", "x[1]")
    assert g.parents("h[2]") == ("x[3]", "x[0]", "x[2]")
    assert g.parents("h[3]") == ("x[2]", "x[3]")
    g.add_array("r", 4, 2, parents="h", residual=True)  # residual only
    assert [g.parents(f"r[{i}]") for i in range(4)] == [(f"h[{i}]",) for i in range(4)]


def test_random_table_with_residual():
    g = Graph()
    g.add_array("x", 8, 1)
    g.add_array("h", 8, 1, parents="x", fan_in=2, seed=5, residual=True)
    table = g.array_table("h")
    for i in range(8):
        ps = g.parents(f"h[{i}]")
        assert ps[:2] == tuple(f"x[{j}]" for j in table[i])
        assert f"x[{i}]" in ps
        assert len(ps) == (2 if i in table[i] else 3)


def test_plain_nodes_may_read_single_neurons():
    g = Graph()
    g.add_array("x", 3, 1)
    g.add_node("y", 1, ["x[2]", "x[0]"])
    assert g.parents("y") == ("x[2]", "x[0]")
    assert g.layer_of("y") == 1


def test_feedback_on_an_array_applies_to_every_neuron():
    g = Graph()
    g.add_array("x", 3, 1)
    g.add_array("h", 2, 1, parents="x", fan_in=2)
    g.set_feedback("h", "contextual")
    assert [g.feedback(f"h[{i}]") for i in range(2)] == ["contextual", "contextual"]
    assert check_conditions(g).a1 == ("h[0]", "h[1]")


# --------------------------------------------------------------------------- round trips
def random_graph(seed: int) -> Graph:
    """A random valid graph with plain nodes, arrays (random, explicit, residual), feedback."""
    rng = random.Random(seed)
    g = Graph(f"rand{seed}")
    prev: list[str] = []
    terminals: set[str] = set()
    for layer in range(rng.randint(1, 5)):
        cur = []
        for i in range(rng.randint(1, 4)):
            name = f"n{layer}_{i}"
            fn = rng.choice([None, "linear", "tanh", "identity"])
            if not prev or rng.random() < 0.2:
                g.add_node(name, rng.randint(1, 5), layer=(layer if layer or rng.random() < 0.5 else None),
                           stochastic=rng.random() < 0.2, fn=fn)
            else:
                ps = rng.sample(prev, rng.randint(1, len(prev)))
                g.add_node(name, rng.randint(1, 5), ps, stochastic=rng.random() < 0.2, fn=fn)
                terminals -= set(ps)
                terminals.add(name)
            cur.append(name)
        prev = cur
    count = rng.randint(2, 6)
    g.add_array("a0", count, rng.randint(1, 3), slots=rng.randint(1, 6), layer=rng.choice([None, 0, 2]))
    prev_arr = "a0"
    for k in range(1, rng.randint(2, 4)):
        pc, pd = g.arrays[prev_arr].count, g.arrays[prev_arr].dim
        kind = rng.choice(["random", "table", "residual", "residual-only"])
        name = f"a{k}"
        if kind == "random":
            g.add_array(name, rng.randint(1, 6), 2, parents=prev_arr, fan_in=rng.randint(1, pc),
                        seed=rng.randint(0, 99), stochastic=rng.random() < 0.3)
        elif kind == "table":
            c = rng.randint(1, 6)
            f = rng.randint(1, pc)
            g.add_array(name, c, 1, parents=prev_arr, table=[rng.sample(range(pc), f) for _ in range(c)],
                        seed=rng.choice([0, 4]))
        elif kind == "residual":
            g.add_array(name, pc, pd, parents=prev_arr, fan_in=1, seed=rng.randint(0, 9), residual=True)
        else:
            g.add_array(name, pc, pd, parents=prev_arr, residual=True, seed=rng.choice([0, 11]))
        prev_arr = name
    if rng.random() < 0.7:
        g.set_feedback(prev_arr, rng.choice(["stochastic", "contextual", "deterministic"]))
    for t in sorted(terminals):
        if rng.random() < 0.5:
            g.set_feedback(t, rng.choice(["stochastic", "contextual", "deterministic"]))
    g.lint()
    return g


@pytest.mark.parametrize("seed", range(40))
def test_dict_round_trip(seed):
    g = random_graph(seed)
    d = g.to_dict()
    back = Graph.from_dict(d)
    assert back == g
    assert back.layers == g.layers
    assert back.to_dict() == d
    for a in g.arrays:
        if g.arrays[a].parent is not None:
            np.testing.assert_array_equal(back.array_table(a), g.array_table(a))


@pytest.mark.parametrize("seed", range(0, 40, 4))
def test_yaml_round_trip(seed, tmp_path):
    g = random_graph(seed)
    path = tmp_path / "g.yaml"
    path.write_text(g.to_yaml())
    back = Graph.from_yaml(str(path))
    assert back == g
    assert back.where(next(iter(g.nodes))) == (str(path), 3)  # nodes start on line 3
    assert check_conditions(back) == check_conditions(g)


def test_equality_sees_every_difference():
    g = random_graph(1)
    assert g == g.copy() and g != Graph("other")
    h = g.copy()
    h.add_node("extra", 1)
    assert h != g
    h = g.copy()
    h.set_feedback("a0", "contextual" if g.feedback("a0") != "contextual" else "stochastic")
    assert h != g
    one, two = Graph(), Graph()
    one.add_node("z", 1)
    two.add_node("z", 2)
    assert one != two
    # arrays differing only in the seed of their random table
    a = Graph()
    a.add_array("x", 5, 1)
    a.add_array("h", 3, 1, parents="x", fan_in=2, seed=1)
    b = Graph()
    b.add_array("x", 5, 1)
    b.add_array("h", 3, 1, parents="x", fan_in=2, seed=2)
    assert a != b
    assert Graph.from_dict(a.to_dict()) == a and Graph.from_dict(a.to_dict()) != b


def test_to_dict_format():
    g = small()
    d = g.to_dict()
    assert d["name"] == "small"
    assert d["nodes"][2] == {"name": "e", "dim": 1, "layer": 1}
    assert d["nodes"][4] == {"name": "k", "dim": 4, "parents": ["z2"], "stochastic": True}
    assert d["feedback"] == {"y": "stochastic"}
    assert "arrays" not in d


# --------------------------------------------------------------------------- relays
def test_insert_relays_fixes_a_skip_connection():
    g = Graph("skip")
    g.add_node("z", 3)
    g.add_node("a", 2, ["z"])
    g.add_node("b", 2, ["a"])
    g.add_node("c", 2, ["b"])
    g.add_node("y", 1, ["c", "z", "a"])
    with pytest.raises(GraphError) as info:
        g.lint()
    assert info.value.node == "y"
    fixed = g.insert_relays()
    fixed.lint()
    assert fixed.parents("y") == ("c", "z@3", "a@2")
    assert fixed.parents("z@3") == ("z@2",) and fixed.parents("z@1") == ("z",)
    assert fixed.node("z@2").fn == "identity" and fixed.node("z@2").dim == 3
    assert fixed.node("a@1").dim == 2
    assert fixed.layers == [["z"], ["a", "z@1"], ["b", "z@2", "a@1"], ["c", "z@3", "a@2"], ["y"]]
    # the original is untouched, a valid graph is returned as is
    assert g.node("y").parents == ("c", "z", "a")
    ok = fixed.insert_relays()
    assert ok == fixed
    check_conditions(fixed)  # analysis runs on the relayed graph


def test_insert_relays_keeps_feedback_and_relays_shared():
    g = Graph()
    g.add_node("z", 1)
    g.add_node("h", 1, ["z"])
    g.add_node("y1", 1, ["h", "z"])
    g.add_node("y2", 1, ["z", "h"])
    g.set_feedback("y1", "contextual")
    fixed = g.insert_relays()
    assert fixed.parents("y1") == ("h", "z@1") and fixed.parents("y2") == ("z@1", "h")
    assert fixed.feedback("y1") == "contextual"
    assert len(fixed) == 5


def test_insert_relays_bridges_skips_from_array_neurons_and_whole_arrays():
    g = Graph("array-skip")
    g.add_array("x", 6, 1)
    g.add_array("h1", 4, 2, parents="x", fan_in=3)
    g.add_array("h2", 4, 2, parents="h1", fan_in=2, seed=1)
    g.add_array("h3", 4, 2, parents="h2", fan_in=2, seed=2)
    g.add_node("y", 3, ["h3", "h1[2]", "x"], fn="linear")  # h3 is layer 3: h1[2] skips 2 layers, x 3
    g.add_node("k", 1, ["h1[2]", "h1[0]"], fn="linear")   # adjacent: untouched
    g.set_feedback("y", "contextual")
    with pytest.raises(GraphError) as info:
        g.lint()
    assert info.value.node == "y"
    fixed = g.insert_relays()
    fixed.lint()
    ys = fixed.parents("y")
    assert ys[:4] == ("h3[0]", "h3[1]", "h3[2]", "h3[3]") and ys[4:] == ("h1_2@2", "x@3")
    assert fixed.parents("h1_2@2") == ("h1_2@1",) and fixed.parents("h1_2@1") == ("h1[2]",)
    assert fixed.node("h1_2@1").fn == "identity" and fixed.node("h1_2@1").dim == 2
    # a whole array read flattened: its relay carries count * dim
    assert fixed.node("x@1").parents == ("x",) and fixed.node("x@1").dim == 6
    assert fixed.parents("x@1") == tuple(f"x[{i}]" for i in range(6))
    assert fixed.node("k").parents == ("h1[2]", "h1[0]")
    assert fixed.feedback("y") == "contextual" and fixed.arrays == g.arrays
    assert fixed.layer_of("y") == 4 and fixed.layer_of("h1_2@2") == 3 and fixed.layer_of("x@3") == 3
    check_conditions(fixed)
    # compiled, the relays are identities: y reads h1[2] and x unchanged
    import torch

    import sggraph

    torch.manual_seed(0)
    net = sggraph.compile(fixed)
    x = torch.randn(5, 6)
    acts = net.activations({"x": x}, ["h1", "h1_2@2", "x@3"])
    assert torch.equal(acts["h1_2@2"], acts["h1"][:, 2]) and torch.equal(acts["x@3"], x)


def test_insert_relays_refuses_a_taken_relay_name():
    g = Graph()
    g.add_node("z", 1)
    g.add_node("z@1", 1)
    g.add_node("h", 1, ["z@1"])
    g.add_node("y", 1, ["h", "z"])
    with pytest.raises(GraphError) as info:
        g.insert_relays()
    assert info.value.node == "z@1" and "rename" in info.value.fix
