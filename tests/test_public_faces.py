"""The package's public faces: what ``import sggraph`` lists, and the engine as the one door models,
experiments and the shell come through."""

from __future__ import annotations

import ast
from pathlib import Path

import sggraph

ROOT = Path(__file__).resolve().parent.parent


def test_dir_and_all_show_the_api_and_every_lazy_name():
    shown = dir(sggraph)
    assert not {"Any", "TYPE_CHECKING", "importlib", "annotations"} & set(shown)
    assert set(sggraph._LAZY) <= set(sggraph.__all__)  # training, diagnostics, viz, compile, ...
    assert {"training", "diagnostics", "viz", "compile", "Graph"} <= set(shown)


def test_sggraph_compile_says_it_is_not_torch_compile():
    assert "not ``torch.compile``" in sggraph.compile.__doc__.lower()


def test_models_experiments_and_the_shell_import_the_engine_only_through_its_face():
    """No ``sggraph.engine.<module>`` imports outside the engine (its ``__init__`` exports what they use)."""
    inner = []
    folders = [ROOT / "models", ROOT / "envs"] + [ROOT / "sggraph" / p for p in ("experiments", "cli", "draw", "sweeps",
                                                                               "runtime")]
    for folder in folders:
        for path in folder.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.module:
                    name = node.module if node.level == 0 else "sggraph." + node.module
                    if name.startswith("sggraph.engine."):
                        inner.append(f"{path.relative_to(ROOT)}: {name}")
    assert inner == []


def test_popgym_layers_live_in_models_and_register_their_fn_names():
    """`fn: embedding` / `fn: slot_actor` are the models' layers: the bare engine names who provides them,
    `sggraph.compile` (which imports sggraph.models first) builds them."""
    import subprocess
    import sys
    from pathlib import Path

    cell = Path(__file__).resolve().parent.parent / "examples" / "popgym-sparsenet-cell.yaml"
    bare = (f"import sys; from sggraph.core.unroll import Cell; from sggraph.engine import compile_cell\n"
            f"from sggraph.exceptions import CompileError\n"
            f"try:\n    compile_cell(Cell.from_yaml({str(cell)!r}))\nexcept CompileError as e:\n    print(e)\n"
            f"print('sggraph.models' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", bare], capture_output=True, text=True, check=True).stdout
    assert "fn 'embedding' is provided by sggraph.models" in out and "import sggraph.models first" in out
    assert out.strip().endswith("False")
    served = (f"import sggraph\nnet = sggraph.compile(sggraph.Cell.from_yaml({str(cell)!r}))\n"
              f"print(type(net.pre['emb'].function).__module__, type(net.post['act'].function).__module__)")
    out = subprocess.run([sys.executable, "-c", served], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["sggraph.models.popgym_layers"] * 2
