"""The ServerApp: read the run config once, build model and strategy, run, write outputs."""

from __future__ import annotations

from collections.abc import Mapping
from logging import ERROR, INFO, WARNING

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.app.typing import ConfigRecordValues
from flwr.serverapp import Grid, ServerApp
from flwr.supercore import log

from harness.attacks import choose_attacked
from harness.dropout import dropout_problem
from server_app.checkpoint import (
    Checkpoint,
    check_resumable,
    load_checkpoint,
    restore_rng_states,
    save_checkpoint,
)
from server_app.plots import plot_curves
from server_app.reporting import RoundReporter, node_table
from server_app.run_dir import RunDirectory, write_json_atomic
from server_app.tracking import TrackingConfig, open_tracking, require_libraries
from strategies.algorithms.fedavg import NodeReport
from strategies.core.control import StopTraining
from strategies.core.protocol import EdgeStrategy, require_edge_strategy
from strategies.core.records import from_layers, to_layers
from strategies.core.registry import build_strategy, get_spec
from tasks import wire
from tasks.config import AppConfig, ConfigError
from tasks.data import DataBundle
from tasks.loading import dataset_for
from tasks.models import build_model, check_model_input
from tasks.train import get_weights, set_weights, test

app = ServerApp()


def prepare(cfg: AppConfig) -> tuple[DataBundle, str, torch.nn.Module]:
    """Load the dataset and build the initial model, failing fast on bad config."""
    get_spec(cfg.strategy)
    problem = dropout_problem(cfg.secagg_drop_after_share_keys, cfg.secure_aggregation)
    if problem is not None:
        raise ConfigError(problem)
    bundle = dataset_for(cfg)
    model_name = cfg.resolved_model(bundle.input_shape)
    try:
        check_model_input(model_name, bundle.input_shape)
    except ValueError as exc:
        raise ConfigError(f"run config: {exc}") from exc
    if bundle.num_classes == 0 and model_name != "linreg":
        raise ConfigError(f"run config: dataset={cfg.dataset!r} is a regression task; use model='linreg'")
    torch.manual_seed(cfg.seed)  # same seed, same initial model
    return bundle, model_name, build_model(model_name, bundle.input_shape, bundle.num_classes)


