"""The client half of SecAgg+ (Bell et al. 2020, arXiv:2006.04747) as a Flower mod on the train handler.

The server (``strategies/wrappers/secagg.py``) runs four stages per round, each a train
message whose ``secaggplus_configs`` record names the stage (``tasks.wire.SECAGG_*``, Flower's
own names). :func:`secagg_mod` answers them, keeping the node's protocol state in
``context.state`` between them (a simulation worker serves many nodes; a process cache
would mix them up):

1. **setup**: make two key pairs (Flower's ``generate_key_pairs``: one to agree pairwise
   mask seeds, one to encrypt shares); reply the public keys.
2. **share keys**: receive the neighbours' public keys; draw the private mask seed b;
   Shamir-split b and the mask private key into ``share_num`` shares with threshold t
   (``create_shares``); encrypt each neighbour's pair of shares with a key agreed by ECDH
   (``generate_shared_key`` + ``encrypt``, Fernet: authenticated); reply the
   ciphertexts, and SHA-256 digests of every share so the server can later tell a wrong
   share from a right one (edgebloom's addition: a client cannot spoil an unmasking that
   enough honest shares allow).
3. **collect masked vectors**: decrypt the shares addressed to this node (checking sender
   and addressee), then run the rest of the train chain — the NumPyClient's fit and the
   inner mods, DP clipping included, so the update is clipped *before* it is masked —
   and reply only ``y = [meta, w·Q(Δ)] + PRG(b) ± PRG(s_kj)  (mod 2^b)``
   (:func:`strategies.numeric.secagg.encode_update`): no model, no per-client metric.
4. **unmask**: reveal the b-shares of the survivors and the key shares of the dropped
   nodes the server names — never both for one node, never its own key.

Any message out of protocol order or malformed raises (Flower turns it into an error
reply, which the server counts): a node never answers a stage it cannot answer honestly.
A train message without the record passes through untouched (``secure-aggregation =
none``).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from logging import WARNING
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.secure_aggregation.crypto.shamir import create_shares
from flwr.common.secure_aggregation.crypto.symmetric_encryption import decrypt, encrypt, generate_shared_key
from flwr.common.secure_aggregation.secaggplus_utils import (
    pseudo_rand_gen,
    share_keys_plaintext_concat,
    share_keys_plaintext_separate,
)
from flwr.supercore import log
from flwr.supercore.primitives.asymmetric import (
    bytes_to_private_key,
    bytes_to_public_key,
    generate_key_pairs,
    private_key_to_bytes,
    public_key_to_bytes,
)

from strategies.core.buffers import is_parameter
from strategies.core.records import from_layers, to_layers
from strategies.numeric.secagg import SEED_BYTES, add_mod, capped_weight, encode_update, subtract_mod
from tasks import wire

#: The stage that may follow each stage (setup may always restart the protocol).
NEXT_STAGE = {
    wire.SECAGG_SETUP: wire.SECAGG_SHARE_KEYS,
    wire.SECAGG_SHARE_KEYS: wire.SECAGG_COLLECT,
    wire.SECAGG_COLLECT: wire.SECAGG_UNMASK,
    wire.SECAGG_UNMASK: wire.SECAGG_SETUP,
}


def draw_seed() -> bytes:
    """The private mask seed b: ``SEED_BYTES`` from the OS CSPRNG."""
    return os.urandom(SEED_BYTES)


def share_digest(share: bytes) -> bytes:
    """SHA-256 of one Shamir share: what the server checks a revealed share against."""
    return hashlib.sha256(share).digest()


@dataclass
class NodeState:
    """One node's SecAgg+ state between the stage messages of a round (kept in ``context.state``)."""

    stage: str = wire.SECAGG_UNMASK  # "before setup": only setup may come next
    nid: int = 0
    share_num: int = 0
    threshold: int = 0
    clipping_range: float = 0.0
    target_range: int = 0
    mod_range: int = 0
    max_weight: int = 0
    sk1: bytes = b""
    pk1: bytes = b""
    sk2: bytes = b""
    pk2: bytes = b""
    seed: bytes = b""
    #: Neighbour node id → (pk1, pk2), this node included.
    public_keys: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    #: Owner node id → this node's share of the owner's mask seed b / mask private key sk1.
    seed_shares: dict[int, bytes] = field(default_factory=dict)
    key_shares: dict[int, bytes] = field(default_factory=dict)

    def to_record(self) -> ConfigRecord:
        """The state as a ConfigRecord (dicts as parallel lists)."""
        nids = list(self.public_keys)
        owners = list(self.seed_shares)
        return ConfigRecord(
            {
                "stage": self.stage,
                "nid": self.nid,
                "share_num": self.share_num,
                "threshold": self.threshold,
                "clipping_range": self.clipping_range,
                "target_range": self.target_range,
                "mod_range": self.mod_range,
                "max_weight": self.max_weight,
                "sk1": self.sk1,
                "pk1": self.pk1,
                "sk2": self.sk2,
                "pk2": self.pk2,
                "seed": self.seed,
                "pk_nids": nids,
                "pk1s": [self.public_keys[n][0] for n in nids],
                "pk2s": [self.public_keys[n][1] for n in nids],
                "share_owners": owners,
                "seed_shares": [self.seed_shares[n] for n in owners],
                "key_shares": [self.key_shares[n] for n in owners],
            }
        )

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> NodeState:
        """The state :meth:`to_record` saved (a fresh one when ``record`` is empty)."""
        if not record:
            return cls()
        nids = [int(n) for n in record["pk_nids"]]
        owners = [int(n) for n in record["share_owners"]]
        return cls(
            stage=str(record["stage"]),
            nid=int(record["nid"]),
            share_num=int(record["share_num"]),
            threshold=int(record["threshold"]),
            clipping_range=float(record["clipping_range"]),
            target_range=int(record["target_range"]),
            mod_range=int(record["mod_range"]),
            max_weight=int(record["max_weight"]),
            sk1=bytes(record["sk1"]),
            pk1=bytes(record["pk1"]),
            sk2=bytes(record["sk2"]),
            pk2=bytes(record["pk2"]),
            seed=bytes(record["seed"]),
            public_keys={
                n: (bytes(a), bytes(b)) for n, a, b in zip(nids, record["pk1s"], record["pk2s"], strict=True)
            },
            seed_shares=dict(zip(owners, map(bytes, record["seed_shares"]), strict=True)),
            key_shares=dict(zip(owners, map(bytes, record["key_shares"]), strict=True)),
        )


