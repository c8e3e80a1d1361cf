"""Secure aggregation (SecAgg+) on the Message API, as a wrapper around a linear strategy.

Bell et al. 2020, "Secure Single-Server Aggregation with (Poly)Logarithmic Overhead"
(arXiv:2006.04747); Bonawitz et al. 2017, "Practical Secure Aggregation for
Privacy-Preserving Machine Learning" (SecAgg). Flower 1.41 ships SecAgg+ only for its
legacy API (``SecAggPlusWorkflow`` needs a ``LegacyContext``, ``secaggplus_mod`` a
``FitRes``); this is the same protocol for edgebloom's Message-API strategies, built from
Flower's primitives only (``flwr.common.secure_aggregation``: Shamir shares, ECDH + Fernet,
the masks' PRG, quantization). The client half is ``client_app/secagg.py``; the encoding,
modulus, graph and error bound are ``strategies/numeric/secagg.py``.

A round
-------
``configure_train`` is the inner strategy's (sampling, stragglers, DP's Poisson sample,
FedProx's μ: the train messages as they would be sent). The round driver then calls
:meth:`SecAggPlus.train_exchange` (the loop's train-exchange hook, ``strategies/core/loop.py``)
instead of one ``send_and_receive``: four stages, each one bounded Grid call with the
round's timeout and TTL (``strategies/core/deadline.py``):

1. setup → public keys (U1: nodes that answered with valid, distinct keys);
2. share keys → encrypted shares relayed between neighbours (U2);
3. collect masked vectors: the round's train message plus the node's shares; each node
   trains and replies only its masked vector (U3, the survivors); the server sums them;
4. unmask: survivors reveal the survivors' seed shares and the dropped nodes' key shares
   (D = U2 − U3: lost after sharing keys); each share is checked against the digest its
   dealer published, t good shares rebuild each secret, and the masks are removed.

What remains is ``Σ_k [w_k, w_k·loss_k, u_k, w_k·Q(Δ_k)]`` over the survivors: the
weighted mean update, the weighted-mean train loss and (DP) the unclipped count. The inner
strategy sees only that: FedAvg-family strategies get the secure mean model through
``apply_aggregate`` (a server optimizer steps on it) and ``release_model``; DP-FedAvg
(``dp-clipping='client'``) gets the secure weighted sum through
:meth:`~strategies.wrappers.dp_fedavg.DPFedAvg.aggregate_secure_sum`, adds its noise and
accounts the round. No code path of the server holds one client's unmasked update.

Dropouts and misbehaviour
-------------------------
Nodes lost before their shares were relayed are simply left out; a node left with fewer
than t live neighbours is excluded (``secagg-too-few-neighbours``) before it can matter.
After share keys, a node lost is recovered (its pairwise masks removed) as long as t of
its neighbours answer the unmask stage. A malformed or out-of-protocol stage reply is
dropped and counted with a named reason (``secagg-malformed-reply``,
``secagg-malformed-masked-vector``, ``secagg-bad-share``), like any invalid reply. A
round that cannot be unmasked (fewer than t survivors, or a secret with fewer than t good
shares) keeps the previous model, logged and counted (``secagg-below-threshold`` in
``rejected``, ``kept_previous_model``); the run goes on.

Per round, :meth:`SecAggPlus.round_metrics` adds ``secagg_survivors`` (vectors unmasked),
``secagg_dropped`` (lost after share keys), ``secagg_lost_before_masking``,
``secagg_modulus_bits``, ``secagg_kept_reason`` and the four stages' payload bytes
(``secagg_bytes_down``, ``secagg_bytes_up``: :func:`payload_bytes`) to metrics.json.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common.secure_aggregation.crypto.shamir import combine_shares
from flwr.common.secure_aggregation.crypto.symmetric_encryption import generate_shared_key
from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
from flwr.serverapp import Grid
from flwr.supercore import log
from flwr.supercore.primitives.asymmetric import (
    bytes_to_private_key,
    bytes_to_public_key,
    public_key_to_bytes,
)

from strategies.algorithms.fedavg import FedAvg
from strategies.algorithms.fedbuff import FedBuff
from strategies.algorithms.robust_base import RobustFedAvg
from strategies.core.buffers import parameter_indices, select, with_previous_buffers
from strategies.core.deadline import send_and_receive_within
from strategies.core.ledger import RoundStats, split_replies
from strategies.core.loop import with_ttl
from strategies.core.protocol import EdgeStrategy
from strategies.core.records import ARRAYS_KEY, CONFIG_KEY, to_layers
from strategies.core.reply_checks import (
    SECAGG_BAD_SHARE,
    SECAGG_BELOW_THRESHOLD,
    SECAGG_MALFORMED_MASKED,
    SECAGG_MALFORMED_REPLY,
    SECAGG_TOO_FEW_NEIGHBOURS,
    Rejection,
)
from strategies.numeric.secagg import (
    META_LENGTH,
    SEED_BYTES,
    SecureSum,
    add_mod,
    below_threshold,
    decode_sum,
    modulus_bits,
    neighbours,
    subtract_mod,
    wrap_problem,
)
from strategies.wrappers.base import StrategyWrapper
from strategies.wrappers.dp_fedavg import DPFedAvg
from strategies.wrappers.secagg_config import SecAggConfig
from tasks import wire


class BelowThreshold(Exception):
    """The round cannot be unmasked (or cannot start); the message is the kept-model reason."""


@dataclass
class RoundOutcome:
    """What one round of the protocol produced: the secure sum, or why there is none."""

    secure: SecureSum | None = None
    reason: str | None = None
    survivors: list[int] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    lost_before_masking: int = 0
    modulus_bits: int | None = None
    bytes_down: int = 0
    bytes_up: int = 0

    def metrics(self) -> dict[str, Any]:
        """The round's secure-aggregation figures for metrics.json."""
        return {
            "secagg_survivors": len(self.survivors),
            "secagg_dropped": len(self.dropped),
            "secagg_lost_before_masking": self.lost_before_masking,
            "secagg_modulus_bits": self.modulus_bits,
            "secagg_kept_reason": self.reason,
            "secagg_bytes_down": self.bytes_down,
            "secagg_bytes_up": self.bytes_up,
        }


