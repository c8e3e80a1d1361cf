"""Simulated Byzantine clients for robustness experiments (run config ``attack``).

The server sends the attack in the train config (``attack``, ``attack-fraction``,
``attack-scale`` and the run's ``seed``, from ``server_app.app.client_configs``); the
client reads it from there, never from its own run config. In the simulation engine,
``attack-fraction`` of the partitions are attackers, chosen by ``seed``
(:func:`harness.attacks.choose_attacked`: the same partitions for the same seed in
every process, and a larger fraction attacks a superset). An attacker trains like
everyone else and then replaces its update Δ = w_local − w_global:

- ``sign-flip``: sends w_global − c·Δ;
- ``scale``: sends w_global + c·Δ;
- ``gaussian``: sends w_global + N(0, c²) noise;
- ``label-flip``: trains on labels y ↦ K − 1 − y and sends its honest-looking update;

with c = ``attack-scale``. :func:`attack_mod` applies the update attacks as a Flower mod
around the ClientApp's train handler, outside the DP clipping mod: a Byzantine client
does not follow the protocol, so its update is replaced after clipping (and before
compression, which only encodes what the node sends). Label flipping poisons the
training data, which no mod can reach; the ClientApp's data loader applies
:func:`poison_data`. Every train reply of a run with an attack configured says in its
info record whether the node attacked and its partition id, so the ServerApp can record
the attackers in the run directory.

Attacks need partitions: a deployed SuperNode (``data-path``, or no ``partition-id``)
never attacks, whatever the server asks.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from logging import WARNING
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context, Message
from flwr.clientapp.typing import ClientAppCallable
from flwr.supercore import log

from harness.attacks import ATTACKS as ATTACK_CHOICES
from harness.attacks import choose_attacked, flip_labels, gaussian_update, scale_update, sign_flip
from strategies.core.records import from_layers, to_layers
from tasks import wire
from tasks.loading import ClientData

#: Attacks a client can simulate (declared once, with the ``attack`` key, in harness.attacks);
#: ``none`` (or no ``attack`` key) means an honest run.
ATTACKS = tuple(a for a in ATTACK_CHOICES if a != "none")
#: Attacks that replace the update (label-flip poisons the data instead).
UPDATE_ATTACKS = ("sign-flip", "scale", "gaussian")
#: Info-record keys of a train reply in a run with an attack configured.
ATTACKER_KEY = wire.ATTACKER
PARTITION_KEY = wire.PARTITION_ID
NUM_PARTITIONS_KEY = wire.NUM_PARTITIONS


@dataclass(frozen=True)
class AttackSettings:
    """The attack the server asked for in the train config.

    Parameters
    ----------
    kind : str
        One of :data:`ATTACKS`.
    fraction : float
        Share of the partitions that attack, in [0, 1].
    scale : float
        c of sign-flip / scale, the noise std of gaussian; > 0.
    seed : int
        The run seed: it chooses the attacked partitions and seeds gaussian noise.
    """

    kind: str
    fraction: float
    scale: float
    seed: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> AttackSettings | None:
        """The attack in a train config, or ``None`` when it asks for none.

        Raises
        ------
        ValueError
            Naming the key, if a value is not a valid attack setting (a server of
            another version, or a hand-made message): the node refuses to train.
        """
        kind = str(config.get(wire.ATTACK, "none"))
        if kind == "none":
            return None
        if kind not in ATTACKS:
            raise ValueError(f"train config {wire.ATTACK}={kind!r} must be one of none, {', '.join(ATTACKS)}")
        missing = [k for k in (wire.ATTACK_FRACTION, wire.ATTACK_SCALE, wire.SEED) if k not in config]
        if missing:
            raise ValueError(
                f"train config has {wire.ATTACK}={kind!r} but no {', '.join(missing)}: the server "
                "sends every attack setting (server_app.app.client_configs)"
            )
        fraction = float(config[wire.ATTACK_FRACTION])
        scale = float(config[wire.ATTACK_SCALE])
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"train config {wire.ATTACK_FRACTION}={fraction!r} must be in [0, 1]")
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"train config {wire.ATTACK_SCALE}={scale!r} must be > 0")
        return cls(kind, fraction, scale, int(config[wire.SEED]))


@functools.lru_cache(maxsize=64)  # bounded: one entry per (partitions, fraction, seed) seen
def _attacked(num_partitions: int, fraction: float, seed: int) -> frozenset[int]:
    return frozenset(choose_attacked(num_partitions, fraction=fraction, seed=seed))


def is_simulated(node_config: Mapping[str, Any]) -> bool:
    """Whether the node is a simulated partition (only those may attack)."""
    return (
        wire.PARTITION_ID in node_config
        and wire.NUM_PARTITIONS in node_config
        and not node_config.get(wire.DATA_PATH)
    )


def is_attacker(attack: AttackSettings | None, node_config: Mapping[str, Any]) -> bool:
    """Whether this node is one of the run's attackers (never without partitions)."""
    if attack is None or not is_simulated(node_config):
        return False
    partitions = int(node_config[wire.NUM_PARTITIONS])
    return int(node_config[wire.PARTITION_ID]) in _attacked(partitions, attack.fraction, attack.seed)


