"""The MNIST bandit as the authors ran it: initialisations, baselines, schedules and update order.

Each test pins one number or rule of the authors' experiment code (``exp-mnist-bandit``).
"""

from __future__ import annotations

import math

import pytest
import torch

import sggraph
from sggraph.experiments.mnist_bandit import (
    AUTHORS_CLASSES,
    BanditConfig,
    build_policy,
    evaluation_steps,
    sparsenet_parameter_count,
)
from sggraph.models.baselines import MLP
from sggraph.models.sparsenet import sparsenet_graph


def _std_within(t: torch.Tensor, want: float, rel: float = 0.03) -> None:
    got = float(t.detach().double().std())
    assert abs(got - want) / want < rel, (got, want)
    assert abs(float(t.detach().double().mean())) < 4 * want / math.sqrt(t.numel())


@pytest.fixture(scope="module")
def sgprop_net():
    torch.manual_seed(0)
    net = build_policy(BanditConfig(method="sgprop"), len(AUTHORS_CLASSES))[2]
    return net


def test_hidden_keys_slot_maps_and_biases_are_normal_with_std_one_over_sqrt_q_n_parents(sgprop_net):
    want = 1 / math.sqrt(10 * 5)
    for name in ("h1", "h3", "h5"):
        arr = sgprop_net.blocks[name].function
        _std_within(arr.keys, want)
        _std_within(arr.weight, want)
        _std_within(arr.bias, want)
        assert arr.scale == pytest.approx(want)  # routing logits ⟨u, k⟩/√(q·n_parents)


def test_action_keys_use_the_hidden_std_not_one(sgprop_net):
    head = sgprop_net.blocks["logits"].function
    assert tuple(head.keys.shape) == (9, 200 * 10)
    _std_within(head.keys, 1 / math.sqrt(10 * 5))
    assert head.scale == pytest.approx(1 / math.sqrt(200 * 10))  # logits = flatten(h) Kᵀ / √(W q)


def test_logit_scale_at_init_is_the_authors(sgprop_net):
    """With keys N(0, 1/50) the initial logits are ≈ 7× smaller than with N(0, 1) keys."""
    torch.manual_seed(1)
    x = torch.randn(256, 784)
    with torch.no_grad():
        values = sgprop_net.activations({"pixels": x}, ["h5", "logits"])
        logits = values["logits"]
        head = sgprop_net.blocks["logits"].function
        h = values["h5"].flatten(1)
        unit_keys = head.keys / head.keys.std()
        ratio = float((h @ unit_keys.T * head.scale).std() / logits.std())
    assert ratio == pytest.approx(math.sqrt(50), rel=0.05)
    assert float(logits.std()) < 0.5


def test_bandit_generators_are_normal_with_std_one_over_sqrt_input_dim(sgprop_net):
    for name in ("h1", "h4"):
        gen = sgprop_net.blocks[name].generator
        _std_within(gen.weight, 1 / math.sqrt(50))
        _std_within(gen.bias, 1 / math.sqrt(50))


def test_zero_generator_init_stays_selectable():
    torch.manual_seed(0)
    cfg = BanditConfig(method="sgprop", generator_init="zero", width=8, layers=2, q=2, slots=2, n_parents=2)
    net = build_policy(cfg, 3)[2]
    assert all(float(p.detach().abs().sum()) == 0.0 for p in net.generator_parameters())


def test_dot_init_std_is_reachable_from_yaml(tmp_path):
    f = tmp_path / "g.yaml"
    f.write_text("name: head\nnodes:\n  - {name: z, dim: 400}\n  - {name: y, dim: 50, parents: [z], fn: dot, "
                 "init_std: 0.05}\n")
    g = sggraph.Graph.from_yaml(f)
    assert g.node("y").init_std == 0.05
    torch.manual_seed(0)
    _std_within(sggraph.compile(g).blocks["y"].function.keys, 0.05)
    assert g.to_dict()["nodes"][1]["init_std"] == 0.05  # round-trips


def test_init_std_must_be_positive():
    g = sggraph.Graph()
    g.add_node("z", 2)
    with pytest.raises(sggraph.GraphError, match="init_std"):
        g.add_node("y", 1, ["z"], fn="dot", init_std=-1.0)


def test_mlp_is_plain_tanh_xavier_normal_with_zero_biases():
    torch.manual_seed(0)
    mlp = MLP(784, 9)
    assert not mlp.residual and len(mlp.hidden) == 4 and mlp.first.out_features == 745
    for layer in [mlp.first, *mlp.hidden, mlp.head]:
        fan_out, fan_in = layer.weight.shape
        _std_within(layer.weight, math.sqrt(2 / (fan_in + fan_out)), rel=0.05)
        assert float(layer.bias.detach().abs().sum()) == 0.0
    x = torch.randn(3, 784)
    h = torch.tanh(mlp.first(x))
    for layer in mlp.hidden:
        h = torch.tanh(layer(h))  # no residual
    torch.testing.assert_close(mlp(x), mlp.head(h))
    assert MLP(784, 9, residual=True)(x).shape == (3, 9)