class ProtocolError(ValueError):
    """A stage message this node cannot answer honestly (out of order, malformed, unsafe)."""


def _typed(config: Mapping[str, Any], key: str, kind: type) -> Any:
    value = config.get(key)
    if type(value) is not kind:  # bool is an int: exact types only
        raise ProtocolError(f"SecAgg+ {config.get(wire.SECAGG_STAGE)}: {key!r} must be a {kind.__name__}")
    return value


def _int_list(config: Mapping[str, Any], key: str) -> list[int]:
    value = config.get(key, [])
    if not isinstance(value, list) or any(type(v) is not int for v in value):
        raise ProtocolError(f"SecAgg+: {key!r} must be a list of node ids")
    return list(value)


def _bytes_list(config: Mapping[str, Any], key: str) -> list[bytes]:
    value = config.get(key, [])
    if not isinstance(value, list) or any(not isinstance(v, bytes) for v in value):
        raise ProtocolError(f"SecAgg+: {key!r} must be a list of bytes")
    return list(value)


# ------------------------------------------------------------------ the stages
def setup(config: Mapping[str, Any], nid: int) -> tuple[NodeState, dict[str, Any]]:
    """Stage 1: a fresh state from the round's parameters and two new key pairs; reply the public keys."""
    fresh = NodeState(stage=wire.SECAGG_SETUP, nid=nid)
    fresh.share_num = _typed(config, wire.SECAGG_SHARE_NUMBER, int)
    fresh.threshold = _typed(config, wire.SECAGG_THRESHOLD, int)
    fresh.clipping_range = _typed(config, wire.SECAGG_CLIPPING_RANGE, float)
    fresh.target_range = _typed(config, wire.SECAGG_TARGET_RANGE, int)
    fresh.mod_range = _typed(config, wire.SECAGG_MOD_RANGE, int)
    fresh.max_weight = _typed(config, wire.SECAGG_MAX_WEIGHT, int)
    if not (2 <= fresh.threshold <= fresh.share_num and 2 * fresh.threshold > fresh.share_num):
        raise ProtocolError(
            f"SecAgg+ setup: threshold {fresh.threshold} must be in (share_num/2, share_num], "
            f"share_num={fresh.share_num}"
        )
    if fresh.mod_range < 2 or fresh.mod_range & (fresh.mod_range - 1) or fresh.mod_range > 2**62:
        raise ProtocolError(f"SecAgg+ setup: mod_range {fresh.mod_range} must be a power of two <= 2^62")
    if not (fresh.clipping_range > 0 and math.isfinite(fresh.clipping_range)) or fresh.target_range < 2:
        raise ProtocolError("SecAgg+ setup: clipping_range must be > 0 and target_range >= 2")
    if fresh.max_weight < 1:
        raise ProtocolError("SecAgg+ setup: max_weight must be >= 1")
    sk1, pk1 = generate_key_pairs()
    sk2, pk2 = generate_key_pairs()
    fresh.sk1, fresh.pk1 = private_key_to_bytes(sk1), public_key_to_bytes(pk1)
    fresh.sk2, fresh.pk2 = private_key_to_bytes(sk2), public_key_to_bytes(pk2)
    return fresh, {wire.SECAGG_PUBLIC_KEY_1: fresh.pk1, wire.SECAGG_PUBLIC_KEY_2: fresh.pk2}


