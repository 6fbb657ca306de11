"""POPGym study: recurrent SparseNet gradients against a direct BPTT, the temporal schedule by hand,
masking on a scripted environment, the real labyrinths, smoke runs of every model and env,
reproducibility and resume."""

from __future__ import annotations

import csv
import json
import math
import random

import numpy as np
import pytest
import torch

from sggraph.cli import build_parser, main
from sggraph.core.unroll import Cell
from sggraph.engine.recurrent import compile_cell
from sggraph.envs.popgym import LabyrinthBatch, batch_seeds, make_labyrinth
from sggraph.experiments.popgym import (
    Batch,
    PopgymConfig,
    build_policy,
    collect_batch,
    discounted_returns,
    normalized_returns,
    reinforce_loss,
)
from sggraph.models.baselines import RecurrentPolicy
from sggraph.models.recurrent_sparsenet import RecurrentSparseNetPolicy

SMALL = {"neurons": 12, "q": 3, "slots": 2, "fan_in": 3, "input_neurons": 4, "embed": 8, "actor_slots": 3}


def small_policy(seed=0, dtype=torch.float64):
    policy = RecurrentSparseNetPolicy(obs_dim=7, n_actions=4, seed=seed, **SMALL).to(dtype)
    with torch.no_grad():  # a non-trivial generator, so that λ = 1 has something to ignore
        for p in policy.generator_parameters():
            p.normal_(0, 0.5)
    return policy