def secagg_inner_problem(strategy: object) -> str | None:
    """Why :class:`SecAggPlus` cannot wrap ``strategy``, or None.

    Secure aggregation hands the inner strategy one number per coordinate — the weighted
    sum of the survivors' updates — so it composes with rules that are a function of that
    sum: FedAvg, FedProx, the server optimizers (FedAdam, FedYogi, FedAdagrad, FedAvgM) and
    DP-FedAvg / DP-FedProx with client-side clipping and the ``fixed`` or ``clipped``
    estimator. Refused, with the reason:

    - robust rules (median, trimmed mean, Multi-Krum, norm bounding): they need each
      client's update, which secure aggregation exists to hide;
    - FedBuff: it aggregates each update as it arrives, asynchronously; SecAgg+ sums a
      synchronous cohort;
    - DP with ``dp-clipping='server'``: the server would have to see each update to clip it;
      ``uniform`` / ``model-noise`` estimators: not implemented on a secure sum;
    - anything else (a plug-in, the compression wrapper): it has no secure-sum hook.
    """
    if isinstance(strategy, DPFedAvg):
        if strategy.clipping != "client":
            return (
                "dp-clipping='server' clips each client's update on the server, which secure aggregation "
                "hides from it; set dp-clipping='client' (clients clip, the server noises the secure sum)"
            )
        if strategy.estimator not in ("fixed", "clipped"):
            return (
                f"dp-estimator={strategy.estimator!r} is not implemented on a secure sum; use "
                "dp-estimator='fixed' or 'clipped'"
            )
        return None
    if isinstance(strategy, RobustFedAvg):
        return (
            f"{type(strategy).__name__} is a robust rule that needs each client's update, which secure "
            "aggregation hides; use fedavg, fedprox, a server optimizer or dp-fedavg"
        )
    if isinstance(strategy, FedBuff):
        return (
            "FedBuff aggregates each update as it arrives; SecAgg+ can only unmask the sum of a "
            "synchronous cohort. Use a synchronous strategy"
        )
    if not isinstance(strategy, FedAvg):
        return (
            f"{type(strategy).__name__} is not a FedAvg-family strategy (or DP-FedAvg), the only ones that "
            "can release a model from the secure sum alone"
        )
    return None


