"""The MNIST contextual bandit of the paper's §6 / App. H.3, trained through the engine.

Context: an MNIST image; action: a class sampled from the softmax policy; reward 1 if
correct else 0, flipped with probability ``p_flip`` in training, noiseless in evaluation.
Methods: ``sgprop`` (SparseNet, synthetic-gradient mixing with per-neuron λ), ``backprop``
(the same SparseNet, plain backprop) and ``mlp`` (a dense tanh MLP, backprop).

One step (``update_order="generator-first"``, the authors' order): sample a batch and its
actions from one forward of the policy; REINFORCE loss ``−mean(r · log π(a))``; the feedback
recursion of that loss's backward (no parameter gradients) gives every neuron its received
feedback, on which the generators take one Adam step; then the policy's backward mixes with
the updated generators' predictions, adaptive λ is estimated from it, and the policy takes
its Adam step. ``update_order="single-pass"`` skips the extra feedback pass: one backward,
then the generator step on the targets recorded in it, so the predictions that were mixed
come from generators one batch older (and never fitted to the batch they serve).

Evaluation reward is the policy's expected noiseless reward ``mean π(target | x)`` on the
evaluation images (the exact mean of the authors' sampled reward, without sampling noise).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..engine import adam, all_finite
from ..exceptions import GradientError
from ..runtime.progress import Progress
from ..runtime.threads import follow_load, threads_policy
from .bandit_config import AUTHORS_CLASSES, PAPER_LR, UPDATE_ORDERS, BanditConfig
from .checkpoint_state import load_model_state, model_state, unused_parameters
from .divergence import Diverged, check_step, train_guarded
from .eventlog import EventLog
from .numbers import significant
from .rundir import RECORDED_ONLY, RunDir

__all__ = ["AUTHORS_CLASSES", "PAPER_LR", "UPDATE_ORDERS", "BanditConfig", "bandit_env", "bandit_update", "build_policy",
           "evaluation_steps", "expected_reward", "load_run_config", "run_bandit", "sparsenet_parameter_count"]


def evaluation_steps(steps: int, evaluations: int) -> list[int]:
    """The authors' evaluation schedule: ``evaluations`` steps spaced evenly from 1 to ``steps``.

    >>> evaluation_steps(1500, 20)[:3], evaluation_steps(1500, 20)[-1]
    ([1, 79, 158], 1500)
    """
    import numpy as np

    return sorted({int(v) for v in np.linspace(1, steps, num=evaluations, dtype=int)})


def sparsenet_parameter_count(cfg: BanditConfig, n_actions: int) -> int:
    """Parameters of the SparseNet policy: per neuron ``M`` keys and slot maps on ``d = q·n_parents`` inputs
    plus ``M·q`` biases, and the action keys ``[A, W·q]``.

    >>> sparsenet_parameter_count(BanditConfig(), 9)
    2818000
    """
    d = cfg.q * cfg.n_parents
    return cfg.layers * cfg.width * cfg.slots * (d + cfg.q * d + cfg.q) + n_actions * cfg.width * cfg.q


def _sparsenet_graph(cfg: BanditConfig, n_actions: int):
    from ..models.sparsenet import sparsenet_graph

    return sparsenet_graph(cfg.width, cfg.layers, cfg.q, cfg.slots, cfg.n_parents, 784, n_actions, cfg.seed)


def _build_policy(cfg: BanditConfig, n_actions: int):
    from ..engine import compile as compile_graph
    from ..models.baselines import MLP

    if cfg.method == "mlp":
        mlp = MLP(784, n_actions, cfg.mlp_width, cfg.layers, residual=cfg.mlp_residual)
        return mlp, (lambda x: mlp(x)), None
    net = compile_graph(_sparsenet_graph(cfg, n_actions), grouping="child", generator_init=cfg.generator_init)
    net.synthetic = cfg.method == "sgprop"
    lam0 = cfg.lam_init if cfg.lam == "adaptive" else float(cfg.lam)
    net.set_lambda(lam0)
    net.set_lambda(1.0, node="logits")  # λ = 1 into the action layer
    return net, (lambda x: net({"pixels": x})["logits"]), net


def _lambda_stats(net) -> dict[str, float]:
    out = {}
    if net is None:
        return out
    for name, theta in net.self_lambdas().items():
        if name.startswith("h"):
            out[f"lambda_{name}"] = significant(theta.mean())
    return out


def build_policy(cfg: BanditConfig, n_actions: int):
    """The policy of ``cfg.method`` with its optimizers: ``(module, policy_fn, net, opt, gen_opt)``.

    ``policy_fn(x [B, 784]) -> logits [B, A]``; ``net`` is the compiled SparseNet (None for the MLP),
    ``gen_opt`` the generators' Adam (None unless the net is compiled).
    """
    model, policy, net = _build_policy(cfg, n_actions)
    params = list(net.model_parameters()) if net is not None else list(model.parameters())
    opt = adam(params, lr=cfg.policy_lr)
    gen_opt = adam(net.generator_parameters(), lr=cfg.generator_lr) if net is not None else None
    return model, policy, net, opt, gen_opt


def bandit_update(cfg: BanditConfig, policy: Callable, net, opt: torch.optim.Optimizer,
                  gen_opt: torch.optim.Optimizer | None, x: torch.Tensor,
                  reward_of: Callable[[torch.Tensor], torch.Tensor], generator: torch.Generator,
                  stats: dict | None = None) -> torch.Tensor:
    """One training step on contexts ``x [B, 784]``; returns the rewards ``[B]``.

    Actions are sampled from the policy's forward (with ``generator``), rewarded by ``reward_of``,
    and the REINFORCE loss ``−mean(r · log π(a))`` is minimised in ``cfg.update_order``.
    ``stats``, when given, receives ``generator_loss`` (sgprop) of this step.
    """
    opt.zero_grad(set_to_none=True)
    log_probs = torch.log_softmax(policy(x), dim=-1)
    if not all_finite(log_probs):
        raise GradientError("the policy's action probabilities are NaN or infinite (its weights grew too large)",
                            fix="lower the learning rate")
    actions = torch.multinomial(log_probs.detach().exp(), 1, generator=generator).squeeze(1)
    reward = reward_of(actions)
    loss = -(reward * log_probs.gather(1, actions.unsqueeze(1)).squeeze(1)).mean()
    synthetic = net is not None and net.synthetic
    generator_first = cfg.update_order == "generator-first"
    if synthetic and generator_first:  # the authors' order: the generators learn from this batch first
        net.record_feedback(loss)
        generator_loss = net.update_generators(gen_opt)
        net.refresh_predictions()
    loss.backward()
    if synthetic and cfg.lam == "adaptive":
        net.adapt_lambda(momentum=cfg.lam_momentum, normalize=cfg.normalize,
                         nodes=[f"h{i}" for i in range(1, cfg.layers + 1)])
    opt.step()
    if synthetic and not generator_first:
        generator_loss = net.update_generators(gen_opt)
    if synthetic and stats is not None:
        stats["generator_loss"] = generator_loss
    return reward


def _gradient_norm(params: list[torch.Tensor]) -> float:
    """The 2-norm of the policy gradient the last step applied."""
    grads = [p.grad for p in params if p.grad is not None]
    return float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0


def _live_metrics(row: dict | None, train_reward: float, stats: dict) -> dict:
    """The progress bar's postfix: the last evaluation, the training reward, mean λ, the generator loss."""
    live = {}
    if row is not None:
        live["eval"] = row["eval_reward"]
        lam = [v for k, v in row.items() if k.startswith("lambda_")]
        if lam:
            live["λ̄"] = sum(lam) / len(lam)
    live["train"] = train_reward
    if "generator_loss" in stats:
        live["gen_loss"] = stats["generator_loss"]
    return live


