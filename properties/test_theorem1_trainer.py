"""Theorem 1 against the full trainer: the world-model trajectory does not depend on auxiliary agents.

With the primary stream fixed (the primary agent acts from its own exploration stream for the whole
run, so the primary data cannot depend on the auxiliary agents through the policy), Hypothesis varies
everything auxiliary — how many agents, their environments' observation noise (up to absurd scales),
the CEM settings, and whether the policy trains on their data — and every world-model update's batch
digest and parameter digest must equal those of a reference run bit for bit, and the reference run must
be reproduced by the replay from its recorded primary data alone.  The ``--unsafe-mix`` trainer must
fail the same comparison.

Each example trains for a few hundred steps (seconds); the number of examples scales with the
Hypothesis profile (``default``: 3, ``audit``: 125).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amal_verified.certify import certify_run
from amal_verified.run_config import TrainConfig
from amal_verified.trainer import Trainer

FROZEN_PRIMARY: dict[str, Any] = {
    "env_id": "CartPole-v1",
    "total_steps": 300,
    "learning_starts": 100,
    "random_steps": 300,  # the primary agent never acts from its policy: a fixed primary stream
    "wm_train_every": 100,
    "wm_updates_per_round": 2,
    "ensemble_size": 3,
    "wm_hidden_scale": 0.0625,
    "num_aux_agents": 2,
    "cem_population": 8,
    "cem_every": 100,
    "eval_every": 300,
    "eval_episodes": 1,
    "log_every": 100,
    "checkpoint_every": 300,
    "rollout_batch": 16,
    "batch_size": 32,
    "policy_hidden": 16,
    "buffer_size": 2_000,
    "aux_buffer_size": 1_000,
    "probe_states": 8,
    "mi_outer_samples": 6,
}

_EXAMPLES = max(3, settings.default.max_examples // 8)

aux_settings = st.fixed_dictionaries(
    {
        "num_aux_agents": st.integers(1, 4),
        "aux_obs_noise": st.sampled_from([0.0, 1e-3, 1.0, 1e3]),
        "cem_beta": st.floats(0.0, 10.0, allow_nan=False),
        "cem_std_floor": st.sampled_from([1e-3, 0.1, 2.0]),
        "aux_ratio": st.sampled_from([0.0, 0.25, 1.0]),
        "aux_hidden": st.sampled_from([2, 8]),
    }
)


def _updates(run_dir: Path) -> list[tuple[Any, ...]]:
    lines = (run_dir / "ledger.jsonl").read_text().splitlines()[1:]
    return [(r["step"], r["batch_digest"], r["param_digest"], r["labels"]) for r in map(json.loads, lines)]


def _train(run_dir: Path, **overrides: Any) -> list[tuple[Any, ...]]:
    Trainer.create(TrainConfig(**{**FROZEN_PRIMARY, **overrides}), run_dir).run()
    return _updates(run_dir)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Any, ...]]:
    run_dir = tmp_path_factory.mktemp("theorem1") / "reference"
    updates = _train(run_dir)
    # The reference trajectory is also what the primary data alone reproduce.  (In this process the
    # auxiliary-side modules are loaded, which the certificate reports; everything else must pass.)
    cert = certify_run(run_dir, write=False)
    assert [p for p in cert.problems if "auxiliary-side modules" not in p] == []
    assert cert.updates_checked == cert.updates_in_ledger == len(updates) == 6
    return updates


@settings(max_examples=_EXAMPLES)
@given(aux=aux_settings)
def test_world_model_trajectory_ignores_every_auxiliary_setting(
    aux: dict[str, Any], reference: list[tuple[Any, ...]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    run_dir = tmp_path_factory.mktemp("variant") / "run"
    assert _train(run_dir, **aux) == reference


def test_unsafe_mix_trainer_fails_the_property(tmp_path: Path) -> None:
    # The ablation's world model reads D_P ∪ D_A: changing the auxiliary agents changes its trajectory.
    base = _train(tmp_path / "a", unsafe_mix=True)
    varied = _train(tmp_path / "b", unsafe_mix=True, aux_obs_noise=1.0)
    assert base[0][0] == varied[0][0] == 1
    assert [u[2] for u in base] != [u[2] for u in varied]
    assert any(label.startswith("aux:") for update in base for label in update[3])