class SecAggPlus(StrategyWrapper[EdgeStrategy]):
    """SecAgg+ around a linear strategy: the server learns only the survivors' weighted sum.

    Parameters
    ----------
    inner : FedAvg or DPFedAvg
        The wrapped strategy (see :func:`secagg_inner_problem` for what is refused).
    config : SecAggConfig
        The ``secagg-*`` keys, validated when built.
    rng : numpy.random.Generator, optional
        Shuffles the neighbour graph (default: OS entropy).

    Raises
    ------
    ValueError
        Naming secure aggregation and why, for an inner strategy it cannot wrap, or
        ``secagg-max-weight`` different from DP's ``dp-weight-cap``.
    """

    def __init__(
        self, inner: EdgeStrategy, config: SecAggConfig, *, rng: np.random.Generator | None = None
    ) -> None:
        super().__init__()
        problem = secagg_inner_problem(inner)
        if problem is not None:
            raise ValueError(f"secure-aggregation='secagg+' cannot wrap {type(inner).__name__}: {problem}")
        if isinstance(inner, DPFedAvg):
            if inner.weight_cap != config.max_weight:
                raise ValueError(
                    f"secure-aggregation='secagg+' with DP weighs client k by min(n_k, secagg-max-weight), "
                    f"which is DP's weight w_k = min(n_k/dp-weight-cap, 1) times the cap only if the two are "
                    f"equal: set secagg-max-weight = dp-weight-cap (both integers), got "
                    f"{config.max_weight} and {inner.weight_cap:g}"
                )
            if config.clipping_range < inner.clip_norm:
                raise ValueError(
                    f"secure-aggregation='secagg+' with secagg-clipping-range={config.clipping_range:g} < "
                    f"dp-clip-norm={inner.clip_norm:g}: a clipped update may still have a coordinate up to "
                    "S, which quantization would clip again; set secagg-clipping-range >= dp-clip-norm"
                )
            if inner.adaptive_clipping:
                raise ValueError(
                    "secure-aggregation='secagg+' with dp-adaptive-clipping=true: the clipping norm can "
                    "grow past secagg-clipping-range during the run; set dp-adaptive-clipping=false"
                )
        self.inner = inner
        self.config = config
        self._rng = rng if rng is not None else np.random.default_rng()
        self._global: dict[int, ArrayRecord] = {}
        self._outcome: dict[int, RoundOutcome] = {}
        self._round_metrics: dict[int, dict[str, Any]] = {}

    # ------------------------------------------------------------ protocol members
    def summary(self) -> None:
        c = self.config
        log(
            INFO,
            "\t├──> Secure aggregation: SecAgg+ (num-shares=%d, threshold=%d, clipping-range=%g, "
            "quantization-range=%d, max-weight=%d)",
            c.num_shares,
            c.reconstruction_threshold,
            c.clipping_range,
            c.quantization_range,
            c.max_weight,
        )
        self.inner.summary()

    def round_metrics(self, server_round: int) -> dict[str, Any]:
        """The inner's per-round metrics and this round's secure-aggregation figures."""
        return {**super().round_metrics(server_round), **self._round_metrics.get(server_round, {})}

    # ------------------------------------------------------------------ training
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = list(self.inner.configure_train(server_round, arrays, config, grid))
        self._global = {server_round: arrays}
        return messages

    def train_exchange(
        self, grid: Grid, server_round: int, messages: Sequence[Message], timeout: float
    ) -> list[Message]:
        """The four SecAgg+ stages in place of one ``send_and_receive`` (the loop's hook).

        Returns no replies: the masked vectors are summed as they are checked and not kept
        (K int64 vectors of the model's size would otherwise stay in memory until
        aggregation); the secure sum waits for :meth:`aggregate_train`.
        """
        outcome = RoundOutcome()
        try:
            self._run_protocol(grid, server_round, list(messages), timeout, outcome)
        except BelowThreshold as exc:
            outcome.secure, outcome.reason = None, str(exc)
        self._outcome[server_round] = outcome
        self._round_metrics[server_round] = outcome.metrics()
        return []

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The new model from the round's secure sum only (``replies`` are masked: unused)."""
        outcome = self._outcome.pop(server_round, None)
        record = self._global.pop(server_round, None)
        if outcome is None or record is None:
            raise RuntimeError(f"aggregate_train({server_round}) without configure_train and train_exchange")
        stats = self.stats.setdefault(server_round, RoundStats())
        if outcome.secure is None:
            reason = outcome.reason or "no secure sum"
            stats.rejected[SECAGG_BELOW_THRESHOLD] = stats.rejected.get(SECAGG_BELOW_THRESHOLD, 0) + 1
            stats.keep_previous_model(server_round, f"secure aggregation: {reason}")
            return None, None
        names = list(record.keys())
        inner = self.inner
        if isinstance(inner, DPFedAvg):
            return inner.aggregate_secure_sum(server_round, names, outcome.secure)
        assert isinstance(inner, FedAvg)  # secagg_inner_problem
        return release_secure_mean(inner, server_round, names, to_layers(record), outcome.secure)

    # ------------------------------------------------------------------ the protocol
    def _exchange(
        self,
        grid: Grid,
        stage: str,
        server_round: int,
        contents: Mapping[int, RecordDict],
        timeout: float,
        outcome: RoundOutcome,
    ) -> tuple[list[Message], list[Message]]:
        messages = [
            Message(
                content=content, dst_node_id=nid, message_type=MessageType.TRAIN, group_id=str(server_round)
            )
            for nid, content in contents.items()
        ]
        log(INFO, "SecAgg+ round %d: %s to %d nodes", server_round, stage, len(messages))
        replies = send_and_receive_within(grid, with_ttl(messages, timeout), timeout=timeout)
        outcome.bytes_down += sum(payload_bytes(m.content) for m in messages)
        outcome.bytes_up += sum(payload_bytes(m.content) for m in replies if not m.has_error())
        return messages, replies

    def _answers(
        self,
        server_round: int,
        stage: str,
        sent: list[Message],
        replies: list[Message],
        *,
        count_failures: bool = True,
    ) -> dict[int, Message]:
        """The good replies of a stage by node; the others counted in the round's ledger."""
        stats = self.stats.setdefault(server_round, RoundStats())
        good, rejections, failures = split_replies(replies, sent=sent, stage=MessageType.TRAIN)
        for node, rejection in rejections:
            stats.reject(node, f"secagg {stage}", rejection)
        for failure in failures:
            if failure.reason is not None:
                log(WARNING, "secagg %s: node %d failed: %s", stage, failure.node, failure.reason)
            else:
                log(WARNING, "secagg %s: no reply from node %d", stage, failure.node)
            if count_failures:
                stats.fail(failure.node)
        out: dict[int, Message] = {}
        for msg in good:
            if wire.SECAGG_CONFIGS not in msg.content.config_records:
                stats.reject(
                    msg.metadata.src_node_id,
                    f"secagg {stage}",
                    Rejection(SECAGG_MALFORMED_REPLY, f"no {wire.SECAGG_CONFIGS!r} record"),
                )
                continue
            out[int(msg.metadata.src_node_id)] = msg
        return out

    def _reject(self, server_round: int, stage: str, node: int, reason: str, detail: str) -> None:
        self.stats.setdefault(server_round, RoundStats()).reject(
            node, f"secagg {stage}", Rejection(reason, detail)
        )

    def _prune(
        self, server_round: int, stage: str, graph: dict[int, frozenset[int]], alive: set[int]
    ) -> set[int]:
        """``alive`` without the nodes left with fewer than t live neighbours (repeatedly)."""
        t = self.config.reconstruction_threshold
        alive = set(alive)
        while True:
            low = below_threshold(graph, alive, t, alive)
            if not low:
                return alive
            for node in low:
                self._reject(
                    server_round,
                    stage,
                    node,
                    SECAGG_TOO_FEW_NEIGHBOURS,
                    f"fewer than secagg-reconstruction-threshold={t} of its neighbours are left",
                )
            alive -= set(low)

    def _run_protocol(
        self, grid: Grid, server_round: int, messages: list[Message], timeout: float, outcome: RoundOutcome
    ) -> None:
        cfg = self.config
        t = cfg.reconstruction_threshold
        train_content = {int(m.metadata.dst_node_id): m.content for m in messages}
        nodes = sorted(train_content)
        if len(nodes) < t:
            raise BelowThreshold(
                f"{len(nodes)} nodes to train, fewer than secagg-reconstruction-threshold={t}"
            )
        problem = wrap_problem(
            num_clients=len(nodes), max_weight=cfg.max_weight, quantization_range=cfg.quantization_range
        )
        if problem is not None:
            raise BelowThreshold(problem)
        bits = modulus_bits(
            num_clients=len(nodes), max_weight=cfg.max_weight, quantization_range=cfg.quantization_range
        )
        modulus = 1 << bits
        outcome.modulus_bits = bits
        share_num = min(cfg.num_shares, len(nodes))
        graph = neighbours(nodes, share_num, self._rng)

        # 1. setup: public keys
        setup = ConfigRecord(
            {
                wire.SECAGG_STAGE: wire.SECAGG_SETUP,
                wire.SECAGG_SAMPLE_NUMBER: len(nodes),
                wire.SECAGG_SHARE_NUMBER: share_num,
                wire.SECAGG_THRESHOLD: t,
                wire.SECAGG_CLIPPING_RANGE: float(cfg.clipping_range),
                wire.SECAGG_TARGET_RANGE: cfg.quantization_range,
                wire.SECAGG_MOD_RANGE: modulus,
                wire.SECAGG_MAX_WEIGHT: cfg.max_weight,
            }
        )
        stage = wire.SECAGG_SETUP
        sent, replies = self._exchange(
            grid,
            stage,
            server_round,
            {n: RecordDict({wire.SECAGG_CONFIGS: setup}) for n in nodes},
            timeout,
            outcome,
        )
        keys: dict[int, tuple[bytes, bytes]] = {}
        for node, msg in self._answers(server_round, stage, sent, replies).items():
            pair, why = public_keys_problem(msg.content.config_records[wire.SECAGG_CONFIGS])
            if why is not None or pair is None:
                self._reject(server_round, stage, node, SECAGG_MALFORMED_REPLY, why or "no keys")
                continue
            keys[node] = pair
        seen: dict[bytes, int] = {}
        for pair in keys.values():
            for key in pair:
                seen[key] = seen.get(key, 0) + 1
        for node in [n for n, pair in keys.items() if any(seen[k] > 1 for k in pair)]:
            self._reject(
                server_round, stage, node, SECAGG_MALFORMED_REPLY, "a public key another node also sent"
            )
            del keys[node]
        alive = self._prune(server_round, stage, graph, set(keys))

        # 2. share keys: encrypted shares, relayed
        stage = wire.SECAGG_SHARE_KEYS
        contents = {}
        for node in sorted(alive):
            record = ConfigRecord({str(j): list(keys[j]) for j in sorted(graph[node] & alive)})
            record[wire.SECAGG_STAGE] = stage
            contents[node] = RecordDict({wire.SECAGG_CONFIGS: record})
        sent, replies = self._exchange(grid, stage, server_round, contents, timeout, outcome)
        shares_out: dict[int, dict[int, bytes]] = {}
        digests: dict[int, dict[int, tuple[bytes, bytes]]] = {}
        for node, msg in self._answers(server_round, stage, sent, replies).items():
            expected = graph[node] & alive
            parsed, why = share_keys_problem(msg.content.config_records[wire.SECAGG_CONFIGS], node, expected)
            if why is not None or parsed is None:
                self._reject(server_round, stage, node, SECAGG_MALFORMED_REPLY, why or "malformed")
                continue
            shares_out[node], digests[node] = parsed
        alive = self._prune(server_round, stage, graph, set(shares_out))
        outcome.lost_before_masking = len(nodes) - len(alive)
        shared = set(alive)  # U2: every node whose shares reach its neighbours

        # 3. collect masked vectors: train, mask, reply only the masked vector
        stage = wire.SECAGG_COLLECT
        contents = {}
        sources: dict[int, list[int]] = {}
        for node in sorted(shared):
            sources[node] = sorted(s for s in graph[node] & shared if s != node)
            content = RecordDict(
                {
                    ARRAYS_KEY: train_content[node][ARRAYS_KEY],
                    CONFIG_KEY: train_content[node][CONFIG_KEY],
                    wire.SECAGG_CONFIGS: ConfigRecord(
                        {
                            wire.SECAGG_STAGE: stage,
                            wire.SECAGG_CIPHERTEXT_LIST: [shares_out[s][node] for s in sources[node]],
                            wire.SECAGG_SOURCE_LIST: sources[node],
                        }
                    ),
                }
            )
            contents[node] = content
        sent, replies = self._exchange(grid, stage, server_round, contents, timeout, outcome)
        global_arrays = self._global.get(server_round)
        spec = masked_spec(global_arrays) if global_arrays is not None else None
        total: list[np.ndarray] | None = None
        survivors: list[int] = []
        good = self._answers(server_round, stage, sent, replies)
        for node in sorted(good):
            vector, why = masked_vector_problem(good[node].content, spec, modulus)
            if why is not None or vector is None:
                self._reject(server_round, stage, node, SECAGG_MALFORMED_MASKED, why or "malformed")
                continue
            total = vector if total is None else add_mod(total, vector, modulus)
            survivors.append(node)
        del good, replies  # the masked vectors are in the sum now
        dropped = sorted(shared - set(survivors))
        outcome.survivors, outcome.dropped = survivors, dropped
        if len(survivors) < t or total is None:
            raise BelowThreshold(
                f"{len(survivors)} masked vectors, fewer than secagg-reconstruction-threshold={t}"
            )
        low = below_threshold(graph, set(survivors), t, set(survivors) | set(dropped))
        if low:
            raise BelowThreshold(
                f"node(s) {low} have fewer than secagg-reconstruction-threshold={t} surviving neighbours: "
                "their secrets cannot be rebuilt"
            )

        # 4. unmask: verified shares → seeds of survivors, mask keys of the dropped
        stage = wire.SECAGG_UNMASK
        alive_set, dead_set = set(survivors), set(dropped)
        contents = {}
        asked: dict[int, list[int]] = {}
        for node in survivors:
            active = sorted(graph[node] & alive_set)
            dead = sorted(graph[node] & dead_set)
            asked[node] = active + dead
            contents[node] = RecordDict(
                {
                    wire.SECAGG_CONFIGS: ConfigRecord(
                        {
                            wire.SECAGG_STAGE: stage,
                            wire.SECAGG_ACTIVE_NODE_ID_LIST: active,
                            wire.SECAGG_DEAD_NODE_ID_LIST: dead,
                        }
                    )
                }
            )
        sent, replies = self._exchange(grid, stage, server_round, contents, timeout, outcome)
        seed_shares: dict[int, list[bytes]] = {n: [] for n in survivors}
        key_shares: dict[int, list[bytes]] = {n: [] for n in dropped}
        # A survivor that misses this stage is still in the sum: logged, not a failed node.
        for node, msg in self._answers(server_round, stage, sent, replies, count_failures=False).items():
            pairs, why = unmask_problem(
                msg.content.config_records[wire.SECAGG_CONFIGS], node, asked[node], alive_set, digests
            )
            if why is not None or pairs is None:
                reason = SECAGG_BAD_SHARE if why and "digest" in why else SECAGG_MALFORMED_REPLY
                self._reject(server_round, stage, node, reason, why or "malformed")
                continue
            for owner, share in pairs:
                (seed_shares if owner in alive_set else key_shares)[owner].append(share)
        for owner, shares in {**seed_shares, **key_shares}.items():
            if len(shares) < t:
                raise BelowThreshold(
                    f"node {owner}'s secret has {len(shares)} good shares, fewer than "
                    f"secagg-reconstruction-threshold={t}"
                )
        shapes = [a.shape for a in total]
        for owner in survivors:
            seed = _combine(seed_shares[owner][:t], owner)
            if len(seed) != SEED_BYTES:  # a dealer can share anything: the PRG takes 32-byte seeds
                raise BelowThreshold(
                    f"node {owner}'s rebuilt mask seed has {len(seed)} bytes, not {SEED_BYTES}"
                )
            total = subtract_mod(total, pseudo_rand_gen(seed, modulus, shapes), modulus)
        for owner in dropped:
            secret = _combine(key_shares[owner][:t], owner)
            if _public_key_of(secret) != keys[owner][0]:
                raise BelowThreshold(f"node {owner}'s rebuilt mask key does not match its public key")
            private = bytes_to_private_key(secret)
            for j in sorted(graph[owner] & alive_set):
                pairwise = pseudo_rand_gen(
                    generate_shared_key(private, bytes_to_public_key(keys[j][0])), modulus, shapes
                )
                # Survivor j added +PRG(s_jd) if j > d, else −PRG(s_jd): remove it.
                total = (
                    subtract_mod(total, pairwise, modulus) if j > owner else add_mod(total, pairwise, modulus)
                )
        try:
            outcome.secure = decode_sum(
                total,
                clipping_range=cfg.clipping_range,
                quantization_range=cfg.quantization_range,
                num_clients=len(survivors),
            )
        except ValueError as exc:
            raise BelowThreshold(str(exc)) from None
        self.stats.setdefault(server_round, RoundStats()).succeeded += len(survivors)
        log(
            INFO,
            "SecAgg+ round %d: unmasked the sum of %d nodes (%d dropped after share keys, %d before)",
            server_round,
            len(survivors),
            len(dropped),
            outcome.lost_before_masking,
        )


