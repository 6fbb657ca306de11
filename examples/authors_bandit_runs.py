"""The authors' MNIST-bandit code and this project's engine, run for run on the same digits.

For each seed and method, one run of the authors' ``exp-mnist-bandit/main.py`` (unmodified, read
from the folder given; the arguments of their ``run_sweeps.sh`` ``run_one`` at the base settings,
on the CPU) and one run of ``sggraph train mnist-bandit`` with the same method, seed, classes
(0, 1, 3–9), p_flip (0.4), steps (1,500), batch (64) and learning rates (Table 1).

Methods (the authors' variant names, then ours)::

    sparse_backprop             --method backprop
    sparse_sgprop_adaptive      --method sgprop --lambda adaptive
    sparse_sgprop_fixed_theta   --method sgprop --lambda 0.9
    mlp                         --method mlp

Same digits: the authors' ``torchvision`` loader is replaced by one serving the embedded digits
split as our ``MnistBandit`` splits them (the digits of the nine classes in file order, the last
2,000 held out), so both programs train on the same 7,009 images and evaluate on the same 2,000.

Same measurement: the authors evaluate the *sampled* reward of one action per image on 4,000 fresh
held-out draws; ours evaluates the *expected* reward ``mean π(label | x)`` on 4,000 held-out draws
fixed per seed. Their evaluation function is wrapped (their files stay unmodified): it draws and
samples exactly as theirs (so the run's random stream, and their CSV, are what an unwrapped run
writes) and also records the expected reward of the same draws. The table compares expected
rewards: ``final`` is the last evaluation (step 1,500), ``AUC`` the mean height of the evaluation
curve (trapezoid rule over samples, divided by its span: ``sggraph.sweeps.figures.curve_auc``).

Each run writes a compact record like a sweep's run (``config.json``, ``metrics.csv`` with
``step, samples, eval_reward`` — and ``sampled_eval_reward`` for the authors' runs — and
``summary.json``), into ``OUT/code=authors,method=M,seed=S`` and ``OUT/code=ours,method=M,seed=S``.
Finished runs are skipped; a killed run is started again.

    python examples/authors_bandit_runs.py run PATH/TO/sgprop/exp-mnist-bandit --out ~/sggraph-runs/bandit-authors \\
        [--seeds 0 1 2 3 4] [--methods ...] [--workers 2]
    python examples/authors_bandit_runs.py report ~/sggraph-runs/bandit-authors --out examples/results/bandit-authors
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed_vs_authors import CLASSES, check_authors_dir, install_embedded_mnist, thread_env  # noqa: E402

from sggraph.sweeps.stats import t_quantile  # noqa: E402

#: authors' variant -> (our train flags, their policy lr, their extra flags); run_sweeps.sh's run_one.
METHODS = {
    "sparse_backprop": (["--method", "backprop"], "0.001",
                        ["--policy_model", "sparse", "--method", "backprop", "--theta_momentum", "1.0", "--residual"]),
    "sparse_sgprop_adaptive": (["--method", "sgprop", "--lambda", "adaptive"], "0.005",
                               ["--policy_model", "sparse", "--method", "sgprop", "--theta_momentum", "0.9",
                                "--residual", "--theta", *["0.9"] * 5]),
    "sparse_sgprop_fixed_theta": (["--method", "sgprop", "--lambda", "0.9"], "0.005",
                                  ["--policy_model", "sparse", "--method", "sgprop", "--theta_momentum", "1.0",
                                   "--residual", "--theta", *["0.9"] * 5]),
    "mlp": (["--method", "mlp"], "2e-5",
            ["--policy_model", "mlp", "--method", "backprop", "--theta_momentum", "1.0", "--no_residual",
             "--mlp_width", "745"]),
}
CHILD_FLAG = "--authors-child"


def authors_args(method: str, seed: int, steps: int, results_dir: Path) -> list[str]:
    """The authors' ``main.py`` arguments of one run (``run_sweeps.sh`` base settings, CPU)."""
    _, lr, flags = METHODS[method]
    return [*flags, "--method_name", method, "--seed", str(seed), "--device", "cpu",
            "--results_dir", str(results_dir), "--classes", *CLASSES, "--p_flip", "0.4", "--n_dim", "10",
            "--num_layers", "5", "--width", "200", "--num_slots", "5", "--num_parents", "5",
            "--train_steps", str(steps), "--sg_steps_per_policy_step", "1", "--batch_size", "64",
            "--eval_batch_size", "4000", "--policy_lr", lr, "--sg_lr", "0.005", "--policy_weight_decay", "0.0",
            "--sg_weight_decay", "0.0", "--reuse_policy_batch_for_sg", "--no_update_shared_keys_in_sg_phase"]


# ----------------------------------------------------------------------------- the authors' process


