"""The MNIST bandit through the engine: SparseNet exactness, run directories, resume."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pausing import kill_when_announced, pausing_env

import sggraph
from sggraph.cli import main
from sggraph.experiments.mnist_bandit import BanditConfig, load_run_config, run_bandit
from sggraph.models.baselines import MLP
from sggraph.models.sparsenet import sparsenet_graph


def direct_sparsenet(net, graph, x):
    """The SparseNet policy written out directly in torch (eq. 140–143, the dot head)."""
    h = x.unsqueeze(-1)  # [B, 784, 1]
    for name in [a for a in graph.arrays if a != "pixels"]:
        arr = net.blocks[name].function
        table = torch.as_tensor(graph.array_table(name))
        u = h[:, table].flatten(2)  # [B, N, F q]
        m, q = arr.slots, arr.dim
        keys, weight = arr.proj[:, :m], arr.proj[:, m:]
        alpha = torch.softmax(torch.einsum("bnd,nsd->bns", u, keys) / math.sqrt(u.shape[-1]), -1)
        y = torch.tanh(torch.einsum("bnd,nkd->bnk", u, weight) + arr.bias).view(*u.shape[:2], m, q)
        hbar = torch.einsum("bns,bnsq->bnq", alpha, y)
        h = torch.tanh(hbar) + h if graph.arrays[name].residual else hbar
    head = net.blocks["logits"].function
    flat = h.flatten(1)
    return flat @ head.keys.T / math.sqrt(flat.shape[1])


def test_sparsenet_lambda_one_equals_direct_backprop():
    graph = sparsenet_graph(width=12, layers=3, q=3, slots=2, n_parents=2, n_pixels=30, n_actions=4, seed=1)
    torch.manual_seed(0)
    net = sggraph.compile(graph, grouping="child").double()
    net.set_lambda(1.0)
    x = torch.randn(5, 30, dtype=torch.float64)
    w = torch.randn(5, 4, dtype=torch.float64)
    params = list(net.model_parameters())
    out = net({"pixels": x})["logits"]
    got = torch.autograd.grad((out * w).sum(), params)
    direct = direct_sparsenet(net, graph, x)
    torch.testing.assert_close(out, direct, rtol=1e-12, atol=1e-12)
    want = torch.autograd.grad((direct * w).sum(), params)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_mlp_parameter_count_matches_sparsenet():
    graph = sparsenet_graph()
    net = sggraph.compile(graph)
    sparse = sum(p.numel() for p in net.model_parameters())
    dense = MLP(784, 10).parameter_count()
    assert abs(sparse - dense) / sparse < 0.01


def _small(method, **kw):
    return BanditConfig(method=method, steps=20, evaluations=4, eval_batch=200, width=16, layers=2, q=4, slots=2,
                        n_parents=2, mlp_width=32, checkpoint_every=10, **kw)


@pytest.mark.parametrize("method", ["sgprop", "backprop", "mlp"])
def test_smoke_run_writes_a_complete_run_directory(method, tmp_path):
    summary = run_bandit(_small(method), tmp_path)
    for name in ("config.json", "metrics.csv", "summary.json", "learning_curve.png", "checkpoint.pt"):
        assert (tmp_path / name).exists(), name
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 7, 13, 20]
    assert 0.0 < float(rows[-1]["eval_reward"]) < 1.0
    if method == "sgprop":
        assert "lambda_h1" in rows[0] and 0.0 <= float(rows[-1]["lambda_h2"]) <= 1.0
    assert json.loads((tmp_path / "summary.json").read_text())["final_eval_reward"] == summary["final_eval_reward"]
    assert (tmp_path / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert load_run_config(tmp_path) == _small(method)  # config.json gives back the run's settings


def test_generator_rate_zero_freezes_the_generators_at_their_initialisation(tmp_path):
    """The frozen-generator control (``--generator-lr 0``): after training, every generator weight is
    still its seeded initialisation while the policy's weights have moved."""
    from sggraph.experiments.mnist_bandit import build_policy

    cfg = _small("sgprop", generator_lr=0.0)
    run_bandit(cfg, tmp_path)
    trained = torch.load(tmp_path / "checkpoint.pt", weights_only=False)["model"]
    torch.manual_seed(cfg.seed)
    model, _, net, _, _ = build_policy(cfg, 9)
    generator_ids = {id(p) for p in net.generator_parameters()}
    names = {name: id(p) in generator_ids for name, p in model.named_parameters()}
    assert any(names.values()) and not all(names.values())
    initial = dict(model.named_parameters())
    for name, is_generator in names.items():
        moved = not torch.equal(trained[name], initial[name].detach())
        assert moved != is_generator, name


