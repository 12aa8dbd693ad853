"""Tiny trainer configurations and helpers shared by the end-to-end tests of runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from amal_verified.record.checkpoint import load_checkpoint
from amal_verified.record.ledger import state_digest
from amal_verified.run.config import TrainConfig
from amal_verified.run.trainer import Trainer

TINY: dict[str, Any] = {
    "env_id": "CartPole-v1",
    "total_steps": 400,
    "learning_starts": 150,
    "random_steps": 150,
    "wm_train_every": 100,
    "wm_updates_per_round": 2,
    "ensemble_size": 3,
    "wm_hidden_scale": 0.0625,
    "num_aux_agents": 3,
    "cem_population": 8,
    "cem_every": 100,
    "eval_every": 200,
    "eval_episodes": 1,
    "log_every": 100,
    "checkpoint_every": 200,
    "rollout_batch": 32,
    "batch_size": 32,
    "policy_hidden": 16,
    "buffer_size": 5_000,
    "aux_buffer_size": 2_000,
    "probe_states": 16,
    "mi_outer_samples": 6,
    "real_ratio": 0.5,
    "aux_ratio": 0.1,
}


def tiny(**overrides: Any) -> TrainConfig:
    return TrainConfig(**{**TINY, **overrides})


def train(run_dir: Path, **overrides: Any) -> Trainer:
    trainer = Trainer.create(tiny(**overrides), run_dir)
    trainer.run()
    return trainer


def amal(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "amal_verified.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def final_state_digests(run_dir: Path) -> dict[str, str]:
    state = load_checkpoint(run_dir / "checkpoint.pt", restore=False)
    policy = state["policy"]
    flat = {k: v for k, v in _flatten(policy).items() if isinstance(v, torch.Tensor) and k != "generator"}
    return {
        "world_model": state_digest(state["learner"]["model"]),
        "policy": state_digest(flat),
        "step": str(state["step"]),
    }


def ledger_updates(run_dir: Path) -> list[tuple[Any, ...]]:
    lines = (run_dir / "ledger.jsonl").read_text().splitlines()[1:]
    records = [json.loads(line) for line in lines]
    return [(r["step"], r["batch_digest"], r["param_digest"], r["labels"]) for r in records]


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(obj, list | tuple):
        out = {}
        for i, v in enumerate(obj):
            out.update(_flatten(v, f"{prefix}{i}."))
        return out
    return {prefix.rstrip("."): obj}


def copy_run(src: Path, dst: Path) -> Path:
    """A copy of the run directory ``src`` at ``dst``, without its certificate and signed envelope."""
    shutil.copytree(src, dst)
    for name in ("certificate.json", "certificate.dsse.json"):
        (dst / name).unlink(missing_ok=True)
    return dst