def test_mlp_matches_the_sparsenet_parameter_count():
    cfg = BanditConfig()
    sparse = sparsenet_parameter_count(cfg, 9)
    net = sggraph.compile(sparsenet_graph(n_actions=9))
    assert sparse == sum(p.numel() for p in net.model_parameters())
    assert abs(MLP(784, 9).parameter_count() - sparse) / sparse < 0.002


def test_defaults_are_the_authors_sweep_settings():
    cfg = BanditConfig()
    assert cfg.classes == (0, 1, 3, 4, 5, 6, 7, 8, 9)
    assert (cfg.steps, cfg.batch, cfg.p_flip, cfg.generator_lr) == (1500, 64, 0.4, 0.005)
    assert cfg.evaluation_plan() == (20, 4000)  # the paper's 20 evaluations of 4,000 images at full length
    assert (cfg.lam_init, cfg.lam_momentum, cfg.normalize, cfg.update_order) == (0.9, 0.9, "feedback",
                                                                                 "generator-first")
    assert (cfg.mlp_width, cfg.mlp_residual) == (745, False)
    import numpy as np

    assert evaluation_steps(1500, 20) == sorted({int(v) for v in np.linspace(1, 1500, 20, dtype=int)})


def _step_grads(net, x, actions, reward, gen_lr, generator_first):
    """One bandit update through the compiled net; returns the policy gradients and generator params after."""
    gen_opt = torch.optim.Adam(net.generator_parameters(), lr=gen_lr)
    net.zero_grad(set_to_none=True)
    logp = torch.log_softmax(net({"pixels": x})["logits"], -1)
    loss = -(reward * logp.gather(1, actions[:, None]).squeeze(1)).mean()
    if generator_first:
        net.record_feedback(loss)
        net.update_generators(gen_opt)
        net.refresh_predictions()
    loss.backward()
    grads = [p.grad.clone() for p in net.model_parameters()]
    if not generator_first:
        net.update_generators(gen_opt)
    return grads, [p.detach().clone() for p in net.generator_parameters()]


def _two_pass_reference(net, x, actions, reward, gen_lr):
    """The authors' order written as two separate passes: a full forward/backward whose received
    feedback trains the generators (one Adam step), then a fresh forward/backward for the policy."""
    gen_opt = torch.optim.Adam(net.generator_parameters(), lr=gen_lr)
    logp = torch.log_softmax(net({"pixels": x})["logits"], -1)
    loss = -(reward * logp.gather(1, actions[:, None]).squeeze(1)).mean()
    loss.backward()
    net.update_generators(gen_opt)
    net.zero_grad(set_to_none=True)
    logp = torch.log_softmax(net({"pixels": x})["logits"], -1)
    loss = -(reward * logp.gather(1, actions[:, None]).squeeze(1)).mean()
    loss.backward()
    return [p.grad.clone() for p in net.model_parameters()], [p.detach().clone() for p in net.generator_parameters()]


def _small_net():
    torch.manual_seed(3)
    graph = sparsenet_graph(width=10, layers=3, q=3, slots=2, n_parents=2, n_pixels=40, n_actions=4, seed=2)
    net = sggraph.compile(graph, grouping="child", generator_init="normal").double()
    net.set_lambda(0.6)
    net.set_lambda(1.0, node="logits")
    return net


def test_generator_first_order_equals_the_two_pass_reference():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 40, generator=gen, dtype=torch.float64)
    actions = torch.randint(0, 4, (16,), generator=gen)
    reward = torch.bernoulli(torch.full((16,), 0.5, dtype=torch.float64), generator=gen)
    ours = _step_grads(_small_net(), x, actions, reward, 0.01, generator_first=True)
    ref = _two_pass_reference(_small_net(), x, actions, reward, 0.01)
    for a, b in zip(ours[0] + ours[1], ref[0] + ref[1]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # the single-pass order mixes with the older generators: a different policy gradient
    single = _step_grads(_small_net(), x, actions, reward, 0.01, generator_first=False)
    assert not all(torch.allclose(a, b) for a, b in zip(single[0], ours[0]))
    for a, b in zip(single[1], ours[1]):  # the generators' own step is the same either way
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_record_feedback_forms_no_parameter_gradient():
    net = _small_net()
    logits = net({"pixels": torch.randn(4, 40, dtype=torch.float64)})["logits"]
    net.record_feedback(logits.sum())
    assert all(p.grad is None for p in net.parameters())
    assert all(net.trace.nodes[n].received is not None for n in net.blocks)
