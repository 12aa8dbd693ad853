"""Theorem 1 against the full trainer: the world-model trajectory does not depend on auxiliary agents.

With the primary stream fixed (the primary agent acts from its own exploration stream for the whole
run, so the primary data cannot depend on the auxiliary agents through the policy), Hypothesis varies
everything auxiliary — how many agents, their environments' observation noise (up to absurd scales),
the CEM settings, and whether the policy trains on their data — and every world-model update's batch
digest and parameter digest must equal those of a reference run bit for bit, for several primary
seeds (each with its own reference run), and each reference run must be reproduced by the replay
from its recorded primary data alone (in process here, and by ``amal certify`` in a fresh process).
The recorded primary data (the chunk digests of ``data/manifest.json``) must be identical too.

Further properties:

- **Poisoned auxiliary buffers.**  Values the buffers' ``add`` would refuse (NaN, ±Inf) or accept
  (0, ±1e38, float32's largest value, huge rewards) are written straight into the auxiliary
  buffers' storage after every auxiliary step.  Every world-model update the run makes must equal
  the reference's.  When the policy does not read auxiliary data (``aux_ratio = 0``) the run must
  finish with the reference trajectory.  When it does, the policy may refuse non-finite data (its
  input check raises ``ValueError``, or the CEM refuses the non-finite behaviour of a policy that
  diverged on huge values): that stops the whole run — measured, and accepted here as fail-closed
  behaviour of the *policy* (the buffers' contents were corrupted behind ``add``'s checks), because
  the world model's trajectory up to the stop is the reference's, the refusal is raised by
  policy-side code, never by the world-model learner, and the stopped run keeps its evidence: it is
  marked ``failed`` with its primary data flushed.  Auxiliary *environments* that
  produce non-finite values (observation noise overflowing float32) cannot stop a run: their
  transitions are dropped and counted.
- **End-to-end with a frozen trained policy.**  A policy trained in the reference run is loaded and
  never updated (``policy_updates_per_step = 0``, ``random_steps = 0``), so the primary agent acts
  through the policy network for the whole run.  That covers everything that could reach the primary
  stream other than training (the CEM calling the policy, shared generators, shared environments):
  the recorded primary data must be identical across auxiliary settings, and differ from the
  exploration-stream reference's (the policy really acted).
- **The ``--unsafe-mix`` ablation fails the property**, and the same pair of runs gives the report's
  plot: the L2 distance between the world-model parameters of two runs with different auxiliary
  settings after every update — exactly zero for AMAL, growing for the ablation.

The first property also runs with the auxiliary environments on Ray actors (``aux_backend="ray"``,
one explicit example).

Each run trains 200 primary steps (under a second); example counts scale with the Hypothesis
profile (``default``: 2 generated plus one explicit example per further primary seed, 4 poisoned,
2 end-to-end; ``audit``: 83, 166 and 83).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

import amal_verified as av
from amal_verified.agents import cem, sac
from amal_verified.record.checkpoint import load_checkpoint
from amal_verified.run.certify import certify_run
from amal_verified.run.config import TrainConfig
from amal_verified.run.trainer import Trainer

FROZEN_PRIMARY: dict[str, Any] = {
    "env_id": "CartPole-v1",
    "total_steps": 200,
    "learning_starts": 100,
    "random_steps": 200,  # the primary agent never acts from its policy: a fixed primary stream
    "wm_train_every": 50,
    "wm_updates_per_round": 2,
    "ensemble_size": 3,
    "wm_hidden_scale": 0.0625,
    "num_aux_agents": 2,
    "cem_population": 8,
    "cem_every": 100,
    "eval_every": 200,
    "eval_episodes": 1,
    "log_every": 100,
    "checkpoint_every": 200,
    "rollout_batch": 16,
    "batch_size": 32,
    "policy_hidden": 16,
    "buffer_size": 2_000,
    "aux_buffer_size": 1_000,
    "probe_states": 8,
    "mi_outer_samples": 6,
}
PRIMARY_SEEDS = (0, 1, 2)
# The frozen trained policy acts from the first step and is never updated.
FROZEN_POLICY = {"random_steps": 0, "policy_updates_per_step": 0}

_EXAMPLES = max(2, settings.default.max_examples // 12)
_POISONED = max(4, settings.default.max_examples // 6)

aux_settings = st.fixed_dictionaries(
    {
        "num_aux_agents": st.integers(1, 4),
        "aux_obs_noise": st.sampled_from([0.0, 1e-3, 1.0, 1e3]),
        "cem_beta": st.floats(0.0, 10.0, allow_nan=False),
        "cem_std_floor": st.sampled_from([1e-3, 0.1, 2.0]),
        "aux_ratio": st.sampled_from([0.0, 0.25, 1.0]),
        "aux_hidden": st.sampled_from([2, 8]),
        "aux_seed": st.one_of(st.none(), st.integers(0, 2**31 - 1)),
    }
)

F32_MAX = float(torch.finfo(torch.float32).max)
POISON_VALUES = (0.0, 1e38, -1e38, F32_MAX, -F32_MAX, 1e30, math.nan, math.inf, -math.inf)
poisons = st.fixed_dictionaries(
    {
        "fields": st.lists(
            st.sampled_from(["obs", "next_obs", "reward", "done"]), min_size=1, max_size=4, unique=True
        ),
        "values": st.lists(st.sampled_from(POISON_VALUES), min_size=1, max_size=4),
    }
)


@dataclass(frozen=True)
class Run:
    """What a training run recorded: ledger updates, primary-data chunks, parameters, how it ended."""

    run_dir: Path
    updates: list[tuple[Any, ...]]
    chunks: list[dict[str, Any]]
    params: list[torch.Tensor]
    error: Exception | None


def _updates(run_dir: Path) -> list[tuple[Any, ...]]:
    lines = (run_dir / "ledger.jsonl").read_text().splitlines()[1:]
    return [
        (r["step"], r["batch_digest"], r["param_digest"], r["labels"], r.get("round_end"))
        for r in map(json.loads, lines)
    ]


def _chunks(run_dir: Path) -> list[dict[str, Any]]:
    manifest = run_dir / "data" / "manifest.json"
    return list(json.loads(manifest.read_text())["chunks"]) if manifest.exists() else []


def _poison(trainer: Trainer, poison: dict[str, Any]) -> None:
    """After every auxiliary step, overwrite the stored auxiliary rows (bypassing ``add``'s checks)."""
    step = trainer.aux.step
    values = torch.tensor(poison["values"], dtype=torch.float32)

    def poisoned_step() -> None:
        step()
        for buffer in trainer.aux.buffers:
            n = len(buffer)
            for name in poison["fields"]:
                stored = buffer._storage[name][:n]  # the test reaches into the storage on purpose
                cycle = torch.arange(stored.numel()) % len(values)
                pattern = values[cycle] if name != "done" else cycle % 2 == 0
                stored.copy_(pattern.reshape(stored.shape))

    trainer.aux.step = poisoned_step  # type: ignore[method-assign]


def _train(
    run_dir: Path,
    *,
    poison: dict[str, Any] | None = None,
    snapshots: bool = False,
    policy: dict[str, Any] | None = None,
    **overrides: Any,
) -> Run:
    """One run of ``FROZEN_PRIMARY`` with ``overrides``; a poisoned run may stop with an exception."""
    trainer = Trainer.create(TrainConfig(**{**FROZEN_PRIMARY, **overrides}), run_dir)
    params: list[torch.Tensor] = []
    if snapshots:
        update = trainer.learner.update

        def recorded(*args: Any, **kwargs: Any) -> Any:
            result = update(*args, **kwargs)
            params.append(
                torch.cat([p.detach().reshape(-1).double() for p in trainer.learner.model.parameters()])
            )
            return result

        trainer.learner.update = recorded  # type: ignore[method-assign]
    if policy is not None:
        trainer.policy.load_state_dict(policy)
    if poison is not None:
        _poison(trainer, poison)
    error: Exception | None = None
    try:
        trainer.run()
    except Exception as exc:
        if poison is None:
            raise
        error = exc
    return Run(run_dir, _updates(run_dir), _chunks(run_dir), params, error)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Run]:
    """``reference(seed, policy_from=None, **overrides)``: the run variants are compared with (trained
    once, cached), checked against the replay from its primary data alone.  ``policy_from=s`` loads
    the policy trained by ``reference(s)`` before the run starts."""
    cache: dict[tuple[Any, ...], Run] = {}

    def get(seed: int, policy_from: int | None = None, **overrides: Any) -> Run:
        key = (seed, policy_from, *sorted(overrides.items()))
        if key not in cache:
            policy = None
            if policy_from is not None:
                policy = load_checkpoint(get(policy_from).run_dir / "checkpoint.pt")["policy"]
            run_dir = tmp_path_factory.mktemp(f"reference-{seed}") / "run"
            run = cache[key] = _train(run_dir, seed=seed, policy=policy, **overrides)
            # In this process the auxiliary-side modules are loaded, which the certificate reports;
            # everything else must pass.
            cert = certify_run(run_dir, write=False)
            assert [p for p in cert.problems if "auxiliary-side modules" not in p] == []
            assert cert.updates_checked == cert.updates_in_ledger == len(run.updates)
            assert len(run.updates) == 6 or "wm_holdout" in overrides
            assert run.chunks and run.chunks[-1]["end"] == FROZEN_PRIMARY["total_steps"]
        return cache[key]

    return get


