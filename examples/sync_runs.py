"""Copy the compact record of every finished run of a sweep into the repository, and commit it.

A run directory written by ``sggraph sweep`` holds a checkpoint, TensorBoard events and logs
besides its record; only the record is kept here: ``config.json`` (every setting),
``metrics.csv`` (one row per logged step) and ``summary.json`` (written when the run finishes),
plus ``sweep_run.json`` (the run's grid cell, a few bytes) where the sweep wrote one. A run
without ``summary.json`` is still running (or was killed) and is left for a later call.
``sggraph plot DEST`` redraws the study's figures and CSVs from these records alone.

Usage::

    python examples/sync_runs.py ~/sggraph-runs/popgym-escape-20 examples/results/popgym-escape-20/runs --commit

With ``--commit`` the new or changed records (and nothing else in the work tree) are committed
with a message naming the runs; without it they are only copied. Safe to call repeatedly, e.g.
from a loop beside a running sweep: records already in DEST and unchanged are skipped.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

RECORD = ("config.json", "metrics.csv", "summary.json", "sweep_run.json")


def finished_runs(sweep_dir: Path) -> list[Path]:
    """Run directories of ``sweep_dir`` whose ``summary.json`` exists, sorted by name."""
    return sorted(p for p in sweep_dir.iterdir() if p.is_dir() and (p / "summary.json").is_file())


def sync(sweep_dir: Path, dest: Path) -> list[Path]:
    """Copy each finished run's record into ``dest/NAME/``; returns the files that were new or changed."""
    changed = []
    for run in finished_runs(sweep_dir):
        target = dest / run.name
        for name in RECORD:
            src = run / name
            if not src.is_file():
                continue
            out = target / name
            if out.is_file() and filecmp.cmp(src, out, shallow=False):
                continue
            target.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, out)
            changed.append(out)
    return changed


def uncommitted(dest: Path) -> list[Path]:
    """Files under ``dest`` that git does not have as committed (untracked or changed)."""
    out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--", str(dest)],
                         check=True, capture_output=True, text=True).stdout
    return sorted(Path(line[3:].strip('"')) for line in out.splitlines() if line[3:])


def commit(paths: list[Path], message: str) -> None:
    """``git add`` then commit exactly ``paths`` (other staged or unstaged work is left alone)."""
    names = [str(p) for p in paths]
    subprocess.run(["git", "add", "--", *names], check=True)
    subprocess.run(["git", "commit", "-q", "-m", message, "--", *names], check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("sweep_dir", type=Path, help="a directory written by `sggraph sweep`")
    parser.add_argument("dest", type=Path, help="the study's runs folder in the repository")
    parser.add_argument("--commit", action="store_true", help="commit the new records")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"sync_runs: no sweep directory {args.sweep_dir}", file=sys.stderr)
        return 2
    changed = sync(args.sweep_dir, args.dest)
    runs = sorted({p.parent.name for p in changed})
    for name in runs:
        print(f"synced {args.dest / name}")
    if args.commit:
        pending = uncommitted(args.dest)  # also what an earlier call copied but could not commit
        if pending:
            names = sorted({p.parent.name for p in pending})
            commit(pending, f"{args.dest.parent.name}: records of {len(names)} finished run(s): " + "; ".join(names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
