"""The feed-forward SparseNet of the paper's App. H.3 as an sggraph :class:`~sggraph.Graph`.

Layer 1 reads ``q · n_parents`` distinct random pixels per neuron; later layers read
``n_parents`` random neurons of the layer below plus a residual parent (same index):
``h_l = tanh(h̄_l) + h_{l-1}``. The action head is the built-in ``dot`` function on the
flattened last layer: ``logits = flatten(h_L) K_actᵀ / √(W q)``.

Initialisation is the authors' (``SparsePolicy.reset_parameters``): one std ``1/√(q·n_parents)``
for the hidden keys, slot maps and biases (the slot array's default ``1/√d`` with
``d = q·n_parents``) and for the action keys.

>>> g = sparsenet_graph(width=8, layers=2, q=2, slots=2, n_parents=2, n_pixels=12, n_actions=3)
>>> [a for a in g.arrays], g.node("logits").parents
(['pixels', 'h1', 'h2'], ('h2',))
>>> g.node("logits").init_std == (2 * 2) ** -0.5
True
"""

from __future__ import annotations

from sggraph import Graph

__all__ = ["sparsenet_graph"]


def sparsenet_graph(width: int = 200, layers: int = 5, q: int = 10, slots: int = 5, n_parents: int = 5,
                    n_pixels: int = 784, n_actions: int = 10, seed: int = 0) -> Graph:
    """Build the SparseNet policy graph.

    Parameters
    ----------
    width : int
        Neurons per layer ``W``.
    layers : int
        Number of sparse layers.
    q : int
        Neuron dimension.
    slots : int
        Slots per neuron ``M``.
    n_parents : int
        Parents per neuron (layer 1 reads ``q · n_parents`` pixels).
    n_pixels : int
        Input pixels (an input array of ``n_pixels`` one-dimensional sources).
    n_actions : int
        Number of actions (logits).
    seed : int
        Seed of the random parent tables (layer ``l`` uses ``seed + l``).

    Returns
    -------
    Graph
        Arrays ``pixels, h1 … hL`` and the node ``logits`` (contextual feedback: the reward
        depends on the image's label).
    """
    g = Graph(f"sparsenet-{layers}x{width}")
    g.add_array("pixels", count=n_pixels, dim=1)
    g.add_array("h1", count=width, dim=q, parents="pixels", fan_in=q * n_parents, seed=seed + 1, slots=slots)
    for layer in range(2, layers + 1):
        g.add_array(f"h{layer}", count=width, dim=q, parents=f"h{layer - 1}", fan_in=n_parents, seed=seed + layer,
                    residual=True, slots=slots)
    g.add_node("logits", n_actions, [f"h{layers}"], fn="dot", init_std=(q * n_parents) ** -0.5)
    g.set_feedback("logits", "contextual")
    return g
