"""``amal certify`` refuses what it cannot certify: a run directory whose chains were recomputed around
an edit (the sealed checkpoint still holds the original configuration and ledger head: NOT CERTIFIED,
as ``amal train --resume`` refuses it), a path that is no run directory and a certificate target
inside the run directory (exit 2, one line, nothing written); and a new certificate never sits
beside an envelope that signed another one."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _tiny_runs import amal, copy_run, tiny

from amal_verified.record.ledger import canonical_json
from amal_verified.run.config import document_digest
from amal_verified.run.run_dir import RunDirectory
from amal_verified.run.trainer import Trainer

# End to end: the fixture trains a run.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete tiny run of 250 steps (world-model updates at step 200)."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    Trainer.create(tiny(total_steps=250), run_dir).run()
    return run_dir


def _sha(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj)).hexdigest()


def _forge(run_dir: Path, edit: Callable[[dict[str, Any], dict[str, Any]], None]) -> None:
    """Edit ``config.json`` and the ledger header (``edit(config, header)``), then recompute the config
    digest, every ledger record and seal, and ``run.json``'s ledger head; ``checkpoint.pt`` is left as
    it is (its SHA-256 still matches its seal)."""
    document = json.loads((run_dir / "config.json").read_text())
    lines = [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines()]
    header = lines[0]
    edit(document, header)
    (run_dir / "config.json").write_text(json.dumps(document))
    header["config_digest"] = document_digest(document)
    previous = _sha(header)
    genesis, heads, out = previous, {0: previous}, [header]
    for index, line in enumerate(lines[1:], start=1):
        record = {k: v for k, v in line.items() if k != "hash"}
        record["prev"] = previous
        record["check"] = {k: _sha(record[k])[:8] for k in record["check"]}
        record["hash"] = previous = _sha(record)
        heads[index] = previous
        out.append(record)
    (run_dir / "ledger.jsonl").write_text("".join(canonical_json(o).decode() + "\n" for o in out))
    seals, previous = [], genesis
    for line in (run_dir / "checkpoints.jsonl").read_text().splitlines():
        seal = {k: v for k, v in json.loads(line).items() if k != "hash"}
        seal["prev"] = previous
        seal["ledger_head"] = heads[seal["ledger_count"]]
        seal["hash"] = previous = _sha(seal)
        seals.append(seal)
    (run_dir / "checkpoints.jsonl").write_text("".join(canonical_json(s).decode() + "\n" for s in seals))
    status = json.loads((run_dir / "run.json").read_text())
    status["ledger_head"] = heads[len(lines) - 1]
    (run_dir / "run.json").write_text(json.dumps(status))


def _policy_lr(document: dict[str, Any], header: dict[str, Any]) -> None:
    document["train"]["policy_lr"] = 0.001


def _seed(document: dict[str, Any], header: dict[str, Any]) -> None:
    header["seed"] = 7


def _versions(document: dict[str, Any], header: dict[str, Any]) -> None:
    header["amal_verified_version"], header["torch_version"] = "0.0.1", "1.0.0"


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (_policy_lr, "checkpoint.pt disagrees with its seal"),
        (_seed, "config.json: its seed is not the seed 7 in the run's ledger header"),
        (_versions, "checkpoint.pt disagrees with its seal"),
    ],
)
def test_a_run_forged_around_its_sealed_checkpoint_is_not_certified_as_resume_refuses_it(
    finished: Path, tmp_path: Path, edit: Callable[[dict[str, Any], dict[str, Any]], None], named: str
) -> None:
    run_dir = copy_run(finished, tmp_path / "run")
    _forge(run_dir, edit)
    with pytest.raises(ValueError, match="the run directory was edited"):
        RunDirectory.read_for_resume(run_dir, None)
    done = amal("certify", str(run_dir))
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "Traceback" not in output
    assert f"NOT CERTIFIED: {run_dir}" in done.stdout
    assert named in done.stdout, output
    certificate = json.loads((run_dir / "certificate.json").read_text())
    assert certificate["ok"] is False and any(named in p for p in certificate["problems"])


def test_the_genuine_run_still_certifies_and_resumes(finished: Path, tmp_path: Path) -> None:
    run_dir = copy_run(finished, tmp_path / "run")
    config, state = RunDirectory.read_for_resume(run_dir, None)
    assert state["step"] == config.total_steps
    done = amal("certify", str(run_dir), "--quiet")
    assert done.returncode == 0 and done.stdout.startswith("CERTIFIED"), done.stdout + done.stderr


def test_certifying_a_signed_run_again_never_leaves_the_old_envelope(
    finished: Path, tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    run_dir = copy_run(finished, tmp_path / "run")
    envelope = run_dir / "certificate.dsse.json"
    assert amal("certify", str(run_dir), "--quiet", "--sign", str(keys[0])).returncode == 0
    assert envelope.is_file()
    again = amal("certify", str(run_dir), "--quiet")
    assert again.returncode == 0, again.stdout + again.stderr
    assert not envelope.exists()
    assert [line for line in again.stdout.splitlines() if line.startswith("removed")] == [
        f"removed {envelope}: it signed the previous certificate, not this one"
    ]
    for _ in range(2):  # signing again replaces the envelope, which then matches the new certificate
        signed = amal("certify", str(run_dir), "--quiet", "--sign", str(keys[0]))
        assert signed.returncode == 0 and f"signed: {envelope}" in signed.stdout, signed.stdout
        verified = amal("certify", "--verify", str(envelope), "--public-key", str(keys[1]), str(run_dir))
        assert verified.returncode == 0 and verified.stdout.startswith("VALID:"), verified.stdout


def _bad_input(done: Any, fragment: str) -> None:
    """Exit 2, one line on standard error naming the problem, no replay and no verdict."""
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("amal certify: error:") and fragment in lines[0], lines


def test_a_path_that_is_no_run_directory_is_bad_input_and_nothing_is_written(tmp_path: Path) -> None:
    _bad_input(amal("certify", str(tmp_path / "nonexistent")), "does not exist")
    assert not (tmp_path / "nonexistent").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    _bad_input(amal("certify", str(empty)), "is not a run directory")
    assert list(empty.iterdir()) == []
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("not a run\n")
    _bad_input(amal("certify", str(other), "--quiet"), "is not a run directory")
    assert [p.name for p in other.iterdir()] == ["notes.txt"]
    a_file = tmp_path / "file.json"
    a_file.write_text("{}")
    _bad_input(amal("certify", str(a_file)), "is not a directory")


def test_a_certificate_target_inside_the_run_directory_is_refused_before_replaying(
    finished: Path, tmp_path: Path
) -> None:
    run_dir = copy_run(finished, tmp_path / "run")
    for target in (run_dir / "data" / "c.json", run_dir / "mine.json", run_dir / "data" / ".." / "x.json"):
        _bad_input(amal("certify", str(run_dir), "--certificate", str(target)), "inside the run directory")
        assert not target.exists()
    assert not (run_dir / "certificate.json").exists()
    outside = tmp_path / "c.json"
    done = amal("certify", str(run_dir), "--quiet", "--certificate", str(outside))
    assert done.returncode == 0 and json.loads(outside.read_text())["ok"] is True, done.stdout + done.stderr
    default = amal("certify", str(run_dir), "--quiet", "--certificate", str(run_dir / "certificate.json"))
    assert default.returncode == 0, default.stdout + default.stderr
    assert amal("certify", str(run_dir), "--quiet").returncode == 0
