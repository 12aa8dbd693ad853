"""Tamper evidence, through the Python API and the command line: every tampering of a finished run is
refused by name (``amal certify``: exit 1, no traceback), a changed checkpoint is refused on resume
and on loading in one line, and a signed certificate (DSSE envelope, ed25519) verifies only for the
unchanged run, the unchanged envelope and the right key."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _tiny_runs import amal, copy_run, tiny

import amal_verified as av
from amal_verified.record.checkpoint import load_checkpoint, save_checkpoint
from amal_verified.record.checkpoint_log import CheckpointLog, file_digest
from amal_verified.record.ledger import verify
from amal_verified.record.signing import pae
from amal_verified.run.certify import certify_run
from amal_verified.run.trainer import Trainer

# End to end: the fixtures train runs.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete tiny run (400 steps, updates at 200, 300, 400)."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    Trainer.create(tiny(), run_dir).run()
    return run_dir


@pytest.fixture(scope="module")
def unsampled_tail(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete run of 250 steps: its last update is at step 200, so transitions 200-249 were
    recorded but never sampled by the world model."""
    run_dir = tmp_path_factory.mktemp("tail") / "run"
    Trainer.create(tiny(total_steps=250), run_dir).run()
    return run_dir


def _refused(run_dir: Path, *named: str) -> str:
    """``amal certify`` refuses the run (exit 1, no traceback) and names every fragment."""
    done = amal("certify", str(run_dir))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1].startswith("NOT CERTIFIED")
    for fragment in named:
        assert fragment in done.stdout, done.stdout
    return done.stdout


def _problems(run_dir: Path) -> tuple[str, ...]:
    cert = certify_run(run_dir, write=False, fresh_process=True)
    assert not cert.ok
    return cert.problems


