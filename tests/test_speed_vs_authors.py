"""examples/speed_vs_authors.py: its pure helpers (the authors' code is not here, so nothing is timed)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def sva():
    spec = importlib.util.spec_from_file_location("speed_vs_authors", ROOT / "examples" / "speed_vs_authors.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["speed_vs_authors"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("speed_vs_authors", None)


@pytest.fixture
def authors_dir(tmp_path):
    folder = tmp_path / "exp-mnist-bandit"
    folder.mkdir()
    for name in ("main.py", "trainers.py", "models.py"):
        (folder / name).write_text("raise SystemExit('never run in the tests')\n")
    return folder


def test_per_step_is_the_difference_over_the_extra_steps(sva):
    assert sva.per_step_seconds(12.5, 20.0, 20, 80) == pytest.approx(0.125)
    assert sva.per_step_seconds(30.0, 29.0, 20, 30) == pytest.approx(-0.1)  # noise can make it negative: kept
    with pytest.raises(ValueError):
        sva.per_step_seconds(1.0, 2.0, 80, 20)


def test_evaluations_cancel_only_from_20_steps(sva):
    # the authors' schedule: set(linspace(1, steps, 20, dtype=int))
    assert [sva.evaluation_count(s) for s in (5, 19, 20, 21, 80, 1500)] == [5, 19, 20, 20, 20, 20]
    sva.check_lengths(20, 21)
    for short, long in ((19, 80), (80, 80), (80, 20)):
        with pytest.raises(sva.UsageError):
            sva.check_lengths(short, long)


def test_schedule_interleaves_variants_and_alternates_lengths(sva):
    order = sva.schedule(3, 20, 80)
    assert len(order) == 3 * 4 * 2
    names = [v.name for _, v, _ in order]
    assert names[:8:2] == ["authors-backprop", "authors-sgprop", "ours-backprop", "ours-sgprop"]
    assert names[:8] == names[8:16] == names[16:]  # ABCD ABCD ABCD
    assert [s for r, v, s in order if v.name == "ours-sgprop"] == [20, 80, 80, 20, 20, 80]
    assert all(names[i] == names[i + 1] for i in range(0, len(order), 2))  # a variant's two lengths back to back


def test_authors_arguments_are_their_table1_sweep_settings(sva, tmp_path):
    sg = sva.authors_main_args("sgprop", 80, tmp_path, eval_batch=64)
    bp = sva.authors_main_args("backprop", 20, tmp_path)

    def value(args, flag, n=1):
        i = args.index(flag)
        return args[i + 1:i + 1 + n]

    assert value(sg, "--method") == ["sgprop"] and value(bp, "--method") == ["backprop"]
    assert value(sg, "--train_steps") == ["80"] and value(bp, "--train_steps") == ["20"]
    assert value(sg, "--eval_batch_size") == ["64"] and value(bp, "--eval_batch_size") == ["4000"]
    for args in (sg, bp):
        assert {"--residual", "--reuse_policy_batch_for_sg", "--no_update_shared_keys_in_sg_phase"} <= set(args)
        assert value(args, "--classes", 9) == ["0", "1", "3", "4", "5", "6", "7", "8", "9"]
        sizes = {f: value(args, f)[0] for f in ("--n_dim", "--num_layers", "--width", "--num_slots",
                                                "--num_parents", "--batch_size", "--sg_steps_per_policy_step")}
        assert sizes == {"--n_dim": "10", "--num_layers": "5", "--width": "200", "--num_slots": "5",
                         "--num_parents": "5", "--batch_size": "64", "--sg_steps_per_policy_step": "1"}
        assert value(args, "--device") == ["cpu"] and value(args, "--results_dir") == [str(tmp_path)]
    assert value(sg, "--theta", 5) == ["0.9"] * 5 and value(sg, "--theta_momentum") == ["0.9"]  # adaptive θ
    assert value(sg, "--policy_lr") == ["0.005"] and value(bp, "--policy_lr") == ["0.001"]
    with pytest.raises(ValueError):
        sva.authors_main_args("mlp", 20, tmp_path)


def test_commands(sva, authors_dir, tmp_path):
    cfg = sva.SpeedConfig(authors_dir, threads=3, steps_short=20, steps_long=90, eval_batch=32)
    ours = sva.command(sva.Variant("ours", "sgprop"), cfg, 20, tmp_path)
    assert ours[:5] == [sys.executable, "-m", "sggraph", "train", "mnist-bandit"]
    flags = {k: ours[i + 1] for i, k in enumerate(ours) if k.startswith("--") and k != "--quiet"}
    assert "--quiet" in ours
    assert {k: flags[k] for k in ("--method", "--steps", "--threads", "--eval-batch", "--checkpoint-every")} == {
        "--method": "sgprop", "--steps": "20", "--threads": "3", "--eval-batch": "32", "--checkpoint-every": "90"}
    assert "--lambda" not in flags and "--update-order" not in flags  # our defaults: adaptive, generator-first
    assert flags["--out"].startswith(str(tmp_path))

    theirs = sva.command(sva.Variant("authors", "backprop"), cfg, 90, tmp_path)
    assert theirs[2:7] == [sva.CHILD_FLAG, str(authors_dir.resolve()), "3", "default", "--"]
    assert theirs[7:] == sva.authors_main_args("backprop", 90, tmp_path, 32)
    tuned = sva.SpeedConfig(authors_dir, authors_allocator="ours")
    assert sva.command(sva.Variant("authors", "sgprop"), tuned, 20, tmp_path)[5] == "ours"


def test_children_get_the_thread_count_and_this_checkout(sva):
    env = sva.thread_env(1, {"OMP_NUM_THREADS": "8", "SGGRAPH_PARENT_PID": "1", "KEEP": "x"})
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "1"
    assert env["PYTHONPATH"] == str(ROOT) and env["KEEP"] == "x" and "SGGRAPH_PARENT_PID" not in env


def test_summary_medians_and_ratios(sva):
    # per step (s): authors-sgprop 0.5, 0.6, 0.4 ; ours-sgprop 0.2, 0.2, 0.1 (repeat 2 runs long first)
    walls = {"authors-sgprop": (0.5, 0.6, 0.4), "ours-sgprop": (0.2, 0.2, 0.1)}
    runs = []
    for variant, per_step in walls.items():
        for repeat, t in enumerate(per_step):
            runs += [sva.Run(variant, repeat, 20, 7.0 + repeat), sva.Run(variant, repeat, 80, 7.0 + repeat + 60 * t)]
    assert sva.per_step_by_repeat(runs, 20, 80)["authors-sgprop"] == pytest.approx([0.5, 0.6, 0.4])
    summary = sva.summarise(runs, 20, 80)
    assert set(summary) == {"sgprop"}  # backprop was not run
    row = summary["sgprop"]
    assert row["authors_ms"] == pytest.approx(500) and row["ours_ms"] == pytest.approx(200)
    assert row["ratio"] == pytest.approx(2.5)
    assert (row["ratio_min"], row["ratio_max"]) == (pytest.approx(2.5), pytest.approx(4.0))
    assert row["repeats"] == 3
    text = sva.table(summary, 1, 20, 80)
    assert "| sgprop | 500.0 ms | 200.0 ms | 2.50× | 2.50–4.00× | 3 |" in text and "at 1 thread:" in text


def test_the_table_says_when_the_difference_drowned_in_noise(sva):
    row = {"authors_ms": -5.0, "ours_ms": 50.0, "ratio": -0.1, "ratio_min": -0.1, "ratio_max": -0.1, "repeats": 1}
    assert "use a larger --steps-long" in sva.table({"backprop": row}, 1, 20, 21)
    assert "use a larger" not in sva.table({"backprop": {**row, "authors_ms": 5.0}}, 1, 20, 21)


def test_a_repeat_missing_one_length_is_left_out(sva):
    runs = [sva.Run("ours-backprop", 0, 20, 5.0), sva.Run("ours-backprop", 0, 80, 11.0),
            sva.Run("ours-backprop", 1, 20, 5.0)]  # repeat 1 was cut short
    assert sva.per_step_by_repeat(runs, 20, 80) == {"ours-backprop": [pytest.approx(0.1)]}


def test_combine_renumbers_repeats_and_refuses_other_settings(sva, tmp_path):
    def doc(per_step, threads=2):
        runs = [sva.Run(f"{c}-{m}", 0, s, 5.0 + (s - 20) * per_step * (3 if c == "authors" else 1))
                for c in ("authors", "ours") for m in ("backprop", "sgprop") for s in (20, 80)]
        return json.loads(json.dumps(sva.report(runs, threads, 20, 80, commit="abc")))

    merged = sva.combine([doc(0.1), doc(0.2), doc(0.3)])
    assert sorted({r["repeat"] for r in merged["runs"]}) == [0, 1, 2]
    assert merged["summary"]["backprop"]["ours_ms"] == pytest.approx(200)
    assert merged["summary"]["sgprop"]["ratio"] == pytest.approx(3.0) and merged["summary"]["sgprop"]["repeats"] == 3
    assert all(math.isnan(r["cpu_s"]) for r in merged["runs"])
    assert merged["commits"] == ["abc"] * 3 and merged["authors_allocator"] == "default"
    with pytest.raises(sva.UsageError, match="differs"):
        sva.combine([doc(0.1), doc(0.1, threads=1)])
    tuned = doc(0.1)
    tuned["authors_allocator"] = "ours"
    with pytest.raises(sva.UsageError, match="differs"):  # a different measurement is not another repeat
        sva.combine([doc(0.1), tuned])
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(sva.UsageError, match="not a --json output"):
        sva.read_documents([bad])


def test_wrong_authors_path_exits_2_with_a_clear_message(sva, tmp_path, capsys, authors_dir):
    assert sva.main([str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    (authors_dir / "trainers.py").unlink()
    assert sva.main([str(authors_dir)]) == 2
    assert "has no trainers.py" in capsys.readouterr().err
    assert sva.main([]) == 2
    assert "give the authors' exp-mnist-bandit folder" in capsys.readouterr().err


def test_a_usage_error_runs_nothing(sva, authors_dir, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise AssertionError("a process was started")

    monkeypatch.setattr(sva, "measure", refuse)
    for args, message in ((["--steps-short", "30", "--steps-long", "30"], "must be larger"),
                          (["--steps-short", "10"], "evaluates 10 times"), (["--threads", "0"], "--threads 0"),
                          (["--repeats", "0"], "--repeats 0"), (["--eval-batch", "0"], "--eval-batch 0"),
                          (["--methods", "mlp"], "--methods mlp")):
        assert sva.main([str(authors_dir), *args]) == 2
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # argparse's own refusal
        sva.main([str(authors_dir), "--authors-allocator", "x"])
    assert exit_info.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_main_prints_the_table_of_measured_runs(sva, authors_dir, monkeypatch, capsys):
    def fake_measure(cfg, log=None):
        return [sva.Run(f"{c}-{m}", 0, s, 2.0 + (s - cfg.steps_short) * (0.3 if c == "authors" else 0.1))
                for c in ("authors", "ours") for m in ("backprop", "sgprop") for s in (cfg.steps_short, cfg.steps_long)]

    monkeypatch.setattr(sva, "measure", fake_measure)
    assert sva.main([str(authors_dir), "--threads", "1", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "| backprop | 300.0 ms | 100.0 ms | 3.00× |" in out
    assert sva.main([str(authors_dir), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["summary"]["sgprop"]["ratio"] == pytest.approx(3.0) and data["eval_batch"] == 64


def test_a_terminated_measurement_leaves_no_timed_process_behind(tmp_path):
    import os
    import signal
    import subprocess
    import time

    pid_file = tmp_path / "child.pid"
    driver = f"""
