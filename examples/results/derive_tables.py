"""Every table of ``examples/results/README.md`` (and of ``speed/README.md``), derived from the committed CSVs.

Each table in those documents sits between ``<!-- derived:NAME -->`` and ``<!-- /derived -->``;
this script rebuilds it from the CSVs and JSON files beside it, nothing else. Definitions (one
for the whole document): a run's AUC is the mean height of its learning curve (trapezoid rule
over samples or episodes, divided by their span) and its final value the last evaluation (the
bandit) or the last batch (POPGym), both from :func:`sggraph.sweeps.figures.auc_and_final` as
written to ``auc_per_run.csv`` by ``sggraph plot``; mean ± SEM over seeds with ddof = 1; a
comparison of two methods is the paired difference over the seeds both have, with its 95 %
t-interval, read "ahead" only when the interval excludes zero.

    python examples/results/derive_tables.py            # print every table
    python examples/results/derive_tables.py --check    # exit 1 if a document's table differs
    python examples/results/derive_tables.py --write    # rewrite the tables in the documents
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from sggraph.sweeps.figures import mean_sem
from sggraph.sweeps.stats import Difference, paired

HERE = Path(__file__).resolve().parent
DOCUMENTS = (HERE / "README.md", HERE / "speed" / "README.md")
MARK = re.compile(r"<!-- derived:([\w-]+) -->\n(.*?)<!-- /derived -->", re.S)

# --------------------------------------------------------------------------- reading


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def runs(study: str) -> dict[tuple[str, str, str], dict[int, tuple[float, float]]]:
    """``{(panel, method, lr): {seed: (auc, final)}}`` from ``STUDY/auc_per_run.csv``."""
    out: dict = {}
    for r in _read(HERE / study / "auc_per_run.csv"):
        out.setdefault((r["panel"], r["method"], r["lr"]), {})[int(r["seed"])] = (float(r["auc"]), float(r["final"]))
    return out


# --------------------------------------------------------------------------- formatting


def f3(x: float) -> str:
    return f"{x:.3f}"


def ms(values: Sequence[float]) -> str:
    """``mean ± SEM`` (ddof = 1) of ``values``; the mean alone for one value."""
    if len(values) == 1:
        return f3(values[0])
    m, s = mean_sem(values)
    return f"{m:.3f} ± {s:.3f}"


def diff(d: Difference) -> str:
    """``+0.152 ± 0.024 [+0.090, +0.214]``: paired mean difference ± SEM [95 % t-interval]."""
    return f"{d.mean:+.3f} ± {d.sem:.3f} [{d.low:+.3f}, {d.high:+.3f}]"


def reading(d: Difference, a: str, b: str) -> str:
    """The wording rule: "A ahead" / "B ahead" only when the interval excludes zero."""
    return {"ahead": f"{a} ahead", "behind": f"{b} ahead", "within noise": "within noise"}[d.verdict]


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def per_seed(cell: dict[int, tuple[float, float]], which: int) -> tuple[list[int], list[float]]:
    seeds = sorted(cell)
    return seeds, [cell[s][which] for s in seeds]


def compare(a: dict[int, tuple[float, float]], b: dict[int, tuple[float, float]], which: int) -> Difference:
    """Paired difference a − b of AUC (``which`` 0) or final (1) over the seeds both have."""
    seeds = sorted(set(a) & set(b))
    return paired([a[s][which] for s in seeds], [b[s][which] for s in seeds])


def compare_rows(pairs: Sequence[tuple[str, str, dict, dict]]) -> list[list[str]]:
    """Rows ``A − B | AUC difference | reading | final difference | reading | seeds``."""
    rows = []
    for la, lb, a, b in pairs:
        da, df = compare(a, b, 0), compare(a, b, 1)
        rows.append([f"{la} − {lb}", diff(da), reading(da, la, lb), diff(df), reading(df, la, lb), str(da.n)])
    return rows


COMPARE_HEADER = ["A − B", "AUC: difference ± SEM [95 % CI]", "reading", "final: difference ± SEM [95 % CI]",
                  "reading", "seeds"]

# --------------------------------------------------------------------------- expert network


def expert_table() -> str:
    rows = _read(HERE / "expert" / "summary.csv")
    pick = {(r["case"], int(r["d"]), int(r["k"]), int(r["n"])): r for r in rows}
    out = []
    for case in ("noisy", "activation", "partial"):
        cells = []
        for d, k in ((8, 2), (10, 3)):
            r = pick[(case, d, k, 1)]
            cells.append(f"{float(r['ratio']):.1f} [{float(r['ci_low']):.1f}, {float(r['ci_high']):.1f}]")
        out.append([case, *cells])
    return table(["case", "d = 8, k = 2 (theory 64)", "d = 10, k = 3 (theory 128)"], out)


def expert_coverage() -> str:
    rows = _read(HERE / "expert" / "summary.csv")
    inside = [float(r["ci_low"]) <= float(r["theory"]) <= float(r["ci_high"]) for r in rows]
    below = sum(float(r["ci_high"]) < float(r["theory"]) for r in rows)
    above = sum(float(r["ci_low"]) > float(r["theory"]) for r in rows)
    return table(["settings", "CI contains 2^(d−k)", "CI below it", "CI above it"],
                 [[str(len(rows)), f"{sum(inside)} ({100 * sum(inside) / len(rows):.0f} %)", str(below), str(above)]])


# --------------------------------------------------------------------------- MNIST bandit

FIG5 = {"sgprop lambda=adaptive snapshots=3": "SparseNet sgprop, adaptive λ (5e-3)",
        "sgprop lambda=0.9": "SparseNet sgprop, λ = 0.9 (5e-3)",
        "backprop": "SparseNet backprop (1e-3)", "mlp": "MLP, 5 × 745 (2e-5)"}
SHORT = {"sgprop lambda=adaptive snapshots=3": "sgprop adaptive", "sgprop lambda=adaptive": "sgprop adaptive",
         "sgprop lambda=0.9": "sgprop λ=0.9", "backprop": "backprop", "mlp": "MLP"}


def bandit_fig5() -> str:
    data = runs("bandit-fig5")
    rows = []
    for method, label in FIG5.items():
        cell = data[("", method, "default")]
        seeds, finals = per_seed(cell, 1)
        rows.append([label, str(len(seeds)), ms(finals), " ".join(f3(v) for v in finals), ms(per_seed(cell, 0)[1])])
    return table(["method (lr)", "seeds", "final, mean ± SEM", "final per seed (0, 1, …)", "AUC, mean ± SEM"], rows)


def bandit_fig5_compare() -> str:
    data = {m: runs("bandit-fig5")[("", m, "default")] for m in FIG5}
    ada, fix, bp, mlp = (data[m] for m in FIG5)
    pairs = [("sgprop adaptive", "backprop", ada, bp), ("sgprop adaptive", "MLP", ada, mlp),
             ("sgprop λ=0.9", "backprop", fix, bp), ("sgprop λ=0.9", "MLP", fix, mlp),
             ("MLP", "backprop", mlp, bp), ("sgprop adaptive", "sgprop λ=0.9", ada, fix)]
    return table(COMPARE_HEADER, compare_rows(pairs))


def lambda_ranges(study: str, method: str) -> list[list[str]]:
    """Per layer: the seed-mean λ at the first evaluation, its minimum (and step) and its value at the end."""
    rows = [r for r in _read(HERE / study / "lambda.csv") if r["method"] == method]
    out = []
    for col in sorted({r["column"] for r in rows}):
        pts = sorted(((float(r["samples"]), float(r["mean"])) for r in rows if r["column"] == col))
        lo, hi = min(pts, key=lambda p: p[1]), max(pts, key=lambda p: p[1])
        out.append([col.replace("lambda_", ""), f3(pts[0][1]), f"{lo[1]:.3f} (step {round(lo[0] / 64)})",
                    f"{hi[1]:.3f} (step {round(hi[0] / 64)})", f3(pts[-1][1]), rows[0]["n_seeds"]])
    return out


LAMBDA_HEADER = ["layer", "first evaluation (step 1)", "minimum (step)", "maximum (step)", "end (step 1500)", "seeds"]


def bandit_fig5_lambda() -> str:
    return table(LAMBDA_HEADER, lambda_ranges("bandit-fig5", "sgprop lambda=adaptive snapshots=3"))


def bandit_generalization() -> str:
    names = {"sgprop λ=adaptive": "SparseNet sgprop, adaptive λ", "sgprop λ=0.9": "SparseNet sgprop, λ = 0.9",
             "mlp": "MLP", "backprop": "SparseNet backprop"}
    rows = {r["method"]: r for r in _read(HERE / "bandit-fig5" / "generalization.csv")}
    out = []
    for key, label in names.items():
        r = rows[key]
        out.append([label, f"{float(r['train_reward_mean']):.3f} ± {float(r['train_reward_sem']):.3f}",
                    f"{float(r['held_out_reward_mean']):.3f} ± {float(r['held_out_reward_sem']):.3f}",
                    f"{float(r['gap_mean']):+.3f} ± {float(r['gap_sem']):.3f}", r["n_seeds"]])
    return table(["method", "training digits", "held-out digits", "gap", "seeds"], out)


def bandit_generalization_lr() -> str:
    gaps = [float(r["gap_mean"]) for r in _read(HERE / "bandit-lr" / "generalization.csv")]
    return table(["cells of the lr grid", "smallest gap (seed mean)", "largest gap (seed mean)"],
                 [[str(len(gaps)), f"{min(gaps):+.3f}", f"{max(gaps):+.3f}"]])


LR_METHODS = {"sgprop lambda=adaptive": ("SparseNet sgprop, adaptive λ", "0.005"),
              "sgprop lambda=0.9": ("SparseNet sgprop, λ = 0.9", "0.005"),
              "backprop": ("SparseNet backprop", "0.001"), "mlp": ("MLP", "2e-05")}


def _lrs(data: dict, method: str) -> list[str]:
    return sorted({lr for (_, m, lr) in data if m == method}, key=float)


def bandit_lr() -> str:
    data = runs("bandit-lr")
    rows = []
    for method, (label, _) in LR_METHODS.items():
        for lr in _lrs(data, method):
            cell = data[("", method, lr)]
            _, finals = per_seed(cell, 1)
            rows.append([f"{label} ({float(lr):g})", ms(finals), " ".join(f3(v) for v in finals),
                         ms(per_seed(cell, 0)[1])])
    return table(["method (lr)", "final, mean ± SEM", "final per seed (0, 1, 2)", "AUC, mean ± SEM"], rows)


def bandit_lr_table1() -> str:
    """Each method's Table 1 rate against each other rate of its grid (AUC, paired over seeds 0–2)."""
    data = runs("bandit-lr")
    rows = []
    for method, (label, rate) in LR_METHODS.items():
        base = data[("", method, rate)]
        for lr in _lrs(data, method):
            if lr == rate:
                continue
            d = compare(base, data[("", method, lr)], 0)
            rows.append([label, f"{float(rate):g} − {float(lr):g}", diff(d),
                         reading(d, f"{float(rate):g}", f"{float(lr):g}"), str(d.n)])
    return table(["method", "Table 1 rate − other rate", "AUC: difference ± SEM [95 % CI]", "reading", "seeds"], rows)


