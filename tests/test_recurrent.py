"""Recurrent cells: the compiled cell against its unrolled feed-forward compile, BPTT, resets, schedule."""

from __future__ import annotations

import math
import time

import pytest
import torch
from torch import nn

import sggraph
from sggraph.core.unroll import Cell, unroll
from sggraph.engine.recurrent import compile_cell, temporal_schedule

T, B, N, Q, F, M, NIN, OBS, EMB, ACT = 4, 3, 6, 2, 2, 2, 2, 3, 4, 3


def make_cell():
    cell = Cell("rnn")
    cell.add_input("obs", OBS)
    cell.add_node("emb", EMB, ["obs"], fn="tanh")
    cell.set_state("h", count=N, dim=Q, fan_in=F, slots=M, seed=3, input="emb", input_neurons=NIN)
    cell.add_node("act", ACT, ["h"], fn="linear")
    return cell


class NeuronView(nn.Module):
    """Neuron i of a RecurrentSlotArray as a plain node function (parameters shared)."""

    def __init__(self, array, i):
        super().__init__()
        self.array, self.i = array, i

    def pre(self, z, proj, proj_in, bias):
        a, i = self.array, self.i
        u = z[:, : a.rec_dim]
        out = u @ proj[i].T
        if i < a.input_neurons:
            out = out + z[:, a.rec_dim:] @ proj_in[i].T
        alpha = torch.softmax(out[:, : a.slots] * a.scale[i], dim=-1)
        return alpha, out[:, a.slots:]

    def forward(self, z):
        a = self.array
        alpha, slot = self.pre(z, a.proj, a.proj_in, a.bias)
        y = torch.tanh(slot + a.bias[self.i]).view(z.shape[0], a.slots, a.dim)
        return (alpha.unsqueeze(-1) * y).sum(1)


class GeneratorView(nn.Module):
    def __init__(self, view, generator):
        super().__init__()
        self.view, self.generator = view, generator

    def forward(self, z, aux=None):
        a, g, i = self.view.array, self.generator, self.view.i
        alpha, _ = self.view.pre(z, a.proj.detach(), a.proj_in.detach(), a.bias.detach())
        u = z[:, : a.rec_dim]
        pre = u @ g.weight[i].T + g.bias[i]
        if i < a.input_neurons:
            pre = pre + z[:, a.rec_dim:] @ g.weight_in[i].T
        return (alpha.detach().unsqueeze(-1) * pre.view(z.shape[0], a.slots, a.dim)).sum(1)


def unrolled_twin(rnet, steps):
    """The same cell written out with `unroll` and compiled feed-forward, parameters shared."""
    g = unroll(rnet.cell, steps)
    arr, gen = rnet.state.function, rnet.state.generator
    functions, generators = {}, {}
    for i in range(N):
        view = NeuronView(arr, i)
        for t in range(1, steps + 1):
            functions[f"h@{t}:{i}"] = view
            generators[f"h@{t}:{i}"] = GeneratorView(view, gen)
    for t in range(1, steps + 1):
        for name in ("emb", "act"):
            functions[f"{name}@{t}"] = rnet.blocks[name].function
            generators[f"{name}@{t}"] = rnet.blocks[name].generator
    return sggraph.compile(g, functions, generators, grouping=rnet.grouping).to(torch.float64), g


def _params(rnet):
    return [rnet.state.function.proj, rnet.state.function.proj_in, rnet.state.function.bias,
            *rnet.blocks["emb"].function.parameters(), *rnet.blocks["act"].function.parameters()]


def _zero(params):
    for p in params:
        p.grad = None


def _data(seed):
    gen = torch.Generator().manual_seed(seed)
    obs = torch.randn(T, B, OBS, generator=gen, dtype=torch.float64)
    fb = torch.randn(T, B, ACT, generator=gen, dtype=torch.float64)
    return obs, fb


def _recurrent_grads(rnet, obs, fb, resets=None):
    params = _params(rnet)
    _zero(params)
    out = rnet({"obs": obs}, resets=resets)
    (out["act"] * fb).sum().backward()
    return [p.grad.clone() for p in params], out["act"].detach()


def _unrolled_grads(rnet, fnet, obs, fb):
    params = _params(rnet)
    _zero(params)
    inputs = {f"obs@{t + 1}": obs[t] for t in range(T)}
    inputs.update({f"h@0:{i}": torch.zeros(B, Q, dtype=torch.float64) for i in range(N)})
    out = fnet(inputs)
    sum((out[f"act@{t + 1}"] * fb[t]).sum() for t in range(T)).backward()
    return [p.grad.clone() for p in params], torch.stack([out[f"act@{t + 1}"] for t in range(T)]).detach()