def _flip_bit(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    where = len(data) // 2 if offset is None else offset
    data[where] ^= 0x01
    path.write_bytes(bytes(data))


def _files(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------- the run


def test_the_run_head_seals_every_checkpoint(finished: Path) -> None:
    cert = certify_run(finished, write=False, fresh_process=True)
    assert cert.ok, cert.problems
    lines = [json.loads(line) for line in (finished / "checkpoints.jsonl").read_text().splitlines()]
    assert [(s["step"], s["status"], s["ledger_count"]) for s in lines] == [
        (0, "running", 0),
        (200, "running", 2),
        (400, "complete", 6),
    ]
    assert lines[0]["prev"] == verify(finished).genesis
    assert [s["prev"] for s in lines[1:]] == [s["hash"] for s in lines[:-1]]
    assert cert.run_head == lines[-1]["hash"]
    assert cert.checkpoint_digest == lines[-1]["checkpoint_digest"] == file_digest(finished / "checkpoint.pt")
    document = cert.to_json()
    assert document["format"] == "amal_verified.certificate/3" and document["run_head"] == cert.run_head


def test_a_ledger_cut_by_its_last_round_with_run_json_edited_is_refused(
    finished: Path, tmp_path: Path
) -> None:
    run_dir = copy_run(finished, tmp_path / "run")
    path = run_dir / "ledger.jsonl"
    lines = path.read_text().splitlines()
    kept = lines[: len(lines) - tiny().wm_updates_per_round]
    path.write_text("\n".join(kept) + "\n")
    status = json.loads((run_dir / "run.json").read_text())
    status["ledger_count"] = len(kept) - 1
    status["ledger_head"] = verify(run_dir).head
    (run_dir / "run.json").write_text(json.dumps(status))
    _refused(
        run_dir,
        "ledger.jsonl: holds 4 update(s), the last sealed checkpoint follows 6",
        "run.json: its status, step, ledger head or count differ from the last sealed checkpoint",
    )


def test_a_run_json_edited_to_another_status_is_refused(finished: Path, tmp_path: Path) -> None:
    run_dir = copy_run(finished, tmp_path / "run")
    status = json.loads((run_dir / "run.json").read_text())
    status["ledger_head"] = "0" * 64
    (run_dir / "run.json").write_text(json.dumps(status))
    problems = _problems(run_dir)
    assert any(p.startswith("run.json: its status, step, ledger head") for p in problems), problems


def test_extra_files_are_named(finished: Path, tmp_path: Path) -> None:
    run_dir = copy_run(finished, tmp_path / "run")
    (run_dir / "model-final.pt").write_bytes(b"\0")
    (run_dir / "data" / "notes.txt").write_text("left here")
    _refused(
        run_dir,
        "model-final.pt: unknown file in the run directory",
        "data/notes.txt: unknown file in the data directory",
    )


def test_unsampled_primary_transitions_rewritten_with_a_consistent_manifest_are_refused(
    unsampled_tail: Path, tmp_path: Path
) -> None:
    assert certify_run(unsampled_tail, write=False, fresh_process=True).ok
    run_dir = copy_run(unsampled_tail, tmp_path / "run")
    chunk = run_dir / "data" / "primary-0000000200-0000000250.pt"
    data = load_checkpoint(chunk)
    data["reward"] = data["reward"].clone()
    data["reward"][-1] += 1.0  # the last recorded transition: no update ever sampled it
    save_checkpoint(chunk, data)
    manifest_path = run_dir / "data" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["chunks"][-1]["sha256"] = file_digest(chunk)
    manifest_path.write_text(json.dumps(manifest))
    out = _refused(run_dir, "data/manifest.json: its chunks (files, ranges, SHA-256) are not those sealed")
    assert "replayed 2/2" in out  # the replay alone passes: the seal is what refuses it


def test_a_bit_flipped_checkpoint_is_refused_by_certify_resume_and_load_policy(
    finished: Path, tmp_path: Path
) -> None:
    run_dir = copy_run(finished, tmp_path / "run")
    _flip_bit(run_dir / "checkpoint.pt")
    _refused(run_dir, "checkpoint.pt: its SHA-256 is not the one sealed at the last checkpoint")
    before = _files(run_dir)
    resumed = amal("train", "--resume", "--out", str(run_dir), "--steps", "600", "--no-progress")
    assert resumed.returncode == 2, resumed.stdout + resumed.stderr
    assert resumed.stderr.count("\n") == 1 and "Traceback" not in resumed.stderr, resumed.stderr
    assert "checkpoint.pt: its SHA-256 is recorded by no seal in checkpoints.jsonl" in resumed.stderr
    assert _files(run_dir) == before  # refused: nothing changed
    # load_policy reads the file first: the zip's checksums or the seal refuse it.
    with pytest.raises(ValueError, match=r"recorded by no seal|is damaged") as refused:
        av.load_policy(run_dir)
    assert "\n" not in str(refused.value)


def test_a_bit_flipped_checkpoint_mid_run_is_not_resumed(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    trainer = Trainer.create(tiny(), run_dir)
    while trainer.step < 250:
        trainer.train_step()
    trainer.logger.close()
    trainer.files.close()  # the process dies; its step-200 checkpoint is then damaged on disk
    _flip_bit(run_dir / "checkpoint.pt", offset=(run_dir / "checkpoint.pt").stat().st_size // 3)
    with pytest.raises(ValueError, match="recorded by no seal"):
        Trainer.resume(run_dir)


def test_a_tampered_final_world_model_is_refused(finished: Path, tmp_path: Path) -> None:
    run_dir = copy_run(finished, tmp_path / "run")
    state = load_checkpoint(run_dir / "checkpoint.pt")
    name, tensor = next(iter(state["learner"]["model"].items()))
    state["learner"]["model"][name] = tensor + 1e-3  # the model a user would deploy, changed
    save_checkpoint(run_dir / "checkpoint.pt", state)
    _refused(
        run_dir,
        "checkpoint.pt: its SHA-256 is not the one sealed",
        "checkpoint.pt: its world model is not the one the last certified update",
    )
    with pytest.raises(ValueError, match="recorded by no seal"):
        av.load_policy(run_dir)


def test_seals_cut_from_the_end_are_refused(finished: Path, tmp_path: Path) -> None:
    run_dir = copy_run(finished, tmp_path / "run")
    log = run_dir / "checkpoints.jsonl"
    log.write_text("".join(log.read_text().splitlines(keepends=True)[:-1]))
    _refused(run_dir, "checkpoints.jsonl: the last sealed checkpoint is 'running' at step 200")


def test_an_edited_seal_is_refused(finished: Path, tmp_path: Path) -> None:
    run_dir = copy_run(finished, tmp_path / "run")
    log = run_dir / "checkpoints.jsonl"
    lines = log.read_text().splitlines()
    last = json.loads(lines[-1])
    last["checkpoint_digest"] = "0" * 64
    log.write_text("\n".join([*lines[:-1], json.dumps(last)]) + "\n")
    _refused(run_dir, "checkpoints.jsonl line 3: the seal was edited after it was written")


# ---------------------------------------------------------------------------------------- crashes


def test_a_seal_whose_checkpoint_never_landed_and_a_cut_seal_line_still_resume(
    finished: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    trainer = Trainer.create(tiny(), run_dir)
    while trainer.step < 250:
        trainer.train_step()
    trainer.logger.close()
    trainer.files.close()
    # Killed between sealing a checkpoint and renaming it into place, then while sealing another.
    seals = CheckpointLog.open(run_dir, verify(run_dir).genesis)
    seals.append(
        step=250,
        status="running",
        ledger_head=verify(run_dir).head or "",
        ledger_count=2,
        manifest=[],
        primary_transitions=0,
        checkpoint_digest="ab" * 32,
    )
    with open(run_dir / "checkpoints.jsonl", "ab") as f:
        f.write(b'{"checkpoint_digest":"')
    Trainer.resume(run_dir).run()
    assert (run_dir / "ledger.jsonl").read_bytes() == (finished / "ledger.jsonl").read_bytes()
    assert certify_run(run_dir, write=False, fresh_process=True).ok


def test_a_run_stopped_after_its_final_checkpoint_resumes_to_complete(finished: Path, tmp_path: Path) -> None:
    run_dir = copy_run(finished, tmp_path / "run")
    status = json.loads((run_dir / "run.json").read_text())
    # Killed after the final checkpoint replaced the previous one, before run.json said so.
    (run_dir / "run.json").write_text(json.dumps({**status, "status": "running"}))
    Trainer.resume(run_dir).run()
    assert json.loads((run_dir / "run.json").read_text()) == status
    assert certify_run(run_dir, write=False, fresh_process=True).ok


def test_a_run_of_checkpoint_format_1_is_refused_naming_the_format(finished: Path, tmp_path: Path) -> None:
    run_dir = copy_run(finished, tmp_path / "run")
    state = load_checkpoint(run_dir / "checkpoint.pt")
    state["format"] = 1
    save_checkpoint(run_dir / "checkpoint.pt", state)
    (run_dir / "checkpoints.jsonl").unlink()  # format 1 runs had no checkpoint log
    resumed = amal("train", "--resume", "--out", str(run_dir), "--steps", "600", "--no-progress")
    assert resumed.returncode == 2 and resumed.stderr.count("\n") == 1, resumed.stderr
    assert "checkpoint format 1 is not supported" in resumed.stderr, resumed.stderr
    _refused(run_dir, "checkpoints.jsonl: missing")


# ---------------------------------------------------------------------------------------- signing


def test_pae_is_the_dsse_encoding() -> None:
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites(tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    key = tmp_path / "key"
    done = amal("keygen", "--out", str(key))
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert (tmp_path / "key.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    before = key.read_bytes(), (tmp_path / "key.pub").read_bytes()
    again = amal("keygen", "--out", str(key))
    assert again.returncode == 2 and again.stderr.count("\n") == 1, again.stderr
    assert "never overwritten" in again.stderr
    assert (key.read_bytes(), (tmp_path / "key.pub").read_bytes()) == before


def _signed(finished: Path, tmp_path: Path, keys: tuple[Path, Path]) -> tuple[Path, Path]:
    run_dir = copy_run(finished, tmp_path / "run")
    done = amal("certify", str(run_dir), "--quiet", "--sign", str(keys[0]))
    assert done.returncode == 0, done.stdout + done.stderr
    envelope = run_dir / "certificate.dsse.json"
    assert f"signed: {envelope}" in done.stdout
    return run_dir, envelope


def _verify(envelope: Path, public: Path, *run: Path) -> subprocess.CompletedProcess[str]:
    done = amal("certify", "--verify", str(envelope), "--public-key", str(public), *map(str, run))
    assert "Traceback" not in done.stdout + done.stderr
    return done


def test_a_signed_certificate_verifies_against_its_run(
    finished: Path, tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    run_dir, envelope = _signed(finished, tmp_path, keys)
    document = json.loads(envelope.read_text())
    assert set(document) == {"payloadType", "payload", "signatures"}
    assert document["payloadType"] == "application/vnd.in-toto+json"
    statement = json.loads(base64.b64decode(document["payload"]))
    certificate = json.loads((run_dir / "certificate.json").read_text())
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicate"]["certificate"] == certificate
    assert statement["predicate"]["run_head"] == certificate["run_head"]
    assert statement["predicate"]["ledger_head"] == verify(run_dir).head
    assert statement["subject"] == [
        {"name": "checkpoint.pt", "digest": {"sha256": file_digest(run_dir / "checkpoint.pt")}}
    ]
    valid = _verify(envelope, keys[1], run_dir)
    assert valid.returncode == 0 and valid.stdout.startswith("VALID:"), valid.stdout + valid.stderr
    alone = _verify(envelope, keys[1])
    assert alone.returncode == 0 and alone.stdout.startswith("VALID:"), alone.stdout + alone.stderr


def _invalid(done: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.count("\n") == 1 and done.stdout.startswith("INVALID:"), done.stdout
    assert fragment in done.stdout, done.stdout


def test_a_modified_or_forged_envelope_is_invalid(
    finished: Path, tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    run_dir, envelope = _signed(finished, tmp_path, keys)
    original = json.loads(envelope.read_text())
    statement = json.loads(base64.b64decode(original["payload"]))

    def write(document: dict[str, Any]) -> None:
        envelope.write_text(json.dumps(document))

    statement["predicate"]["run_head"] = "0" * 64
    forged = {**original, "payload": base64.b64encode(json.dumps(statement).encode()).decode()}
    write(forged)
    _invalid(_verify(envelope, keys[1], run_dir), "the signature does not verify")
    signature = bytearray(base64.b64decode(original["signatures"][0]["sig"]))
    signature[0] ^= 1
    write(
        {
            **original,
            "signatures": [{**original["signatures"][0], "sig": base64.b64encode(signature).decode()}],
        }
    )
    _invalid(_verify(envelope, keys[1]), "the signature does not verify")
    write({**original, "payloadType": "text/plain"})
    _invalid(_verify(envelope, keys[1]), "payloadType")
    write({"payload": original["payload"]})
    _invalid(_verify(envelope, keys[1]), "not a DSSE envelope")


def test_an_envelope_checked_with_the_wrong_key_is_invalid(
    finished: Path, tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    _, envelope = _signed(finished, tmp_path, keys)
    other = tmp_path / "other-key"
    assert amal("keygen", "--out", str(other)).returncode == 0
    _invalid(_verify(envelope, other.with_name("other-key.pub")), "wrong key")
    # A signature by another key that claims the right key's id does not verify either.
    forger = tmp_path / "forger"
    assert amal("keygen", "--out", str(forger)).returncode == 0
    forged_dir = copy_run(finished, tmp_path / "forged")
    assert amal("certify", str(forged_dir), "--quiet", "--sign", str(forger)).returncode == 0
    forged = json.loads((forged_dir / "certificate.dsse.json").read_text())
    forged["signatures"][0]["keyid"] = json.loads(envelope.read_text())["signatures"][0]["keyid"]
    envelope.write_text(json.dumps(forged))
    _invalid(_verify(envelope, keys[1]), "the signature does not verify")


def test_a_valid_envelope_does_not_vouch_for_a_changed_run(
    finished: Path, tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    run_dir, envelope = _signed(finished, tmp_path, keys)
    certificate = json.loads((run_dir / "certificate.json").read_text())
    certificate["problems"] = ["edited"]
    (run_dir / "certificate.json").write_text(json.dumps(certificate))
    _invalid(_verify(envelope, keys[1], run_dir), "certificate: differs from the signed one in problems")
    (run_dir / "certificate.json").unlink()
    _flip_bit(run_dir / "checkpoint.pt")
    _invalid(_verify(envelope, keys[1], run_dir), "checkpoint.pt: its SHA-256 is not the one in the signed")
    # The envelope of another run does not match this one.
    other = copy_run(finished, tmp_path / "other")
    (other / "checkpoints.jsonl").write_text("")
    _invalid(_verify(envelope, keys[1], other), "run_head: the run's is None")


def test_signing_is_refused_without_a_usable_key_and_for_an_uncertified_run(
    finished: Path, tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    run_dir = copy_run(finished, tmp_path / "run")
    missing = amal("certify", str(run_dir), "--sign", str(tmp_path / "no-key"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr and "amal keygen" in missing.stderr
    assert missing.stderr.count("\n") == 1 and not (run_dir / "certificate.json").exists()
    not_a_key = tmp_path / "not-a-key"
    not_a_key.write_text("hello")
    bad = amal("certify", str(run_dir), "--sign", str(not_a_key))
    assert bad.returncode == 2 and "is not an unencrypted PEM private key" in bad.stderr, bad.stderr
    wrong_use = amal("certify", "--verify", str(run_dir / "x.dsse.json"))
    assert wrong_use.returncode == 2 and "--public-key" in wrong_use.stderr
    (run_dir / "notes.txt").write_text("")
    refused = amal("certify", str(run_dir), "--quiet", "--sign", str(keys[0]))
    assert refused.returncode == 1 and "not signed: only a CERTIFIED run is signed" in refused.stdout
    assert not (run_dir / "certificate.dsse.json").exists()


def test_without_cryptography_signing_names_the_extra_to_install(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['cryptography'] = None; from amal_verified.cli import main; "
        f"sys.exit(main(['keygen', '--out', {str(tmp_path / 'key')!r}]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "pip install 'amal_verified[sign]'" in done.stderr, done.stderr
    assert not os.path.exists(tmp_path / "key")


def test_the_certificate_names_no_path_of_the_machine(finished: Path, tmp_path: Path) -> None:
    run_dir = copy_run(finished, tmp_path / "run").resolve()
    status = json.loads((run_dir / "run.json").read_text())
    status["status"] = "running"
    (run_dir / "run.json").write_text(json.dumps(status))
    done = amal("certify", str(run_dir), "--quiet")
    assert done.returncode == 1, done.stdout + done.stderr
    text = (run_dir / "certificate.json").read_text()
    assert str(tmp_path.resolve()) not in text and "--resume --out $RUN_DIR" in text, text
