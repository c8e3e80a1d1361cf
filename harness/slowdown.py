"""Simulated slow devices: each node trains f times slower than it really does, reproducibly.

Cross-device federations mix fast and slow phones; FedBuff (Nguyen et al. 2022,
arXiv:2106.06639) is built for exactly that, and its evaluation draws client durations
from a heavy-tailed distribution. In the simulation engine every virtual node runs on
the same CPU, so heterogeneity is simulated: node ``i`` gets a factor ``f_i >= 1`` and,
after training, sleeps ``(f_i - 1) * t`` where ``t`` is its measured training time, so
its reply arrives after ``f_i * t`` seconds. Sleeping (not spinning) keeps the CPU free
for the other nodes, as a slow phone would not slow the others down.

Factors (run config ``device-slowdown``; the server sends it and its parameters in the
train config, and the client reads them from there only):

- ``none``: f = 1 (the default; nothing is slept);
- ``uniform``: f ~ U[1, ``device-slowdown-max``];
- ``lognormal``: f = min(exp(sigma * |z|), ``device-slowdown-max``), z ~ N(0, 1), sigma =
  ``device-slowdown-sigma``: a folded lognormal, so f >= 1 with a heavy right tail (median
  exp(0.674 sigma)), capped so one device cannot stall a run forever.

Each factor is drawn from ``numpy.random.default_rng([seed, partition-id, stream])``: the
same run seed gives every partition the same factor in every run and for every strategy,
so synchronous and asynchronous runs face the same slow devices. A deployed SuperNode
(no ``partition-id``) is really as slow as it is: nothing is simulated there.

:func:`slowdown_mod` applies it as a Flower mod around the ClientApp's train handler
(``client_app.app``): it is the innermost mod, so the sleep follows training directly,
as a slow device's reply would, before clipping, attacks and compression touch the reply.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from logging import WARNING
from typing import Any

import numpy as np
from flwr.app import Context, Message, MetricRecord
from flwr.clientapp.typing import ClientAppCallable
from flwr.supercore import log

from tasks import wire
from tasks.config import Section, declare, in_range, one_of

#: Keys the server puts in the train config (``server_app.app.client_configs``).
SLOWDOWN_KEY, MAX_KEY, SIGMA_KEY, SEED_KEY = (
    wire.DEVICE_SLOWDOWN,
    wire.DEVICE_SLOWDOWN_MAX,
    wire.DEVICE_SLOWDOWN_SIGMA,
    wire.DEVICE_SLOWDOWN_SEED,
)
DISTRIBUTIONS = ("none", "uniform", "lognormal")


@dataclass(frozen=True)
class SlowdownConfig(Section):
    """Keys of the simulated slow devices (client side; README "Asynchronous FedBuff")."""

    device_slowdown: str = declare(
        "none",
        "simulated slow devices: none, uniform (f ~ U[1, max]) or lognormal (f = min(e^{σ|z|}, max))",
        one_of(*DISTRIBUTIONS),
    )
    device_slowdown_max: float = declare(4.0, "largest slowdown factor f", in_range(1, 1000))
    device_slowdown_sigma: float = declare(1.0, "σ of the lognormal slowdown", in_range(0, 10, lo_open=True))


#: Third entry of the generator's seed: keeps these draws apart from other per-partition streams.
_STREAM = 0x510_3D0E


def slowdown_factor(kind: str, *, seed: int, partition: int, max_factor: float, sigma: float) -> float:
    """The slowdown factor ``f >= 1`` of partition ``partition`` in a run seeded ``seed``.

    Parameters
    ----------
    kind : str
        ``none``, ``uniform`` or ``lognormal`` (see the module docstring).
    seed : int
        The run seed (any integer; negative ones are mapped into numpy's seed range).
    partition : int
        The node's ``partition-id``, >= 0.
    max_factor : float
        Largest factor, >= 1 (uniform's upper end; lognormal's cap).
    sigma : float
        Lognormal sigma, > 0 (ignored by the other kinds).

    Returns
    -------
    float
        ``f`` in ``[1, max_factor]``.

    Raises
    ------
    ValueError
        If ``kind`` is unknown or a parameter is out of range.
    """
    if kind not in DISTRIBUTIONS:
        raise ValueError(f"device-slowdown={kind!r} must be one of {', '.join(DISTRIBUTIONS)}")
    if not (math.isfinite(max_factor) and max_factor >= 1):
        raise ValueError(f"device-slowdown-max={max_factor!r} must be >= 1")
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"device-slowdown-sigma={sigma!r} must be > 0")
    if partition < 0:
        raise ValueError(f"partition-id={partition} must be >= 0")
    if kind == "none":
        return 1.0
    rng = np.random.default_rng([int(seed) % 2**63, int(partition), _STREAM])
    if kind == "uniform":
        return float(rng.uniform(1.0, max_factor))
    return float(min(math.exp(sigma * abs(rng.standard_normal())), max_factor))


def slow_down(
    config: Mapping[str, Any],
    node_config: Mapping[str, Any],
    train_seconds: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, float]:
    """Sleep as a device ``f`` times slower would have taken longer; metrics for the reply.

    Parameters
    ----------
    config : Mapping
        The train config the server sent (``device-slowdown`` and its parameters; absent
        means ``none``).
    node_config : Mapping
        The node's config; only simulated nodes (with ``partition-id``) are slowed.
    train_seconds : float
        The training time just measured, >= 0.
    sleep : callable, default time.sleep
        How to wait (tests pass a recorder).

    Returns
    -------
    dict
        ``{"slowdown-factor": f, "slowdown-seconds": slept}`` when a slowdown applies,
        else ``{}``.
    """
    kind = str(config.get(SLOWDOWN_KEY, "none"))
    if kind == "none":
        return {}
    if wire.PARTITION_ID not in node_config:
        log(WARNING, "device-slowdown=%r is for simulated nodes; this node has no partition-id", kind)
        return {}
    factor = slowdown_factor(
        kind,
        seed=int(config.get(SEED_KEY, 0)),
        partition=int(node_config[wire.PARTITION_ID]),
        max_factor=float(config.get(MAX_KEY, 4.0)),
        sigma=float(config.get(SIGMA_KEY, 1.0)),
    )
    extra = (factor - 1.0) * max(float(train_seconds), 0.0)
    if extra > 0:
        sleep(extra)
    return {wire.SLOWDOWN_FACTOR: factor, wire.SLOWDOWN_SECONDS: extra}


def slowdown_mod(
    msg: Message,
    context: Context,
    call_next: ClientAppCallable,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> Message:
    """Flower mod: after the train handler, sleep as a device ``f`` times slower would.

    Reads ``device-slowdown`` and its parameters from the message's train config (never
    from the run config) and the node's ``partition-id``; adds ``slowdown-factor`` and
    ``slowdown-seconds`` to the reply's metrics. A reply without ``train-seconds`` (an
    error, or not a train reply) passes through untouched.

    Parameters
    ----------
    msg, context, call_next
        As for any Flower mod.
    sleep : callable, default time.sleep
        How to wait (tests bind a recorder with ``functools.partial``).

    Returns
    -------
    Message
        The handler's reply, with the slowdown metrics when one applied.
    """
    reply = call_next(msg, context)
    config = msg.content.config_records.get(wire.CONFIG)
    metrics = None if reply.has_error() else reply.content.metric_records.get(wire.METRICS)
    if config is None or metrics is None or wire.TRAIN_SECONDS not in metrics:
        return reply
    extra = slow_down(config, context.node_config, wire.as_float(metrics[wire.TRAIN_SECONDS]), sleep=sleep)
    if extra:
        reply.content[wire.METRICS] = MetricRecord({**metrics, **extra})
    return reply
