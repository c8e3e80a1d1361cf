"""Simulated dropouts under secure aggregation: nodes lost after they shared their keys.

SecAgg+ (Bell et al. 2020, "Secure Single-Server Aggregation with (Poly)Logarithmic
Overhead", arXiv:2006.04747) is built to survive clients that vanish mid-round: a
client lost *after* it shared its keys has already handed its neighbours Shamir
shares of its pairwise-mask key, so while at least ``t`` (the reconstruction
threshold) of the sampled clients survive, the server rebuilds the dropped clients'
masks and removes them from the sum; with fewer than ``t`` the round cannot be
unmasked and keeps the previous model. That is the case this harness simulates,
because it is the one that exercises the protocol's recovery path (a client lost
before sharing keys is simply never part of the round).

Run config ``secagg-drop-after-share-keys`` = ``d``: ``d`` of the run's partitions
answer the setup and share-keys stages as usual and then stop answering, from the
collect-masked-vectors stage on, in every round they are sampled in. They reply with
Flower's ``NODE_UNAVAILABLE`` error, which is what the SuperLink hands the server for
a node that is gone, only without waiting for the round's deadline. Which partitions:
the first ``d`` of a permutation of ``0 .. num-partitions − 1`` drawn from the run
``seed`` (:func:`choose_dropped`), so the same seed loses the same partitions in every
process and every run, and a larger ``d`` loses a superset.

The server sends ``d`` and the seed in the train config (``server_app.app.client_configs``);
the client reads them from there, never from its own run config. A deployed SuperNode
(no ``partition-id``) never drops on purpose: it is as reliable as it is.

:func:`dropout_mod` is the outermost of the ClientApp's train mods
(``client_app.app.TRAIN_MODS``): it must see each secure-aggregation stage message
before the secure-aggregation mod answers it.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context, Error, Message
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.constant import ErrorCode

from tasks import wire
from tasks.config import Section, at_least, declare

#: Third entry of the generator's seed: keeps these draws apart from other per-partition streams.
_STREAM = 0xD809


@dataclass(frozen=True)
class DropoutConfig(Section):
    """Keys of the simulated secure-aggregation dropouts (simulation engine only)."""

    secagg_drop_after_share_keys: int = declare(
        0,
        "simulated partitions (chosen by seed) lost after key sharing in every SecAgg+ round "
        "(needs secure-aggregation='secagg+')",
        at_least(0),
    )


def dropout_problem(drop_after_share_keys: int, secure_aggregation: str) -> str | None:
    """Why a dropout setting cannot run with this secure-aggregation setting, or ``None``.

    Dropping after key sharing means something only inside SecAgg+'s stages; without
    them the setting would silently do nothing, so the run is refused instead.

    Parameters
    ----------
    drop_after_share_keys : int
        ``secagg-drop-after-share-keys``.
    secure_aggregation : str
        ``secure-aggregation`` (``none`` or ``secagg+``).

    Returns
    -------
    str or None
        The problem and its fix, or ``None`` when the combination is fine.
    """
    if drop_after_share_keys > 0 and secure_aggregation == "none":
        return (
            f"run config: secagg-drop-after-share-keys={drop_after_share_keys} simulates nodes lost "
            "between SecAgg+'s key-sharing and masked-input stages, but secure-aggregation='none' "
            "has no such stages; set secure-aggregation='secagg+' or secagg-drop-after-share-keys=0"
        )
    return None


def choose_dropped(num_partitions: int, *, count: int, seed: int) -> list[int]:
    """The partitions lost after key sharing in a run seeded ``seed``, reproducibly.

    Parameters
    ----------
    num_partitions : int
        Number of partitions, >= 1; ids are ``0 .. num_partitions - 1``.
    count : int
        How many are lost, >= 0 (more than ``num_partitions`` loses them all).
    seed : int
        The run seed (any integer; negative ones are mapped into numpy's seed range).

    Returns
    -------
    list of int
        The lost partition ids, sorted: the first ``count`` of a permutation drawn from
        ``seed``, so a larger ``count`` loses a superset.

    Raises
    ------
    ValueError
        If ``num_partitions`` < 1 or ``count`` < 0.
    """
    if num_partitions < 1:
        raise ValueError(f"num-partitions={num_partitions} must be >= 1")
    if count < 0:
        raise ValueError(f"secagg-drop-after-share-keys={count} must be >= 0")
    order = np.random.default_rng([int(seed) % 2**63, _STREAM]).permutation(num_partitions)
    return sorted(int(p) for p in order[:count])


@functools.lru_cache(maxsize=64)  # bounded: one entry per (partitions, count, seed) seen
def _dropped(num_partitions: int, count: int, seed: int) -> frozenset[int]:
    return frozenset(choose_dropped(num_partitions, count=count, seed=seed))


def is_dropped(config: Mapping[str, Any], node_config: Mapping[str, Any]) -> bool:
    """Whether this node is one the train config asks to lose after key sharing.

    Parameters
    ----------
    config : Mapping
        The train config the server sent (``secagg-drop-after-share-keys`` and ``seed``;
        absent means no dropouts).
    node_config : Mapping
        The node's config; only simulated partitions (``partition-id`` and
        ``num-partitions``, no ``data-path``) are ever dropped.

    Returns
    -------
    bool
        True for a chosen simulated partition.
    """
    count = wire.as_int(config.get(wire.SECAGG_DROP_AFTER_SHARE_KEYS, 0))
    simulated = (
        wire.PARTITION_ID in node_config
        and wire.NUM_PARTITIONS in node_config
        and not node_config.get(wire.DATA_PATH)
    )
    if count <= 0 or not simulated:
        return False
    partitions = wire.as_int(node_config[wire.NUM_PARTITIONS])
    seed = wire.as_int(config.get(wire.SEED, 0))
    return wire.as_int(node_config[wire.PARTITION_ID]) in _dropped(partitions, count, seed)


def stage_of(msg: Message) -> str | None:
    """The SecAgg+ stage a message asks for (Flower's stage names), or ``None`` outside SecAgg+."""
    configs = msg.content.config_records.get(wire.SECAGG_CONFIGS)
    if configs is None:
        return None
    stage = configs.get(wire.SECAGG_STAGE)
    return stage if isinstance(stage, str) else None


#: The stages a node lost after key sharing no longer answers.
LOST_STAGES = (wire.SECAGG_COLLECT, wire.SECAGG_UNMASK)
#: ``context.state`` record marking the node lost in the current round (the unmask stage
#: carries no train config to decide from).
_STATE = "secagg-dropout"


def dropout_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower mod: a chosen simulated node stops answering after SecAgg+'s share-keys stage.

    At the collect-masked-vectors stage the train config says whether this node is one
    of the lost (:func:`is_dropped`); if so it replies with a ``NODE_UNAVAILABLE`` error
    instead of training, and remembers (in ``context.state``) to stay silent at the
    unmask stage of the same round too. Setup and share-keys stages, messages outside
    SecAgg+, and every message to a node that is not chosen pass through untouched.

    Parameters
    ----------
    msg, context, call_next
        As for any Flower mod.

    Returns
    -------
    Message
        The handler's reply, or the error reply of a lost node.
    """
    stage = stage_of(msg)
    if stage not in LOST_STAGES:
        if stage is not None:  # a new round's setup: the node is back until told otherwise
            context.state.config_records.pop(_STATE, None)
        return call_next(msg, context)
    if stage == wire.SECAGG_COLLECT:
        config = msg.content.config_records.get(wire.CONFIG)
        lost = config is not None and is_dropped(config, context.node_config)
        context.state.config_records[_STATE] = ConfigRecord({"lost": lost})
    marker = context.state.config_records.get(_STATE)
    if marker is None or not marker.get("lost"):
        return call_next(msg, context)
    reason = (
        f"simulated dropout after key sharing (secagg-drop-after-share-keys): "
        f"partition {context.node_config.get(wire.PARTITION_ID)} does not answer stage {stage}"
    )
    return Message(Error(code=ErrorCode.NODE_UNAVAILABLE, reason=reason), reply_to=msg)
