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

It is also the base every FedAvg-family strategy and wrapper builds on, through public
hooks only (no wrapper reads its private attributes):

- the strategy protocol (``strategies/core/protocol.py``): ``stats``, ``nodes``,
  ``round_metrics``, ``state_dict`` / ``load_state_dict`` / ``check_state``, ``summary``,
  ``add_reply_transform`` and ``start`` (the round driver, ``strategies/core/loop.py``);
- sampling: ``connected_nodes`` (the one bounded wait), ``select_nodes`` (the sampling
  hook), ``train_messages`` (messages to nodes someone else chose: DP's Poisson sample),
  ``prepare_train_config`` (FedProx adds μ), ``remember_global`` (server optimizers keep
  the round's model);
- aggregation: ``valid_train_replies`` (pure validation, ``strategies/core/ledger.py``,
  recorded in the round's ledger), ``aggregate_layers`` (the rule), ``apply_aggregate``
  (a server optimizer's step), ``release_model`` (the final check) and ``finish_round``
  (the one place a round's nodes, loss, DP-SGD ε and attackers are recorded);
- fused evaluation (``fused_evaluate``, ``strategies/core/fused.py``): train messages ask
  for it, ``valid_train_replies`` takes it out of the replies (``record_fused_evaluation``)
  before any wrapper's rule sees them, and no evaluate stage runs;
- phase timings (``strategies/core/phases.py``): the stages and aggregation, timed from these
  hooks (``time_stage``), in the round's ledger.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from logging import INFO, WARNING
from typing import Any, TypedDict

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg as FlowerFedAvg
from flwr.serverapp.strategy import Result
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords
from flwr.supercore import log

from strategies.core import phases
from strategies.core.buffers import (
    check_released_model,
    is_parameter,
    parameter_indices,
    select,
    with_previous_buffers,
)
from strategies.core.fused import aggregate_fused, check_fused, split_fused
from strategies.core.ledger import (  # noqa: F401  (RoundStats, NodeReport, ... re-exported: their old home)
    NodeReport,
    RoundStats,
    client_epsilons,
    max_client_epsilon,
    reply_digest,
    split_replies,
    validate_train_replies,
)
from strategies.core.loop import EvaluateFn, run_rounds, send_train
from strategies.core.phases import (
    AGGREGATE,
    CLIENT_HANDLER,
    CLIENT_TRAIN,
    DISPATCH_FIRST,
    EVALUATE_STAGE,
    RETURN_LAST,
    TRAIN_STAGE,
)
from strategies.core.protocol import ReplyTransform
from strategies.core.records import (
    ARRAYS_KEY,
    CONFIG_KEY,
    INFO_KEY,
    METRICS_KEY,
    NUM_EXAMPLES,
    from_layers,
    to_layers,
)
from strategies.core.reply_checks import ArraySpec, Rejection
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
from strategies.core.validation import spec_of_record, validate_evaluate_reply
from strategies.numeric.aggregate import weighted_average
from tasks import wire


class FedAvgOptions(TypedDict, total=False):
    """The keyword arguments of :class:`FedAvg`, so a subclass can pass them on typed.

    A subclass takes ``**kwargs: Unpack[FedAvgOptions]`` and forwards them to
    ``super().__init__``; the registry builds them once (``common_kwargs``).
    """

    fraction_train: float
    fraction_evaluate: float
    min_train_nodes: int
    min_evaluate_nodes: int
    min_available_nodes: int
    wait_for_nodes_timeout: float
    local_epochs: int
    straggler_fraction: float
    seed: int
    max_num_examples: int
    min_valid_replies: int
    fused_evaluate: bool


class FedAvg(FlowerFedAvg):
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
    fused_evaluate : bool
        Federated evaluation inside the train messages (``strategies/core/fused.py``): the
        round's train nodes evaluate the model they receive (round r − 1's) before training,
        and no separate evaluate stage runs. ``fraction_evaluate=0`` still turns federated
        evaluation off.
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
        fused_evaluate: bool = False,
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
        self.fused_evaluate = fused_evaluate
        self._spec: dict[int, ArraySpec] = {}
        self.stats: dict[int, RoundStats] = {}
        self.nodes: dict[int, NodeReport] = {}
        self._stragglers: dict[int, dict[int, int]] = {}
        # (round, message type) → the messages sent: replies are matched against them.
        self._sent: dict[tuple[int, str], list[Message]] = {}
        self._previous_buffers: dict[int, dict[str, np.ndarray]] = {}
        self._reply_transforms: list[ReplyTransform] = []
        # (round, stage) → when the stage's messages were made (strategies/core/phases.py).
        self._stamps: dict[tuple[int, str], float] = {}

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
        if self.fuses_evaluation:
            log(INFO, "\t├──> Federated evaluation fused into train messages (of the previous round's model)")
        super().summary()

    @property
    def fuses_evaluation(self) -> bool:
        """Whether train messages ask nodes to evaluate the received model (and no evaluate stage runs)."""
        return self.fused_evaluate and self.fraction_evaluate > 0

    def round_metrics(self, server_round: int) -> dict[str, Any]:
        """Per-round figures of this strategy's own for metrics.json; FedAvg has none."""
        return {}

    def add_reply_transform(self, transform: ReplyTransform) -> None:
        """Register a reply transform (``strategies.core.protocol``): applied to every train batch."""
        self._reply_transforms.append(transform)

    # ------------------------------------------------------------ the round driver
    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: EvaluateFn | None = None,
        start_round: int = 1,
    ) -> Result:
        """Flower's round loop over this strategy's hooks, able to begin at ``start_round``.

        The loop is :func:`strategies.core.loop.run_rounds`, composed here (not a mixin).
        """
        return run_rounds(
            self,
            grid,
            initial_arrays,
            num_rounds,
            timeout,
            train_config,
            evaluate_config,
            evaluate_fn,
            start_round,
            train_exchange=self.train_exchange,
        )

    def train_exchange(
        self, grid: Grid, server_round: int, messages: list[Message], timeout: float
    ) -> list[Message]:
        """The train exchange hook (``strategies/core/loop.py``): one bounded ``send_and_receive``."""
        return send_train(grid, server_round, messages, timeout)

    # ------------------------------------------------------------------ sampling
    def connected_nodes(self, grid: Grid, minimum: int) -> list[int]:
        """The connected node ids, once at least ``minimum`` are (bounded by ``wait_for_nodes_timeout``)."""
        return wait_for_nodes(grid.get_node_ids, minimum=minimum, timeout=self.wait_for_nodes_timeout)

    def select_nodes(self, grid: Grid, server_round: int, purpose: int) -> list[int]:
        """The sampling hook: the nodes ``purpose`` (TRAIN or EVALUATE) uses this round.

        FedAvg: a seeded uniform sample of ``fraction`` of the connected nodes (at least
        the minimum). A wrapper with its own sampling (DP's Poisson sampling) chooses the
        nodes itself and hands them to :meth:`train_messages`.
        """
        fraction, minimum = (
            (self.fraction_train, self.min_train_nodes)
            if purpose == TRAIN
            else (self.fraction_evaluate, self.min_evaluate_nodes)
        )
        connected = self.connected_nodes(grid, max(self.min_available_nodes, minimum))
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
        node_ids = self.select_nodes(grid, server_round, TRAIN)
        return self.train_messages(server_round, node_ids, arrays, config)

    def prepare_train_config(self, server_round: int, config: ConfigRecord) -> None:
        """Write this strategy's own train settings into ``config`` (FedProx adds ``proximal-mu``)."""
        config[wire.SERVER_ROUND] = server_round
        config[wire.LOCAL_EPOCHS] = self.local_epochs
        if self.fuses_evaluation:
            config[wire.FUSED_EVALUATE] = True

    def train_messages(
        self, server_round: int, node_ids: list[int], arrays: ArrayRecord, config: ConfigRecord
    ) -> list[Message]:
        """The round's train messages to ``node_ids`` (already sampled), tracked for reply matching.

        Stragglers are drawn among ``node_ids``; the round's ``sampled`` (and ``dropped``)
        counts, the model's spec and global model are recorded; ``config`` gets this
        strategy's settings (:meth:`prepare_train_config`).
        """
        stragglers = choose_stragglers(
            node_ids,
            fraction=self.straggler_fraction,
            local_epochs=self.local_epochs,
            rng=round_rng(self.seed, server_round, STRAGGLERS),
        )
        self._stragglers[server_round] = stragglers
        stats = self.stats.setdefault(server_round, RoundStats())
        stats.sampled = len(node_ids)
        self.prepare_train_config(server_round, config)
        if not self.aggregates_stragglers:
            # A dropped straggler's work would be thrown away: don't ask for it.
            stats.dropped = len(stragglers)
            node_ids = [n for n in node_ids if n not in stragglers]
            per_node = {}
        else:
            per_node = {n: {wire.LOCAL_EPOCHS: e} for n, e in stragglers.items()}
        self._spec[server_round] = spec_of_record(arrays)
        self.remember_global(server_round, arrays)
        log(
            INFO,
            "configure_train: %d nodes sampled, %d stragglers (%s)",
            stats.sampled,
            len(stragglers),
            "aggregated" if self.aggregates_stragglers else "dropped",
        )
        messages = self._messages(node_ids, arrays, config, MessageType.TRAIN, per_node)
        self._stamps[(server_round, TRAIN_STAGE)] = phases.now()
        return self.track_sent(server_round, MessageType.TRAIN, messages)

    def remember_global(self, server_round: int, arrays: ArrayRecord) -> None:
        """Keep what aggregation needs of the round's global model (FedAvg: its integer buffers).

        Strategies that step from the global model (server optimizers) extend this.
        """
        self.remember_buffers(server_round, arrays)

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

    def valid_train_replies(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[list[Message], list[list[np.ndarray]], list[str]]:
        """Replies that passed validation, their decoded layers, and the array names.

        Every strategy built on this class aggregates only what this returns. The
        registered reply transforms run first; then the pure
        :func:`strategies.core.ledger.validate_train_replies` sorts the replies, and the
        round's ledger (``stats``) records the outcome, logging each node and reason.
        Counts are added, so a strategy may validate a round's replies in several batches.
        """
        replies = list(replies)
        self.time_stage(server_round, TRAIN_STAGE, replies)
        self._stamps[(server_round, AGGREGATE)] = phases.now()
        pre_rejected: dict[int, Rejection] = {}
        for transform in self._reply_transforms:
            replies, rejected = transform(server_round, replies)
            pre_rejected.update(rejected)
        if self.fuses_evaluation:
            self.record_fused_evaluation(server_round, replies)
        outcome = validate_train_replies(
            replies,
            sent=self._sent.get((server_round, MessageType.TRAIN)),
            spec=self._spec.get(server_round),
            max_num_examples=self.max_num_examples,
            pre_rejected=pre_rejected,
        )
        self.stats.setdefault(server_round, RoundStats()).record(outcome, "train")
        return outcome.valid, outcome.layers, outcome.names

    def record_fused_evaluation(self, server_round: int, replies: list[Message]) -> None:
        """Take the fused evaluation out of the round's train replies and record it (fused mode).

        Each reply's fused keys are removed from its metrics (training's validation and
        train metrics never see them). The evaluations of replies that answer this round's
        train messages are checked like evaluate replies (a malformed one is counted in
        ``rejected`` under its reason, as an evaluate reply is) and averaged into this
        round's ledger as the federated evaluation of round ``server_round - 1``'s model.
        A node that failed, or replied without an evaluation, is not counted as succeeded.
        """
        carried: dict[int, Mapping[str, object]] = {}  # id(reply) → its fused evaluation
        for msg in replies:
            metrics = None if msg.has_error() else msg.content.metric_records.get(METRICS_KEY)
            if metrics is not None:
                train, carried_part = split_fused(metrics)
                if carried_part is not None:
                    msg.content[METRICS_KEY] = MetricRecord(train)
                    carried[id(msg)] = carried_part
        stats = self.stats.setdefault(server_round, RoundStats())
        sent = self._sent.get((server_round, MessageType.TRAIN))
        stats.fused_eval_sampled = len(sent) if sent is not None else len(replies)
        good, _, _ = split_replies(replies, sent=sent, stage=MessageType.TRAIN)
        parts: list[Mapping[str, object]] = []
        for msg in good:
            fused = carried.get(id(msg))
            if fused is None:
                log(WARNING, "fused evaluation: node %d sent no evaluation", msg.metadata.src_node_id)
                continue
            rejection = check_fused(fused, max_num_examples=self.max_num_examples)
            if rejection is None:
                parts.append(fused)
            else:
                stats.reject(msg.metadata.src_node_id, MessageType.EVALUATE, rejection)
        result = aggregate_fused(parts)
        stats.fused_eval_succeeded = len(parts)
        stats.fused_federated_loss = None if result is None else result.loss
        stats.fused_federated_accuracy = None if result is None else result.accuracy

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid, layers, names = self.valid_train_replies(server_round, replies)
        problem = self.too_few_replies(len(valid))
        if problem is not None:
            # Never aggregate nothing (or too little): keep the previous global model.
            self.stats[server_round].keep_previous_model(server_round, problem)
            return None, None
        weights = [wire.as_float(m.content.metric_records[METRICS_KEY][NUM_EXAMPLES]) for m in valid]
        # Parameters only (strategies/core/buffers.py): the rule never sees an integer buffer.
        index = parameter_indices(layers[0])
        previous = self._previous_model(server_round, names, layers[0], index)
        aggregate = self.aggregate_layers([select(client, index) for client in layers], weights)
        new_parameters = self.apply_aggregate(server_round, aggregate)
        new_model = with_previous_buffers(new_parameters, previous, index)
        arrays = self.release_model(server_round, names, new_model)
        return arrays, self.finish_round(server_round, valid)

    def finish_round(self, server_round: int, valid: list[Message]) -> MetricRecord:
        """The one place a train round is finished, for every strategy and wrapper.

        Records each node's report, then the round's train loss, DP-SGD ε and attackers
        in its ledger; returns the aggregated train metrics (example-weighted).
        """
        self.record_nodes(valid)
        metrics = aggregate_metricrecords([m.content for m in valid], self.weighted_by_key)
        stats = self.stats.setdefault(server_round, RoundStats())
        stats.finish(valid, self.nodes, _as_float(metrics.get(wire.TRAIN_LOSS)))
        began = self._stamps.pop((server_round, AGGREGATE), None)
        if began is not None:
            phases.add(stats.phases, AGGREGATE, phases.now() - began)
        return metrics

    def time_stage(self, server_round: int, stage: str, replies: list[Message]) -> None:
        """Record a stage's wall time (messages made → replies here) and its replies' client times."""
        stats = self.stats.setdefault(server_round, RoundStats())
        began = self._stamps.pop((server_round, stage), None)
        if began is not None:
            elapsed = phases.now() - began
            phases.add(stats.phases, stage, elapsed)
            span = phases.handler_span(replies)
            if span is not None:  # the engine's share before the first and after the last handler
                ended = phases.wall()
                phases.add(stats.phases, DISPATCH_FIRST, span[0] - (ended - elapsed))
                phases.add(stats.phases, RETURN_LAST, ended - span[1])
        phases.add(stats.phases, CLIENT_HANDLER, phases.reply_seconds(replies, wire.HANDLER_SECONDS))
        if stage == TRAIN_STAGE:
            phases.add(stats.phases, CLIENT_TRAIN, phases.reply_seconds(replies, wire.TRAIN_SECONDS))

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
        stats.rejected[rejection.reason] = stats.rejected.get(rejection.reason, 0) + 1
        stats.keep_previous_model(server_round, str(rejection))
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

    def record_nodes(self, replies: list[Message]) -> None:
        """Keep each replying node's own report (device, examples, time, attack role)."""
        for m in replies:
            metrics = m.content.metric_records[METRICS_KEY]
            info = m.content.config_records.get(INFO_KEY, ConfigRecord())
            partition = info.get(wire.PARTITION_ID)
            self.nodes[m.metadata.src_node_id] = NodeReport(
                device=str(info.get(wire.DEVICE, "?")),
                num_examples=wire.as_int(metrics[NUM_EXAMPLES]),
                train_seconds=wire.as_float(metrics.get(wire.TRAIN_SECONDS, 0.0)),
                partition=None if partition is None else wire.as_int(partition),
                num_partitions=(
                    wire.as_int(info[wire.NUM_PARTITIONS]) if wire.NUM_PARTITIONS in info else None
                ),
                attacker=bool(info.get(wire.ATTACKER, False)),
                worker=str(info.get(wire.WORKER, "")),
            )

    # ---------------------------------------------------------------- evaluation
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if self.fraction_evaluate == 0:  # federated evaluation switched off
            return []
        if self.fuses_evaluation:  # the next round's train messages evaluate this model
            return []
        node_ids = self.select_nodes(grid, server_round, EVALUATE)
        self.stats.setdefault(server_round, RoundStats()).eval_sampled = len(node_ids)
        config[wire.SERVER_ROUND] = server_round
        messages = self._messages(node_ids, arrays, config, MessageType.EVALUATE)
        self._stamps[(server_round, EVALUATE_STAGE)] = phases.now()
        return self.track_sent(server_round, MessageType.EVALUATE, messages)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        replies = list(replies)
        self.time_stage(server_round, EVALUATE_STAGE, replies)
        stats = self.stats.setdefault(server_round, RoundStats())
        good, rejections, failures = split_replies(
            replies,
            sent=self._sent.get((server_round, MessageType.EVALUATE)),
            stage=MessageType.EVALUATE,
        )
        # Evaluation failures are logged, not counted: the round's failed nodes are training's.
        for node, why in rejections:
            stats.reject(node, MessageType.EVALUATE, why)
        for failure in failures:
            if failure.reason is not None:
                log(WARNING, "%s: node %d failed: %s", MessageType.EVALUATE, failure.node, failure.reason)
        silent = [f.node for f in failures if f.reason is None]
        if silent:
            log(WARNING, "%s: no reply from node(s) %s (timeout or node lost)", MessageType.EVALUATE, silent)
        valid: list[Message] = []
        for msg in good:
            rejection = validate_evaluate_reply(msg.content, max_num_examples=self.max_num_examples)
            if rejection is None:
                valid.append(msg)
            else:
                stats.reject(msg.metadata.src_node_id, "evaluate", rejection)
        stats.eval_succeeded = len(valid)
        if not valid:
            return None
        metrics = self.evaluate_metrics_aggr_fn([m.content for m in valid], self.weighted_by_key)
        stats.federated_loss = _as_float(metrics.get(wire.LOSS))
        stats.federated_accuracy = _as_float(metrics.get(wire.ACCURACY))
        return metrics


def _as_float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None