def bandit_lr_variants() -> str:
    data = runs("bandit-lr")
    pairs = [(f"adaptive ({float(lr):g})", f"λ=0.9 ({float(lr):g})", data[("", "sgprop lambda=adaptive", lr)],
              data[("", "sgprop lambda=0.9", lr)]) for lr in _lrs(data, "sgprop lambda=adaptive")]
    return table(COMPARE_HEADER, compare_rows(pairs))


ABL_METHODS = {"sgprop lambda=adaptive": "SparseNet sgprop, adaptive λ", "sgprop lambda=0.9": "SparseNet sgprop, λ = 0.9",
               "backprop": "SparseNet backprop", "mlp": "MLP"}


def _ablation(setting: str, values: Sequence[str], fixed: str) -> dict:
    data = runs("bandit-ablations")
    out = {}
    for (panel, method, _), cell in data.items():
        parts = dict(p.split("=") for p in panel.split(", "))
        if parts[fixed[0]] == fixed[1]:
            out[(method, parts[setting])] = cell
    return {k: v for k, v in out.items() if k[1] in values}


P_FLIPS = ("0.0", "0.1", "0.2", "0.3", "0.4")
N_PARENTS = ("2", "5", "8", "11", "14")


def _ablation_table(cells: dict, values: Sequence[str], label: str) -> str:
    rows = []
    for method, name in ABL_METHODS.items():
        if (method, values[0]) not in cells:
            continue
        rows.append([name] + [f"{ms(per_seed(cells[(method, v)], 0)[1])} / {ms(per_seed(cells[(method, v)], 1)[1])}"
                              for v in values])
    return table(["method (AUC / final, mean ± SEM, seeds 0–1)"] + [f"{label} {v}" for v in values], rows)


