"""Draw graphs, compiled graphs and recurrent cells with graphviz.

:func:`draw` turns a :class:`~sggraph.Graph`, a :class:`~sggraph.CompiledGraph`, a
recurrent :class:`~sggraph.Cell` (folded, or unrolled with ``unroll=T``) or a
:class:`~sggraph.CompiledCell` into a :class:`graphviz.Digraph`; :func:`render` writes it
as DOT, SVG, PNG or PDF with graphviz's ``dot``; ``sggraph draw`` is
:mod:`sggraph.cli.draw`.

What a drawing shows
--------------------
* Layers are ranks from left to right (``rankdir=LR``, one ``rank=same`` subgraph
  ``layer_<l>`` per layer).
* Sources (``cds``, pale green), hidden nodes (``ellipse``, white) and terminals
  (``octagon``, pale blue). A node array is ONE ``box3d`` box labelled with its name,
  count, dim and fan-in; edges between array boxes carry the fan-in.
  ``expand_arrays=N`` draws the first ``N`` neurons of every array individually, plus a
  ``… (k more)`` placeholder standing for the others.
* Marks of the paper's conditions: terminals with stochastic or contextual feedback
  (A.1) get a thick purple outline, stochastic nodes (A.2) a double outline, sparse
  nodes (A.3 witnesses) cut corners (``diagonals``); each mark is also written in the
  label. A legend cluster explains every mark.
* ``node=NAME`` fills that node, its siblings (eq. 11) and its sibling-extended
  ancestors (Definition 4) in three colours (:data:`HIGHLIGHT_COLORS`).
* λ: every edge is coloured on the scale of :func:`lambda_color`, from backprop
  (λ = 1, blue) to synthetic (λ = 0, orange), with the value in its label and tooltip
  (edges between array boxes: the mean λ over the parent table).
* ``propagation=True`` (a compiled graph after a backward): edge width grows with the
  mean ``|g̃|`` the child received (relative to the largest edge), colour shows the
  synthetic share ``1 − λ`` of the mixing that produced the gradient along the edge
  (1 − λ of the edge; 0 where the child ran plain backprop); nodes that received no
  feedback are dashed.

Every DOT node of the drawing is named by the graph's own name for it (``h``, ``h[3]``,
``h@2:0``); array boxes by the array name, placeholders ``h[…]`` (an unrolled state's steps:
boxes ``h@2``, placeholders ``h@2:…``); legend nodes start
with ``__legend__``.

Examples
--------
>>> from sggraph import Graph
>>> g = Graph("tiny")
>>> g.add_node("z", 3); g.add_node("h", 4, ["z"], fn="tanh"); g.add_node("y", 1, ["h"], fn="linear")
>>> g.set_feedback("y", "stochastic")
>>> dg = draw(g, node="h")
>>> "rankdir=LR" in dg.source, "subgraph layer_2" in dg.source
(True, True)
>>> lambda_color(1.0), lambda_color(0.0)
('#2166ac', '#e66101')
"""

from .emit import render
from .layout import draw
from .style import HIGHLIGHT_COLORS, LAMBDA_COLORS, RENDER_FORMATS, lambda_color

__all__ = ["HIGHLIGHT_COLORS", "LAMBDA_COLORS", "RENDER_FORMATS", "draw", "lambda_color", "render"]
