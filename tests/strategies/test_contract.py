"""The strategy contract: every registered strategy, built-in or plug-in, keeps these promises.

Parametrized over ``all_specs()`` at collection time, so a strategy added to the registry
(or installed through the ``edgebloom.strategies`` entry-point group) is checked without
touching this file, plus the example plug-in of ``tests/plugins``, registered through a
real entry point. Each strategy is built from the default run config with its spec's
``contract_config`` on top; what a spec declares decides what is checked:

- identical client updates aggregate to that update (``deterministic=False``: the
  noise-free part under a fixed noise seed; ``server_optimizer=True``: the optimizer
  steps in the update's direction, and n identical updates act as one);
- the order of the replies does not matter (``order_invariant``);
- failed, malformed and missing replies are all treated as no reply; a round where
  every reply failed neither crashes nor releases anything malformed;
- an invalid value of any key the spec declares is rejected with ``ConfigError``
  naming the key;
- ``state_dict`` survives a JSON checkpoint: a restored strategy continues exactly;
- three rounds of the real Flower round loop (``Strategy.start``) over real
  ``TorchClient``s on digits partitions raise central accuracy.

The number of clients is derived from the built strategy (``too_few_replies``), so a
robust rule gets as many replies as its guarantee needs.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, MessageType

from client_app.client import TorchClient
from server_app.app import client_configs
from strategies.core.records import from_layers, to_layers
from strategies.core.registry import StrategySpec, all_specs, build_strategy, get_spec
from tasks.config import AppConfig, ConfigError, Key
from tasks.loading import client_data, dataset_for
from tasks.models import build_model
from tasks.train import get_weights, set_weights
from tasks.train import test as evaluate_model
from tests.conftest import FakeGrid, config_record, make_reply
from tests.plugins import install_example_plugin

#: The example plug-in (tests/plugins/edgebloom_example_plugin), installed per test.
EXAMPLE_PLUGIN = "geomed"
NAMES = sorted({*all_specs(), EXAMPLE_PLUGIN})
NUM_EXAMPLES = 1000  # equal for every client, and >= DP's default weight cap (w_k = 1)

GLOBAL = {
    "conv.weight": np.linspace(-0.5, 0.5, 6, dtype=np.float32).reshape(2, 3),
    "conv.bias": np.array([0.1, -0.2, 0.3], dtype=np.float32),
    "head.weight": np.linspace(1.0, -1.0, 8, dtype=np.float32).reshape(4, 2),
}
NAMES_OF_LAYERS = list(GLOBAL)


@pytest.fixture
def example_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for path in reversed(install_example_plugin(tmp_path)):
        monkeypatch.syspath_prepend(str(path))
    yield
    sys.modules.pop("edgebloom_geomed", None)


def spec_for(name: str, request: pytest.FixtureRequest) -> StrategySpec:
    if name == EXAMPLE_PLUGIN:
        request.getfixturevalue("example_plugin")
    spec = get_spec(name)
    if name == EXAMPLE_PLUGIN:
        assert spec.origin == "edgebloom-example-plugin"  # found through its entry point
    return spec


def build(spec: StrategySpec, **overrides: Any) -> Any:
    run_config = {**spec.contract_config, "strategy": spec.name, **overrides}
    return build_strategy(AppConfig.from_run_config(run_config))


def num_valid_replies(spec: StrategySpec) -> int:
    """The fewest valid replies (at least 3) for which the strategy aggregates, from its own check."""
    strategy = build(spec)
    inner = getattr(strategy, "inner", strategy)  # wrappers (DP) keep the base strategy as .inner
    too_few = getattr(inner, "too_few_replies", lambda n: None)
    return next(n for n in range(3, 100) if all(too_few(m) is None for m in range(n, n + 10)))


def shifted(base: dict[str, np.ndarray], delta: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: (base[k] + delta[k]).astype(base[k].dtype) for k in base}


def small_update(rng: np.random.Generator, scale: float = 0.02) -> dict[str, np.ndarray]:
    """An update of L2 norm about 0.08: below DP's clip norm and norm-bound (1.0), so no rule clips it."""
    return {k: rng.normal(0.0, scale, v.shape).astype(np.float32) for k, v in GLOBAL.items()}


def reply(node: int, arrays: dict[str, np.ndarray]) -> Any:
    return make_reply(node, arrays, {"num-examples": NUM_EXAMPLES, "train-loss": 0.5})


