"""The keys of secure aggregation (``strategies/wrappers/secagg.py``), declared once, and their checks.

A module of its own (like ``dp_config.py``) so that building or listing the run config
does not import the wrapper. Building a :class:`SecAggConfig` checks every key and every
combination of them, so the wrapper is never built from settings it cannot honour.
"""

from __future__ import annotations

from dataclasses import dataclass

from strategies.numeric.secagg import MAX_CLIENTS_BITS, MAX_MODULUS_BITS, MAX_QUANTIZATION_RANGE
from tasks.config import ConfigError, Section, at_least, declare, in_range, one_of

#: ``secure-aggregation``: off, or SecAgg+ (Bell et al. 2020).
MODES = ("none", "secagg+")


def _bad(key: str, value: object, allowed: str) -> ConfigError:
    return ConfigError(f"run config: {key}={value!r} is invalid: {allowed}")


@dataclass(frozen=True)
class SecAggConfig(Section):
    """Keys of secure aggregation (README "Secure aggregation")."""

    mode: str = declare(
        "none",
        "none, or secagg+: the server learns only the sum of the sampled clients' weighted updates",
        one_of(*MODES),
        name="secure-aggregation",
    )
    num_shares: int = declare(
        11,
        "SecAgg+ neighbourhood size (odd, the node included): each node shares its secrets with these",
        at_least(3),
        name="secagg-num-shares",
    )
    reconstruction_threshold: int = declare(
        6,
        "t: shares that rebuild a secret; private against t-1 colluders, tolerates num-shares - t dropouts",
        at_least(2),
        name="secagg-reconstruction-threshold",
    )
    clipping_range: float = declare(
        8.0,
        "c: update coordinates are clipped to [-c, c] before quantization (>= dp-clip-norm with DP)",
        in_range(0, 1e6, lo_open=True),
        name="secagg-clipping-range",
    )
    quantization_range: int = declare(
        4194304,
        "R: quantization levels over [-c, c]; per-coordinate error of the mean < 2c/R",
        in_range(2, MAX_QUANTIZATION_RANGE),
        name="secagg-quantization-range",
    )
    max_weight: int = declare(
        10000,
        "cap on a client's weight: it masks min(num-examples, this) * update (= dp-weight-cap with DP)",
        at_least(1),
        name="secagg-max-weight",
    )

    @property
    def enabled(self) -> bool:
        """Whether secure aggregation is on."""
        return self.mode != "none"

    def check_combinations(self) -> None:
        """Threshold against shares, and a modulus that cannot wrap for up to 2^20 clients a round."""
        if self.num_shares % 2 == 0:
            raise _bad(
                "secagg-num-shares",
                self.num_shares,
                "must be odd (each node's neighbourhood is itself and num-shares // 2 nodes on each "
                "side of a ring); use one more or one less",
            )
        if not (self.num_shares / 2 < self.reconstruction_threshold <= self.num_shares):
            raise _bad(
                "secagg-reconstruction-threshold",
                self.reconstruction_threshold,
                f"must be > secagg-num-shares/2 = {self.num_shares / 2:g} (else two disjoint groups "
                f"could each rebuild a secret) and <= secagg-num-shares={self.num_shares}",
            )
        bits = (self.max_weight * (self.quantization_range + 1)).bit_length() + MAX_CLIENTS_BITS
        if bits > MAX_MODULUS_BITS:
            raise _bad(
                "secagg-max-weight",
                self.max_weight,
                f"with secagg-quantization-range={self.quantization_range} the sum of up to "
                f"2^{MAX_CLIENTS_BITS} clients' weighted, quantized updates needs a {bits}-bit "
                f"modulus, more than the {MAX_MODULUS_BITS} bits int64 masking allows; lower "
                "secagg-max-weight or secagg-quantization-range",
            )
