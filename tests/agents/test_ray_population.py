"""The auxiliary population on Ray actors (``aux_backend="ray"``): bit for bit the in-process
population, rows tagged by actor slot, payloads validated, dead actors replaced, every wait bounded.

One local Ray instance serves the session (the ``ray_instance`` fixture of the root conftest); each
population starts its own actors, so the tests keep populations few and small.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch

from amal_verified.agents import ray_population
from amal_verified.agents.aux_population import AgentSeeds, AuxPopulation
from amal_verified.agents.ray_population import (
    AgentGroupWorker,
    AuxBackendError,
    RayAuxPopulation,
    check_chunk,
)
from amal_verified.common.rng_streams import RunStreams
from amal_verified.envs import task_info
from amal_verified.isolation.escapes import declassify

pytestmark = pytest.mark.slow

SETTINGS: dict[str, Any] = {
    "num_agents": 3,
    "population": 6,
    "elite_fraction": 0.5,
    "std_floor": 0.05,
    "beta": 1.0,
    "hidden": 8,
    "buffer_size": 200,
    "obs_noise": None,
    "flush_every": 10,
}


class Clock:
    """The primary step a trainer would be at; boundaries every ``every`` steps."""

    def __init__(self, every: int = 16) -> None:
        self.k = 0
        self.every = every

    def __call__(self) -> int:
        return self.k

    def boundary(self, k: int) -> bool:
        return k % self.every == 0


def _local(env_id: str, seed: int = 0) -> AuxPopulation:
    return AuxPopulation(task_info(env_id), RunStreams(seed), **SETTINGS)


def _ray(env_id: str, clock: Clock, seed: int = 0, **options: Any) -> RayAuxPopulation:
    return RayAuxPopulation(
        task_info(env_id),
        RunStreams(seed),
        **SETTINGS,
        clock=clock,
        boundary=clock.boundary,
        **{"agents_per_actor": 2, "timeout": 600.0, **options},
    )


def _step(local: AuxPopulation | None, remote: RayAuxPopulation, clock: Clock, steps: int) -> None:
    for _ in range(steps):
        clock.k += 1
        if local is not None:
            local.step()
        remote.step()


def _same(a: Any, b: Any, where: str = "state") -> None:
    """Equal bit for bit, with the same types and key order."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            _same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        with declassify(reason="the test compares stored auxiliary data"):
            assert a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b), where
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


@pytest.fixture
def remote_pops(ray_instance: ModuleType) -> Iterator[list[RayAuxPopulation]]:
    """Populations a test builds, closed after it (their actors stopped)."""
    made: list[RayAuxPopulation] = []
    yield made
    for pop in made:
        pop.close()


# ---------------------------------------------------------------------------------------- bit for bit


def test_the_population_is_bit_for_bit_the_local_one_through_chunks_states_and_a_dead_actor(
    ray_instance: ModuleType, remote_pops: list[RayAuxPopulation]
) -> None:
    """Pendulum (continuous actions, clipped), 3 agents on 2 actors (groups of 2 and 1): the state at a
    step inside a chunk (re-run from the chunk's start), after a parameter change at a boundary, after
    an actor was killed mid-chunk (replaced, its chunk re-run), after each backend loaded the other's
    state; a second death with ``restarts=1`` used up stops with one line."""
    clock = Clock()
    local, remote = _local("Pendulum-v1"), _ray("Pendulum-v1", clock, restarts=1)
    remote_pops.append(remote)
    assert remote.groups == ((0, 1), (2,))
    _step(local, remote, clock, 13)  # inside the chunk 11..16
    _same(local.state_dict(), remote.state_dict())
    _step(local, remote, clock, 19)  # to 32, a boundary: the agents change there, as CEM would
    new = local.params + 0.5 * torch.sin(torch.arange(local.params.numel()).reshape(local.params.shape))
    local.params, remote.params = new.clone(), new.clone()
    _step(local, remote, clock, 2)  # the chunk 33..40 is running
    ray_instance.kill(remote._actors[1], no_restart=True)
    _step(local, remote, clock, 23)
    _same(local.state_dict(), remote.state_dict())
    assert len(remote.buffers[0]) == len(local.buffers[0]) == 50
    # Checkpoints are interchangeable: each continues from the other's state.
    local_state, remote_state = local.state_dict(), remote.state_dict()
    local.load_state_dict(remote_state)
    remote.load_state_dict(local_state)
    _step(local, remote, clock, 20)
    _same(local.state_dict(), remote.state_dict())
    ray_instance.kill(remote._actors[1], no_restart=True)  # a second death: ray_restarts=1 is used up
    with pytest.raises(AuxBackendError) as err:
        _step(local, remote, clock, 16)
    assert str(err.value) == (
        "auxiliary actor 1 (agent 2) died and has been replaced 1 times already (ray_restarts=1); "
        "the run stops here and resumes from its last checkpoint (amal train --resume)"
    )


