"""``sggraph bench``: time compiled training steps and report FLOPs and GFLOP/s.

The bandit section times the MNIST-bandit experiment's own training step
(:func:`~sggraph.experiments.mnist_bandit.bandit_update`) in the paper's configuration
(5 arrays × 200 neurons, q = 10, 5 slots, 5 parents, residual, batch 64, 784 pixels,
10 actions): forward, REINFORCE loss, backward, Adam step. sgprop (per-child λ = 0.9, λ = 1
into the action head) adds the authors' generator-first order (the feedback pass, the
generator update, refreshed predictions); sgprop_adaptive also adaptive λ (eq. 18, closed
form), as in the bandit runs; sgprop_adaptive_single_pass the same with the generator update
after the one backward. FLOPs count the matmuls of each variant (:func:`bandit_flops`): the
adaptive sgprop step does 2.96× the matmul work of the backprop step (the feedback pass, three
generator passes and λ's batch means), so ``adaptive_over_backprop``, the measured ratio, is
reported beside ``adaptive_over_backprop_flops``. The machine's fp32 matmul peak is measured in
the same run.

The recurrent section times forward + backward (+ generator update and adaptive λ for
sgprop) of the POPGym experiment's own policy
(:func:`~sggraph.experiments.popgym.build_policy`: the 128-neuron recurrent SparseNet cell
of ``sggraph train popgym``, sized for the labyrinth's 56-wide observations and 4 actions)
over 80 steps for 20 sequences of random observations, with random feedback into the
logits; its adaptive λ estimates from the default 128 samples (the experiment's own
estimate from every valid sample is in the popgym section). The popgym section times whole
POPGym batches (20 labyrinth_escape environments: rollout + update).

JSON keys (later sections are added, never renamed)::

    {"matmul_peak_gflops": ..., "bandit": {"backprop_ms", "sgprop_ms", "backprop_gflops", "sgprop_gflops",
                                          "sgprop_adaptive_ms", "sgprop_adaptive_single_pass_ms",
                                          "adaptive_over_backprop", "adaptive_over_backprop_flops", ...},
     "recurrent": {"backprop_ms", "sgprop_ms", "sgprop_over_backprop"},
     "popgym": {"backprop_s", "sgprop_s", "gru_s", "lstm_s", "*_rollout_s", "num_envs", "sgprop_over_backprop"},
     "compiled": {"backend", "backprop_eager_ms", "backprop_compiled_ms", "backprop_compile_s",
                  "sgprop_adaptive_eager_ms", ...},   # only with --compile
     "traced": {"mlp_module_ms", "mlp_traced_backprop_ms", "mlp_traced_backprop_over_module", ...,
                "cnn_traced_lambda1_over_module", ...}}   # sggraph.trace nets (bench_traced)

The compiled section (``sggraph bench --compile``) times the bandit step eager and with the
policy's forward under ``torch.compile``, interleaved in one run.

``sggraph bench --contention`` (:func:`~sggraph.experiments.contention.run_contention`) times the bandit
step alone, beside one busy process and as two runs side by side, at 1 thread, 2 threads and the
default thread count.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import torch

from ..engine import adam
from .bench_traced import bench_traced, traced_calls
from .timing import median_ms as _median_ms
from .timing import nothing as _nothing

__all__ = ["bench_bandit", "bench_bandit_compiled", "bench_popgym", "bench_recurrent", "matmul_peak_gflops",
           "run_bench"]


def matmul_peak_gflops(size: int = 1024, repeats: int = 20) -> float:
    """Best fp32 ``size × size`` matmul throughput in GFLOP/s."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * size ** 3 / best / 1e9


