"""Tests for ``amal_verified.record.ledger``: digests, the hash chain, and tamper detection.

Tamper tests edit ``ledger.jsonl`` the way a person or a buggy tool would
(one field of one line, lines swapped, dropped, cut), then check that
:func:`verify` names the problem: its kind, line and field.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

import amal_verified.record.ledger as ledger_mod
from amal_verified.isolation.labels import Label, SourceKind
from amal_verified.isolation.tagging import aux, primary
from amal_verified.record.ledger import (
    LEDGER_FILENAME,
    Ledger,
    LedgerError,
    ProblemKind,
    RunHeader,
    batch_digest,
    canonical_json,
    config_digest,
    state_digest,
    verify,
)

HEADER = RunHeader.new("run-1", 7, {"lr": 3e-4, "batch": 256})
REAL = ["primary:real-env"]


def digest(i: int) -> str:
    return batch_digest([i], torch.full((2,), float(i)))


def make_ledger(run_dir: Path, n: int = 5) -> list[str]:
    """A ledger of ``n`` records with steps 10, 20, ...; returns the record hashes."""
    with Ledger.create(run_dir, HEADER) as ledger:
        for i in range(n):
            ledger.append((i + 1) * 10, digest(i), state_digest({"w": torch.full((3,), float(i))}), REAL)
        return [r.hash for r in ledger.records()]


def lines_of(run_dir: Path) -> list[str]:
    return (run_dir / LEDGER_FILENAME).read_text().splitlines()


def write_lines(run_dir: Path, lines: list[str]) -> None:
    (run_dir / LEDGER_FILENAME).write_text("".join(line + "\n" for line in lines))


def edit_field(run_dir: Path, line: int, key: str, value: Any) -> None:
    lines = lines_of(run_dir)
    obj = json.loads(lines[line - 1])
    obj[key] = value
    lines[line - 1] = canonical_json(obj).decode()
    write_lines(run_dir, lines)


def found(run_dir: Path, **kw: Any) -> set[tuple[ProblemKind, int | None, str | None]]:
    result = verify(run_dir, **kw)
    return {(p.kind, p.line, p.field) for p in result.problems}


# ---------------------------------------------------------------------------------------- digests


def test_digests_are_stable_known_values() -> None:
    # Fixed expected values (computed once): a change to the encoding, or a run or platform
    # giving different bytes, fails here.  Key order of the state_dict does not matter.
    assert batch_digest([0, 2], torch.arange(4, dtype=torch.float32)) == (
        batch_digest(torch.tensor([0, 2]), torch.arange(4, dtype=torch.float32))
    )
    b = batch_digest([0, 2], torch.arange(4, dtype=torch.float32))
    s = state_digest({"b": torch.zeros(2), "a": torch.ones(2, 2, dtype=torch.float64)})
    assert b == "2f00d9488590f1be7f34683520e0a626b124e90492e87a55d189a66e8d220b9d"
    assert s == "1300a5b0b4442d9312f33f83ee712c4fb0c518f7c9d1250b3df881ffbde94b3d"
    assert s == state_digest({"a": torch.ones(2, 2, dtype=torch.float64), "b": torch.zeros(2)})


def test_digest_encoding_is_the_documented_one() -> None:
    import hashlib
    import struct

    t = torch.tensor([1.0, -2.0], dtype=torch.float32)

    def enc(dtype: str, shape: tuple[int, ...], data: bytes) -> bytes:
        parts = [struct.pack("<Q", len(dtype)), dtype.encode(), struct.pack("<Q", len(shape))]
        parts += [struct.pack("<Q", n) for n in shape]
        return b"".join([*parts, struct.pack("<Q", len(data)), data])

    expected = hashlib.sha256(
        b"amal_verified.batch_digest/1\0"
        + struct.pack("<Q", 1)
        + enc("int64", (2,), struct.pack("<2q", 3, 5))
        + enc("float32", (2,), struct.pack("<2f", 1.0, -2.0))
    ).hexdigest()
    assert batch_digest([3, 5], t) == expected


def test_one_bit_change_changes_digest() -> None:
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    y = x.clone()
    y.view(torch.int32)[3, 2] ^= 1  # flip the lowest mantissa bit of one element
    assert not torch.equal(x.view(torch.int32), y.view(torch.int32))
    assert batch_digest([1], x) == batch_digest([1], x.clone())
    assert batch_digest([1], x) != batch_digest([1], y)
    assert batch_digest([1], x) != batch_digest([2], x)
    assert state_digest({"w": x}) != state_digest({"w": y})
    assert state_digest({"w": x}) != state_digest({"v": x})
    # dtype and shape are part of the digest, not just the bytes
    assert batch_digest([1], x) != batch_digest([1], x.reshape(4, 8))
    z = torch.zeros(4, dtype=torch.int32)
    assert batch_digest([], z) != batch_digest([], z.view(torch.float32))
    # tensors are separated: moving data between tensors changes the digest
    a, b = torch.arange(3.0), torch.arange(3.0, 5.0)
    assert batch_digest([], a, b) != batch_digest([], torch.arange(2.0), torch.arange(2.0, 5.0))


def test_digest_of_views_and_non_contiguous_equals_copy() -> None:
    x = torch.arange(12.0).reshape(3, 4)
    assert batch_digest([0], x.t()) == batch_digest([0], x.t().contiguous())
    assert state_digest({"w": x[:, 1]}) == state_digest({"w": x[:, 1].clone()})
    assert batch_digest([0], torch.zeros(0, 3)) != batch_digest([0], torch.zeros(3, 0))
    assert len(batch_digest([], torch.ones(2, dtype=torch.bfloat16), torch.ones(2, dtype=torch.bool))) == 64


def test_digest_of_tagged_tensors_is_plain_and_records_no_escape() -> None:
    import amal_verified as av

    av.clear_escapes()
    x = torch.randn(4, 3)
    p = primary(x.clone(), source="real-env")
    a = aux(x.clone(), source="aux-3")
    assert batch_digest(torch.tensor([1, 2]), p) == batch_digest([1, 2], x)
    assert batch_digest([1, 2], a) == batch_digest([1, 2], x)
    assert state_digest({"w": a}) == state_digest({"w": x})
    assert av.escapes() == []


def test_digest_rejects_bad_inputs() -> None:
    with pytest.raises(TypeError):
        batch_digest(torch.tensor([0.5]), torch.ones(1))
    with pytest.raises(TypeError):
        state_digest({"w": 3})  # type: ignore[dict-item]


# ---------------------------------------------------------------------------------------- chain


def test_chain_round_trip(tmp_path: Path) -> None:
    hashes = make_ledger(tmp_path, 4)
    result = verify(tmp_path)
    assert result.ok, result.problems
    assert result.head == hashes[-1]
    assert [r.step for r in result.records] == [10, 20, 30, 40]
    assert result.header == HEADER
    first = result.records[0]
    assert first.prev == HEADER.genesis
    assert all(r.prev == q.hash for q, r in zip(result.records, result.records[1:], strict=False))
    # every line is canonical JSON, one record per line
    for line in lines_of(tmp_path):
        assert canonical_json(json.loads(line)).decode() == line

    with Ledger.open(tmp_path, expected_head=hashes[-1], expected_count=4) as ledger:
        assert ledger.head == hashes[-1]
        assert len(ledger) == 4
        rec = ledger.append(50, digest(9), state_digest({}), Label.of(SourceKind.PRIMARY, "real-env"))
        assert rec.labels == ("primary:real-env",)
        assert rec.prev == hashes[-1]
    assert verify(tmp_path).head == rec.hash
    assert verify(tmp_path, expected_head=hashes[1]).ok  # an older checkpoint's head is fine


def test_empty_ledger_head_is_genesis(tmp_path: Path) -> None:
    Ledger.create(tmp_path, HEADER).close()
    assert verify(tmp_path).head == HEADER.genesis
    assert Ledger.open(tmp_path, expected_head=HEADER.genesis).head == HEADER.genesis


def test_create_refuses_existing(tmp_path: Path) -> None:
    make_ledger(tmp_path, 1)
    with pytest.raises(LedgerError, match="already exists"):
        Ledger.create(tmp_path, HEADER)


def test_append_contract(tmp_path: Path) -> None:
    with Ledger.create(tmp_path, HEADER) as ledger:
        ledger.append(5, digest(0), digest(1), ["primary:real-env", "primary:real-env", "aux:x"])
        assert ledger.records()[0].labels == ("aux:x", "primary:real-env")
        with pytest.raises(LedgerError, match="does not increase"):
            ledger.append(5, digest(0), digest(1), REAL)
        with pytest.raises(LedgerError, match="64 lowercase hex"):
            ledger.append(6, "abc", digest(1), REAL)
        with pytest.raises(LedgerError, match="not a source name"):
            ledger.append(6, digest(0), digest(1), ["real-env"])
        with pytest.raises(TypeError):
            ledger.append(6, digest(0), digest(1), "primary:real-env")
        with pytest.raises(TypeError):
            ledger.append(6.0, digest(0), digest(1), REAL)  # type: ignore[arg-type]
        assert len(ledger) == 1
    assert verify(tmp_path).ok
    with pytest.raises(LedgerError, match="closed"):
        ledger.append(7, digest(0), digest(1), REAL)


def test_second_writer_is_refused(tmp_path: Path) -> None:
    with Ledger.create(tmp_path, HEADER), pytest.raises(LedgerError, match="lock"):
        Ledger.open(tmp_path)


def test_sync_every_batches_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    ledger = Ledger.create(tmp_path, HEADER, sync_every=3)
    calls.clear()
    for i in range(7):
        ledger.append(i, digest(i), digest(i), REAL)
    assert len(calls) == 2  # after the 3rd and 6th append
    # Unsynced appends are already in the kernel (unbuffered os.write): a reader, or the same file
    # after the process is killed, sees all of them.
    assert len(verify(tmp_path).records) == 7
    ledger.close()
    assert len(calls) == 3


def test_config_digest_and_header_validation() -> None:
    assert config_digest({"a": 1, "b": [1, 2]}) == config_digest({"b": [1, 2], "a": 1})
    assert config_digest({"a": 1}) != config_digest({"a": 2})
    with pytest.raises(ValueError, match="config_digest"):
        RunHeader("r", 0, "xyz", "0", "0")
    with pytest.raises(ValueError, match="run_id"):
        RunHeader("", 0, config_digest({}), "0", "0")


# ---------------------------------------------------------------------------------------- tampering


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("step", 25),
        ("batch_digest", "0" * 64),
        ("param_digest", "f" * 64),
        ("labels", ["aux:aux-3"]),
        ("prev", "1" * 64),
    ],
)
def test_tampered_field_is_named(tmp_path: Path, key: str, value: Any) -> None:
    make_ledger(tmp_path)
    edit_field(tmp_path, 3, key, value)  # line 3 = the second record
    problems = found(tmp_path)
    assert (ProblemKind.TAMPERED, 3, key) in problems
    result = verify(tmp_path)
    assert not result.ok
    with pytest.raises(LedgerError, match=f"line 3.*{key}"):
        Ledger.open(tmp_path)


def test_tamper_with_recomputed_hash_is_caught_by_next_link(tmp_path: Path) -> None:
    make_ledger(tmp_path)
    lines = lines_of(tmp_path)
    obj = json.loads(lines[2])
    obj["param_digest"] = "e" * 64
    body = {k: v for k, v in obj.items() if k != "hash"}
    obj["hash"] = hashlib.sha256(canonical_json(body)).hexdigest()
    lines[2] = canonical_json(obj).decode()
    write_lines(tmp_path, lines)
    problems = found(tmp_path)
    assert (ProblemKind.TAMPERED, 3, "param_digest") in problems  # the diagnostic check names it
    assert (ProblemKind.BROKEN_LINK, 4, "prev") in problems  # the chain exposes it


def test_full_forgery_of_last_record_needs_expected_head(tmp_path: Path) -> None:
    """Rewriting the last record consistently (check and hash recomputed) defeats the chain alone."""
    hashes = make_ledger(tmp_path, 3)
    lines = lines_of(tmp_path)
    old = json.loads(lines[-1])
    lines.pop()
    write_lines(tmp_path, lines)
    with Ledger.open(tmp_path) as ledger:
        ledger.append(old["step"], "d" * 64, old["param_digest"], REAL)
    assert verify(tmp_path).ok
    assert (ProblemKind.MISSING_RECORDS, None, None) in found(tmp_path, expected_head=hashes[-1])


def test_edited_hash_field_is_named(tmp_path: Path) -> None:
    make_ledger(tmp_path)
    edit_field(tmp_path, 4, "hash", "a" * 64)
    problems = found(tmp_path)
    assert (ProblemKind.TAMPERED, 4, "hash") in problems


def test_reordered_records(tmp_path: Path) -> None:
    make_ledger(tmp_path)
    lines = lines_of(tmp_path)
    lines[2], lines[3] = lines[3], lines[2]
    write_lines(tmp_path, lines)
    problems = found(tmp_path)
    assert (ProblemKind.REORDERED, 3, "prev") in problems
    assert (ProblemKind.REORDERED, 4, "prev") in problems
    assert (ProblemKind.NON_MONOTONIC_STEP, 4, "step") in problems
    assert not any(k is ProblemKind.TAMPERED for k, _, _ in problems)
    with pytest.raises(LedgerError, match="out of order"):
        Ledger.open(tmp_path)


def test_first_record_moved_is_reordered(tmp_path: Path) -> None:
    make_ledger(tmp_path, 3)
    lines = lines_of(tmp_path)
    lines = [lines[0], lines[2], lines[1], lines[3]]
    write_lines(tmp_path, lines)
    problems = found(tmp_path)
    assert (ProblemKind.REORDERED, 2, "prev") in problems
    assert (ProblemKind.REORDERED, 3, "prev") in problems


def test_missing_middle_record(tmp_path: Path) -> None:
    make_ledger(tmp_path)
    lines = lines_of(tmp_path)
    del lines[3]
    write_lines(tmp_path, lines)
    assert found(tmp_path) == {(ProblemKind.BROKEN_LINK, 4, "prev")}


@pytest.mark.parametrize("key", ["seed", "run_id", "config_digest", "torch_version"])
def test_broken_header(tmp_path: Path, key: str) -> None:
    make_ledger(tmp_path, 2)
    value = {"seed": 8, "run_id": "run-2", "config_digest": "0" * 64, "torch_version": "9.9"}[key]
    edit_field(tmp_path, 1, key, value)
    assert (ProblemKind.BROKEN_HEADER, 1, None) in found(tmp_path)
    with pytest.raises(LedgerError, match="header"):
        Ledger.open(tmp_path)


def test_unparseable_or_wrong_header(tmp_path: Path) -> None:
    make_ledger(tmp_path, 1)
    lines = lines_of(tmp_path)
    write_lines(tmp_path, ["{not json", *lines[1:]])
    assert (ProblemKind.BROKEN_HEADER, 1, None) in found(tmp_path)
    write_lines(tmp_path, ['{"format":"other"}', *lines[1:]])
    assert (ProblemKind.BROKEN_HEADER, 1, None) in found(tmp_path)
    (tmp_path / LEDGER_FILENAME).write_bytes(b"")
    assert (ProblemKind.BROKEN_HEADER, 1, None) in found(tmp_path)


def test_non_monotonic_steps_in_a_consistent_chain(tmp_path: Path) -> None:
    """A chain written by other software that links correctly but repeats a step."""
    with Ledger.create(tmp_path, HEADER) as ledger:
        ledger.append(10, digest(0), digest(0), REAL)
        line, _ = ledger_mod._body(10, digest(1), digest(1), REAL, ledger.head)
        (tmp_path / LEDGER_FILENAME).open("ab").write(canonical_json(line) + b"\n")
    assert found(tmp_path) == {(ProblemKind.NON_MONOTONIC_STEP, 3, "step")}


def test_malformed_json(tmp_path: Path) -> None:
    make_ledger(tmp_path)
    lines = lines_of(tmp_path)
    lines[2] = lines[2][:-5] + "xx"
    write_lines(tmp_path, lines)
    problems = found(tmp_path)
    assert (ProblemKind.MALFORMED_JSON, 3, None) in problems
    lines = lines_of(tmp_path)
    lines[2] = '{"step": 1}'
    write_lines(tmp_path, lines)
    assert (ProblemKind.MALFORMED_RECORD, 3, "batch_digest") in found(tmp_path)
    lines[2] = lines[1].replace('"step":', '"step":1,"step":', 1)
    write_lines(tmp_path, lines)
    assert (ProblemKind.MALFORMED_JSON, 3, None) in found(tmp_path)  # duplicate key


def test_missing_records_at_end_needs_expected_head_or_count(tmp_path: Path) -> None:
    hashes = make_ledger(tmp_path, 5)
    lines = lines_of(tmp_path)
    write_lines(tmp_path, lines[:-2])  # whole records removed at the end: the chain is still valid
    assert verify(tmp_path).ok
    assert (ProblemKind.MISSING_RECORDS, None, None) in found(tmp_path, expected_head=hashes[-1])
    assert (ProblemKind.MISSING_RECORDS, None, None) in found(tmp_path, expected_count=5)
    assert verify(tmp_path, expected_head=hashes[2], expected_count=3).ok
    with pytest.raises(LedgerError, match="missing"):
        Ledger.open(tmp_path, expected_head=hashes[-1])


def test_missing_file(tmp_path: Path) -> None:
    assert found(tmp_path) == {(ProblemKind.MISSING_FILE, None, None)}
    with pytest.raises(LedgerError, match="no ledger"):
        Ledger.open(tmp_path)


# ---------------------------------------------------------------------------------------- partial tail


def test_partial_tail_detected_and_repaired(tmp_path: Path) -> None:
    hashes = make_ledger(tmp_path, 3)
    path = tmp_path / LEDGER_FILENAME
    complete = path.read_bytes()
    # a crash mid-append: half a line, no newline
    line, _ = ledger_mod._body(40, digest(3), digest(3), REAL, hashes[-1])
    path.write_bytes(complete + canonical_json(line)[:57])
    result = verify(tmp_path)
    assert result.partial_tail and result.partial_tail_bytes == 57
    assert {(p.kind, p.line) for p in result.problems} == {(ProblemKind.PARTIAL_TAIL, 5)}
    assert result.head == hashes[-1]
    with pytest.raises(LedgerError, match="repair_partial_tail=True"):
        Ledger.open(tmp_path)
    assert path.read_bytes() == complete + canonical_json(line)[:57]  # open without repair changes nothing
    with Ledger.open(tmp_path, repair_partial_tail=True) as ledger:
        assert path.read_bytes() == complete  # only the partial line went
        assert ledger.head == hashes[-1]
        ledger.append(40, digest(3), digest(3), REAL)
    assert verify(tmp_path, expected_count=4).ok


def test_repair_never_removes_a_complete_record_or_hides_other_damage(tmp_path: Path) -> None:
    make_ledger(tmp_path, 3)
    path = tmp_path / LEDGER_FILENAME
    before = path.read_bytes()
    with Ledger.open(tmp_path, repair_partial_tail=True):  # nothing to repair
        pass
    assert path.read_bytes() == before
    edit_field(tmp_path, 3, "step", 99)
    damaged = path.read_bytes() + b'{"ste'
    path.write_bytes(damaged)
    with pytest.raises(LedgerError, match="tampered"):
        Ledger.open(tmp_path, repair_partial_tail=True)
    assert path.read_bytes() == damaged


def test_failed_write_leaves_no_partial_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hashes = make_ledger(tmp_path, 2)
    ledger = Ledger.open(tmp_path)
    real_write = os.write

    def half_write(fd: int, data: Any) -> int:
        real_write(fd, bytes(data)[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", half_write)
    with pytest.raises(OSError, match="No space"):
        ledger.append(30, digest(2), digest(2), REAL)
    monkeypatch.undo()
    assert verify(tmp_path).ok
    assert ledger.head == hashes[-1]
    ledger.append(30, digest(2), digest(2), REAL)  # the ledger stays usable
    ledger.close()
    assert verify(tmp_path, expected_count=3).ok


def test_header_edit_with_no_records_needs_expected_head(tmp_path: Path) -> None:
    Ledger.create(tmp_path, HEADER).close()
    edit_field(tmp_path, 1, "seed", 99)
    assert verify(tmp_path).ok  # nothing chains to the header yet
    assert (ProblemKind.MISSING_RECORDS, None, None) in found(tmp_path, expected_head=HEADER.genesis)


def test_end_to_end_with_buffer_and_checkpoint(tmp_path: Path) -> None:
    """The intended use: digest a sampled primary batch and the parameters, append, checkpoint the head."""
    import amal_verified as av
    from amal_verified.record.checkpoint import load_checkpoint, save_checkpoint

    buf = av.PrimaryBuffer(50, obs_shape=(3,), action_shape=(2,), seed=0)
    x = torch.arange(30.0).reshape(10, 3)
    buf.add(obs=x, action=x[:, :2], reward=x[:, 0], next_obs=x + 1, done=torch.zeros(10))
    model = torch.nn.Linear(3, 1)
    av.clear_escapes()
    with Ledger.create(tmp_path, HEADER) as ledger:
        for step in range(3):
            batch = buf.sample(4)
            with torch.no_grad():
                model.weight.add_(0.01)
            ledger.append(
                step,
                batch_digest(
                    batch.indices, batch.obs, batch.action, batch.reward, batch.next_obs, batch.done
                ),
                state_digest(model.state_dict()),
                [str(s) for s in av.label_of(batch.obs)],
            )
        save_checkpoint(
            tmp_path / "ckpt.pt",
            {"model": model.state_dict(), "ledger_head": ledger.head, "ledger_count": len(ledger)},
        )
    assert av.escapes() == []
    ck = load_checkpoint(tmp_path / "ckpt.pt")
    result = verify(tmp_path, expected_head=ck["ledger_head"], expected_count=ck["ledger_count"])
    assert result.ok, result.problems
    assert result.records[-1].param_digest == state_digest(ck["model"])
    assert result.records[0].labels == ("primary:real-env",)


# ---------------------------------------------------------------------------------------- round ends


def test_round_end_is_recorded_exactly_verified_and_its_edits_named(tmp_path: Path) -> None:
    losses = [0.75, 0.1 + 0.2, 1e-310, float("nan")]
    with Ledger.create(tmp_path, HEADER) as ledger:
        ledger.append(1, digest(0), digest(1), REAL)
        rec = ledger.append(2, digest(2), digest(3), REAL, round_end=losses)
    assert rec.round_end == tuple(x.hex() for x in losses)
    plain, ended = (json.loads(line) for line in lines_of(tmp_path)[1:])
    assert "round_end" not in plain and "round_end" not in plain["check"]  # other records as before
    assert ended["round_end"] == [x.hex() for x in losses] and "round_end" in ended["check"]
    result = verify(tmp_path)
    assert result.ok and result.records[1].round_end == rec.round_end and result.records[0].round_end is None
    assert [float.fromhex(x) for x in rec.round_end][:3] == losses[:3]  # exact, not rounded
    edit_field(tmp_path, 3, "round_end", [(0.5).hex()])
    assert (ProblemKind.TAMPERED, 3, "round_end") in found(tmp_path)


@pytest.mark.parametrize(
    ("value", "message"), [([], "non-empty list"), (["0.5"], "float.hex"), ([0.5], "float.hex")]
)
def test_malformed_round_end_is_named(tmp_path: Path, value: Any, message: str) -> None:
    with Ledger.create(tmp_path, HEADER) as ledger:
        ledger.append(1, digest(0), digest(1), REAL, round_end=[0.5])
    edit_field(tmp_path, 2, "round_end", value)
    problems = verify(tmp_path).problems
    assert any(
        p.kind is ProblemKind.MALFORMED_RECORD and p.field == "round_end" and message in p.message
        for p in problems
    ), problems


def test_append_refuses_a_bad_round_end_and_writes_nothing(tmp_path: Path) -> None:
    with Ledger.create(tmp_path, HEADER) as ledger:
        for bad in ([], [True]):
            with pytest.raises(LedgerError, match="round_end must be a non-empty sequence"):
                ledger.append(1, digest(0), digest(1), REAL, round_end=bad)
        with pytest.raises(TypeError, match="round_end"):  # beartype, on the public API
            ledger.append(1, digest(0), digest(1), REAL, round_end=["0.5"])  # type: ignore[list-item]
        assert len(ledger) == 0
    assert len(lines_of(tmp_path)) == 1
