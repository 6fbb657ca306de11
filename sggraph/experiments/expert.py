"""The expert-network experiment of §5 (Theorem 5): backprop vs synthetic gradient MSE over a grid.

The model (problems, exact gradients, the compiled simulator) is :mod:`sggraph.models.expert`;
this module runs the Monte Carlo comparison, its bootstrap confidence intervals, the summary
files and Figure 2(a)/4.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..models.expert import (
    ExpertSimulator,
    check_settings,
    exact_gradient,
    make_problem,
    sample_feedback,
)
from ..runtime.atomic import write_atomic

__all__ = ["paired_bootstrap_ratio", "plot_ratios", "sweep", "write_summary"]


def paired_bootstrap_ratio(err_bp: np.ndarray, err_sg: np.ndarray, rng: np.random.Generator,
                           resamples: int = 2000) -> tuple[float, float, float]:
    """``mean(err_bp)/mean(err_sg)`` and its paired-bootstrap 95% CI over trials."""
    ratio = float(err_bp.mean() / err_sg.mean())
    idx = rng.integers(0, len(err_bp), size=(resamples, len(err_bp)))
    boot = err_bp[idx].mean(1) / err_sg[idx].mean(1)
    low, high = np.percentile(boot, [2.5, 97.5])
    return ratio, float(low), float(high)


def sweep(ds: Iterable[int], ks: Iterable[int], cases: Iterable[str], ns: Iterable[int], trials: int = 20,
          m: int = 5, seed: int = 0, sigma: float = 0.5, p: float = 0.5, tau: float = 0.5,
          progress=None) -> list[dict]:
    """Backprop vs synthetic MSE per (case, d, k, n), with ratio, CI and theory ``2^{d−k}``.

    Combinations with ``k > d`` are skipped. Every (case, d, k, trial) draws its problem from
    ``numpy.random.default_rng([seed, case, d, k, trial])``; the ``n`` values reuse it.
    """
    ds, ks, cases, ns = list(ds), list(ks), list(cases), list(ns)
    for case in cases:
        for n in ns:
            check_settings(max(ds), min(ks), n, case, m)
    for d in ds:
        for k in ks:
            if k <= d:
                check_settings(d, k, 1, cases[0], m)
    rows = []
    for ci, case in enumerate(cases):
        for d in ds:
            for k in ks:
                if k > d:
                    continue
                sim = ExpertSimulator(d, k, m)
                errs = {n: ([], []) for n in ns}
                for trial in range(trials):
                    rng = np.random.default_rng([seed, ci, d, k, trial])
                    prob = make_problem(d, k, m, case, rng, sigma, p, tau)
                    truth = exact_gradient(prob)
                    for n in ns:
                        bp, sg = sim.estimates(prob, sample_feedback(prob, n, rng))
                        errs[n][0].append(float(((bp - truth) ** 2).sum()))
                        errs[n][1].append(float(((sg - truth) ** 2).sum()))
                for n in ns:
                    e_bp, e_sg = np.array(errs[n][0]), np.array(errs[n][1])
                    ratio, low, high = paired_bootstrap_ratio(e_bp, e_sg, np.random.default_rng([seed, d, k, n]))
                    rows.append({"case": case, "d": d, "k": k, "n": n, "mse_backprop": float(e_bp.mean()),
                                 "mse_synthetic": float(e_sg.mean()), "ratio": ratio, "ci_low": low,
                                 "ci_high": high, "theory": float(2 ** (d - k))})
                    if progress is not None:
                        progress(rows[-1])
    return rows


def write_summary(rows: list[dict], out: Path) -> list[Path]:
    """``summary.csv`` and ``summary.json`` of :func:`sweep`'s rows in ``out`` (atomically)."""
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return [write_atomic(out / "summary.csv", buf.getvalue()),
            write_atomic(out / "summary.json", json.dumps(rows, indent=2))]


def plot_ratios(rows: list[dict], out: Path) -> list[Path]:
    """Figure 2(a)/4: the MSE ratio against d − k (log scale) with the theory line, one PNG per case."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for case in sorted({r["case"] for r in rows}):
        fig, ax = plt.subplots(figsize=(5, 3.6))
        sub = [r for r in rows if r["case"] == case]
        for n in sorted({r["n"] for r in sub}):
            pts = sorted((r["d"] - r["k"], r["ratio"], r["ci_low"], r["ci_high"]) for r in sub if r["n"] == n)
            x = [p[0] + 0.06 * (n - 2.5) for p in pts]
            y = [p[1] for p in pts]
            err = [[p[1] - p[2] for p in pts], [p[3] - p[1] for p in pts]]
            ax.errorbar(x, y, yerr=err, fmt="o", ms=3, capsize=2, label=f"n = {n}")
        gaps = sorted({r["d"] - r["k"] for r in sub})
        ax.plot(gaps, [2.0 ** g for g in gaps], "k--", label="theory $2^{d-k}$")
        ax.set_yscale("log", base=2)
        ax.set_xlabel("d − k")
        ax.set_ylabel("MSE ratio Δ² / Δ̃²")
        ax.set_title(f"expert network — {case} feedback")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"ratio_{case}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths
