"""POPGym labyrinths with REINFORCE through time (App. H.4): recurrent SparseNet (sgprop or
backprop) against GRU and LSTM.

One batch:

1. reset ``num_envs`` labyrinths (seeds from (seed, batch)) and roll the policy out step by
   step without gradients, sampling actions, until every episode has ended or the episode
   length is reached; steps after an episode's end are padding (``valid`` false);
2. discounted returns ``G_t = r_t + γ G_{t+1}`` inside each episode, normalised to mean 0 and
   std 1 over the valid steps;
3. one forward of the whole sequence from the zero state (BPTT),
   ``loss = −Σ_valid log π(a_t) Ĝ_t / n_valid − c_H Σ_valid H(π_t) / n_valid``;
4. one backward (sgprop mixes synthetic gradients into it, with the temporal θ schedule
   anchored at the rollout length), adaptive θ from it (sgprop: eq. 18 over every valid
   (step, episode) sample, feedback normalised per sample and neuron), gradient-norm
   clipping, Adam step; then one generator update (sgprop: masked MSE onto the mixed feedback
   ``θ_t g̃ + (1 − θ_t) ĥ`` the state passed on, gradient norm clipped at 0.5).

The rollout and the training forward compute the same logits (same parameters, zero state at
the episode start), so the log-probabilities are those of the actions taken.

Every default follows the authors' experiment code and sweep scripts (``main.py``,
``trainers.py``, ``run_sweeps_*.sh``). Deliberate differences: padding steps (after an
episode's end) get no synthetic feedback (the authors' code mixes ``(1 − θ) ĥ`` into them
and lets it flow back into the episode); the rollout stops once every episode has ended
(the padding steps it skips would receive no gradient at all); the policy step comes before
the generator step (they touch disjoint parameters, so the order does not change the result).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..engine import adam, all_finite
from ..exceptions import GradientError
from ..runtime.progress import Progress
from ..runtime.threads import follow_load, threads_policy
from .checkpoint_state import load_model_state, model_state
from .divergence import Diverged, check_step, train_guarded
from .eventlog import EventLog
from .numbers import significant
from .popgym_config import METHODS, MODELS, PopgymConfig
from .rundir import RunDir

__all__ = ["METHODS", "MODELS", "Batch", "PopgymConfig", "build_policy", "collect_batch", "discounted_returns", "normalized_returns",
           "reinforce_loss", "run_popgym", "train_batch"]

def build_policy(cfg: PopgymConfig, obs_dim: int, n_actions: int) -> torch.nn.Module:
    """The policy of ``cfg.model`` (SparseNet: synthetic mixing on for ``sgprop``)."""
    from ..models.baselines import RecurrentPolicy
    from ..models.recurrent_sparsenet import RecurrentSparseNetPolicy

    if cfg.model == "sparsenet":
        policy = RecurrentSparseNetPolicy(obs_dim, n_actions, cfg.neurons, cfg.q, cfg.slots, cfg.fan_in,
                                          cfg.input_neurons, cfg.embed, cfg.actor_slots, cfg.seed, cfg.rho,
                                          scale=cfg.neuron_scale, self_parents=cfg.self_parents,
                                          generator_target=cfg.generator_target)
        policy.synthetic = cfg.method == "sgprop"
        policy.net.set_lambda(cfg.lam_init if cfg.lam == "adaptive" else float(cfg.lam), node="h")
        return policy
    return RecurrentPolicy(obs_dim, n_actions, cfg.model, cfg.hidden, cfg.embed, seed=cfg.seed)


@dataclass
class Batch:
    """One batch of episodes, time-major.

    Attributes
    ----------
    obs : ``[T, B, obs_dim]`` float
    actions : ``[T, B]`` long
    rewards : ``[T, B]`` float (0 on padding steps)
    valid : ``[T, B]`` bool — the step belongs to the episode (false after it ended)
    success : ``[B]`` bool — the episode terminated (escaped / fully explored) rather than timed out
    logits : ``[T, B, A]`` float — the rollout's action logits
    """

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    valid: torch.Tensor
    success: torch.Tensor
    logits: torch.Tensor

    @property
    def episode_returns(self) -> torch.Tensor:
        """Undiscounted return of each episode ``[B]``."""
        return self.rewards.sum(0)


def collect_batch(envs, policy, seed: int, batch: int, generator: torch.Generator,
                  max_steps: int | None = None) -> Batch:
    """Reset every environment and roll ``policy`` out (no gradients) until all episodes end.

    ``envs`` is a :class:`~sggraph.envs.popgym.LabyrinthBatch` or anything with its
    ``reset(seed, batch)`` / ``step(actions)`` / ``num_envs`` / ``episode_length``.
    """
    horizon = envs.episode_length if max_steps is None else max_steps
    n = envs.num_envs
    obs = torch.from_numpy(envs.reset(seed, batch))
    state = policy.initial_state(n)
    alive = torch.ones(n, dtype=torch.bool)
    success = torch.zeros(n, dtype=torch.bool)
    obs_seq, act_seq, rew_seq, valid_seq, logit_seq = [], [], [], [], []
    with torch.no_grad():
        for _ in range(horizon):
            logits, state = policy.step(obs, state)
            if not all_finite(logits):
                raise GradientError("the policy's action logits are NaN or infinite (its weights grew too large)",
                                    fix="lower the learning rate")
            actions = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator).squeeze(1)
            next_obs, reward, terminated, truncated = envs.step(actions.numpy())
            obs_seq.append(obs)
            logit_seq.append(logits)
            act_seq.append(actions)
            valid_seq.append(alive.clone())
            rew_seq.append(torch.from_numpy(reward) * alive)
            term = torch.from_numpy(np.asarray(terminated, dtype=bool))
            success |= alive & term
            alive &= ~(term | torch.from_numpy(np.asarray(truncated, dtype=bool)))
            # an ended episode's environment auto-resets into a maze drawn from POPGym's global RNG:
            # feed zeros instead, so that padding steps depend on nothing outside the run
            obs = torch.from_numpy(next_obs) * alive.unsqueeze(1)
            if not alive.any():
                break
    return Batch(torch.stack(obs_seq), torch.stack(act_seq), torch.stack(rew_seq), torch.stack(valid_seq), success,
                 torch.stack(logit_seq))


def discounted_returns(rewards: torch.Tensor, valid: torch.Tensor, gamma: float) -> torch.Tensor:
    """``G_t = r_t + γ G_{t+1}`` inside each episode (0 on padding). Shapes ``[T, B]``.

    >>> r = torch.tensor([[1.0], [0.0], [2.0], [5.0]]); v = torch.tensor([[True], [True], [True], [False]])
    >>> discounted_returns(r, v, 0.5).squeeze(1).tolist()
    [1.5, 1.0, 2.0, 0.0]
    """
    out = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = (rewards[t] + gamma * running) * valid[t]
        out[t] = running
    return out


def normalized_returns(returns: torch.Tensor, valid: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Returns standardised over the valid steps (mean 0, std 1; padding 0)."""
    g = returns[valid]
    std = g.std(unbiased=False) if g.numel() > 1 else g.new_tensor(0.0)
    return torch.where(valid, (returns - g.mean()) / (std + eps), torch.zeros_like(returns))


