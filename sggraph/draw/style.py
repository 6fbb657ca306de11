"""Colours, shapes and the drawing's model (items, edges, groups)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["A1_COLOR", "Edge", "Group", "HIGHLIGHT_COLORS", "HIGHLIGHT_ORDER", "Item", "LAMBDA_COLORS", "LEGEND_PREFIX", "NO_FEEDBACK_COLOR", "NO_LAMBDA_COLOR", "RENDER_FORMATS", "ROLE_FILL", "ROLE_SHAPE", "UNROLLED", "escape", "lambda_color", "rgb", "shorten", "split_name"]


#: Ends of the λ scale: ``(λ = 0 synthetic, λ = 1 backprop)``.
LAMBDA_COLORS = ("#e66101", "#2166ac")
#: Fill colours of ``draw(..., node=NAME)``: the node itself, its other siblings (eq. 11)
#: and the rest of its sibling-extended ancestors (Definition 4).
HIGHLIGHT_COLORS = {"node": "#e41a1c", "siblings": "#fdd835", "ancestors": "#80cbc4"}
#: Output suffixes :func:`render` understands and the ``dot -T`` format of each (None: DOT source).
RENDER_FORMATS = {".dot": None, ".svg": "svg", ".png": "png", ".pdf": "pdf"}

ROLE_SHAPE = {"source": "cds", "hidden": "ellipse", "terminal": "octagon"}
ROLE_FILL = {"source": "#e8f5e9", "hidden": "#ffffff", "terminal": "#e3f2fd"}
A1_COLOR = "#6a1b9a"
NO_LAMBDA_COLOR = "#424242"
NO_FEEDBACK_COLOR = "#9e9e9e"
HIGHLIGHT_ORDER = ("node", "siblings", "ancestors")
LEGEND_PREFIX = "__legend__"
UNROLLED = re.compile(r"^(?P<base>[^@]+)@(?P<t>\d+)(?::(?P<i>\d+))?$")


def lambda_color(lam: float | None) -> str:
    """The colour of mixing weight ``lam`` on the scale synthetic (0, orange) → backprop (1, blue).

    Linear in RGB between :data:`LAMBDA_COLORS`; values are clipped to ``[0, 1]``;
    None or NaN gives grey.

    Parameters
    ----------
    lam : float or None

    Returns
    -------
    str
        ``#rrggbb``.

    Examples
    --------
    >>> lambda_color(1.0), lambda_color(0.0), lambda_color(0.5)
    ('#2166ac', '#e66101', '#846456')
    >>> lambda_color(None)
    '#9e9e9e'
    """
    if lam is None or not np.isfinite(lam):
        return NO_FEEDBACK_COLOR
    t = min(max(float(lam), 0.0), 1.0)
    lo, hi = (rgb(c) for c in LAMBDA_COLORS)
    return "#" + "".join(f"{round(a + (b - a) * t):02x}" for a, b in zip(lo, hi))


def rgb(color: str) -> tuple[int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def split_name(name: str) -> tuple[str, int | None]:
    base, _, rest = name.partition("[")
    return (base, int(rest[:-1])) if rest and rest[:-1].isdigit() else (name, None)


def escape(text: str) -> str:
    """Text for a DOT label: backslashes doubled, newlines as DOT's ``\\n``."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def shorten(names: Sequence[str], k: int = 3) -> str:
    head = ", ".join(names[:k])
    return head + (f", … ({len(names)} in all)" if len(names) > k else "")


# --------------------------------------------------------------------------- model
@dataclass
class Item:
    """One DOT node: a node, a neuron, an array box or a placeholder."""

    id: str
    layer: int
    kind: str  # node | group | more
    role: str  # source | hidden | terminal
    title: str
    details: list[str] = field(default_factory=list)
    marks: dict[str, str] = field(default_factory=dict)  # A1 / A2 / A3 -> label text
    highlight: str | None = None
    highlight_note: str | None = None
    dashed: bool = False
    tooltip: str = ""


@dataclass
class Edge:
    tail: str
    head: str
    text: str = ""
    lam: float | None = None
    lam_mean: bool = False  # lam is a mean over several edges
    magnitude: float | None = None  # propagation: mean |g̃| the child received
    placeholder: bool = False
    count: int = 1


@dataclass
class Group:
    """Neurons drawn as one box unless expanded: an array, or one step of an unrolled state."""

    name: str
    count: int
    members: list[str]
    title: str
    details: list[str]
    show: int | None = None  # None: one box; N: the first N neurons and a placeholder


