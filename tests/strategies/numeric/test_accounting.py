"""Tests for strategies.numeric.accounting: published epsilons, state, validation."""

from __future__ import annotations

import json
import math
import time

import pytest

from strategies.numeric.accounting import ACCOUNTANTS, Accountant, create_accountant

DELTA = 1e-5


def accountant_after(name: str, *, z: float, q: float, steps: int, **kwargs) -> Accountant:
    accountant = create_accountant(name, **kwargs)
    accountant.step(noise_multiplier=z, sampling_rate=q, num_steps=steps)
    return accountant


@pytest.mark.parametrize(
    ("name", "z", "q", "steps", "expected"),
    [
        ("rdp", 1.0, 0.01, 1000, 2.10),
        ("pld", 1.0, 0.01, 1000, 1.83),
        ("rdp", 1.0, 0.1, 100, 7.90),
    ],
)
def test_epsilon_matches_reference_values(name: str, z: float, q: float, steps: int, expected: float) -> None:
    # Prepare
    accountant = accountant_after(name, z=z, q=q, steps=steps)

    # Execute
    epsilon = accountant.get_epsilon(DELTA)

    # Assert: REFERENCE.md, Poisson-subsampled Gaussian, delta = 1e-5
    assert epsilon == pytest.approx(expected, rel=0.01)


@pytest.mark.parametrize("name", sorted(ACCOUNTANTS))
def test_single_steps_are_merged_and_fast(name: str) -> None:
    # Prepare
    accountant = create_accountant(name)

    # Execute: 1000 separate rounds of one (z, q)
    for _ in range(1000):
        accountant.step(noise_multiplier=1.0, sampling_rate=0.01)
    # CPU time, so that other processes on a busy machine do not fail the test.
    start = time.process_time()
    epsilon = accountant.get_epsilon(DELTA)
    elapsed = time.process_time() - start

    # Assert: one self-composed run, same epsilon as one 1000-step call, well under a second
    assert accountant.history == [(1.0, 0.01, 1000)]
    assert accountant.num_steps == 1000
    assert epsilon == accountant_after(name, z=1.0, q=0.01, steps=1000).get_epsilon(DELTA)
    assert elapsed < 1.0


@pytest.mark.parametrize("name", sorted(ACCOUNTANTS))
def test_state_round_trip_through_json_gives_same_epsilon(name: str) -> None:
    # Prepare: two runs of different (z, q)
    accountant = accountant_after(name, z=1.0, q=0.01, steps=50)
    accountant.step(noise_multiplier=1.5, sampling_rate=0.02, num_steps=30)

    # Execute
    restored = Accountant.from_state(json.loads(json.dumps(accountant.state())))

    # Assert
    assert restored.history == [(1.0, 0.01, 50), (1.5, 0.02, 30)]
    assert restored.describe() == accountant.describe()
    assert restored.get_epsilon(DELTA) == accountant.get_epsilon(DELTA)


def test_from_state_rejects_incomplete_state() -> None:
    with pytest.raises(ValueError, match="history"):
        Accountant.from_state(
            {"accountant": "rdp", "sampling": "poisson", "population_size": None, "options": {}}
        )


@pytest.mark.parametrize("name", sorted(ACCOUNTANTS))
def test_epsilon_if_step_does_not_mutate_and_predicts_next_epsilon(name: str) -> None:
    # Prepare
    accountant = accountant_after(name, z=1.0, q=0.05, steps=20)
    state_before = accountant.state()
    epsilon_before = accountant.get_epsilon(DELTA)

    # Execute
    predicted = accountant.epsilon_if_step(noise_multiplier=1.0, sampling_rate=0.05, delta=DELTA)

    # Assert
    assert accountant.state() == state_before
    assert accountant.get_epsilon(DELTA) == epsilon_before
    assert predicted > epsilon_before
    accountant.step(noise_multiplier=1.0, sampling_rate=0.05)
    assert accountant.get_epsilon(DELTA) == predicted


@pytest.mark.parametrize("name", sorted(ACCOUNTANTS))
def test_epsilon_increases_with_steps(name: str) -> None:
    # Prepare
    accountant = create_accountant(name)
    epsilons = [accountant.get_epsilon(DELTA)]

    # Execute
    for _ in range(3):
        accountant.step(noise_multiplier=1.0, sampling_rate=0.1, num_steps=10)
        epsilons.append(accountant.get_epsilon(DELTA))

    # Assert: 0 before any round, then strictly increasing
    assert epsilons[0] == 0.0
    assert all(a < b for a, b in zip(epsilons, epsilons[1:], strict=False))


def test_amplification_by_poisson_sampling_lowers_epsilon() -> None:
    # Prepare / Execute
    amplified = accountant_after("rdp", z=1.0, q=0.01, steps=100).get_epsilon(DELTA)
    unamplified = accountant_after("rdp", z=1.0, q=0.01, steps=100, sampling="none").get_epsilon(DELTA)

    # Assert
    assert amplified < unamplified


def test_fixed_size_uses_replace_one_with_half_the_noise_multiplier() -> None:
    # Prepare: q = 1 samples everyone, so no amplification; replace-one doubles the sensitivity,
    # hence z = 2 with fixed-size must cost what z = 1 costs without sampling.
    fixed = accountant_after("rdp", z=2.0, q=1.0, steps=10, sampling="fixed-size", population_size=10)
    none = accountant_after("rdp", z=1.0, q=1.0, steps=10, sampling="none")

    # Execute / Assert
    assert fixed.get_epsilon(DELTA) == pytest.approx(none.get_epsilon(DELTA), rel=1e-9)
    assert "replace-one" in fixed.describe()