@pytest.mark.parametrize(("env_id", "hidden"), [("Humanoid-v5", 32), ("HalfCheetah-v5", 256)])
def test_a_group_steps_its_agents_exactly_as_the_whole_population_does(env_id: str, hidden: int) -> None:
    """Each agent alone in its group (in this process, no Ray) makes the rows it makes in the whole
    population's step: for these observation and hidden sizes torch's batched kernels give other bits
    for a batch of 1 than for a batch of 3, which the padding to the population's size avoids."""
    settings = {**SETTINGS, "hidden": hidden}
    local = AuxPopulation(task_info(env_id), RunStreams(0), **settings)
    seeds = AuxPopulation(task_info(env_id), RunStreams(0), **settings, environments="remote").agent_seeds
    policy = local.policy
    spec = (policy.obs_dim, policy.action_dim, policy.hidden, policy.discrete, policy.action_scale)
    groups = [AgentGroupWorker(local.environment, [seeds[i]], (i,), 3, spec, 1) for i in range(3)]
    params = local.params * 4  # saturating agents: large actions, the last bits matter
    local.params = params
    for _ in range(4):
        local.step()
    pending = local.state_dict()["pending"]
    for i, group in enumerate(groups):
        (rows,) = group.run(params[[i]].numpy(), 4)
        assert rows["dropped"] == 0
        for name, column in zip(("obs", "action", "reward", "next_obs"), range(4), strict=True):
            expected = np.stack([np.asarray(row[column]) for row in pending[i]])
            assert np.array_equal(rows[name], expected.astype(rows[name].dtype)), (i, name)


def test_a_ray_run_is_bit_for_bit_the_local_run_and_resumes_under_ray(
    ray_instance: ModuleType, tmp_path: Path
) -> None:
    """The trainer on CartPole (tests/run's tiny configuration, 3 agents on 1 actor): a Ray run
    checkpointed at step 150 and resumed under Ray to step 300 has the uninterrupted local run's
    ledger and checkpoint (everything but the wall-clock rate, the execution fields and the primary
    data log's split into files)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "run"))
    from _tiny_runs import ledger_updates, tiny

    from amal_verified.record.checkpoint import load_checkpoint
    from amal_verified.run.trainer import Trainer

    Trainer.create(tiny(total_steps=300), tmp_path / "local").run()
    remote = Trainer.create(
        tiny(total_steps=150, aux_backend="ray", ray_agents_per_actor=3), tmp_path / "ray"
    )
    assert isinstance(remote.aux, RayAuxPopulation) and remote.aux.groups == ((0, 1, 2),)
    remote.run()
    with pytest.raises(ValueError, match=r"only the execution fields .* may change when a run resumes"):
        Trainer.resume(tmp_path / "ray", execution={"seed": 1})
    resumed = Trainer.resume(tmp_path / "ray", total_steps=300, execution={"ray_timeout": 900})
    assert isinstance(resumed.aux, RayAuxPopulation) and resumed.config.ray_timeout == 900
    resumed.run()
    assert ledger_updates(tmp_path / "ray") == ledger_updates(tmp_path / "local")
    a = load_checkpoint(tmp_path / "local" / "checkpoint.pt", restore=False)
    b = load_checkpoint(tmp_path / "ray" / "checkpoint.pt", restore=False)
    assert b["config"]["train"].pop("aux_backend") == "ray"
    assert b["config"]["train"].pop("ray_agents_per_actor") == 3
    assert b["config"]["train"].pop("ray_timeout") == 900
    # The stop at step 150 splits the primary data log there, and its evaluation and log row come
    # first in the metrics' order.
    del a["data_manifest"], b["data_manifest"]
    a["metrics"], b["metrics"] = dict(sorted(a["metrics"].items())), dict(sorted(b["metrics"].items()))
    _same(a, b, "checkpoint")


# ---------------------------------------------------------------------------------------- isolation


def test_rows_go_to_the_buffer_of_the_actors_slot_whatever_the_payload_claims(
    remote_pops: list[RayAuxPopulation], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One actor runs agents 0 and 1 and marks the rows of its slot 1: they land in agent 1's buffer
    only.  When it adds a claim that they are agent 0's, the chunk is refused with one line naming
    the actor (a payload never decides where its rows go)."""

    class Claiming(AgentGroupWorker):
        calls = 0

        def run(self, params: Any, steps: int) -> list[dict[str, Any]]:
            result = super().run(params, steps)
            result[1]["obs"] = np.full_like(result[1]["obs"], 7.0)  # recognisable rows
            self.calls += 1
            if self.calls == 2:
                result[1]["source"] = "aux-0"
            return result

    monkeypatch.setattr(ray_population, "_WORKER_CLASS", Claiming)
    clock = Clock()
    pop = RayAuxPopulation(
        task_info("CartPole-v1"),
        RunStreams(0),
        **{**SETTINGS, "num_agents": 2},
        clock=clock,
        boundary=clock.boundary,
        agents_per_actor=2,
    )
    remote_pops.append(pop)
    _step(None, pop, clock, 10)
    with declassify(reason="the test reads stored auxiliary rows"):
        first, second = (b.state_dict()["obs"] for b in pop.buffers)
        assert len(second) > 0 and bool((second == 7.0).all())
        assert len(first) > 0 and not bool((first == 7.0).any())
    assert [b.source.name for b in pop.buffers] == ["aux-0", "aux-1"]
    with pytest.raises(AuxBackendError) as refused:
        _step(None, pop, clock, 6)
    message = str(refused.value)
    assert "\n" not in message and "'source'" in message
    assert message.startswith(
        "auxiliary actor 0 (agents 0-1) returned a malformed chunk (slot 1): expected the keys"
    )


