"""Weighted user-level DP-FedAvg as a wrapper around our FedAvg / FedProx.

- McMahan et al. 2018, "Learning Differentially Private Recurrent Language Models"
  (arXiv:1710.06963): clip every client update to L2 norm S, weight client k by
  ``w_k = min(n_k / w_hat, 1)``, estimate the mean update with the fixed-denominator
  ``sum_k w_k Delta_k / (q W)`` or clipped-denominator
  ``sum_k w_k Delta_k / max(q W_min, sum_k w_k)`` estimator and add Gaussian noise
  calibrated to its sensitivity. Clients are Poisson-sampled with rate q.
- Andrew et al. 2021, "Differentially Private Learning with Adaptive Clipping"
  (arXiv:1905.03871): the clipping norm follows a target quantile of the update
  norms through a noisy count of unclipped updates.

This file is glue: every formula lives in ``strategies.numeric.dp`` and the privacy
accounting in ``strategies.numeric.accounting``. The wrapper owns client selection and the
train aggregation; evaluation is the inner strategy's.

Guarantees, precisely (see README "Privacy" for the user-facing version):

- estimators ``fixed`` and ``clipped``: (epsilon, delta) user-level DP of the
  sequence of released global models, for add/remove-one-client neighbours under
  Poisson sampling (replace-one under fixed-size sampling), as reported by the
  accountant. Only the models are covered: per-round training/evaluation metrics
  sent by clients (train loss, federated accuracy, num-examples) are not privatised.
- estimator ``uniform``: ``sigma = z S / m`` with m the number of aggregated
  updates (Flower's built-in DP). The sensitivity ``S / m`` holds for a fixed m
  (fixed-size sampling, replace-one neighbours). Under Poisson sampling m is
  random: removing one client moves the mean by up to ``2 S / (m + 1)``, not
  ``S / m``, so no valid epsilon exists and the combination is refused.
- estimator ``model-noise``: plain example-weighted FedAvg of the raw replies, then
  ``w + N(0, (z S / m)^2 I)``. No formal guarantee and no epsilon: without clipping
  an update's influence is unbounded; with client-side clipping (``dp-clipping =
  client``) each update has norm <= S, but the weights ``n_k / n`` are chosen by the
  clients, so one client can still move the average by up to 2 S, not S / m. It is
  DP only in the special case of clipped updates and equal n_k, where it equals the
  ``uniform`` mechanism.

Replies lost after sampling (errors, timeouts, rejected by validation) are simply
left out. For the fixed-denominator estimator this does not weaken the guarantee:
the denominator ``q W`` is a public constant, so the aggregate of any subset of the
sampled clients still changes by at most ``S / (q W)`` when one client is added or
removed; the clipped-denominator bound ``2 S / (q W_min)`` likewise holds for any
subset. For the same reason the wrapper always releases ``w + noise``, even with
zero replies: keeping the old model when too few replies arrive (the inner's
``min-valid-replies``) would reveal whether anyone was sampled; adaptive clipping
likewise always releases its noisy count (a count of zero included).

Fixed-size sampling draws exactly ``m = round(q N)`` of the nodes connected that
round. When that is not N nodes the rate actually used is ``m / connected``, and
that is the rate accounted for that round (``sampling_rate`` in metrics.json), so
epsilon is never computed from a rate smaller than the one used.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from flwr.supercore import log

from strategies.algorithms.fedavg import FedAvg
from strategies.algorithms.fedbuff import FedBuff
from strategies.algorithms.robust_base import RobustFedAvg
from strategies.core.buffers import parameter_indices, select, with_previous_buffers
from strategies.core.control import StopTraining
from strategies.core.ledger import RoundStats
from strategies.core.records import METRICS_KEY, NUM_EXAMPLES, to_layers
from strategies.core.sampling import TRAIN, round_rng, sample_ids
from strategies.numeric import dp as dp_math
from strategies.numeric.accounting import Accountant, create_accountant
from strategies.numeric.secagg import SecureSum
from strategies.wrappers.base import StrategyWrapper
from strategies.wrappers.dp_config import (  # noqa: F401 - the option lists, re-exported
    CLIPPING_MODES,
    ESTIMATORS,
    SAMPLING_MODES,
    DPConfig,
    check_count_noise,
)
from tasks import wire
from tasks.config import AppConfig, ConfigError

# Message keys of client-side clipping (defined with the math so clients need no Flower-side import).
CLIP_NORM_KEY = dp_math.CLIP_NORM_KEY
UNCLIPPED_KEY = dp_math.UNCLIPPED_KEY

#: eta_C of Andrew et al. 2021 (their code's default); not a run-config key.
ADAPTIVE_CLIP_LEARNING_RATE = 0.2


def _bad(key: str, value: object, allowed: str) -> ValueError:
    return ValueError(f"{key}={value!r} is invalid: {allowed}")


class DPFedAvg(StrategyWrapper[FedAvg]):
    """User-level DP around a FedAvg-based strategy (McMahan et al. 2018; Andrew et al. 2021).

    Each round: sample clients (Poisson with rate q, or exactly round(q N) of them),
    send them the global model w (and ``dp-clip-norm`` for client-side clipping),
    clip their updates ``Delta_k = w_k - w`` to norm C, aggregate with the chosen
    estimator, add Gaussian noise, release ``w + noisy update`` and account the
    round. With adaptive clipping C then moves towards the ``target_quantile`` of
    the update norms.

    Parameters
    ----------
    inner : FedAvg
        The wrapped strategy: FedAvg, FedProx or a server optimizer (FedAdam, ...;
        its step is applied to the released noisy model, which is post-processing and
        keeps the guarantee). It supplies the local-training config, reply
        validation, per-round stats and evaluation, through public hooks only. Its
        ``fraction_train`` and ``min_valid_replies`` are not used. Refused (``ValueError``,
        see :func:`dp_inner_problem`): robust rules, FedBuff, wrappers, stragglers.
    config : DPConfig
        The ``dp-*`` keys (``strategies/wrappers/dp_config.py``), validated when the
        config was built: z = ``noise_multiplier``, S = ``clip_norm`` (the initial C with
        adaptive clipping), q = ``sampling_rate``, delta (< 1 / population, checked once
        N is known), the ``estimator`` (``fixed``, ``clipped``, ``uniform``,
        ``model-noise``), ``clipping`` (``server``: the server clips raw updates;
        ``client``: clients clip their own update to ``dp-clip-norm`` and report
        ``dp-unclipped``, and the server still re-clips, a no-op for honest clients),
        ``sampling``, ``accountant``, w_hat = ``weight_cap``, N = ``population`` (0 = the
        nodes connected at round 1), W_min = ``min_total_weight`` (0 = W),
        ``max_epsilon`` (0 = never stop), ``adaptive_clipping`` with gamma =
        ``target_quantile`` and sigma_b = ``count_noise_std`` (0 = expected clients per
        round / 20, the paper's default), ``noise_seed`` (-1 = OS entropy; a known seed
        makes the noise predictable and voids the guarantee) and ``secure_noise`` (noise
        from a generator seeded from the OS CSPRNG with Opacus's floating-point-attack
        mitigation, ``dp_math.make_noise_rng``).

    Raises
    ------
    ConfigError
        Naming ``dp-delta``, for a ``population`` whose 1/N is not above delta.
    """

    def __init__(self, inner: FedAvg, config: DPConfig) -> None:
        super().__init__()
        self.inner = inner
        self.config = config  # validated when built: keys, ranges and combinations
        self.noise_multiplier = config.noise_multiplier
        self.clip_norm = config.clip_norm  # current C; changes with adaptive clipping
        self.sampling_rate = config.sampling_rate
        self.delta = config.delta
        self.estimator = config.estimator
        self.clipping = config.clipping
        self.sampling = config.sampling
        self.accountant_name = config.accountant
        self.weight_cap = config.weight_cap
        self.population = config.population if config.population > 0 else None
        self.min_total_weight = config.min_total_weight
        self.max_epsilon = config.max_epsilon
        self.adaptive_clipping = config.adaptive_clipping
        self.target_quantile = config.target_quantile
        self.count_noise_std = config.count_noise_std
        self.noise_seed = None if config.noise_seed < 0 else config.noise_seed
        self.secure_noise = config.secure_noise
        # Created once: every draw of the run continues the same stream.
        self._noise_rng = dp_math.make_noise_rng(self.noise_seed, secure=self.secure_noise)
        self.accountant: Accountant | None = None
        self.sample_size: int | None = None  # round(q N), known once N is
        self._global: dict[int, list[np.ndarray]] = {}
        # The sampling rate each round actually used (fixed-size: m / connected nodes).
        self._round_rate: dict[int, float] = {}
        self._round_metrics: dict[int, dict[str, Any]] = {}
        if self.population is not None:
            self._resolve_population(self.population, "dp-population")

    # ------------------------------------------------------------ the inner strategy
    @property
    def inner(self) -> FedAvg:
        """The wrapped strategy; checked when set (:func:`dp_inner_problem`), so before training."""
        return self._inner

    @inner.setter
    def inner(self, strategy: FedAvg) -> None:
        problem = dp_inner_problem(strategy)
        if problem is not None:
            raise ValueError(f"DP-FedAvg cannot wrap {type(strategy).__name__}: {problem}")
        self._inner = strategy

    # ------------------------------------------------------------------ set-up
    def _check_count_noise(self, sigma_b: float) -> None:
        check_count_noise(noise_multiplier=self.noise_multiplier, count_noise_std=sigma_b)

    def _resolve_population(self, population: int, source: str) -> None:
        """Fix N and everything that depends on it: W, W_min, sigma_b, the accountant."""
        if self.delta >= 1 / population:
            raise ConfigError(
                f"run config: dp-delta={self.delta:g} must be < 1/population = 1/{population} "
                f"(population from {source}); a delta that large allows leaking one client's data outright"
            )
        self.population = population
        self.total_weight = dp_math.expected_total_weight(
            population_size=population, weight_cap=self.weight_cap
        )
        self.min_weight = self.min_total_weight or self.total_weight
        self.sample_size = round(self.sampling_rate * population)
        if self.sampling == "fixed-size":
            if self.sample_size < 1:
                raise ConfigError(
                    f"run config: dp-sampling-rate={self.sampling_rate} selects round(q*N) = 0 of "
                    f"N={population} clients; raise it"
                )
            # The accountant needs q*N to be an integer: account the rate actually used.
            self.accounted_rate = self.sample_size / population
        else:
            self.accounted_rate = self.sampling_rate
        self.expected_clients = self.sampling_rate * population
        if self.adaptive_clipping:
            self.count_std = self.count_noise_std or self.expected_clients / 20
            self._check_count_noise(self.count_std)
            self.update_noise_multiplier = dp_math.update_noise_multiplier(
                noise_multiplier=self.noise_multiplier, count_noise_std=self.count_std
            )
        else:
            self.update_noise_multiplier = self.noise_multiplier
        self.accountant = create_accountant(
            self.accountant_name, sampling=self.sampling, population_size=population
        )
        log(
            INFO,
            "DP: population N=%d (%s); W=%g assumes every client holds >= dp-weight-cap=%g examples",
            population,
            source,
            self.total_weight,
            self.weight_cap,
        )
        if self.estimator != "model-noise":
            log(INFO, "DP: privacy accounting: %s", self.accountant.describe())

    def summary(self) -> None:
        log(
            INFO,
            "\t├──> DP-FedAvg: estimator=%s clipping=%s z=%g S=%g q=%g δ=%g adaptive=%s max-ε=%s",
            self.estimator,
            self.clipping,
            self.noise_multiplier,
            self.clip_norm,
            self.sampling_rate,
            self.delta,
            self.adaptive_clipping,
            self.max_epsilon or "none",
        )
        if self.noise_seed is not None:
            log(WARNING, "DP noise seed is set: the noise is reproducible and the privacy guarantee is void")
        if self.secure_noise:
            log(INFO, "\t├──> DP noise: CSPRNG-seeded generator, floating-point mitigation (dp-secure-noise)")
        if self.estimator == "model-noise":
            log(WARNING, "dp-estimator='model-noise' has no formal DP guarantee; no epsilon is reported")
        self.inner.summary()

    # ------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs: C, N, the accountant's history, metrics, noise RNG.

        The noise itself is never stored; the generator's state is, so a resumed run with
        a ``dp-noise-seed`` continues the same noise stream (with OS entropy it simply
        continues with fresh entropy-seeded draws).
        """
        return {
            **super().state_dict(),
            CLIP_NORM_KEY: self.clip_norm,
            "dp-population": self.population,
            "dp-accountant": None if self.accountant is None else self.accountant.state(),
            "dp-round-metrics": {str(k): v for k, v in self._round_metrics.items()},
            "dp-noise-rng": self._noise_rng.bit_generator.state if self.noise_seed is not None else None,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output (population first: it fixes W and the accountant)."""
        super().load_state_dict(state)
        if state.get("dp-population"):
            self._resolve_population(int(state["dp-population"]), "checkpoint")
        self.clip_norm = float(state[CLIP_NORM_KEY])
        if state.get("dp-accountant") is not None:
            self.accountant = Accountant.from_state(dict(state["dp-accountant"]))
        self._round_metrics = {int(k): dict(v) for k, v in dict(state.get("dp-round-metrics", {})).items()}
        if state.get("dp-noise-rng") is not None and self.noise_seed is not None:
            self._noise_rng.bit_generator.state = dict(state["dp-noise-rng"])

    # ------------------------------------------------------------ metrics
    def round_metrics(self, server_round: int) -> dict[str, Any]:
        """Privacy metrics of a round for metrics.json (and the inner's); ``epsilon`` None before round 1."""
        if server_round in self._round_metrics:
            return {**super().round_metrics(server_round), **self._round_metrics[server_round]}
        return {
            **super().round_metrics(server_round),
            "epsilon": None,
            "delta": self.delta,
            "clip_norm": self.clip_norm,
            "noise_std": None,
            "sampled_clients": None,
            "sampling_rate": None,
        }

    # ---------------------------------------------------------------- training
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        inner = self.inner
        minimum = inner.min_available_nodes
        if self.sampling == "fixed-size" and self.sample_size is not None:
            minimum = max(minimum, self.sample_size)
        connected = sorted(inner.connected_nodes(grid, minimum))
        if self.population is None:
            self._resolve_population(len(connected), "nodes connected at round 1")
        self._round_rate[server_round] = self._rate_used(len(connected))
        self._check_budget(server_round)

        node_ids = self._sample(connected, server_round)
        train_config = ConfigRecord(dict(config))
        if self.clipping == "client":
            train_config[CLIP_NORM_KEY] = self.clip_norm
        self._global = {server_round: [np.array(a) for a in to_layers(arrays)]}
        log(
            INFO,
            "configure_train: %d of %d nodes sampled (DP, %s)",
            len(node_ids),
            len(connected),
            self.sampling,
        )
        # The inner's messages to the nodes DP chose: its own train config (FedProx: mu),
        # the round's sampled count, and what its reply validation needs.
        return inner.train_messages(server_round, node_ids, arrays, train_config)

    def _sample(self, connected: list[int], server_round: int) -> list[int]:
        """Poisson (each node with probability q) or exactly round(q N) nodes.

        Amplification by sampling assumes nobody can predict who is sampled, so the draw
        uses the secret noise generator (OS entropy), not the run's public ``seed``; with
        a ``dp-noise-seed`` it is reproducible per round (and the guarantee is void).
        """
        rng = self._noise_rng if self.noise_seed is None else round_rng(self.noise_seed, server_round, TRAIN)
        if self.sampling == "poisson":
            draws = rng.random(len(connected))
            return [n for n, u in zip(connected, draws, strict=True) if u < self.sampling_rate]
        assert self.sample_size is not None  # fixed-size: set with N, before the first draw
        return sample_ids(connected, self.sample_size, rng)

    def _rate_used(self, num_connected: int) -> float:
        """The sampling rate this round really uses: q (Poisson), or m of the connected (fixed-size).

        Fixed-size sampling draws ``m = round(q N)`` of the nodes connected now; with
        fewer than N connected each one's chance is ``m / connected`` > ``m / N``, and
        accounting ``m / N`` would under-report epsilon. The noise needs no change: the
        estimators' sensitivity-to-noise ratio z does not depend on which q they divide by.
        """
        if self.sampling == "poisson":
            return self.sampling_rate
        assert self.sample_size is not None and self.population is not None
        if num_connected != self.population:
            log(
                WARNING,
                "DP: fixed-size sampling of %d from %d connected nodes, not N=dp-population=%d: "
                "this round is accounted with the rate used, %d/%d",
                self.sample_size,
                num_connected,
                self.population,
                self.sample_size,
                num_connected,
            )
        return self.sample_size / num_connected

    def _check_budget(self, server_round: int) -> None:
        if self.max_epsilon <= 0 or self.accountant is None:
            return
        rate = self._round_rate[server_round]
        next_epsilon = self.accountant.epsilon_if_step(
            noise_multiplier=self.noise_multiplier,
            sampling_rate=rate,
            delta=self.delta,
            population_size=self._rate_population(rate),
        )
        if next_epsilon > self.max_epsilon:
            spent = self.accountant.get_epsilon(self.delta)
            raise StopTraining(
                f"privacy budget: round {server_round} would reach ε={next_epsilon:.3f} > "
                f"dp-max-epsilon={self.max_epsilon:g}; stopped after round {server_round - 1} "
                f"with ε={spent:.3f} (δ={self.delta:g})"
            )

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        if server_round not in self._global:
            raise RuntimeError(f"aggregate_train({server_round}) without configure_train for that round")
        previous = self._global.pop(server_round)
        valid, layers, names = self.inner.valid_train_replies(server_round, replies)
        # Clipping, norms, noise and estimates act on the parameters only; the released model
        # carries the previous model's integer buffers, so nothing un-noised is released
        # (strategies/core/buffers.py).
        index = parameter_indices(previous)
        global_layers = select(previous, index)
        layers = [select(client, index) for client in layers]
        used_clip_norm = self.clip_norm
        num_examples = [wire.as_float(m.content.metric_records[METRICS_KEY][NUM_EXAMPLES]) for m in valid]
        if self.estimator == "model-noise":
            noise_std = dp_math.uniform_noise_std(
                noise_multiplier=self.noise_multiplier,
                clip_norm=self.clip_norm,
                num_sampled=max(len(valid), 1),
            )
            plain = self.inner.aggregate_layers(layers, num_examples) if valid else global_layers
            new_layers = dp_math.add_gaussian_noise(plain, std=noise_std, rng=self._noise_rng)
        else:
            clipped, unclipped = self._clip(layers, global_layers, valid)
            noise_std = self._noise_std(len(valid))
            update = self._estimate(clipped, num_examples, global_layers)
            noisy = dp_math.add_gaussian_noise(update, std=noise_std, rng=self._noise_rng)
            new_layers = [g.astype(np.float64) + d for g, d in zip(global_layers, noisy, strict=True)]
            # Always release the noisy count, even of zero replies: skipping it would
            # reveal that nobody replied, and the accountant counts it every round.
            if self.adaptive_clipping:
                # Fixed-size sampling knows m = round(q N) before the first round (_resolve_population).
                assert self.sampling == "poisson" or self.sample_size is not None
                self.clip_norm = dp_math.adaptive_clip_update(
                    clip_norm=self.clip_norm,
                    unclipped_count=sum(unclipped),
                    num_clients=len(unclipped),
                    target_quantile=self.target_quantile,
                    learning_rate=ADAPTIVE_CLIP_LEARNING_RATE,
                    count_noise_std=self.count_std,
                    rng=self._noise_rng,
                    expected_num_clients=self.expected_clients
                    if self.sample_size is None or self.sampling == "poisson"
                    else float(self.sample_size),
                )
        arrays = self._release(server_round, names, new_layers, previous, index, noise_std, used_clip_norm)
        metrics = self.inner.finish_round(server_round, valid) if valid else None
        return arrays, metrics

    def _release(
        self,
        server_round: int,
        names: list[str],
        new_layers: list[np.ndarray],
        previous: list[np.ndarray],
        index: list[int],
        noise_std: float,
        used_clip_norm: float,
    ) -> ArrayRecord | None:
        """The inner's step on the noisy model, the final check, and the round's accounting."""
        global_layers = select(previous, index)
        # The inner's step from the global model (a server optimizer; FedAvg: none) acts on
        # the released noisy model only: post-processing, the guarantee is unchanged.
        new_layers = self.inner.apply_aggregate(server_round, new_layers)
        new_layers = [_cast_like(a, g) for a, g in zip(new_layers, global_layers, strict=True)]
        # The same final check as every strategy. Whether the noisy model is finite is a
        # function of the released value alone (post-processing): keeping the previous
        # model on a non-finite one reveals nothing more about any client.
        arrays = self.inner.release_model(
            server_round, names, with_previous_buffers(new_layers, previous, index)
        )
        self._account(server_round, noise_std, used_clip_norm, self.inner.stats[server_round].sampled)
        return arrays

    def aggregate_secure_sum(
        self, server_round: int, names: list[str], secure: SecureSum
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Distributed DP: noise the securely aggregated sum of client-clipped updates, account the round.

        Called by secure aggregation (``strategies/wrappers/secagg.py``) in place of
        :meth:`aggregate_train`: the server never sees an update, only
        ``Σ_k min(n_k, ŵ)·Δ_k`` over the survivors (each ‖Δ_k‖ ≤ S, clipped by its client),
        which is ``ŵ·Σ_k w_k Δ_k`` with DP's weights ``w_k = min(n_k/ŵ, 1)``
        (``secagg-max-weight`` = ``dp-weight-cap``, checked when the wrapper is built). The
        estimator, noise and accountant are this wrapper's, exactly as for client clipping:
        the sensitivity holds because every honest client clipped its own update; the server
        cannot re-clip (it is trusted to add noise, never to see an update).
        """
        if server_round not in self._global:
            raise RuntimeError(f"aggregate_train({server_round}) without configure_train for that round")
        previous = self._global.pop(server_round)
        index = parameter_indices(previous)
        global_layers = select(previous, index)
        used_clip_norm = self.clip_norm
        noise_std = self._noise_std(secure.num_clients)
        weighted_sum = [s / self.weight_cap for s in secure.weighted_update_sum]  # Σ w_k Δ_k
        weight_sum = secure.total_weight / self.weight_cap  # Σ w_k
        if self.estimator == "fixed":
            update = dp_math.fixed_denominator_aggregate(
                [weighted_sum], [1.0], sampling_rate=self.accounted_rate, total_weight=self.total_weight
            )
        else:  # "clipped" (secure aggregation refuses the others)
            denominator = max(self.accounted_rate * self.min_weight, weight_sum)
            update = [s / denominator for s in weighted_sum]
        noisy = dp_math.add_gaussian_noise(update, std=noise_std, rng=self._noise_rng)
        new_layers = [g.astype(np.float64) + d for g, d in zip(global_layers, noisy, strict=True)]
        arrays = self._release(server_round, names, new_layers, previous, index, noise_std, used_clip_norm)
        stats = self.inner.stats.setdefault(server_round, RoundStats())
        stats.finish([], self.inner.nodes, secure.train_loss)
        metrics: dict[str, int | float | list[int] | list[float]] = {wire.NUM_EXAMPLES: secure.total_weight}
        if secure.train_loss is not None:
            metrics[wire.TRAIN_LOSS] = secure.train_loss
        return arrays, MetricRecord(metrics)

    def _clip(
        self, layers: list[list[np.ndarray]], global_layers: list[np.ndarray], valid: list[Message]
    ) -> tuple[list, list[int]]:
        """Each client's clipped update ``clip(local - global)`` and its unclipped bit.

        One client's float64 update exists at a time (keeping all K of them held 2 models
        per client); what is kept is the clipped update in the model's dtype.
        """
        clipped, bits = [], []
        for client, msg in zip(layers, valid, strict=True):
            delta = [np.asarray(a, np.float64) - g for a, g in zip(client, global_layers, strict=True)]
            update, unclipped = dp_math.clip_update(delta, clip_norm=self.clip_norm)
            if self.clipping == "client":
                # Clipping again is a no-op for an honest client (up to float32 rounding)
                # and bounds a buggy or malicious one; its own bit is what it reported.
                reported = msg.content[METRICS_KEY].get(UNCLIPPED_KEY)
                if reported in (0, 1):
                    unclipped = bool(reported)
                else:
                    log(
                        WARNING,
                        "node %d reported %s=%r; using the server's bit",
                        msg.metadata.src_node_id,
                        UNCLIPPED_KEY,
                        reported,
                    )
                if dp_math.l2_norm(delta) > self.clip_norm * (1 + 1e-4):
                    log(
                        WARNING,
                        "node %d sent an update above dp-clip-norm; clipped on the server",
                        msg.metadata.src_node_id,
                    )
            clipped.append(update)
            bits.append(int(unclipped))
            del delta
        return clipped, bits

    def _noise_std(self, num_aggregated: int) -> float:
        z, c = self.update_noise_multiplier, self.clip_norm
        if self.estimator == "fixed":
            return dp_math.fixed_denominator_noise_std(
                noise_multiplier=z,
                clip_norm=c,
                sampling_rate=self.accounted_rate,
                total_weight=self.total_weight,
            )
        if self.estimator == "clipped":
            return dp_math.clipped_denominator_noise_std(
                noise_multiplier=z,
                clip_norm=c,
                sampling_rate=self.accounted_rate,
                min_total_weight=self.min_weight,
            )
        return dp_math.uniform_noise_std(noise_multiplier=z, clip_norm=c, num_sampled=max(num_aggregated, 1))

    def _estimate(
        self, clipped: list[list[np.ndarray]], num_examples: list[float], global_layers: list[np.ndarray]
    ) -> list[np.ndarray]:
        if not clipped:  # nobody sampled (or every reply lost): noise on a zero update
            return [np.zeros(g.shape) for g in global_layers]
        if self.estimator == "uniform":
            return dp_math.uniform_aggregate(clipped)
        weights = dp_math.client_weights(num_examples, weight_cap=self.weight_cap)
        if self.estimator == "fixed":
            return dp_math.fixed_denominator_aggregate(
                clipped, weights, sampling_rate=self.accounted_rate, total_weight=self.total_weight
            )
        return dp_math.clipped_denominator_aggregate(
            clipped, weights, sampling_rate=self.accounted_rate, min_total_weight=self.min_weight
        )

    def _rate_population(self, rate: float) -> int | None:
        """The n a fixed-size round sampled ``round(q N)`` of, for the accountant; else None."""
        if self.sampling != "fixed-size" or self.sample_size is None:
            return None
        return round(self.sample_size / rate)

    def _account(self, server_round: int, noise_std: float, clip_norm: float, sampled: int) -> None:
        epsilon = None
        rate = self._round_rate.pop(server_round, self.accounted_rate)
        if self.estimator != "model-noise" and self.accountant is not None:
            # The accountant takes the total z (count + update noise), not z_Delta.
            self.accountant.step(
                noise_multiplier=self.noise_multiplier,
                sampling_rate=rate,
                population_size=self._rate_population(rate),
            )
            epsilon = self.accountant.get_epsilon(self.delta)
        self._round_metrics[server_round] = {
            "epsilon": epsilon,
            "delta": self.delta,
            "clip_norm": clip_norm,
            "noise_std": noise_std,
            "sampled_clients": sampled,
            "sampling_rate": rate,
        }
        if epsilon is None:
            log(INFO, "privacy: round %d: no accounted ε (dp-estimator=model-noise)", server_round)
        else:
            log(
                INFO,
                "privacy: ε=%.3f after round %d (δ=%g, %s, %s q=%g)",
                epsilon,
                server_round,
                self.delta,
                self.accountant_name,
                self.sampling,
                rate,
            )


def dp_inner_problem(strategy: object) -> str | None:
    """Why :class:`DPFedAvg` cannot wrap ``strategy`` soundly, or None.

    DP-FedAvg owns client selection and replaces the aggregation rule by its clipped,
    noised estimator, then hands the noisy model to the inner's ``apply_aggregate``. So
    it can wrap a synchronous FedAvg-family strategy whose rule is the (weighted) mean:
    FedAvg, FedProx and the server optimizers. Refused, with the reason:

    - a robust rule (median, trimmed mean, Krum, norm bounding): its rule would silently
      not run, and its robustness argument does not hold for DP's estimator;
    - FedBuff: its asynchronous loop would be bypassed (DP accounts synchronous rounds);
    - another wrapper (compression): DP would bypass its hooks; put compression outside
      DP (``CompressedStrategy(DPFedAvg(...))``, what ``with_compression`` builds);
    - stragglers (``straggler-fraction`` > 0): DP's sampling is what the accountant
      assumes; dropping or shortening sampled clients is not simulated under DP.
    """
    if not isinstance(strategy, FedAvg):
        return (
            "DP needs a FedAvg-family strategy (FedAvg, FedProx, a server optimizer) as the inner "
            "strategy; to compress updates under DP wrap compression around DP, not inside it"
        )
    if isinstance(strategy, RobustFedAvg):
        return (
            "DP replaces the aggregation rule by its clipped, noised mean, so a robust rule would "
            "silently not run; use strategy fedavg, fedprox or a server optimizer with DP"
        )
    if isinstance(strategy, FedBuff):
        return "DP accounts synchronous rounds and would bypass FedBuff's asynchronous loop"
    if strategy.straggler_fraction > 0:
        return (
            f"straggler-fraction={strategy.straggler_fraction} is not simulated under DP (DP owns "
            "client selection); set it to 0"
        )
    return None


def _cast_like(values: np.ndarray, like: np.ndarray) -> np.ndarray:
    """``values`` in ``like``'s dtype: replies are validated against the global model's dtypes."""
    if np.issubdtype(like.dtype, np.integer):
        return np.rint(values).astype(like.dtype)
    return np.asarray(values).astype(like.dtype)


def build_dp_strategy(cfg: AppConfig, inner: FedAvg) -> Strategy:
    """Wrap ``inner`` (built from the same config) in :class:`DPFedAvg` from the ``dp-*`` keys.

    Parameters
    ----------
    cfg : AppConfig
        The run config.
    inner : FedAvg
        FedAvg or FedProx built by the registry.

    Returns
    -------
    Strategy
        The DP wrapper.

    Raises
    ------
    ValueError
        Naming the key, for an invalid DP setting or one DP does not support.
    """
    if cfg.straggler_fraction > 0:
        raise _bad(
            "straggler-fraction",
            cfg.straggler_fraction,
            "stragglers are not simulated under DP (the DP wrapper owns client selection); set it to 0",
        )
    return DPFedAvg(inner, cfg.section(DPConfig))
