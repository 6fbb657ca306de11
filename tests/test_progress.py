"""Progress of long-running commands: tqdm bars on a terminal, plain lines otherwise, nothing with --quiet."""

from __future__ import annotations

import os
import select
import subprocess
import sys
from pathlib import Path

from sggraph.cli import main

TINY = ["train", "mnist-bandit", "--steps", "6", "--evaluations", "2", "--eval-batch", "100", "--width", "8",
        "--layers", "1", "--q", "2", "--slots", "2", "--n-parents", "2"]


def test_off_a_terminal_progress_is_plain_lines_with_rate_eta_and_metrics(tmp_path, capsys):
    assert main([*TINY, "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("bandit sgprop seed 0:")]
    assert lines[0].startswith("bandit sgprop seed 0:  17%") and "1/6" in lines[0]  # the first evaluation
    assert lines[-1].startswith("bandit sgprop seed 0: 100%") and "6/6" in lines[-1]
    for needle in ("step/s", "<", "eval=", "λ̄=", "gen_loss=", "train="):
        assert needle in lines[-1], needle
    assert len(lines) == 2  # one per evaluation (the last is also the end), none repeated


def test_quiet_prints_no_progress(tmp_path, capsys):
    assert main([*TINY, "--out", str(tmp_path / "q"), "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and '"final_eval_reward"' in out


def test_on_a_terminal_progress_is_a_tqdm_bar(tmp_path):
    """The command's stderr is a real pseudo-terminal, as in an interactive shell."""
    exe = Path(sys.executable).with_name("sggraph")
    primary, secondary = os.openpty()
    proc = subprocess.Popen([str(exe), *TINY, "--out", str(tmp_path / "t")], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=secondary, env={**os.environ, "COLUMNS": "160"})
    os.close(secondary)
    chunks = []
    while True:
        ready, _, _ = select.select([primary], [], [], 300)
        if not ready:
            break
        try:
            data = os.read(primary, 65536)
        except OSError:  # the terminal closed: the command exited
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=300) == 0
    os.close(primary)
    text = b"".join(chunks).decode("utf-8", "replace")
    assert "\r" in text  # the bar redraws in place
    assert "bandit sgprop seed 0: 100%" in text and "6/6" in text and "step/s" in text and "eval=" in text
    assert "policy parameters" in text


def test_any_metric_name_may_be_shown_even_n(tmp_path):
    import io

    from sggraph.runtime.progress import Progress

    buf = io.StringIO()
    with Progress(2, "expert network", unit="setting", stream=buf) as bar:
        bar.update(1, line=True, case="noisy", d=4, n=1)
        bar.update(1, line=True, case="noisy", d=5, n=2)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2 and "1/2" in lines[0] and lines[1].endswith("case=noisy, d=5, n=2]")
