"""The paper's figures from a sweep directory: ``sggraph plot SWEEP_DIR [--out DIR]``.

A sweep directory holds one run directory per grid cell (:mod:`sggraph.sweeps.records`); only
finished runs are plotted. The settings that vary across runs take these roles:

- ``seed``: runs that differ only in the seed are averaged (mean ± SEM, SEM = sample
  standard deviation / √n);
- ``lr``: each method's *best* learning rate is the one with the highest mean AUC over
  seeds;
- ablation settings (``p_flip``: reward noise, ``n_parents``: fan-in, or ``--ablation``):
  one panel per combination, and an ablation figure over each;
- every other varying setting (``method``, ``model``, ``lambda``...) names a *method*.

A run's AUC and final value are :func:`~sggraph.sweeps.records.auc_and_final` (the mean height of
the learning curve by the trapezoid rule, and its last row), the project's only definitions.

Figures (PNG) and the numbers they plot (CSV) written to ``--out`` (default
``SWEEP_DIR/figures``):

``learning_curves``
    mean ± SEM over seeds along training at each method's best learning rate (Figures 3, 5, 7a);
``lr_sensitivity``
    mean AUC ± SEM against the learning rate (Figures 6a, 7b), when the grid varies ``lr``;
``lambda``
    the ``lambda_*`` columns (mean λ per layer, or overall) along training at the best
    learning rate (Figures 5b, 6d, 7c), for methods that record λ;
``ablation_<setting>``
    AUC and final value ± SEM against the setting, at each method's best learning rate
    (Figure 6b: ``p_flip``, 6c: ``n_parents``), when the grid varies it;
``auc_per_run.csv``
    every run's settings, AUC and final value.

Examples
--------
>>> curve_auc([0, 1, 3], [0.0, 1.0, 1.0])
0.8333333333333334
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import ConfigError
from ..runtime.atomic import atomic_path, write_atomic
from .columns import ABLATIONS, X_COLUMNS, Y_COLUMNS
from .records import Run, auc_and_final, curve_auc, load_runs, mean_sem

__all__ = [
    "ABLATIONS",
    "X_COLUMNS",
    "Y_COLUMNS",
    "Run",
    "auc_and_final",
    "curve_auc",
    "load_runs",
    "mean_sem",
    "plot_sweep",
]

SEED, LR = "seed", "lr"


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _fmt(value: Any) -> str:
    from .spec import format_value

    if value is None:
        return "default"
    if isinstance(value, list):
        return "-".join(format_value(v) for v in value)
    return format_value(value)


def _sortable(value: Any) -> tuple:
    if isinstance(value, bool) or value is None:
        return (1, str(value))
    if isinstance(value, (int, float)):
        return (0, float(value))
    return (1, str(value))


@dataclass
class _Roles:
    method_keys: list[str]
    ablation_keys: list[str]
    has_seed: bool
    has_lr: bool


def _roles(runs: Sequence[Run], ablations: Sequence[str]) -> _Roles:
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run.settings if k not in keys]
    varying = [k for k in keys
               if len({_key(r.settings.get(k)) for r in runs}) > 1 or any(k not in r.settings for r in runs)]
    abl = [k for k in ablations if k in varying]
    methods = [k for k in varying if k not in (SEED, LR) and k not in abl]
    return _Roles(methods, abl, SEED in keys, LR in keys)


def _method_label(method: tuple, keys: Sequence[str]) -> str:
    parts = []
    for key, value in zip(keys, method):
        if value is None:
            continue
        parts.append(_fmt(value) if key in ("method", "model") else f"{key}={_fmt(value)}")
    return " ".join(parts) or "all runs"


def _panel_label(panel: tuple, keys: Sequence[str]) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in zip(keys, panel))


@dataclass
class _Group:
    """The seeds of one (panel, method, lr)."""

    panel: tuple
    method: tuple
    lr: Any
    runs: list[Run]
    aucs: np.ndarray
    finals: np.ndarray


def _columns(runs: Sequence[Run], x: str | None, y: str | None) -> tuple[str, str]:
    common = set.intersection(*(set(r.metrics) for r in runs))
    if x is None:
        x = next((c for c in X_COLUMNS if c in common), None)
        if x is None:
            raise ConfigError(f"no x column ({', '.join(X_COLUMNS)}) in every metrics.csv",
                              fix=f"pass --x COLUMN (columns: {', '.join(sorted(common))})")
    if y is None:
        y = next((c for c in Y_COLUMNS if c in common), None)
        if y is None:
            raise ConfigError(f"no y column ({', '.join(Y_COLUMNS)}) in every metrics.csv",
                              fix=f"pass --y COLUMN (columns: {', '.join(sorted(common))})")
    for flag, col in (("--x", x), ("--y", y)):
        if col not in common:
            raise ConfigError(f"column '{col}' is not in every run's metrics.csv",
                              fix=f"pass {flag} with one of: {', '.join(sorted(common))}")
    return x, y


def _groups(runs: Sequence[Run], roles: _Roles, x: str, y: str) -> list[_Group]:
    buckets: dict[tuple, list[Run]] = {}
    labels: dict[tuple, tuple] = {}
    for run in runs:
        panel = tuple(run.settings.get(k) for k in roles.ablation_keys)
        method = tuple(run.settings.get(k) for k in roles.method_keys)
        lr = run.settings.get(LR)
        key = (_key(panel), _key(method), _key(lr))
        buckets.setdefault(key, []).append(run)
        labels[key] = (panel, method, lr)
    groups = []
    for key, members in buckets.items():
        panel, method, lr = labels[key]
        pairs = [auc_and_final(r.metrics[x], r.metrics[y]) for r in members]
        aucs = np.array([auc for auc, _ in pairs])
        finals = np.array([final for _, final in pairs])
        groups.append(_Group(panel, method, lr, members, aucs, finals))
    return groups


def _best(groups: Sequence[_Group]) -> dict[tuple, _Group]:
    """Per (panel, method): the group at the learning rate with the highest mean AUC (first on ties)."""
    best: dict[tuple, _Group] = {}
    for g in groups:
        key = (_key(g.panel), _key(g.method))
        if key not in best or np.nanmean(g.aucs) > np.nanmean(best[key].aucs):
            best[key] = g
    return best


def _curve(runs: Sequence[Run], x: str, col: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x values common to every run, and the mean and SEM of ``col`` there."""
    xs = sorted(set.intersection(*(set(r.metrics[x].tolist()) for r in runs)))
    stack = []
    for r in runs:
        where = {v: i for i, v in enumerate(r.metrics[x].tolist())}
        stack.append([r.metrics[col][where[v]] for v in xs])
    mean, sem = mean_sem(np.array(stack), axis=0)
    return np.array(xs), np.atleast_1d(mean), np.atleast_1d(sem)


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([repr(float(v)) if isinstance(v, (float, np.floating)) else v for v in row])
    return write_atomic(path, buf.getvalue())


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _panels(plt, n: int, width: float = 5.0, height: float = 3.6):
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    return path