def payload_bytes(content: RecordDict) -> int:
    """Bytes a message's records carry: array payloads, bytes and strings, 8 per number.

    The payload, not Flower's protobuf framing (as ``compressed.record_bytes`` counts arrays):
    what the benchmark compares per client with and without secure aggregation.
    """
    total = sum(len(array.data) for record in content.array_records.values() for array in record.values())
    for record in content.config_records.values():
        for value in record.values():
            items = value if isinstance(value, list) else [value]
            total += sum(
                len(v) if isinstance(v, bytes) else len(str(v)) if isinstance(v, str) else 8 for v in items
            )
    total += 8 * sum(len(record) for record in content.metric_records.values())
    return total


# ------------------------------------------------------------------ pure checks of stage replies
def public_keys_problem(config: Mapping[str, Any]) -> tuple[tuple[bytes, bytes] | None, str | None]:
    """A setup reply's two public keys, or why they are not valid keys."""
    pk1, pk2 = config.get(wire.SECAGG_PUBLIC_KEY_1), config.get(wire.SECAGG_PUBLIC_KEY_2)
    if not (isinstance(pk1, bytes) and isinstance(pk2, bytes)):
        return None, "setup reply without two public keys"
    try:
        bytes_to_public_key(pk1)
        bytes_to_public_key(pk2)
    except Exception as exc:  # any parse failure of untrusted bytes
        return None, f"a public key does not parse: {type(exc).__name__}"
    if pk1 == pk2:
        return None, "the two public keys are identical"
    return (pk1, pk2), None