def _ablation_compare(cells: dict, values: Sequence[str], label: str, with_mlp: bool) -> str:
    pairs = []
    for v in values:
        pairs.append((f"adaptive [{label} {v}]", "backprop", cells[("sgprop lambda=adaptive", v)], cells[("backprop", v)]))
        pairs.append((f"λ=0.9 [{label} {v}]", "backprop", cells[("sgprop lambda=0.9", v)], cells[("backprop", v)]))
        if with_mlp:
            pairs.append((f"adaptive [{label} {v}]", "MLP", cells[("sgprop lambda=adaptive", v)], cells[("mlp", v)]))
    return table(COMPARE_HEADER, compare_rows(pairs))


def bandit_p_flip() -> str:
    return _ablation_table(_ablation("p_flip", P_FLIPS, ("n_parents", "5")), P_FLIPS, "p_flip")


def bandit_p_flip_compare() -> str:
    return _ablation_compare(_ablation("p_flip", P_FLIPS, ("n_parents", "5")), P_FLIPS, "p_flip", True)


def bandit_n_parents() -> str:
    return _ablation_table(_ablation("n_parents", N_PARENTS, ("p_flip", "0.4")), N_PARENTS, "n_parents")


def bandit_n_parents_compare() -> str:
    return _ablation_compare(_ablation("n_parents", N_PARENTS, ("p_flip", "0.4")), N_PARENTS, "n_parents", False)


