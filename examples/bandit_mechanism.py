"""Where do synthetic gradients reduce gradient error in the MNIST bandit? (not in the paper)

For model snapshots of an sgprop run (``sggraph train mnist-bandit --snapshots 3``: steps 0, the
middle and the end), profile each SparseNet layer's gradient estimators with
``sggraph.engine.diagnostics.profile`` on fresh training batches of the bandit. A sample's feedback is
its share of the batch-mean REINFORCE loss's gradient, ``∂(−r log π(a)/n)/∂logits =
−r (e_a − π)/n`` with flipped rewards — the scale the generators were trained on:

* ``delta2_backprop`` — Δ² of the n-sample backprop estimator of the layer's parameter gradient;
* ``delta2_mixture`` — Δ̃² of the mixture the run used at that step (its per-neuron λ), split
  as ``variance/n + b̃²`` (Lemma 1; the within/between split needs repeated contexts, which
  MNIST images are not);
* ``lambda_star`` — eq. 18's optimal layer-wide λ for n-sample means, beside the mean of the
  adaptive per-neuron λ the run had reached.

n = 64 (the training batch). "True" gradients are the mean over ``--reference`` backprop samples.
Beside the profile, one training batch of n at the run's λ gives, per layer, the norm of the
generators' prediction over the norm of the feedback the layer received (``pred_over_received``)
and their cosine.

    python examples/bandit_mechanism.py ~/sggraph-runs/bandit-fig5/method=sgprop,lambda=adaptive,snapshots=3,seed=0 \\
        --out examples/results

Writes ``bandit_mechanism.csv`` and ``bandit_mechanism.png``.
"""

from __future__ import annotations

import argparse
import csv
import re
from pathlib import Path

import torch

from sggraph.engine import profile
from sggraph.envs.mnist import MnistBandit
from sggraph.experiments.mnist_bandit import bandit_env, build_policy, load_run_config


def bandit_sampler(env: MnistBandit, policy, n: int):
    """``sampler(count, generator)`` for the profiler: contexts, REINFORCE feedback on the logits
    (each sample's share of an ``n``-sample batch-mean loss)."""

    def sample(count: int, gen: torch.Generator):
        x, y = env.sample(count, gen)
        with torch.no_grad():
            pi = torch.softmax(policy(x), dim=-1)
        actions = torch.multinomial(pi, 1, generator=gen).squeeze(1)
        reward = env.reward(actions, y, gen, train=True)
        onehot = torch.nn.functional.one_hot(actions, pi.shape[1]).to(pi)
        return {"pixels": x}, {"logits": -reward.unsqueeze(1) * (onehot - pi) / n}, None

    return sample


def _prediction_scale(net, sampler, n: int) -> dict[str, dict[str, float]]:
    """Per layer, on one batch of ``n`` at the net's λ: ‖ĥ‖ / ‖received feedback‖ and their cosine."""
    inputs, feedback, _ = sampler(n, torch.Generator().manual_seed(2))
    net.zero_grad(set_to_none=True)
    (net(inputs)["logits"] * feedback["logits"]).sum().backward()
    out = {}
    for name, record in net.records().items():
        if record.synthetic_output is None or record.received is None:
            continue
        pred, got = record.synthetic_output.flatten(), record.received.flatten()
        out[name] = {"pred_over_received": float(pred.norm() / got.norm()),
                     "cosine": float(torch.nn.functional.cosine_similarity(pred, got, dim=0))}
    net.zero_grad(set_to_none=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path, help="an sgprop run directory with snapshot-step*.pt files")
    ap.add_argument("--out", type=Path, default=Path("examples/results"))
    ap.add_argument("--n", type=int, default=64, help="samples per gradient estimate (the batch)")
    ap.add_argument("--reference", type=int, default=256, help="backprop samples that estimate E g")
    ap.add_argument("--samples", type=int, default=256, help="samples that estimate the moments")
    args = ap.parse_args()

    cfg = load_run_config(args.run)
    env = bandit_env(cfg)
    snaps = sorted(args.run.glob("snapshot-step*.pt"), key=lambda p: int(re.findall(r"\d+", p.stem)[-1]))
    if not snaps:
        raise SystemExit(f"no snapshot-step*.pt in {args.run}: train with --snapshots 3")
    layers = [f"h{i}" for i in range(1, cfg.layers + 1)]
    rows = []
    for path in snaps:
        state = torch.load(path, weights_only=False)
        torch.manual_seed(cfg.seed)
        model, policy, net, _, _ = build_policy(cfg, env.n_actions)
        model.load_state_dict(state["model"])
        sampler = bandit_sampler(env, policy, args.n)
        scale = _prediction_scale(net, sampler, args.n)
        for layer in layers:  # one layer at a time: per-sample gradients of a 200-neuron array are large
            prof = profile(net, sampler, n=args.n, reference_samples=args.reference, samples=args.samples,
                           seed=1, nodes=[layer])[layer]
            row = {"step": state["step"], "layer": layer, "n": args.n,
                   "delta2_backprop": prof.delta2_backprop, "delta2_mixture": prof.delta2_mixture,
                   "mixture_variance_term": prof.delta2_mixture - prof.b2, "mixture_bias2": prof.b2,
                   "lambda_star": prof.lambda_star,
                   "lambda_adaptive_mean": float(net.self_lambdas()[layer].mean()), **scale[layer]}
            rows.append(row)
            print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                  flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "bandit_mechanism.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    _plot(rows, layers, args.out / "bandit_mechanism.png")
    print(f"wrote {args.out / 'bandit_mechanism.csv'} and {args.out / 'bandit_mechanism.png'}")


def _plot(rows: list[dict], layers: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = sorted({r["step"] for r in rows})
    fig, axes = plt.subplots(2, len(steps), figsize=(4 * len(steps), 6.4), squeeze=False)
    xs = range(len(layers))
    for col, step in enumerate(steps):
        sel = [next(r for r in rows if r["step"] == step and r["layer"] == layer) for layer in layers]
        ax = axes[0][col]
        ax.bar([x - 0.2 for x in xs], [r["delta2_backprop"] for r in sel], width=0.4, label="backprop Δ²")
        ax.bar([x + 0.2 for x in xs], [r["mixture_variance_term"] for r in sel], width=0.4,
               label="mixture: variance / n")
        ax.bar([x + 0.2 for x in xs], [r["mixture_bias2"] for r in sel], width=0.4,
               bottom=[r["mixture_variance_term"] for r in sel], label="mixture: bias²")
        ax.set_yscale("log")
        ax.set_xticks(list(xs), layers)
        ax.set_title(f"step {step}: gradient MSE (n = {sel[0]['n']})")
        ax = axes[1][col]
        ax.plot(list(xs), [r["lambda_star"] for r in sel], "o-", label="λ* (eq. 18, layer-wide)")
        ax.plot(list(xs), [r["lambda_adaptive_mean"] for r in sel], "s--", label="adaptive λ (run, mean)")
        ax.set_ylim(-0.05, 1.05)
        ax.set_xticks(list(xs), layers)
        ax.set_title(f"step {step}: mixing weight")
    axes[0][0].legend(fontsize=7)
    axes[1][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