def share_keys_problem(
    config: Mapping[str, Any], node: int, expected: frozenset[int] | set[int]
) -> tuple[tuple[dict[int, bytes], dict[int, tuple[bytes, bytes]]] | None, str | None]:
    """A share-keys reply's ciphertexts by destination and share digests by holder, or why not."""
    dsts = config.get(wire.SECAGG_DESTINATION_LIST)
    ctxts = config.get(wire.SECAGG_CIPHERTEXT_LIST)
    holders = config.get(wire.SECAGG_HOLDER_LIST)
    seed_d = config.get(wire.SECAGG_SEED_SHARE_DIGESTS)
    key_d = config.get(wire.SECAGG_KEY_SHARE_DIGESTS)
    lists = (dsts, ctxts, holders, seed_d, key_d)
    if not all(isinstance(v, list) for v in lists):
        return None, "share-keys reply without its lists"
    assert isinstance(dsts, list) and isinstance(ctxts, list) and isinstance(holders, list)
    assert isinstance(seed_d, list) and isinstance(key_d, list)
    if any(type(d) is not int for d in dsts + holders) or any(not isinstance(c, bytes) for c in ctxts):
        return None, "share-keys reply with a non-integer node id or a non-bytes ciphertext"
    if len(dsts) != len(ctxts) or sorted(dsts) != sorted(expected - {node}) or len(set(dsts)) != len(dsts):
        return None, "share-keys reply whose destinations are not exactly the node's neighbours"
    if sorted(holders) != sorted(expected) or len(seed_d) != len(holders) or len(key_d) != len(holders):
        return None, "share-keys reply whose share digests do not cover exactly the neighbours"
    if any(not (isinstance(d, bytes) and len(d) == 32) for d in seed_d + key_d):
        return None, "share-keys reply with a digest that is not 32 bytes"
    return (
        dict(zip(dsts, ctxts, strict=True)),
        {h: (s, k) for h, s, k in zip(holders, seed_d, key_d, strict=True)},
    ), None


