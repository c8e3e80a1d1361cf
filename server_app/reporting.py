"""Per-round reporting: centralized evaluation, one readable log line, metrics.json.

:class:`RoundReporter` is passed to ``Strategy.start`` as ``evaluate_fn``; Flower calls
it before round 1 and after every round, so no round loop is copied here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from logging import INFO
from typing import Any

from flwr.app import ArrayRecord, MetricRecord
from flwr.supercore import log

from server_app.run_dir import RunDirectory
from strategies.algorithms.fedavg import NodeReport, RoundStats
from strategies.core.buffers import NON_FINITE_MODEL
from strategies.core.reply_checks import SECAGG_BELOW_THRESHOLD


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def format_round(row: Mapping[str, Any], num_rounds: int) -> str:
    """One line: round, sampled/succeeded/failed, losses, accuracies, seconds."""
    head = f"[round {row['round']:>{len(str(num_rounds))}}/{num_rounds}]"
    if row["round"] == 0:
        central = f"central acc {_fmt(row.get('central_accuracy'))} loss {_fmt(row.get('central_loss'))}"
        return f"{head} initial model | {central}"
    clients = f"clients {row['sampled']} sampled, {row['succeeded']} ok, {row['failed']} failed"
    if row.get("dropped"):
        clients += f", {row['dropped']} dropped"
    rejected = dict(row.get("rejected") or {})
    # Not a reply: the aggregate itself was not finite (strategies/core/buffers.py).
    model_refused = rejected.pop(NON_FINITE_MODEL, 0)
    # Not a reply either: secure aggregation could not unmask the round's sum (strategies/wrappers/secagg.py).
    not_unmasked = rejected.pop(SECAGG_BELOW_THRESHOLD, 0)
    if rejected:
        clients += f", {sum(rejected.values())} rejected"
    if model_refused:
        clients += ", aggregate not finite: previous model kept"
    if not_unmasked:
        clients += ", secure sum not unmasked: previous model kept"
    if row.get("secagg_survivors") is not None:
        clients += f" (SecAgg+: {row['secagg_survivors']} survivors, {row.get('secagg_dropped', 0)} dropped)"
    if row.get("attackers"):
        clients += f" ({row['attackers']} accepted from attackers)"
    privacy = ""
    if row.get("epsilon") is not None:  # user-level DP (dp-fedavg / dp-fedprox)
        privacy += f" | ε {row['epsilon']:.3f} (δ={row['delta']:g})"
    if row.get("dp_sgd_epsilon") is not None:  # sample-level DP-SGD, the worst client's own ε
        privacy += f" | client DP-SGD ε ≤ {row['dp_sgd_epsilon']:.3f}"
    return (
        f"{head} {clients} | train loss {_fmt(row.get('train_loss'))} | "
        f"fed acc {_fmt(row.get('federated_accuracy'))} | central acc {_fmt(row.get('central_accuracy'))}"
        f"{privacy} | {row['seconds']:.1f}s"
    )


class RoundReporter:
    """``evaluate_fn`` hook: evaluates centrally, logs the round, appends to metrics.json.

    Parameters
    ----------
    stats : Mapping[int, RoundStats]
        The strategy's per-round participation counts (filled as rounds run).
    run_dir : RunDirectory
        Where metrics.json goes.
    central_eval : callable or None
        ArrayRecord → (loss, accuracy or None); None disables centralized evaluation.
    num_rounds : int
        Total rounds, for the log line.
    extra_metrics : callable, optional
        ``round -> dict`` merged into the row (e.g. a privacy accountant's ε).
    on_round_end : callable, optional
        ``(round, arrays) -> None``, called after each round ≥ 1 is added to
        ``run_dir.rounds`` and before metrics.json is rewritten (the ServerApp writes
        its checkpoint there, so metrics.json never lists a round the checkpoint lacks).
    """

    def __init__(
        self,
        stats: Mapping[int, RoundStats],
        run_dir: RunDirectory,
        central_eval: Callable[[ArrayRecord], tuple[float, float | None]] | None,
        num_rounds: int,
        extra_metrics: Callable[[int], Mapping[str, Any]] | None = None,
        on_round_end: Callable[[int, ArrayRecord], None] | None = None,
    ) -> None:
        self.stats = stats
        self.run_dir = run_dir
        self.central_eval = central_eval
        self.num_rounds = num_rounds
        self.extra_metrics = extra_metrics
        self.on_round_end = on_round_end
        self._last = time.perf_counter()
        self.latest_arrays: ArrayRecord | None = None

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        self.latest_arrays = arrays
        row: dict[str, Any] = {"round": server_round}
        if server_round > 0:
            stats = self.stats.get(server_round, RoundStats())
            row.update(
                sampled=stats.sampled,
                succeeded=stats.succeeded,
                failed=stats.failed,
                dropped=stats.dropped,
                failed_nodes=list(stats.failed_nodes),
                rejected=dict(stats.rejected),
                kept_previous_model=stats.kept_previous_model,
                eval_sampled=stats.eval_sampled,
                eval_succeeded=stats.eval_succeeded,
                train_loss=stats.train_loss,
                federated_loss=stats.federated_loss,
                federated_accuracy=stats.federated_accuracy,
            )
            if stats.dp_sgd_epsilon is not None:
                row["dp_sgd_epsilon"] = stats.dp_sgd_epsilon
            if stats.dp_sgd_epsilon_by_node:  # JSON keys are strings
                row["dp_sgd_epsilon_by_node"] = {
                    str(node): eps for node, eps in sorted(stats.dp_sgd_epsilon_by_node.items())
                }
            if stats.attackers:
                row["attackers"] = stats.attackers
        record = None
        if self.central_eval is not None:
            loss, accuracy = self.central_eval(arrays)
            row.update(central_loss=loss, central_accuracy=accuracy)
            record = MetricRecord({"loss": loss, **({"accuracy": accuracy} if accuracy is not None else {})})
        if self.extra_metrics is not None:
            row.update(self.extra_metrics(server_round))
        now = time.perf_counter()
        row["seconds"] = now - self._last
        self._last = now
        # The checkpoint (which holds the rounds so far) is written before metrics.json:
        # a crash in between leaves metrics.json a round behind, never ahead of it.
        self.run_dir.rounds.append(row)
        if server_round > 0 and self.on_round_end is not None:
            try:
                self.on_round_end(server_round, arrays)
            except BaseException:
                self.run_dir.rounds.pop()  # not checkpointed: metrics.json must not claim it
                raise
        self.run_dir.write_metrics()
        log(INFO, format_round(row, self.num_rounds))
        return record


def node_status(node_id: int, stats: Mapping[int, RoundStats], connected: Collection[int] | None) -> str:
    """``ok``, ``failed in round N`` or ``lost in round N`` for one node.

    N is the last round in which the node was sent work and returned no good reply.
    A node still in ``connected`` (the SuperLink's node list at the end of the run)
    may have trained after that round, so it is only "failed"; one that is gone is
    "lost". Without ``connected`` every node that failed is reported lost.
    """
    failed_in = [r for r, s in stats.items() if node_id in s.failed_nodes]
    if not failed_in:
        return "ok"
    if connected is not None and node_id in connected:
        return f"failed in round {max(failed_in)}"
    return f"lost in round {max(failed_in)}"


def node_table(
    nodes: Mapping[int, NodeReport],
    *,
    stats: Mapping[int, RoundStats] | None = None,
    connected: Collection[int] | None = None,
) -> str:
    """A fixed-width table of every node that trained or was sent work and failed.

    Parameters
    ----------
    nodes : Mapping[int, NodeReport]
        The last training report of every node that trained (``strategy.nodes``).
    stats : Mapping[int, RoundStats], optional
        The strategy's per-round stats; nodes in their ``failed_nodes`` are listed
        too, with their status (see :func:`node_status`), even if they never trained.
    connected : Collection[int], optional
        Node IDs connected at the end of the run (``grid.get_node_ids()``).

    Returns
    -------
    str
        The table, or ``""`` when no node trained or failed.
    """
    stats = stats or {}
    failed = {n for s in stats.values() for n in s.failed_nodes}
    node_ids = sorted(set(nodes) | failed)
    if not node_ids:
        return ""
    lines = [f"{'node id':>20}  {'status':<18} {'device':<28} {'examples':>8}  {'train s':>8}"]
    for node_id in node_ids:
        status = node_status(node_id, stats, connected)
        rep = nodes.get(node_id)
        if rep is None:  # sent work, never trained: nothing reported about it
            device, examples, seconds = "-", "-", "-"
        else:
            device, examples, seconds = rep.device, str(rep.num_examples), f"{rep.train_seconds:.2f}"
        lines.append(f"{node_id:>20}  {status:<18} {device:<28} {examples:>8}  {seconds:>8}")
    return "\n".join(lines)
