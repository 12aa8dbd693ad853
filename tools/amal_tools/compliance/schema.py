"""The JSON Schema of ``report.json`` (draft 2020-12) and its validation.

The runner validates every report before writing it; an invalid report is a bug in the
runner, reported as :class:`ReportSchemaError` naming the offending location.
"""

from __future__ import annotations

from typing import Any, Final

from amal_tools.compliance.obligation import Verdict

__all__ = ["SCHEMA", "SCHEMA_ID", "ReportSchemaError", "validate_report"]

SCHEMA_ID: Final = "https://amal-verified.invalid/schemas/compliance-report/v1.json"

_VERDICTS: Final = [v.value for v in Verdict]
_SHA256: Final = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_DIGESTS: Final = {"type": "object", "additionalProperties": _SHA256}
_VERSIONS: Final = {"type": "object", "additionalProperties": {"type": "string"}}

_CHECK: Final = {
    "type": "object",
    "additionalProperties": False,
    "required": [
        "name",
        "method",
        "target",
        "verdict",
        "detail",
        "command",
        "argv",
        "duration_s",
        "returncode",
        "counterexample",
        "logs",
        "settings",
        "evidence",
        "quick",
    ],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "method": {"enum": ["smt", "crosshair", "hypothesis", "measurement", "certificate", "coq"]},
        "target": {"type": "string", "minLength": 1},
        "verdict": {"enum": _VERDICTS},
        "detail": {"type": "string"},
        "command": {"type": ["string", "null"]},
        "argv": {"type": "array", "items": {"type": "string"}},
        "duration_s": {"type": "number", "minimum": 0},
        "returncode": {"type": ["integer", "null"]},
        "counterexample": {"type": ["string", "null"]},
        "logs": _DIGESTS,
        "settings": {"type": "object"},
        "evidence": {"type": "object"},
        "quick": {"type": "boolean"},
    },
}

_OBLIGATION: Final = {
    "type": "object",
    "additionalProperties": False,
    "required": [
        "id",
        "title",
        "paper",
        "claim",
        "assumptions",
        "kind",
        "verdict",
        "methods",
        "commands",
        "tool_versions",
        "seeds",
        "settings",
        "duration_s",
        "files",
        "logs",
        "counterexamples",
        "git_commit",
        "notes",
        "file",
        "checks",
    ],
    "properties": {
        "id": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]*$"},
        "title": {"type": "string", "minLength": 1},
        "paper": {"type": "string"},
        "claim": {"type": "string", "minLength": 1},
        "assumptions": {"type": "array", "items": {"type": "string"}},
        "kind": {"enum": ["claim", "refutation"]},
        "verdict": {"enum": _VERDICTS},
        "methods": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "commands": {"type": "array", "items": {"type": "string"}},
        "tool_versions": _VERSIONS,
        "seeds": {"type": "object"},
        "settings": {"type": "object"},
        "duration_s": {"type": "number", "minimum": 0},
        "files": _DIGESTS,
        "logs": _DIGESTS,
        "counterexamples": {"type": "array", "items": {"type": "string"}},
        "git_commit": {"type": ["string", "null"]},
        "notes": {"type": "string"},
        "file": {"type": "string"},
        "checks": {"type": "array", "items": _CHECK, "minItems": 1},
    },
}

SCHEMA: Final[dict[str, Any]] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SCHEMA_ID,
    "title": "amal_verified compliance report",
    "type": "object",
    "additionalProperties": False,
    "required": [
        "schema",
        "generated_at",
        "mode",
        "command",
        "git",
        "tools",
        "platform",
        "settings",
        "summary",
        "obligations",
        "plots",
    ],
    "properties": {
        "schema": {"const": SCHEMA_ID},
        "generated_at": {"type": "string", "format": "date-time"},
        "mode": {"enum": ["quick", "full"]},
        "command": {"type": "string"},
        "git": {
            "type": "object",
            "additionalProperties": False,
            "required": ["commit", "dirty"],
            "properties": {"commit": {"type": ["string", "null"]}, "dirty": {"type": ["boolean", "null"]}},
        },
        "tools": _VERSIONS,
        "platform": _VERSIONS,
        "settings": {"type": "object"},
        "summary": {
            "type": "object",
            "additionalProperties": False,
            "required": _VERDICTS,
            "properties": {v: {"type": "integer", "minimum": 0} for v in _VERDICTS},
        },
        "obligations": {"type": "array", "items": _OBLIGATION, "minItems": 1},
        "plots": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["file", "title", "sha256", "evidence"],
                "properties": {
                    "file": {"type": "string"},
                    "title": {"type": "string"},
                    "sha256": _SHA256,
                    "evidence": {"type": "string"},
                },
            },
        },
    },
}


class ReportSchemaError(ValueError):
    """``report.json`` does not follow :data:`SCHEMA`."""


def validate_report(report: Any) -> None:
    """Raise :class:`ReportSchemaError` (naming the first offending location) unless ``report`` is valid."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())
    errors = sorted(validator.iter_errors(report), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(top level)"
        raise ReportSchemaError(f"report.json invalid at {where}: {first.message} ({len(errors)} error(s))")
