"""Scale: round time and memory of all simulation processes, 100 against 10,000 virtual clients.

For each dataset (digits, Synthetic) and clients per round (10, 100), the app runs
``rounds`` rounds through ``flwr run`` on a local simulation SuperLink with a population
of 100 and of 10,000 virtual SuperNodes, one Ray actor (``client-resources-num-cpus`` =
all cores), one torch thread, E = 1, federated evaluation of the same share of clients,
no central evaluation. What changes between the two runs of a pair is only the
population, so the pair's round-time ratio is what the population costs:

- digits: ``partitioner='sampled' partition-size=14`` in both runs, so every client holds
  14 of the 1,437 training images whatever the population (docs/scaling.md);
- Synthetic(1, 1): ``synthetic-devices`` = the population, one device per client,
  generated when sampled. Device sizes are heavy-tailed (lognormal), so the sampled
  clients' work differs between the two runs: the ratio is also given per trained
  example (``train_examples`` of metrics.json).

Peak RSS and PSS are summed over every process under the SuperLink (SuperLink, SuperExec,
the simulation process, Ray, the actor), sampled once a second (``bench.sim``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

from bench.localflower import LocalFlower
from bench.sim import run_app, steady_seconds

#: Examples per digits client in both populations (1,437 training images / 100 clients).
DIGITS_PARTITION_SIZE = 14
#: Target of the issue: peak RSS of all processes, MiB.
RSS_LIMIT_MIB = 4096
#: Target of the issue: round time with 10,000 clients over that with 100.
ROUND_TIME_LIMIT = 1.2


def configs(quick: bool) -> list[dict[str, Any]]:
    """The measured configurations: (dataset, population, clients per round)."""
    if quick:
        return [{"dataset": "digits", "nodes": nodes, "per_round": 10, "rounds": 3} for nodes in (20, 200)]
    return [
        {"dataset": dataset, "nodes": nodes, "per_round": per_round, "rounds": 4}
        for dataset in ("digits", "synthetic")
        for per_round in (10, 100)
        for nodes in (100, 10_000)
    ]


def run_config(cfg: dict[str, Any], output_dir: Path) -> dict[str, Any]:
    """The app's run config for one scale configuration."""
    fraction = cfg["per_round"] / cfg["nodes"]
    out: dict[str, Any] = {
        "dataset": cfg["dataset"],
        "num-server-rounds": cfg["rounds"],
        "fraction-train": fraction,
        "fraction-evaluate": fraction,
        "min-train-nodes": cfg["per_round"],
        "min-evaluate-nodes": cfg["per_round"],
        "min-available-nodes": cfg["nodes"],
        "local-epochs": 1,
        "batch-size": 10,
        "threads-per-client": 1,
        "central-eval": False,
        "output-dir": str(output_dir),
    }
    if cfg["dataset"] == "digits":
        out.update({"partitioner": "sampled", "partition-size": DIGITS_PARTITION_SIZE})
    else:
        out.update({"synthetic-devices": cfg["nodes"], "learning-rate": 0.01})
    return out


def run_one(flower: LocalFlower, cfg: dict[str, Any], work: Path, cores: int) -> dict[str, Any]:
    name = f"scale-{cfg['dataset']}-{cfg['nodes']}n-{cfg['per_round']}pr"
    out_dir = work / "runs" / name
    sim = run_app(
        flower,
        run_config=run_config(cfg, out_dir),
        num_supernodes=cfg["nodes"],
        num_cpus_per_client=cores,
        outputs=out_dir,
    )
    if sim.metrics is None or sim.metrics.get("status") != "completed":
        tail = "\n".join(sim.text().splitlines()[-30:])
        raise RuntimeError(f"simulation {name} did not complete (rc={sim.returncode}):\n{tail}")
    rounds = [r for r in sim.metrics["rounds"] if r["round"] > 0]
    seconds = [r["seconds"] for r in rounds]
    examples = [r.get("train_examples", 0) for r in rounds]
    steady = steady_seconds(seconds)
    steady_examples = steady_seconds([float(e) for e in examples])
    return {
        **cfg,
        "name": name,
        "sim_round_seconds": seconds,
        "train_examples": examples,
        "sim_steady_s": steady,
        "steady_examples": steady_examples,
        "ms_per_example": 1000 * steady / steady_examples if steady_examples else None,
        "succeeded": [r["succeeded"] for r in rounds],
        "peak_memory": sim.peak_memory,
        "wall_s": sim.wall_s,
    }


