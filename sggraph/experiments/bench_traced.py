"""The ``traced`` section of ``sggraph bench``: a traced ``nn.Module`` against the module itself.

One training step (zero the gradients, forward, cross-entropy, backward, an SGD step on
``module.parameters()``) of the plain module and of its :func:`sggraph.trace` net, interleaved in
one process at the same thread count, for two models on MNIST-shaped batches of 128:

* ``mlp`` — ``Linear(784, 256) → ReLU → Linear(256, 256) → ReLU → Linear(256, 10)`` (named layers,
  functional ReLUs: 3 nodes);
* ``cnn`` — ``conv 1→8 3×3 → ReLU → max-pool → conv 8→16 3×3 → ReLU → max-pool → Linear(784, 10)``
  (3 nodes).

Variants of the traced net:

* ``traced_backprop`` — ``net.synthetic = False``: the engine's plain path (λ ignored, no mixer);
* ``traced_lambda1`` — mixers on at λ = 1 everywhere (the child path: one mixer per node output),
  no learned generators (``generators="none"``);
* ``traced_lambda1_linear`` — the same with the default linear generators, whose predictions ``ĥ``
  are computed in every forward (not trained here).

JSON keys: ``{model}_{variant}_ms`` (median milliseconds) and ``{model}_{variant}_over_module``
(the ratio to the module's own step, from the same interleaved rounds), plus ``threads`` and ``batch``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .timing import median_ms as _median_ms

__all__ = ["TRACED_VARIANTS", "bench_traced", "traced_calls"]

#: The traced variants: name → (``trace`` options, ``net.synthetic``).
TRACED_VARIANTS = {"traced_backprop": ({"generators": "none"}, False),
                   "traced_lambda1": ({"generators": "none"}, True),
                   "traced_lambda1_linear": ({"generators": "linear"}, True)}

TRACED_WARMUP = 5


class BenchMLP(nn.Module):
    """The MLP of the traced bench (2 × 256 hidden units)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(784, 256), nn.Linear(256, 256), nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x.flatten(1))))))


class BenchCNN(nn.Module):
    """The small CNN of the traced bench."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))


def _step(fn: Callable, params: list, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    opt = torch.optim.SGD(params, lr=1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(fn(x), y).backward()
        opt.step()

    return step


def traced_calls(steps: int, warmup: int = TRACED_WARMUP) -> int:
    """How many times :func:`bench_traced` ticks (once per step of every variant and model).

    >>> traced_calls(30)
    280
    """
    return 2 * (1 + len(TRACED_VARIANTS)) * (steps + warmup)


def bench_traced(steps: int = 30, warmup: int = TRACED_WARMUP, batch: int = 128, seed: int = 0,
                 tick: Callable[[], object] = lambda: None) -> dict:
    """Median milliseconds per training step of each model and traced variant, and the ratios to the module.

    >>> r = bench_traced(steps=1, warmup=0, batch=4)
    >>> sorted(k for k in r if k.startswith("mlp_") and k.endswith("_over_module"))
    ['mlp_traced_backprop_over_module', 'mlp_traced_lambda1_linear_over_module', 'mlp_traced_lambda1_over_module']
    """
    from ..tracing import trace

    result: dict = {"threads": torch.get_num_threads(), "batch": batch}
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (batch,), generator=gen)
    for name, make in (("mlp", BenchMLP), ("cnn", BenchCNN)):
        torch.manual_seed(seed)
        base = make()
        steps_of = {"module": _step(base, list(base.parameters()), x, y)}
        for variant, (options, synthetic) in TRACED_VARIANTS.items():
            model = make()
            model.load_state_dict(base.state_dict())
            net = trace(model, x, **options)
            net.synthetic = synthetic
            steps_of[variant] = _step(net, list(model.parameters()), x, y)
        ms = _median_ms(steps_of, steps, warmup, tick)
        for variant, value in ms.items():
            result[f"{name}_{variant}_ms"] = round(value, 3)
            if variant != "module":
                result[f"{name}_{variant}_over_module"] = round(value / ms["module"], 3)
    return result
