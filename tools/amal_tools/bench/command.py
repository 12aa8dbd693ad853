"""``amal bench``: plan, run, measure the ratios, write ``RESULTS.md`` (see :mod:`.runner`).

Exit codes: 0 every cell ran (or was skipped as not applicable, with its reason in the report);
1 a cell failed (its traceback is in ``OUT/failed/``; every other result is kept and reported);
2 bad usage (unknown task or method, a task without a budget for the mode).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from amal_tools.bench.executors import choose_backend
from amal_tools.bench.methods import METHODS
from amal_tools.bench.runner import LEVELS_FILE, BenchPlan, code_commit, collect, run_benchmark, utc_now
from amal_tools.bench.tasks import SEEDS, TASKS, suite, task_by_name
from amal_tools.compliance.provenance import tool_versions
from amal_verified.record.files import write_json_atomic

__all__ = ["run_bench_command"]

_METADATA_FILE = "metadata.json"
_INTERRUPTED: Final = "interrupted (no end recorded)"

_PACKAGES = (
    "amal_verified",
    "torch",
    "numpy",
    "gymnasium",
    "mujoco",
    "minigrid",
    "stable_baselines3",
    "ortools",
    "scipy",
    "matplotlib",
)


def _sittings(previous: Mapping[str, Any] | None, mode: str, sitting: dict[str, Any]) -> list[dict[str, Any]]:
    """The sittings of the run in ``--out``: the earlier ones from ``previous`` metadata (same mode
    only; metadata from before sittings were recorded counts as one), then ``sitting``."""
    if previous is None or previous.get("mode") != mode:
        return [sitting]
    earlier = previous.get("sittings")
    if not isinstance(earlier, list):
        keys = ("command", "start", "end", "git_commit", "versions", "note")
        earlier = [{k: previous[k] for k in keys if k in previous}]
    return [*earlier, sitting]


def _read_metadata(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path} is not valid JSON ({exc}): restore it from version control or delete it"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def _metadata(
    plan: BenchPlan, sittings: list[dict[str, Any]], previous: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The run's ``metadata.json``: the last sitting's command, commit and versions at top level,
    the run's start (its first sitting's), the grid, every sitting, and the network sizes of every
    method run so far (``previous`` metadata's, updated with this plan's)."""
    earlier = previous.get("networks") if previous is not None and len(sittings) > 1 else None
    return {
        **sittings[-1],
        "mode": plan.mode,
        "seeds": list(plan.seeds),
        "jobs": plan.jobs,
        "backend": plan.backend,
        "budget_override": plan.budget,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "start": sittings[0].get("start", sittings[-1]["start"]),
        "networks": {**(earlier if isinstance(earlier, dict) else {}), **_networks(plan)},
        "sittings": sittings,
    }


def _embedded(markdown: str) -> str:
    """The ratio table's own ``## heading`` becomes a bold line under the report's section heading."""
    first, _, rest = markdown.partition("\n")
    if first.startswith("## "):
        return f"**{first.removeprefix('## ')}**\n{rest}"
    return markdown


def _networks(plan: BenchPlan) -> dict[str, str]:
    from amal_tools.bench.methods import AMAL_METHODS, amal_config
    from amal_verified.envs import task_info
    from amal_verified.run.trainer import world_model_spec

    sizes: dict[str, str] = {}
    if any(m in AMAL_METHODS for m in plan.methods):
        task = plan.tasks[0]
        config = amal_config(task.env_id, method="amal", seed=0, budget=plan.budget_of(task), mode=plan.mode)
        spec = world_model_spec(config, task_info(task.env_id))
        encoder, decoder = "-".join(map(str, spec.encoder_sizes)), "-".join(map(str, spec.decoder_sizes))
        sizes["AMAL world model"] = (
            f"{spec.members} members; encoder {encoder}, GRU {spec.gru_hidden}, decoder {decoder} "
            "(paper: 256-256-128, GRU 256, 128-256-256)"
        )
        sizes["AMAL policy"] = (
            f"actor and critic {config.policy_hidden}-{config.policy_hidden} (paper: 256-256)"
        )
        sizes["AMAL auxiliary agents"] = (
            f"{config.num_aux_agents} agents, MLP {config.aux_hidden}, CEM population "
            f"{config.cem_population} (paper: 16 agents, population 100); "
            f"M = {config.mi_outer_samples} information-gain samples (paper: 100)"
        )
    if any(not m.startswith("amal") and m != "unsafe-mix" for m in plan.methods):
        sizes["baselines"] = (
            "Stable-Baselines3 default networks; CEM-RL and PBT sizes in each record's extras"
        )
    return sizes


OUTSIDE: Final = "<outside the repository>"