def bandit_env(cfg: BanditConfig):
    """The :class:`~sggraph.envs.mnist.MnistBandit` of ``cfg`` (its data, classes, p_flip, held-out split, seed)."""
    from ..envs.mnist import MnistBandit, load_mnist

    images, labels = load_mnist(cfg.data_dir)
    return MnistBandit(images, labels, classes=cfg.classes, p_flip=cfg.p_flip, eval_size=cfg.eval_size, seed=cfg.seed)


def load_run_config(run: str | Path) -> BanditConfig:
    """The :class:`BanditConfig` a run directory's ``config.json`` records (less how it ran: its threads)."""
    config = json.loads((Path(run) / "config.json").read_text())
    for key in RECORDED_ONLY:
        config.pop(key, None)
    config["classes"] = tuple(config["classes"])
    return BanditConfig(**config)


def expected_reward(policy: Callable, contexts: torch.Tensor, targets: torch.Tensor, chunk: int = 500) -> float:
    """The noiseless expected reward ``mean π(target | x)`` over ``contexts [B, 784]`` and class indices
    ``targets [B]``, in chunks of ``chunk`` (a 4,000-image forward at once makes 100+ MB activations, far
    slower per image)."""
    with torch.no_grad():
        right = [torch.softmax(policy(x), dim=-1).gather(1, y.unsqueeze(1))
                 for x, y in zip(contexts.split(chunk), targets.split(chunk))]
    return float(torch.cat(right).mean())