def serve_embedded_digits() -> None:
    """``torchvision.datasets.MNIST`` serving the embedded digits, split as ``MnistBandit`` splits them:
    the nine classes' digits in file order, the last 2,000 as the test set."""
    install_embedded_mnist(CLASSES)


def run_authors_child(authors_dir: str, record: str, main_args: list[str]) -> None:
    """Run their ``main.py`` as ``__main__``; each evaluation also appends its expected reward to ``record``."""
    import runpy

    import torch

    torch.set_num_threads(1)
    serve_embedded_digits()
    sys.path.insert(0, authors_dir)
    import trainers  # the authors' module

    def evaluate_policy(policy, env, eval_batch_size):
        x0, labels = env.sample_context(batch_size=eval_batch_size, split="test")  # their draws, in their order
        action, logits, _ = policy.sample_action(x0)
        sampled = float(env.reward(labels, action, add_noise=False).mean().item())
        with torch.no_grad():
            expected = float(torch.softmax(logits, -1).gather(1, labels.unsqueeze(1)).mean())
        with open(record, "a") as fh:
            fh.write(f"{expected!r},{sampled!r}\n")
        return sampled

    trainers.evaluate_policy = evaluate_policy  # main.py imports it by name from trainers
    sys.argv = [str(Path(authors_dir) / "main.py"), *main_args]
    runpy.run_path(sys.argv[0], run_name="__main__")


# ----------------------------------------------------------------------------- runs


def run_name(code: str, method: str, seed: int) -> str:
    return f"code={code},method={method},seed={seed}"


def evaluation_steps(steps: int) -> list[int]:
    """Both programs' schedule: 20 evaluations spaced evenly from step 1 to ``steps``."""
    return sorted({int(v) for v in np.linspace(1, steps, num=20, dtype=int)})


def run_authors(authors_dir: Path, out: Path, method: str, seed: int, steps: int) -> None:
    run = out / run_name("authors", method, seed)
    run.mkdir(parents=True, exist_ok=True)
    record = run / "evaluations.csv"
    record.unlink(missing_ok=True)
    args = authors_args(method, seed, steps, run / "authors")
    t0 = time.perf_counter()
    with open(run / "stdout.log", "w") as log:
        subprocess.run([sys.executable, __file__, CHILD_FLAG, str(authors_dir), str(record), "--", *args],
                       env=thread_env(1), stdout=log, stderr=subprocess.STDOUT, check=True)
    seconds = time.perf_counter() - t0
    values = [tuple(float(v) for v in line.split(",")) for line in record.read_text().splitlines()]
    steps_at = evaluation_steps(steps)
    if len(values) != len(steps_at):
        raise RuntimeError(f"{run}: {len(values)} evaluations recorded, {len(steps_at)} expected")
    rows = ["step,samples,eval_reward,sampled_eval_reward"]
    rows += [f"{s},{s * 64},{e!r},{p!r}" for s, (e, p) in zip(steps_at, values)]
    (run / "config.json").write_text(json.dumps({"code": "authors", "method": method, "seed": seed, "steps": steps,
                                                 "authors_dir": str(authors_dir), "main_args": args}, indent=1))
    (run / "metrics.csv").write_text("\n".join(rows) + "\n")
    (run / "summary.json").write_text(json.dumps({"final_eval_reward": values[-1][0], "seconds": seconds}))


def run_ours(out: Path, method: str, seed: int, steps: int) -> None:
    run = out / run_name("ours", method, seed)
    flags = METHODS[method][0]
    cmd = [sys.executable, "-m", "sggraph", "train", "mnist-bandit", *flags, "--seed", str(seed), "--steps",
           str(steps), "--threads", "1", "--quiet", "--out", str(run)]
    if run.exists():
        cmd.append("--resume" if (run / "checkpoint.pt").exists() else "--overwrite")
    subprocess.run(cmd, env=thread_env(1), check=True, stdout=subprocess.DEVNULL)


def run_all(args: argparse.Namespace) -> int:
    check_authors_dir(args.authors_dir)
    jobs = [(code, m, s) for s in args.seeds for m in args.methods for code in ("authors", "ours")]
    todo = [j for j in jobs if not (args.out / run_name(*j) / "summary.json").exists()]
    print(f"{len(jobs)} runs, {len(jobs) - len(todo)} finished, {len(todo)} to run, {args.workers} at once", flush=True)

    def one(job):
        code, method, seed = job
        t0 = time.perf_counter()
        if code == "authors":
            run_authors(args.authors_dir.resolve(), args.out, method, seed, args.steps)
        else:
            run_ours(args.out, method, seed, args.steps)
        print(f"done {run_name(*job)} in {time.perf_counter() - t0:.0f} s", flush=True)

    with ThreadPoolExecutor(args.workers) as pool:
        list(pool.map(one, todo))
    return 0


# ----------------------------------------------------------------------------- report


def read_curve(run: Path) -> tuple[np.ndarray, np.ndarray]:
    rows = np.genfromtxt(run / "metrics.csv", delimiter=",", names=True)
    return rows["samples"].astype(float), rows["eval_reward"].astype(float)


