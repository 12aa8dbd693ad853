"""World-model rounds that stop on a held-out split of the primary data (``wm_holdout``), end to end:
the recorded stopping decisions, their replay by ``amal certify``, and tampering with them."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from _tiny_runs import amal, final_state_digests, tiny, train

from amal_verified.record.ledger import canonical_json
from amal_verified.run.certify import certify_run
from amal_verified.run.config import TrainConfig, rounds_completed_by
from amal_verified.run.trainer import Trainer

pytestmark = pytest.mark.slow

# Up to 40 updates per round, a check every 2 and a patience of 2: the tiny model's held-out loss
# flattens within a round, so rounds stop early, and not all at the same update.
HOLDOUT: dict[str, Any] = {
    "wm_holdout": 0.25,
    "wm_updates_per_round": 40,
    "wm_check_every": 2,
    "wm_patience": 2,
    "wm_lr": 0.01,
}


def _records(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "ledger.jsonl").read_text().splitlines()[1:]
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def holdout_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("holdout") / "run"
    train(run_dir, **HOLDOUT)
    return run_dir


def test_rounds_stop_on_the_held_out_loss_and_the_ledger_records_each_decision(holdout_run: Path) -> None:
    cfg = tiny(**HOLDOUT)
    records = _records(holdout_run)
    ends = [i for i, r in enumerate(records) if "round_end" in r]
    assert len(ends) == rounds_completed_by(cfg, cfg.total_steps) == 3
    assert ends[-1] == len(records) - 1
    lengths = [b - a for a, b in itertools.pairwise([-1, *ends])]
    assert all(1 <= n <= 40 for n in lengths) and min(lengths) < 40, lengths  # some round stopped early
    for i in ends:
        losses = [float.fromhex(x) for x in records[i]["round_end"]]
        # the loss before the round, then one per check: every check_every updates, or at the limit
        n = lengths[ends.index(i)]
        assert len(losses) == 1 + n // 2  # the limit (40) is a multiple of check_every: no extra check
        assert records[i]["check"]["round_end"]
    assert all(
        set(r) == {"step", "batch_digest", "param_digest", "labels", "prev", "check", "hash"}
        for j, r in enumerate(records)
        if j not in ends
    )


def test_a_held_out_run_is_reproducible_resumes_bit_for_bit_and_certifies(
    holdout_run: Path, tmp_path: Path
) -> None:
    resumed = tmp_path / "resumed"
    train(resumed, **{**HOLDOUT, "total_steps": 300})
    Trainer.resume(resumed, total_steps=400).run()
    assert (resumed / "ledger.jsonl").read_bytes() == (holdout_run / "ledger.jsonl").read_bytes()
    assert final_state_digests(resumed) == final_state_digests(holdout_run)
    result = amal("certify", str(holdout_run), "--no-write")
    assert result.returncode == 0 and "CERTIFIED" in result.stdout, result.stdout + result.stderr
    # The member split needs the whole ensemble's held-out loss: one process.
    cert = certify_run(holdout_run, write=False, fresh_process=True, jobs=3)
    assert cert.ok and cert.environment["replay_processes"] == "1", (cert.problems, cert.environment)


def test_evaluate_reports_the_fit_on_the_runs_own_held_out_transitions(holdout_run: Path) -> None:
    result = amal("evaluate", str(holdout_run), "--episodes", "1", "--json")
    assert result.returncode == 0, result.stderr
    world_model = json.loads(result.stdout)["world_model"]
    split = world_model["fit_run_held_out"]
    # 400 recorded transitions, about a quarter held out; the naive predictors learn from the rest.
    assert 60 <= split["transitions"] <= 140
    assert split["training_transitions"] + split["transitions"] == 400
    assert world_model["fit"]["training_transitions"] == split["training_transitions"]


def _rewrite(run_dir: Path, edit: Any) -> None:
    """Apply ``edit`` to the ledger's records, then recompute every check, hash and link after it and
    ``run.json``'s head: a tampering that leaves the chain consistent."""
    from amal_verified.record.ledger import _body

    path = run_dir / "ledger.jsonl"
    lines = path.read_text().splitlines()
    header = json.loads(lines[0])
    records = [json.loads(line) for line in lines[1:]]
    edit(records)
    import hashlib

    prev = hashlib.sha256(canonical_json(header)).hexdigest()
    out = [lines[0]]
    for r in records:
        line, prev = _body(
            r["step"], r["batch_digest"], r["param_digest"], r["labels"], prev, r.get("round_end")
        )
        out.append(canonical_json(line).decode())
    path.write_text("\n".join(out) + "\n")
    status = json.loads((run_dir / "run.json").read_text())
    status.update(ledger_head=prev, ledger_count=len(records))
    (run_dir / "run.json").write_text(json.dumps(status))


@pytest.mark.parametrize(
    ("name", "edit", "named"),
    [
        (
            "a loss changed",
            lambda rs: next(r for r in rs if "round_end" in r)["round_end"].__setitem__(0, (1.5).hex()),
            "round end (held-out losses)",
        ),
        (
            "a round end moved one update earlier",
            lambda rs: rs[next(i for i, r in enumerate(rs) if "round_end" in r) - 1].__setitem__(
                "round_end", rs[next(i for i, r in enumerate(rs) if "round_end" in r)].pop("round_end")
            ),
            "round end (held-out losses)",
        ),
        ("the last round cut", lambda rs: rs.__delitem__(slice(-1, None)), "does not end a round"),
    ],
)
def test_tampered_stopping_decisions_are_refused_by_name(
    holdout_run: Path, tmp_path: Path, name: str, edit: Any, named: str
) -> None:
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(holdout_run, run_dir)
    _rewrite(run_dir, edit)
    cert = certify_run(run_dir, write=False, fresh_process=True)
    assert not cert.ok, name
    assert any(named in p for p in cert.problems), (name, cert.problems)


def test_holdout_settings_are_checked_with_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="wm_holdout"):
        TrainConfig(**{**tiny().__dict__, "wm_holdout": 0.75})
    with pytest.raises(ValueError, match="wm_full_batch=false"):
        tiny(wm_holdout=0.2, wm_full_batch=True)
    with pytest.raises(ValueError, match="unsafe_mix=false"):
        tiny(wm_holdout=0.2, unsafe_mix=True)
    args = ["train", "--out", str(tmp_path / "run"), "--steps", "10", "--no-progress"]
    result = amal(*args, "--set", "wm_patience=0")
    assert result.returncode == 2 and "wm_patience" in result.stderr and "Traceback" not in result.stderr