def masked_spec(record: ArrayRecord) -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes a masked vector must have: the meta array, then the model's parameters."""
    layers = to_layers(record)
    names = list(record.keys())
    spec: list[tuple[str, tuple[int, ...]]] = [(wire.SECAGG_META, (META_LENGTH,))]
    return spec + [(names[i], tuple(layers[i].shape)) for i in parameter_indices(layers)]


def masked_vector_problem(
    content: RecordDict, spec: list[tuple[str, tuple[int, ...]]] | None, modulus: int
) -> tuple[list[np.ndarray] | None, str | None]:
    """A collect reply's masked vector (int64 residues), or why it is malformed."""
    record = content.array_records.get(wire.SECAGG_MASKED)
    if record is None:
        return None, f"collect reply without {wire.SECAGG_MASKED!r}"
    if spec is None:
        return None, "no global model was recorded for this round"
    if ARRAYS_KEY in content.array_records:
        return None, "collect reply carries an unmasked model: dropped unread"
    if list(record.keys()) != [name for name, _ in spec]:
        return None, "masked vector's arrays are not the meta array and the model's parameters"
    try:
        layers = to_layers(record)
    except Exception as exc:  # untrusted bytes that are not an array
        return None, f"masked vector does not decode: {type(exc).__name__}: {exc}"
    arrays = []
    for (name, shape), array in zip(spec, layers, strict=True):
        if array.dtype != np.int64 or array.shape != shape:
            return None, f"masked array {name!r} is {array.dtype}{array.shape}, expected int64{shape}"
        if array.size and (array.min() < 0 or array.max() >= modulus):
            return None, f"masked array {name!r} has values outside [0, 2^{modulus.bit_length() - 1})"
        arrays.append(array)  # a view: add_mod makes the sum a new array
    return arrays, None