def _band(ax, xs, mean, sem, label, color, **kw) -> None:
    ax.plot(xs, mean, label=label, color=color, **kw)
    if np.any(np.isfinite(sem)):
        ax.fill_between(xs, mean - sem, mean + sem, color=color, alpha=0.2, linewidth=0)


def plot_sweep(sweep_dir: str | Path, out: str | Path | None = None, *, x: str | None = None, y: str | None = None,
               ablations: Sequence[str] = tuple(ABLATIONS)) -> dict[str, Path]:
    """Draw every figure the sweep's grid supports; returns ``{figure or csv name: path}``.

    Parameters
    ----------
    sweep_dir : path
        A directory written by ``sggraph sweep``.
    out : path, optional
        Where to write (default ``SWEEP_DIR/figures``).
    x, y : str, optional
        ``metrics.csv`` columns (default: the first of :data:`X_COLUMNS` / :data:`Y_COLUMNS` present).
    ablations : sequence of str
        Settings drawn as ablations when varied (default ``p_flip``, ``n_parents``).

    Raises
    ------
    ConfigError
        No finished run, or the columns are missing.
    """
    runs, _ = load_runs(sweep_dir)
    if not runs:
        raise ConfigError(f"no finished run (a run directory with metrics.csv and summary.json) in {sweep_dir}",
                          fix="run the sweep first (`sggraph sweep SPEC.yaml --out DIR`), then plot DIR")
    out = Path(out) if out is not None else Path(sweep_dir) / "figures"
    out.mkdir(parents=True, exist_ok=True)
    x, y = _columns(runs, x, y)
    plan = _plan(runs, _roles(runs, ablations), x, y)
    plt = _plt()
    written = {"auc_per_run.csv": _per_run_csv(plan, out)}
    written.update(_learning_curves(plan, plt, out))
    if plan.roles.has_lr and len({_key(g.lr) for g in plan.groups}) > 1:
        written.update(_lr_sensitivity(plan, plt, out))
    written.update(_lambda_figure(plan, plt, out))
    for a_i, key in enumerate(plan.roles.ablation_keys):
        written.update(_ablation(plan, plt, out, a_i, key))
    return written