def bandit_flops(batch: int = 64, width: int = 200, layers: int = 5, q: int = 10, slots: int = 5,
                 n_parents: int = 5, n_actions: int = 10) -> dict[str, float]:
    """Matmul FLOPs of one bandit training step, per variant of :data:`BANDIT_VARIANTS`.

    Per array: ``P = 2 B W d (M + M q)`` for the policy's one ``bmm`` (keys and slot maps, ``d = q ·
    n_parents``) and ``G = 2 B W d M q`` for its slot generator; ``H = 2 B (W q) A`` for the action
    layer. A backward that forms parameter gradients costs ``ΣP + H`` for them plus ``Σ_{l≥2} P_l + H`` for
    the input gradients (the pixels need none); the feedback pass of the generator-first order costs
    the input gradients only; the generator update ``ΣG`` (weight gradients), the refreshed
    predictions ``ΣG``, and the adaptive λ statistics ``2 ΣP`` (the batch means of both cotangents' rows,
    one ``bmm`` each). Elementwise work is not counted.

    >>> f = bandit_flops()
    >>> round(f["backprop"] / 1e9, 3), round(f["sgprop_adaptive"] / f["backprop"], 2)
    (0.993, 2.96)
    """
    d = q * n_parents  # layer 1 reads q·n_parents pixels, later layers n_parents neurons of dim q
    policy = 2 * batch * width * d * (slots + slots * q)
    gen = 2 * batch * width * d * slots * q
    head = 2 * batch * width * q * n_actions
    forward = layers * policy + head
    input_grads = (layers - 1) * policy + head
    backward = forward + input_grads
    backprop = forward + backward
    predictions = layers * gen  # the generators' forward (each further pass over them costs the same)
    generator_first = backprop + predictions + input_grads + 2 * predictions  # + feedback pass, update, refresh
    adaptive = 2 * layers * policy  # adaptive λ's two batch-mean bmm's per array
    return {"backprop": backprop, "sgprop": generator_first, "sgprop_adaptive": generator_first + adaptive,
            "sgprop_adaptive_single_pass": backprop + 2 * predictions + adaptive}


#: The bandit configurations timed by :func:`bench_bandit` (the experiment's own step).
BANDIT_VARIANTS = {
    "backprop": {"method": "backprop"},
    "sgprop": {"method": "sgprop", "lam": "0.9"},  # fixed λ, the authors' generator-first order
    "sgprop_adaptive": {"method": "sgprop"},  # adaptive λ: the MNIST-bandit configuration
    "sgprop_adaptive_single_pass": {"method": "sgprop", "update_order": "single-pass"},
}


def _bandit_step_timer(variant: str, batch: int, seed: int, backend: str | None = None):
    """One training step of the MNIST bandit experiment (:func:`~sggraph.experiments.mnist_bandit.bandit_update`)
    with the settings of ``BANDIT_VARIANTS[variant]`` on random contexts and labels (10 actions).
    ``backend``: the policy's forward wrapped in ``torch.compile(..., backend=backend)``."""
    from .mnist_bandit import BanditConfig, bandit_update, build_policy

    cfg = BanditConfig(seed=seed, batch=batch, classes=tuple(range(10)), **BANDIT_VARIANTS[variant])
    torch.manual_seed(seed)
    _, policy, net, opt, gen_opt = build_policy(cfg, len(cfg.classes))
    if backend is not None:
        policy = torch.compile(policy, backend=backend)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 784)
    labels = torch.randint(0, 10, (batch,))

    def step() -> None:
        bandit_update(cfg, policy, net, opt, gen_opt, x, lambda a: (a == labels).float(), gen)

    return step


#: :func:`bench_bandit`'s default untimed warm-up rounds (each runs every variant of :data:`BANDIT_VARIANTS`
#: once). :func:`run_bench` sizes its progress bar from it.
BANDIT_WARMUP = 5


def _bandit_calls(steps: int, warmup: int = BANDIT_WARMUP) -> int:
    """How many times :func:`bench_bandit` ticks: once per variant of :data:`BANDIT_VARIANTS` per warm-up
    and timed round.

    >>> _bandit_calls(30)  # sggraph bench's default 30 timed steps
    140
    """
    return len(BANDIT_VARIANTS) * (warmup + steps)