def welch(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float, float]:
    """``mean(a) - mean(b)``, its standard error, and its Welch 95 % t-interval (low, high).

    >>> d, se, lo, hi = welch(np.array([1.0, 2.0, 3.0]), np.array([0.0, 1.0, 2.0]))
    >>> d, round(se, 4), round(lo, 3), round(hi, 3)
    (1.0, 0.8165, -1.267, 3.267)
    """
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = float(np.sqrt(va + vb))
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if va + vb > 0 else len(a) + len(b) - 2
    diff = float(a.mean() - b.mean())
    t = t_quantile(0.975, df)
    return diff, se, diff - t * se, diff + t * se


def report(args: argparse.Namespace) -> int:
    """``comparison.csv`` (per method: both codes' final and AUC, mean ± SEM over seeds, the difference
    ours − authors' with its Welch 95 % interval), ``per_run.csv`` and ``curves.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from sggraph.sweeps.figures import curve_auc

    args.out.mkdir(parents=True, exist_ok=True)
    per_run, table = [], []
    fig, axes = plt.subplots(1, len(METHODS), figsize=(4.2 * len(METHODS), 3.4), sharey=True)
    for ax, method in zip(axes, METHODS):
        stats = {}
        for code, colour in (("ours", "tab:blue"), ("authors", "tab:orange")):
            runs = sorted(p for p in args.runs.glob(f"code={code},method={method},seed=*") if (p / "summary.json").exists())
            if not runs:
                continue
            curves = [read_curve(r) for r in runs]
            x = curves[0][0]
            ys = np.stack([y for _, y in curves])
            final, auc = ys[:, -1], np.array([curve_auc(x, y) for y in ys])
            for r, f, a in zip(runs, final, auc):
                per_run.append((code, method, r.name.rsplit("=", 1)[1], float(f), float(a)))
            stats[code] = (final, auc)
            mean, sem = ys.mean(0), ys.std(0, ddof=1) / np.sqrt(len(ys)) if len(ys) > 1 else np.zeros(len(x))
            ax.plot(x, mean, color=colour, label=f"{code} (n={len(ys)})")
            ax.fill_between(x, mean - sem, mean + sem, color=colour, alpha=0.25)
        ax.set_title(method)
        ax.set_xlabel("samples")
        if stats:
            ax.legend()
        if len(stats) == 2 and min(len(stats[c][0]) for c in stats) >= 2:
            row = [method, len(stats["ours"][0]), len(stats["authors"][0])]
            for k in (0, 1):
                o, a = stats["ours"][k], stats["authors"][k]
                row += [o.mean(), o.std(ddof=1) / np.sqrt(len(o)), a.mean(), a.std(ddof=1) / np.sqrt(len(a)),
                        *welch(o, a)]
            table.append(row)
    axes[0].set_ylabel("expected reward (held out)")
    fig.tight_layout()
    fig.savefig(args.out / "curves.png", dpi=120)
    head = ["method", "n_ours", "n_authors"]
    for m in ("final", "auc"):
        head += [f"{m}_ours", f"{m}_ours_sem", f"{m}_authors", f"{m}_authors_sem", f"{m}_diff", f"{m}_diff_se",
                 f"{m}_diff_lo", f"{m}_diff_hi"]
    with open(args.out / "comparison.csv", "w") as fh:
        fh.write(",".join(head) + "\n")
        for row in table:
            fh.write(",".join(str(v) if isinstance(v, (str, int)) else repr(float(v)) for v in row) + "\n")
            print(f"{row[0]:26s} final ours {row[3]:.3f}±{row[4]:.3f} authors {row[5]:.3f}±{row[6]:.3f} "
                  f"diff {row[7]:+.3f} [{row[9]:+.3f}, {row[10]:+.3f}]   AUC diff {row[15]:+.3f} "
                  f"[{row[17]:+.3f}, {row[18]:+.3f}]")
    with open(args.out / "per_run.csv", "w") as fh:
        fh.write("code,method,seed,final,auc\n")
        fh.writelines(f"{c},{m},{s},{f!r},{a!r}\n" for c, m, s, f, a in per_run)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [CHILD_FLAG]:
        _, authors_dir, record, sep, *main_args = argv
        run_authors_child(authors_dir, record, main_args)
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the missing runs", allow_abbrev=False)
    r.add_argument("authors_dir", type=Path, help="the authors' exp-mnist-bandit folder")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    r.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    r.add_argument("--steps", type=int, default=1500)
    r.add_argument("--workers", type=int, default=2)
    p = sub.add_parser("report", help="table and figure of the finished runs", allow_abbrev=False)
    p.add_argument("runs", type=Path)
    p.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    return run_all(args) if args.command == "run" else report(args)


if __name__ == "__main__":
    sys.exit(main())