# Every primary seed is covered by an explicit example (beside the generated ones, whose seeds vary).
_STRESS = {"num_aux_agents": 4, "aux_obs_noise": 1e3, "cem_beta": 10.0, "cem_std_floor": 2.0, "aux_hidden": 8}


@settings(max_examples=_EXAMPLES)
@example(seed=PRIMARY_SEEDS[1], aux={**_STRESS, "aux_ratio": 1.0})
@example(seed=PRIMARY_SEEDS[2], aux={**_STRESS, "aux_ratio": 0.25, "num_aux_agents": 3})
@given(seed=st.sampled_from(PRIMARY_SEEDS), aux=aux_settings)
def test_world_model_trajectory_ignores_every_auxiliary_setting(
    seed: int,
    aux: dict[str, Any],
    reference: Callable[..., Run],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    expected = reference(seed)
    run = _train(tmp_path_factory.mktemp("variant") / "run", seed=seed, **aux)
    assert run.updates == expected.updates
    assert run.chunks == expected.chunks  # the primary stream itself: the primary acts from its own stream


@pytest.mark.slow
def test_world_model_trajectory_ignores_auxiliary_settings_on_the_ray_backend(
    reference: Callable[..., Run], ray_instance: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The property above with the auxiliary environments on Ray actors: one explicit example (3
    agents with absurd observation noise, their rows in the policy's batches), since each Ray run
    starts an actor process that imports torch."""
    expected = reference(PRIMARY_SEEDS[0])
    run_dir = tmp_path_factory.mktemp("ray-variant") / "run"
    aux = {**_STRESS, "aux_ratio": 0.25, "num_aux_agents": 3, "aux_seed": 7}
    run = _train(run_dir, seed=PRIMARY_SEEDS[0], aux_backend="ray", ray_agents_per_actor=4, **aux)
    assert run.updates == expected.updates
    assert run.chunks == expected.chunks


# Rounds that stop on a held-out split of the primary data: at most 12 updates, a check every 2.
_HOLDOUT = {
    "wm_holdout": 0.25,
    "wm_updates_per_round": 12,
    "wm_check_every": 2,
    "wm_patience": 2,
    "wm_lr": 0.01,
}


def test_early_stopping_decisions_ignore_every_auxiliary_setting(
    reference: Callable[..., Run], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """With ``wm_holdout``, where each round stops is part of the world-model trajectory: the held-out
    losses and stopping points (``round_end``) must not change with the auxiliary side either."""
    expected = reference(PRIMARY_SEEDS[0], **_HOLDOUT)
    ends = [u[4] for u in expected.updates if u[4] is not None]
    assert len(ends) == 3 and len(expected.updates) < 3 * 12  # three rounds, at least one stopped early
    aux = {**_STRESS, "aux_ratio": 0.25, "num_aux_agents": 3, "aux_seed": 11}
    run = _train(tmp_path_factory.mktemp("holdout-variant") / "run", seed=PRIMARY_SEEDS[0], **_HOLDOUT, **aux)
    assert run.updates == expected.updates
    assert run.chunks == expected.chunks


def test_primary_seeds_give_different_trajectories(reference: Callable[..., Run]) -> None:
    # Otherwise the seeds would not be several primary streams.
    digests = {tuple(u[2] for u in reference(seed).updates) for seed in PRIMARY_SEEDS}
    assert len(digests) == len(PRIMARY_SEEDS)


def test_reference_run_certifies_by_replay_from_primary_data_alone(reference: Callable[..., Run]) -> None:
    run = reference(PRIMARY_SEEDS[0])
    done = subprocess.run(
        [sys.executable, "-m", "amal_verified.cli", "certify", str(run.run_dir)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    certificate = json.loads((run.run_dir / "certificate.json").read_text())
    assert certificate["ok"] is True and certificate["problems"] == []
    assert certificate["forbidden_modules_loaded"] == []
    assert certificate["updates_checked"] == len(run.updates) == 6


_POLICY_SIDE = frozenset(Path(module.__file__).resolve() for module in (sac, cem) if module.__file__)
"""The policy side's modules: the only ones that may refuse poisoned auxiliary data."""


def _raised_in(error: BaseException) -> Path | None:
    """The library file whose code raised ``error`` (the innermost ``amal_verified`` frame)."""
    frames = [
        f.filename for f in traceback.extract_tb(error.__traceback__) if "/amal_verified/" in f.filename
    ]
    return Path(frames[-1]).resolve() if frames else None


@settings(max_examples=_POISONED)
# NaN observations in the buffer the policy samples: the policy side refuses them.
@example(poison={"fields": ["obs"], "values": [math.nan]}, aux_ratio=0.25, num_aux_agents=1)
@given(
    poison=poisons,
    aux_ratio=st.sampled_from([0.0, 0.25, 1.0]),
    num_aux_agents=st.integers(1, 3),
)
def test_poisoned_aux_buffers_cannot_change_the_world_model(
    poison: dict[str, Any],
    aux_ratio: float,
    num_aux_agents: int,
    reference: Callable[..., Run],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    expected = reference(PRIMARY_SEEDS[0])
    run = _train(
        tmp_path_factory.mktemp("poisoned") / "run",
        poison=poison,
        aux_ratio=aux_ratio,
        num_aux_agents=num_aux_agents,
    )
    # Safety: whatever the auxiliary buffers hold, every world-model update made is the reference's.
    assert run.updates == expected.updates[: len(run.updates)]
    if run.error is None:
        assert run.updates == expected.updates and run.chunks == expected.chunks
        return
    # Liveness, where the policy never reads auxiliary data: nothing may stop the run.
    assert aux_ratio > 0, f"the run stopped although nothing reads the auxiliary buffers: {run.error!r}"
    # Where it does, only the policy side may refuse, with a clear error about non-finite values.
    assert isinstance(run.error, ValueError), repr(run.error)
    assert _raised_in(run.error) in _POLICY_SIDE, "".join(traceback.format_exception(run.error))
    assert "finite" in str(run.error)
    # Nothing lost: the stopped run says so, with every primary transition collected so far flushed
    # (certification refuses it as incomplete; it resumes from its last checkpoint).
    status = json.loads((run.run_dir / "run.json").read_text())
    assert status["status"] == "failed" and status["primary_transitions"] == status["step"] > 0


def test_an_auxiliary_environment_overflowing_cannot_stop_world_model_training(
    reference: Callable[..., Run], tmp_path: Path
) -> None:
    # Regression: observation noise of 1e38 overflows float32 in every auxiliary environment; the
    # buffers refused those rows and the run stopped before its first world-model update.  Now the
    # auxiliary agents drop non-finite transitions (counted) and the run completes unchanged.  (With
    # aux_ratio > 0 the policy would train on the huge finite rows that remain, diverge, and be
    # refused by the CEM's finiteness check: the poisoned-buffer property above covers that.)
    expected = reference(PRIMARY_SEEDS[0])
    run = _train(tmp_path / "run", aux_obs_noise=1e38, aux_ratio=0.0)
    assert run.error is None
    assert run.updates == expected.updates and run.chunks == expected.chunks
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert float(rows[-1].split(",")[rows[0].split(",").index("aux_dropped_nonfinite")]) > 0


@settings(max_examples=_EXAMPLES)
@given(aux=aux_settings)
def test_primary_stream_is_identical_under_a_frozen_trained_policy(
    aux: dict[str, Any], reference: Callable[..., Run], tmp_path_factory: pytest.TempPathFactory
) -> None:
    seed = PRIMARY_SEEDS[0]
    expected = reference(seed, policy_from=seed, **FROZEN_POLICY)
    assert expected.chunks != reference(seed).chunks  # the loaded policy, not the exploration stream, acted
    policy = load_checkpoint(reference(seed).run_dir / "checkpoint.pt")["policy"]
    run = _train(tmp_path_factory.mktemp("frozen") / "run", seed=seed, policy=policy, **FROZEN_POLICY, **aux)
    assert run.chunks == expected.chunks
    assert run.updates == expected.updates


def test_unsafe_mix_trainer_fails_the_property(tmp_path: Path, evidence: Any) -> None:
    # Two auxiliary settings, the same primary stream; AMAL and the ablation (whose world model reads
    # D_P ∪ D_A).  Rounds every 10 steps: 22 updates for the report's plot.  The policy does not train
    # (it never acts for the primary agent here and the world model never reads it): half the cost.
    schedule = {"wm_train_every": 10, "policy_updates_per_step": 0}
    other = {"aux_obs_noise": 1.0, "num_aux_agents": 3}
    runs = {
        (mode, variant): _train(
            tmp_path / f"{mode}-{variant}",
            snapshots=True,
            unsafe_mix=mode == "unsafe_mix",
            **schedule,
            **extra,
        )
        for mode in ("amal", "unsafe_mix")
        for variant, extra in (("a", {}), ("b", other))
    }

    def distances(mode: str) -> list[float]:
        a, b = runs[(mode, "a")].params, runs[(mode, "b")].params
        assert len(a) == len(b) == 22
        with av.declassify(reason="the unsafe-mix world model is measured, not trained on"):
            return [float(torch.linalg.vector_norm(x - y)) for x, y in zip(a, b, strict=True)]

    amal, unsafe = distances("amal"), distances("unsafe_mix")
    evidence.record(
        "wm_trajectory_difference",
        {"updates": list(range(1, len(amal) + 1)), "amal": amal, "unsafe_mix": unsafe},
    )
    assert amal == [0.0] * len(amal)
    assert runs[("amal", "a")].updates == runs[("amal", "b")].updates
    base, varied = runs[("unsafe_mix", "a")].updates, runs[("unsafe_mix", "b")].updates
    assert base[0][0] == varied[0][0] == 1
    assert [u[2] for u in base] != [u[2] for u in varied]
    assert any(label.startswith("aux:") for update in base for label in update[3])
    assert all(d > 0.0 for d in unsafe)