def run_round(
    strategy: Any,
    nodes: list[int],
    replies: list[Any],
    server_round: int = 1,
    start: ArrayRecord | None = None,
) -> ArrayRecord | None:
    arrays = start if start is not None else from_layers(NAMES_OF_LAYERS, list(GLOBAL.values()))
    messages = list(strategy.configure_train(server_round, arrays, config_record(), FakeGrid(nodes)))
    sent = {m.metadata.dst_node_id for m in messages}
    assert sent == set(nodes), "the contract config must sample every node"
    new, _ = strategy.aggregate_train(server_round, replies)
    return new


def as_dict(record: ArrayRecord) -> dict[str, np.ndarray]:
    return dict(zip(record.keys(), [np.array(a) for a in to_layers(record)], strict=True))


def assert_models_close(a: ArrayRecord, b: ArrayRecord, atol: float = 1e-7) -> None:
    da, db = as_dict(a), as_dict(b)
    assert list(da) == list(db)
    for k in da:
        assert da[k].dtype == db[k].dtype and da[k].shape == db[k].shape
        np.testing.assert_allclose(da[k], db[k], rtol=1e-5, atol=atol, err_msg=k)


# --------------------------------------------------------------------------- #
# Aggregation                                                                 #
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("name", NAMES)
def test_identical_updates_aggregate_to_that_update(name: str, request: pytest.FixtureRequest) -> None:
    # Prepare
    spec = spec_for(name, request)
    nodes = list(range(1, num_valid_replies(spec) + 1))
    delta = small_update(np.random.default_rng(0))
    replies = [reply(n, shifted(GLOBAL, delta)) for n in nodes]

    # Execute
    new = run_round(build(spec), nodes, replies)

    # Assert
    assert new is not None
    result = as_dict(new)
    if spec.server_optimizer:
        # One reply carrying the update gives the same step: the mean update is the update.
        one = run_round(build(spec), nodes, replies[:1])
        assert one is not None
        assert_models_close(new, one)
        for k in GLOBAL:  # and the step goes the update's way on every coordinate
            np.testing.assert_array_equal(np.sign(result[k] - GLOBAL[k]), np.sign(delta[k]), err_msg=k)
    elif spec.deterministic:
        for k in GLOBAL:
            np.testing.assert_allclose(result[k], GLOBAL[k] + delta[k], rtol=1e-6, atol=1e-7, err_msg=k)
    else:
        # Same noise seed, same noise: the difference to a round of zero updates is noise-free.
        zero = run_round(build(spec), nodes, [reply(n, GLOBAL) for n in nodes])
        assert zero is not None
        noise_free = {k: result[k].astype(np.float64) - as_dict(zero)[k] for k in GLOBAL}
        for k in GLOBAL:
            np.testing.assert_allclose(noise_free[k], delta[k], atol=2e-6, err_msg=k)
        # ... and the spec is right to call it random: the released model is not w + delta.
        assert any(not np.allclose(result[k], GLOBAL[k] + delta[k], atol=1e-6) for k in GLOBAL)


ORDER_INVARIANT = [n for n in NAMES if n == EXAMPLE_PLUGIN or all_specs()[n].order_invariant]


@pytest.mark.parametrize("name", ORDER_INVARIANT)
def test_client_order_does_not_matter(name: str, request: pytest.FixtureRequest) -> None:
    # Prepare: distinct updates, so the rule (mean, median, Krum scores, clipping) has work to do.
    spec = spec_for(name, request)
    assert spec.order_invariant
    nodes = list(range(1, num_valid_replies(spec) + 1))
    rng = np.random.default_rng(1)
    replies = [reply(n, shifted(GLOBAL, small_update(rng))) for n in nodes]

    # Execute
    forward = run_round(build(spec), nodes, replies)
    backward = run_round(build(spec), nodes, replies[::-1])

    # Assert
    assert forward is not None and backward is not None
    assert_models_close(forward, backward)


@pytest.mark.parametrize("name", NAMES)
def test_failed_malformed_and_missing_replies_count_as_no_reply(
    name: str, request: pytest.FixtureRequest
) -> None:
    # Prepare: n valid replies; then one error, one with a wrong shape, one node that never answers.
    spec = spec_for(name, request)
    n = num_valid_replies(spec)
    nodes = list(range(1, n + 4))
    rng = np.random.default_rng(2)
    valid = [reply(node, shifted(GLOBAL, small_update(rng))) for node in nodes[:n]]
    wrong_shape = {**GLOBAL, "conv.bias": np.zeros(5, np.float32)}
    bad = [make_reply(n + 1, error="client crashed"), reply(n + 2, wrong_shape)]

    # Execute
    strategy = build(spec)
    with_bad = run_round(strategy, nodes, valid + bad)
    without = run_round(build(spec), nodes, valid)

    # Assert: the same model as if the bad nodes had not answered, and every loss counted.
    assert with_bad is not None and without is not None
    assert_models_close(with_bad, without)
    stats = strategy.stats[1]
    assert stats.succeeded == n
    assert sorted(stats.failed_nodes) == [n + 1, n + 3]
    assert stats.rejected == {"wrong-shape": 1}