import importlib.util, signal, sys
spec = importlib.util.spec_from_file_location("speed_vs_authors", {str(ROOT / "examples" / "speed_vs_authors.py")!r})
sva = importlib.util.module_from_spec(spec); sys.modules["speed_vs_authors"] = sva; spec.loader.exec_module(sva)
signal.signal(signal.SIGTERM, sva._terminated)
child = "import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
sva.time_process([sys.executable, "-c", child], {{}}, sva.Path({str(tmp_path)!r}))
"""
    proc = subprocess.Popen([sys.executable, "-c", driver])
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(pid_file.read_text())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    with pytest.raises(ProcessLookupError):
        for _ in range(100):  # reaped by the driver before it exits; allow the kernel a moment
            os.kill(child, 0)
            time.sleep(0.05)


def test_methods_select_the_variants_timed(sva, authors_dir, monkeypatch, capsys):
    cfg = sva.SpeedConfig(authors_dir, methods=("sgprop",))
    assert [v.name for v in cfg.variants] == ["authors-sgprop", "ours-sgprop"]
    seen = []

    def fake_time(cmd, env, cwd):
        seen.append(cmd)
        return 1.0 + int(cmd[cmd.index("--train_steps" if sva.CHILD_FLAG in cmd else "--steps") + 1]) / 100, 0.5

    monkeypatch.setattr(sva, "time_process", fake_time)
    monkeypatch.setattr(sva, "warm_up", lambda env: None)
    assert sva.main([str(authors_dir), "--methods", "backprop", "--repeats", "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(seen) == 2 * 2 * 2 and all("sgprop" not in c for c in seen)
    assert set(data["summary"]) == {"backprop"} and data["summary"]["backprop"]["ratio"] == pytest.approx(1.0)
    assert data["methods"] == ["backprop"]