def unmask_problem(
    config: Mapping[str, Any],
    node: int,
    asked: list[int],
    survivors: set[int],
    digests: Mapping[int, Mapping[int, tuple[bytes, bytes]]],
) -> tuple[list[tuple[int, bytes]] | None, str | None]:
    """An unmask reply's (owner, share) pairs, each matching its dealer's digest, or why not."""
    nids = config.get(wire.SECAGG_NODE_ID_LIST)
    shares = config.get(wire.SECAGG_SHARE_LIST)
    if not (isinstance(nids, list) and isinstance(shares, list)) or len(nids) != len(shares):
        return None, "unmask reply without matching node and share lists"
    if nids != asked or any(not isinstance(s, bytes) for s in shares):
        return None, "unmask reply for other nodes than asked"
    out = []
    for owner, share in zip(nids, shares, strict=True):
        expected = digests.get(owner, {}).get(node)
        if expected is None:
            return None, f"no digest from node {owner} for a share held by {node}"
        if hashlib.sha256(share).digest() != expected[0 if owner in survivors else 1]:
            return None, f"share of node {owner}'s secret does not match its digest"
        out.append((int(owner), bytes(share)))
    return out, None


def _combine(shares: list[bytes], owner: int) -> bytes:
    try:
        return combine_shares(shares)
    except Exception as exc:  # verified shares should combine; anything else keeps the model
        raise BelowThreshold(f"node {owner}'s shares do not combine: {type(exc).__name__}") from None


