"""Fuzzing every YAML reader with Hypothesis: random documents, random text and random bytes.

The property, for graphs (``Graph.from_yaml``), cells (``Cell.from_yaml`` where the class has one),
``train --config`` files and sweep specs: the reader returns a valid object or raises an
``SggraphError`` subclass — never another exception — and never takes more than a few seconds.
And a valid file is accepted: every test also reads a known-valid file (``@example``), and the
mostly-valid strategies assert their clean documents are accepted, so a reader that refused
everything would fail them.
"""

from __future__ import annotations

import datetime
import itertools
from pathlib import Path

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sggraph import Graph, SggraphError
from sggraph.cli import build_parser
from sggraph.core.unroll import Cell
from sggraph.sweeps import SweepSpec, load_spec

ROOT = Path(__file__).resolve().parent.parent
PARSER = build_parser()
_COUNTER = itertools.count()

FUZZ = settings(max_examples=150, deadline=datetime.timedelta(seconds=5), database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

NAMES = ["z", "h", "y", "x", "a", "h[0]", "x[1]", ""]
WORDS = ["tanh", "linear", "dot", "identity", "stochastic", "contextual", "deterministic", "sgprop", "backprop",
         "train mnist-bandit", "train popgym", "expert", "mse", "sweep", "adaptive", "gru", "1e-3", "nan", "-1"]
KEYS = ["name", "nodes", "arrays", "feedback", "dim", "parents", "fn", "layer", "stochastic", "count", "fan_in",
        "seed", "table", "residual", "slots", "init_std", "array", "command", "settings", "grid", "description",
        "steps", "lr", "method", "lambda", "model", "classes", "inputs", "state", "<<"]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 10), st.integers(), st.floats(),
                    st.text(max_size=8), st.sampled_from(NAMES + WORDS))
documents = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), inner, max_size=5)),
    max_leaves=40)
nodes = st.fixed_dictionaries(
    {"name": st.sampled_from(NAMES) | scalars, "dim": st.integers(-1, 4) | scalars},
    optional={"parents": st.lists(st.sampled_from(NAMES), max_size=3) | scalars,
              "fn": st.sampled_from(["tanh", "linear", "dot", "identity", "sigmoid"]) | scalars,
              "layer": st.integers(-1, 3), "stochastic": st.booleans() | scalars, "init_std": st.floats() | scalars})
arrays = st.fixed_dictionaries(
    {"name": st.sampled_from(["x", "a", "h"]), "count": st.integers(-1, 6) | scalars, "dim": st.integers(0, 3)},
    optional={"parents": st.fixed_dictionaries({"array": st.sampled_from(["x", "a", "q"])},
                                               optional={"fan_in": st.integers(-1, 7), "seed": st.integers() | scalars,
                                                         "table": st.lists(st.lists(st.integers(-1, 6), max_size=3),
                                                                           max_size=4)}) | scalars,
              "residual": st.booleans(), "slots": st.integers(-1, 6) | scalars})
graphs = st.fixed_dictionaries(
    {"nodes": st.lists(nodes, max_size=6)},
    optional={"name": st.text(max_size=6), "arrays": st.lists(arrays, max_size=3),
              "feedback": st.dictionaries(st.sampled_from(NAMES), st.sampled_from(WORDS) | scalars, max_size=3)})
grid_values = st.lists(scalars, max_size=3) | scalars | st.lists(st.dictionaries(
    st.sampled_from(["seed", "method", "lr", "steps"]), scalars, max_size=2), max_size=2)
specs = st.fixed_dictionaries(
    {"command": st.sampled_from(["train mnist-bandit", "train popgym", "expert", "mse", "train", "sweep", "plot",
                                 "bogus", "expert --out x"]) | scalars,
     "grid": st.dictionaries(st.sampled_from(["seed", "steps", "lr", "method", "lambda", "model", "trials",
                                              "classes", "out", "resume", "overwrite", "bogus", "n-parents"]),
                             grid_values, max_size=3) | scalars},
    optional={"settings": st.dictionaries(st.sampled_from(["steps", "lr", "width", "seed", "p_flip", "data_dir"]),
                                          scalars, max_size=3) | scalars,
              "name": st.text(max_size=6) | scalars, "description": scalars})