def bandit_mechanism() -> str:
    rows = []
    for r in _read(HERE / "bandit_mechanism.csv"):
        rows.append([r["step"], r["layer"], f"{float(r['delta2_backprop']):.2e}",
                     f"{float(r['delta2_mixture']):.2e} ({float(r['mixture_variance_term']):.1e} + "
                     f"{float(r['mixture_bias2']):.1e})",
                     f"{float(r['pred_over_received']):.3g}", f"{float(r['cosine']):+.3f}",
                     f"{float(r['lambda_star']):.3f}", f"{float(r['lambda_adaptive_mean']):.3f}"])
    return table(["step", "layer", "backprop Δ²", "mixture Δ̃² (variance/n + bias²)", "‖ĥ‖ / ‖g̃‖", "cos(ĥ, g̃)",
                  "λ* (eq. 18)", "adaptive λ (mean)"], rows)


def _controls() -> dict[str, dict]:
    lr = runs("bandit-lr")
    return {"generators trained (the Figure 5 runs)": lr[("", "sgprop lambda=adaptive", "0.005")],
            "generators frozen at initialisation": runs("bandit-frozen")[("", "all runs", "default")],
            "generators initialised at zero, trained": runs("bandit-zero-init")[("", "all runs", "default")],
            "SparseNet backprop, lr 1e-3": lr[("", "backprop", "0.001")]}


