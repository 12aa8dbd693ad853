"""CEM for auxiliary-agent evolution (paper §4.4, Algorithm 1) and its behaviour-space fitness."""

from __future__ import annotations

import math

import pytest
import torch

from amal_verified.agents.cem import (
    CEM,
    FlatMLPPolicy,
    behaviour,
    behaviour_divergence,
    distance_to_primary,
    diversity,
    fitness,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _snapshot(cem: CEM) -> dict[str, object]:
    return cem.state_dict()


def _assert_same_state(a: dict[str, object], b: dict[str, object]) -> None:
    assert a.keys() == b.keys()
    for key, x in a.items():
        y = b[key]
        if isinstance(x, torch.Tensor):
            assert isinstance(y, torch.Tensor)
            assert torch.equal(x, y), key
        else:
            assert x == y, key


# ---------------------------------------------------------------------------- CEM core


def test_maximises_quadratic_within_30_generations() -> None:
    target = torch.linspace(-2.0, 3.0, 10, dtype=torch.float64)
    cem = CEM(10, population=100, init_std=2.0, std_floor=1e-3, generator=_gen(0), dtype=torch.float64)
    for _ in range(30):
        cand = cem.ask()
        cem.tell(cand, -((cand - target) ** 2).sum(dim=1))
    assert cem.generation == 30
    assert float((cem.mean - target).abs().max()) < 0.05


def test_elite_selection_and_mle_update_hand_example() -> None:
    cem = CEM(2, population=5, elite_fraction=0.4, init_std=1.0, std_floor=1e-6, generator=_gen(1))
    assert cem.num_elite == 2
    cem.ask()
    # Replace the sample by a hand-made population: tell compares with ask's output, so use load_state_dict.
    hand = torch.tensor([[0.0, 0.0], [1.0, 2.0], [3.0, 6.0], [-1.0, 5.0], [9.0, 9.0]])
    state = cem.state_dict()
    state["pending"] = hand.clone()
    cem.load_state_dict(state)
    fit = torch.tensor([0.0, 5.0, 7.0, 5.0, -1.0])
    # Top-2: index 2 (7.0), then the tie 5.0 between indices 1 and 3 goes to the lower index, 1.
    assert cem.elite_indices(fit).tolist() == [2, 1]
    cem.tell(hand, fit)
    assert torch.equal(cem.mean, torch.tensor([2.0, 4.0]))
    assert torch.equal(cem.std, torch.tensor([1.0, 2.0]))  # biased (1/n) std of {1, 3} and {2, 6}


def test_elite_count_is_ceiling_without_float_artifacts() -> None:
    assert CEM(3, population=100, elite_fraction=0.2, generator=_gen(0)).num_elite == 20
    assert CEM(3, population=7, elite_fraction=0.2, generator=_gen(0)).num_elite == 2
    assert CEM(3, population=10, elite_fraction=0.01, generator=_gen(0)).num_elite == 1
    assert CEM(3, population=10, elite_fraction=1.0, generator=_gen(0)).num_elite == 10


def test_variance_floor_respected() -> None:
    floor = 0.05
    cem = CEM(4, population=10, elite_fraction=0.1, init_std=1.0, std_floor=floor, generator=_gen(2))
    for _ in range(5):
        cand = cem.ask()
        cem.tell(cand, -cand.square().sum(dim=1))
        # A single elite has zero spread: σ sits exactly on the floor.
        assert torch.equal(cem.std, torch.full((4,), floor))
    spread = cem.ask().std(dim=0)
    assert bool((spread > floor / 3).all())  # still exploring


def test_deterministic_and_does_not_touch_global_rng() -> None:
    before = torch.get_rng_state()

    def run(seed: int) -> torch.Tensor:
        cem = CEM(5, population=20, generator=_gen(seed))
        for _ in range(3):
            cand = cem.ask()
            cem.tell(cand, cand.sum(dim=1))
        return cem.ask()

    a, b = run(7), run(7)
    assert torch.equal(a, b)
    assert not torch.equal(a, run(8))
    assert torch.equal(torch.get_rng_state(), before)


def test_two_cems_do_not_interact() -> None:
    def solo(seed: int, extra_asks: int) -> list[torch.Tensor]:
        cem = CEM(3, population=8, generator=_gen(seed))
        out = []
        for _ in range(4):
            for _ in range(extra_asks):
                cem.ask()
            cand = cem.ask()
            out.append(cand)
            cem.tell(cand, -cand.square().sum(dim=1))
        return out

    expected_a, expected_b = solo(10, 0), solo(11, 2)
    a = CEM(3, population=8, generator=_gen(10))
    b = CEM(3, population=8, generator=_gen(11))
    for k in range(4):
        ca = a.ask()
        torch.randn(100)  # global RNG use in between must not matter either
        b.ask()
        b.ask()  # extra draws from b do not affect a
        cb = b.ask()
        assert torch.equal(ca, expected_a[k])
        assert torch.equal(cb, expected_b[k])
        a.tell(ca, -ca.square().sum(dim=1))
        b.tell(cb, -cb.square().sum(dim=1))


def test_state_dict_round_trip_resumes_bit_for_bit() -> None:
    def step(cem: CEM) -> torch.Tensor:
        cand = cem.ask()
        cem.tell(cand, -(cand - 1.0).square().sum(dim=1))
        return cand

    ref = CEM(6, population=16, generator=_gen(3))
    for _ in range(3):
        step(ref)
    saved = ref.state_dict()
    tail_ref = [step(ref) for _ in range(3)]

    resumed = CEM(6, population=16, generator=_gen(999))
    resumed.load_state_dict(saved)
    tail = [step(resumed) for _ in range(3)]
    for x, y in zip(tail_ref, tail, strict=True):
        assert torch.equal(x, y)
    _assert_same_state(ref.state_dict(), resumed.state_dict())

    # Saving between ask and tell also resumes exactly.
    mid = CEM(6, population=16, generator=_gen(4))
    cand = mid.ask()
    saved_mid = mid.state_dict()
    other = CEM(6, population=16, generator=_gen(5))
    other.load_state_dict(saved_mid)
    other.tell(cand, cand.sum(dim=1))
    mid.tell(cand, cand.sum(dim=1))
    _assert_same_state(mid.state_dict(), other.state_dict())


def test_state_dict_is_a_copy() -> None:
    cem = CEM(2, population=4, generator=_gen(0))
    state = cem.state_dict()
    state["mean"].add_(100.0)
    assert torch.equal(cem.mean, torch.zeros(2))


@pytest.mark.parametrize(
    ("fit", "match"),
    [
        (torch.tensor([1.0, float("nan"), 0.0, 0.0]), "NaN or Inf"),
        (torch.tensor([1.0, float("inf"), 0.0, 0.0]), "NaN or Inf"),
        (torch.zeros(3), "shape"),
        (torch.zeros(4, 1), "shape"),
        (torch.zeros(4, dtype=torch.int64), "floating"),
    ],
)
def test_bad_fitness_leaves_state_unchanged(fit: torch.Tensor, match: str) -> None:
    cem = CEM(3, population=4, generator=_gen(0))
    cand = cem.ask()
    before = _snapshot(cem)
    with pytest.raises(ValueError, match=match):
        cem.tell(cand, fit)
    _assert_same_state(before, _snapshot(cem))
    cem.tell(cand, torch.zeros(4))  # the outstanding ask is still usable
    assert cem.generation == 1


def test_tell_without_ask_or_with_other_candidates() -> None:
    cem = CEM(3, population=4, generator=_gen(0))
    with pytest.raises(ValueError, match="without an outstanding ask"):
        cem.tell(torch.zeros(4, 3), torch.zeros(4))
    cand = cem.ask()
    before = _snapshot(cem)
    with pytest.raises(ValueError, match="differ"):
        cem.tell(cand + 1.0, torch.zeros(4))
    with pytest.raises(ValueError, match="returned by"):
        cem.tell(cand[:2], torch.zeros(4))
    _assert_same_state(before, _snapshot(cem))
    cem.tell(cand, torch.zeros(4))
    with pytest.raises(ValueError, match="without an outstanding ask"):
        cem.tell(cand, torch.zeros(4))  # a second tell for the same ask


def test_mutating_returned_candidates_is_detected() -> None:
    cem = CEM(2, population=3, generator=_gen(0))
    cand = cem.ask()
    cand[0, 0] += 1.0
    with pytest.raises(ValueError, match="differ"):
        cem.tell(cand, torch.zeros(3))


def test_replaced_candidates_are_the_ones_ranked() -> None:
    cem = CEM(2, population=4, elite_fraction=0.25, generator=_gen(0), dtype=torch.float64)
    with pytest.raises(ValueError, match="without an outstanding ask"):
        cem.replace_pending(torch.zeros(4, 2, dtype=torch.float64))
    cand = cem.ask()
    improved = cand.clone()
    improved[2] = torch.tensor([5.0, -5.0], dtype=torch.float64)
    before = _snapshot(cem)
    for bad, match in (
        (improved[:3], "got shape"),
        (improved.float(), "dtype"),
        (torch.full_like(improved, math.nan), "NaN or Inf"),
    ):
        with pytest.raises(ValueError, match=match):
            cem.replace_pending(bad)
        _assert_same_state(before, _snapshot(cem))
    cem.replace_pending(improved)
    improved[2] = 0.0  # the CEM keeps its own copy
    with pytest.raises(ValueError, match="differ"):
        cem.tell(cand, torch.zeros(4, dtype=torch.float64))
    cem.tell(cem.state_dict()["pending"], torch.tensor([0.0, 0.0, 1.0, 0.0], dtype=torch.float64))
    assert torch.equal(cem.mean, torch.tensor([5.0, -5.0], dtype=torch.float64))


def test_bad_configuration() -> None:
    with pytest.raises(ValueError, match="elite_fraction"):
        CEM(2, elite_fraction=0.0, generator=_gen(0))
    with pytest.raises(ValueError, match="std_floor"):
        CEM(2, std_floor=0.0, generator=_gen(0))
    with pytest.raises(ValueError, match="init_std"):
        CEM(2, init_std=0.001, std_floor=0.01, generator=_gen(0))
    with pytest.raises(ValueError, match="dim"):
        CEM(0, generator=_gen(0))
    with pytest.raises(TypeError):
        CEM(2, generator=None)  # type: ignore[arg-type]


def test_load_state_dict_rejects_mismatch_atomically() -> None:
    cem = CEM(3, population=4, generator=_gen(0))
    cem.ask()
    before = _snapshot(cem)
    other = CEM(3, population=5, generator=_gen(1)).state_dict()
    with pytest.raises(ValueError, match="population"):
        cem.load_state_dict(other)
    bad = cem.state_dict()
    bad["std"] = torch.full((3,), 1e-9)
    with pytest.raises(ValueError, match="std_floor"):
        cem.load_state_dict(bad)
    bad = cem.state_dict()
    bad["generator_state"] = torch.zeros(3, dtype=torch.uint8)
    with pytest.raises(ValueError, match="generator_state"):
        cem.load_state_dict(bad)
    _assert_same_state(before, _snapshot(cem))


# ---------------------------------------------------------------------------- policies


@pytest.mark.parametrize("discrete", [False, True])
def test_flat_policy_matches_per_member_loop(discrete: bool) -> None:
    pol = FlatMLPPolicy(4, 3, (8, 5), discrete, action_scale=2.0)
    assert pol.num_params == 4 * 8 + 8 + 8 * 5 + 5 + 5 * 3 + 3
    params = pol.init_params(6, generator=_gen(0))
    obs = torch.randn(6, 7, 4, generator=_gen(1))
    batched = pol.distribution(params, obs)
    actions = pol.act(params, obs)
    for p in range(6):
        single = pol.distribution(params[p : p + 1], obs[p : p + 1])[0]
        torch.testing.assert_close(batched[p], single)
    if discrete:
        assert actions.shape == (6, 7)
        assert actions.dtype == torch.int64
        torch.testing.assert_close(batched.sum(-1), torch.ones(6, 7))
    else:
        assert actions.shape == (6, 7, 3)
        assert float(actions.abs().max()) <= 2.0
    assert torch.equal(actions, pol.act(params, obs))  # deterministic


def test_flat_policy_layout_is_documented_one() -> None:
    pol = FlatMLPPolicy(2, 1, (), False)  # no hidden layer: tanh(x @ W + b)
    params = torch.tensor([[1.0, -2.0, 0.5]])  # W = [[1], [-2]], b = [0.5]
    obs = torch.tensor([[3.0, 1.0]])
    assert torch.allclose(pol.act(params, obs), torch.tanh(torch.tensor([[[1.5]]])))


def test_flat_policy_shape_errors() -> None:
    pol = FlatMLPPolicy(3, 2, 4, True)
    with pytest.raises(ValueError, match="params"):
        pol.act(torch.zeros(2, pol.num_params + 1), torch.zeros(2, 5, 3))
    with pytest.raises(ValueError, match="obs"):
        pol.act(torch.zeros(2, pol.num_params), torch.zeros(3, 5, 3))


# ---------------------------------------------------------------------------- fitness


@pytest.mark.parametrize("discrete", [False, True])
def test_diversity_of_identical_policies_is_zero(discrete: bool) -> None:
    pol = FlatMLPPolicy(3, 2, 8, discrete)
    one = pol.init_params(1, generator=_gen(0))
    probes = torch.randn(16, 3, generator=_gen(1))
    beh = behaviour(pol, one.expand(5, -1), probes)
    assert torch.equal(diversity(beh, discrete=discrete), torch.zeros(5))
    assert torch.equal(distance_to_primary(beh, beh[0], discrete=discrete), torch.zeros(5))
    assert torch.equal(fitness(beh, beh[0], 1.0, discrete=discrete), torch.zeros(5))


def test_divergence_hand_values() -> None:
    a = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    b = torch.tensor([[0.0, 1.0], [0.5, 0.5]])
    assert float(behaviour_divergence(a, b, discrete=True)) == pytest.approx(0.5)  # TV: (1 + 0) / 2
    assert float(behaviour_divergence(a, b, discrete=False)) == pytest.approx(1.0)  # (2 + 0) / 2
    assert float(behaviour_divergence(a, a, discrete=True)) == 0.0


def test_diversity_pairwise_and_reference() -> None:
    beh = torch.tensor([[[0.0]], [[1.0]], [[3.0]]])  # P=3, B=1, A=1 (continuous)
    # squared distances: 0-1: 1, 0-3: 9, 1-3: 4
    assert torch.allclose(diversity(beh, discrete=False), torch.tensor([5.0, 2.5, 6.5]))
    ref = torch.tensor([[[0.0]], [[2.0]]])
    assert torch.allclose(diversity(beh, discrete=False, reference=ref), torch.tensor([2.0, 1.0, 5.0]))
    with pytest.raises(ValueError, match="at least 2"):
        diversity(beh[:1], discrete=False)


def test_beta_trades_diversity_against_distance() -> None:
    # Member 0 sits on the primary policy; member 2 is far from both the primary and the others.
    beh = torch.tensor([[[0.0]], [[0.5]], [[4.0]]])
    primary = torch.tensor([[0.0]])
    f0 = fitness(beh, primary, 0.0, discrete=False)
    assert int(f0.argmax()) == 2  # β = 0: pure diversity
    f_big = fitness(beh, primary, 10.0, discrete=False)
    assert int(f_big.argmax()) == 0  # large β: stay plausible
    div = diversity(beh, discrete=False)
    dist = distance_to_primary(beh, primary, discrete=False)
    torch.testing.assert_close(fitness(beh, primary, 0.3, discrete=False), div - 0.3 * dist)
    with pytest.raises(ValueError, match="beta"):
        fitness(beh, primary, -1.0, discrete=False)
    with pytest.raises(ValueError, match="finite"):
        fitness(beh, torch.tensor([[math.nan]]), 1.0, discrete=False)


def test_cem_evolves_policies_by_behaviour_fitness() -> None:
    """End to end: CEM over FlatMLPPolicy parameters; large β pulls behaviour towards the primary's."""
    before = torch.get_rng_state()
    pol = FlatMLPPolicy(3, 1, 8, False)
    probes = torch.randn(32, 3, generator=_gen(0))
    primary_params = pol.init_params(1, generator=_gen(1))
    primary_beh = behaviour(pol, primary_params, probes)[0]
    cem = CEM(pol.num_params, population=40, init_std=0.5, std_floor=0.01, generator=_gen(2))

    def mean_distance() -> float:
        beh = behaviour(pol, cem.mean.unsqueeze(0), probes)
        return float(distance_to_primary(beh, primary_beh, discrete=False)[0])

    start = mean_distance()
    for _ in range(25):
        cand = cem.ask()
        beh = behaviour(pol, cand, probes)
        cem.tell(cand, fitness(beh, primary_beh, 5.0, discrete=False))
    assert mean_distance() < 0.5 * start
    assert torch.equal(torch.get_rng_state(), before)
