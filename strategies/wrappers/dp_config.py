"""The keys of the DP wrapper (``strategies/wrappers/dp_fedavg.py``), declared once, and their checks.

A module of its own so that building or listing the run config does not import the
wrapper and its accountants (dp-accounting takes about a second to import). The
wrapper takes one :class:`DPConfig`; building one checks every key and every
combination, so a ``DPFedAvg`` is never constructed from settings it cannot honour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from strategies.algorithms.fedprox import FedProxConfig
from tasks import wire
from tasks.config import ConfigError, Section, at_least, declare, in_range, one_of

#: ``dp-estimator``: how the noisy mean update is estimated (module docstring of dp_fedavg).
ESTIMATORS = ("fixed", "clipped", "uniform", "model-noise")
#: ``dp-clipping``: who clips the updates to S.
CLIPPING_MODES = ("server", "client")
#: ``dp-sampling``: how clients are sampled (what the accountant assumes).
SAMPLING_MODES = ("poisson", "fixed-size")
#: ``dp-accountant``: the names of ``strategies.numeric.accounting.ACCOUNTANTS`` (a test keeps
#: them equal; that module imports dp-accounting, which listing the keys should not).
ACCOUNTANT_NAMES = ("rdp", "pld")


def _bad(key: str, value: object, allowed: str) -> ConfigError:
    return ConfigError(f"run config: {key}={value!r} is invalid: {allowed}")


def check_count_noise(*, noise_multiplier: float, count_noise_std: float) -> None:
    """Adaptive clipping spends part of the budget on the count: it needs z < 2 σ_b (Andrew et al. 2021).

    Raises
    ------
    ConfigError
        Naming ``dp-count-noise-std`` and both ways out.
    """
    if noise_multiplier >= 2 * count_noise_std:
        raise _bad(
            "dp-count-noise-std",
            count_noise_std,
            f"adaptive clipping needs dp-noise-multiplier={noise_multiplier} < 2 * count noise "
            f"std = {2 * count_noise_std:g} (else the count uses the whole budget); raise dp-count-noise-std "
            "or lower dp-noise-multiplier",
        )


@dataclass(frozen=True)
class DPConfig(Section):
    """Keys of weighted user-level DP-FedAvg (strategy ``dp-fedavg``; README "Privacy").

    Field names are the ``dp-`` keys without the prefix; see :class:`DPFedAvg` for the
    meaning of each.
    """

    estimator: str = declare(
        "fixed",
        "fixed (Σw_kΔ_k/(qW)), clipped (…/max(qW_min, Σw_k)), uniform (σ=zS/m) or model-noise",
        one_of(*ESTIMATORS),
        name="dp-estimator",
    )
    clipping: str = declare(
        "server",
        "where updates are clipped to S: server or client",
        one_of(*CLIPPING_MODES),
        name="dp-clipping",
    )
    clip_norm: float = declare(
        1.0,
        "S: L2 clipping norm (initial C with adaptive clipping)",
        in_range(0, 1e9, lo_open=True),
        name=wire.CLIP_NORM,  # the run-config key is also what the server sends clients
    )
    noise_multiplier: float = declare(
        1.0,
        "z: noise std in units of the sensitivity",
        in_range(0, 1e9, lo_open=True),
        name="dp-noise-multiplier",
    )
    weight_cap: float = declare(
        100.0, "ŵ: client weight w_k = min(n_k/ŵ, 1)", in_range(0, 1e12, lo_open=True), name="dp-weight-cap"
    )
    population: int = declare(
        0, "N: clients in the population (0 = connected nodes at round 1)", at_least(0), name="dp-population"
    )
    min_total_weight: float = declare(
        0.0, "W_min of the clipped estimator (0 = W)", at_least(0), name="dp-min-total-weight"
    )
    sampling: str = declare(
        "poisson",
        "client sampling: poisson (rate q) or fixed-size (round(qN))",
        one_of(*SAMPLING_MODES),
        name="dp-sampling",
    )
    sampling_rate: float = declare(
        0.1, "q: client sampling rate", in_range(0, 1, lo_open=True), name="dp-sampling-rate"
    )
    adaptive_clipping: bool = declare(
        False, "adapt C to a quantile of update norms (Andrew et al. 2021)", name="dp-adaptive-clipping"
    )
    target_quantile: float = declare(
        0.5, "γ: target share of unclipped updates", in_range(0, 1), name="dp-target-quantile"
    )
    count_noise_std: float = declare(
        0.0,
        "σ_b: noise on the unclipped count (0 = expected clients/20)",
        at_least(0),
        name="dp-count-noise-std",
    )
    accountant: str = declare(
        "rdp",
        "privacy accountant (dp-accounting): rdp or pld",
        one_of(*ACCOUNTANT_NAMES),
        name="dp-accountant",
    )
    delta: float = declare(
        1e-5,
        "δ of the reported (ε, δ); must be < 1/population",
        in_range(0, 1, lo_open=True, hi_open=True),
        name="dp-delta",
    )
    max_epsilon: float = declare(
        0.0,
        "stop before the round that would exceed this ε (0 = no limit)",
        at_least(0),
        name="dp-max-epsilon",
    )
    noise_seed: int = declare(
        -1,
        "seed for DP noise (-1 = OS entropy; a known seed voids the guarantee)",
        at_least(-1),
        name="dp-noise-seed",
    )
    secure_noise: bool = declare(
        False,
        "DP noise from a CSPRNG-seeded generator with floating-point mitigation (server and DP-SGD clients)",
        name="dp-secure-noise",
    )

    def check_combinations(self) -> None:
        """What no single key's range says: finiteness, and the combinations DP cannot honour."""
        for name, value, meaning in (
            ("dp-min-total-weight", self.min_total_weight, "0 = W"),
            ("dp-max-epsilon", self.max_epsilon, "0 = no limit"),
            ("dp-count-noise-std", self.count_noise_std, "0 = clients/20"),
        ):
            if not math.isfinite(value):
                raise _bad(name, value, f"must be a finite number >= 0 ({meaning})")
        if self.estimator == "model-noise":
            if self.max_epsilon > 0:
                raise _bad(
                    "dp-max-epsilon",
                    self.max_epsilon,
                    "cannot be enforced with dp-estimator='model-noise', which has no accounted epsilon",
                )
            if self.adaptive_clipping:
                raise _bad("dp-adaptive-clipping", True, "needs dp-estimator fixed, clipped or uniform")
        if self.estimator == "uniform" and self.sampling == "poisson":
            raise _bad(
                "dp-estimator",
                self.estimator,
                "'uniform' (sigma = z*S/m with the realised m) has no valid epsilon under "
                "dp-sampling='poisson': m is random and removing one client moves the mean by up to "
                "2S/(m+1), not S/m. Sound combinations: dp-estimator='uniform' with "
                "dp-sampling='fixed-size' (replace-one neighbours), or dp-estimator='fixed' or "
                "'clipped' with dp-sampling='poisson'",
            )
        if self.secure_noise and self.noise_seed >= 0:
            raise _bad(
                "dp-noise-seed",
                self.noise_seed,
                "dp-secure-noise=true draws noise from OS entropy and cannot use a known seed; "
                "set dp-noise-seed=-1 (or dp-secure-noise=false for a reproducible experiment)",
            )
        # Imported here: only a DP run pays for dp-accounting.
        from strategies.numeric.accounting import create_accountant

        try:  # PLD with fixed-size sampling
            create_accountant(
                self.accountant,
                sampling=self.sampling,
                population_size=1 if self.sampling == "fixed-size" else None,
            )
        except ValueError as exc:
            raise ConfigError(f"run config: dp-accountant={self.accountant!r} is invalid: {exc}") from exc
        if self.adaptive_clipping and self.count_noise_std > 0:
            check_count_noise(noise_multiplier=self.noise_multiplier, count_noise_std=self.count_noise_std)


@dataclass(frozen=True)
class DPFedProxConfig(DPConfig, FedProxConfig):
    """Keys of strategy ``dp-fedprox``: FedProx's μ and the DP wrapper's keys."""