def test_same_seed_same_metrics(tmp_path):
    a = run_bandit(_small("sgprop"), tmp_path / "a")
    b = run_bandit(_small("sgprop"), tmp_path / "b")
    assert (tmp_path / "a" / "metrics.csv").read_text() == (tmp_path / "b" / "metrics.csv").read_text()
    assert a["final_eval_reward"] == b["final_eval_reward"]


def test_resume_after_kill_loses_and_repeats_nothing(tmp_path):
    args = ["train", "mnist-bandit", "--steps", "60", "--evaluations", "6", "--eval-batch", "200", "--width", "16",
            "--layers", "2", "--q", "4", "--slots", "2", "--n-parents", "2", "--checkpoint-every", "10"]
    whole = tmp_path / "whole"
    assert main(args + ["--out", str(whole)]) == 0
    killed = tmp_path / "killed"
    exe = Path(sys.executable).with_name("sggraph")
    announce = tmp_path / "paused"
    proc = subprocess.Popen([str(exe), *args, "--out", str(killed)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=pausing_env(26, announce))
    kill_when_announced(proc, announce)  # killed with steps 1-25 done: the last checkpoint is step 20's
    state = torch.load(killed / "checkpoint.pt", weights_only=False)
    assert state["step"] == 20 and not (killed / "summary.json").exists()
    assert main(args + ["--out", str(killed), "--resume"]) == 0
    assert (killed / "metrics.csv").read_text() == (whole / "metrics.csv").read_text()


def test_resume_refuses_changed_settings(tmp_path, capsys):
    args = ["train", "mnist-bandit", "--steps", "10", "--evaluations", "2", "--eval-batch", "100", "--width", "8",
            "--layers", "1", "--q", "2", "--slots", "2", "--n-parents", "2", "--out", str(tmp_path)]
    assert main(args) == 0
    assert main(args + ["--resume", "--seed", "3"]) == 2
    assert "differ" in capsys.readouterr().err


@pytest.mark.parametrize("argv,needle", [
    (["--method", "sgd"], "unknown method"),
    (["--lambda", "1.5"], "outside [0, 1]"),
    (["--lambda", "often"], "adaptive"),
    (["--classes", "3"], "class"),
])
def test_train_bad_input_exits_2(argv, needle, capsys, tmp_path):
    assert main(["train", "mnist-bandit", "--steps", "2", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_config_file_unknown_key_names_line(tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("method: sgprop\nstpes: 10\n")
    assert main(["train", "mnist-bandit", "--config", str(cfg), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert f"{cfg}:2" in err and "did you mean 'steps'" in err


def test_a_short_run_evaluates_in_proportion_and_a_full_one_as_the_paper(tmp_path):
    """50 steps: 2 evaluations of 500 images (not the paper's 20 of 4,000, which made a quick run mostly
    evaluation); the plan is recorded in summary.json; explicit settings win."""
    tiny = dict(width=8, layers=1, q=2, slots=2, n_parents=2)
    summary = run_bandit(BanditConfig(steps=50, **tiny), tmp_path / "short")
    assert (summary["evaluations"], summary["eval_images"]) == (2, 500)
    assert [r["step"] for r in csv.DictReader((tmp_path / "short" / "metrics.csv").open())] == ["1", "50"]
    assert json.loads((tmp_path / "short" / "config.json").read_text())["evaluations"] is None  # the rule, kept
    assert BanditConfig().evaluation_plan() == (20, 4000) == BanditConfig(steps=3000).evaluation_plan()
    assert BanditConfig(steps=50, evaluations=7, eval_batch=64).evaluation_plan() == (7, 64)