@dataclass
class _Plan:
    """What the figures of a sweep draw: its runs grouped by (panel, method, lr), each method's best
    learning rate per panel, and the colours and labels shared by every figure.

    Attributes
    ----------
    methods : list of str
        The methods' keys, in the order of their first run.
    panels : list of tuple
        The ablation settings' combinations, sorted.
    plabel : list of str
        The label of each panel.
    """

    roles: _Roles
    x: str
    y: str
    groups: list[_Group]
    best: dict[tuple, _Group]
    methods: list[str]
    panels: list[tuple]
    colors: dict[str, str]
    mlabel: dict[str, str]
    plabel: list[str]

    @property
    def xl(self) -> str:
        """The x axis label."""
        return X_COLUMNS.get(self.x, self.x)

    @property
    def yl(self) -> str:
        """The y axis label."""
        return Y_COLUMNS.get(self.y, self.y)

    @property
    def at_best_lr(self) -> str:
        """``", at each method’s best lr"`` when the grid varies the learning rate."""
        return ", at each method’s best lr" if self.roles.has_lr else ""


def _plan(runs: Sequence[Run], roles: _Roles, x: str, y: str) -> _Plan:
    """Group the runs and fix each method's colour and label and the panels' order and labels."""
    groups = _groups(runs, roles, x, y)
    methods = list(dict.fromkeys(_key(g.method) for g in groups))
    method_of = {_key(g.method): g.method for g in groups}
    panels = sorted({_key(g.panel): g.panel for g in groups}.values(), key=lambda p: tuple(map(_sortable, p)))
    return _Plan(roles, x, y, groups, _best(groups), methods, panels,
                 colors={m: f"C{i % 10}" for i, m in enumerate(methods)},
                 mlabel={m: _method_label(method_of[m], roles.method_keys) for m in methods},
                 plabel=[_panel_label(p, roles.ablation_keys) for p in panels])


def _per_run_csv(plan: _Plan, out: Path) -> Path:
    """``auc_per_run.csv``: every run's panel, method, lr, seed, AUC and final value."""
    rows = []
    for g in plan.groups:
        for run, auc, final in zip(g.runs, g.aucs, g.finals):
            rows.append([run.name, _panel_label(g.panel, plan.roles.ablation_keys), plan.mlabel[_key(g.method)],
                         _fmt(g.lr), _fmt(run.settings.get(SEED)), auc, final])
    return _write_csv(out / "auc_per_run.csv", ["run", "panel", "method", "lr", "seed", "auc", "final"], rows)