def share_keys(state: NodeState, config: Mapping[str, Any]) -> dict[str, Any]:
    """Stage 2: Shamir-split the mask seed and mask key; encrypt each neighbour's shares for it."""
    keys: dict[int, tuple[bytes, bytes]] = {}
    for key, value in config.items():
        if key == wire.SECAGG_STAGE:
            continue
        if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, bytes) for v in value)):
            raise ProtocolError(f"SecAgg+ share keys: entry {key!r} must be a list of two public keys")
        try:
            keys[int(key)] = (bytes(value[0]), bytes(value[1]))
        except ValueError:
            raise ProtocolError(f"SecAgg+ share keys: {key!r} is not a node id") from None
    if keys.get(state.nid) != (state.pk1, state.pk2):
        raise ProtocolError("SecAgg+ share keys: this node's own public keys are missing or altered")
    if not (state.threshold <= len(keys) <= state.share_num):
        raise ProtocolError(
            f"SecAgg+ share keys: {len(keys)} neighbours; need between threshold={state.threshold} "
            f"and share_num={state.share_num}"
        )
    flat = [k for pair in keys.values() for k in pair]
    if len(set(flat)) != len(flat):
        raise ProtocolError("SecAgg+ share keys: two public keys are identical")
    state.public_keys = keys
    state.seed = draw_seed()
    seed_shares = create_shares(state.seed, state.threshold, state.share_num)
    key_shares = create_shares(state.sk1, state.threshold, state.share_num)
    sk2 = bytes_to_private_key(state.sk2)
    dsts, ciphertexts, holders, seed_digests, key_digests = [], [], [], [], []
    for i, nid in enumerate(sorted(keys)):
        holders.append(nid)
        seed_digests.append(share_digest(seed_shares[i]))
        key_digests.append(share_digest(key_shares[i]))
        if nid == state.nid:
            state.seed_shares = {nid: seed_shares[i]}
            state.key_shares = {nid: key_shares[i]}
            continue
        shared = generate_shared_key(sk2, bytes_to_public_key(keys[nid][1]))
        plaintext = share_keys_plaintext_concat(state.nid, nid, seed_shares[i], key_shares[i])
        dsts.append(nid)
        ciphertexts.append(encrypt(shared, plaintext))
    return {
        wire.SECAGG_DESTINATION_LIST: dsts,
        wire.SECAGG_CIPHERTEXT_LIST: ciphertexts,
        wire.SECAGG_HOLDER_LIST: holders,
        wire.SECAGG_SEED_SHARE_DIGESTS: seed_digests,
        wire.SECAGG_KEY_SHARE_DIGESTS: key_digests,
    }


