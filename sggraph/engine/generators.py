"""Synthetic-gradient generators ``ĥ_v(z_v) ≈ E[g̃_v | z_v]`` (eq. 13/15).

A generator is any ``nn.Module`` called as ``generator(z)`` or, when its ``forward`` takes a
second positional argument, ``generator(z, aux)`` (:func:`takes_aux` decides, at compile time):

* plain nodes: ``z`` is ``[B, Σ parent dims]``, the result ``[B, dim]``;
* arrays: ``z`` is ``[N, B, d]`` (neuron-major local inputs) and ``aux`` holds
  the template's forward quantities (``alpha``); the result is ``[N, B, q]``.

Generators are trained by regression (MSE) onto the feedback their node received
in the last backward — the bootstrapped, TD-like target — with their own
optimizer; :class:`TabularGenerator` instead keeps exact conditional means.

>>> import torch
>>> g = LinearGenerator(3, 2)
>>> g(torch.ones(4, 3)).abs().sum().item()   # zero-initialised
0.0
"""

from __future__ import annotations

import inspect
import sys

import torch
from torch import nn

from .neuron import SlotMix, is_batch_last

__all__ = ["GENERATOR_INITS", "LinearGenerator", "SlotGenerator", "TabularGenerator", "call_generator",
           "generator_init_std", "takes_aux"]


#: Named generator initialisations: ``zero`` (a generator that starts by predicting 0) and
#: ``normal`` (weights and biases ``N(0, 1/in_dim)``, the authors' MNIST-bandit generators).
GENERATOR_INITS = ("zero", "normal")


def call_generator(method, *args):
    """``method(*args)`` for a generator's ``forward``/``step``/``project_input``, always run eagerly.

    Under ``torch.compile`` the call is left out of the compiled graph (``torch.compiler.disable``),
    so the prediction ``ĥ_v`` keeps an autograd graph of its own. The generator update is a
    second backward, through ``ĥ_v`` only, after the model's backward; were ``ĥ_v`` an output of
    the compiled forward, it would share one autograd node with the model's outputs, whose saved
    tensors that first backward frees. Outside ``torch.compile`` this is a plain call.

    >>> g = LinearGenerator(3, 2)
    >>> call_generator(g, torch.ones(4, 3)).shape
    torch.Size([4, 2])
    """
    if "torch._dynamo" not in sys.modules:  # torch.compile has never been loaded: nothing can be compiling
        return method(*args)
    return _eager_caller()(method, *args)


def _call(method, *args):
    return method(*args)


def _eager_caller():
    """``_call`` under ``torch.compiler.disable``, made on first use (it imports ``torch._dynamo``,
    which ``import sggraph`` avoids) and kept as an attribute of ``_call``."""
    caller = getattr(_call, "eager", None)
    if caller is None:
        caller = _call.eager = torch.compiler.disable(_call)
    return caller


def generator_init_std(init: str, in_dim: int) -> float | None:
    """The normal std of a named generator init for ``in_dim`` inputs (None: zero init).

    >>> generator_init_std("normal", 50) == 50 ** -0.5, generator_init_std("zero", 50)
    (True, None)
    """
    if init not in GENERATOR_INITS:
        raise ValueError(f"unknown generator init {init!r}; use one of {', '.join(GENERATOR_INITS)}")
    return in_dim ** -0.5 if init == "normal" else None


def takes_aux(generator: nn.Module) -> bool | None:
    """Whether ``generator.forward`` takes ``(z, aux)`` (True), only ``z`` (False), or neither (None).

    >>> takes_aux(nn.Linear(4, 2)), takes_aux(LinearGenerator(4, 2))
    (False, True)
    """
    try:
        params = list(inspect.signature(generator.forward).parameters.values())
    except (TypeError, ValueError):  # no signature to read: the engine's convention
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    if any(p.kind == p.VAR_POSITIONAL for p in params) or len(positional) >= 2:
        return None if len(required) > 2 else True
    return False if len(positional) == 1 else None


