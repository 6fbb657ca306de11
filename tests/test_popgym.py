"""POPGym study: recurrent SparseNet gradients against a direct BPTT, the temporal schedule by hand,
masking on a scripted environment, the real labyrinths, smoke runs of every model and env,
reproducibility and resume."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch
from sggraph.envs.popgym import LabyrinthBatch, batch_seeds, make_labyrinth
from sggraph.models.baselines import RecurrentPolicy
from sggraph.models.recurrent_sparsenet import RecurrentSparseNetPolicy

from sggraph.cli import main
from sggraph.experiments.popgym import (
    Batch,
    PopgymConfig,
    build_policy,
    collect_batch,
    discounted_returns,
    normalized_returns,
    reinforce_loss,
)
from sggraph.recurrent import compile_cell
from sggraph.unroll import Cell

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
            u = h[:, table[i], :].reshape(batch, -1)
            pre = u @ fn.proj[i].T
            d = u.shape[1]
            gpre = u.detach() @ gen.weight[i].T + gen.bias[i]
            if i < fn.input_neurons:
                pre = pre + e @ fn.proj_in[i].T
                gpre = gpre + e.detach() @ gen.weight_in[i].T
                d += e.shape[1]
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
    assert not np.array_equal(first, envs.reset(seed=3, batch=6)) or batch_seeds(3, 5, 4) != batch_seeds(3, 6, 4)


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
    assert json.loads((tmp_path / "c" / "summary.json").read_text())["resumed_from"] == 2


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
