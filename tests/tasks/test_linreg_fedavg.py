"""FedAvg on linear regression reaches the closed-form least-squares optimum."""

import numpy as np
import torch

from client_app.client import TorchClient
from strategies.numeric.aggregate import weighted_average
from tasks.data import least_squares, linreg_arrays
from tasks.loading import ClientData
from tasks.models import build_model
from tasks.partition import partition_indices


def test_fedavg_with_four_iid_clients_reaches_least_squares_within_1e_3() -> None:
    # Prepare: 4 IID clients over 400 examples; FedSGD-style full-batch local steps.
    x, y, _, _ = linreg_arrays(seed=0)
    parts = partition_indices(np.zeros(len(y), np.int64), partitioner="iid", num_partitions=4, seed=0)
    torch.manual_seed(0)
    clients = [
        TorchClient(
            build_model("linreg", (x.shape[1],), 0), ClientData(x[p], y[p], x[p], y[p]), torch.device("cpu")
        )
        for p in parts
    ]
    weights = clients[0].get_parameters({})
    config = {"local-epochs": 1, "batch-size": 0, "learning-rate": 0.3, "momentum": 0.0}

    # Execute: 200 rounds of FedAvg through the NumPyClient interface.
    for rnd in range(200):
        results = [c.fit(weights, {**config, "server-round": rnd}) for c in clients]
        weights = weighted_average([r[0] for r in results], [r[1] for r in results])

    # Assert
    w_star, b_star = least_squares(x, y)
    np.testing.assert_allclose(weights[0].ravel(), w_star, atol=1e-3)
    assert abs(float(weights[1][0]) - b_star) < 1e-3
