"""``sggraph.viz``: drawing graphs, cells and compiled nets with graphviz (the public name of
:mod:`sggraph.draw`, so that ``from sggraph.viz import draw`` works as documented).

>>> from sggraph.viz import draw
>>> from sggraph import Graph
>>> g = Graph("tiny"); g.add_node("z", 2); g.add_node("y", 1, ["z"], fn="linear")
>>> "rankdir=LR" in draw(g).source
True
"""

from __future__ import annotations

from .draw import HIGHLIGHT_COLORS, LAMBDA_COLORS, RENDER_FORMATS, draw, lambda_color, render

__all__ = ["HIGHLIGHT_COLORS", "LAMBDA_COLORS", "RENDER_FORMATS", "draw", "lambda_color", "render"]
