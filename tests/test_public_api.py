"""The public API says what it is: ``from sggraph.viz import draw`` (as documented), ``__all__`` lists every
public name, ``compile`` declares that it takes a Cell, and ``model_parameters`` says that ``parameters()`` also
holds the generators."""

from __future__ import annotations

import inspect
from pathlib import Path

import sggraph

ROOT = Path(__file__).resolve().parent.parent


def test_viz_draw_imports_as_documented():
    from sggraph.draw import draw as drawing
    from sggraph.viz import draw, render

    assert draw is drawing and sggraph.viz.draw is draw and callable(render)
    assert "`sggraph.viz.draw`" in (ROOT / "README.md").read_text()  # the name the README gives


def test_all_lists_the_public_modules_and_every_name_resolves():
    assert {"training", "viz", "diagnostics", "generators", "compile"} <= set(sggraph.__all__)
    for name in sggraph.__all__:
        assert getattr(sggraph, name) is not None, name


def test_compile_says_it_takes_a_cell_and_returns_its_compiled_cell():
    signature = inspect.signature(sggraph.compile)
    assert "Cell" in str(signature.parameters["graph"].annotation) and "CompiledCell" in str(
        signature.return_annotation)
    cell = sggraph.Cell.from_yaml(ROOT / "examples" / "popgym-sparsenet-cell.yaml")
    assert isinstance(sggraph.compile(cell), sggraph.CompiledCell)


def test_parameters_hold_the_generators_and_model_parameters_say_so():
    net = sggraph.compile(sggraph.Graph.from_yaml(ROOT / "examples" / "regression-dag.yaml"))
    model, generators = set(net.model_parameters()), set(net.generator_parameters())
    assert generators and set(net.parameters()) == model | generators
    for cls in (sggraph.CompiledGraph, sggraph.CompiledCell):
        assert "generator" in inspect.getdoc(cls.model_parameters) and "parameters()" in inspect.getdoc(
            cls.model_parameters)