def run_bandit(cfg: BanditConfig, out: str | Path, resume: bool = False, progress: bool = False,
               checkpoints: bool = True, overwrite: bool = False) -> dict:
    """Train one run; writes ``config.json`` (with the torch thread count it ran with), ``metrics.csv``,
    TensorBoard event files, ``learning_curve.png``, ``checkpoint.pt`` and, last, ``summary.json`` into
    ``out``. Returns the summary.

    ``out`` is claimed with :func:`~sggraph.experiments.rundir.open_run` (``resume`` continues the run in it,
    ``overwrite`` replaces it). ``progress``: a progress bar on stderr (:class:`~sggraph.runtime.progress.Progress`).
    ``checkpoints``: False writes no resume checkpoint (a run that will never be resumed, such as the
    demo's). A step that makes the parameters non-finite stops the run with a
    :class:`~sggraph.GradientError`; ``checkpoint.pt`` then holds the step before it.
    """
    cfg.validate()
    config = {**dataclasses.asdict(cfg), "threads": torch.get_num_threads(), "threads_policy": threads_policy()}
    fix = (f"lower the learning rate (--lr, now {cfg.policy_lr:g}"
           + (f"; --generator-lr, now {cfg.generator_lr:g}" if cfg.method == "sgprop" else "")
           + ") and start again with --overwrite")
    return train_guarded(out, config, lambda *args: _train(cfg, config, *args), unit="step", growable="steps", fix=fix,
                         resume=resume, overwrite=overwrite, progress=progress, checkpoints=checkpoints)