def _learning_curves(plan: _Plan, plt, out: Path) -> dict[str, Path]:
    """Learning curves at each method's best lr, one panel per ablation combination (Figures 3, 5, 7a)."""
    fig, axes = _panels(plt, len(plan.panels))
    rows = []
    for ax, panel, label in zip(axes, plan.panels, plan.plabel):
        for m in plan.methods:
            g = plan.best.get((_key(panel), m))
            if g is None:
                continue
            xs, mean, sem = _curve(g.runs, plan.x, plan.y)
            lr_text = f" (lr {_fmt(g.lr)})" if plan.roles.has_lr else ""
            _band(ax, xs, mean, sem, f"{plan.mlabel[m]}{lr_text}", plan.colors[m], marker="o", ms=2.5)
            rows += [[label, plan.mlabel[m], _fmt(g.lr), xv, mv, sv, len(g.runs)] for xv, mv, sv in zip(xs, mean, sem)]
        _label_axes(ax, plan.xl, plan.yl, label or "learning curves")
    fig.suptitle(f"mean ± SEM over seeds{plan.at_best_lr}", fontsize=10)
    return _finish(plt, fig, out, "learning_curves", ["panel", "method", "lr", plan.x, "mean", "sem", "n_seeds"],
                   rows)


def _lr_sensitivity(plan: _Plan, plt, out: Path) -> dict[str, Path]:
    """Mean AUC ± SEM against the learning rate, per panel and method (Figures 6a, 7b)."""
    fig, axes = _panels(plt, len(plan.panels))
    rows = []
    for ax, panel, label in zip(axes, plan.panels, plan.plabel):
        for m in plan.methods:
            rows += _lr_curve(plan, ax, panel, label, m)
        ax.set_xscale("log")
        _label_axes(ax, "learning rate", f"AUC of the {plan.yl} curve", label or "learning-rate sensitivity")
    fig.suptitle("learning-rate sensitivity: AUC, mean ± SEM over seeds", fontsize=10)
    return _finish(plt, fig, out, "lr_sensitivity", ["panel", "method", "lr", "auc_mean", "auc_sem", "n_seeds", "best"],
                   rows)


def _lr_curve(plan: _Plan, ax, panel: tuple, label: str, m: str) -> list[list]:
    """Draw method ``m``'s AUC against the lr in ``panel``; its CSV rows (none when it has no run there)."""
    mine = sorted((g for g in plan.groups if _key(g.panel) == _key(panel) and _key(g.method) == m),
                  key=lambda g: _sortable(g.lr))
    if not mine:
        return []
    lrs = [float(g.lr) for g in mine]
    stats = [mean_sem(g.aucs) for g in mine]
    mean, sem = np.array([s[0] for s in stats]), np.array([s[1] for s in stats])
    ax.errorbar(lrs, mean, yerr=np.nan_to_num(sem), marker="o", ms=3, capsize=2, color=plan.colors[m],
                label=plan.mlabel[m])
    b = plan.best[(_key(panel), m)]
    return [[label, plan.mlabel[m], _fmt(g.lr), mv, sv, len(g.runs), g is b] for g, mv, sv in zip(mine, mean, sem)]


def _lambda_sets(plan: _Plan) -> list[tuple[str, str, _Group, list[str]]]:
    """(panel label, method, best group, its ``lambda*`` columns) for every best group that records λ
    (finite somewhere in every run)."""
    lam_sets = []
    for panel, label in zip(plan.panels, plan.plabel):
        for m in plan.methods:
            g = plan.best.get((_key(panel), m))
            if g is None:
                continue
            cols = [c for c in g.runs[0].metrics if c.startswith("lambda")
                    and all(c in r.metrics and np.isfinite(r.metrics[c]).any() for r in g.runs)]
            if cols:
                lam_sets.append((label, m, g, cols))
    return lam_sets


def _lambda_figure(plan: _Plan, plt, out: Path) -> dict[str, Path]:
    """λ along training at the best lr, a panel per method and ablation combination that records it
    (Figures 5b, 6d, 7c); nothing when none does."""
    lam_sets = _lambda_sets(plan)
    if not lam_sets:
        return {}
    fig, axes = _panels(plt, len(lam_sets))
    rows = []
    for ax, (label, m, g, cols) in zip(axes, lam_sets):
        for i, col in enumerate(cols):
            xs, mean, sem = _curve(g.runs, plan.x, col)
            _band(ax, xs, mean, sem, col.removeprefix("lambda_") or col, f"C{i % 10}")
            rows += [[label, plan.mlabel[m], _fmt(g.lr), col, xv, mv, sv, len(g.runs)]
                     for xv, mv, sv in zip(xs, mean, sem)]
        lr_text = f", lr {_fmt(g.lr)}" if plan.roles.has_lr else ""
        _label_axes(ax, plan.xl, "mixing weight λ (1 = backprop)",
                    f"{plan.mlabel[m]}{lr_text}" + (f" — {label}" if label else ""))
    fig.suptitle("λ along training, mean ± SEM over seeds", fontsize=10)
    return _finish(plt, fig, out, "lambda", ["panel", "method", "lr", "column", plan.x, "mean", "sem", "n_seeds"],
                   rows)


