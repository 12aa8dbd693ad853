"""The trainer end to end on tiny configurations: determinism, resume, certificate, ablation, isolation."""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from _tiny_runs import TINY, amal, final_state_digests, ledger_updates, tiny, train

from amal_verified.isolation.errors import IsolationViolation
from amal_verified.record.checkpoint import load_checkpoint
from amal_verified.record.primary_log import load_primary_stream
from amal_verified.run.certify import certify_run
from amal_verified.run.config import primary_count_at_update, updates_completed_by
from amal_verified.run.evaluate import evaluate_run
from amal_verified.run.trainer import DeterminismError, Trainer
from amal_verified.world_model.ensemble import normalisation_statistics

# End to end: every test trains (and most certify) a run.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    train(run_dir)
    return run_dir


# ---------------------------------------------------------------------------------------- schedule


def test_schedule_counts_match_the_ledger(reference_run: Path) -> None:
    cfg = tiny()
    lines = (reference_run / "ledger.jsonl").read_text().splitlines()[1:]
    assert len(lines) == updates_completed_by(cfg, cfg.total_steps) == 6
    assert [primary_count_at_update(cfg, u) for u in range(1, 7)] == [200, 200, 300, 300, 400, 400]
    assert json.loads(lines[0])["labels"] == ["primary:real-env"]


