"""DP-FedAvg around strategies other than FedAvg/FedProx, and with compression.

Supported: a server optimizer inside DP (its step acts on the released noisy model:
post-processing) and compression outside DP (updates are decoded before DP clips them).
Refused before training, naming the reason: robust rules, FedBuff, compression inside DP
and stragglers.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord

from strategies.algorithms.fedavg import FedAvg
from strategies.algorithms.fedavgm import FedAvgM
from strategies.algorithms.fedbuff import FedBuff
from strategies.algorithms.fedprox import FedProx
from strategies.algorithms.median import FedMedian
from strategies.core.records import from_layers, to_layers
from strategies.numeric.compression import COMPRESSED_KEY
from strategies.wrappers.compressed import MALFORMED_COMPRESSED, CompressedStrategy
from strategies.wrappers.dp_config import DPConfig
from strategies.wrappers.dp_fedavg import DPFedAvg
from tests.conftest import FakeGrid, make_reply
from tests.strategies.wrappers.test_compressed import NAMES, client_reply, configure, perturbed

NODES = [11, 22, 33]


def _dp(inner: object) -> DPFedAvg:
    """Every node sampled (q = 1 of N = 3), w_k = 1, noise negligible, clipping inactive."""
    return DPFedAvg(
        inner,  # type: ignore[arg-type]
        DPConfig(
            noise_multiplier=1e-9,
            clip_norm=1e3,
            sampling_rate=1.0,
            delta=1e-5,
            sampling="fixed-size",
            population=len(NODES),
            weight_cap=1.0,
            noise_seed=0,
        ),
    )


def test_dp_around_a_server_optimizer_applies_its_step_to_the_noisy_model() -> None:
    # Prepare: FedAvgM with eta = 0.5, beta = 0: w <- w + 0.5 * (DP's mean update).
    strategy = _dp(FedAvgM(server_learning_rate=0.5, momentum=0.0, min_available_nodes=1, seed=1))
    w = np.zeros(4, np.float32)
    messages = list(strategy.configure_train(1, from_layers(["w"], [w]), ConfigRecord(), FakeGrid(NODES)))
    updates = {11: 1.0, 22: 2.0, 33: 3.0}
    replies = [
        make_reply(
            m.metadata.dst_node_id,
            {"w": np.full(4, updates[m.metadata.dst_node_id], np.float32)},
            {"num-examples": 10},
        )
        for m in messages
    ]

    # Execute
    arrays, _ = strategy.aggregate_train(1, replies)

    # Assert: half of the mean update 2.0, as the optimizer steps (not DP's model itself).
    np.testing.assert_allclose(to_layers(arrays)[0], np.full(4, 1.0), atol=1e-6)
    assert strategy.stats[1].succeeded == 3


def test_dp_around_fedprox_sends_the_proximal_term_through_the_public_hook() -> None:
    # Prepare
    strategy = _dp(FedProx(proximal_mu=0.3, min_available_nodes=1))

    # Execute
    arrays = from_layers(["w"], [np.zeros(2)])
    messages = list(strategy.configure_train(1, arrays, ConfigRecord(), FakeGrid(NODES)))

    # Assert
    assert {m.content["config"]["proximal-mu"] for m in messages} == {0.3}
    assert {m.content["config"]["server-round"] for m in messages} == {1}


@pytest.mark.parametrize(
    ("inner", "reason"),
    [
        (FedMedian(num_byzantine=0, min_available_nodes=1), "robust rule"),
        (FedBuff(min_available_nodes=1), "asynchronous"),
        (CompressedStrategy(FedAvg(min_available_nodes=1), scheme="int8"), "wrap compression around DP"),
        (FedAvg(min_available_nodes=1, straggler_fraction=0.5, local_epochs=2), "straggler-fraction=0.5"),
    ],
    ids=["median", "fedbuff", "compression-inside", "stragglers"],
)
def test_dp_refuses_what_it_cannot_wrap_soundly_before_training(inner: object, reason: str) -> None:
    # Execute
    with pytest.raises(ValueError) as excinfo:
        _dp(inner)

    # Assert
    assert f"DP-FedAvg cannot wrap {type(inner).__name__}" in str(excinfo.value)
    assert reason in str(excinfo.value)


def test_compression_around_dp_decodes_before_dp_and_counts_malformed_as_rejected() -> None:
    # Prepare
    strategy = CompressedStrategy(_dp(FedAvg(min_available_nodes=1, seed=1)), scheme="int8")
    messages = configure(strategy, NODES)
    locals_ = {m.metadata.dst_node_id: perturbed(0.01, seed=m.metadata.dst_node_id) for m in messages}
    replies = [client_reply(m, locals_[m.metadata.dst_node_id]) for m in messages]
    # The last node's payload is corrupted: a scale of the wrong dtype.
    bad = replies[-1]
    record = bad.content[COMPRESSED_KEY]
    key = next(k for k in record if "scale" in k)
    record[key] = type(record[key])(np.array(["x"]))

    # Execute
    arrays, _ = strategy.aggregate_train(1, replies)

    # Assert: the mean of the two good (decoded) models, within int8 error; one rejection.
    good = [locals_[m.metadata.dst_node_id] for m in messages[:-1]]
    for i, name in enumerate(NAMES):
        expected = np.mean([g[name] for g in good], axis=0)
        np.testing.assert_allclose(to_layers(arrays)[i], expected, atol=0.02)
    stats = strategy.stats[1]
    assert stats.rejected == {MALFORMED_COMPRESSED: 1}
    assert stats.failed == 0 and stats.failed_nodes == []
    assert stats.succeeded == 2
    assert strategy.round_metrics(1)["epsilon"] is not None  # DP's metrics come through
    assert strategy.round_metrics(1)["bytes_up"] > 0
