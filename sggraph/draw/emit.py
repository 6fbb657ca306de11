"""Writing a drawing: DOT attributes of items and edges, the legend, and :func:`render` (DOT, SVG, PNG,
PDF through graphviz's ``dot``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import graphviz
import numpy as np
from graphviz.quoting import attr_list, quote

from ..exceptions import ConfigError
from ..runtime.atomic import atomic_path, write_atomic
from .style import (
    A1_COLOR,
    HIGHLIGHT_COLORS,
    LEGEND_PREFIX,
    NO_FEEDBACK_COLOR,
    NO_LAMBDA_COLOR,
    RENDER_FORMATS,
    ROLE_FILL,
    ROLE_SHAPE,
    Edge,
    Item,
    escape,
    lambda_color,
)

__all__ = ["add_edge", "edge_attrs", "emit", "legend", "node_attrs", "render", "render_source"]


# ------------------------------------------------------------------------ emit
def node_attrs(it: Item) -> dict[str, str]:
    classes = [f"sg-{it.kind}", f"sg-{it.role}"]
    if it.kind == "more":
        lines = [it.title] + it.details + ([it.highlight_note] if it.highlight_note else [])
        attrs = {"label": escape("\n".join(lines)), "shape": "note", "style": "dashed", "color": "#757575",
                 "fontcolor": "#616161", "tooltip": escape(it.tooltip), "class": " ".join(classes)}
        if it.highlight is not None:  # it holds highlighted neurons: say how many
            attrs.update(style="dashed,filled", fillcolor=HIGHLIGHT_COLORS[it.highlight], fontcolor="#212121")
            attrs["class"] += f" sg-highlight-{it.highlight}"
        return attrs
    shape = "box3d" if it.kind == "group" else ROLE_SHAPE[it.role]
    fill = ROLE_FILL[it.role]
    attrs: dict[str, str] = {"shape": shape}
    style = ["filled"]
    if "A3" in it.marks:
        style.append("diagonals")
        classes.append("sg-a3")
    if it.dashed:
        style.append("dashed")
        classes.append("sg-no-feedback")
    if "A2" in it.marks:
        attrs["peripheries"] = "2"
        classes.append("sg-a2")
    if "A1" in it.marks:
        attrs["color"] = A1_COLOR
        attrs["penwidth"] = "2.5"
        classes.append("sg-a1")
    if it.highlight is not None:
        fill = HIGHLIGHT_COLORS[it.highlight]
        classes.append(f"sg-highlight-{it.highlight}")
        if it.highlight == "node":
            attrs["fontcolor"] = "white"
    lines = [it.title] + it.details + [it.marks[k] for k in ("A1", "A2", "A3") if k in it.marks]
    if it.highlight_note:
        lines.append(it.highlight_note)
    tooltip = it.tooltip + "".join(f"; {it.marks[k]}" for k in ("A1", "A2", "A3") if k in it.marks)
    if it.highlight is not None:
        tooltip += {"node": "; the highlighted node", "siblings": "; sibling (eq. 11)",
                    "ancestors": "; sibling-extended ancestor (Def. 4)"}[it.highlight]
        if it.highlight_note:
            tooltip += f" ({it.highlight_note})"
    attrs.update({"label": escape("\n".join(lines)), "style": ",".join(style), "fillcolor": fill,
                  "tooltip": escape(tooltip), "class": " ".join(classes)})
    return attrs


def edge_attrs(e: Edge, max_magnitude: float | None, propagation: bool) -> dict[str, str]:
    label = [e.text] if e.text else []
    tip = [f"{e.tail} → {e.head}" + (f" ({e.count} edges)" if e.count > 1 else "")]
    if e.text:
        tip.append(e.text)
    attrs: dict[str, str] = {}
    classes = ["sg-edge"]
    style = []
    if e.placeholder:
        style.append("dashed")
    if propagation:
        if e.magnitude is None:
            style.append("dashed")
            attrs["color"] = NO_FEEDBACK_COLOR
            attrs["penwidth"] = "0.6"
            tip.append("the child received no feedback")
            classes.append("sg-no-feedback")
        else:
            rel = e.magnitude / max_magnitude if max_magnitude else 0.0
            attrs["penwidth"] = f"{0.6 + 5.4 * rel:.2f}"
            tip.append(f"mean |g̃| of the child = {e.magnitude:.3g} ({rel:.2f} of the largest)")
            if e.lam is not None:
                share = 1.0 - e.lam
                attrs["color"] = lambda_color(e.lam)
                label.append(f"synthetic {share:.0%}")
                tip.append(f"synthetic share 1 − λ = {share:.3f}")
            else:
                attrs["color"] = NO_LAMBDA_COLOR
    elif e.lam is not None:
        sym = "mean λ" if e.lam_mean else "λ"
        attrs["color"] = lambda_color(e.lam)
        attrs["penwidth"] = "1.6"
        label.append(f"{sym}={e.lam:.2f}")
        tip.append(f"{sym} = {e.lam:.4f}")
        classes.append("sg-lambda")
    else:
        attrs["color"] = NO_LAMBDA_COLOR
    if e.lam is not None:
        attrs["fontcolor"] = attrs.get("color", NO_LAMBDA_COLOR)
    if label:
        attrs["label"] = escape("\n".join(label))
    if style:
        attrs["style"] = ",".join(style)
    attrs["tooltip"] = escape("; ".join(tip))
    attrs["class"] = " ".join(classes)
    return attrs


def add_edge(dg: graphviz.Digraph, tail: str, head: str, attrs: Mapping[str, str]) -> None:
    # graphviz's own edge() reads "a:b" as node a, port b; names like h@1:0 must stay whole
    dg.body.append(f"\t{quote(tail)} -> {quote(head)}{attr_list(kwargs=dict(attrs))}\n")


def emit(name: str, title: str, items: list[Item], edges: list[Edge], *, lambdas: bool, propagation: bool,
          highlight: str | None) -> graphviz.Digraph:
    dg = graphviz.Digraph(name=name, graph_attr={"rankdir": "LR", "label": escape(title), "labelloc": "t",
                                                 "fontname": "Helvetica", "nodesep": "0.25", "ranksep": "0.6"},
                          node_attr={"fontname": "Helvetica", "fontsize": "11"},
                          edge_attr={"fontname": "Helvetica", "fontsize": "9"})
    by_layer: dict[int, list[Item]] = {}
    for it in items:
        by_layer.setdefault(it.layer, []).append(it)
    for layer in sorted(by_layer):
        with dg.subgraph(name=f"layer_{layer}") as sub:
            sub.attr(rank="same")
            for it in by_layer[layer]:
                sub.node(it.id, **node_attrs(it))
    mags = [e.magnitude for e in edges if e.magnitude is not None]
    top = max(mags) if mags else None
    for e in edges:
        add_edge(dg, e.tail, e.head, edge_attrs(e, top, propagation))
    legend(dg, items, edges, lambdas=lambdas, propagation=propagation, highlight=highlight, top=top)
    return dg


def legend(dg: graphviz.Digraph, items: list[Item], edges: list[Edge], *, lambdas: bool, propagation: bool,
            highlight: str | None, top: float | None) -> None:
    last = max((it.layer for it in items), default=None)
    anchor = next((it.id for it in items if it.layer == last), None)
    entries: list[tuple[str, dict[str, str]]] = [
        ("source (input)", {"shape": ROLE_SHAPE["source"], "style": "filled", "fillcolor": ROLE_FILL["source"]}),
        ("hidden node", {"shape": ROLE_SHAPE["hidden"], "style": "filled", "fillcolor": ROLE_FILL["hidden"]}),
        ("terminal node\n(external feedback)", {"shape": ROLE_SHAPE["terminal"], "style": "filled",
                                                 "fillcolor": ROLE_FILL["terminal"]}),
        ("node array: one box\n(edge label: fan_in)", {"shape": "box3d", "style": "filled", "fillcolor": "#ffffff"}),
        ("A.1: stochastic / contextual\nterminal feedback", {"shape": "box", "color": A1_COLOR, "penwidth": "2.5"}),
        ("A.2: stochastic node", {"shape": "box", "peripheries": "2"}),
        ("A.3: sparse node (parents ≠\nthe whole previous layer)", {"shape": "box", "style": "diagonals"}),
    ]
    if any(it.kind == "more" for it in items):
        entries.append(("… neurons not drawn\n(dashed edges)",
                        {"shape": "note", "style": "dashed", "color": "#757575"}))
    if highlight is not None:
        entries += [
            (f"the node {highlight}", {"shape": "box", "style": "filled", "fillcolor": HIGHLIGHT_COLORS["node"],
                              "fontcolor": "white"}),
            (f"siblings of {highlight} (eq. 11)", {"shape": "box", "style": "filled",
                                                   "fillcolor": HIGHLIGHT_COLORS["siblings"]}),
            (f"sibling-extended ancestors\nof {highlight} (Def. 4)",
             {"shape": "box", "style": "filled", "fillcolor": HIGHLIGHT_COLORS["ancestors"]}),
        ]
    if lambdas and any(e.lam is None for e in edges):
        entries.append(("dark grey edge: λ not known", {"shape": "plaintext", "fontcolor": NO_LAMBDA_COLOR}))
    if propagation:
        entries.append((f"edge width ∝ mean |g̃| the child\nreceived (widest = {top:.3g})" if top is not None
                        else "edge width ∝ mean |g̃| received", {"shape": "plaintext"}))
        entries.append(("dashed: no feedback received", {"shape": "box", "style": "dashed"}))
    with dg.subgraph(name="cluster_legend") as lg:
        lg.attr(label="Legend", fontname="Helvetica", fontsize="11", style="rounded", color="#9e9e9e")
        lg.attr("node", fontsize="9", height="0.3")
        with lg.subgraph(name="legend_column") as col:
            col.attr(rank="same")  # one column: rankdir=LR stacks a rank top to bottom
            names = []
            for k, (text, attrs) in enumerate(entries):
                nid = f"{LEGEND_PREFIX}{k}"
                names.append(nid)
                col.node(nid, label=escape(text), **attrs)
            if lambdas or propagation:
                nid = f"{LEGEND_PREFIX}scale"
                names.append(nid)
                what = "edge colour: λ (synthetic share 1 − λ)" if propagation else "edge colour: λ"
                cells = "".join(f'<td bgcolor="{lambda_color(x)}" width="18"> </td>' for x in np.linspace(0, 1, 6))
                col.node(nid, shape="plaintext", label=f'<<table border="0" cellspacing="0" cellborder="0">'
                         f'<tr><td colspan="6">{what}</td></tr><tr>{cells}</tr>'
                         f'<tr><td colspan="3" align="left">0 synthetic</td>'
                         f'<td colspan="3" align="right">1 backprop</td></tr></table>>')
            for a, b in zip(names, names[1:]):  # rankdir=LR lays a rank out bottom to top
                add_edge(col, b, a, {"style": "invis", "minlen": "0"})
    if anchor is not None:  # the legend as a column right of the last layer
        add_edge(dg, anchor, names[0], {"style": "invis"})


# ----------------------------------------------------------------------- render
def render(digraph: graphviz.Digraph, path: str | os.PathLike) -> Path:
    """Write a drawing to ``path``; the suffix picks the format.

    ``.dot`` writes the DOT source; ``.svg``, ``.png`` and ``.pdf`` run graphviz's ``dot``.
    Files are written atomically (a temporary file renamed over the target).

    Parameters
    ----------
    digraph : graphviz.Digraph
        What :func:`draw` returned (anything with a ``source`` attribute).
    path : str or Path
        The output file; missing parent directories are created.

    Returns
    -------
    Path
        The file written. When ``dot`` is not on ``PATH`` this is the ``.dot`` file written
        next to ``path`` instead, and stderr says how to render it
        (``dot -Tsvg file.dot -o file.svg``).

    Raises
    ------
    ConfigError
        An unknown suffix, or ``dot`` failed.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from sggraph import Graph
    >>> from sggraph.draw import draw
    >>> g = Graph("tiny"); g.add_node("z", 1); g.add_node("y", 1, ["z"])
    >>> out = render(draw(g), pathlib.Path(tempfile.mkdtemp()) / "tiny.dot")
    >>> out.name, out.read_text().startswith("digraph tiny {")
    ('tiny.dot', True)
    >>> render(draw(g), "tiny.jpeg")
    Traceback (most recent call last):
    ...
    sggraph.exceptions.ConfigError: cannot write 'tiny.jpeg': unknown suffix '.jpeg'. Fix: name the output file .svg, .png, .pdf or .dot.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in RENDER_FORMATS:
        raise ConfigError(f"cannot write '{path}': unknown suffix '{path.suffix or '(none)'}'",
                          fix="name the output file .svg, .png, .pdf or .dot")
    source = getattr(digraph, "source", None)
    if not isinstance(source, str):
        raise ConfigError(f"render needs a graphviz drawing, got {type(digraph).__name__}",
                          fix="pass what sggraph.draw.draw returned")
    fmt = RENDER_FORMATS[suffix]
    try:
        return render_source(source, path, fmt)
    except OSError as exc:
        raise ConfigError(f"cannot write the drawing: {exc.strerror or exc}", file=str(path),
                          fix="choose an output path in a writable directory") from None


def render_source(source: str, path: Path, fmt: str | None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt is None:
        write_atomic(path, source.encode("utf-8"))
        return path
    exe = shutil.which("dot")
    if exe is None:
        dot_path = path.with_suffix(".dot")
        write_atomic(dot_path, source.encode("utf-8"))
        print(f"sggraph: graphviz's `dot` is not on PATH, so {path.name} was not rendered; wrote the DOT source "
              f"to {dot_path}. Render it with: dot -T{fmt} {dot_path} -o {path}  (install graphviz: "
              f"apt-get install graphviz, brew install graphviz or conda install graphviz)", file=sys.stderr)
        return dot_path
    with atomic_path(path) as tmp:
        proc = subprocess.run([exe, f"-T{fmt}", "-o", str(tmp)], input=source.encode("utf-8"), capture_output=True)
        if proc.returncode != 0 or not tmp.exists():
            message = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            raise ConfigError(f"graphviz dot failed (exit {proc.returncode}): {message[0] if message else 'no output'}",
                              file=str(path), fix=f"write the drawing to a .dot file and run `dot -T{fmt}` on it "
                                                  "to see the problem")
    return path
