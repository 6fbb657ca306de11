"""Resume checkpoints hold what resuming needs and nothing more, and resuming from them is exact."""

from __future__ import annotations

import torch

from sggraph.experiments.mnist_bandit import BanditConfig, build_policy, run_bandit


def _small(method: str, steps: int) -> BanditConfig:
    return BanditConfig(method=method, steps=steps, evaluations=2, eval_batch=50, width=8, layers=2, q=2, slots=2,
                        n_parents=2, checkpoint_every=3)


def _numbers(obj) -> int:
    """Stored tensor elements in a (nested) checkpoint."""
    if isinstance(obj, torch.Tensor):
        return obj.numel()
    if isinstance(obj, dict):
        return sum(_numbers(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_numbers(v) for v in obj)
    return 0


def _sizes(method: str) -> tuple[int, int, int]:
    """(trained parameters, generator parameters, λ entries) of the small config's policy."""
    _, _, net, _, _ = build_policy(_small(method, 1), 9)
    lam = sum(b.numel() for name, b in net.named_buffers() if name.endswith(("lam", "lam_self")))
    return (sum(p.numel() for p in net.model_parameters()), sum(p.numel() for p in net.generator_parameters()),
            lam)


def test_sgprop_checkpoint_is_parameters_lambda_and_adam_moments(tmp_path):
    run_bandit(_small("sgprop", 3), tmp_path)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    model, generators, lam = _sizes("sgprop")
    assert _numbers(state["model"]) == model + generators + lam
    assert _numbers(state["opt"]["state"]) == 2 * model + len(state["opt"]["state"])  # moments and step counts
    assert _numbers(state["gen_opt"]["state"]) == 2 * generators + len(state["gen_opt"]["state"])


def test_backprop_checkpoint_leaves_out_the_unused_generators_and_resumes_bit_for_bit(tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    run_bandit(_small("backprop", 6), whole)
    state = torch.load(whole / "checkpoint.pt", weights_only=False)
    model, generators, lam = _sizes("backprop")
    assert generators > 0 and _numbers(state["model"]) == model + lam
    assert not any(".generator." in key for key in state["model"]) and state["gen_opt"] is None
    run_bandit(_small("backprop", 3), split)
    run_bandit(_small("backprop", 6), split, resume=True)
    resumed = torch.load(split / "checkpoint.pt", weights_only=False)
    assert resumed["step"] == state["step"] == 6
    assert state["model"].keys() == resumed["model"].keys()
    for key, value in state["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    for index, moments in state["opt"]["state"].items():
        for name, value in moments.items():
            assert torch.equal(value, resumed["opt"]["state"][index][name]), (index, name)
    assert torch.equal(state["torch_rng"], resumed["torch_rng"]) and torch.equal(state["data_gen"],
                                                                                  resumed["data_gen"])


def test_a_checkpoint_holds_its_steps_rows_and_reward_as_the_uninterrupted_run_wrote_them(tmp_path, monkeypatch):
    """The checkpoint of step 3 is written after step 3's training reward and evaluation row: its rows and moving
    reward are those of the uninterrupted run at step 3, and a run resumed from it writes the same records."""
    import csv

    from interrupt import run_bandit_until

    from sggraph.experiments.numbers import significant

    cfg = _small("sgprop", 6)  # evaluations at steps 1, 3 and 6; checkpoints every 3 steps
    cfg.evaluations = 3
    run_bandit(cfg, tmp_path / "whole")
    whole = list(csv.DictReader((tmp_path / "whole" / "metrics.csv").open()))
    assert [r["step"] for r in whole] == ["1", "3", "6"]
    run_bandit_until(cfg, tmp_path / "cut", 4, monkeypatch)  # stopped after step 4: the checkpoint is step 3's
    state = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 3
    assert [{k: str(v) for k, v in row.items()} for row in state["rows"]] == whole[:2]
    assert str(significant(state["train_reward"])) == whole[1]["train_reward"]
    run_bandit(cfg, tmp_path / "cut", resume=True)
    assert (tmp_path / "cut" / "metrics.csv").read_text() == (tmp_path / "whole" / "metrics.csv").read_text()