def reinforce_loss(logits: torch.Tensor, batch: Batch, gamma: float, entropy_coef: float) -> tuple[torch.Tensor,
                                                                                                   dict]:
    """Masked REINFORCE loss with an entropy bonus, and its parts."""
    log_probs = torch.log_softmax(logits, dim=-1)
    taken = log_probs.gather(-1, batch.actions.unsqueeze(-1)).squeeze(-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    adv = normalized_returns(discounted_returns(batch.rewards, batch.valid, gamma), batch.valid)
    mask = batch.valid.to(logits.dtype)
    n_valid = mask.sum().clamp_min(1)
    pg = -(taken * adv * mask).sum() / n_valid
    ent = (entropy * mask).sum() / n_valid
    return pg - entropy_coef * ent, {"policy_loss": float(pg.detach()), "entropy": float(ent.detach())}


def train_batch(cfg: PopgymConfig, envs, policy, opt, gen_opt, batch_index: int,
                generator: torch.Generator) -> dict:
    """Collect one batch and make one update; returns the metrics row."""
    t0 = time.perf_counter()
    data = collect_batch(envs, policy, cfg.seed, batch_index, generator)
    rollout_seconds = time.perf_counter() - t0
    opt.zero_grad(set_to_none=True)
    sgprop = cfg.method == "sgprop"
    if cfg.model == "sparsenet":
        horizon = envs.episode_length if cfg.schedule_anchor == "rollout" else None
        logits = policy(data.obs, valid=data.valid, horizon=horizon)
    else:
        logits = policy(data.obs, valid=data.valid)
    loss, parts = reinforce_loss(logits, data, cfg.gamma, cfg.entropy_coef)
    loss.backward()
    if sgprop and cfg.lam == "adaptive":
        policy.net.adapt_lambda(momentum=cfg.lam_momentum, normalize=cfg.normalize, max_samples=cfg.lam_samples,
                                valid=data.valid)
    params = [p for g in opt.param_groups for p in g["params"]]
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.clip_norm))
    opt.step()
    generator_loss = None
    if sgprop:
        generator_loss = policy.net.update_generators(gen_opt, valid=data.valid,
                                                      max_norm=cfg.generator_clip_norm or None)
    row = {"batch": batch_index + 1, "episodes": (batch_index + 1) * envs.num_envs,
           "success_rate": round(float(data.success.float().mean()), 5),
           "mean_return": significant(data.episode_returns.mean()),
           "episode_steps": round(float(data.valid.sum(0).float().mean()), 2),
           "loss": significant(loss.detach()), "entropy": significant(parts["entropy"]),
           "grad_norm": significant(grad_norm)}
    if sgprop:
        row["lambda_mean"] = significant(policy.lambda_mean())
        row["generator_loss"] = significant(generator_loss)
    row["seconds"] = round(time.perf_counter() - t0, 4)
    row["rollout_seconds"] = round(rollout_seconds, 4)
    return row