class LinearGenerator(nn.Module):
    """``ĥ(z) = W z + c``. Shapes: ``z [B, in_dim] -> [B, dim]``.

    Zero-initialised, or ``W, c ~ N(0, init_std²)`` when ``init_std`` is given.
    """

    def __init__(self, in_dim: int, dim: int, init_std: float | None = None) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, dim)
        if init_std is None:
            nn.init.zeros_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)
        else:
            nn.init.normal_(self.linear.weight, 0.0, init_std)
            nn.init.normal_(self.linear.bias, 0.0, init_std)

    def forward(self, z: torch.Tensor, aux: dict | None = None) -> torch.Tensor:
        return self.linear(z)

    def __repr__(self) -> str:
        return f"LinearGenerator({self.linear.in_features} -> {self.linear.out_features})"


class SlotGenerator(nn.Module):
    """The SparseNet neuron's generator (eq. 144): ``ĥ_i = Σ_s α_{i,s} (Ã_{i,s} u_i + b̃_{i,s})``.

    The routing weights ``α`` are the neuron's own (from ``aux``), detached, so the
    generator shares the routing but learns only its slot maps ``Ã, b̃``.

    Parameters
    ----------
    count, in_dim, dim, slots : int
        ``N, d, q, M`` as in :class:`~sggraph.engine.neuron.SlotNeuronArray`.
    init_std : float, optional
        Initialise ``Ã, b̃ ~ N(0, init_std²)`` (the authors' MNIST bandit uses ``1/√d``);
        default zero (the authors' POPGym generators).

    Attributes
    ----------
    weight : Parameter ``[N, M·q, d]``
    bias : Parameter ``[N, M·q]``
    """

    def __init__(self, count: int, in_dim: int, dim: int, slots: int, init_std: float | None = None) -> None:
        super().__init__()
        self.count, self.in_dim, self.dim, self.slots = count, in_dim, dim, slots
        self.weight = nn.Parameter(torch.zeros(count, slots * dim, in_dim))
        self.bias = nn.Parameter(torch.zeros(count, slots * dim))
        if init_std is not None:
            nn.init.normal_(self.weight, 0.0, init_std)
            nn.init.normal_(self.bias, 0.0, init_std)

    def forward(self, u: torch.Tensor, aux: dict | None = None) -> torch.Tensor:
        """``u [N, B, d]``, ``aux['alpha'] [N, B, M]`` → ``[N, B, q]``."""
        if aux is None or "alpha" not in aux:
            raise ValueError("SlotGenerator needs the template's routing weights (aux['alpha'])")
        n, b, _ = u.shape
        alpha = aux["alpha"].detach()
        if is_batch_last(alpha):  # the array's own layout (samples last): mix along rows of B, return a view
            pre = torch.baddbmm(self.bias.unsqueeze(-1), self.weight, u.transpose(1, 2))  # [N, M q, B]
            return SlotMix.apply(pre.view(n, self.slots, self.dim, b), alpha.transpose(1, 2)).transpose(1, 2)
        pre = torch.baddbmm(self.bias.unsqueeze(1), u, self.weight.transpose(1, 2))
        return (alpha.unsqueeze(-1) * pre.view(n, b, self.slots, self.dim)).sum(-2)  # not a 1×M matmul: slow on CPU

    def extra_repr(self) -> str:
        return f"count={self.count}, in_dim={self.in_dim}, dim={self.dim}, slots={self.slots}"


