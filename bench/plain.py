"""The same federated rounds in one plain PyTorch process, with no Flower: the reference.

Each round samples the same number of partitions with the app's seeded sampler, and for
each one does what the app's client does (copy the global weights into the model, train
with ``tasks.train.train``, copy the weights out), then the example-weighted average
(``strategies.numeric.aggregate.weighted_average``, NumPy only) and the weighted evaluation on
sampled partitions with ``tasks.train.test``. Data and model are built once per partition
and reused, as the app's workers do. Run as ``python -m bench.plain '<json>'`` so that it
is a fresh process with its own torch thread setting; it prints one JSON line.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import numpy as np
import torch

from strategies.core.sampling import EVALUATE, TRAIN, round_rng, sample_ids, sample_size
from strategies.numeric.aggregate import weighted_average
from tasks.config import AppConfig
from tasks.loading import client_data, dataset_for
from tasks.models import build_model
from tasks.train import get_weights, set_weights, test, train


def run_plain(run_config: dict[str, Any], num_nodes: int, rounds: int, threads: int) -> dict[str, Any]:
    """Per-round seconds of ``rounds`` plain FedAvg rounds (train + federated evaluation)."""
    torch.set_num_threads(threads)
    cfg = AppConfig.from_run_config(run_config)
    start = time.perf_counter()
    bundle = dataset_for(cfg)
    model = build_model(cfg.resolved_model(bundle.input_shape), bundle.input_shape, bundle.num_classes)
    torch.manual_seed(cfg.seed)
    global_weights = get_weights(model)
    cache: dict[int, tuple[torch.Tensor, ...]] = {}

    def tensors(pid: int) -> tuple[torch.Tensor, ...]:
        if pid not in cache:
            d = client_data(cfg, pid, num_nodes)
            x_val, y_val = (d.x_val, d.y_val) if len(d.x_val) else (d.x_train, d.y_train)
            cache[pid] = tuple(torch.as_tensor(a) for a in (d.x_train, d.y_train, x_val, y_val))
        return cache[pid]

    setup = time.perf_counter() - start
    nodes = list(range(num_nodes))
    seconds, train_seconds, cpu_seconds, losses, accuracies = [], [], [], [], []
    for rnd in range(1, rounds + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        k = sample_size(num_nodes, cfg.fraction_train, cfg.min_train_nodes)
        updates, weights = [], []
        for pid in sample_ids(nodes, k, round_rng(cfg.seed, rnd, TRAIN)):
            x, y, _, _ = tensors(pid)
            set_weights(model, global_weights)
            result = train(
                model,
                x,
                y,
                epochs=cfg.local_epochs,
                batch_size=cfg.batch_size,
                learning_rate=cfg.learning_rate,
                momentum=cfg.momentum,
                weight_decay=cfg.weight_decay,
                proximal_mu=cfg.proximal_mu,
                seed=(cfg.seed + pid) * 100_003 + rnd,
            )
            updates.append(get_weights(model))
            weights.append(result.num_examples)
        global_weights = weighted_average(updates, weights)
        train_seconds.append(time.perf_counter() - t0)
        if cfg.fraction_evaluate > 0:
            k = sample_size(num_nodes, cfg.fraction_evaluate, cfg.min_evaluate_nodes)
            loss_sum = acc_sum = count = 0.0
            for pid in sample_ids(nodes, k, round_rng(cfg.seed, rnd, EVALUATE)):
                _, _, xv, yv = tensors(pid)
                set_weights(model, global_weights)
                res = test(model, xv, yv)
                loss_sum += res.loss * res.num_examples
                acc_sum += (res.accuracy or 0.0) * res.num_examples
                count += res.num_examples
            losses.append(loss_sum / count)
            accuracies.append(acc_sum / count)
        seconds.append(time.perf_counter() - t0)
        cpu_seconds.append(time.process_time() - c0)
    return {
        "round_seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "train_seconds": train_seconds,
        "setup_seconds": setup,
        "federated_loss": losses,
        "federated_accuracy": accuracies,
        "torch_threads": torch.get_num_threads(),
        "params": int(sum(np.prod(w.shape) for w in global_weights)),
    }


def main() -> None:
    args = json.loads(sys.argv[1])
    out = run_plain(args["run_config"], args["num_nodes"], args["rounds"], args["threads"])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