def bandit_controls() -> str:
    rows = []
    for label, cell in _controls().items():
        _, finals = per_seed(cell, 1)
        rows.append([label, " ".join(f3(v) for v in finals), ms(finals), ms(per_seed(cell, 0)[1])])
    return table(["sgprop, adaptive λ, lr 5e-3", "final per seed (0, 1, 2)", "final, mean ± SEM", "AUC, mean ± SEM"],
                 rows)


def bandit_controls_compare() -> str:
    trained, frozen, zero, bp = _controls().values()
    pairs = [("zero-init", "backprop", zero, bp), ("zero-init", "trained", zero, trained),
             ("frozen", "backprop", frozen, bp)]
    return table(COMPARE_HEADER, compare_rows(pairs))


def bandit_controls_lambda() -> str:
    rows = []
    for study, label in (("bandit-frozen", "frozen"), ("bandit-zero-init", "zero-init")):
        rows += [[label, *r] for r in lambda_ranges(study, "all runs")]
    return table(["control", *LAMBDA_HEADER], rows)


# --------------------------------------------------------------------------- POPGym

MODELS = {"sparsenet sgprop": "SparseNet sgprop", "sparsenet backprop": "SparseNet backprop", "gru": "GRU",
          "lstm": "LSTM"}


def best_rates(data: dict) -> dict[str, str]:
    """Each model's learning rate with the highest mean AUC (as ``sggraph plot`` picks it)."""
    best: dict[str, str] = {}
    for (_, m, lr), cell in data.items():
        auc = float(np.mean([v[0] for v in cell.values()]))
        if m not in best or auc > float(np.mean([v[0] for v in data[("", m, best[m])].values()])):
            best[m] = lr
    return best


def popgym_grid(study: str) -> str:
    data = runs(study)
    lrs = sorted({lr for (_, _, lr) in data}, key=float)
    best = best_rates(data)
    rows = []
    for m, label in MODELS.items():
        cells = []
        for lr in lrs:
            cell = data.get(("", m, lr))
            if cell is None:
                cells.append("")
                continue
            text = f"{ms(per_seed(cell, 0)[1])} ({len(cell)})"
            cells.append(f"**{text}**" if best[m] == lr else text)
        rows.append([label, *cells])
    return table(["model: AUC, mean ± SEM (seeds)"] + [f"{float(lr):g}" for lr in lrs], rows)


def popgym_best(study: str) -> str:
    data = runs(study)
    rows = []
    for m, lr in best_rates(data).items():
        cell = data[("", m, lr)]
        seeds, finals = per_seed(cell, 1)
        rows.append([MODELS[m], f"{float(lr):g}", str(len(seeds)), ms(per_seed(cell, 0)[1]), ms(finals),
                     " ".join(f3(v) for v in finals)])
    order = list(MODELS.values())
    rows.sort(key=lambda r: order.index(r[0]))
    return table(["model", "best lr", "seeds", "AUC, mean ± SEM", "final, mean ± SEM", "final per seed (0, 1, …)"],
                 rows)


def popgym_best_compare(study: str) -> str:
    data = runs(study)
    best = best_rates(data)
    cell = {m: data[("", m, best[m])] for m in MODELS}
    names = {m: f"{MODELS[m]} ({float(best[m]):g})" for m in MODELS}
    order = sorted(MODELS, key=lambda m: -float(np.mean([v[0] for v in cell[m].values()])))
    pairs = [(names[a], names[b], cell[a], cell[b]) for i, a in enumerate(order) for b in order[i + 1:]]
    return table(COMPARE_HEADER, compare_rows(pairs))


