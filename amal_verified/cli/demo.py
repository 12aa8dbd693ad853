"""``amal demo``: the gate refusing real leaks and accepting clean updates, on CartPole data.

Primary data comes from ``CartPole-v1``; one auxiliary agent acts in an
auxiliary CartPole with changed physics (gravity 1.5x, pole twice as long), so
its transitions are synthetic.  A small world model (encoder, GRU, decoder) is
trained through :class:`~amal_verified.GatedOptimizer`; a policy shares its
encoder in one scenario.  Every scenario checks the outcome it expects and the
demo exits non-zero if any does not hold.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F

import amal_verified as av
from amal_verified.isolation.buffers import AuxBuffer, Batch, PrimaryBuffer

__all__ = ["run_demo"]


class WorldModel(torch.nn.Module):
    """The paper's shape at demo size: MLP encoder, GRU dynamics, MLP decoder plus reward head."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.encoder = torch.nn.Sequential(
            torch.nn.Linear(obs_dim + action_dim, hidden), torch.nn.ELU(), torch.nn.Linear(hidden, hidden)
        )
        self.dynamics = torch.nn.GRUCell(hidden, hidden)
        self.decoder = torch.nn.Sequential(
            torch.nn.Linear(hidden, hidden), torch.nn.ELU(), torch.nn.Linear(hidden, obs_dim)
        )
        self.reward = torch.nn.Linear(hidden, 1)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.dynamics(self.encoder(torch.cat([obs, action], dim=-1)))
        return obs + self.decoder(h), self.reward(h).squeeze(-1)


def _collect(
    env: gym.Env[np.ndarray, np.int64], buffer: PrimaryBuffer | AuxBuffer, steps: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    for _ in range(steps):
        action = rng.integers(2)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        buffer.add(obs, np.array([action], dtype=np.float32), float(reward), next_obs, terminated)
        obs = next_obs
        if terminated or truncated:
            obs, _ = env.reset()


def _digest(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for t in module.state_dict().values():
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _wm_loss(wm: WorldModel, batch: Batch, target: Batch | None = None) -> torch.Tensor:
    target = batch if target is None else target
    pred_obs, pred_reward = wm(batch.obs, batch.action)
    return F.mse_loss(pred_obs, target.next_obs) + F.mse_loss(pred_reward, target.reward)


@dataclass
class _Outcome:
    name: str
    expected: str
    happened: str
    detail: str

    @property
    def ok(self) -> bool:
        return self.expected == self.happened


def run_demo(seed: int = 0, say: Callable[[str], None] = print) -> bool:
    """Run every scenario; return True iff each ended as expected."""
    torch.manual_seed(seed)
    real = gym.make("CartPole-v1")
    synthetic = gym.make("CartPole-v1")
    synthetic.unwrapped.gravity *= 1.5  # type: ignore[attr-defined]
    synthetic.unwrapped.length *= 2.0  # type: ignore[attr-defined]

    d_p = PrimaryBuffer(10_000, obs_shape=(4,), action_shape=(1,), seed=seed, source="real-env")
    d_a = AuxBuffer(10_000, source="aux-0", obs_shape=(4,), action_shape=(1,), seed=seed + 1)
    _collect(real, d_p, 2_000, seed)
    _collect(synthetic, d_a, 2_000, seed + 1)
    say(
        f"collected {len(d_p)} primary transitions (CartPole-v1) and {len(d_a)} auxiliary ones "
        "(heavier, longer pole)"
    )

    wm = WorldModel(obs_dim=4, action_dim=1)
    opt = av.GatedOptimizer(torch.optim.Adam(wm.parameters(), lr=3e-4), names=wm)
    policy_head = torch.nn.Linear(64, 2)
    outcomes: list[_Outcome] = []

    def scenario(name: str, expected: str, attempt: Callable[[], str]) -> None:
        before = _digest(wm)
        opt.zero_grad()
        try:
            detail = attempt()
            happened = "accepted"
        except av.IsolationViolation as err:
            happened, detail = "refused", str(err)
        after = _digest(wm)
        if happened == "refused" and before != after:
            happened = "refused, but parameters changed"
        outcomes.append(_Outcome(name, expected, happened, detail))
        mark = "ok " if outcomes[-1].ok else "FAIL"
        say(f"\n[{mark}] {name}: expected {expected}, {happened}  (world model {before} -> {after})")
        for line in detail.splitlines():
            say(f"       {line}")

    def clean_step() -> str:
        loss = _wm_loss(wm, d_p.sample(256))
        loss.backward()
        opt.step()
        with av.declassify(reason="print the primary loss"):
            return f"world-model loss {loss.item():.4f} on a primary batch"

    def mixed_batch() -> str:
        p, a = d_p.sample(128), d_a.sample(128)
        obs, act = torch.cat([p.obs, a.obs]), torch.cat([p.action, a.action])
        pred, _ = wm(obs, act)
        F.mse_loss(pred, torch.cat([p.next_obs, a.next_obs])).backward()
        opt.step()
        return "stepped on a mixed batch"

    def aux_target() -> str:
        p, a = d_p.sample(256), d_a.sample(256)
        pred, _ = wm(p.obs, p.action)
        F.mse_loss(pred, a.next_obs).backward()
        opt.step()
        return "stepped with auxiliary targets"

    def shared_encoder() -> str:
        a = d_a.sample(256)
        policy_opt = torch.optim.Adam([*wm.encoder.parameters(), *policy_head.parameters()], lr=3e-4)
        logits = policy_head(wm.encoder(torch.cat([a.obs, a.action], -1)))
        (-(logits.log_softmax(-1)[:, 0] * a.reward).mean()).backward()
        policy_opt.step()
        return "the policy optimizer stepped the shared encoder"

    def backward_world_model_and_policy() -> None:
        """One backward over a primary world-model loss and an auxiliary policy loss."""
        p, a = d_p.sample(256), d_a.sample(256)
        features = wm.encoder(torch.cat([a.obs, a.action], -1)).detach()
        (_wm_loss(wm, p) + policy_head(features).pow(2).mean()).backward()

    def global_clipping() -> str:
        backward_world_model_and_policy()
        torch.nn.utils.clip_grad_norm_([*wm.parameters(), *policy_head.parameters()], 1.0)
        opt.step()
        return "stepped after clipping world model and policy together"

    def separate_clipping() -> str:
        backward_world_model_and_policy()
        torch.nn.utils.clip_grad_norm_(wm.parameters(), 1.0)
        torch.nn.utils.clip_grad_norm_(policy_head.parameters(), 1.0)
        opt.step()
        return "one backward over both losses, clipped separately, detached features: no false alarm"

    scenario("clean world-model step on primary data", "accepted", clean_step)
    scenario("leak: mixed primary + auxiliary batch", "refused", mixed_batch)
    scenario("leak: auxiliary data as the target", "refused", aux_target)
    scenario("leak: shared encoder stepped by a plain policy optimizer", "refused", shared_encoder)
    scenario("leak: gradient clipping over world model and policy together", "refused", global_clipping)
    scenario("after the refusals: a clean step", "accepted", clean_step)
    scenario("precision: separate clipping, detached features for the policy", "accepted", separate_clipping)

    ok = all(o.ok for o in outcomes)
    say(f"\n{sum(o.ok for o in outcomes)}/{len(outcomes)} scenarios behaved as expected.")
    return ok