def run_popgym(cfg: PopgymConfig, out: str | Path, resume: bool = False, progress: bool = False,
               checkpoints: bool = True, overwrite: bool = False) -> dict:
    """Train one run; writes ``config.json`` (with the torch thread count it ran with), ``metrics.csv``
    (a row per batch), TensorBoard event files, ``learning_curve.png``, ``checkpoint.pt`` and, last,
    ``summary.json`` into ``out``. Returns the summary.

    ``out`` is claimed with :func:`~sggraph.experiments.rundir.open_run` (``resume`` continues the run in it,
    ``overwrite`` replaces it). ``progress``: a progress bar on stderr (:class:`~sggraph.runtime.progress.Progress`).
    ``checkpoints``: False writes no resume checkpoint (a run that will never be resumed, such as the
    demo's). A batch whose loss, gradient or updated parameters are not finite stops the run with a
    :class:`~sggraph.GradientError`; ``checkpoint.pt`` then holds the batch before it.
    """
    cfg.validate()
    config = {**dataclasses.asdict(cfg), "threads": torch.get_num_threads(), "threads_policy": threads_policy()}
    fix = (f"lower the learning rate (--lr, now {cfg.lr:g}"
           + (f"; --generator-lr, now {cfg.generator_lr:g}" if cfg.method == "sgprop" else "")
           + f") or the gradient clip (--clip-norm, now {cfg.clip_norm:g}) and start again with --overwrite")
    return train_guarded(out, config, lambda *args: _train(cfg, config, *args), unit="batch", growable="batches", fix=fix,
                         resume=resume, overwrite=overwrite, progress=progress, checkpoints=checkpoints)