def _train(cfg: BanditConfig, config: dict, rd: RunDir, resume: bool, progress: bool, checkpoints: bool,
           stop: int | None = None) -> dict | None:
    """The training of :func:`run_bandit` in a claimed run directory (``stop``: replay up to that step, checking
    every step, and end with a checkpoint and no summary)."""
    last = cfg.steps if stop is None else stop
    env = bandit_env(cfg)
    torch.manual_seed(cfg.seed)
    model, policy, net, opt, gen_opt = build_policy(cfg, env.n_actions)
    params = list(net.model_parameters()) if net is not None else list(model.parameters())
    unused = unused_parameters(net)
    data_gen = torch.Generator().manual_seed(cfg.seed)
    evaluations, eval_images = cfg.evaluation_plan()
    eval_x, eval_y = env.eval_batch(eval_images, torch.Generator().manual_seed(10_000 + cfg.seed))
    eval_at = set(evaluation_steps(cfg.steps, evaluations))
    snapshot_at = _snapshot_steps(cfg.steps, cfg.snapshots)
    rows, start, train_reward, before, replay_note = [], 0, 0.0, 0.0, None  # train_reward: a moving average
    if resume:
        rows, start, train_reward, before, replay_note = _restore(cfg, rd, last, eval_at, snapshot_at, model, unused,
                                                                  opt, gen_opt, data_gen)
    rd.write_json("config.json", config)  # after a resume could fail: a failing --resume changes nothing
    watched = params + (list(net.generator_parameters()) if net is not None else [])

    def evaluate() -> float:
        return expected_reward(policy, eval_x, eval_y)

    def checkpoint(step: int) -> None:
        if checkpoints:
            rd.save_checkpoint({"step": step, "model": model_state(model, unused), "opt": opt.state_dict(),
                                "gen_opt": None if gen_opt is None or unused else gen_opt.state_dict(),
                                "data_gen": data_gen.get_state(), "torch_rng": torch.get_rng_state(), "rows": rows,
                                "train_reward": train_reward, "seconds": before + time.perf_counter() - t0})
        rd.write_metrics(rows)

    def snapshot(step: int) -> None:
        if step in snapshot_at:
            rd.save_checkpoint({"step": step, "model": model.state_dict(), "config": config},
                               name=f"snapshot-step{step}.pt")

    t0 = time.perf_counter()
    if start == 0:
        snapshot(0)
    n_params = sum(p.numel() for p in params)
    events = EventLog(rd.path, purge_step=start + 1 if resume else None)
    bar = Progress(last, f"bandit {cfg.method} seed {cfg.seed}", unit="step", quiet=not progress, initial=start)
    try:
        if replay_note is not None:
            bar.note(replay_note)
        if start == 0:
            bar.note(f"[bandit {cfg.method} seed {cfg.seed}] {n_params:,} policy parameters (SparseNet of these "
                     f"settings: {sparsenet_parameter_count(cfg, env.n_actions):,}), "
                     f"torch threads: {config['threads']}")
        row = rows[-1] if rows else None
        for step in range(start + 1, last + 1):
            follow_load()  # fewer torch threads while other processes keep the CPUs busy (default threads)
            x, y = env.sample(cfg.batch, data_gen)
            stats: dict = {}
            t_step = time.perf_counter()
            try:
                reward = bandit_update(cfg, policy, net, opt, gen_opt, x,
                                       lambda actions, y=y: env.reward(actions, y, data_gen, train=True), data_gen,
                                       stats)
            except GradientError as err:  # a mixer met a NaN or infinite gradient
                raise Diverged(step, err.message) from None
            seconds = time.perf_counter() - t_step
            if stop is not None or step % cfg.checkpoint_every == 0 or step in (cfg.steps, last) \
                    or step in snapshot_at:
                check_step(step, watched)  # every step when replaying, else before anything is saved
            train_reward = 0.9 * train_reward + 0.1 * float(reward.mean()) if step > 1 else float(reward.mean())
            events.scalars({"train_reward": train_reward, "seconds_per_step": seconds,
                            "grad_norm": _gradient_norm(params), **stats}, step)
            evaluated = step in eval_at
            if evaluated:
                row = {"step": step, "samples": step * cfg.batch, "eval_reward": significant(evaluate()),
                       "train_reward": significant(train_reward),
                       **_lambda_stats(net if cfg.method == "sgprop" else None)}
                rows.append(row)
                _log_evaluation(events, row, net if cfg.method == "sgprop" else None, step)
            bar.update(1, line=evaluated, **_live_metrics(row, train_reward, stats))
            snapshot(step)
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                checkpoint(step)
    finally:
        bar.close()
        events.close()
    if stop is not None:
        checkpoint(stop)
        return None
    final = rows[-1]["eval_reward"] if rows else evaluate()
    summary = {"method": cfg.method, "seed": cfg.seed, "steps": cfg.steps, "final_eval_reward": final,
               "mean_eval_reward": sum(r["eval_reward"] for r in rows) / max(len(rows), 1),
               "evaluations": evaluations, "eval_images": eval_images,
               "seconds": round(before + time.perf_counter() - t0, 2), "parameters": n_params,
               "sparsenet_parameters": sparsenet_parameter_count(cfg, env.n_actions)}
    _plot(rows, rd, f"MNIST bandit — {cfg.method}, seed {cfg.seed}")
    rd.write_json("summary.json", summary)  # last: it marks the run finished
    return summary