def test_fixed_size_amplifies_when_sampling_a_fraction() -> None:
    everyone = accountant_after("rdp", z=2.0, q=1.0, steps=10, sampling="fixed-size", population_size=100)
    tenth = accountant_after("rdp", z=2.0, q=0.1, steps=10, sampling="fixed-size", population_size=100)

    assert tenth.get_epsilon(DELTA) < everyone.get_epsilon(DELTA)


def test_fixed_size_needs_integer_sample_size() -> None:
    accountant = create_accountant("rdp", sampling="fixed-size", population_size=10)

    with pytest.raises(ValueError, match="sampling_rate \\* population_size"):
        accountant.step(noise_multiplier=1.0, sampling_rate=0.25)


def test_fixed_size_needs_population_size() -> None:
    with pytest.raises(ValueError, match="population_size"):
        create_accountant("rdp", sampling="fixed-size")


def test_pld_rejects_fixed_size_sampling() -> None:
    with pytest.raises(ValueError, match="fixed-size"):
        create_accountant("pld", sampling="fixed-size", population_size=100)


@pytest.mark.parametrize(
    ("name", "sampling", "words"),
    [
        ("rdp", "poisson", ["RDP", "Poisson", "add/remove"]),
        ("pld", "none", ["PLD", "no amplification"]),
    ],
)
def test_describe_names_the_analysis(name: str, sampling: str, words: list[str]) -> None:
    description = create_accountant(name, sampling=sampling).describe()

    assert all(word in description for word in words)


def test_unknown_accountant_names_key_and_known_ones() -> None:
    with pytest.raises(ValueError, match="'gdp'.*\\['pld', 'rdp'\\]"):
        create_accountant("gdp")


def test_unknown_sampling_is_rejected() -> None:
    with pytest.raises(ValueError, match="sampling"):
        create_accountant("rdp", sampling="shuffle")


@pytest.mark.parametrize("delta", [0.0, 1.0, -1e-5, 2.0, math.nan])
def test_bad_delta_raises(delta: float) -> None:
    accountant = accountant_after("rdp", z=1.0, q=0.1, steps=1)

    with pytest.raises(ValueError, match="delta"):
        accountant.get_epsilon(delta)
    with pytest.raises(ValueError, match="delta"):
        accountant.epsilon_if_step(noise_multiplier=1.0, sampling_rate=0.1, delta=delta)


@pytest.mark.parametrize("z", [0.0, -1.0, math.inf, math.nan])
def test_bad_noise_multiplier_raises(z: float) -> None:
    with pytest.raises(ValueError, match="noise_multiplier"):
        create_accountant("rdp").step(noise_multiplier=z, sampling_rate=0.1)


@pytest.mark.parametrize("q", [0.0, -0.1, 1.01, math.nan])
def test_bad_sampling_rate_raises(q: float) -> None:
    with pytest.raises(ValueError, match="sampling_rate"):
        create_accountant("pld").step(noise_multiplier=1.0, sampling_rate=q)


@pytest.mark.parametrize("num_steps", [0, -1, 1.5])
def test_bad_num_steps_raises(num_steps: int) -> None:
    with pytest.raises(ValueError, match="num_steps"):
        create_accountant("rdp").step(noise_multiplier=1.0, sampling_rate=0.1, num_steps=num_steps)


def test_failed_step_leaves_history_unchanged() -> None:
    accountant = accountant_after("rdp", z=1.0, q=0.1, steps=3)

    with pytest.raises(ValueError):
        accountant.step(noise_multiplier=-1.0, sampling_rate=0.1)

    assert accountant.history == [(1.0, 0.1, 3)]


def test_fixed_size_round_from_a_different_population_is_accounted_with_its_own_rate() -> None:
    # Prepare: m = 2 of n = 5 connected (q = 0.4), while the accountant's N is 10.
    mixed = create_accountant("rdp", sampling="fixed-size", population_size=10)
    alone = create_accountant("rdp", sampling="fixed-size", population_size=5)

    # Execute
    mixed.step(noise_multiplier=1.0, sampling_rate=0.4, population_size=5)
    alone.step(noise_multiplier=1.0, sampling_rate=0.4)

    # Assert: the same epsilon as an accountant of 2-of-5, and the state round-trips.
    assert mixed.get_epsilon(DELTA) == pytest.approx(alone.get_epsilon(DELTA), rel=1e-12)
    assert Accountant.from_state(mixed.state()).get_epsilon(DELTA) == pytest.approx(mixed.get_epsilon(DELTA))
    with pytest.raises(ValueError, match="sampling_rate \\* population_size"):
        mixed.step(noise_multiplier=1.0, sampling_rate=0.3, population_size=5)


def test_a_real_that_rounds_onto_a_bound_is_refused_not_returned_as_the_bound() -> None:
    # A Fraction above 0 whose float is 0.0 passed the old check (0 < value), and the
    # accountant then ran with delta = 0.0. The bound is checked on the float it uses.
    from fractions import Fraction

    accountant = accountant_after("rdp", z=1.0, q=0.1, steps=1)

    with pytest.raises(ValueError, match="delta"):
        accountant.get_epsilon(Fraction(1, 10**400))
    with pytest.raises(ValueError, match="sampling_rate"):
        accountant.epsilon_if_step(noise_multiplier=1.0, sampling_rate=Fraction(1, 10**400), delta=1e-5)
    assert accountant.get_epsilon(Fraction(1, 10**5)) == accountant.get_epsilon(1e-5)
