"""Secure aggregation's cost: round time and bytes per client with and without SecAgg+.

For each model (digits CNN, MNIST CNN) and each number of clients per round K (10, 50,
100; every node sampled), the real ServerApp (``server_app.app.main``) runs the same
rounds twice, side by side in this process: plain FedAvg, then FedAvg under SecAgg+
(``secure-aggregation='secagg+'``). Messages go through :class:`MeteredGrid`, which hands
each one to the real ClientApp (every mod included) in this process, as the fast tier's
``AppGrid`` does, and weighs it: every record of a message's content is serialized with
Flower's own protobuf serde (``recorddict_to_proto``, what the SuperLink stores and
forwards; the few hundred bytes of message metadata are left out), and its bytes are
counted for the node it went to or came from, by protocol stage and by kind (the model
or masked model, the SecAgg+ protocol records, everything else).

Clients run one after another in one process with one torch thread: a round's time is
the sum of the clients' local training and the protocol's client and server work, with
no transport. Ratios are taken within one run (secure over plain, same K, same model).
Round 1 also loads every node's data; the steady round is the median of rounds 2..R.

SecAgg+ neighbourhoods (Bell et al. 2020, "Secure Single-Server Aggregation with
(Poly)Logarithmic Overhead", arXiv:2006.04747): each node shares its secrets with
``k`` nodes of a ring, ``k = O(log K)``; here ``k = 2⌈log2 K⌉ + 1`` (itself and
``⌈log2 K⌉`` on each side: 9, 13, 15 for K = 10, 50, 100) and threshold ``t = ⌊k/2⌋ + 1``.
So key-share traffic is ``O(k) = O(log K)`` per client and ``O(K log K)`` in all, where
the original SecAgg (every pair, ``k = K``) is ``O(K)`` per client.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.common.serde import recorddict_to_proto
from flwr.supercore.task_identity import TaskIdentity

from bench.data import random_images_npz
from tasks import wire

EXAMPLES_PER_CLIENT = 100  # 90 train + 10 held out (val-fraction 0.1), as bench.overhead
#: (model, data kind, rounds) of the full run; rounds 2..R are the steady rounds.
MODELS = (("digits-cnn", "digits", 3), ("mnist-cnn", "mnist", 2))
CLIENTS_PER_ROUND = (10, 50, 100)


def neighbourhood(clients: int) -> tuple[int, int]:
    """SecAgg+'s ``(num-shares, threshold)`` for K ``clients`` a round: ``2⌈log2 K⌉ + 1``, ``⌊k/2⌋ + 1``."""
    k = 2 * math.ceil(math.log2(max(clients, 2))) + 1
    return k, k // 2 + 1


def record_kind(name: str) -> str:
    """``model`` (the model or the masked model), ``protocol`` (SecAgg+'s records) or ``other``."""
    if name in (wire.ARRAYS, wire.SECAGG_MASKED):
        return "model"
    if name == wire.SECAGG_CONFIGS:
        return "protocol"
    return "other"


def stage_of(content: RecordDict) -> str:
    """The SecAgg+ stage a message belongs to, ``train`` outside SecAgg+."""
    configs = content.config_records.get(wire.SECAGG_CONFIGS)
    stage = None if configs is None else configs.get(wire.SECAGG_STAGE)
    return stage if isinstance(stage, str) else "train"


def weigh(content: RecordDict) -> dict[str, int]:
    """Serialized bytes of each kind of record in ``content`` (Flower's protobuf serde)."""
    out: dict[str, int] = defaultdict(int)
    for name, record in content.items():
        out[record_kind(name)] += recorddict_to_proto(RecordDict({name: record})).ByteSize()
    return dict(out)


class MeteredGrid:
    """A Grid that runs the real ClientApp in this process and counts every message's bytes.

    One ``Context`` per node (partition ``i`` of ``num_nodes``, state kept across rounds),
    as the fast tier's ``AppGrid``; a ClientApp exception becomes an error reply, as
    Flower's runtime makes it. ``bytes[(node, direction, stage, kind)]`` accumulates.
    """

    def __init__(self, num_nodes: int, run_config: dict[str, Any], run_id: int) -> None:
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
        self.node_ids = [1_000_003 * (i + 1) for i in range(num_nodes)]
        self.contexts = {
            node: Context(
                run_id=run_id,
                node_id=node,
                node_config={wire.PARTITION_ID: i, wire.NUM_PARTITIONS: num_nodes},
                state=RecordDict(),
                run_config=dict(run_config),
            )
            for i, node in enumerate(self.node_ids)
        }
        self.bytes: dict[tuple[int, str, str, str], int] = defaultdict(int)
        self._pending: list[Message] = []

    def get_node_ids(self) -> list[int]:
        return list(self.node_ids)

    def _count(self, node: int, direction: str, stage: str, content: RecordDict) -> None:
        for kind, size in weigh(content).items():
            self.bytes[(node, direction, stage, kind)] += size

    def send_and_receive(self, messages: Iterable[Message], timeout: float | None = None) -> list[Message]:
        from client_app.app import app as client_app

        replies = []
        for msg in messages:
            # What a Grid does when it pushes a message: give it an id (replies are matched on it).
            msg.metadata.__dict__["_message_id"] = str(uuid.uuid4())
            node = msg.metadata.dst_node_id
            stage = stage_of(msg.content)
            self._count(node, "down", stage, msg.content)
            try:
                reply = client_app(msg, self.contexts[node])
            except Exception as exc:  # what Flower's runtime does with a ClientApp exception
                reply = Message(Error(code=0, reason=f"{type(exc).__name__}: {exc}"), reply_to=msg)
            if not reply.has_error():
                self._count(node, "up", stage, reply.content)
            replies.append(reply)
        return replies

    # The round driver pushes and pulls (strategies.core.deadline.send_and_receive_within):
    # a push delivers at once, in this process, and the next pull returns every reply.
    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        messages = list(messages)
        self._pending.extend(self.send_and_receive(messages))
        return [m.metadata.message_id for m in messages]

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        wanted = set(message_ids)
        replies = [r for r in self._pending if r.metadata.reply_to_message_id in wanted]
        self._pending = [r for r in self._pending if r.metadata.reply_to_message_id not in wanted]
        return replies

    def per_client(self, rounds: int) -> dict[str, Any]:
        """Mean bytes per client and round: down, up, and by stage and kind."""
        nodes, totals = len(self.node_ids), defaultdict(float)
        by_stage: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for (_, direction, stage, kind), size in self.bytes.items():
            share = size / nodes / rounds
            totals[direction] += share
            totals[f"{direction}_{kind}"] += share
            by_stage[stage][direction] += share
        return {**totals, "by_stage": {s: dict(d) for s, d in by_stage.items()}}


