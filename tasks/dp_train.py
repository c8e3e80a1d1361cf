"""Sample-level differential privacy on a client: DP-SGD with Opacus, framework-free.

Abadi et al. 2016, "Deep Learning with Differential Privacy" (arXiv:1607.00133):
every step samples a Poisson batch (rate ``batch_size / n``), clips each example's
gradient to L2 norm ``max_grad_norm``, sums, adds ``N(0, (z * max_grad_norm)^2 I)``
and divides by the expected batch size. Opacus (Yousefpour et al. 2021,
arXiv:2109.12298) does all of it; its RDP accountant composes the steps.

One :class:`DPSGDTrainer` per client keeps one ``PrivacyEngine``; its accountant's
history is the client's privacy history only when it is restored before every
round (``restore_privacy_state``) from wherever the node keeps it, because one
process need not serve all of a node's rounds (the ClientApp keeps it in the
node's ``context.state``). Each round gets a fresh optimizer
and data loader, and Opacus's hooks are attached to the plain model without
wrapping it (``wrap_model=False``), so the model's ``state_dict`` names never gain
the ``_module.`` prefix of ``GradSampleModule``, and removed afterwards so rounds
do not stack hooks.

The guarantee is per example of this client's training data, against anyone who
sees the model updates it sends (the server included), for ``delta`` per example.
"""

from __future__ import annotations

import secrets
import time
import warnings

import torch
from opacus import PrivacyEngine
from opacus.validators import ModuleValidator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tasks.train import TrainResult


def check_delta(delta: float, num_examples: int) -> None:
    """Refuse a DP-SGD delta of 1 / n or more: it would allow releasing one example outright.

    Raises
    ------
    ValueError
        Naming ``dp-sgd-delta``, this client's n and the fix.
    """
    if num_examples > 0 and not delta < 1 / num_examples:
        raise ValueError(
            f"dp-sgd-delta={delta:g} must be < 1/n = 1/{num_examples} (this client's training "
            "examples): a delta that large allows leaking one example outright; lower dp-sgd-delta "
            f"below {1 / num_examples:.3g}"
        )


def secure_engine() -> PrivacyEngine:
    """A ``PrivacyEngine`` in Opacus's ``secure_mode``, with a CSPRNG-seeded generator if need be.

    ``PrivacyEngine(secure_mode=True)`` imports ``torchcsprng`` (a generator reading
    /dev/urandom), which is unmaintained and has no build for PyTorch 2. Without it the
    engine gets every other part of ``secure_mode`` (the floating-point-safe noise sum,
    one generator for noise and batch sampling) with a torch generator seeded from
    ``secrets``: unpredictable to anyone without the seed, but not a CSPRNG stream.
    """
    try:
        return PrivacyEngine(accountant="rdp", secure_mode=True)
    except ImportError:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Secure RNG turned off")
            engine = PrivacyEngine(accountant="rdp")
        engine.secure_mode = True
        engine.secure_rng = device_generator(torch.device("cpu"))
        return engine


def device_generator(device: torch.device) -> torch.Generator:
    """A generator on ``device`` seeded with 63 bits from ``secrets`` (never from the run seed)."""
    generator = torch.Generator(device=device)
    generator.manual_seed(secrets.randbits(63))
    return generator