def test_run_directory_layout_and_logs(reference_run: Path) -> None:
    names = {p.name for p in reference_run.iterdir()}
    assert {"config.json", "ledger.jsonl", "data", "checkpoint.pt", "run.json", "metrics.csv"} <= names
    assert "UNSAFE_MIX" not in names
    status = json.loads((reference_run / "run.json").read_text())
    assert status["status"] == "complete" and status["step"] == 400 and status["ledger_count"] == 6
    rows = (reference_run / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,wall_time,steps_per_s")
    assert [r.split(",")[0] for r in rows[1:]] == ["100", "200", "300", "400"]
    assert all(r.endswith(",gated,0") for r in rows[1:])
    assert any((reference_run / "tensorboard").iterdir())


# ---------------------------------------------------------------------------------------- determinism


def test_same_seed_reproduces_the_run_bit_for_bit(reference_run: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    train(again)
    assert (again / "ledger.jsonl").read_bytes() == (reference_run / "ledger.jsonl").read_bytes()
    assert final_state_digests(again) == final_state_digests(reference_run)


def test_other_seed_gives_another_run(reference_run: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    train(other, seed=1)
    assert final_state_digests(other)["world_model"] != final_state_digests(reference_run)["world_model"]


def test_world_model_ignores_aux_agents_when_the_primary_stream_is_fixed(
    reference_run: Path, tmp_path: Path
) -> None:
    # With the primary agent acting from its own exploration stream only (random_steps = total),
    # the primary data cannot depend on the auxiliary agents, so neither may the world model.
    base = tmp_path / "base"
    train(base, random_steps=400)
    varied = tmp_path / "varied"
    train(varied, random_steps=400, num_aux_agents=5, aux_obs_noise=0.5, cem_beta=0.0, aux_ratio=0.5)
    # The headers differ (other configurations); every update's batch and parameters must not.
    assert ledger_updates(varied) == ledger_updates(base)
    assert final_state_digests(varied)["world_model"] == final_state_digests(base)["world_model"]


# ---------------------------------------------------------------------------------------- resume


def test_resume_continues_bit_for_bit(reference_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "resumed"
    train(run_dir, total_steps=200)
    trainer = Trainer.resume(run_dir, total_steps=400)
    trainer.run()
    assert (run_dir / "ledger.jsonl").read_bytes() == (reference_run / "ledger.jsonl").read_bytes()
    assert final_state_digests(run_dir) == final_state_digests(reference_run)


def test_crash_after_checkpoint_redoes_identical_records(
    reference_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = tmp_path / "crashed"
    trainer = Trainer.create(tiny(), run_dir)
    original = Trainer.train_step

    def crash_at_350(self: Trainer) -> None:
        if self.step == 350:
            raise RuntimeError("simulated crash")
        original(self)

    monkeypatch.setattr(Trainer, "train_step", crash_at_350)
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer.run()
    monkeypatch.setattr(Trainer, "train_step", original)
    # The ledger holds records past the step-200 checkpoint; resuming recomputes and checks them.
    assert len((run_dir / "ledger.jsonl").read_text().splitlines()) - 1 == 4
    # Nothing lost at the failure: the run is marked failed with every primary transition collected
    # so far flushed; certification refuses it until it is resumed to completion.
    status = json.loads((run_dir / "run.json").read_text())
    assert (status["status"], status["step"], status["primary_transitions"]) == ("failed", 350, 350)
    problems = [p for p in certify_run(run_dir, write=False).problems if "auxiliary-side modules" not in p]
    assert len(problems) == 1 and "not complete (status 'failed' at step 350)" in problems[0]
    Trainer.resume(run_dir).run()
    assert (run_dir / "ledger.jsonl").read_bytes() == (reference_run / "ledger.jsonl").read_bytes()
    assert final_state_digests(run_dir) == final_state_digests(reference_run)
    # The chunk flushed at the failure was superseded by the resumed run's own: the run certifies.
    assert certify_run(run_dir, write=False, fresh_process=True).ok


def test_resume_refuses_an_edited_configuration(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train(run_dir, total_steps=200)
    document = json.loads((run_dir / "config.json").read_text())
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    with pytest.raises(ValueError, match="below the checkpoint"):
        Trainer.resume(run_dir, total_steps=100)
    document["train"]["policy_lr"] = 1e-3
    (run_dir / "config.json").write_text(json.dumps(document))
    before["config.json"] = (run_dir / "config.json").read_bytes()
    with pytest.raises(ValueError, match="was edited"):
        Trainer.resume(run_dir, total_steps=400)
    # A refused resume changes nothing in the run directory.
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before


def test_resume_refuses_a_ledger_record_that_does_not_recompute(tmp_path: Path) -> None:
    run_dir = tmp_path / "edited"
    trainer = Trainer.create(tiny(total_steps=400, checkpoint_every=200), run_dir)
    while trainer.step < 350:
        trainer.train_step()
    trainer.files.close()
    trainer.logger.close()
    # Rewrite the post-checkpoint records with a forged (but well-chained) parameter digest.
    from amal_verified.record.ledger import Ledger

    lines = (run_dir / "ledger.jsonl").read_text().splitlines()
    header = json.loads(lines[0])
    kept = lines[: 1 + 2]
    (run_dir / "ledger.jsonl").write_text("\n".join(kept) + "\n")
    ledger = Ledger.open(run_dir)
    ledger.append(3, "0" * 64, "f" * 64, ["primary:real-env"])
    ledger.close()
    assert header["seed"] == 0
    with pytest.raises(DeterminismError, match="update 3"):
        Trainer.resume(run_dir).run()


def test_killed_process_resumes_to_the_same_run(reference_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "killed"
    args = [f"--set={k}={v}" for k, v in TINY.items() if k not in ("env_id", "total_steps")]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "amal_verified.cli",
            "train",
            "--steps",
            "400",
            "--out",
            str(run_dir),
            "--no-progress",
            *args,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not (run_dir / "checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = amal("train", "--resume", "--out", str(run_dir), "--no-progress")
    assert done.returncode == 0, done.stderr
    assert (run_dir / "ledger.jsonl").read_bytes() == (reference_run / "ledger.jsonl").read_bytes()
    assert final_state_digests(run_dir) == final_state_digests(reference_run)


# ---------------------------------------------------------------------------------------- certificate


def test_certify_replays_from_primary_data_alone(reference_run: Path) -> None:
    result = amal("certify", str(reference_run))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "CERTIFIED" in result.stdout and "6/6" in result.stdout
    cert = json.loads((reference_run / "certificate.json").read_text())
    assert cert["ok"] and cert["forbidden_modules_loaded"] == [] and cert["updates_checked"] == 6


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    (dst / "certificate.json").unlink(missing_ok=True)
    return dst


def _certify_problems(run_dir: Path) -> str:
    result = amal("certify", str(run_dir))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "NOT CERTIFIED" in result.stdout
    return result.stdout


def test_certify_names_a_tampered_ledger_record(reference_run: Path, tmp_path: Path) -> None:
    run_dir = _copy(reference_run, tmp_path / "run")
    path = run_dir / "ledger.jsonl"
    lines = path.read_text().splitlines()
    record = json.loads(lines[3])
    record["param_digest"] = "0" * 64
    lines[3] = json.dumps(record, sort_keys=True, separators=(",", ":"))
    path.write_text("\n".join(lines) + "\n")
    assert "tampered" in _certify_problems(run_dir)


def test_certify_names_a_truncated_ledger(reference_run: Path, tmp_path: Path) -> None:
    run_dir = _copy(reference_run, tmp_path / "run")
    path = run_dir / "ledger.jsonl"
    path.write_text("\n".join(path.read_text().splitlines()[:-2]) + "\n")
    assert "missing_records" in _certify_problems(run_dir)


def test_certify_names_reordered_records(reference_run: Path, tmp_path: Path) -> None:
    run_dir = _copy(reference_run, tmp_path / "run")
    path = run_dir / "ledger.jsonl"
    lines = path.read_text().splitlines()
    lines[2], lines[3] = lines[3], lines[2]
    path.write_text("\n".join(lines) + "\n")
    out = _certify_problems(run_dir)
    assert "reordered" in out or "broken_link" in out


def test_certify_names_a_changed_data_file(reference_run: Path, tmp_path: Path) -> None:
    run_dir = _copy(reference_run, tmp_path / "run")
    chunk = sorted((run_dir / "data").glob("primary-*.pt"))[0]
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    out = _certify_problems(run_dir)
    assert chunk.name in out and "SHA-256" in out


def test_certify_detects_data_rewritten_with_a_consistent_manifest(
    reference_run: Path, tmp_path: Path
) -> None:
    from amal_verified.record.checkpoint import save_checkpoint
    from amal_verified.record.primary_log import _sha256_file

    run_dir = _copy(reference_run, tmp_path / "run")
    chunk = sorted((run_dir / "data").glob("primary-*.pt"))[0]
    payload = load_checkpoint(chunk)
    payload["reward"] = payload["reward"] + 1.0  # a forged stream, re-hashed into the manifest
    save_checkpoint(chunk, payload)
    manifest_path = run_dir / "data" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["chunks"][0]["sha256"] = _sha256_file(chunk)
    manifest_path.write_text(json.dumps(manifest))
    assert "update 1: batch digest" in _certify_problems(run_dir)


def test_certify_names_a_missing_data_file_and_an_edited_config(reference_run: Path, tmp_path: Path) -> None:
    run_dir = _copy(reference_run, tmp_path / "missing")
    chunk = sorted((run_dir / "data").glob("primary-*.pt"))[-1]
    chunk.unlink()
    assert f"{chunk.name}: file missing" in _certify_problems(run_dir)
    edited = _copy(reference_run, tmp_path / "edited")
    document = json.loads((edited / "config.json").read_text())
    document["train"]["wm_lr"] = 1e-3
    (edited / "config.json").write_text(json.dumps(document))
    assert "config.json: does not match" in _certify_problems(edited)


# ---------------------------------------------------------------------------------------- ablation and gate


def test_unsafe_mix_is_marked_everywhere_and_cannot_certify(tmp_path: Path) -> None:
    run_dir = tmp_path / "unsafe"
    train(run_dir, unsafe_mix=True)
    assert "ablation" in (run_dir / "UNSAFE_MIX").read_text()
    rows = (run_dir / "metrics.csv").read_text().splitlines()[1:]
    assert all(r.endswith(",1") and "UNSAFE-MIX" in r for r in rows)
    labels = {
        tuple(json.loads(line)["labels"]) for line in (run_dir / "ledger.jsonl").read_text().splitlines()[1:]
    }
    assert any(any(name.startswith("aux:") for name in ls) for ls in labels)
    out = _certify_problems(run_dir)
    assert "--unsafe-mix ablation" in out and "update 1:" in out


def test_gated_learner_refuses_aux_batches_before_any_change(tmp_path: Path) -> None:
    trainer = Trainer.create(tiny(), tmp_path / "run")
    while trainer.step < 160:
        trainer.train_step()
    learner = trainer.learner
    before = learner.param_digest()
    aux_buffer = trainer.aux.buffers[0]
    learner._batch = lambda primary, aux: aux_buffer.sample(8, generator=torch.Generator())  # type: ignore[method-assign]
    with pytest.raises(IsolationViolation):
        learner.update(trainer.primary)
    assert learner.param_digest() == before
    trainer.files.close()
    trainer.logger.close()


# ---------------------------------------------------------------------------------------- CLI


def test_cli_refuses_bad_input_with_a_message(tmp_path: Path) -> None:
    bad_key = amal("train", "--out", str(tmp_path / "a"), "--set", "no_such=1")
    assert bad_key.returncode == 2 and "no_such" in bad_key.stderr and "Traceback" not in bad_key.stderr
    bad_value = amal("train", "--out", str(tmp_path / "b"), "--set", "batch_size=0")
    assert bad_value.returncode == 2 and "batch_size" in bad_value.stderr
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x").write_text("")
    not_empty = amal("train", "--out", str(tmp_path / "c"))
    assert not_empty.returncode == 2 and "not empty" in not_empty.stderr
    missing = amal("certify", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr and not missing.stdout


def test_evaluate_reports_returns_and_model_error(reference_run: Path) -> None:
    result = amal("evaluate", str(reference_run), "--episodes", "2", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert len(report["returns"]) == 2 and report["world_model"]["finite"]
    assert report["world_model"]["next_obs_mse"] >= 0.0 and report["step"] == 400
    # The fit against the naive predictors, on the same held-out episodes; their statistics come from
    # the 400 primary transitions the last round (update 6, at 400 stored) could sample.
    fit = report["world_model"]["fit"]
    assert fit["transitions"] == report["world_model"]["transitions"] and fit["training_transitions"] == 400
    assert fit["model"]["next_obs_mse"] == report["world_model"]["next_obs_mse"]
    assert fit["model"]["nll"] == report["world_model"]["nll_per_member_mean"]
    assert len(fit["no_change"]["next_obs_mse_per_dim"]) == 4 and fit["reward_beats_naive"] is None
    assert fit["beats_naive"] == (
        fit["model"]["next_obs_mse"]
        < min(fit["no_change"]["next_obs_mse"], fit["best_constant"]["next_obs_mse"])
    )
    summary = amal("evaluate", str(reference_run), "--episodes", "1")
    assert (
        summary.returncode == 0
        and "mean return" in summary.stdout
        and "next-observation MSE" in summary.stdout
        and "best constant" in summary.stdout
        and "naive predictors" in summary.stdout
    )


def test_evaluate_before_any_update_and_with_damaged_data(tmp_path: Path) -> None:
    # No world-model round yet: the naive predictors' statistics come from every recorded transition.
    run_dir = tmp_path / "run"
    train(run_dir, total_steps=100, checkpoint_every=100, eval_every=100)
    fit = evaluate_run(run_dir, episodes=1)["world_model"]["fit"]
    assert fit["training_transitions"] == 100 and fit["transitions"] > 0
    (run_dir / "data" / "manifest.json").unlink()
    with pytest.raises(ValueError, match="recorded primary data do not hold the 100 transitions") as error:
        evaluate_run(run_dir, episodes=1)
    assert "\n" not in str(error.value) and "amal certify" in str(error.value)


# ---------------------------------------------------------------------------------------- environments


@pytest.mark.parametrize(
    "env_id",
    ["Pendulum-v1", "MountainCarContinuous-v0", "HalfCheetah-v5", "MiniGrid-KeyCorridorS3R1-v0"],
)
def test_every_supported_environment_trains_and_certifies(env_id: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    trainer = train(run_dir, env_id=env_id, total_steps=300, checkpoint_every=300)
    assert trainer.learner.updates == 4
    status = json.loads((run_dir / "run.json").read_text())
    assert status["status"] == "complete"
    result = amal("certify", str(run_dir))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_strongly_convex_world_model_trains_descends_and_certifies(tmp_path: Path) -> None:
    # The configuration of the corrected Theorem 2, selected from TrainConfig: one linear-Gaussian
    # model, plain full-batch gradient descent with L2.  The run goes through the same gate, ledger
    # and certificate as the paper's ensemble.
    convex = {
        "wm_model": "linear-gaussian",
        "wm_optimizer": "sgd",
        "wm_weight_decay": 0.1,
        "wm_full_batch": True,
        "wm_lr": 0.01,
        "ensemble_size": 1,
        "wm_hidden_scale": 1.0,
        "info_weight": 0.0,
        "real_ratio": 1.0,
    }
    run_dir = tmp_path / "run"
    trainer = train(run_dir, **convex)
    assert trainer.learner.spec.model == "linear-gaussian" and trainer.learner.spec.full_batch
    assert trainer.learner.updates == 6
    document = json.loads((run_dir / "config.json").read_text())
    assert document["world_model"]["optimizer"] == "sgd" and document["train"]["wm_weight_decay"] == 0.1
    # One more step on the same data is gradient descent with η = 0.01 below 1/L: the objective falls.
    before = trainer.learner.full_batch_loss(trainer.primary)
    trainer.learner.update(trainer.primary, trainer.aux.buffers)
    assert trainer.learner.full_batch_loss(trainer.primary) < before
    result = amal("certify", str(run_dir))
    assert result.returncode == 0 and "6/6" in result.stdout, result.stdout + result.stderr
    evaluated = amal("evaluate", str(run_dir), "--episodes", "1", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["world_model"]["finite"]


def test_a_normalised_world_model_replays_bit_for_bit_and_certifies(tmp_path: Path) -> None:
    # wm_normalise: the statistics are set from the primary buffer at each round's start, held as model
    # buffers (in the parameter digest), and replayed by certify from the recorded data alone; the run
    # also imagines rollouts (real_ratio 0.5) from the de-normalised predictions.
    run_dir = tmp_path / "run"
    trainer = train(run_dir, wm_normalise=True)
    assert trainer.learner.spec.normalise and trainer.learner.updates == 6
    assert json.loads((run_dir / "config.json").read_text())["train"]["wm_normalise"] is True
    # The last round (at 400 stored) set the statistics of the 400 recorded primary transitions.
    data = load_primary_stream(run_dir).tensors
    action = torch.nn.functional.one_hot(data["action"].long(), 2).to(torch.float32)
    expected = normalisation_statistics(data["obs"], action, data["reward"], data["next_obs"])
    state = load_checkpoint(run_dir / "checkpoint.pt", restore=False)["learner"]["model"]
    for key, value in expected.items():
        assert torch.equal(state[f"norm_{key}"], value.float().expand_as(state[f"norm_{key}"])), key
    # Resumed mid-run, the run is the same bit for bit.
    resumed = tmp_path / "resumed"
    train(resumed, wm_normalise=True, total_steps=300)
    Trainer.resume(resumed, total_steps=400).run()
    assert (resumed / "ledger.jsonl").read_bytes() == (run_dir / "ledger.jsonl").read_bytes()
    assert final_state_digests(resumed) == final_state_digests(run_dir)
    result = amal("certify", str(run_dir))
    assert result.returncode == 0 and "6/6" in result.stdout and "CERTIFIED" in result.stdout, result.stdout
    split = certify_run(run_dir, write=False, fresh_process=True, jobs=3)  # one process per member
    assert split.ok and split.environment["replay_processes"] == "3", (split.problems, split.environment)
    assert "replay_split" not in split.environment  # the split was exact and decided
    evaluated = amal("evaluate", str(run_dir), "--episodes", "1", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["world_model"]["fit"]["training_transitions"] == 400


def test_cli_selects_the_world_model_options(tmp_path: Path) -> None:
    args = ["train", "--out", str(tmp_path / "run"), "--steps", "10", "--no-progress"]
    result = amal(*args, "--set", "wm_model=linear-gaussian")
    assert result.returncode == 2 and "ensemble_size must be 1" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    bad = amal(*args, "--set", "wm_normalise=maybe")
    assert bad.returncode == 2 and "wm_normalise must be true or false, got 'maybe'" in bad.stderr, bad.stderr


def test_extreme_auxiliary_settings_found_by_the_theorem_1_property(tmp_path: Path) -> None:
    # Regressions: aux_ratio=1 (no primary rows in policy batches or rollout starts) crashed with
    # sample(0); a CEM variance floor above the initial std was refused by CEM.
    trainer = train(tmp_path / "run", aux_ratio=1.0, cem_std_floor=2.0, total_steps=300)
    assert trainer.learner.updates == 4 and len(trainer.imagined) > 0


def test_aux_seed_varies_the_auxiliary_side_only(tmp_path: Path) -> None:
    base = {
        "total_steps": 200,
        "learning_starts": 100,
        "random_steps": 200,
        "aux_ratio": 0.0,
        "real_ratio": 1.0,
    }
    runs = [train(tmp_path / f"aux-{s}", aux_seed=s, **base) for s in (1, 2)]
    default = train(tmp_path / "default", **base)
    aux_rows = [torch.cat([b.state_dict()["obs"].elem for b in t.aux.buffers]) for t in (*runs, default)]
    assert not torch.equal(aux_rows[0], aux_rows[1])  # the auxiliary agents really did other things
    ledgers = [(t.run_dir / "ledger.jsonl").read_text().splitlines()[1:] for t in (*runs, default)]
    updates = [
        [{k: json.loads(r)[k] for k in ("batch_digest", "param_digest")} for r in rows] for rows in ledgers
    ]
    assert updates[0] == updates[1] == updates[2]
    # Configurations without it keep their documents (and digests): the key appears only when set.
    assert "aux_seed" not in tiny().to_json() and tiny(aux_seed=3).to_json()["aux_seed"] == 3
    with pytest.raises(ValueError, match="aux_seed must be None or a non-negative integer"):
        tiny(aux_seed=-1)


def _forge_last_record(run_dir: Path, **fields: Any) -> int:
    """Replace the ledger's last record by one with ``fields`` changed, correctly chained, and point
    ``run.json`` at it: only the replay's comparison can tell."""
    from amal_verified.record.ledger import Ledger

    path = run_dir / "ledger.jsonl"
    lines = path.read_text().splitlines()
    last = json.loads(lines[-1])
    path.write_text("\n".join(lines[:-1]) + "\n")
    ledger = Ledger.open(run_dir)
    values = {
        "batch": last["batch_digest"],
        "params": last["param_digest"],
        "labels": list(last["labels"]),
    }
    values.update(fields)
    ledger.append(last["step"], values["batch"], values["params"], values["labels"])
    head = ledger.head
    ledger.close()
    status = json.loads((run_dir / "run.json").read_text())
    status["ledger_head"] = head
    (run_dir / "run.json").write_text(json.dumps(status))
    return int(last["step"])


@pytest.mark.parametrize(
    ("changed", "named"),
    [
        ({"batch": "0" * 64}, "batch digest"),
        ({"params": "f" * 64}, "parameter digest"),
        ({"labels": ["primary:real-env", "aux:aux-0"]}, "labels"),
    ],
)
def test_certify_compares_every_field_of_the_last_update(
    reference_run: Path, tmp_path: Path, changed: dict[str, Any], named: str
) -> None:
    run_dir = _copy(reference_run, tmp_path / "run")
    last = _forge_last_record(run_dir, **changed)
    cert = certify_run(run_dir, write=False, fresh_process=True)
    assert not cert.ok
    assert [p for p in cert.problems if p.startswith(f"update {last}: ")] == [
        p for p in cert.problems if named in p
    ], cert.problems
    assert any(p.startswith(f"update {last}: {named} differ") for p in cert.problems), cert.problems


def test_the_certificate_names_the_run_and_the_code_it_checked(reference_run: Path, tmp_path: Path) -> None:
    from amal_verified.record.ledger import verify
    from amal_verified.run.config import document_digest

    run_dir = _copy(reference_run, tmp_path / "run")
    done = amal("certify", str(run_dir), "--quiet")
    assert done.returncode == 0, done.stdout + done.stderr
    certificate = json.loads((run_dir / "certificate.json").read_text())
    assert certificate["format"] == "amal_verified.certificate/3" and certificate["ok"] is True
    assert (
        certificate["ledger_head"]
        == verify(run_dir).head
        == json.loads((run_dir / "run.json").read_text())["ledger_head"]
    )
    assert certificate["config_digest"] == document_digest(json.loads((run_dir / "config.json").read_text()))
    checked_at = datetime.datetime.fromisoformat(certificate["checked_at"])
    assert (
        checked_at.tzinfo is not None
        and abs(datetime.datetime.now(datetime.UTC) - checked_at).total_seconds() < 600
    )
    commit = certificate["environment"]["code_commit"]
    repo = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    assert commit == "unknown" or commit.removesuffix("-dirty") == repo


def test_certify_names_unknown_files(reference_run: Path, tmp_path: Path) -> None:
    run_dir = _copy(reference_run, tmp_path / "run")
    (run_dir / "notes.txt").write_text("left here")
    (run_dir / "data" / "extra.bin").write_bytes(b"\0")
    problems = certify_run(run_dir, write=False, fresh_process=True).problems
    assert any(p.startswith("notes.txt: unknown file in the run directory") for p in problems), problems
    assert any(p.startswith("data/extra.bin: unknown file in the data directory") for p in problems), problems


def test_certify_refuses_a_ledger_cut_by_its_last_round_with_run_json_edited_to_match(
    reference_run: Path, tmp_path: Path
) -> None:
    from amal_verified.record.ledger import verify

    run_dir = _copy(reference_run, tmp_path / "run")
    config = tiny()
    path = run_dir / "ledger.jsonl"
    lines = path.read_text().splitlines()
    kept = lines[: len(lines) - config.wm_updates_per_round]
    path.write_text("\n".join(kept) + "\n")
    status = json.loads((run_dir / "run.json").read_text())
    status["ledger_count"] = len(kept) - 1
    status["ledger_head"] = verify(run_dir).head
    (run_dir / "run.json").write_text(json.dumps(status))
    problems = certify_run(run_dir, write=False, fresh_process=True).problems
    assert any("the configuration implies" in p and "records cut or added" in p for p in problems), problems


def test_certify_refuses_a_changed_final_world_model(reference_run: Path, tmp_path: Path) -> None:
    from amal_verified.record.checkpoint import save_checkpoint

    run_dir = _copy(reference_run, tmp_path / "run")
    state = load_checkpoint(run_dir / "checkpoint.pt")
    name, tensor = next(iter(state["learner"]["model"].items()))
    state["learner"]["model"][name] = tensor + 1e-3  # the model a user would deploy, changed
    save_checkpoint(run_dir / "checkpoint.pt", state)
    problems = certify_run(run_dir, write=False, fresh_process=True).problems
    assert any(
        p.startswith("checkpoint.pt: its world model is not the one the last certified update")
        for p in problems
    )
