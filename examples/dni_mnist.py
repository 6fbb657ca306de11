"""Decoupled neural interfaces on an unmodified PyTorch MLP with ``sggraph.trace``: backprop, DNI, cDNI and
adaptive λ on MNIST.

Run:  python examples/dni_mnist.py [--steps 2000] [--methods backprop,dni,cdni,adaptive] [--out dni.json]

The model is a plain ``nn.Module`` (784 → 256 → 256 → 10, ReLU). ``sggraph.trace`` cuts it after
``fc1`` and ``fc2``: at a cut, λ = 0, so the layers above it learn only from a synthetic gradient
that a one-hidden-layer generator (DNI's synthesizer) predicts from the cut activation, and the
generator regresses onto the true gradient arriving at the cut (Jaderberg et al. 2017):

* ``backprop`` — the module trained by its own autograd;
* ``dni`` — λ = 0 at both cuts;
* ``cdni`` — the same, the generators also reading the one-hot label (conditional DNI);
* ``adaptive`` — the cuts start at λ = 0.5 and each cut's λ follows eq. 18 (adaptive λ, every
  ``--adapt-every`` steps: its per-sample gradients cost more than the step), which no DNI library offers.

Every method starts from the same weights and sees the same batches (the embedded 10,000 MNIST
digits: 8,000 to train on, 2,000 held out; ``--data DIR`` reads another IDX directory). The script
prints and writes (``--out``) each method's final training loss and held-out accuracy.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import sggraph
from sggraph.envs.mnist import load_mnist

METHODS = ("backprop", "dni", "cdni", "adaptive")


class MLP(nn.Module):
    """784 → 256 → 256 → 10 with ReLU: an ordinary PyTorch model, not written for sggraph."""

    def __init__(self, width: int = 256) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(784, width), nn.Linear(width, width), nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x.flatten(1))))))


def build() -> sggraph.TraceSpec:
    """The traced model for ``sggraph draw examples/dni_mnist.py:build -o dni.svg`` (and check-conditions):
    the MLP with DNI cuts after fc1 and fc2; the loss against the label is contextual feedback."""
    return sggraph.TraceSpec(MLP(), torch.zeros(2, 1, 28, 28),
                             options={"cuts": ["fc1", "fc2"], "feedback": {"fc3": "contextual"}})


def data(data_dir: str | None, held_out: int = 2000) -> tuple[torch.Tensor, ...]:
    images, labels = load_mnist(data_dir)
    x = (torch.as_tensor(images, dtype=torch.float32) / 255.0 - 0.1307) / 0.3081
    y = torch.as_tensor(labels, dtype=torch.long)
    x = x.unsqueeze(1)
    return x[:-held_out], y[:-held_out], x[-held_out:], y[-held_out:]


def run(method: str, model: nn.Module, train: tuple, test: tuple, steps: int, batch: int, seed: int,
        lr: float, generator_lr: float, adapt_every: int = 10) -> dict:
    """Train ``model`` with ``method`` for ``steps`` batches; the final loss, accuracy and (adaptive) λ."""
    x_train, y_train = train
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    net = None
    if method != "backprop":
        synth = {"cut:fc1": "mlp", "cut:fc2": "mlp"}
        net = sggraph.trace(model, x_train[:batch], cuts=["fc1", "fc2"], generators=synth,
                            context=10 if method == "cdni" else None)
        if method == "adaptive":
            for cut in ("fc1", "fc2"):
                net.set_lambda(0.5, (cut, f"cut:{cut}"))
        generator_optimizer = torch.optim.Adam(net.generator_parameters(), lr=generator_lr)
    losses = []
    for step in range(steps):
        idx = torch.randint(0, len(x_train), (batch,), generator=gen)
        x, y = x_train[idx], y_train[idx]
        optimizer.zero_grad(set_to_none=True)
        if net is None:
            loss = F.cross_entropy(model(x), y)
            loss.backward()
        else:
            context = F.one_hot(y, 10).float() if method == "cdni" else None
            loss = F.cross_entropy(net(x, context=context), y)
            loss.backward()
            if method == "adaptive" and step % adapt_every == 0:  # eq. 18 from per-sample gradients: costly
                net.adapt_lambda(momentum=0.9, nodes=["fc1", "fc2"])
        optimizer.step()
        if net is not None:
            net.update_generators(generator_optimizer)
        losses.append(float(loss.detach()))
    model.eval()
    with torch.no_grad():
        accuracy = float((model(test[0]).argmax(1) == test[1]).float().mean())
    model.train()
    tail = losses[-max(1, steps // 10):]
    result = {"method": method, "steps": steps, "final_train_loss": sum(tail) / len(tail),
              "held_out_accuracy": accuracy}
    if net is not None:
        result["lambda"] = {cut: net.get_lambda((cut, f"cut:{cut}")) for cut in ("fc1", "fc2")}
    return result


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of the model")
    parser.add_argument("--generator-lr", type=float, default=1e-4, help="Adam learning rate of the generators")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--adapt-every", type=int, default=10,
                        help="adaptive: update λ by eq. 18 every this many steps (per-sample gradients are costly)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=None, help="MNIST IDX directory (default: the embedded 10,000 digits)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown method {unknown[0]!r}; use {', '.join(METHODS)}")
    x_train, y_train, x_test, y_test = data(args.data)
    torch.manual_seed(args.seed)
    start = MLP(args.width)
    results = []
    for method in methods:
        result = run(method, copy.deepcopy(start), (x_train, y_train), (x_test, y_test), args.steps, args.batch,
                     args.seed, args.lr, args.generator_lr, args.adapt_every)
        results.append(result)
        lam = f"  λ {result['lambda']}" if method == "adaptive" else ""
        print(f"{method:9s} loss {result['final_train_loss']:.4f}  held-out accuracy "
              f"{result['held_out_accuracy']:.4f}{lam}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
