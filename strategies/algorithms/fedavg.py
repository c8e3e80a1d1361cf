"""FedAvg: example-weighted averaging of client models.

McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from
Decentralized Data" (arXiv:1602.05629): w ← Σ_k (n_k / n)·w_k, n = Σ_k n_k, where
n_k is client k's number of training examples (``num-examples``). FedSGD is the
special case E = 1, B = ∞ (``local-epochs=1 batch-size=0 momentum=0``).

Beyond Flower's FedAvg this strategy samples nodes from a seeded generator (equal
seeds → equal clients and stragglers across strategies), waits for nodes with a
timeout instead of forever, simulates stragglers (FedAvg drops them, as in Li et al.
2020), and records per-round participation counts for the round log.

Its aggregate path is shared by every subclass: the rule (:meth:`FedAvg.aggregate_layers`)
sees floating-point parameters only, the released model carries the round's global
integer buffers, and :meth:`FedAvg.release_model` refuses a non-finite model
(``strategies/core/buffers.py``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg as FlowerFedAvg
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords
from flwr.supercore import log

from strategies.core.buffers import (
    check_released_model,
    is_parameter,
    parameter_indices,
    select,
    with_previous_buffers,
)
from strategies.core.loop import RoundLoop
from strategies.core.records import (
    ARRAYS_KEY,
    CONFIG_KEY,
    DP_SGD_EPSILON_KEY,
    INFO_KEY,
    METRICS_KEY,
    NUM_EXAMPLES,
    from_layers,
    to_layers,
)
from strategies.core.reply_checks import ArraySpec, Rejection
from strategies.core.reply_identity import ReplyHeader, Sent, match_replies
from strategies.core.sampling import (
    EVALUATE,
    STRAGGLERS,
    TRAIN,
    choose_stragglers,
    round_rng,
    sample_ids,
    sample_size,
    wait_for_nodes,
)
from strategies.core.validation import spec_of_record, validate_evaluate_reply, validate_train_reply
from strategies.numeric.aggregate import weighted_average


@dataclass
class RoundStats:
    """Participation in one round, as reported in the round log and metrics.json."""

    sampled: int = 0
    succeeded: int = 0
    failed: int = 0
    dropped: int = 0  # stragglers a strategy chose not to aggregate
    eval_sampled: int = 0
    eval_succeeded: int = 0
    failed_nodes: list[int] = field(default_factory=list)
    rejected: dict[str, int] = field(default_factory=dict)  # reason → count (train and evaluate)
    kept_previous_model: bool = False
    train_loss: float | None = None
    federated_loss: float | None = None
    federated_accuracy: float | None = None
    #: Largest ε reported by DP-SGD clients this round (sample-level DP), if any.
    dp_sgd_epsilon: float | None = None
    #: Each DP-SGD node's own ε this round (node id → ε over all its rounds so far).
    dp_sgd_epsilon_by_node: dict[int, float] = field(default_factory=dict)
    #: Accepted replies from simulated attackers (run config ``attack``), if any attacked.
    attackers: int = 0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class NodeReport:
    """What a node said about itself in its last train reply."""

    device: str
    num_examples: int
    train_seconds: float
    #: Simulated attacks only: the node's partition and whether it attacked.
    partition: int | None = None
    num_partitions: int | None = None
    attacker: bool = False


class FedAvg(RoundLoop, FlowerFedAvg):
    """Example-weighted FedAvg with seeded sampling, bounded waits and stragglers.

    Parameters
    ----------
    fraction_train, fraction_evaluate : float
        Fractions of connected nodes sampled each round, in (0, 1].
    min_train_nodes, min_evaluate_nodes, min_available_nodes : int
        Lower bounds on sample sizes and on connected nodes.
    wait_for_nodes_timeout : float
        Seconds to wait for enough nodes before failing the run.
    local_epochs : int
        E, sent to clients; stragglers get fewer.
    straggler_fraction : float
        Share of sampled clients that are stragglers (run 1..E−1 epochs).
    seed : int
        Seed for sampling and stragglers.
    """

    #: FedAvg drops stragglers (they would not finish E epochs in time); FedProx keeps them.
    aggregates_stragglers = False

    def __init__(
        self,
        *,
        fraction_train: float = 1.0,
        fraction_evaluate: float = 1.0,
        min_train_nodes: int = 2,
        min_evaluate_nodes: int = 2,
        min_available_nodes: int = 2,
        wait_for_nodes_timeout: float = 120.0,
        local_epochs: int = 1,
        straggler_fraction: float = 0.0,
        seed: int = 0,
        max_num_examples: int = 1_000_000,
        min_valid_replies: int = 1,
    ) -> None:
        super().__init__(
            fraction_train=fraction_train,
            fraction_evaluate=fraction_evaluate,
            min_train_nodes=min_train_nodes,
            min_evaluate_nodes=min_evaluate_nodes,
            min_available_nodes=min_available_nodes,
            weighted_by_key=NUM_EXAMPLES,
            arrayrecord_key=ARRAYS_KEY,
            configrecord_key=CONFIG_KEY,
        )
        self.wait_for_nodes_timeout = wait_for_nodes_timeout
        self.local_epochs = local_epochs
        self.straggler_fraction = straggler_fraction
        self.seed = seed
        self.max_num_examples = max_num_examples
        self.min_valid_replies = min_valid_replies
        self._spec: dict[int, ArraySpec] = {}
        self.stats: dict[int, RoundStats] = {}
        self.nodes: dict[int, NodeReport] = {}
        self._stragglers: dict[int, dict[int, int]] = {}
        # (round, message type) → the messages sent: replies are matched against them.
        self._sent: dict[tuple[int, str], list[Message]] = {}
        self._previous_buffers: dict[int, dict[str, np.ndarray]] = {}

    # ------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """Strategy state a checkpoint must keep to resume bit-for-bit.

        Values are JSON scalars/lists or NumPy arrays. FedAvg has none of its own:
        sampling and stragglers are drawn from ``round_rng(seed, round, purpose)``, a
        pure function of the round. Stateful strategies (server optimizers, DP
        accountants, adaptive clipping) override this and :meth:`load_state_dict`,
        merging with ``super()``.
        """
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def check_state(self, names: Sequence[str], arrays: Sequence[np.ndarray]) -> str | None:
        """Why the state :meth:`load_state_dict` restored does not fit this model, or None.

        Called on resume, before any training, with the model's array names and arrays.
        FedAvg keeps no per-parameter state; strategies that do (server optimizers)
        override it, so a checkpoint whose state agrees with itself but not with the
        model is refused up front, not after a round of training.
        """
        return None

    def summary(self) -> None:
        log(
            INFO,
            "\t├──> Seed: %d | stragglers: %.0f%% (%s)",
            self.seed,
            100 * self.straggler_fraction,
            "aggregated" if self.aggregates_stragglers else "dropped",
        )
        super().summary()

    # ------------------------------------------------------------------ sampling
    def _sample(
        self, grid: Grid, fraction: float, minimum: int, server_round: int, purpose: int
    ) -> list[int]:
        needed = max(self.min_available_nodes, minimum)
        connected = wait_for_nodes(
            grid.get_node_ids,
            minimum=needed,
            timeout=self.wait_for_nodes_timeout,
            on_wait=lambda n: log(INFO, "Waiting for nodes: %d connected, %d required", n, needed),
        )
        k = sample_size(len(connected), fraction, minimum)
        return sample_ids(connected, k, round_rng(self.seed, server_round, purpose))

    def _messages(
        self,
        node_ids: list[int],
        arrays: ArrayRecord,
        config: ConfigRecord,
        message_type: str,
        per_node: dict[int, dict[str, int]] | None = None,
    ) -> list[Message]:
        messages = []
        for node_id in node_ids:
            node_config = ConfigRecord(dict(config))
            node_config.update((per_node or {}).get(node_id, {}))
            content = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: node_config})
            messages.append(Message(content=content, message_type=message_type, dst_node_id=node_id))
        return messages

    # ------------------------------------------------------------------ training
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        node_ids = self._sample(grid, self.fraction_train, self.min_train_nodes, server_round, TRAIN)
        stragglers = choose_stragglers(
            node_ids,
            fraction=self.straggler_fraction,
            local_epochs=self.local_epochs,
            rng=round_rng(self.seed, server_round, STRAGGLERS),
        )
        self._stragglers[server_round] = stragglers
        stats = self.stats.setdefault(server_round, RoundStats())
        stats.sampled = len(node_ids)
        config["server-round"] = server_round
        config["local-epochs"] = self.local_epochs
        if not self.aggregates_stragglers:
            # A dropped straggler's work would be thrown away: don't ask for it.
            stats.dropped = len(stragglers)
            node_ids = [n for n in node_ids if n not in stragglers]
            per_node = {}
        else:
            per_node = {n: {"local-epochs": e} for n, e in stragglers.items()}
        self._spec[server_round] = spec_of_record(arrays)
        self.remember_buffers(server_round, arrays)
        log(
            INFO,
            "configure_train: %d nodes sampled, %d stragglers (%s)",
            stats.sampled,
            len(stragglers),
            "aggregated" if self.aggregates_stragglers else "dropped",
        )
        messages = self._messages(node_ids, arrays, config, MessageType.TRAIN, per_node)
        return self.track_sent(server_round, MessageType.TRAIN, messages)

    def remember_buffers(self, server_round: int, arrays: ArrayRecord) -> None:
        """Keep the round's global integer buffers (copies): the released model carries them."""
        self._previous_buffers = {
            server_round: {
                name: np.array(a)
                for name, a in zip(arrays.keys(), to_layers(arrays), strict=True)
                if not is_parameter(a.dtype)
            }
        }

    def track_sent(self, server_round: int, message_type: str, messages: list[Message]) -> list[Message]:
        """Remember the round's messages of one stage, so replies can be matched to them.

        Return ``messages`` unchanged (the Grid sets their ids when it pushes them). A
        strategy or wrapper that builds its own messages passes them through here.
        """
        self._sent[(server_round, message_type)] = messages
        return messages

    def _split_replies(
        self, server_round: int, replies: Iterable[Message], stage: str
    ) -> tuple[list[Message], list[int] | None]:
        """Replies that belong to the round and carry no error, and the nodes that failed.

        Each reply is matched to the message it answers (``strategies.core.reply_identity``):
        duplicates, replies from nodes not sampled, replies of another stage and replies
        to unknown messages are dropped and counted in ``rejected``. Errors are logged
        with the node the message went to (an error the SuperLink writes for a lost node
        carries the SuperLink's id as its source). The failed nodes are those sent work
        that returned no good reply, or ``None`` when nothing was tracked as sent (a
        strategy driven without ``configure_*``, in unit use).
        """
        replies = list(replies)
        stats = self.stats.setdefault(server_round, RoundStats())
        sent = self._sent.get((server_round, stage))
        if sent is None:  # aggregate without configure (unit use): no identity to check
            for msg in replies:
                if msg.has_error():
                    node = msg.metadata.src_node_id
                    log(WARNING, "%s: node %d failed: %s", stage, node, msg.error.reason)
            return [m for m in replies if not m.has_error()], None
        matches = match_replies(
            [Sent(m.metadata.message_id, m.metadata.dst_node_id) for m in sent],
            [_header(m) for m in replies],
            message_type=stage,
        )
        good: list[Message] = []
        ok_nodes: set[int] = set()
        for msg, match in zip(replies, matches, strict=True):
            if match.rejection is not None:
                self._reject(stats, msg.metadata.src_node_id, stage, match.rejection)
            elif msg.has_error():
                log(WARNING, "%s: node %d failed: %s", stage, match.node, msg.error.reason)
            else:
                good.append(msg)
                ok_nodes.add(int(msg.metadata.src_node_id))
        answered = {m.node for m in matches if m.rejection is None}
        sent_nodes = [m.metadata.dst_node_id for m in sent]
        silent = [n for n in sent_nodes if n not in answered]
        if silent:
            log(WARNING, "%s: no reply from node(s) %s (timeout or node lost)", stage, silent)
        return good, [n for n in sent_nodes if n not in ok_nodes]

    def _reject(self, stats: RoundStats, node: int, stage: str, rejection: Rejection) -> None:
        log(WARNING, "%s: dropped reply from node %d: %s", stage, node, rejection)
        stats.rejected[rejection.reason] = stats.rejected.get(rejection.reason, 0) + 1

    def valid_train_replies(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[list[Message], list[list[np.ndarray]], list[str]]:
        """Replies that passed validation, their decoded layers, and the array names.

        Every strategy built on this class aggregates only what this returns: errors,
        timeouts and malformed replies are counted in ``stats`` and logged with the
        node id and reason.
        """
        replies = list(replies)
        good, failed_nodes = self._split_replies(server_round, replies, MessageType.TRAIN)
        stats = self.stats.setdefault(server_round, RoundStats())
        # A node failed if it was sent work and returned no good reply: errors, timeouts,
        # and errors the SuperLink writes on a dead node's behalf, each counted once.
        if failed_nodes is None:  # aggregate without configure (unit use): count error replies
            failed_nodes = [m.metadata.src_node_id for m in replies if m.has_error()]
        stats.failed = len(failed_nodes)
        stats.failed_nodes = failed_nodes
        spec = self._spec.get(server_round)
        names = list(spec) if spec is not None else []
        valid, layers = [], []
        for msg in good:
            if spec is None:  # aggregate without configure (unit use): trust the first reply's names
                spec = {k: (tuple(v.shape), np.dtype(v.dtype)) for k, v in msg.content[ARRAYS_KEY].items()}
                names = list(spec)
            arrays, rejection = validate_train_reply(
                msg.content, spec, max_num_examples=self.max_num_examples
            )
            if rejection is not None:
                self._reject(stats, msg.metadata.src_node_id, "train", rejection)
                continue
            valid.append(msg)
            layers.append([arrays[n] for n in names])
        stats.succeeded = len(valid)
        # Arrival order depends on timing and node ids are random per run: put replies in
        # an order given by their content, so float sums (and thus a resumed run) are
        # reproducible bit for bit whatever order the replies arrived in.
        order = sorted(range(len(valid)), key=lambda i: reply_digest(valid[i], layers[i]))
        return [valid[i] for i in order], [layers[i] for i in order], names

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid, layers, names = self.valid_train_replies(server_round, replies)
        stats = self.stats[server_round]
        problem = self.too_few_replies(len(valid))
        if problem is not None:
            # Never aggregate nothing (or too little): keep the previous global model.
            log(WARNING, "aggregate_train: round %d keeps the previous model: %s", server_round, problem)
            stats.kept_previous_model = True
            return None, None
        weights = [float(m.content[METRICS_KEY][NUM_EXAMPLES]) for m in valid]
        # Parameters only (strategies/core/buffers.py): the rule never sees an integer buffer.
        index = parameter_indices(layers[0])
        previous = self._previous_model(server_round, names, layers[0], index)
        aggregate = self.aggregate_layers([select(client, index) for client in layers], weights)
        new_parameters = self.apply_aggregate(server_round, aggregate)
        new_model = with_previous_buffers(new_parameters, previous, index)
        arrays = self.release_model(server_round, names, new_model)
        self._record_nodes(valid)
        stats.attackers = sum(self.nodes[m.metadata.src_node_id].attacker for m in valid)
        metrics = aggregate_metricrecords([m.content for m in valid], self.weighted_by_key)
        stats.train_loss = _as_float(metrics.get("train-loss"))
        stats.dp_sgd_epsilon = max_client_epsilon(valid)
        stats.dp_sgd_epsilon_by_node = client_epsilons(valid)
        return arrays, metrics

    def too_few_replies(self, num_valid: int) -> str | None:
        """Why ``num_valid`` valid replies are not enough to aggregate, or None."""
        if num_valid < max(self.min_valid_replies, 1):
            return f"{num_valid} valid replies, min-valid-replies={self.min_valid_replies}"
        return None

    def aggregate_layers(self, layers: list[list], weights: list[float]) -> list:
        """The aggregation rule; FedAvg: example-weighted mean (override to change it).

        ``layers`` holds each client's floating-point parameters only, in model order;
        integer buffers never reach a rule (``strategies/core/buffers.py``).
        """
        return weighted_average(layers, weights)

    def apply_aggregate(self, server_round: int, aggregate: list[np.ndarray]) -> list[np.ndarray]:
        """The new parameters from the rule's aggregate; FedAvg: the aggregate itself.

        Server optimizers override this to step from the global model towards it.
        """
        return aggregate

    def release_model(
        self, server_round: int, names: list[str], layers: list[np.ndarray]
    ) -> ArrayRecord | None:
        """The record of the model a round would release, or None to keep the previous model.

        The one final check of every strategy, after every rule (aggregation, server
        optimizer, DP noise): a model with a non-finite value is not released; the round
        keeps the previous model, logs why and counts ``non-finite-model`` in
        ``rejected``. It never raises.
        """
        rejection = check_released_model(names, layers)
        if rejection is None:
            return from_layers(names, layers)
        stats = self.stats.setdefault(server_round, RoundStats())
        log(WARNING, "aggregate_train: round %d keeps the previous model: %s", server_round, rejection)
        stats.rejected[rejection.reason] = stats.rejected.get(rejection.reason, 0) + 1
        stats.kept_previous_model = True
        return None

    def _previous_model(
        self, server_round: int, names: list[str], like: list[np.ndarray], index: list[int]
    ) -> list[np.ndarray]:
        """The round's global model where it matters: its buffers (parameters are placeholders)."""
        buffers = self._previous_buffers.get(server_round)
        if buffers is None:
            if len(index) < len(like):
                raise RuntimeError(
                    f"aggregate_train({server_round}) without configure_train for that round: the "
                    "model has integer buffers, which are taken from the round's global model"
                )
            buffers = {}
        return [buffers.get(name, a) for name, a in zip(names, like, strict=True)]

    def _record_nodes(self, replies: list[Message]) -> None:
        for m in replies:
            metrics = m.content[METRICS_KEY]
            info = m.content.config_records.get(INFO_KEY, ConfigRecord())
            partition = info.get("partition-id")
            self.nodes[m.metadata.src_node_id] = NodeReport(
                device=str(info.get("device", "?")),
                num_examples=int(metrics[NUM_EXAMPLES]),
                train_seconds=float(metrics.get("train-seconds", 0.0)),
                partition=None if partition is None else int(partition),
                num_partitions=int(info["num-partitions"]) if "num-partitions" in info else None,
                attacker=bool(info.get("attacker", False)),
            )

    # ---------------------------------------------------------------- evaluation
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if self.fraction_evaluate == 0:  # federated evaluation switched off
            return []
        node_ids = self._sample(grid, self.fraction_evaluate, self.min_evaluate_nodes, server_round, EVALUATE)
        self.stats.setdefault(server_round, RoundStats()).eval_sampled = len(node_ids)
        config["server-round"] = server_round
        messages = self._messages(node_ids, arrays, config, MessageType.EVALUATE)
        return self.track_sent(server_round, MessageType.EVALUATE, messages)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        stats = self.stats.setdefault(server_round, RoundStats())
        good = []
        for msg in self._split_replies(server_round, replies, MessageType.EVALUATE)[0]:
            rejection = validate_evaluate_reply(msg.content, max_num_examples=self.max_num_examples)
            if rejection is None:
                good.append(msg)
            else:
                self._reject(stats, msg.metadata.src_node_id, "evaluate", rejection)
        stats.eval_succeeded = len(good)
        if not good:
            return None
        metrics = self.evaluate_metrics_aggr_fn([m.content for m in good], self.weighted_by_key)
        stats.federated_loss = _as_float(metrics.get("loss"))
        stats.federated_accuracy = _as_float(metrics.get("accuracy"))
        return metrics


def _header(msg: Message) -> ReplyHeader:
    meta = msg.metadata
    return ReplyHeader(meta.reply_to_message_id, meta.src_node_id, meta.message_type, msg.has_error())


def reply_digest(msg: Message, layers: list[np.ndarray]) -> tuple[float, bytes]:
    """A key that orders replies by their content: (num-examples, digest of every array).

    The digest covers every array (bytes, dtype and shape, in the model's order), so two
    replies tie only when their models are identical, and then their order cannot change
    a sum. (Hashing only the smallest array was cheaper, but for BatchNorm models that is
    a 0-d counter most clients share, which left float sums to arrival order.) Metrics
    stay out: ``train-seconds`` differs between runs and would make the order, and so a
    resumed run, depend on timing. BLAKE2b reads about 1 GB/s: a few ms per reply for a
    model of a few MB.
    """
    digest = hashlib.blake2b(digest_size=16)
    for layer in layers:
        digest.update(f"{layer.dtype.str}{layer.shape}".encode())
        digest.update(np.ascontiguousarray(layer).reshape(-1).view(np.uint8))
    return float(msg.content[METRICS_KEY][NUM_EXAMPLES]), digest.digest()


def max_client_epsilon(replies: list[Message]) -> float | None:
    """The largest ``dp-sgd-epsilon`` among valid train replies (each DP-SGD client's own ε)."""
    values = [m.content[METRICS_KEY].get(DP_SGD_EPSILON_KEY) for m in replies]
    numbers = [float(v) for v in values if isinstance(v, int | float)]
    return max(numbers) if numbers else None


def client_epsilons(replies: list[Message]) -> dict[int, float]:
    """Node id → the ``dp-sgd-epsilon`` its valid train reply reported (DP-SGD nodes only)."""
    out = {}
    for m in replies:
        value = m.content[METRICS_KEY].get(DP_SGD_EPSILON_KEY)
        if isinstance(value, int | float):
            out[m.metadata.src_node_id] = float(value)
    return out


def _as_float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None