@pytest.mark.parametrize(
    ("env_id", "field", "damage", "expected"),
    [
        ("CartPole-v1", "obs", lambda a: a[:, :2], r"obs must be a numpy array of shape \(\d+, 4\)"),
        ("CartPole-v1", "reward", lambda a: a * np.nan, r"reward has non-finite values"),
        (
            "CartPole-v1",
            "action",
            lambda a: torch.as_tensor(a),
            r"action must be a numpy array .* got Tensor",
        ),
        ("CartPole-v1", "action", lambda a: a + 2, r"actions outside \[0, 2\)"),
        ("CartPole-v1", "dropped", lambda n: n + 1, r"obs must be a numpy array of shape"),
        ("CartPole-v1", "dropped", lambda n: -1, r"dropped must be an int in \[0, 10\]"),
        ("CartPole-v1", "terminated", lambda a: a.astype(np.int64), r"terminated must be a numpy array"),
        ("CartPole-v1", "state", lambda s: {}, r"state is not a runner state"),
        ("Pendulum-v1", "action", lambda a: a[:, None], r"action must be a numpy array of shape \(10, 1\)"),
        ("Pendulum-v1", "next_obs", lambda a: a * np.inf, r"next_obs has non-finite values"),
    ],
)
def test_a_malformed_payload_is_refused_with_one_line_naming_the_actor_and_slot(
    env_id: str, field: str, damage: Any, expected: str
) -> None:
    """The validation every chunk passes, on payloads of a real worker (in this process) damaged."""
    local = _local(env_id)
    task = task_info(env_id)
    policy = local.policy
    worker = AgentGroupWorker(
        local.environment,
        [AgentSeeds(1, RunStreams(0).numpy_generator("x").bit_generator.state)] * 2,
        (0, 2),
        3,
        (policy.obs_dim, policy.action_dim, policy.hidden, policy.discrete, policy.action_scale),
        1,
    )
    result = worker.run(local.params[[0, 2]].numpy(), 10)
    assert check_chunk(result, task=task, agents=2, steps=10, actor="actor 5") is result
    result[1][field] = damage(result[1][field])
    with pytest.raises(
        AuxBackendError, match=r"^actor 5 returned a malformed chunk \(slot 1\): " + expected
    ) as err:
        check_chunk(result, task=task, agents=2, steps=10, actor="actor 5")
    assert "\n" not in str(err.value)
    with pytest.raises(AuxBackendError, match=r"expected a list of 2 agent results, got list of 1$"):
        check_chunk(result[:1], task=task, agents=2, steps=10, actor="actor 5")


# ---------------------------------------------------------------------------------------- faults


def test_the_driver_never_waits_longer_than_ray_timeout(
    remote_pops: list[RayAuxPopulation], monkeypatch: pytest.MonkeyPatch
) -> None:
    class Stuck(AgentGroupWorker):
        def run(self, params: Any, steps: int) -> list[dict[str, Any]]:
            time.sleep(60)
            return super().run(params, steps)

    monkeypatch.setattr(ray_population, "_WORKER_CLASS", Stuck)
    clock = Clock()
    pop = _ray("CartPole-v1", clock, agents_per_actor=3)
    remote_pops.append(pop)
    pop.timeout = 1.0  # type: ignore[misc]  # after the actors started
    started = time.monotonic()
    with pytest.raises(AuxBackendError) as err:
        _step(None, pop, clock, 10)
    assert time.monotonic() - started < 10
    assert str(err.value) == (
        "auxiliary actor 0 (agents 0-2) returned nothing for its 10-step chunk within ray_timeout=1 s; "
        "if its environments are that slow, raise it (--set ray_timeout=SECONDS)"
    )


# ---------------------------------------------------------------------------------------- installation


def test_without_ray_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError) as err:
        _ray("CartPole-v1", Clock())
    assert str(err.value) == (
        "aux_backend='ray' needs Ray, which is not installed: pip install 'amal_verified[distributed]'"
    )