def _train(cfg: PopgymConfig, config: dict, rd: RunDir, resume: bool, progress: bool, checkpoints: bool,
           stop: int | None = None) -> dict | None:
    """The training of :func:`run_popgym` in a claimed run directory (``stop``: replay up to that many batches,
    checking every batch, and end with a checkpoint and no summary)."""
    from ..envs.popgym import LabyrinthBatch

    last = cfg.batches if stop is None else stop
    envs = LabyrinthBatch(cfg.env, cfg.num_envs, cfg.maze_size, cfg.episode_length, cfg.explore_drop_prob)
    torch.manual_seed(cfg.seed)
    policy = build_policy(cfg, envs.obs_dim, envs.n_actions)
    opt = adam(list(policy.model_parameters()), lr=cfg.lr)
    gen_params = list(policy.generator_parameters())
    gen_opt = adam(gen_params, lr=cfg.generator_lr) if cfg.method == "sgprop" else None
    unused = gen_params if cfg.method != "sgprop" else []  # a backprop SparseNet never uses its generators
    sampler = torch.Generator().manual_seed(cfg.seed)
    rows: list[dict] = []
    start = 0
    before = 0.0  # seconds the run's earlier segments took
    if resume:
        state = rd.load_checkpoint(keys=("batch", "policy", "opt", "gen_opt", "sampler", "torch_rng", "rows"))
        rd.check_length(int(state["batch"]), last, "batches", "batch")
        before = float(state.get("seconds", 0.0))
        with rd.restoring():
            load_model_state(policy, state["policy"], unused)
            opt.load_state_dict(state["opt"])
            if gen_opt is not None:
                gen_opt.load_state_dict(state["gen_opt"])
            sampler.set_state(state["sampler"])
            torch.set_rng_state(state["torch_rng"])
            rows, start = list(state["rows"]), int(state["batch"])
    rd.write_json("config.json", config)  # after a resume could fail: a failing --resume changes nothing
    watched = list(policy.model_parameters()) + gen_params

    def checkpoint(done: int) -> None:
        if checkpoints:
            rd.save_checkpoint({"batch": done, "policy": model_state(policy, unused), "opt": opt.state_dict(),
                                "gen_opt": None if gen_opt is None else gen_opt.state_dict(),
                                "sampler": sampler.get_state(), "torch_rng": torch.get_rng_state(), "rows": rows,
                                "seconds": before + time.perf_counter() - t0})
        rd.write_metrics(rows)

    t0 = time.perf_counter()
    label = f"{cfg.model} {cfg.method}" if cfg.model == "sparsenet" else cfg.model
    histogram_every = max(1, cfg.batches // 50)
    events = EventLog(rd.path, purge_step=start + 1 if resume else None)
    bar = Progress(last, f"{cfg.env} {label} seed {cfg.seed}", unit="batch", quiet=not progress, initial=start)
    try:
        for b in range(start, last):
            follow_load()  # fewer torch threads while other processes keep the CPUs busy (default threads)
            try:
                row = train_batch(cfg, envs, policy, opt, gen_opt, b, sampler)
            except GradientError as err:  # a mixer met a NaN or infinite gradient
                raise Diverged(b + 1, err.message) from None
            if not math.isfinite(row["grad_norm"]):
                raise Diverged(b + 1, f"the gradient norm is {row['grad_norm']}")
            if stop is not None or (b + 1) % cfg.checkpoint_every == 0 or b + 1 in (cfg.batches, last):
                check_step(b + 1, watched, loss=row["loss"])  # every batch when replaying, else before a checkpoint
            elif not math.isfinite(row["loss"]):
                raise Diverged(b + 1, f"the loss is {row['loss']}")
            rows.append(row)
            events.scalars(row, b + 1)
            if cfg.method == "sgprop" and ((b + 1) % histogram_every == 0 or b + 1 == cfg.batches):
                for name, theta in policy.net.self_lambdas().items():
                    events.histogram(f"lambda/{name}", theta, b + 1)
            bar.update(1, **_live_metrics(rows))
            if (b + 1) % cfg.checkpoint_every == 0 or b + 1 == cfg.batches:
                checkpoint(b + 1)
    finally:
        bar.close()
        events.close()
    envs.close()
    if stop is not None:
        checkpoint(stop)
        return None
    rates = [r["success_rate"] for r in rows]
    tail = rates[-max(1, len(rates) // 10):]
    summary = {"env": cfg.env, "model": cfg.model, "method": cfg.method, "seed": cfg.seed, "lr": cfg.lr,
               "num_envs": cfg.num_envs, "batches": cfg.batches,
               "final_success_rate": round(sum(tail) / len(tail), 5) if tail else None,
               "auc_success_rate": round(sum(rates) / len(rates), 5) if rates else None,
               "seconds": round(before + time.perf_counter() - t0, 2),
               "parameters": sum(p.numel() for p in policy.model_parameters())}
    _plot(rows, rd, f"{cfg.env} — {label}, seed {cfg.seed}")
    rd.write_json("summary.json", summary)  # last: it marks the run finished
    return summary


def _live_metrics(rows: list[dict]) -> dict:
    """The progress bar's postfix: success rate over the last 10 batches, the last return, θ̄, the generator loss."""
    recent = rows[-10:]
    row = rows[-1]
    live = {"success": sum(r["success_rate"] for r in recent) / len(recent), "return": row["mean_return"]}
    if "lambda_mean" in row:
        live["θ̄"] = row["lambda_mean"]
    if "generator_loss" in row:
        live["gen_loss"] = row["generator_loss"]
    return live


def _plot(rows: list[dict], rd: RunDir, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    x = [r["episodes"] for r in rows]
    y = np.array([r["success_rate"] for r in rows])
    ax.plot(x, y, lw=0.6, alpha=0.4)
    if len(y) >= 10:
        ax.plot(x[9:], np.convolve(y, np.ones(10) / 10, mode="valid"), lw=1.5, label="mean of 10 batches")
        ax.legend(fontsize=7)
    ax.set_xlabel("episodes")
    ax.set_ylabel("success rate")
    ax.set_title(title)
    fig.tight_layout()
    rd.save_figure(fig, "learning_curve.png")
