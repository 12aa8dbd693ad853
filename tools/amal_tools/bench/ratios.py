"""Performance ratios, measured side by side in one run.

:func:`measure_ratios` measures, in one call and never from stored numbers:

1. **Gate overhead** — one training step of the paper's world model, gated vs plain, in
   alternating fresh worker processes (:func:`amal_tools.bench.gate_overhead.measure_gate_overhead`;
   the plain workers never import ``amal_verified``).  Ratio: gated / plain median step time
   (median of the pairwise ratios; the project's target is ≤ 1.10).
2. **Trainer throughput against SB3 SAC and PPO** — the AMAL trainer
   (:class:`amal_verified.run.trainer.Trainer` with :func:`bench_train_config`), SB3 ``SAC`` and SB3
   ``PPO`` on the same environment (Pendulum-v1 quick, HalfCheetah-v5 full) for the same number
   of primary environment steps (quick: 512, full: 10 240), each on one torch thread, one after
   another in this process (alternating over ``repeats``).  Ratio: trainer env steps/s ÷ baseline
   env steps/s.  The budget is a multiple of PPO's ``n_steps``, because PPO always completes a
   rollout.  SB3 uses its defaults except SAC's ``learning_starts``, matched to the trainer's, and,
   in quick mode, PPO's ``n_steps`` (512 instead of 2048: one rollout in the budget).  What each
   does per environment step differs a lot (see :data:`TRAINER_WORK` and the row notes).
3. **Information-gain estimator against a loop implementation** —
   :func:`amal_verified.world_model.information_gain.gaussian_ensemble_eig` against
   :func:`loop_gaussian_ensemble_eig`, the same estimator written as its formula reads (Python
   loops over outer samples and over members), on the same inputs and the same generator state,
   at the trainer's sizes: K = 20 members, M = 100 outer samples (M/K = 5 per member), a chunk
   of 256 states (``model_rollouts._EIG_CHUNK``), D = obs_dim + 1.  The two must agree within
   :data:`EIG_TOLERANCE`; the report states the largest difference.  Ratio: loop time ÷ library
   time (the library's speed-up).
4. **CEM population evaluation with gymnasium vector envs against sequential** —
   :func:`amal_tools.bench.population_eval.evaluate_population` in its three modes on the
   same population (P = 4 on Pendulum-v1 quick, P = 20 on HalfCheetah-v5 full).  Ratio:
   sequential time ÷ vector time.  The three results must be bit-identical; the report says
   whether they were.

Timing: ``time.perf_counter`` wall clock around each measured call, medians over repeats, with
imports, model construction and input generation outside the timed region — except that a
population evaluation is timed as a whole call (environment construction and, for ``async``,
worker start-up included: CEM pays them once per generation).  Nothing here asserts a speed.
Quick mode is sized for seconds (one gate pair, single repeats): its ratios are a smoke test of the
measurement, full mode's are the measurement (``benchmarks/README.md`` gives both modes' costs).
The global torch thread count is set to 1 for the measurement and restored afterwards, and so are
the global ``random``, ``numpy`` and ``torch`` generators (SB3 re-seeds them).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import torch

from amal_tools.bench.gate_overhead import TARGET_RATIO, measure_gate_overhead
from amal_tools.bench.population_eval import evaluate_population
from amal_tools.bench.tasks import Mode
from amal_verified.agents.cem import FlatMLPPolicy
from amal_verified.common.runtime_checks import checked
from amal_verified.envs import make_env, task_info
from amal_verified.run.config import TrainConfig
from amal_verified.world_model.information_gain import gaussian_ensemble_eig

__all__ = [
    "EIG_TOLERANCE",
    "TRAINER_WORK",
    "RatioReport",
    "RatioRow",
    "RatioSizes",
    "bench_train_config",
    "loop_gaussian_ensemble_eig",
    "measure_ratios",
    "ratio_sizes",
]

EIG_TOLERANCE: Final = {"float32": (1e-4, 1e-4), "float64": (1e-10, 1e-10)}
"""(rtol, atol) in nats within which the loop and library estimators must agree, per dtype."""

TRAINER_WORK: Final = (
    "per primary env step the trainer also steps {aux} auxiliary agents in perturbed envs, makes one SAC "
    "update (batch {batch}, policy width {hidden}), and every {wm_every} steps trains a {k}-member Gaussian "
    "world-model ensemble at {scale}x the paper's width ({wm_updates} gated updates, ledger digests; "
    "Table 1: 20 members at 1x, a different workload), scores new transitions with the "
    "information gain (M = {m}) and, every {cem_every} steps, runs a CEM generation (population {pop})"
)
"""Template of the trainer row's note (filled from the configuration that was run)."""