configs = st.dictionaries(st.sampled_from(["steps", "lr", "seed", "method", "lam", "classes", "width", "batch",
                                           "p_flip", "normalize", "bogus"]),
                          scalars | st.lists(st.integers(-1, 12), max_size=4), max_size=5)


#: Documents (as written) the mostly-valid strategies drew without junk: the reader of their kind must accept them.
CLEAN: set[bytes] = set()


def _dump(data: object) -> bytes:
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False).encode("utf-8")


@st.composite
def layered_graphs(draw) -> dict:
    """Mostly valid graphs (parents declared before), now and then with one value replaced by junk."""
    nodes: list[dict] = []
    layer: dict[str, int] = {}
    for i in range(draw(st.integers(1, 6))):
        node: dict = {"name": f"n{i}", "dim": draw(st.integers(1, 4))}
        layer[node["name"]] = 0
        if nodes and draw(st.booleans()):  # parents from one layer (a layered DAG), declared before
            below = layer[draw(st.sampled_from([n["name"] for n in nodes]))]
            same = [n["name"] for n in nodes if layer[n["name"]] == below]
            node["parents"] = draw(st.lists(st.sampled_from(same), unique=True, min_size=1, max_size=3))
            node["fn"] = draw(st.sampled_from(["tanh", "linear", "dot"]))
            layer[node["name"]] = below + 1
        nodes.append(node)
    doc: dict = {"name": "g", "nodes": nodes}
    if "parents" in nodes[-1] and draw(st.booleans()):
        doc["feedback"] = {nodes[-1]["name"]: draw(st.sampled_from(["stochastic", "contextual", "deterministic"]))}
    if draw(st.booleans()):
        victim = draw(st.sampled_from(nodes))
        victim[draw(st.sampled_from(["dim", "parents", "fn", "layer", "name", "stochastic"]))] = draw(scalars)
    else:
        CLEAN.add(_dump(doc))
    return doc


SETTINGS = {"seed": st.integers(0, 3), "steps": st.integers(1, 5), "lr": st.floats(1e-5, 1e-1),
            "method": st.sampled_from(["sgprop", "backprop", "mlp"]), "lambda": st.sampled_from(["0.5", "adaptive"]),
            "width": st.integers(1, 64), "p_flip": st.floats(0, 1)}


@st.composite
def sweep_specs(draw) -> dict:
    """Mostly valid ``train mnist-bandit`` sweeps, now and then with one value replaced by junk."""
    keys = draw(st.lists(st.sampled_from(sorted(SETTINGS)), unique=True, min_size=1, max_size=3))
    grid = {k: draw(st.lists(SETTINGS[k], min_size=1, max_size=3, unique=True)) for k in keys}
    fixed = {k: draw(SETTINGS[k]) for k in sorted(SETTINGS) if k not in keys and draw(st.booleans())}
    doc = {"name": "s", "command": "train mnist-bandit", "settings": fixed, "grid": grid}
    if draw(st.booleans()):
        doc[draw(st.sampled_from(["settings", "grid", "command", "name"]))] = draw(documents)
    elif all(len(v) <= 2 for v in grid.values()):
        CLEAN.add(_dump(doc))
    return doc


texts = st.text(alphabet=st.sampled_from(list("{}[],:-?&*!|>'\"#%@`\n\t abz019.~") + ["\x00", "\u00e9", "\ufeff"]),
                max_size=200)
GRAPH_FILE = (ROOT / "examples" / "expert-net.yaml").read_bytes()
mutations = st.lists(st.tuples(st.integers(0, len(GRAPH_FILE) - 1), st.integers(0, 255)), min_size=1, max_size=8)


def _file(tmp_path_factory, data: bytes) -> Path:
    path = tmp_path_factory.getbasetemp() / f"fuzz-{next(_COUNTER)}.yaml"
    path.write_bytes(data)
    return path


