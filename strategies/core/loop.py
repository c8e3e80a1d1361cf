"""The round driver: the synchronous round loop every strategy's ``start`` calls.

Flower's ``Strategy.start`` always begins at round 1. Resuming from a checkpoint needs
the same loop from round ``k + 1``: the round number drives seeded sampling
(``round_rng(seed, round, …)``), stragglers and the clients' shuffling seeds, so a
resumed run must see the same numbers an uninterrupted run sees. :func:`run_rounds`
is that loop, written against the public Message-API methods only
(``configure_train`` / ``aggregate_train`` / ``configure_evaluate`` /
``aggregate_evaluate``), so it drives any ``flwr.serverapp.strategy.Strategy``. With
``start_round=1`` it does what Flower 1.41's ``Strategy.start`` does, in the same order.

It is composed, not inherited: :meth:`strategies.algorithms.fedavg.FedAvg.start` and
:meth:`strategies.wrappers.base.StrategyWrapper.start` each return
``run_rounds(self, ...)``, so no base-class order matters. FedBuff's asynchronous loop
shares the start-up (:func:`begin_run`: checks, start log, summary, initial evaluation).

The train exchange is a hook: by default a round's train messages go out in one bounded
``send_and_receive`` (:func:`send_train`); a strategy whose train stage is a protocol of
several exchanges (secure aggregation's four SecAgg+ stages) passes its own
``train_exchange`` and the loop stays one loop.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable
from logging import INFO

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy
from flwr.serverapp.strategy.strategy_utils import log_strategy_start_info
from flwr.supercore import log

from strategies.core.deadline import send_and_receive_within

EvaluateFn = Callable[[int, ArrayRecord], MetricRecord | None]
#: ``(grid, round, messages, timeout) -> replies``: how a round's train messages become its replies.
TrainExchange = Callable[[Grid, int, list[Message], float], list[Message]]


def send_train(grid: Grid, server_round: int, messages: list[Message], timeout: float) -> list[Message]:
    """The default train exchange: one ``send_and_receive``, bounded by ``timeout`` + a grace."""
    return send_and_receive_within(grid, messages, timeout=timeout)


def begin_run(
    strategy: Strategy,
    initial_arrays: ArrayRecord,
    *,
    num_rounds: int,
    start_round: int,
    train_config: ConfigRecord | None,
    evaluate_config: ConfigRecord | None,
    evaluate_fn: EvaluateFn | None,
    description: str = "",
) -> Result:
    """The start-up every driver shares; returns the run's :class:`Result` so far.

    Refuses ``start_round`` < 1, logs the start (and ``strategy.summary()``), and evaluates
    the initial model with ``evaluate_fn`` when starting fresh (a resumed run evaluated
    that model already).
    """
    if start_round < 1:
        raise ValueError(f"start_round must be >= 1, got {start_round}")
    log(
        INFO,
        "Starting %s strategy%s at round %d of %d:",
        type(strategy).__name__,
        description,
        start_round,
        num_rounds,
    )
    log_strategy_start_info(num_rounds, initial_arrays, train_config, evaluate_config)
    strategy.summary()
    log(INFO, "")
    result = Result()
    if evaluate_fn is not None and start_round == 1:
        res = evaluate_fn(0, initial_arrays)
        log(INFO, "Initial global evaluation results: %s", res)
        if res is not None:
            result.evaluate_metrics_serverapp[0] = res
    return result


def run_rounds(
    strategy: Strategy,
    grid: Grid,
    initial_arrays: ArrayRecord,
    num_rounds: int = 3,
    timeout: float = 3600,
    train_config: ConfigRecord | None = None,
    evaluate_config: ConfigRecord | None = None,
    evaluate_fn: EvaluateFn | None = None,
    start_round: int = 1,
    *,
    train_exchange: TrainExchange = send_train,
) -> Result:
    """Run rounds ``start_round … num_rounds`` of ``strategy`` from ``initial_arrays``.

    Parameters
    ----------
    strategy : Strategy
        Any Message-API strategy.
    grid : Grid
        Where messages go.
    initial_arrays : ArrayRecord
        The global model before round ``start_round`` (the initial model, or the model
        a checkpoint saved after round ``start_round - 1``).
    num_rounds : int
        The last round to run (the run's ``num-server-rounds``, not a count from
        ``start_round``).
    timeout : float
        Seconds to wait for each round's replies (run config ``round-timeout``). It is
        also the messages' TTL, so the SuperLink drops work nobody waits for any more,
        and it bounds the Grid calls: a SuperLink that has not answered
        ``timeout`` + a grace (:func:`strategies.core.deadline.grace`) later fails the run
        with :class:`strategies.core.deadline.GridTimeout`.
    train_config, evaluate_config : ConfigRecord, optional
        Sent to nodes each round.
    evaluate_fn : callable, optional
        ``(round, arrays) -> MetricRecord | None``: called before round 1 when starting
        fresh (a resumed run evaluated that model already) and after every round.
    start_round : int, default 1
        The first round to run, ≥ 1.
    train_exchange : callable, default :func:`send_train`
        Sends the round's train messages (TTL already set) and returns the replies that
        ``aggregate_train`` receives; a strategy's ``train_exchange`` member.

    Returns
    -------
    Result
        Final arrays (None if no round from ``start_round`` on aggregated) and the
        metrics of the rounds run here.
    """
    t_start = time.time()
    result = begin_run(
        strategy,
        initial_arrays,
        num_rounds=num_rounds,
        start_round=start_round,
        train_config=train_config,
        evaluate_config=evaluate_config,
        evaluate_fn=evaluate_fn,
    )
    train_config = ConfigRecord() if train_config is None else train_config
    evaluate_config = ConfigRecord() if evaluate_config is None else evaluate_config

    arrays = initial_arrays
    for current_round in range(start_round, num_rounds + 1):
        log(INFO, "")
        log(INFO, "[ROUND %s/%s]", current_round, num_rounds)
        train_messages = with_ttl(
            strategy.configure_train(current_round, arrays, train_config, grid), timeout
        )
        train_replies = train_exchange(grid, current_round, train_messages, timeout)
        agg_arrays, agg_train_metrics = strategy.aggregate_train(current_round, train_replies)
        if agg_arrays is not None:
            result.arrays = agg_arrays
            arrays = agg_arrays
        if agg_train_metrics is not None:
            log(INFO, "\t└──> Aggregated MetricRecord: %s", agg_train_metrics)
            result.train_metrics_clientapp[current_round] = agg_train_metrics

        evaluate_replies = send_and_receive_within(
            grid,
            with_ttl(strategy.configure_evaluate(current_round, arrays, evaluate_config, grid), timeout),
            timeout=timeout,
        )
        agg_evaluate_metrics = strategy.aggregate_evaluate(current_round, evaluate_replies)
        if agg_evaluate_metrics is not None:
            log(INFO, "\t└──> Aggregated MetricRecord: %s", agg_evaluate_metrics)
            result.evaluate_metrics_clientapp[current_round] = agg_evaluate_metrics

        if evaluate_fn is not None:
            log(INFO, "Global evaluation")
            res = evaluate_fn(current_round, arrays)
            log(INFO, "\t└──> MetricRecord: %s", res)
            if res is not None:
                result.evaluate_metrics_serverapp[current_round] = res

    log(INFO, "")
    log(INFO, "Strategy execution finished in %.2fs", time.time() - t_start)
    log(INFO, "")
    log(INFO, "Final results:")
    for line in io.StringIO(str(result)):
        log(INFO, "\t%s", line.strip("\n"))
    return result


def with_ttl(messages: Iterable[Message], ttl: float) -> list[Message]:
    """``messages`` with a TTL of at most ``ttl`` seconds (Flower's default is 12 h).

    A reply that comes after the round stopped waiting is never used, so the SuperLink
    may drop the message then; a shorter TTL a strategy chose is kept.
    """
    messages = list(messages)
    for msg in messages:
        msg.metadata.ttl = min(float(msg.metadata.ttl), float(ttl))
    return messages
