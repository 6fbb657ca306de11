"""An independent implementation of eq. 5–6 with explicit Jacobians, for tests.

It walks the graph unit by unit (plain nodes and single neurons), computes each
unit's local Jacobians with ``torch.autograd.functional.jacobian`` (neurons through
the literal per-neuron formula :func:`sggraph.engine.neuron.slot_neuron_reference`) and
runs the recursion of eq. 5 sample by sample:

    g̃_u += λ_{u→v} J_uᵀ g̃_v + (1 − λ_{u→v}) J_uᵀ ĥ_v
    grad θ_v = Σ_b J_θᵀ (λ^self_v g̃_v + (1 − λ^self_v) ĥ_v)

It shares no code with the compiler's mixing path.
"""

from __future__ import annotations

import math

import torch
from torch.autograd.functional import jacobian
from torch.func import functional_call

from sggraph.engine.neuron import slot_neuron_reference


def _per_sample_jacobian(fn, x):
    """``fn: [B, n] -> [B, m]`` with independent rows → ``[B, m, n]``."""
    full = jacobian(fn, x)  # [B, m, B, n]
    b = x.shape[0]
    return torch.stack([full[i, :, i, :] for i in range(b)])


def _param_jacobians(fn, params: dict):
    """``fn(**params) -> [B, m]`` → per-parameter ``[B, m, *p.shape]``."""
    names = list(params)
    jac = jacobian(lambda *ps: fn(dict(zip(names, ps))), tuple(params[n] for n in names))
    return dict(zip(names, jac))


