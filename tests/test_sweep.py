"""Sweeps: spec validation, grid expansion, local and Ray backends, kill-and-resume, failures."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from pausing import kill_when_announced, pausing_env

from sggraph.cli import build_parser, main
from sggraph.exceptions import ConfigError, SpecError
from sggraph.runtime.dirlock import DirectoryLock
from sggraph.runtime.threads import available_cpus
from sggraph.sweeps import load_spec, plan_runs, run_name, spec_from_dict

ROOT = Path(__file__).resolve().parent.parent
TINY = {"steps": 6, "evaluations": 2, "eval_batch": 100, "width": 20, "layers": 2, "q": 4, "slots": 2,
        "n_parents": 2}


def _write_spec(path: Path, grid: dict, settings: dict | None = None, command: str = "train mnist-bandit") -> Path:
    import yaml

    path.write_text(yaml.safe_dump({"name": "t", "command": command, "settings": settings or TINY, "grid": grid},
                                   sort_keys=False))
    return path


def _sggraph(*args: str, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sggraph", *args], check=False, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, **kw)


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------------- validation

BAD_SPECS = [
    ("command: trian mnist-bandit\ngrid: {seed: [0]}\n", 1, ["unknown command 'trian'", "did you mean 'train'"]),
    ("command: train mnist-bandot\ngrid: {seed: [0]}\n", 1,
     ["unknown command 'mnist-bandot'", "did you mean 'mnist-bandit'"]),
    ("command: sweep\ngrid: {seed: [0]}\n", 1, ["cannot be swept"]),
    ("command: train mnist-bandit\nsettings:\n  steps: 5\n  stpes: 6\ngrid: {seed: [0]}\n", 4,
     ["unknown setting 'stpes'", "did you mean 'steps'"]),
    ("command: train mnist-bandit\ngrid:\n  seed: [0, 1]\n  learning_rate: [0.1]\n", 4,
     ["unknown setting 'learning_rate'", "settings: batch,", " lr, method,"]),
    ("command: expert\ngrid:\n  trails: [1]\n", 3, ["unknown setting 'trails'", "did you mean 'trials'"]),
    ("command: train mnist-bandit\ngrid:\n  variant:\n    - {method: sgprop, lrr: 0.1}\n", 4,
     ["unknown setting 'lrr'", "grid group 'variant'"]),
    ("command: train mnist-bandit\ngrid: {}\n", 2, ["the grid is empty"]),
    ("command: train mnist-bandit\nsettings: {steps: 5}\n", 1, ["the grid is empty"]),
    ("command: train mnist-bandit\ngrid:\n  seed: []\n", 3, ["'seed' has no values"]),
    ("command: train mnist-bandit\nsettings: {seed: 1}\ngrid:\n  seed: [0]\n", 4, ["both fixed", "and varied"]),
    ("command: train mnist-bandit\ngrid:\n  out: [a, b]\n", 3, ["managed by the sweep"]),
    ("command: train mnist-bandit\ngrid:\n  steps: [10, abc]\n", 3, ["'abc' is not an integer"]),
    ("command: train mnist-bandit\ngrid:\n  lr: [[0.1, 0.2]]\n", 3, ["takes one value"]),
    ("command: train mnist-bandit\ngrdi: {seed: [0]}\n", 2, ["unknown key 'grdi'", "did you mean 'grid'"]),
    ("grid: {seed: [0]}\n", 1, ["needs `command:`"]),
    ("- train mnist-bandit\n- {seed: [0]}\n", 1, ["must be a mapping with `command:` and `grid:`"]),
    ("command: train mnist-bandit\nsettings: [steps, 5]\ngrid: {seed: [0]}\n", 2,
     ["`settings:` must be a mapping"]),
    ("command: train mnist-bandit\nsettings:\n  n_parents: 2\n  n-parents: 3\ngrid: {seed: [0]}\n", 4,
     ["setting 'n_parents' given twice"]),
    ("command: train mnist-bandit\ngrid: [0, 1]\n", 2, ["`grid:` must be a mapping"]),
    ("command: train mnist-bandit\ngrid:\n  seed: [0]\n  variant:\n    - {seed: 1}\n", 5,
     ["'seed' is varied in two places", "grid 'seed' and group 'variant'"]),
    ("command: train mnist-bandit\ngrid:\n  variant:\n    - {method: sgprop}\n    - backprop\n", 3,
     ["grid group 'variant' mixes mappings and values"]),
    ("name: my sweep\ncommand: train mnist-bandit\ngrid: {seed: [0]}\n", 1, ["'my sweep' is not a plain word"]),
    # values the command's own config validation rejects, at the line of the value
    ("command: train mnist-bandit\ngrid:\n  method: [sgprop,\n    sgporp]\n", 4,
     ["run 'method=sgporp' would be rejected", "unknown method 'sgporp'", "use sgprop, backprop or mlp"]),
    ("command: train mnist-bandit\ngrid:\n  seed: [0, 1]\n  lambda: [0.5, 1.5]\n", 4, ["outside [0, 1]"]),
    ("command: train popgym\ngrid:\n  model: [gru]\n  method: [sgprop]\n", 4,
     ["--method sgprop needs --model sparsenet"]),
]


@pytest.mark.parametrize("text,line,needles", BAD_SPECS)
def test_spec_errors_name_file_line_and_fix(tmp_path, capsys, text, line, needles):
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    with pytest.raises(SpecError) as err:
        load_spec(spec, build_parser())
    message = str(err.value)
    assert message.startswith(f"{spec}:{line}: "), message
    assert "Fix:" in message
    for needle in needles:
        assert needle in message, message
    assert main(["sweep", str(spec), "--out", str(tmp_path / "out")]) == 2
    cli_err = capsys.readouterr().err
    assert cli_err.startswith("sggraph: error: ") and "Traceback" not in cli_err
    assert not (tmp_path / "out").exists()


def test_grid_groups_expand_together_and_names_are_safe():
    spec = spec_from_dict({
        "command": "train mnist-bandit",
        "settings": {"steps": 10, "classes": [0, 1, 3]},
        "grid": {"variant": [{"method": "sgprop", "lr": [0.005, "2e-2"]}, {"method": "mlp", "lambda": 0.9}],
                 "n-parents": [2, 5], "seed": [0]}}, parser=build_parser())
    names = [c.name for c in spec.cells()]
    assert names == ["method=sgprop,lr=0.005,n_parents=2,seed=0", "method=sgprop,lr=0.005,n_parents=5,seed=0",
                     "method=sgprop,lr=0.02,n_parents=2,seed=0", "method=sgprop,lr=0.02,n_parents=5,seed=0",
                     "method=mlp,lambda=0.9,n_parents=2,seed=0", "method=mlp,lambda=0.9,n_parents=5,seed=0"]
    argv = spec.argv(spec.cells()[-1])
    assert argv == ["train", "mnist-bandit", "--steps", "10", "--classes", "0", "1", "3", "--method", "mlp",
                    "--lambda", "0.9", "--n-parents", "5", "--seed", "0"]
    assert run_name({"env": "a/b c", "flag": True}) == "env=a_b_c,flag=true"


def test_identical_cells_run_once():
    spec = spec_from_dict({"command": "expert", "grid": {"v": [{"d": 4}, {"d": [4, 5]}]}}, parser=build_parser())
    assert [c.name for c in spec.cells()] == ["d=4", "d=5"]


def test_changed_settings_of_an_existing_run_are_refused(tmp_path):
    spec = spec_from_dict({"command": "expert", "settings": {"trials": 3}, "grid": {"d": [4]}}, parser=build_parser())
    plan = plan_runs(spec, tmp_path)[0]
    plan.run_dir.mkdir()
    (plan.run_dir / "sweep_run.json").write_text(json.dumps(plan.record(spec.command)))
    assert plan_runs(spec, tmp_path)[0].action == "new"
    changed = spec_from_dict({"command": "expert", "settings": {"trials": 5}, "grid": {"d": [4]}}, parser=build_parser())
    with pytest.raises(ConfigError, match=r"other settings \(trials: 3 → 5\)"):
        plan_runs(changed, tmp_path)


def test_shipped_specs_validate():
    specs = sorted((ROOT / "examples" / "sweeps").glob("*.yaml"))
    names = {p.stem for p in specs}
    assert {"small", "bandit-fig5", "bandit-lr", "bandit-ablations", "popgym-escape-20", "popgym-escape-40",
            "popgym-explore-20", "popgym-explore-40"} <= names
    counts = {}
    for path in specs:
        counts[path.stem] = len(load_spec(path, build_parser()).cells())
    assert counts["small"] == 8
    assert counts["bandit-fig5"] == 4 * 6
    assert counts["bandit-lr"] == 4 * 5 * 3
    assert counts["bandit-ablations"] == (4 * 5 + 3 * 5 - 3) * 2  # (p_flip 0.4, 5 parents) cells shared by 6(b), 6(c)
    assert counts["bandit-frozen-generators"] == counts["bandit-zero-init-generators"] == 3
    for name in ("popgym-escape-20", "popgym-escape-40", "popgym-explore-20", "popgym-explore-40"):
        assert counts[name] == 4 * 5 * 6


def test_ray_missing_is_a_clear_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    spec = _write_spec(tmp_path / "s.yaml", {"seed": [0]})
    assert main(["sweep", str(spec), "--backend", "ray", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert 'pip install -e ".[ray]"' in err and "Traceback" not in err


# --------------------------------------------------------------------------------- running


def test_local_and_ray_backends_give_identical_metrics(tmp_path):
    spec = _write_spec(tmp_path / "s.yaml", {"method": ["sgprop"], "seed": [0, 1]})
    local = _sggraph("sweep", str(spec), "--backend", "local", "--workers", "2", "--out", str(tmp_path / "local"))
    assert local.returncode == 0, local.stdout + local.stderr
    ray = _sggraph("sweep", str(spec), "--backend", "ray", "--workers", "2", "--out", str(tmp_path / "ray"))
    assert ray.returncode == 0, ray.stdout + ray.stderr
    assert "backend ray" in ray.stdout
    for name in ("method=sgprop,seed=0", "method=sgprop,seed=1"):
        a = (tmp_path / "local" / name / "metrics.csv").read_text()
        b = (tmp_path / "ray" / name / "metrics.csv").read_text()
        assert a == b and len(a.splitlines()) == 3
    assert (tmp_path / "local" / "method=sgprop,seed=0" / "metrics.csv").read_text() != \
        (tmp_path / "local" / "method=sgprop,seed=1" / "metrics.csv").read_text()
    status = json.loads((tmp_path / "ray" / "sweep.json").read_text())
    assert status["backend"] == "ray" and [r["status"] for r in status["runs"]] == ["finished", "finished"]
    for name in ("method=sgprop,seed=0", "method=sgprop,seed=1"):
        run = tmp_path / "local" / name
        assert list(run.glob("events.out.tfevents.*"))  # one TensorBoard run per sweep sub-directory
        log = (run / "stderr.log").read_text()
        assert "\r" not in log and f"bandit sgprop seed {name[-1]}: 100%" in log  # progress as plain lines
        threads = max(1, available_cpus() // 2)  # the sweep's OMP_NUM_THREADS for its 2 workers
        assert json.loads((run / "config.json").read_text())["threads"] == threads


def _locked(path: Path) -> bool:
    """Whether a live process holds the lock file ``path`` (a run's ``run.lock``)."""
    return DirectoryLock(path.parent, path.name).live_holder() is not None


def test_killed_sweep_resumes_without_redoing_finished_runs(tmp_path):
    settings = {**TINY, "checkpoint_every": 10, "evaluations": 4, "eval_batch": 50}
    spec = _write_spec(tmp_path / "s.yaml", {"v": [{"seed": 0, "steps": 6}, {"seed": 1, "steps": 200}]},
                       settings={k: v for k, v in settings.items() if k != "steps"})
    out = tmp_path / "out"
    first, second = out / "seed=0,steps=6", out / "seed=1,steps=200"
    announce = tmp_path / "paused"
    proc = subprocess.Popen([sys.executable, "-m", "sggraph", "sweep", str(spec), "--workers", "1",
                             "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
                            env=pausing_env(26, announce))  # run 2 stops before its step 26 (run 1 has 6 steps)
    kill_when_announced(proc, announce)  # the sweep is killed while run 2 waits there
    assert (first / "summary.json").exists() and not (second / "summary.json").exists()
    assert torch.load(second / "checkpoint.pt", weights_only=False)["step"] == 20
    for _ in range(100):  # the run dies with its sweep (no orphan keeps the run directory)
        if not _locked(second / "run.lock"):
            break
        time.sleep(0.1)
    assert not _locked(second / "run.lock"), "the killed sweep's run is still alive"
    first_summary = (first / "summary.json").read_text()
    first_mtime = (first / "summary.json").stat().st_mtime_ns

    again = _sggraph("sweep", str(spec), "--workers", "1", "--out", str(out))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "1 finished before, 1 to resume, 0 to start" in again.stdout
    assert (first / "summary.json").stat().st_mtime_ns == first_mtime
    assert (first / "summary.json").read_text() == first_summary
    assert (first / "stdout.log").read_text().count("=== sggraph sweep") == 1
    log = (second / "stdout.log").read_text()
    assert log.count("=== sggraph sweep") == 2 and log.splitlines()[-1] != "" and "--resume" in log
    assert json.loads((second / "summary.json").read_text())["steps"] == 200
    assert [int(r["step"]) for r in _rows(second / "metrics.csv")] == [1, 67, 133, 200]
    runs = _rows(out / "runs.csv")
    assert [(r["name"], r["status"], r["action"]) for r in runs] == [
        ("seed=0,steps=6", "finished", "skip"), ("seed=1,steps=200", "finished", "resume")]


def test_a_failing_run_is_reported_and_the_others_finish(tmp_path, capsys):
    # a missing data directory passes the spec check (any path is a valid setting) but the run fails on it
    missing = str(tmp_path / "no-mnist")
    spec = _write_spec(tmp_path / "s.yaml", {"variant": [{"data_dir": missing}, {"seed": 0}]})
    bad, good = run_name({"data_dir": missing}), run_name({"seed": 0})
    out = tmp_path / "out"
    assert main(["sweep", str(spec), "--workers", "2", "--out", str(out)]) == 1
    printed = capsys.readouterr().out
    assert f"FAILED {bad} (exit 2)" in printed and "does not exist" in printed
    assert "1 of 2 runs finished" in printed and str(out / bad / "stderr.log") in printed
    runs = {r["name"]: r for r in _rows(out / "runs.csv")}
    assert runs[bad]["status"] == "failed" and runs[bad]["returncode"] == "2"
    assert "does not exist" in runs[bad]["error"]
    assert runs[good]["status"] == "finished"
    assert (out / good / "summary.json").exists()
    status = json.loads((out / "sweep.json").read_text())
    failed = [r for r in status["runs"] if r["status"] == "failed"]
    assert len(failed) == 1 and "does not exist" in failed[0]["error"]
    # a re-run retries only the failed run (and fails again)
    assert main(["sweep", str(spec), "--workers", "2", "--out", str(out)]) == 1
    assert "1 finished before, 0 to resume, 1 to start" in capsys.readouterr().out