class DPSGDTrainer:
    """Trains a model with DP-SGD and tracks the client's epsilon across rounds.

    Parameters
    ----------
    noise_multiplier : float
        z > 0: noise std over ``max_grad_norm``.
    max_grad_norm : float
        C > 0: per-example gradient clipping norm.
    delta : float
        delta in (0, 1) at which epsilon is reported (below 1 / training examples).
    secure_mode : bool, default False
        Opacus's ``secure_mode`` (``dp-secure-noise``): noise robust to floating-point
        attacks (a sum of four Gaussians, Holohan and Braghin 2021) and a secure
        generator for noise and Poisson batches. Opacus's own generator needs
        ``torchcsprng``, which has no build for current PyTorch; without it the
        generator is a torch one seeded with 64 bits from the OS CSPRNG (as the
        server's noise), and the rest of ``secure_mode`` is the same.

    Raises
    ------
    ValueError
        On an invalid parameter.
    """

    def __init__(
        self, *, noise_multiplier: float, max_grad_norm: float, delta: float, secure_mode: bool = False
    ) -> None:
        if not noise_multiplier > 0:
            raise ValueError(f"dp-sgd-noise-multiplier must be > 0, got {noise_multiplier!r}")
        if not max_grad_norm > 0:
            raise ValueError(f"dp-sgd-max-grad-norm must be > 0, got {max_grad_norm!r}")
        if not 0 < delta < 1:
            raise ValueError(f"dp-sgd-delta must be in (0, 1), got {delta!r}")
        self.noise_multiplier = noise_multiplier
        self.max_grad_norm = max_grad_norm
        self.delta = delta
        # Without secure_mode noise comes from a generator seeded from OS entropy
        # (never from the run seed); see secure_engine for secure_mode.
        self.engine = secure_engine() if secure_mode else PrivacyEngine(accountant="rdp")
        self._dataset: TensorDataset | None = None

    def epsilon(self) -> float:
        """Epsilon at ``delta`` of every step taken so far (0.0 before any)."""
        if not self.engine.accountant.history:
            return 0.0
        return float(self.engine.get_epsilon(self.delta))

    def privacy_state(self) -> list[tuple[float, float, int]]:
        """The accountant's history (noise multiplier, sample rate, steps), JSON-friendly."""
        return [tuple(entry) for entry in self.engine.accountant.history]

    def restore_privacy_state(self, history: list[tuple[float, float, int]]) -> None:
        """Continue accounting from ``privacy_state()`` of an earlier process."""
        self.engine.accountant.history = [(float(z), float(q), int(n)) for z, q, n in history]

    def train(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        epochs: int,
        batch_size: int,
        learning_rate: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        proximal_mu: float = 0.0,
    ) -> TrainResult:
        """Run ``epochs`` epochs of DP-SGD on ``(x, y)`` in place; loss is the mean per example.

        ``batch_size`` is the expected Poisson batch size (0 = all examples, rate 1).
        The FedProx term's gradient ``mu (w - w_global)`` depends on no example, so it
        is added after clipping and noise (post-processing, no privacy cost).
        """
        # Training mode first: Opacus's validator refuses a model in eval mode, which is how
        # evaluating it (tasks.train.test) leaves it, e.g. a node evaluated in the last round.
        model.train()
        errors = ModuleValidator.validate(model, strict=False)
        if errors:
            raise ValueError(f"model is not compatible with DP-SGD (Opacus): {errors[0]}")
        start = time.perf_counter()
        n = len(x)
        # The same dataset object every round: Opacus accounts per dataset (and warns otherwise).
        if self._dataset is None or self._dataset.tensors[0] is not x:
            self._dataset = TensorDataset(x, y)
        loader = DataLoader(self._dataset, batch_size=n if batch_size <= 0 else min(batch_size, n))
        optimizer = torch.optim.SGD(
            model.parameters(), lr=learning_rate, momentum=momentum, weight_decay=weight_decay
        )
        check_delta(self.delta, n)
        noise: torch.Generator | None = None
        if not self.engine.secure_mode:  # secure_mode brings its own generator and refuses one
            noise = torch.Generator(device=x.device)
            noise.seed()  # OS entropy
        hooks, dp_optimizer, dp_loader = self.engine.make_private(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.max_grad_norm,
            noise_generator=noise,
            wrap_model=False,
        )
        if self.engine.secure_mode and x.device.type != "cpu":
            # secure_mode's one generator also drives the Poisson sampler, which draws on the
            # CPU; the noise is drawn on the model's device, where a CPU generator fails.
            dp_optimizer.generator = device_generator(x.device)
        if proximal_mu > 0:
            global_params = [p.detach().clone() for p in model.parameters()]

            def add_proximal_gradient(*_: object) -> None:
                for p, p0 in zip(model.parameters(), global_params, strict=True):
                    if p.grad is not None:
                        p.grad.add_(p.detach() - p0, alpha=proximal_mu)

            optimizer.register_step_pre_hook(add_proximal_gradient)
        criterion = nn.MSELoss() if y.dtype.is_floating_point else nn.CrossEntropyLoss()
        model.train()
        loss_sum, seen = 0.0, 0
        try:
            with warnings.catch_warnings():
                # Opacus's hooks fire on the first layer, whose input needs no gradient.
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                for _ in range(epochs):
                    for xb, yb in dp_loader:
                        dp_optimizer.zero_grad(set_to_none=True)
                        out = model(xb)
                        # An empty Poisson batch still takes a (pure-noise) step: skipping it
                        # would reveal that the batch was empty, and the accountant counts it.
                        loss = criterion(out, yb) if len(xb) else out.sum() * 0.0
                        loss.backward()
                        dp_optimizer.step()
                        loss_sum += float(loss.detach()) * len(xb)
                        seen += len(xb)
        finally:
            hooks.cleanup()
        return TrainResult(loss=loss_sum / max(seen, 1), num_examples=n, seconds=time.perf_counter() - start)