@pytest.mark.parametrize("name", NAMES)
def test_a_round_where_every_reply_failed_releases_nothing_malformed(
    name: str, request: pytest.FixtureRequest
) -> None:
    # Prepare
    spec = spec_for(name, request)
    nodes = list(range(1, num_valid_replies(spec) + 1))
    strategy = build(spec)

    # Execute
    new = run_round(strategy, nodes, [make_reply(n, error="timeout") for n in nodes])

    # Assert: FedAvg-based rules keep the previous model (None); DP must release w + noise
    # (keeping the model would reveal that nobody answered) — a finite model of the same spec.
    assert strategy.stats[1].failed == len(nodes) and strategy.stats[1].succeeded == 0
    if new is not None:
        result = as_dict(new)
        assert list(result) == NAMES_OF_LAYERS
        for k, v in GLOBAL.items():
            assert result[k].shape == v.shape and result[k].dtype == v.dtype
            assert np.all(np.isfinite(result[k]))
    else:
        assert spec.deterministic, "a noisy strategy released nothing"


# --------------------------------------------------------------------------- #
# Integer buffers and overflow (strategies/core/buffers.py)                        #
# --------------------------------------------------------------------------- #

COUNTER = "bn.num_batches_tracked"
#: GLOBAL with an int64 counter between its float layers, as in a BatchNorm model.
GLOBAL_WITH_COUNTER = {
    "conv.weight": GLOBAL["conv.weight"],
    COUNTER: np.array(7, dtype=np.int64),
    "conv.bias": GLOBAL["conv.bias"],
    "head.weight": GLOBAL["head.weight"],
}
FLOAT32_MAX = float(np.finfo(np.float32).max)


@pytest.mark.parametrize("name", NAMES)
def test_integer_buffers_keep_the_global_value_and_do_not_move_the_parameters(
    name: str, request: pytest.FixtureRequest
) -> None:
    # Prepare: every client's counter moved by 100 (or more), next to a small weight step
    # (norm 0.08, below every clip norm). The same round without the counter is the reference.
    spec = spec_for(name, request)
    nodes = list(range(1, num_valid_replies(spec) + 1))
    rng = np.random.default_rng(4)
    steps = [small_update(rng) for _ in nodes]
    with_counter = [
        reply(n, {**shifted(GLOBAL, d), COUNTER: np.array(107 + 50 * n, np.int64)})
        for n, d in zip(nodes, steps, strict=True)
    ]
    without = [reply(n, shifted(GLOBAL, d)) for n, d in zip(nodes, steps, strict=True)]
    start = from_layers(list(GLOBAL_WITH_COUNTER), list(GLOBAL_WITH_COUNTER.values()))

    # Execute
    new = run_round(build(spec), nodes, with_counter, start=start)
    reference = run_round(build(spec), nodes, without)

    # Assert: the released counter is the global model's, and the parameters are exactly
    # what the rule gives without any counter (no norm, distance, noise or step saw it).
    assert new is not None and reference is not None
    result = as_dict(new)
    assert list(result) == list(GLOBAL_WITH_COUNTER)
    assert result[COUNTER].dtype == np.int64 and int(result[COUNTER]) == 7
    for k, v in as_dict(reference).items():
        np.testing.assert_allclose(result[k], v, rtol=1e-6, atol=1e-7, err_msg=k)


#: Unequal example counts: with these, float32 n_k / n factors of replies at ±max summed past
#: the float32 maximum (main's BLAS float32 weighted average gave inf for 5, 6 and 7 replies).
EDGE_EXAMPLES = [220, 158, 518, 1305, 1048, 11, 1]


def near_float32_max() -> dict[str, np.ndarray]:
    """A finite reply at the edge of float32: every coordinate ±max, signs alternating."""
    out = {}
    for k, v in GLOBAL.items():
        signs = np.where(np.arange(v.size) % 2 == 0, 1, -1).reshape(v.shape).astype(np.float32)
        out[k] = signs * np.float32(FLOAT32_MAX)
    return out


