"""A write the system refuses (a full disk, a quota, a file-size limit) ends a command with a located error
and exit 2, never a traceback, and leaves no half-claimed directory behind.

The fault is real: the command runs under a file-size limit (``RLIMIT_FSIZE``), so the kernel refuses
the write past it (EFBIG) exactly where a full disk refuses it (ENOSPC) — no root, no special mount."""

from __future__ import annotations

import csv
import resource
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--steps", "6", "--evaluations", "2", "--eval-batch", "100", "--width", "8", "--layers", "1", "--q", "2",
        "--slots", "2", "--n-parents", "2", "--quiet"]


def _limited(limit: int, *args: str) -> subprocess.CompletedProcess:
    def limit_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([sys.executable, "-m", "sggraph", *args], capture_output=True, text=True, cwd=ROOT,
                          preexec_fn=limit_files, timeout=300, env={"PYTHONDONTWRITEBYTECODE": "1", "PATH": "/usr/bin"})


def test_a_lock_that_cannot_be_written_leaves_no_directory(tmp_path):
    out = tmp_path / "run"
    proc = _limited(64, "train", "mnist-bandit", *TINY, "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    assert "cannot write the lock file of the run directory" in proc.stderr and str(out) in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()  # not a directory holding only an empty run.lock


def test_a_checkpoint_that_cannot_be_written_is_a_located_error(tmp_path):
    out = tmp_path / "run"
    proc = _limited(8_000, "train", "mnist-bandit", *TINY, "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    assert "cannot write checkpoint.pt" in proc.stderr and "Fix: free disk space" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (out / "run.lock").exists() and not list(out.glob(".*tmp*"))  # no lock, no temporary file left


def test_a_sweep_records_each_runs_located_error(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("command: train mnist-bandit\nsettings: {steps: 6, evaluations: 2, eval_batch: 100, width: 8, "
                    "layers: 1, q: 2, slots: 2, n_parents: 2}\ngrid:\n  seed: [0]\n")
    out = tmp_path / "sweep"
    proc = _limited(8_000, "sweep", str(spec), "--out", str(out), "--workers", "1")
    assert proc.returncode == 1, proc.stderr  # the sweep finished; its one run failed
    assert "Traceback" not in proc.stderr
    (row,) = csv.DictReader((out / "runs.csv").open())
    assert row["status"] == "failed" and "cannot write checkpoint.pt" in row["error"]
    assert "Traceback" not in row["error"] and not (out / "sweep.lock").exists()