def _public_key_of(private_key: bytes) -> bytes | None:
    try:
        return public_key_to_bytes(bytes_to_private_key(private_key).public_key())
    except Exception:  # not a key: the caller refuses it
        return None


# ------------------------------------------------------------------ releasing the model
def release_secure_mean(
    inner: FedAvg, server_round: int, names: list[str], global_layers: list[np.ndarray], secure: SecureSum
) -> tuple[ArrayRecord | None, MetricRecord | None]:
    """FedAvg's release from the secure mean: ``global + Σ w_kΔ_k/Σ w_k``, then the inner's step.

    The aggregate is what :meth:`FedAvg.aggregate_layers` would have returned from the same
    (weighted) replies, up to quantization; ``apply_aggregate`` (a server optimizer's step),
    ``release_model`` (the final check) and the round ledger are the inner's.
    """
    stats = inner.stats.setdefault(server_round, RoundStats())
    problem = inner.too_few_replies(secure.num_clients)
    if problem is not None:
        stats.keep_previous_model(server_round, problem)
        return None, None
    index = parameter_indices(global_layers)
    parameters = select(global_layers, index)
    aggregate = [
        (np.asarray(g, np.float64) + m).astype(np.asarray(g).dtype)
        for g, m in zip(parameters, secure.mean_update, strict=True)
    ]
    new_parameters = inner.apply_aggregate(server_round, aggregate)
    arrays = inner.release_model(
        server_round, names, with_previous_buffers(new_parameters, global_layers, index)
    )
    stats.finish([], inner.nodes, secure.train_loss)
    return arrays, secure_metrics(secure)


def secure_metrics(secure: SecureSum) -> MetricRecord:
    """The round's aggregated train metrics: total weight and weighted-mean train loss."""
    metrics: dict[str, int | float | list[int] | list[float]] = {wire.NUM_EXAMPLES: secure.total_weight}
    if secure.train_loss is not None:
        metrics[wire.TRAIN_LOSS] = secure.train_loss
    return MetricRecord(metrics)


__all__ = [
    "BelowThreshold",
    "RoundOutcome",
    "SecAggPlus",
    "payload_bytes",
    "release_secure_mean",
    "secagg_inner_problem",
]