def receive_shares(state: NodeState, config: Mapping[str, Any]) -> list[int]:
    """Stage 3, first half: decrypt the shares addressed to this node; return their senders."""
    ciphertexts = _bytes_list(config, wire.SECAGG_CIPHERTEXT_LIST)
    sources = _int_list(config, wire.SECAGG_SOURCE_LIST)
    if len(ciphertexts) != len(sources) or len(set(sources)) != len(sources):
        raise ProtocolError("SecAgg+ collect: ciphertexts and distinct sources must pair up")
    if len(sources) + 1 < state.threshold:
        raise ProtocolError(
            f"SecAgg+ collect: shares from {len(sources)} neighbours, fewer than threshold - 1 "
            f"= {state.threshold - 1}"
        )
    sk2 = bytes_to_private_key(state.sk2)
    for src, ciphertext in zip(sources, ciphertexts, strict=True):
        if src == state.nid or src not in state.public_keys:
            raise ProtocolError(f"SecAgg+ collect: a share from node {src}, not a neighbour")
        shared = generate_shared_key(sk2, bytes_to_public_key(state.public_keys[src][1]))
        try:
            plaintext = decrypt(shared, ciphertext)
        except Exception as exc:  # Fernet's InvalidToken: tampered or misaddressed
            raise ProtocolError(f"SecAgg+ collect: the share from node {src} does not decrypt") from exc
        actual_src, dst, seed_share, key_share = share_keys_plaintext_separate(plaintext)
        if actual_src != src or dst != state.nid:
            raise ProtocolError(f"SecAgg+ collect: a share relabelled (from {actual_src} to {dst})")
        state.seed_shares[src] = seed_share
        state.key_shares[src] = key_share
    return sources


def mask(state: NodeState, encoded: list[np.ndarray], sources: list[int]) -> list[np.ndarray]:
    """``encoded + PRG(b) + Σ_{j<k} PRG(s_kj) − Σ_{j>k} PRG(s_kj)  (mod 2^b)`` (Flower's convention)."""
    shapes = [a.shape for a in encoded]
    masked = add_mod(encoded, pseudo_rand_gen(state.seed, state.mod_range, shapes), state.mod_range)
    sk1 = bytes_to_private_key(state.sk1)
    for nid in sources:
        pairwise_seed = generate_shared_key(sk1, bytes_to_public_key(state.public_keys[nid][0]))
        pairwise = pseudo_rand_gen(pairwise_seed, state.mod_range, shapes)
        op = add_mod if state.nid > nid else subtract_mod
        masked = op(masked, pairwise, state.mod_range)
    return masked


def unmask(state: NodeState, config: Mapping[str, Any]) -> dict[str, Any]:
    """Stage 4: the survivors' seed shares and the dropped nodes' key shares, never both for one."""
    active = _int_list(config, wire.SECAGG_ACTIVE_NODE_ID_LIST)
    dead = _int_list(config, wire.SECAGG_DEAD_NODE_ID_LIST)
    if set(active) & set(dead) or len(set(active)) != len(active) or len(set(dead)) != len(dead):
        raise ProtocolError("SecAgg+ unmask: a node listed twice, or as both survivor and dropped")
    if state.nid in dead or state.nid not in active:
        raise ProtocolError("SecAgg+ unmask: this node answered, so it is a survivor, not dropped")
    unknown = [n for n in active + dead if n not in state.seed_shares]
    if unknown:
        raise ProtocolError(f"SecAgg+ unmask: no shares held for node(s) {unknown}")
    if len(active) < state.threshold:
        raise ProtocolError(
            f"SecAgg+ unmask: {len(active)} survivors among the neighbours, "
            f"fewer than threshold={state.threshold}"
        )
    shares = [state.seed_shares[n] for n in active] + [state.key_shares[n] for n in dead]
    return {wire.SECAGG_NODE_ID_LIST: active + dead, wire.SECAGG_SHARE_LIST: shares}


