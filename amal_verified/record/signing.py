"""Signed statements: an anchor for a run's evidence held outside its directory.

The ledger and the checkpoint log prove that a run directory is internally consistent; someone able
to rewrite the directory can recompute every hash.  A *signature* over the run head (the last
checkpoint seal, which fixes the ledger head, the data manifest, the step count, the status and the
checkpoint) and over the certificate, made with a key kept elsewhere, ties the directory to what was
certified: ``amal certify RUN --sign KEY`` writes the envelope, ``amal certify --verify ENVELOPE
--public-key PUB RUN`` checks it.

Keys are ed25519 (RFC 8032) through the ``cryptography`` package, the optional ``[sign]`` extra (the
rest of the library never imports it).  :func:`generate_key` writes the private key as unencrypted
PKCS#8 PEM with mode 0600 and the public key beside it (``KEY.pub``, SubjectPublicKeyInfo PEM); the
key id is the SHA-256 (hex) of the raw 32-byte public key.

Envelope format (DSSE v1, https://github.com/secure-systems-lab/dsse)::

    {"payloadType": "application/vnd.in-toto+json",
     "payload": "<standard base64 of the statement's canonical JSON>",
     "signatures": [{"keyid": "<64 hex>", "sig": "<standard base64 of the ed25519 signature>"}]}

The signature is over ``PAE(payloadType, payload)`` (:func:`pae`), never over the JSON.  The payload is
an in-toto Statement v1 whose subject is the run's checkpoint file and whose predicate
(``predicateType`` :data:`PREDICATE_TYPE`) holds the run head, the ledger head and the certificate.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from amal_verified.common.runtime_checks import checked
from amal_verified.record.ledger import canonical_json

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "PAYLOAD_TYPE",
    "PREDICATE_TYPE",
    "STATEMENT_TYPE",
    "InvalidEnvelope",
    "SigningError",
    "generate_key",
    "pae",
    "sign_statement",
    "signing_key_id",
    "verify_envelope",
]

PAYLOAD_TYPE: Final = "application/vnd.in-toto+json"
STATEMENT_TYPE: Final = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE: Final = "urn:amal_verified:run-certificate:1"


class SigningError(ValueError):
    """A key or envelope file cannot be used (missing, unreadable, not a key): bad input, one line."""


class InvalidEnvelope(Exception):
    """The envelope does not verify: its signature, its key or its statement is wrong (one line)."""


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: ``"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body``,
    lengths as ASCII decimal byte counts."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def _raw_public(key: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _key_id(key: Ed25519PublicKey) -> str:
    """SHA-256 (hex) of the raw 32-byte ed25519 public key."""
    return hashlib.sha256(_raw_public(key)).hexdigest()


def _public_path(private: Path) -> Path:
    return private.with_name(private.name + ".pub")


@checked
def generate_key(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Create a new ed25519 key: the private key at ``path`` (mode 0600) and the public key at
    ``path.pub``; returns both paths.

    Refuses (``FileExistsError``) if either file exists, and leaves neither behind on failure.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private_path = Path(path)
    public_path = _public_path(private_path)
    for existing in (private_path, public_path):
        if existing.exists():
            raise FileExistsError(f"{existing} exists: a key is never overwritten; choose another --out")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    created: list[Path] = []
    try:
        for target, data, mode in ((private_path, private_pem, 0o600), (public_path, public_pem, 0o644)):
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            created.append(target)
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), mode)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
    except BaseException:
        for target in created:
            with contextlib.suppress(OSError):
                target.unlink()
        raise
    return private_path, public_path


def _read_key_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise SigningError(
            f"{what} {path} does not exist (create a key with: amal keygen --out KEY)"
        ) from None
    except OSError as exc:
        raise SigningError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None


def _load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """The ed25519 private key in the PEM file ``path``; :class:`SigningError` (one line) otherwise."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    data = _read_key_file(Path(path), "signing key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SigningError(
            f"signing key {path} is not an unencrypted PEM private key ({first}); create one with "
            "amal keygen --out KEY"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"signing key {path} is a {type(key).__name__}, not an ed25519 key")
    return key


