"""``amal_tools.bench.ratios``: a tiny end-to-end run of every ratio, and the loop estimator's agreement.

No timing is asserted anywhere: speed is measured, never tested.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal

import pytest
import torch
from amal_tools.bench.ratios import (
    EIG_TOLERANCE,
    RatioSizes,
    bench_train_config,
    loop_gaussian_ensemble_eig,
    measure_ratios,
    ratio_sizes,
)

from amal_verified.world_model.information_gain import gaussian_ensemble_eig

TINY = RatioSizes(
    env_id="Pendulum-v1",
    gate_pairs=1,
    gate_warmup=0,
    gate_steps=1,
    train_steps=256,
    train_repeats=1,
    eig_members=4,
    eig_outer=8,
    eig_states=16,
    eig_repeats=1,
    population=2,
    population_episodes=1,
    population_repeats=1,
    learning_starts=128,
    ppo_n_steps=128,
)


@pytest.mark.parametrize("estimator", ["pce", "nmc"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_loop_estimator_agrees_with_library(estimator: Literal["pce", "nmc"], dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(3)
    means = torch.randn((5, 7, 3), generator=g, dtype=dtype)
    stds = torch.exp(0.5 * torch.randn((5, 7, 3), generator=g, dtype=dtype))
    lib = gaussian_ensemble_eig(
        means, stds, num_samples=4, generator=torch.Generator().manual_seed(9), estimator=estimator
    )
    ref = loop_gaussian_ensemble_eig(
        means, stds, num_samples=4, generator=torch.Generator().manual_seed(9), estimator=estimator
    )
    rtol, atol = EIG_TOLERANCE[str(dtype).removeprefix("torch.")]
    assert ref.shape == lib.shape == (7,)
    torch.testing.assert_close(ref, lib.detach(), rtol=rtol, atol=atol)
    # It is a real check: a different draw gives a different estimate.
    other = loop_gaussian_ensemble_eig(
        means, stds, num_samples=4, generator=torch.Generator().manual_seed(10), estimator=estimator
    )
    assert not torch.allclose(other, ref, rtol=rtol, atol=atol)


def test_sizes_and_config() -> None:
    quick, full = ratio_sizes(quick=True), ratio_sizes(quick=False)
    assert (quick.env_id, full.env_id) == ("Pendulum-v1", "HalfCheetah-v5")
    assert quick.train_steps % quick.ppo_n_steps == 0 and full.train_steps % full.ppo_n_steps == 0
    assert (quick.eig_members, quick.eig_outer, quick.eig_states) == (20, 100, 256)
    config = bench_train_config("Pendulum-v1", 4096)
    # Each mode times the AMAL configuration its own benchmark cells train with.
    assert (quick.train_mode, full.train_mode) == ("quick", "full")
    assert (
        config.policy_hidden == 64
        and bench_train_config("Pendulum-v1", 4096, mode="full").policy_hidden == 256
    )
    assert (config.ensemble_size, config.num_aux_agents, config.threads, config.learning_starts) == (
        5,
        4,
        1,
        500,
    )
    with pytest.raises(ValueError, match="multiple of ppo_n_steps"):
        RatioSizes(**{**TINY.__dict__, "train_steps": 200})
    with pytest.raises(ValueError, match="must be >= 1: population"):
        RatioSizes(**{**TINY.__dict__, "population": 0})


@pytest.mark.slow
def test_tiny_run_measures_every_ratio(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    torch.manual_seed(5)
    expected = float(torch.rand(()))
    torch.manual_seed(5)
    report = measure_ratios(quick=True, out=tmp_path / "sub" / "ratios.json", sizes=TINY)
    assert torch.get_num_threads() == threads
    assert float(torch.rand(())) == expected  # SB3 re-seeds the global generators; they are restored

    names = [row.measurement for row in report.rows]
    assert names == [
        "gate overhead (one world-model training step)",
        "trainer env steps/s vs SB3 SAC",
        "trainer env steps/s vs SB3 PPO",
        "information-gain estimator (gaussian_ensemble_eig, PCE)",
        "CEM population evaluation: SyncVectorEnv vs sequential",
        "CEM population evaluation: AsyncVectorEnv vs sequential",
    ]
    for row in report.rows:
        assert math.isfinite(row.ratio) and row.ratio > 0, row
        assert row.baseline and row.ours and row.ratio_meaning and row.notes
    gate, _, _, eig, sync, asynchronous = report.rows
    assert "parameters bit-identical: yes" in gate.notes
    assert "never imported amal_verified: yes" in gate.notes
    assert "pce/float64" in eig.notes and "nmc/float32" in eig.notes
    assert "bit-identical across the three modes: yes" in sync.notes
    assert "bit-identical across the three modes: yes" in asynchronous.notes

    data = json.loads((tmp_path / "sub" / "ratios.json").read_text())
    assert data == json.loads(report.to_json())
    assert data["sizes"]["train_steps"] == 256 and data["torch_threads"] == 1
    assert {"torch", "gymnasium", "stable_baselines3", "python"} <= set(data["versions"])
    markdown = report.to_markdown()
    assert "| measurement | baseline | ours | ratio | context |" in markdown
    assert markdown.count("\n| ") == 1 + len(report.rows)  # header + one line per row
