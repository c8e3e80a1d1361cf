"""Server optimizers for federated learning, framework-free (numpy in, numpy out).

- FedAdagrad, FedAdam, FedYogi: Reddi et al. 2021, "Adaptive Federated Optimization"
  (arXiv:2003.00295), Algorithm 2.
- FedAvgM (server momentum): Hsu et al. 2019, "Measuring the Effects of Non-Identical
  Data Distribution for Federated Visual Classification" (arXiv:1909.06335).

Each round the server passes the current weights ``w_t`` and the aggregated client
update ``Delta_t`` (a weighted mean of ``w_k - w_t``, computed elsewhere) to ``step``,
which applies, coordinate by coordinate::

    m_t = beta1 * m_{t-1} + (1 - beta1) * Delta_t
    FedAdagrad: v_t = v_{t-1} + Delta_t**2
    FedAdam:    v_t = beta2 * v_{t-1} + (1 - beta2) * Delta_t**2
    FedYogi:    v_t = v_{t-1} - (1 - beta2) * Delta_t**2 * sign(v_{t-1} - Delta_t**2)
    w_{t+1} = w_t + lr * m_t / (sqrt(v_t) + tau)

    FedAvgM:    u_t = momentum * u_{t-1} + Delta_t;   w_{t+1} = w_t + lr * u_t

Choices
-------
- No bias correction: Algorithm 2 has none. (Flower's FedAdam divides by
  ``1 - beta**t``; this module does not, so the two differ in early rounds.)
- Initial state: ``m_{-1} = 0`` and, by default, ``v_{-1} = tau**2``. Algorithm 2 starts
  from ``v_{-1} >= tau**2`` (REFERENCE.md gives no initial value); ``tau**2`` is the
  smallest value it allows, so early steps are as large as the paper permits. Pass
  ``initial_accumulator=0.0`` to reproduce Flower's zero start, which lies outside the
  paper's condition. With a zero start FedYogi's first step equals FedAdam's, because
  ``sign(0 - Delta**2) = -1``.
- ``sign(0) = 0``: where ``v_{t-1} == Delta_t**2`` FedYogi leaves ``v`` unchanged, as
  the formula says.
- Sign convention: ``Delta_t = w_k - w_t`` points the way the clients moved, so the step
  is added. FedAvgM with ``lr=1, momentum=0`` is FedAvg.
- Precision: the state (m, v) and the step are float64 whatever the weights' dtype,
  because Adagrad's ``v`` only grows and float32 would drop small increments; a
  checkpointed state then resumes bit-identically. New weights are cast back to each
  layer's dtype; integer layers are rounded to the nearest integer first.
- Invalid input (mismatched shapes, non-finite values) raises ``ValueError`` and leaves
  the state unchanged, so one bad round cannot poison ``m`` and ``v``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

Layers = list[np.ndarray]


@dataclass
class ServerOptState:
    """Per-layer optimizer state, checkpointable with :meth:`state_dict`.

    Attributes
    ----------
    m : list of np.ndarray
        First moment ``m_t`` (FedAvgM: its momentum buffer ``u_t``), float64, one
        array per layer.
    v : list of np.ndarray
        Second moment ``v_t``, float64, one array per layer; empty for FedAvgM.
    step : int
        Number of steps applied so far (informational: no formula uses it).
    """

    m: Layers
    v: Layers = field(default_factory=list)
    step: int = 0

    def state_dict(self) -> dict[str, list[np.ndarray] | int]:
        """Copy of the state as ``{"m": [...], "v": [...], "step": int}``."""
        return {"m": [a.copy() for a in self.m], "v": [a.copy() for a in self.v], "step": self.step}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> ServerOptState:
        """Rebuild a state from :meth:`state_dict` output (arrays are copied to float64).

        Parameters
        ----------
        state : Mapping
            Keys ``"m"`` and ``"v"`` (lists of arrays) and ``"step"`` (int >= 0).

        Returns
        -------
        ServerOptState
            The restored state.

        Raises
        ------
        ValueError
            If a key is missing, ``step`` is not an integer >= 0, ``v`` is neither empty
            nor one array per layer of ``m``, or an array is non-finite.
        """
        missing = {"m", "v", "step"} - set(state)
        if missing:
            raise ValueError(f"state is missing keys {sorted(missing)}, expected 'm', 'v', 'step'")
        step = state["step"]
        if not (_is_int(step) and step >= 0):
            raise ValueError(f"state['step'] must be an integer >= 0, got {step!r}")
        m = [np.array(a, dtype=np.float64) for a in state["m"]]
        v = [np.array(a, dtype=np.float64) for a in state["v"]]
        if v and [a.shape for a in v] != [a.shape for a in m]:
            raise ValueError("state['v'] must be empty or have the shapes of state['m']")
        for key, arrays in (("m", m), ("v", v)):
            for i, a in enumerate(arrays):
                if not np.all(np.isfinite(a)):
                    raise ValueError(f"state[{key!r}][{i}] contains non-finite values")
        return cls(m=m, v=v, step=int(step))


class ServerOptimizer(ABC):
    """Base class: validates inputs, creates the state lazily, casts the output.

    ``state`` is ``None`` until the first :meth:`step`, which sizes it from ``delta``.
    Checkpoint with ``opt.state.state_dict()``; restore with
    ``opt.state = ServerOptState.from_state_dict(saved)``.
    """

    name: ClassVar[str]
    #: Whether the state carries a second moment ``v`` (all but FedAvgM).
    uses_second_moment: ClassVar[bool] = True

    def __init__(self, *, lr: float) -> None:
        self.lr = _check_float("lr", lr, low=0.0, low_inclusive=False)
        self.state: ServerOptState | None = None

    def step(self, weights: Sequence[np.ndarray], delta: Sequence[np.ndarray]) -> Layers:
        """Apply one server step and return the new weights.

        Parameters
        ----------
        weights : sequence of np.ndarray
            Current global weights ``w_t``, one array per layer.
        delta : sequence of np.ndarray
            Aggregated client update ``Delta_t`` (weighted mean of ``w_k - w_t``), with
            the shapes of ``weights``.

        Returns
        -------
        list of np.ndarray
            ``w_{t+1}``, each layer in the dtype of the matching ``weights`` layer.

        Raises
        ------
        ValueError
            If layer counts or shapes differ (from each other or from the state), or a
            value is non-finite. The state is left unchanged.
        """
        w64, d64 = _check_layers(weights, delta)
        state = self._initial_state(d64) if self.state is None else self.state
        self._check_state(state, d64)
        directions, new_state = self._advance(state, d64)
        self.state = new_state
        return [
            _cast(w + self.lr * s, np.asarray(orig).dtype)
            for w, s, orig in zip(w64, directions, weights, strict=True)
        ]

    @abstractmethod
    def _initial_state(self, delta: Layers) -> ServerOptState: ...

    @abstractmethod
    def _advance(self, state: ServerOptState, delta: Layers) -> tuple[Layers, ServerOptState]:
        """Return the per-layer direction (multiplied by ``lr`` by the caller) and the new state."""

    def _check_state(self, state: ServerOptState, delta: Layers) -> None:
        shapes = [d.shape for d in delta]
        if [a.shape for a in state.m] != shapes:
            raise ValueError(
                f"{self.name}: delta has layer shapes {shapes}, but the state holds "
                f"{[a.shape for a in state.m]}"
            )
        expected_v = shapes if self.uses_second_moment else []
        if [a.shape for a in state.v] != expected_v:
            raise ValueError(
                f"{self.name}: state['v'] has layer shapes {[a.shape for a in state.v]}, "
                f"expected {expected_v}"
            )


class _AdaptiveOptimizer(ServerOptimizer):
    """Shared part of Algorithm 2; subclasses define the second-moment update."""

    def __init__(
        self, *, lr: float, beta1: float = 0.9, tau: float = 1e-3, initial_accumulator: float | None = None
    ) -> None:
        super().__init__(lr=lr)
        self.beta1 = _check_float("beta1", beta1, low=0.0, high=1.0)
        self.tau = _check_float("tau", tau, low=0.0, low_inclusive=False)
        if initial_accumulator is None:
            initial_accumulator = self.tau**2
        self.initial_accumulator = _check_float("initial_accumulator", initial_accumulator, low=0.0)

    @abstractmethod
    def _second_moment(self, v: np.ndarray, delta_sq: np.ndarray) -> np.ndarray: ...

    def _initial_state(self, delta: Layers) -> ServerOptState:
        return ServerOptState(
            m=[np.zeros_like(d) for d in delta],
            v=[np.full_like(d, self.initial_accumulator) for d in delta],
        )

    def _advance(self, state: ServerOptState, delta: Layers) -> tuple[Layers, ServerOptState]:
        m = [self.beta1 * m + (1.0 - self.beta1) * d for m, d in zip(state.m, delta, strict=True)]
        v = [self._second_moment(v, d * d) for v, d in zip(state.v, delta, strict=True)]
        directions = [mt / (np.sqrt(vt) + self.tau) for mt, vt in zip(m, v, strict=True)]
        return directions, ServerOptState(m=m, v=v, step=state.step + 1)


class FedAdagradOptimizer(_AdaptiveOptimizer):
    """FedAdagrad: ``v_t = v_{t-1} + Delta_t**2`` (Reddi et al. 2021, Algorithm 2).

    Parameters
    ----------
    lr : float
        Server learning rate eta, > 0.
    beta1 : float, default 0.9
        First-moment decay, in [0, 1); 0 gives plain Adagrad on ``Delta_t``.
    tau : float, default 1e-3
        Adaptivity constant added to ``sqrt(v_t)``, > 0.
    initial_accumulator : float or None, default None
        ``v_{-1}``, >= 0; ``None`` means ``tau**2`` (see the module docstring).
    """

    name = "fedadagrad"

    def _second_moment(self, v: np.ndarray, delta_sq: np.ndarray) -> np.ndarray:
        return v + delta_sq


class _DecayingOptimizer(_AdaptiveOptimizer):
    """Adds the second-moment decay ``beta2`` shared by FedAdam and FedYogi."""

    def __init__(
        self,
        *,
        lr: float,
        beta1: float = 0.9,
        beta2: float = 0.99,
        tau: float = 1e-3,
        initial_accumulator: float | None = None,
    ) -> None:
        super().__init__(lr=lr, beta1=beta1, tau=tau, initial_accumulator=initial_accumulator)
        self.beta2 = _check_float("beta2", beta2, low=0.0, high=1.0)


class FedAdamOptimizer(_DecayingOptimizer):
    """FedAdam: ``v_t = beta2 v_{t-1} + (1 - beta2) Delta_t**2``, no bias correction.

    Parameters
    ----------
    lr : float
        Server learning rate eta, > 0.
    beta1 : float, default 0.9
        First-moment decay, in [0, 1).
    beta2 : float, default 0.99
        Second-moment decay, in [0, 1) as in Algorithm 2 (1 would freeze ``v``).
    tau : float, default 1e-3
        Adaptivity constant added to ``sqrt(v_t)``, > 0.
    initial_accumulator : float or None, default None
        ``v_{-1}``, >= 0; ``None`` means ``tau**2`` (see the module docstring).
    """

    name = "fedadam"

    def _second_moment(self, v: np.ndarray, delta_sq: np.ndarray) -> np.ndarray:
        return self.beta2 * v + (1.0 - self.beta2) * delta_sq


class FedYogiOptimizer(_DecayingOptimizer):
    """FedYogi: ``v_t = v_{t-1} - (1 - beta2) Delta_t**2 sign(v_{t-1} - Delta_t**2)``.

    ``v`` moves towards ``Delta_t**2`` by an additive amount instead of Adam's
    multiplicative decay, so a burst of large updates raises it less abruptly.
    Parameters as :class:`FedAdamOptimizer`.
    """

    name = "fedyogi"

    def _second_moment(self, v: np.ndarray, delta_sq: np.ndarray) -> np.ndarray:
        return v - (1.0 - self.beta2) * delta_sq * np.sign(v - delta_sq)


class FedAvgMOptimizer(ServerOptimizer):
    """FedAvgM: ``u_t = momentum u_{t-1} + Delta_t``; ``w_{t+1} = w_t + lr u_t`` (Hsu et al. 2019).

    The momentum buffer ``u`` is stored in ``state.m``; ``state.v`` stays empty.

    Parameters
    ----------
    lr : float
        Server learning rate eta, > 0; ``lr=1, momentum=0`` is FedAvg.
    momentum : float, default 0.9
        Server momentum beta, in [0, 1).
    """

    name = "fedavgm"
    uses_second_moment = False

    def __init__(self, *, lr: float, momentum: float = 0.9) -> None:
        super().__init__(lr=lr)
        self.momentum = _check_float("momentum", momentum, low=0.0, high=1.0)

    def _initial_state(self, delta: Layers) -> ServerOptState:
        return ServerOptState(m=[np.zeros_like(d) for d in delta])

    def _advance(self, state: ServerOptState, delta: Layers) -> tuple[Layers, ServerOptState]:
        u = [self.momentum * u + d for u, d in zip(state.m, delta, strict=True)]
        return u, ServerOptState(m=u, step=state.step + 1)


#: Name → constructor. Typed as factories taking any keywords: the optimizers' keyword sets
#: differ (beta2 only for Adam/Yogi, momentum only for FedAvgM); each checks its own.
SERVER_OPTIMIZERS: dict[str, Callable[..., ServerOptimizer]] = {
    cls.name: cls for cls in (FedAdagradOptimizer, FedAdamOptimizer, FedYogiOptimizer, FedAvgMOptimizer)
}


def create_server_optimizer(name: str, **kwargs: float | None) -> ServerOptimizer:
    """Build the server optimizer registered as ``name``.

    Parameters
    ----------
    name : str
        One of ``"fedadagrad"``, ``"fedadam"``, ``"fedyogi"``, ``"fedavgm"``.
    **kwargs
        Keyword arguments of that optimizer's constructor (``lr`` is required).

    Returns
    -------
    ServerOptimizer
        A fresh optimizer with no state.

    Raises
    ------
    ValueError
        If ``name`` is unknown (the message lists the known names) or an argument is
        out of range.
    """
    if name not in SERVER_OPTIMIZERS:
        raise ValueError(
            f"name={name!r} is not a server optimizer; known: {', '.join(sorted(SERVER_OPTIMIZERS))}"
        )
    return SERVER_OPTIMIZERS[name](**kwargs)


# --------------------------------------------------------------------------- #
# Helpers                                                                     #
# --------------------------------------------------------------------------- #


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _check_float(
    name: str,
    value: float,
    *,
    low: float,
    high: float = math.inf,
    low_inclusive: bool = True,
) -> float:
    """Return ``value`` as float if it lies in ``[low, high)`` (``(low, high)`` if not low_inclusive)."""
    valid = f"{'[' if low_inclusive else '('}{low}, {high})"
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a real number in {valid}, got {value!r}")
    x = float(value)
    above_low = x >= low if low_inclusive else x > low
    if not (math.isfinite(x) and above_low and x < high):
        raise ValueError(f"{name} must be in {valid}, got {value!r}")
    return x


def _check_layers(weights: Sequence[np.ndarray], delta: Sequence[np.ndarray]) -> tuple[Layers, Layers]:
    """Return float64 copies of ``weights`` and ``delta`` after checking shapes and finiteness."""
    if len(weights) == 0:
        raise ValueError("weights must contain at least one layer, got 0")
    if len(delta) != len(weights):
        raise ValueError(f"delta has {len(delta)} layers, expected {len(weights)} (as weights)")
    w64 = [np.asarray(a, dtype=np.float64) for a in weights]
    d64 = [np.asarray(a, dtype=np.float64) for a in delta]
    for i, (w, d) in enumerate(zip(w64, d64, strict=True)):
        if w.shape != d.shape:
            raise ValueError(f"delta[{i}] has shape {d.shape}, expected {w.shape} (as weights[{i}])")
        if not np.all(np.isfinite(w)):
            raise ValueError(f"weights[{i}] contains non-finite values")
        if not np.all(np.isfinite(d)):
            raise ValueError(f"delta[{i}] contains non-finite values")
    return w64, d64


def _cast(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if not np.issubdtype(dtype, np.inexact):
        # Truncation would bias integer layers towards zero.
        values = np.rint(values)
    # A step beyond the dtype's range becomes inf here; the strategy's check of the released
    # model (strategies/core/buffers.py) then keeps the previous model.
    with np.errstate(over="ignore"):
        return values.astype(dtype)
