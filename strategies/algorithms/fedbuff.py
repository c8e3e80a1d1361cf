"""FedBuff: asynchronous buffered aggregation on Flower's Grid push/pull.

Nguyen et al. 2022, "Federated Learning with Buffered Asynchronous Aggregation"
(FedBuff, arXiv:2106.06639), Algorithm 1. The server keeps ``C`` clients training at
once. A client that downloaded model version ``v_k`` returns ``Delta_k = w_k - w^(v_k)``;
with the server at version ``v`` its staleness is ``tau_k = v - v_k`` and its update
enters the buffer weighted by ``s(tau_k) = 1 / sqrt(1 + tau_k)``. After ``K`` updates::

    w <- w + eta_g * sum_k s(tau_k) * Delta_k / K,      v <- v + 1

and the buffer is cleared (math in :mod:`strategies.numeric.fedbuff`, tested on known
values). Every returned client gets new work at once, on the newest model, so fast
devices never wait for slow ones.

How this maps onto the app
--------------------------
- A *round* is one buffer application: ``num-server-rounds`` rounds publish that many
  model versions, and the ServerApp's per-round hook (central evaluation, the round
  line, metrics.json, the checkpoint) runs after each. :meth:`round_metrics` adds the
  round's staleness (mean and max tau over the buffered updates) and the model version.
- :meth:`FedBuff.start` is the asynchronous loop, written on ``Grid.push_messages`` /
  ``Grid.pull_messages`` / ``Grid.get_node_ids`` only, so it runs unchanged in the
  simulation engine and in deployment. It pulls the replies of all outstanding
  messages every ``poll_interval`` seconds; each reply is handled as it arrives.
- Staleness is counted in model versions. A reply more than ``fedbuff-max-staleness``
  versions old is dropped and counted in the round's ``rejected`` as ``too-stale``;
  error replies and malformed replies are treated exactly as FedAvg treats them
  (:meth:`FedAvg.valid_train_replies`: counted, logged with the node id and reason).
- Work goes to idle connected nodes drawn by a seeded generator
  (``round_rng(seed, dispatches so far, DISPATCH)``). Each message carries a serial
  number as ``server-round`` (clients seed their local shuffling with it: one node can
  be sent the same model version twice) and ``model-version``.
- ``timeout`` (run config ``round-timeout``) bounds a client's reply (the message's
  TTL; late replies count as failed and free the node), every Grid call (a SuperLink
  that has not answered by the round's deadline plus a grace fails the run, see
  :mod:`strategies.core.deadline`) and a round: a buffer not full
  ``timeout`` seconds after its round began is applied with the updates it has
  (``count`` = their number), or, below ``min-valid-replies``, the round keeps the
  previous model. A federation whose clients all fail therefore still finishes.
- Per round, ``sampled`` counts the messages dispatched while the buffer filled,
  ``succeeded`` the updates buffered, ``failed`` the errors and timeouts.
- On completion, messages still outstanding are abandoned: their replies are never
  pulled and the SuperLink expires them at their TTL. Nothing waits for them.

Choices and limits
------------------
- The buffer mean is unweighted by examples, as in the paper (``/ K``).
- Only floating-point parameters are buffered and updated; integer buffers (BatchNorm's
  ``num_batches_tracked``) keep the current global model's values, as in every
  strategy (``strategies/core/buffers.py``). A non-finite result is not published: the
  version stays, the round keeps the model and counts ``non-finite-model``.
- ``fedbuff-server-learning-rate`` (eta_g) defaults to 1: with fresh updates the step
  is then the plain mean of the buffered updates, FedAvg's step over ``K`` clients.
  It is a key of its own because ``server-learning-rate`` (0.1) is tuned for the
  adaptive optimizers, where it is a different quantity.
- Devices are slowed by ``device-slowdown`` (harness/slowdown.py); the strategy's
  stragglers (fewer epochs) do not apply and ``straggler-fraction`` must be 0.
- No federated evaluation: all nodes are busy training; the global model is judged
  by the ServerApp's central evaluation after every round. ``fused-evaluate`` is refused:
  concurrent nodes train on different model versions, so the evaluations that arrive
  while one buffer fills measure several models and cannot be reported as one
  round's model.
- Checkpoints: :meth:`state_dict` holds the model version and the dispatch counter.
  A checkpoint is written right after a buffer application (the buffer is empty);
  work in flight at that moment is lost on resume, and the resumed run dispatches
  afresh. Arrival order depends on timing, so an asynchronous run, resumed or not, is
  not reproducible bit for bit (slowdown factors and node choices are).
- ``configure_train`` / ``aggregate_train`` implement one *synchronous* FedBuff round
  (every update fresh, tau = 0, ``K`` = the valid replies): what a synchronous driver
  (:func:`strategies.core.loop.run_rounds`, a wrapper, the contract tests) gets.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from logging import INFO, WARNING
from typing import Any, Unpack

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result
from flwr.supercore import log

from strategies.algorithms.fedavg import (
    FedAvg,
    FedAvgOptions,
    RoundStats,
    reply_digest,
)
from strategies.core.buffers import parameter_indices, select, with_previous_buffers
from strategies.core.deadline import call_with_deadline, grace
from strategies.core.ledger import header
from strategies.core.loop import EvaluateFn, begin_run
from strategies.core.records import ARRAYS_KEY, CONFIG_KEY, to_layers
from strategies.core.reply_checks import ArraySpec, Rejection
from strategies.core.reply_identity import DUPLICATE, Sent, match_replies
from strategies.core.sampling import round_rng, sample_ids
from strategies.core.validation import spec_of_record
from strategies.numeric.fedbuff import apply_buffer, staleness_weight
from strategies.wrappers.compressed import CompressionConfig
from tasks import wire
from tasks.config import AppConfig, ConfigError, Section, at_least, declare, in_range

#: Why FedBuff refuses fused evaluation (the message of the error).
FUSED_REFUSED = (
    "fused-evaluate=true cannot be combined with strategy='fedbuff': its nodes train on different "
    "model versions at once, so the evaluations fused into one buffer's replies would measure several "
    "models, not one round's; FedBuff reports central evaluation only. Set fused-evaluate=false"
)


@dataclass(frozen=True)
class FedBuffConfig(Section):
    """Keys of strategy ``fedbuff`` (README "Asynchronous FedBuff")."""

    fedbuff_concurrency: int = declare(10, "FedBuff: clients kept training at once", at_least(1))
    fedbuff_buffer_size: int = declare(5, "FedBuff: K, updates per buffer application (= round)", at_least(1))
    fedbuff_max_staleness: int = declare(
        10, "FedBuff: updates more model versions old than this are dropped", at_least(0)
    )
    fedbuff_server_learning_rate: float = declare(
        1.0,
        "FedBuff: η_g in w ← w + η_g·buffer/K (1 = plain mean of the buffered updates)",
        in_range(0, 1e6, lo_open=True),
    )


#: ``round_rng`` purpose of dispatch draws (strategies.core.sampling uses 0..2).
DISPATCH = 3
#: Reason counted in ``RoundStats.rejected`` for updates older than ``max_staleness``.
TOO_STALE = "too-stale"


@dataclass(frozen=True)
class _Dispatch:
    """One outstanding train message: where it went, on which model version, when."""

    node: int
    version: int
    sent_at: float


@dataclass
class _Run:
    """The asynchronous loop's state: the global model, work in flight, the buffer."""

    arrays: ArrayRecord
    names: list[str]
    spec: ArraySpec
    #: Global layers of the versions that outstanding work started from (and the current one).
    models: dict[int, list[np.ndarray]]
    server_round: int
    round_began: float
    in_flight: dict[str, _Dispatch] = field(default_factory=dict)
    #: Message ids already answered: a second reply to one of them is a duplicate.
    answered: set[str] = field(default_factory=set)
    buffer: list[_Update] = field(default_factory=list)


