"""The AMAL trainer: one loop implementing the asymmetric update rule (paper Eqs. 3-5, Algorithm 1).

One primary environment step, in order (:meth:`Trainer.train_step`)::

    1. the primary policy π_φ acts in the real environment      → PrimaryBuffer D_P (+ the data log)
    2. each auxiliary agent ψ_i acts in its own perturbed env    → its own AuxBuffer D_A^i
    3. every cem_every steps: one CEM generation (Eq. 5, Algorithm 1)
    4. every wm_train_every steps: a world-model round (its start sets the normalisation statistics from
       D_P when ``wm_normalise``), then updates on D_P only, through GatedOptimizer (Eq. 3),
       each appended to the hash-chained ledger; then IG(s, a) of the primary transitions collected
       since the previous round, and (if real_ratio < 1) imagined rollouts carrying the IG bonus.
       With ``wm_learner_process`` the round runs in the learner's own process
       (:mod:`amal_verified.run.learner_process`) while the loop goes on; the bonus and the imagined
       rollouts then use the model of the previous round, which is put in use when this one starts
       (its records reach the ledger then, or at a checkpoint, in the same order and bit for bit)
    5. policy updates (Eq. 4): SAC on real primary (reward + λ·IG, Eq. 6), real auxiliary and
       (optionally) imagined transitions

The world model never sees auxiliary data: its learner samples only the primary buffer with its own
random stream, and its optimizer is gated.  The policy may learn from everything — that is how the
auxiliary agents help.  ``unsafe_mix=True`` (the ablation) feeds the world model ``D_P ∪ D_A`` with an
ungated optimizer; such runs are marked in every output and cannot certify.

Every random stream has one owner (:class:`~amal_verified.common.rng_streams.RunStreams` names):
``primary/episodes`` (the real environment's reset seeds), ``primary/actions`` (the primary agent's
exploration), ``primary/buffer`` (the primary buffer's own generator, which draws the policy's primary
rows; the world model draws with its own), ``policy`` (SAC's initialisation and update noise),
``policy/batches`` (which auxiliary buffer, which imagined rows), ``model-rollouts``,
``evaluation/<step>``, the world model's ``world-model/*`` (see :mod:`amal_verified.world_model.learner`) and
the auxiliary population's ``cem``, ``cem/probes`` and ``aux/<i>/*`` (derived from ``aux_seed`` when it
is set, so the auxiliary side's randomness can vary while the primary side's stays fixed).  With
``torch.use_deterministic_algorithms(True)`` and a fixed thread count a run is a function of its
configuration: reproducible bit for bit, and resumable bit for bit from a checkpoint.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeGuard, final

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from amal_verified.agents.aux_population import AuxPopulation
from amal_verified.agents.env_runner import EnvRunner, run_episodes
from amal_verified.agents.rollouts import ImaginedBuffer, imagine, information_gain
from amal_verified.agents.sac import SACAgent
from amal_verified.common.rng_streams import RunStreams
from amal_verified.envs import TaskInfo, make_env, task_info
from amal_verified.isolation.buffers import PrimaryBuffer
from amal_verified.isolation.escapes import declassify
from amal_verified.isolation.tagging import primary
from amal_verified.run.config import EXECUTION_FIELDS, TrainConfig
from amal_verified.run.learner_process import LearnerProcess
from amal_verified.run.logs import WALL_CLOCK_COLUMNS, RunLogger
from amal_verified.run.run_dir import DeterminismError, RunDirectory
from amal_verified.run.stop_signals import RunInterrupted, StopSignals
from amal_verified.world_model.ensemble import DEFAULT_DECODER, DEFAULT_ENCODER, DEFAULT_GRU_HIDDEN
from amal_verified.world_model.learner import WorldModelLearner, WorldModelSpec

if TYPE_CHECKING:
    from amal_verified.agents.ray_population import RayAuxPopulation

__all__ = [
    "DeterminismError",
    "RunInterrupted",
    "Trainer",
    "make_policy",
    "run_config_document",
    "world_model_spec",
]


def world_model_spec(config: TrainConfig, task: TaskInfo) -> WorldModelSpec:
    """The world-model learner's specification for ``config`` on ``task``."""

    def scaled(sizes: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(max(1, round(s * config.wm_hidden_scale)) for s in sizes)

    return WorldModelSpec(
        obs_dim=task.obs_dim,
        action_dim=task.action_dim,
        discrete=task.discrete,
        members=config.ensemble_size,
        lr=config.wm_lr,
        batch_size=config.batch_size,
        shared_trunk=config.shared_trunk,
        encoder_sizes=scaled(DEFAULT_ENCODER),
        gru_hidden=max(1, round(DEFAULT_GRU_HIDDEN * config.wm_hidden_scale)),
        decoder_sizes=scaled(DEFAULT_DECODER),
        model=config.wm_model,
        optimizer=config.wm_optimizer,
        weight_decay=config.wm_weight_decay,
        full_batch=config.wm_full_batch,
        normalise=config.wm_normalise,
        holdout=config.wm_holdout,
        check_every=config.wm_check_every,
        patience=config.wm_patience,
    )


def policy_tau(config: TrainConfig, task: TaskInfo) -> float:
    """The critic's Polyak rate: ``config.policy_tau``, else 0.02 (discrete) or 0.005 (continuous).

    With discrete actions, τ = 0.005 leaves the critic too few effective Bellman backups (≈ τ·updates) in
    runs of tens of thousands of updates (measurements with plain SAC, ``benchmarks/sac_baseline.py``:
    ``benchmarks/README.md``, "Design measurements quoted by the code").
    """
    if config.policy_tau is not None:
        return config.policy_tau
    return 0.02 if task.discrete else 0.005


def make_policy(config: TrainConfig, task: TaskInfo, env: Any, generator: torch.Generator) -> SACAgent:
    """The primary agent's SAC for ``config`` on ``task`` (``env`` gives the action space)."""
    return SACAgent(
        task.obs_dim,
        action_space_of(env),
        generator=generator,
        lr=config.policy_lr,
        gamma=config.gamma,
        tau=policy_tau(config, task),
        hidden=(config.policy_hidden, config.policy_hidden),
    )


def run_config_document(config: TrainConfig, spec: WorldModelSpec) -> dict[str, Any]:
    """The content of ``config.json``: what the ledger header's ``config_digest`` covers."""
    return {
        "format": "amal_verified.run.config/1",
        "train": config.to_json(),
        "world_model": spec.to_json(),
        "unsafe_mix": config.unsafe_mix,
    }


@final
class Trainer:
    """A training run in ``run_dir``.  Use :meth:`create` for a new run, :meth:`resume` to continue one."""

    def __init__(self, config: TrainConfig, files: RunDirectory, *, progress: bool) -> None:
        torch.use_deterministic_algorithms(True)
        torch.set_num_threads(config.threads)
        self.config: Final = config
        self.files: Final = files
        self.run_dir: Final = files.path
        self.task: Final = task_info(config.env_id)
        streams = RunStreams(config.seed)
        self.streams: Final = streams
        task = self.task
        action_shape = () if task.discrete else (task.action_dim,)
        action_dtype = torch.int64 if task.discrete else torch.float32

        self.env: Final = EnvRunner(make_env(config.env_id), streams.numpy_generator("primary/episodes"))
        self.primary_actions: Final = streams.torch_generator("primary/actions")
        self.primary: Final = PrimaryBuffer(
            config.buffer_size,
            obs_shape=(task.obs_dim,),
            action_shape=action_shape,
            seed=streams.int_seed("primary/buffer"),
            action_dtype=action_dtype,
        )
        self.spec: Final = world_model_spec(config, task)
        self.learner: Final = WorldModelLearner(self.spec, streams, unsafe_mix=config.unsafe_mix)
        # With wm_learner_process, self.learner holds the model the bonus and imagination use (the
        # previous round's); the process trains, starting from this state when it starts.
        self._learner_process: LearnerProcess | None = None
        self._process_start_state: Mapping[str, Any] | None = None
        self._latest_model: dict[str, Any] | None = None  # the last finished round's, not yet in use
        self._sent = 0  # primary transitions the process holds
        self._recorded_updates = 0
        self.policy: Final = make_policy(config, task, self.env.env, streams.torch_generator("policy"))
        self.policy_batches: Final = streams.torch_generator("policy/batches")
        self.rollouts: Final = streams.torch_generator("model-rollouts")
        self.info_gain_draws: Final = streams.torch_generator("information-gain")
        # IG(s, a) of each stored primary transition (by buffer row), computed once per transition.
        self.primary_bonus: Final = torch.zeros(config.buffer_size)
        self._recent: list[tuple[Any, Any]] = []  # (obs, action) collected since the last bonus pass
        aux_streams = streams if config.aux_seed is None else RunStreams(config.aux_seed)
        aux_settings: dict[str, Any] = {
            "num_agents": config.num_aux_agents,
            "population": config.cem_population,
            "elite_fraction": config.cem_elite_fraction,
            "std_floor": config.cem_std_floor,
            "beta": config.cem_beta,
            "hidden": config.aux_hidden,
            "buffer_size": config.aux_buffer_size,
            "obs_noise": config.aux_obs_noise,
            "flush_every": config.aux_flush_every,
        }
        self.aux: AuxPopulation | RayAuxPopulation
        if config.aux_backend == "ray":
            from amal_verified.agents.ray_population import RayAuxPopulation

            self.aux = RayAuxPopulation(
                task,
                aux_streams,
                **aux_settings,
                clock=lambda: self.step,
                boundary=self._aux_reads_due,
                agents_per_actor=config.ray_agents_per_actor,
                timeout=config.ray_timeout,
                restarts=config.ray_restarts,
                threads=config.threads,
            )
        else:
            self.aux = AuxPopulation(task, aux_streams, **aux_settings)
        self.imagined: Final = ImaginedBuffer(
            config.rollout_batch * config.rollout_length * config.imagined_rounds_kept,
            task.obs_dim,
            action_shape,
            action_dtype,
        )
        self.eval_env: Final = make_env(config.env_id)
        self.step = 0
        self._metrics: dict[str, float | None] = {}
        self._policy_metrics: Mapping[str, Tensor] | None = None
        self._returns: list[float] = []
        self._progress: Final = progress
        # Created by create()/resume() once everything else succeeded: opening the logs of a resumed
        # run drops the CSV rows written after its checkpoint, which a refused resume must not do.
        self.logger: RunLogger

    def _open_logs(self, resume_step: int | None) -> None:
        self.logger = RunLogger(
            self.run_dir,
            total_steps=self.config.total_steps,
            unsafe_mix=self.config.unsafe_mix,
            progress=self._progress,
            resume_step=resume_step,
        )

    # ------------------------------------------------------------------ construction

    @classmethod
    def create(cls, config: TrainConfig, run_dir: str | Path, *, progress: bool = False) -> Trainer:
        """Start a new run in ``run_dir`` (it must not exist, or be empty).

        The directory appears complete or not at all (:meth:`RunDirectory.prepare`): with its
        configuration and a checkpoint at step 0, from which the run then continues as a resumed run
        does -- so a run stopped at any moment after this returns can be resumed.
        """
        document = run_config_document(config, world_model_spec(config, task_info(config.env_id)))

        def initialise(files: RunDirectory) -> None:
            files.write_config(unsafe_mix=config.unsafe_mix)
            # The step-0 checkpoint is the same whichever backend runs the auxiliary environments.
            local = TrainConfig.from_json({**config.to_json(), "aux_backend": "local"})
            cls(local, files, progress=False).save_checkpoint()

        path = RunDirectory.prepare(run_dir, document, config.seed, initialise)
        return cls.resume(path, progress=progress)

    @classmethod
    def resume(
        cls,
        run_dir: str | Path,
        *,
        progress: bool = False,
        total_steps: int | None = None,
        execution: Mapping[str, Any] | None = None,
    ) -> Trainer:
        """Continue the run in ``run_dir`` from its checkpoint, bit for bit as if uninterrupted.

        ``total_steps`` may extend (never shorten below the checkpoint) the run's length.
        ``execution`` may change :data:`~amal_verified.run.config.EXECUTION_FIELDS` (e.g.
        ``{"aux_backend": "ray"}``: checkpoints are the same for both backends); the run's
        ``config.json`` then records them for later resumptions.

        A run resumed to continue (below its length, or not yet marked complete) loses its
        ``certificate.json`` and ``certificate.dsse.json``
        (:meth:`~amal_verified.run.run_dir.RunDirectory.withdraw_certificate`), once the resume was
        accepted and before the run changes; one line on standard error says so.  A complete run
        resumed at its length changes nothing a certificate covers and keeps it.
        """
        config, state = RunDirectory.read_for_resume(run_dir, total_steps)
        changed = dict(execution or {})
        unknown = sorted(set(changed) - set(EXECUTION_FIELDS))
        if unknown:
            raise ValueError(
                f"only the execution fields {sorted(EXECUTION_FIELDS)} may change when a run resumes, "
                f"got {unknown}"
            )
        if changed:
            config = TrainConfig.from_json({**config.to_json(), **changed})
        document = run_config_document(config, world_model_spec(config, task_info(config.env_id)))
        files = RunDirectory.open_for_resume(run_dir, document, state)
        try:
            trainer = cls(config, files, progress=progress)
        except BaseException:
            files.close()
            raise
        try:
            trainer.load_state_dict(state)
        except BaseException:
            trainer.aux.close()
            files.close()
            raise
        if trainer.step < config.total_steps or not files.is_marked_complete():
            try:
                withdrawn = files.withdraw_certificate()
            except BaseException:
                trainer.aux.close()
                files.close()
                raise
            if withdrawn:
                print(
                    f"{files.path}: removed {' and '.join(p.name for p in withdrawn)}, "
                    f"written for the run as it was before this resume; certify it again when it ends: "
                    f"amal certify {files.path}",
                    file=sys.stderr,
                )
        trainer._open_logs(trainer.step)
        if total_steps is not None or changed:
            files.rewrite_config()
        return trainer

    # ------------------------------------------------------------------ the loop

    def run(self, *, after_step: Callable[[Trainer], None] | None = None) -> dict[str, float | None]:
        """Train until ``total_steps`` primary environment steps; returns the final metrics.

        ``after_step``, if given, is called with the trainer after every primary step (the benchmark
        evaluates the policy there); it must not change the trainer's state.

        SIGINT and SIGTERM stop the run at the end of the current step: it checkpoints, is marked
        ``interrupted`` and raises :class:`RunInterrupted` (a ``KeyboardInterrupt``); a second signal
        stops it at once, and it resumes from its previous checkpoint.  Any other error marks it
        ``failed``, resumable from its last checkpoint; a file-system fault (an ``OSError`` such as a
        full disk, naming the file) is raised with what to do and the resume command appended to
        its message, so that its one line is the whole report.
        """
        with StopSignals() as stop:
            try:
                if self.step >= self.config.total_steps:
                    # Resumed from the final checkpoint of a process stopped before it marked the run
                    # complete: that checkpoint was sealed as complete; say so in run.json too.
                    self._write_status("complete")
                while self.step < self.config.total_steps:
                    self.train_step()
                    if after_step is not None:
                        after_step(self)
                    if stop.requested is not None and self.step < self.config.total_steps:
                        self.save_checkpoint(interrupted=True)
                        raise RunInterrupted(self.step, stop.requested, self.run_dir)
                if self._learner_process is not None:
                    # What state_dict() reports after the run: the learner as the last round left it.
                    self._process_start_state = self._learner_state()
            except RunInterrupted:
                raise
            except BaseException as exc:
                status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
                self.files.keep_evidence_of_failure(status, **self._counts())
                if _is_file_system_fault(exc):
                    exc.strerror = f"{exc.strerror}; {self._resume_hint(exc)}"
                raise
            finally:
                self.aux.close()
                if self._learner_process is not None:
                    self._learner_process.close()
                    self._learner_process = None
                self.logger.close()
                self.files.close()
        return dict(self._metrics)

    def _resume_hint(self, exc: OSError) -> str:
        """What to do after the file-system fault ``exc`` stopped the run (appended to its message)."""
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            fix = "free space on its file system"
        elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            fix = "make its directory writable"
        else:
            fix = "repair the file system"
        return (
            f"the run stopped with its checkpoint at step {self.files.checkpoint_step} intact: {fix}, "
            f"then continue it with: amal train --resume --out {self.run_dir}"
        )

    def train_step(self) -> None:
        """One primary environment step and everything scheduled at it (see the module docstring)."""
        cfg = self.config
        self._collect_primary()
        self.aux.step()
        n = self.step
        if n >= cfg.learning_starts:
            if n % cfg.cem_every == 0:
                self._evolve_aux()
            if n % cfg.wm_train_every == 0:
                self._train_world_model()
                self._score_recent_transitions()
                self._imagine()
            for _ in range(cfg.policy_updates_per_step):
                self._update_policy()
        if n % cfg.eval_every == 0 or n == cfg.total_steps:
            # One stream per evaluation step: an extra evaluation (e.g. at the end of a shorter run
            # that is later resumed) never shifts what later evaluations see.
            seeds = self.streams.numpy_generator(f"evaluation/{n}")
            with declassify(reason="evaluation episodes are logged only"):
                returns = run_episodes(self.policy.act, self.eval_env, seeds, cfg.eval_episodes).returns
            self._metrics["eval_return"] = sum(returns) / len(returns)
        if n % cfg.log_every == 0 or n == cfg.total_steps:
            self._log()
        elif n % 50 == 0:
            self.logger.advance(n)
        if n % cfg.checkpoint_every == 0 or n == cfg.total_steps:
            self.save_checkpoint(complete=n == cfg.total_steps)

    def _aux_reads_due(self, step: int) -> bool:
        """Whether the trainer reads the auxiliary population's state after primary step ``step``
        (beyond its buffers): a CEM generation, a log row or a checkpoint is due."""
        cfg = self.config
        return (
            (step >= cfg.learning_starts and step % cfg.cem_every == 0)
            or step % cfg.log_every == 0
            or step % cfg.checkpoint_every == 0
            or step >= cfg.total_steps
        )

    def _collect_primary(self) -> None:
        obs = torch.as_tensor(self.env.obs, dtype=torch.float32).unsqueeze(0)
        if self.step < self.config.random_steps:
            action = self._random_action()
        else:
            action = self.policy.act(obs, generator=self.primary_actions)[0]
        # The policy may learn from auxiliary data; the action it executes in the real environment
        # is recorded as primary data (Theorem 1 is about the recorded primary stream).
        with declassify(reason="the primary policy acts in the real environment"):
            env_action: Any = int(action) if self.task.discrete else action.numpy().astype(np.float32)
        result = self.env.step(env_action)
        self.primary.add(result.obs, env_action, result.reward, result.next_obs, result.terminated)
        self.files.data_log.append(result.obs, env_action, result.reward, result.next_obs, result.terminated)
        self._recent.append((result.obs, env_action))
        if result.episode_return is not None:
            self._returns.append(result.episode_return)
        self.step += 1

    def _random_action(self) -> Tensor:
        task = self.task
        if task.discrete:
            return torch.randint(0, task.action_dim, (), generator=self.primary_actions)
        u = torch.rand((task.action_dim,), generator=self.primary_actions)
        low, high = torch.tensor(task.action_low), torch.tensor(task.action_high)
        return (low + u * (high - low)).to(torch.float32)

    def _evolve_aux(self) -> None:
        scores = self.aux.evolve(self.primary, self.config.probe_states, self.policy.behaviour)
        with declassify(reason="auxiliary fitness is logged only"):
            self._metrics["aux_fitness"] = float(scores.mean())

    def _train_world_model(self) -> None:
        if self.config.wm_learner_process:
            self._next_round_in_process()
            return
        losses: list[float] = []
        self.learner.begin_round(self.primary, self.config.wm_updates_per_round)
        while self.learner.in_round:
            update = self.learner.update(self.primary, self.aux.buffers)
            self.files.record_update(
                update.index, update.batch_digest, update.param_digest, update.labels, update.round_end
            )
            losses.append(update.loss)
        self._metrics["wm_loss"] = sum(losses) / len(losses)
        self._metrics["wm_updates"] = float(self.learner.updates)

    def _next_round_in_process(self) -> None:
        """Put the previous round's model in use (the bonus and imagination read it from now on) and
        start this round in the learner's process, on the primary transitions stored up to now."""
        process = self._learner_process
        if process is None:
            state = self._process_start_state
            process = LearnerProcess(
                self.spec,
                seed=self.config.seed,
                threads=self.config.threads,
                learner_state=self.learner.state_dict() if state is None else state,
                primary=self.primary,
            )
            self._learner_process, self._process_start_state, self._sent = process, None, self.step
        self._finish_round_in_process()
        if self._latest_model is not None:
            self.learner.model.load_state_dict(self._latest_model)
            self._latest_model = None
        rows = None
        if self._sent < self.step:
            rows = self.primary.take(torch.arange(self._sent, self.step) % self.config.buffer_size)
        process.start_round(rows, self.config.wm_updates_per_round)
        self._sent = self.step

    def _finish_round_in_process(self) -> None:
        """Wait for the running round, if any, and append its updates to the ledger."""
        process = self._learner_process
        if process is None or not process.in_round:
            return
        result = process.finish_round()
        for update in result.updates:
            self.files.record_update(
                update.index, update.batch_digest, update.param_digest, update.labels, update.round_end
            )
        self._latest_model = result.model_state
        self._recorded_updates = result.updates[-1].index
        self._metrics["wm_loss"] = sum(u.loss for u in result.updates) / len(result.updates)
        self._metrics["wm_updates"] = float(self._recorded_updates)

    def _learner_state(self) -> Mapping[str, Any]:
        """The training learner's state: the process's (after its running round) when it runs."""
        if not self.config.wm_learner_process:
            return self.learner.state_dict()
        self._finish_round_in_process()
        if self._learner_process is not None:
            return self._learner_process.learner_state()
        return self.learner.state_dict() if self._process_start_state is None else self._process_start_state

    def _score_recent_transitions(self) -> None:
        """IG(s, a) under the current world model for the primary transitions of the last round."""
        if not self._recent:
            return
        cfg = self.config
        obs = torch.as_tensor(np.stack([o for o, _ in self._recent]), dtype=torch.float32)
        actions = np.stack([np.asarray(a) for _, a in self._recent])
        action = torch.as_tensor(actions, dtype=torch.int64 if self.task.discrete else torch.float32)
        # Under --unsafe-mix the world model depends on auxiliary data, and so does the bonus.
        with declassify(reason="the information-gain bonus is a reward of the policy only"):
            _, gain = information_gain(
                self.learner,
                primary(obs),
                action,
                outer_samples=cfg.mi_outer_samples,
                estimator=cfg.eig_estimator,
                generator=self.info_gain_draws,
            )
        first = self.step - len(self._recent)
        rows = torch.arange(first, self.step) % cfg.buffer_size
        # The linear-Gaussian model predicts in float64; the bonus is a reward, stored as float32.
        self.primary_bonus.index_copy_(0, rows, gain.to(self.primary_bonus.dtype))
        self._recent = []
        with declassify(reason="the information gain is logged only"):
            self._metrics["info_gain"] = float(gain.mean())

    def _imagine(self) -> None:
        cfg, task = self.config, self.task
        if not task.model_rollouts or cfg.real_ratio >= 1.0 or task.termination is None:
            return
        n_aux = round(cfg.rollout_batch * cfg.aux_ratio)
        starts = []
        if cfg.rollout_batch > n_aux:
            starts.append(self.primary.sample(cfg.rollout_batch - n_aux, generator=self.rollouts).obs)
        if n_aux:
            starts.append(self.aux.sample(n_aux, self.rollouts).obs)
        with declassify(reason="imagined rollouts (and their input checks) feed only the policy"):
            batch = imagine(
                self.learner,
                lambda o: self.policy.act(o, generator=self.rollouts),
                torch.cat(starts),
                length=cfg.rollout_length,
                info_weight=cfg.info_weight,
                outer_samples=cfg.mi_outer_samples,
                estimator=cfg.eig_estimator,
                termination=task.termination,
                generator=self.rollouts,
            )
            self._metrics["imagined_info_gain"] = float(batch.info_gain.mean())
        self.imagined.add(batch)

    def _update_policy(self) -> None:
        cfg = self.config
        size = cfg.batch_size
        n_img = round(size * (1.0 - cfg.real_ratio)) if len(self.imagined) else 0
        n_real = size - n_img
        n_aux = round(n_real * cfg.aux_ratio)
        parts: list[Mapping[str, Tensor]] = []
        if n_real > n_aux:
            # The buffer's own stream: only the policy reads it.
            prim = self.primary.sample(n_real - n_aux)
            fields = _batch_fields(prim)
            fields["reward"] = fields["reward"] + cfg.info_weight * self.primary_bonus[prim.indices]
            parts.append(fields)
        if n_aux:
            parts.append(_batch_fields(self.aux.sample(n_aux, self.policy_batches)))
        if n_img:
            parts.append(self.imagined.sample(n_img, self.policy_batches))
        data = parts[0] if len(parts) == 1 else {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        metrics = self.policy.update(
            data["obs"], data["action"], data["reward"], data["next_obs"], data["terminated"]
        )
        self._policy_metrics = metrics

    # ------------------------------------------------------------------ evaluation and logs

    def _log(self) -> None:
        m = self._metrics
        if self._returns:
            m["episode_return"] = sum(self._returns[-10:]) / len(self._returns[-10:])
        metrics = self._policy_metrics
        if metrics is not None:
            with declassify(reason="policy losses are logged only"):
                for key in ("critic_loss", "actor_loss", "alpha"):
                    if key in metrics:
                        m[key] = float(metrics[key])
        m["aux_dropped_nonfinite"] = float(self.aux.dropped_nonfinite)
        m["steps_per_s"] = self.logger.steps_per_s(self.step)
        self.logger.log(self.step, m)

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoint(self, *, complete: bool = False, interrupted: bool = False) -> None:
        """Checkpoint the run (primary data and ledger first, see :class:`RunDirectory`) and mark it
        ``complete``, ``interrupted`` or ``running``."""
        status = "complete" if complete else "interrupted" if interrupted else "running"
        self.files.save_checkpoint(self.step, self.state_dict(), status=status)
        self._write_status(status)

    def _counts(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "total_steps": self.config.total_steps,
            "updates": self._recorded_updates if self.config.wm_learner_process else self.learner.updates,
            "unsafe_mix": self.config.unsafe_mix,
        }

    def _write_status(self, status: str) -> None:
        self.files.write_status(status, **self._counts())

    def state_dict(self) -> dict[str, Any]:
        """Everything the loop needs to continue bit for bit: every component and random stream.

        Nothing measured by the clock (:data:`~amal_verified.run.logs.WALL_CLOCK_COLUMNS`): the
        checkpoint, hence its seal and a signed certificate, is the same for every run of a seed.
        """
        return {
            "returns": list(self._returns),
            "metrics": {
                k: v for k, v in self._metrics.items() if v is not None and k not in WALL_CLOCK_COLUMNS
            },
            "env": self.env.state_dict(),
            "primary_actions": self.primary_actions.get_state(),
            "primary_buffer": self.primary.state_dict(),
            "learner": self._learner_state(),
            **({"model_in_use": self.learner.model.state_dict()} if self.config.wm_learner_process else {}),
            "policy": self.policy.state_dict(),
            "policy_batches": self.policy_batches.get_state(),
            "rollouts": self.rollouts.get_state(),
            "info_gain_draws": self.info_gain_draws.get_state(),
            "primary_bonus": self.primary_bonus[: min(self.step, self.config.buffer_size)].clone(),
            "recent": [[np.asarray(o), np.asarray(a)] for o, a in self._recent],
            "aux": self.aux.state_dict(),
            "imagined": self.imagined.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (a checkpoint's, with its ``step``)."""
        self.step = int(state["step"])
        self._returns = list(state["returns"])
        self._metrics = {k: v for k, v in state["metrics"].items() if k not in WALL_CLOCK_COLUMNS}
        self.env.load_state_dict(state["env"])
        self.primary_actions.set_state(state["primary_actions"])
        self.primary.load_state_dict(state["primary_buffer"])
        self.learner.load_state_dict(state["learner"])
        if self.config.wm_learner_process:
            self._process_start_state = state["learner"]
            self._latest_model = state["learner"]["model"]
            self._recorded_updates = int(state["learner"]["updates"])
            self.learner.model.load_state_dict(state["model_in_use"])
        self.policy.load_state_dict(state["policy"])
        self.policy_batches.set_state(state["policy_batches"])
        self.rollouts.set_state(state["rollouts"])
        self.info_gain_draws.set_state(state["info_gain_draws"])
        bonus = state["primary_bonus"]
        self.primary_bonus[: bonus.shape[0]] = bonus
        self._recent = [(o, a.item() if self.task.discrete else a) for o, a in state["recent"]]
        self.aux.load_state_dict(state["aux"])
        self.imagined.load_state_dict(state["imagined"])


def _is_file_system_fault(exc: BaseException) -> TypeGuard[OSError]:
    """A full disk, a read-only directory or another I/O error (not a missing or existing path)."""
    return (
        isinstance(exc, OSError)
        and exc.errno is not None
        and not isinstance(exc, FileExistsError | FileNotFoundError)
    )


def action_space_of(env: Any) -> gym.spaces.Discrete | gym.spaces.Box:
    """The environment's action space, which the supported tasks keep Discrete or Box."""
    space = env.action_space
    if not isinstance(space, gym.spaces.Discrete | gym.spaces.Box):
        raise ValueError(f"action space {space} is neither Discrete nor Box")
    return space


def _batch_fields(batch: Any) -> dict[str, Tensor]:
    return {
        "obs": batch.obs,
        "action": batch.action,
        "reward": batch.reward,
        "next_obs": batch.next_obs,
        "terminated": batch.done,
    }
