"""Check the CUDA path of the framework-free training code (run on a GPU machine).

Trains the digits CNN on the device ``pick_device()`` chooses and on the CPU, with
the same seed, and prints device kinds, accuracies and the largest weight difference.
Then one round of DP-SGD (Opacus) on that device, plain and in ``secure_mode``
(``dp-secure-noise``: the noise generator must live on the model's device while the
Poisson sampler draws on the CPU). Usage: ``python scripts/gpu_check.py`` (needs torch,
numpy, scikit-learn and opacus; no Flower).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.data import load_dataset  # noqa: E402
from tasks.models import build_model  # noqa: E402
from tasks.train import device_kind, get_weights, pick_device, set_weights, test, train  # noqa: E402


def run(device: torch.device, mu: float) -> tuple[float, list[np.ndarray], float]:
    bundle = load_dataset("digits", seed=0, test_fraction=0.2)
    torch.manual_seed(0)
    model = build_model("digits-cnn", bundle.input_shape, bundle.num_classes).to(device)
    x, y = torch.as_tensor(bundle.x_train, device=device), torch.as_tensor(bundle.y_train, device=device)
    result = train(model, x, y, epochs=3, batch_size=10, learning_rate=0.1, proximal_mu=mu, seed=1)
    xt, yt = torch.as_tensor(bundle.x_test, device=device), torch.as_tensor(bundle.y_test, device=device)
    acc = test(model, xt, yt).accuracy
    weights = get_weights(model)
    set_weights(model, weights)  # numpy -> device copy path
    return float(acc or 0.0), weights, result.seconds


def main() -> int:
    device = pick_device("auto")
    print(f"torch {torch.__version__}; auto device: {device} ({device_kind(device)})")
    for mu in (0.0, 0.1):
        acc_dev, w_dev, s_dev = run(device, mu)
        acc_cpu, w_cpu, s_cpu = run(torch.device("cpu"), mu)
        diff = max(float(np.abs(a - b).max()) for a, b in zip(w_dev, w_cpu, strict=True))
        print(
            f"mu={mu}: {device.type} acc {acc_dev:.4f} ({s_dev:.2f}s) | "
            f"cpu acc {acc_cpu:.4f} ({s_cpu:.2f}s) | max |w_dev - w_cpu| {diff:.2e}"
        )
    for secure in (False, True):
        print(f"DP-SGD secure_mode={secure}: {dp_sgd_round(device, secure)}")
    return 0 if device.type == "cuda" else 1


def dp_sgd_round(device: torch.device, secure: bool) -> str:
    """One DP-SGD epoch on ``device``: accuracy and epsilon, or the error it raised."""
    from tasks.dp_train import DPSGDTrainer

    bundle = load_dataset("digits", seed=0, test_fraction=0.2)
    torch.manual_seed(0)
    model = build_model("digits-cnn", bundle.input_shape, bundle.num_classes).to(device)
    x, y = torch.as_tensor(bundle.x_train, device=device), torch.as_tensor(bundle.y_train, device=device)
    trainer = DPSGDTrainer(noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-4, secure_mode=secure)
    try:
        trainer.train(model, x, y, epochs=1, batch_size=32, learning_rate=0.1)
    except Exception as exc:  # report, do not hide: this is what the check is for
        return f"FAILED: {type(exc).__name__}: {exc}"
    xt, yt = torch.as_tensor(bundle.x_test, device=device), torch.as_tensor(bundle.y_test, device=device)
    return f"acc {test(model, xt, yt).accuracy:.4f}, epsilon {trainer.epsilon():.2f}"


if __name__ == "__main__":
    raise SystemExit(main())