def random_generators(rnet, gen):
    """Give every generator parameter random weights (std 0.4) from ``gen``, so predictions are non-zero."""
    with torch.no_grad():
        for p in rnet.generator_parameters():
            p.copy_(0.4 * torch.randn(p.shape, generator=gen, dtype=p.dtype))


@pytest.mark.parametrize("seed", range(3))
def test_edge_grouping_random_lambda_equals_unrolled_feed_forward(seed):
    torch.manual_seed(seed)
    rnet = compile_cell(make_cell(), grouping="edge").double()
    gen = torch.Generator().manual_seed(seed)
    random_generators(rnet, gen)
    with torch.no_grad():
        for block in rnet.blocks.values():
            block.lam.copy_(torch.rand(block.lam.shape, generator=gen, dtype=torch.float64))
            block.lam_self.copy_(torch.rand(block.lam_self.shape, generator=gen, dtype=torch.float64))
    fnet, _ = unrolled_twin(rnet, T)
    table = rnet.state.table
    st = rnet.state
    for t in range(1, T + 1):
        for i in range(N):
            node = f"h@{t}:{i}"
            blk = fnet.blocks[node]
            with torch.no_grad():
                blk.lam[:F] = st.lam[i, :F]
                if i < NIN:
                    blk.lam[F] = st.lam[i, F]
                blk.lam_self.fill_(float(st.lam_self[i]))
            assert blk.parents[:F] == tuple(f"h@{t - 1}:{int(j)}" for j in table[i])
        for name in ("emb", "act"):
            with torch.no_grad():
                fnet.blocks[f"{name}@{t}"].lam.fill_(float(rnet.blocks[name].lam[0]))
                fnet.blocks[f"{name}@{t}"].lam_self.fill_(float(rnet.blocks[name].lam_self))
    obs, fb = _data(seed)
    got, out_r = _recurrent_grads(rnet, obs, fb)
    assert rnet.paths()["h"] == "general"
    want, out_f = _unrolled_grads(rnet, fnet, obs, fb)
    torch.testing.assert_close(out_r, out_f, rtol=1e-10, atol=1e-12)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-10)


def test_child_grouping_with_temporal_schedule_equals_unrolled_feed_forward():
    torch.manual_seed(0)
    rnet = compile_cell(make_cell(), grouping="child", rho=0.3).double()
    gen = torch.Generator().manual_seed(1)
    random_generators(rnet, gen)
    rnet.set_lambda(torch.rand(N, generator=gen, dtype=torch.float64) * 0.8, node="h")
    rnet.set_lambda(0.6, node="emb")
    rnet.set_lambda(0.9, node="act")
    thetas = rnet.schedule(T)
    assert not torch.allclose(thetas[0], thetas[-1])  # the schedule really varies with t
    fnet, _ = unrolled_twin(rnet, T)
    for t in range(1, T + 1):
        for i in range(N):
            fnet.set_lambda(float(thetas[t - 1, i]), node=f"h@{t}:{i}")
        fnet.set_lambda(0.6, node=f"emb@{t}")
        fnet.set_lambda(0.9, node=f"act@{t}")
    obs, fb = _data(5)
    got, _ = _recurrent_grads(rnet, obs, fb)
    assert rnet.paths()["h"] == "child"
    want, _ = _unrolled_grads(rnet, fnet, obs, fb)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-10)


def direct_bptt(rnet, obs, resets=None):
    """BPTT written directly in torch, from the cell's parameters (no sggraph code)."""
    arr = rnet.state.function
    emb_fn, act_fn = rnet.blocks["emb"].function, rnet.blocks["act"].function
    table = rnet.state.table
    h = torch.zeros(N, B, Q, dtype=obs.dtype)
    outs = []
    for t in range(T):
        if resets is not None:
            h = torch.where(resets[t].view(1, B, 1), torch.zeros_like(h), h)
        e = torch.tanh(emb_fn.weight @ obs[t].T + emb_fn.bias[:, None]).T  # [B, EMB]
        new = []
        for i in range(N):
            u = torch.cat([h[int(j)] for j in table[i]], dim=-1)
            pre = u @ arr.proj[i].T
            if i < NIN:
                pre = pre + e @ arr.proj_in[i].T
            alpha = torch.softmax(pre[:, :M] * arr.scale[i], dim=-1)
            y = torch.tanh(pre[:, M:] + arr.bias[i]).view(B, M, Q)
            new.append(torch.einsum("bs,bsq->bq", alpha, y))
        h = torch.stack(new)
        outs.append(h.transpose(0, 1).reshape(B, N * Q) @ act_fn.weight.T + act_fn.bias)
    return torch.stack(outs)