def configs(quick: bool) -> list[dict[str, Any]]:
    """The measured (model, clients per round) configurations."""
    if quick:
        return [{"model": "digits-cnn", "data": "digits", "clients": 10, "rounds": 2}]
    return [
        {"model": model, "data": data, "clients": k, "rounds": rounds}
        for model, data, rounds in MODELS
        for k in CLIENTS_PER_ROUND
    ]


def run_config(cfg: dict[str, Any], dataset: Path, out: Path, secure: bool) -> dict[str, Any]:
    k = cfg["clients"]
    config: dict[str, Any] = {
        "dataset": str(dataset),
        "model": cfg["model"],
        "num-server-rounds": cfg["rounds"],
        "fraction-train": 1.0,
        "fraction-evaluate": 0.0,
        "min-available-nodes": k,
        "min-train-nodes": k,
        "local-epochs": 1,
        "batch-size": 10,
        "threads-per-client": 1,
        "central-eval": False,
        "round-timeout": 3600.0,
        "output-dir": str(out),
    }
    if secure:
        shares, threshold = neighbourhood(k)
        config |= {
            "secure-aggregation": "secagg+",
            "secagg-num-shares": shares,
            "secagg-reconstruction-threshold": threshold,
        }
    return config


def run_one(cfg: dict[str, Any], work: Path, secure: bool, run_id: int) -> dict[str, Any]:
    """One ServerApp run in this process; its round times, bytes per client and SecAgg+ counts."""
    from server_app.app import main

    k = cfg["clients"]
    name = f"{cfg['model']}-{k}-{'secagg' if secure else 'plain'}"
    dataset = random_images_npz(work / "data", cfg["data"], k * EXAMPLES_PER_CLIENT)
    out = work / "runs" / name
    config = run_config(cfg, dataset, out, secure)
    grid = MeteredGrid(k, config, run_id)
    context = Context(run_id=run_id, node_id=0, node_config={}, state=RecordDict(), run_config=config)
    flwr_logger = logging.getLogger("flwr")
    level = flwr_logger.level
    flwr_logger.setLevel(logging.WARNING)  # the per-round INFO lines of 100 clients would drown the report
    started = time.perf_counter()
    try:
        main(grid, context)  # type: ignore[arg-type]  # a Grid by duck typing, as the tests' AppGrid
    finally:
        flwr_logger.setLevel(level)
    wall = time.perf_counter() - started
    (metrics_file,) = out.glob("*/metrics.json")
    metrics = json.loads(metrics_file.read_text())
    rounds = [r for r in metrics["rounds"] if r["round"] > 0]
    seconds = [float(r["seconds"]) for r in rounds]
    result: dict[str, Any] = {
        "name": name,
        "secure": secure,
        "status": metrics["status"],
        "round_seconds": seconds,
        "steady_s": float(statistics.median(seconds[1:] or seconds)),
        "wall_s": wall,
        "succeeded": [r["succeeded"] for r in rounds],
        "kept_previous_model": sum(bool(r["kept_previous_model"]) for r in rounds),
        "bytes_per_client": grid.per_client(len(rounds)),
    }
    if secure:
        result["num_shares"], result["threshold"] = neighbourhood(k)
        result["survivors"] = [r.get("secagg_survivors") for r in rounds]
    return result


def run(work: Path, quick: bool) -> dict[str, Any]:
    """Every configuration, plain then SecAgg+ side by side; the section of ``results.json``."""
    rows = []
    for i, cfg in enumerate(configs(quick)):
        pair = {}
        for secure in (False, True):
            pair["secagg" if secure else "plain"] = run_one(cfg, work, secure, run_id=20_000 + 2 * i + secure)
        plain, secure_run = pair["plain"], pair["secagg"]
        rows.append(
            {
                **cfg,
                "plain": plain,
                "secagg": secure_run,
                "time_ratio": secure_run["steady_s"] / plain["steady_s"],
                "down_ratio": secure_run["bytes_per_client"]["down"] / plain["bytes_per_client"]["down"],
                "up_ratio": secure_run["bytes_per_client"]["up"] / plain["bytes_per_client"]["up"],
            }
        )
        print(
            f"bench.secagg: {cfg['model']} K={cfg['clients']}: time ×{rows[-1]['time_ratio']:.2f}, "
            f"bytes down ×{rows[-1]['down_ratio']:.2f} up ×{rows[-1]['up_ratio']:.2f}",
            flush=True,
        )
    return {"rows": rows, "examples_per_client": EXAMPLES_PER_CLIENT}