def _config(path: Path) -> object:
    args = PARSER.parse_args(["train", "mnist-bandit", "--config", str(path)])
    args.validate(args)  # the config checks `sggraph train` and the sweep run before anything
    return args


READERS = {"graph": Graph.from_yaml, "spec": lambda p: load_spec(p, PARSER), "config": _config}
if hasattr(Cell, "from_yaml"):
    READERS["cell"] = Cell.from_yaml
RESULTS = {"graph": Graph, "spec": SweepSpec, "cell": Cell}


CELL_FILE = (ROOT / "examples" / "popgym-sparsenet-cell.yaml").read_bytes()
SPEC_DOC = {"name": "s", "command": "train mnist-bandit", "settings": {"steps": 2}, "grid": {"seed": [0, 1]}}
CONFIG_DOC = {"steps": 5, "method": "backprop", "lr": 0.001}
#: Known-valid files (as written) and the readers that must accept them.
KNOWN = {GRAPH_FILE: {"graph"}, _dump(yaml.safe_load(GRAPH_FILE)): {"graph"}, CELL_FILE: {"cell"},
         _dump(yaml.safe_load(CELL_FILE)): {"cell"}, _dump(SPEC_DOC): {"spec"}, _dump(CONFIG_DOC): {"config"}}


def _read_all(path: Path) -> None:
    """Every reader on ``path``: a valid object or an SggraphError, nothing else; a known-valid file (or a clean
    document of a mostly-valid strategy) is accepted by the reader of its kind."""
    raw = path.read_bytes()
    must = set(KNOWN.get(raw, set()))
    if raw in CLEAN:
        must |= {"spec"} if b"command:" in raw else {"graph"}
    accepted = set()
    for kind, read in READERS.items():
        try:
            result = read(str(path))
        except SggraphError as err:
            assert kind not in must, f"a valid {kind} file was refused: {err}"
            continue
        accepted.add(kind)
        if kind in RESULTS:
            assert isinstance(result, RESULTS[kind]), kind
    assert must <= accepted


@FUZZ
@given(data=documents)
@example(data=yaml.safe_load(GRAPH_FILE))
@example(data=CONFIG_DOC)
def test_random_documents(data, tmp_path_factory):
    _read_all(_file(tmp_path_factory, _dump(data)))


@FUZZ
@given(data=graphs | layered_graphs())
@example(data=yaml.safe_load(GRAPH_FILE))
@example(data=yaml.safe_load(CELL_FILE))
def test_graph_like_documents(data, tmp_path_factory):
    _read_all(_file(tmp_path_factory, _dump(data)))


@FUZZ
@given(data=specs | sweep_specs())
@example(data=SPEC_DOC)
def test_spec_like_documents(data, tmp_path_factory):
    _read_all(_file(tmp_path_factory, _dump(data)))


@FUZZ
@given(data=configs)
@example(data=CONFIG_DOC)
def test_config_like_documents(data, tmp_path_factory):
    _read_all(_file(tmp_path_factory, _dump(data)))


@FUZZ
@given(text=texts)
@example(text=GRAPH_FILE.decode("utf-8"))
def test_random_yaml_text(text, tmp_path_factory):
    _read_all(_file(tmp_path_factory, text.encode("utf-8")))


@FUZZ
@given(raw=st.binary(max_size=300))
@example(raw=GRAPH_FILE)
@example(raw=CELL_FILE)
def test_random_bytes(raw, tmp_path_factory):
    _read_all(_file(tmp_path_factory, raw))


@FUZZ
@given(edits=mutations)
@example(edits=[(0, GRAPH_FILE[0])])  # no change: the real file, which must be read
def test_a_real_graph_file_with_random_bytes_changed(edits, tmp_path_factory):
    raw = bytearray(GRAPH_FILE)
    for position, byte in edits:
        raw[position] = byte
    _read_all(_file(tmp_path_factory, bytes(raw)))