def scripted_batch(t_steps=6, batch=3, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    valid = torch.ones(t_steps, batch, dtype=torch.bool)
    valid[4:, 0] = False  # episode 0 ended after 4 steps
    valid[2:, 2] = False
    rewards = torch.randn(t_steps, batch, generator=g, dtype=dtype) * valid
    return Batch(torch.randn(t_steps, batch, 7, generator=g, dtype=dtype),
                 torch.randint(0, 4, (t_steps, batch), generator=g), rewards, valid,
                 torch.tensor([True, False, True]), torch.zeros(t_steps, batch, 4, dtype=dtype))


def direct_logits(policy, obs, theta=None):
    """BPTT through a direct implementation of the recurrent SparseNet (a Python loop over neurons).

    As in the authors' ``sparsenet.py``, every neuron's input is ``x = [parents' states,
    embedding]`` with the embedding masked to zero outside the input neurons, and the routing
    temperature is ``1/√dim(x)`` for every neuron (``scale="full"``); with ``scale="wired"``
    the masked part is left out of ``dim(x)``.

    With ``theta [T, N]``, the child-grouped mixing of eq. 5 is added by the identity
    ``∂/∂out [ out.detach() + θ (out − out.detach()) ] = θ`` on the received path plus the loss
    term ``Σ (1 − θ) ĥ · out`` (returned as the second value), ĥ being eq. 144.
    """
    net = policy.net
    fn, gen = net.state.function, net.state.generator
    emb_fn, act_fn = net.pre["emb"].function, net.post["act"].function
    table = net.state.table.tolist()
    t_steps, batch, _ = obs.shape
    n, q, m = fn.count, fn.dim, fn.slots
    h = obs.new_zeros(batch, n, q)
    logits, extra = [], obs.new_zeros(())
    for t in range(t_steps):
        e = emb_fn(obs[t])
        outs, preds = [], []
        for i in range(n):
            wired = i < fn.input_neurons
            u = h[:, table[i], :].reshape(batch, -1)
            x = torch.cat([u, e * float(wired)], dim=1)  # the authors' masked neuron input
            w_in = fn.proj_in[i] if wired else fn.proj.new_zeros(fn.proj.shape[1], e.shape[1])
            pre = x @ torch.cat([fn.proj[i], w_in], dim=1).T
            gw_in = gen.weight_in[i] if wired else gen.weight.new_zeros(gen.weight.shape[1], e.shape[1])
            gpre = x.detach() @ torch.cat([gen.weight[i], gw_in], dim=1).T + gen.bias[i]
            d = x.shape[1] if fn.scale_dim is not None or wired else u.shape[1]
            alpha = torch.softmax(pre[:, :m] / math.sqrt(d), dim=-1)
            y = torch.tanh(pre[:, m:] + fn.bias[i]).view(batch, m, q)
            outs.append((alpha.unsqueeze(-1) * y).sum(1))
            preds.append((alpha.detach().unsqueeze(-1) * gpre.view(batch, m, q)).sum(1))
        out = torch.stack(outs, 1)
        if theta is None:
            h = out
        else:
            th = theta[t].view(1, n, 1).to(out.dtype)
            h = out.detach() + th * (out - out.detach())
            extra = extra + ((1 - th) * torch.stack(preds, 1).detach() * out).sum()
        logits.append(act_fn(h.reshape(batch, -1)))
    return torch.stack(logits), extra


def grads(policy, loss):
    params = list(policy.model_parameters())
    return torch.autograd.grad(loss, params)


def test_lambda_one_equals_direct_bptt():
    policy = small_policy()
    data = scripted_batch()
    policy.synthetic = True
    policy.net.set_lambda(1.0, node="h")
    mixed = grads(policy, reinforce_loss(policy(data.obs), data, 0.95, 0.01)[0])
    ref_logits, _ = direct_logits(policy, data.obs)
    ref = grads(policy, reinforce_loss(ref_logits, data, 0.95, 0.01)[0])
    for a, b in zip(mixed, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_lambda_one_is_bit_exact_autograd_fp32():
    policy = small_policy(dtype=torch.float32)
    data = scripted_batch(dtype=torch.float32)
    policy.synthetic = False
    plain = grads(policy, reinforce_loss(policy(data.obs), data, 0.95, 0.01)[0])
    policy.synthetic = True
    policy.net.set_lambda(1.0, node="h")
    mixed = grads(policy, reinforce_loss(policy(data.obs), data, 0.95, 0.01)[0])
    for a, b in zip(plain, mixed):
        assert torch.equal(a, b)


def test_sgprop_with_schedule_equals_direct_mixing():
    policy = small_policy(seed=1)
    data = scripted_batch(seed=1)
    theta = torch.rand(SMALL["neurons"], generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    policy.net.set_lambda(theta, node="h")
    policy.synthetic = True
    schedule = policy.net.schedule(data.obs.shape[0])
    assert not torch.allclose(schedule[0], schedule[-1])  # the schedule raises early steps' θ
    mixed = grads(policy, reinforce_loss(policy(data.obs), data, 0.95, 0.01)[0])
    ref_logits, extra = direct_logits(policy, data.obs, schedule)
    ref = grads(policy, reinforce_loss(ref_logits, data, 0.95, 0.01)[0] + extra)
    for a, b in zip(mixed, ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_temporal_schedule_by_hand_on_a_cell():
    # neuron 0 reads 1, 1 reads 2, 2 reads 0: children(0) = {2}, children(1) = {0}, children(2) = {1}
    cell = Cell("ring")
    cell.add_input("x", 2)
    cell.set_state("h", count=3, dim=1, fan_in=1, slots=1, table=[[1], [2], [0]], input="x", input_neurons=1)
    cell.add_node("out", 1, ["h"], fn="linear")
    net = compile_cell(cell, grouping="child", rho=0.1)
    net.set_lambda(torch.tensor([1.0, 0.5, 0.8], dtype=torch.float64), node="h")
    got = net.schedule(3).double()
    # θ_3 = [1, .5, .8]; θ_2 = [min(1, 1 + .1·.2), .5 + .1·0, .8 + .1·.5]; θ_1 = [1, .5, .85 + .1·.5]
    want = torch.tensor([[1.0, 0.5, 0.9], [1.0, 0.5, 0.85], [1.0, 0.5, 0.8]], dtype=torch.float64)
    torch.testing.assert_close(got, want)


class ScriptedEnvs:
    """Three environments with scripted episode ends and rewards; observation = one-hot step index."""

    num_envs, episode_length, obs_dim, n_actions = 3, 6, 7, 4
    def __init__(self):
        self.ends = {0: (2, True), 1: (5, False), 2: (3, True)}  # env: (last step index, terminated?)
        self.t = 0
        self.reset_calls = []

    def reset(self, seed, batch):
        self.t = 0
        self.reset_calls.append((seed, batch))
        return self._obs()

    def _obs(self):
        obs = np.zeros((3, 7), dtype=np.float32)
        obs[:, min(self.t, 6)] = 1
        return obs

    def step(self, actions):
        reward = np.array([1.0, 2.0, 3.0], dtype=np.float32) * (self.t + 1)  # also after the end: must be masked
        term = np.array([self.t == self.ends[i][0] and self.ends[i][1] for i in range(3)])
        trunc = np.array([self.t == self.ends[i][0] and not self.ends[i][1] for i in range(3)])
        self.t += 1
        return self._obs(), reward, term, trunc


class SpyPolicy(torch.nn.Module):
    """Records the state each step receives; uniform logits."""

    def __init__(self):
        super().__init__()
        self.states = []

    def initial_state(self, batch):
        return torch.zeros(batch)

    def step(self, obs, state):
        self.states.append(state.clone())
        return torch.zeros(obs.shape[0], 4), state + 1


def test_masking_and_resets_on_scripted_env():
    envs, policy = ScriptedEnvs(), SpyPolicy()
    data = collect_batch(envs, policy, seed=7, batch=0, generator=torch.Generator().manual_seed(0))
    assert data.obs.shape == (6, 3, 7) and data.actions.shape == (6, 3)
    want_valid = torch.tensor([[1, 1, 1], [1, 1, 1], [1, 1, 1], [0, 1, 1], [0, 1, 0], [0, 1, 0]], dtype=torch.bool)
    assert torch.equal(data.valid, want_valid)
    assert data.success.tolist() == [True, False, True]
    scale = torch.tensor([1.0, 2.0, 3.0])
    want_rewards = torch.arange(1, 7, dtype=torch.float32).unsqueeze(1) * scale * want_valid
    torch.testing.assert_close(data.rewards, want_rewards)
    assert data.episode_returns.tolist() == [6.0, 42.0, 30.0]
    # returns by hand, γ = 0.5: env 0 rewards 1, 2, 3 → G = [1 + .5·(2 + .5·3), 2 + .5·3, 3]
    g = discounted_returns(data.rewards, data.valid, 0.5)
    torch.testing.assert_close(g[:3, 0], torch.tensor([2.75, 3.5, 3.0]))
    assert float(g[3:, 0].abs().sum()) == 0
    adv = normalized_returns(g, data.valid)
    assert abs(float(adv[data.valid].mean())) < 1e-6
    assert abs(float(adv[data.valid].std(unbiased=False)) - 1) < 1e-5
    assert float(adv[~data.valid].abs().sum()) == 0
    # the loss: uniform logits → log π = −log 4 everywhere, entropy log 4
    logits = torch.zeros(6, 3, 4, requires_grad=True)
    loss, _parts = reinforce_loss(logits, data, 0.5, 0.01)
    torch.testing.assert_close(loss, torch.tensor(-0.01 * math.log(4)), atol=1e-6, rtol=0)
    loss.backward()
    assert float(logits.grad[~data.valid].abs().sum()) == 0  # padding steps get no gradient
    # state starts at the initial (zero) state and is carried within the batch; a new batch resets
    assert [float(s[0]) for s in policy.states] == [0, 1, 2, 3, 4, 5]
    collect_batch(envs, policy, seed=7, batch=1, generator=torch.Generator().manual_seed(0))
    assert float(policy.states[6][0]) == 0
    assert envs.reset_calls == [(7, 0), (7, 1)]


def test_rollout_stops_when_every_episode_ended():
    envs = ScriptedEnvs()
    envs.ends = {0: (1, True), 1: (2, True), 2: (0, False)}
    data = collect_batch(envs, SpyPolicy(), seed=0, batch=0, generator=torch.Generator().manual_seed(0))
    assert data.obs.shape[0] == 3


@pytest.mark.parametrize("model", ["sparsenet", "gru", "lstm"])
def test_rollout_logits_equal_training_forward(model):
    envs = LabyrinthBatch("labyrinth_escape", num_envs=3)
    cfg = PopgymConfig(model=model, neurons=24, input_neurons=4, hidden=32, embed=16)
    policy = build_policy(cfg, envs.obs_dim, envs.n_actions)
    data = collect_batch(envs, policy, 0, 0, torch.Generator().manual_seed(0), max_steps=12)
    with torch.no_grad():
        logits = policy(data.obs)
    torch.testing.assert_close(logits, data.logits, rtol=1e-5, atol=1e-5)


def test_labyrinth_batch_is_reproducible_and_leaves_global_rngs_alone():
    envs = LabyrinthBatch("labyrinth_escape", num_envs=4)
    random.seed(1)
    np.random.seed(1)
    py, npy = random.getstate(), np.random.get_state()
    first = envs.reset(seed=3, batch=5)
    assert random.getstate() == py and np.array_equal(np.random.get_state()[1], npy[1])
    steps_a = [envs.step(np.array([0, 1, 2, 3]))[0] for _ in range(5)]
    np.random.seed(99)  # POPGym draws mazes from the global RNG: our explicit seeds must win
    again = envs.reset(seed=3, batch=5)
    steps_b = [envs.step(np.array([0, 1, 2, 3]))[0] for _ in range(5)]
    assert np.array_equal(first, again)
    assert all(np.array_equal(a, b) for a, b in zip(steps_a, steps_b))
    assert batch_seeds(3, 5, 4) != batch_seeds(3, 6, 4)
    assert not np.array_equal(first, envs.reset(seed=3, batch=6))  # another batch, other mazes


def test_observation_layout():
    env = make_labyrinth("labyrinth_escape")
    obs, _ = env.reset(seed=0)
    # 9 tiles × 5 cell kinds + the raw action (5) one-hot, previous action (4), first-step flag (2)
    assert obs.shape == (56,) and set(np.unique(obs)) <= {0, 1} and obs.sum() == 12
    assert env.unwrapped.max_episode_length == 80
    assert make_labyrinth("labyrinth_explore").unwrapped.max_episode_length == 40


@pytest.mark.parametrize("drop", [0.0, 1.0])
def test_explore_reward_rule(drop):
    from popgym.envs.labyrinth_explore import LabyrinthExplore

    wrapped = make_labyrinth("labyrinth_explore", explore_drop_prob=drop)
    with pytest.warns(DeprecationWarning, match="Maze environments"):  # POPGym's own warning
        raw = LabyrinthExplore(maze_dims=(6, 6), episode_length=40)
    wrapped.reset(seed=11)
    raw.reset(seed=11)
    rng = np.random.default_rng(0)
    for _ in range(39):
        a = int(rng.integers(4))
        _, r, term, trunc, _ = wrapped.step(a)
        _, r_raw, term_raw, _, _ = raw.step(a)
        assert term == term_raw
        base = r_raw if drop == 0 else -1 / 40
        assert r == pytest.approx(base + (1.0 if term else 0.0))
        if term or trunc:
            break


SMOKE = ["--batches", "3", "--num-envs", "3", "--neurons", "32", "--input-neurons", "4", "--hidden", "32",
         "--checkpoint-every", "2"]


@pytest.mark.parametrize("env", ["labyrinth_escape", "labyrinth_explore"])
@pytest.mark.parametrize("model,method", [("sparsenet", "sgprop"), ("sparsenet", "backprop"), ("gru", "backprop"),
                                          ("lstm", "backprop")])
def test_smoke_run_writes_a_complete_run_directory(env, model, method, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "popgym", "--env", env, "--model", model, "--method", method, *SMOKE,
                 "--out", str(out)]) == 0
    for name in ("config.json", "metrics.csv", "summary.json", "learning_curve.png", "checkpoint.pt"):
        assert (out / name).stat().st_size > 0, name
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 4 and rows[0].startswith("batch,episodes,success_rate,mean_return")
    assert ("lambda_mean" in rows[0]) == (method == "sgprop")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == model and summary["method"] == method and summary["batches"] == 3
    assert 0 <= summary["auc_success_rate"] <= 1


def _metrics(path):
    rows = [r.split(",") for r in (path / "metrics.csv").read_text().splitlines()]
    keep = [i for i, name in enumerate(rows[0]) if name not in ("seconds", "rollout_seconds")]  # wall times
    return [[r[i] for i in keep] for r in rows]


def test_same_seed_gives_identical_metrics_and_resume_continues_exactly(tmp_path, capsys):
    args = ["train", "popgym", "--method", "sgprop", "--num-envs", "4", "--neurons", "32", "--input-neurons", "4",
            "--checkpoint-every", "2", "--seed", "3"]
    np.random.seed(0)
    random.seed(0)
    assert main([*args, "--batches", "4", "--out", str(tmp_path / "a")]) == 0
    np.random.seed(12345)  # different global RNG states must not matter
    random.seed(54321)
    torch.manual_seed(777)
    assert main([*args, "--batches", "4", "--out", str(tmp_path / "b")]) == 0
    assert _metrics(tmp_path / "a") == _metrics(tmp_path / "b")
    assert main([*args, "--batches", "2", "--out", str(tmp_path / "c")]) == 0
    assert main([*args, "--batches", "4", "--out", str(tmp_path / "c"), "--resume"]) == 0
    assert _metrics(tmp_path / "c") == _metrics(tmp_path / "a")
    summaries = [json.loads((tmp_path / run / "summary.json").read_text()) for run in "ac"]
    for summary in summaries:
        summary.pop("seconds")
    assert summaries[0] == summaries[1]
    rows = list(csv.DictReader((tmp_path / "a" / "metrics.csv").open()))
    losses = [float(r["generator_loss"]) for r in rows]  # ~1e-10 with the authors' zero-initialised generators
    assert all(0 < loss < 1e-3 for loss in losses), losses  # significant digits, not 8 decimals that read 0.0


@pytest.mark.parametrize("argv,needle", [
    (["--model", "gru", "--method", "sgprop"], "needs --model sparsenet"),
    (["--env", "labyrinth_escpe"], "unknown env"),
    (["--lambda", "1.5"], "outside [0, 1]"),
    (["--num-envs", "0"], "num_envs must be at least 1"),
    (["--maze-size", "5"], "even"),
    (["--resume"], "nothing to resume"),
])
def test_bad_settings_exit_2(argv, needle, tmp_path, capsys):
    assert main(["train", "popgym", "--batches", "1", "--out", str(tmp_path / "r"), *argv]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_default_method_follows_the_model():
    assert PopgymConfig(model="gru").method == "backprop"
    assert PopgymConfig(model="sparsenet").method == "sgprop"


def test_policies_repr_and_sizes():
    envs = LabyrinthBatch("labyrinth_escape", num_envs=1)
    sparse = RecurrentSparseNetPolicy(envs.obs_dim, envs.n_actions)
    gru = RecurrentPolicy(envs.obs_dim, envs.n_actions, "gru")
    lstm = RecurrentPolicy(envs.obs_dim, envs.n_actions, "lstm")
    assert sparse.net.state.count == 128 and "CompiledCell" in repr(sparse.net)
    assert gru.rnn.hidden_size == 256 and lstm.rnn.hidden_size == 256


def test_padding_steps_get_no_synthetic_feedback():
    policy = small_policy(seed=2)
    policy.net.set_lambda(0.3, node="h")
    policy.synthetic = True
    data = scripted_batch(seed=2)
    first = grads(policy, reinforce_loss(policy(data.obs, valid=data.valid), data, 0.95, 0.01)[0])
    noisy = torch.where(data.valid.unsqueeze(-1), data.obs, torch.randn_like(data.obs) * 10)
    again = grads(policy, reinforce_loss(policy(noisy, valid=data.valid), data, 0.95, 0.01)[0])
    for a, b in zip(first, again):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    unmasked = grads(policy, reinforce_loss(policy(noisy), data, 0.95, 0.01)[0])
    assert any(not torch.allclose(a, b) for a, b in zip(first, unmasked))  # without valid= padding leaks in


def test_resume_with_other_settings_is_refused(tmp_path, capsys):
    args = ["train", "popgym", "--model", "gru", "--num-envs", "2", "--hidden", "16", "--out", str(tmp_path / "r")]
    assert main([*args, "--batches", "1"]) == 0
    assert main([*args, "--batches", "2", "--lr", "0.002", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "differ from the run's config.json (lr)" in err and "only batches may grow" in err


# ---------------------------------------------------------------- fidelity to the authors' code
# Each test pins one setting of the authors' POPGym code (sparsenet.py, gru.py, lstm.py, trainers.py,
# main.py, run_sweeps_*.sh) that ours once did differently.

def _std_close(t, want, rel):
    got = float(t.detach().double().std())
    assert abs(got - want) <= rel * want, (got, want)


@pytest.mark.parametrize("scale", ["full", "wired"])
def test_lambda_one_equals_direct_bptt_for_both_scales(scale):
    policy = RecurrentSparseNetPolicy(obs_dim=7, n_actions=4, seed=1, scale=scale, **SMALL).double()
    data = scripted_batch(seed=3)
    policy.synthetic = True
    mixed = grads(policy, reinforce_loss(policy(data.obs), data, 0.95, 0.01)[0])
    ref = grads(policy, reinforce_loss(direct_logits(policy, data.obs)[0], data, 0.95, 0.01)[0])
    for a, b in zip(mixed, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_neuron_scale_and_init_use_the_full_masked_input_dim():
    # theirs: every neuron reads [parents (6·6 = 36), embedding (128)], embedding masked to zero for
    # neurons 16..127, so routing scale and key / A / b std are 1/√164 for all 128 neurons
    policy = RecurrentSparseNetPolicy(56, 4, seed=0)
    fn = policy.net.state.function
    assert fn.scale_dim == 164 and fn.proj_in.shape[0] == 16  # only the wired embedding weights exist
    torch.testing.assert_close(fn.scale, torch.full((128,), 164 ** -0.5))
    for t in (fn.proj, fn.proj_in, fn.bias):
        _std_close(t, 164 ** -0.5, 0.02)
        assert abs(float(t.detach().mean())) < 0.003
    wired = RecurrentSparseNetPolicy(56, 4, seed=0, scale="wired").net.state.function
    want = torch.full((128,), 36 ** -0.5)
    want[:16] = 164 ** -0.5
    torch.testing.assert_close(wired.scale, want)
    _std_close(wired.proj[16:], 36 ** -0.5, 0.02)


def test_recurrent_parents_may_include_the_neuron_itself():
    from sggraph.core.unroll import recurrent_table

    policy = RecurrentSparseNetPolicy(56, 4, seed=0)
    table = policy.net.state.table
    assert table.shape == (128, 6)
    assert all(len(set(r)) == 6 for r in table.tolist())  # distinct parents, as randperm(128)[:6]
    selfish = (table == torch.arange(128).unsqueeze(1)).any(1)
    assert int(selfish.sum()) > 0
    # a self-parent is its own child in the temporal schedule
    i = int(selfish.nonzero()[0])
    assert float(policy.net.state.child_mean[i, i]) > 0
    # uniform over all neurons: P(i is a parent of i) = fan_in / count
    hits = sum(int((recurrent_table(16, 4, s, self_parents=True) == np.arange(16)[:, None]).any(1).sum())
               for s in range(200))
    assert abs(hits / (200 * 16) - 4 / 16) < 0.03
    assert not (recurrent_table(16, 4, 0) == np.arange(16)[:, None]).any()  # the engine's default is unchanged
    # the table is a function of the run seed
    assert torch.equal(table, RecurrentSparseNetPolicy(56, 4, seed=0).net.state.table)
    assert not torch.equal(table, RecurrentSparseNetPolicy(56, 4, seed=1).net.state.table)
    cell = Cell("c")
    cell.add_input("x", 2)
    cell.set_state("h", count=3, dim=1, fan_in=3, slots=1, self_parents=True, input="x", input_neurons=1)
    assert sorted(cell.state.parent_table()[0].tolist()) == [0, 1, 2]


def test_direct_bptt_covers_self_parents():
    assert bool((small_policy().net.state.table == torch.arange(SMALL["neurons"]).unsqueeze(1)).any())


def test_actor_init_and_generators_zero():
    policy = RecurrentSparseNetPolicy(56, 4, seed=0)
    actor = policy.net.post["act"].function
    _std_close(actor.weight, 768 ** -0.5, 0.03)  # keys and slot weights ~ N(0, 1/(N q))
    assert torch.count_nonzero(actor.bias) == 0
    assert all(torch.count_nonzero(p) == 0 for p in policy.generator_parameters())


def _orthogonal(w):
    w = w.detach().double()
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    torch.testing.assert_close(gram, torch.eye(gram.shape[0], dtype=torch.float64), atol=1e-5, rtol=0)


def _check_embedding(emb):
    for layer in (emb.first, emb.second):
        _orthogonal(layer.weight)
        assert torch.count_nonzero(layer.bias) == 0


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_embedding_and_baseline_init_are_orthogonal(kind):
    _check_embedding(RecurrentSparseNetPolicy(56, 4, seed=0).net.pre["emb"].function)
    policy = RecurrentPolicy(56, 4, kind)
    _check_embedding(policy.embedding)
    for name, p in policy.rnn.named_parameters():
        if name.startswith("weight"):
            _orthogonal(p)  # the whole [gates·H, in] matrix, as nn.init.orthogonal_ in theirs
        else:
            assert torch.count_nonzero(p) == 0, name
    body = [m for m in policy.actor if isinstance(m, torch.nn.Linear)]
    for layer in body[:-1]:
        _orthogonal(layer.weight)
        assert torch.count_nonzero(layer.bias) == 0
    _std_close(body[-1].weight, 0.01, 0.15)
    assert torch.count_nonzero(body[-1].bias) == 0


def _sgprop_backward(policy, data, horizon=None):
    policy.synthetic = True
    logits = policy(data.obs, valid=data.valid, horizon=horizon)
    reinforce_loss(logits, data, 0.95, 0.01)[0].backward()


def test_generators_regress_onto_the_mixed_feedback():
    policy = small_policy(seed=4)
    policy.net.set_lambda(torch.linspace(0.2, 0.9, SMALL["neurons"], dtype=torch.float64), node="h")
    data = scripted_batch(seed=4)
    _sgprop_backward(policy, data)
    st = policy.net.trace.state
    t_steps, batch = data.valid.shape
    theta = policy.net.schedule(t_steps)
    assert torch.equal(st.thetas, theta)
    got = policy.net.generator_loss(data.valid)
    # theirs: mean over valid (step, episode, neuron, component) of (ĥ − (θ_t g + (1 − θ_t) ĥ.detach()))²
    num, count = 0.0, 0
    for t in range(t_steps):
        g = st.records[t].received  # [N, B, q]
        pred = st.prediction_all[:, t * batch:(t + 1) * batch]
        target = theta[t].view(-1, 1, 1) * g + (1 - theta[t].view(-1, 1, 1)) * pred.detach()
        err = ((pred - target) ** 2).sum(dim=(0, 2))
        num = num + (err * data.valid[t]).sum()
        count += int(data.valid[t].sum()) * g.shape[0] * g.shape[2]
    torch.testing.assert_close(got, num / count, rtol=1e-12, atol=1e-15)
    policy.net.generator_target = "received"
    received = policy.net.generator_loss(data.valid)
    assert not torch.allclose(received, got)
    # the engine's own default is unchanged: received feedback
    cell = Cell("c")
    cell.add_input("x", 2)
    cell.set_state("h", count=4, dim=1, fan_in=2, slots=1, input="x", input_neurons=1)
    cell.add_node("out", 1, ["h"], fn="linear")
    assert compile_cell(cell, grouping="child").generator_target == "received"


def test_generator_gradient_norm_is_clipped():
    policy = small_policy(seed=5)
    policy.net.set_lambda(0.4, node="h")
    data = scripted_batch(seed=5)
    _sgprop_backward(policy, data)
    gens = [p for p in policy.generator_parameters()]
    before = [p.detach().clone() for p in gens]
    loss = policy.net.generator_loss(data.valid)
    raw = torch.autograd.grad(loss, [p for p in gens if p.requires_grad], allow_unused=True, retain_graph=True)
    norm = math.sqrt(sum(float((g ** 2).sum()) for g in raw if g is not None))
    clip = norm / 2  # the clip binds (trainer: PopgymConfig.generator_clip_norm = 0.5, the authors')
    opt = torch.optim.SGD(gens, lr=1.0)
    policy.net.update_generators(opt, valid=data.valid, max_norm=clip)
    step = math.sqrt(sum(float(((p.detach() - b) ** 2).sum()) for p, b in zip(gens, before)))
    assert step == pytest.approx(clip, rel=1e-4)  # clip_grad_norm_ divides by norm + 1e-6


def _authors_theta(policy, valid):
    """The authors' batch θ estimate written out from explicit per-sample gradients: every valid
    (step, episode) sample, received feedback g and prediction ĥ each scaled to unit norm per sample
    and neuron, then eq. 18 with the variance / covariance of the batch means."""
    from torch.func import grad, vmap

    st = policy.net.trace.state
    fn = policy.net.state.function
    params = {k: v.detach() for k, v in fn.named_parameters()}
    t_steps, batch = valid.shape
    cols = valid.reshape(-1).nonzero().squeeze(1)
    u = torch.cat([st.step_inputs[t][0] for t in range(t_steps)], dim=1)[:, cols]
    e = torch.cat([st.step_inputs[t][1] for t in range(t_steps)], dim=0)[cols]
    g = torch.cat([r.received for r in st.records], dim=1)[:, cols]
    hat = st.prediction_all.detach()[:, cols]

    def dot(ps, u1, e1, c1):
        h, _ = fn.step(u1.unsqueeze(1), fn.project_input(e1.unsqueeze(0), ps["proj_in"]), ps)
        return (h.squeeze(1) * c1).sum()

    def vectors(cot):
        cot = cot / cot.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        per = vmap(grad(dot), in_dims=(None, 1, 0, 1))(params, u, e, cot)
        r, n = u.shape[1], fn.count
        proj_in = torch.zeros(r, n, *per["proj_in"].shape[2:], dtype=u.dtype)
        proj_in[:, : fn.input_neurons] = per["proj_in"]
        return torch.cat([per["proj"].reshape(r, n, -1), proj_in.reshape(r, n, -1),
                          per["bias"].reshape(r, n, -1)], dim=-1)  # [R, N, P]

    p, s = vectors(g), vectors(hat)
    u_ = s - p
    r = p.shape[0]
    ubar, pbar = u_.mean(0), p.mean(0)
    v = ((u_ ** 2).sum(-1).mean(0) - (ubar ** 2).sum(-1)) / (r - 1)
    c = ((p * u_).sum(-1).mean(0) - (pbar * ubar).sum(-1)) / (r - 1)
    b2 = ((ubar ** 2).sum(-1) - v).clamp_min(0)
    return (1 + c / (v + b2)).clamp(0, 1)


def test_adaptive_theta_uses_every_valid_sample_with_feedback_normalisation():
    policy = small_policy(seed=6)
    policy.net.set_lambda(0.7, node="h")
    data = scripted_batch(t_steps=8, seed=6)
    _sgprop_backward(policy, data)
    want = _authors_theta(policy, data.valid)
    cfg = PopgymConfig()
    assert cfg.lam_samples is None and cfg.normalize == "feedback"
    got = policy.net.adapt_lambda(momentum=0.0, normalize=cfg.normalize, max_samples=cfg.lam_samples,
                                  valid=data.valid)["h"]
    torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(policy.net.state.lam_self, want.to(policy.net.state.lam_self))


def test_schedule_is_anchored_at_the_rollout_length():
    from sggraph.engine.recurrent import temporal_schedule

    envs = ScriptedEnvs()
    envs.ends = {0: (1, True), 1: (3, True), 2: (2, False)}  # every episode over after 4 of 6 steps
    cfg = PopgymConfig(lam="0.5", **SMALL)
    policy = build_policy(cfg, envs.obs_dim, envs.n_actions)
    opt = torch.optim.Adam(list(policy.model_parameters()), lr=cfg.lr)
    gen_opt = torch.optim.Adam(list(policy.generator_parameters()), lr=cfg.generator_lr)
    from sggraph.experiments.popgym import train_batch

    train_batch(cfg, envs, policy, opt, gen_opt, 0, torch.Generator().manual_seed(0))
    st, thetas = policy.net.state, policy.net.trace.state.thetas
    assert thetas.shape[0] == 4
    full = temporal_schedule(st.lam_self, st.child_mean, 6, cfg.rho)
    torch.testing.assert_close(thetas, full[:4])
    torch.testing.assert_close(policy.net.schedule(4, horizon=6), full[:4])
    assert not torch.allclose(thetas, policy.net.schedule(4))  # the batch's longest episode: another anchor
    cfg.schedule_anchor = "longest"
    train_batch(cfg, envs, policy, opt, gen_opt, 1, torch.Generator().manual_seed(0))
    torch.testing.assert_close(policy.net.trace.state.thetas, policy.net.schedule(4))


def test_sgprop_with_a_rollout_anchored_schedule_equals_direct_mixing():
    policy = small_policy(seed=7)
    data = scripted_batch(seed=7)
    policy.net.set_lambda(torch.rand(SMALL["neurons"], generator=torch.Generator().manual_seed(7),
                                     dtype=torch.float64), node="h")
    policy.synthetic = True
    schedule = policy.net.schedule(data.obs.shape[0], horizon=10)
    mixed = grads(policy, reinforce_loss(policy(data.obs, horizon=10), data, 0.95, 0.01)[0])
    ref_logits, extra = direct_logits(policy, data.obs, schedule)
    ref = grads(policy, reinforce_loss(ref_logits, data, 0.95, 0.01)[0] + extra)
    for a, b in zip(mixed, ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_defaults_are_the_authors():
    cfg = PopgymConfig()
    want = {"num_envs": 20, "lr": 1e-3, "batches": 300, "gamma": 0.95, "entropy_coef": 0.01, "clip_norm": 0.5,
            "generator_lr": 1e-5, "generator_clip_norm": 0.5, "generator_target": "mixed", "lam_init": 1.0,
            "lam": "adaptive", "lam_momentum": 0.9, "lam_samples": None, "normalize": "feedback", "rho": 0.1,
            "schedule_anchor": "rollout", "neuron_scale": "full", "self_parents": True, "maze_size": 6,
            "explore_drop_prob": 0.75, "neurons": 128, "q": 6, "slots": 6, "fan_in": 6, "input_neurons": 16,
            "actor_slots": 6, "embed": 128, "hidden": 256, "method": "sgprop"}
    assert {k: getattr(cfg, k) for k in want} == want
    assert PopgymConfig(normalize=True).normalize == "gradient"  # the former boolean setting
    bad = PopgymConfig(normalize="unit")
    with pytest.raises(Exception, match="unknown normalize"):
        bad.validate()


@pytest.mark.parametrize("env", ["escape", "explore"])
@pytest.mark.parametrize("num_envs", [20, 40])
def test_sweep_specs_are_the_authors_grid(env, num_envs):
    from pathlib import Path

    from sggraph.sweeps import load_spec

    path = Path(__file__).resolve().parents[1] / "examples" / "sweeps" / f"popgym-{env}-{num_envs}.yaml"
    spec = load_spec(path, build_parser())
    cells = spec.cells()
    assert len(cells) == 4 * 5 * 6
    runs = [spec.run_settings(c) for c in cells]
    assert {r["env"] for r in runs} == {f"labyrinth_{env}"}
    assert {r["num_envs"] for r in runs} == {num_envs} and {r["batches"] for r in runs} == {300}
    assert sorted({float(r["lr"]) for r in runs}) == [2e-4, 5e-4, 1e-3, 2e-3, 4e-3]
    assert sorted({int(r["seed"]) for r in runs}) == list(range(6))
    variants = {(r["model"], r.get("method")) for r in runs}
    assert variants == {("sparsenet", "sgprop"), ("sparsenet", "backprop"), ("gru", None), ("lstm", None)}
    # episode length and every sgprop setting come from PopgymConfig's defaults (the authors')
    assert not {"episode_length", "lam", "normalize", "lam_samples", "generator_lr"} & set(runs[0])
