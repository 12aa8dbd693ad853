"""``report.md`` and ``report.html`` from a report (jinja2 templates in ``templates/``).

The HTML is self-contained (plots embedded as data URIs) and autoescaped; the Markdown
links the plots in ``plots/``.  Both show each verdict exactly as ``report.json`` has it.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import jinja2

__all__ = ["render_html", "render_markdown"]

_TEMPLATES = Path(__file__).with_name("templates")


def _environment(autoescape: bool) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATES),
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=False,
    )


def _counts(report: dict[str, Any]) -> str:
    parts = [f"{n} {verdict}" for verdict, n in report["summary"].items() if n]
    return f"{len(report['obligations'])} obligations: " + ", ".join(parts) + "."


def _placed(report: dict[str, Any], plots: list[dict[str, Any]]) -> tuple[dict[str, list[Any]], list[Any]]:
    """Each plot under the first obligation one of whose checks recorded its evidence; the rest apart."""
    by_obligation: dict[str, list[Any]] = {}
    rest = []
    for plot in plots:
        owner = next(
            (
                o["id"]
                for o in report["obligations"]
                if any(plot["evidence"] in (c.get("evidence") or {}) for c in o["checks"])
            ),
            None,
        )
        if owner is None:
            rest.append(plot)
        else:
            by_obligation.setdefault(owner, []).append(plot)
    return by_obligation, rest


def render_markdown(report: dict[str, Any]) -> str:
    placed, rest = _placed(report, list(report["plots"]))
    return (
        _environment(False)
        .get_template("report.md.j2")
        .render(r=report, placed=placed, other_plots=rest, verdict_counts=_counts(report))
    )


def render_html(report: dict[str, Any], directory: Path) -> str:
    """HTML for ``report``; plot files are read from ``directory`` and embedded, each beside the
    obligation whose evidence it draws."""
    plots = [
        {**p, "data": base64.b64encode((directory / p["file"]).read_bytes()).decode("ascii")}
        for p in report["plots"]
    ]
    placed, rest = _placed(report, plots)
    return (
        _environment(True)
        .get_template("report.html.j2")
        .render(r=report, placed=placed, other_plots=rest, verdict_counts=_counts(report))
    )