def portable_command(argv: Sequence[str], root: Path | None = None) -> str:
    """The ``amal bench`` command line as recorded in committed results: an argument that is an absolute
    path (alone or after ``--option=``) is written relative to ``root`` (the working directory) when it
    lies inside it, and as ``<outside the repository>/NAME`` otherwise, so that no record names a
    machine's directories."""
    base = (root or Path.cwd()).resolve()

    def portable(arg: str) -> str:
        prefix, sep, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
        if not value.startswith(os.sep):
            return arg
        path = Path(value).resolve()
        shown = str(path.relative_to(base)) if path.is_relative_to(base) else f"{OUTSIDE}/{path.name}"
        return prefix + sep + shown

    words = list(argv[1:] if argv and argv[0] == "bench" else argv)
    return "amal bench " + shlex.join(portable(w) for w in words)


def _list() -> int:
    print("tasks (name, env id, family, quick / full budget, optimum from):")
    for t in TASKS.values():
        quick, full = t.budgets.get("quick"), t.budgets.get("full")
        print(
            f"  {t.name:<16} {t.env_id:<30} {t.family:<22} {quick or '-':>6} / {full or '-':<7} {t.reference}"
        )
    print("methods: " + ", ".join(METHODS))
    return 0


def run_bench_command(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """The ``amal bench`` handler (parsed ``args``; ``argv`` is recorded verbatim in the report)."""
    from amal_tools.bench.naive_predictors import NAIVE_ERRORS_FILE, update_naive_errors
    from amal_tools.bench.report import Skipped, write_results
    from amal_tools.bench.stats import load_levels

    if args.list:
        return _list()
    mode = args.mode
    tasks = tuple(task_by_name(n) for n in args.tasks) if args.tasks else suite(mode)
    out: Path = args.out if args.out is not None else Path("bench-results") / mode
    plan = BenchPlan(
        mode=mode,
        tasks=tasks,
        methods=tuple(args.methods) if args.methods else METHODS,
        seeds=tuple(args.seeds) if args.seeds else SEEDS[mode],
        out=out,
        jobs=args.jobs,
        backend=choose_backend(args.backend),
        budget=args.budget,
        eval_episodes=args.eval_episodes,
        ratios=not args.no_ratios,
        keep_runs=args.keep_runs,
    )
    started = utc_now()
    ratios_md = out / "ratios.md"
    sitting: dict[str, Any] = {
        "command": portable_command(argv),
        "start": started,
        "end": _INTERRUPTED,
        "git_commit": code_commit(),
        "versions": tool_versions(_PACKAGES),
    }
    metadata_file = out / _METADATA_FILE
    previous = _read_metadata(metadata_file)
    if args.report_only:
        outcome = collect(out, plan.cells())
        if not (outcome.records or outcome.skipped or outcome.failed):
            raise ValueError(f"{out} holds no result of this grid: run the benchmark before --report-only")
        sitting["end"] = utc_now()
        # The document must name the command that produced the records, not this rewrite of it.
        metadata = (
            _metadata(plan, [sitting])
            if previous is None
            else {**previous, "report_rewritten": started, "report_command": sitting["command"]}
        )
    else:
        sittings = _sittings(previous, mode, sitting)
        out.mkdir(parents=True, exist_ok=True)
        # Written before the cells run, so that a sitting cut short stays recorded.
        write_json_atomic(metadata_file, _metadata(plan, sittings, previous))
        outcome = run_benchmark(plan)
        if plan.ratios:
            from amal_tools.bench.ratios import measure_ratios

            print("measuring the performance ratios (alone: no other cell is running)")
            ratios = measure_ratios(quick=mode == "quick", out=out / "ratios.json")
            ratios_md.write_text(ratios.to_markdown())
        sitting["end"] = utc_now()
        metadata = _metadata(plan, sittings, previous)
        write_json_atomic(metadata_file, metadata)
    measured = load_levels(out / LEVELS_FILE) if (out / LEVELS_FILE).exists() else {}  # none: all skipped
    levels = {
        t.name: {seed: lv for seed, lv in measured.get(t.name, {}).items() if seed in plan.seeds}
        for t in plan.tasks
    }
    skipped = sorted(
        {(key.split("__")[0], key.split("__")[1], reason) for key, reason in outcome.skipped.items()}
    )
    results = args.results if args.results is not None else out / "RESULTS.md"
    write_results(
        results,
        outcome.records,
        levels,
        skipped=[Skipped(method=m, task=t, reason=r) for m, t, r in skipped],
        ratios_markdown=_embedded(ratios_md.read_text()) if ratios_md.exists() else None,
        metadata=metadata,
        plots_dir=out / "plots",
        failed=outcome.failed,
        pending=outcome.pending,
        naive_errors=update_naive_errors(out / NAIVE_ERRORS_FILE, outcome.records),
    )
    print(
        f"wrote {results} ({len(outcome.records)} runs, {len(skipped)} skipped, "
        f"{len(outcome.failed)} failed, {len(outcome.pending)} not run yet)"
    )
    for key in sorted(outcome.failed):
        print(f"FAILED {key}: see {out / 'failed' / (key + '.json')}")
    return 1 if outcome.failed else 0
