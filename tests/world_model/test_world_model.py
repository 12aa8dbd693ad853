"""EnsembleWorldModel: shapes, batched = per-member reference, NLL, learning, determinism, RNG, gating."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, cast

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import amal_verified as av
from amal_verified.world_model.ensemble import (
    EnsembleLinear,
    EnsembleWorldModel,
    WorldModelOutput,
    bootstrap_indices,
    member_generators,
)

OBS, ACT, K, B, T = 3, 2, 3, 4, 5


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models: intra-op threads only add synchronisation (100x slower on a loaded 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make(
    seed: int = 0, *, members: int = K, shared_trunk: bool = False, gru_hidden: int = 8
) -> EnsembleWorldModel:
    gen = torch.Generator().manual_seed(seed)
    return EnsembleWorldModel(
        OBS,
        ACT,
        members=members,
        generator=gen,
        shared_trunk=shared_trunk,
        encoder_sizes=(8, 8, 4),
        gru_hidden=gru_hidden,
        decoder_sizes=(4, 8, 8),
    )


def data(seed: int = 1, batch: int = B, steps: int = T) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(batch, steps, OBS, generator=g)
    act = torch.randn(batch, steps, ACT, generator=g)
    nxt = obs + 0.1 * torch.randn(batch, steps, OBS, generator=g)
    rew = torch.randn(batch, steps, generator=g)
    return obs, act, nxt, rew


@pytest.mark.parametrize("shared_trunk", [False, True])
def test_shapes_for_every_input_form(shared_trunk: bool) -> None:
    model = make(shared_trunk=shared_trunk)
    obs, act, _, _ = data()
    hidden_forms = [None, torch.zeros(B, 8), torch.zeros(K, B, 8)]
    for o, a in [(obs, act), (obs.expand(K, *obs.shape), act), (obs, act.expand(K, *act.shape))]:
        for h in hidden_forms:
            out = model(o, a, h)
            assert out.next_obs_mean.shape == (K, B, T, OBS)
            assert out.next_obs_log_std.shape == (K, B, T, OBS)
            assert out.reward_mean.shape == (K, B, T)
            assert out.reward_log_std.shape == (K, B, T)
            assert out.final_hidden.shape == (K, B, 8)


@pytest.mark.parametrize("shared_trunk", [False, True])
def test_per_member_inputs_equal_to_shared_inputs_give_the_same_result(shared_trunk: bool) -> None:
    model = make(shared_trunk=shared_trunk)
    obs, act, _, _ = data()
    a = model(obs, act)
    b = model(obs.expand(K, *obs.shape).clone(), act.expand(K, *act.shape).clone())
    for name in ("next_obs_mean", "next_obs_log_std", "reward_mean", "reward_log_std", "final_hidden"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=0, atol=1e-6)


def test_shared_trunk_shares_encoder_and_gru_only() -> None:
    full, shared = make(), make(shared_trunk=True)
    assert full.gru.weight_hh.shape[0] == K and shared.gru.weight_hh.shape[0] == 1
    assert (
        cast(EnsembleLinear, shared.decoder.layers[0]).weight.shape[0] == K
        and shared.head.weight.shape[0] == K
    )


def _reference_member(model: EnsembleWorldModel, k: int) -> nn.Module:
    """Member ``k`` rebuilt from stock nn.Linear / nn.GRU with copied weights (an independent reference)."""

    def linear(module: nn.Module, j: int) -> nn.Linear:
        layer = cast(EnsembleLinear, module)
        w = layer.weight[j]
        ref = nn.Linear(w.shape[0], w.shape[1])
        ref.weight.data.copy_(w.T)
        ref.bias.data.copy_(layer.bias[j, 0])
        return ref

    t = 0 if model.shared_trunk else k

    class Ref(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc = nn.ModuleList(linear(layer, t) for layer in model.encoder.layers)
            g = model.gru
            self.gru = nn.GRU(g.input_size, g.hidden_size, batch_first=True)
            self.gru.load_state_dict(
                {
                    "weight_ih_l0": g.weight_ih[t].T,
                    "weight_hh_l0": g.weight_hh[t].T,
                    "bias_ih_l0": g.bias_ih[t, 0],
                    "bias_hh_l0": g.bias_hh[t, 0],
                }
            )
            self.dec = nn.ModuleList(linear(layer, k) for layer in model.decoder.layers)
            self.head = linear(model.head, k)

        def forward(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, ...]:
            z = obs
            for layer in self.enc:
                z = torch.nn.functional.elu(layer(z))
            h, h_last = self.gru(torch.cat([z, act], -1))
            for layer in self.dec:
                h = torch.nn.functional.elu(layer(h))
            delta, ls, rm, rls = self.head(h).split([OBS, OBS, 1, 1], -1)

            def bound(raw: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
                return lo + torch.nn.functional.softplus(hi - torch.nn.functional.softplus(hi - raw) - lo)

            return (
                obs + delta,
                bound(ls, model.obs_log_std_min[k, 0, 0], model.obs_log_std_max[k, 0, 0]),
                rm[..., 0],
                bound(rls[..., 0], model.reward_log_std_min[k, 0, 0], model.reward_log_std_max[k, 0, 0]),
                h_last[0],
            )

    return Ref()


@pytest.mark.parametrize("shared_trunk", [False, True])
def test_batched_members_match_a_per_member_loop_over_stock_modules(shared_trunk: bool) -> None:
    """Agreement within 1e-6 in float32, not bit-exact.

    The reference uses nn.GRU's fused kernel and addmm, the ensemble uses baddbmm and an unrolled cell:
    same equations, different summation order, so float32 results differ in the last bits. In float64
    the agreement is 1e-12, which rules out any real difference in the equations.
    """
    model = make(shared_trunk=shared_trunk)
    obs, act, _, _ = data()
    for dtype, tol in [(torch.float32, 1e-6), (torch.float64, 1e-12)]:
        model = model.to(dtype)
        o, a = obs.to(dtype), act.to(dtype)
        out = model(o, a)
        with torch.no_grad():
            for k in range(K):
                ref = _reference_member(model, k).to(dtype)(o, a)
                got = (
                    out.next_obs_mean[k],
                    out.next_obs_log_std[k],
                    out.reward_mean[k],
                    out.reward_log_std[k],
                    out.final_hidden[k],
                )
                for g, r in zip(got, ref, strict=True):
                    torch.testing.assert_close(g, r, rtol=0, atol=tol)


def test_nll_matches_torch_distributions_normal() -> None:
    model = make()
    obs, act, nxt, rew = data()
    out = model(obs, act)
    obs_lp = torch.distributions.Normal(out.next_obs_mean, out.next_obs_log_std.exp()).log_prob(nxt).sum(-1)
    rew_lp = torch.distributions.Normal(out.reward_mean, out.reward_log_std.exp()).log_prob(rew)
    expected = -(obs_lp + rew_lp)  # (K, B, T)
    nll = model.nll(out, nxt, rew)
    assert nll.shape == (K,)
    torch.testing.assert_close(nll, expected.mean(dim=(1, 2)), rtol=1e-6, atol=1e-6)

    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[:2, :3] = True
    masked = model.nll(out, nxt, rew, mask=mask)
    torch.testing.assert_close(masked, expected[:, :2, :3].mean(dim=(1, 2)), rtol=1e-6, atol=1e-6)
    weights = mask.float() * 2.0
    torch.testing.assert_close(model.nll(out, nxt, rew, mask=weights), masked, rtol=1e-6, atol=1e-6)

    # Per-member targets: member k scored on its own rows.
    idx = bootstrap_indices(B, member_generators(0, K))
    per_member = model.nll(out, nxt[idx], rew[idx])
    for k in range(K):
        lp = torch.distributions.Normal(out.next_obs_mean[k], out.next_obs_log_std[k].exp()).log_prob(
            nxt[idx[k]]
        )
        rp = torch.distributions.Normal(out.reward_mean[k], out.reward_log_std[k].exp()).log_prob(rew[idx[k]])
        torch.testing.assert_close(per_member[k], -(lp.sum(-1) + rp).mean(), rtol=1e-6, atol=1e-6)


def test_log_std_stays_within_the_soft_bounds() -> None:
    model = make()
    obs, act, _, _ = data()
    with torch.no_grad():
        model.head.weight.mul_(1e4)
    out = model(obs, act)
    assert bool((out.next_obs_log_std >= model.obs_log_std_min).all())
    assert bool((out.next_obs_log_std <= model.obs_log_std_max + math.log(2.0)).all())
    assert model.log_std_bound_penalty().shape == (K,)


def test_learns_a_linear_dynamical_system() -> None:
    g = torch.Generator().manual_seed(7)
    a_mat = torch.tensor([[0.9, 0.1, 0.0], [-0.1, 0.9, 0.0], [0.0, 0.0, 0.8]])
    b_mat = torch.randn(ACT, OBS, generator=g) * 0.3
    w_rew = torch.randn(OBS, generator=g)
    obs = torch.randn(64, 4, OBS, generator=g)
    act = torch.randn(64, 4, ACT, generator=g)
    nxt = obs @ a_mat.T + act @ b_mat + 0.05 * torch.randn(64, 4, OBS, generator=g)
    rew = obs @ w_rew + 0.05 * torch.randn(64, 4, generator=g)
    model = make(0, members=2, gru_hidden=16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    with torch.no_grad():
        start = model(obs, act)
        before = model.nll(start, nxt, rew)
        mse_before = (start.next_obs_mean - nxt).square().mean()
    for _ in range(300):
        loss = model.nll(model(obs, act), nxt, rew).sum() + 0.01 * model.log_std_bound_penalty().sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = model(obs, act)
        after = model.nll(out, nxt, rew)
        mse = (out.next_obs_mean - nxt).square().mean()
    assert bool((after < before - 3.0).all()), (before, after)
    assert float(mse) < 0.1 * float(mse_before), (mse_before, mse)


def test_initialisation_is_a_function_of_the_generator() -> None:
    a, b, c = make(0), make(0), make(1)
    for (name, pa), pb, pc in zip(
        a.state_dict().items(), b.state_dict().values(), c.state_dict().values(), strict=True
    ):
        assert torch.equal(pa, pb), name
        if "log_std" not in name:
            assert not torch.equal(pa, pc), name
    obs, act, _, _ = data()
    assert torch.equal(a(obs, act).next_obs_mean, b(obs, act).next_obs_mean)
    assert len({p.data_ptr() for p in a.parameters()}) == len(list(a.parameters()))
    members = a.gru.weight_hh
    assert not torch.equal(members[0], members[1])


def test_no_global_rng_is_used() -> None:
    state = torch.get_rng_state()
    np_state = np.random.get_state()[1].copy()  # type: ignore[index]
    model = make(3, shared_trunk=True)
    model = make(3)
    obs, act, nxt, rew = data()
    gens = member_generators(5, K)
    idx = bootstrap_indices(B, gens)
    out = model(obs[idx], act[idx])
    model.nll(out, nxt[idx], rew[idx]).sum().backward()
    model.sample(out, torch.Generator().manual_seed(0))
    assert torch.equal(torch.get_rng_state(), state)
    assert np.array_equal(np.random.get_state()[1], np_state)  # type: ignore[index]


def test_bootstrap_indices_per_member_generators() -> None:
    idx = bootstrap_indices(10, member_generators(0, K))
    assert idx.shape == (K, 10) and idx.dtype == torch.int64
    assert bool((idx >= 0).all()) and bool((idx < 10).all())
    assert torch.equal(idx, bootstrap_indices(10, member_generators(0, K)))
    assert not torch.equal(idx[0], idx[1])
    # Member k's resample depends on its own generator only, and on the seed, not on the ensemble size.
    gens = list(member_generators(0, K))
    gens[0] = torch.Generator().manual_seed(999)
    other = bootstrap_indices(10, gens)
    assert torch.equal(other[1:], idx[1:]) and not torch.equal(other[0], idx[0])
    assert torch.equal(bootstrap_indices(10, member_generators(0, K + 2))[:K], idx)
    with pytest.raises(ValueError, match="generators"):
        bootstrap_indices(10, [])
    with pytest.raises(ValueError, match="batch_size"):
        bootstrap_indices(0, gens)


def test_sample_uses_a_uniform_member_per_row_and_only_its_generator() -> None:
    model = make()
    obs, act, _, _ = data(batch=600, steps=1)
    with torch.no_grad():
        out = model(obs, act)
    s1 = model.sample(out, torch.Generator().manual_seed(0))
    s2 = model.sample(out, torch.Generator().manual_seed(0))
    assert s1.next_obs.shape == (600, 1, OBS) and s1.reward.shape == (600, 1) and s1.member.shape == (600,)
    assert torch.equal(s1.next_obs, s2.next_obs) and torch.equal(s1.member, s2.member)
    counts = torch.bincount(s1.member, minlength=K)
    assert bool((counts > 150).all()), counts
    # With vanishing noise the sample is the chosen member's mean.
    sharp = WorldModelOutput(
        out.next_obs_mean,
        torch.full_like(out.next_obs_log_std, -30.0),
        out.reward_mean,
        torch.full_like(out.reward_log_std, -30.0),
        out.final_hidden,
    )
    s = model.sample(sharp, torch.Generator().manual_seed(1))
    rows = torch.arange(600)
    torch.testing.assert_close(s.next_obs, out.next_obs_mean[s.member, rows])
    torch.testing.assert_close(s.reward, out.reward_mean[s.member, rows])


def _bad_forward_cases() -> list[tuple[str, dict[str, torch.Tensor], str]]:
    obs, act, _, _ = data()
    nan_obs = obs.clone()
    nan_obs[0, 0, 0] = float("nan")
    return [
        ("obs wrong last dim", {"obs": obs[..., :2]}, "obs must have shape"),
        ("obs 2-D", {"obs": obs[0]}, "obs must have shape"),
        ("obs wrong member count", {"obs": obs.expand(K + 1, *obs.shape)}, "member dimension"),
        ("obs float64", {"obs": obs.double()}, "obs must have dtype"),
        ("action int", {"action": act.long()}, "action must have dtype.*one-hot"),
        ("action wrong T", {"action": act[:, :2]}, "action must have shape"),
        ("hidden wrong", {"hidden": torch.zeros(B, 7)}, "hidden must have shape"),
        ("obs NaN", {"obs": nan_obs}, "obs contains NaN"),
        ("action inf", {"action": act.clone().fill_(float("inf"))}, "action contains NaN"),
    ]


@pytest.mark.parametrize(
    ("case", "override", "message"), _bad_forward_cases(), ids=lambda x: x if isinstance(x, str) else ""
)
def test_bad_forward_inputs_raise_value_errors_naming_the_argument(
    case: str, override: dict[str, torch.Tensor], message: str
) -> None:
    obs, act, _, _ = data()
    args = {"obs": obs, "action": act, "hidden": None} | override
    with pytest.raises(ValueError, match=message):
        make()(args["obs"], args["action"], args["hidden"])


def test_bad_nll_inputs_raise_value_errors_naming_the_argument() -> None:
    model = make()
    obs, act, nxt, rew = data()
    out = model(obs, act)
    nan_rew = rew.clone()
    nan_rew[1, 1] = float("nan")
    cases = [
        ((nxt[..., :2], rew, None), "next_obs must have shape"),
        ((nxt, rew[:, :3], None), "reward must have shape"),
        ((nxt.double(), rew, None), "next_obs must have dtype"),
        ((nxt, rew.long(), None), "reward must have dtype"),
        ((nxt, nan_rew, None), "reward contains NaN"),
        ((nxt, rew, torch.ones(B, T + 1, dtype=torch.bool)), "mask must have shape"),
        ((nxt, rew, torch.ones(B, T, dtype=torch.int64)), "mask must be bool"),
        ((nxt, rew, -torch.ones(B, T)), "mask must be non-negative"),
        ((nxt, rew, torch.zeros(B, T, dtype=torch.bool)), "mask selects no element"),
    ]
    for (n, r, m), message in cases:
        with pytest.raises(ValueError, match=message):
            model.nll(out, n, r, mask=m)


def test_bad_types_and_sizes() -> None:
    obs, act, _, _ = data()
    with pytest.raises(TypeError):
        make()(obs.numpy(), act)
    with pytest.raises(TypeError):
        EnsembleWorldModel(OBS, ACT, members=2, generator=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="members must be positive"):
        EnsembleWorldModel(OBS, ACT, members=0, generator=torch.Generator())
    with pytest.raises(ValueError, match="encoder_sizes"):
        EnsembleWorldModel(OBS, ACT, generator=torch.Generator(), encoder_sizes=())
    with pytest.raises(ValueError, match="seed"):
        member_generators(-1, 2)


def _digest(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("shared_trunk", [False, True])
def test_gated_training_on_primary_data_works_and_aux_targets_are_refused(shared_trunk: bool) -> None:
    model = make(shared_trunk=shared_trunk)
    opt = av.GatedOptimizer(torch.optim.Adam(model.parameters(), lr=1e-2), names=model)
    obs, act, nxt, rew = (av.primary(x, source="real-env") for x in data())
    _, _, aux_nxt, aux_rew = (av.aux(x, source="aux-0") for x in data(seed=2))
    av.clear_escapes()

    before = _digest(model)
    idx = bootstrap_indices(B, member_generators(0, K))
    loss = model.nll(model(obs[idx], act[idx]), nxt[idx], rew[idx]).sum()
    loss = loss + 0.01 * model.log_std_bound_penalty().sum()
    loss.backward()
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, _digest(model), strict=True))

    opt.zero_grad()
    before = _digest(model)
    model.nll(model(obs, act), aux_nxt, aux_rew).sum().backward()
    with pytest.raises(av.IsolationViolation):
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, _digest(model), strict=True))

    opt.zero_grad()
    model.nll(model(obs, act), nxt, rew).sum().backward()
    opt.step()
    assert av.escapes() == []


class _CountOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("shared_trunk", [False, True])
def test_members_are_batched_not_looped(shared_trunk: bool) -> None:
    """The number of operations of a training step does not depend on the number of members."""
    counts = []
    obs, act, nxt, rew = data()
    for members in (1, 2, 7):
        model = make(members=members, shared_trunk=shared_trunk)
        with _CountOps() as mode:
            model.nll(model(obs, act), nxt, rew).sum().backward()
        counts.append(mode.count)
    assert counts[1] == counts[2], counts


def _bits(x: torch.Tensor) -> torch.Tensor:
    return x.detach().contiguous().view(torch.int32)


@pytest.mark.parametrize("shared_trunk", [False, True])
@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("per_member", [False, True])
def test_zero_initial_state_skips_the_product_bit_for_bit(
    shared_trunk: bool, steps: int, per_member: bool
) -> None:
    """``hidden=None`` (the GRU skips ``0 · weight_hh``) against an explicit zero state (it computes it):
    every output bit, every gradient (``weight_hh``'s, zero for a one-step sequence, and ``bias_hh``'s,
    which the first step still feeds), and parameters and Adam state after three steps."""
    g = torch.Generator().manual_seed(3)
    obs, act = torch.randn(B, steps, OBS, generator=g), torch.randn(B, steps, ACT, generator=g)
    nxt, rew = torch.randn(B, steps, OBS, generator=g), torch.randn(B, steps, generator=g)
    if per_member:
        idx = bootstrap_indices(B, member_generators(4, K))
        obs, act, nxt, rew = obs[idx], act[idx], nxt[idx], rew[idx]
    models = [make(5, shared_trunk=shared_trunk, gru_hidden=16) for _ in range(2)]
    optims = [torch.optim.Adam(m.parameters(), lr=1e-2) for m in models]
    for _ in range(3):
        outs = [models[0](obs, act), models[1](obs, act, torch.zeros(B, 16))]
        for field in ("next_obs_mean", "next_obs_log_std", "reward_mean", "reward_log_std", "final_hidden"):
            assert torch.equal(_bits(getattr(outs[0], field)), _bits(getattr(outs[1], field))), field
        for model, out, opt in zip(models, outs, optims, strict=True):
            opt.zero_grad(set_to_none=True)
            (model.nll(out, nxt, rew).sum() + 0.01 * model.log_std_bound_penalty().sum()).backward()
        named = [dict(m.named_parameters()) for m in models]
        for name, p in named[0].items():
            q = named[1][name]
            assert p.grad is not None and q.grad is not None, name
            assert torch.equal(_bits(p.grad), _bits(q.grad)), name
        assert bool(named[0]["gru.bias_hh"].grad.abs().sum() > 0)  # the skipped step still trains b_hh
        if steps == 1:
            assert not bool(named[0]["gru.weight_hh"].grad.any())
        for opt in optims:
            opt.step()
    for p, q in zip(models[0].parameters(), models[1].parameters(), strict=True):
        assert torch.equal(_bits(p), _bits(q))
    states = [o.state_dict()["state"] for o in optims]
    for i, st in states[0].items():
        for key, value in st.items():
            assert torch.equal(_bits(value.float()), _bits(states[1][i][key].float())), (i, key)