def test_lambda_one_equals_direct_bptt_and_plain_autograd_bit_for_bit():
    torch.manual_seed(2)
    rnet = compile_cell(make_cell(), grouping="child").double()
    random_generators(rnet, torch.Generator().manual_seed(3))
    obs, fb = _data(7)
    resets = torch.zeros(T, B, dtype=torch.bool)
    resets[2, 1] = True
    rnet.synthetic = False
    plain, out_plain = _recurrent_grads(rnet, obs, fb, resets)
    rnet.synthetic = True  # mixers run, at λ = 1
    mixed, _ = _recurrent_grads(rnet, obs, fb, resets)
    assert rnet.paths()["h"] == "child"
    for a, b in zip(plain, mixed):
        assert torch.equal(a, b)
    params = _params(rnet)
    _zero(params)
    direct = direct_bptt(rnet, obs, resets)
    torch.testing.assert_close(direct, out_plain, rtol=1e-12, atol=1e-12)
    (direct * fb).sum().backward()
    for a, p in zip(plain, params):
        torch.testing.assert_close(a, p.grad, rtol=1e-10, atol=1e-12)


def test_reset_masks_cut_the_gradient_and_restart_the_state():
    torch.manual_seed(4)
    rnet = compile_cell(make_cell(), grouping="child").double()
    obs, _ = _data(9)
    obs.requires_grad_(True)
    resets = torch.zeros(T, B, dtype=torch.bool)
    resets[2, 0] = True
    out = rnet({"obs": obs}, resets=resets)["act"]
    out[2:, 0].sum().backward()
    assert torch.count_nonzero(obs.grad[:2, 0]) == 0  # nothing before the episode start
    assert torch.count_nonzero(obs.grad[2:, 0]) > 0
    fresh = rnet({"obs": obs[2:, :1].detach()})["act"]  # the same episode run from a zero state
    torch.testing.assert_close(out[2:, :1].detach(), fresh.detach(), rtol=1e-12, atol=1e-12)
    # without the reset, the earlier steps do matter
    obs.grad = None
    rnet({"obs": obs})["act"][2:, 0].sum().backward()
    assert torch.count_nonzero(obs.grad[:2, 0]) > 0