@dataclass(frozen=True)
class _Update:
    """A validated reply waiting in the buffer."""

    msg: Message
    layers: list[np.ndarray]
    delta: list[np.ndarray]  # float64, w_k - w^(v_k), parameters only
    tau: int


class FedBuff(FedAvg):
    """Buffered asynchronous aggregation (FedBuff) with staleness weights 1/sqrt(1 + tau).

    Parameters
    ----------
    concurrency : int, default 10
        C >= 1: clients kept training at once (``fedbuff-concurrency``), capped by the
        number of connected nodes.
    buffer_size : int, default 5
        K >= 1: updates per buffer application (``fedbuff-buffer-size``).
    max_staleness : int, default 10
        Updates more versions old than this are dropped (``fedbuff-max-staleness``).
    server_learning_rate : float, default 1.0
        eta_g > 0 (``fedbuff-server-learning-rate``).
    poll_interval : float, default 0.1
        Seconds between pulls when nothing arrived.
    **kwargs
        As for :class:`strategies.algorithms.fedavg.FedAvg` (``straggler_fraction`` must be 0).
    """

    def __init__(
        self,
        *,
        concurrency: int = 10,
        buffer_size: int = 5,
        max_staleness: int = 10,
        server_learning_rate: float = 1.0,
        poll_interval: float = 0.1,
        **kwargs: Unpack[FedAvgOptions],
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"fedbuff-concurrency={concurrency} must be >= 1")
        if buffer_size < 1:
            raise ValueError(f"fedbuff-buffer-size={buffer_size} must be >= 1")
        if max_staleness < 0:
            raise ValueError(f"fedbuff-max-staleness={max_staleness} must be >= 0")
        if not server_learning_rate > 0:
            raise ValueError(f"fedbuff-server-learning-rate={server_learning_rate} must be > 0")
        if kwargs.get("straggler_fraction", 0.0):
            raise ValueError(
                f"straggler-fraction={kwargs['straggler_fraction']} does not apply to fedbuff: slow "
                "devices are simulated with device-slowdown; set straggler-fraction=0"
            )
        if kwargs.get("fused_evaluate", False):
            raise ValueError(FUSED_REFUSED)
        super().__init__(**kwargs)
        self.concurrency = concurrency
        self.buffer_size = buffer_size
        self.max_staleness = max_staleness
        self.server_learning_rate = server_learning_rate
        self.poll_interval = poll_interval
        #: Model versions published (buffer applications): tau is counted in these.
        self.version = 0
        #: Train messages dispatched so far (seeds node choice; each message's serial number).
        self.dispatched = 0
        self._staleness: dict[int, dict[str, float | int]] = {}
        self._sync_global: dict[int, list[np.ndarray]] = {}

    def summary(self) -> None:
        log(
            INFO,
            "\t├──> FedBuff: concurrency %d | buffer K = %d | max staleness %d | eta_g = %s",
            self.concurrency,
            self.buffer_size,
            self.max_staleness,
            self.server_learning_rate,
        )
        super().summary()

    # ------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """FedAvg's state plus ``fedbuff-version`` and ``fedbuff-dispatched``."""
        return {
            **super().state_dict(),
            "fedbuff-version": self.version,
            "fedbuff-dispatched": self.dispatched,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.version = int(state["fedbuff-version"])
        self.dispatched = int(state["fedbuff-dispatched"])

    def round_metrics(self, server_round: int) -> dict[str, float | int]:
        """``staleness_mean``, ``staleness_max`` (tau over the round's buffer) and ``model_version``."""
        return dict(self._staleness.get(server_round, {}))

    # ------------------------------------------------------- the buffer, applied
    def _apply(
        self, server_round: int, names: list[str], base: list[np.ndarray], updates: list[_Update]
    ) -> tuple[ArrayRecord | None, MetricRecord]:
        """``base + eta_g * sum_k s(tau_k) Delta_k / len(updates)``; records the round's stats.

        Parameters only: ``base``'s integer buffers are carried over (``strategies/core/buffers.py``).
        The model is None, and the version unchanged, when the result is not finite
        (:meth:`FedAvg.release_model`: the previous model is kept, counted as ``non-finite-model``).
        """
        # Content order, not arrival order: the float sum is the same however replies raced.
        ordered = sorted(updates, key=lambda u: (u.tau, reply_digest(u.msg, u.layers)))
        index = parameter_indices(base)
        base_parameters = select(base, index)
        # float64: a float32 buffer of finite updates near the float32 maximum would overflow.
        buffer_sum = [np.zeros(np.shape(w), dtype=np.float64) for w in base_parameters]
        for update in ordered:
            weight = staleness_weight(update.tau)
            for acc, delta in zip(buffer_sum, update.delta, strict=True):
                acc += weight * delta
        new_parameters = apply_buffer(
            base_parameters, buffer_sum, count=len(ordered), server_lr=self.server_learning_rate
        )
        arrays = self.release_model(server_round, names, with_previous_buffers(new_parameters, base, index))
        if arrays is not None:
            self.version += 1
        metrics = self.finish_round(server_round, [u.msg for u in ordered])
        taus = [u.tau for u in ordered]
        self._staleness[server_round] = {
            "staleness_mean": float(np.mean(taus)),
            "staleness_max": int(max(taus)),
            "model_version": self.version,
        }
        return arrays, metrics

    @staticmethod
    def _delta(layers: list[np.ndarray], base: list[np.ndarray]) -> list[np.ndarray]:
        """``w_k - w^(v_k)`` in float64, of the parameters only (buffers are never updated)."""
        index = parameter_indices(base)
        return [np.asarray(layers[i], np.float64) - np.asarray(base[i], np.float64) for i in index]

    # ------------------------------------------- synchronous round (tau = 0 for all)
    def remember_global(self, server_round: int, arrays: ArrayRecord) -> None:
        super().remember_global(server_round, arrays)
        # Copies: the record's buffers belong to the caller. Only this round's model is kept.
        self._sync_global = {server_round: [np.array(a) for a in to_layers(arrays)]}

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid, layers, names = self.valid_train_replies(server_round, replies)
        base = self._sync_global.pop(server_round, None)
        problem = self.too_few_replies(len(valid))
        if problem is not None:
            self.stats[server_round].keep_previous_model(server_round, problem)
            return None, None
        if base is None:
            raise RuntimeError(f"aggregate_train({server_round}) without configure_train for that round")
        updates = [
            _Update(msg, lay, self._delta(lay, base), tau=0) for msg, lay in zip(valid, layers, strict=True)
        ]
        return self._apply(server_round, names, base, updates)

    # ------------------------------------------------------- the asynchronous loop
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
        """Run FedBuff until round ``num_rounds`` (buffer application) is published.

        Parameters are those of :meth:`FedAvg.start`; ``timeout`` bounds each client's
        reply and each round (see the module docstring). ``evaluate_config`` is unused
        (no federated evaluation). ``evaluate_fn(round, arrays)`` runs before round 1
        when starting fresh and after every round.
        """
        t_start = time.time()
        result = begin_run(
            self,
            initial_arrays,
            num_rounds=num_rounds,
            start_round=start_round,
            train_config=train_config,
            evaluate_config=evaluate_config,
            evaluate_fn=evaluate_fn,
            description=" (asynchronous)",
        )
        if self.fraction_evaluate > 0:
            log(INFO, "FedBuff: no federated evaluation (nodes are busy training); central evaluation only")
        train_config = ConfigRecord() if train_config is None else train_config
        if self.version != start_round - 1:
            log(INFO, "FedBuff: model version set to %d (rounds already run)", start_round - 1)
            self.version = start_round - 1

        run = _Run(
            arrays=initial_arrays,
            names=list(initial_arrays.keys()),
            spec=spec_of_record(initial_arrays),
            models={self.version: [np.array(a) for a in to_layers(initial_arrays)]},
            server_round=start_round,
            round_began=time.monotonic(),
        )
        self._spec[start_round] = run.spec
        self.connected_nodes(grid, self.min_available_nodes)
        while run.server_round <= num_rounds:
            self._dispatch(grid, run, train_config, timeout)
            if not run.in_flight:  # every node gone: wait (bounded) for one to come back
                self.connected_nodes(grid, 1)
            pending = list(run.in_flight)
            replies = (
                self._grid_call(run, timeout, "pull_messages", partial(grid.pull_messages, pending))
                if pending
                else []
            )
            for reply in replies:
                dispatch = self._accept(run, reply)
                if dispatch is None:
                    continue
                update = self._receive(run, reply, dispatch)
                if update is not None:
                    run.buffer.append(update)
                if len(run.buffer) >= self.buffer_size:
                    self._end_round(run, result, evaluate_fn, timed_out=False)
                    if run.server_round > num_rounds:
                        break  # replies pulled with the last update are not needed
            if run.server_round > num_rounds:
                break
            self._expire(run, timeout)
            if time.monotonic() - run.round_began >= timeout:
                self._end_round(run, result, evaluate_fn, timed_out=True)
            elif not replies:
                time.sleep(self.poll_interval)
        if run.in_flight:
            log(
                INFO,
                "FedBuff: done; %d outstanding message(s) abandoned (expire at their TTL)",
                len(run.in_flight),
            )
        log(INFO, "Strategy execution finished in %.2fs", time.time() - t_start)
        return result

    @staticmethod
    def _grid_call(run: _Run, timeout: float, what: str, call: Callable[[], Iterable[Any]]) -> list[Any]:
        """``call()`` bounded by the round's deadline (plus a grace): a stalled SuperLink fails the run."""
        left = run.round_began + timeout - time.monotonic()
        extra = grace(timeout)
        return list(
            call_with_deadline(
                call,
                timeout=max(left, 0.0) + extra,
                what=what,
                budget=f"the round's round-timeout={timeout:g}s + {extra:g}s grace",
            )
        )

    def _end_round(
        self, run: _Run, result: Result, evaluate_fn: EvaluateFn | None, *, timed_out: bool
    ) -> None:
        """Apply the buffer (or keep the model), evaluate, and begin the next round."""
        server_round, stats = run.server_round, self.stats.setdefault(run.server_round, RoundStats())
        if timed_out:
            log(
                WARNING,
                "FedBuff: round %d timed out with %d of %d updates",
                server_round,
                len(run.buffer),
                self.buffer_size,
            )
        problem = self.too_few_replies(len(run.buffer))
        if problem is None:
            arrays, metrics = self._apply(server_round, run.names, run.models[self.version], run.buffer)
            result.train_metrics_clientapp[server_round] = metrics
            if arrays is not None:  # else not finite: the previous model stays (counted by _apply)
                run.arrays = result.arrays = arrays
                run.models[self.version] = [np.array(a) for a in to_layers(run.arrays)]
        else:
            stats.keep_previous_model(server_round, problem)
        run.buffer = []
        if evaluate_fn is not None:
            res = evaluate_fn(server_round, run.arrays)
            if res is not None:
                result.evaluate_metrics_serverapp[server_round] = res
        run.server_round += 1
        self._spec[run.server_round] = run.spec
        run.round_began = time.monotonic()
        keep = {d.version for d in run.in_flight.values()} | {self.version}
        run.models = {
            v: m for v, m in run.models.items() if v in keep and v >= self.version - self.max_staleness
        }

    def _dispatch(
        self,
        grid: Grid,
        run: _Run,
        train_config: ConfigRecord,
        timeout: float,
    ) -> None:
        """Send the current model to seeded-chosen idle nodes until ``concurrency`` are busy."""
        capacity = self.concurrency - len(run.in_flight)
        if capacity <= 0:
            return
        busy = {d.node for d in run.in_flight.values()}
        connected = self._grid_call(run, timeout, "get_node_ids", grid.get_node_ids)
        idle = [int(n) for n in connected if int(n) not in busy]
        chosen = sample_ids(idle, min(capacity, len(idle)), round_rng(self.seed, self.dispatched, DISPATCH))
        if not chosen:
            return
        messages = []
        for node in chosen:
            self.dispatched += 1
            config = ConfigRecord(dict(train_config))
            self.prepare_train_config(server_round=self.dispatched, config=config)
            # server-round is the clients' shuffling seed: unique per message.
            config[wire.MODEL_VERSION] = self.version
            content = RecordDict({ARRAYS_KEY: run.arrays, CONFIG_KEY: config})
            messages.append(
                Message(
                    content=content,
                    dst_node_id=node,
                    message_type=MessageType.TRAIN,
                    ttl=timeout,
                    group_id=str(run.server_round),
                )
            )
        ids = self._grid_call(run, timeout, "push_messages", partial(grid.push_messages, messages))
        now = time.monotonic()
        stats = self.stats.setdefault(run.server_round, RoundStats())
        stats.sampled += len(chosen)
        for i, node in enumerate(chosen):
            msg_id = ids[i] if i < len(ids) else None
            if msg_id:
                run.in_flight[str(msg_id)] = _Dispatch(node, self.version, now)
            else:
                log(WARNING, "train: could not push a message to node %d", node)
                stats.fail(node)

    def _accept(self, run: _Run, reply: Message) -> _Dispatch | None:
        """The work ``reply`` answers, or None: one reply per message in flight, counted if not.

        The same identity rules as the synchronous strategies (``strategies.core.reply_identity``):
        a second reply to a message (``duplicate``), a reply from a node with no work in
        flight (``not-sampled``), a reply of another stage, or a reply to a message not in
        flight (``unknown-reply-to``) is dropped and counted in the current round.
        """
        message_id = reply.metadata.reply_to_message_id
        sent = [Sent(mid, d.node) for mid, d in run.in_flight.items()]
        (match,) = match_replies(sent, [header(reply)], message_type=MessageType.TRAIN)
        if match.rejection is None:
            run.answered.add(message_id)
            return run.in_flight.pop(message_id)
        rejection = match.rejection
        if message_id in run.answered:
            rejection = Rejection(DUPLICATE, f"message {message_id!r} was already answered")
        stats = self.stats.setdefault(run.server_round, RoundStats())
        stats.reject(reply.metadata.src_node_id, "train", rejection)
        return None

    def _receive(self, run: _Run, reply: Message, dispatch: _Dispatch) -> _Update | None:
        """The reply as a buffered update, or None (failed, malformed, too stale): counted either way."""
        server_round, models = run.server_round, run.models
        stats = self.stats.setdefault(server_round, RoundStats())
        if reply.has_error():
            log(WARNING, "train: node %d failed: %s", dispatch.node, reply.error.reason)
            stats.fail(dispatch.node)
            return None
        tau = self.version - dispatch.version
        if tau > self.max_staleness or dispatch.version not in models:
            rejection = Rejection(
                TOO_STALE, f"{tau} versions old, fedbuff-max-staleness={self.max_staleness}"
            )
            stats.reject(dispatch.node, "train", rejection)
            return None
        # FedAvg's validation (shapes, dtypes, finite values, num-examples), added to this
        # round's ledger (the ledger only adds: nothing to save and restore around it).
        valid, layers, _ = self.valid_train_replies(server_round, [reply])
        if not valid:
            return None
        return _Update(valid[0], layers[0], self._delta(layers[0], models[dispatch.version]), tau)

    def _expire(self, run: _Run, timeout: float) -> None:
        """Give up on messages older than ``timeout``: the node counts as failed and is free again."""
        now = time.monotonic()
        late = [mid for mid, d in run.in_flight.items() if now - d.sent_at >= timeout]
        stats = self.stats.setdefault(run.server_round, RoundStats())
        for mid in late:
            node = run.in_flight.pop(mid).node
            log(WARNING, "train: no reply from node %d within %.0fs (timeout or node lost)", node, timeout)
            stats.fail(node)


def fedbuff_from_config(cfg: AppConfig, **common: Unpack[FedAvgOptions]) -> FedBuff:
    """The registry's builder: FedBuff from the run config (``common``: FedAvg's arguments).

    Raises
    ------
    ConfigError
        With ``compression`` other than ``none``: the compression wrapper drives the
        synchronous hooks, so the run would silently not be asynchronous. With
        ``fused-evaluate=true`` (see :data:`FUSED_REFUSED`).
    """
    compression = cfg.section(CompressionConfig).compression
    if compression != "none":
        raise ConfigError(
            f"run config: compression={compression!r} cannot be combined with strategy='fedbuff' "
            "(the compression wrapper runs synchronous rounds); set compression='none'"
        )
    if cfg.fused_evaluate:
        raise ConfigError(f"run config: {FUSED_REFUSED}")
    own = cfg.section(FedBuffConfig)
    return FedBuff(
        concurrency=own.fedbuff_concurrency,
        buffer_size=own.fedbuff_buffer_size,
        max_staleness=own.fedbuff_max_staleness,
        server_learning_rate=own.fedbuff_server_learning_rate,
        **common,
    )