def _restore(cfg: BanditConfig, rd: RunDir, last: int, eval_at: set[int], snapshot_at: set[int], model, unused,
             opt, gen_opt, data_gen: torch.Generator) -> tuple[list[dict], int, float, float, str | None]:
    """Load the run's checkpoint into the model, optimizers and generators; returns ``(rows, start, train_reward,
    seconds so far, note)``. A checkpoint past ``last`` is refused; one whose records follow another length's
    schedule is not loaded (``start`` 0, ``note`` says why): the run trains again from step 0."""
    state = rd.load_checkpoint(keys=("step", "model", "opt", "gen_opt", "data_gen", "torch_rng", "rows",
                                     "train_reward"))
    done = int(state["step"])
    rd.check_length(done, last, "steps", "step")
    before = float(state.get("seconds", 0.0))
    note = _schedule_change(cfg, rd, done, [int(r["step"]) for r in state["rows"]], eval_at, snapshot_at)
    if note is not None:  # the records so far follow another length's schedule: train again from step 0
        keep = {f"snapshot-step{s}.pt" for s in snapshot_at}
        for path in rd.path.glob("snapshot-step*.pt"):
            if path.name not in keep:
                path.unlink()
        return [], 0, 0.0, before, note
    with rd.restoring():
        load_model_state(model, state["model"], unused)
        opt.load_state_dict(state["opt"])
        if gen_opt is not None and state["gen_opt"] is not None:
            gen_opt.load_state_dict(state["gen_opt"])
        data_gen.set_state(state["data_gen"])
        torch.set_rng_state(state["torch_rng"])
    return list(state["rows"]), done, float(state["train_reward"]), before, None


def _snapshot_steps(steps: int, snapshots: int) -> set[int]:
    """The steps whose model a run of ``steps`` with ``snapshots`` snapshots saves (evenly spaced from 0).

    >>> sorted(_snapshot_steps(10, 3)), _snapshot_steps(10, 1), _snapshot_steps(10, 0)
    ([0, 5, 10], {10}, set())
    """
    if snapshots > 1:
        return {int(v) for v in torch.linspace(0, steps, snapshots).round().tolist()}
    return {steps} if snapshots == 1 else set()


def _schedule_change(cfg: BanditConfig, rd: RunDir, done: int, recorded: list[int], eval_at: set[int],
                     snapshot_at: set[int]) -> str | None:
    """Why a resumed run must train again from step 0 (None: it continues from its checkpoint).

    The evaluation (and snapshot) schedule follows the run's length: a run resumed with another ``steps``
    would, past its checkpoint, no longer match an uninterrupted run of that length if its records up to
    step ``done`` were taken on the old schedule. Training is deterministic, so training again from step 0
    gives exactly the uninterrupted run.
    """
    wanted = sorted(s for s in eval_at if s <= done)
    saved = rd.saved_config() or {}
    old_steps = saved.get("steps")
    old_snapshots = set() if not isinstance(old_steps, int) else \
        {s for s in _snapshot_steps(old_steps, cfg.snapshots) if s <= done}
    if recorded == wanted and old_snapshots == {s for s in snapshot_at if s <= done}:
        return None
    return (f"[bandit {cfg.method} seed {cfg.seed}] the evaluations of {cfg.steps} steps fall on other steps "
            f"than the run's so far (up to step {done}): training again from step 0, so that the records "
            f"equal an uninterrupted run of {cfg.steps} steps")


def _log_evaluation(events: EventLog, row: dict, net, step: int) -> None:
    """An evaluation's ``metrics.csv`` row as scalars, and each hidden layer's per-neuron λ as a histogram."""
    events.scalars({k: v for k, v in row.items() if k != "train_reward"}, step)
    if net is not None:
        for name, theta in net.self_lambdas().items():
            if name.startswith("h"):
                events.histogram(f"lambda/{name}", theta, step)


def _plot(rows: list[dict], rd: RunDir, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.plot([r["samples"] for r in rows], [r["eval_reward"] for r in rows], marker="o", ms=3)
    ax.set_xlabel("training samples")
    ax.set_ylabel("evaluation reward")
    ax.set_title(title)
    fig.tight_layout()
    rd.save_figure(fig, "learning_curve.png")
