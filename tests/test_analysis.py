"""Analysis: siblings (eq. 11), extended ancestors (Definition 4, eq. 12), conditions, Theorem 3.

The brute-force reference below is written straight from the paper's definitions over a
plain ``{name: [parents]}`` mapping built by the test itself; it uses nothing of sggraph.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from sggraph import (
    Graph,
    GraphError,
    check_conditions,
    extended_ancestors,
    siblings,
    theorem3_condition,
    theorem3_constants,
)
from sggraph.core.analysis import dominates_descendants

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


# --------------------------------------------------------------------------- brute force
def bf_layers(pa: dict[str, list[str]], declared: dict[str, int]) -> dict[str, int]:
    """Layer of every node: declared (or 0) for sources, 1 + parents' layer otherwise."""
    out: dict[str, int] = {}

    def layer(v: str) -> int:
        if v not in out:
            out[v] = declared.get(v, 0) if not pa[v] else 1 + max(layer(p) for p in pa[v])
        return out[v]

    for v in pa:
        layer(v)
    return out


def bf_sib(pa: dict[str, list[str]], lay: dict[str, int], v: str) -> set[str]:
    """Eq. 11: {v' in V_l : pa(v') ∩ pa(v) ≠ ∅}, with v itself included."""
    return {w for w in pa if lay[w] == lay[v] and set(pa[w]) & set(pa[v])} | {v}


def bf_an_sib(pa: dict[str, list[str]], lay: dict[str, int], v: str, memo: dict | None = None) -> set[str]:
    """Eq. 12: an_sib(v) = (∪_{v⁻ ∈ pa(sib(v))} an_sib(v⁻)) ∪ sib(v); empty for sources."""
    memo = {} if memo is None else memo
    if v in memo:
        return memo[v]
    if not pa[v]:
        result: set[str] = set()
    else:
        sib = bf_sib(pa, lay, v)
        result = set(sib)
        for s in sib:
            for p in pa[s]:
                result |= bf_an_sib(pa, lay, p, memo)
    memo[v] = result
    return result


def random_layered(rng: random.Random, n_layers: int, max_width: int, max_fan_in: int, p_source: float):
    """A random layered DAG as ``(pa, declared_layers)``; some sources sit in later layers."""
    pa: dict[str, list[str]] = {}
    declared: dict[str, int] = {}
    prev: list[str] = []
    for layer in range(n_layers):
        cur = []
        for i in range(rng.randint(1, max_width)):
            name = f"v{layer}_{i}"
            if layer == 0 or rng.random() < p_source:
                pa[name] = []
                if layer:
                    declared[name] = layer
            else:
                k = rng.randint(1, min(max_fan_in, len(prev)))
                pa[name] = rng.sample(prev, k)
            cur.append(name)
        prev = cur
    return pa, declared


def build(pa: dict[str, list[str]], declared: dict[str, int], rng: random.Random | None = None) -> Graph:
    g = Graph("random")
    names = list(pa)
    if rng is not None:
        rng.shuffle(names)  # parents may be declared after their children
    for v in names:
        g.add_node(v, 1, pa[v], layer=declared.get(v))
    return g


def test_brute_force_matches_a_hand_worked_example():
    # z1 -> a, b ; z2 -> b, c ; a -> y ; c -> w.  Siblings are not transitive: c is b's sibling
    # but not a's, so c is not an extended ancestor of y.
    pa = {"z1": [], "z2": [], "a": ["z1"], "b": ["z1", "z2"], "c": ["z2"], "y": ["a"], "w": ["c"]}
    lay = bf_layers(pa, {})
    assert bf_sib(pa, lay, "a") == {"a", "b"}
    assert bf_sib(pa, lay, "b") == {"a", "b", "c"}
    assert bf_an_sib(pa, lay, "y") == {"y", "a", "b"}
    assert bf_an_sib(pa, lay, "z1") == set()
    g = build(pa, {})
    assert extended_ancestors(g, "y") == {"y", "a", "b"}
    assert extended_ancestors(g, "w") == {"w", "b", "c"}
    assert extended_ancestors(g, "b") == {"a", "b", "c"}
    assert siblings(g, "c") == {"b", "c"}
    assert extended_ancestors(g, "z2") == frozenset()
    assert siblings(g, "z2") == {"z2"}