def paired_seeds(name: str) -> str:
    rows = []
    for r in _read(HERE / f"popgym_{name}_paired.csv"):
        for n in ("20", "40"):
            rows.append([r["seed"], n,
                         f"{float(r[f'auc_sgprop_{n}']):.3f} / {float(r[f'final_sgprop_{n}']):.3f}",
                         f"{float(r[f'auc_backprop_{n}']):.3f} / {float(r[f'final_backprop_{n}']):.3f}",
                         f"{float(r[f'auc_diff_{n}']):+.3f} / {float(r[f'final_diff_{n}']):+.3f}"])
        rows.append([r["seed"], "DiD", "", "", f"{float(r['auc_did']):+.3f} / {float(r['final_did']):+.3f}"])
    return table(["seed", "environments", "sgprop: AUC / final", "backprop: AUC / final",
                  "sgprop − backprop: AUC / final"], rows)


QUANTITY = {"diff_20": "sgprop − backprop at 20 environments", "diff_40": "sgprop − backprop at 40 environments",
            "did": "difference of differences (20 − 40)"}


def paired_summary(name: str) -> str:
    rows = []
    for r in _read(HERE / f"popgym_{name}_paired_summary.csv"):
        metric, rest = r["quantity"].split("_", 1)
        rows.append([metric.upper() if metric == "auc" else metric, QUANTITY[rest], r["seeds"],
                     f"{float(r['mean']):+.3f} ± {float(r['sem']):.3f}",
                     f"[{float(r['t_low']):+.3f}, {float(r['t_high']):+.3f}]",
                     f"[{float(r['boot_low']):+.3f}, {float(r['boot_high']):+.3f}]"])
    return table(["metric", "quantity", "seeds", "mean ± SEM", "95 % t-interval", "95 % bootstrap CI"], rows)


def explore_rnn() -> str:
    rows = []
    for n in ("20", "40"):
        data = runs(f"popgym-explore-{n}")
        for m in ("gru", "lstm"):
            cells = []
            for lr in ("0.0005", "0.001", "0.002"):
                cell = data[("", m, lr)]
                _, finals = per_seed(cell, 1)
                cells.append(f"{ms(per_seed(cell, 0)[1])} ({', '.join(f3(v) for v in finals)})")
            rows.append([MODELS[m], n, *cells])
    return table(["model", "environments", "5e-4: AUC (final per seed 0, 1, 2)", "1e-3", "2e-3"], rows)


def explore_sparsenet_rates() -> str:
    data = runs("popgym-explore-20")
    rows = []
    for lr in ("0.001", "0.002"):
        sg, bp = data[("", "sparsenet sgprop", lr)], data[("", "sparsenet backprop", lr)]
        d = compare(sg, bp, 0)
        rows.append([f"{float(lr):g}", f"{ms(per_seed(sg, 0)[1])} ({', '.join(f3(v) for v in per_seed(sg, 1)[1])})",
                     f"{ms(per_seed(bp, 0)[1])} ({', '.join(f3(v) for v in per_seed(bp, 1)[1])})",
                     diff(d), reading(d, "sgprop", "backprop")])
    return table(["lr", "sgprop: AUC (final per seed)", "backprop: AUC (final per seed)",
                  "sgprop − backprop, AUC: difference ± SEM [95 % CI]", "reading"], rows)


def explore_rnn_counts() -> str:
    rows = []
    for n in ("20", "40"):
        data = runs(f"popgym-explore-{n}")
        for m in ("gru", "lstm"):
            finals = [v[1] for lr in ("0.0005", "0.001", "0.002") for v in data[("", m, lr)].values()]
            rows.append([MODELS[m], n, str(len(finals)), str(sum(f >= 0.5 for f in finals)),
                         f3(max(finals))])
    return table(["model", "environments", "runs", "runs ending with success ≥ 0.5", "highest final"], rows)


# --------------------------------------------------------------------------- speed


def speed_vs_authors() -> str:
    rows = []
    for threads in (2, 1):
        d = json.loads((HERE / "speed" / f"vs-authors-threads{threads}.json").read_text())
        for method, label in (("backprop", "backprop"), ("sgprop", "sgprop, adaptive λ")):
            s = d["summary"][method]
            rows.append([f"{threads}, {d['steps_short']} → {d['steps_long']}", label, f"{s['authors_ms']:.1f} ms",
                         f"{s['ours_ms']:.1f} ms", f"**{s['ratio']:.2f}×** ({s['ratio_min']:.2f}–{s['ratio_max']:.2f})",
                         str(s["repeats"])])
    return table(["threads, S1 → S2", "method", "authors", "ours", "authors / ours (repeats' range)", "repeats"], rows)