_HALF_LOG_2PI: Final = 0.5 * math.log(2.0 * math.pi)
_PPO_N_STEPS: Final = 2048
_QUICK_TRAIN_STEPS: Final = 512  # quick mode's throughput rows: one PPO rollout, two world-model rounds


@dataclasses.dataclass(frozen=True)
class RatioSizes:
    """Sizes of one :func:`measure_ratios` run."""

    env_id: str
    gate_pairs: int
    gate_warmup: int
    gate_steps: int
    train_steps: int
    train_repeats: int
    eig_members: int
    eig_outer: int
    eig_states: int
    eig_repeats: int
    population: int
    population_episodes: int
    population_repeats: int
    learning_starts: int = 500
    ppo_n_steps: int = _PPO_N_STEPS
    train_mode: Mode = "quick"

    def __post_init__(self) -> None:
        small = [
            f.name
            for f in dataclasses.fields(self)
            if f.type == "int" and f.name != "gate_warmup" and getattr(self, f.name) < 1
        ]
        if small:
            raise ValueError(f"RatioSizes fields must be >= 1: {', '.join(small)}")
        if self.gate_warmup < 0:
            raise ValueError(f"gate_warmup must be >= 0, got {self.gate_warmup}")
        if self.train_steps % self.ppo_n_steps:
            raise ValueError(
                f"train_steps ({self.train_steps}) must be a multiple of ppo_n_steps ({self.ppo_n_steps}): "
                "PPO always completes a rollout"
            )
        if self.eig_outer < self.eig_members:
            raise ValueError(f"eig_outer ({self.eig_outer}) must be >= eig_members ({self.eig_members})")


@checked
def ratio_sizes(*, quick: bool) -> RatioSizes:
    """The sizes :func:`measure_ratios` uses in quick or full mode."""
    if quick:
        return RatioSizes(
            env_id="Pendulum-v1",
            gate_pairs=1,
            gate_warmup=1,
            gate_steps=3,
            train_steps=_QUICK_TRAIN_STEPS,
            train_repeats=1,
            eig_members=20,
            eig_outer=100,
            eig_states=256,
            eig_repeats=3,
            population=4,
            population_episodes=1,
            population_repeats=1,
            learning_starts=_QUICK_TRAIN_STEPS // 4,
            ppo_n_steps=_QUICK_TRAIN_STEPS,
        )
    return RatioSizes(
        env_id="HalfCheetah-v5",
        gate_pairs=3,
        gate_warmup=5,
        gate_steps=30,
        train_steps=5 * _PPO_N_STEPS,
        train_repeats=2,
        eig_members=20,
        eig_outer=100,
        eig_states=256,
        eig_repeats=7,
        population=20,
        population_episodes=1,
        population_repeats=3,
        train_mode="full",
    )


