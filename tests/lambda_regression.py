"""A regression target for the adaptive-λ tests (``test_adaptive_lambda``, ``test_parent_lambda``).

A terminal node ``y`` reads a node ``x`` and receives the feedback ``g_b = A x_b + noise·ε``, while
its generator predicts ``A x`` (plus a bias). With noisy feedback and an exact generator, λ on
what ``y`` sends back should fall towards 0; with exact feedback and a biased generator, rise
towards 1.
"""

from __future__ import annotations

import torch


def train_on_linear_feedback(net, read: str, noise: float, generator_bias: float, steps: int,
                             normalize: bool) -> None:
    """Train ``net`` (a source ``z`` 4 wide, a terminal ``y`` with a linear generator that reads the node
    ``read``) on the feedback above, adapting λ (momentum 0.8) after each of ``steps`` batches of 64.

    ``A`` (``y``'s width × ``read``'s width) is drawn from torch's global generator and copied into
    ``y``'s generator, whose bias is set to ``generator_bias``; the inputs and the noise come from a
    generator seeded with 1.
    """
    linear = net.blocks["y"].generator.linear
    a = torch.randn(linear.weight.shape)
    with torch.no_grad():
        linear.weight.copy_(a)
        linear.bias.fill_(generator_bias)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        z = torch.randn(64, 4, generator=gen)
        if read == "z":
            x = z
        else:
            with torch.no_grad():
                x = net.activations({"z": z}, [read])[read]
        feedback = x @ a.T + noise * torch.randn(64, a.shape[0], generator=gen)
        out = net({"z": z})
        (out["y"] * feedback).sum().backward()
        net.adapt_lambda(momentum=0.8, normalize=normalize)
