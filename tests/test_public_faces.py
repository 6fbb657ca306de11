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
