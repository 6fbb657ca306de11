"""sggraph.trace: an unmodified nn.Module as a layered graph and a compiled net (issue #28).

Exactness (λ = 1 is the module's autograd bit for bit; free per-edge λ is eq. 5–6 by the
explicit-Jacobian oracle), shared parameters, the engine's API on traced nets, generators for
traced shapes, and the errors a user can act on.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from reference import reference_gradients
from torch import nn
from trace_models import CNN, MLP, Residual, mlp

import sggraph
from sggraph import CompileError, DimensionError, LambdaError
from sggraph.engine.training import train_step


def _grads(model: nn.Module) -> list[torch.Tensor | None]:
    return [p.grad for p in model.parameters()]


def _step_grads(fn, model, x, y):
    for p in model.parameters():
        p.grad = None
    F.cross_entropy(fn(x), y).backward()
    return _grads(model)


CASES = {
    "mlp": (lambda: mlp(), (8, 20), 10, {}),
    "cnn": (lambda: CNN(), (8, 1, 8, 8), 10, {}),
    "residual": (lambda: Residual(), (8, 3, 8, 8), 5, {}),
    "residual-subnodes": (lambda: Residual(), (8, 3, 8, 8), 5, {"nodes": ["stem", "b1.c1", "b1.c2", "b2", "head"]}),
}


# ----------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("synthetic", [True, False])
def test_lambda_one_is_the_modules_autograd_bit_for_bit(case, synthetic):
    make, shape, classes, options = CASES[case]
    torch.manual_seed(0)
    model = make()
    twin = copy.deepcopy(model)
    x, y = torch.randn(*shape), torch.randint(0, classes, (shape[0],))
    net = sggraph.trace(model, x, **options)
    net.synthetic = synthetic
    with torch.no_grad():  # non-zero generators: λ = 1 must ignore them exactly
        for p in net.generator_parameters():
            p.normal_()
    for _ in range(2):  # twice: BatchNorm statistics move the same way in both
        want = _step_grads(twin, twin, x, y)
        got = _step_grads(net, model, x, y)
        assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert all(torch.equal(a, b) for a, b in zip(model.buffers(), twin.buffers()))
    assert set(net.paths().values()) == {"child" if synthetic else "plain"}
    assert torch.equal(net(x), twin(x))


def test_residual_graph_is_layered_with_relays_and_siblings():
    torch.manual_seed(0)
    net = sggraph.trace(Residual(), torch.randn(2, 3, 8, 8))
    g = net.graph
    assert g.layers == [["x"], ["stem"], ["b1"], ["b2", "b1@1"], ["head"]]
    assert g.parents("head") == ("b2", "b1@1")
    assert sggraph.siblings(g, "b2") == {"b2", "b1@1"}
    assert net.skips == {("b1", "head"): ("b1@1", "head")}
    assert net.shapes["b1@1"] == (4, 8, 8) and net.shapes["head"] == (5,)


def _random_lambdas(net, gen):
    g = net.graph
    for child, node in g.nodes.items():
        for parent in node.parents:
            net.set_lambda(float(torch.rand((), generator=gen, dtype=torch.float64)), (parent, child))
        if node.parents:
            net.set_self_lambda(float(torch.rand((), generator=gen, dtype=torch.float64)), child)
    with torch.no_grad():
        for p in net.generator_parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))


@pytest.mark.parametrize("case", ["mlp", "cnn", "residual"])
def test_free_per_edge_lambda_matches_the_explicit_jacobian_oracle(case):
    torch.manual_seed(1)
    make = {"mlp": lambda: MLP(), "cnn": lambda: CNN(channels=1, size=4, classes=3),
            "residual": lambda: Residual(channels=2, width=2, size=4, classes=3, bn=False)}[case]
    shape = {"mlp": (3, 12), "cnn": (3, 1, 4, 4), "residual": (3, 2, 4, 4)}[case]
    model = make().double()
    x = torch.randn(*shape, dtype=torch.float64)
    net = sggraph.trace(model, x)
    _random_lambdas(net, torch.Generator().manual_seed(7))
    out = net(x)
    fb = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    (out * fb).sum().backward()
    assert "general" in net.paths().values()
    # λ^self < 1 runs the node functions through torch.func.functional_call: the module keeps its own parameters
    assert [id(p) for p in net.model_parameters()] == [id(p) for p in model.parameters()]
    terminal = net.graph.terminals[0]
    source = net.used_sources[0]
    want = reference_gradients(net.compiled, {source: x.reshape(len(x), -1)}, {terminal: fb.reshape(len(x), -1)})
    for p in model.parameters():
        torch.testing.assert_close(p.grad, want[id(p)], rtol=1e-7, atol=1e-10)


# ------------------------------------------------------------------------------ DNI cut
def test_lambda_zero_at_a_cut_is_a_hand_written_dni_step():
    torch.manual_seed(2)
    model = MLP()
    twin = copy.deepcopy(model)
    x, y = torch.randn(16, 12), torch.randint(0, 4, (16,))
    net = sggraph.trace(model, x, cuts=["fc1"], generators={"cut:fc1": "linear"})
    assert net.graph.parents("fc2") == ("cut:fc1",) and net.get_lambda(("fc1", "cut:fc1")) == 0.0
    gen = net.compiled.blocks["cut:fc1"].generator.body.first
    with torch.no_grad():
        gen.weight.normal_(0, 0.2)
        gen.bias.normal_(0, 0.2)
    synth = copy.deepcopy(gen)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    gen_opt = torch.optim.SGD(net.generator_parameters(), lr=0.1)
    # the traced net: one forward, one backward, the model step, the generator step
    opt.zero_grad()
    F.cross_entropy(net(x), y).backward()
    model_grads = [p.grad.clone() for p in model.parameters()]
    opt.step()
    net.update_generators(gen_opt)
    # DNI by hand: the synthesizer predicts dL/dh at h = fc1(x); fc1 learns from it alone,
    # the synthesizer regresses onto the true gradient arriving at h from above
    h = twin.fc1(x)
    h_cut = h.detach().requires_grad_()
    F.cross_entropy(twin.fc3(F.relu(twin.fc2(F.relu(h_cut)))), y).backward()
    predicted = synth(h.detach())
    h.backward(predicted.detach())
    for got, want in zip(model_grads, _grads(twin)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    with torch.no_grad():
        for p in twin.parameters():
            p -= 0.1 * p.grad
    synth_loss = torch.mean((predicted - h_cut.grad) ** 2)
    synth_loss.backward()
    with torch.no_grad():
        for p in synth.parameters():
            p -= 0.1 * p.grad
    for got, want in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    torch.testing.assert_close(gen.weight, synth.weight, rtol=0, atol=1e-6)
    torch.testing.assert_close(gen.bias, synth.bias, rtol=0, atol=1e-6)


def test_dni_cut_on_a_convolution_uses_a_convolutional_synthesizer():
    torch.manual_seed(3)
    model = CNN()
    twin = copy.deepcopy(model)
    x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,))
    net = sggraph.trace(model, x, cuts=["conv1"], generators={"cut:conv1": "linear"})
    body = net.compiled.blocks["cut:conv1"].generator.body
    (conv,) = body.convs
    assert isinstance(conv, nn.Conv2d) and (conv.in_channels, conv.out_channels, conv.stride) == (4, 4, (1, 1))
    assert sum(p.numel() for p in net.generator_parameters()) == 4 * 4 * 9 + 4  # never a dense CHW x CHW matrix
    with torch.no_grad():
        conv.weight.normal_(0, 0.2)
        body.bias.normal_(0, 0.2)
    F.cross_entropy(net(x), y).backward()
    h = twin.conv1(x)
    h_cut = h.detach().requires_grad_()
    F.cross_entropy(twin.fc(F.relu(twin.conv2(F.relu(h_cut))).flatten(1)), y).backward()
    h.backward((conv(h.detach()) + body.bias).detach())
    for got, want in zip(_grads(model), _grads(twin)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    target = net.received("cut:conv1").reshape(h.shape)
    torch.testing.assert_close(target, h_cut.grad, rtol=0, atol=1e-7)


# --------------------------------------------------------------------- shared parameters
def test_the_users_optimizer_and_state_dict_drive_the_traced_net():
    torch.manual_seed(4)
    model = CNN()
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    net = sggraph.trace(model, x)
    assert {id(p) for p in net.model_parameters()} == {id(p) for p in model.parameters()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = F.cross_entropy(model(x), y).item()
    for _ in range(5):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    assert F.cross_entropy(model(x), y).item() < before
    fresh = CNN()
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh(x), net(x))
    other = CNN()
    model.load_state_dict(other.state_dict())  # loading into the module changes the traced net
    assert torch.equal(net(x), other(x))
    again = sggraph.trace(CNN(), x)
    again.load_state_dict(net.state_dict())  # the traced net's own state: weights, generators, λ
    assert torch.equal(again(x), net(x))


def test_train_and_eval_follow_the_module():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(6, 32), nn.Dropout(0.5), nn.Linear(32, 2))
    x = torch.randn(4, 6)
    net = sggraph.trace(model, x, stochastic=["1"])
    model.eval()
    assert torch.equal(net(x), net(x))
    model.train()
    assert not torch.equal(net(x), net(x))
    net.eval()
    assert not model.training and torch.equal(net(x), model(x))


# -------------------------------------------------------------------- the engine's API
@pytest.mark.parametrize("grouping", sggraph.GROUPINGS)
def test_lambda_api_adaptation_and_generators_on_a_traced_net(grouping):
    torch.manual_seed(6)
    model = Residual(bn=False)
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 5, (8,))
    net = sggraph.trace(model, x, grouping=grouping)
    net.set_lambda(0.8)
    net.set_lambda(0.5, ("b1", "head"))  # the module's skip edge: the relay edge b1@1 -> head
    assert net.get_lambda(("b1@1", "head")) == 0.5 == net.get_lambda(("b1", "head"))
    net.set_lambda(0.9, node="b2")
    net.set_self_lambda(0.7, "b2")
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    gen_opt = torch.optim.SGD(net.generator_parameters(), lr=0.05)
    before = {k: v.clone() for k, v in net.edge_lambdas().items()}
    for _ in range(2):
        result = train_step(net, lambda out: F.cross_entropy(out["head"], y), {"x": x}, opt, gen_opt,
                            adapt_lambda={"momentum": 0.5})
    assert result.generator_loss > 0
    after = net.edge_lambdas()
    assert any(not torch.equal(before[k], after[k]) for k in after)  # adaptation moved some λ
    assert set(after) == set(net.graph.nodes) - {"x"}
    for value in after.values():
        assert bool(((value >= 0) & (value <= 1)).all())
    assert net.received("stem") is not None


def test_adaptive_lambda_names_a_batchnorm_node():
    net = sggraph.trace(Residual(), torch.randn(4, 3, 8, 8))
    F.cross_entropy(net(torch.randn(4, 3, 8, 8)), torch.zeros(4, dtype=torch.long)).backward()
    with pytest.raises(LambdaError, match="node 'b1'.*BatchNorm.*nodes="):
        net.adapt_lambda()
    net.adapt_lambda(nodes=["stem", "head"])


def test_profiler_runs_on_a_traced_net():
    from sggraph.engine.diagnostics import profile

    torch.manual_seed(7)
    net = sggraph.trace(MLP(), torch.randn(4, 12))
    net.set_lambda(0.5)

    def sampler(count, gen):
        return {"x": torch.randn(count, 12, generator=gen)}, {"fc3": torch.randn(count, 4, generator=gen)}, None

    result = profile(net, sampler, n=4, reference_samples=64, samples=64)
    assert set(result) == {"fc1", "fc2", "fc3"}
    assert all(r.delta2_backprop >= 0 for r in result.values())


def test_generators_for_traced_shapes():
    torch.manual_seed(8)
    x = torch.randn(2, 1, 8, 8)
    net = sggraph.trace(CNN(), x, generators="mlp")
    conv2 = net.compiled.blocks["conv2"].generator.body
    assert (conv2.convs[0].stride, conv2.last.out_channels) == ((2, 2), 6)
    assert float(conv2.last.weight.detach().abs().sum()) == 0.0
    fc = net.compiled.blocks["fc"].generator.body
    assert (fc.first.in_features, fc.first.out_features, fc.last.out_features) == (6 * 4 * 4, 10, 10)

    def custom(name, shape):
        return nn.Sequential(nn.Flatten(), nn.Linear(1 * 8 * 8 if name == "conv1" else 4 * 8 * 8 if name == "conv2"
                                                     else 6 * 4 * 4, int(torch.tensor(shape).prod())),
                             nn.Unflatten(1, shape))

    net = sggraph.trace(CNN(), x, generators=custom)
    net.set_lambda(0.5)
    F.cross_entropy(net(x), torch.zeros(2, dtype=torch.long)).backward()
    assert net.generator_loss().item() > 0
    net = sggraph.trace(CNN(), x, generators={"conv2": "linear"})
    assert sum(p.numel() for p in net.generator_parameters()) == 4 * 6 * 9 + 6
    assert net.compiled.blocks["fc"].generator.forward(torch.ones(3, 96)).abs().sum() == 0


def test_context_reaches_every_generator():
    torch.manual_seed(9)
    model = MLP()
    x, y = torch.randn(6, 12), torch.randint(0, 4, (6,))
    net = sggraph.trace(model, x, cuts=["fc2"], generators={"cut:fc2": "linear"}, context=4)
    net.set_lambda(0.0, ("fc2", "cut:fc2"))
    with pytest.raises(DimensionError, match="context"):
        net(x)
    gen = net.compiled.blocks["cut:fc2"].generator.body
    with torch.no_grad():
        gen.context.weight.normal_()
    onehot = F.one_hot(y, 4).float()
    F.cross_entropy(net(x, context=onehot), y).backward()
    prediction = net.compiled.trace.nodes["cut:fc2"].prediction
    h = model.fc2(F.relu(model.fc1(x))).detach()
    torch.testing.assert_close(prediction, gen.first(h) + onehot @ gen.context.weight.T)


def test_check_conditions_and_draw_on_a_traced_model():
    net = sggraph.trace(Residual(), torch.randn(2, 3, 8, 8), stochastic=["b2"], feedback={"head": "contextual"})
    report = sggraph.check_conditions(net.graph)
    assert report.to_dict()["A1"] == ["head"] and report.to_dict()["A2"] == ["b2"]
    source = sggraph.viz.draw(net, node="b2").source
    assert '"b1@1"' in source and "b1@1 -> head" in source.replace('"', "")
    drawn = sggraph.viz.draw(net.graph).source
    assert "b2" in drawn


def test_non_tensor_and_tuple_outputs():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            h = self.fc(x)
            return {"logits": h, "features": (h.tanh(), x)}

    model = Twice()
    x = torch.randn(5, 3)
    out = sggraph.trace(model, x)(x)
    want = model(x)
    assert torch.equal(out["logits"], want["logits"]) and torch.equal(out["features"][0], want["features"][0])
    assert out["features"][1] is x

    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.GRU(3, 4, batch_first=True)
            self.fc = nn.Linear(4, 1)

        def forward(self, x):
            out, _ = self.rnn(x)
            return self.fc(out[:, -1])

    with pytest.raises(CompileError, match="submodule 'rnn' returns a tuple, not a tensor.*leave it out of nodes"):
        sggraph.trace(Pair(), torch.randn(2, 5, 3))
    net = sggraph.trace(Pair(), torch.randn(2, 5, 3), nodes=["fc"])  # the GRU belongs to fc's node
    assert net.graph.parents("fc") == ("x",)


# ------------------------------------------------------------------------------- errors
class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)
        self.inner = Gate()

    def forward(self, x):
        return self.inner(self.fc(x))


class Gate(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 1)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow
            return self.lin(x)
        return -self.lin(x)


def test_untraceable_model_names_module_submodule_and_line():
    model = Branchy()
    with pytest.raises(CompileError) as info:
        sggraph.trace(model, torch.randn(2, 3), nodes=["fc", "inner.lin"])
    err = info.value
    assert err.file == __file__ and err.node == "inner"
    assert "if x.sum() > 0:" in str(err) and "leaves=['inner']" in str(err)
    net = sggraph.trace(model, torch.randn(2, 3), nodes=["fc", "inner"])  # the default: children are nodes
    assert list(net.graph.nodes) == ["x", "fc", "inner"]


def test_unknown_node_names_the_closest_real_names():
    with pytest.raises(CompileError, match="node 'b1.cl': nodes entry 'b1.cl' is not a submodule of Residual.*"
                                           "the closest are 'b1.c2', 'b1.c1'"):
        sggraph.trace(Residual(), torch.randn(2, 3, 8, 8), nodes=["stem", "b1.cl"])
    with pytest.raises(CompileError, match="'b1.c1', inside the leaf 'b1'"):
        sggraph.trace(Residual(), torch.randn(2, 3, 8, 8), nodes=["stem", "b1.c1"], leaves=["b1"])
    with pytest.raises(CompileError, match="nodes lists both 'b1' and its submodule 'b1.c1'"):
        sggraph.trace(Residual(), torch.randn(2, 3, 8, 8), nodes=["b1", "b1.c1"])
    with pytest.raises(CompileError, match="cuts lists 'fc9'"):
        sggraph.trace(MLP(), torch.randn(2, 12), cuts=["fc9"])
    with pytest.raises(CompileError, match="unknown generator kind 'dense'"):
        sggraph.trace(MLP(), torch.randn(2, 12), generators="dense")
    net = sggraph.trace(MLP(), torch.randn(2, 12))
    with pytest.raises(DimensionError, match=r"node 'x'.*\[B, 12\]"):
        net(torch.randn(2, 13))


def test_integer_inputs_and_parameter_only_nodes():
    class Text(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.fc = nn.Embedding(50, 8), nn.Linear(8, 3)

        def forward(self, tokens):
            return self.fc(self.emb(tokens).mean(1))

    model, tokens = Text(), torch.randint(0, 50, (4, 7))
    net = sggraph.trace(model, tokens)
    assert torch.equal(net(tokens), model(tokens)) and net.shapes["emb"] == (7, 8)
    net.set_lambda(0.5)
    net(tokens).sum().backward()
    assert model.emb.weight.grad.abs().sum() > 0

    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.scale = nn.Linear(3, 3), nn.Linear(3, 3), nn.Linear(1, 3)

        def forward(self, x):
            s = self.scale(torch.ones(1, 1))
            return self.b(self.a(x) * s) * s

    with pytest.raises(CompileError, match="submodule 'scale' reads none of the module's inputs"):
        sggraph.trace(Shared(), torch.randn(2, 3))
