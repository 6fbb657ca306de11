"""The closing summary of ``sggraph demo``: one figure comparing the methods side by side, and the
disk its run directories use.

The figure has one panel per experiment the demo ran: the MNIST bandit's evaluation reward
against training samples (each method's mean over its seeds, the seeds as thin lines) and the
POPGym labyrinth's success rate against episodes (a 10-batch running mean per model).

>>> import tempfile
>>> d = Path(tempfile.mkdtemp()); _ = (d / "a").write_bytes(b"x" * 1000)
>>> disk_usage(d) >= 1000, format_bytes(1536), format_bytes(3.5e6)
(True, '1.5 kB', '3.5 MB')
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..runtime.atomic import atomic_path

__all__ = ["comparison_figure", "disk_usage", "format_bytes"]


def disk_usage(path: str | Path) -> int:
    """Bytes the files under ``path`` occupy on disk (allocated blocks; the apparent size where the
    file system does not report blocks)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            total += st.st_blocks * 512 if hasattr(st, "st_blocks") else st.st_size
    return total


def format_bytes(count: float) -> str:
    """``count`` bytes in B, kB, MB or GB (powers of 1000)."""
    for unit in ("B", "kB", "MB"):
        if abs(count) < 1000:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"


def _column(run: Path, x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
    with open(run / "metrics.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get(x) and r.get(y)]
    return np.array([float(r[x]) for r in rows]), np.array([float(r[y]) for r in rows])


def _bandit_panel(ax, runs: Mapping[str, Sequence[Path]]) -> None:
    for i, (method, paths) in enumerate(runs.items()):
        colour = f"C{i}"
        curves = [_column(p, "samples", "eval_reward") for p in paths]
        for x, y in curves:
            ax.plot(x, y, color=colour, lw=0.6, alpha=0.35)
        length = min(len(y) for _, y in curves)
        mean = np.mean([y[:length] for _, y in curves], axis=0)
        ax.plot(curves[0][0][:length], mean, color=colour, lw=1.8, marker="o", ms=3,
                label=f"{method} (mean of {len(curves)} seeds)")
    ax.set_xlabel("training samples")
    ax.set_ylabel("evaluation reward")
    ax.set_title("MNIST bandit")
    ax.legend(fontsize=7)


def _popgym_panel(ax, runs: Mapping[str, Path]) -> None:
    for i, (label, path) in enumerate(runs.items()):
        x, y = _column(path, "episodes", "success_rate")
        window = min(10, len(y))
        smooth = np.convolve(y, np.ones(window) / window, mode="valid")
        ax.plot(x[window - 1:], smooth, color=f"C{i}", lw=1.5, label=label)
    ax.set_xlabel("episodes")
    ax.set_ylabel("success rate (running mean of 10 batches)")
    ax.set_title("POPGym labyrinth_escape")
    ax.legend(fontsize=7)


def comparison_figure(out: str | Path, bandit: Mapping[str, Sequence[Path]],
                      popgym: Mapping[str, Path] | None = None, name: str = "comparison.png") -> Path:
    """Write the side-by-side comparison of the demo's runs to ``out/name``.

    Parameters
    ----------
    out : path
        The demo's output directory.
    bandit : mapping
        Method → the run directories of its seeds.
    popgym : mapping, optional
        Label → run directory (no POPGym panel when empty or None).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if popgym else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 3.8), squeeze=False)
    _bandit_panel(axes[0][0], bandit)
    if popgym:
        _popgym_panel(axes[0][1], popgym)
    fig.suptitle("sggraph demo: synthetic-gradient propagation (sgprop) against backprop baselines", fontsize=9)
    fig.tight_layout()
    target = Path(out) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return target
