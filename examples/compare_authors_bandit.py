"""The authors' own MNIST-bandit code on this project's embedded digits: how large are its synthetic gradients?

Runs the authors' sgprop (their ``exp-mnist-bandit`` files, unmodified, imported from a checkout
of their repository) on the 10,000 embedded digits (8,000 train / 2,000 test, classes without 2,
residual SparseNet, Table 1's settings, CPU) and prints, for steps 1, 100, 200 and 400, per hidden
layer the norm of the generators' prediction ĥ over the norm of the gradient g it is mixed with in
the policy step, their cosine, and the mean θ per layer. Their ``torchvision`` MNIST loader is
replaced by one that serves the embedded digits (no network here).

    python examples/compare_authors_bandit.py PATH/TO/sgprop/exp-mnist-bandit [--steps 400]
"""
import argparse
import sys
import types

import numpy as np
import torch

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("authors_dir", help="the authors' exp-mnist-bandit folder")
ap.add_argument("--steps", type=int, default=400)
args = ap.parse_args()
sys.path.insert(0, args.authors_dir)
from sggraph.envs.mnist import load_mnist  # noqa: E402

images, labels = load_mnist(None)
images = torch.as_tensor(np.asarray(images)).reshape(-1, 28, 28)
labels = torch.as_tensor(np.asarray(labels))


class EmbeddedMNIST:
    """Stands in for ``torchvision.datasets.MNIST``: the embedded digits, 8,000 train / 2,000 test."""

    def __init__(self, root, train, download):
        part = slice(0, 8000) if train else slice(8000, 10000)
        self.data, self.targets = images[part], labels[part]


torchvision = types.ModuleType("torchvision")
torchvision.datasets = types.ModuleType("torchvision.datasets")
torchvision.datasets.MNIST = EmbeddedMNIST
sys.modules["torchvision"], sys.modules["torchvision.datasets"] = torchvision, torchvision.datasets

import trainers  # noqa: E402
from trainers import MNISTBanditEnv, policy_step_sgprop, sample_policy_batch, train_sg_phase  # noqa: E402

import models  # noqa: E402  (the authors' modules)

torch.manual_seed(0)
env = MNISTBanditEnv([0, 1, 3, 4, 5, 6, 7, 8, 9], 0.4, torch.device("cpu"))
policy = models.SparsePolicy(784, 10, 5, 200, 5, 5, env.num_actions, residual=True)
generators = models.SparseSGFunctions(5, 200, 10, 5, env.num_actions, policy.nd, policy.width * policy.n_dim)
generator_opt = torch.optim.Adam(generators.parameters(), lr=5e-3)
policy_opt = torch.optim.Adam(policy.parameters(), lr=5e-3)
theta = torch.full((5, 200), 0.9)
theta_action = torch.ones(env.num_actions)
estimate_theta = trainers._estimate_theta_batch_for_layer
stats = {}


def measuring_estimate(policy, layer_input, hidden_states, layer_idx, g_post, hat_post, theta_prev, eps=1e-6):
    """Their θ estimator sees exactly the g and ĥ that the policy step mixes: record their sizes."""
    stats[layer_idx] = (float(hat_post.norm() / g_post.norm()),
                        float(torch.nn.functional.cosine_similarity(hat_post.flatten(), g_post.flatten(), 0)))
    return estimate_theta(policy, layer_input, hidden_states, layer_idx, g_post, hat_post, theta_prev, eps)


trainers._estimate_theta_batch_for_layer = measuring_estimate
for step in range(1, args.steps + 1):  # their main loop with --reuse_policy_batch_for_sg, one sg step
    batch = sample_policy_batch(policy, env, 64)
    train_sg_phase(policy, generators, env, generator_opt, 1, 64, theta, False, fixed_batch=batch)
    policy_step_sgprop(policy, generators, env, policy_opt, 64, theta, theta_action, 0.9, False, fixed_batch=batch)
    if step in (1, 100, 200, 400) or step == args.steps:
        sizes = {layer: (round(r, 1), round(c, 3)) for layer, (r, c) in sorted(stats.items())}
        print(f"step {step}: layer: (|h|/|g|, cos) = {sizes}  mean theta per layer",
              [round(float(t), 3) for t in theta.mean(1)], flush=True)