def _ablation_slices(plan: _Plan, a_i: int) -> dict[str, list[tuple]]:
    """The panels grouped by their other ablation settings, keeping the groups where setting ``a_i`` varies."""
    slices: dict[str, list[tuple]] = {}
    for panel in plan.panels:
        rest = tuple(v for i, v in enumerate(panel) if i != a_i)
        slices.setdefault(_key(rest), []).append(panel)
    return {k: v for k, v in slices.items() if len({_key(p[a_i]) for p in v}) > 1}


def _ablation(plan: _Plan, plt, out: Path, a_i: int, key: str) -> dict[str, Path]:
    """AUC and final value against the ablation setting ``key`` at each method's best lr, a line per
    method and slice of the other ablation settings (Figures 6b, 6c); nothing when ``key`` never varies
    with the others fixed."""
    slices = _ablation_slices(plan, a_i)
    if not slices:
        return {}
    others = [k for k in plan.roles.ablation_keys if k != key]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    rows = []
    for s_i, members in enumerate(slices.values()):
        slabel = _panel_label(tuple(v for i, v in enumerate(members[0]) if i != a_i), others)
        for m in plan.methods:
            rows += _ablation_line(plan, axes, members, a_i, m, slabel, ["-", "--", ":", "-."][s_i % 4])
    for ax, what in zip(axes, (f"AUC of the {plan.yl} curve", f"final {plan.yl}")):
        ax.set_xlabel(ABLATIONS.get(key, key))
        ax.set_ylabel(what)
        ax.legend(fontsize=7)
    fig.suptitle(f"ablation over {key}: mean ± SEM over seeds{plan.at_best_lr}", fontsize=10)
    return _finish(plt, fig, out, f"ablation_{key}",
                   ["slice", "method", key, "lr", "auc_mean", "auc_sem", "final_mean", "final_sem", "n_seeds"], rows)


def _ablation_line(plan: _Plan, axes, members: list[tuple], a_i: int, m: str, slabel: str,
                   style: str) -> list[list]:
    """Draw method ``m``'s AUC and final value against ablation setting ``a_i`` over the panels ``members``;
    its CSV rows (none with fewer than two points)."""
    pts = [(p[a_i], plan.best[(_key(p), m)]) for p in members if (_key(p), m) in plan.best]
    pts.sort(key=lambda t: _sortable(t[0]))
    if len(pts) < 2:
        return []
    vals = [t[0] for t in pts]
    auc = [mean_sem(t[1].aucs) for t in pts]
    fin = [mean_sem(t[1].finals) for t in pts]
    name = plan.mlabel[m] + (f" ({slabel})" if slabel else "")
    for ax, stats in zip(axes, (auc, fin)):
        ax.errorbar(vals, [s[0] for s in stats], yerr=np.nan_to_num([s[1] for s in stats]),
                    marker="o", ms=3, capsize=2, color=plan.colors[m], linestyle=style, label=name)
    return [[slabel, plan.mlabel[m], _fmt(v), _fmt(g.lr), a[0], a[1], f[0], f[1], len(g.runs)]
            for (v, g), a, f in zip(pts, auc, fin)]


def _label_axes(ax, xlabel: str, ylabel: str, title: str) -> None:
    """Axis labels, a title and a legend."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)


def _finish(plt, fig, out: Path, name: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> dict[str, Path]:
    """Save ``fig`` as ``name.png`` and ``rows`` as ``name.csv``; returns both paths by file name."""
    png = _save(fig, out / f"{name}.png")
    plt.close(fig)
    return {f"{name}.png": png, f"{name}.csv": _write_csv(out / f"{name}.csv", header, rows)}