def extractor_sweep_seconds(num_nodes: int, num_messages: int) -> dict[str, float]:
    """One sweep of Flower's simulation message extractor, timed alone (flwr 1.41).

    Builds the simulation's in-memory LinkState as ``flwr.simulation.run_simulation``
    does (``num_nodes`` registered virtual nodes, one run), pushes ``num_messages``
    messages through Flower's ``InMemoryGrid`` to distinct nodes, then runs the loop body
    of ``vce_api.add_messages_to_queue`` (``get_message_ins(node_id, limit=1)`` for every
    node) twice: the sweep that delivers the messages, and one with all of them delivered
    but still stored (until the ServerApp pulls the replies). Uses Flower's internals as
    its simulation does; pinned to flwr 1.41.
    """
    import secrets
    import time

    from flwr.app import Message, RecordDict
    from flwr.common.constant import (
        HEARTBEAT_INTERVAL_INF,
        NOOP_ACCOUNT_NAME,
        NOOP_FLWR_AID,
        SUPERLINK_NODE_ID,
    )
    from flwr.proto.task_pb2 import Task  # pylint: disable=E0611
    from flwr.server.superlink.linkstate import InMemoryLinkState, LinkStateFactory
    from flwr.server.superlink.linkstate.in_memory_linkstate import RunRecord
    from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME, NOOP_FEDERATION_ID
    from flwr.supercore.object_store import ObjectStoreFactory
    from flwr.supercore.run import Run
    from flwr.supercore.task_identity import TaskIdentity
    from flwr.superlink.federation import NoOpFederationManager
    from flwr.superlink.grid import InMemoryGrid

    factory = LinkStateFactory(FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(), ObjectStoreFactory())
    state = cast(InMemoryLinkState, factory.state())  # the simulation's state, as Flower casts it
    nodes = []
    for _ in range(num_nodes):
        key = secrets.token_bytes(32)  # no node authentication in simulation
        forever = HEARTBEAT_INTERVAL_INF
        node_id = state.create_node(NOOP_FLWR_AID, NOOP_ACCOUNT_NAME, key, heartbeat_interval=forever)
        state.acknowledge_node_heartbeat(node_id=node_id, heartbeat_interval=forever)
        nodes.append(node_id)
    run = Run.create_empty(run_id=4242)
    run.primary_task_id, run.federation_id = 4343, NOOP_FEDERATION_ID
    state.run_ids[run.run_id] = RunRecord(run=run)
    state.task_store[4343] = Task(task_id=4343, run_id=run.run_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run.run_id, SUPERLINK_NODE_ID, 1
    grid = InMemoryGrid(state_factory=factory)
    grid.set_run(run)
    grid.push_messages(
        [Message(RecordDict(), dst_node_id=nodes[i], message_type="train") for i in range(num_messages)]
    )
    out: dict[str, float] = {"nodes": num_nodes, "messages": num_messages}
    for name in ("delivering_s", "delivered_s"):
        start = time.perf_counter()
        for node_id in nodes:
            state.get_message_ins(node_id=node_id, limit=1)
        out[name] = time.perf_counter() - start
    return out


def engine_sweeps(quick: bool) -> list[dict[str, float]]:
    """:func:`extractor_sweep_seconds` at each population and clients per round measured."""
    cases = [(20, 10), (200, 10)] if quick else [(n, m) for m in (10, 100) for n in (100, 10_000)]
    return [extractor_sweep_seconds(n, m) for n, m in cases]


def run(flower: LocalFlower, work: Path, quick: bool) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    rows = []
    for cfg in configs(quick):
        try:
            rows.append(run_one(flower, cfg, work, cores))
        except Exception as exc:  # noqa: BLE001  (report what failed, measure the rest)
            rows.append({**cfg, "error": str(exc)[-2000:]})
    return {**summarize(rows), "engine_sweeps": engine_sweeps(quick)}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The rows, and each (dataset, per round) pair's largest-over-smallest population ratios."""
    pairs = []
    for dataset in sorted({r["dataset"] for r in rows}):
        for per_round in sorted({r["per_round"] for r in rows if r["dataset"] == dataset}):
            same = [r for r in rows if (r["dataset"], r["per_round"]) == (dataset, per_round)]
            ok = sorted((r for r in same if "error" not in r), key=lambda r: r["nodes"])
            if len(ok) < 2:
                continue
            small, large = ok[0], ok[-1]
            per_example = (
                large["ms_per_example"] / small["ms_per_example"]
                if large.get("ms_per_example") and small.get("ms_per_example")
                else None
            )
            pairs.append(
                {
                    "dataset": dataset,
                    "per_round": per_round,
                    "nodes": [small["nodes"], large["nodes"]],
                    "round_time_ratio": large["sim_steady_s"] / small["sim_steady_s"],
                    "per_example_ratio": per_example,
                    "rss_ratio": large["peak_memory"]["rss_mib"] / small["peak_memory"]["rss_mib"],
                    # What each extra virtual node costs per message sent, per round: Flower's
                    # extractor visits every node and checks every stored message.
                    "extra_us_per_node_message": 1e6
                    * (large["sim_steady_s"] - small["sim_steady_s"])
                    / ((large["nodes"] - small["nodes"]) * per_round),
                }
            )
    peak = max((r["peak_memory"]["rss_mib"] for r in rows if "error" not in r), default=None)
    return {
        "rows": rows,
        "pairs": pairs,
        "peak_rss_mib": peak,
        "targets": {"round_time_ratio": ROUND_TIME_LIMIT, "rss_mib": RSS_LIMIT_MIB},
    }