@pytest.mark.parametrize("extra_node", [0, 1], ids=["n", "n+1"])
@pytest.mark.parametrize("name", NAMES)
def test_replies_near_float32_max_release_a_finite_model(
    name: str, extra_node: int, request: pytest.FixtureRequest
) -> None:
    # Prepare: valid (finite) replies whose float32 sums overflow; an odd and an even count
    # (a median of an even count averages two values).
    spec = spec_for(name, request)
    num_nodes = max(num_valid_replies(spec), 5) + extra_node
    assert num_nodes <= len(EDGE_EXAMPLES)
    nodes = list(range(1, num_nodes + 1))
    replies = [
        make_reply(n, near_float32_max(), {"num-examples": EDGE_EXAMPLES[n - 1], "train-loss": 0.5})
        for n in nodes
    ]
    strategy = build(spec)

    # Execute: nothing raises.
    new = run_round(strategy, nodes, replies)

    # Assert: every rule's result is representable (a mean or median of the replies, a
    # clipped update, a bounded optimizer step), so a finite model of the right spec is
    # released and nothing is counted as rejected.
    stats = strategy.stats[1]
    assert new is not None, stats
    result = as_dict(new)
    for k, v in GLOBAL.items():
        assert result[k].dtype == v.dtype and result[k].shape == v.shape
        assert np.all(np.isfinite(result[k])), k
    assert stats.rejected == {} and not stats.kept_previous_model


# --------------------------------------------------------------------------- #
# Configuration                                                               #
# --------------------------------------------------------------------------- #


def invalid_value(key: Key) -> object:
    """A value ``key`` must reject: out of its range if it has one, else of the wrong type."""
    if key.type in (int, float):
        for v in (-1e12, -1, -1e-9, 0, 0.5, 1, 1.5, 1e12):
            candidate = key.type(v)
            if key.check(candidate) is not None:
                return candidate
        return "not-a-number"
    if key.type is str:
        return "not-a-valid-choice" if key.check("not-a-valid-choice") is not None else 12345
    return "not-a-bool"


KEY_CASES = [
    (name, key.name) for name in NAMES if name != EXAMPLE_PLUGIN for key in all_specs()[name].keys
] + [(EXAMPLE_PLUGIN, "geomed-iterations"), (EXAMPLE_PLUGIN, "geomed-nu")]


@pytest.mark.parametrize(("name", "key_name"), KEY_CASES)
def test_invalid_value_of_a_declared_key_is_rejected_naming_it(
    name: str, key_name: str, request: pytest.FixtureRequest
) -> None:
    # Prepare
    spec = spec_for(name, request)
    key = next(k for k in spec.keys if k.name == key_name)
    bad = invalid_value(key)

    # Execute / Assert: AppConfig (built-in keys) or the registry (plug-in keys) refuses it.
    with pytest.raises(ConfigError) as info:
        build(spec, **{key.name: bad})
    message = str(info.value)
    assert f"{key.name}=" in message and "is invalid" in message and "--run-config" in message


@pytest.mark.parametrize("name", NAMES)
def test_every_declared_key_accepts_its_default(name: str, request: pytest.FixtureRequest) -> None:
    spec = spec_for(name, request)

    strategy = build(spec, **{k.name: k.default for k in spec.keys if k.name not in spec.contract_config})

    assert strategy is not None and spec.summary
    assert all(k.check(k.default) is None and isinstance(k.default, k.type) for k in spec.keys)


# --------------------------------------------------------------------------- #
# Checkpoints                                                                 #
# --------------------------------------------------------------------------- #