def _load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """The ed25519 public key in the PEM file ``path``; :class:`SigningError` (one line) otherwise."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    data = _read_key_file(Path(path), "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SigningError(
            f"public key {path} is not a PEM public key ({first}); pass the KEY.pub that amal keygen wrote"
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningError(f"public key {path} is a {type(key).__name__}, not an ed25519 key")
    return key


@checked
def signing_key_id(path: str | os.PathLike[str]) -> str:
    """The key id of the ed25519 private key at ``path``, which is checked to be usable for signing;
    :class:`SigningError` (one line) if it is missing, unreadable or not an ed25519 PEM private key."""
    return _key_id(_load_private_key(path).public_key())


@checked
def sign_statement(statement: Mapping[str, Any], key_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The DSSE envelope of ``statement`` (canonical JSON) signed with the private key at ``key_path``
    (:class:`SigningError` as :func:`signing_key_id`)."""
    key = _load_private_key(key_path)
    payload = canonical_json(dict(statement))
    signature = key.sign(pae(PAYLOAD_TYPE, payload))
    return {
        "payloadType": PAYLOAD_TYPE,
        "payload": base64.b64encode(payload).decode("ascii"),
        "signatures": [
            {"keyid": _key_id(key.public_key()), "sig": base64.b64encode(signature).decode("ascii")}
        ],
    }


def _decode(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise InvalidEnvelope(f"not a DSSE envelope: {what} is not a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        try:
            return base64.urlsafe_b64decode(text)
        except (binascii.Error, ValueError):
            raise InvalidEnvelope(f"not a DSSE envelope: {what} is not base64") from None


@checked
def verify_envelope(envelope: Mapping[str, Any], public_key_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The statement of a DSSE ``envelope`` whose signature by the public key at ``public_key_path``
    verifies (:class:`SigningError`, one line, if that file is not an ed25519 PEM public key).

    :class:`InvalidEnvelope` (one line, naming what is wrong) if the envelope is malformed, has no
    signature by ``key`` (another key id), a signature that does not verify over the PAE of its
    payload (the payload, its type or the signature was changed), or a payload that is not an
    in-toto statement of :data:`PREDICATE_TYPE`.
    """
    from cryptography.exceptions import InvalidSignature

    key = _load_public_key(public_key_path)
    if set(envelope) != {"payloadType", "payload", "signatures"}:
        raise InvalidEnvelope(
            f"not a DSSE envelope: its keys are {sorted(envelope)}, not payloadType, payload and signatures"
        )
    payload_type = envelope["payloadType"]
    if payload_type != PAYLOAD_TYPE:
        raise InvalidEnvelope(f"payloadType is {payload_type!r}, not {PAYLOAD_TYPE!r}")
    payload = _decode(envelope["payload"], "payload")
    signatures = envelope["signatures"]
    if not isinstance(signatures, list) or not signatures:
        raise InvalidEnvelope("not a DSSE envelope: it holds no signature")
    wanted = _key_id(key)
    found = False
    for entry in signatures:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("keyid", ""), str):
            raise InvalidEnvelope("not a DSSE envelope: a signature is not {keyid, sig}")
        if entry.get("keyid", "") not in ("", wanted):
            continue
        found = True
        try:
            key.verify(_decode(entry.get("sig"), "sig"), pae(payload_type, payload))
        except InvalidSignature:
            continue
        break
    else:
        if not found:
            ids = ", ".join(str(e.get("keyid"))[:16] + "..." for e in signatures if isinstance(e, Mapping))
            raise InvalidEnvelope(
                f"signed by key {ids}, not by the public key given ({wanted[:16]}...): wrong key"
            )
        raise InvalidEnvelope(
            "the signature does not verify: the envelope's payload or signature was changed after signing"
        )
    try:
        statement = json.loads(payload.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidEnvelope(f"the signed payload is not JSON ({exc})") from None
    if (
        not isinstance(statement, dict)
        or statement.get("_type") != STATEMENT_TYPE
        or statement.get("predicateType") != PREDICATE_TYPE
        or not isinstance(statement.get("predicate"), dict)
    ):
        raise InvalidEnvelope(f"the signed payload is not an in-toto statement of {PREDICATE_TYPE}")
    return statement
