"""The checkpoint log: seals chained to the ledger's genesis, each edit or cut named, a cut last line
repaired only on request; and the DSSE signatures over a statement."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from amal_verified.record.checkpoint_log import (
    CheckpointLog,
    CheckpointLogError,
    manifest_digest,
    read_checkpoint_log,
)

GENESIS = "1" * 64


def _seal(log: CheckpointLog, step: int, status: str = "running") -> None:
    log.append(
        step=step,
        status=status,
        ledger_head="2" * 64,
        ledger_count=step // 100,
        manifest=[{"file": "primary-0000000000-0000000100.pt", "first": 0, "end": 100, "sha256": "3" * 64}],
        primary_transitions=step,
        checkpoint_digest=f"{step:064x}",
    )


def _three(tmp_path: Path) -> Path:
    log = CheckpointLog.open(tmp_path, GENESIS)
    for step in (0, 100, 200):
        _seal(log, step, "complete" if step == 200 else "running")
    return tmp_path / "checkpoints.jsonl"


def test_seals_chain_from_the_genesis_and_read_back(tmp_path: Path) -> None:
    _three(tmp_path)
    found = read_checkpoint_log(tmp_path, GENESIS)
    assert found.problems == () and [s.step for s in found.seals] == [0, 100, 200]
    assert found.seals[0].prev == GENESIS and found.seals[1].prev == found.seals[0].hash
    assert found.head == found.seals[-1].hash
    assert found.sealing(f"{100:064x}") == found.seals[1] and found.sealing("f" * 64) is None
    reopened = CheckpointLog.open(tmp_path, GENESIS)
    assert reopened.head == found.head and reopened.seals == found.seals


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (lambda lines: [lines[0], lines[2]], "line 2: 'prev' is not the hash of line 1"),
        (lambda lines: [*lines[:1], _edited(lines[1], step=150), *lines[2:]], "line 2: the seal was edited"),
        (lambda lines: [lines[1], *lines[2:]], "line 1: 'prev' is not the ledger's genesis"),
        (lambda lines: [*lines[:2], _edited(lines[2], format="x")], "line 3: format 'x' is not"),
        (lambda lines: [*lines[:2], "{"], "line 3: not valid JSON"),
    ],
)
def test_every_edit_is_named(tmp_path: Path, edit: Any, named: str) -> None:
    path = _three(tmp_path)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(edit(lines)) + "\n")
    found = read_checkpoint_log(tmp_path, GENESIS)
    assert len(found.problems) == 1 and named in found.problems[0], found.problems
    with pytest.raises(CheckpointLogError, match=r"checkpoints\.jsonl"):
        CheckpointLog.open(tmp_path, GENESIS, repair_partial_tail=True)


def _edited(line: str, **changes: Any) -> str:
    return json.dumps({**json.loads(line), **changes})


def test_another_runs_genesis_is_refused(tmp_path: Path) -> None:
    _three(tmp_path)
    assert "ledger's genesis" in read_checkpoint_log(tmp_path, "4" * 64).problems[0]


def test_a_cut_last_line_is_repaired_only_when_asked(tmp_path: Path) -> None:
    path = _three(tmp_path)
    complete = path.read_bytes()
    path.write_bytes(complete + b'{"checkpoint_digest":')
    found = read_checkpoint_log(tmp_path, GENESIS)
    assert found.partial_tail and len(found.seals) == 3 and "incomplete line" in found.problems[0]
    with pytest.raises(CheckpointLogError, match="incomplete line"):
        CheckpointLog.open(tmp_path, GENESIS)
    log = CheckpointLog.open(tmp_path, GENESIS, repair_partial_tail=True)
    assert path.read_bytes() == complete and len(log.seals) == 3
    _seal(log, 300)
    assert read_checkpoint_log(tmp_path, GENESIS).problems == ()


def test_a_missing_log_is_named_and_a_bad_seal_is_never_written(tmp_path: Path) -> None:
    assert "missing" in read_checkpoint_log(tmp_path, GENESIS).problems[0]
    log = CheckpointLog.open(tmp_path, GENESIS)
    with pytest.raises(ValueError, match="status"):
        _seal(log, 0, status="done")
    with pytest.raises(ValueError, match="checkpoint_digest"):
        log.append(
            step=0,
            status="running",
            ledger_head=GENESIS,
            ledger_count=0,
            manifest=[],
            primary_transitions=0,
            checkpoint_digest="not hex",
        )
    assert not (tmp_path / "checkpoints.jsonl").exists()


def test_the_manifest_digest_covers_every_field_of_every_chunk() -> None:
    chunk = {"file": "primary-0000000000-0000000100.pt", "first": 0, "end": 100, "sha256": "3" * 64}
    digests = {
        manifest_digest([chunk]),
        manifest_digest([{**chunk, "sha256": "4" * 64}]),
        manifest_digest([{**chunk, "end": 99}]),
        manifest_digest([]),
    }
    assert len(digests) == 4


def test_a_statement_signed_verifies_and_any_change_does_not(tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    import base64

    from amal_verified.record.signing import (
        InvalidEnvelope,
        SigningError,
        generate_key,
        sign_statement,
        signing_key_id,
        verify_envelope,
    )

    private, public = generate_key(tmp_path / "key")
    with pytest.raises(FileExistsError):
        generate_key(tmp_path / "key")
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [],
        "predicateType": "urn:amal_verified:run-certificate:1",
        "predicate": {"run_head": "5" * 64},
    }
    envelope = sign_statement(statement, private)
    assert envelope["signatures"][0]["keyid"] == signing_key_id(private)
    assert verify_envelope(envelope, public) == statement
    changed = json.dumps({**statement, "predicate": {"run_head": "6" * 64}}).encode()
    with pytest.raises(InvalidEnvelope, match="does not verify"):
        verify_envelope({**envelope, "payload": base64.b64encode(changed).decode()}, public)
    with pytest.raises(SigningError, match="not a PEM public key"):
        verify_envelope(envelope, private)
