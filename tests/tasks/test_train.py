import numpy as np
import pytest
import torch

from tasks.models import MnistCNN, build_model
from tasks.train import get_weights, proximal_term, set_weights, train
from tasks.train import test as evaluate_model


def test_proximal_term_is_half_mu_squared_norm_and_its_gradient_is_mu_delta() -> None:
    # Prepare: Δ = w − w_global = (3, 4) and (1,), ‖Δ‖² = 26.
    w = [torch.tensor([4.0, 6.0], requires_grad=True), torch.tensor([1.0], requires_grad=True)]
    w0 = [torch.tensor([1.0, 2.0]), torch.tensor([0.0])]

    # Execute
    term = proximal_term(w, w0, mu=0.1)
    term.backward()

    # Assert: (0.1/2)·26 = 1.3; gradient 0.1·Δ.
    assert float(term.detach()) == pytest.approx(1.3)
    np.testing.assert_allclose(w[0].grad.numpy(), [0.3, 0.4], rtol=1e-6)
    np.testing.assert_allclose(w[1].grad.numpy(), [0.1], rtol=1e-6)


def test_fedsgd_is_one_full_batch_gradient_step() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(50, 3), torch.randn(50)
    model = build_model("linreg", (3,), 0)
    before = [p.detach().clone() for p in model.parameters()]
    grads = torch.autograd.grad(torch.nn.functional.mse_loss(model(x), y), list(model.parameters()))

    result = train(model, x, y, epochs=1, batch_size=0, learning_rate=0.5)

    for p, p0, g in zip(model.parameters(), before, grads, strict=True):
        torch.testing.assert_close(p.detach(), p0 - 0.5 * g)
    assert result.num_examples == 50  # examples, not batches


def test_training_reduces_loss_and_counts_examples_not_batches() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 1, 8, 8)
    y = (x.mean(dim=(1, 2, 3)) > 0).long()
    model = build_model("digits-cnn", (1, 8, 8), 2)
    first = evaluate_model(model, x, y).loss

    result = train(model, x, y, epochs=5, batch_size=8, learning_rate=0.1)

    assert result.num_examples == 64 and evaluate_model(model, x, y).loss < first


def test_proximal_mu_keeps_weights_closer_to_the_start() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(40, 5), torch.randint(0, 3, (40,))
    drift = {}
    for mu in (0.0, 10.0):
        torch.manual_seed(1)
        model = build_model("logreg", (5,), 3)
        start = torch.cat([p.detach().flatten() for p in model.parameters()])
        train(model, x, y, epochs=20, batch_size=8, learning_rate=0.1, proximal_mu=mu, seed=3)
        drift[mu] = float((torch.cat([p.detach().flatten() for p in model.parameters()]) - start).norm())
    assert drift[10.0] < 0.5 * drift[0.0]


def test_mnist_cnn_has_the_papers_parameter_count() -> None:
    assert sum(p.numel() for p in MnistCNN().parameters()) == 1_663_370


def test_set_weights_round_trips_and_rejects_wrong_shapes() -> None:
    model = build_model("digits-cnn", (1, 8, 8), 10)
    weights = [w + 1 for w in get_weights(model)]
    set_weights(model, weights)
    for a, b in zip(get_weights(model), weights, strict=True):
        np.testing.assert_array_equal(a, b)
    weights[0] = np.zeros((2, 2), np.float32)
    with pytest.raises(ValueError, match="shape"):
        set_weights(model, weights)