@pytest.mark.parametrize("seed", range(60))
def test_extended_ancestors_and_siblings_match_brute_force(seed):
    rng = random.Random(seed)
    pa, declared = random_layered(rng, n_layers=rng.randint(1, 8), max_width=rng.randint(1, 7),
                                  max_fan_in=rng.randint(1, 5), p_source=rng.choice([0.0, 0.15, 0.3]))
    g = build(pa, declared, rng)
    lay = bf_layers(pa, declared)
    memo: dict = {}
    for v in pa:
        assert g.layer_of(v) == lay[v], v
        assert siblings(g, v) == bf_sib(pa, lay, v), v
        assert extended_ancestors(g, v) == bf_an_sib(pa, lay, v, memo), v


@pytest.mark.parametrize("seed", range(15))
def test_extended_ancestors_on_arrays_match_brute_force(seed):
    """Arrays with explicit tables (and residual links), expanded by the test itself."""
    rng = random.Random(1000 + seed)
    g = Graph("arrays")
    pa: dict[str, list[str]] = {}
    count = rng.randint(2, 6)
    g.add_array("a0", count, 1)
    pa.update({f"a0[{i}]": [] for i in range(count)})
    for k in range(1, rng.randint(2, 5)):
        prev_count, count = count, (count if rng.random() < 0.5 else rng.randint(2, 6))
        fan_in = rng.randint(1, prev_count)
        table = [rng.sample(range(prev_count), fan_in) for _ in range(count)]
        residual = count == prev_count and rng.random() < 0.5
        g.add_array(f"a{k}", count, 1, parents=f"a{k - 1}", table=table, residual=residual)
        for i in range(count):
            ps = [f"a{k - 1}[{j}]" for j in table[i]]
            if residual and f"a{k - 1}[{i}]" not in ps:
                ps.append(f"a{k - 1}[{i}]")
            pa[f"a{k}[{i}]"] = ps
    lay = bf_layers(pa, {})
    memo: dict = {}
    for v in pa:
        assert set(g.parents(v)) == set(pa[v])
        assert siblings(g, v) == bf_sib(pa, lay, v), v
        assert extended_ancestors(g, v) == bf_an_sib(pa, lay, v, memo), v


def test_unknown_node_is_a_graph_error():
    g = build({"z": [], "y": ["z"]}, {})
    with pytest.raises(GraphError) as info:
        extended_ancestors(g, "nope")
    assert info.value.node == "nope" and info.value.fix
    with pytest.raises(GraphError):
        siblings(g, "nope")


def _big_graph(layers: int = 80, width: int = 125, fan_in: int = 6) -> Graph:
    rng = random.Random(7)
    g = Graph("big")
    for i in range(width):
        g.add_node(f"n0_{i}", 1)
    for layer in range(1, layers):
        prev = [f"n{layer - 1}_{j}" for j in range(width)]
        for i in range(width):
            g.add_node(f"n{layer}_{i}", 1, rng.sample(prev, fan_in))
    return g


def test_extended_ancestors_is_fast_on_10k_nodes():
    """10,000 nodes (80 layers x 125, fan-in 6). Lint (building the expanded graph) is done
    before the clock starts; the measured call includes building the bitset view and the
    memoised an_sib of every node it needs (all 9,875 non-sources). CPU time, not wall time: other
    processes on the machine do not count."""
    g = _big_graph()
    assert len(g) == 10_000
    g.lint()
    last = "n79_0"
    start = time.process_time()
    an = extended_ancestors(g, last)
    elapsed = time.process_time() - start
    assert elapsed < 2.0, f"extended_ancestors took {elapsed:.2f} s of CPU"
    # the answer is sane: it contains the node's siblings, no source, and spans the depth
    assert siblings(g, last) <= an
    assert not any(v.startswith("n0_") for v in an)
    assert {g.layer_of(v) for v in an} == set(range(1, 80))
    # further queries are served from the memo
    start = time.process_time()
    for i in range(0, 125, 5):
        extended_ancestors(g, f"n79_{i}")
    assert time.process_time() - start < 2.0


