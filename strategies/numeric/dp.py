"""Weighted user-level differential privacy for federated averaging, framework-free.

- DP-FedAvg with weighted clients: McMahan et al. 2018, "Learning Differentially
  Private Recurrent Language Models" (arXiv:1710.06963). Each client update is
  clipped to L2 norm ``S``; client ``k`` gets weight ``w_k = min(n_k / w_hat, 1)``;
  the server adds ``N(0, sigma^2 I)`` with ``sigma = z * sensitivity`` to one of

  - the fixed-denominator estimator ``sum_k w_k Delta_k / (q W)`` (unbiased),
    sensitivity ``S / (q W)``;
  - the clipped-denominator estimator ``sum_k w_k Delta_k / max(q W_min, sum_k w_k)``
    (biased, lower variance), sensitivity ``2 S / (q W_min)``;
  - the uniform mean ``sum_k Delta_k / m`` (what Flower's built-in DP does),
    sensitivity ``S / m``.

- Adaptive clipping: Andrew et al. 2021, "Differentially Private Learning with
  Adaptive Clipping" (arXiv:1905.03871). Clients report ``b_k = 1[||Delta_k|| <= C]``;
  the server forms ``b~ = (sum_k b_k + N(0, sigma_b^2)) / m`` and sets
  ``C <- C * exp(-eta (b~ - gamma))``. The noisy count costs privacy, so the update
  noise multiplier drops to ``z_Delta = (z^-2 - (2 sigma_b)^-2)^(-1/2)``.

Sensitivities are for add/remove-one-client neighbours under Poisson sampling with
rate ``q`` (what ``strategies.numeric.accounting`` assumes by default). They only bound the
aggregate if every sampled weight is in [0, 1] and every update has norm <= S, so
feed ``clip_update`` outputs and ``client_weights`` outputs.

Updates are ``list[np.ndarray]`` per client (one array per layer, same shapes for
every client). Arithmetic is in float64; results are cast back to the layers'
floating dtype (integer layers come back as float64, since an update or noise
rounded to integers would be wrong).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from typing import Any, TypeGuard

import numpy as np

from tasks import wire

#: Train-config key: the client clips its own update to this norm (client-side clipping).
CLIP_NORM_KEY = wire.CLIP_NORM
#: Reply metric in client-side clipping: 1 if the client's update had norm <= C, else 0.
UNCLIPPED_KEY = wire.UNCLIPPED

Layers = list[np.ndarray]


# --------------------------------------------------------------------------- #
# Validation                                                                  #
# --------------------------------------------------------------------------- #


def _is_number(value: object) -> TypeGuard[int | float | np.integer | np.floating]:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _check_positive(name: str, value: object) -> float:
    if not (_is_number(value) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _check_non_negative(name: str, value: object) -> float:
    if not (_is_number(value) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _check_sampling_rate(value: object) -> float:
    if not (_is_number(value) and 0 < value <= 1):
        raise ValueError(f"sampling_rate must be in (0, 1], got {value!r}")
    return float(value)


def _check_count(name: str, value: object, minimum: int) -> int:
    if not (isinstance(value, int | np.integer) and not isinstance(value, bool) and value >= minimum):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def validate_dp_params(
    *,
    noise_multiplier: float | None = None,
    clip_norm: float | None = None,
    sampling_rate: float | None = None,
    weight_cap: float | None = None,
    total_weight: float | None = None,
    min_total_weight: float | None = None,
) -> None:
    """Check the DP parameters that are given (``None`` ones are skipped).

    Lets a strategy reject a configuration before the first round.

    Parameters
    ----------
    noise_multiplier : float or None
        z, must be > 0.
    clip_norm : float or None
        S, must be > 0 and finite.
    sampling_rate : float or None
        q, must be in (0, 1].
    weight_cap : float or None
        w_hat, must be > 0 and finite.
    total_weight : float or None
        W, must be > 0 and finite.
    min_total_weight : float or None
        W_min, must be > 0 and finite.

    Raises
    ------
    ValueError
        Naming the first invalid parameter, its value and the valid range.
    """
    for name, value in (
        ("noise_multiplier", noise_multiplier),
        ("clip_norm", clip_norm),
        ("weight_cap", weight_cap),
        ("total_weight", total_weight),
        ("min_total_weight", min_total_weight),
    ):
        if value is not None:
            _check_positive(name, value)
    if sampling_rate is not None:
        _check_sampling_rate(sampling_rate)


def _float_dtype(dtype: np.dtype) -> np.dtype:
    return dtype if np.issubdtype(dtype, np.floating) else np.dtype(np.float64)


def _check_updates(updates: Sequence[Layers]) -> None:
    if len(updates) == 0:
        raise ValueError("updates must contain at least one client, got 0")
    shapes = [np.shape(a) for a in updates[0]]
    for k, layers in enumerate(updates):
        if [np.shape(a) for a in layers] != shapes:
            raise ValueError(
                f"updates[{k}] has layer shapes {[np.shape(a) for a in layers]}, expected {shapes} "
                "(the shapes of updates[0])"
            )


def _check_weights(weights: Sequence[float] | np.ndarray, num_clients: int) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (num_clients,):
        raise ValueError(f"weights must have shape ({num_clients},), got shape {w.shape}")
    # A weight above 1 would let one client move the aggregate by more than the sensitivity.
    if not np.all((w >= 0) & (w <= 1)):
        raise ValueError(f"weights must be in [0, 1] (use client_weights), got {w.tolist()}")
    return w


def _weighted_sum(updates: Sequence[Layers], coefficients: np.ndarray) -> Layers:
    """Return ``sum_k coefficients[k] * updates[k]`` layer by layer, cast to a float dtype.

    Accumulated in float64 one client at a time: the extra memory is two float64 copies of
    a layer, whatever the number of clients (stacking them first needed K of them).
    """
    result = []
    for i in range(len(updates[0])):
        total = np.zeros(np.shape(updates[0][i]), dtype=np.float64)
        term = np.empty_like(total)
        for coefficient, layers in zip(coefficients, updates, strict=True):
            np.multiply(np.asarray(layers[i], dtype=np.float64), float(coefficient), out=term)
            total += term
        result.append(total.astype(_float_dtype(np.asarray(updates[0][i]).dtype)))
    return result


# --------------------------------------------------------------------------- #
# Clipping and weights                                                        #
# --------------------------------------------------------------------------- #


def l2_norm(layers: Layers) -> float:
    """Return the L2 norm of all layers taken together, computed in float64.

    Parameters
    ----------
    layers : list of np.ndarray
        One client's update.

    Returns
    -------
    float
        ``sqrt(sum over layers and entries of a^2)``.
    """
    return math.sqrt(sum(float(np.sum(np.square(np.asarray(a, dtype=np.float64)))) for a in layers))


def clip_update(layers: Layers, *, clip_norm: float) -> tuple[Layers, bool]:
    """Scale an update to L2 norm at most ``clip_norm``: ``Delta * min(1, S / ||Delta||)``.

    Parameters
    ----------
    layers : list of np.ndarray
        One client's update (finite values).
    clip_norm : float
        S > 0.

    Returns
    -------
    clipped : list of np.ndarray
        New arrays, same shapes; floating dtypes kept, integer ones become float64.
    unclipped : bool
        ``||Delta|| <= S``, the bit ``b_k`` of adaptive clipping.

    Raises
    ------
    ValueError
        If ``clip_norm`` is not > 0 or the update is not finite.
    """
    clip_norm = _check_positive("clip_norm", clip_norm)
    norm = l2_norm(layers)
    if not math.isfinite(norm):
        raise ValueError(f"update must be finite to be clipped, got norm {norm}")
    unclipped = norm <= clip_norm
    # The comparison guards the division: norm > S > 0 whenever we divide.
    scale = 1.0 if unclipped else clip_norm / norm
    clipped = [
        (np.asarray(a, dtype=np.float64) * scale).astype(_float_dtype(np.asarray(a).dtype)) for a in layers
    ]
    return clipped, unclipped


def client_weights(num_examples: Sequence[int | float] | np.ndarray, *, weight_cap: float) -> np.ndarray:
    """Return the capped client weights ``w_k = min(n_k / w_hat, 1)``.

    Parameters
    ----------
    num_examples : sequence of int or float
        n_k >= 0, the number of training examples of each client.
    weight_cap : float
        w_hat > 0; clients with at least this many examples get weight 1.

    Returns
    -------
    np.ndarray
        float64 weights in [0, 1], one per client.

    Raises
    ------
    ValueError
        If ``weight_cap`` is not > 0 or some ``n_k`` is negative or not finite.
    """
    weight_cap = _check_positive("weight_cap", weight_cap)
    n = np.asarray(num_examples, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(n) & (n >= 0)):
        raise ValueError(f"num_examples must be finite and >= 0, got {n.tolist()}")
    return np.minimum(n / weight_cap, 1.0)


def expected_total_weight(
    *,
    population_size: int,
    weight_cap: float,
    num_examples: Sequence[int | float] | np.ndarray | None = None,
) -> float:
    """Return W, the sum of ``w_k`` over the whole population.

    If ``num_examples`` lists every client's ``n_k``, W is the exact sum of
    ``client_weights``. Otherwise W = ``population_size``: this assumes every client
    holds at least ``weight_cap`` examples (w_k = 1), the regime the cap is meant
    for. When clients hold fewer, the true W is smaller and the fixed-denominator
    estimator is biased towards zero by ``W_true / W``, but privacy is unaffected:
    W only has to be a public constant used both in the denominator and in the
    noise std. For the same reason, computing W from clients' private ``n_k`` leaks
    a little about them; prefer a W fixed from public knowledge.

    Parameters
    ----------
    population_size : int
        N >= 1, the number of clients that can be sampled.
    weight_cap : float
        w_hat > 0.
    num_examples : sequence of int or float, optional
        n_k of all N clients, when known.

    Returns
    -------
    float
        W > 0.

    Raises
    ------
    ValueError
        On an invalid parameter, if ``num_examples`` does not have N entries, or
        if the resulting W is 0 (every client holds 0 examples).
    """
    population_size = _check_count("population_size", population_size, 1)
    weight_cap = _check_positive("weight_cap", weight_cap)
    if num_examples is None:
        return float(population_size)
    weights = client_weights(num_examples, weight_cap=weight_cap)
    if weights.shape != (population_size,):
        raise ValueError(
            f"num_examples must have population_size={population_size} entries, got {weights.shape[0]}"
        )
    total = float(np.sum(weights))
    return _check_positive("total_weight", total)


# --------------------------------------------------------------------------- #
# Estimators                                                                  #
# --------------------------------------------------------------------------- #


def fixed_denominator_aggregate(
    updates: Sequence[Layers],
    weights: Sequence[float] | np.ndarray,
    *,
    sampling_rate: float,
    total_weight: float,
) -> Layers:
    """Return the unbiased estimator ``sum_k w_k Delta_k / (q W)`` (noise-free).

    Parameters
    ----------
    updates : sequence of list of np.ndarray
        Clipped updates of the sampled clients (at least one).
    weights : sequence of float
        w_k in [0, 1] of the same clients.
    sampling_rate : float
        q in (0, 1], the Poisson sampling probability.
    total_weight : float
        W > 0, the population's total weight (``expected_total_weight``).

    Returns
    -------
    list of np.ndarray
        The aggregate, with the shapes of one update.

    Raises
    ------
    ValueError
        On an invalid parameter or mismatched shapes.
    """
    q = _check_sampling_rate(sampling_rate)
    total_weight = _check_positive("total_weight", total_weight)
    _check_updates(updates)
    w = _check_weights(weights, len(updates))
    return _weighted_sum(updates, w / (q * total_weight))


def clipped_denominator_aggregate(
    updates: Sequence[Layers],
    weights: Sequence[float] | np.ndarray,
    *,
    sampling_rate: float,
    min_total_weight: float,
) -> Layers:
    """Return ``sum_k w_k Delta_k / max(q W_min, sum_k w_k)`` (noise-free).

    Parameters
    ----------
    updates : sequence of list of np.ndarray
        Clipped updates of the sampled clients (at least one).
    weights : sequence of float
        w_k in [0, 1] of the same clients.
    sampling_rate : float
        q in (0, 1].
    min_total_weight : float
        W_min > 0; ``q W_min`` floors the denominator, which bounds the sensitivity.

    Returns
    -------
    list of np.ndarray
        The aggregate, with the shapes of one update.

    Raises
    ------
    ValueError
        On an invalid parameter or mismatched shapes.
    """
    q = _check_sampling_rate(sampling_rate)
    min_total_weight = _check_positive("min_total_weight", min_total_weight)
    _check_updates(updates)
    w = _check_weights(weights, len(updates))
    return _weighted_sum(updates, w / max(q * min_total_weight, float(np.sum(w))))


def uniform_aggregate(updates: Sequence[Layers]) -> Layers:
    """Return the plain mean ``sum_k Delta_k / m`` over the m sampled clients (noise-free).

    Parameters
    ----------
    updates : sequence of list of np.ndarray
        Clipped updates of the sampled clients (at least one).

    Returns
    -------
    list of np.ndarray
        The mean update.
    """
    _check_updates(updates)
    return _weighted_sum(updates, np.full(len(updates), 1.0 / len(updates)))


# --------------------------------------------------------------------------- #
# Sensitivity and noise                                                       #
# --------------------------------------------------------------------------- #


def fixed_denominator_sensitivity(*, clip_norm: float, sampling_rate: float, total_weight: float) -> float:
    """Return ``S / (q W)``, the L2 sensitivity of ``fixed_denominator_aggregate``.

    Parameters
    ----------
    clip_norm : float
        S > 0.
    sampling_rate : float
        q in (0, 1].
    total_weight : float
        W > 0.

    Returns
    -------
    float
        The largest change of the aggregate when one client is added or removed.
    """
    validate_dp_params(clip_norm=clip_norm, sampling_rate=sampling_rate, total_weight=total_weight)
    return clip_norm / (sampling_rate * total_weight)


def clipped_denominator_sensitivity(
    *, clip_norm: float, sampling_rate: float, min_total_weight: float
) -> float:
    """Return ``2 S / (q W_min)``, the L2 sensitivity of ``clipped_denominator_aggregate``.

    The factor 2: an added client contributes up to ``S / (q W_min)`` itself and,
    by raising the denominator, shifts everyone else's contribution by as much again.

    Parameters
    ----------
    clip_norm : float
        S > 0.
    sampling_rate : float
        q in (0, 1].
    min_total_weight : float
        W_min > 0.

    Returns
    -------
    float
        The largest change of the aggregate when one client is added or removed.
    """
    validate_dp_params(clip_norm=clip_norm, sampling_rate=sampling_rate, min_total_weight=min_total_weight)
    return 2.0 * clip_norm / (sampling_rate * min_total_weight)


def uniform_sensitivity(*, clip_norm: float, num_sampled: int) -> float:
    """Return ``S / m``, the sensitivity of ``uniform_aggregate`` (Flower's built-in DP).

    Exact only when m is fixed and public (fixed-size sampling, replace-one client);
    under Poisson sampling m itself depends on who is sampled.

    Parameters
    ----------
    clip_norm : float
        S > 0.
    num_sampled : int
        m >= 1, the number of clients averaged.

    Returns
    -------
    float
        S / m.
    """
    clip_norm = _check_positive("clip_norm", clip_norm)
    return clip_norm / _check_count("num_sampled", num_sampled, 1)


def fixed_denominator_noise_std(
    *, noise_multiplier: float, clip_norm: float, sampling_rate: float, total_weight: float
) -> float:
    """Return ``sigma = z S / (q W)`` for the fixed-denominator estimator.

    Parameters
    ----------
    noise_multiplier : float
        z > 0.
    clip_norm : float
        S > 0.
    sampling_rate : float
        q in (0, 1].
    total_weight : float
        W > 0.

    Returns
    -------
    float
        Standard deviation of the Gaussian noise added to every coordinate.
    """
    z = _check_positive("noise_multiplier", noise_multiplier)
    return z * fixed_denominator_sensitivity(
        clip_norm=clip_norm, sampling_rate=sampling_rate, total_weight=total_weight
    )


def clipped_denominator_noise_std(
    *, noise_multiplier: float, clip_norm: float, sampling_rate: float, min_total_weight: float
) -> float:
    """Return ``sigma = 2 z S / (q W_min)`` for the clipped-denominator estimator.

    Parameters
    ----------
    noise_multiplier : float
        z > 0.
    clip_norm : float
        S > 0.
    sampling_rate : float
        q in (0, 1].
    min_total_weight : float
        W_min > 0.

    Returns
    -------
    float
        Standard deviation of the Gaussian noise added to every coordinate.
    """
    z = _check_positive("noise_multiplier", noise_multiplier)
    return z * clipped_denominator_sensitivity(
        clip_norm=clip_norm, sampling_rate=sampling_rate, min_total_weight=min_total_weight
    )


def uniform_noise_std(*, noise_multiplier: float, clip_norm: float, num_sampled: int) -> float:
    """Return ``sigma = z S / m`` for the uniform mean.

    Parameters
    ----------
    noise_multiplier : float
        z > 0.
    clip_norm : float
        S > 0.
    num_sampled : int
        m >= 1.

    Returns
    -------
    float
        Standard deviation of the Gaussian noise added to every coordinate.
    """
    z = _check_positive("noise_multiplier", noise_multiplier)
    return z * uniform_sensitivity(clip_norm=clip_norm, num_sampled=num_sampled)


class SecureNoiseGenerator(np.random.Generator):
    """A generator whose ``normal`` resists floating-point attacks on the Gaussian mechanism.

    Mironov 2012 ("On Significance of the Least Significant Bits for Differential
    Privacy", CCS) showed that floating-point samplers leave gaps that can reveal
    the un-noised value; Holohan and Braghin 2021 (arXiv:2107.10138, section 5.1)
    show that a sum of ``2n`` Gaussians scaled by ``1/sqrt(2n)`` (n = 2, as Opacus's
    ``secure_mode``) makes such attacks impractical. The distribution is unchanged:
    ``(X1 + X2 + X3 + X4) / 2 ~ N(loc, scale^2)``. It is a mitigation, not a proof:
    the output is still a float64 (see README "Privacy").
    """

    def normal(self, loc: Any = 0.0, scale: Any = 1.0, size: Any = None) -> Any:
        """Draw ``N(loc, scale^2)`` as the scaled sum of four Gaussian draws."""
        total = super().normal(0.0, scale, size)
        for _ in range(3):  # summed one at a time: two arrays in memory, not four
            total = total + super().normal(0.0, scale, size)
        return loc + total / 2


def make_noise_rng(seed: int | None, *, secure: bool = False) -> np.random.Generator:
    """Return the generator for DP noise.

    Parameters
    ----------
    seed : int or None
        ``None`` (the default for real runs) seeds from OS entropy. A fixed seed
        makes the noise reproducible, and therefore predictable to anyone who knows
        it: use it for tests and debugging, never for a privacy claim.
    secure : bool, default False
        ``dp-secure-noise``: a :class:`SecureNoiseGenerator` seeded with 256 bits
        from the OS CSPRNG (``secrets``); a ``seed`` is refused.

    Returns
    -------
    np.random.Generator

    Raises
    ------
    ValueError
        For a negative seed, or any seed with ``secure=True``.
    """
    if secure:
        if seed is not None:
            raise ValueError("secure noise cannot use a known seed: pass seed=None")
        return SecureNoiseGenerator(np.random.PCG64DXSM(secrets.randbits(256)))
    if seed is not None:
        seed = _check_count("seed", seed, 0)
    return np.random.default_rng(seed)


def add_gaussian_noise(layers: Layers, *, std: float, rng: np.random.Generator) -> Layers:
    """Return ``layers + N(0, std^2 I)``, noise drawn in float64, one draw per layer in order.

    Parameters
    ----------
    layers : list of np.ndarray
        The aggregate to privatise.
    std : float
        sigma >= 0 (0 returns copies).
    rng : np.random.Generator
        Source of noise (``make_noise_rng``).

    Returns
    -------
    list of np.ndarray
        New arrays; floating dtypes kept, integer ones become float64.
    """
    std = _check_non_negative("std", std)
    noisy = []
    for a in layers:
        values = np.asarray(a, dtype=np.float64)
        noise = rng.normal(0.0, std, size=values.shape)
        noisy.append((values + noise).astype(_float_dtype(np.asarray(a).dtype)))
    return noisy


# --------------------------------------------------------------------------- #
# Adaptive clipping                                                           #
# --------------------------------------------------------------------------- #


def adaptive_clip_update(
    *,
    clip_norm: float,
    unclipped_count: int,
    num_clients: int,
    target_quantile: float,
    learning_rate: float,
    count_noise_std: float,
    rng: np.random.Generator | None = None,
    expected_num_clients: float | None = None,
) -> float:
    """Return the next clipping norm ``C * exp(-eta (b~ - gamma))`` (Andrew et al. 2021).

    ``b~ = (sum_k b_k + N(0, sigma_b^2)) / m`` is the noisy fraction of unclipped
    updates: more than ``gamma`` unclipped shrinks C, fewer grows it.

    It is computed as ``(sum_k (b_k - 1/2) + N(0, sigma_b^2)) / m_hat + 1/2``, the
    paper's centred form: adding or removing a client moves the centred sum by
    1/2, which is what ``update_noise_multiplier``'s ``2 sigma_b`` assumes. With
    ``m_hat = m`` (the default) both forms are equal. Under Poisson sampling pass
    ``expected_num_clients = q N`` so the result depends on the sampled set only
    through the noisy sum.

    Parameters
    ----------
    clip_norm : float
        Current C > 0.
    unclipped_count : int
        ``sum_k b_k``, in [0, num_clients].
    num_clients : int
        m >= 0, the number of clients that reported a bit; 0 (nobody replied) needs
        ``expected_num_clients``, and still releases a noisy count.
    target_quantile : float
        gamma in [0, 1], the target fraction of unclipped updates (paper: 0.5).
    learning_rate : float
        eta > 0 (paper: 0.2).
    count_noise_std : float
        sigma_b >= 0 (paper: m / 20); 0 only for noise-free tests.
    rng : np.random.Generator, optional
        Required when ``count_noise_std > 0``.
    expected_num_clients : float, optional
        m_hat > 0, the public denominator; defaults to ``num_clients``.

    Returns
    -------
    float
        The new clipping norm, > 0.

    Raises
    ------
    ValueError
        On an invalid parameter.
    """
    clip_norm = _check_positive("clip_norm", clip_norm)
    num_clients = _check_count("num_clients", num_clients, 0)
    if num_clients == 0 and expected_num_clients is None:
        raise ValueError("num_clients=0 needs expected_num_clients (the public denominator), got None")
    unclipped_count = _check_count("unclipped_count", unclipped_count, 0)
    if unclipped_count > num_clients:
        raise ValueError(f"unclipped_count must be <= num_clients={num_clients}, got {unclipped_count}")
    if not (_is_number(target_quantile) and 0 <= target_quantile <= 1):
        raise ValueError(f"target_quantile must be in [0, 1], got {target_quantile!r}")
    learning_rate = _check_positive("learning_rate", learning_rate)
    count_noise_std = _check_non_negative("count_noise_std", count_noise_std)
    denominator = (
        float(num_clients)
        if expected_num_clients is None
        else _check_positive("expected_num_clients", expected_num_clients)
    )
    noise = 0.0
    if count_noise_std > 0:
        if rng is None:
            raise ValueError("rng must be given when count_noise_std > 0, got None")
        noise = float(rng.normal(0.0, count_noise_std))
    centred_sum = unclipped_count - num_clients / 2
    unclipped_fraction = (centred_sum + noise) / denominator + 0.5
    return clip_norm * math.exp(-learning_rate * (unclipped_fraction - target_quantile))


def update_noise_multiplier(*, noise_multiplier: float, count_noise_std: float) -> float:
    """Return ``z_Delta = (z^-2 - (2 sigma_b)^-2)^(-1/2)``, the update's share of the budget.

    Releasing the noisy count and the noisy update together costs the same as one
    Gaussian mechanism with multiplier z (Andrew et al. 2021): the centred count
    of ``adaptive_clip_update`` has sensitivity 1/2, hence the ``2 sigma_b``.

    Parameters
    ----------
    noise_multiplier : float
        z > 0, the total noise multiplier the accountant is run with.
    count_noise_std : float
        sigma_b > 0, with ``z < 2 sigma_b``.

    Returns
    -------
    float
        z_Delta > z, the multiplier for the update noise.

    Raises
    ------
    ValueError
        If a parameter is not > 0 or ``z >= 2 sigma_b`` (the count would use the
        whole budget).
    """
    z = _check_positive("noise_multiplier", noise_multiplier)
    sigma_b = _check_positive("count_noise_std", count_noise_std)
    if z >= 2 * sigma_b:
        raise ValueError(
            f"noise_multiplier must be < 2 * count_noise_std = {2 * sigma_b}, got {z}: "
            "the count noise alone would use the whole privacy budget"
        )
    return (z**-2 - (2 * sigma_b) ** -2) ** -0.5