def masked_reply(
    state: NodeState, msg: Message, reply: Message, sources: list[int]
) -> tuple[list[str], list[np.ndarray]]:
    """Stage 3, second half: the names and masked arrays of the node's weighted update."""
    global_record = msg.content.array_records[wire.ARRAYS]
    names = list(global_record.keys())
    global_layers = to_layers(global_record)
    local = to_layers(reply.content.array_records[wire.ARRAYS], names)
    index = [i for i, g in enumerate(global_layers) if is_parameter(g.dtype)]
    delta = [np.asarray(local[i], np.float64) - np.asarray(global_layers[i], np.float64) for i in index]
    metrics: Mapping[str, Any] = reply.content.metric_records.get(wire.METRICS) or {}
    num_examples = wire.as_int(metrics.get(wire.NUM_EXAMPLES, 0))
    weight = capped_weight(num_examples, state.max_weight)
    if weight < num_examples:
        log(
            WARNING,
            "SecAgg+: node %d weighs its update by secagg-max-weight=%d, not its %d examples",
            state.nid,
            state.max_weight,
            num_examples,
        )
    unclipped = metrics.get(wire.UNCLIPPED, 0)
    encoded = encode_update(
        delta,
        weight=weight,
        train_loss=wire.as_float(metrics.get(wire.TRAIN_LOSS, 0.0)),
        unclipped=1 if unclipped == 1 else 0,
        clipping_range=state.clipping_range,
        quantization_range=state.target_range,
    )
    return [wire.SECAGG_META] + [names[i] for i in index], mask(state, encoded, sources)


# ------------------------------------------------------------------ the mod
def secagg_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower mod: answer the SecAgg+ stage a train message carries; pass any other message through.

    Outermost of the train mods (``client_app/app.py``): at the collect stage the rest of
    the chain (compression is refused with secure aggregation, then attack, DP clipping,
    slow-down, the NumPyClient) produces the update this mod masks.
    """
    configs = msg.content.config_records.get(wire.SECAGG_CONFIGS)
    if configs is None:
        return call_next(msg, context)
    stage = configs.get(wire.SECAGG_STAGE)
    saved = context.state.config_records.get(wire.SECAGG_STATE)
    state = NodeState.from_record(saved if saved is not None else {})
    if stage not in NEXT_STAGE:
        raise ProtocolError(f"SecAgg+: unknown stage {stage!r}")
    if stage != wire.SECAGG_SETUP and NEXT_STAGE[state.stage] != stage:
        raise ProtocolError(
            f"SecAgg+: stage {stage!r} after {state.stage!r}; expected {NEXT_STAGE[state.stage]!r}"
        )
    content = RecordDict()
    if stage == wire.SECAGG_SETUP:
        state, result = setup(configs, int(msg.metadata.dst_node_id))
    elif stage == wire.SECAGG_SHARE_KEYS:
        result = share_keys(state, configs)
    elif stage == wire.SECAGG_COLLECT:
        sources = receive_shares(state, configs)
        reply = call_next(msg, context)
        if reply.has_error():
            return reply
        names, masked = masked_reply(state, msg, reply, sources)
        content[wire.SECAGG_MASKED] = from_layers(names, masked)
        result = {}
    else:
        result = unmask(state, configs)
        # The round is over for this node: keep no key, seed or share in its state.
        state = NodeState(nid=state.nid)
    state.stage = str(stage)
    context.state.config_records[wire.SECAGG_STATE] = state.to_record()
    content[wire.SECAGG_CONFIGS] = ConfigRecord({wire.SECAGG_STAGE: str(stage), **result})
    return Message(content=content, reply_to=msg)


__all__ = ["NodeState", "ProtocolError", "secagg_mod", "share_digest"]