def test_extended_ancestors_is_fast_on_10k_neurons_in_arrays():
    g = Graph("big-arrays")
    g.add_array("a0", 125, 1)
    for k in range(1, 80):
        g.add_array(f"a{k}", 125, 1, parents=f"a{k - 1}", fan_in=6, seed=k)
    g.lint()
    start = time.process_time()
    an = extended_ancestors(g, "a79[3]")
    elapsed = time.process_time() - start
    assert elapsed < 2.0, f"extended_ancestors took {elapsed:.2f} s of CPU"
    assert siblings(g, "a79[3]") <= an and "a0[0]" not in an


# --------------------------------------------------------------------------- conditions
def _graph(spec: list[tuple], feedback: dict[str, str] | None = None, name: str = "g") -> Graph:
    g = Graph(name)
    for entry in spec:
        n, ps, *rest = entry
        opts = rest[0] if rest else {}
        g.add_node(n, 1, ps, **opts)
    for k, v in (feedback or {}).items():
        g.set_feedback(k, v)
    return g


DENSE = [("x1", []), ("x2", []), ("h1", ["x1", "x2"]), ("h2", ["x1", "x2"]), ("y", ["h1", "h2"])]
KEYS = {"A1", "A2", "A3", "A", "B", "regime"}


def test_fully_connected_deterministic_graph_has_no_A():
    r = check_conditions(_graph(DENSE))
    assert (r.a1, r.a2, r.a3, r.a) == ((), (), (), False)
    d = r.to_dict()
    assert set(d) >= KEYS
    assert (d["A1"], d["A2"], d["A3"], d["A"]) == ([], [], [], False)
    # h1 does not dominate y (y also reads h2), so (B) is not proved
    assert d["B"] == "not_guaranteed"
    assert "Theorem 1" in d["regime"] and "Theorem 3" in d["regime"] and "¬(A)" in d["regime"]


def test_one_sparse_node_is_the_only_A3_witness():
    spec = [("x1", []), ("x2", []), ("h1", ["x1", "x2"]), ("h2", ["x1"]), ("y", ["h1", "h2"])]
    r = check_conditions(_graph(spec))
    assert r.a3 == ("h2",)
    assert (r.a1, r.a2, r.a) == ((), (), True)


def test_source_in_a_later_layer_makes_its_layer_mates_children_sparse():
    # e is a source in layer 1, so y (reading only h from layer 1) is not fully connected
    spec = [("z", []), ("h", ["z"]), ("e", [], {"layer": 1}), ("y", ["h"]), ("w", ["h", "e"])]
    r = check_conditions(_graph(spec))
    assert r.a3 == ("y",)


def test_stochastic_node_is_an_A2_witness():
    spec = [("z", []), ("h", ["z"], {"stochastic": True}), ("y", ["h"])]
    r = check_conditions(_graph(spec))
    assert (r.a1, r.a2, r.a3) == ((), ("h",), ())
    assert r.a is True and r.b == "holds"
    assert "Theorem 2" in r.regime


@pytest.mark.parametrize("kind", ["stochastic", "contextual"])
def test_random_feedback_is_an_A1_witness(kind):
    spec = [("z", []), ("h", ["z"]), ("y1", ["h"]), ("y2", ["h"])]
    r = check_conditions(_graph(spec, {"y2": kind}))
    assert (r.a1, r.a2, r.a3) == (("y2",), (), ())
    assert r.a is True
    if kind == "contextual":
        assert r.b == "not_guaranteed" and "y2" in r.b_reason and "contextual" in r.b_reason
        assert "Theorem 2" in r.regime and "Theorem 3" in r.regime
    else:
        assert r.b == "holds"


def test_deterministic_feedback_declared_explicitly_is_not_A1():
    r = check_conditions(_graph([("z", []), ("y", ["z"])], {"y": "deterministic"}))
    assert r.a1 == () and r.a is False


def test_expert_net_is_theorem_2():
    g = Graph.from_yaml(str(EXAMPLES / "expert-net.yaml"))
    r = check_conditions(g)
    d = r.to_dict()
    assert set(d) >= KEYS
    assert d["A1"] == ["e1", "e2", "e3", "e4", "e5"]
    assert d["A"] is True and d["B"] == "holds"
    assert "Theorem 2" in d["regime"] and "Theorem 1" not in d["regime"]