def test_temporal_schedule_hand_computed():
    # three neurons: 0 -> {1, 2}, 1 -> {2}, 2 has no children; ρ = 0.1
    children = torch.tensor([[0.0, 0.5, 0.5], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    theta = torch.tensor([0.6, 0.5, 0.2], dtype=torch.float64)
    got = temporal_schedule(theta, children, steps=3, rho=0.1)
    # t = T: base. t = T-1: θ0 = 0.6 + 0.1·mean(0.5, 0.8) = 0.665; θ1 = 0.5 + 0.1·0.8 = 0.58; θ2 = 0.2
    # t = T-2: θ0 = 0.665 + 0.1·mean(0.42, 0.8) = 0.726; θ1 = 0.58 + 0.08 = 0.66; θ2 = 0.2
    want = torch.tensor([[0.726, 0.66, 0.2], [0.665, 0.58, 0.2], [0.6, 0.5, 0.2]], dtype=torch.float64)
    torch.testing.assert_close(got, want)
    capped = temporal_schedule(torch.tensor([0.99, 0.0], dtype=torch.float64),
                               torch.tensor([[0.0, 1.0], [0.0, 0.0]], dtype=torch.float64), steps=2, rho=0.5)
    assert float(capped[0, 0]) == 1.0  # min(1, ·)


def test_schedule_uses_the_compiled_tables_children():
    rnet = compile_cell(make_cell(), grouping="child")
    table = rnet.state.table
    for i in range(N):
        kids = [j for j in range(N) if i in table[j].tolist()]
        row = rnet.state.child_mean[i]
        assert torch.allclose(row[kids], torch.full((len(kids),), 1.0 / len(kids))) if kids else row.sum() == 0


def test_adaptive_lambda_on_the_state_stays_in_range():
    torch.manual_seed(0)
    rnet = compile_cell(make_cell(), grouping="child")
    rnet.set_lambda(0.8)
    random_generators(rnet, torch.Generator().manual_seed(1))
    obs, fb = _data(3)
    out = rnet({"obs": obs.float()})
    (out["act"] * fb.float()).sum().backward()
    lam = rnet.adapt_lambda(momentum=0.5)["h"]
    assert lam.shape == (N,)
    assert bool(((rnet.state.lam_self >= 0) & (rnet.state.lam_self <= 1)).all())
    assert not torch.equal(rnet.state.lam_self, torch.full((N,), 0.8))


def test_check_conditions_on_unrolled_popgym_cell_is_fast():
    cell = Cell("popgym")
    cell.add_input("obs", 20)
    cell.add_node("emb", 128, ["obs"], fn="tanh")
    cell.set_state("h", count=128, dim=6, fan_in=6, slots=6, input="emb", input_neurons=16)
    cell.add_node("act", 4, ["h"], fn="linear")
    cell.set_feedback("act", "contextual")
    t0 = time.perf_counter()
    g = unroll(cell, 80)
    report = sggraph.check_conditions(g)
    elapsed = time.perf_counter() - t0
    assert sum(1 for v in g.nx if v.startswith("h@") and not v.startswith("h@0:")) == 10240
    assert report.a and report.b == "not_guaranteed"
    assert elapsed < 5.0, elapsed


@pytest.mark.parametrize("normalize", [True, False, "feedback"])
def test_recurrent_closed_form_lambda_equals_per_sample_torch_func(normalize):
    from torch.func import grad, vmap

    from sggraph.engine.lam import batch_lambda_from_vectors, recurrent_state_lambda

    torch.manual_seed(6)
    rnet = compile_cell(make_cell(), grouping="child").double()
    rnet.set_lambda(0.7)
    random_generators(rnet, torch.Generator().manual_seed(2))
    obs, fb = _data(8)
    (rnet({"obs": obs})["act"] * fb).sum().backward()
    st = rnet.trace.state
    fn = rnet.state.function
    steps = list(range(T))
    got = recurrent_state_lambda(fn, st, steps, normalize, max_samples=None)
    params = {k: v.detach() for k, v in fn.named_parameters()}

    def dot(ps, u1, e1, c1):  # one sample: u1 [N, F q], e1 [d_in], c1 [N, q]
        e_proj = fn.project_input(e1.unsqueeze(0), ps["proj_in"])  # [n_in, 1, W]
        h, _ = fn.step(u1.unsqueeze(1), e_proj, ps)
        return (h.squeeze(1) * c1).sum()

    u = torch.cat([st.step_inputs[t][0] for t in steps], dim=1)
    e = torch.cat([st.step_inputs[t][1] for t in steps], dim=0)

    def vectors(cot):
        per = vmap(grad(dot), in_dims=(None, 1, 0, 1))(params, u, e, cot)
        r = u.shape[1]
        proj_in = torch.zeros(r, N, *per["proj_in"].shape[2:], dtype=u.dtype)
        proj_in[:, :NIN] = per["proj_in"]
        return torch.cat([per["proj"].reshape(r, N, -1), proj_in.reshape(r, N, -1),
                          per["bias"].reshape(r, N, -1)], dim=-1)

    cot_p = torch.cat([st.records[t].received for t in steps], dim=1)
    cot_s = torch.cat([st.predictions[t].detach() for t in steps], dim=1)
    if normalize == "feedback":  # the authors': unit feedback per sample and neuron, then raw gradients
        cot_p = cot_p / cot_p.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        cot_s = cot_s / cot_s.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    want = batch_lambda_from_vectors(vectors(cot_p), vectors(cot_s), normalize)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-8)


def make_full_scale_cell_net(scale_dim, seed=0):
    from sggraph.engine.recurrent import RecurrentSlotArray

    cell = Cell("rnn")
    cell.add_input("obs", OBS)
    cell.add_node("emb", EMB, ["obs"], fn="tanh")
    cell.set_state("h", count=N, dim=Q, fan_in=N, slots=M, seed=3, input="emb", input_neurons=NIN, self_parents=True)
    cell.add_node("act", ACT, ["h"], fn="linear")
    torch.manual_seed(seed)
    arr = RecurrentSlotArray(N, N * Q, Q, M, NIN, EMB, scale_dim=scale_dim)
    return compile_cell(cell, {"h": arr}, grouping="child").double()


def test_scale_dim_sets_every_neurons_temperature_and_direct_bptt_holds_with_self_parents():
    rnet = make_full_scale_cell_net(N * Q + EMB)
    assert bool((rnet.state.table == torch.arange(N).unsqueeze(1)).any())  # fan_in = N: every neuron reads itself
    torch.testing.assert_close(rnet.state.function.scale, torch.full((N,), (N * Q + EMB) ** -0.5,
                                                                     dtype=torch.float64))
    assert "scale_dim=" in repr(rnet.state.function)
    g = unroll(rnet.cell, 2)
    assert "h@0:0" in g.parents("h@1:0")  # the self edge, one step apart
    obs, fb = _data(11)
    rnet.synthetic = False
    plain, out_plain = _recurrent_grads(rnet, obs, fb)
    rnet.synthetic = True
    mixed, _ = _recurrent_grads(rnet, obs, fb)
    for a, b in zip(plain, mixed):
        assert torch.equal(a, b)
    arr = rnet.state.function
    emb_fn, act_fn = rnet.blocks["emb"].function, rnet.blocks["act"].function
    table = rnet.state.table
    h = torch.zeros(N, B, Q, dtype=torch.float64)
    outs = []
    _zero(_params(rnet))
    for t in range(T):
        e = torch.tanh(emb_fn.weight @ obs[t].T + emb_fn.bias[:, None]).T
        new = []
        for i in range(N):
            u = torch.cat([h[int(j)] for j in table[i]], dim=-1)
            pre = u @ arr.proj[i].T + (e @ arr.proj_in[i].T if i < NIN else 0)
            alpha = torch.softmax(pre[:, :M] / math.sqrt(N * Q + EMB), dim=-1)
            y = torch.tanh(pre[:, M:] + arr.bias[i]).view(B, M, Q)
            new.append(torch.einsum("bs,bsq->bq", alpha, y))
        h = torch.stack(new)
        outs.append(h.transpose(0, 1).reshape(B, N * Q) @ act_fn.weight.T + act_fn.bias)
    direct = torch.stack(outs)
    torch.testing.assert_close(direct, out_plain, rtol=1e-12, atol=1e-12)
    (direct * fb).sum().backward()
    for a, p in zip(plain, _params(rnet)):
        torch.testing.assert_close(a, p.grad, rtol=1e-10, atol=1e-12)


def test_scale_dim_init_std():
    from sggraph.engine.recurrent import RecurrentSlotArray

    torch.manual_seed(0)
    arr = RecurrentSlotArray(64, 36, 6, 6, 16, 128, scale_dim=164)
    for p in (arr.proj, arr.proj_in, arr.bias):
        assert abs(float(p.detach().std()) - 164 ** -0.5) < 0.03 * 164 ** -0.5
    with pytest.raises(sggraph.CompileError):
        RecurrentSlotArray(4, 2, 1, 1, scale_dim=0)


def test_self_parents_setting_and_fan_in_limits():
    cell = Cell("c")
    cell.add_input("x", 2)
    with pytest.raises(sggraph.GraphError, match="self_parents=True"):
        cell.set_state("h", count=3, dim=1, fan_in=3)
    cell.set_state("h", count=3, dim=1, fan_in=3, self_parents=True, input="x", input_neurons=1)
    with pytest.raises(sggraph.GraphError):
        Cell("d").set_state("h", count=3, dim=1, fan_in=4, self_parents=True)


def test_mixed_generator_target_needs_the_child_path():
    torch.manual_seed(0)
    rnet = compile_cell(make_cell(), grouping="edge", generator_target="mixed")
    with torch.no_grad():
        rnet.state.lam.uniform_(0.2, 0.9)  # one λ per edge: the general path
    obs, fb = _data(3)
    (rnet({"obs": obs.float()})["act"] * fb.float()).sum().backward()
    with pytest.raises(sggraph.LambdaError, match="child path"):
        rnet.generator_loss()
    with pytest.raises(sggraph.CompileError):
        compile_cell(make_cell(), generator_target="target")


@pytest.mark.parametrize("normalize", ["feedback", "gradient", "none"])
@pytest.mark.parametrize("max_samples", [None, 4])
@pytest.mark.parametrize("chunk_elements", [None, 1])
def test_state_lambda_from_forward_equals_the_closed_form(normalize, max_samples, chunk_elements, monkeypatch):
    from sggraph.engine.lam import slot
    from sggraph.engine.lam.slot import has_forward_tensors as _has_forward_tensors
    from sggraph.engine.lam.slot import recurrent_state_lambda, state_lambda_from_forward

    if chunk_elements is not None:  # one neuron per chunk: input and non-input neurons in separate chunks
        monkeypatch.setattr(slot, "_CHUNK_ELEMENTS", chunk_elements)

    torch.manual_seed(6)
    rnet = compile_cell(make_cell(), grouping="child").double()
    rnet.set_lambda(0.7)
    random_generators(rnet, torch.Generator().manual_seed(2))
    obs, fb = _data(8)
    valid = torch.ones(T, B, dtype=torch.bool)
    valid[2:, 0] = False
    valid[3:, 2] = False
    (rnet({"obs": obs}, valid=valid)["act"] * fb * valid.unsqueeze(-1)).sum().backward()
    st, fn = rnet.trace.state, rnet.state.function
    assert _has_forward_tensors(fn, st)
    steps = list(range(T))
    torch.manual_seed(1)
    want = recurrent_state_lambda(fn, st, steps, normalize, max_samples, valid)
    torch.manual_seed(1)  # the same random steps
    got = state_lambda_from_forward(fn, st, steps, normalize, max_samples, valid)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(state_lambda_from_forward(fn, st, steps, normalize), recurrent_state_lambda(
        fn, st, steps, normalize), rtol=1e-9, atol=1e-12)


def test_a_cell_whose_state_reads_no_input_unrolls_and_runs():
    """A state without an external input (the observation only reaches a post node) has no pre
    stage; its initial state must still land on layer 0 (it used to be placed on layer -1)."""

    cell = Cell("no-input")
    cell.add_input("obs", 4)
    cell.set_state("h", count=8, dim=2, fan_in=2, slots=2, seed=0)
    cell.add_node("act", 3, ["h", "obs"], fn="linear")
    g = unroll(cell, 3)
    assert [g.layer_of(n) for n in ("h@0:0", "obs@1", "h@1:0", "act@1")] == [0, 1, 1, 2]
    net = compile_cell(cell)
    out = net({"obs": torch.randn(3, 5, 4)})["act"]
    assert out.shape == (3, 5, 3)
    out.sum().backward()
    assert net.state.function.proj.grad is not None


@pytest.mark.parametrize("input_neurons", [0, 2, 5])
def test_recurrent_slot_generator_is_eq_144_with_its_gradients(input_neurons):
    """ĥ_i = Σ_s α_{i,s} (Ã_{i,s} [u_i, e] + b̃_{i,s}) from the literal formula, values and parameter
    gradients, whether none, some or all neurons read the input; computed samples last, returned as a
    ``[N, R, q]`` view."""
    from sggraph.engine.neuron import RecurrentSlotGenerator

    torch.manual_seed(4)
    count, samples, rec_dim, slots, dim, in_dim = 5, 7, 6, 3, 2, 4
    gen = RecurrentSlotGenerator(count, rec_dim, dim, slots, input_neurons, in_dim).double()
    for p in gen.parameters():
        nn.init.normal_(p)
    u = torch.randn(count, samples, rec_dim, dtype=torch.float64)
    e = torch.randn(samples, in_dim, dtype=torch.float64)
    alpha = torch.softmax(torch.randn(count, samples, slots, dtype=torch.float64), -1)
    got = gen.step(u, gen.project_input(e) if input_neurons else None, alpha)
    assert got.shape == (count, samples, dim)
    pre = torch.einsum("nrf,nof->nro", u, gen.weight) + gen.bias.unsqueeze(1)
    wired = torch.einsum("rd,nod->nro", e, gen.weight_in)
    pre = torch.cat([pre[:input_neurons] + wired, pre[input_neurons:]])
    want = torch.einsum("nrs,nrsq->nrq", alpha, pre.view(count, samples, slots, dim))
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    w = torch.randn(count, samples, dim, dtype=torch.float64)
    params = [p for p in gen.parameters() if p.numel()]
    for g_got, g_want in zip(torch.autograd.grad((got * w).sum(), params),
                             torch.autograd.grad((want * w).sum(), params)):
        torch.testing.assert_close(g_got, g_want, rtol=1e-12, atol=1e-12)