def bench_bandit(steps: int = 30, warmup: int = BANDIT_WARMUP, batch: int = 64, seed: int = 0,
                 tick: Callable[[], None] = _nothing) -> dict[str, float]:
    """Median milliseconds per bandit step for backprop and sgprop, with GFLOP/s (``tick`` after each step)."""
    flops = bandit_flops(batch)
    out: dict[str, float] = {}
    steps_of = {m: _bandit_step_timer(m, batch, seed) for m in BANDIT_VARIANTS}
    medians = _median_ms(steps_of, steps, warmup, tick)
    for m in steps_of:
        ms = medians[m]
        out[f"{m}_ms"] = round(ms, 2)
        out[f"{m}_gflops"] = round(flops[m] / (ms / 1e3) / 1e9, 2)
        out[f"{m}_gflop_per_step"] = round(flops[m] / 1e9, 4)
    # the ratio the target is stated in, beside the same ratio of the matmul work alone
    out["adaptive_over_backprop"] = round(medians["sgprop_adaptive"] / medians["backprop"], 3)
    out["adaptive_over_backprop_flops"] = round(flops["sgprop_adaptive"] / flops["backprop"], 3)
    return out


#: :func:`bench_bandit_compiled`'s defaults: timed steps and untimed warm-up steps per variant, and the
#: variants (keys of :data:`BANDIT_VARIANTS`). :func:`run_bench` sizes its progress bar from them.
COMPILED_STEPS = 15
COMPILED_WARMUP = 3
COMPILED_VARIANTS = ("backprop", "sgprop_adaptive")


def _compiled_calls(steps: int = COMPILED_STEPS, warmup: int = COMPILED_WARMUP,
                    variants: Sequence[str] = COMPILED_VARIANTS) -> int:
    """How many times :func:`bench_bandit_compiled` ticks: per variant, the compilation, then an eager and a
    compiled step per warm-up and timed round.

    >>> _compiled_calls()
    74
    """
    return len(variants) * (1 + 2 * (warmup + steps))


def bench_bandit_compiled(steps: int = COMPILED_STEPS, warmup: int = COMPILED_WARMUP, batch: int = 64, seed: int = 0,
                          backend: str = "inductor", variants: tuple[str, ...] = COMPILED_VARIANTS,
                          tick: Callable[[], None] = _nothing) -> dict[str, float]:
    """Median milliseconds per bandit step, eager and with the policy under ``torch.compile``.

    For each of ``variants`` (keys of :data:`BANDIT_VARIANTS`) two copies of the step run
    interleaved: eager, and with the policy's forward compiled with ``backend``. The first
    compiled call (compilation) is timed apart, as ``{variant}_compile_s``. Only the forward is
    compiled: the generators run eagerly (they are excluded from tracing), and the feedback
    pass, generator update and adaptive λ of sgprop run outside the compiled forward.

    Returns ``{variant}_eager_ms``, ``{variant}_compiled_ms``, ``{variant}_compile_s`` per variant
    and ``backend``.
    """
    out: dict = {"backend": backend}
    for variant in variants:
        eager, compiled = (_bandit_step_timer(variant, batch, seed, b) for b in (None, backend))
        t0 = time.perf_counter()
        compiled()
        out[f"{variant}_compile_s"] = round(time.perf_counter() - t0, 1)
        tick()
        for key, ms in _median_ms({"eager": eager, "compiled": compiled}, steps, warmup, tick).items():
            out[f"{variant}_{key}_ms"] = round(ms, 2)
    return out