def test_any_contextual_feedback_breaks_B():
    g = Graph.from_yaml(str(EXAMPLES / "expert-net.yaml"))
    g.set_feedback("e3", "contextual")
    r = check_conditions(g)
    assert r.b == "not_guaranteed" and "e3" in r.b_reason


def test_node_that_does_not_dominate_breaks_B():
    g = _graph([("z", []), ("a", ["z"]), ("b", ["z"]), ("y", ["a", "b"])])
    assert dominates_descendants(g, "z")
    assert not dominates_descendants(g, "a")
    assert dominates_descendants(g, "y")  # no descendants
    r = check_conditions(g)
    assert r.b == "not_guaranteed" and "'a'" in r.b_reason and "dominate" in r.b_reason
    assert r.a is False


def test_not_A_with_B_is_theorem_1():
    r = check_conditions(_graph([("z", []), ("h", ["z"]), ("y", ["h"])]))
    assert r.a is False and r.b == "holds"
    assert "Theorem 1" in r.regime and "Theorem 2" not in r.regime and "Theorem 3" not in r.regime


def test_sparse_example_graph_on_arrays():
    g = Graph.from_yaml(str(EXAMPLES / "sparse-ff.yaml"))
    r = check_conditions(g)
    assert set(r.a1) == {f"h2[{i}]" for i in range(8)}
    assert set(r.a3) == {f"h{k}[{i}]" for k in (1, 2) for i in range(8)}
    assert r.b == "not_guaranteed"


def test_report_renders_witnesses():
    text = str(check_conditions(_graph([("z", []), ("h", ["z"], {"stochastic": True}), ("y", ["h"])],
                                      name="noisy")))
    assert "noisy" in text and "yes — h" in text and "Regime" in text


# --------------------------------------------------------------------------- Theorem 3
def test_theorem3_constants_on_a_chain_by_hand():
    g = _graph([("z", []), ("a", ["z"]), ("b", ["a"]), ("y", ["b"])])
    c = theorem3_constants(g, 2.0, {"z": 0.5, "a": 0.25, "b": 1.0})
    # c_y = 0; c_b = J(1 - λ_b + c_y) = 0; c_a = 2(1 - .25 + 0) = 1.5; c_z = 2(1 - .5 + 1.5) = 4
    assert c == pytest.approx({"y": 0.0, "b": 0.0, "a": 1.5, "z": 4.0})


def test_theorem3_constants_sum_over_children():
    g = _graph([("z", []), ("a", ["z"]), ("b", ["z"]), ("y", ["a", "b"])])
    c = theorem3_constants(g, 0.5, {"z": 0.2, "a": 0.5, "b": 1.0})
    # c_a = .5(1-.5) = .25; c_b = 0; c_z = .5((1-.2+.25) + (1-.2+0)) = .925
    assert c == pytest.approx({"z": 0.925, "a": 0.25, "b": 0.0, "y": 0.0})
    # a float λ applies to every node; λ = 1 (backprop) gives zero bias everywhere
    assert set(theorem3_constants(g, 3.0, 1.0).values()) == {0.0}
    assert theorem3_constants(g, 2.0, 0.0) == pytest.approx({"z": 12.0, "a": 2.0, "b": 2.0, "y": 0.0})


def test_theorem3_condition_eq19():
    # lhs = (tr p - tr s)/n ; rhs = (J² ε Σ(1 + c))²
    assert theorem3_condition(20.0, 3.0, 1, 1.0, 1.0, [1.0, 1.0])      # 17 > 16
    assert not theorem3_condition(20.0, 3.0, 2, 1.0, 1.0, [1.0, 1.0])  # 8.5 < 16
    assert not theorem3_condition(1.0, 10.0, 1, 1.0, 0.0, [0.0])       # negative gap
    assert theorem3_condition(5.0, 1.0, 1, 2.0, 0.4, [0.0])            # 4 > (4 * .4)² = 2.56
    assert not theorem3_condition(5.0, 1.0, 1, 2.0, 0.5, [0.0])        # 4 = (4 * .5)²: not strictly