def encode(value: Any) -> Any:
    """JSON-encode a state: only JSON scalars, lists, str-keyed dicts and NumPy arrays are allowed."""
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype), "shape": list(value.shape)}
    if isinstance(value, dict):
        assert all(isinstance(k, str) for k in value), f"non-string keys in {list(value)}"
        return {k: encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    assert value is None or isinstance(value, bool | int | float | str), f"{type(value).__name__} in state"
    return value


def decode(value: Any) -> Any:
    if isinstance(value, dict):
        if "__ndarray__" in value:
            return np.array(value["__ndarray__"], dtype=value["dtype"]).reshape(value["shape"])
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


@pytest.mark.parametrize("name", NAMES)
def test_state_survives_a_checkpoint_round_trip(name: str, request: pytest.FixtureRequest) -> None:
    # Prepare: round 1 on one strategy, then its state through JSON into a fresh one.
    spec = spec_for(name, request)
    nodes = list(range(1, num_valid_replies(spec) + 1))
    rng = np.random.default_rng(3)
    first = build(spec)
    after_1 = run_round(first, nodes, [reply(n, shifted(GLOBAL, small_update(rng))) for n in nodes])
    assert after_1 is not None
    resumed = build(spec)
    resumed.load_state_dict(decode(json.loads(json.dumps(encode(first.state_dict())))))

    # Execute: the same round 2 on both.
    base = as_dict(after_1)
    round_2 = [reply(n, shifted(base, small_update(rng))) for n in nodes]
    straight = run_round(first, nodes, round_2, server_round=2, start=after_1)
    restored = run_round(resumed, nodes, round_2, server_round=2, start=after_1)

    # Assert: identical models and identical state afterwards.
    assert straight is not None and restored is not None
    for k, v in as_dict(straight).items():
        np.testing.assert_array_equal(v, as_dict(restored)[k], err_msg=k)
    assert json.dumps(encode(first.state_dict()), sort_keys=True) == json.dumps(
        encode(resumed.state_dict()), sort_keys=True
    )


# --------------------------------------------------------------------------- #
# A short simulation on digits                                                #
# --------------------------------------------------------------------------- #


class InProcessGrid:
    """A Grid whose nodes are real ``TorchClient``s called in this process.

    ``push_messages`` / ``pull_messages`` (asynchronous strategies: FedBuff) run each
    message when pushed and hand its reply, addressed to the message id, to the next pull.
    """

    def __init__(self, clients: dict[int, TorchClient], names: list[str]) -> None:
        self.clients, self.names = clients, names
        self.pending: dict[str, Any] = {}
        self.pushed = 0

    def get_node_ids(self) -> list[int]:
        return list(self.clients)

    def push_messages(self, messages: Any) -> list[str]:
        ids = []
        for msg in messages:
            self.pushed += 1
            msg_id = f"msg-{self.pushed}"
            reply = self.send_and_receive([msg])[0]
            reply.metadata.__dict__["_reply_to_message_id"] = msg_id
            self.pending[msg_id] = reply
            ids.append(msg_id)
        return ids

    def pull_messages(self, message_ids: Any) -> list[Any]:
        return [self.pending.pop(i) for i in list(message_ids) if i in self.pending]

    def send_and_receive(self, messages: Any, timeout: float | None = None) -> list[Any]:
        replies = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            client, config = self.clients[node], dict(msg.content["config"])
            params = to_layers(msg.content["arrays"], self.names)
            if msg.metadata.message_type == MessageType.TRAIN:
                weights, num_examples, metrics = client.fit(params, config)
                arrays = dict(zip(self.names, weights, strict=True))
                replies.append(make_reply(node, arrays, {**metrics, "num-examples": num_examples}))
            else:
                loss, num_examples, metrics = client.evaluate(params, config)
                content = {"loss": loss, **metrics, "num-examples": num_examples}
                replies.append(make_reply(node, None, content, message_type=MessageType.EVALUATE))
        return replies


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Tiny models on a shared 2-core machine: more threads only spin against other processes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("name", NAMES)
def test_three_rounds_on_digits_raise_central_accuracy(name: str, request: pytest.FixtureRequest) -> None:
    # Prepare: the ServerApp's own model and client config; 2 local epochs keep this quick.
    spec = spec_for(name, request)
    num_clients = max(num_valid_replies(spec), 5)
    cfg = AppConfig.from_run_config({**spec.contract_config, "strategy": name, "local-epochs": 2})
    strategy = build_strategy(cfg)
    bundle = dataset_for(cfg)
    torch.manual_seed(cfg.seed)
    model = build_model("digits-cnn", bundle.input_shape, bundle.num_classes)
    names = list(model.state_dict())
    clients = {
        i + 1: TorchClient(
            build_model("digits-cnn", bundle.input_shape, bundle.num_classes),
            client_data(cfg, i, num_clients),
            torch.device("cpu"),
            seed=cfg.seed + i,
        )
        for i in range(num_clients)
    }
    x_test, y_test = torch.as_tensor(bundle.x_test), torch.as_tensor(bundle.y_test)
    accuracy: dict[int, float] = {}

    def central_eval(server_round: int, arrays: ArrayRecord) -> None:
        set_weights(model, to_layers(arrays, names))
        accuracy[server_round] = evaluate_model(model, x_test, y_test).accuracy or 0.0

    train_config, eval_config = client_configs(cfg, "digits-cnn", bundle.num_classes)

    # Execute: Flower's own round loop.
    strategy.start(
        grid=InProcessGrid(clients, names),
        initial_arrays=from_layers(names, get_weights(model)),
        num_rounds=3,
        train_config=train_config,
        evaluate_config=eval_config,
        evaluate_fn=central_eval,
    )

    # Assert: every round trained on every client, and the model learned (chance is 0.1).
    assert sorted(accuracy) == [0, 1, 2, 3]
    assert all(strategy.stats[r].succeeded == num_clients for r in (1, 2, 3))
    assert accuracy[3] >= accuracy[0] + 0.2, accuracy