@dataclasses.dataclass(frozen=True)
class RatioRow:
    """One measured ratio: what was compared, both sides' numbers, the ratio and its meaning.

    ``seconds``: wall time of the measurement that produced the row (rows measured together,
    such as SAC and PPO against the trainer, share it).
    """

    measurement: str
    baseline: str
    ours: str
    ratio: float
    ratio_meaning: str
    notes: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class RatioReport:
    """All ratios of one :func:`measure_ratios` call, with the machine and versions they were measured on."""

    quick: bool
    sizes: RatioSizes
    rows: tuple[RatioRow, ...]
    versions: tuple[tuple[str, str], ...]
    torch_threads: int
    machine: str
    cpu_count: int
    load_average: tuple[float, float, float]
    started_utc: str
    seconds: float

    def to_json(self) -> str:
        """The report as an indented JSON object."""
        return json.dumps(
            {
                "quick": self.quick,
                "sizes": dataclasses.asdict(self.sizes),
                "rows": [row.to_dict() for row in self.rows],
                "versions": dict(self.versions),
                "torch_threads": self.torch_threads,
                "machine": self.machine,
                "cpu_count": self.cpu_count,
                "load_average": list(self.load_average),
                "started_utc": self.started_utc,
                "seconds": self.seconds,
            },
            indent=2,
        )

    def to_markdown(self) -> str:
        """A markdown table (measurement, baseline, ours, ratio, context) and the setting of the run."""

        def cell(text: str) -> str:
            return text.replace("|", "\\|").replace("\n", " ")

        lines = [
            f"## Performance ratios ({'quick' if self.quick else 'full'} mode, {self.sizes.env_id})",
            "",
            "| measurement | baseline | ours | ratio | context |",
            "|---|---|---|---|---|",
        ]
        for row in self.rows:
            lines.append(
                f"| {cell(row.measurement)} | {cell(row.baseline)} | {cell(row.ours)} | "
                f"**{row.ratio:.3g}** ({cell(row.ratio_meaning)}) | {cell(row.notes)} |"
            )
        versions = ", ".join(f"{name} {version}" for name, version in self.versions)
        load = ", ".join(f"{x:.2f}" for x in self.load_average)
        lines += [
            "",
            f"Measured {self.started_utc} in {self.seconds:.0f} s on {self.machine}, {self.cpu_count} CPUs "
            f"(load average before: {load}); torch threads: {self.torch_threads}. Versions: {versions}.",
            "Every ratio was measured in this run; wall-clock timings on a shared machine are noisy.",
        ]
        return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- information gain


@checked
def loop_gaussian_ensemble_eig(
    means: torch.Tensor,
    stds: torch.Tensor,
    *,
    num_samples: int,
    generator: torch.Generator,
    estimator: Literal["pce", "nmc"] = "pce",
) -> torch.Tensor:
    """:func:`~amal_verified.world_model.information_gain.gaussian_ensemble_eig` written as its formula reads.

    Same arguments, same draws (one ``torch.randn((num_samples, K, B, D))`` from ``generator``),
    same result up to floating-point summation order (:data:`EIG_TOLERANCE`)::

        for n in samples:  for j in members:   o = means[j] + stds[j] · noise[n, j]
            for k in members:  ℓ_k = Σ_d log N(o_d; means[k]_d, stds[k]_d)
            gain += ℓ_j − log (1/|S|) Σ_{k ∈ S} exp ℓ_k     (S = all k for PCE, k ≠ j for NMC)
        return gain / (num_samples · K)

    Python loops over outer samples and members; each loop body works on the whole batch of
    states at once (a loop over states as well would take minutes at the trainer's sizes).  The
    log-mean-exp is written out (max, exp, sum, log).  Only input checks the benchmark needs.
    """
    if means.dim() != 3 or stds.shape != means.shape:
        raise ValueError(f"means and stds must both have shape (K, B, D), got {means.shape} and {stds.shape}")
    k_members = means.shape[0]
    if estimator == "nmc" and k_members < 2:
        raise ValueError("estimator='nmc' needs K >= 2 members")
    noise = torch.randn((num_samples, *means.shape), generator=generator, dtype=means.dtype)
    gain = torch.zeros(means.shape[1], dtype=means.dtype)
    for n in range(num_samples):
        for j in range(k_members):
            obs = means[j] + stds[j] * noise[n, j]
            log_liks = []
            for k in range(k_members):
                z = (obs - means[k]) / stds[k]
                log_liks.append((-0.5 * z * z - torch.log(stds[k]) - _HALF_LOG_2PI).sum(dim=-1))
            terms = log_liks if estimator == "pce" else [ll for k, ll in enumerate(log_liks) if k != j]
            peak = terms[0]
            for ll in terms[1:]:
                peak = torch.maximum(peak, ll)
            total = torch.zeros_like(peak)
            for ll in terms:
                total = total + torch.exp(ll - peak)
            log_marginal = peak + torch.log(total) - math.log(len(terms))
            gain = gain + (log_liks[j] - log_marginal)
    return gain / (num_samples * k_members)