class TabularGenerator(nn.Module):
    """Conditional empirical mean of the received feedback over a discrete ``z``.

    ``ĥ(z)`` is the mean of every target observed with exactly this ``z`` (rows
    compared exactly, on ``columns`` when given), and 0 for a ``z`` never seen.
    Updated by :meth:`observe` (the compiled graph calls it from
    ``update_generators``), not by an optimizer. Vectorised: keys are matched with
    ``torch.unique`` over rows.

    Parameters
    ----------
    dim : int
        Output size.
    columns : sequence of int, optional
        Which columns of ``z`` form the key (default all) — e.g. an expert's ``k``
        coordinates of the target node's output.

    >>> import torch
    >>> t = TabularGenerator(1)
    >>> t.observe(torch.tensor([[1.0], [1.0], [-1.0]]), torch.tensor([[2.0], [4.0], [5.0]]))
    >>> t(torch.tensor([[1.0], [-1.0], [0.0]])).flatten().tolist()
    [3.0, 5.0, 0.0]
    """

    def __init__(self, dim: int, columns: list[int] | None = None) -> None:
        super().__init__()
        self.dim = dim
        self.columns = None if columns is None else list(columns)
        self.keys: torch.Tensor | None = None  # [K, c] observed keys
        self.sums: torch.Tensor | None = None  # [K, dim] float64
        self.counts: torch.Tensor | None = None  # [K]

    def _key(self, z: torch.Tensor) -> torch.Tensor:
        zz = z.detach() if self.columns is None else z.detach()[:, self.columns]
        return zz.to(torch.float64)

    @staticmethod
    def _unique_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``torch.unique(rows, dim=0, return_inverse=True)``, fast when the rows are few-valued:
        each column is coded by its own unique values and the codes combined in mixed radix."""
        codes = torch.zeros(len(rows), dtype=torch.long, device=rows.device)
        radix = 1
        for col in rows.T:
            values, inverse = torch.unique(col, return_inverse=True)
            radix_next = radix * len(values)
            if radix_next >= 2 ** 62:
                return torch.unique(rows, dim=0, return_inverse=True)
            codes += inverse * radix
            radix = radix_next
        uniq_codes, inverse = torch.unique(codes, return_inverse=True)
        representative = torch.zeros(len(uniq_codes), dtype=torch.long, device=rows.device)
        representative.scatter_(0, inverse, torch.arange(len(rows), device=rows.device))
        return rows[representative], inverse

    def forward(self, z: torch.Tensor, aux: dict | None = None) -> torch.Tensor:
        out = torch.zeros(z.shape[0], self.dim, dtype=z.dtype, device=z.device)
        if self.keys is None:
            return out
        query = self._key(z)
        _, inverse = self._unique_rows(torch.cat([self.keys, query]))
        known = torch.full((int(inverse.max()) + 1,), -1, dtype=torch.long, device=z.device)
        known[inverse[: len(self.keys)]] = torch.arange(len(self.keys), device=z.device)
        slot = known[inverse[len(self.keys):]]
        hit = slot >= 0
        means = self.sums / self.counts.unsqueeze(1)  # type: ignore[operator]
        out[hit] = means[slot[hit]].to(z.dtype)
        return out

    @torch.no_grad()
    def observe(self, z: torch.Tensor, target: torch.Tensor) -> None:
        """Add ``target [B, dim]`` observed at ``z [B, in]`` to the running means."""
        key = self._key(z)
        tgt = target.detach().to(torch.float64).reshape(len(key), self.dim)
        ones = torch.ones(len(key), dtype=torch.float64, device=key.device)
        if self.keys is not None:
            key = torch.cat([self.keys, key])
            tgt = torch.cat([self.sums, tgt])  # type: ignore[list-item]
            ones = torch.cat([self.counts, ones])  # type: ignore[list-item]
        uniq, inverse = self._unique_rows(key)
        self.keys = uniq
        self.sums = torch.zeros(len(uniq), self.dim, dtype=torch.float64, device=key.device).index_add_(0, inverse, tgt)
        self.counts = torch.zeros(len(uniq), dtype=torch.float64, device=key.device).index_add_(0, inverse, ones)

    def reset(self) -> None:
        """Forget every observation."""
        self.keys = self.sums = self.counts = None

    def __repr__(self) -> str:
        return f"TabularGenerator(dim={self.dim}, keys={0 if self.keys is None else len(self.keys)})"
