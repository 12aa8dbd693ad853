"""World-model fit per task: does each run's world model beat "no change" and "the best constant"?

Two commands (results: ``benchmarks/README.md``, "World-model fit")::

    python benchmarks/wm_fit.py config TASK --steps 3000 > TASK.json   # the grid's AMAL configuration
    amal train --config TASK.json [--set wm_normalise=true ...] --out runs/TASK
    python benchmarks/wm_fit.py report runs/*                         # one table row per run

``config`` prints the full-mode AMAL configuration of the benchmark grid (``amal_tools.bench.methods.
amal_config``, method ``amal``, seed 0) for TASK (a catalogue name, ``amal bench --list``) and ``--steps``.

``report`` measures each run's final world model with :func:`amal_verified.world_model.fit.world_model_fit`
twice: on **held-out** transitions, those of ``amal evaluate``'s own episodes (``--episodes``, seed 12345;
:func:`amal_verified.run.evaluate.evaluate_run`), and **in sample**, on the primary transitions its last
update could sample (the rows that also give the naive predictors' statistics): a model that loses in sample
has not fitted its own data; one that wins in sample and loses held out does not generalise to the
states the trained policy visits.  As a reference for what the data allow, it also fits a linear least-squares
model ``[s', r] ≈ W [s, a, 1]`` to the first 80 % of those rows and scores it, with naive predictors fitted on
the same 80 %, on the last 20 % (a held-out split of the primary stream).  A run trained with a held-out
split (``wm_holdout > 0``) is also measured on its own held-out primary transitions among those rows
(``fit_run_held_out`` of ``amal evaluate``).  It prints a Markdown table, and
writes every report as JSON with ``--json FILE``.

``offline RUN --updates N --every K [--set lr=0.003 --set normalise=true]`` asks how many updates a world
model of the run's specification (with ``WorldModelSpec`` fields overridden, values in JSON) needs: it
trains one from scratch (seed 0) on the first 80 % of the run's primary rows, a round (``begin_round``)
every K updates, and prints the fit on the last 20 % after each round.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch


def _config(task: str, steps: int) -> dict[str, Any]:
    from amal_tools.bench.methods import amal_config
    from amal_tools.bench.tasks import task_by_name

    return amal_config(task_by_name(task).env_id, method="amal", seed=0, budget=steps, mode="full").to_json()


def _in_sample(run_dir: Path) -> dict[str, Any]:
    from amal_verified.common.rng_streams import RunStreams
    from amal_verified.record.primary_log import load_primary_stream
    from amal_verified.run.config import CONFIG_FILENAME, last_round_rows, read_json
    from amal_verified.run.trained_policy import read_run_checkpoint
    from amal_verified.world_model.fit import world_model_fit
    from amal_verified.world_model.learner import WorldModelLearner, WorldModelSpec

    config, state = read_run_checkpoint(run_dir, restore=True)
    spec = WorldModelSpec.from_json(read_json(run_dir / CONFIG_FILENAME, "run configuration")["world_model"])
    learner = WorldModelLearner(spec, RunStreams(config.seed), unsafe_mix=config.unsafe_mix)
    learner.load_state_dict(state["learner"])
    torch.set_num_threads(config.threads)
    window = last_round_rows(config, int(state["step"]))
    data = load_primary_stream(run_dir).tensors
    rows = {k: data[k][window] for k in ("obs", "action", "reward", "next_obs")}
    return {"fit": world_model_fit(learner, rows, rows).to_json(), "linear": _linear_reference(learner, rows)}


def _linear_reference(learner: Any, rows: dict[str, torch.Tensor]) -> dict[str, float]:
    """Least squares ``[s', r] ≈ W [s, a, 1]`` (ridge 1e-6 · N) on the first 80 % of ``rows``, scored on the
    last 20 % with the naive predictors fitted on the same 80 %: what a linear model of these data attains."""
    with torch.no_grad():
        x = torch.cat(
            [
                rows["obs"].double(),
                learner.encode_action(rows["action"]).double(),
                torch.ones(len(rows["reward"]), 1),
            ],
            dim=1,
        ).double()
        y = torch.cat([rows["next_obs"].double(), rows["reward"].double().unsqueeze(1)], dim=1)
        cut = int(0.8 * len(y))
        gram = x[:cut].T @ x[:cut] + 1e-6 * cut * torch.eye(x.shape[1], dtype=torch.float64)
        weight = torch.linalg.solve(gram, x[:cut].T @ y[:cut])
        test, obs = y[cut:], rows["obs"][cut:].double()
        linear, constant = x[cut:] @ weight - test, y[:cut].mean(0) - test
        no_change = torch.cat([obs, y[:cut, -1:].mean(0).expand(len(test), 1)], dim=1) - test
        return {
            f"{name}_{group}": float(err[:, cols].square().mean())
            for name, err in (("linear", linear), ("no_change", no_change), ("best_constant", constant))
            for group, cols in (("next_obs_mse", slice(0, -1)), ("reward_mse", slice(-1, None)))
        }


def _report(run_dirs: list[Path], episodes: int, out: Path | None) -> None:
    from amal_verified.run.evaluate import evaluate_run

    def g(x: float) -> str:
        return f"{x:.3g}"

    def verdict(fit: dict[str, Any]) -> str:
        return "**yes**" if fit["beats_naive"] else "no"

    reports: dict[str, Any] = {}
    print(
        "| run | updates | held-out next-obs MSE: model / no change / best constant | held-out reward MSE: "
        "model / constant | held out: beats both | in sample: next-obs model / no change / constant | "
        "in sample: reward model / constant | in sample: beats both | primary split, linear least squares: "
        "next-obs linear / no change / constant | reward linear / constant | run's held-out split "
        "(wm_holdout): next-obs model / no change / constant | reward model / constant | beats both |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for run_dir in run_dirs:
        evaluation = evaluate_run(run_dir, episodes=episodes)
        held = evaluation["world_model"]["fit"]
        own = _in_sample(run_dir)
        updates = json.loads((run_dir / "run.json").read_text())["world_model_updates"]
        reports[run_dir.name] = {"held_out": held, "in_sample": own, "evaluation": evaluation}
        cells = [run_dir.name, str(updates)]
        for fit in (held, own["fit"]):
            obs = [g(fit[p]["next_obs_mse"]) for p in ("model", "no_change", "best_constant")]
            reward = [g(fit[p]["reward_mse"]) for p in ("model", "best_constant")]
            cells += [" / ".join(obs), " / ".join(reward), verdict(fit)]
        lin = own["linear"]
        cells += [
            " / ".join(g(lin[f"{p}_next_obs_mse"]) for p in ("linear", "no_change", "best_constant")),
            " / ".join(g(lin[f"{p}_reward_mse"]) for p in ("linear", "best_constant")),
        ]
        split = evaluation["world_model"].get("fit_run_held_out")
        if split is None:
            cells += ["—", "—", "—"]
        else:
            cells += [
                " / ".join(g(split[p]["next_obs_mse"]) for p in ("model", "no_change", "best_constant")),
                " / ".join(g(split[p]["reward_mse"]) for p in ("model", "best_constant")),
                verdict(split),
            ]
        print("| " + " | ".join(cells) + " |", flush=True)
    if out is not None:
        out.write_text(json.dumps(reports, indent=1, sort_keys=True))


def _offline(run_dir: Path, updates: int, every: int, overrides: list[str]) -> None:
    """Retrain the run's world model (its specification with ``overrides``) from scratch on the first 80 % of
    its primary rows, one round per ``every`` updates, and print the fit on the last 20 % after each round."""
    from amal_verified.common.rng_streams import RunStreams
    from amal_verified.isolation.buffers import PrimaryBuffer
    from amal_verified.record.primary_log import load_primary_stream
    from amal_verified.run.config import CONFIG_FILENAME, read_json
    from amal_verified.world_model.fit import world_model_fit
    from amal_verified.world_model.learner import WorldModelLearner, WorldModelSpec

    torch.set_num_threads(1)
    document = read_json(run_dir / CONFIG_FILENAME, "run configuration")
    changes = {k: json.loads(v) for k, v in (item.split("=", 1) for item in overrides)}
    spec = WorldModelSpec.from_json({**document["world_model"], **changes})
    data = load_primary_stream(run_dir).tensors
    cut = int(0.8 * len(data["reward"]))
    buffer = PrimaryBuffer(
        cut,
        obs_shape=(spec.obs_dim,),
        action_shape=() if spec.discrete else (spec.action_dim,),
        seed=0,
        action_dtype=torch.int64 if spec.discrete else torch.float32,
    )
    buffer.add(*(data[k][:cut] for k in ("obs", "action", "reward", "next_obs", "terminated")))
    held = {k: data[k][cut:] for k in ("obs", "action", "reward", "next_obs")}
    learner = WorldModelLearner(spec, RunStreams(0))
    print(
        f"{run_dir.name} {changes}: updates, next obs model / no change / constant, reward model / constant"
    )
    while learner.updates < updates:
        learner.begin_round(buffer)
        for _ in range(min(every, updates - learner.updates)):
            learner.update(buffer)
        fit = world_model_fit(learner, buffer, held)
        errors = (fit.model, fit.no_change, fit.best_constant)
        obs = " / ".join(f"{e.next_obs_mse:.3g}" for e in errors)
        reward = " / ".join(f"{e.reward_mse:.3g}" for e in (fit.model, fit.best_constant))
        print(f"{learner.updates}, {obs}, {reward}", flush=True)


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    config = commands.add_parser("config", help="print the benchmark grid's AMAL configuration of a task")
    config.add_argument("task")
    config.add_argument("--steps", type=int, default=3000)
    report = commands.add_parser("report", help="the fit of each run's world model, as a Markdown table")
    report.add_argument("run_dirs", type=Path, nargs="+")
    report.add_argument("--episodes", type=int, default=5)
    report.add_argument("--json", type=Path, default=None)
    offline = commands.add_parser("offline", help="retrain a run's world model on 80 %% of its primary rows")
    offline.add_argument("run_dir", type=Path)
    offline.add_argument("--updates", type=int, default=2000)
    offline.add_argument("--every", type=int, default=500)
    offline.add_argument("--set", dest="overrides", action="append", default=[], help="SPEC_FIELD=JSON")
    args = parser.parse_args(argv)
    if args.command == "config":
        print(json.dumps(_config(args.task, args.steps), indent=1))
    elif args.command == "offline":
        _offline(args.run_dir, args.updates, args.every, args.overrides)
    else:
        _report(args.run_dirs, args.episodes, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
