"""The ServerApp: read the run config once, build model and strategy, run, write outputs."""

from __future__ import annotations

from logging import ERROR, INFO

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.supercore import log

from server_app.plots import plot_curves
from server_app.reporting import RoundReporter, node_table
from server_app.run_dir import RunDirectory
from strategies.control import StopTraining
from strategies.records import from_layers, to_layers
from strategies.registry import build_strategy, get_spec
from tasks.config import AppConfig, ConfigError
from tasks.data import DataBundle
from tasks.loading import dataset_for
from tasks.models import build_model, check_model_input
from tasks.train import get_weights, set_weights, test

app = ServerApp()


def prepare(cfg: AppConfig) -> tuple[DataBundle, str, torch.nn.Module]:
    """Load the dataset and build the initial model, failing fast on bad config."""
    get_spec(cfg.strategy)
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
    """What clients need each round: the server owns every algorithm parameter."""
    model = {"model": model_name, "num-classes": num_classes}
    train = ConfigRecord(
        {
            **model,
            "local-epochs": cfg.local_epochs,
            "batch-size": cfg.batch_size,
            "learning-rate": cfg.learning_rate,
            "momentum": cfg.momentum,
            "weight-decay": cfg.weight_decay,
        }
    )
    return train, ConfigRecord(model)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run federated training as configured in ``[tool.flwr.app.config]``."""
    cfg = AppConfig.from_run_config(context.run_config)
    bundle, model_name, model = prepare(cfg)
    strategy = build_strategy(cfg)
    run_dir = RunDirectory.create(cfg.output_dir, cfg.strategy, cfg.dataset)
    run_dir.write_config(
        {**cfg.to_dict(), "resolved-model": model_name, "resolved-partitioner": cfg.resolved_partitioner}
    )
    log(
        INFO,
        "edgebloom: strategy=%s dataset=%s model=%s; outputs -> %s",
        cfg.strategy,
        cfg.dataset,
        model_name,
        run_dir.path,
    )

    names = list(model.state_dict().keys())
    x_test = torch.as_tensor(bundle.x_test)
    y_test = torch.as_tensor(bundle.y_test)

    def central_eval(arrays: ArrayRecord) -> tuple[float, float | None]:
        set_weights(model, to_layers(arrays, names))
        result = test(model, x_test, y_test)
        return result.loss, result.accuracy

    reporter = RoundReporter(
        strategy.stats,
        run_dir,
        central_eval if cfg.central_eval else None,
        cfg.num_server_rounds,
        # Strategies may add per-round metrics (a DP strategy: ε, clipping norm).
        extra_metrics=getattr(strategy, "round_metrics", None),
    )
    train_config, eval_config = client_configs(cfg, model_name, bundle.num_classes)
    result_arrays = None
    try:
        result = strategy.start(
            grid=grid,
            initial_arrays=from_layers(names, get_weights(model)),
            num_rounds=cfg.num_server_rounds,
            timeout=cfg.round_timeout,
            train_config=train_config,
            evaluate_config=eval_config,
            evaluate_fn=reporter,
        )
        result_arrays = result.arrays
        run_dir.status = "completed"
    except StopTraining as stop:
        run_dir.status = "stopped"
        run_dir.notes.append(str(stop))
        log(INFO, "edgebloom: stopped early: %s", stop)
    except BaseException as exc:
        run_dir.fail(exc)
        log(ERROR, "edgebloom: run failed (%s); partial results kept in %s", exc, run_dir.path)
        raise
    # result.arrays is None if no round aggregated; the reporter saw the last global model.
    final = to_layers(
        result_arrays or reporter.latest_arrays or from_layers(names, get_weights(model)), names
    )
    run_dir.save_model(names, [np.array(a) for a in final])
    run_dir.write_metrics()
    plot_curves(run_dir.rounds, run_dir.path / "curves.png", f"{cfg.strategy} on {cfg.dataset}")
    if strategy.nodes:
        log(INFO, "Nodes (last training report):\n%s", node_table(strategy.nodes))
    log(INFO, "edgebloom: run %s; outputs in %s", run_dir.status, run_dir.path)