def reference_gradients(net, inputs, feedback):
    """Parameter gradients of ``net``'s model parameters under eq. 5–6.

    Parameters
    ----------
    net : CompiledGraph
        Supplies functions, generators, λ, λ^self and the graph (not its mixing code).
    inputs : dict
        Source tensors as for ``net(inputs)``.
    feedback : dict
        Terminal feedback per terminal block: ``[B, dim]`` or ``[B, N, q]`` for arrays.

    Returns
    -------
    dict mapping parameter objects' ids to gradient tensors.
    """
    from sggraph.engine.blocks import ArrayBlock as _ArrayBlock
    from sggraph.engine.blocks import NodeBlock as _NodeBlock
    from sggraph.engine.blocks import split_ref as _split_ref

    g = net.graph
    unit_value: dict[str, torch.Tensor] = {}  # unit -> [B, d]
    for name, src in net.sources.items():
        x = inputs[name]
        if src.count is None:
            unit_value[name] = x
        else:
            x = x if x.dim() == 3 else x.unsqueeze(-1)
            for i in range(src.count):
                unit_value[f"{name}[{i}]"] = x[:, i]
    local = {}  # unit -> dict(parents=[(unit, slice, lam)], z, J_z, J_theta, h, lam_self, block, index)
    for name in net.order:
        if name not in net.blocks:
            continue
        block = net.blocks[name]
        if isinstance(block, _NodeBlock):
            parts, cols, start = [], [], 0
            for k, ref in enumerate(block.parents):
                if ref in g.arrays:  # a whole array: every neuron, one shared λ
                    units = [f"{ref}[{i}]" for i in range(g.arrays[ref].count)]
                else:
                    units = [ref]
                for unit in units:
                    width = unit_value[unit].shape[1]
                    parts.append(unit_value[unit])
                    cols.append((unit, slice(start, start + width), block.lam[k]))
                    start += width
            z = torch.cat(parts, dim=-1).detach()
            f = block.function
            x = f(z).detach()
            jz = _per_sample_jacobian(f, z)
            params = dict(f.named_parameters())
            jt = _param_jacobians(lambda ps, f=f, z=z: functional_call(f, ps, (z,)),
                                  {k: v.detach() for k, v in params.items()}) if params else {}  # relays: none
            h = block.generator(z, None).detach()
            unit_value[name] = x
            local[name] = dict(parents=cols, jz=jz, jt={k: (params[k], v, None) for k, v in jt.items()}, h=h,
                               lam_self=block.lam_self)
        else:
            assert isinstance(block, _ArrayBlock)
            arr = block.function
            gen = block.generator
            table = block.table
            q, qp, m = block.dim, block.parent_dim, arr.slots
            for i in range(block.count):
                refs = [f"{block.parent}[{int(j)}]" for j in table[i]]
                u = torch.cat([unit_value[r] for r in refs], dim=-1).detach()
                cols = [(r, slice(k * qp, (k + 1) * qp), block.lam[i, k]) for k, r in enumerate(refs)]
                res = unit_value[f"{block.parent}[{i}]"].detach() if block.residual else None
                d = u.shape[1]
                pk, pw, pb = arr.keys[i].detach(), arr.weight[i].detach(), arr.bias[i].detach()
                if res is not None:
                    zfull = torch.cat([u, res], dim=-1)
                    cols.append((f"{block.parent}[{i}]", slice(d, d + q), block.lam[i, block.fan_in]))
                    fz = lambda zz: slot_neuron_reference(zz[:, :d], pk, pw, pb, zz[:, d:])
                    fp = lambda ps: slot_neuron_reference(u, ps["keys"], ps["weight"], ps["bias"], res)  # noqa
                else:
                    zfull = u
                    fz = lambda zz: slot_neuron_reference(zz, pk, pw, pb)
                    fp = lambda ps: slot_neuron_reference(u, ps["keys"], ps["weight"], ps["bias"])
                x = fz(zfull).detach()
                jz = _per_sample_jacobian(fz, zfull)
                jt = _param_jacobians(fp, {"keys": pk, "weight": pw, "bias": pb})
                # the generator, literally (eq. 144)
                alpha = torch.softmax(torch.stack([u @ pk[s] / math.sqrt(d) for s in range(m)], -1), -1)
                h = torch.zeros(u.shape[0], q, dtype=u.dtype)
                for s in range(m):
                    h = h + alpha[:, s:s + 1] * (u @ gen.weight[i, s * q:(s + 1) * q].detach().T
                                                 + gen.bias[i, s * q:(s + 1) * q].detach())
                unit = f"{name}[{i}]"
                unit_value[unit] = x
                local[unit] = dict(parents=cols, jz=jz,
                                   jt={("keys", i): (arr.proj, jt["keys"], (i, slice(0, m))),
                                       ("weight", i): (arr.proj, jt["weight"], (i, slice(m, None))),
                                       ("bias", i): (arr.bias, jt["bias"], i)},
                                   h=h, lam_self=block.lam_self[i])
    # terminal feedback
    received: dict[str, torch.Tensor] = {}
    for name, fb in feedback.items():
        block = net.blocks[name]
        if isinstance(block, _ArrayBlock):
            for i in range(block.count):
                received[f"{name}[{i}]"] = fb[:, i].clone()
        else:
            received[name] = fb.clone()
    grads: dict[int, torch.Tensor] = {}
    for unit in reversed(list(local)):
        info = local[unit]
        gv = received.get(unit)
        if gv is None:
            gv = torch.zeros_like(info["h"])
        h = info["h"]
        for ref, sl, lam in info["parents"]:
            ju = info["jz"][:, :, sl]  # [B, d_v, d_u]
            contrib = lam * torch.einsum("bij,bi->bj", ju, gv) + (1 - lam) * torch.einsum("bij,bi->bj", ju, h)
            if _split_ref(ref)[0] in net.sources:
                continue
            received[ref] = received.get(ref, torch.zeros_like(contrib)) + contrib
        c = info["lam_self"] * gv + (1 - info["lam_self"]) * h  # [B, d_v]
        for p, jac, idx in info["jt"].values():
            gp = torch.einsum("bi,bi...->...", c, jac)
            full = grads.setdefault(id(p), torch.zeros_like(p))
            if idx is None:
                full += gp
            else:
                full[idx] += gp
    return grads


def direct_lambda(p: torch.Tensor, s: torch.Tensor, normalize: bool) -> torch.Tensor:
    """eq. 18 from explicit per-sample vectors ``[B, P]``, written out term by term."""
    if normalize:
        p = p / (p.norm(dim=1, keepdim=True) + 1e-12)
        s = s / (s.norm(dim=1, keepdim=True) + 1e-12)
    b = p.shape[0]
    u = s - p
    u_bar, p_bar = u.mean(0), p.mean(0)
    v = ((u - u_bar) ** 2).sum() / (b - 1) / b  # variance of the batch mean of u
    c = ((p - p_bar) * (u - u_bar)).sum() / (b - 1) / b  # covariance of the batch means of p and u
    bias2 = torch.clamp(u_bar.dot(u_bar) - v, min=0)
    return torch.clamp(1 + c / (v + bias2), 0, 1)
