"""The run directory's file names, and how its JSON files are written and read.

JSON is written canonically (:func:`~amal_verified.record.ledger.canonical_json`) and atomically: a
reader sees the old file or the new one, never a part, also after a crash or power loss.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Final

from amal_verified.record.atomic import replace_atomically
from amal_verified.record.ledger import canonical_json

__all__ = [
    "CERTIFICATE_FILENAME",
    "CHECKPOINT_FILENAME",
    "CHECKPOINT_LOG_FILENAME",
    "CONFIG_FILENAME",
    "DATA_DIRNAME",
    "MANIFEST_FILENAME",
    "METRICS_FILENAME",
    "RUN_DIRECTORY_ENTRIES",
    "RUN_FILENAME",
    "SIGNED_CERTIFICATE_FILENAME",
    "TENSORBOARD_DIRNAME",
    "UNSAFE_MARKER_FILENAME",
    "read_json",
    "write_json_atomic",
]

CONFIG_FILENAME: Final = "config.json"
RUN_FILENAME: Final = "run.json"
CHECKPOINT_FILENAME: Final = "checkpoint.pt"
DATA_DIRNAME: Final = "data"
MANIFEST_FILENAME: Final = "manifest.json"
CERTIFICATE_FILENAME: Final = "certificate.json"
# The signed statement of ``amal certify --sign`` (a DSSE envelope), beside the certificate.
SIGNED_CERTIFICATE_FILENAME: Final = "certificate.dsse.json"
# One seal per checkpoint, chained to the ledger (``amal_verified.record.checkpoint_log``).
CHECKPOINT_LOG_FILENAME: Final = "checkpoints.jsonl"
UNSAFE_MARKER_FILENAME: Final = "UNSAFE_MIX"
# The training logs (written by ``amal_verified.run.logs``).
METRICS_FILENAME: Final = "metrics.csv"
TENSORBOARD_DIRNAME: Final = "tensorboard"
# Everything a run directory may hold at its top level: ``amal certify`` names anything else.
RUN_DIRECTORY_ENTRIES: Final = frozenset(
    {
        CONFIG_FILENAME,
        RUN_FILENAME,
        CHECKPOINT_FILENAME,
        DATA_DIRNAME,
        CERTIFICATE_FILENAME,
        SIGNED_CERTIFICATE_FILENAME,
        CHECKPOINT_LOG_FILENAME,
        UNSAFE_MARKER_FILENAME,
        METRICS_FILENAME,
        TENSORBOARD_DIRNAME,
        "ledger.jsonl",
    }
)


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Write canonical JSON to ``path`` atomically (temporary file ``.NAME.tmp``, fsync, rename, fsync
    directory).

    On any failure the temporary file is removed, ``path`` is untouched and the error is raised; an
    ``OSError`` (a full disk, a read-only directory) keeps its errno and names ``path``
    (:func:`~amal_verified.record.atomic.replace_atomically`).
    """
    target = Path(path)
    data = canonical_json(obj) + b"\n"
    replace_atomically(target.with_name(f".{target.name}.tmp"), target, lambda f: f.write(data))


def read_json(path: str | os.PathLike[str], what: str) -> Any:
    """Read a JSON file; ``ValueError`` naming ``what`` and the file if it is missing or malformed."""
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        raise ValueError(f"{what}: {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what}: {path} is not valid JSON ({exc})") from None