def client_configs(cfg: AppConfig, model_name: str, num_classes: int) -> tuple[ConfigRecord, ConfigRecord]:
    """What clients need each round: the server owns every algorithm parameter.

    The ClientApp reads its training, DP-SGD, attack and slow-down settings from this
    train config only (never from its own run config), so the server's run config is
    the one that counts. Optional features add their keys only when they are on, so a
    plain run's messages carry only the training settings. Strategies and wrappers add
    their own keys on top (``proximal-mu``, ``dp-clip-norm``, ``compression``, ...).
    """
    model: dict[str, ConfigRecordValues] = {wire.MODEL: model_name, wire.NUM_CLASSES: num_classes}
    train = ConfigRecord(
        {
            **model,
            wire.LOCAL_EPOCHS: cfg.local_epochs,
            wire.BATCH_SIZE: cfg.batch_size,
            wire.LEARNING_RATE: cfg.learning_rate,
            wire.MOMENTUM: cfg.momentum,
            wire.WEIGHT_DECAY: cfg.weight_decay,
        }
    )
    if cfg.device_slowdown != "none":  # simulated slow devices (harness/slowdown.py)
        train.update(
            {
                wire.DEVICE_SLOWDOWN: cfg.device_slowdown,
                wire.DEVICE_SLOWDOWN_MAX: cfg.device_slowdown_max,
                wire.DEVICE_SLOWDOWN_SIGMA: cfg.device_slowdown_sigma,
                wire.DEVICE_SLOWDOWN_SEED: cfg.seed,
            }
        )
    if cfg.dp_sgd_noise_multiplier > 0:  # sample-level DP-SGD on the client (client_app/dpsgd.py)
        train.update(
            {
                wire.DP_SGD_NOISE_MULTIPLIER: cfg.dp_sgd_noise_multiplier,
                wire.DP_SGD_MAX_GRAD_NORM: cfg.dp_sgd_max_grad_norm,
                wire.DP_SGD_DELTA: cfg.dp_sgd_delta,
                wire.DP_SECURE_NOISE: cfg.dp_secure_noise,
            }
        )
    if cfg.attack != "none":  # simulated Byzantine clients (harness/client_attack.py)
        train.update(
            {
                wire.ATTACK: cfg.attack,
                wire.ATTACK_FRACTION: cfg.attack_fraction,
                wire.ATTACK_SCALE: cfg.attack_scale,
                wire.SEED: cfg.seed,
            }
        )
    if cfg.secagg_drop_after_share_keys > 0:  # simulated SecAgg+ dropouts (harness/dropout.py)
        train.update(
            {wire.SECAGG_DROP_AFTER_SHARE_KEYS: cfg.secagg_drop_after_share_keys, wire.SEED: cfg.seed}
        )
    return train, ConfigRecord(model)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run federated training as configured in ``[tool.flwr.app.config]``."""
    cfg = AppConfig.from_run_config(context.run_config)
    trackers = cfg.section(TrackingConfig).backends
    require_libraries(trackers)  # a missing tracking library fails here, before any round
    checkpoint = load_checkpoint(cfg.resume) if cfg.resume else None
    bundle, model_name, model = prepare(cfg)
    try:  # the ServerApp calls a strategy only through the EdgeStrategy protocol
        strategy = require_edge_strategy(build_strategy(cfg), cfg.strategy)
    except TypeError as exc:
        raise ConfigError(f"run config: {exc}") from exc
    names = list(model.state_dict().keys())
    initial, start_round = get_weights(model), 1
    if checkpoint is not None:
        initial, start_round = resume_from(checkpoint, cfg, strategy, model_name, names, initial)
    run_dir = RunDirectory.create(cfg.output_dir, cfg.strategy, cfg.dataset)
    resumed = {} if checkpoint is None else {"resumed-from": str(checkpoint.path.parent)}
    resolved_config = {
        **cfg.to_dict(),
        "resolved-model": model_name,
        "resolved-partitioner": cfg.resolved_partitioner,
        **resumed,
    }
    run_dir.write_config(resolved_config)
    if checkpoint is not None:  # the metrics of the rounds already run come along
        run_dir.rounds = [dict(row) for row in checkpoint.rounds]
        run_dir.notes.append(f"resumed after round {checkpoint.round} from {checkpoint.path}")
        run_dir.write_metrics()
    log(
        INFO,
        "edgebloom: strategy=%s dataset=%s model=%s; outputs -> %s",
        cfg.strategy,
        cfg.dataset,
        model_name,
        run_dir.path,
    )

    x_test = torch.as_tensor(bundle.x_test)
    y_test = torch.as_tensor(bundle.y_test)

    def central_eval(arrays: ArrayRecord) -> tuple[float, float | None]:
        set_weights(model, to_layers(arrays, names))
        result = test(model, x_test, y_test)
        return result.loss, result.accuracy

    def write_checkpoint(server_round: int, arrays: ArrayRecord) -> None:
        if cfg.attack != "none":
            record_attackers(run_dir, cfg, strategy.nodes)
        save_checkpoint(
            run_dir.path,
            server_round=server_round,
            strategy=cfg.strategy,
            model=model_name,
            names=names,
            arrays=to_layers(arrays, names),
            strategy_state=strategy.state_dict(),
            rounds=run_dir.rounds,
            config=cfg.to_dict(),
        )

    tracking = open_tracking(  # a resumed run's earlier rounds are logged too
        trackers,
        run_dir=run_dir.path,
        output_dir=run_dir.path.parent,
        params=resolved_config,
        rounds=run_dir.rounds,
    )
    reporter = RoundReporter(
        strategy.stats,
        run_dir,
        central_eval if cfg.central_eval else None,
        cfg.num_server_rounds,
        # Strategies may add per-round metrics (a DP strategy: ε, clipping norm).
        extra_metrics=strategy.round_metrics,
        on_round_end=write_checkpoint,
        tracking=tracking,
    )
    reporter.latest_arrays = from_layers(names, initial)
    train_config, eval_config = client_configs(cfg, model_name, bundle.num_classes)
    result_arrays = None
    try:
        result = strategy.start(
            grid=grid,
            initial_arrays=from_layers(names, initial),
            num_rounds=cfg.num_server_rounds,
            timeout=cfg.round_timeout,
            train_config=train_config,
            evaluate_config=eval_config,
            evaluate_fn=reporter,
            start_round=start_round,
        )
        result_arrays = result.arrays
        run_dir.status = "completed"
    except StopTraining as stop:
        run_dir.status = "stopped"
        run_dir.notes.append(str(stop))
        log(INFO, "edgebloom: stopped early: %s", stop)
    except BaseException as exc:
        run_dir.fail(exc)
        reporter.finish(run_dir.status, None)
        log(ERROR, "edgebloom: run failed (%s); partial results kept in %s", exc, run_dir.path)
        raise
    # result.arrays is None if no round aggregated; the reporter saw the last global model.
    final = to_layers(result_arrays or reporter.latest_arrays, names)
    model_path = run_dir.save_model(names, [np.array(a) for a in final])
    run_dir.write_metrics()
    reporter.finish(run_dir.status, model_path)
    plot_curves(run_dir.rounds, run_dir.path / "curves.png", f"{cfg.strategy} on {cfg.dataset}")
    # Nodes sent work that never answered are listed too, marked "lost in round N".
    table = node_table(strategy.nodes, stats=strategy.stats, connected=set(grid.get_node_ids()))
    if table:
        log(INFO, "Nodes (last training report):\n%s", table)
    log(INFO, "edgebloom: run %s; outputs in %s", run_dir.status, run_dir.path)


def record_attackers(run_dir: RunDirectory, cfg: AppConfig, nodes: Mapping[int, NodeReport]) -> None:
    """Write ``attack.json``: the attack, the partitions it chose and the nodes seen attacking."""
    partitions = {n: r.partition for n, r in nodes.items() if r.partition is not None}
    num_partitions = next((r.num_partitions for r in nodes.values() if r.num_partitions), None)
    payload = {
        "attack": cfg.attack,
        "attack-fraction": cfg.attack_fraction,
        "attack-scale": cfg.attack_scale,
        "seed": cfg.seed,
        "attacker-nodes": {str(n): partitions[n] for n, r in sorted(nodes.items()) if r.attacker},
        "honest-nodes": {
            str(n): partitions[n] for n, r in sorted(nodes.items()) if not r.attacker and n in partitions
        },
    }
    if num_partitions is not None:
        payload["attacked-partitions"] = choose_attacked(
            int(num_partitions), fraction=cfg.attack_fraction, seed=cfg.seed
        )
    write_json_atomic(run_dir.path / "attack.json", payload)


def resume_from(
    checkpoint: Checkpoint,
    cfg: AppConfig,
    strategy: EdgeStrategy,
    model_name: str,
    names: list[str],
    initial: list[np.ndarray],
) -> tuple[list[np.ndarray], int]:
    """Check ``checkpoint`` against this run, restore the strategy and RNGs; (arrays, first round)."""
    changed = check_resumable(
        checkpoint,
        strategy=cfg.strategy,
        model=model_name,
        names=names,
        arrays=initial,
        num_rounds=cfg.num_server_rounds,
        config=cfg.to_dict(),
    )
    if changed:
        log(
            WARNING,
            "edgebloom: resuming with run-config values that differ from the checkpointed run's: %s; "
            "the result will not equal an uninterrupted run's",
            ", ".join(changed),
        )
    try:
        strategy.load_state_dict(checkpoint.strategy_state)
        # State that agrees with itself but not with the model (an optimizer's moments of
        # other shapes) would otherwise fail only after a round of training.
        problem = strategy.check_state(names, initial)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        problem = f"{type(exc).__name__}: {exc}"
    if problem is not None:
        raise ConfigError(
            f"run config: resume={cfg.resume!r}: the strategy state in {checkpoint.path} does not fit "
            f"this {cfg.strategy!r} strategy and model ({problem}). Resume with the checkpointed run's "
            "settings or start a fresh run."
        )
    restore_rng_states(checkpoint.rng)  # validated by load_checkpoint
    log(INFO, "edgebloom: resuming after round %d from %s", checkpoint.round, checkpoint.path)
    return checkpoint.arrays, checkpoint.round + 1