def _recurrent_step_timer(method: str, steps: int, sequences: int, seed: int):
    """One forward + backward (+ adaptive θ and generator update for sgprop) of the POPGym experiment's
    recurrent SparseNet policy (:func:`~sggraph.experiments.popgym.build_policy` with the experiment's
    defaults, sized for its ``labyrinth_escape`` observations and actions) on ``steps`` random
    observations of ``sequences`` sequences, with random feedback into the action logits."""
    from ..envs.popgym import LabyrinthBatch
    from .popgym import PopgymConfig, build_policy

    cfg = PopgymConfig(model="sparsenet", method=method, seed=seed)
    envs = LabyrinthBatch(cfg.env, 1)
    obs_dim, n_actions = envs.obs_dim, envs.n_actions
    envs.close()
    torch.manual_seed(seed)
    policy = build_policy(cfg, obs_dim, n_actions)
    opt = adam(list(policy.model_parameters()), lr=cfg.lr)
    gen_opt = adam(list(policy.generator_parameters()), lr=cfg.generator_lr)
    obs = torch.randn(steps, sequences, obs_dim)
    feedback = torch.randn(steps, sequences, n_actions)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        (policy(obs) * feedback).mean().backward()
        if policy.synthetic:
            policy.net.adapt_lambda(momentum=cfg.lam_momentum)  # θ from the default 128 samples
        opt.step()
        if policy.synthetic:
            policy.net.update_generators(gen_opt)

    return step


#: :func:`bench_recurrent`'s defaults: timed and untimed warm-up rounds, and the methods it times (each
#: round runs each once). :func:`run_bench` sizes its progress bar from them.
RECURRENT_REPEATS = 5
RECURRENT_WARMUP = 1
RECURRENT_METHODS = ("backprop", "sgprop")


def _recurrent_calls(repeats: int = RECURRENT_REPEATS, warmup: int = RECURRENT_WARMUP) -> int:
    """How many times :func:`bench_recurrent` ticks: once per method per warm-up and timed round.

    >>> _recurrent_calls()
    12
    """
    return len(RECURRENT_METHODS) * (warmup + repeats)


def bench_recurrent(repeats: int = RECURRENT_REPEATS, warmup: int = RECURRENT_WARMUP, steps: int = 80,
                    sequences: int = 20, seed: int = 0, tick: Callable[[], None] = _nothing) -> dict[str, float]:
    """Median milliseconds for forward + backward (+ generator update and adaptive λ for sgprop)
    of the POPGym experiment's recurrent SparseNet policy (128 neurons, q = 6, 6 slots, 6 parents,
    16 input neurons fed a 128-wide embedding of the 56-wide labyrinth observation, a 6-slot actor
    over 4 actions) over ``steps`` steps for ``sequences`` sequences."""
    timers = {m: _recurrent_step_timer(m, steps, sequences, seed) for m in RECURRENT_METHODS}
    out = {f"{m}_ms": round(ms, 1) for m, ms in _median_ms(timers, repeats, warmup, tick).items()}
    out["sgprop_over_backprop"] = round(out["sgprop_ms"] / out["backprop_ms"], 3)
    return out


#: :func:`bench_popgym`'s defaults: timed and untimed warm-up batches per configuration, and the
#: configurations (name: model and method; each round runs each once). :func:`run_bench` sizes its progress
#: bar from them. 15 timed batches (about 20 s in all): with 5 the median batch moved the sgprop/backprop
#: ratio by ± 0.07 between runs of the same code, the rollout alone varying by up to 0.03 s.
POPGYM_REPEATS = 15
POPGYM_WARMUP = 1
POPGYM_VARIANTS = {"backprop": ("sparsenet", "backprop"), "sgprop": ("sparsenet", "sgprop"),
                   "gru": ("gru", "backprop"), "lstm": ("lstm", "backprop")}


def _popgym_calls(repeats: int = POPGYM_REPEATS, warmup: int = POPGYM_WARMUP) -> int:
    """How many times :func:`bench_popgym` ticks: once per configuration per warm-up and timed batch.

    >>> _popgym_calls()
    64
    """
    return len(POPGYM_VARIANTS) * (warmup + repeats)