def _eig_inputs(
    members: int, states: int, dim: int, dtype: torch.dtype, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centre = torch.randn((1, states, dim), generator=g, dtype=dtype)
    means = centre + 0.3 * torch.randn((members, states, dim), generator=g, dtype=dtype)
    stds = torch.exp(-1.0 + 0.3 * torch.randn((members, states, dim), generator=g, dtype=dtype))
    return means, stds


def _time_once(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _eig_row(members: int, outer: int, states: int, dim: int, repeats: int) -> RatioRow:
    started = time.perf_counter()
    per_member = max(1, outer // members)
    max_diff: dict[str, float] = {}
    for dtype in (torch.float32, torch.float64):
        means, stds = _eig_inputs(members, states, dim, dtype, seed=1)
        for estimator in ("pce", "nmc"):
            lib = gaussian_ensemble_eig(
                means,
                stds,
                num_samples=per_member,
                generator=torch.Generator().manual_seed(2),
                estimator=estimator,
            )
            ref = loop_gaussian_ensemble_eig(
                means,
                stds,
                num_samples=per_member,
                generator=torch.Generator().manual_seed(2),
                estimator=estimator,
            )
            rtol, atol = EIG_TOLERANCE[str(dtype).removeprefix("torch.")]
            if not torch.allclose(lib, ref, rtol=rtol, atol=atol):
                raise AssertionError(
                    f"loop and library information gain disagree ({dtype}, {estimator}): "
                    f"max |Δ| = {float((lib - ref).abs().max()):.3e} > atol {atol} + rtol {rtol}·|x|"
                )
            key = f"{estimator}/{str(dtype).removeprefix('torch.')}"
            max_diff[key] = float((lib.detach() - ref).abs().max())

    means, stds = _eig_inputs(members, states, dim, torch.float32, seed=1)

    def library() -> object:
        with torch.no_grad():
            return gaussian_ensemble_eig(
                means, stds, num_samples=per_member, generator=torch.Generator().manual_seed(2)
            )

    def loop() -> object:
        with torch.no_grad():
            return loop_gaussian_ensemble_eig(
                means, stds, num_samples=per_member, generator=torch.Generator().manual_seed(2)
            )

    library()  # warm-up (allocator, first-call dispatch)
    lib_times: list[float] = []
    loop_times: list[float] = []
    for _ in range(repeats):  # alternating, so that drifting machine load hits both sides
        lib_times.append(_time_once(library))
        loop_times.append(_time_once(loop))
    t_lib, t_loop = statistics.median(lib_times), statistics.median(loop_times)
    diffs = ", ".join(f"{k} {v:.1e}" for k, v in max_diff.items())
    return RatioRow(
        measurement="information-gain estimator (gaussian_ensemble_eig, PCE)",
        baseline=f"Python-loop implementation: {t_loop * 1e3:.1f} ms/call",
        ours=f"library (vectorised): {t_lib * 1e3:.1f} ms/call",
        ratio=t_loop / t_lib,
        ratio_meaning="loop time / library time",
        notes=(
            f"K = {members} members, M = {per_member * members} outer samples ({per_member}/member), "
            f"{states} states × D = {dim}, float32, no grad, median of {repeats}; the loop runs over outer "
            f"samples and members ({per_member * members * members} bodies), vectorised over states. "
            f"Agreement on the same inputs and generator, max |Δ| nats: {diffs}"
        ),
        seconds=time.perf_counter() - started,
    )


# ---------------------------------------------------------------------------- trainer vs SB3


@checked
def bench_train_config(
    env_id: str, total_steps: int, *, seed: int = 0, learning_starts: int = 500, mode: Mode = "quick"
) -> TrainConfig:
    """The trainer configuration the throughput ratio runs: the benchmark's own AMAL configuration
    of ``mode`` (:func:`amal_tools.bench.methods.amal_config`), one thread, with
    ``learning_starts`` steps of uniformly random actions before any learning (``random_steps``
    too), matched by SB3's ``learning_starts``.  One evaluation episode at the end, no intermediate
    checkpoint (the final one is always written).
    """
    from amal_tools.bench.methods import amal_config

    config = amal_config(env_id, method="amal", seed=seed, budget=total_steps, mode=mode)
    return dataclasses.replace(
        config, learning_starts=learning_starts, random_steps=learning_starts, log_every=total_steps
    )


def _time_trainer(config: TrainConfig, scratch: Path, index: int) -> float:
    from amal_verified.run.trainer import Trainer

    trainer = Trainer.create(config, scratch / f"trainer-{index}")
    start = time.perf_counter()
    trainer.run()
    return time.perf_counter() - start


def _time_sb3(
    algo: Literal["SAC", "PPO"], env_id: str, steps: int, learning_starts: int, n_steps: int, seed: int
) -> float:
    from stable_baselines3 import PPO, SAC

    from amal_tools.bench.baselines.sb3 import silent_logger

    env = make_env(env_id)
    try:
        model: Any
        if algo == "SAC":
            model = SAC("MlpPolicy", env, learning_starts=learning_starts, seed=seed, verbose=0, device="cpu")
        else:
            model = PPO("MlpPolicy", env, n_steps=n_steps, seed=seed, verbose=0, device="cpu")
        model.set_logger(silent_logger())
        start = time.perf_counter()
        model.learn(total_timesteps=steps)
        elapsed = time.perf_counter() - start
        if model.num_timesteps != steps:
            raise AssertionError(f"SB3 {algo} ran {model.num_timesteps} steps, expected {steps}")
        return elapsed
    finally:
        env.close()


def _trainer_rows(sizes: RatioSizes, scratch: Path) -> list[RatioRow]:
    started = time.perf_counter()
    env_id, steps, repeats, n_steps = sizes.env_id, sizes.train_steps, sizes.train_repeats, sizes.ppo_n_steps
    config = bench_train_config(env_id, steps, learning_starts=sizes.learning_starts, mode=sizes.train_mode)
    times: dict[str, list[float]] = {"trainer": [], "SAC": [], "PPO": []}
    for rep in range(repeats):
        # Alternate the order between repeats so that drifting machine load hits every side.
        order: Sequence[str] = ("trainer", "SAC", "PPO") if rep % 2 == 0 else ("PPO", "SAC", "trainer")
        for side in order:
            if side == "trainer":
                times[side].append(_time_trainer(config, scratch, rep))
            elif side == "SAC":
                times[side].append(_time_sb3("SAC", env_id, steps, config.learning_starts, n_steps, seed=rep))
            else:
                times[side].append(_time_sb3("PPO", env_id, steps, config.learning_starts, n_steps, seed=rep))
        torch.set_num_threads(1)  # the trainer sets it itself; keep every side on one thread regardless
    rate = {side: steps / statistics.median(t) for side, t in times.items()}
    work = TRAINER_WORK.format(
        aux=config.num_aux_agents,
        batch=config.batch_size,
        hidden=config.policy_hidden,
        wm_every=config.wm_train_every,
        k=config.ensemble_size,
        scale=config.wm_hidden_scale,
        wm_updates=config.wm_updates_per_round,
        m=config.mi_outer_samples,
        cem_every=config.cem_every,
        pop=config.cem_population,
    )
    common = (
        f"{env_id}, {steps} env steps each, 1 torch thread, median of {repeats}; "
        f"trainer: reduced bench config (bench_train_config), first {config.random_steps} steps random, "
        f"timed run() incl. one final evaluation episode and checkpoint; {work}"
    )
    ppo_settings = (
        "SB3 defaults" if n_steps == _PPO_N_STEPS else f"SB3 defaults except n_steps (default {_PPO_N_STEPS})"
    )
    elapsed = time.perf_counter() - started
    return [
        RatioRow(
            measurement="trainer env steps/s vs SB3 SAC",
            baseline=f"SB3 SAC: {rate['SAC']:.0f} env steps/s",
            ours=f"AMAL trainer: {rate['trainer']:.0f} env steps/s",
            ratio=rate["trainer"] / rate["SAC"],
            ratio_meaning="trainer steps/s / SAC steps/s",
            notes=(
                f"{common}. SAC: SB3 defaults (MLP 256×256, batch 256, one gradient step per env step, "
                f"buffer 1M) except learning_starts = {config.learning_starts}; no world model, "
                "no auxiliary agents"
            ),
            seconds=elapsed,
        ),
        RatioRow(
            measurement="trainer env steps/s vs SB3 PPO",
            baseline=f"SB3 PPO: {rate['PPO']:.0f} env steps/s",
            ours=f"AMAL trainer: {rate['trainer']:.0f} env steps/s",
            ratio=rate["trainer"] / rate["PPO"],
            ratio_meaning="trainer steps/s / PPO steps/s",
            notes=(
                f"{common}. PPO: {ppo_settings} (MLP 64×64, n_steps {n_steps}, 10 epochs of minibatch 64 "
                f"per rollout, i.e. {10 * n_steps // 64} gradient steps per {n_steps} env steps)"
            ),
            seconds=elapsed,
        ),
    ]


# ---------------------------------------------------------------------------- population evaluation


def _population_rows(env_id: str, population: int, episodes: int, repeats: int) -> list[RatioRow]:
    started = time.perf_counter()
    info = task_info(env_id)
    scale = max(abs(x) for x in (*info.action_low, *info.action_high)) if not info.discrete else 1.0
    policy = FlatMLPPolicy(info.obs_dim, info.action_dim, (64,), info.discrete, action_scale=scale)
    params = policy.init_params(population, generator=torch.Generator().manual_seed(0))
    modes: tuple[Literal["sequential", "sync", "async"], ...] = ("sequential", "sync", "async")
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    results: dict[str, list[torch.Tensor]] = {mode: [] for mode in modes}
    for rep in range(repeats):
        for mode in modes if rep % 2 == 0 else tuple(reversed(modes)):
            start = time.perf_counter()
            results[mode].append(
                evaluate_population(policy, params, env_id, episodes=episodes, seed=rep, vector=mode)
            )
            times[mode].append(time.perf_counter() - start)
    identical = all(
        torch.equal(results["sequential"][rep], results[mode][rep])
        for mode in modes
        for rep in range(repeats)
    )
    seq = statistics.median(times["sequential"])
    rows = []
    for mode, cls in (("sync", "SyncVectorEnv"), ("async", "AsyncVectorEnv")):
        t = statistics.median(times[mode])
        workers = f"one worker process per candidate on {os.cpu_count()} CPUs; " if mode == "async" else ""
        rows.append(
            RatioRow(
                measurement=f"CEM population evaluation: {cls} vs sequential",
                baseline=f"sequential: {seq:.2f} s/population",
                ours=f"{mode} ({cls}): {t:.2f} s/population",
                ratio=seq / t,
                ratio_meaning="sequential time / vector time",
                notes=(
                    f"{env_id}, P = {population} candidates × {episodes} episode(s), FlatMLPPolicy "
                    f"hidden 64, median of {repeats}, env construction and closing included; actions per "
                    "candidate (one policy.act call each) in every mode, so vector envs batch only the "
                    f"environments; {workers}"
                    f"results bit-identical across the three modes: {'yes' if identical else 'NO'}"
                ),
                seconds=time.perf_counter() - started,
            )
        )
    return rows


# ---------------------------------------------------------------------------- the report


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _versions() -> tuple[tuple[str, str], ...]:
    from importlib import metadata

    out = [("python", platform.python_version())]
    for dist in ("amal_verified", "torch", "numpy", "gymnasium", "mujoco", "stable_baselines3"):
        try:
            out.append((dist, metadata.version(dist)))
        except metadata.PackageNotFoundError:
            out.append((dist, "not installed"))
    return tuple(out)


@checked
def measure_ratios(*, quick: bool, out: Path | None, sizes: RatioSizes | None = None) -> RatioReport:
    """Measure every ratio of the module docstring now, in this call; return the report.

    ``out``: a file to write :meth:`RatioReport.to_json` to (parent directories created), or
    ``None``; the markdown is :meth:`RatioReport.to_markdown`.  ``sizes`` overrides
    :func:`ratio_sizes` ``(quick=quick)`` (tests use tiny sizes).  Raises ``AssertionError`` if
    the information-gain implementations disagree beyond :data:`EIG_TOLERANCE`, and what the
    measured code raises.
    """
    if sizes is None:
        sizes = ratio_sizes(quick=quick)
    started_utc = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    load = os.getloadavg()
    start = time.perf_counter()
    previous_threads = torch.get_num_threads()
    # SB3's seed= re-seeds the global random, numpy and torch generators; give the caller theirs back.
    global_rngs = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    torch.set_num_threads(1)
    try:
        rows: list[RatioRow] = []
        t0 = time.perf_counter()
        gate = measure_gate_overhead(pairs=sizes.gate_pairs, warmup=sizes.gate_warmup, steps=sizes.gate_steps)
        rows.append(
            RatioRow(
                measurement="gate overhead (one world-model training step)",
                baseline=f"plain: {gate.plain_median_ms:.1f} ms/step",
                ours=f"gated: {gate.gated_median_ms:.1f} ms/step",
                ratio=gate.ratio,
                ratio_meaning="gated / plain time, median of pairwise",
                notes=(
                    f"paper world model (batch 256 × seq 16), {gate.pairs} pair(s) of fresh processes, "
                    f"{gate.warmup} warm-up + {gate.steps} timed steps each, 1 thread; CPU-time ratio "
                    f"{gate.cpu_ratio:.3f}, memory ratio {gate.memory_ratio:.3f}; target ≤ {TARGET_RATIO}; "
                    f"parameters bit-identical: {'yes' if gate.params_identical else 'NO'}; plain workers "
                    f"never imported amal_verified: {'yes' if gate.plain_never_imported_amal else 'NO'}"
                ),
                seconds=time.perf_counter() - t0,
            )
        )
        with tempfile.TemporaryDirectory(prefix="amal-ratios-") as scratch:
            rows += _trainer_rows(sizes, Path(scratch))
        rows.append(
            _eig_row(
                sizes.eig_members,
                sizes.eig_outer,
                sizes.eig_states,
                task_info(sizes.env_id).obs_dim + 1,
                sizes.eig_repeats,
            )
        )
        rows += _population_rows(
            sizes.env_id, sizes.population, sizes.population_episodes, sizes.population_repeats
        )
    finally:
        torch.set_num_threads(previous_threads)
        random.setstate(global_rngs[0])
        np.random.set_state(global_rngs[1])
        torch.set_rng_state(global_rngs[2])
    report = RatioReport(
        quick=quick,
        sizes=sizes,
        rows=tuple(rows),
        versions=_versions(),
        torch_threads=1,
        machine=f"{platform.system()} {platform.machine()} ({_cpu_model()})",
        cpu_count=os.cpu_count() or 0,
        load_average=(load[0], load[1], load[2]),
        started_utc=started_utc,
        seconds=time.perf_counter() - start,
    )
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report.to_json())
    return report
