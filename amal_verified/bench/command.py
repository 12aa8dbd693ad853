"""``amal bench``: plan, run, measure the ratios, write ``RESULTS.md`` (see :mod:`.runner`).

Exit codes: 0 every cell ran (or was skipped as not applicable, with its reason in the report);
1 a cell failed (its traceback is in ``OUT/failed/``; every other result is kept and reported);
2 bad usage (unknown task or method, a task without a budget for the mode).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from amal_verified.bench.methods import METHODS
from amal_verified.bench.runner import LEVELS_FILE, BenchPlan, collect, run_benchmark
from amal_verified.bench.tasks import TASKS, suite, task_by_name
from amal_verified.run_config import write_json_atomic

__all__ = ["run_bench_command"]

_METADATA_FILE = "metadata.json"

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


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _git_commit() -> str:
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return commit + (" (with uncommitted changes)" if dirty else "")


def _embedded(markdown: str) -> str:
    """The ratio table's own ``## heading`` becomes a bold line under the report's section heading."""
    first, _, rest = markdown.partition("\n")
    if first.startswith("## "):
        return f"**{first.removeprefix('## ')}**\n{rest}"
    return markdown


def _networks(plan: BenchPlan) -> dict[str, str]:
    from amal_verified.bench.methods import AMAL_METHODS, amal_config
    from amal_verified.envs import task_info
    from amal_verified.trainer import world_model_spec

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
    from amal_verified.bench.report import Skipped, write_results
    from amal_verified.bench.stats import load_levels

    if args.list:
        return _list()
    mode = args.mode
    tasks = tuple(task_by_name(n) for n in args.tasks) if args.tasks else suite(mode)
    out: Path = args.out if args.out is not None else Path("bench-results") / mode
    plan = BenchPlan(
        mode=mode,
        tasks=tasks,
        methods=tuple(args.methods) if args.methods else METHODS,
        seeds=tuple(args.seeds),
        out=out,
        jobs=args.jobs,
        budget=args.budget,
        eval_episodes=args.eval_episodes,
        ratios=not args.no_ratios,
        keep_runs=args.keep_runs,
    )
    started = datetime.datetime.now(datetime.UTC)
    ratios_md = out / "ratios.md"
    if args.report_only:
        outcome = collect(out, plan.cells())
    else:
        outcome = run_benchmark(plan)
        if plan.ratios:
            from amal_verified.bench.ratios import measure_ratios

            print("measuring the performance ratios (alone: no other cell is running)")
            ratios = measure_ratios(quick=mode == "quick", out=out / "ratios.json")
            ratios_md.write_text(ratios.to_markdown())
    if not (out / LEVELS_FILE).exists():
        raise ValueError(f"{out / LEVELS_FILE} is missing: run the benchmark before --report-only")
    measured = load_levels(out / LEVELS_FILE)
    levels = {
        t.name: {seed: lv for seed, lv in measured.get(t.name, {}).items() if seed in plan.seeds}
        for t in plan.tasks
    }
    skipped = sorted(
        {(key.split("__")[0], key.split("__")[1], reason) for key, reason in outcome.skipped.items()}
    )
    metadata: dict[str, Any] = {
        "command": "amal bench " + shlex.join(argv[1:] if argv and argv[0] == "bench" else argv),
        "mode": mode,
        "seeds": list(plan.seeds),
        "jobs": plan.jobs,
        "budget_override": plan.budget,
        "versions": _versions(),
        "git_commit": _git_commit(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "start": started.strftime("%Y-%m-%d %H:%M UTC"),
        "end": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "networks": _networks(plan),
    }
    metadata_file = out / _METADATA_FILE
    if args.report_only:
        # The document must name the command that produced the records, not this rewrite of it.
        if metadata_file.exists():
            produced = json.loads(metadata_file.read_text())
            metadata = {
                **produced,
                "report_rewritten": metadata["start"],
                "report_command": metadata["command"],
            }
    else:
        write_json_atomic(metadata_file, metadata)
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
    )
    print(
        f"wrote {results} ({len(outcome.records)} runs, {len(skipped)} skipped, {len(outcome.failed)} failed)"
    )
    for key in sorted(outcome.failed):
        print(f"FAILED {key}: see {out / 'failed' / (key + '.json')}")
    return 1 if outcome.failed else 0