def bench_popgym(repeats: int = POPGYM_REPEATS, warmup: int = POPGYM_WARMUP, num_envs: int = 20, seed: int = 0,
                 tick: Callable[[], None] = _nothing) -> dict[str, float]:
    """Median seconds per POPGym batch (``labyrinth_escape``, ``num_envs`` environments, episode
    length 80): the rollout through the real environments plus one update, exactly as in
    ``sggraph train popgym`` (its defaults: the authors' settings, adaptive θ from every valid
    sample), for SparseNet backprop, SparseNet sgprop (adaptive θ, schedule, generator update),
    GRU and LSTM, with the rollout's share of each batch and ``sgprop_over_backprop``."""
    from ..envs.popgym import LabyrinthBatch
    from .popgym import PopgymConfig, build_policy, train_batch

    runs = {}
    for key, (model, method) in POPGYM_VARIANTS.items():
        cfg = PopgymConfig(model=model, method=method, num_envs=num_envs, seed=seed)
        envs = LabyrinthBatch(cfg.env, cfg.num_envs)
        torch.manual_seed(seed)
        policy = build_policy(cfg, envs.obs_dim, envs.n_actions)
        opt = adam(list(policy.model_parameters()), lr=cfg.lr)
        gen = list(policy.generator_parameters())
        gen_opt = adam(gen, lr=cfg.generator_lr) if method == "sgprop" else None
        runs[key] = (cfg, envs, policy, opt, gen_opt, torch.Generator().manual_seed(seed))
    times: dict[str, list[float]] = {k: [] for k in runs}
    rollout: dict[str, list[float]] = {k: [] for k in runs}
    try:
        for i in range(warmup + repeats):
            for key, (cfg, envs, policy, opt, gen_opt, sampler) in runs.items():
                t0 = time.perf_counter()
                row = train_batch(cfg, envs, policy, opt, gen_opt, i, sampler)
                if i >= warmup:
                    times[key].append(time.perf_counter() - t0)
                    rollout[key].append(row["rollout_seconds"])
                tick()
    finally:
        for run in runs.values():
            run[1].close()  # the environments
    out = {f"{k}_s": round(statistics.median(v), 3) for k, v in times.items()}
    out.update({f"{k}_rollout_s": round(statistics.median(v), 3) for k, v in rollout.items()})
    out["num_envs"] = num_envs
    out["sgprop_over_backprop"] = round(out["sgprop_s"] / out["backprop_s"], 3)
    return out


def run_bench(steps: int = 30, progress: bool = False, compile_backend: str | None = None) -> dict:
    """Every section of the benchmark (``progress``: a progress bar on stderr over every timed call).

    ``compile_backend``: also the ``compiled`` section, :func:`bench_bandit_compiled` with that
    ``torch.compile`` backend (e.g. ``"inductor"``; its compilation takes about a minute per variant).
    """
    from ..runtime.progress import Progress

    total = _bandit_calls(steps) + _recurrent_calls() + _popgym_calls() + traced_calls(steps)
    if compile_backend is not None:
        total += _compiled_calls()
    with Progress(total, "bench", unit="call", quiet=not progress) as bar:
        peak = round(matmul_peak_gflops(), 1)
        bar.set_metrics({"section": "bandit"})
        bandit = bench_bandit(steps=steps, tick=bar.update)
        bar.set_metrics({"section": "recurrent"})
        recurrent = bench_recurrent(tick=bar.update)
        bar.set_metrics({"section": "popgym"})
        popgym = bench_popgym(tick=bar.update)
        bar.set_metrics({"section": "traced"})
        traced = bench_traced(steps=steps, tick=bar.update)
        result = {"threads": torch.get_num_threads(), "matmul_peak_gflops": peak, "bandit": bandit,
                  "recurrent": recurrent, "popgym": popgym, "traced": traced}
        if compile_backend is not None:
            bar.set_metrics({"section": f"compiled ({compile_backend})"})
            result["compiled"] = bench_bandit_compiled(backend=compile_backend, tick=bar.update)
    return result


# ----------------------------------------------------------------------------- sharing the machine
# ``sggraph bench --contention``: the bandit step alone, beside one busy process, and two runs side by
# side. Every measurement is a fresh ``sggraph bench --contention-worker`` process, started exactly as
# ``sggraph train`` would be, so whatever the entry point sets up before torch loads applies to it.

#: The bandit variants the contention bench times: the bandit runs' two methods.
