"""The MNIST contextual bandit of the paper's §6 / App. H.3, trained through the engine.

Context: an MNIST image; action: a class sampled from the softmax policy; reward 1 if
correct else 0, flipped with probability ``p_flip`` in training, noiseless in evaluation.
Methods: ``sgprop`` (SparseNet, synthetic-gradient mixing with per-neuron λ), ``backprop``
(the same SparseNet, plain backprop) and ``mlp`` (a dense residual MLP, backprop).

One step: sample a batch; one forward of the policy; REINFORCE loss ``−mean(r · log π(a))``;
one backward (the mixing happens inside it); adaptive λ from that backward; the policy's
Adam step; then one generator update on the targets recorded in that same backward. (The
paper's code updates the generators first, in a second pass over the batch; this single
pass is a reordering: the generators learn from the feedback of the step they served.)

Evaluation reward is the policy's expected noiseless reward ``mean π(target | x)`` on the
evaluation images (the exact mean of the sampled reward, without sampling noise).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..exceptions import ConfigError
from ..rundir import RunDir

__all__ = ["PAPER_LR", "BanditConfig", "run_bandit"]

#: Table 1's learning rates per method.
PAPER_LR = {"sgprop": 0.005, "backprop": 0.001, "mlp": 2e-5}


@dataclass
class BanditConfig:
    """Every Table 1 setting; defaults are the paper's."""

    method: str = "sgprop"  #: sgprop | backprop | mlp
    lam: str = "adaptive"  #: "adaptive" (eq. 18 + momentum) or a fixed λ in [0, 1]
    steps: int = 1500  #: training steps
    seed: int = 0
    batch: int = 64  #: training batch
    eval_batch: int = 4000  #: evaluation images per evaluation
    evaluations: int = 20  #: evaluations along training
    p_flip: float = 0.4  #: training reward flip probability
    classes: tuple[int, ...] = tuple(range(10))  #: the actions (the authors' sweeps used 0,1,3,4,5,6,7,8,9)
    width: int = 200  #: neurons per SparseNet layer
    layers: int = 5
    q: int = 10  #: neuron dimension
    slots: int = 5
    n_parents: int = 5
    lr: float | None = None  #: policy learning rate (None: Table 1's for the method)
    generator_lr: float = 0.005
    lam_init: float = 0.9  #: initial per-neuron λ
    lam_momentum: float = 0.9
    normalize: bool = True  #: normalise per-sample gradients before eq. 18 (App. H.2)
    mlp_width: int = 745
    data_dir: str | None = None  #: MNIST IDX directory (default: $SGGRAPH_DATA or the embedded 10k digits)
    eval_size: int = 2000  #: held-out evaluation images (the last ones of the shuffled file)
    checkpoint_every: int = 100

    def validate(self) -> None:
        if self.method not in PAPER_LR:
            raise ConfigError(f"unknown method '{self.method}'", fix="use sgprop, backprop or mlp")
        if self.lam != "adaptive":
            try:
                value = float(self.lam)
            except ValueError:
                raise ConfigError(f"--lambda must be 'adaptive' or a number, got {self.lam!r}",
                                  fix="pass --lambda adaptive or e.g. --lambda 0.9") from None
            if not 0 <= value <= 1 or math.isnan(value):
                raise ConfigError(f"--lambda {value} is outside [0, 1]", fix="use a λ in [0, 1]")
        for name in ("steps", "batch", "eval_batch", "evaluations", "width", "layers", "q", "slots", "n_parents"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1 (got {getattr(self, name)})", fix=f"set {name} >= 1")
        if not 0 <= self.p_flip <= 1:
            raise ConfigError(f"p_flip = {self.p_flip} is outside [0, 1]", fix="use a probability")

    @property
    def policy_lr(self) -> float:
        return self.lr if self.lr is not None else PAPER_LR[self.method]


def _build_policy(cfg: BanditConfig, n_actions: int):
    from ..compile import compile as compile_graph
    from ..models.baselines import ResidualMLP
    from ..models.sparsenet import sparsenet_graph

    if cfg.method == "mlp":
        mlp = ResidualMLP(784, n_actions, cfg.mlp_width, cfg.layers)
        return mlp, (lambda x: mlp(x)), None
    graph = sparsenet_graph(cfg.width, cfg.layers, cfg.q, cfg.slots, cfg.n_parents, 784, n_actions, cfg.seed)
    net = compile_graph(graph, grouping="child")
    net.synthetic = cfg.method == "sgprop"
    lam0 = cfg.lam_init if cfg.lam == "adaptive" else float(cfg.lam)
    net.set_lambda(lam0)
    net.set_lambda(1.0, node="logits")  # λ = 1 into the action layer
    return net, (lambda x: net({"pixels": x})["logits"]), net


def _lambda_stats(net) -> dict[str, float]:
    out = {}
    if net is None:
        return out
    for name, block in net.blocks.items():
        if name.startswith("h"):
            out[f"lambda_{name}"] = round(float(block.lam_self.mean()), 5)
    return out


def run_bandit(cfg: BanditConfig, out: str | Path, resume: bool = False,
               progress: Callable[[str], None] | None = None) -> dict:
    """Train one run; writes ``config.json``, ``metrics.csv``, ``summary.json``, ``learning_curve.png``
    and ``checkpoint.pt`` into ``out``. Returns the summary."""
    from ..envs.mnist import MnistBandit, load_mnist

    cfg.validate()
    rd = RunDir(out)
    config = dataclasses.asdict(cfg)
    if resume:
        rd.check_resume(config, growable="steps")
    rd.write_json("config.json", config)
    images, labels = load_mnist(cfg.data_dir)
    env = MnistBandit(images, labels, classes=cfg.classes, p_flip=cfg.p_flip, eval_size=cfg.eval_size, seed=cfg.seed)
    torch.manual_seed(cfg.seed)
    model, policy, net = _build_policy(cfg, env.n_actions)
    params = list(net.model_parameters()) if net is not None else list(model.parameters())
    opt = torch.optim.Adam(params, lr=cfg.policy_lr)
    gen_opt = torch.optim.Adam(net.generator_parameters(), lr=cfg.generator_lr) if net is not None else None
    data_gen = torch.Generator().manual_seed(cfg.seed)
    eval_x, eval_y = env.eval_batch(cfg.eval_batch, torch.Generator().manual_seed(10_000 + cfg.seed))
    eval_every = max(1, cfg.steps // cfg.evaluations)
    rows: list[dict] = []
    start = 0
    train_reward = 0.0  # moving average of the (flipped) training reward
    if resume:
        state = rd.load_checkpoint()
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        if gen_opt is not None:
            gen_opt.load_state_dict(state["gen_opt"])
        data_gen.set_state(state["data_gen"])
        torch.set_rng_state(state["torch_rng"])
        rows, start = state["rows"], state["step"]
        train_reward = state["train_reward"]

    def evaluate() -> float:
        # in chunks: a 4,000-image forward at once makes 100+ MB activations, far slower per image
        with torch.no_grad():
            correct = [torch.softmax(policy(x), dim=-1).gather(1, y.unsqueeze(1))
                       for x, y in zip(eval_x.split(500), eval_y.split(500))]
        return float(torch.cat(correct).mean())

    def checkpoint(step: int) -> None:
        rd.save_checkpoint({"step": step, "model": model.state_dict(), "opt": opt.state_dict(),
                            "gen_opt": None if gen_opt is None else gen_opt.state_dict(),
                            "data_gen": data_gen.get_state(), "torch_rng": torch.get_rng_state(), "rows": rows,
                            "train_reward": train_reward})
        rd.write_metrics(rows)

    t0 = time.perf_counter()
    adaptive = cfg.method == "sgprop" and cfg.lam == "adaptive"
    adapt_nodes = [f"h{i}" for i in range(1, cfg.layers + 1)]
    for step in range(start + 1, cfg.steps + 1):
        x, y = env.sample(cfg.batch, data_gen)
        opt.zero_grad(set_to_none=True)
        logits = policy(x)
        log_probs = torch.log_softmax(logits, dim=-1)
        actions = torch.multinomial(log_probs.detach().exp(), 1, generator=data_gen).squeeze(1)
        reward = env.reward(actions, y, data_gen, train=True)
        loss = -(reward * log_probs.gather(1, actions.unsqueeze(1)).squeeze(1)).mean()
        loss.backward()
        if adaptive:
            net.adapt_lambda(momentum=cfg.lam_momentum, normalize=cfg.normalize, nodes=adapt_nodes)
        opt.step()
        if net is not None and net.synthetic:
            net.update_generators(gen_opt)
        train_reward = 0.9 * train_reward + 0.1 * float(reward.mean()) if step > 1 else float(reward.mean())
        if step % eval_every == 0 or step == cfg.steps:
            row = {"step": step, "samples": step * cfg.batch, "eval_reward": round(evaluate(), 6),
                   "train_reward": round(train_reward, 5), **_lambda_stats(net if cfg.method == "sgprop" else None)}
            rows.append(row)
            if progress is not None:
                lam = [v for k, v in row.items() if k.startswith("lambda_")]
                mean_lam = f"  λ̄ {sum(lam) / len(lam):.3f}" if lam else ""
                progress(f"[{cfg.method} seed {cfg.seed}] step {step}/{cfg.steps}  eval reward "
                         f"{row['eval_reward']:.4f}{mean_lam}  {time.perf_counter() - t0:.0f}s")
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            checkpoint(step)
    final = rows[-1]["eval_reward"] if rows else evaluate()
    summary = {"method": cfg.method, "seed": cfg.seed, "steps": cfg.steps, "final_eval_reward": final,
               "mean_eval_reward": sum(r["eval_reward"] for r in rows) / max(len(rows), 1),
               "seconds": round(time.perf_counter() - t0, 2), "resumed_from": start if resume else None,
               "parameters": sum(p.numel() for p in params)}
    rd.write_json("summary.json", summary)
    _plot(rows, rd, f"MNIST bandit — {cfg.method}, seed {cfg.seed}")
    return summary


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