def flips_labels(attack: AttackSettings | None, node_config: Mapping[str, Any]) -> bool:
    """Whether this node trains on flipped labels (a label-flip attacker)."""
    return attack is not None and attack.kind == "label-flip" and is_attacker(attack, node_config)


def poison_data(data: ClientData, num_classes: int) -> ClientData:
    """Label flipping: the attacker's training labels (evaluation data stays honest)."""
    if num_classes < 2:
        return data
    return replace(data, y_train=flip_labels(data.y_train, num_classes=num_classes))


def poison_update(
    attack: AttackSettings,
    global_params: list[np.ndarray],
    local_params: list[np.ndarray],
    rng_seed: tuple[int, ...],
) -> list[np.ndarray]:
    """The model an attacker sends instead of ``local_params`` (update attacks only).

    ``rng_seed`` (seed, partition, round) seeds the gaussian attack's noise: attackers
    draw different noise, reproducibly.
    """
    if attack.kind not in UPDATE_ATTACKS:
        return local_params
    delta = [
        np.asarray(n, np.float64) - np.asarray(g, np.float64)
        for g, n in zip(global_params, local_params, strict=True)
    ]
    if attack.kind == "sign-flip":
        bad = sign_flip(delta, scale=attack.scale)
    elif attack.kind == "scale":
        bad = scale_update(delta, scale=attack.scale)
    else:
        bad = gaussian_update(delta, scale=attack.scale, rng=np.random.default_rng(list(rng_seed)))
    out = []
    for g, d, n in zip(global_params, bad, local_params, strict=True):
        dtype = np.asarray(n).dtype
        if np.issubdtype(dtype, np.floating):
            out.append((np.asarray(g, np.float64) + d).astype(dtype))
        else:  # integer buffers (e.g. BatchNorm's step count) are sent as trained
            out.append(np.asarray(n))
    return out


def attack_info(attack: AttackSettings | None, node_config: Mapping[str, Any]) -> dict[str, int | bool]:
    """What a train reply says about attacks (nothing unless an attack is configured)."""
    if attack is None or wire.PARTITION_ID not in node_config:
        return {}
    return {
        ATTACKER_KEY: is_attacker(attack, node_config),
        PARTITION_KEY: int(node_config[wire.PARTITION_ID]),
        NUM_PARTITIONS_KEY: int(node_config[wire.NUM_PARTITIONS]),
    }


def attack_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower mod: an attacker replaces its trained model; every reply says who attacked.

    Active only when the message's train config asks for an attack, and only on a
    simulated node (:func:`is_simulated`); on a deployed node a request is logged and
    ignored. The update attacks use the global model of ``msg`` and the seed
    (run seed, partition, round), so an attacker's noise is reproducible.
    """
    config = msg.content.config_records.get(wire.CONFIG)
    attack = None if config is None else AttackSettings.from_config(config)
    if config is None or attack is None:
        return call_next(msg, context)
    node = context.node_config
    if not is_simulated(node):
        log(WARNING, "attack=%r is for simulated nodes, not a deployed one: not attacking", attack.kind)
    reply = call_next(msg, context)
    if reply.has_error():
        return reply
    info = reply.content.config_records.get(wire.INFO)
    reply.content[wire.INFO] = ConfigRecord({**(info or {}), **attack_info(attack, node)})
    if attack.kind in UPDATE_ATTACKS and is_attacker(attack, node) and wire.ARRAYS in reply.content:
        names = list(reply.content.array_records[wire.ARRAYS].keys())
        global_layers = to_layers(msg.content.array_records[wire.ARRAYS], names)
        local_layers = to_layers(reply.content.array_records[wire.ARRAYS], names)
        seed = (
            attack.seed,
            wire.as_int(node[wire.PARTITION_ID]),
            wire.as_int(config.get(wire.SERVER_ROUND, 0)),
        )
        poisoned = poison_update(attack, global_layers, local_layers, seed)
        reply.content[wire.ARRAYS] = from_layers(names, poisoned)
    return reply