# --------------------------------------------------------------------------- the registry

TABLES: dict[str, Callable[[], str]] = {
    "expert": expert_table,
    "expert-coverage": expert_coverage,
    "bandit-fig5": bandit_fig5,
    "bandit-fig5-compare": bandit_fig5_compare,
    "bandit-fig5-lambda": bandit_fig5_lambda,
    "bandit-generalization": bandit_generalization,
    "bandit-generalization-lr": bandit_generalization_lr,
    "bandit-lr": bandit_lr,
    "bandit-lr-table1": bandit_lr_table1,
    "bandit-lr-variants": bandit_lr_variants,
    "bandit-p-flip": bandit_p_flip,
    "bandit-p-flip-compare": bandit_p_flip_compare,
    "bandit-n-parents": bandit_n_parents,
    "bandit-n-parents-compare": bandit_n_parents_compare,
    "bandit-mechanism": bandit_mechanism,
    "bandit-controls": bandit_controls,
    "bandit-controls-compare": bandit_controls_compare,
    "bandit-controls-lambda": bandit_controls_lambda,
    "escape-20-grid": lambda: popgym_grid("popgym-escape-20"),
    "escape-40-grid": lambda: popgym_grid("popgym-escape-40"),
    "escape-20-best": lambda: popgym_best("popgym-escape-20"),
    "escape-40-best": lambda: popgym_best("popgym-escape-40"),
    "escape-20-compare": lambda: popgym_best_compare("popgym-escape-20"),
    "escape-40-compare": lambda: popgym_best_compare("popgym-escape-40"),
    "escape-paired-seeds": lambda: paired_seeds("escape"),
    "escape-paired-summary": lambda: paired_summary("escape"),
    "explore-paired-seeds": lambda: paired_seeds("explore"),
    "explore-paired-summary": lambda: paired_summary("explore"),
    "explore-rnn": explore_rnn,
    "explore-rnn-counts": explore_rnn_counts,
    "explore-sparsenet-rates": explore_sparsenet_rates,
    "speed-vs-authors": speed_vs_authors,
}


def derived(text: str) -> dict[str, str]:
    """The derived tables a document holds: ``{name: table text}``."""
    return {m.group(1): m.group(2) for m in MARK.finditer(text)}


def rewrite(text: str) -> str:
    """``text`` with every derived table rebuilt."""
    return MARK.sub(lambda m: f"<!-- derived:{m.group(1)} -->\n{TABLES[m.group(1)]()}<!-- /derived -->", text)


def check(documents: Sequence[Path] = DOCUMENTS) -> list[str]:
    """Names of the tables that differ from a fresh derivation (or are unknown), per document."""
    bad = []
    for doc in documents:
        for name, body in derived(doc.read_text()).items():
            if name not in TABLES:
                bad.append(f"{doc.name}: unknown table '{name}'")
            elif TABLES[name]() != body:
                bad.append(f"{doc.name}: table '{name}' differs from the CSVs")
    return bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--check", action="store_true", help="exit 1 if a document's table differs from the CSVs")
    group.add_argument("--write", action="store_true", help="rewrite the documents' tables from the CSVs")
    ap.add_argument("names", nargs="*", help="print only these tables")
    args = ap.parse_args(argv)
    if args.check:
        bad = check()
        print("\n".join(bad) if bad else "every derived table equals the CSVs")
        return 1 if bad else 0
    if args.write:
        for doc in DOCUMENTS:
            if doc.exists():
                doc.write_text(rewrite(doc.read_text()))
        return 0
    for name, fn in TABLES.items():
        if not args.names or name in args.names:
            print(f"<!-- derived:{name} -->\n{fn()}<!-- /derived -->\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
